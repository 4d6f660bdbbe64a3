"""Argument checks shared by attacks, defences and visualisation: one clear error per mistake.

Shapes are static, so they are checked even under ``jit``. Values (``eps``,
labels, pixel ranges) are checked at once when they are concrete; under ``jit``
:func:`require` stages the same check as a host callback that raises when the
compiled function runs, so a traced bad value fails loudly too (jax wraps the
``ValueError`` in a ``JaxRuntimeError`` whose message carries ours). The
callback costs one host round trip per call, never one per step: checks sit at
the entry of a function, outside its loops.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from foolingjax import contract

NORMS = ("linf", "l2")


def _is_concrete(value) -> bool:
  return not isinstance(value, jax.core.Tracer)


def _raise_unless(ok, message: str) -> None:
  if not bool(np.all(np.asarray(ok))):
    raise ValueError(message)


def require(ok, message: str) -> None:
  """Raises ``ValueError(message)`` unless ``ok`` (a bool, or bool array: all must hold).

  Concrete ``ok``: raises now. Traced ``ok`` (under ``jit``, ``vmap``, ``grad``):
  stages a host callback that raises when the compiled function runs with a bad
  value. ``message`` names the problem and the fix; it cannot format traced
  values, so say what the bound is rather than what was passed.
  """
  if _is_concrete(ok):
    _raise_unless(ok, message)
  else:
    jax.debug.callback(functools.partial(_raise_unless, message=message), ok)


def images(x, *, who: str, input_shape=None, pixels: bool = True) -> jax.Array:
  """Checks a float ``[B, H, W, C]`` batch (and its ``(H, W, C)`` when known).

  With ``pixels`` (the default) the values must also be finite and in [0, 1]:
  checked now when ``x`` is concrete, staged by :func:`require` under ``jit``.
  Floats in [0, 255] are the usual mistake; the message says to divide by 255.
  """
  x = contract.check_images(x, expected_hwc=input_shape, who=who)
  if pixels:
    pixel_range(x, who=who)
  return x


_PIXEL_SLACK = 1e-6  # resampling can overshoot [0, 1] by rounding; no more than this.


def pixel_range(x, *, who: str, name: str = "images") -> None:
  """Raises unless every value of ``x`` is finite and in [0, 1] (see :func:`images`)."""
  if _is_concrete(x):
    arr = np.asarray(x)
    if not arr.size:
      return
    if not np.isfinite(arr).all():
      raise ValueError(f"{who}: {name} hold {int((~np.isfinite(arr)).sum())} NaN or "
                       "infinite pixels. Fix: pass finite pixels in [0, 1].")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_PIXEL_SLACK or hi > 1 + _PIXEL_SLACK:
      hint = (" They look like 0-255 values: divide by 255." if hi > 1.5 else
              " Fix: clip or rescale them to [0, 1].")
      raise ValueError(f"{who}: {name} must have pixels in [0, 1]; got values in "
                       f"[{lo:.4g}, {hi:.4g}].{hint}")
    return
  require(jnp.isfinite(x).all() & (x.min() >= -_PIXEL_SLACK)
          & (x.max() <= 1 + _PIXEL_SLACK),
          f"{who}: {name} must be finite pixels in [0, 1]; a traced batch is not "
          "(NaN, or values outside [0, 1], e.g. 0-255). Fix: divide 0-255 values by "
          "255, clip to [0, 1], and remove NaN.")


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
                       f"{sorted(set(bad.tolist()))[:5]}. Fix: pass class ids of "
                       f"this {num_classes}-class classifier.")
  elif num_classes is not None:
    require((y >= 0) & (y < num_classes),
            f"{who}: {name} must lie in [0, {num_classes}); a traced value is out of "
            f"range. Fix: pass class ids of this {num_classes}-class classifier.")
  return jnp.asarray(y, jnp.int32)


def nonnegative(value, *, name: str, who: str, upper: float | None = None,
                strict: bool = False) -> None:
  """Checks a scalar hyperparameter: finite, ``> 0`` if strict else ``>= 0``."""
  if not _is_concrete(value):
    value = jnp.asarray(value)
    if value.shape != ():
      raise ValueError(f"{who}: {name} must be a scalar; got shape {value.shape}.")
    bound = "> 0" if strict else ">= 0"
    ok = jnp.isfinite(value) & ((value > 0) if strict else (value >= 0))
    if upper is not None:
      ok = ok & (value <= upper)
    extra = f" and <= {upper}" if upper is not None else ""
    require(ok, f"{who}: {name} must be finite, {bound}{extra}; a traced value is "
                f"not. Fix: pass {name} {bound}{extra}.")
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
