"""ImageNet-scale fitness throughput, as a ratio against a baseline of the same run.

  python -m benchmarks.bench_imagenet [--model efficientnet|caffenet] [--batch 8]
  python -m benchmarks.bench_imagenet --generation [--population 32]

Times one jitted batch of
  * ``render+10crop``: HSV direct-encoded genomes ``[B, 256, 256, 3]`` rendered
    to RGB (the direct encoding's renderer), ten 224x224 (227 for CaffeNet)
    crops each, classified, softmax averaged over the crops -- the paper's
    ImageNet fitness (:func:`foolingjax.imagenet.make_ten_crop_apply_fn`);
  * ``classify``: the same network on ``[B, 224, 224, 3]`` images, one crop,
    softmax (what a single-crop fitness would cost);
measured round-robin, best of ``--repeats``, and prints evaluations/s of each,
their ratio, and the projected time of the paper's 5001 x 400 evaluations.
``--model caffenet`` uses a randomly initialised CaffeNet (the paper's network
size; no weights are available offline), ``efficientnet`` the pretrained
EfficientNet-Lite0 that stands in for it.

``--generation`` instead times where the CPU-scale ImageNet study's time goes:
one whole MAP-Elites generation over all 1000 class cells (select, vary,
render at 224, classify, insert), direct (``kernel="reference"`` and ``"fast"``)
and CPPN encodings, against the bare batched forward of as many 224x224 images
and against rendering alone, with the compile time of each generation's scan;
and, for the direct encoding, its variation (both kernels), its archive insert
and one uniform draw over all the offspring's genes (``jax.random.uniform``
with threefry, JAX's default, the same numbers through ``direct.uniform``'s
unrolled hash, and rbg) timed apart.
"""

from __future__ import annotations

import argparse
import functools
import platform
import time

import jax

from benchmarks import timing
from foolingjax import imagenet
from foolingjax.evolution import direct
from foolingjax.models import alexnet, efficientnet


def measure(model: str = "efficientnet", batch: int = 8, repeats: int = 3) -> dict:
  key = jax.random.key(0)
  k_init, k_genomes, k_images = jax.random.split(key, 3)
  if model == "efficientnet":
    apply_fn, params = efficientnet.load_efficientnet_lite0()
  elif model == "caffenet":
    apply_fn, params = alexnet.init(k_init, layout="caffenet")
  else:
    raise ValueError(f"unknown model {model!r}")
  crop = apply_fn.input_shape[0]
  size = imagenet.RENDER_SIZE
  encoding = direct.make_encoding(height=size, width=size, channels=3)
  ten_crop_fn = imagenet.make_ten_crop_apply_fn(apply_fn)

  @jax.jit
  def fitness(params, genomes):
    images = jax.vmap(encoding.render)(genomes)
    return jax.nn.softmax(ten_crop_fn(params, images))

  @jax.jit
  def classify(params, images):
    return jax.nn.softmax(apply_fn(params, images))

  genomes = jax.vmap(encoding.init)(jax.random.split(k_genomes, batch))
  images = jax.random.uniform(k_images, (batch, crop, crop, 3))
  fns = {"render+10crop": lambda: fitness(params, genomes),
         "classify": lambda: classify(params, images)}
  compile_s = {}
  for name, fn in fns.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s[name] = time.perf_counter() - t0
  both = timing.interleaved_best_cpu(fns, repeats)
  best = {name: wall for name, (wall, _) in both.items()}
  ten_eps = batch / best["render+10crop"]
  one_eps = batch / best["classify"]
  return {
      "model": model, "crop": crop, "batch": batch,
      "ten_crop_evals_per_s": ten_eps,
      "classify_evals_per_s": one_eps,
      "ratio_classify_over_ten_crop": best["render+10crop"] / best["classify"],
      "cpu_seconds": {name: cpu for name, (_, cpu) in both.items()},
      "wall_seconds": best, "load": timing.load(),
      "first_call_s": compile_s,
      "hours_for_5001x400": 5001 * 400 / ten_eps / 3600,
  }


