"""Which pixels matter: gradients, SmoothGrad, guided backprop and occlusion.

All functions take a classifier ``(apply_fn, params)`` under the contract
(``x`` float32 ``[B, H, W, C]`` in [0, 1] -> ``[B, K]`` logits) and explain the
logit of ``labels[b]`` for image ``b``.

References:
  Simonyan, Vedaldi & Zisserman 2013, "Deep inside convolutional networks"
  (vanilla-gradient saliency). Smilkov et al. 2017, "SmoothGrad". Springenberg
  et al. 2014, "Striving for simplicity" (guided backprop). Zeiler & Fergus
  2013, "Visualizing and understanding convolutional networks" (occlusion).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp

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
  """
  return jax.grad(_selected_logit_sum(apply_fn, params, jnp.asarray(labels)))(x)


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

  Returns:
    ``[B, H, W, C]`` mean gradient over the noisy copies.
  """
  gradient_fn = gradient_fn or saliency
  labels = jnp.asarray(labels)
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

# jax.nn.relu / relu6 (also flax.linen.relu) are custom_jvp functions; their
# jaxpr equations carry these names.
_GUIDED = {"relu": guided_relu, "relu6": guided_relu6}


def _custom_jvp_name(eqn) -> str | None:
  # The function's name is kept in the traced body's debug info
  # ("relu at .../jax/_src/nn/functions.py:71") and, in recent jax, as the
  # name of the single jit inside it.
  body = eqn.params.get("call_jaxpr")
  body = getattr(body, "jaxpr", body)
  info = getattr(body, "debug_info", None)
  src = getattr(info, "func_src_info", None) or ""
  if src.split(" ")[0] in _GUIDED:
    return src.split(" ")[0]
  inner = getattr(body, "eqns", [])
  if len(inner) == 1 and inner[0].params.get("name") in _GUIDED:
    return inner[0].params["name"]
  return None


def _eval_guided(jaxpr: jex.Jaxpr, consts, *args):
  env = {}

  def read(v):
    return v.val if isinstance(v, jex.Literal) else env[v]

  for var, val in zip(jaxpr.constvars, consts):
    env[var] = val
  for var, val in zip(jaxpr.invars, args):
    env[var] = val
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name = _custom_jvp_name(eqn) if eqn.primitive.name == "custom_jvp_call" else None
    if name in _GUIDED:
      outvals = [_GUIDED[name](*invals)]
    elif eqn.primitive.name in ("pjit", "jit", "closed_call", "core_call"):
      inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
      if isinstance(inner, jex.ClosedJaxpr):
        outvals = _eval_guided(inner.jaxpr, inner.consts, *invals)
      else:
        outvals = _eval_guided(inner, (), *invals)
    else:
      bind_params = eqn.primitive.get_bind_params(eqn.params)
      subfuns = []
      if isinstance(bind_params, tuple):  # jax < 0.7 returns (subfuns, params).
        subfuns, bind_params = bind_params
      outvals = eqn.primitive.bind(*subfuns, *invals, **bind_params)
      if not eqn.primitive.multiple_results:
        outvals = [outvals]
    for var, val in zip(eqn.outvars, outvals):
      env[var] = val
  return [read(v) for v in jaxpr.outvars]


def with_guided_relus(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn`` with every ``jax.nn.relu`` / ``relu6`` made a guided ReLU.

  Works on any jax function, zoo nets included, with no change to the model:
  ``fn`` is traced to a jaxpr, which is evaluated with the ReLU equations
  (``custom_jvp_call`` named ``relu``/``relu6``, what ``jax.nn.relu`` and
  ``flax.linen.relu`` produce, also inside nested ``jit``) replaced by
  :func:`guided_relu` / :func:`guided_relu6`. The forward values are
  unchanged. ReLUs written as ``jnp.maximum(x, 0)`` or inside ``lax.scan`` /
  ``lax.cond`` bodies are not recognised; write those models with an explicit
  activation argument and pass :func:`guided_relu`.

  Args:
    fn: e.g. ``apply_fn``; positional array/pytree arguments only.

  Returns:
    A function with the same signature and forward values.
  """
  def guided(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    flat_args = jax.tree_util.tree_leaves(args)
    flat_out = _eval_guided(closed.jaxpr, closed.consts, *flat_args)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape),
                                        flat_out)
  return guided


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
  return saliency(with_guided_relus(apply_fn), params, x, labels)


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
  _, height, width, _ = x.shape
  rows, cols = occlusion_positions(height, width, patch=patch, stride=stride)
  labels = jnp.asarray(labels)
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
