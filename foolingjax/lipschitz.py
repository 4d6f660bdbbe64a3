"""Per-layer upper Lipschitz bounds (Szegedy et al. 2013, section 4.3).

A network ``phi(x) = phi_L(... phi_1(x))`` is Lipschitz (in L2) with constant
at most ``prod_l L_l`` where ``L_l`` bounds layer ``l``. "Intriguing
properties" uses this to show that a tiny ``r`` can move ``phi(x + r)`` far.
Here a network is described as a sequence of layers of four kinds:

* :class:`Affine` ``x -> A x + b`` (dense, convolution with its stride and
  padding, inference-mode batch norm, input normalisation, average pooling,
  or any composition of these such as conv + batch norm): its constant is the
  operator norm ``||A||_2`` of the linear map *on the layer's input shape*,
  computed by power iteration on ``A^T A`` with ``A v`` from ``jax.linearize``
  (a JVP) and ``A^T u`` from ``jax.linear_transpose`` of that JVP. A
  convolution's constant is therefore that of the convolution operator on the
  actual feature map, not the norm of its kernel reshaped into a matrix.
* :class:`Fixed` parameter-free maps with a known constant: ReLU and ReLU6
  (1), sigmoid (1/4), max-pooling (:func:`max_pool_lipschitz`: 1 without
  overlap, ``sqrt(windows covering a pixel)`` with it), cross-channel LRN
  (:func:`lrn_lipschitz`), flattening (1).
* :class:`Sequential` layers (constant: the product) and :class:`Residual`
  ``x + F(x)`` (constant: ``1 + Lip(F)``).

Power iteration converges to ``||A||_2`` from below: each iterate is a lower
bound, so the reported constant is the operator norm up to the convergence
left after ``num_iters`` steps, reported per layer as ``rel_change`` (the
relative change over the last step). The tests check it against the exact
norm of explicit matrices (dense and strided, padded convolutions).

Layer functions take one example (no batch axis) and the network's
``variables`` dict (``{"params": ..., "batch_stats": ...}``).
:func:`zoo_layers` describes LeNet, the MLPs, AE400-10, AlexNetSmall and
EfficientNet-Lite0; for your own net, write the list (see
:func:`lenet_layers` for the pattern). :func:`compose` runs a description, so
a test can check that it reproduces ``apply_fn``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from foolingjax.models import efficientnet
from foolingjax.models.small import (
  MLP,
  AlexNetSmall,
  AutoencoderClassifier,
  LeNet,
  local_response_norm,
)

Variables = Any
LayerFn = Callable[[Variables, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Affine:
  """An affine layer ``fn(variables, x) = A x + b``; bound ``||A||_2``."""

  name: str
  fn: LayerFn


@dataclasses.dataclass(frozen=True, eq=False)
class Fixed:
  """A parameter-free layer with a known Lipschitz constant."""

  name: str
  fn: LayerFn
  lipschitz: float


@dataclasses.dataclass(frozen=True, eq=False)
class Sequential:
  """Layers applied in order; bound: the product of theirs."""

  name: str
  layers: tuple


@dataclasses.dataclass(frozen=True, eq=False)
class Residual:
  """``x + F(x)`` with ``F`` the layers in order; bound ``1 + Lip(F)``."""

  name: str
  layers: tuple


Layer = Affine | Fixed | Sequential | Residual


@struct.dataclass
class LipschitzBounds:
  """Upper Lipschitz bounds of a layer sequence.

  Attributes:
    bounds: ``{name: []}`` for every layer, nested names joined by ``/``
      (``"blocks_3/expand"``); Sequential and Residual entries hold their
      combined bound.
    rel_change: ``{name: []}`` for each Affine layer, the relative change of
      the power-iteration estimate over its last step.
    log10_network: ``[]``, ``log10`` of the product of the top-level bounds
      (the product itself overflows float32 for EfficientNet-Lite0).
    names: every layer name in network order (a block before its parts); jit
      sorts dict keys, so iterate over this.
    top_level: the names whose product is the network's bound.
  """

  bounds: dict
  rel_change: dict
  log10_network: jax.Array
  names: tuple = struct.field(pytree_node=False, default=())
  top_level: tuple = struct.field(pytree_node=False, default=())


def operator_norm(key: jax.Array, fn: Callable[[jax.Array], jax.Array],
                  x: jax.Array, *, num_iters: int = 100) -> tuple[jax.Array, jax.Array]:
  """``||A||_2`` of the affine map ``fn(x) = A x + b`` by power iteration.

  Iterates ``v <- A^T A v / ||A^T A v||`` (``lax.fori_loop``) from a Gaussian
  start, with ``A v`` a JVP of ``fn`` and ``A^T u`` its linear transpose, so
  no matrix is formed. The estimate ``sqrt(||A^T A v||)`` (unit ``v``) is a
  lower bound of ``||A||_2`` at every step and converges to it.

  Args:
    key: PRNG key of the start vector.
    fn: the affine map on one input of ``x``'s shape.
    x: any input (only its shape and dtype matter for an affine ``fn``).
    num_iters: power-iteration steps (a Python int >= 2).

  Returns:
    ``(sigma, rel_change)``: the estimate of ``||A||_2`` and its relative
    change over the last step, both ``[]``.
  """
  if not isinstance(num_iters, int) or num_iters < 2:
    raise ValueError(f"operator_norm: num_iters must be a Python int >= 2; got {num_iters!r}.")
  x = jnp.asarray(x, jnp.float32)
  _, matvec = jax.linearize(fn, x)
  rmatvec = jax.linear_transpose(matvec, x)

  def normalise(v):
    return v / jnp.maximum(jnp.linalg.norm(v.ravel()), 1e-30)

  def step(_, carry):
    v, _, sigma = carry
    gram_v = rmatvec(matvec(v))[0]
    return normalise(gram_v), sigma, jnp.sqrt(jnp.linalg.norm(gram_v.ravel()))

  v0 = normalise(jax.random.normal(key, x.shape, jnp.float32))
  _, previous, sigma = jax.lax.fori_loop(
      0, num_iters, step, (v0, jnp.float32(0.0), jnp.float32(0.0)))
  return sigma, jnp.abs(sigma - previous) / jnp.maximum(sigma, 1e-30)


def layer_bounds(key: jax.Array, layers: Sequence[Layer], variables: Variables, *,
                 input_shape: tuple[int, ...], num_iters: int = 100) -> LipschitzBounds:
  """Upper Lipschitz bounds of every layer and of the whole sequence.

  Pure and unjitted: jit it with ``layers`` closed over, e.g.
  ``jax.jit(lambda k, v: layer_bounds(k, layers, v, input_shape=s))``.

  Args:
    key: PRNG key; each Affine layer gets its own ``fold_in``.
    layers: the network's description (see the module docstring).
    variables: ``{"params": ..., **other collections}`` passed to each layer.
    input_shape: shape of one input, without a batch axis.
    num_iters: power-iteration steps per Affine layer.

  Returns:
    :class:`LipschitzBounds`.
  """
  bounds, rel_change = {}, {}
  counter = [0]

  def visit(layer, x, prefix):
    """Bound of ``layer`` at input ``x`` (zeros of the right shape); its output."""
    name = prefix + layer.name
    if isinstance(layer, Affine):
      fn = lambda z: layer.fn(variables, z)
      sigma, change = operator_norm(jax.random.fold_in(key, counter[0]), fn, x,
                                    num_iters=num_iters)
      counter[0] += 1
      bounds[name], rel_change[name] = sigma, change
      return sigma, jnp.zeros_like(_shape_of(fn, x))
    if isinstance(layer, Fixed):
      bounds[name] = jnp.float32(layer.lipschitz)
      return bounds[name], jnp.zeros_like(_shape_of(lambda z: layer.fn(variables, z), x))
    if isinstance(layer, (Sequential, Residual)):
      bounds[name] = None  # keep the block ahead of its parts in the ordering
      total, y = jnp.float32(1.0), x
      for sub in layer.layers:
        b, y = visit(sub, y, name + "/")
        total = total * b
      if isinstance(layer, Residual):
        if y.shape != x.shape:
          raise ValueError(f"Residual {name}: its layers map {x.shape} to {y.shape}.")
        total = 1.0 + total
      bounds[name] = total
      return total, y
    raise TypeError(f"Unknown layer {layer!r}: use Affine, Fixed, Sequential or Residual.")

  log10_network, x = jnp.float32(0.0), jnp.zeros(input_shape, jnp.float32)
  for layer in layers:
    b, x = visit(layer, x, "")
    log10_network = log10_network + jnp.log10(b)
  return LipschitzBounds(bounds=bounds, rel_change=rel_change, log10_network=log10_network,
                         names=tuple(bounds), top_level=tuple(l.name for l in layers))


def _shape_of(fn, x):
  out = jax.eval_shape(fn, x)
  return jnp.zeros(out.shape, out.dtype)


def compose(layers: Sequence[Layer], variables: Variables, x: jax.Array) -> jax.Array:
  """Runs the described network on one example ``x`` (no batch axis)."""
  for layer in layers:
    if isinstance(layer, (Affine, Fixed)):
      x = layer.fn(variables, x)
    elif isinstance(layer, Sequential):
      x = compose(layer.layers, variables, x)
    elif isinstance(layer, Residual):
      x = x + compose(layer.layers, variables, x)
    else:
      raise TypeError(f"Unknown layer {layer!r}.")
  return x


def sensitivity_ratio(apply_fn, params, x: jax.Array, x_perturbed: jax.Array) -> jax.Array:
  """``||f(x + r) - f(x)||_2 / ||r||_2`` per example, ``f`` = the logits.

  Args:
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: ``[B, H, W, C]`` clean images.
    x_perturbed: ``[B, H, W, C]`` perturbed images ``x + r``.

  Returns:
    ``[B]`` ratios (NaN where ``r = 0``).
  """
  diff = apply_fn(params, x_perturbed) - apply_fn(params, x)
  r = jnp.reshape(x_perturbed - x, (x.shape[0], -1))
  r_norm = jnp.linalg.norm(r, axis=-1)
  return jnp.where(r_norm > 0, jnp.linalg.norm(diff, axis=-1) / jnp.where(
      r_norm > 0, r_norm, 1.0), jnp.nan)


# --- Constants of fixed layers ------------------------------------------------


def max_pool_lipschitz(window: Sequence[int], strides: Sequence[int]) -> float:
  """L2 Lipschitz constant bound of max-pooling: ``sqrt(max windows per pixel)``.

  ``|max_W x - max_W y| <= max_{p in W} |x_p - y_p|``, so the squared output
  difference is at most ``sum_W sum_{p in W} (x_p - y_p)^2 <= m ||x - y||^2``
  with ``m = prod ceil(window / stride)`` the most windows covering one pixel
  (1 for Caffe's non-overlapping 2x2/2 pooling).
  """
  m = 1
  for w, s in zip(window, strides):
    m *= -(-w // s)
  return math.sqrt(m)


def lrn_lipschitz(*, size: int, beta: float, k: float) -> float:
  """L2 Lipschitz bound of cross-channel LRN ``x_i / (k + a S_i)^beta``.

  ``S_i`` is the sum of ``x_j^2`` over the ``n = size`` channels around ``i``
  and ``a = alpha / n > 0``; pixels are independent, so the bound of one
  pixel's ``C -> C`` map is the bound of the layer. Its Jacobian is ``D - B``
  with ``D = diag(g_i^-beta)``, ``g_i = k + a S_i >= k``, so ``||D|| <=
  k^-beta``, and ``B_ij = 2 a beta x_i x_j g_i^(-beta-1)`` for ``j`` in ``i``'s
  window. With ``t = a S_i`` and ``max_t t (k + t)^(-1-beta) = k^-beta
  beta^beta / (1 + beta)^(1 + beta)``:

  * row sums: ``|x_i| sum_j |x_j| <= sqrt(n) S_i``, so ``<= 2 sqrt(n) q k^-beta``,
  * column sums: at most ``n`` terms with ``|x_i x_j| <= S_i / 2`` (``i != j``)
    or ``<= S_i`` (``i = j``), so ``<= (n + 1) q k^-beta``,

  with ``q = (beta / (1 + beta))^(1 + beta)``. Schur's test gives ``||B|| <=
  sqrt(row * column)``, hence ``L <= k^-beta (1 + q sqrt(2 sqrt(n) (n + 1)))``
  (2.18 for AlexNet's ``n = 5, beta = 0.75, k = 1``), independent of alpha.
  The mean-value theorem turns the Jacobian bound into a Lipschitz bound.
  """
  if not (k > 0 and beta >= 0 and size >= 1):
    raise ValueError(f"lrn_lipschitz needs k > 0, beta >= 0, size >= 1; got {k}, {beta}, {size}.")
  q = (beta / (1.0 + beta)) ** (1.0 + beta)
  return k ** -beta * (1.0 + q * math.sqrt(2.0 * math.sqrt(size) * (size + 1)))


# --- Layer functions (one example, no batch axis) -----------------------------


def _get(variables, collection, path):
  node = variables[collection]
  for part in path.split("/"):
    node = node[part]
  return node


def dense(path: str, *, flatten: bool = False) -> LayerFn:
  """``x @ kernel + bias`` of the Dense at ``params/<path>``."""
  def fn(variables, x):
    if flatten:
      x = x.reshape(-1)
    p = _get(variables, "params", path)
    y = x @ p["kernel"]
    return y + p["bias"] if "bias" in p else y
  return fn


def conv(path: str, *, strides: int = 1, padding: str | Sequence = "SAME",
         feature_group_count: int = 1) -> LayerFn:
  """The convolution of ``params/<path>`` (HWIO kernel, optional bias), NHWC."""
  def fn(variables, x):
    p = _get(variables, "params", path)
    y = jax.lax.conv_general_dilated(
        x[None], p["kernel"], (strides, strides), padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=feature_group_count)[0]
    return y + _channels(p["bias"], y) if "bias" in p else y
  return fn


def batch_norm(path: str, *, epsilon: float) -> LayerFn:
  """Inference-mode batch norm of ``params/<path>`` and ``batch_stats/<path>``.

  Affine: ``(x - mean) * scale / sqrt(var + eps) + bias``, whose operator
  norm alone is ``max |scale| / sqrt(var + eps)``; composed after a conv
  (:func:`chain`) it rescales the conv's output channels.
  """
  def fn(variables, x):
    p, s = _get(variables, "params", path), _get(variables, "batch_stats", path)
    scale = p["scale"] * jax.lax.rsqrt(s["var"] + epsilon)
    return ((x - _channels(s["mean"], x)) * _channels(scale, x)
            + _channels(p["bias"], x))
  return fn


def _channels(v, like):
  """A per-channel vector shaped to broadcast over ``like``'s last axis."""
  return jnp.reshape(v, (1,) * (like.ndim - 1) + (-1,))


def chain(*fns: LayerFn) -> LayerFn:
  """``fns[-1](... fns[0](x))``: e.g. conv then batch norm as one affine layer."""
  def fn(variables, x):
    for f in fns:
      x = f(variables, x)
    return x
  return fn


def _fixed(name, f, lipschitz):
  return Fixed(name, lambda variables, x: f(x), lipschitz)


def relu(name="relu"):
  return _fixed(name, nn.relu, 1.0)


def relu6(name="relu6"):
  return _fixed(name, nn.relu6, 1.0)


def sigmoid(name="sigmoid"):
  return _fixed(name, nn.sigmoid, 0.25)


def max_pool(name, *, window, strides, padding="VALID"):
  return _fixed(name, lambda x: nn.max_pool(x[None], window, strides=strides,
                                            padding=padding)[0],
                max_pool_lipschitz(window, strides))


# --- Zoo descriptions ----------------------------------------------------------


def lenet_layers() -> tuple[Layer, ...]:
  """Caffe's LeNet (no ReLU after the convolutions, as in Caffe)."""
  return (
      Affine("conv1", conv("conv1", padding="VALID")),
      max_pool("pool1", window=(2, 2), strides=(2, 2)),
      Affine("conv2", conv("conv2", padding="VALID")),
      max_pool("pool2", window=(2, 2), strides=(2, 2)),
      Affine("ip1", dense("ip1", flatten=True)),
      relu("relu1"),
      Affine("ip2", dense("ip2")),
  )


_FIXED_ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid}


def mlp_layers(hidden: Sequence[int], *, activation: str = "relu") -> tuple[Layer, ...]:
  """Szegedy's FC nets (:class:`~foolingjax.models.small.MLP`)."""
  if activation not in _FIXED_ACTIVATIONS and activation != "tanh":
    raise ValueError(f"No Lipschitz constant for activation {activation!r}.")
  layers = []
  for i in range(len(hidden)):
    layers.append(Affine(f"fc{i + 1}", dense(f"fc{i + 1}", flatten=i == 0)))
    if activation == "tanh":
      layers.append(_fixed(f"tanh{i + 1}", jnp.tanh, 1.0))
    else:
      layers.append(_FIXED_ACTIVATIONS[activation](f"{activation}{i + 1}"))
  layers.append(Affine("out", dense("out", flatten=not hidden)))
  return tuple(layers)


def autoencoder_layers() -> tuple[Layer, ...]:
  """AE400-10: encoder, sigmoid (1/4), linear classifier."""
  return (Affine("encoder", dense("encoder", flatten=True)), sigmoid("sigmoid"),
          Affine("classifier", dense("classifier")))


def alexnet_small_layers() -> tuple[Layer, ...]:
  """:class:`~foolingjax.models.small.AlexNetSmall`, LRN bounded by :func:`lrn_lipschitz`."""
  lrn = lambda name: _fixed(
      name, lambda x: local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=1.0),
      lrn_lipschitz(size=5, beta=0.75, k=1.0))
  return (
      Affine("normalise", lambda v, x: (x - 0.5) / 0.25),
      Affine("conv1", conv("conv1")), relu("relu1"),
      max_pool("pool1", window=(3, 3), strides=(2, 2), padding="SAME"), lrn("lrn1"),
      Affine("conv2", conv("conv2")), relu("relu2"), lrn("lrn2"),
      max_pool("pool2", window=(3, 3), strides=(2, 2), padding="SAME"),
      Affine("fc3", dense("fc3", flatten=True)), relu("relu3"),
      Affine("fc4", dense("fc4")), relu("relu4"),
      Affine("logits", dense("logits")),
  )


