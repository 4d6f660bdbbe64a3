"""Fast Minimum-Norm attack (Pintor, Roli, Brendel & Biggio 2021), L2 and L∞.

FMN looks for the smallest perturbation that fools the classifier by
normalised gradient steps on the logit margin inside an ε-ball whose radius
adapts every step: it shrinks, ``eps <- min(eps (1 - gamma), best norm)``,
while the iterate is adversarial; grows, ``eps <- eps (1 + gamma)``, once an
adversarial point was found but the iterate is not; and before any is found
it is set to ``||delta|| + |m| / ||grad m||_*`` (the linearised distance to
the boundary, ``*`` the dual norm), here times ``1 + gamma``. The step ``alpha`` and the factor
``gamma`` are cosine-annealed. The smallest adversarial iterate is returned.

``steps`` steps per image in a ``lax.while_loop`` (so that images masked out
by :func:`~foolingjax.attacks.auto_attack` cost nothing), ``vmap``-ed over the
batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from foolingjax import checks
from foolingjax.attacks import _common


@struct.dataclass
class FmnInfo:
  """What :func:`fmn` found; each leaf has shape ``[B]``.

  Attributes:
    success: an adversarial point was found.
    distance: its norm (``inf`` where none was found).
  """

  success: jax.Array
  distance: jax.Array


def fmn_core(apply_fn, params, *, norm: str, steps: int, alpha_init: float,
             alpha_final: float, gamma_init: float, gamma_final: float,
             targeted: bool):
  """The per-image FMN run: ``run(x [H, W, C], label, active) -> (adv, found,
  distance)``; an inactive image comes back clean with ``found = False``."""
  dual = "l1" if norm == "linf" else "l2"

  def run(xi, label, active):
    def margin_and_logits(x_adv):
      logits = apply_fn(params, x_adv[None])[0]
      m = _common.margin(logits, label)
      return (-m if targeted else m), logits

    # The farthest point of the box: no perturbation is ever larger.
    worst = _common.norm_of(jnp.maximum(xi, 1.0 - xi), norm)

    def step(carry):
      i, delta, eps, best_adv, best_norm, found = carry
      cosine = 0.5 * (1.0 + jnp.cos(math.pi * i / steps))
      alpha = alpha_final + (alpha_init - alpha_final) * cosine
      gamma = gamma_final + (gamma_init - gamma_final) * cosine
      (m, logits), grad = jax.value_and_grad(margin_and_logits, has_aux=True)(
          xi + delta)
      # m > 0 means still correct (untargeted) / not yet the target (targeted).
      predicted = jnp.argmax(logits)
      is_adv = (predicted == label) if targeted else (predicted != label)
      delta_norm = _common.norm_of(delta, norm)
      smaller = is_adv & (delta_norm < best_norm)
      best_adv = jnp.where(smaller, xi + delta, best_adv)
      best_norm = jnp.where(smaller, delta_norm, best_norm)
      found = found | is_adv
      to_boundary = jnp.abs(m) / jnp.maximum(_common.norm_of(grad, dual), _common.TINY)
      # Pintor et al. set eps to the linearised distance itself; grown by
      # (1 + gamma) here, or on an exactly linear boundary the iterate lands on
      # it (margin 0, not adversarial) and stays there for good.
      eps = jnp.where(is_adv, jnp.minimum(eps * (1.0 - gamma), best_norm),
                      jnp.where(found, eps * (1.0 + gamma),
                                (delta_norm + to_boundary) * (1.0 + gamma)))
      eps = jnp.minimum(eps, worst)
      # Descend the margin with a unit-L2 step, then project onto the ball and box.
      delta = delta - alpha * grad / jnp.maximum(_common.norm_of(grad, "l2"),
                                                 _common.TINY)
      if norm == "linf":
        delta = jnp.clip(delta, -eps, eps)
      else:
        delta = delta * jnp.minimum(1.0, eps / jnp.maximum(
            _common.norm_of(delta, "l2"), _common.TINY))
      delta = jnp.clip(xi + delta, 0.0, 1.0) - xi
      return i + 1.0, delta, eps, best_adv, best_norm, found

    init = (jnp.array(0.0), jnp.zeros_like(xi), jnp.array(jnp.inf), xi,
            jnp.array(jnp.inf), jnp.array(False))
    # A while_loop only so that inactive images (and whole inactive batches)
    # cost nothing; an active image always runs all its steps.
    _, delta, _, best_adv, best_norm, found = jax.lax.while_loop(
        lambda carry: active & (carry[0] < steps), step, init)
    # The last iterate is checked too.
    m, _ = margin_and_logits(xi + delta)
    delta_norm = _common.norm_of(delta, norm)
    smaller = (m < 0) & (delta_norm < best_norm)
    best_adv = jnp.where(smaller, xi + delta, best_adv)
    best_norm = jnp.where(smaller, delta_norm, best_norm)
    found = (found | (m < 0)) & active
    return (jnp.where(found, best_adv, xi), found,
            jnp.where(found, best_norm, jnp.inf))

  return run


def fmn(apply_fn, params, x: jax.Array, labels: jax.Array, *, norm: str = "l2",
        steps: int = 100, alpha_init: float = 1.0, alpha_final: float | None = None,
        gamma_init: float = 0.05, gamma_final: float = 0.001,
        targeted: bool = False) -> tuple[jax.Array, FmnInfo]:
  """Fast Minimum-Norm attack: the smallest fooling perturbation it finds.

  Args:
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]`` true labels, or targets when ``targeted``.
    norm: ``"l2"`` or ``"linf"``.
    steps: number of steps (Python int).
    alpha_init: initial L2 length of a step.
    alpha_final: final step length (``alpha_init / 100`` by default).
    gamma_init: initial ε-ball adaptation factor.
    gamma_final: final factor.
    targeted: reach ``labels`` instead of leaving them.

  Returns:
    ``(adv, info)``: ``[B, H, W, C]`` in [0, 1] (the clean image where no
    adversarial point was found) and an :class:`FmnInfo`. A minimum-norm
    attack needs no ``eps``: one run gives the robust accuracy at every
    radius, ``mean(~(info.success[None] & (info.distance[None] <=
    eps[:, None])), -1)`` for ``eps [E]`` (an image misclassified when clean
    has distance 0).
  """
  who = "fmn"
  x, labels, _ = _common.validate(who, apply_fn, params, x, labels,
                                  name="targets" if targeted else "labels")
  checks.norm(norm, who=who)
  steps = _common.check_int(steps, name="steps", who=who)
  alpha_final = alpha_init / 100 if alpha_final is None else alpha_final
  for name, value in (("alpha_init", alpha_init), ("alpha_final", alpha_final),
                      ("gamma_init", gamma_init), ("gamma_final", gamma_final)):
    checks.nonnegative(value, name=name, who=who, upper=1.0 if "gamma" in name else None)
  run = fmn_core(apply_fn, params, norm=norm, steps=steps, alpha_init=alpha_init,
                 alpha_final=alpha_final, gamma_init=gamma_init,
                 gamma_final=gamma_final, targeted=targeted)
  adv, found, distance = jax.vmap(run)(x, labels, jnp.ones((x.shape[0],), bool))
  return adv, FmnInfo(success=found, distance=distance)
