"""MAP-Elites throughput on MNIST LeNet, as ratios against baselines of the same run.

  python -m benchmarks.bench_evolution [--population 200] [--generations 25]

Prints evaluations/s of a whole generation (select + SBX + mutation + render +
classify + archive insert, as one jitted scan, log-odds score) against
  * the same generation with the original's softmax-probability score;
  * the bare batched LeNet forward + softmax on the same batch size (target ratio >= 0.8);
  * evaluating one individual at a time, as the original code did (jitted per-image forward);
  * QDax 0.5.0 (when importable: a benchmark extra, ``make benchmarks`` installs it) on the
    same operators (foolingjax's SBX + mutation as QDax's variation function), the same
    rendering and the same log-odds score: its ``MAPElites.scan_update`` (each offspring
    enters the cell of its top class), and QDax's repertoire ``add`` with every offspring
    offered to all 10 cells (the paper's semantics, foolingjax's insert);
  * the same generation with a variation that returns the parent, and the parts of the
    generation alone (variation, render + forward, insert + metrics), to say where the
    time goes; and one generation's uniform draws (3 per gene), shaped ``[28, 28, 1]``
    per offspring as ``jax.random.uniform`` draws them, and flat as ``direct.uniform``
    does (the same numbers);
  * the same generation drawing through ``jax.random`` (JAX lowers threefry on CPU as a
    rolled loop) instead of ``foolingjax.randombits`` (the same hash unrolled, the same
    numbers);
  * the direct encoding's ``kernel="fast"`` (one threefry hash per gene, cheaper powers:
    the same distributions, other numbers): its whole generation, its variation alone, its
    draws (``direct.packed_uniforms``), and QDax's ``scan_update`` on the fast operators.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import time
from unittest import mock

import jax
import jax.numpy as jnp

from benchmarks.timing import interleaved_best_cpu
from foolingjax import randombits, zoo
from foolingjax.evolution import direct, map_elites


def qdax_contenders(clf, encoding, population: int, generations: int, key,
                    suffix: str = "") -> dict:
  """QDax's MAP-Elites on foolingjax's operators and score; {} when QDax is missing."""
  try:
    from qdax.core.map_elites import MAPElites
    from qdax.core.emitters.standard_emitters import MixingEmitter
  except ImportError as e:
    print(f"QDax is not importable ({e}): its contenders are left out. Fix: make benchmarks "
          "(pip install --no-deps qdax==0.5.0, then pip install scikit-learn cloudpickle).")
    return {}
  num_cells = 10

  # Built inside the jitted functions from traced params, as foolingjax's run takes
  # them: neither side gets the weights as compile-time constants.
  def build(params):
    score = map_elites.log_odds_score_fn(clf.apply_fn, params)

    def scores_of(genotypes):
      return score(jax.vmap(encoding.render)(genotypes))               # [B, K]

    def scoring(genotypes, key):
      s = scores_of(genotypes)
      return jnp.max(s, -1), jax.nn.one_hot(jnp.argmax(s, -1), num_cells), {}

    def variation(x1, x2, key):  # foolingjax's whole vary: SBX w.p. 0.5, then mutation
      keys = jax.random.split(key, x1.shape[0])
      return jax.vmap(encoding.vary, in_axes=(0, 0, 0, None))(keys, x1, x2, 0)[0]

    emitter = MixingEmitter(mutation_fn=lambda x, k: x, variation_fn=variation,
                            variation_percentage=1.0, batch_size=population)
    me = MAPElites(scoring_function=scoring, emitter=emitter, metrics_function=metrics)
    return me, emitter, scores_of

  def metrics(repertoire):      # what foolingjax logs each generation: best per cell, median
    best = jnp.where(repertoire.fitnesses[:, 0] > -jnp.inf, repertoire.fitnesses[:, 0], 0.0)
    return {"best": best, "median": jnp.median(best)}

  genotypes = jax.vmap(encoding.init)(jax.random.split(key, population))
  repertoire, emitter_state, _ = jax.jit(
      lambda g, k, p: build(p)[0].init(g, jnp.eye(num_cells), k))(genotypes, key, clf.params)

  def scan_update(rep, es, k, params):
    return jax.lax.scan(build(params)[0].scan_update, (rep, es, k), None, length=generations)

  def all_cells(rep, k, params):
    _, emitter, scores_of = build(params)

    def step(carry, _):
      rep, k = carry
      k, k_emit = jax.random.split(k)
      offspring, _ = emitter.emit(rep, None, k_emit)
      s = scores_of(offspring)                                            # [B, K]
      copies = jnp.tile(offspring, (num_cells, 1, 1, 1))                  # copy k: cell k
      cells = jnp.repeat(jnp.eye(num_cells), population, axis=0)
      rep = rep.add(copies, cells, s.T.reshape(-1))
      return (rep, k), metrics(rep)

    return jax.lax.scan(step, (rep, k), None, length=generations)

  scan_update, all_cells = jax.jit(scan_update), jax.jit(all_cells)
  contenders = {
      "qdax_scan_update": lambda: scan_update(repertoire, emitter_state, key, clf.params),
      "qdax_all_cells": lambda: all_cells(repertoire, key, clf.params)}
  if suffix:  # the fast kernel: scan_update alone (all_cells differs only in insertion)
    return {"qdax_scan_update" + suffix: contenders["qdax_scan_update"]}
  return contenders


def measure(population: int = 200, generations: int = 25, repeats: int = 5,
            single_images: int = 200) -> dict:
  clf = zoo.resolve("lenet_mnist", log=None)
  encoding = direct.make_encoding(height=28, width=28, channels=1)
  key = jax.random.key(0)
  init = jax.jit(map_elites.make_init_fn(encoding=encoding, apply_fn=clf.apply_fn, num_cells=10,
                                         init_size=population))
  run = jax.jit(map_elites.make_run_fn(encoding=encoding, apply_fn=clf.apply_fn,
                                       batch_size=population, num_generations=generations))
  archive = init(key, clf.params)
  init_p = jax.jit(map_elites.make_init_fn(encoding=encoding, apply_fn=clf.apply_fn,
                                           num_cells=10, init_size=population,
                                           fitness="probability"))
  run_p = jax.jit(map_elites.make_run_fn(encoding=encoding, apply_fn=clf.apply_fn,
                                         batch_size=population, num_generations=generations,
                                         fitness="probability"))
  archive_p = init_p(key, clf.params)
  # The same generation traced with jax.random's own draws (randombits falls back to them).
  with mock.patch.object(randombits, "_fusable", lambda key, size: False):
    run_jax = jax.jit(map_elites.make_run_fn(encoding=encoding, apply_fn=clf.apply_fn,
                                             batch_size=population,
                                             num_generations=generations))
    jax.block_until_ready(run_jax(key, archive, clf.params))     # traced under the patch
  fast = direct.make_encoding(height=28, width=28, channels=1, kernel="fast")
  run_fast = jax.jit(map_elites.make_run_fn(encoding=fast, apply_fn=clf.apply_fn,
                                            batch_size=population, num_generations=generations))
  # The same generation with a variation that returns the parent: what the rest of
  # the generation (select, gather, render, classify, insert, metrics) costs.
  no_variation = dataclasses.replace(
      encoding, vary=lambda k, parent, mate, g: (parent, {"mutation_rate": jnp.float32(0)}))
  run_nv = jax.jit(map_elites.make_run_fn(encoding=no_variation, apply_fn=clf.apply_fn,
                                          batch_size=population, num_generations=generations))
  images = jax.random.uniform(key, (population, 28, 28, 1))
  forward = jax.jit(lambda p, x: jax.nn.softmax(clf.apply_fn(p, x)))

  def forwards():  # as many batched forwards as the scan runs generations
    out = None
    for _ in range(generations):
      out = forward(clf.params, images)
    return out

  def one_at_a_time():
    out = None
    for i in range(single_images):
      out = forward(clf.params, images[i:i + 1])
      out.block_until_ready()
    return out

  # The parts of one generation, each as a scan of ``generations`` steps, with every
  # array an argument (no constant folding).
  parents = jax.vmap(encoding.init)(jax.random.split(key, population))

  def vary_only(k, parents, encoding=encoding):
    def step(k, _):
      keys = jax.random.split(k, population + 1)
      child = jax.vmap(encoding.vary, in_axes=(0, 0, 0, None))(keys[1:], parents,
                                                               parents[::-1], 0)[0]
      return keys[0], jnp.sum(child)   # every child is used: none is optimised away
    return jax.lax.scan(step, k, None, length=generations)

  def evaluate_only(x, params):
    score = map_elites.log_odds_score_fn(clf.apply_fn, params)

    def step(x, _):
      s = map_elites.evaluate(x, encoding=encoding, score_fn=score)
      return x + 1e-7 * s[:, :1, None, None], None
    return jax.lax.scan(step, x, None, length=generations)

  def insert_only(a, candidates, scores):
    def step(a, _):
      a = map_elites.insert(a, candidates, scores + 1e-3 * a.fitness[0])
      return a, map_elites.archive_metrics(a)["median"]
    return jax.lax.scan(step, a, None, length=generations)

  def draws(k, flat):
    shape = encoding.image_shape
    draw = (lambda kk: direct.uniform(kk, shape)) if flat else (
        lambda kk: jax.random.uniform(kk, shape))

    def step(k, _):
      keys = jax.random.split(k, 3 * population + 1)
      return keys[0], jnp.sum(jax.vmap(draw)(keys[1:]))
    return jax.lax.scan(step, k, None, length=generations)

  def draws_packed(k):  # the fast kernel's: all of a generation's uniforms
    def step(k, _):
      keys = jax.random.split(k, population + 1)
      u, v, m, coin = jax.vmap(lambda kk: direct.packed_uniforms(kk, encoding.image_shape))(
          keys[1:])
      return keys[0], jnp.sum(u) + jnp.sum(v) + jnp.sum(m) + jnp.sum(coin)
    return jax.lax.scan(step, k, None, length=generations)

  parts = {"part_variation": jax.jit(vary_only), "part_render_forward": jax.jit(evaluate_only),
           "part_insert_metrics": jax.jit(insert_only),
           "draws_shaped": jax.jit(functools.partial(draws, flat=False)),
           "draws_flat": jax.jit(functools.partial(draws, flat=True)),
           "part_variation_fast": jax.jit(functools.partial(vary_only, encoding=fast)),
           "draws_packed": jax.jit(draws_packed)}
  candidate_scores = jax.random.normal(key, (population, 10))
  fns = {"generation": lambda: run(key, archive, clf.params),
         "generation_probability": lambda: run_p(key, archive_p, clf.params),
         "generation_without_variation": lambda: run_nv(key, archive, clf.params),
         "generation_fast": lambda: run_fast(key, archive, clf.params),
         "generation_jax_draws": lambda: run_jax(key, archive, clf.params),
         "forward": forwards,
         "single": one_at_a_time,
         **qdax_contenders(clf, encoding, population, generations, key),
         "part_variation": lambda: parts["part_variation"](key, parents),
         "part_render_forward": lambda: parts["part_render_forward"](images, clf.params),
         "part_insert_metrics": lambda: parts["part_insert_metrics"](archive, parents,
                                                                     candidate_scores),
         "draws_shaped": lambda: parts["draws_shaped"](key),
         "draws_flat": lambda: parts["draws_flat"](key),
         "part_variation_fast": lambda: parts["part_variation_fast"](key, parents),
         "draws_packed": lambda: parts["draws_packed"](key),
         **qdax_contenders(clf, fast, population, generations, key, suffix="_fast")}
  for fn in fns.values():  # compile
    jax.block_until_ready(fn())
  timed = interleaved_best_cpu(fns, repeats)
  best = {name: wall for name, (wall, _) in timed.items()}
  t_generation = best["generation"] / generations
  t_forward = best["forward"] / generations
  t_single = best["single"] / single_images * population
  qdax = {name: t_forward / (best[name] / generations) for name in best
          if name.startswith("qdax")}
  ours = {name: "generation_fast" if name.endswith("_fast") else "generation" for name in qdax}

  return {
      "timed": timed, "generations": generations, "qdax_ratio_vs_forward": qdax,
      "qdax_ratio_vs_foolingjax": {n: best[ours[n]] / best[n] for n in qdax},
      "qdax_ours": ours,
      "parts_share_of_generation": {
          n: best[n] / best["generation_fast" if n.endswith("_fast") else "generation"]
          for n in best if n.startswith("part_")},
      "packed_over_flat_draws": best["draws_packed"] / best["draws_flat"],
      "fast_ratio_vs_forward": best["forward"] / best["generation_fast"],
      "jax_draws_over_generation": best["generation_jax_draws"] / best["generation"],
      "shaped_over_flat_draws": best["draws_shaped"] / best["draws_flat"],
      "generation_evals_per_s": population / t_generation,
      "probability_score_evals_per_s": population * generations / best["generation_probability"],
      "forward_evals_per_s": population / t_forward,
      "one_at_a_time_evals_per_s": population / t_single,
      "ratio_vs_forward": t_forward / t_generation,
      "without_variation_ratio_vs_forward": best["forward"] / best["generation_without_variation"],
      "speedup_vs_one_at_a_time": t_single / t_generation,
      "seconds_for_1001x200": 1001 * 200 / (population / t_generation),
  }


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--population", type=int, default=200)
  parser.add_argument("--generations", type=int, default=25)
  args = parser.parse_args()
  cpu0, load0 = time.process_time(), os.getloadavg()[0]
  wall0 = time.perf_counter()
  r = measure(args.population, args.generations)
  cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
  print(f"machine: {platform.processor() or platform.machine()}, {jax.device_count()} x "
        f"{jax.devices()[0].device_kind}, jax {jax.__version__}")
  print(f"whole generation      {r['generation_evals_per_s']:10,.0f} evals/s")
  print(f"same, probability score {r['probability_score_evals_per_s']:8,.0f} evals/s")
  print(f"bare LeNet forward    {r['forward_evals_per_s']:10,.0f} evals/s")
  print(f"one at a time         {r['one_at_a_time_evals_per_s']:10,.0f} evals/s")
  print(f"ratio generation / forward        {r['ratio_vs_forward']:.2f}  (target >= 0.8)")
  print(f"ratio generation, kernel=fast / forward {r['fast_ratio_vs_forward']:.2f}  "
        "(target >= 0.8; the same distributions, other random numbers)")
  print(f"ratio generation drawing through jax.random / generation: "
        f"{r['jax_draws_over_generation']:.2f}x the time (the same numbers)")
  print(f"ratio generation without variation / forward {r['without_variation_ratio_vs_forward']:.2f}"
        "  (the variation's share is the gap to the whole generation)")
  for name, ratio in r["qdax_ratio_vs_forward"].items():
    print(f"ratio {name} / forward   {ratio:.2f}; foolingjax's {r['qdax_ours'][name]} / {name} "
          f"time {r['qdax_ratio_vs_foolingjax'][name]:.2f} (< 1: foolingjax ahead)")
  for name, share in r["parts_share_of_generation"].items():
    whole = "kernel=fast" if name.endswith("_fast") else "whole"
    print(f"{name:22s} {share:6.1%} of a {whole} generation's time (timed alone)")
  print(f"uniform draws shaped [28, 28, 1] / flat: {r['shaped_over_flat_draws']:.1f}x the time "
        "(the same numbers)")
  print(f"kernel=fast's packed draws / the flat draws: {r['packed_over_flat_draws']:.2f}x the "
        "time (all of a generation's uniforms)")
  print("best round per contender (wall s / CPU s, all generations of the scan):")
  for name, (best_wall, best_cpu) in r["timed"].items():
    print(f"  {name:24s} {best_wall:8.4f} s wall {best_cpu:8.4f} s CPU")
  print(f"speed-up over one at a time       {r['speedup_vs_one_at_a_time']:.1f}x")
  print(f"projected 1001 x 200 run          {r['seconds_for_1001x200']:.0f} s")
  print(f"this benchmark: wall {wall:.1f} s, CPU {cpu:.1f} s, load average "
        f"{load0:.2f} -> {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
