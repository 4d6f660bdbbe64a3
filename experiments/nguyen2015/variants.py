"""The original's encodings and score next to foolingjax's, measured side by side.

  python -m experiments.nguyen2015.variants \
      --config=experiments/nguyen2015/configs/variants.py:mnist --workdir=runs/variants

Every arm (``encoding:variant[+switch=value...]:fitness``) runs ``seeds``
MAP-Elites runs under one vmap from the same key (so arms share their seeds'
random streams where their genomes agree). Each arm is a part of the work
directory (``<arm>/result.json``, ``<arm>/checkpoints``, ``<arm>/metrics.jsonl``,
``<arm>/elites.png``: one row per seed, ``<arm>/tensorboard/``: the metrics as
TensorBoard scalars ``seed<r>/<metric>`` per generation, so ``tensorboard
--logdir=<workdir>`` shows the arms as runs side by side): a rerun skips finished arms and
resumes the unfinished one from its checkpoint. ``results.md`` sets the paper's
claims beside each arm's numbers:

* the generation at which all classes reach >= 99.99 % (per seed);
* classes at >= 99.99 % at generation 50 and the median at generation 200;
* the generation from which every cell is frozen (no offspring can beat it);
* the final elites re-scored by log-odds (how far past "1.0" they are);
* the final elites' regularity: mean neighbouring-pixel difference, left-right
  asymmetry, mean intensity and PNG size (a compressibility measure).
"""

from __future__ import annotations

import io
import pathlib

import jax
import numpy as np

from experiments import core
from foolingjax import evolution, images, zoo
from foolingjax.contract import num_classes_of
from foolingjax.evolution import driver, map_elites

PAPER = ("every class >= 99.99 % within 50 generations; median 99.99 % by generation 200 "
         "(Nguyen et al. 2015, MNIST, both encodings)")


def parse_value(text: str):
  low = text.lower()
  if low in ("true", "false"):
    return low == "true"
  try:
    return float(text) if any(ch in text for ch in ".e") else int(text)
  except ValueError:
    return text


def parse_arm(text: str) -> tuple[str, str, dict, str]:
  """``"cppn:original+coordinates=centred:log_odds"`` -> (encoding, variant, switches, fitness)."""
  fields = text.strip().split(":")
  if len(fields) != 3:
    raise ValueError(f"Bad arm {text!r}. Fix: write encoding:variant[+switch=value...]:fitness, "
                     "e.g. cppn:original:log_odds or direct:original+quantize=false:probability.")
  encoding, variant_text, fitness = fields
  if encoding not in evolution.ENCODINGS:
    raise ValueError(f"Bad arm {text!r}: unknown encoding {encoding!r}. Fix: use one of "
                     f"{', '.join(evolution.ENCODINGS)}.")
  map_elites.check_fitness(fitness)
  variant, *overrides = variant_text.split("+")
  switches = {}
  for item in overrides:
    name, eq, value = item.partition("=")
    if not eq:
      raise ValueError(f"Bad arm {text!r}: switch {item!r} has no value. Fix: name=value.")
    switches[name] = parse_value(value)
  return encoding, variant, switches, fitness


def arm_name(text: str) -> str:
  """A directory name for an arm: ``cppn_original+coordinates-centred_log_odds``."""
  return text.strip().replace(":", "_").replace("=", "-")


def make_encoding(config, encoding: str, variant: str, switches: dict, image_shape):
  options = dict(config.cppn.to_dict()) if encoding == "cppn" else {}
  return evolution.make_encoding(encoding, image_shape, variant=variant, **switches, **options)


def validate(config) -> list[str]:
  arms = core.names(config.arms)
  core.check([
      (bool(arms), "config.arms names no arm"),
      (len(set(arms)) == len(arms), f"config.arms repeats an arm: {config.arms}"),
      (config.seeds >= 1, f"seeds must be >= 1, got {config.seeds}"),
      (config.population >= 1, f"population must be >= 1, got {config.population}"),
      (config.generations >= 1, f"generations must be >= 1, got {config.generations}"),
      (config.log_every >= 1 and config.checkpoint_every % config.log_every == 0,
       f"checkpoint_every ({config.checkpoint_every}) must be a multiple of log_every "
       f"({config.log_every})"),
  ], what="variants")
  core.check_classifiers(config.classifier)
  for arm in arms:
    parse_arm(arm)
  return arms


