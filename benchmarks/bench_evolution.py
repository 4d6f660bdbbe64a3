"""MAP-Elites throughput on MNIST LeNet, as ratios against baselines of the same run.

  python -m benchmarks.bench_evolution [--population 200] [--generations 25]

Prints evaluations/s of a whole generation (select + SBX + mutation + render +
classify + archive insert, as one jitted scan, log-odds score) against
  * the same generation with the original's softmax-probability score;
  * the bare batched LeNet forward + softmax on the same batch size (target ratio >= 0.5);
  * evaluating one individual at a time, as the original code did (jitted per-image forward).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax

from benchmarks.timing import interleaved_best
from foolingjax import zoo
from foolingjax.evolution import direct, map_elites


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

  fns = {"generation": lambda: run(key, archive, clf.params),
         "generation_probability": lambda: run_p(key, archive_p, clf.params),
         "forward": forwards,
         "single": one_at_a_time}
  for fn in fns.values():  # compile
    jax.block_until_ready(fn())
  best = interleaved_best(fns, repeats)
  t_generation = best["generation"] / generations
  t_forward = best["forward"] / generations
  t_single = best["single"] / single_images * population

  return {
      "generation_evals_per_s": population / t_generation,
      "probability_score_evals_per_s": population * generations / best["generation_probability"],
      "forward_evals_per_s": population / t_forward,
      "one_at_a_time_evals_per_s": population / t_single,
      "ratio_vs_forward": t_forward / t_generation,
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
  print(f"ratio generation / forward        {r['ratio_vs_forward']:.2f}  (target >= 0.5)")
  print(f"speed-up over one at a time       {r['speedup_vs_one_at_a_time']:.1f}x")
  print(f"projected 1001 x 200 run          {r['seconds_for_1001x200']:.0f} s")
  print(f"this benchmark: wall {wall:.1f} s, CPU {cpu:.1f} s, load average "
        f"{load0:.2f} -> {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
