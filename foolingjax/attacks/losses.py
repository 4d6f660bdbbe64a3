"""Per-example attack losses: ``loss_fn(logits [K], label []) -> []``.

Every attack takes a pluggable ``loss_fn`` with this per-example signature and
lifts it over the batch with ``jax.vmap``. The untargeted attacks *raise* the
loss of the true label; the targeted ones *lower* the loss of the target.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, label: jax.Array) -> jax.Array:
  """Softmax cross-entropy ``-log p_label`` of one example.

  Args:
    logits: ``[K]``.
    label: int scalar in ``[0, K)``.

  Returns:
    A float scalar.
  """
  return -jax.nn.log_softmax(logits)[label]


def cross_entropy_direction(logits: jax.Array, label: jax.Array) -> jax.Array:
  """``log(exp(CE) - 1) = logsumexp_{j != label} z_j - z_label`` of one example.

  A strictly increasing function of :func:`cross_entropy` (CE is its softplus),
  so its gradient points exactly where CE's does:
  ``grad CE = sigmoid(.) * grad(this)``. On a saturated softmax (``p_label``
  rounds to 1.0 in float32) the CE gradient underflows to exactly zero, while
  this one stays finite and non-zero. Sign and normalised-gradient attacks
  (FGSM, BIM, PGD) use it whenever the loss is the default cross-entropy.

  Args:
    logits: ``[K]`` with ``K >= 2``.
    label: int scalar in ``[0, K)``.

  Returns:
    A float scalar.
  """
  is_label = jnp.arange(logits.shape[-1]) == label
  others = jax.nn.logsumexp(jnp.where(is_label, -jnp.inf, logits))
  return others - logits[label]


def logit_margin(logits: jax.Array, label: jax.Array) -> jax.Array:
  """Carlini-Wagner margin ``max_{j != label} z_j - z_label`` of one example."""
  is_label = jnp.arange(logits.shape[-1]) == label
  return jnp.max(jnp.where(is_label, -jnp.inf, logits)) - logits[label]