def png_bytes(image: np.ndarray) -> int:
  """Size of the image as an 8-bit PNG (zlib level 9): a compressibility measure."""
  from PIL import Image
  array = images.to_uint8(image)
  array = array[..., 0] if array.shape[-1] == 1 else array
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG", optimize=True)
  return buffer.tell()


def first_generation(generations: np.ndarray, reached: np.ndarray) -> list[int | None]:
  """Per run, the first generation where ``reached`` ``[G, R]`` holds, or None."""
  return [int(generations[np.argmax(col)]) if col.any() else None for col in reached.T]


def tensorboard_records(history: list[dict]) -> list[dict]:
  """Per-generation records of R runs -> ``{"generation", "seed<r>/<metric>"}``.

  The per-run numbers (``cells_9999``, ``cells_99``, ``cells_frozen``,
  ``mean``, ``median``, one per seed) become one tag per seed; per-cell lists
  (``best``, ``log_odds``) are left out.
  """
  out = []
  for h in history:
    record = {"generation": h["generation"]}
    for key, value in h.items():
      if isinstance(value, list) and value and not isinstance(value[0], list):
        record.update({f"seed{r}/{key}": v for r, v in enumerate(value)})
      elif key != "generation" and not isinstance(value, list):
        record[f"seed0/{key}"] = value
    out.append(record)
  return out


def run_arm(config, arm: str, classifier, image_shape, num_classes, directory: pathlib.Path,
            labels) -> dict:
  encoding_name, variant, switches, fitness = parse_arm(arm)
  encoding = make_encoding(config, encoding_name, variant, switches, image_shape)
  evolver = driver.Evolver(encoding=encoding, apply_fn=classifier.apply_fn,
                           num_cells=num_classes, population=config.population,
                           runs=config.seeds, fitness=fitness)
  def write_tensorboard(archive=None):
    del archive
    core.write_tensorboard(directory, tensorboard_records(
        core.read_jsonl(directory / "metrics.jsonl")), step="generation")

  archive, history = evolver.evolve(
      jax.random.key(config.seed), classifier.params, generations=config.generations,
      directory=directory / "checkpoints", checkpoint_every=config.checkpoint_every,
      log_every=config.log_every, metrics_path=directory / "metrics.jsonl",
      log_prefix=f"[{arm}] ", on_checkpoint=write_tensorboard,
      fingerprint=core.fingerprint("nguyen2015.variants", config, ignore=("arms",),
                                   arm=arm))
  write_tensorboard()
  rendered = np.asarray(evolver.render(archive.genomes))          # [R, K, H, W, C]
  flat = rendered.reshape(-1, *rendered.shape[2:])
  logits = np.asarray(jax.jit(classifier.apply_fn)(classifier.params, flat))
  rescored = np.asarray(map_elites.log_odds(logits)).reshape(config.seeds, num_classes, -1)
  own = rescored[:, np.arange(num_classes), np.arange(num_classes)]  # [R, K]
  probability = np.asarray(map_elites.to_probability(archive.fitness, fitness))
  images.save_grid(directory / "elites.png", flat, labels=labels * config.seeds,
                   confidences=probability.reshape(-1), ncols=num_classes,
                   title=f"{arm}: final elites, one row per seed")
  gens = np.array([h["generation"] for h in history])
  cells = np.array([h["cells_9999"] for h in history]).reshape(len(gens), -1)     # [G, R]
  frozen = np.array([h["cells_frozen"] for h in history]).reshape(len(gens), -1)  # [G, R]
  best = np.array([h["best"] for h in history]).reshape(len(gens), config.seeds, -1)
  at = {int(g): i for i, g in enumerate(gens)}
  all_at = first_generation(gens, cells == num_classes)
  frozen_from = first_generation(gens, frozen == num_classes)
  rows = []
  for r in range(config.seeds):
    rows.append({
        "seed": r,
        "all_9999_at": all_at[r],
        "cells_9999_at_50": int(cells[at[50], r]) if 50 in at else None,
        "median_at_200": float(np.median(best[at[200], r])) if 200 in at else None,
        "worst_final": float(np.min(best[-1, r])),
        "frozen_at": frozen_from[r],
        "final_log_odds_median": float(np.median(own[r])),
        "final_log_odds_min": float(np.min(own[r])),
        "neighbour_difference": float(np.mean(images.neighbour_difference(rendered[r]))),
        "mirror_asymmetry": float(np.mean(images.mirror_asymmetry(rendered[r]))),
        "mean_intensity": float(np.mean(rendered[r])),
        "png_bytes": float(np.mean([png_bytes(im) for im in rendered[r]])),
    })
  return {"arm": arm, "encoding": encoding_name, "variant": variant, "switches": switches,
          "fitness": fitness, "generations": int(np.asarray(archive.generation).reshape(-1)[0]),
          "seeds": rows}


