"""FGSM, BIM and PGD (Goodfellow et al. 2014; Kurakin et al. 2016; Madry et al. 2017).

All three move along the sign (L∞) or the normalised direction (L2) of the
loss gradient, so only the gradient's direction matters. With the default loss
they differentiate :func:`~foolingjax.attacks.losses.cross_entropy_direction`,
which has exactly the cross-entropy gradient's direction but does not underflow
to zero on a saturated softmax. Every result is clipped to the pixel box
[0, 1]; clipping never moves a pixel further from the clean image (which lies in
the box), so the result also stays inside the ε-ball.

The functions are unjitted; jit them once with the callables closed over::

  attack = jax.jit(lambda p, x, y: attacks.pgd(key, apply_fn, p, x, y, eps=0.1,
                                               step_size=0.01, steps=40))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from foolingjax import checks
from foolingjax.attacks import _common
from foolingjax.attacks.losses import LossFn, cross_entropy_direction

_TINY = 1e-12


def example_loss(apply_fn, params, loss_fn: LossFn):
  """``loss(x [H, W, C], label []) -> []`` of one example through the classifier."""
  def loss(x, label):
    return loss_fn(apply_fn(params, x[None])[0], label)
  return loss


def _l2_norm(v: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(v)))


def _ascent_direction(grad: jax.Array, norm: str) -> jax.Array:
  if norm == "linf":
    return jnp.sign(grad)
  return grad / jnp.maximum(_l2_norm(grad), _TINY)


def project(x: jax.Array, x_clean: jax.Array, *, eps, norm: str) -> jax.Array:
  """Projects ``x`` onto the ε-ball around ``x_clean``, then clips to [0, 1].

  Args:
    x: one image ``[H, W, C]`` (or any array; the norm is over all of it).
    x_clean: the clean image, same shape, inside [0, 1].
    eps: ball radius.
    norm: ``"linf"`` or ``"l2"``.

  Returns:
    An array of ``x``'s shape inside both the ball and the box.
  """
  delta = x - x_clean
  if norm == "linf":
    delta = jnp.clip(delta, -eps, eps)
  else:
    delta = delta * jnp.minimum(1.0, eps / jnp.maximum(_l2_norm(delta), _TINY))
  return jnp.clip(x_clean + delta, 0.0, 1.0)


def _validate(who, apply_fn, params, x, labels, *, eps, norm, targeted):
  x = checks.images(x, who=who, input_shape=getattr(apply_fn, "input_shape", None))
  k = checks.num_classes(apply_fn, params, x)
  labels = checks.labels(labels, batch=x.shape[0], num_classes=k, who=who,
                          name="targets" if targeted else "labels")
  checks.nonnegative(eps, name="eps", who=who, upper=1.0 if norm == "linf" else None)
  checks.norm(norm, who=who)
  return x, labels


def fgsm(apply_fn, params, x: jax.Array, labels: jax.Array, *, eps,
         targeted: bool = False, norm: str = "linf",
         loss_fn: LossFn | None = None) -> jax.Array:
  """Fast gradient (sign) method, one step of size ``eps``.

  Untargeted: ``x + eps * sign(grad loss(x, label))``. Targeted: the step goes
  down the loss of the target, ``x - eps * sign(grad loss(x, target))``. With
  ``norm="l2"`` the sign is replaced by ``grad / ||grad||_2``.

  Args:
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]``: true labels, or targets when ``targeted``.
    eps: perturbation size, ``0 <= eps`` (``<= 1`` for L∞).
    targeted: move towards ``labels`` instead of away from them.
    norm: ``"linf"`` or ``"l2"``.
    loss_fn: per-example ``loss_fn(logits [K], label) -> []``; cross-entropy by
      default.

  Returns:
    Adversarial images ``[B, H, W, C]`` in [0, 1].
  """
  x, labels = _validate("fgsm", apply_fn, params, x, labels, eps=eps, norm=norm,
                        targeted=targeted)
  loss = example_loss(apply_fn, params, loss_fn or cross_entropy_direction)
  sign = -1.0 if targeted else 1.0

  def one(xi, label):
    direction = _ascent_direction(jax.grad(loss)(xi, label), norm)
    return jnp.clip(xi + sign * eps * direction, 0.0, 1.0)
  return jax.vmap(one)(x, labels)


def pgd(key: jax.Array | None, apply_fn, params, x: jax.Array, labels: jax.Array, *,
        eps, step_size, steps: int, norm: str = "linf", targeted: bool = False,
        random_start: bool = True, loss_fn: LossFn | None = None,
        restarts: int = 1, early_stop: bool = False) -> jax.Array:
  """Projected gradient descent (Madry et al.), optionally from a random start.

  Each of ``steps`` steps moves ``step_size`` along the ascent direction (sign
  for L∞, unit L2 gradient for L2), then projects onto the ε-ball and clips to
  the box. The random start is uniform in the L∞ ball, or uniform in the L2
  ball (Gaussian direction, radius ``eps * u^(1/n)``), then clipped to the box.

  With ``restarts = R > 1`` the attack runs ``R`` times from independent random
  starts and keeps, per image, the strongest result: one that fools the
  classifier (misclassified, or classified as the target when ``targeted``)
  beats one that does not, then the higher loss (lower for ``targeted``) wins;
  the first run uses the single run's key, so restarts never weaken it.
  With ``early_stop`` an image stops moving at the first iterate that fools
  the classifier and keeps it. ``eps`` may be a vector ``[E]``: the whole
  attack runs once per radius in one compiled call (same key for every
  radius, so each slice equals a separate call) and the result gains a
  leading ``[E]`` axis; ``step_size`` is then a scalar or a vector ``[E]``.

  Args:
    key: PRNG key for the random start (unused, may be None, without it).
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]``: true labels, or targets when ``targeted``.
    eps: ball radius, a scalar or a vector ``[E]``.
    step_size: size of each step (scalar, or ``[E]`` beside a vector ``eps``).
    steps: number of steps (a Python int; the loop is a ``lax.scan``).
    norm: ``"linf"`` or ``"l2"``.
    targeted: move towards ``labels`` instead of away from them.
    random_start: start from a random point of the ball.
    loss_fn: per-example loss; cross-entropy by default.
    restarts: number of runs per image (a Python int >= 1); ``R > 1`` needs
      ``random_start``.
    early_stop: freeze each image at its first fooling iterate.

  Returns:
    Adversarial images ``[B, H, W, C]`` (``[E, B, H, W, C]`` for a vector
    ``eps``) in [0, 1] with ``||adv - x|| <= eps`` in the chosen norm.
  """
  who = "pgd" if random_start else "bim"
  x, labels, _ = _common.validate(who, apply_fn, params, x, labels,
                                  name="targets" if targeted else "labels")
  eps, vector = _common.check_eps(eps, who=who, norm=norm)
  if np.ndim(step_size) == 0:
    checks.nonnegative(step_size, name="step_size", who=who)
  else:
    step_size, _ = _common.check_eps(step_size, who=who, norm="l2", name="step_size")
    if not vector or step_size.shape != eps.shape:
      raise ValueError(f"{who}: a vector step_size needs a vector eps of the same "
                       f"shape; got step_size {list(step_size.shape)} and eps "
                       f"{list(np.shape(eps))}.")
  if not isinstance(steps, int) or steps < 0:
    raise ValueError(f"{who}: steps must be a non-negative Python int; got {steps!r}.")
  restarts = _common.check_int(restarts, name="restarts", who=who)
  if random_start and key is None:
    raise ValueError(f"{who}: random_start=True needs a PRNG key; got key=None.")
  if restarts > 1 and not random_start:
    raise ValueError(f"{who}: restarts > 1 needs random_start=True (every run from the "
                     "clean image is the same run).")
  loss_fn = loss_fn or cross_entropy_direction
  sign = -1.0 if targeted else 1.0

  def loss_and_logits(xi, label):
    logits = apply_fn(params, xi[None])[0]
    return loss_fn(logits, label), logits

  def fools(logits, label):
    predicted = jnp.argmax(logits)
    return predicted == label if targeted else predicted != label

  def attack(eps, step_size):
    def start(k, xi):
      return _common.random_start(k, xi, eps, norm) if random_start else xi

    def run(k, xi, label):
      def step(carry, _):
        x_adv, done = carry
        grad, logits = jax.grad(loss_and_logits, has_aux=True)(x_adv, label)
        moved = project(x_adv + sign * step_size * _ascent_direction(grad, norm), xi,
                        eps=eps, norm=norm)
        if not early_stop:
          return (moved, done), None
        done = done | fools(logits, label)
        return (jnp.where(done, x_adv, moved), done), None
      (x_adv, _), _ = jax.lax.scan(step, (start(k, xi), jnp.array(False)), None,
                                   length=steps)
      return x_adv

    def one(k, xi, label):
      if restarts == 1:
        return run(k, xi, label)

      def restart(best, k_run):
        x_adv = run(k_run, xi, label)
        loss, logits = loss_and_logits(x_adv, label)
        new = (x_adv, fools(logits, label), sign * loss)
        return _common.select(_common.stronger(new[1], new[2], best[1], best[2]),
                              new, best), None
      # The first run is the single run's (same key): restarts never weaken it.
      init = (xi, jnp.array(False), jnp.array(-jnp.inf))
      (x_adv, _, _), _ = jax.lax.scan(restart, init, _common.restart_keys(k, restarts))
      return x_adv

    keys = (jax.random.split(key, x.shape[0]) if random_start
            else jnp.zeros((x.shape[0],), jnp.uint32))
    return jax.vmap(one)(keys, x, labels)

  return _common.map_eps(attack, eps, vector, step_size)


def bim(apply_fn, params, x: jax.Array, labels: jax.Array, *, eps, step_size,
        steps: int, norm: str = "linf", targeted: bool = False,
        loss_fn: LossFn | None = None, early_stop: bool = False) -> jax.Array:
  """Basic iterative method (Kurakin et al.): :func:`pgd` from the clean image.

  Args and returns as :func:`pgd`, without a key (and without restarts).
  """
  return pgd(None, apply_fn, params, x, labels, eps=eps, step_size=step_size,
             steps=steps, norm=norm, targeted=targeted, random_start=False,
             loss_fn=loss_fn, early_stop=early_stop)
