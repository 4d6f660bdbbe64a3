"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks", Algorithm 1).

APGD is PGD without a step-size parameter. It starts with step ``eta = 2 eps``,
takes momentum steps

  z = P(x_k + eta * d(grad f(x_k)))
  x_{k+1} = P(x_k + a (z - x_k) + (1 - a) (x_k - x_{k-1}))

(``a = 1`` on the first step, ``alpha = 0.75`` after; ``d`` is the sign for L∞
and the unit L2 gradient for L2; ``P`` projects onto the ε-ball and the box),
and at checkpoints ``w_j = ceil(p_j N)`` with ``p_0 = 0``, ``p_1 = 0.22`` and
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` halves ``eta`` and restarts
from the best point found so far when either

1. fewer than ``rho = 0.75`` of the steps since the last checkpoint raised the
   loss, or
2. the step was not halved at the last checkpoint and the best loss has not
   moved since.

On a restart the momentum is dropped (the previous iterate is set to the best
point too) and the best point's gradient is reused, so no extra query is
spent. Everything is per image: each image has its own step size, its own
best point, and (with ``early_stop``) stops at its first misclassified iterate.

The loop is a ``lax.while_loop`` under ``vmap``: it runs until every image of
the batch is fooled or the budget is spent, so a batch that is broken early
costs few steps.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from foolingjax import checks
from foolingjax.attacks import _common
from foolingjax.attacks.gradient import project
from foolingjax.attacks.losses import cross_entropy, cross_entropy_direction

LOSSES = ("ce", "dlr", "ce_targeted", "dlr_targeted")


@struct.dataclass
class ApgdInfo:
  """What :func:`apgd` found; each leaf has shape ``[B]`` (``[E, B]`` for vector eps).

  Attributes:
    success: the returned image is misclassified.
    loss: the attack's loss at the returned image (for ``"ce"`` the monotone
      transform :func:`~foolingjax.attacks.losses.cross_entropy_direction`).
  """

  success: jax.Array
  loss: jax.Array


def dlr_loss(logits: jax.Array, label: jax.Array) -> jax.Array:
  """Difference-of-logits-ratio ``-(z_y - max_{j != y} z_j) / (z_(1) - z_(3))``.

  ``z_(i)`` is the i-th largest logit. Invariant to shifting and scaling the
  logits, so it does not saturate like cross-entropy. Needs ``K >= 3``.

  Args:
    logits: ``[K]``.
    label: int scalar, the true class.

  Returns:
    A float scalar; positive iff misclassified.
  """
  ordered = jnp.sort(logits)
  return -_common.margin(logits, label) / (ordered[-1] - ordered[-3] + 1e-12)


def dlr_targeted_loss(logits: jax.Array, label: jax.Array,
                      target: jax.Array) -> jax.Array:
  """Targeted DLR ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)``. Needs ``K >= 4``."""
  ordered = jnp.sort(logits)
  scale = ordered[-1] - 0.5 * (ordered[-3] + ordered[-4]) + 1e-12
  return -(logits[label] - logits[target]) / scale


def _loss_fn(name: str):
  """``loss(logits [K], label, target) -> []``; the attack raises it."""
  if name == "ce":
    return lambda z, y, t: cross_entropy_direction(z, y)
  if name == "dlr":
    return lambda z, y, t: dlr_loss(z, y)
  if name == "ce_targeted":
    return lambda z, y, t: -cross_entropy(z, t)
  return dlr_targeted_loss


def checkpoints(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """The step-size checkpoints of APGD for a budget of ``steps`` iterations.

  Returns:
    ``(is_checkpoint, window)``, both ``[steps]`` indexed by loop step ``i``
    (which computes iterate ``i + 1``): whether iterate ``i + 1`` is a
    checkpoint ``w_j = ceil(p_j * steps)``, and there ``w_j - w_{j-1}``.
  """
  p = [0.0, 0.22]
  while p[-1] < 1.0:
    p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
  # round() first: 0.22 * 100 is 22.000000000000004 in floating point.
  marks = sorted({math.ceil(round(pj * steps, 9)) for pj in p[1:]}
                 & set(range(1, steps + 1)))
  is_checkpoint = np.zeros(steps, bool)
  window = np.zeros(steps, np.int32)
  previous = 0
  for w in marks:
    is_checkpoint[w - 1] = True
    window[w - 1] = w - previous
    previous = w
  return is_checkpoint, window


@struct.dataclass
class _State:
  """Per-image loop state (scalars or ``[H, W, C]``)."""
  i: jax.Array
  x: jax.Array
  x_prev: jax.Array
  grad: jax.Array
  loss: jax.Array
  step: jax.Array
  x_max: jax.Array
  grad_max: jax.Array
  loss_max: jax.Array
  increases: jax.Array
  loss_max_last_check: jax.Array
  reduced_last_check: jax.Array
  fooled: jax.Array
  x_adv: jax.Array
  loss_adv: jax.Array


def _direction(grad, norm):
  if norm == "linf":
    return jnp.sign(grad)
  return grad / jnp.maximum(_common.norm_of(grad, "l2"), _common.TINY)


def apgd_core(apply_fn, params, *, norm: str, steps: int, loss: str,
              rho: float = 0.75, momentum: float = 0.75, early_stop: bool = True):
  """The per-image APGD run, for :func:`apgd` and :func:`auto_attack`.

  Returns:
    ``run(key, x [H, W, C], label, target, active, eps) -> (adv, fooled,
    loss)``. An inactive image is not attacked: it comes back clean with
    ``fooled = False``.
  """
  loss_of = _loss_fn(loss)
  is_checkpoint = jnp.asarray(checkpoints(steps)[0])
  window = jnp.asarray(checkpoints(steps)[1])

  def run(key, xi, label, target, active, eps):
    def loss_and_logits(x_adv):
      logits = apply_fn(params, x_adv[None])[0]
      return loss_of(logits, label, target), logits
    value_and_grad = jax.value_and_grad(loss_and_logits, has_aux=True)

    def misclassified(logits):
      return jnp.argmax(logits) != label

    logits_clean = apply_fn(params, xi[None])[0]
    loss_clean = loss_of(logits_clean, label, target)
    clean_fooled = misclassified(logits_clean)
    # Croce & Hein's start: a random point on the sphere of radius eps.
    if norm == "linf":
      t = jax.random.uniform(key, xi.shape, minval=-1.0, maxval=1.0)
    else:
      t = jax.random.normal(key, xi.shape)
    t = t / (_common.norm_of(t, norm) + _common.TINY)
    x0 = jnp.clip(xi + eps * t, 0.0, 1.0)
    (loss0, logits0), grad0 = value_and_grad(x0)
    fooled0 = clean_fooled | misclassified(logits0)
    state = _State(
        i=jnp.array(0), x=x0, x_prev=x0, grad=grad0, loss=loss0,
        step=2.0 * jnp.asarray(eps, jnp.float32), x_max=x0, grad_max=grad0,
        loss_max=loss0, increases=jnp.array(0), loss_max_last_check=loss0,
        reduced_last_check=jnp.array(True), fooled=fooled0,
        x_adv=jnp.where(clean_fooled, xi, x0),
        loss_adv=jnp.where(clean_fooled, loss_clean, loss0))

    def keep_going(s):
      going = (s.i < steps) & active
      return going & ~s.fooled if early_stop else going

    def body(s):
      a = jnp.where(s.i == 0, 1.0, momentum)
      z = project(s.x + s.step * _direction(s.grad, norm), xi, eps=eps, norm=norm)
      x_new = project(s.x + a * (z - s.x) + (1.0 - a) * (s.x - s.x_prev), xi,
                      eps=eps, norm=norm)
      (loss_new, logits), grad = value_and_grad(x_new)
      fooled_new = misclassified(logits)
      increases = s.increases + (loss_new > s.loss).astype(jnp.int32)
      better = loss_new > s.loss_max
      x_max, grad_max, loss_max = _common.select(
          better, (x_new, grad, loss_new), (s.x_max, s.grad_max, s.loss_max))
      take = fooled_new & (~s.fooled | (loss_new > s.loss_adv))
      x_adv, loss_adv = _common.select(take, (x_new, loss_new), (s.x_adv, s.loss_adv))

      check = is_checkpoint[s.i]
      oscillating = increases < rho * window[s.i]
      stuck = ~s.reduced_last_check & (s.loss_max_last_check >= loss_max)
      reduce = check & (oscillating | stuck)
      x, x_prev, grad, loss_now = _common.select(
          reduce, (x_max, x_max, grad_max, loss_max), (x_new, s.x, grad, loss_new))
      return _State(
          i=s.i + 1, x=x, x_prev=x_prev, grad=grad, loss=loss_now,
          step=jnp.where(reduce, 0.5 * s.step, s.step), x_max=x_max,
          grad_max=grad_max, loss_max=loss_max,
          increases=jnp.where(check, 0, increases),
          loss_max_last_check=jnp.where(check, loss_max, s.loss_max_last_check),
          reduced_last_check=jnp.where(check, reduce, s.reduced_last_check),
          fooled=s.fooled | fooled_new, x_adv=x_adv, loss_adv=loss_adv)

    s = jax.lax.while_loop(keep_going, body, state)
    adv = jnp.where(s.fooled, s.x_adv, s.x_max)
    out_loss = jnp.where(s.fooled, s.loss_adv, s.loss_max)
    return (jnp.where(active, adv, xi), s.fooled & active,
            jnp.where(active, out_loss, loss_clean))

  return run


def with_restarts(run, restarts: int):
  """Runs ``run`` ``restarts`` times per image, keeping the strongest result.

  A restart only attacks images that no earlier restart fooled. The first
  run uses ``key`` itself, so it is the single run: restarts never weaken it.
  """
  if restarts == 1:
    return run

  def many(key, xi, label, target, active, eps):
    def restart(best, k):
      new = run(k, xi, label, target, active & ~best[1], eps)
      return _common.select(_common.stronger(new[1], new[2], best[1], best[2]),
                            new, best), None
    init = (xi, jnp.array(False), jnp.array(-jnp.inf))
    best, _ = jax.lax.scan(restart, init, _common.restart_keys(key, restarts))
    return best
  return many


def apgd(key: jax.Array, apply_fn, params, x: jax.Array, labels: jax.Array, *, eps,
         norm: str = "linf", steps: int = 100, loss: str = "ce",
         targets: jax.Array | None = None, restarts: int = 1, rho: float = 0.75,
         momentum: float = 0.75,
         early_stop: bool = True) -> tuple[jax.Array, ApgdInfo]:
  """Auto-PGD of Croce & Hein (2020) in L∞ or L2 (see the module docstring).

  Success is always misclassification of ``labels``; the targeted losses
  (APGD-T) only steer the search towards ``targets``.

  Args:
    key: PRNG key for the random starts.
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]`` true labels.
    eps: ball radius, a scalar or a vector ``[E]`` (one compiled call; the
      results gain a leading ``[E]`` axis; the same key for every radius).
    norm: ``"linf"`` or ``"l2"``.
    steps: iteration budget ``N`` per restart (a Python int).
    loss: ``"ce"`` (cross-entropy), ``"dlr"`` (``K >= 3``), ``"ce_targeted"``
      or ``"dlr_targeted"`` (``K >= 4``); the targeted ones need ``targets``.
    targets: int ``[B]`` target classes of the targeted losses.
    restarts: random restarts (Python int); an image fooled by a restart is
      not attacked again; per image the strongest result is kept (fooled
      first, then the highest loss).
    rho: the fraction of loss-raising steps below which the step is halved.
    momentum: ``alpha``, the weight of the new step against the last one.
    early_stop: stop each image at its first misclassified iterate; without
      it an image keeps climbing and returns its highest-loss fooling iterate.

  Returns:
    ``(adv, info)``: ``[B, H, W, C]`` in the ball and the box (``[E, B, ...]``
    for vector eps), the first fooling iterate where one was found, else the
    highest-loss point; and an :class:`ApgdInfo`.
  """
  who = "apgd"
  x, labels, k = _common.validate(who, apply_fn, params, x, labels)
  eps, vector = _common.check_eps(eps, who=who, norm=norm)
  steps = _common.check_int(steps, name="steps", who=who)
  restarts = _common.check_int(restarts, name="restarts", who=who)
  checks.nonnegative(rho, name="rho", who=who, upper=1.0)
  checks.nonnegative(momentum, name="momentum", who=who, upper=1.0)
  if loss not in LOSSES:
    raise ValueError(f"{who}: loss must be one of {LOSSES}; got {loss!r}.")
  need = {"dlr": 3, "dlr_targeted": 4}.get(loss, 2)
  if k < need:
    raise ValueError(f"{who}: loss={loss!r} needs at least {need} classes; this "
                     f"classifier has {k}. Fix: use loss='ce' (or 'ce_targeted').")
  if loss.endswith("_targeted"):
    if targets is None:
      raise ValueError(f"{who}: loss={loss!r} needs targets=[B] class ids.")
    targets = checks.labels(targets, batch=x.shape[0], num_classes=k, who=who,
                            name="targets")
  else:
    targets = labels
  run = with_restarts(apgd_core(apply_fn, params, norm=norm, steps=steps, loss=loss,
                                rho=rho, momentum=momentum, early_stop=early_stop),
                      restarts)
  keys = jax.random.split(key, x.shape[0])
  active = jnp.ones((x.shape[0],), bool)

  def attack(eps):
    adv, fooled, value = jax.vmap(run, in_axes=(0, 0, 0, 0, 0, None))(
        keys, x, labels, targets, active, eps)
    return adv, ApgdInfo(success=fooled, loss=value)
  return _common.map_eps(attack, eps, vector)
