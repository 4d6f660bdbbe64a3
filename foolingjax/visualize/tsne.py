"""Exact t-SNE in JAX (van der Maaten & Hinton 2008).

Why in JAX and not a library: the embedding of 1-2k penultimate feature
vectors is an O(N^2) dense computation that XLA runs in seconds on a CPU, the
perplexity calibration is a vmapped bisection, and the whole optimisation is one
``lax.scan``, so it is jittable, deterministic for a key, and adds no
dependency (scikit-learn's TSNE would be the well-kept alternative; openTSNE or
Barnes-Hut only pay off far above 10k points). The optimiser follows the
reference implementation: early exaggeration 12 for 250 iterations, momentum
0.5 then 0.8, per-coordinate gains, learning rate ``max(N / 12 / 4, 50)``
(Belkina et al. 2019, scikit-learn's "auto").
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


def squared_distances(x: jax.Array) -> jax.Array:
  """``[N, D] -> [N, N]`` squared Euclidean distances (diagonal exactly 0)."""
  sq = jnp.sum(jnp.square(x), axis=1)
  d = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
  d = jnp.maximum(d, 0.0)
  return d * (1.0 - jnp.eye(x.shape[0], dtype=d.dtype))


def conditional_probabilities(sq_dist: jax.Array, *, perplexity: float,
                              num_bisections: int = 64) -> jax.Array:
  """Rows ``p_{j|i}`` whose entropy is ``log(perplexity)``, by bisection.

  For each point the Gaussian precision ``beta_i`` is found by bisection on
  ``log beta_i`` (entropy decreases monotonically in beta); all rows at once
  with ``vmap``.

  Args:
    sq_dist: ``[N, N]`` squared distances.
    perplexity: effective number of neighbours (5-50).
    num_bisections: bisection steps.

  Returns:
    ``[N, N]`` row-stochastic, zero diagonal.
  """
  n = sq_dist.shape[0]
  if not 1.0 < perplexity < n - 1:
    raise ValueError(f"perplexity must be in (1, N - 1) = (1, {n - 1}); got {perplexity}.")
  # Scaling all distances is absorbed by beta; this keeps the bracket fixed.
  scaled = sq_dist / jnp.maximum(jnp.sum(sq_dist) / (n * (n - 1)), 1e-30)
  target = jnp.log(perplexity)

  def row(dist, i):
    off_diagonal = jnp.arange(n) != i

    def probs(log_beta):
      logits = jnp.where(off_diagonal, -dist * jnp.exp(log_beta), -jnp.inf)
      return jax.nn.softmax(logits)

    def entropy(p):
      return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))

    def bisect(_, bounds):
      lo, hi = bounds
      mid = 0.5 * (lo + hi)
      too_flat = entropy(probs(mid)) > target  # needs a larger beta
      return jnp.where(too_flat, mid, lo), jnp.where(too_flat, hi, mid)

    lo, hi = jax.lax.fori_loop(0, num_bisections, bisect, (-30.0, 30.0))
    return probs(0.5 * (lo + hi))

  return jax.vmap(row)(scaled, jnp.arange(n))


def joint_probabilities(x: jax.Array, *, perplexity: float) -> jax.Array:
  """Symmetrised ``p_ij = (p_{j|i} + p_{i|j}) / 2N`` of points ``[N, D]``."""
  cond = conditional_probabilities(squared_distances(x), perplexity=perplexity)
  return (cond + cond.T) / (2.0 * x.shape[0])


@flax.struct.dataclass
class TSNEResult:
  """Output of :func:`tsne`.

  Attributes:
    embedding: ``[N, dim]``.
    kl: ``[num_iters]`` KL(P || Q) before each iteration (with exaggerated P
      during the first ``exaggeration_iters``).
  """

  embedding: jax.Array
  kl: jax.Array


def tsne(key: jax.Array, x: jax.Array, *, perplexity: float = 30.0, dim: int = 2,
         num_iters: int = 1000, learning_rate: float | None = None,
         early_exaggeration: float = 12.0, exaggeration_iters: int = 250) -> TSNEResult:
  """Exact t-SNE of ``x``, one ``lax.scan`` over iterations.

  Args:
    key: PRNG key for the initial embedding (``N(0, 1e-4^2)``).
    x: ``[N, D]`` points, e.g. penultimate-layer features.
    perplexity: effective number of neighbours.
    dim: embedding dimension.
    num_iters: gradient iterations (static).
    learning_rate: ``None`` for ``max(N / early_exaggeration / 4, 50)``.
    early_exaggeration: factor on P during the first iterations.
    exaggeration_iters: how many; the momentum also switches from 0.5 to 0.8
      then.

  Returns:
    :class:`TSNEResult`.
  """
  n = x.shape[0]
  p = jnp.maximum(joint_probabilities(x.astype(jnp.float32), perplexity=perplexity),
                  1e-12)
  if learning_rate is None:
    learning_rate = max(n / early_exaggeration / 4.0, 50.0)
  y0 = 1e-4 * jax.random.normal(key, (n, dim), jnp.float32)
  not_self = 1.0 - jnp.eye(n, dtype=jnp.float32)

  def step(carry, t):
    y, update, gains = carry
    early = t < exaggeration_iters
    p_t = jnp.where(early, early_exaggeration, 1.0) * p
    momentum = jnp.where(early, 0.5, 0.8)
    kernel = not_self / (1.0 + squared_distances(y))
    q = jnp.maximum(kernel / jnp.sum(kernel), 1e-12)
    kl = jnp.sum(p_t * jnp.log(p_t / q))
    weights = (p_t - q) * kernel
    grad = 4.0 * (jnp.sum(weights, axis=1, keepdims=True) * y - weights @ y)
    same_sign = jnp.sign(grad) == jnp.sign(update)
    gains = jnp.maximum(jnp.where(same_sign, gains * 0.8, gains + 0.2), 0.01)
    update = momentum * update - learning_rate * gains * grad
    y = y + update
    y = y - jnp.mean(y, axis=0, keepdims=True)
    return (y, update, gains), kl

  (y, _, _), kl = jax.lax.scan(step, (y0, jnp.zeros_like(y0), jnp.ones_like(y0)),
                               jnp.arange(num_iters))
  return TSNEResult(y, kl)


def neighbour_agreement(embedding: jax.Array, labels: jax.Array, *, k: int = 5) -> jax.Array:
  """Fraction of each point's ``k`` nearest neighbours sharing its label.

  A scalar summary of how well an embedding keeps classes together (1: every
  neighbourhood is pure).
  """
  d = squared_distances(embedding) + jnp.diag(jnp.full(embedding.shape[0], jnp.inf))
  _, nearest = jax.lax.top_k(-d, k)
  return jnp.mean(labels[nearest] == labels[:, None])
