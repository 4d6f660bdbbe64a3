"""Box-constrained L-BFGS adversarial examples (Szegedy et al. 2013, Sec. 4.1).

For each image ``x`` and target label ``l`` it solves

  minimise_x'  c * D(x' - x) + loss_f(x', l)   subject to  x' in [0, 1]^m

with ``D = ||.||_2^2`` (default) or ``||.||_2``, and searches, per image, for
the largest ``c`` (the smallest distortion) whose minimiser is still classified
as ``l``.

The inner problem is solved by ``optax.lbfgs`` with its zoom line search inside
a ``lax.while_loop`` (stopped by a gradient tolerance or an iteration cap);
the search over ``c`` is a ``lax.scan``; the whole attack is ``jax.vmap``-ed
over images, so a batch runs as one compiled program.

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
    count = otu.tree_get(state, "count")
    value = otu.tree_get(state, "value")
    # L-BFGS-B's two stopping rules. (1) The largest entry of the projected
    # gradient w - clip(w - g) over the pixels inside the box; pixels outside
    # it are held on their bound by the pull-back and count as converged.
    grad = otu.tree_get(state, "grad")
    inside = (w >= 0.0) & (w <= 1.0)
    projected = jnp.where(inside, w - jnp.clip(w - grad, 0.0, 1.0), 0.0)
    small_gradient = jnp.max(jnp.abs(projected)) < tol
    # (2) A relative decrease of the objective below ftol.
    stalled = (previous - value) <= ftol * jnp.maximum(
        jnp.maximum(jnp.abs(previous), jnp.abs(value)), 1.0)
    return (count == 0) | ((count < max_iters) & ~small_gradient & ~stalled)

  w, state, _ = jax.lax.while_loop(keep_going, body,
                                   (w0, solver.init(w0), jnp.array(jnp.inf)))
  return w, otu.tree_get(state, "value"), otu.tree_get(state, "count")


def lbfgs_attack(apply_fn, params, x: jax.Array, targets: jax.Array, *,
                 c_init: float = 1.0, c_search_steps: int = 10,
                 c_factor: float = 10.0, max_iters: int = 100, tol: float = 1e-4,
                 memory_size: int = 10, max_linesearch_steps: int = 20,
                 loss_fn: LossFn | None = None, distance: str = "l2_squared",
                 box_weight: float = 10.0,
                 chunk_size: int | None = None) -> tuple[jax.Array, LbfgsInfo]:
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
  loss_fn = loss_fn or cross_entropy

  def one(xi, target):
    def solve(c):
      fun = make_objective(apply_fn, params, xi, target, c, loss_fn=loss_fn,
                           distance=distance, box_weight=box_weight)
      w, value, iterations = minimize_lbfgs(
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
