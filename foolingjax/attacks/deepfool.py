"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016), batched and box-aware.

At the current point DeepFool linearises every candidate class's logit
difference ``f_k = z_k - z_y`` (gradient ``w_k``) and steps onto the nearest
linearised boundary:

  k* = argmin_k |f_k| / ||w_k||_q

(``q`` the dual norm: 2 for L2, 1 for L∞), with the step ``r = (d + 1e-4) w /
||w||_2`` for L2 and ``r = (d + 1e-4) sign(w)`` for L∞, ``d = |f| / ||w||_q``
(the original's L2 step, LTS4/DeepFool ``deepfool.py``). The steps accumulate
in ``r_tot`` and the iterate is ``x + (1 + overshoot) r_tot`` as in the
original, here also clipped to [0, 1] at every step so the gradients are taken
where the image really is (the original has no box). On an affine classifier with the box
inactive one step lands ``(1 + overshoot)`` times the exact distance to the
nearest decision boundary away.

Each image stops once it is misclassified (an image misclassified from the
start never moves); the loop is a ``lax.while_loop`` under ``vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from foolingjax import checks
from foolingjax.attacks import _common


@struct.dataclass
class DeepFoolInfo:
  """What :func:`deepfool` found; each leaf has shape ``[B]``.

  Attributes:
    success: the returned image is misclassified.
    iterations: linearisation steps taken.
    distance: ``||adv - x||`` in the attack's norm.
  """

  success: jax.Array
  iterations: jax.Array
  distance: jax.Array


def deepfool(apply_fn, params, x: jax.Array, labels: jax.Array, *,
             overshoot: float = 0.02, max_iter: int = 50, norm: str = "l2",
             candidates: int | None = None) -> tuple[jax.Array, DeepFoolInfo]:
  """DeepFool, untargeted, per image early-stopped.

  Args:
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]`` classes to leave (the true labels, or the clean
      predictions as in the original).
    overshoot: the final perturbation is ``(1 + overshoot)`` times the summed
      steps.
    max_iter: iteration cap (Python int).
    norm: ``"l2"`` or ``"linf"``.
    candidates: consider only the label and the ``candidates - 1``
      highest-scoring other classes of the clean image (the original's
      ``num_classes=10``; one backward pass per candidate and step). ``None``:
      all classes.

  Returns:
    ``(adv, info)``: ``[B, H, W, C]`` in [0, 1] and a :class:`DeepFoolInfo`.
  """
  who = "deepfool"
  x, labels, k = _common.validate(who, apply_fn, params, x, labels)
  checks.norm(norm, who=who)
  checks.nonnegative(overshoot, name="overshoot", who=who)
  max_iter = _common.check_int(max_iter, name="max_iter", who=who)
  if candidates is None:
    candidates = k
  candidates = _common.check_int(candidates, name="candidates", who=who, minimum=2)
  return deepfool_unchecked(apply_fn, params, x, labels, overshoot=overshoot,
                            max_iter=max_iter, norm=norm, candidates=min(candidates, k))


def deepfool_unchecked(apply_fn, params, x: jax.Array, labels: jax.Array, *,
                       overshoot: float, max_iter: int, norm: str,
                       candidates: int | None = None) -> tuple[jax.Array, DeepFoolInfo]:
  """:func:`deepfool` without its input checks, for callers that checked once.

  Under ``jit`` the checks are host callbacks that run on every call; a caller
  that runs DeepFool inside its own loop (the universal perturbation, once per
  visited image) validates its inputs once outside the loop and calls this.
  ``candidates=None`` means every class.
  """
  dual = "l1" if norm == "linf" else "l2"

  def logits_of(xi):
    return apply_fn(params, xi[None])[0]

  def one(xi, label):
    logits0 = logits_of(xi)
    k = logits0.shape[0]
    is_label = jnp.arange(k) == label
    # The label's rivals: the highest-scoring other classes of the clean image.
    rivals = jnp.argsort(-jnp.where(is_label, -jnp.inf, logits0))[:(candidates or k) - 1]

    def differences(x_cur):
      logits = logits_of(x_cur)
      f = logits[rivals] - logits[label]
      return f, f  # jacrev's aux hands back the values beside the Jacobian

    def keep_going(carry):
      _, _, i, fooled = carry
      return ~fooled & (i < max_iter)

    def body(carry):
      x_cur, r_tot, i, _ = carry
      w, f = jax.jacrev(differences, has_aux=True)(x_cur)  # w: [C - 1, H, W, C]
      w_flat = jnp.reshape(w, (w.shape[0], -1))
      w_norm = jnp.maximum(jax.vmap(lambda v: _common.norm_of(v, dual))(w_flat),
                           _common.TINY)
      distances = jnp.abs(f) / w_norm
      best = jnp.argmin(distances)
      # The original's step: (distance + 1e-4) along the unit direction.
      size, direction = distances[best] + 1e-4, w[best]
      if norm == "l2":
        r = size * direction / w_norm[best]
      else:
        r = size * jnp.sign(direction)
      r_tot = r_tot + r
      x_new = jnp.clip(xi + (1.0 + overshoot) * r_tot, 0.0, 1.0)
      fooled = jnp.argmax(logits_of(x_new)) != label
      return x_new, r_tot, i + 1, fooled

    init = (xi, jnp.zeros_like(xi), jnp.array(0), jnp.argmax(logits0) != label)
    x_adv, _, iterations, fooled = jax.lax.while_loop(keep_going, body, init)
    return x_adv, DeepFoolInfo(success=fooled, iterations=iterations,
                               distance=_common.norm_of(x_adv - xi, norm))

  return jax.vmap(one)(x, labels)
