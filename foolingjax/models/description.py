"""Layer-by-layer descriptions of a network, for :mod:`foolingjax.lipschitz`.

An :class:`~foolingjax.models.registry.ArchSpec` describes its network as a
sequence of layers of four kinds:

* :class:`Affine` ``x -> A x + b`` (dense, convolution with its stride and
  padding, inference-mode batch norm, input normalisation, average pooling,
  or any composition of these such as conv + batch norm);
* :class:`Fixed` parameter-free maps with a known Lipschitz constant: ReLU and
  ReLU6 (1), sigmoid (1/4), max-pooling (:func:`max_pool_lipschitz`),
  cross-channel LRN (:func:`lrn_lipschitz`), flattening (1);
* :class:`Sequential` layers and :class:`Residual` ``x + F(x)`` blocks.

Layer functions take one example (no batch axis) and the network's
``variables`` dict (``{"params": ..., "batch_stats": ...}``). This module
knows no architecture: each model file builds its own description from these
pieces (e.g. :func:`foolingjax.models.small.lenet_lipschitz_layers`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

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
    raise ValueError("lrn_lipschitz needs k > 0, beta >= 0, size >= 1; "
                     f"got {k}, {beta}, {size}.")
  q = (beta / (1.0 + beta)) ** (1.0 + beta)
  return k ** -beta * (1.0 + q * math.sqrt(2.0 * math.sqrt(size) * (size + 1)))


# --- Layer functions (one example, no batch axis) -----------------------------


def lookup(variables: Variables, collection: str, path: str) -> Any:
  """``variables[collection]`` at the ``/``-separated ``path`` (``"blocks_3/bn0"``)."""
  node = variables[collection]
  for part in path.split("/"):
    node = node[part]
  return node


def dense(path: str, *, flatten: bool = False) -> LayerFn:
  """``x @ kernel + bias`` of the Dense at ``params/<path>``."""
  def fn(variables, x):
    if flatten:
      x = x.reshape(-1)
    p = lookup(variables, "params", path)
    y = x @ p["kernel"]
    return y + p["bias"] if "bias" in p else y
  return fn


def conv(path: str, *, strides: int = 1, padding: str | Sequence = "SAME",
         feature_group_count: int = 1) -> LayerFn:
  """The convolution of ``params/<path>`` (HWIO kernel, optional bias), NHWC."""
  def fn(variables, x):
    p = lookup(variables, "params", path)
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
    p, s = lookup(variables, "params", path), lookup(variables, "batch_stats", path)
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


def fixed(name: str, f: Callable[[jax.Array], jax.Array], lipschitz: float) -> Fixed:
  """A :class:`Fixed` layer from a parameter-free ``f(x)`` and its constant."""
  return Fixed(name, lambda variables, x: f(x), lipschitz)


def relu(name="relu"):
  return fixed(name, nn.relu, 1.0)


def relu6(name="relu6"):
  return fixed(name, nn.relu6, 1.0)


def sigmoid(name="sigmoid"):
  return fixed(name, nn.sigmoid, 0.25)


def max_pool(name, *, window, strides, padding="VALID"):
  return fixed(name, lambda x: nn.max_pool(x[None], window, strides=strides,
                                           padding=padding)[0],
               max_pool_lipschitz(window, strides))


__all__ = [
    "Affine", "Fixed", "Layer", "LayerFn", "Residual", "Sequential", "batch_norm",
    "chain", "conv", "dense", "fixed", "lookup", "lrn_lipschitz", "max_pool",
    "max_pool_lipschitz", "relu", "relu6", "sigmoid",
]
