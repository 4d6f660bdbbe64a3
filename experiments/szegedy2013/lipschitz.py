"""Per-layer upper Lipschitz bounds next to the measured sensitivity.

  python -m experiments.szegedy2013.lipschitz --config=experiments/szegedy2013/configs/lipschitz.py:all \
      --workdir=runs/lipschitz_all

For each classifier: the bound of every layer (:mod:`foolingjax.lipschitz`),
their product, and the measured ``||f(x + r) - f(x)|| / ||r||`` (``f`` = the
logits) for ``r`` the minimal L-BFGS adversarial perturbation towards
``(prediction + 1) mod K`` and for a random Gaussian ``r`` of norm
``random_l2``. Writes to the work directory:

  config.json; bounds.json (every layer's bound and power-iteration
  convergence, per classifier); measured.json (per-image ratios, L2
  distortions, attack success); results.md (a summary table and one table of
  layer bounds per classifier); tensorboard/ (see :func:`tensorboard_records`).

Classifiers are :func:`foolingjax.zoo.resolve` specs (a preset must be trained
or bundled already; this never trains one). The bounds need a layer
description: a zoo architecture, or a user's ``package.module:function`` whose
module class is registered with ``lipschitz_layers``; any other classifier is
refused, with the fix, before the work directory is created.
"""

from __future__ import annotations

import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import core
from foolingjax import attacks, data, lipschitz, zoo
from foolingjax.contract import Classifier

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
IMAGE_SHAPES = ((28, 28, 1), (224, 224, 3))  # MNIST test images, or the photos
SUMMARY = "Upper Lipschitz bounds and measured sensitivity"


def validate(config) -> list[str]:
  """Checks every setting, loading nothing; returns the classifier specs."""
  names = core.names(config.classifiers)
  core.check([
      (bool(names), "classifiers names no classifier"),
      (len(set(names)) == len(names), f"classifiers lists a classifier twice: {names}"),
      (config.power_iters >= 1, f"power_iters must be >= 1, got {config.power_iters}"),
      (1 <= config.mnist_num_images <= 10000,
       f"mnist_num_images must be in [1, 10000], got {config.mnist_num_images}"),
      (1 <= config.imagenet_num_images <= len(PHOTOS),
       f"imagenet_num_images must be in [1, {len(PHOTOS)}], got "
       f"{config.imagenet_num_images}"),
  ], what="lipschitz")
  core.check_classifiers(*names)
  return names


def load_classifiers(names, *, log=print) -> dict[str, Classifier]:
  """The classifiers (``zoo.resolve``, never training one), checked to be boundable.

  Raises:
    ValueError: a classifier has no layer description (e.g. a user's model
      of an unregistered architecture) or takes images of another shape.
  """
  classifiers = {}
  for name in names:
    classifier = zoo.resolve(name, train_if_missing=False, log=log)
    try:
      lipschitz.zoo_layers(classifier.apply_fn)
    except ValueError as e:
      raise ValueError(
          f"The per-layer Lipschitz bounds cannot take classifier {name!r}: they need "
          f"its layer structure. {e} Or leave it out of config.classifiers.") from None
    shape = tuple(getattr(classifier.apply_fn, "input_shape", None) or ())
    if shape not in IMAGE_SHAPES:
      raise ValueError(f"No test images for classifier {name!r} (input shape {shape}). "
                       f"Fix: a classifier of MNIST {IMAGE_SHAPES[0]} or ImageNet "
                       f"{IMAGE_SHAPES[1]} images.")
    classifiers[name] = classifier
  return classifiers


def imagenet_photos(n: int) -> np.ndarray:
  """The first ``n`` of scikit-image's sample photos, 224x224 in [0, 1]."""
  import skimage
  from PIL import Image

  from foolingjax import imagenet
  folder = pathlib.Path(skimage.__file__).parent / "data"
  files = [next(folder.glob(f"{name}.*")) for name in PHOTOS[:n]]
  return np.stack([imagenet.prepare_photo(np.asarray(Image.open(f)), size=224)
                   for f in files])


