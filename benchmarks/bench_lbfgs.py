"""Batched JAX L-BFGS attack vs a scipy L-BFGS-B loop on the same objective.

  python -m benchmarks.bench_lbfgs [--classifier=fc100_100_10_mnist] [--num_images=100]
      [--rounds=2] [--vmap]

The reference solves each inner problem with ``scipy.optimize.minimize(
method="L-BFGS-B", bounds=[(0, 1)] * m)`` (a true bound-constrained solver) on
the objective ``c * ||x' - x||^2 + CE(f(x'), l)`` of
:func:`foolingjax.attacks.make_objective`, with the same per-image search over
``c`` as :func:`foolingjax.attacks.lbfgs_attack`, one image at a time in a
Python loop (the objective and its gradient are one jitted JAX call). It prints
both mean distortions and the wall-clock ratio scipy / JAX of each JAX
contender (``lbfgs_attack``'s two solvers), measured in interleaved rounds.
``tests/test_attacks.py::test_lbfgs_matches_scipy`` (marked slow) asserts the
distortions agree within 5 %.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing

from foolingjax import attacks

ATTACK_KWARGS = {"c_init": 1.0, "c_search_steps": 8, "c_factor": 10.0, "max_iters": 200,
                     "tol": 1e-4}


@functools.cache
def _reference_fns(apply_fn):
  """Jitted objective value-and-gradient and prediction, compiled once per model."""
  @jax.jit
  def value_and_grad(params, w, xi, target, c):
    objective = attacks.make_objective(apply_fn, params, xi, target, c)
    return jax.value_and_grad(objective)(w)

  @jax.jit
  def predict(params, xi):
    return jnp.argmax(apply_fn(params, xi[None])[0])
  return value_and_grad, predict


def scipy_lbfgs_attack(apply_fn, params, x, targets, *, c_init: float,
                       c_search_steps: int, c_factor: float, max_iters: int,
                       tol: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """The reference: Python loop over images and over c, scipy L-BFGS-B inside.

  Args:
    apply_fn, params: the classifier.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    targets: int ``[B]``.
    c_init, c_search_steps, c_factor, max_iters: as
      :func:`foolingjax.attacks.lbfgs_attack`.
    tol: scipy's ``gtol`` (on the projected gradient's largest entry).

  Returns:
    ``(adv [B, H, W, C], {"success": [B], "l2": [B], "c": [B],
    "objective_seconds", "objective_calls", "iterations"})``: the time spent
    in, and the number of, jitted objective calls, and L-BFGS-B's iterations,
    over all images and c values.
  """
  import scipy.optimize

  x = np.asarray(x, np.float32)
  targets = np.asarray(targets)
  shape = x.shape[1:]

  value_and_grad, predict_fn = _reference_fns(apply_fn)
  predict = lambda xi: predict_fn(params, xi)

  objective_seconds = [0.0, 0]

  def fun(flat, xi, target, c):
    t0 = time.perf_counter()
    value, grad = value_and_grad(params, jnp.asarray(flat.reshape(shape), jnp.float32),
                                 xi, target, c)
    out = float(value), np.asarray(grad, np.float64).ravel()
    objective_seconds[0] += time.perf_counter() - t0
    objective_seconds[1] += 1
    return out

  advs, success, l2s, cs, iterations = [], [], [], [], 0
  for xi, target in zip(x, targets):
    c, c_ok, c_fail = c_init, 0.0, np.inf
    best, best_l2, best_c = xi, np.inf, 0.0
    for _ in range(c_search_steps):
      result = scipy.optimize.minimize(
          fun, xi.astype(np.float64).ravel(), args=(xi, target, np.float32(c)),
          jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * xi.size,
          options={"maxiter": max_iters, "gtol": tol})  # ftol: scipy default
      iterations += result.nit
      x_adv = np.clip(result.x, 0.0, 1.0).astype(np.float32).reshape(shape)
      hit = int(predict(x_adv)) == int(target)
      l2 = float(np.sqrt(np.sum(np.square(x_adv - xi))))
      if hit and l2 < best_l2:
        best, best_l2, best_c = x_adv, l2, c
      if hit:
        c_ok = max(c_ok, c)
      else:
        c_fail = min(c_fail, c)
      if c_ok > 0 and np.isfinite(c_fail):
        c = float(np.sqrt(c_ok * c_fail))
      else:
        c = c * c_factor if hit else c / c_factor
    advs.append(best)
    success.append(np.isfinite(best_l2))
    l2s.append(best_l2 if np.isfinite(best_l2) else 0.0)
    cs.append(best_c)
  return np.stack(advs), {"success": np.array(success), "l2": np.array(l2s),
                          "c": np.array(cs), "objective_seconds": objective_seconds[0],
                          "objective_calls": objective_seconds[1],
                          "iterations": iterations}


# JAX contenders: name -> lbfgs_attack keywords. chunk_size 1 measured fastest on
# XLA:CPU for the zoom solver; "zoom_vmap" (one vmap over the batch, --vmap) is
# far slower there and left out by default.
CONTENDERS = {"zoom": {"solver": "zoom", "chunk_size": 1},
              "armijo": {"solver": "armijo", "chunk_size": 1}}
VMAP = {"zoom_vmap": {"solver": "zoom", "chunk_size": None}}


def compare(apply_fn, params, x, targets, *, contenders=None, rounds: int = 2,
            **kwargs) -> dict:
  """Runs scipy's loop and each JAX contender on the same images, interleaved.

  Each of ``rounds`` rounds times the scipy loop and then every contender of
  ``contenders`` (default :data:`CONTENDERS`), each compiled before the first
  round, so a ratio compares runs made within a minute of each other. A
  contender's speed-up is the median over rounds of scipy's wall time in the
  round over the contender's. The keys for contender ``name`` end in
  ``_{name}``; distortions and iteration counts are the same every round.
  """
  contenders = CONTENDERS if contenders is None else contenders
  kwargs = {**ATTACK_KWARGS, **kwargs}
  x = jnp.asarray(x, jnp.float32)
  targets = jnp.asarray(targets, jnp.int32)
  # Compile the reference's jitted objective before timing it.
  scipy_lbfgs_attack(apply_fn, params, x[:1], targets[:1],
                     **{**kwargs, "c_search_steps": 1, "max_iters": 2})
  fns = {}
  for name, options in contenders.items():
    fns[name] = jax.jit(lambda p, x, t, o=options: attacks.lbfgs_attack(
        apply_fn, p, x, t, **o, **kwargs))
    with timing.Clock() as clock:
      jax.block_until_ready(fns[name](params, x, targets))
    fns[name + "_compile"] = clock.wall  # first call: compile + one run
  # The floor under one L-BFGS iteration: the objective's value and gradient
  # alone, EVALS times per image in a compiled loop, one image after another.
  evals = 200

  def evaluations_only(p, x, t):
    def one(args):
      xi, ti = args
      value_and_grad = jax.value_and_grad(attacks.make_objective(apply_fn, p, xi, ti, 1.0))
      return jax.lax.fori_loop(0, evals, lambda i, w: w - 1e-3 * value_and_grad(w)[1], xi)
    return jax.lax.map(one, (x, t))
  evaluations_only = jax.jit(evaluations_only)
  jax.block_until_ready(evaluations_only(params, x, targets))
  times = {name: [] for name in ("scipy", *contenders, "evaluations_only")}
  outputs = {}
  for _ in range(rounds):
    with timing.Clock() as clock:
      ref_adv, ref = scipy_lbfgs_attack(apply_fn, params, x, targets, **kwargs)
    times["scipy"].append(clock)
    for name in contenders:
      with timing.Clock() as clock:
        outputs[name] = jax.block_until_ready(fns[name](params, x, targets))
      times[name].append(clock)
    with timing.Clock() as clock:
      jax.block_until_ready(evaluations_only(params, x, targets))
    times["evaluations_only"].append(clock)
  median = lambda values: float(np.median(values))
  result = {"num_images": int(x.shape[0]), "rounds": rounds,
            "scipy_seconds": median([c.wall for c in times["scipy"]]),
            "scipy_cpu_seconds": median([c.cpu for c in times["scipy"]]),
            "scipy_load": times["scipy"][-1].load_after,
            "scipy_success_rate": float(np.mean(ref["success"])),
            "scipy_objective_seconds": ref["objective_seconds"],
            "scipy_objective_calls_per_image": ref["objective_calls"] / x.shape[0],
            "scipy_iterations_per_image": ref["iterations"] / x.shape[0],
            "objective_evaluation_microseconds": 1e6 * median(
                [c.wall for c in times["evaluations_only"]]) / (evals * x.shape[0])}
  for name in contenders:
    adv, info = outputs[name]
    both = np.asarray(info.success) & ref["success"]
    amd = lambda a, both=both: float(attacks.metrics.average_minimum_distortion(
        x, jnp.asarray(a), mask=both))
    clocks = times[name]
    result.update({
        f"jax_success_rate_{name}": float(np.mean(info.success)),
        f"jax_mean_l2_{name}": float(np.mean(np.asarray(info.l2)[both])),
        f"scipy_mean_l2_{name}": float(np.mean(ref["l2"][both])),
        f"jax_avg_min_distortion_{name}": amd(adv),
        f"scipy_avg_min_distortion_{name}": amd(ref_adv),
        f"jax_in_box_{name}": bool(jnp.all((adv >= 0) & (adv <= 1))),
        f"jax_iterations_per_image_{name}": float(np.mean(info.iterations)),
        f"jax_seconds_{name}": median([c.wall for c in clocks]),
        f"jax_cpu_seconds_{name}": median([c.cpu for c in clocks]),
        f"jax_compile_and_first_run_seconds_{name}": fns[name + "_compile"],
        f"jax_load_{name}": clocks[-1].load_after,
        f"speedup_jax_over_scipy_{name}": median(
            [s.wall / c.wall for s, c in zip(times["scipy"], clocks)]),
        f"jax_microseconds_per_iteration_{name}": 1e6 * median(
            [c.wall for c in clocks]) / float(np.sum(info.iterations)),
    })
  return result


def main(argv):
  del argv
  from absl import flags

  from foolingjax import data, zoo
  flags_ = flags.FLAGS
  apply_fn, params = zoo.resolve(flags_.classifier)
  images, labels = data.load("mnist", "test")
  x = images[: flags_.num_images].astype(np.float32) / 255.0
  targets = (labels[: flags_.num_images] + 1) % apply_fn.num_classes
  contenders = {**CONTENDERS, **(VMAP if flags_.vmap else {})}
  result = compare(apply_fn, params, x, targets, contenders=contenders,
                   rounds=flags_.rounds)
  print(f"classifier {flags_.classifier}, {result['num_images']} MNIST test images, "
        f"targets (label + 1) mod 10, {ATTACK_KWARGS}, {flags_.rounds} rounds "
        "(scipy, then each contender), medians")
  for name, value in result.items():
    print(f"  {name}: {value:.4f}" if isinstance(value, float) else f"  {name}: {value}")
  for name in contenders:
    rel = result[f"jax_mean_l2_{name}"] / result[f"scipy_mean_l2_{name}"] - 1.0
    print(f"[{name}] mean L2 distortion JAX vs scipy: {rel * 100:+.2f} %; speed ratio "
          f"scipy-loop / JAX: {result[f'speedup_jax_over_scipy_{name}']:.1f}x "
          f"({result['scipy_seconds']:.1f} s / {result[f'jax_seconds_{name}']:.2f} s wall; "
          f"CPU {result['scipy_cpu_seconds']:.1f} s / {result[f'jax_cpu_seconds_{name}']:.2f} s; "
          f"load {result[f'jax_load_{name}']:.2f}); L-BFGS iterations per image "
          f"{result[f'jax_iterations_per_image_{name}']:.0f} vs scipy's "
          f"{result['scipy_iterations_per_image']:.0f} "
          f"({result['scipy_objective_calls_per_image']:.0f} objective calls); "
          f"{result[f'jax_microseconds_per_iteration_{name}']:.0f} us per iteration")
  print(f"one objective evaluation (value and gradient) alone, in a compiled loop: "
        f"{result['objective_evaluation_microseconds']:.1f} us")


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("classifier", "fc100_100_10_mnist", "zoo preset.")
  flags.DEFINE_integer("num_images", 100, "MNIST test images.")
  flags.DEFINE_integer("rounds", 2, "interleaved rounds (scipy, then each contender).")
  flags.DEFINE_bool("vmap", False, "also time the zoom solver vmapped over the batch.")
  app.run(main)
