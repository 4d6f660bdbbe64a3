"""Argument checks shared by attacks, defences and visualisation: one clear error per mistake.

Shapes are static, so they are checked even under ``jit``. Values (``eps``,
labels) are checked whenever they are concrete; a traced value cannot be
inspected, so the caller checks it before jitting (the experiments do).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from foolingjax import contract

NORMS = ("linf", "l2")


def _is_concrete(value) -> bool:
  return not isinstance(value, jax.core.Tracer)


def images(x, *, who: str, input_shape=None) -> jax.Array:
  """Checks a float ``[B, H, W, C]`` batch (and its ``(H, W, C)`` when known)."""
  return contract.check_images(x, expected_hwc=input_shape, who=who)


def labels(y, *, batch: int, num_classes: int | None, who: str,
           name: str = "labels") -> jax.Array:
  """Checks integer labels ``[B]`` in ``[0, K)``."""
  shape = tuple(np.shape(y))
  dtype = np.asarray(y).dtype if not hasattr(y, "dtype") else np.dtype(y.dtype)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"{who}: {name} must be integer class ids of shape [{batch}]; got "
                    f"dtype {dtype}. Fix: pass jnp.asarray({name}, jnp.int32).")
  if shape != (batch,):
    raise ValueError(f"{who}: {name} must have shape [{batch}] (one per image); got "
                     f"{list(shape)}.")
  if num_classes is not None and _is_concrete(y):
    values = np.asarray(y)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      bad = values[(values < 0) | (values >= num_classes)]
      raise ValueError(f"{who}: {name} must lie in [0, {num_classes}); got "
                       f"{sorted(set(bad.tolist()))[:5]}.")
  return jnp.asarray(y, jnp.int32)


def nonnegative(value, *, name: str, who: str, upper: float | None = None,
                strict: bool = False) -> None:
  """Checks a scalar hyperparameter: finite, ``> 0`` if strict else ``>= 0``."""
  if not _is_concrete(value):
    return
  arr = np.asarray(value)
  if arr.shape != ():
    raise ValueError(f"{who}: {name} must be a scalar; got shape {arr.shape}.")
  v = float(arr)
  low_ok = v > 0 if strict else v >= 0
  if not math.isfinite(v) or not low_ok or (upper is not None and v > upper):
    bound = "> 0" if strict else ">= 0"
    extra = f" and <= {upper}" if upper is not None else ""
    raise ValueError(f"{who}: {name} must be finite, {bound}{extra}; got {value!r}.")


def norm(value: str, *, who: str) -> str:
  if value not in NORMS:
    raise ValueError(f"{who}: norm must be one of {NORMS}; got {value!r}.")
  return value


def num_classes(apply_fn, params, x) -> int:
  k = getattr(apply_fn, "num_classes", None)
  if k is None:
    k = int(jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct(
        (1, *x.shape[1:]), jnp.float32)).shape[-1])
  return int(k)