def efficientnet_layers(module: efficientnet.EfficientNetLite) -> tuple[Layer, ...]:
  """EfficientNet-Lite: each conv + its inference batch norm is one affine layer.

  Batch norm in inference mode rescales the conv's output channels, so the
  pair is one linear map whose norm (the one bounded) is at most the product
  of the two norms. Blocks with an identity skip are :class:`Residual`
  (``1 + Lip(F)``), the others :class:`Sequential`. The input normalisation
  ``(255 x - mean) / std`` and the global average pool are affine layers too.
  """
  eps = efficientnet._BN_EPS

  def normalise(variables, x):
    mean = jnp.asarray(module.mean, jnp.float32).reshape((1, 1, -1))
    std = jnp.asarray(module.std, jnp.float32).reshape((1, 1, -1))
    return (x * 255.0 - mean) / std

  def depthwise(path, stride):
    def fn(variables, x):
      kernel = _get(variables, "params", path)["kernel"]
      return efficientnet.depthwise_conv_same(x[None], kernel, stride=stride,
                                              method=module.depthwise)[0]
    return fn

  layers = [
      Affine("normalise", normalise),
      Affine("stem", chain(conv("conv_stem", strides=2, padding="SAME"),
                           batch_norm("bn0", epsilon=eps))),
      relu6("stem_relu6"),
  ]
  channels, index = 32, 0
  for repeats, kernel, stride, expand, out in module.stages:
    for r in range(repeats):
      s = stride if r == 0 else 1
      b = f"blocks_{index}"
      inner = []
      if expand != 1:
        inner += [Affine("expand", chain(conv(f"{b}/expand_conv", padding="VALID"),
                                         batch_norm(f"{b}/bn0", epsilon=eps))),
                  relu6("relu6_expand")]
      inner += [Affine("depthwise", chain(depthwise(f"{b}/depthwise_conv", s),
                                          batch_norm(f"{b}/bn1", epsilon=eps))),
                relu6("relu6_depthwise"),
                Affine("project", chain(conv(f"{b}/project_conv", padding="VALID"),
                                        batch_norm(f"{b}/bn2", epsilon=eps)))]
      block = Residual if s == 1 and channels == out else Sequential
      layers.append(block(b, tuple(inner)))
      channels, index = out, index + 1
  layers += [
      Affine("head", chain(conv("conv_head", padding="VALID"),
                           batch_norm("bn1", epsilon=eps))),
      relu6("head_relu6"),
      Affine("pool", lambda v, x: jnp.mean(x, axis=(0, 1))),
      Affine("fc", dense("fc")),
  ]
  return tuple(layers)


