"""An AutoAttack-style robustness evaluation (Croce & Hein 2020).

The standard ensemble, run in order, each attack only on the points that every
earlier one left robust:

1. ``"apgd-ce"``: :func:`~foolingjax.attacks.apgd` on cross-entropy;
2. ``"apgd-t"``: targeted APGD on the targeted DLR loss (targeted CE when
   ``K < 4``), once per target among the ``target_classes`` highest-scoring
   other classes of the clean image;
3. ``"fmn"``: the Fast Minimum-Norm attack (here in place of AutoAttack's
   FAB-T), counted when its smallest adversarial point lies in the ε-ball;
4. ``"square"``: the score-based Square Attack (catches gradient masking).

"Only on the robust points" is a mask, not a gather: the batch keeps its shape,
and every attack's per-image ``lax.while_loop`` starts finished for a masked
image, so a batch that is already broken costs (almost) nothing. The result
is the per-image worst case: the first adversarial point found, or the clean
image where none was.

``eps`` may be a vector ``[E]``: the whole ensemble runs once per radius in one
compiled call (each radius with its own survivors, the same keys for every
radius, so each slice equals a separate call). FMN does not depend on the
radius, so it runs once, on every image that survives at some radius, and its
distances are compared with each radius.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from foolingjax.attacks import _common
from foolingjax.attacks.apgd import apgd_core, with_restarts
from foolingjax.attacks.fmn import fmn_core
from foolingjax.attacks.square import square_core

ATTACKS = ("apgd-ce", "apgd-t", "fmn", "square")


@struct.dataclass
class AutoAttackResult:
  """The worst case per image. Leaves are ``[B, ...]`` unless said otherwise;
  for a vector ``eps`` every leaf gains a leading ``[E]`` axis.

  Attributes:
    adv: ``[B, H, W, C]``: the adversarial image, or the clean one where the
      point stayed robust (or was misclassified to begin with).
    robust: bool ``[B]``: classified correctly at ``adv``.
    clean_correct: bool ``[B]``: classified correctly at the clean image.
    broken_by: int ``[B]``: ``-1`` robust, ``0`` misclassified when clean,
      ``i + 1`` broken by ``attacks[i]``.
    robust_accuracy: scalar, the mean of ``robust``.
    clean_accuracy: scalar, the mean of ``clean_correct``.
    accuracy_after: ``[A]``: robust accuracy after each attack of ``attacks``.
    attacks: the attack names, in order (static).
  """

  adv: jax.Array
  robust: jax.Array
  clean_correct: jax.Array
  broken_by: jax.Array
  robust_accuracy: jax.Array
  clean_accuracy: jax.Array
  accuracy_after: jax.Array
  attacks: tuple[str, ...] = struct.field(pytree_node=False)


def _apgd_targeted(apply_fn, params, keys, x, labels, logits, active, eps, *,
                   norm: str, steps: int, target_classes: int):
  """APGD-T: one targeted run per rival class (a ``lax.scan`` over ranks), each
  on the images no earlier rank fooled. Returns ``(adv, fooled)``."""
  k = logits.shape[-1]
  run = apgd_core(apply_fn, params, norm=norm, steps=steps,
                  loss="dlr_targeted" if k >= 4 else "ce_targeted")
  is_label = jnp.arange(k)[None, :] == labels[:, None]
  rivals = jnp.argsort(-jnp.where(is_label, -jnp.inf, logits), axis=-1)

  def one_target(carry, rank):
    new, fooled = carry
    rank_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, rank)
    got, hit, _ = jax.vmap(run, in_axes=(0, 0, 0, 0, 0, None))(
        rank_keys, x, labels, rivals[:, rank], active & ~fooled, eps)
    return (jnp.where(hit[:, None, None, None], got, new), fooled | hit), None
  (new, fooled), _ = jax.lax.scan(one_target, (x, jnp.zeros((x.shape[0],), bool)),
                                  jnp.arange(target_classes))
  return new, fooled


def auto_attack(key: jax.Array, apply_fn, params, x: jax.Array, labels: jax.Array, *,
                eps, norm: str = "linf", attacks: tuple[str, ...] = ATTACKS,
                steps: int = 100, restarts: int = 1, target_classes: int = 9,
                fmn_steps: int = 100, square_queries: int = 5000,
                square_p_init: float = 0.8) -> AutoAttackResult:
  """Robust accuracy under an ensemble of attacks, later ones on survivors only.

  Args:
    key: PRNG key.
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]`` true labels.
    eps: radius of the threat model, a scalar or a vector ``[E]`` (one
      compiled call; the result's leaves gain a leading ``[E]`` axis).
    norm: ``"linf"`` or ``"l2"``.
    attacks: a sub-sequence of ``("apgd-ce", "apgd-t", "fmn", "square")``.
    steps: APGD iterations per run.
    restarts: APGD-CE restarts.
    target_classes: APGD-T's number of target classes (capped at ``K - 1``).
    fmn_steps: FMN steps.
    square_queries: Square's query budget per image.
    square_p_init: Square's initial window fraction.

  Returns:
    An :class:`AutoAttackResult`.
  """
  who = "auto_attack"
  x, labels, k = _common.validate(who, apply_fn, params, x, labels)
  eps, vector = _common.check_eps(eps, who=who, norm=norm)
  attacks = tuple(attacks)
  unknown = [a for a in attacks if a not in ATTACKS]
  if unknown or len(set(attacks)) != len(attacks):
    raise ValueError(f"{who}: attacks must be distinct names from {ATTACKS}; got "
                     f"{attacks!r}.")
  steps = _common.check_int(steps, name="steps", who=who)
  restarts = _common.check_int(restarts, name="restarts", who=who)
  target_classes = min(_common.check_int(target_classes, name="target_classes",
                                         who=who), k - 1)
  fmn_steps = _common.check_int(fmn_steps, name="fmn_steps", who=who)
  square_queries = _common.check_int(square_queries, name="square_queries", who=who)
  batch = x.shape[0]
  logits = apply_fn(params, x)
  clean_correct = jnp.argmax(logits, axis=-1) == labels
  keys = jax.random.split(key, len(attacks))

  def per_eps(fn, *args):
    """``fn(eps, *args)``, vmapped over the radii (and ``args``' leading axis)."""
    return jax.vmap(fn)(eps, *args) if vector else fn(eps, *args)

  def check(eps, new, robust, fooled):
    """Trust only what the classifier says at a point inside the ball."""
    inside = jax.vmap(lambda d: _common.norm_of(d, norm))(new - x) <= eps * (1.0 + 1e-6)
    wrong = jnp.argmax(apply_fn(params, new), axis=-1) != labels
    return robust & fooled & inside & wrong

  # Per radius: [B] for a scalar eps, [E, B] for a vector.
  lead = (eps.shape[0],) if vector else ()
  robust = jnp.broadcast_to(clean_correct, (*lead, batch))
  adv = jnp.broadcast_to(x, (*lead, *x.shape))
  broken_by = jnp.where(robust, -1, 0)
  accuracy_after = []

  def stage(name, per_image, robust):
    """One attack of the ensemble at every radius: ``(new, broken)``, each
    ``[B, ...]`` (``[E, B, ...]``); ``broken`` is checked by :func:`check`."""
    if name == "fmn":  # minimum-norm: one run serves every radius
      run = fmn_core(apply_fn, params, norm=norm, steps=fmn_steps, alpha_init=1.0,
                     alpha_final=0.01, gamma_init=0.05, gamma_final=0.001,
                     targeted=False)
      alive = jnp.any(robust, axis=0) if vector else robust
      found_adv, found, distance = jax.vmap(run)(x, labels, alive)

      def attack(eps, robust):
        return found_adv, found & (distance <= eps) & robust
    elif name == "apgd-ce":
      run = with_restarts(apgd_core(apply_fn, params, norm=norm, steps=steps,
                                    loss="ce"), restarts)

      def attack(eps, robust):
        new, fooled, _ = jax.vmap(run, in_axes=(0, 0, 0, 0, 0, None))(
            per_image, x, labels, labels, robust, eps)
        return new, fooled
    elif name == "apgd-t":
      def attack(eps, robust):
        return _apgd_targeted(apply_fn, params, per_image, x, labels, logits, robust,
                              eps, norm=norm, steps=steps,
                              target_classes=target_classes)
    else:
      run = square_core(apply_fn, params, norm=norm, queries=square_queries,
                        p_init=square_p_init, targeted=False, image_shape=x.shape[1:])

      def attack(eps, robust):
        new, fooled, _, _ = jax.vmap(run, in_axes=(0, 0, 0, 0, None))(
            per_image, x, labels, robust, eps)
        return new, fooled

    def attack_and_check(eps, robust):
      new, fooled = attack(eps, robust)
      return new, check(eps, new, robust, fooled)
    return per_eps(attack_and_check, robust)

  for index, (name, k_attack) in enumerate(zip(attacks, keys)):
    new, broken = stage(name, jax.random.split(k_attack, batch), robust)
    adv = jnp.where(broken[..., None, None, None], new, adv)
    broken_by = jnp.where(broken, index + 1, broken_by)
    robust = robust & ~broken
    accuracy_after.append(jnp.mean(robust.astype(jnp.float32), axis=-1))

  return AutoAttackResult(
      adv=adv, robust=robust,
      clean_correct=jnp.broadcast_to(clean_correct, robust.shape),
      broken_by=broken_by,
      robust_accuracy=jnp.mean(robust.astype(jnp.float32), axis=-1),
      clean_accuracy=jnp.broadcast_to(
          jnp.mean(clean_correct.astype(jnp.float32)), lead),
      accuracy_after=(jnp.stack(accuracy_after, axis=-1) if accuracy_after
                      else jnp.zeros((*lead, 0))),
      attacks=attacks)