def _list(values, fmt=str) -> str:
  return ", ".join(core.MISSING if v is None else fmt(v) for v in values)


def report(config, arms, results) -> str:
  header = ["arm (encoding:variant:score)", "all classes >= 99.99 % at gen (per seed)",
            "classes >= 99.99 % at gen 50", "median at gen 200 (lowest seed)",
            "every cell frozen from gen", "final log-odds, median (worst cell)"]
  rows = [["paper: " + PAPER, "< 50", "10", "99.99 %", "—", "—"]]
  regularity = [["arm", "neighbour difference", "left-right asymmetry", "mean intensity",
                 "PNG bytes"]]
  for arm in arms:
    seeds = results[arm_name(arm)]["seeds"]
    medians = [s["median_at_200"] for s in seeds if s["median_at_200"] is not None]
    rows.append([
        f"`{arm}`", _list([s["all_9999_at"] for s in seeds]),
        _list([s["cells_9999_at_50"] for s in seeds]),
        core.confidence(min(medians)) if medians else core.MISSING,
        _list([s["frozen_at"] for s in seeds]),
        f"{np.median([s['final_log_odds_median'] for s in seeds]):.1f} "
        f"({min(s['final_log_odds_min'] for s in seeds):.1f})"])
    mean = lambda k, seeds=seeds: float(np.mean([s[k] for s in seeds]))  # noqa: E731
    regularity.append([f"`{arm}`", f"{mean('neighbour_difference'):.3f}",
                       f"{mean('mirror_asymmetry'):.3f}", f"{mean('mean_intensity'):.3f}",
                       f"{mean('png_bytes'):.0f}"])
  return "\n\n".join([
      f"# Variants side by side ({config.classifier}, {config.seeds} seeds, population "
      f"{config.population}, {config.generations} generations)",
      core.markdown_table(header, rows),
      "Regularity of the final elites (mean over seeds and classes; uniform noise: "
      "neighbour difference 0.33, asymmetry 0.33):",
      core.markdown_table(regularity[0], regularity[1:]),
      "A '—' in 'all classes' means not reached within the run; in 'frozen', never frozen. "
      "Log-odds log(p / (1 - p)) of 9.2 is 99.99 %; float32 probabilities round to 1.0 "
      "above about 16.6.",
  ]) + "\n"


@core.reported
def run(config, workdir) -> dict:
  """Runs (or resumes) every arm; returns ``{arm: result}`` and writes results.md."""
  arms = validate(config)
  classifier = zoo.resolve(config.classifier)
  image_shape = tuple(classifier.apply_fn.input_shape)
  num_classes = num_classes_of(classifier.apply_fn, classifier.params, image_shape)
  for arm in arms:  # every arm builds: a bad switch fails before any work
    encoding, variant, switches, _ = parse_arm(arm)
    make_encoding(config, encoding, variant, switches, image_shape)
  workdir, _ = core.prepare_workdir(workdir, config, ignore=("arms",))
  labels = [str(k) for k in range(num_classes)]
  runners = {arm_name(arm): (lambda arm=arm: run_arm(
      config, arm, classifier, image_shape, num_classes, workdir / arm_name(arm), labels))
      for arm in arms}
  results = core.run_parts(workdir, list(runners), runners)
  core.write_text(workdir / "results.md", report(config, arms, results))
  print((workdir / "results.md").read_text())
  return results


def main(argv):
  del argv
  run(core.CONFIG.value, core.WORKDIR.value)


if __name__ == "__main__":
  core.cli(main)