def zoo_layers(apply_fn) -> tuple[Layer, ...]:
  """The layer description of a zoo classifier's ``apply_fn``."""
  module = getattr(apply_fn, "module", None)
  if isinstance(module, LeNet):
    return lenet_layers()
  if isinstance(module, MLP):
    return mlp_layers(module.hidden, activation=module.activation)
  if isinstance(module, AutoencoderClassifier):
    return autoencoder_layers()
  if isinstance(module, AlexNetSmall):
    return alexnet_small_layers()
  if isinstance(module, efficientnet.EfficientNetLite):
    return efficientnet_layers(module)
  raise ValueError(
      f"No layer description for {type(module).__name__}. Fix: write one as a tuple "
      "of Affine / Fixed / Sequential / Residual layers (see lenet_layers).")


def variables_of(apply_fn, params) -> dict:
  """``{"params": params, **apply_fn.extra_variables}`` (e.g. batch stats)."""
  return {"params": params, **getattr(apply_fn, "extra_variables", {})}


__all__ = [
    "Affine", "Fixed", "LipschitzBounds", "Residual", "Sequential", "alexnet_small_layers",
    "autoencoder_layers", "batch_norm", "chain", "compose", "conv", "dense",
    "efficientnet_layers", "layer_bounds", "lenet_layers", "lrn_lipschitz",
    "max_pool", "max_pool_lipschitz", "mlp_layers", "operator_norm", "relu", "relu6",
    "sensitivity_ratio", "sigmoid", "variables_of", "zoo_layers",
]
