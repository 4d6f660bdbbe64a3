"""The fooling paper's follow-up studies (Nguyen, Yosinski & Clune 2015).

  python -m experiments.nguyen2015.followups --config=experiments/nguyen2015/configs/followups.py:all \
      --workdir=runs/nguyen_all

Four parts (and a fifth that takes a fool run), each in its own subdirectory
of the work directory, each writing a ``result.json`` (rerunning the command
skips finished parts and resumes unfinished ones from their checkpoints):

* ``gradient/``: gradient-ascent fooling images for every class
  (``gradient_vs_evolved.png`` puts them next to the evolved elites).
* ``transfer/``: images evolved on DNN_A scored by DNN_B (Table S1), and across
  architectures; ``transfer.png`` plots B's confidence against A's.
* ``retrain/``: the n+1 fooling-class loop; ``metrics.jsonl`` holds one line per
  iteration, ``retrain.png`` plots evolution's median confidence and the test
  accuracy against the iteration.
* ``ablation/``: repetition ablation on CPPN elites (``ablation.png``,
  ``ablation_examples.png``).
* ``imagenet_retrain/`` (only when named in ``parts``): the n+1 retraining on a
  finished fool run's net, its output layer only: output K+1 is trained on the
  run's elites against crops of the offline demo photos, the K outputs stay
  frozen, then MAP-Elites runs against that DNN_2 with the run's encoding,
  population, fitness and key (``curves.png`` beside the run's own curve,
  ``dnn2_best.png``, ``fooling_class.npz``).

TensorBoard scalars land in ``tensorboard/``, one event file per part:
``gradient/median_confidence`` (and ``gradient/original/median_confidence``)
per ascent step, ``transfer/<source> -> <target>/<encoding>/<statistic>`` at
step 0, ``retrain/<metric>`` per iteration (``retrain/control/<metric>`` at step
0) and ``ablation/confidence_median`` (and ``ablation/control_confidence_median``)
per ablation step.

MAP-Elites source runs shared by the parts live in ``evolve/``: one
directory per (classifier, encoding) with the checkpointed archive stack of
``config.evolve.runs`` independent runs, evolved together under one ``vmap``
(one compilation for all runs) by :class:`foolingjax.evolution.driver.Evolver`.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import core, tensorboard
from experiments.nguyen2015.configs import followups as followups_config
from foolingjax import (data, defenses, evolution, imagenet, images, motifs, training,
                        transfer, zoo)
from foolingjax.attacks import fooling
from foolingjax.contract import num_classes_of
from foolingjax.evolution import driver, map_elites

PARTS = followups_config.PARTS
NUM_REAL = 10  # MNIST digits; the retrain loop's fooling class is index 10


def parts_of(config) -> list[str]:
  return core.parse_parts(config.parts, followups_config.ALL_PARTS)


def validate(config) -> list[str]:
  """Checks every setting before anything is written; returns the parts to run."""
  parts = parts_of(config)
  e, r = config.evolve, config.retrain
  core.check([
      (e.population >= 1 and e.runs >= 1 and e.generations >= 0,
       "evolve.population and evolve.runs must be >= 1, evolve.generations >= 0"),
      (e.log_every >= 1 and e.checkpoint_every >= 1,
       "evolve.log_every and evolve.checkpoint_every must be >= 1"),
      (r.population >= 1 and r.runs >= 1 and r.iterations >= 1,
       "retrain.population, retrain.runs and retrain.iterations must be >= 1"),
      (r.probe_generations >= 0 and r.probe_population >= 1 and r.probe_runs >= 1,
       "retrain.probe_generations must be >= 0 (0: no probe), retrain.probe_population "
       "and retrain.probe_runs >= 1"),
      (r.initial in ("zoo", "train"), f"retrain.initial must be zoo or train, got "
       f"{r.initial!r}"),
      (r.fooling_class in FOOLING_CLASS, f"retrain.fooling_class must be one of "
       f"{FOOLING_CLASS}, got {r.fooling_class!r}"),
      (config.gradient.mean_image in MEAN_IMAGES,
       f"gradient.mean_image must be one of {MEAN_IMAGES}, got {config.gradient.mean_image!r}"),
      (config.gradient.starts_per_class >= 1, "gradient.starts_per_class must be >= 1"),
      (config.ablation.batch_size >= 0, "ablation.batch_size must be >= 0 (0: all at once)"),
      (config.imagenet_retrain.crops_per_photo >= 1 and config.imagenet_retrain.steps >= 1
       and config.imagenet_retrain.batch_size >= 1 and config.imagenet_retrain.generations >= 0,
       "imagenet_retrain.crops_per_photo, .steps and .batch_size must be >= 1, "
       ".generations >= 0 (0: the fool run's)"),
      (0.0 < config.imagenet_retrain.min_scale <= 1.0,
       "imagenet_retrain.min_scale must be in (0, 1]"),
      (0.0 <= config.imagenet_retrain.holdout_share < 1.0,
       "imagenet_retrain.holdout_share must be in [0, 1)"),
      (all(n in imagenet.DEMO_PHOTOS for n in core.names(config.imagenet_retrain.real_photos)
           + core.names(config.imagenet_retrain.heldout_photos))
       and core.names(config.imagenet_retrain.real_photos),
       f"imagenet_retrain.real_photos (not empty) and .heldout_photos must name photos of "
       f"{', '.join(imagenet.DEMO_PHOTOS)}"),
      ("imagenet_retrain" not in parts or bool(core.names(config.imagenet_retrain.fooling_from)),
       "imagenet_retrain.fooling_from must name the work directory of a finished "
       "nguyen2015.fool run (e.g. runs/imagenet_study/cppn)"),
      (all(enc in evolution.ENCODINGS for enc in
           core.names(config.transfer.encodings) + [r.encoding, config.ablation.encoding]),
       f"encodings must be among {evolution.ENCODINGS}"),
  ], what="followups")
  t = config.transfer
  core.check_classifiers(*[spec for spec in (
      config.gradient.classifier, t.dnn_a, t.dnn_b, t.cross, config.ablation.classifier,
      config.gradient.other) if spec])
  return parts


@core.reported
def run(config, workdir) -> dict:
  """Runs (or resumes) the selected parts; returns the summary in summary.json."""
  parts = validate(config)
  workdir, _ = core.prepare_workdir(workdir, config, ignore=("parts",))
  summary_path = workdir / "summary.json"
  summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
  sources = Sources(config, workdir)  # one cache (and one compile) for all parts
  runners = {"gradient": run_gradient, "transfer": run_transfer, "retrain": run_retrain,
             "ablation": run_ablation, "imagenet_retrain": run_imagenet_retrain}
  summary.update(core.run_parts(
      workdir, parts, {p: (lambda p=p: runners[p](config, workdir, sources))
                       for p in parts}))
  core.write_json(summary_path, summary)
  core.write_text(workdir / "tables.md", markdown_tables(summary))
  return summary


def markdown_tables(summary: dict) -> str:
  """The README tables of whichever parts ``summary`` holds."""
  out = []
  if "gradient" in summary:
    out += _gradient_tables(summary["gradient"])
  if "transfer" in summary:
    rows = summary["transfer"]["rows"]
    out += [core.markdown_table(
        ["evolved on (A)", "scored by (B)", "encoding", "images", "A >= 99.99 %",
         "same top-1", "both >= 99.99 %", "B less confident", "median A", "median B"],
        [[r["source"], r["target"], r["encoding"], str(r["count"]), core.pct(r["a_above"]),
          core.pct(r["same_top1"]), core.pct(r["both_above"]),
          core.pct(r["b_less_confident"]), core.confidence(r["median_conf_a"]),
          core.confidence(r["median_conf_b"])] for r in rows]), ""]
    if all("a_above_99" in r for r in rows):
      out += [core.markdown_table(
          ["evolved on (A)", "scored by (B)", "encoding", "A top-1 = target",
           "B top-1 = target", "A >= 99 %", "both >= 99 %", "rank correlation A, B"],
          [[r["source"], r["target"], r["encoding"], core.pct(r["a_top1_is_target"]),
            core.pct(r["b_top1_is_target"]), core.pct(r["a_above_99"]),
            core.pct(r["both_above_99"]), core.number(r["spearman_a_b"], 2)] for r in rows]),
          ""]
  if "retrain" in summary:
    rt = summary["retrain"]
    out += [("| iteration | outputs | class n+1: images (share of the training set) | "
             "test accuracy | median best confidence | >= 99.99 % | >= 99 % |"),
            "|---|---|---|---|---|---|---|"]
    for h in rt["iterations"]:
      fooling = (f"{h['fooling_class_images']} ({core.pct(h['fooling_class_share'])})"
                 if h.get("fooling_class_images") else "-")
      out.append(f"| {h['iteration']} | {h['num_outputs']} | {fooling} | "
                 f"{core.pct(h['test_accuracy'], 2)} | "
                 f"{core.confidence(h['median_confidence'])} | {core.pct(h['share_9999'])} | "
                 f"{core.pct(h['share_99'])} |")
    if rt.get("control"):
      c = rt["control"]
      out.append(f"| control (same budget, 10 classes) | 10 | - | "
                 f"{core.pct(c['test_accuracy'], 2)} | "
                 f"{core.confidence(c['median_confidence'])} | {core.pct(c['share_9999'])} | "
                 f"{core.pct(c['share_99']) if 'share_99' in c else ''} |")
    out.append("")
    if rt.get("probe"):
      sc = rt["scale"]
      out += [f"Probe: {sc['probe_runs']} runs x {sc['probe_population']} x "
              f"{sc['probe_generations']} generations against each net.", "",
              "| net | median best confidence | >= 99.99 % | >= 99 % |", "|---|---|---|---|"]
      for name, p in rt["probe"].items():
        out.append(f"| {name} | {core.confidence(p['median_confidence'])} | "
                   f"{core.pct(p['share_9999'])} | {core.pct(p['share_99'])} |")
      out.append("")
  if "ablation" in summary:
    a = summary["ablation"]
    q = a["confidence_quartiles_per_step"]
    steps = len(q) - 1
    out += [(f"{a['with_repeats']} of {a['images']} {a.get('elites', 'CPPN elites')} have "
             "repeated motifs "
             f"(median {a['median_repeats']} repeats, {a['median_components']} "
             "components)."),
            "", "| repeats removed | " + " | ".join(
                f"{100 * s // steps} %" for s in range(steps + 1)) + " |",
            "|---" * (steps + 2) + "|"]
    for name, i in (("confidence, 1st quartile", 0), ("median", 1), ("3rd quartile", 2)):
      out.append(f"| {name} | " + " | ".join(core.confidence(x[i]) if x else "—" for x in q) + " |")
    d = a["drop_quartiles"] or [None] * 3
    out += ["", (f"Confidence drop with all repeats removed (percentage points): quartiles "
            f"{', '.join(core.pct(x, 2) for x in d)}; dropped for {core.pct(a['share_dropped'])} "
            f"of the images (by > 1 point for {core.pct(a['share_dropped_over_1pct'])}); "
            f">= 99.99 % before {core.pct(a['share_9999_before'])}, after "
            f"{core.pct(a['share_9999_after'])}; top-1 label lost for "
            f"{core.pct(a['share_top1_lost'])}."), ""]
    if a.get("control_drop_quartiles") is not None:
      cd = a["control_drop_quartiles"]
      out += [(f"Control, the same area (median {core.number(a['median_removed_area'], 0)} "
               "pixels) of non-repeated foreground removed from the same images "
               f"(area matched for {core.pct(a['control_area_matched'])} of them): drop "
               f"quartiles {', '.join(core.pct(x, 2) for x in cd)}; by > 1 point for "
               f"{core.pct(a['control_share_dropped_over_1pct'])}; >= 99.99 % after "
               f"{core.pct(a['control_share_9999_after'])}"
               + (f"; top-1 label lost for {core.pct(a['control_share_top1_lost'])}; removing "
                  f"the repeats cost more than the control for "
                  f"{core.pct(a['share_repeats_drop_more'])} of the images (median paired "
                  f"difference {core.pct(a['median_drop_difference'], 2)})"
                  if a.get("share_repeats_drop_more") is not None else "") + "."), ""]
  if "imagenet_retrain" in summary:
    out += _imagenet_retrain_tables(summary["imagenet_retrain"])
  return "\n".join(out)


def _imagenet_retrain_tables(r: dict) -> list[str]:
  f, g, k = r["fooling_class"], r["generations"], r["num_classes"]
  rows = [[f"DNN_1 ({r['classifier']}, {k} outputs)", "88.1 %",
           core.confidence(r["dnn1"]["median"])],
          [f"DNN_2 (+ class {k + 1})", "11.7 %", core.confidence(r["dnn2"]["median"])]]
  out = [core.markdown_table(
      [f"MAP-Elites against ({r['encoding']}, {r['population']} x {g})", "paper: median",
       "median best confidence", "classes >= 99 %", "classes >= 99.99 %", "classes >= 50 %"],
      [row + [str(r[n]["classes_99"]), str(r[n]["classes_9999"]), str(r[n]["classes_50"])]
       for row, n in zip(rows, ("dnn1", "dnn2"))]), ""]
  on1 = r["dnn2_elites_on_dnn1"]
  out += [(f"Class {k + 1}: {f['fooling_images']} elites of {', '.join(r['source_runs'])} "
           f"against {f['training_crops']} crops of {len(f['training_photos'])} photos. "
           f"Fooling images classified as it: {core.pct(f['fooling_classified_as_fooling'])} "
           f"(held-out {core.pct(f['heldout_fooling_classified_as_fooling'])} of "
           f"{f['heldout_fooling_images']} under a fit without them); training crops: "
           f"{core.pct(f['training_crops_classified_as_fooling'])}; {f['heldout_crops']} crops "
           f"of held-out photos: {core.pct(f['heldout_crops_classified_as_fooling'])} "
           f"(top-1 kept for {core.pct(f['heldout_crops_top1_kept'])}). DNN_1's elites: "
           f"median {core.confidence(f['dnn1_elites_median_on_dnn1'])} on DNN_1, "
           f"{core.confidence(f['dnn1_elites_median_on_dnn2'])} on DNN_2. DNN_2's elites on "
           f"DNN_1: median {core.confidence(on1['median'])}, {on1['classes_99']} classes "
           f">= 99 %; their median class-{k + 1} share on DNN_2 "
           f"{core.confidence(r['dnn2_elites_median_fooling_share'])}."), ""]
  return out


def _gradient_tables(g: dict) -> list[str]:
  ev = g["evolved"]
  o = g.get("original")
  classes = g.get("classes") or [str(k) for k in range(NUM_REAL)]
  out = []
  if len(classes) <= NUM_REAL:   # one column per class
    out += [(f"Gradient ascent ({g['images']} images, {g['steps']} steps) on "
             f"{g['classifier']}, median confidence per class (evolved: median over the "
             "runs' elites):"), "",
            "| class | " + " | ".join(classes) + " | all | >= 99.99 % |",
            "|---" * (len(classes) + 3) + "|"]
    rows = [("gradient (foolingjax)", g)] + ([("gradient (original's rule)", o)] if o else [])
    rows += [(f"evolved {enc}", ev[enc]) for enc in ("direct", "cppn") if enc in ev]
    for name, r in rows:
      out.append(f"| {name} | " + " | ".join(core.confidence(p) for p in r["per_class_median"])
                 + f" | {core.confidence(r['median_confidence'])} | "
                 f"{core.pct(r['share_9999'])} |")
  else:                          # one row per class
    columns = [("foolingjax's ascent", g)] + ([("the original's ascent", o)] if o else [])
    columns += [(f"evolved {enc}", ev[enc]) for enc in ("cppn", "direct") if enc in ev]
    out += [(f"Gradient ascent on {g['classifier']} ({g['images']} images; foolingjax "
             f"{g['steps']} steps" + (f", the original's {o['steps']}" if o else "")
             + "): confidence per class, best of the starts; evolved: the class's elite."), "",
            "| class | " + " | ".join(name for name, _ in columns) + " |",
            "|---" * (len(columns) + 1) + "|"]
    for i, label in enumerate(classes):
      out.append(f"| {label} | " + " | ".join(core.confidence(r["per_class_median"][i])
                                              for _, r in columns) + " |")
    out.append("| **median** | " + " | ".join(core.confidence(r["median_confidence"])
                                              for _, r in columns) + " |")
    out.append("| **>= 99.99 %** | " + " | ".join(core.pct(r["share_9999"])
                                                   for _, r in columns) + " |")
  out.append("")
  if g.get("other"):
    out += [(f"The gradient images on {g['other']}: median "
             f"{core.confidence(g['median_confidence_other_seed'])}, >= 99.99 %: "
             f"{core.pct(g['share_9999_other_seed'])}."), ""]
  if o:
    other = (f"; on {g['other']} median {core.confidence(o['median_confidence_other_seed'])}, "
             f">= 99.99 %: {core.pct(o['share_9999_other_seed'])}" if g.get("other") else "")
    out += [(f"The original's ascent ({o['steps']} steps): >= 99 % for "
             f"{core.pct(o['share_99'])} of the images, after a median of "
             f"{core.number(o['median_steps_to_99'], 0)} steps; >= 99.99 % for "
             f"{core.pct(o['share_9999'])}"
             + (f" (median {core.number(o['median_steps_to_9999'], 0)} steps)"
                if o.get("median_steps_to_9999") else "")
             + f"{other}; mean |x - mean image| "
             f"{core.number(o['mean_abs_from_mean_image'], 3)}."), ""]
  return out


# --------------------------------------------------------------------------
# MAP-Elites: several independent runs under one vmap, checkpointed in chunks


def make_encoding(config, encoding: str, image_shape):
  """The encoding the source runs use (the CPPN capacity is pinned in this config)."""
  options = {} if encoding == "direct" else config.cppn.to_dict()
  return evolution.make_encoding(encoding, image_shape, **options)


def confidence_stats(confidence) -> dict:
  """``median_confidence``, ``share_9999`` and ``share_99`` of a set of confidences."""
  confidence = np.asarray(confidence).reshape(-1)
  return {"median_confidence": float(np.median(confidence)),
          "share_9999": float(np.mean(confidence >= 0.9999)),
          "share_99": float(np.mean(confidence >= 0.99))}


def real_class_softmax(apply_fn, params):
  """Scores the real classes only: an n+1-class net's fooling column is no cell.

  The follow-ups keep the original's probability score (their README tables
  were measured with it); the fool experiment's log-odds is not used here yet.
  """
  return lambda x: jax.nn.softmax(apply_fn(params, x), axis=-1)[:, :NUM_REAL]


def make_evolver(config, encoding, apply_fn, *, population: int, runs: int):
  return driver.Evolver(encoding=encoding, apply_fn=apply_fn, num_cells=NUM_REAL,
                        population=population, runs=runs, fitness="probability",
                        score_transform=real_class_softmax)


def source_name(spec: str, encoding: str) -> str:
  """The directory (and random stream) of a source run: ``lenet_mnist-1_cppn``."""
  kind, name, seed = zoo.parse_spec(spec)
  stem = f"{name}-{seed}" if kind in ("preset", "pretrained", "init") else name
  return f"{stem.replace(':', '.')}_{encoding}"


class Sources:
  """The shared MAP-Elites source runs, evolved on demand and cached."""

  def __init__(self, config, workdir):
    self.config = config
    self.dir = workdir / "evolve"
    self._cache = {}

  def elites(self, classifier: str, encoding: str):
    """``(images [R*10, H, W, C], fitness [R*10], target classes [R*10])``."""
    name = source_name(classifier, encoding)
    if name not in self._cache:
      e = self.config.evolve
      clf = zoo.resolve(classifier)
      enc = make_encoding(self.config, encoding, clf.apply_fn.input_shape)
      evolver = make_evolver(self.config, enc, clf.apply_fn, population=e.population,
                             runs=e.runs)
      archives, _ = evolver.evolve(
          core.rng(self.config.seed, name), clf.params, generations=e.generations,
          directory=self.dir / name, checkpoint_every=e.checkpoint_every,
          log_every=e.log_every, log_prefix=f"[{name}] ",
          fingerprint=core.fingerprint("nguyen2015.followups", self.config, ignore=("parts",)))
      self._cache[name] = evolver.elites(archives)
    return self._cache[name]


# --------------------------------------------------------------------------
# 1. Gradient-ascent fooling images

MEAN_IMAGES = ("mnist_train", "imagenet_mean_colour")
# The average colour of the original's caffe/python/caffe/imagenet/ilsvrc_2012_mean.npy
# (BGR 104.01, 116.67, 122.68 over its 256x256), in RGB. The original starts from that
# image's 227x227 centre crop, whose average is BGR 102.98, 115.95, 122.77 and whose
# pixels lie within 15 grey levels of it (standard deviation 3.7-6.4 per channel).
IMAGENET_MEAN_RGB = (122.68 / 255.0, 116.67 / 255.0, 104.01 / 255.0)


def mean_image(name: str, shape) -> np.ndarray:
  """The original's start and decay centre, ``[H, W, C]`` in [0, 1]."""
  if name == "mnist_train":
    mean = data.to_float(data.load("mnist", "train")[0]).mean(axis=0)
  else:
    mean = np.broadcast_to(np.asarray(IMAGENET_MEAN_RGB, np.float32), shape)
  if tuple(mean.shape) != tuple(shape):
    raise ValueError(f"gradient.mean_image={name!r} is {mean.shape}, but the classifier takes "
                     f"{tuple(shape)} images. Fix: use --config.gradient.mean_image="
                     f"{'imagenet_mean_colour' if shape[-1] == 3 else 'mnist_train'}.")
  return np.asarray(mean, np.float32)


