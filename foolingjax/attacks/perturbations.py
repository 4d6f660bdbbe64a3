"""Perturbations of a set size, and random attack targets.

* :func:`scale_to_distortion` moves an image along a direction until the
  clipped result is exactly a given RMS distortion away, so Gaussian noise and
  magnified adversarial perturbations are compared at the distortion they
  really have after clipping to the pixel box (the control rows of Szegedy et
  al.'s Tables 2 and 4); :func:`gaussian_at_distortion` does so for noise.
* :func:`gaussian_noise` and :func:`magnify` are the paper's own rows: noise of
  a fixed standard deviation added to the image, and ``x + s · r / RMS(r)``,
  each unclipped (the paper does not clip; the result may leave [0, 1]) or
  clipped, as asked.
* :func:`random_targets` draws, per image, a target label other than the true
  one, the same for every model; :func:`next_targets` is the fixed rule
  ``(label + 1) mod K``.

Distortion is Szegedy et al.'s ``sqrt(sum((x' - x)^2) / n)`` with pixels in
[0, 1] (:func:`foolingjax.attacks.metrics.rms_distortion`). Pure; jitted by
callers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_targets(key: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """A target label per image, uniform over the ``K - 1`` labels other than its own."""
  shift = jax.random.randint(key, labels.shape, 1, num_classes)
  return (labels + shift) % num_classes


def next_targets(labels: jax.Array, num_classes: int) -> jax.Array:
  """The fixed target rule ``(label + 1) mod K``."""
  return (labels + 1) % num_classes


def gaussian_noise(key: jax.Array, x: jax.Array, stddev, *,
                   clip: bool = False) -> jax.Array:
  """``x + N(0, stddev²)`` per pixel, as Szegedy et al.'s Table 2 rows define it.

  Args:
    key: PRNG key.
    x: clean images ``[B, H, W, C]`` in [0, 1].
    stddev: the noise's standard deviation (a scalar or ``[B]``), >= 0.
    clip: clip the result to [0, 1] (the paper does not say it clips; on
      MNIST, where most pixels are 0, clipping removes about half of the noise).

  Returns:
    ``[B, H, W, C]`` float32; outside [0, 1] where ``clip`` is False.
  """
  stddev = jnp.asarray(stddev, jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
  out = x + stddev * jax.random.normal(key, x.shape, jnp.float32)
  return jnp.clip(out, 0.0, 1.0) if clip else out


def magnify(x: jax.Array, direction: jax.Array, rms, *, clip: bool = False) -> jax.Array:
  """``x + rms · d / RMS(d)``: a perturbation rescaled to an RMS distortion.

  Szegedy et al.'s Table 4 "magnified" rows, ``x + 0.1 · r / ||r||`` with the
  norm read as their distortion measure (RMS over pixels: the rows' "av.
  stddev" is 0.1; the plain L2 norm would shrink, not magnify, r). Unlike
  :func:`scale_to_distortion`, the RMS is met before any clipping.

  Args:
    x: clean images ``[B, H, W, C]``.
    direction: ``[B, H, W, C]`` perturbations (e.g. ``adv - x``).
    rms: target RMS distortion, a scalar or ``[B]``.
    clip: clip the result to [0, 1].
  """
  if x.shape != direction.shape or x.ndim != 4:
    raise ValueError(f"x and direction must be [B, H, W, C] of one shape; got {x.shape} "
                     f"and {direction.shape}.")
  rms = jnp.asarray(rms, jnp.float32).reshape((-1, 1, 1, 1))
  norm = jnp.sqrt(jnp.mean(jnp.square(direction), axis=(1, 2, 3), keepdims=True))
  out = x + jnp.where(norm > 0, rms / jnp.maximum(norm, 1e-12), 0.0) * direction
  return jnp.clip(out, 0.0, 1.0) if clip else out


def _rms(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.mean(jnp.square(y - x)))


def scale_to_distortion(x: jax.Array, direction: jax.Array, target: jax.Array, *,
                        iters: int = 60) -> tuple[jax.Array, jax.Array]:
  """``clip(x + s * direction, 0, 1)`` with ``s >= 0`` chosen to hit an RMS distortion.

  The distortion ``rms(clip(x + s d) - x)`` never decreases with ``s``, so
  ``s`` is found per image by bisection on ``log s`` around the unclipped
  solution ``s0 = target * sqrt(n) / ||d||``. Where clipping caps the
  distortion below ``target`` (every pixel already at a bound), the most
  distorted image is returned, and its distortion says so.

  Args:
    x: clean images ``[B, H, W, C]`` in [0, 1].
    direction: ``[B, H, W, C]`` perturbation directions (any norm; e.g.
      Gaussian noise, or ``adv - x`` to magnify an adversarial perturbation).
    target: RMS distortion(s) to reach, a scalar or ``[B]``.
    iters: bisection steps (60 halve a 2^30-wide bracket well below float32's
      precision).

  Returns:
    ``(images [B, H, W, C], distortion [B])``: the clipped images and their
    measured RMS distortion.
  """
  if x.shape != direction.shape or x.ndim != 4:
    raise ValueError(f"x and direction must be [B, H, W, C] of one shape; got {x.shape} "
                     f"and {direction.shape}.")
  target = jnp.broadcast_to(jnp.asarray(target, jnp.float32), x.shape[:1])

  def one(xi, di, ti):
    norm = jnp.linalg.norm(di)
    s0 = ti * jnp.sqrt(xi.size) / jnp.maximum(norm, 1e-12)
    apply = lambda log_s: jnp.clip(xi + jnp.exp(log_s) * di, 0.0, 1.0)

    def step(bracket, _):
      lo, hi = bracket
      mid = 0.5 * (lo + hi)
      short = _rms(xi, apply(mid)) < ti
      return (jnp.where(short, mid, lo), jnp.where(short, hi, mid)), None

    # Clipping only shrinks the step, so s0 is a lower bound of the answer.
    (lo, hi), _ = jax.lax.scan(step, (jnp.log(s0), jnp.log(s0) + 30.0 * jnp.log(2.0)),
                               None, length=iters)
    out = apply(hi)
    out = jnp.where((norm > 0) & (ti > 0), out, xi)
    return out, _rms(xi, out)

  return jax.vmap(one)(x, direction, target)


def gaussian_at_distortion(key: jax.Array, x: jax.Array, target: jax.Array, *,
                           iters: int = 60) -> tuple[jax.Array, jax.Array]:
  """Gaussian noise scaled so each clipped image is exactly ``target`` RMS away.

  The control for an adversarial perturbation of the same distortion: same
  magnitude, random direction. See :func:`scale_to_distortion`.
  """
  return scale_to_distortion(x, jax.random.normal(key, x.shape), target, iters=iters)
