"""Evolves fooling images with MAP-Elites over the classes of a classifier.

  python -m experiments.nguyen2015.fool --config=experiments/nguyen2015/configs/fool.py:mnist_direct \
      --workdir=runs/fool_mnist_direct

The work directory gets config.json, metrics.jsonl (one line per generation),
checkpoints/archive_*.msgpack (rerunning the same command resumes exactly
where the last checkpoint left off), elites_gen*.png at every checkpoint,
elites.png and curves.png at the end, and summary.json.
"""

from __future__ import annotations

import functools
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import core, report
from foolingjax import evolution, images, sharding, zoo
from foolingjax.contract import Classifier, num_classes_of
from foolingjax.evolution import driver, map_elites

ENCODINGS = evolution.ENCODINGS


def validate(config) -> None:
  core.check([
      (config.population >= 1, f"population must be >= 1, got {config.population}"),
      (config.generations >= 0, f"generations must be >= 0, got {config.generations}"),
      (config.log_every >= 1, f"log_every must be >= 1, got {config.log_every}"),
      (config.checkpoint_every >= 1 and config.checkpoint_every % config.log_every == 0,
       f"checkpoint_every ({config.checkpoint_every}) must be a positive multiple of "
       f"log_every ({config.log_every})"),
      (config.encoding in ENCODINGS,
       f"unknown encoding {config.encoding!r}; use one of {ENCODINGS}"),
      (config.fitness in map_elites.FITNESS,
       f"unknown fitness {config.fitness!r}; use one of {map_elites.FITNESS}"),
  ], what="fool")
  core.check_classifiers(config.classifier)


# Settings a rerun in the same work directory may change and still resume
# (the length of the run, and what is reported at its end).
RESUMABLE = ("generations", "grid_classes", "cross_score")


