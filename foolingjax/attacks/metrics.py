"""Attack metrics on batches of images ``[B, H, W, C]`` with pixels in [0, 1]."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _flat(x: jax.Array) -> jax.Array:
  return jnp.reshape(x, (x.shape[0], -1))


def _check_pair(x, adv):
  if jnp.shape(x) != jnp.shape(adv) or jnp.ndim(x) < 2:
    raise ValueError(f"x and adv must be batches of the same shape; got {jnp.shape(x)} "
                     f"and {jnp.shape(adv)}.")


def l2_distortion(x: jax.Array, adv: jax.Array) -> jax.Array:
  """``||adv - x||_2`` per example, ``[B]``."""
  _check_pair(x, adv)
  return jnp.sqrt(jnp.sum(jnp.square(_flat(adv) - _flat(x)), axis=-1))


def linf_distortion(x: jax.Array, adv: jax.Array) -> jax.Array:
  """``max |adv - x|`` per example, ``[B]``."""
  _check_pair(x, adv)
  return jnp.max(jnp.abs(_flat(adv) - _flat(x)), axis=-1)


def rms_distortion(x: jax.Array, adv: jax.Array) -> jax.Array:
  """Szegedy et al.'s per-image distortion ``sqrt(sum((adv - x)^2) / n)``, ``[B]``.

  ``n`` is the number of pixel values of one image (784 for MNIST).
  """
  _check_pair(x, adv)
  n = _flat(x).shape[-1]
  return jnp.sqrt(jnp.sum(jnp.square(_flat(adv) - _flat(x)), axis=-1) / n)


def average_minimum_distortion(x: jax.Array, adv: jax.Array,
                               mask: jax.Array | None = None) -> jax.Array:
  """Szegedy et al.'s "average minimum distortion" (Intriguing properties, Table 1).

  The mean over images of ``sqrt(sum((x' - x)^2) / n)`` with pixels in [0, 1],
  where ``x'`` is the minimally distorted adversarial example of ``x``.

  Args:
    x: clean images ``[B, H, W, C]``.
    adv: adversarial images, same shape.
    mask: optional bool ``[B]``; average over these images only (e.g. the
      successful ones).

  Returns:
    A float scalar (NaN when the mask selects nothing).
  """
  per_image = rms_distortion(x, adv)
  if mask is None:
    return jnp.mean(per_image)
  mask = jnp.asarray(mask, jnp.float32)
  return jnp.sum(per_image * mask) / jnp.sum(mask)


def success(logits: jax.Array, labels: jax.Array, *, targeted: bool) -> jax.Array:
  """Per-example success, bool ``[B]``.

  Args:
    logits: ``[B, K]`` of the adversarial images.
    labels: int ``[B]``: true labels (untargeted) or targets (targeted).
    targeted: success means predicting ``labels`` instead of avoiding them.
  """
  predicted = jnp.argmax(logits, axis=-1)
  return predicted == labels if targeted else predicted != labels


def success_rate(logits: jax.Array, labels: jax.Array, *, targeted: bool) -> jax.Array:
  """Fraction of successful examples, a float scalar."""
  return jnp.mean(success(logits, labels, targeted=targeted).astype(jnp.float32))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of ``argmax(logits) == labels``, a float scalar."""
  return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