def _short_label(label: str, width: int = 14) -> str:
  label = label.split(",")[0]
  return label if len(label) <= width else label[:width - 1] + "."


def _gradient_original(config, clf, other, targets, classes, labels, out) -> dict:
  """The original's ascent on the same classes and nets (see the config's comment)."""
  g = config.gradient
  mean = mean_image(g.mean_image, core.input_shape_of(clf.apply_fn))

  def ascend(key, params, targets):
    start = fooling.mean_plus_noise(key, mean, targets.shape[0])
    return fooling.gradient_ascent_fooling(
        None, clf.apply_fn, params, targets, steps=g.original_steps, objective="softmax",
        step_rule="progress", early_prog=g.original_early_prog,
        late_prog_mult=g.original_late_prog_mult,
        max_lr=g.original_max_lr / 255.0 ** 2,   # 0-255 pixel units -> [0, 1]
        l2_decay=g.original_decay, decay_center=jnp.asarray(mean), init_images=start,
        keep_best=True)

  key = jax.random.fold_in(jax.random.key(config.seed), 2)
  print(f"[gradient] the original's ascent: {len(targets)} images x {g.original_steps} steps "
        "in one jitted scan (no progress lines until it ends) ...", flush=True)
  t0, c0 = time.perf_counter(), time.process_time()
  fooled, metrics = jax.jit(ascend)(key, clf.params, targets)
  confidence = np.asarray(metrics["final_confidence"])
  seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
  print(f"[gradient] the original's ascent: median {np.median(confidence):.4f} after "
        f"{seconds:.0f} s ({cpu:.0f} s CPU)", flush=True)
  trace = np.asarray(metrics["confidence"])                             # [steps, B]
  out_scalars = [{"step": s + 1, "gradient/original/median_confidence": float(v)}
                 for s, v in enumerate(np.median(trace, axis=1))]

  def steps_to(level):
    reached = np.where((trace >= level).any(0), np.argmax(trace >= level, axis=0) + 1, -1)
    return float(np.median(reached[reached > 0])) if (reached > 0).any() else None

  fooled = np.asarray(fooled)
  np.savez(out / "gradient_images_original.npz", images=fooled,
           targets=np.asarray(targets), confidence=confidence)
  conf_b = None
  if other is not None:
    probs_b = _probs(other, fooled)
    conf_b = probs_b[np.arange(len(confidence)), np.asarray(targets)]
  per_class = confidence.reshape(len(classes), g.starts_per_class)
  save_original_grids(out, fooled, mean, confidence, classes, labels, g)
  core.write_tensorboard(out.parent, out_scalars, step="step", name="gradient_original")
  return {
      "steps": g.original_steps, "ascent_seconds": seconds, "ascent_cpu_seconds": cpu,
      "decay": g.original_decay, "early_prog": g.original_early_prog,
      "late_prog_mult": g.original_late_prog_mult, "max_lr": g.original_max_lr,
      "mean_image": g.mean_image,
      **confidence_stats(confidence),
      "per_class_median": np.median(per_class, axis=1).tolist(),
      "median_steps_to_99": steps_to(0.99), "median_steps_to_9999": steps_to(0.9999),
      "median_confidence_other_seed": None if conf_b is None else float(np.median(conf_b)),
      "share_9999_other_seed": None if conf_b is None else float(np.mean(conf_b >= 0.9999)),
      "mean_abs_from_mean_image": float(np.abs(fooled - mean[None]).mean()),
  }