def images_for(input_shape, config) -> np.ndarray:
  if tuple(input_shape) == (28, 28, 1):
    test_x, _ = data.load("mnist", "test")
    return test_x[: config.mnist_num_images].astype(np.float32) / 255.0
  if tuple(input_shape) == (224, 224, 3):
    return imagenet_photos(config.imagenet_num_images)
  raise ValueError(f"No test images for input shape {input_shape}.")


def measure(key, name, classifier, config, *, log) -> tuple[dict, dict]:
  """Bounds and measured ratios of one classifier."""
  apply_fn, params = classifier
  input_shape = tuple(apply_fn.input_shape)
  layers = lipschitz.zoo_layers(apply_fn)
  variables = lipschitz.variables_of(apply_fn, params)
  k_bounds, k_random = jax.random.split(key)

  bounds_fn = jax.jit(lambda k, v: lipschitz.layer_bounds(
      k, layers, v, input_shape=input_shape, num_iters=config.power_iters))
  t0 = time.perf_counter()
  result = jax.block_until_ready(bounds_fn(k_bounds, variables))
  bound_seconds = time.perf_counter() - t0
  bounds = {
      "layers": [{"name": n, "bound": float(result.bounds[n]),
                  "top_level": n in result.top_level,
                  "rel_change": (float(result.rel_change[n]) if n in result.rel_change
                                 else None)} for n in result.names],
      "log10_bound": float(result.log10_network),
      "power_iters": config.power_iters,
      "seconds": bound_seconds,
  }
  log(f"{name}: log10 bound {bounds['log10_bound']:.3f} ({bound_seconds:.0f} s)")

  x = jnp.asarray(images_for(input_shape, config))
  imagenet = input_shape == (224, 224, 3)
  predict = jax.jit(lambda p, x: jnp.argmax(apply_fn(p, x), -1))
  k = apply_fn.num_classes
  targets = (predict(params, x) + 1) % k
  attack = jax.jit(lambda p, x, t: attacks.lbfgs_attack(
      apply_fn, p, x, t,
      c_search_steps=(config.imagenet_lbfgs_c_search_steps if imagenet
                      else config.lbfgs_c_search_steps),
      max_iters=(config.imagenet_lbfgs_max_iters if imagenet else config.lbfgs_max_iters),
      tol=config.lbfgs_tol, chunk_size=config.lbfgs_chunk_size or None,
      solver=config.lbfgs_solver))
  t0 = time.perf_counter()
  adv, info = jax.block_until_ready(attack(params, x, targets))
  attack_seconds = time.perf_counter() - t0
  ratio = jax.jit(lambda p, x, y: lipschitz.sensitivity_ratio(apply_fn, p, x, y))
  success = np.asarray(info.success)
  lbfgs_ratio = np.asarray(ratio(params, x, adv))
  r = jax.random.normal(k_random, x.shape)
  r = r * (config.random_l2 / jnp.linalg.norm(r.reshape((r.shape[0], -1)), axis=-1)
           ).reshape((-1, 1, 1, 1))
  random_ratio = np.asarray(ratio(params, x, x + r))
  measured = {
      "num_images": int(x.shape[0]),
      "num_successes": int(success.sum()),
      "lbfgs_ratio": [float(v) if s else None for v, s in zip(lbfgs_ratio, success)],
      "lbfgs_l2": [float(v) for v in np.asarray(info.l2)],
      "random_ratio": [float(v) for v in random_ratio],
      "random_l2": config.random_l2,
      "attack_seconds": attack_seconds,
  }
  log(f"  L-BFGS: {measured['num_successes']}/{measured['num_images']} succeeded, "
      f"ratios {measured['lbfgs_ratio']} ({attack_seconds:.0f} s)")
  return bounds, measured