@core.reported
def run(config, workdir) -> dict:
  """Runs (or resumes) the experiment; returns the summary written to summary.json."""
  validate(config)
  if config.distributed:
    sharding.initialize_distributed(
        coordinator_address=config.coordinator_address or None,
        num_processes=config.num_processes or None,
        process_id=config.process_id if config.process_id >= 0 else None)
    if jax.process_index() > 0:  # every host computes the same archive; one writes it
      workdir = pathlib.Path(workdir) / f"process_{jax.process_index()}"
  mesh = sharding.data_mesh() if config.shard else None
  if mesh is not None:
    sharding.check_divisible(config.population, mesh, what="config.population")
    print(f"Sharding the population over {sharding.describe(mesh)}.")
  base = zoo.resolve(config.classifier)
  classifier = core.with_fitness(base, config.ten_crop)
  image_shape = core.input_shape_of(classifier.apply_fn)
  num_classes = num_classes_of(classifier.apply_fn, classifier.params, image_shape)
  if config.num_classes not in (-1, num_classes):
    raise ValueError(f"config.num_classes is {config.num_classes} but the classifier "
                     f"{config.classifier!r} has {num_classes} classes. Fix: set "
                     "--config.num_classes=-1 or pick a matching classifier.")
  encoding = core.fool_encoding(config, image_shape)
  workdir, _ = core.prepare_workdir(workdir, config, ignore=RESUMABLE)
  labels = core.class_labels(num_classes)
  chosen = core.parse_classes(config.grid_classes, labels, setting="config.grid_classes")
  if config.cross_score and image_shape[-1] != 3:
    raise ValueError("config.cross_score compares one crop with 10 crops of an ImageNet "
                     f"classifier, but {config.classifier!r} takes {image_shape} inputs. Fix: "
                     "set --config.cross_score=false.")
  evolver = driver.Evolver(encoding=encoding, apply_fn=classifier.apply_fn,
                           num_cells=num_classes, population=config.population,
                           fitness=config.fitness, mesh=mesh)

  def draw(archive):
    _save_grid(workdir / f"elites_gen{int(archive.generation):05d}.png", archive, evolver,
               labels)

  t_start, cpu_start = time.perf_counter(), time.process_time()
  evaluations_before = None

  def on_checkpoint(archive):
    nonlocal evaluations_before
    if evaluations_before is None:
      evaluations_before = int(archive.evaluations)
    draw(archive)
    core.write_tensorboard(workdir, core.read_jsonl(workdir / "metrics.jsonl"),
                           step="generation")
    report.write_report(workdir, running=True)

  archive, history = evolver.evolve(
      jax.random.key(config.seed), classifier.params, generations=config.generations,
      directory=workdir / "checkpoints", checkpoint_every=config.checkpoint_every,
      log_every=config.log_every, metrics_path=workdir / "metrics.jsonl",
      on_checkpoint=on_checkpoint, stop_when_frozen=config.stop_when_frozen,
      fingerprint=core.fingerprint("nguyen2015.fool", config, ignore=RESUMABLE))
  wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
  summary = _summary(history, archive, labels, config, wall,
                     int(archive.evaluations) - (evaluations_before or 0))
  summary["cpu_seconds_this_invocation"] = cpu
  summary["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
  _plot_curves(workdir / "curves.png", history, labels)
  _plot_per_class(workdir / "per_class.png", probabilities(archive), labels, config)
  _save_grid(workdir / "elites.png", archive, evolver, labels)
  if chosen:
    _save_grid(workdir / "elites_chosen.png", archive, evolver, labels, cells=chosen)
  if config.cross_score:
    summary["cross_score"] = cross_score(config, archive, evolver, labels, base)
  core.write_tensorboard(workdir, history, step="generation")
  core.write_json(workdir / "summary.json", summary)
  if jax.process_index() > 0:   # core.reported writes process 0's page; this is ours
    report.write_report(workdir)
  return summary


def probabilities(archive) -> np.ndarray:
  """Each cell's elite probability (0 for an empty cell), whatever the score."""
  return np.asarray(jnp.where(archive.filled,
                              map_elites.to_probability(archive.fitness, archive.fitness_kind),
                              0.0))


def _save_grid(path, archive, evolver, labels, max_cells=100, cells=None):
  """The best ``max_cells`` elites, or those of ``cells`` (filled ones, in that order)."""
  fitness = np.where(np.asarray(archive.filled), probabilities(archive), -np.inf)
  if cells is None:
    cells = np.flatnonzero(np.isfinite(fitness))
    if len(cells) > max_cells:
      cells = cells[np.argsort(-fitness[cells])[:max_cells]]
  else:
    cells = np.array([c for c in cells if np.isfinite(fitness[c])], dtype=int)
  genomes = jax.tree_util.tree_map(lambda leaf: leaf[cells], archive.genomes)
  rendered = evolver.render(genomes)
  images.save_grid(path, rendered, labels=[labels[c] for c in cells],
                   confidences=fitness[cells],
                   title=f"Elites at generation {int(archive.generation)}")


def _summary(history, archive, labels, config, wall, evaluations) -> dict:
  first_all = next((h["generation"] for h in history
                    if h["cells_9999"] == len(labels)), None)
  at = {h["generation"]: h for h in history}
  fitness = probabilities(archive)
  frozen = driver.frozen_at(history, len(labels))
  options = config.direct if config.encoding == "direct" else config.cppn
  return {
      "preset": config.preset, "seed": config.seed, "classifier": config.classifier,
      "encoding": config.encoding, "variant": options.variant, "fitness": config.fitness,
      **({"kernel": options.kernel} if config.encoding == "direct" else {}),
      "generations": int(archive.generation), "generations_asked": config.generations,
      "population": config.population,
      "frozen_at_generation": frozen,
      "stopped_frozen": bool(frozen is not None and int(archive.generation) < config.generations),
      "first_generation_all_9999": first_all,
      "median_at_200": at[200]["median"] if 200 in at else None,
      "final_median": float(np.median(fitness)), "final_mean": float(np.mean(fitness)),
      "final_cells_99": int(np.sum(fitness >= 0.99)),
      "final_cells_9999": int(np.sum(fitness >= 0.9999)),
      "best": {labels[k]: float(fitness[k]) for k in range(len(labels))},
      "best_score": {labels[k]: float(np.asarray(archive.fitness)[k])
                     for k in range(len(labels))},
      "evaluations": int(archive.evaluations),
      "seconds_this_invocation": wall,
      "evaluations_per_second": evaluations / wall if wall > 0 and evaluations else None,
  }


def cross_score(config, archive, evolver, labels, base: Classifier,
                batch_size: int = 8) -> dict:
  """The elites scored under the other ImageNet fitness than the one they evolved under.

  A one-crop run's elites get the original's fitness (softmax averaged over 10
  crops of a 256x256 rendering); a 10-crop run's get the one-crop fitness (the
  whole image at the network's input size, as a one-crop run renders it).
  CPPN genomes are rendered again at the other size (a CPPN is
  resolution-free); direct-encoded images are resized (bilinear).
  Returns the median and the counts >= 99 % and >= 99.99 % over the filled
  cells, and each class's score under the other fitness. ``base`` is the
  classifier without the fitness wrapper (as :func:`experiments.core.with_fitness`
  takes it).
  """
  other = core.with_fitness(base, not config.ten_crop).apply_fn
  name = "one_crop" if config.ten_crop else "ten_crop"
  shape = core.input_shape_of(other)
  cells = np.flatnonzero(np.asarray(archive.filled))
  genomes = jax.tree_util.tree_map(lambda leaf: leaf[cells], archive.genomes)
  if config.encoding == "cppn":
    render = core.fool_encoding(config, shape).render
  else:
    own = core.fool_encoding(config, core.input_shape_of(evolver.apply_fn)).render

    def render(genome):
      return jax.image.resize(own(genome), shape, "bilinear")

  def score(params, genome_and_cell):
    genome, cell = genome_and_cell
    return jax.nn.softmax(other(params, render(genome)[None]))[0, cell]

  scores = jax.jit(lambda params, xs: jax.lax.map(
      functools.partial(score, params), xs, batch_size=batch_size))(
          base.params, (genomes, jnp.asarray(cells)))
  p = np.asarray(scores, np.float64)
  evolved = probabilities(archive)[cells]
  return {"fitness": name, "cells": int(len(cells)), "median": float(np.median(p)),
          "cells_99": int(np.sum(p >= 0.99)), "cells_9999": int(np.sum(p >= 0.9999)),
          "median_evolved_fitness": float(np.median(evolved)),
          "per_class": {labels[c]: float(v) for c, v in zip(cells, p)}}


def _plot_per_class(path, fitness, labels, config):
  """Each class's elite confidence, sorted: how many classes evolution fooled, and how far."""
  plt = core.pyplot()
  order = np.argsort(-fitness)
  fig, ax = plt.subplots(figsize=(11, 3.6))
  x = np.arange(len(fitness))
  ax.bar(x, 100 * fitness[order], width=1.0, color="tab:blue")
  ax.axhline(100 * np.median(fitness), color="k", ls="--",
             label=f"median {100 * np.median(fitness):.2f} %")
  ax.axhline(99, color="tab:red", ls=":",
             label=f">= 99 %: {int(np.sum(fitness >= 0.99))} classes")
  ax.set(xlabel=f"class (sorted by confidence; {len(fitness)} classes)",
         ylabel="elite confidence (%)", ylim=(0, 100), xlim=(-0.5, len(fitness) - 0.5),
         title=f"{config.encoding} encoding: best confidence per class "
               f"(>= 99.99 %: {int(np.sum(fitness >= 0.9999))})")
  if len(fitness) <= 20:
    ax.set_xticks(x, [labels[k] for k in order], rotation=45, ha="right", fontsize=7)
  ax.legend(loc="upper right", fontsize=8)
  fig.tight_layout()
  core.save_figure(fig, path)


def _plot_curves(path, history, labels):
  plt = core.pyplot()
  gens = np.array([h["generation"] for h in history])
  best = np.array([h["best"] for h in history])
  fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
  for k in range(best.shape[1]) if best.shape[1] <= 20 else []:
    ax1.plot(gens, best[:, k], label=labels[k], lw=1)
  if best.shape[1] > 20:   # too many classes for a line each: the spread over them
    ax1.fill_between(gens, np.percentile(best, 10, axis=1), np.percentile(best, 90, axis=1),
                     color="tab:blue", alpha=0.3, label="10th-90th percentile")
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
  ax3.plot(gens, np.sum(best >= 0.99, axis=1), "tab:blue", label=">= 99 %")
  ax3.plot(gens, np.sum(best >= 0.9999, axis=1), "tab:red", label=">= 99.99 %")
  most = int(np.sum(best >= 0.99, axis=1).max())
  ax3.set(xlabel="generation", ylabel="classes", ylim=(0, max(most, 5) * 1.1),
          title=f"Classes fooled (of {best.shape[1]})")
  ax3.legend(fontsize=8)
  fig.tight_layout()
  core.save_figure(fig, path)


def main(argv):
  del argv
  run(core.CONFIG.value, core.WORKDIR.value)


if __name__ == "__main__":
  core.cli(main)