def norm01c(x: np.ndarray) -> np.ndarray:
  """The original's ``norm01c(x, 0)`` per image: 0 -> 0.5, scaled by the largest |x|."""
  scale = 2.0 * np.abs(x).reshape(len(x), -1).max(axis=1)
  return 0.5 + x / np.maximum(scale, 1e-12).reshape((-1,) + (1,) * (x.ndim - 1))


def best_start_per_class(confidence: np.ndarray, num_classes: int, starts: int) -> np.ndarray:
  """Index of each class's most confident start (images are ``starts`` per class in a row)."""
  per_class = confidence.reshape(num_classes, starts)
  return np.argmax(per_class, axis=1) + np.arange(num_classes) * starts


def save_original_grids(out, fooled, mean, confidence, classes, labels, g) -> None:
  """The best image per class as it is, and its difference from the mean image
  contrast-stretched around 0 (the original's ``*_X.jpg`` view of ``X``; it also
  saves ``X + mean`` min-max stretched, ``*_Xpm.jpg``)."""
  best_idx = best_start_per_class(confidence, len(classes), g.starts_per_class)
  titles = [f"{_short_label(labels[k])}\n{images.format_confidence(float(p))}"
            for k, p in zip(classes, confidence[best_idx])]
  what = (f"The original's ascent ({g.original_steps} steps, progress rule, decay "
          f"{g.original_decay} toward the mean image)")
  images.save_grid(out / "gradient_original.png", fooled[best_idx], titles=titles,
                   ncols=min(len(classes), 10), title=f"{what}: best per class")
  images.save_grid(out / "gradient_original_stretched.png",
                   norm01c(fooled[best_idx] - mean[None]), titles=titles,
                   ncols=min(len(classes), 10),
                   title=f"{what}: image - mean, stretched around 0 as the original saves it")


