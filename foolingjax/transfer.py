"""Transfer of fooling or adversarial images from one network to another.

Given the softmax outputs of the network the images were made on (DNN_A) and of
another one (DNN_B): the share of images both give the same top-1 label, the
share both score at or above a threshold for the intended class, and the share
where B is less confident than A (Nguyen et al. 2015, Table S1's protocol).
Pure; jitted by callers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

TABLE_S1_THRESHOLD = 0.9999


def transfer_statistics(probs_a: jax.Array, probs_b: jax.Array, targets: jax.Array, *,
                        threshold: float = TABLE_S1_THRESHOLD) -> dict[str, jax.Array]:
  """Table S1 statistics of images evolved on DNN_A, shown to DNN_B.

  Args:
    probs_a: ``[N, K]`` softmax of DNN_A (the network the images were evolved on).
    probs_b: ``[N, K]`` softmax of DNN_B.
    targets: int ``[N]``, the class each image was evolved for (its archive cell).
    threshold: the "fooled" confidence (the paper's 99.99 %).

  Returns:
    A dict of scalars: ``same_top1`` (share with ``argmax A == argmax B``),
    ``both_above`` (share with A and B both >= threshold for the target),
    ``b_less_confident`` (share with ``B[target] < A[target]``), ``a_above``
    (share with A >= threshold), ``median_conf_a`` and ``median_conf_b``
    (median target confidence), and ``b_above_given_a_above`` (share of the
    images A scores >= threshold that B also scores >= threshold; NaN if none).
  """
  if probs_a.shape != probs_b.shape or probs_a.ndim != 2:
    raise ValueError(f"probs_a and probs_b must both be [N, K]; got {probs_a.shape} and "
                     f"{probs_b.shape}. Fix: evaluate both networks on the same images, "
                     "with the same class set.")
  if targets.shape != probs_a.shape[:1]:
    raise ValueError(f"targets must be [N] = [{probs_a.shape[0]}]; got {targets.shape}.")
  conf_a = jnp.take_along_axis(probs_a, targets[:, None], axis=1)[:, 0]
  conf_b = jnp.take_along_axis(probs_b, targets[:, None], axis=1)[:, 0]
  a_above = conf_a >= threshold
  b_above = conf_b >= threshold
  mean = lambda b: jnp.mean(b.astype(jnp.float32))
  num_a_above = jnp.sum(a_above)
  return {
      "count": jnp.asarray(targets.shape[0], jnp.int32),
      "same_top1": mean(jnp.argmax(probs_a, -1) == jnp.argmax(probs_b, -1)),
      "both_above": mean(a_above & b_above),
      "b_less_confident": mean(conf_b < conf_a),
      "a_above": mean(a_above),
      "b_above_given_a_above": jnp.where(
          num_a_above > 0, jnp.sum(a_above & b_above) / jnp.maximum(num_a_above, 1),
          jnp.nan),
      "median_conf_a": jnp.median(conf_a),
      "median_conf_b": jnp.median(conf_b),
  }
