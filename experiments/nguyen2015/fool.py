"""Evolves fooling images with MAP-Elites over the classes of a classifier.

  python -m experiments.nguyen2015.fool --config=experiments/nguyen2015/configs/fool.py:mnist_direct \
      --workdir=runs/fool_mnist_direct

The work directory gets config.json, metrics.jsonl (one line per generation),
checkpoints/archive_*.msgpack (rerunning the same command resumes exactly
where the last checkpoint left off), elites_gen*.png at every checkpoint,
elites.png and curves.png at the end, and summary.json.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import common
from foolingjax import checkpoint, images, sharding, zoo
from foolingjax.contract import Classifier, num_classes_of
from foolingjax.evolution import direct, map_elites

_CONFIG = common.CONFIG
_WORKDIR = common.WORKDIR

ENCODINGS = ("direct", "cppn")


def load_classifier(config) -> Classifier:
  """A zoo name, or ``package.module:function`` returning ``(apply_fn, params)``."""
  name = config.classifier
  if ":" in name:
    classifier = common.load_user_classifier(name)
  else:
    classifier = zoo.load_classifier(name, seed=config.classifier_seed)
  if config.ten_crop:
    # The original's ImageNet fitness: softmax averaged over 10 crops of a
    # 256x256 rendering; the wrapper's softmax is that average.
    from foolingjax import imagenet
    classifier = Classifier(imagenet.make_ten_crop_apply_fn(classifier.apply_fn),
                            classifier.params)
  return classifier


def input_shape_of(apply_fn) -> tuple[int, int, int]:
  shape = getattr(apply_fn, "input_shape", None)
  if shape is None or any(d is None for d in shape):
    raise ValueError("The classifier's apply_fn does not declare its input_shape. Fix: wrap "
                     "it with foolingjax.models.from_linen/from_nnx(..., input_shape=(H, W, C)).")
  return tuple(shape)


def make_encoding(config, image_shape):
  height, width, channels = image_shape
  if config.encoding == "direct":
    return direct.make_encoding(height=height, width=width, channels=channels,
                                **config.direct.to_dict())
  if config.encoding == "cppn":
    from foolingjax.evolution import cppn
    return cppn.make_encoding(height=height, width=width, channels=channels,
                              **config.cppn.to_dict())
  raise ValueError(f"Unknown encoding {config.encoding!r}; use one of {ENCODINGS}.")


def validate(config) -> None:
  checks = [
      (config.population >= 1, f"population must be >= 1, got {config.population}"),
      (config.generations >= 0, f"generations must be >= 0, got {config.generations}"),
      (config.log_every >= 1, f"log_every must be >= 1, got {config.log_every}"),
      (config.checkpoint_every >= 1 and config.checkpoint_every % config.log_every == 0,
       f"checkpoint_every ({config.checkpoint_every}) must be a positive multiple of "
       f"log_every ({config.log_every})"),
      (config.encoding in ENCODINGS,
       f"unknown encoding {config.encoding!r}; use one of {ENCODINGS}"),
  ]
  for ok, message in checks:
    if not ok:
      raise ValueError(f"Bad fool config: {message}.")


def class_labels(num_classes: int) -> list[str]:
  if num_classes == 1000:
    try:
      from foolingjax import imagenet
      return list(imagenet.class_names())
    except (ImportError, FileNotFoundError):
      pass
  return [str(k) for k in range(num_classes)]


def run(config, workdir) -> dict:
  """Runs (or resumes) the experiment; returns the summary written to summary.json."""
  validate(config)
  if config.distributed:
    sharding.initialize_distributed()
    if jax.process_index() > 0:  # every host computes the same archive; one writes it
      workdir = pathlib.Path(workdir) / f"process_{jax.process_index()}"
  mesh = sharding.data_mesh() if config.shard else None
  if mesh is not None:
    sharding.check_divisible(config.population, mesh, what="config.population")
    print(f"Sharding the population over {sharding.describe(mesh)}.")
  classifier = load_classifier(config)
  image_shape = input_shape_of(classifier.apply_fn)
  num_classes = num_classes_of(classifier.apply_fn, classifier.params, image_shape)
  if config.num_classes not in (-1, num_classes):
    raise ValueError(f"config.num_classes is {config.num_classes} but the classifier "
                     f"{config.classifier!r} has {num_classes} classes. Fix: set "
                     "--config.num_classes=-1 or pick a matching classifier.")
  workdir, resuming = common.prepare_workdir(workdir, config, ignore=("generations",))
  ckpt_dir = workdir / "checkpoints"
  metrics_path = workdir / "metrics.jsonl"
  labels = class_labels(num_classes)

  encoding = make_encoding(config, image_shape)
  init_fn = jax.jit(map_elites.make_init_fn(
      encoding=encoding, apply_fn=classifier.apply_fn, num_cells=num_classes,
      init_size=config.population))
  run_fns = {}

  def run_fn(n):
    if n not in run_fns:
      run_fns[n] = jax.jit(
          map_elites.make_run_fn(encoding=encoding, apply_fn=classifier.apply_fn,
                                 batch_size=config.population, num_generations=n,
                                 mesh=mesh),
          out_shardings=sharding.replicated(mesh) if mesh is not None else None)
    return run_fns[n]

  key = jax.random.key(config.seed)
  k_init, k_run = jax.random.split(key)
  last = checkpoint.latest(ckpt_dir, prefix="archive") if resuming else None
  if last is not None:
    template = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                      jax.eval_shape(init_fn, k_init, classifier.params))
    archive, _ = checkpoint.restore(last, template)
    _validate_archive(config, archive)
    _truncate_metrics(metrics_path, int(archive.generation))
    print(f"Resumed from {last} at generation {int(archive.generation)}.")
  else:
    if metrics_path.exists():
      metrics_path.unlink()  # metrics of a run that never reached a checkpoint
    archive = init_fn(k_init, classifier.params)
    record = _jsonable(map_elites.archive_metrics(archive))
    common.append_jsonl(metrics_path, record)
    _save(ckpt_dir, workdir, archive, encoding, labels)

  t_start = time.perf_counter()
  evaluations_start = int(archive.evaluations)
  while int(archive.generation) < config.generations:
    gen = int(archive.generation)
    n = min(config.log_every - gen % config.log_every, config.generations - gen)
    t0 = time.perf_counter()
    archive, metrics = run_fn(n)(k_run, archive, classifier.params)
    metrics = jax.device_get(metrics)
    seconds = time.perf_counter() - t0
    for i in range(n):
      common.append_jsonl(metrics_path, _jsonable({k: v[i] for k, v in metrics.items()}))
    gen = int(archive.generation)
    print(f"gen {gen:5d}/{config.generations} | cells >= 99.99%: "
          f"{int(metrics['cells_9999'][-1])}/{num_classes} | median "
          f"{float(metrics['median'][-1]):.5f} | {n * config.population / seconds:,.0f} evals/s",
          flush=True)
    if gen % config.checkpoint_every == 0 or gen == config.generations:
      _save(ckpt_dir, workdir, archive, encoding, labels)

  history = [json.loads(line) for line in metrics_path.read_text().splitlines()]
  wall = time.perf_counter() - t_start
  summary = _summary(history, archive, labels, config, wall,
                     int(archive.evaluations) - evaluations_start)
  _plot_curves(workdir / "curves.png", history, labels)
  _save_grid(workdir / "elites.png", archive, encoding, labels)
  common.write_json(workdir / "summary.json", summary)
  return summary


def _validate_archive(config, archive) -> None:
  """A checkpointed CPPN genome enters from outside: reject malformed graphs."""
  if config.encoding != "cppn":
    return
  from foolingjax.evolution import cppn
  # Initialisation fills every cell (each offspring competes for all of them).
  cppn.validate_genome(archive.genomes)


def _save(ckpt_dir, workdir, archive, encoding, labels):
  gen = int(archive.generation)
  checkpoint.save(checkpoint.step_path(ckpt_dir, gen, prefix="archive"), archive,
                  meta={"generation": gen})
  checkpoint.prune(ckpt_dir, keep=3, prefix="archive")
  _save_grid(workdir / f"elites_gen{gen:05d}.png", archive, encoding, labels)


def _save_grid(path, archive, encoding, labels, max_cells=100):
  fitness = np.asarray(archive.fitness)
  cells = np.flatnonzero(np.isfinite(fitness))
  if len(cells) > max_cells:
    cells = cells[np.argsort(-fitness[cells])[:max_cells]]
  genomes = jax.tree_util.tree_map(lambda leaf: leaf[cells], archive.genomes)
  rendered = jax.jit(jax.vmap(encoding.render))(genomes)
  images.save_grid(path, rendered, labels=[labels[c] for c in cells],
                   confidences=fitness[cells],
                   title=f"Elites at generation {int(archive.generation)}")


def _summary(history, archive, labels, config, wall, evaluations) -> dict:
  first_all = next((h["generation"] for h in history
                    if h["cells_9999"] == len(labels)), None)
  at = {h["generation"]: h for h in history}
  fitness = np.asarray(jnp.where(archive.filled, archive.fitness, 0.0))
  return {
      "preset": config.preset, "seed": config.seed, "classifier": config.classifier,
      "encoding": config.encoding, "generations": int(archive.generation),
      "population": config.population,
      "first_generation_all_9999": first_all,
      "median_at_200": at[200]["median"] if 200 in at else None,
      "final_median": float(np.median(fitness)), "final_mean": float(np.mean(fitness)),
      "final_cells_9999": int(np.sum(fitness >= 0.9999)),
      "best": {labels[k]: float(fitness[k]) for k in range(len(labels))},
      "evaluations": int(archive.evaluations),
      "seconds_this_invocation": wall,
      "evaluations_per_second": evaluations / wall if wall > 0 and evaluations else None,
  }


def _plot_curves(path, history, labels):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  gens = np.array([h["generation"] for h in history])
  best = np.array([h["best"] for h in history])
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for k in range(best.shape[1]) if best.shape[1] <= 20 else []:
    ax1.plot(gens, best[:, k], label=labels[k], lw=1)
  ax1.plot(gens, np.median(best, axis=1), "k--", lw=2, label="median")
  ax1.set(xlabel="generation", ylabel="best confidence", title="Best confidence per class")
  ax1.legend(fontsize=7, ncol=2)
  # -log10(1 - p): 4 means 99.99 %.
  nines = -np.log10(np.clip(1.0 - best, 1e-8, 1.0))
  ax2.plot(gens, np.median(nines, axis=1), "k", label="median over classes")
  ax2.plot(gens, np.min(nines, axis=1), "r", label="worst class")
  ax2.axhline(4.0, color="gray", ls=":", label="99.99 %")
  ax2.set(xlabel="generation", ylabel="-log10(1 - confidence)", title="Nines of confidence")
  ax2.legend(fontsize=8)
  fig.tight_layout()
  tmp = path.with_name(path.name + ".tmp.png")
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  tmp.replace(path)


def _jsonable(metrics: dict) -> dict:
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    out[k] = v.tolist() if v.ndim else (int(v) if v.dtype.kind in "iu" else float(v))
  return out


def _truncate_metrics(path: pathlib.Path, generation: int) -> None:
  """Drops metric lines written after the checkpoint we resume from."""
  if not path.exists():
    return
  kept = [line for line in path.read_text().splitlines()
          if line and json.loads(line)["generation"] <= generation]
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(line + "\n" for line in kept))
  tmp.replace(path)


def main(argv):
  del argv
  config = _CONFIG.value
  run(config, pathlib.Path(_WORKDIR.value or f"runs/fool_{config.preset}"))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