def _evolved_rows(config, sources: Sources, classes, shape):
  """Per evolved source: ``(name, best image per class [n, H, W, C], its confidence [n],
  summary)``: the elites of the fool runs in ``gradient.evolved_from``, or of this
  config's own sources (the best of their runs per class)."""
  g = config.gradient
  rows = []
  if g.evolved_from:
    for directory in core.names(g.evolved_from):
      run = core.load_fool_run(directory)
      if run.config.classifier != g.classifier:
        raise ValueError(f"gradient.evolved_from run {directory} evolved against "
                         f"{run.config.classifier!r}, not gradient.classifier "
                         f"{g.classifier!r}. Fix: give runs on the same classifier.")
      imgs, prob, cells = run.elites()
      where = {int(c): i for i, c in enumerate(cells)}
      missing = [k for k in classes if k not in where]
      if missing:
        raise ValueError(f"{directory} has no elite for classes {missing}. Fix: choose "
                         "gradient.classes among its filled cells.")
      pick = np.array([where[k] for k in classes])
      best = imgs[pick]
      if best.shape[1:] != tuple(shape):   # a 10-crop run renders at 256
        best = np.asarray(jax.image.resize(best, (len(pick), *shape), "bilinear"))
      rows.append((run.config.encoding, best, prob[pick], {
          "run": str(directory), "generations": int(run.archive.generation),
          "median_confidence": float(np.median(prob[pick])),
          "median_all_cells": float(np.median(prob)),
          "share_9999": float(np.mean(prob[pick] >= 0.9999)),
          "per_class_median": prob[pick].tolist()}))
    return rows
  for encoding in ("direct", "cppn"):
    imgs, fit, _ = sources.elites(g.classifier, encoding)
    fit = fit.reshape(-1, NUM_REAL)[:, classes]
    run_best = np.argmax(fit, axis=0) * NUM_REAL + np.asarray(classes)
    rows.append((encoding, imgs[run_best], fit.max(axis=0), {
        "median_confidence": float(np.median(fit)),
        "share_9999": float(np.mean(fit >= 0.9999)),
        "per_class_median": np.median(fit, axis=0).tolist()}))
  return rows


def run_gradient(config, workdir, sources: Sources) -> dict:
  g = config.gradient
  out = workdir / "gradient"
  clf = zoo.resolve(g.classifier)
  shape = core.input_shape_of(clf.apply_fn)
  labels = core.class_labels(num_classes_of(clf.apply_fn, clf.params, shape))
  classes = (core.parse_classes(g.classes, labels, setting="gradient.classes")
             if g.classes.strip() else list(range(len(labels))))
  targets = jnp.repeat(jnp.asarray(classes), g.starts_per_class)

  def ascend(key, params, targets):
    return fooling.gradient_ascent_fooling(
        key, clf.apply_fn, params, targets, steps=g.steps, step_size=g.step_size,
        objective=g.objective, l2_decay=g.l2_decay, blur_every=g.blur_every,
        blur_sigma=g.blur_sigma)

  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  print(f"[gradient] foolingjax's ascent: {len(targets)} images x {g.steps} steps in one "
        "jitted scan (no progress lines until it ends) ...", flush=True)
  t0, c0 = time.perf_counter(), time.process_time()
  fooled, metrics = jax.jit(ascend)(key, clf.params, targets)
  confidence = np.asarray(metrics["final_confidence"])
  seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
  print(f"[gradient] foolingjax's ascent: median {np.median(confidence):.4f} after "
        f"{seconds:.0f} s ({cpu:.0f} s CPU)", flush=True)
  core.write_tensorboard(workdir, [
      {"step": s + 1, "gradient/median_confidence": float(v)}
      for s, v in enumerate(np.median(np.asarray(metrics["confidence"]), axis=1))],
      step="step", name="gradient")
  fooled = np.asarray(fooled)
  out.mkdir(parents=True, exist_ok=True)
  np.savez(out / "gradient_images.npz", images=fooled, targets=np.asarray(targets),
           confidence=confidence)
  # The same images through DNN_B (another seed): do gradient fooling images transfer?
  other = zoo.resolve(g.other) if g.other else None
  conf_b = None
  if other is not None:
    probs_b = _probs(other, fooled)
    conf_b = probs_b[np.arange(len(confidence)), np.asarray(targets)]

  n = len(classes)
  per_class = confidence.reshape(n, g.starts_per_class)
  best_idx = best_start_per_class(confidence, n, g.starts_per_class)
  rows, titles = [fooled[best_idx]], [f"grad {_short_label(labels[k])}\n" for k in classes]
  confs = [confidence[best_idx]]
  evolved = {}
  for name, best, prob, summary in _evolved_rows(config, sources, classes, shape):
    rows.append(best)
    confs.append(prob)
    titles += [f"{name} {_short_label(labels[k])}\n" for k in classes]
    evolved[name] = summary
  all_conf = np.concatenate(confs)
  titles = [t + images.format_confidence(float(p)) for t, p in zip(titles, all_conf)]
  images.save_grid(out / "gradient_vs_evolved.png", np.concatenate(rows), titles=titles,
                   ncols=n, title=f"Best of {g.starts_per_class} gradient ascents "
                   f"({g.steps} steps) vs best evolved elite, per class")
  original = (_gradient_original(config, clf, other, targets, classes, labels, out)
              if g.original_steps else None)
  return {
      "original": original,
      "classifier": _display(g.classifier), "other": _display(g.other) if g.other else None,
      "classes": [labels[k] for k in classes],
      "images": len(confidence), "steps": g.steps, "ascent_seconds": seconds,
      "ascent_cpu_seconds": cpu,
      **confidence_stats(confidence),
      "per_class_median": np.median(per_class, axis=1).tolist(),
      "per_class_min": per_class.min(axis=1).tolist(),
      "median_confidence_other_seed": None if conf_b is None else float(np.median(conf_b)),
      "share_9999_other_seed": None if conf_b is None else float(np.mean(conf_b >= 0.9999)),
      "evolved": evolved,
  }


# --------------------------------------------------------------------------
# 2. Transfer


def transfer_pairs(config) -> list[tuple[str, str, str]]:
  """``(evolved on, scored by, encoding)``: A -> B, A -> cross, cross -> A per encoding."""
  t = config.transfer
  pairs = []
  for encoding in core.names(t.encodings):
    pairs += [(t.dnn_a, t.dnn_b, encoding)]
    if t.cross:
      pairs += [(t.dnn_a, t.cross, encoding), (t.cross, t.dnn_a, encoding)]
  return pairs


def _probs(clf, imgs, batch: int = 50) -> np.ndarray:
  """Softmax of ``clf`` on float images, resized (bilinear) to its input size when they
  differ, ``batch`` images at a time (``lax.map``: one compiled call)."""
  shape = core.input_shape_of(clf.apply_fn)

  def one(params, x):
    if x.shape != shape:
      x = jax.image.resize(x, shape, "bilinear")
    return jax.nn.softmax(clf.apply_fn(params, x[None]), axis=-1)[0]

  fn = jax.jit(lambda params, xs: jax.lax.map(functools.partial(one, params), xs,
                                              batch_size=batch))
  return np.asarray(fn(clf.params, jnp.asarray(imgs)))


def _transfer_sources(config, sources: Sources):
  """``(A's name, A under its fitness, B's spec, encoding, images, target cells)`` per row:
  the fool runs of ``transfer.from_runs`` scored by dnn_b (and cross), or this config's
  own sources on the pairs of :func:`transfer_pairs`."""
  t = config.transfer
  if t.from_runs:
    for directory in core.names(t.from_runs):
      run = core.load_fool_run(directory)
      imgs, _, cells = run.elites()
      for name_b in [t.dnn_b] + ([t.cross] if t.cross else []):
        yield (run.config.classifier, run.classifier, name_b, run.config.encoding, imgs,
               cells)
    return
  for name_a, name_b, encoding in transfer_pairs(config):
    imgs, _, targets = sources.elites(name_a, encoding)
    yield name_a, zoo.resolve(name_a), name_b, encoding, imgs, targets


def run_transfer(config, workdir, sources: Sources) -> dict:
  t = config.transfer
  out = workdir / "transfer"
  out.mkdir(parents=True, exist_ok=True)
  rows, scatter = [], []
  total = (len(core.names(t.from_runs)) * (2 if t.cross else 1) if t.from_runs
           else len(transfer_pairs(config)))
  bar = core.Progress(total, "[transfer]", unit="pairs")
  t0, c0 = time.perf_counter(), time.process_time()
  for name_a, clf_a, name_b, encoding, imgs, targets in _transfer_sources(config, sources):
    clf_b = zoo.resolve(name_b)
    probs_a = _probs(clf_a, imgs)
    probs_b = _probs(clf_b, imgs)
    targets = np.asarray(targets)
    stats = jax.device_get(transfer.transfer_statistics(
        jnp.asarray(probs_a), jnp.asarray(probs_b), jnp.asarray(targets)))
    row = {"source": _display(name_a), "target": _display(name_b),
           "encoding": encoding}
    # NaN (no image above the threshold on A) is written as null: result.json stays JSON.
    row.update({k: (int(v) if k == "count" else None if np.isnan(v) else float(v))
                for k, v in stats.items()})
    idx = np.arange(len(targets))
    conf_a, conf_b = probs_a[idx, targets], probs_b[idx, targets]
    row.update({"a_above_99": float(np.mean(conf_a >= 0.99)),
                "both_above_99": float(np.mean((conf_a >= 0.99) & (conf_b >= 0.99))),
                "b_top1_is_target": float(np.mean(np.argmax(probs_b, -1) == targets)),
                "a_top1_is_target": float(np.mean(np.argmax(probs_a, -1) == targets)),
                "spearman_a_b": _spearman(conf_a, conf_b)})
    rows.append(row)
    scatter.append((row, conf_a, conf_b))
    bar.clear()
    print(f"[transfer] {row['source']} -> {row['target']} ({encoding}): same top-1 "
          f"{row['same_top1']:.0%}, both >= 99.99% {row['both_above']:.0%}, "
          f"B less confident {row['b_less_confident']:.0%}")
    bar.update(len(rows))
  bar.close()
  core.write_tensorboard(workdir, [{"step": 0, **tensorboard.scalars_of(
      {k: v for k, v in row.items() if k not in ("source", "target", "encoding")},
      prefix=f"transfer/{row['source']} -> {row['target']}/{row['encoding']}/")}
      for row in rows], step="step", name="transfer")
  _plot_transfer(out / "transfer.png", scatter)
  np.savez(out / "transfer.npz", **{
      f"{r['encoding']}_{_short(r['source'])}_to_{_short(r['target'])}_{side}".replace(" ", "_"): v
      for r, a, b in scatter for side, v in (("a", a), ("b", b))})
  return {"rows": rows, "seconds": time.perf_counter() - t0,
          "cpu_seconds": time.process_time() - c0,
          "runs_per_source": None if t.from_runs else config.evolve.runs,
          "generations": None if t.from_runs else config.evolve.generations,
          "from_runs": core.names(t.from_runs)}


