"""Helpers shared by the attacks: argument checks, eps vectors, margins, norms."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from foolingjax import checks

TINY = 1e-12


def validate(who: str, apply_fn, params, x, labels, *, name: str = "labels"):
  """Checks images and labels; returns ``(x, labels, num_classes)``."""
  x = checks.images(x, who=who, input_shape=getattr(apply_fn, "input_shape", None))
  k = checks.num_classes(apply_fn, params, x)
  labels = checks.labels(labels, batch=x.shape[0], num_classes=k, who=who, name=name)
  return x, labels, k


def check_eps(eps, *, who: str, norm: str, name: str = "eps"):
  """Checks a scalar or a vector ``[E]`` of radii; returns ``(eps, is_vector)``.

  Every value must be finite and ``>= 0`` (and ``<= 1`` for L∞): checked now
  when concrete, staged with :func:`foolingjax.checks.require` under ``jit``.
  """
  checks.norm(norm, who=who)
  upper = 1.0 if norm == "linf" else None
  if np.ndim(eps) == 0:
    checks.nonnegative(eps, name=name, who=who, upper=upper)
    return eps, False
  shape = tuple(np.shape(eps))
  if len(shape) != 1 or shape[0] == 0:
    raise ValueError(f"{who}: {name} must be a scalar or a non-empty vector [E]; got "
                     f"shape {list(shape)}.")
  extra = f" and <= {upper}" if upper is not None else ""
  if not isinstance(eps, jax.core.Tracer):
    for i, value in enumerate(np.asarray(eps).tolist()):
      if not (math.isfinite(value) and value >= 0 and (upper is None or value <= upper)):
        raise ValueError(f"{who}: every {name} must be finite, >= 0{extra}; got "
                         f"{name}[{i}] = {value!r}.")
  else:
    ok = jnp.isfinite(eps) & (eps >= 0)
    if upper is not None:
      ok = ok & (eps <= upper)
    checks.require(ok, f"{who}: every {name} must be finite, >= 0{extra}; a traced "
                       f"value is not. Fix: pass {name} >= 0{extra}.")
  return jnp.asarray(eps, jnp.float32), True


def check_int(value, *, name: str, who: str, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{who}: {name} must be a Python int >= {minimum}; got {value!r}.")
  return int(value)


def check_positive(value, *, name: str, who: str) -> None:
  checks.nonnegative(value, name=name, who=who, strict=True)


def map_eps(fn, eps, vector: bool, *per_eps):
  """``fn(eps, *per_eps)``, vmapped over a leading eps axis when ``vector``.

  ``per_eps`` are hyperparameters that follow ``eps`` (a step size): scalars
  are shared by every eps; vectors must have eps's length.
  """
  if not vector:
    return fn(eps, *per_eps)
  n = eps.shape[0]
  axes = []
  for value in per_eps:
    if np.ndim(value) == 0:
      axes.append(None)
    elif tuple(np.shape(value)) == (n,):
      axes.append(0)
    else:
      raise ValueError(f"a per-eps hyperparameter must be a scalar or have eps's shape "
                       f"[{n}]; got shape {list(np.shape(value))}.")
  return jax.vmap(fn, in_axes=(0, *axes))(eps, *per_eps)


def norm_of(v: jax.Array, norm: str) -> jax.Array:
  """``||v||`` over all of ``v`` in ``"l2"``, ``"linf"`` or ``"l1"``."""
  if norm == "linf":
    return jnp.max(jnp.abs(v))
  if norm == "l1":
    return jnp.sum(jnp.abs(v))
  return jnp.sqrt(jnp.sum(jnp.square(v)))


def margin(logits: jax.Array, label: jax.Array) -> jax.Array:
  """``z_label - max_{j != label} z_j`` of one example: negative iff misclassified."""
  is_label = jnp.arange(logits.shape[-1]) == label
  return logits[label] - jnp.max(jnp.where(is_label, -jnp.inf, logits))


def select(pick: jax.Array, new, old):
  """``new`` where ``pick`` else ``old``, leaf by leaf (``pick`` is a scalar)."""
  return jax.tree.map(lambda a, b: jnp.where(pick, a, b), new, old)


def stronger(fooled_new, score_new, fooled_old, score_old) -> jax.Array:
  """Restart selection: a fooling point beats a robust one, then higher score wins."""
  return (fooled_new & ~fooled_old) | ((fooled_new == fooled_old) & (score_new > score_old))


def random_start(key, x: jax.Array, eps, norm: str) -> jax.Array:
  """Uniform point of the L∞ ball, or of the L2 ball, clipped to the box."""
  if norm == "linf":
    delta = jax.random.uniform(key, x.shape, minval=-eps, maxval=eps)
  else:
    k_dir, k_rad = jax.random.split(key)
    direction = jax.random.normal(k_dir, x.shape)
    direction = direction / jnp.maximum(norm_of(direction, "l2"), TINY)
    delta = eps * jax.random.uniform(k_rad) ** (1.0 / x.size) * direction
  return jnp.clip(x + delta, 0.0, 1.0)


def restart_keys(key: jax.Array, restarts: int) -> jax.Array:
  """``[restarts]`` keys whose first is ``key`` itself: the first restart is
  the single run, so restarts can only add to it."""
  return jnp.concatenate([key[None], jax.random.split(key, restarts - 1)])
