"""CPPN render throughput and its share of a MAP-Elites generation.

  python -m benchmarks.bench_cppn [--max-nodes 32] [--max-conns 128] [--repeats 3]
  python -m benchmarks.bench_cppn --methods [--repeats 7]

``--methods`` compares ``render(method="active")`` (only the hidden nodes in
use are evaluated) against ``method="slots"`` (every node slot, the default) for max_nodes 8, 16 and 32, 200 genomes at 28x28,
and puts a whole MNIST CPPN generation next to the bare batched LeNet forward;
see :func:`measure_methods`. The rest of this docstring is the default run.

Genomes are grown first (60 rounds of mutation with add-node and add-connection
rates raised to 1) so they look like an evolved population; the renderer's
cost does not depend on the graph, only on ``max_nodes`` (every node slot is
evaluated, see :func:`foolingjax.evolution.cppn.render`).

Prints, each contender timed round-robin (best of ``--repeats``) in this run:
  * 200 genomes at 28x28x1: the encoding's render vmapped over the population
    (as MAP-Elites calls it; on CPU in tiles of <= 512 pixels), the same
    untiled, and one genome after another inside one jit (``lax.map``),
    against a Python loop that renders one genome per jitted call, as the
    original evaluated individuals one at a time;
  * 400 genomes at 224x224x3 (HLS -> RGB): one genome after another in tiles
    of 4096 pixels (``render_population(chunk_size=1, pixels_per_tile=4096)``)
    and a vmap over chunks of ``--chunk`` genomes untiled, against the
    one-genome-per-call loop over the first ``--loop-genomes`` genomes (its
    per-genome time scaled to 400);
  * one whole MNIST MAP-Elites generation with the CPPN encoding (variation,
    render, LeNet, softmax, archive insert; ``--generations`` generations in
    one jitted scan) against its parts timed alone on the same batch: vary,
    render, and the bare LeNet forward + softmax, as shares of the generation.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time

import jax
import jax.numpy as jnp

from benchmarks.timing import interleaved_best, interleaved_best_cpu
from foolingjax import models
from foolingjax.evolution import cppn, map_elites


def grown_population(key, n: int, *, channels: int, max_nodes: int, max_conns: int,
                     rounds: int = 60) -> cppn.CPPNGenome:
  """``n`` genomes after ``rounds`` growth-biased mutations, leaves ``[n, ...]``."""
  k_init, k_grow = jax.random.split(key)
  init = functools.partial(cppn.init_genome, num_outputs=channels, max_nodes=max_nodes,
                           max_conns=max_conns)
  grow = functools.partial(cppn.mutate, add_node_rate=1.0, add_conn_rate=1.0)

  @jax.jit
  def run(k_init, k_grow):
    pop = jax.vmap(init)(jax.random.split(k_init, n))

    def step(pop, k):
      return jax.vmap(grow)(jax.random.split(k, n), pop)[0], None

    return jax.lax.scan(step, pop, jax.random.split(k_grow, rounds))[0]

  return run(k_init, k_grow)


def lineage_population(key, n: int, *, channels: int, max_nodes: int, max_conns: int,
                       rounds: int = 12) -> cppn.CPPNGenome:
  """``n`` genomes after ``rounds`` mutations at the original's rates (add node
  0.5, delete node 0.2, ...): a few hidden nodes, the size of the MNIST run's
  elites and their offspring."""
  k_init, k_grow = jax.random.split(key)
  init = functools.partial(cppn.init_genome, num_outputs=channels, max_nodes=max_nodes,
                           max_conns=max_conns)

  @jax.jit
  def run(k_init, k_grow):
    pop = jax.vmap(init)(jax.random.split(k_init, n))

    def step(pop, k):
      return jax.vmap(cppn.mutate)(jax.random.split(k, n), pop)[0], None

    return jax.lax.scan(step, pop, jax.random.split(k_grow, rounds))[0]

  return run(k_init, k_grow)


def compile_seconds(fn, *args) -> float:
  """Seconds to lower and compile ``jax.jit(fn)`` for ``args``."""
  t0 = time.perf_counter()
  jax.jit(fn).lower(*args).compile()
  return time.perf_counter() - t0


def measure_methods(*, repeats: int = 7, population: int = 200,
                    capacities=((8, 32), (16, 64), (32, 128)), preset=(16, 64),
                    generations: int = 5) -> dict:
  """``render(method="active")`` against ``method="slots"``, same process.

  For each ``(max_nodes, max_conns)`` of ``capacities``: the encoding's render
  (vmapped, CPU tiles) of ``population`` genomes at 28x28 with either method,
  timed round-robin, on two populations: genomes after 12 mutations at the
  original's rates (:func:`lineage_population`) and genomes grown to capacity
  (:func:`grown_population`). At ``preset`` (mnist_cppn's capacity): render +
  LeNet forward, and a whole MAP-Elites generation (``generations`` in one
  jitted scan), with either method, against the bare batched LeNet forward on
  the same images; and the compile time of each hot function.
  """
  key = jax.random.key(0)
  k_pop, k_lenet, k_run = jax.random.split(key, 3)
  shape28 = {"height": 28, "width": 28, "channels": 1}
  result = {"capacities": {}}
  for max_nodes, max_conns in capacities:
    pops = {
        "lineage": lineage_population(k_pop, population, channels=1,
                                      max_nodes=max_nodes, max_conns=max_conns),
        "grown": grown_population(k_pop, population, channels=1, max_nodes=max_nodes,
                                  max_conns=max_conns),
    }
    fns, row = {}, {}
    for pop_name, pop in pops.items():
      hidden = jax.vmap(cppn.count_hidden)(pop)
      row[pop_name] = {"hidden_mean": float(jnp.mean(hidden)),
                       "hidden_max": int(jnp.max(hidden))}
      for method in cppn.RENDER_METHODS:
        enc = cppn.make_encoding(max_nodes=max_nodes, max_conns=max_conns,
                                 render_method=method, **shape28)
        draw = jax.vmap(enc.render)
        row[pop_name][f"compile_{method}_s"] = compile_seconds(draw, pop)
        fn = jax.jit(draw)
        jax.block_until_ready(fn(pop))
        fns[(pop_name, method)] = functools.partial(fn, pop)
    best = interleaved_best_cpu(fns, repeats)
    for (pop_name, method), (wall, cpu) in best.items():
      row[pop_name][f"{method}_per_s"] = population / wall
      row[pop_name][f"{method}_ms"] = wall * 1e3
      row[pop_name][f"{method}_cpu_ms"] = cpu * 1e3
    for pop_name in pops:
      r = row[pop_name]
      r["speedup"] = r["active_per_s"] / r["slots_per_s"]
    result["capacities"][(max_nodes, max_conns)] = row

  # --- a whole generation at the preset's capacity ------------------------
  max_nodes, max_conns = preset
  apply_fn, params = models.init("lenet", k_lenet)
  pop = lineage_population(k_pop, population, channels=1, max_nodes=max_nodes,
                           max_conns=max_conns)
  forward = jax.jit(apply_fn)
  images = jax.jit(jax.vmap(cppn.make_encoding(max_nodes=max_nodes,
                                                max_conns=max_conns,
                                                **shape28).render))(pop)
  fns = {"forward": functools.partial(forward, params, images)}
  compile_s = {"forward": compile_seconds(apply_fn, params, images)}
  for method in cppn.RENDER_METHODS:
    enc = cppn.make_encoding(max_nodes=max_nodes, max_conns=max_conns,
                             render_method=method, **shape28)
    render_forward = lambda p, g, enc=enc: apply_fn(p, jax.vmap(enc.render)(g))
    compile_s[f"render_forward_{method}"] = compile_seconds(render_forward, params, pop)
    fn = jax.jit(render_forward)
    init = jax.jit(map_elites.make_init_fn(encoding=enc, apply_fn=apply_fn,
                                           num_cells=10, init_size=population))
    run_fn = map_elites.make_run_fn(encoding=enc, apply_fn=apply_fn,
                                    batch_size=population, num_generations=generations)
    archive = init(k_run, params)
    compile_s[f"generations_{method}"] = compile_seconds(run_fn, k_run, archive, params)
    run = jax.jit(run_fn)
    archive = run(k_run, archive, params)[0]  # elites that have grown a little
    fns[f"render_forward_{method}"] = functools.partial(fn, params, pop)
    fns[f"generations_{method}"] = functools.partial(run, k_run, archive, params)
    elites = jax.vmap(cppn.count_hidden)(archive.genomes)
    result[f"elite_hidden_max_{method}"] = int(jnp.max(elites))
  for fn in fns.values():
    jax.block_until_ready(fn())
  best = interleaved_best_cpu(fns, repeats)
  t_forward = best["forward"][0]
  result["forward_ms"] = t_forward * 1e3
  result["forward_cpu_ms"] = best["forward"][1] * 1e3
  for method in cppn.RENDER_METHODS:
    wall, cpu = best[f"render_forward_{method}"]
    result[f"render_forward_{method}_ms"] = wall * 1e3
    result[f"render_forward_{method}_cpu_ms"] = cpu * 1e3
    result[f"render_forward_{method}_ratio"] = t_forward / wall
    wall, cpu = best[f"generations_{method}"]
    result[f"generation_{method}_ms"] = wall / generations * 1e3
    result[f"generation_{method}_cpu_ms"] = cpu / generations * 1e3
    result[f"generation_{method}_ratio"] = t_forward / (wall / generations)
  result["compile_s"] = compile_s
  result["preset"] = preset
  result["lineage_hidden_mean"] = float(jnp.mean(jax.vmap(cppn.count_hidden)(pop)))
  return result


def print_methods(r: dict, repeats: int) -> None:
  print(f"machine: {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}; "
        f"load average {os.getloadavg()[0]:.2f}; best of {repeats}, round-robin")
  print("200 genomes 28x28x1, the encoding's vmapped render; active = "
        "render(method='active'), slots = method='slots'")
  print(f"{'max_nodes':>9} {'genomes':<8} {'hidden mean/max':>15} "
        f"{'active /s':>10} {'slots /s':>10} {'active/slots':>12} "
        f"{'wall ms a/s':>13} {'cpu ms a/s':>13} {'compile s a/s':>13}")
  for (max_nodes, _), row in r["capacities"].items():
    for pop_name, x in row.items():
      print(f"{max_nodes:>9} {pop_name:<8} "
            f"{x['hidden_mean']:>10.1f}/{x['hidden_max']:<4} "
            f"{x['active_per_s']:>10,.0f} {x['slots_per_s']:>10,.0f} "
            f"{x['speedup']:>11.2f}x "
            f"{x['active_ms']:>6.1f}/{x['slots_ms']:<6.1f} "
            f"{x['active_cpu_ms']:>6.1f}/{x['slots_cpu_ms']:<6.1f} "
            f"{x['compile_active_s']:>6.2f}/{x['compile_slots_s']:<6.2f}")
  n, c = r["preset"]
  cs = r["compile_s"]
  print(f"max_nodes={n} max_conns={c} (mnist_cppn), 200 lineage genomes (mean hidden "
        f"{r['lineage_hidden_mean']:.1f}); bare batched LeNet forward "
        f"{r['forward_ms']:.2f} ms wall, {r['forward_cpu_ms']:.2f} ms CPU "
        f"(compile {cs['forward']:.2f} s)")
  for method in cppn.RENDER_METHODS:
    print(f"  {method:>6}: render + LeNet forward {r[f'render_forward_{method}_ms']:.2f} ms "
          f"(CPU {r[f'render_forward_{method}_cpu_ms']:.2f} ms) = "
          f"{r[f'render_forward_{method}_ratio']:.2f}x the bare forward; compile "
          f"{cs[f'render_forward_{method}']:.2f} s")
    print(f"  {method:>6}: whole MAP-Elites generation "
          f"{r[f'generation_{method}_ms']:.2f} ms (CPU "
          f"{r[f'generation_{method}_cpu_ms']:.2f} ms) = "
          f"{r[f'generation_{method}_ratio']:.2f}x the bare forward; compile of the "
          f"generations scan {cs[f'generations_{method}']:.2f} s; elites' max hidden "
          f"{r[f'elite_hidden_max_{method}']}")


def _loop(render_one, genomes, count):
  """Renders the first ``count`` genomes one call each, as the original did."""
  def run():
    out = None
    for i in range(count):
      out = render_one(jax.tree.map(lambda a, i=i: a[i], genomes))
      out.block_until_ready()
    return out
  return run


def measure(*, max_nodes: int = 32, max_conns: int = 128, repeats: int = 3,
            chunk: int = 50, loop_genomes: int = 20, generations: int = 5) -> dict:
  key = jax.random.key(0)
  k_small, k_large, k_lenet, k_run = jax.random.split(key, 4)
  result = {}

  # --- 200 x 28x28x1 -------------------------------------------------------
  n_small = 200
  small = grown_population(k_small, n_small, channels=1, max_nodes=max_nodes,
                           max_conns=max_conns)
  result["small_hidden_mean"] = float(jnp.mean(jax.vmap(cppn.count_hidden)(small)))
  shape28 = dict(height=28, width=28, channels=1)
  enc = cppn.make_encoding(max_nodes=max_nodes, max_conns=max_conns, **shape28)
  encoding28 = jax.jit(jax.vmap(enc.render))
  untiled28 = jax.jit(functools.partial(cppn.render_population, **shape28))
  sequential28 = jax.jit(functools.partial(cppn.render_population, chunk_size=1,
                                           **shape28))
  one28 = jax.jit(functools.partial(cppn.render, **shape28))
  vary = jax.jit(jax.vmap(enc.vary, in_axes=(0, 0, 0, None)))
  vary_keys = jax.random.split(k_run, n_small)
  apply_fn, params = models.init("lenet", k_lenet)
  classify = jax.jit(lambda p, x: jax.nn.softmax(apply_fn(p, x), axis=-1))
  images28 = encoding28(small)
  init = jax.jit(map_elites.make_init_fn(encoding=enc, apply_fn=apply_fn, num_cells=10,
                                         init_size=n_small))
  run = jax.jit(map_elites.make_run_fn(encoding=enc, apply_fn=apply_fn,
                                       batch_size=n_small, num_generations=generations))
  archive = init(k_run, params)
  archive = run(k_run, archive, params)[0]  # elites that have grown a little

  fns = {
      "encoding28": lambda: encoding28(small),
      "untiled28": lambda: untiled28(small),
      "sequential28": lambda: sequential28(small),
      "loop28": _loop(one28, small, n_small),
      "vary": lambda: vary(vary_keys, small, small, jnp.int32(0)),
      "classify": lambda: classify(params, images28),
      "generations": lambda: run(k_run, archive, params),
  }
  for fn in fns.values():  # compile
    jax.block_until_ready(fn())
  best = interleaved_best(fns, repeats)
  t_generation = best["generations"] / generations
  result.update({f"{name}_per_s": n_small / best[name]
                 for name in ("encoding28", "untiled28", "sequential28", "loop28")})
  result.update(
      speedup28=best["loop28"] / best["encoding28"],
      generation_s=t_generation,
      generation_evals_per_s=n_small / t_generation,
      share_render=best["encoding28"] / t_generation,
      share_classify=best["classify"] / t_generation,
      share_vary=best["vary"] / t_generation,
      render_over_classify=best["encoding28"] / best["classify"],
  )

  # --- 400 x 224x224x3 -----------------------------------------------------
  n_large = 400
  large = grown_population(k_large, n_large, channels=3, max_nodes=max_nodes,
                           max_conns=max_conns)
  result["large_hidden_mean"] = float(jnp.mean(jax.vmap(cppn.count_hidden)(large)))
  shape224 = dict(height=224, width=224, channels=3)
  sequential224 = jax.jit(functools.partial(cppn.render_population, chunk_size=1,
                                            pixels_per_tile=4096, **shape224))
  chunked224 = jax.jit(functools.partial(cppn.render_population, chunk_size=chunk,
                                         **shape224))
  one224 = jax.jit(functools.partial(cppn.render, pixels_per_tile=4096, **shape224))
  fns = {"sequential224": lambda: sequential224(large),
         "chunked224": lambda: chunked224(large),
         "loop224": _loop(one224, large, loop_genomes)}
  for fn in fns.values():
    jax.block_until_ready(fn())
  best = interleaved_best(fns, max(1, repeats - 1))
  t_loop = best["loop224"] / loop_genomes * n_large
  result.update(
      sequential224_per_s=n_large / best["sequential224"],
      sequential224_s=best["sequential224"],
      chunked224_per_s=n_large / best["chunked224"],
      loop224_per_s=n_large / t_loop,
      speedup224=t_loop / best["sequential224"],
  )
  return result


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--max-nodes", type=int, default=32)
  parser.add_argument("--max-conns", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--chunk", type=int, default=50,
                      help="genomes per lax.map chunk at 224x224")
  parser.add_argument("--loop-genomes", type=int, default=20)
  parser.add_argument("--generations", type=int, default=5)
  parser.add_argument("--methods", action="store_true",
                      help="only compare render(method='active') with 'slots'")
  args = parser.parse_args()
  if args.methods:
    print_methods(measure_methods(repeats=args.repeats, generations=args.generations),
                  args.repeats)
    return
  r = measure(max_nodes=args.max_nodes, max_conns=args.max_conns, repeats=args.repeats,
              chunk=args.chunk, loop_genomes=args.loop_genomes,
              generations=args.generations)
  print(f"machine: {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}")
  print(f"genomes: max_nodes={args.max_nodes} max_conns={args.max_conns}; mean hidden "
        f"nodes {r['small_hidden_mean']:.1f} (28x28), {r['large_hidden_mean']:.1f} "
        "(224x224)")
  rows = [
      ("200 genomes 28x28x1, vmap, tiles <= 512 px (encoding)", r["encoding28_per_s"]),
      ("200 genomes 28x28x1, vmap, one tile", r["untiled28_per_s"]),
      ("200 genomes 28x28x1, one after another in one jit", r["sequential28_per_s"]),
      ("200 genomes 28x28x1, Python loop, one per call", r["loop28_per_s"]),
      ("400 genomes 224x224x3, one after another, 4096-px tiles",
       r["sequential224_per_s"]),
      (f"400 genomes 224x224x3, vmap in chunks of {args.chunk}, one tile",
       r["chunked224_per_s"]),
      (f"400 genomes 224x224x3, Python loop (first {args.loop_genomes}, scaled)",
       r["loop224_per_s"]),
  ]
  for name, rate in rows:
    print(f"{name:<58} {rate:9,.1f} renders/s")
  print(f"400 genomes 224x224x3 one after another: {r['sequential224_s']:.1f} s")
  print(f"speed-up of the encoding's render over one per call, 28x28: "
        f"{r['speedup28']:.1f}x")
  print(f"speed-up of one-after-another in one jit over one per call, 224x224: "
        f"{r['speedup224']:.1f}x")
  print(f"MNIST CPPN generation (200 offspring, LeNet): "
        f"{r['generation_evals_per_s']:,.0f} evals/s ({r['generation_s'] * 1e3:.1f} ms)")
  print(f"share of a generation: render {r['share_render']:.0%}, LeNet forward+softmax "
        f"{r['share_classify']:.0%}, vary {r['share_vary']:.0%} (parts timed alone)")
  print(f"ratio render / classify time, 200 genomes 28x28: "
        f"{r['render_over_classify']:.2f}")

if __name__ == "__main__":
  main()