def _spearman(a, b) -> float:
  ra = np.argsort(np.argsort(a)).astype(np.float64)
  rb = np.argsort(np.argsort(b)).astype(np.float64)
  return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 1 else float("nan")


def _nines(p):
  return -np.log10(np.clip(1.0 - np.asarray(p, np.float64), 1e-7, 1.0))


def _plot_transfer(path, scatter):
  """B's confidence against A's per image: in nines (-log10(1 - p)) when A's median
  is at least 90 % (MNIST), else as probabilities (ImageNet at a CPU budget)."""
  plt = core.pyplot()
  n = len(scatter)
  fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
  nines = bool(scatter) and min(float(np.median(a)) for _, a, _ in scatter) >= 0.9
  for ax, (row, conf_a, conf_b) in zip(axes[0], scatter):
    if nines:
      ax.scatter(_nines(conf_a), _nines(conf_b), s=10, alpha=0.6)
      ax.plot([0, 7], [0, 7], "k:", lw=1)
      ax.axhline(4, color="gray", lw=0.5)
      ax.axvline(4, color="gray", lw=0.5)
      ax.set(xlim=(0, 7.2), ylim=(0, 7.2), xlabel="A: -log10(1 - p)",
             ylabel="B: -log10(1 - p)")
    else:
      ax.scatter(conf_a, conf_b, s=6, alpha=0.4)
      ax.plot([0, 1], [0, 1], "k:", lw=1)
      ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="A: p(evolved class)",
             ylabel="B: p(evolved class)")
    ax.set_title(f"{row['encoding']}: {_short(row['source'])}\n-> {_short(row['target'])}",
                 fontsize=8)
  fig.tight_layout()
  core.save_figure(fig, path, dpi=90)


def _short(name: str) -> str:
  return (name.replace("_mnist", "").replace("fc100_100_10", "FC100")
          .replace("efficientnet_", "").replace("_imagenet", ""))


def _display(spec: str) -> str:
  """``lenet_mnist@1`` -> ``lenet_mnist seed 1`` (the tables' row labels)."""
  kind, name, seed = zoo.parse_spec(spec)
  return f"{name} seed {seed}" if kind == "preset" else name


# --------------------------------------------------------------------------
# 3. Fooling-class retraining


def _training_data(config):
  r = config.retrain
  train_x, train_y = data.load("mnist", "train")
  test_x, test_y = data.load("mnist", "test")
  if r.train_size:
    key = jax.random.fold_in(jax.random.key(config.seed), 30)
    keep = np.sort(np.asarray(jax.random.permutation(key, len(train_y)))[:r.train_size])
    train_x, train_y = train_x[keep], train_y[keep]
  return (train_x, train_y), (test_x, test_y)


FOOLING_CLASS = ("resample", "accumulate")


def fooling_class_images(pool: list[np.ndarray], mode: str, size: int,
                         key: jax.Array) -> np.ndarray:
  """Class n+1 of the next training set, from the fooling images evolved so far.

  Args:
    pool: uint8 ``[N_j, H, W, C]`` elites of each earlier iteration.
    mode: ``"resample"`` draws ``size`` images from the pool, with replacement
      when it holds fewer (a fixed class size; the default, and what the README's
      measured runs used); ``"accumulate"`` takes every distinct image evolved
      so far, once each, so the class grows with every iteration (the protocol
      the issue reads in the paper: about 25 % of the training set after 15
      iterations; the paper's text was not available here to check).
    size: the class size for ``"resample"``.
    key: the draw for ``"resample"``.
  """
  images = np.concatenate(pool)
  if mode == "accumulate":
    return np.unique(images, axis=0)
  pick = np.asarray(jax.random.choice(key, len(images), (size,), replace=len(images) < size))
  return images[pick]


def run_retrain(config, workdir, sources: Sources) -> dict:
  del sources  # the loop evolves against its own networks
  r = config.retrain
  out = workdir / "retrain"
  out.mkdir(parents=True, exist_ok=True)
  metrics_path = out / "metrics.jsonl"
  done = {}
  if metrics_path.exists():
    for line in metrics_path.read_text().splitlines():
      record = json.loads(line)
      done[record["iteration"]] = record
  (train_x, train_y), (test_x, test_y) = _training_data(config)
  key = jax.random.fold_in(jax.random.key(config.seed), 3)
  encoding = make_encoding(config, r.encoding, train_x.shape[1:])
  evolvers = {}

  def evolver_for(clf, population: int, runs: int):
    """One Evolver (and one compilation) per output count, population and runs."""
    k = (num_classes_of(clf.apply_fn, clf.params, train_x.shape[1:]), population, runs)
    if k not in evolvers:
      evolvers[k] = make_evolver(config, encoding, clf.apply_fn, population=population,
                                 runs=runs)
    return evolvers[k]

  def evolve(evolver, key_index: int, clf, generations: int, directory, prefix: str):
    return evolver.evolve(
        jax.random.fold_in(key, key_index), clf.params, generations=generations,
        directory=directory, checkpoint_every=config.evolve.checkpoint_every,
        log_every=config.evolve.log_every, log_prefix=prefix,
        fingerprint=core.fingerprint("nguyen2015.followups", config, ignore=("parts",)))

  pool = []   # uint8 fooling images of the iterations so far
  bar = core.Progress(r.iterations, "[retrain]", unit="iterations",
                      start=sum(i in done for i in range(1, r.iterations + 1)))
  for i in range(1, r.iterations + 1):
    it = out / f"iter_{i:02d}"
    it.mkdir(exist_ok=True)
    fooling_path = it / "fooling.npz"
    if i in done and fooling_path.exists():
      with np.load(fooling_path, allow_pickle=False) as f:
        pool.append(f["images"])
      print(f"[retrain] iteration {i} done earlier.")
      continue
    t0 = time.perf_counter()
    clf, train_history, fooling_class_size = _dnn(config, i, pool, (train_x, train_y), key, it)
    train_seconds = time.perf_counter() - t0
    test_logits = _logits(clf, test_x)
    accuracy = float(np.mean(np.argmax(test_logits, -1) == test_y))
    as_fooling = float(np.mean(np.argmax(test_logits, -1) == NUM_REAL))
    num_outputs = test_logits.shape[-1]
    evolver = evolver_for(clf, r.population, r.runs)
    t1 = time.perf_counter()
    archives, _ = evolve(evolver, 1000 + i, clf, r.generations, it / "evolve",
                         f"[retrain {i}] ")
    evolve_seconds = time.perf_counter() - t1
    elite_images, fitness, targets = evolver.elites(archives)
    u8 = images.to_uint8(elite_images)
    # The network sees the quantised images it will be trained on.
    probs = jax.nn.softmax(_logits(clf, u8), -1)
    np.savez(fooling_path, images=u8, targets=targets, fitness=fitness)
    pool.append(u8)
    record = {
        "iteration": i, "num_outputs": int(num_outputs), "test_accuracy": accuracy,
        "test_predicted_fooling_class": as_fooling,
        **confidence_stats(fitness),
        "median_confidence_uint8": float(np.median(
            np.asarray(probs)[np.arange(len(targets)), targets])),
        "fooling_images_so_far": int(sum(len(p) for p in pool)),
        # Class n+1 in DNN_i's training set: its images and its share of the set.
        "fooling_class_images": int(fooling_class_size),
        "fooling_class_share": float(fooling_class_size / (len(train_y) + fooling_class_size)),
        "train_seconds": train_seconds, "evolve_seconds": evolve_seconds,
        "train_accuracy_last_epoch": (train_history["train_accuracy"][-1]
                                      if train_history else None),
    }
    core.append_jsonl(metrics_path, record)
    done[i] = record
    images.save_grid(it / "elites.png", elite_images[:NUM_REAL * min(r.runs, 2)],
                     labels=targets[:NUM_REAL * min(r.runs, 2)],
                     confidences=fitness[:NUM_REAL * min(r.runs, 2)],
                     title=f"Elites evolved against DNN_{i}")
    core.write_tensorboard(workdir, sorted(done.values(), key=lambda h: h["iteration"]),
                           step="iteration", name="retrain", prefix="retrain/")
    bar.clear()
    print(f"[retrain] iteration {i}: test accuracy {accuracy:.4f}, median best confidence "
          f"{record['median_confidence']:.5f}, >= 99.99%: {record['share_9999']:.0%}")
    bar.update(i)
  bar.close()
  history = [done[i] for i in range(1, r.iterations + 1)]
  control = None
  if r.control:
    # The same training budget without a fooling class: separates the effect of
    # class n+1 on test accuracy from that of a reduced budget.
    tcfg = zoo.preset_config("lenet_mnist", seed=config.seed * 100)
    tcfg.epochs = r.epochs
    control_clf, _ = training.fit(tcfg, (train_x, train_y), None,
                                  workdir=out / "control_training")
    control_logits = _logits(control_clf, test_x)
    archives, _ = evolve(evolver_for(control_clf, r.population, r.runs), 1000, control_clf,
                         r.generations, out / "control_evolve", "[retrain control] ")
    control = {"test_accuracy": float(np.mean(np.argmax(control_logits, -1) == test_y)),
               **confidence_stats(archives.fitness)}
  core.write_tensorboard(
      workdir, history + ([{"iteration": 0, **{f"control/{k}": v for k, v in control.items()}}]
                          if control else []),
      step="iteration", name="retrain", prefix="retrain/")
  probe = None
  if r.probe_generations:
    # A longer evolution against DNN_1, the last DNN and the control, each with
    # the same (probe) budget: does a bigger search fool the retrained net again?
    last = r.iterations
    nets = {"DNN_1": _dnn(config, 1, [], (train_x, train_y), key, out / "iter_01")[0],
            f"DNN_{last}": _dnn(config, last, pool[:last - 1], (train_x, train_y), key,
                                out / f"iter_{last:02d}")[0]}
    if r.control:
      nets["control"] = control_clf
    probe = {}
    for j, (name, clf) in enumerate(nets.items()):
      t1 = time.perf_counter()
      archives, metrics = evolve(evolver_for(clf, r.probe_population, r.probe_runs),
                                 2000 + j, clf, r.probe_generations, out / "probe" / name,
                                 f"[retrain probe {name}] ")
      probe[name] = {**confidence_stats(archives.fitness),
                     # The median best confidence over runs x cells, every log_every
                     # generations and at the last.
                     "median_curve": [[m["generation"], float(np.median(m["best"]))]
                                      for m in metrics
                                      if m["generation"] % config.evolve.log_every == 0
                                      or m["generation"] == r.probe_generations],
                     "evolve_seconds_this_invocation": time.perf_counter() - t1}
      print(f"[retrain probe] {name}: median best confidence {probe[name]['median_confidence']:.5f}, "
            f">= 99.99%: {probe[name]['share_9999']:.0%}")
  _plot_retrain(out / "retrain.png", history, control, probe)
  return {"iterations": history, "control": control, "probe": probe, "scale": {
      "train_size": r.train_size or len(train_y), "epochs": r.epochs,
      "population": r.population, "generations": r.generations, "runs": r.runs,
      "fooling_class_size": r.fooling_class_size, "fooling_class": r.fooling_class,
      "encoding": r.encoding, "probe_population": r.probe_population,
      "probe_generations": r.probe_generations, "probe_runs": r.probe_runs}}


