"""Units versus random directions of a layer's activation space.

Szegedy et al. (2013, section 3) ask whether single neurons are more
interpretable than random directions: the held-out images ``x`` that maximise
``<phi(x), v>`` for a direction ``v`` of a layer's activation space, where
``v`` is a unit vector ``e_i`` (one neuron) or a random direction.
:func:`top_k_along` ranks the images, and :func:`label_purity` turns "the top
images look alike" into a number: the share of the top ``k`` that carry their
most common label. Pure; jitted by callers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

def random_directions(key: jax.Array, num: int, dim: int) -> jax.Array:
  """``num`` directions drawn uniformly on the unit sphere of R^dim, ``[num, dim]``."""
  v = jax.random.normal(key, (num, dim))
  return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def top_k_along(features: jax.Array, directions: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The ``k`` images with the largest projection on each direction.

  Args:
    features: ``[N, D]`` activations ``phi(x)`` of N held-out images.
    directions: ``[M, D]`` directions ``v`` (rows of the identity for units).
    k: how many images per direction, ``<= N``.

  Returns:
    ``(indices [M, k], scores [M, k])``: image indices sorted by decreasing
    ``<phi(x), v>``, and those projections.
  """
  if features.ndim != 2 or directions.ndim != 2 or features.shape[1] != directions.shape[1]:
    raise ValueError(f"features must be [N, D] and directions [M, D]; got "
                     f"{features.shape} and {directions.shape}. Fix: flatten the layer's "
                     "activations to [N, D].")
  if not 1 <= k <= features.shape[0]:
    raise ValueError(f"k must be in [1, {features.shape[0]}] (the number of images); got {k}.")
  scores, indices = jax.lax.top_k(directions @ features.T, k)
  return indices, scores


def label_purity(labels: jax.Array, indices: jax.Array, num_classes: int) -> jax.Array:
  """Per row of ``indices``, the share of its images that carry its most common label.

  Args:
    labels: int ``[N]`` labels of the images.
    indices: int ``[M, k]`` image indices, e.g. from :func:`top_k_along`.
    num_classes: number of labels K.

  Returns:
    float ``[M]`` in ``[1/K, 1]`` (``1``: all ``k`` images share a label).
  """
  counts = jnp.sum(jax.nn.one_hot(labels[indices], num_classes), axis=1)  # [M, K]
  return jnp.max(counts, axis=-1) / indices.shape[1]
