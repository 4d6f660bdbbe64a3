"""Carlini & Wagner's L2 attack (Carlini & Wagner 2017, "Towards evaluating the
robustness of neural networks").

The box is removed by the change of variables ``x' = (tanh(w) + 1) / 2``, and
for each image

  minimise_w  ||x'(w) - x||_2^2 + c * max(m(x'(w)), -kappa)

is solved with Adam from ``w = atanh(2x - 1)``, where ``m`` is the logit margin
``z_y - max_{j != y} z_j`` (untargeted) or ``max_{j != t} z_j - z_t``
(targeted) and ``kappa`` the confidence. ``c`` is searched per image as in the
paper's code: multiplied by 10 until some Adam iterate succeeds, then bisected
between the largest failing and smallest succeeding ``c``. Every Adam iterate
that succeeds with margin ``<= -kappa`` is a candidate; the smallest-L2 one
over the whole search is returned.

The Adam loop and the search over ``c`` are ``lax.scan``; the attack is
``vmap``-ed over images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from foolingjax import checks
from foolingjax.attacks import _common


@struct.dataclass
class CarliniWagnerInfo:
  """What :func:`carlini_wagner_l2` found; each leaf has shape ``[B]``.

  Attributes:
    success: an adversarial example (margin ``<= -kappa``) was found.
    l2: ``||adv - x||_2`` of it (0 where none was).
    c: the constant whose run found it (0 where none did).
  """

  success: jax.Array
  l2: jax.Array
  c: jax.Array


def carlini_wagner_l2(apply_fn, params, x: jax.Array, labels: jax.Array, *,
                      targeted: bool = False, kappa: float = 0.0,
                      c_init: float = 1e-3, binary_search_steps: int = 9,
                      steps: int = 1000, learning_rate: float = 1e-2,
                      ) -> tuple[jax.Array, CarliniWagnerInfo]:
  """C&W L2, per image binary search over ``c`` and Adam inside.

  Args:
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    labels: int ``[B]`` true labels, or targets when ``targeted``.
    targeted: reach ``labels`` instead of leaving them.
    kappa: confidence margin ``>= 0``.
    c_init: first ``c`` (``> 0``).
    binary_search_steps: number of ``c`` values tried per image (Python int).
    steps: Adam steps per ``c`` (Python int).
    learning_rate: Adam's step size.

  Returns:
    ``(adv, info)``: the smallest-L2 adversarial image ``[B, H, W, C]`` in
    [0, 1] found over the search (the clean image where none was) and a
    :class:`CarliniWagnerInfo`.
  """
  who = "carlini_wagner_l2"
  x, labels, _ = _common.validate(who, apply_fn, params, x, labels,
                                  name="targets" if targeted else "labels")
  checks.nonnegative(kappa, name="kappa", who=who)
  checks.nonnegative(c_init, name="c_init", who=who, strict=True)
  checks.nonnegative(learning_rate, name="learning_rate", who=who, strict=True)
  binary_search_steps = _common.check_int(binary_search_steps,
                                          name="binary_search_steps", who=who)
  steps = _common.check_int(steps, name="steps", who=who)
  optimizer = optax.adam(learning_rate)

  def margin_of(x_adv, label):
    m = _common.margin(apply_fn(params, x_adv[None])[0], label)
    return -m if targeted else m

  def to_image(w):
    return 0.5 * (jnp.tanh(w) + 1.0)

  def one(xi, label):
    # 0 and 1 map to +-inf: pull them in by a hair.
    w0 = jnp.arctanh(jnp.clip(2.0 * xi - 1.0, -1.0 + 1e-6, 1.0 - 1e-6))

    def objective(w, c):
      x_adv = to_image(w)
      m = margin_of(x_adv, label)
      return jnp.sum(jnp.square(x_adv - xi)) + c * jnp.maximum(m, -kappa), (x_adv, m)

    def solve(c, best):
      def adam_step(carry, _):
        w, opt_state, best, hit = carry
        (_, (x_adv, m)), grad = jax.value_and_grad(objective, has_aux=True)(w, c)
        l2 = jnp.sqrt(jnp.sum(jnp.square(x_adv - xi)))
        ok = (m < 0) & (m <= -kappa)
        better = ok & (l2 < best[1])
        best = _common.select(better, (x_adv, l2, c), best)
        updates, opt_state = optimizer.update(grad, opt_state, w)
        return (optax.apply_updates(w, updates), opt_state, best, hit | ok), None
      init = (w0, optimizer.init(w0), best, jnp.array(False))
      (w, _, best, hit), _ = jax.lax.scan(adam_step, init, None, length=steps)
      # The last iterate too.
      x_adv = to_image(w)
      m = margin_of(x_adv, label)
      l2 = jnp.sqrt(jnp.sum(jnp.square(x_adv - xi)))
      ok = (m < 0) & (m <= -kappa)
      best = _common.select(ok & (l2 < best[1]), (x_adv, l2, c), best)
      return best, hit | ok

    def search_step(carry, _):
      c, lower, upper, best = carry
      best, hit = solve(c, best)
      upper = jnp.where(hit, jnp.minimum(upper, c), upper)
      lower = jnp.where(hit, lower, jnp.maximum(lower, c))
      c = jnp.where(upper < 1e9, 0.5 * (lower + upper), 10.0 * c)
      return (c, lower, upper, best), None

    best = (xi, jnp.array(jnp.inf), jnp.array(0.0))
    init = (jnp.asarray(c_init, jnp.float32), jnp.array(0.0), jnp.array(1e10), best)
    (_, _, _, (x_adv, l2, c)), _ = jax.lax.scan(search_step, init, None,
                                                length=binary_search_steps)
    found = jnp.isfinite(l2)
    return x_adv, CarliniWagnerInfo(success=found, l2=jnp.where(found, l2, 0.0), c=c)

  return jax.vmap(one)(x, labels)