def _dnn(config, i: int, pool: list[np.ndarray], train, key, it):
  """DNN_i of the retraining loop: ``(classifier, training history, class n+1 size)``.

  DNN_1 is the bundled LeNet (``retrain.initial="zoo"``) or trained on the real
  digits; DNN_i (i > 1) is trained from scratch on them plus class n+1 drawn
  from ``pool`` (the elites of iterations 1..i-1). Its checkpoints live in
  ``it/training``, so a finished DNN is loaded, not trained again.
  """
  r = config.retrain
  train_x, train_y = train
  if i == 1 and r.initial == "zoo":
    return zoo.resolve("lenet_mnist"), None, 0
  tcfg = zoo.preset_config("lenet_mnist", seed=config.seed * 100 + i)
  tcfg.epochs = r.epochs
  x, y, size = train_x, train_y, 0
  if pool:
    fooling = fooling_class_images(pool, r.fooling_class, r.fooling_class_size,
                                   jax.random.fold_in(key, i))
    tcfg.num_classes = NUM_REAL + 1
    size = len(fooling)
    x = np.concatenate([train_x, fooling])
    y = np.concatenate([train_y, np.full(size, NUM_REAL, train_y.dtype)])
  clf, history = training.fit(tcfg, (x, y), None, workdir=it / "training")
  return clf, history, size


def _logits(clf, images_u8, batch: int = 1000) -> np.ndarray:
  fn = jax.jit(lambda p, x: clf.apply_fn(p, x.astype(jnp.float32) / 255.0))
  return np.concatenate([np.asarray(fn(clf.params, jnp.asarray(images_u8[s:s + batch])))
                         for s in range(0, len(images_u8), batch)])


def _plot_retrain(path, history, control=None, probe=None):
  plt = core.pyplot()
  it = [h["iteration"] for h in history]
  fig, axes = plt.subplots(1, 3 if probe else 2, figsize=(13.5 if probe else 9, 3.4))
  ax1, ax2 = axes[:2]
  ax1.semilogy(it, [max(h["median_confidence"], 1e-8) for h in history], "o-",
               label="DNN_i")
  if control is not None:
    ax1.axhline(max(control["median_confidence"], 1e-8), color="gray", ls="--",
                label="same budget, no class n+1")
  ax1.axhline(0.9999, color="gray", ls=":", label="99.99 %")
  ax1.set(xlabel="iteration (DNN_i)", ylabel="confidence",
          title="Best confidence evolution reaches\n(median over real-class elites)")
  ax1.legend(fontsize=7)
  ax2.plot(it, [100 * h["test_accuracy"] for h in history], "o-", label="DNN_i")
  if control is not None:
    ax2.axhline(100 * control["test_accuracy"], color="gray", ls="--",
                label="same budget, no class n+1")
  ax2.legend(fontsize=7)
  ax2.set(xlabel="iteration (DNN_i)", ylabel="test accuracy (%)",
          title="MNIST test accuracy (11-way argmax)")
  if probe:
    ax3 = axes[2]
    for name, p in probe.items():
      g, m = np.asarray(p["median_curve"]).T
      ax3.semilogy(g, np.maximum(m, 1e-8), label=name)
    ax3.axhline(0.9999, color="gray", ls=":", label="99.99 %")
    ax3.set(xlabel="generation", ylabel="confidence",
            title="Probe: a longer evolution against each net\n(median best confidence)")
    ax3.legend(fontsize=7)
  fig.tight_layout()
  core.save_figure(fig, path, dpi=90)


# --------------------------------------------------------------------------
# 4. Repetition ablation


def _ablation_elites(config, sources: Sources):
  """``(images, targets, classifier, what)``: the elites the ablation takes."""
  a = config.ablation
  if a.from_run:
    run = core.load_fool_run(a.from_run)
    imgs, _, cells = run.elites()
    return (imgs, cells, run.classifier,
            f"{run.config.encoding} elites of {a.from_run} ({run.config.classifier})")
  imgs, _, targets = sources.elites(a.classifier, a.encoding)
  return imgs, targets, zoo.resolve(a.classifier), f"{a.encoding} elites"


