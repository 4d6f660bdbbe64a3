"""Argument checks shared by the visualisation functions: one clear error each.

Layer names and shapes are static, so they are checked at trace time; unit and
class indices go through :func:`foolingjax.checks.require`, which raises at
once on concrete values and stages a host callback that raises under ``jit``.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from foolingjax import checks


def layer(acts: Mapping[str, jax.Array], name: str, *, who: str) -> jax.Array:
  """``acts[name]``, or a ``ValueError`` that lists the known layer names."""
  if name not in acts:
    known = ", ".join(repr(k) for k in acts)
    raise ValueError(f"{who}: unknown layer {name!r}. The feature extractor returns "
                     f"{known}. Fix: pass one of those names.")
  return acts[name]


def units(values, *, batch: int, count: int, who: str, what: str) -> jax.Array:
  """Checks int ``[batch]`` indices in ``[0, count)`` (channels or neurons).

  ``what`` names the axis, e.g. ``"the 16 channels of layer 'conv2'"``.
  """
  shape = tuple(np.shape(values))
  dtype = np.dtype(values.dtype) if hasattr(values, "dtype") else np.asarray(values).dtype
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"{who}: units must be integer indices; got dtype {dtype}.")
  if shape != (batch,):
    raise ValueError(f"{who}: units must have shape [{batch}] (one per image); got "
                     f"{list(shape)}.")
  message = (f"{who}: units must lie in [0, {count}), {what}; a value is out of "
             "range. Fix: pass an index below that bound.")
  if isinstance(values, jax.core.Tracer):
    checks.require((values >= 0) & (values < count), message)
  else:
    arr = np.asarray(values)
    bad = arr[(arr < 0) | (arr >= count)]
    if bad.size:
      raise ValueError(f"{who}: units must lie in [0, {count}), {what}; got "
                       f"{sorted(set(bad.tolist()))[:5]}.")
  return jnp.asarray(values, jnp.int32)


def position(pos, *, height: int, width: int, who: str, layer: str) -> tuple[int, int]:
  """Checks a static ``(row, col)`` inside a ``height x width`` map."""
  row, col = (int(p) for p in pos)
  if not (0 <= row < height and 0 <= col < width):
    raise ValueError(f"{who}: position {(row, col)} lies outside layer {layer!r}'s "
                     f"{height}x{width} map. Fix: pass 0 <= row < {height}, "
                     f"0 <= col < {width}.")
  return row, col


def class_labels(labels, logits_shape, *, who: str) -> jax.Array:
  """Checks int ``[B]`` class ids against ``[B, K]`` logits (see checks.labels)."""
  return checks.labels(labels, batch=logits_shape[0], num_classes=logits_shape[-1],
                       who=who)

