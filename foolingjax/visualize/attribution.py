"""Which pixels matter: gradients, SmoothGrad, guided backprop, deconvnet,
integrated gradients, Grad-CAM and occlusion.

All functions take a classifier ``(apply_fn, params)`` under the contract
(``x`` float32 ``[B, H, W, C]`` in [0, 1] -> ``[B, K]`` logits), or a feature
extractor ``features(params, x) -> {layer: activation}``, and explain the
logit of ``labels[b]`` (or the unit ``units[b]``) for image ``b``. Class and
unit indices out of range, unknown layers and images outside [0, 1] raise one
``ValueError`` (under ``jit`` too, through :func:`foolingjax.checks.require`).

References:
  Simonyan, Vedaldi & Zisserman 2013, "Deep inside convolutional networks"
  (vanilla-gradient saliency). Smilkov et al. 2017, "SmoothGrad". Springenberg
  et al. 2014, "Striving for simplicity" (guided backprop). Zeiler & Fergus
  2014, "Visualizing and understanding convolutional networks" (deconvnet,
  occlusion). Sundararajan, Taly & Yan 2017, "Axiomatic attribution for deep
  networks" (integrated gradients). Selvaraju et al. 2017, "Grad-CAM".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp

from foolingjax import checks
from foolingjax.visualize import _args
from foolingjax.visualize.ascent import unit_objective

Params = Any
ApplyFn = Callable[[Params, jax.Array], jax.Array]


def _selected_logit_sum(apply_fn: ApplyFn, params: Params, labels: jax.Array):
  # Examples in a batch do not interact (the contract's nets run in inference
  # mode), so the gradient of the summed selected logits is the per-example
  # gradient, in one backward pass.
  def total(x):
    logits = apply_fn(params, x)
    return jnp.sum(jnp.take_along_axis(logits, labels[:, None], axis=1))
  return total


def _checked(apply_fn, params, x, labels, *, who):
  x = checks.images(x, who=who)
  labels = checks.labels(labels, batch=x.shape[0],
                         num_classes=checks.num_classes(apply_fn, params, x), who=who)
  return x, labels


def _saliency(apply_fn, params, x, labels):
  return jax.grad(_selected_logit_sum(apply_fn, params, labels))(x)


def saliency(apply_fn: ApplyFn, params: Params, x: jax.Array,
             labels: jax.Array) -> jax.Array:
  """Vanilla gradient of the label's logit with respect to the pixels.

  Args:
    apply_fn: classifier ``apply_fn(params, x) -> logits``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` images in [0, 1].
    labels: int ``[B]`` class to explain per image.

  Returns:
    ``[B, H, W, C]`` gradients d logit[b, labels[b]] / d x[b]. For a linear
    model ``logits = flatten(x) @ W + b`` this is column ``labels[b]`` of ``W``.

  Raises:
    ValueError: images outside [0, 1] or labels outside ``[0, K)`` (also under
      ``jit``, when the compiled function runs).
  """
  x, labels = _checked(apply_fn, params, x, labels, who="saliency")
  return _saliency(apply_fn, params, x, labels)


def saliency_map(gradients: jax.Array) -> jax.Array:
  """Simonyan et al.'s map: max over channels of the absolute gradient.

  Args:
    gradients: ``[B, H, W, C]``.

  Returns:
    ``[B, H, W]``, non-negative.
  """
  return jnp.max(jnp.abs(gradients), axis=-1)


def smoothgrad(key: jax.Array, apply_fn: ApplyFn, params: Params, x: jax.Array,
               labels: jax.Array, *, num_samples: int = 25, noise_level: float = 0.15,
               batch_size: int | None = None,
               gradient_fn: Callable[..., jax.Array] | None = None) -> jax.Array:
  """SmoothGrad: the gradient averaged over Gaussian-noised copies of ``x``.

  Args:
    key: PRNG key for the noise.
    apply_fn: classifier.
    params: its parameters.
    x: float32 ``[B, H, W, C]``.
    labels: int ``[B]``.
    num_samples: noisy copies per image (Smilkov et al. use ~50).
    noise_level: noise std as a fraction of each image's value range
      (max - min), the paper's 10-20%.
    batch_size: noisy batches evaluated at once (``lax.map``); ``None`` runs
      all ``num_samples`` in one vectorised pass.
    gradient_fn: ``gradient_fn(apply_fn, params, x, labels) -> [B, H, W, C]``
      to smooth instead of :func:`saliency`, e.g. :func:`guided_backprop`.
      It sees the noisy copies, which leave [0, 1]: this module's functions
      are called without their pixel-range check; a function of your own
      must accept such images.

  Returns:
    ``[B, H, W, C]`` mean gradient over the noisy copies.
  """
  x, labels = _checked(apply_fn, params, x, labels, who="smoothgrad")
  gradient_fn = _UNCHECKED.get(gradient_fn or saliency, gradient_fn)
  span = jnp.max(x, axis=(1, 2, 3), keepdims=True) - jnp.min(x, axis=(1, 2, 3),
                                                              keepdims=True)
  sigma = noise_level * span

  def one_sample(sample_key):
    noisy = x + sigma * jax.random.normal(sample_key, x.shape, x.dtype)
    return gradient_fn(apply_fn, params, noisy, labels)

  keys = jax.random.split(key, num_samples)
  if batch_size is None:
    grads = jax.vmap(one_sample)(keys)
  else:
    grads = jax.lax.map(one_sample, keys, batch_size=batch_size)
  return jnp.mean(grads, axis=0)


# --- guided backprop ---------------------------------------------------------

@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
  """ReLU whose backward pass is guided backprop's.

  Forward: ``max(x, 0)``. Backward: the incoming gradient ``g`` passes only
  where the forward input was positive *and* ``g`` is positive, i.e.
  ``g * (x > 0) * (g > 0)`` (Springenberg et al. 2014, eq. 4).
  """
  return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
  return jnp.maximum(x, 0), x


def _guided_relu_bwd(x, g):
  return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


@jax.custom_vjp
def guided_relu6(x: jax.Array) -> jax.Array:
  """ReLU6 (``clip(x, 0, 6)``) with guided backprop's backward pass."""
  return jnp.clip(x, 0, 6)


def _guided_relu6_fwd(x):
  return jnp.clip(x, 0, 6), x


def _guided_relu6_bwd(x, g):
  return (jnp.where((x > 0) & (x < 6) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu6.defvjp(_guided_relu6_fwd, _guided_relu6_bwd)

@jax.custom_vjp
def deconv_relu(x: jax.Array) -> jax.Array:
  """ReLU whose backward pass is Zeiler & Fergus's deconvnet rule.

  Forward: ``max(x, 0)``. Backward: ``max(g, 0)``, the incoming gradient
  rectified whatever the sign of the forward input (the deconvnet passes the
  reconstruction through a ReLU on its way down; Springenberg et al. 2014,
  fig. 1).
  """
  return jnp.maximum(x, 0)


def _deconv_relu_fwd(x):
  return jnp.maximum(x, 0), None


def _deconv_relu_bwd(_, g):
  return (jnp.maximum(g, 0),)


deconv_relu.defvjp(_deconv_relu_fwd, _deconv_relu_bwd)


@jax.custom_vjp
def deconv_relu6(x: jax.Array) -> jax.Array:
  """ReLU6 (``clip(x, 0, 6)``) with the deconvnet backward ``max(g, 0)``."""
  return jnp.clip(x, 0, 6)


def _deconv_relu6_fwd(x):
  return jnp.clip(x, 0, 6), None


deconv_relu6.defvjp(_deconv_relu6_fwd, _deconv_relu_bwd)

# jax.nn.relu / relu6 (also flax.linen.relu) are custom_jvp functions; their
# jaxpr equations carry these names.
RELU_RULES = {
    "guided": {"relu": guided_relu, "relu6": guided_relu6},
    "deconvnet": {"relu": deconv_relu, "relu6": deconv_relu6},
}
_RELU_NAMES = ("relu", "relu6")


def _custom_jvp_name(eqn) -> str | None:
  # The function's name is kept in the traced body's debug info
  # ("relu at .../jax/_src/nn/functions.py:71") and, in recent jax, as the
  # name of the single jit inside it.
  body = eqn.params.get("call_jaxpr")
  body = getattr(body, "jaxpr", body)
  info = getattr(body, "debug_info", None)
  src = getattr(info, "func_src_info", None) or ""
  if src.split(" ")[0] in _RELU_NAMES:
    return src.split(" ")[0]
  inner = getattr(body, "eqns", [])
  if len(inner) == 1 and inner[0].params.get("name") in _RELU_NAMES:
    return inner[0].params["name"]
  return None


def _eval_jaxpr(jaxpr: jex.Jaxpr, consts, args, *, relus, offsets):
  # Evaluates jaxpr with the named ReLU equations replaced by relus[name] and
  # offsets[var] added to var where it is computed (so every consumer, and the
  # outputs, see the shifted value). Nested jit bodies are entered, offsets
  # following their outputs inside.
  env = {}

  def read(v):
    return v.val if isinstance(v, jex.Literal) else env[v]

  def write(var, val):
    env[var] = val + offsets[var] if var in offsets else val

  for var, val in zip(jaxpr.constvars, consts):
    env[var] = val
  for var, val in zip(jaxpr.invars, args):
    write(var, val)
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name = (_custom_jvp_name(eqn)
            if relus and eqn.primitive.name == "custom_jvp_call" else None)
    if name in relus:
      outvals = [relus[name](*invals)]
    elif eqn.primitive.name in ("pjit", "jit", "closed_call", "core_call"):
      inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
      inner_jaxpr, inner_consts = ((inner.jaxpr, inner.consts)
                                   if isinstance(inner, jex.ClosedJaxpr) else (inner, ()))
      inner_offsets = {inner_var: offsets[outer]
                       for inner_var, outer in zip(inner_jaxpr.outvars, eqn.outvars)
                       if outer in offsets and isinstance(inner_var, jex.Var)}
      outvals = _eval_jaxpr(inner_jaxpr, inner_consts, invals, relus=relus,
                            offsets=inner_offsets)
      for var, val in zip(eqn.outvars, outvals):
        env[var] = val  # the offset, if any, was added inside
      continue
    else:
      bind_params = eqn.primitive.get_bind_params(eqn.params)
      subfuns = []
      if isinstance(bind_params, tuple):  # jax < 0.7 returns (subfuns, params).
        subfuns, bind_params = bind_params
      outvals = eqn.primitive.bind(*subfuns, *invals, **bind_params)
      if not eqn.primitive.multiple_results:
        outvals = [outvals]
    for var, val in zip(eqn.outvars, outvals):
      write(var, val)
  return [read(v) for v in jaxpr.outvars]


def with_relu_rule(fn: Callable[..., Any], *, rule: str) -> Callable[..., Any]:
  """``fn`` with every ``jax.nn.relu`` / ``relu6`` given another backward rule.

  Works on any jax function, zoo nets included, with no change to the model:
  ``fn`` is traced to a jaxpr, which is evaluated with the ReLU equations
  (``custom_jvp_call`` named ``relu``/``relu6``, what ``jax.nn.relu`` and
  ``flax.linen.relu`` produce, also inside nested ``jit``) replaced by the
  rule's ReLU. The forward values are unchanged. ReLUs written as
  ``jnp.maximum(x, 0)`` or inside ``lax.scan`` / ``lax.cond`` bodies are not
  recognised; write those models with an explicit activation argument.

  Args:
    fn: e.g. ``apply_fn`` or a feature extractor; positional array/pytree
      arguments only.
    rule: ``"guided"`` (:func:`guided_relu`: ``g * (x > 0) * (g > 0)``) or
      ``"deconvnet"`` (:func:`deconv_relu`: ``max(g, 0)``).

  Returns:
    A function with the same signature and forward values.
  """
  if rule not in RELU_RULES:
    raise ValueError(f"with_relu_rule: rule must be one of {tuple(RELU_RULES)}; got "
                     f"{rule!r}.")
  relus = RELU_RULES[rule]

  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    flat_args = jax.tree_util.tree_leaves(args)
    flat_out = _eval_jaxpr(closed.jaxpr, closed.consts, flat_args, relus=relus,
                           offsets={})
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape),
                                        flat_out)
  return wrapped


def with_guided_relus(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn`` with every ``jax.nn.relu`` / ``relu6`` made a guided ReLU.

  ``with_relu_rule(fn, rule="guided")``; see :func:`with_relu_rule`. For a
  model with an explicit activation argument pass :func:`guided_relu`.
  """
  return with_relu_rule(fn, rule="guided")


def with_layer_offset(features_fn: Callable[..., Any], layer: str) -> Callable[..., Any]:
  """``shifted(params, x, offset)``: ``features_fn`` with ``offset`` added at ``layer``.

  The offset is added where the layer's activation is computed, so every layer
  above it (the logits included) sees ``activation + offset``; the gradient
  with respect to ``offset`` at zero is the gradient with respect to the
  activation, which a feature extractor cannot otherwise give. Works on any
  extractor whose returned ``layer`` array is the one its next layer reads (as
  in the zoo nets and EfficientNet-Lite0), also inside nested ``jit``.

  Args:
    features_fn: ``features(params, x) -> {layer: [B, ...]}``.
    layer: key of the feature dict.

  Returns:
    ``shifted(params, x, offset) -> features`` with ``offset`` shaped like
    ``features(params, x)[layer]``.
  """
  def shifted(params, x, offset):
    closed, out_shape = jax.make_jaxpr(features_fn, return_shape=True)(params, x)
    _args.layer(out_shape, layer, who="with_layer_offset")
    leaves, treedef = jax.tree_util.tree_flatten(out_shape)
    index = jax.tree_util.tree_unflatten(treedef, list(range(len(leaves))))[layer]
    var = closed.jaxpr.outvars[index]
    if not isinstance(var, jex.Var):
      raise ValueError(f"with_layer_offset: layer {layer!r} is a constant of the "  # noqa: TRY004
                       "feature extractor; it has no gradient.")
    flat_args = jax.tree_util.tree_leaves((params, x))
    flat_out = _eval_jaxpr(closed.jaxpr, closed.consts, flat_args, relus={},
                           offsets={var: offset})
    return jax.tree_util.tree_unflatten(treedef, flat_out)
  return shifted


def guided_backprop(apply_fn: ApplyFn, params: Params, x: jax.Array,
                    labels: jax.Array) -> jax.Array:
  """Guided backprop: the input gradient with every ReLU made guided.

  ``apply_fn``'s ReLUs are found by :func:`with_guided_relus`; a model with
  no recognised ReLU gets its plain gradient (the same as :func:`saliency`).
  For a forward written with an explicit activation argument use
  ``saliency(lambda p, x: forward(p, x, relu=guided_relu), params, x, labels)``.

  Args:
    apply_fn: classifier.
    params: its parameters.
    x: float32 ``[B, H, W, C]``.
    labels: int ``[B]``.

  Returns:
    ``[B, H, W, C]`` guided gradients.
  """
  x, labels = _checked(apply_fn, params, x, labels, who="guided_backprop")
  return _guided_backprop(apply_fn, params, x, labels)


def _guided_backprop(apply_fn, params, x, labels):
  return _saliency(with_relu_rule(apply_fn, rule="guided"), params, x, labels)


def deconvnet(apply_fn: ApplyFn, params: Params, x: jax.Array,
              labels: jax.Array) -> jax.Array:
  """Zeiler & Fergus's deconvnet: the input gradient with every ReLU's backward
  pass replaced by ``max(g, 0)`` (:func:`deconv_relu`).

  Unlike guided backprop, the forward sign is ignored: the map depends on the
  image only through max-pooling switches and non-ReLU nonlinearities, so it
  is much the same for every image (Springenberg et al. 2014; Mahendran &
  Vedaldi 2016, "Salient deconvolutional networks").

  Args:
    apply_fn: classifier; its ``jax.nn.relu``/``relu6`` are found as in
      :func:`with_relu_rule`.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]``.

  Returns:
    ``[B, H, W, C]`` deconvnet reconstructions of the label's logit.
  """
  x, labels = _checked(apply_fn, params, x, labels, who="deconvnet")
  return _deconvnet(apply_fn, params, x, labels)


def _deconvnet(apply_fn, params, x, labels):
  return _saliency(with_relu_rule(apply_fn, rule="deconvnet"), params, x, labels)


_UNCHECKED = {}  # filled below: public gradient -> the same without input checks


def unit_backprop(features_fn: Callable[[Params, jax.Array], dict], params: Params,
                  x: jax.Array, units: jax.Array, *, layer: str,
                  position: tuple[int, int] | None = None,
                  rule: str | None = "guided") -> jax.Array:
  """Input gradient of a unit of any layer, under a ReLU backward rule.

  The unit is channel ``units[b]`` of ``layer`` (its spatial mean, or the
  neuron at ``position``) or neuron ``units[b]`` of a dense layer, as in
  :func:`foolingjax.visualize.unit_objective`. Zeiler & Fergus project single
  strong activations of intermediate layers down to the pixels this way.

  Args:
    features_fn: ``features(params, x) -> {layer: [B, h, w, K] or [B, N]}``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    units: int ``[B]`` channel (or neuron) per image.
    layer: key of the feature dict.
    position: ``(row, col)`` of one neuron of a conv layer; ``None``: the
      channel's spatial mean.
    rule: ``"guided"``, ``"deconvnet"`` or ``None`` (the plain gradient).

  Returns:
    ``[B, H, W, C]`` gradients of the selected unit per image.
  """
  x = checks.images(x, who="unit_backprop")
  fn = features_fn if rule is None else with_relu_rule(features_fn, rule=rule)
  objective = unit_objective(fn, params, layer=layer, units=units, position=position)
  return jax.grad(lambda x: jnp.sum(objective(x)))(x)


# --- integrated gradients ----------------------------------------------------

def integrated_gradients(apply_fn: ApplyFn, params: Params, x: jax.Array,
                         labels: jax.Array, *, baseline: jax.Array | float | None = None,
                         steps: int = 32, method: str = "trapezoid",
                         batch_size: int | None = None) -> jax.Array:
  """Integrated gradients (Sundararajan et al. 2017), vmapped over the path.

  ``IG_i = (x_i - x'_i) * int_0^1 d logit / d x_i (x' + a (x - x')) da``,
  the integral by the trapezoid rule on ``steps + 1`` points (or the midpoint
  Riemann sum on ``steps``). Completeness: ``sum_i IG_i`` approaches
  ``logit(x) - logit(x')`` as ``steps`` grows. For a linear model the
  gradient is constant and ``IG = gradient * (x - x')``.

  Args:
    apply_fn: classifier.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]``.
    baseline: ``x'``, in [0, 1]: ``None`` (black, zeros), a scalar, or any
      array broadcastable to ``x`` (``[H, W, C]`` or ``[B, H, W, C]``).
    steps: intervals of the path (static).
    method: ``"trapezoid"`` or ``"riemann"`` (midpoint).
    batch_size: path points evaluated at once (``lax.map``); ``None``: all
      ``steps (+1)`` in one vectorised pass (memory ``steps`` times a batch).

  Returns:
    ``[B, H, W, C]`` attributions.
  """
  x, labels = _checked(apply_fn, params, x, labels, who="integrated_gradients")
  if steps < 1:
    raise ValueError(f"integrated_gradients: steps must be >= 1; got {steps}.")
  baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(
      jnp.asarray(baseline, x.dtype), x.shape)
  checks.pixel_range(baseline, who="integrated_gradients", name="baseline")
  if method == "trapezoid":
    alphas = jnp.linspace(0.0, 1.0, steps + 1)
    weights = jnp.ones(steps + 1).at[jnp.array([0, steps])].set(0.5) / steps
  elif method == "riemann":
    alphas = (jnp.arange(steps) + 0.5) / steps
    weights = jnp.full(steps, 1.0 / steps)
  else:
    raise ValueError(f"integrated_gradients: method must be 'trapezoid' or 'riemann'; "
                     f"got {method!r}.")
  delta = x - baseline

  def gradient_at(alpha):
    return _saliency(apply_fn, params, baseline + alpha * delta, labels)

  if batch_size is None:
    grads = jax.vmap(gradient_at)(alphas)
  else:
    grads = jax.lax.map(gradient_at, alphas, batch_size=batch_size)
  return delta * jnp.tensordot(weights.astype(x.dtype), grads, axes=1)


# --- Grad-CAM ----------------------------------------------------------------

def layer_gradients(features_fn: Callable[[Params, jax.Array], dict], params: Params,
                    x: jax.Array, labels: jax.Array, *, layer: str,
                    logits: str = "logits") -> tuple[jax.Array, jax.Array]:
  """A layer's activation and the gradient of the label's logit with respect to it.

  Args:
    features_fn: ``features(params, x) -> {layer: ..., logits: [B, K]}`` (the
      zoo's ``models.feature_fn`` returns ``"logits"``).
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]``.
    layer: key of the feature dict.
    logits: key of the logits in the feature dict.

  Returns:
    ``(activation, gradient)``, both shaped like ``features[layer]``.
  """
  return _layer_gradients(features_fn, params, x, labels, layer=layer, logits=logits,
                          who="layer_gradients")


def _layer_gradients(features_fn, params, x, labels, *, layer, logits, who):
  x = checks.images(x, who=who)
  shapes = jax.eval_shape(features_fn, params, x)
  act_shape = _args.layer(shapes, layer, who=who)
  logit_shape = _args.layer(shapes, logits, who=who).shape
  if len(logit_shape) != 2:
    raise ValueError(f"{who}: {logits!r} must be [B, K] logits; got {logit_shape}.")
  labels = _args.class_labels(labels, logit_shape, who=who)
  shifted = with_layer_offset(features_fn, layer)

  def selected(offset):
    feats = shifted(params, x, offset)
    chosen = jnp.take_along_axis(feats[logits], labels[:, None], axis=1)
    return jnp.sum(chosen), feats[layer]

  grads, acts = jax.grad(selected, has_aux=True)(
      jnp.zeros(act_shape.shape, act_shape.dtype))
  return acts, grads


def grad_cam(features_fn: Callable[[Params, jax.Array], dict], params: Params,
             x: jax.Array, labels: jax.Array, *, layer: str, logits: str = "logits",
             upsample: bool = True) -> jax.Array:
  """Grad-CAM (Selvaraju et al. 2017) from any conv layer.

  Channel weights ``a_k = mean_ij d logit / d A_ij^k``; the map is
  ``relu(sum_k a_k A^k)``, bilinearly upsampled to the image. For a net whose
  ``layer`` feeds the logits through global average pooling and one dense
  layer ``W`` this is the CAM ``relu(sum_k W[k, c] A^k) / (h w)`` of Zhou et
  al. 2016.

  Args:
    features_fn: ``features(params, x) -> {layer: [B, h, w, K], logits: [B, C]}``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]`` class per image.
    layer: a conv layer (``[B, h, w, K]`` activation).
    logits: key of the logits in the feature dict.
    upsample: resize the map to ``H x W`` (else it stays ``h x w``).

  Returns:
    ``[B, H, W]`` (or ``[B, h, w]``) non-negative maps, unnormalised.
  """
  acts, grads = _layer_gradients(features_fn, params, x, labels, layer=layer,
                                 logits=logits, who="grad_cam")
  if acts.ndim != 4:
    raise ValueError(f"grad_cam: layer {layer!r} has shape {acts.shape}; Grad-CAM "
                     "needs a conv layer [B, h, w, K].")
  weights = jnp.mean(grads, axis=(1, 2))
  cam = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", acts, weights))
  if upsample:
    cam = jax.image.resize(cam, (cam.shape[0], *x.shape[1:3]), method="linear")
  return cam


# --- occlusion ---------------------------------------------------------------

def occlusion_positions(height: int, width: int, *, patch: int,
                        stride: int) -> tuple[int, int]:
  """``(rows, cols)`` of patch positions: top-left corners ``i * stride``."""
  if patch > height or patch > width:
    raise ValueError(f"patch {patch} is larger than the {height}x{width} image.")
  return (height - patch) // stride + 1, (width - patch) // stride + 1


def occlusion(apply_fn: ApplyFn, params: Params, x: jax.Array, labels: jax.Array, *,
              patch: int, stride: int, fill: float = 0.5,
              batch_size: int | None = None) -> jax.Array:
  """Occlusion sensitivity: the label's probability drop per occluded patch.

  A ``patch x patch`` square of value ``fill`` slides over the image with
  ``stride``; every occluded copy is classified in batches.

  Args:
    apply_fn: classifier.
    params: its parameters.
    x: float32 ``[B, H, W, C]``.
    labels: int ``[B]``.
    patch: side of the square occluder, in pixels.
    stride: step between patch positions.
    fill: occluder value (0.5: mid grey).
    batch_size: occluded images classified at once per image (``lax.map``);
      ``None`` classifies all positions in one batch.

  Returns:
    ``[B, rows, cols]``: ``p(label | x) - p(label | x occluded at (r, c))``,
    the occluder's top-left corner being ``(r * stride, c * stride)``.
    Positive where hiding the patch hurts the label.
  """
  x, labels = _checked(apply_fn, params, x, labels, who="occlusion")
  _, height, width, _ = x.shape
  rows, cols = occlusion_positions(height, width, patch=patch, stride=stride)
  corners = jnp.stack(jnp.meshgrid(jnp.arange(rows) * stride, jnp.arange(cols) * stride,
                                   indexing="ij"), axis=-1).reshape(-1, 2)
  ii = jnp.arange(height)[:, None, None]
  jj = jnp.arange(width)[None, :, None]

  def occlude(image, corner):
    inside = ((ii >= corner[0]) & (ii < corner[0] + patch)
              & (jj >= corner[1]) & (jj < corner[1] + patch))
    return jnp.where(inside, jnp.asarray(fill, image.dtype), image)

  def label_prob(images, label):
    probs = jax.nn.softmax(apply_fn(params, images), axis=-1)
    return probs[:, label]

  # The first "corner" lies outside the image: the unoccluded reference goes
  # through the same batched computation as the occluded copies, so a patch the
  # model ignores gives exactly zero, not a rounding difference.
  corners = jnp.concatenate([jnp.array([[height, width]]), corners])

  def per_image(image, label):
    def at(corner):
      return label_prob(occlude(image, corner)[None], label)[0]
    if batch_size is None:
      occluded = jax.vmap(occlude, in_axes=(None, 0))(image, corners)
      probs = label_prob(occluded, label)
    else:
      probs = jax.lax.map(at, corners, batch_size=batch_size)
    return (probs[0] - probs[1:]).reshape(rows, cols)

  return jax.vmap(per_image)(x, labels)


_UNCHECKED.update({saliency: _saliency, guided_backprop: _guided_backprop,
                   deconvnet: _deconvnet})


def occlusion_to_pixels(sensitivity: jax.Array, *, height: int, width: int,
                        patch: int, stride: int) -> jax.Array:
  """Spreads a ``[B, rows, cols]`` occlusion map back onto the pixels.

  Each pixel gets the mean sensitivity of the patches that covered it (0 where
  none did).

  Returns:
    ``[B, height, width]``.
  """
  rows, cols = sensitivity.shape[1:]
  r0 = jnp.arange(rows) * stride
  c0 = jnp.arange(cols) * stride
  cover_r = ((jnp.arange(height)[:, None] >= r0[None])
             & (jnp.arange(height)[:, None] < r0[None] + patch)).astype(sensitivity.dtype)
  cover_c = ((jnp.arange(width)[:, None] >= c0[None])
             & (jnp.arange(width)[:, None] < c0[None] + patch)).astype(sensitivity.dtype)
  total = jnp.einsum("hr,brc,wc->bhw", cover_r, sensitivity, cover_c)
  count = jnp.einsum("hr,wc->hw", cover_r, cover_c)
  count = count[None]
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)
