"""Box-constrained L-BFGS adversarial examples (Szegedy et al. 2013, Sec. 4.1).

For each image ``x`` and target label ``l`` it solves

  minimise_x'  c * D(x' - x) + loss_f(x', l)   subject to  x' in [0, 1]^m

with ``D = ||.||_2^2`` (default) or ``||.||_2``, and searches, per image, for
the largest ``c`` (the smallest distortion) whose minimiser is still classified
as ``l``.

The inner problem is solved inside a ``lax.while_loop`` (stopped by a
gradient tolerance or an iteration cap) by one of two L-BFGS loops
(``solver``): ``"zoom"`` is ``optax.lbfgs`` with its strong-Wolfe zoom line
search; ``"armijo"`` is this module's own loop (:func:`minimize_lbfgs_armijo`:
the two-loop recursion unrolled over the memory, Armijo backtracking by
safeguarded quadratic interpolation, a curvature pair kept only when
``s . y > 0``), which does one objective evaluation on most iterations and
little else. The search over ``c`` is a ``lax.scan``; the whole attack is
``jax.vmap``-ed over images, so a batch runs as one compiled program.

How the box is handled
----------------------
L-BFGS is unconstrained, so it runs on ``w in R^m`` and the image is
``x' = P(w)``, the projection (clip) onto the box, with the objective extended
outside the box by a quadratic pull-back::

  F(w) = c * D(P(w) - x) + loss_f(P(w), l) + (mu / 2) * ||w - P(w)||^2.

``F`` equals the original objective on the box, and outside it
``F(w) = F(P(w)) + (mu / 2) ||w - P(w)||^2 > F(P(w))``, so every minimiser of
``F`` lies in the box and minimises the constrained problem, and every local
minimiser of the constrained problem is one of ``F``: a pixel on a bound
that the objective wants to push out is held there by the pull-back (the
one-sided derivative outward is ``mu * 0 = 0`` from outside and the objective's
inward derivative is positive), and a pixel the objective wants to pull in is
free to move. This is unlike a plain clip (``mu = 0``), whose gradient vanishes
outside the box and leaves spurious stationary points with pixels stuck
outside. ``P``'s derivative is taken from inside the box (1 on the bound
itself), so MNIST's many pixels that sit exactly at 0 still see the loss
gradient at the start. The returned image is ``P(w)``, in the box by
construction. This is checked against ``scipy.optimize.minimize(method=
"L-BFGS-B", bounds=...)`` in ``benchmarks/bench_lbfgs.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu
from flax import struct

from foolingjax import checks
from foolingjax.attacks.losses import LossFn, cross_entropy

DISTANCES = ("l2_squared", "l2")


@struct.dataclass
class LbfgsInfo:
  """What :func:`lbfgs_attack` found, per image; each leaf has shape ``[B]``.

  Attributes:
    success: the returned image is classified as its target.
    l2: ``||adv - x||_2`` of the returned image (0 where no c succeeded).
    c: the distortion weight of the returned image (0 where none succeeded).
    iterations: L-BFGS iterations summed over the whole c search.
    objective: final objective value of the returned image's inner solve.
  """

  success: jax.Array
  l2: jax.Array
  c: jax.Array
  iterations: jax.Array
  objective: jax.Array


def box_projection(w: jax.Array) -> jax.Array:
  """Clip to [0, 1] whose derivative on a bound is taken from inside (1)."""
  return jnp.where(w < 0.0, 0.0, jnp.where(w > 1.0, 1.0, w))


def make_objective(apply_fn, params, x: jax.Array, target: jax.Array, c, *,
                   loss_fn: LossFn = cross_entropy, distance: str = "l2_squared",
                   box_weight: float = 10.0):
  """The extended objective ``F(w)`` of one image (see the module docstring).

  Args:
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: the clean image ``[H, W, C]``.
    target: int scalar, the label ``l`` to reach.
    c: distortion weight, float scalar.
    loss_fn: per-example ``loss_fn(logits [K], label) -> []``.
    distance: ``"l2_squared"`` or ``"l2"``.
    box_weight: ``mu`` of the pull-back outside the box.

  Returns:
    ``F(w [H, W, C]) -> []``.
  """
  def objective(w):
    x_adv = box_projection(w)
    r2 = jnp.sum(jnp.square(x_adv - x))
    # sqrt is not differentiable at r = 0, where every search starts.
    dist = r2 if distance == "l2_squared" else jnp.sqrt(r2 + 1e-12) - 1e-6
    outside = jnp.sum(jnp.square(w - x_adv))
    logits = apply_fn(params, x_adv[None])[0]
    return c * dist + loss_fn(logits, target) + 0.5 * box_weight * outside
  return objective


def minimize_lbfgs(fun, w0: jax.Array, *, max_iters: int, tol: float,
                   ftol: float = 1e-6, memory_size: int = 10,
                   max_linesearch_steps: int = 20):
  """Minimises ``fun`` from ``w0`` with ``optax.lbfgs`` in a ``lax.while_loop``.

  Stops, as scipy's L-BFGS-B does, when the projected gradient's largest
  entry is below ``tol`` (a plain gradient norm never vanishes at the kink on
  a bound) or the objective's relative decrease is below ``ftol`` (float32, so
  far above L-BFGS-B's float64 default), or after ``max_iters`` iterations.
  Under ``vmap`` each example stops at its own iteration.

  Returns:
    ``(w, value, iterations)``.
  """
  solver = optax.lbfgs(
      memory_size=memory_size,
      linesearch=optax.scale_by_zoom_linesearch(
          max_linesearch_steps=max_linesearch_steps, initial_guess_strategy="one"))
  value_and_grad = optax.value_and_grad_from_state(fun)

  def body(carry):
    w, state, _ = carry
    value, grad = value_and_grad(w, state=state)
    updates, state = solver.update(grad, state, w, value=value, grad=grad,
                                   value_fn=fun)
    return optax.apply_updates(w, updates), state, value

  def keep_going(carry):
    # previous: the objective before the last step; state: after it.
    w, state, previous = carry
    return _stop_rules(w, otu.tree_get(state, "grad"), otu.tree_get(state, "value"),
                       previous, otu.tree_get(state, "count"), max_iters=max_iters,
                       tol=tol, ftol=ftol)

  w, state, _ = jax.lax.while_loop(keep_going, body,
                                   (w0, solver.init(w0), jnp.array(jnp.inf)))
  return w, otu.tree_get(state, "value"), otu.tree_get(state, "count")


def _stop_rules(w, grad, value, previous, count, *, max_iters: int, tol: float,
                ftol: float) -> jax.Array:
  """True while an inner solve goes on: L-BFGS-B's two stopping rules.

  (1) The largest entry of the projected gradient ``w - clip(w - g)`` over the
  pixels inside the box is below ``tol``; pixels outside it are held on their
  bound by the pull-back and count as converged. (2) The objective's relative
  decrease (``previous`` before the last step, ``value`` after it) is below
  ``ftol``. Or ``count`` reached ``max_iters``. The first iteration always runs.
  """
  inside = (w >= 0.0) & (w <= 1.0)
  projected = jnp.where(inside, w - jnp.clip(w - grad, 0.0, 1.0), 0.0)
  small_gradient = jnp.max(jnp.abs(projected)) < tol
  stalled = (previous - value) <= ftol * jnp.maximum(
      jnp.maximum(jnp.abs(previous), jnp.abs(value)), 1.0)
  return (count == 0) | ((count < max_iters) & ~small_gradient & ~stalled)


def minimize_lbfgs_armijo(fun, w0: jax.Array, *, max_iters: int, tol: float,
                          ftol: float = 1e-6, memory_size: int = 10,
                          max_linesearch_steps: int = 20, armijo: float = 1e-4):
  """Minimises ``fun`` by L-BFGS with Armijo backtracking (``solver="armijo"``).

  Each iteration takes the direction ``d = -H g`` of the two-loop recursion
  (Nocedal & Wright, Alg. 7.4) over the last ``memory_size`` curvature pairs,
  newest first, unrolled (the memory is a static size), with ``H_0 = gamma I``,
  ``gamma = s.y / y.y`` of the newest pair; ``-g`` when ``d`` is not a descent
  direction. It tries the step ``t = 1`` (``min(1, 1 / ||g||)`` on the first
  iteration, as ``optax.lbfgs`` does) and, while ``f(w + t d) > f(w) + armijo
  * t * g.d``, moves ``t`` to the minimiser of the quadratic through ``f(w)``,
  ``g.d`` and ``f(w + t d)``, kept within ``[0.1 t, 0.5 t]``. A step that
  never satisfies the Armijo condition is not taken (the stall rule then ends
  the solve). The pair ``(s, y)`` enters the memory only when ``s.y > 1e-10
  y.y``, which keeps ``H`` positive definite without a curvature condition on
  the step. Stops as :func:`minimize_lbfgs`.

  Why it exists: on small classifiers an iteration of ``optax.lbfgs`` with its
  zoom line search costs several times the objective's own evaluation (the
  line search's state machine, a ``lax.scan`` per loop of the recursion);
  here the usual iteration is one evaluation and a few dozen vector
  operations (``benchmarks/bench_lbfgs.py`` measures both).

  Returns:
    ``(w, value, iterations)``.
  """
  shape, m = w0.shape, memory_size
  value_and_grad = jax.value_and_grad(lambda v: fun(v.reshape(shape)))
  w = w0.reshape(-1)
  f, g = value_and_grad(w)

  def direction(g, s_mem, y_mem, rho, gamma):
    q, alphas = g, []
    for i in range(m):  # newest pair first
      alpha = rho[i] * jnp.dot(s_mem[i], q)
      q = q - alpha * y_mem[i]
      alphas.append(alpha)
    r = gamma * q
    for i in reversed(range(m)):
      beta = rho[i] * jnp.dot(y_mem[i], r)
      r = r + (alphas[i] - beta) * s_mem[i]
    return -r

  def body(carry):
    w, f, g, s_mem, y_mem, rho, gamma, count, _ = carry
    d = direction(g, s_mem, y_mem, rho, gamma)
    slope = jnp.dot(g, d)
    descent = slope < 0.0
    d = jnp.where(descent, d, -g)
    slope = jnp.where(descent, slope, -jnp.dot(g, g))
    t0 = jnp.where(count == 0, jnp.minimum(1.0, jax.lax.rsqrt(jnp.dot(g, g))), 1.0)
    f0, g0 = value_and_grad(w + t0 * d)

    def too_long(search):
      t, f_t, _, steps = search
      return ~(f_t <= f + armijo * t * slope) & (steps < max_linesearch_steps)

    def shorten(search):
      t, f_t, _, steps = search
      t_min = -slope * t * t / (2.0 * (f_t - f - slope * t))
      t_min = jnp.where(jnp.isfinite(t_min), t_min, 0.5 * t)
      t = jnp.clip(t_min, 0.1 * t, 0.5 * t)
      f_t, g_t = value_and_grad(w + t * d)
      return t, f_t, g_t, steps + 1

    t, f_t, g_t, _ = jax.lax.while_loop(too_long, shorten, (t0, f0, g0, 0))
    accepted = f_t <= f + armijo * t * slope
    s = jnp.where(accepted, t * d, 0.0)
    f_new, g_new = jnp.where(accepted, f_t, f), jnp.where(accepted, g_t, g)
    y = g_new - g
    sy, yy = jnp.dot(s, y), jnp.dot(y, y)
    keep = sy > 1e-10 * yy
    push = lambda mem, new: jnp.where(keep, jnp.roll(mem, 1, axis=0).at[0].set(new), mem)
    s_mem, y_mem = push(s_mem, s), push(y_mem, y)
    rho = push(rho, 1.0 / jnp.where(keep, sy, 1.0))
    gamma = jnp.where(keep, sy / jnp.where(keep, yy, 1.0), gamma)
    return w + s, f_new, g_new, s_mem, y_mem, rho, gamma, count + 1, f

  def keep_going(carry):
    w, f, g, *_, count, previous = carry
    return _stop_rules(w, g, f, previous, count, max_iters=max_iters, tol=tol,
                       ftol=ftol)

  n = w.size
  init = (w, f, g, jnp.zeros((m, n), w.dtype), jnp.zeros((m, n), w.dtype),
          jnp.zeros((m,), w.dtype), jnp.array(1.0, w.dtype), jnp.array(0, jnp.int32),
          jnp.array(jnp.inf, w.dtype))
  w, f, *_, count, _ = jax.lax.while_loop(keep_going, body, init)
  return w.reshape(shape), f, count


# lbfgs_attack's solver -> its inner L-BFGS loop.
SOLVERS = {"zoom": minimize_lbfgs, "armijo": minimize_lbfgs_armijo}


def lbfgs_attack(apply_fn, params, x: jax.Array, targets: jax.Array, *,
                 c_init: float = 1.0, c_search_steps: int = 10,
                 c_factor: float = 10.0, max_iters: int = 100, tol: float = 1e-4,
                 memory_size: int = 10, max_linesearch_steps: int = 20,
                 loss_fn: LossFn | None = None, distance: str = "l2_squared",
                 box_weight: float = 10.0, chunk_size: int | None = None,
                 solver: str = "zoom") -> tuple[jax.Array, LbfgsInfo]:
  """Szegedy et al.'s box-constrained L-BFGS attack, batched over images.

  The search over ``c`` is per image: starting at ``c_init``, ``c`` is
  multiplied by ``c_factor`` after a success and divided by it after a failure
  until both a successful and a failing ``c`` are known, then bisected in log
  space between the largest successful and smallest failing ``c``. Each solve
  starts from the clean image. The returned image is the successful one with
  the smallest L2 distortion.

  Args:
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: float32 clean images ``[B, H, W, C]`` in [0, 1].
    targets: int ``[B]`` labels to reach, in ``[0, K)``.
    c_init: first distortion weight.
    c_search_steps: number of inner solves per image (a Python int).
    c_factor: growth factor of the exponential phase of the search, ``> 1``.
    max_iters: L-BFGS iteration cap of each inner solve.
    tol: gradient-norm tolerance of each inner solve.
    memory_size: L-BFGS memory.
    max_linesearch_steps: zoom line-search cap.
    loss_fn: per-example ``loss_fn(logits [K], label) -> []``; cross-entropy by
      default.
    distance: ``"l2_squared"`` (default, smooth) or ``"l2"`` (Szegedy's
      ``|r|``).
    box_weight: ``mu`` of the pull-back that keeps the solution in the box.
    chunk_size: ``None`` vmaps the per-image attack over the whole batch; an
      int ``k`` runs ``lax.map`` over chunks of ``k`` images, vmapped within a
      chunk (same results). Under ``vmap`` every ``lax.cond`` inside optax's
      zoom line search becomes a select that evaluates both branches, and its
      operands, the classifier's weights included, are broadcast to one copy
      per image; every image also waits for the slowest one's line search.
      On XLA:CPU that made ``k = 1`` the fastest (see the README's attacks
      section for the measurements).
    solver: the inner L-BFGS loop: ``"zoom"`` (default; ``optax.lbfgs`` with
      its zoom line search, :func:`minimize_lbfgs`, which every README table
      of the Szegedy experiments was measured with) or ``"armijo"``
      (:func:`minimize_lbfgs_armijo`, several times faster on small nets
      at the same distortion; the README's attacks section measures both
      against scipy's L-BFGS-B).

  Returns:
    ``(adv, info)``: adversarial images ``[B, H, W, C]`` in [0, 1] (the clean
    image where no ``c`` succeeded) and an :class:`LbfgsInfo`.
  """
  who = "lbfgs_attack"
  x = checks.images(x, who=who, input_shape=getattr(apply_fn, "input_shape", None))
  k = checks.num_classes(apply_fn, params, x)
  targets = checks.labels(targets, batch=x.shape[0], num_classes=k, who=who,
                           name="targets")
  checks.nonnegative(c_init, name="c_init", who=who, strict=True)
  checks.nonnegative(tol, name="tol", who=who)
  checks.nonnegative(box_weight, name="box_weight", who=who, strict=True)
  if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
    raise ValueError(f"{who}: chunk_size must be None or a Python int >= 1; got "
                     f"{chunk_size!r}.")
  if not (c_factor > 1.0):
    raise ValueError(f"{who}: c_factor must be > 1; got {c_factor!r}.")
  for name, value in (("c_search_steps", c_search_steps), ("max_iters", max_iters)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{who}: {name} must be a Python int >= 1; got {value!r}.")
  if distance not in DISTANCES:
    raise ValueError(f"{who}: distance must be one of {DISTANCES}; got {distance!r}.")
  if solver not in SOLVERS:
    raise ValueError(f"{who}: solver must be one of {tuple(SOLVERS)}; got {solver!r}.")
  loss_fn = loss_fn or cross_entropy
  minimize = SOLVERS[solver]

  def one(xi, target):
    def solve(c):
      fun = make_objective(apply_fn, params, xi, target, c, loss_fn=loss_fn,
                           distance=distance, box_weight=box_weight)
      w, value, iterations = minimize(
          fun, xi, max_iters=max_iters, tol=tol, memory_size=memory_size,
          max_linesearch_steps=max_linesearch_steps)
      x_adv = box_projection(w)
      hit = jnp.argmax(apply_fn(params, x_adv[None])[0]) == target
      return x_adv, hit, value, iterations

    def search_step(carry, _):
      c, c_ok, c_fail, best, iters = carry
      x_adv, hit, value, iterations = solve(c)
      l2 = jnp.sqrt(jnp.sum(jnp.square(x_adv - xi)))
      better = hit & (l2 < best[1].l2)
      best = jax.tree.map(
          lambda new, old: jnp.where(better, new, old),
          (x_adv, LbfgsInfo(success=hit, l2=l2, c=c, iterations=jnp.array(0),
                            objective=value)),
          best)
      c_ok = jnp.where(hit, jnp.maximum(c_ok, c), c_ok)
      c_fail = jnp.where(hit, c_fail, jnp.minimum(c_fail, c))
      bracketed = (c_ok > 0) & jnp.isfinite(c_fail)
      c_next = jnp.where(bracketed, jnp.sqrt(c_ok * c_fail),
                         jnp.where(hit, c * c_factor, c / c_factor))
      return (c_next, c_ok, c_fail, best, iters + iterations), None

    best = (xi, LbfgsInfo(success=jnp.array(False), l2=jnp.array(jnp.inf),
                          c=jnp.array(0.0), iterations=jnp.array(0),
                          objective=jnp.array(jnp.nan)))
    init = (jnp.asarray(c_init, jnp.float32), jnp.array(0.0), jnp.array(jnp.inf),
            best, jnp.array(0, jnp.int32))
    (_, _, _, (x_adv, info), iters), _ = jax.lax.scan(
        search_step, init, None, length=c_search_steps)
    info = info.replace(l2=jnp.where(info.success, info.l2, 0.0),
                        iterations=iters)
    return x_adv, info

  if chunk_size is None:
    return jax.vmap(one)(x, targets)
  return jax.lax.map(lambda args: one(*args), (x, targets), batch_size=chunk_size)