def tensorboard_records(results: dict) -> list[dict]:
  """Per-layer bounds as TensorBoard records, step = the layer's index in bounds.json.

  ``<classifier>/bound`` for every layer and ``<classifier>/log10_bound_so_far``
  (the running sum of log10 bounds over the top-level layers, whose product is
  the network's bound); the summary at step 0: ``<classifier>/log10_bound``,
  ``<classifier>/lbfgs_ratio_mean``, ``<classifier>/lbfgs_ratio_max``,
  ``<classifier>/random_ratio_mean``, ``<classifier>/num_successes``.
  """
  records = []
  for name, (bounds, measured) in results.items():
    so_far = 0.0
    for i, layer in enumerate(bounds["layers"]):
      record = {"step": i, f"{name}/bound": layer["bound"]}
      if layer["top_level"] and layer["bound"] > 0:
        so_far += math.log10(layer["bound"])
        record[f"{name}/log10_bound_so_far"] = so_far
      records.append(record)
    ratios = [v for v in measured["lbfgs_ratio"] if v is not None]
    records.append({
        "step": 0, f"{name}/log10_bound": bounds["log10_bound"],
        f"{name}/random_ratio_mean": float(np.mean(measured["random_ratio"])),
        f"{name}/num_successes": measured["num_successes"],
        **({f"{name}/lbfgs_ratio_mean": float(np.mean(ratios)),
            f"{name}/lbfgs_ratio_max": float(np.max(ratios))} if ratios else {})})
  return records


def _fmt(v: float | None) -> str:
  if v is None or not math.isfinite(v):
    return "—"
  return f"{v:.3g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.2e}"


def markdown(results: dict) -> str:
  """The summary table and one table of top-level layer bounds per classifier."""
  header = ["network", "upper bound (product)", "L-BFGS ratio mean", "L-BFGS ratio max",
            "random-r ratio mean", "images (L-BFGS successes)",
            "bound / max L-BFGS ratio"]
  rows = []
  for name, (bounds, measured) in results.items():
    ratios = [v for v in measured["lbfgs_ratio"] if v is not None]
    bound = 10.0 ** bounds["log10_bound"]
    mean = float(np.mean(ratios)) if ratios else None
    worst = float(np.max(ratios)) if ratios else None
    rows.append([name, _fmt(bound), _fmt(mean), _fmt(worst),
                 _fmt(float(np.mean(measured["random_ratio"]))),
                 f"{measured['num_images']} ({measured['num_successes']})",
                 _fmt(bound / worst) if worst else core.MISSING])
  lines = [f"## {SUMMARY}", "", core.markdown_table(header, rows)]
  for name, (bounds, _) in results.items():
    layers = [[layer["name"], _fmt(layer["bound"])]
              for layer in bounds["layers"] if layer["top_level"]]
    layers.append(["product", _fmt(10.0 ** bounds["log10_bound"])])
    lines += ["", f"### {name}", "",
              core.markdown_table(["layer", "upper Lipschitz bound"], layers)]
  return "\n".join(lines) + "\n"


def parse_summary(text: str) -> dict[str, dict[str, str]]:
  """Reads the summary table of ``results.md`` back: ``{network: {column: cell}}``."""
  return core.parse_markdown_tables(text)[SUMMARY]


@core.reported
def run(config, workdir, *, log=print) -> dict:
  """Bounds and measurements of every classifier: ``{name: (bounds, measured)}``.

  Every setting is checked and every classifier loaded (and checked to have a
  layer description) before the work directory is touched.
  """
  names = validate(config)
  classifiers = load_classifiers(names, log=log)
  workdir, _ = core.prepare_workdir(workdir, config)
  results = {}
  bar = core.Progress(len(names), "[lipschitz]", unit="nets")

  def log_line(line):   # the log lines stay; the bar redraws below them
    bar.clear()
    log(line)
    bar.update(len(results))

  for i, name in enumerate(names):
    results[name] = measure(core.rng(config.seed, i), name, classifiers[name], config,
                            log=log_line)
    core.write_json(workdir / "bounds.json", {n: b for n, (b, _) in results.items()})
    core.write_json(workdir / "measured.json", {n: m for n, (_, m) in results.items()})
    core.write_text(workdir / "results.md", markdown(results))
    core.write_tensorboard(workdir, tensorboard_records(results), step="step")
    bar.update(i + 1)
  bar.close()
  return results


def main(argv):
  del argv
  run(core.CONFIG.value, core.WORKDIR.value)


if __name__ == "__main__":
  core.cli(main)