def measure_generation(population: int = 32, generations: int = 2,
                       repeats: int = 2) -> dict:
  """Per-generation (wall, CPU) seconds of each part; see the module docstring."""
  from foolingjax import evolution
  from foolingjax.evolution import map_elites
  apply_fn, params = efficientnet.load_efficientnet_lite0()
  shape = apply_fn.input_shape
  key = jax.random.key(0)
  forward = jax.jit(lambda p, x: jax.nn.softmax(apply_fn(p, x)))
  images = jax.random.uniform(key, (population, *shape))
  fns, compile_s = {}, {}
  for name in ("direct", "direct_fast", "cppn"):
    encoding = (evolution.make_encoding("direct", shape, kernel="fast") if name == "direct_fast"
                else evolution.make_encoding(name, shape))
    init = jax.jit(map_elites.make_init_fn(encoding=encoding, apply_fn=apply_fn,
                                           num_cells=1000, init_size=population))
    run = jax.jit(map_elites.make_run_fn(encoding=encoding, apply_fn=apply_fn,
                                         batch_size=population, num_generations=generations))
    archive = jax.block_until_ready(init(key, params))
    with timing.Clock() as clock:   # the compiled scan is what is timed: compiled once
      compiled = run.lower(key, archive, params).compile()
    compile_s[name] = clock.wall
    genomes = jax.vmap(encoding.init)(jax.random.split(key, population))
    fns[f"generation_{name}"] = functools.partial(compiled, key, archive, params)
    fns[f"render_{name}"] = functools.partial(jax.jit(jax.vmap(encoding.render)), genomes)
    if name.startswith("direct"):   # the direct generation's other parts, timed apart
      vary = jax.jit(lambda k, a, b, vary=encoding.vary: jax.vmap(
          lambda kk, x, y: vary(kk, x, y, 5)[0])(jax.random.split(k, population), a, b))
      fns[f"vary_{name}"] = functools.partial(vary, key, genomes, genomes[::-1])
    if name == "direct":
      insert = jax.jit(map_elites.insert)
      scores = jax.random.normal(key, (population, 1000))
      fns["insert_direct"] = functools.partial(insert, archive, genomes, scores)
      for impl in ("threefry2x32", "rbg"):
        draw = jax.jit(lambda k, shape=genomes.shape: jax.random.uniform(k, shape))
        fns[f"uniform_draw_{impl}"] = functools.partial(draw, jax.random.key(0, impl=impl))
      # The library's draw: the same numbers as threefry2x32's, the hash unrolled.
      draw = jax.jit(lambda k, shape=genomes.shape: direct.uniform(k, shape))
      fns["uniform_draw_randombits"] = functools.partial(draw, jax.random.key(0))
  fns["forward"] = functools.partial(forward, params, images)
  for fn in fns.values():
    jax.block_until_ready(fn())
  best = timing.interleaved_best_cpu(fns, repeats)
  per_gen = {k: (w / generations, c / generations) if k.startswith("generation") else (w, c)
             for k, (w, c) in best.items()}
  return {"population": population, "per_generation": per_gen, "compile_s": compile_s,
          "load": timing.load()}


def main_generation(population: int, repeats: int) -> None:
  r = measure_generation(population, repeats=repeats)
  g = r["per_generation"]
  fwd = g["forward"][0]
  print(f"population {r['population']}, 1000 cells, 224x224, EfficientNet-Lite0; wall / CPU "
        f"s per generation, best of {repeats} round-robin; {r['load']}")
  print(f"bare forward of {r['population']} images       {g['forward'][0]:.3f} / "
        f"{g['forward'][1]:.3f}")
  for name in ("direct", "direct_fast", "cppn"):
    w, c = g[f"generation_{name}"]
    rw, rc = g[f"render_{name}"]
    print(f"{name:11s} whole generation {w:.3f} / {c:.3f}: ratio forward / generation "
          f"{fwd / w:.2f}; render alone {rw:.3f} / {rc:.3f} ({100 * rw / w:.0f} % of it); "
          f"compile {r['compile_s'][name]:.1f} s")
  w = g["generation_direct"][0]
  for part in ("vary_direct", "vary_direct_fast", "insert_direct", "uniform_draw_threefry2x32",
               "uniform_draw_randombits", "uniform_draw_rbg"):
    pw, pc = g[part]
    print(f"  {part:26s} {pw:.3f} / {pc:.3f} ({100 * pw / w:.0f} % of a direct generation)")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", choices=("efficientnet", "caffenet"),
                      default="efficientnet")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--generation", action="store_true",
                      help="time a whole 1000-cell generation instead (see the docstring)")
  parser.add_argument("--population", type=int, default=32)
  args = parser.parse_args()
  if args.generation:
    main_generation(args.population, args.repeats)
    return
  r = measure(args.model, args.batch, args.repeats)
  print(f"machine: {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}")
  print(f"model {r['model']} (crop {r['crop']}), batch {r['batch']}")
  print(f"render 256 + 10 crops + classify {r['ten_crop_evals_per_s']:8.2f} evals/s")
  crop = f"{r['crop']}x{r['crop']}"
  print(f"classify one {crop} image      {r['classify_evals_per_s']:8.2f} evals/s")
  ratio = r["ratio_classify_over_ten_crop"]
  print(f"ratio 10-crop fitness time / classify time  {ratio:.1f}x")
  print("first call (compile + run) s: " + ", ".join(
      f"{k} {v:.1f}" for k, v in r["first_call_s"].items()))
  print(f"projected 5001 x 400 evaluations            {r['hours_for_5001x400']:.1f} h")
  print("best batch, wall / CPU s: " + ", ".join(
      f"{k} {r['wall_seconds'][k]:.3f} / {r['cpu_seconds'][k]:.3f}" for k in r["wall_seconds"])
      + f"; {r['load']}")


if __name__ == "__main__":
  main()
