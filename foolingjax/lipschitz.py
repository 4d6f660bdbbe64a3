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
``variables`` dict (``{"params": ..., "batch_stats": ...}``). The layer kinds
and builders live in :mod:`foolingjax.models.description` (re-exported here);
each architecture's description is its spec's ``lipschitz_layers``
(:class:`foolingjax.models.ArchSpec`), which :func:`zoo_layers` looks up. For
your own net, write the list (see
:func:`foolingjax.models.small.lenet_lipschitz_layers` for the pattern) or
register an ``ArchSpec`` with it. :func:`compose` runs a description, so a
test can check that it reproduces ``apply_fn``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from foolingjax import models
from foolingjax.models.description import (
  Affine,
  Fixed,
  Layer,
  LayerFn,
  Residual,
  Sequential,
  batch_norm,
  chain,
  conv,
  dense,
  fixed,
  lrn_lipschitz,
  max_pool,
  max_pool_lipschitz,
  relu,
  relu6,
  sigmoid,
)

Variables = Any


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


def zoo_layers(apply_fn) -> tuple[Layer, ...]:
  """The layer description of a zoo classifier's ``apply_fn``.

  It is the ``lipschitz_layers`` of the classifier's spec
  (:func:`foolingjax.models.spec_of`), applied to ``apply_fn.module``.
  """
  try:
    spec = models.spec_of(apply_fn)
  except ValueError:
    spec = None
  if spec is None or spec.lipschitz_layers is None:
    module = getattr(apply_fn, "module", None)
    raise ValueError(
        f"No layer description for {type(module).__name__}. Fix: write one as a tuple "
        "of Affine / Fixed / Sequential / Residual layers (see "
        "foolingjax.models.small.lenet_lipschitz_layers), or register an "
        "ArchSpec with lipschitz_layers.")
  return spec.lipschitz_layers(apply_fn.module)


def variables_of(apply_fn, params) -> dict:
  """``{"params": params, **apply_fn.extra_variables}`` (e.g. batch stats)."""
  return {"params": params, **getattr(apply_fn, "extra_variables", {})}


__all__ = [
    "Affine", "Fixed", "Layer", "LayerFn", "LipschitzBounds", "Residual", "Sequential",
    "batch_norm", "chain", "compose", "conv", "dense", "fixed", "layer_bounds",
    "lrn_lipschitz", "max_pool", "max_pool_lipschitz", "operator_norm", "relu", "relu6",
    "sensitivity_ratio", "sigmoid", "variables_of", "zoo_layers",
]