def ablate_in_batches(ablate, key, params, imgs, targets, batch_size: int) -> dict:
  """``ablate`` (``make_ablation_fn(return_images=False)``, jitted) over chunks.

  Image i gets ``jax.random.split(key, N)[i]`` whatever the chunking, so the
  result equals one call on all images; the last chunk is padded to the batch
  size (no second compilation) and the padding dropped.
  """
  n = len(imgs)
  size = batch_size or n
  keys = jax.random.split(key, n)
  parts = []
  bar = core.Progress(n, "[ablation]", unit="images")
  t0 = time.perf_counter()
  for start in range(0, n, size):
    idx = np.minimum(np.arange(start, start + size), n - 1)
    out = jax.device_get(ablate(keys[idx], params, jnp.asarray(imgs[idx]),
                                jnp.asarray(targets[idx])))
    parts.append({k: v[:min(size, n - start)] for k, v in out.items()})
    done = min(start + size, n)
    bar.update(done)
    if not bar.enabled and (len(parts) % 10 == 0 or done == n):   # a log: a line now and then
      print(f"[ablation] {done}/{n} images, {time.perf_counter() - t0:.0f} s", flush=True)
  bar.close()
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def run_ablation(config, workdir, sources: Sources) -> dict:
  a = config.ablation
  out = workdir / "ablation"
  out.mkdir(parents=True, exist_ok=True)
  imgs, targets, clf, what = _ablation_elites(config, sources)
  targets = np.asarray(targets)
  options = dict(apply_fn=clf.apply_fn, steps=a.steps, max_components=a.max_components,
                 iou_threshold=a.iou_threshold, min_area=a.min_area)
  ablate = jax.jit(motifs.make_ablation_fn(**options, return_images=False))
  key = jax.random.fold_in(jax.random.key(config.seed), 4)
  t0, c0 = time.perf_counter(), time.process_time()
  print(f"[ablation] {len(imgs)} {what}, in batches of {a.batch_size or len(imgs)} ...",
        flush=True)
  res = ablate_in_batches(ablate, key, clf.params, imgs, targets, a.batch_size)
  seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
  repeated = np.flatnonzero(res["repeats"] >= 1)
  conf = res["confidence"][repeated]                   # [n, steps + 1]
  np.savez(out / "ablation.npz", confidence=res["confidence"], repeats=res["repeats"],
           components=res["components"], removed=res["removed"], targets=targets,
           removed_area=res["removed_area"], control_area=res["control_area"],
           control_confidence=res["control_confidence"], top1=res["top1"],
           control_top1=res["control_top1"])
  drop = conf[:, 0] - conf[:, -1]
  nines_drop = _nines(conf[:, 0]) - _nines(conf[:, -1])
  quant = lambda v: ([float(q) for q in np.quantile(v, [0.25, 0.5, 0.75])]
                     if len(v) else None)
  share = lambda v: float(np.mean(v)) if len(repeated) else None
  top1 = res["top1"][repeated]
  result = {
      "elites": what, "images": len(targets), "with_repeats": len(repeated),
      "seconds": seconds, "cpu_seconds": cpu,
      "median_components": float(np.median(res["components"])),
      "median_repeats": float(np.median(res["repeats"][repeated])) if len(repeated) else None,
      "confidence_quartiles_per_step": [quant(conf[:, s]) for s in range(a.steps + 1)],
      "drop_quartiles": quant(drop), "nines_drop_quartiles": quant(nines_drop),
      "share_dropped": share(drop > 0), "share_dropped_over_1pct": share(drop > 0.01),
      "share_9999_before": share(conf[:, 0] >= 0.9999),
      "share_9999_after": share(conf[:, -1] >= 0.9999),
      "share_top1_before": share(top1[:, 0] == targets[repeated]),
      "share_top1_lost": share((top1[:, 0] == targets[repeated])
                               & (top1[:, -1] != targets[repeated])),
  }
  # The control: the same area of non-repeated foreground removed from the same images.
  control = res["control_confidence"][repeated]
  control_drop = control[:, 0] - control[:, -1]
  control_top1 = res["control_top1"][repeated]
  area_matched = (res["control_area"][repeated, -1] == res["removed_area"][repeated, -1])
  result.update({
      "control_confidence_quartiles_per_step": [quant(control[:, s])
                                                for s in range(a.steps + 1)],
      "control_drop_quartiles": quant(control_drop),
      "control_share_dropped_over_1pct": share(control_drop > 0.01),
      "control_share_9999_after": share(control[:, -1] >= 0.9999),
      "control_share_top1_lost": share((control_top1[:, 0] == targets[repeated])
                                       & (control_top1[:, -1] != targets[repeated])),
      "control_area_matched": share(area_matched),
      "median_removed_area": (float(np.median(res["removed_area"][repeated, -1]))
                              if len(repeated) else None),
      # Paired: how often removing the repeats costs more than the same area of other content.
      "share_repeats_drop_more": share(drop > control_drop),
      "median_drop_difference": (float(np.median(drop - control_drop))
                                 if len(repeated) else None),
  })
  core.write_tensorboard(workdir, [
      {"step": s, "ablation/confidence_median": float(np.median(conf[:, s])),
       "ablation/control_confidence_median": float(np.median(control[:, s]))}
      for s in range(a.steps + 1) if len(repeated)], step="step", name="ablation")
  _plot_ablation(out / "ablation.png", conf, a.steps, control)
  if len(repeated):
    # The examples, ablated again (same per-image keys) with their images kept.
    show = repeated[np.argsort(-res["repeats"][repeated], kind="stable")[:a.examples]]
    keys = jax.random.split(key, len(targets))[show]
    shown = jax.device_get(jax.jit(motifs.make_ablation_fn(**options))(
        keys, clf.params, jnp.asarray(imgs[show]), jnp.asarray(targets[show])))
    tiles = shown["images"].reshape(-1, *imgs.shape[1:])
    titles = [f"{targets[i]}: -{res['removed'][i, s]}/{res['repeats'][i]}\n"
              + images.format_confidence(float(res["confidence"][i, s]))
              for i in show for s in range(a.steps + 1)]
    images.save_grid(out / "ablation_examples.png", tiles, titles=titles, ncols=a.steps + 1,
                     title="Repeated copies removed (class: removed/repeats)")
  return result


def _plot_ablation(path, conf, steps, control=None):
  plt = core.pyplot()
  frac = np.arange(steps + 1) / steps
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
  for c in conf:
    ax1.plot(frac, _nines(c), color="tab:blue", alpha=0.25, lw=1)
  if len(conf):
    ax1.plot(frac, np.median(_nines(conf), axis=0), "k-o", lw=2, label="median")
  if control is not None and len(control):
    ax1.plot(frac, np.median(_nines(control), axis=0), "-s", color="tab:orange", lw=2,
             label="median, control (same area\nof non-repeated content)")
  ax1.axhline(4, color="gray", ls=":", label="99.99 %")
  ax1.set(xlabel="share of repeated copies removed", ylabel="-log10(1 - p)",
          title="Confidence as repeats are removed")
  ax1.legend(fontsize=8)
  if len(conf):
    ax2.hist(conf[:, 0] - conf[:, -1], bins=20)
  ax2.set(xlabel="confidence drop (all repeats removed)", ylabel="images",
          title=f"{len(conf)} images with repeats")
  fig.tight_layout()
  core.save_figure(fig, path, dpi=90)



# --------------------------------------------------------------------------
# 5. The n+1 retraining on ImageNet, output layer only


def _batched_logits_fn(apply_fn, batch: int):
  """``logits(params, images [N, H, W, C]) -> np [N, K]``, ``batch`` images at a time
  (``lax.map``), jitted once: calls with the same N reuse the compilation."""
  fn = jax.jit(lambda p, xs: jax.lax.map(lambda x: apply_fn(p, x[None])[0], xs,
                                         batch_size=batch))
  return lambda params, imgs: np.asarray(fn(params, jnp.asarray(imgs, jnp.float32)))


def _photo_crops(names: list[str], key, num: int, shape, min_scale: float) -> np.ndarray:
  """``num`` random crops of each named demo photo: uint8 ``[len(names) * num, *shape]``
  (grey, the mean of R, G and B, for a one-channel ``shape``)."""
  photos = imagenet.demo_photos(names)
  crops = np.concatenate([np.asarray(imagenet.random_crops(
      jax.random.fold_in(key, core.stream_id(name)), photos[name], num, size=shape[0],
      min_scale=min_scale)) for name in names])
  if shape[-1] == 1:
    crops = crops.mean(-1, keepdims=True)
  return images.to_uint8(crops)


def run_imagenet_retrain(config, workdir, sources: Sources) -> dict:
  """DNN_2 = the fool run's net with a 1001st output trained on its elites; then
  MAP-Elites against DNN_2 with the run's settings and key (one factor changed)."""
  del sources
  c = config.imagenet_retrain
  out = workdir / "imagenet_retrain"
  out.mkdir(parents=True, exist_ok=True)
  t0, c0 = time.perf_counter(), time.process_time()
  runs = [core.load_fool_run(d) for d in core.names(c.fooling_from)]
  src = runs[0]
  for d, run in zip(core.names(c.fooling_from), runs):
    if (run.config.classifier, run.config.ten_crop) != (src.config.classifier,
                                                        src.config.ten_crop):
      raise ValueError(
          f"imagenet_retrain.fooling_from: {d} evolved against {run.config.classifier!r} "
          f"(ten_crop={run.config.ten_crop}), the first run against "
          f"{src.config.classifier!r} (ten_crop={src.config.ten_crop}). Fix: give runs of "
          "one classifier and fitness.")
  base = src.classifier
  shape = core.input_shape_of(base.apply_fn)
  k = src.evolver.num_cells
  generations = c.generations or src.config.generations
  # DNN_1's row is the first run's own metrics at that generation: check before evolving.
  src_history = {m["generation"]: m for m in core.read_jsonl(
      pathlib.Path(core.names(c.fooling_from)[0]) / "metrics.jsonl")}
  if generations not in src_history:
    raise ValueError(f"{core.names(c.fooling_from)[0]} has no metrics for generation "
                     f"{generations}. Fix: set imagenet_retrain.generations to at most the "
                     "run's generations.")
  key = core.rng(config.seed, "imagenet_retrain")

  # Class 1001: every elite of the given runs (distinct images, one per filled cell).
  fooling, fooling_targets = [], []
  for run in runs:
    rendered, _, cells = run.elites()
    fooling.append(images.to_uint8(rendered))
    fooling_targets.append(cells)
  fooling = np.concatenate(fooling)
  fooling_targets = np.concatenate(fooling_targets)
  train_names = core.names(c.real_photos)
  held_names = core.names(c.heldout_photos)
  real = _photo_crops(train_names, jax.random.fold_in(key, 0), c.crops_per_photo, shape,
                      c.min_scale)
  held = _photo_crops(held_names, jax.random.fold_in(key, 1), c.crops_per_photo, shape,
                      c.min_scale)

  batched_logits = _batched_logits_fn(base.apply_fn, c.batch_size)

  def logits_of(u8):
    return batched_logits(base.params, u8.astype(np.float32) / 255.0)

  print(f"[imagenet_retrain] logits of {len(fooling)} fooling images, {len(real)} training "
        f"crops of {len(train_names)} photos and {len(held)} held-out crops")
  z_fool, z_real, z_held = logits_of(fooling), logits_of(real), logits_of(held)
  fit = jax.jit(functools.partial(defenses.fit_fooling_class, steps=c.steps,
                                  learning_rate=c.learning_rate,
                                  weight_decay=c.weight_decay))
  head, losses = fit(jnp.asarray(z_fool), jnp.asarray(z_real))
  # A second fit that leaves holdout_share of the fooling images out, to measure
  # how well the new output recognises fooling images it was not trained on.
  order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 2), len(z_fool)))
  n_out = int(round(c.holdout_share * len(z_fool)))
  cv_head, _ = fit(jnp.asarray(z_fool[order[n_out:]]), jnp.asarray(z_real))

  def k1_probs(h, z):  # DNN_2's softmax [N, K+1]
    return np.asarray(jax.nn.softmax(defenses.append_fooling_class(h, jnp.asarray(z)), -1))

  def fooling_share(h, z):  # its mass on the fooling class
    return k1_probs(h, z)[:, k]

  def predicted_fooling(h, z):
    return np.argmax(k1_probs(h, z), -1) == k

  idx = np.arange(len(fooling_targets))
  before = np.asarray(jax.nn.softmax(jnp.asarray(z_fool), -1))[idx, fooling_targets]
  after = k1_probs(head, z_fool)[idx, fooling_targets]
  held_top1 = np.argmax(z_held, -1)
  head_stats = {
      "fooling_images": int(len(fooling)), "training_crops": int(len(real)),
      "heldout_crops": int(len(held)), "training_photos": train_names,
      "heldout_photos": held_names,
      "loss_first_last": [float(losses[0]), float(losses[-1])],
      "fooling_classified_as_fooling": float(np.mean(predicted_fooling(head, z_fool))),
      "training_crops_classified_as_fooling": float(np.mean(predicted_fooling(head, z_real))),
      "heldout_crops_classified_as_fooling": float(np.mean(predicted_fooling(head, z_held))),
      "heldout_crops_classified_as_fooling_per_photo": {
          name: float(np.mean(predicted_fooling(head, z_held[i * c.crops_per_photo:
                                                           (i + 1) * c.crops_per_photo])))
          for i, name in enumerate(held_names)},
      "heldout_crops_top1_kept": float(np.mean(np.argmax(k1_probs(head, z_held), -1)
                                               == held_top1)),
      "heldout_crops_median_fooling_share": float(np.median(fooling_share(head, z_held))),
      "heldout_fooling_images": n_out,
      "heldout_fooling_classified_as_fooling": float(np.mean(predicted_fooling(
          cv_head, z_fool[order[:n_out]]))) if n_out else None,
      "heldout_crops_classified_as_fooling_by_cv_fit": float(np.mean(predicted_fooling(
          cv_head, z_held))),
      "dnn1_elites_median_on_dnn1": float(np.median(before)),
      "dnn1_elites_median_on_dnn2": float(np.median(after)),
      "dnn1_elites_top1_fooling_on_dnn2": float(np.mean(np.argmax(k1_probs(head, z_fool), -1)
                                                        == k)),
  }
  np.savez(out / "fooling_class.npz", w=np.asarray(head.params["w"]),
           b=np.asarray(head.params["b"]), mean=np.asarray(head.mean),
           std=np.asarray(head.std), losses=np.asarray(losses))
  print("[imagenet_retrain] fooling class: " + ", ".join(
      f"{k_}={v:.4g}" for k_, v in head_stats.items() if isinstance(v, float)))

  # MAP-Elites against DNN_2: the run's encoding, population, fitness and key;
  # the real classes are the cells, scored under DNN_2's K+1-way softmax.
  dnn2_fn, dnn2_params = defenses.with_fooling_class(base.apply_fn, base.params, head)

  def real_classes(apply_fn, params, fitness=src.config.fitness):
    if fitness == "log_odds":
      return lambda x: map_elites.log_odds(apply_fn(params, x))[:, :k]
    return lambda x: jax.nn.softmax(apply_fn(params, x), axis=-1)[:, :k]

  evolver = driver.Evolver(encoding=src.evolver.encoding, apply_fn=dnn2_fn, num_cells=k,
                           population=src.config.population, fitness=src.config.fitness,
                           score_transform=real_classes)
  t1, c1 = time.perf_counter(), time.process_time()
  archive, history = evolver.evolve(
      jax.random.key(src.config.seed), dnn2_params, generations=generations,
      directory=out / "evolve", checkpoint_every=src.config.checkpoint_every,
      log_every=src.config.log_every, log_prefix="[imagenet_retrain DNN_2] ",
      fingerprint=core.fingerprint("nguyen2015.followups", config, ignore=("parts",)))
  evolve_seconds, evolve_cpu = time.perf_counter() - t1, time.process_time() - c1
  best2 = np.asarray(map_elites.to_probability(archive.fitness, src.config.fitness))
  best1 = np.asarray(src_history[generations]["best"])
  # The DNN_2 elites scored by DNN_1 (K-way softmax) and DNN_2's fooling share.
  elites2, _, cells2 = evolver.elites(archive)
  z2 = batched_logits(base.params, elites2)
  on_dnn1 = np.asarray(jax.nn.softmax(jnp.asarray(z2), -1))[np.arange(k), cells2]

  def counts(p):
    return {"median": float(np.median(p)), "classes_99": int(np.sum(p >= 0.99)),
            "classes_9999": int(np.sum(p >= 0.9999)), "classes_50": int(np.sum(p >= 0.5))}

  curve = [[g, float(np.median(src_history[g]["best"])), float(np.median(m["best"]))]
           for m in history for g in [m["generation"]]
           if (g % src.config.log_every == 0 or g == generations) and g in src_history]
  result = {
      "paper": {"dnn1_median": 0.881, "dnn2_median": 0.117},
      "source_runs": core.names(c.fooling_from), "classifier": src.config.classifier,
      "num_classes": int(k),
      "encoding": src.config.encoding, "population": src.config.population,
      "generations": generations, "fitness": src.config.fitness,
      "fooling_class": head_stats,
      "dnn1": counts(best1), "dnn2": counts(best2),
      "dnn2_elites_on_dnn1": counts(on_dnn1),
      "dnn2_elites_median_fooling_share": float(np.median(fooling_share(head, z2))),
      "curve": curve, "evolve_seconds": evolve_seconds, "evolve_cpu_seconds": evolve_cpu,
      "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
  }
  print(f"[imagenet_retrain] median best confidence at generation {generations}: DNN_1 "
        f"{result['dnn1']['median']:.4f}, DNN_2 {result['dnn2']['median']:.4f} (paper: "
        "88.1 % -> 11.7 %)")
  core.write_tensorboard(workdir, [{"generation": g, "imagenet_retrain/dnn1_median": a,
                                    "imagenet_retrain/dnn2_median": b} for g, a, b in curve],
                         step="generation", name="imagenet_retrain")
  _plot_imagenet_retrain(out / "curves.png", curve, best1, best2, k)
  labels = core.class_labels(k)
  order2 = np.argsort(-best2, kind="stable")[:20]
  images.save_grid(out / "dnn2_best.png", elites2[order2],
                   titles=[f"{_short_label(labels[i])}\n"
                           f"{images.format_confidence(float(best2[i]))}" for i in order2],
                   ncols=10,
                   title=f"Best elites evolved against DNN_2 ({k + 1} outputs)")
  return result


def _plot_imagenet_retrain(path, curve, best1, best2, num_classes: int):
  plt = core.pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
  curve = np.asarray(curve)
  ax1.plot(curve[:, 0], 100 * curve[:, 1], label=f"DNN_1 ({num_classes} outputs)")
  ax1.plot(curve[:, 0], 100 * curve[:, 2], label="DNN_2 (+ fooling class)")
  ax1.set(xlabel="generation", ylabel="median best confidence (%)",
          title="Evolution against each net")
  ax1.legend(fontsize=8)
  ax2.plot(100 * np.sort(best1)[::-1], label="DNN_1")
  ax2.plot(100 * np.sort(best2)[::-1], label="DNN_2")
  ax2.set(xlabel="class (sorted)", ylabel="best confidence (%)", title="Per class, at the end")
  ax2.legend(fontsize=8)
  fig.tight_layout()
  core.save_figure(fig, path, dpi=90)


def main(argv):
  del argv
  run(core.CONFIG.value, core.WORKDIR.value)


if __name__ == "__main__":
  core.cli(main)
