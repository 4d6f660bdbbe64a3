"""Szegedy et al. 2013, "Intriguing properties of neural networks", on MNIST.

  python -m experiments.szegedy2013.properties --config=experiments/szegedy2013/configs/properties.py:all \
      --workdir=runs/szegedy_all

Three parts (``config.parts``), all written to the work directory:

* ``units``: for a hidden layer of each listed net, the held-out images that
  maximise ``<phi(x), e_i>`` (one unit) and ``<phi(x), v>`` (a random
  direction), drawn side by side in ``units_<net>_<layer>.png``, and the label
  purity of the top-k images over every live unit and as many random
  directions, next to the purity of random sets of k images.
* ``tables``: Table 1 (training error, test error and the average minimum
  distortion of box-constrained L-BFGS adversarial examples) and Table 2 (the
  error of every net on every other net's adversarial examples), with control
  rows: the clean images, Gaussian noise at each net's per-image adversarial
  distortion, and Gaussian noise at fixed RMS distortions.
* ``cross_training``: Table 3 (nets trained on the disjoint halves P1 and P2
  of the MNIST training set) and Table 4 (cross-training-set errors, with
  noise rows, and adversarial perturbations magnified to a fixed distortion).

Protocol: each net is attacked on those of the first ``num_attack_images``
MNIST test images it classifies correctly, towards a random wrong label drawn
once per image (the same target for every net). Distortion is
``sqrt(sum((x' - x)^2) / 784)`` with pixels in [0, 1]; every perturbed image
is clipped to [0, 1], and the distortion reported is the one measured after
clipping. Error rates count predictions that differ from the true label.

Nets are classifier specs of :func:`foolingjax.zoo.resolve`: a zoo preset
(``fc100_100_10_mnist``, ``lenet_mnist@1`` for seed 1), an untrained
``init:<arch>``, or a user's 10-class MNIST model ``package.module:function``.
The tables take any of them (the training error of a model the zoo did not
train is not known: ``—``); the units part needs named hidden layers (a zoo
net, or a model whose module has a ``features`` method).

Outputs: ``results.md`` (every table), ``summary.json`` (every number),
``<part>/result.json`` (a finished part: a rerun reads it back),
``adversarial_examples.png``, the units figures, and
``adversarial/<net>.msgpack`` (the adversarial examples, saved after every chunk
of ``attack.chunk_images`` images: a rerun of the same command resumes there).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import core
from experiments.szegedy2013.configs import properties as szegedy_config
from foolingjax import attacks, checkpoint, data, directions, images, models, training, zoo
from foolingjax.attacks import perturbations
from foolingjax.contract import Classifier, num_classes_of

PARTS = szegedy_config.PARTS
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
# Random streams of the seed (core.rng(config.seed, stream)).
UNITS_STREAM, TABLE2_STREAM, TABLE4_STREAM, TARGETS_STREAM = 0, 1, 2, 3

def display(name: str) -> str:
  """The tables' label of a net (Szegedy et al.'s names for the zoo presets)."""
  return zoo.display_name(name)


# The paper's numbers (arXiv 1312.6199): Table 1 as (training error, test
# error, av. min. distortion); the cells of Tables 2 and 4 found in the copies
# of the paper we could read (../shared/PAPERS.md and a third-party summary
# that quotes Table 2's FC10(1e-4), FC100-100-10 and AE400-10 columns); the
# others are left out, never guessed.
PAPER_TABLE1 = {
    "FC10(1e-4)": (0.067, 0.074, 0.062), "FC10(1e-2)": (0.10, 0.094, 0.1),
    "FC10(1)": (0.212, 0.20, 0.14), "FC100-100-10": (0.0, 0.0164, 0.058),
    "FC200-200-10": (0.0, 0.0154, 0.065), "AE400-10": (0.0057, 0.019, 0.086),
}
PAPER_TABLE2 = {  # (row: examples for / noise kind, column net) -> error
    ("FC10(1e-4)", "FC10(1e-2)"): 0.117, ("FC10(1e-4)", "FC100-100-10"): 0.02,
    ("FC10(1e-4)", "AE400-10"): 0.027,
    ("FC10(1e-2)", "FC10(1e-4)"): 0.871, ("FC10(1e-2)", "FC100-100-10"): 0.359,
    ("FC10(1e-2)", "AE400-10"): 0.098,
    ("FC10(1)", "FC10(1e-4)"): 0.719, ("FC10(1)", "FC100-100-10"): 0.481,
    ("FC10(1)", "AE400-10"): 0.344,
    ("FC100-100-10", "FC10(1e-4)"): 0.289, ("FC100-100-10", "AE400-10"): 0.02,
    ("FC200-200-10", "FC10(1e-4)"): 0.382, ("FC200-200-10", "FC100-100-10"): 0.203,
    ("FC200-200-10", "AE400-10"): 0.027,
    ("stddev 0.1", "FC10(1e-4)"): 0.05, ("stddev 0.1", "FC100-100-10"): 0.0,
    ("stddev 0.1", "AE400-10"): 0.008,
    ("stddev 0.3", "FC10(1e-4)"): 0.156, ("stddev 0.3", "FC100-100-10"): 0.05,
    ("stddev 0.3", "AE400-10"): 0.031,
}
PAPER_TABLE4 = {
    ("FC100-100-10 (P1)", "FC123-456-10 (P1)"): 0.262,
    ("FC100-100-10 (P1)", "FC100-100-10' (P2)"): 0.059,
    ("magnified FC100-100-10 (P1)", "FC123-456-10 (P1)"): 0.98,
    ("magnified FC100-100-10 (P1)", "FC100-100-10' (P2)"): 0.43,
}
PAPER_TABLE4_NOTE = ("The paper gives Gaussian noise of stddev 0.1 2.6-2.8 % error on these "
                     "nets (Table 4).")


def paper_name(name: str) -> str:
  """The paper's name of a net: our variants' suffixes (paper, SGD, sigmoid) dropped."""
  label = display(name)
  for suffix in (" paper", " SGD", " sigmoid"):
    label = label.replace(suffix, "")
  return label


def with_paper(value: str, paper) -> str:
  """``"46.1%"`` -> ``"46.1% (paper 2%)"`` where the paper gives the cell."""
  return value if paper is None else f"{value} (paper {core.pct(paper)})"


def file_stem(name: str) -> str:
  """``name`` as a file name: ``pkg.mod:fn`` -> ``pkg.mod_fn``; presets unchanged."""
  return re.sub(r"[^\w.@-]", "_", name)


def split_layer(item: str) -> tuple[str, str]:
  """``"net:layer"`` -> ``("net", "layer")``; the net may hold a colon.

  ``"pkg.mod:fn:layer"`` -> ``("pkg.mod:fn", "layer")``.
  """
  name, sep, layer = item.rpartition(":")
  if not sep or not name or not layer:
    raise ValueError(f"config.units.layers entries are 'net:layer'; got {item!r}.")
  return name, layer


def _floats(text: str, name: str, *, empty_ok: bool = False) -> list[float]:
  if empty_ok and not str(text).strip():
    return []
  try:
    values = [float(v) for v in core.names(text)]
  except ValueError:
    values = []
  if not values or any(not v > 0 for v in values):
    raise ValueError(f"config.{name} must be comma-separated positive numbers; got {text!r}.")
  return values


def _predict_fn(classifier, batch: int = 1000):
  """``predict(x float [N, ...]) -> int labels [N]`` in jitted batches."""
  apply_fn, params = classifier
  step = jax.jit(lambda p, x: jnp.argmax(apply_fn(p, x), -1))

  def predict(x):
    return np.concatenate([np.asarray(step(params, x[i:i + batch]))
                           for i in range(0, len(x), batch)]) if len(x) else np.zeros(0, int)
  return predict


def _error(predict, x, y) -> float:
  return float(np.mean(predict(x) != y)) if len(y) else float("nan")


# --------------------------------------------------------------------------
# Units vs random directions


def feature_layers(name: str, classifier: Classifier) -> dict[str, tuple[int, ...]]:
  """``{layer: activation shape}`` of a classifier's ``features``, from shapes alone.

  Raises:
    ValueError: the classifier has no named hidden layers (a user's model
      without a ``features`` method): the units part cannot take it.
  """
  apply_fn, params = classifier
  try:
    features = models.feature_fn(apply_fn)
  except ValueError as e:
    raise ValueError(
        f"The units part cannot take {name!r}: it ranks images along a hidden layer's "
        f"units, and this classifier has no named hidden layers ({e}) Fix: give the "
        "model's module a features(x) method returning {layer name: activation}, "
        "name a zoo net in config.units.layers (e.g. fc100_100_10_mnist:fc2), or leave "
        "units out of config.parts.") from None
  shapes = jax.eval_shape(features, params,
                          jax.ShapeDtypeStruct((1, *IMAGE_SHAPE), jnp.float32))
  return {layer: tuple(s.shape) for layer, s in shapes.items()}


def _features(classifier, layer: str, x: np.ndarray, batch: int = 1000) -> np.ndarray:
  apply_fn, params = classifier
  features = models.feature_fn(apply_fn)
  step = jax.jit(lambda p, xb: features(p, xb)[layer].reshape((xb.shape[0], -1)))
  return np.concatenate([np.asarray(step(params, x[i:i + batch]))
                         for i in range(0, len(x), batch)])


def _purity_ks(config) -> list[int]:
  return [int(k) for k in _floats(config.units.purity_k, "units.purity_k")]


def run_units(config, key, test, workdir: pathlib.Path, classifiers, *, log) -> dict:
  """Label purity of the top-k images along units and random directions, per layer."""
  cfg = config.units
  ks = _purity_ks(config)
  x = data.to_float(test[0][: cfg.num_images])
  y = test[1][: cfg.num_images]
  results = {}
  for i, item in enumerate(core.names(cfg.layers)):
    name, layer = split_layer(item)
    t0 = time.perf_counter()
    phi = jnp.asarray(_features(classifiers[name], layer, x))
    dim = phi.shape[1]
    # Units whose activation never varies over the images (dead ReLUs) rank
    # nothing; they are counted and left out.
    live = np.flatnonzero(np.asarray(jnp.max(phi, 0) > jnp.min(phi, 0)))
    k_dirs, k_sets, k_show = jax.random.split(core.rng(key, i), 3)
    units = jnp.eye(dim)[live]
    random_dirs = directions.random_directions(k_dirs, cfg.num_random, dim)
    yj = jnp.asarray(y)
    per_k = {}
    for k in ks:
      sets = jax.vmap(lambda kk: jax.random.permutation(kk, len(y))[:k])(
          jax.random.split(core.rng(k_sets, k), cfg.num_random))
      purity = {
          "units": directions.label_purity(
              yj, directions.top_k_along(phi, units, k)[0], NUM_CLASSES),
          "directions": directions.label_purity(
              yj, directions.top_k_along(phi, random_dirs, k)[0], NUM_CLASSES),
          "random_sets": directions.label_purity(yj, sets, NUM_CLASSES),
      }
      per_k[k] = {group: {"mean": float(jnp.mean(p)), "at_least_90": float(jnp.mean(p >= 0.9)),
                          "values": [float(v) for v in p]} for group, p in purity.items()}
    shown_units = np.sort(np.asarray(jax.random.choice(
        k_show, jnp.asarray(live), (min(cfg.show_rows, len(live)),), replace=False)))
    top_units = np.asarray(
        directions.top_k_along(phi, jnp.eye(dim)[shown_units], cfg.show_k)[0])
    top_dirs = np.asarray(
        directions.top_k_along(phi, random_dirs[: cfg.show_rows], cfg.show_k)[0])
    figure = workdir / f"units_{file_stem(name)}_{layer}.png"
    _plot_units(figure, x, y, top_units, top_dirs, shown_units,
                title=f"{display(name)}, layer {layer}: {len(y)} held-out test images")
    results[item] = {"net": name, "layer": layer, "dim": int(dim), "live": int(len(live)),
                     "num_images": int(len(y)), "num_random": int(cfg.num_random),
                     "purity": {str(k): v for k, v in per_k.items()},
                     "shown_units": [int(u) for u in shown_units], "figure": figure.name}
    log(f"[units] {display(name)}:{layer}: {len(live)}/{dim} live units; "
        + ", ".join(f"purity@{k} units {v['units']['mean']:.2f} directions "
                    f"{v['directions']['mean']:.2f} random sets {v['random_sets']['mean']:.2f}"
                    for k, v in per_k.items())
        + f" ({time.perf_counter() - t0:.0f} s)")
  return results


def _plot_units(path, x, y, top_units, top_dirs, shown_units, *, title):
  plt = core.pyplot()
  rows = max(len(top_units), len(top_dirs))
  k = top_units.shape[1]
  fig, axes = plt.subplots(rows, 2, figsize=(2 * 0.75 * k + 0.6, 0.95 * rows + 0.6),
                           squeeze=False)
  for column, tops in enumerate((top_units, top_dirs)):
    for r in range(rows):
      ax = axes[r, column]
      ax.axis("off")
      if r >= len(tops):
        continue
      strip = np.concatenate([np.pad(x[j, ..., 0], ((1, 1), (1, 1)), constant_values=1.0)
                              for j in tops[r]], axis=1)
      ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
      which = f"unit {shown_units[r]}" if column == 0 else f"random direction {r + 1}"
      ax.set_title(f"{which}: labels {' '.join(str(int(y[j])) for j in tops[r])}", fontsize=8)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  core.save_figure(fig, path, dpi=90)


def units_markdown(config, results: dict) -> str:
  """The units table, in the config's order (``results`` may come back from JSON)."""
  rows = []
  for item in core.names(config.units.layers):
    r = results[item]
    for k in map(str, _purity_ks(config)):
      p = r["purity"][k]
      rows.append([f"{display(r['net'])} {r['layer']}, top {k}", f"{r['live']}/{r['dim']}",
                   str(r["num_random"]),
                   core.pct(p["units"]["mean"]), core.pct(p["directions"]["mean"]),
                   core.pct(p["random_sets"]["mean"]),
                   core.pct(p["units"]["at_least_90"]),
                   core.pct(p["directions"]["at_least_90"])])
  header = ["layer, top-k images", "live units", "random directions", "units: mean purity",
            "random directions: mean purity", "random image sets: mean purity",
            "units with purity ≥ 90%", "directions with purity ≥ 90%"]
  return ("### Units vs random directions: label purity of the top-k held-out images\n\n"
          + core.markdown_table(header, rows) + "\n")


# --------------------------------------------------------------------------
# Adversarial examples, resumable


def adversarial_set(name: str, classifier, x: np.ndarray, y: np.ndarray, targets: np.ndarray,
                    config, path: pathlib.Path, *, log, predict=None) -> dict[str, np.ndarray]:
  """L-BFGS adversarial examples of the images ``classifier`` gets right.

  Saved to ``path`` after every chunk; a rerun continues after the last
  saved chunk.

  Returns:
    A dict of numpy arrays: ``index`` (which of ``x``), ``targets``, ``adv``,
    ``success``, ``l2`` and ``c`` (see :class:`foolingjax.attacks.LbfgsInfo`).
  """
  apply_fn, params = classifier
  predict = predict or _predict_fn(classifier)
  index = np.flatnonzero(predict(x) == y)
  n = len(index)
  state = {"index": index, "targets": targets[index], "adv": x[index].copy(),
           "success": np.zeros(n, bool), "l2": np.zeros(n, np.float32),
           "c": np.zeros(n, np.float32), "done": np.array(0)}
  fingerprint = core.fingerprint("szegedy2013.properties", config, net=name)
  if path.exists():
    saved, _ = checkpoint.load_raw(path, fingerprint=fingerprint)
    if not (np.array_equal(saved["index"], index)
            and np.array_equal(saved["targets"], state["targets"])):
      raise RuntimeError(
          f"{path} holds adversarial examples of other images or targets than this "
          f"run gives {display(name)} (were its weights retrained?). Fix: pass a new "
          "--workdir, or delete that file to recompute it.")
    state = {k: np.array(saved[k]) for k in state}  # writable copies: chunks land in them
    if int(state["done"]) < n:
      log(f"[attack] {display(name)}: resuming at image {int(state['done'])}/{n}")
  cfg = config.attack
  attack = jax.jit(lambda p, xb, tb: attacks.lbfgs_attack(
      apply_fn, p, xb, tb, c_search_steps=cfg.c_search_steps, max_iters=cfg.max_iters,
      tol=cfg.tol, chunk_size=cfg.chunk_size or None, solver=cfg.solver))
  chunk = cfg.chunk_images
  t0 = time.perf_counter()
  bar = core.Progress(n, f"[attack] {display(name)}", unit="images",
                      start=int(state["done"]))
  while int(state["done"]) < n:
    start = int(state["done"])
    idx = index[start:start + chunk]
    padded = np.concatenate([idx, np.full(chunk - len(idx), idx[-1])])  # one compiled shape
    adv, info = attack(params, jnp.asarray(x[padded]), jnp.asarray(targets[padded]))
    real = slice(start, start + len(idx))
    state["adv"][real] = np.asarray(adv)[: len(idx)]
    for key in ("success", "l2", "c"):
      state[key][real] = np.asarray(getattr(info, key))[: len(idx)]
    state["done"] = np.array(start + len(idx))
    checkpoint.save(path, state, fingerprint=fingerprint)
    bar.clear()
    log(f"[attack] {display(name)}: {int(state['done'])}/{n} images, "
        f"{int(state['success'][: int(state['done'])].sum())} succeeded "
        f"({time.perf_counter() - t0:.0f} s)")
    bar.update(int(state["done"]))
  bar.close()
  return state


@dataclasses.dataclass(frozen=True)
class Attacked:
  """The successful adversarial examples of one net, with their clean images."""

  index: np.ndarray    # which of the attacked test images
  clean: np.ndarray
  adv: np.ndarray
  labels: np.ndarray
  targets: np.ndarray
  attacked: int        # images attacked (those the net classifies correctly)

  @classmethod
  def from_state(cls, state, x, y, targets) -> "Attacked":
    ok = state["success"]
    index = state["index"][ok]
    return cls(index=index, clean=x[index], adv=state["adv"][ok], labels=y[index],
               targets=targets[index], attacked=len(state["index"]))

  def within(self, images: np.ndarray) -> "Attacked":
    """The examples made from the test images in ``images`` only."""
    keep = np.isin(self.index, images)
    return dataclasses.replace(self, index=self.index[keep], clean=self.clean[keep],
                               adv=self.adv[keep], labels=self.labels[keep],
                               targets=self.targets[keep])

  @property
  def rms(self) -> np.ndarray:
    return np.asarray(attacks.metrics.rms_distortion(self.clean, self.adv))

  @property
  def mean_distortion(self) -> float:
    return float(self.rms.mean()) if len(self.index) else float("nan")


_at_distortion = jax.jit(perturbations.gaussian_at_distortion)
_scale = jax.jit(perturbations.scale_to_distortion)
_noise = jax.jit(perturbations.gaussian_noise, static_argnames="clip")
_magnify = jax.jit(perturbations.magnify, static_argnames="clip")
MAGNIFY_KINDS = ("rms_after_clip", "paper")
SPLITS = ("test", "train")


def cross_rows(key, sets: dict[str, Attacked], predicts: dict, x, y, *, noise_rms,
               magnify_rms=None, noise_stddev=(), magnify=("rms_after_clip",)
               ) -> tuple[list[dict], int]:
  """Rows of a cross-model table: ``{"row", "distortion", "images", "errors": {net: rate}}``.

  Every row is made from the same images: those of ``x`` that every net
  classifies correctly, so each error is caused by the perturbation. Rows: each
  net's adversarial examples, Gaussian noise at the same per-image distortion,
  optionally the adversarial perturbations magnified to ``magnify_rms`` (each
  of ``magnify``: "rms_after_clip", clipped with the RMS met after clipping;
  "paper", ``x + rms · r / RMS(r)`` unclipped), Gaussian noise at each RMS
  of ``noise_rms`` (after clipping), and Gaussian noise of each stddev of
  ``noise_stddev`` added unclipped (the paper's rows) and clipped.

  Each row also carries ``kind`` and ``source`` (the net or noise level it
  comes from), which the markdown uses to set the paper's cells beside ours.

  Returns:
    ``(rows, number of images every net classifies correctly)``.
  """
  common = np.flatnonzero(np.all([p(x) == y for p in predicts.values()], axis=0))
  sets = {n: s.within(common) for n, s in sets.items()}
  errors = lambda xs, ys: {m: _error(p, xs, ys) for m, p in predicts.items()}
  mean = lambda d: float(np.mean(d)) if len(d) else float("nan")
  rms_of = lambda clean, out: np.asarray(attacks.metrics.rms_distortion(clean, out))
  rows = []
  for name, s in sets.items():
    rows.append({"row": f"adversarial for {display(name)}", "distortion": s.mean_distortion,
                 "errors": errors(s.adv, s.labels), "images": len(s.labels),
                 "kind": "adversarial", "source": name})
  for i, (name, s) in enumerate(sets.items()):
    noisy, dist = (_at_distortion(core.rng(key, i), s.clean, s.rms) if len(s.labels)
                   else (s.clean, np.zeros(0)))
    rows.append({"row": f"Gaussian noise at the distortion of {display(name)}",
                 "distortion": mean(dist), "errors": errors(np.asarray(noisy), s.labels),
                 "images": len(s.labels), "kind": "noise_at_distortion", "source": name})
  if magnify_rms is not None:
    for kind in magnify:
      for name, s in sets.items():
        if not len(s.labels):
          magnified, dist = s.clean, np.zeros(0)
        elif kind == "paper":
          magnified = _magnify(s.clean, s.adv - s.clean, magnify_rms)
          dist = rms_of(s.clean, magnified)
        else:
          magnified, dist = _scale(s.clean, s.adv - s.clean, magnify_rms)
        label = (f"adversarial for {display(name)}, magnified to stddev {magnify_rms:g} "
                 "(paper: x + 0.1 r/RMS(r), unclipped)" if kind == "paper" else
                 f"adversarial for {display(name)}, magnified to RMS {magnify_rms:g}")
        rows.append({"row": label, "distortion": mean(dist),
                     "errors": errors(np.asarray(magnified), s.labels),
                     "images": len(s.labels), "kind": f"magnified_{kind}", "source": name})
  for j, rms in enumerate(noise_rms):
    noisy, dist = _at_distortion(core.rng(key, 1000 + j), x[common], rms)
    rows.append({"row": f"Gaussian noise, RMS {rms:g}", "distortion": mean(dist),
                 "errors": errors(np.asarray(noisy), y[common]), "images": len(common),
                 "kind": "noise_rms", "source": f"{rms:g}"})
  for j, stddev in enumerate(noise_stddev):
    # The same draw for the unclipped and the clipped row: clipping is the only difference.
    noise_key = core.rng(key, 2000 + j)
    for clip in (False, True):
      noisy = _noise(noise_key, x[common], stddev, clip=clip)
      label = (f"Gaussian noise, stddev {stddev:g}, clipped to [0, 1]" if clip
               else f"Gaussian noise, stddev {stddev:g} (paper: unclipped)")
      rows.append({"row": label, "distortion": mean(rms_of(x[common], noisy)),
                   "errors": errors(np.asarray(noisy), y[common]), "images": len(common),
                   "kind": "noise_stddev_clipped" if clip else "noise_stddev",
                   "source": f"{stddev:g}"})
  return rows, len(common)


def _paper_cell(paper: dict, row: dict, net: str):
  """The paper's number for a cell of ours, or None."""
  kind, source = row.get("kind"), row.get("source")
  column = paper_name(net)
  if kind == "adversarial":
    return paper.get((paper_name(source), column))
  if kind == "magnified_paper":
    return paper.get((f"magnified {paper_name(source)}", column))
  if kind == "noise_stddev":
    return paper.get((f"stddev {source}", column))
  return None


def cross_markdown(title: str, rows: list[dict], nets: list[str], paper: dict | None = None,
                   note: str = "") -> str:
  """A cross table; with ``paper``, the paper's number beside each cell it gives."""
  paper = paper or {}
  header = ["examples"] + [display(n) for n in nets] + ["av. distortion", "images"]
  body = [[r["row"]] + [with_paper(core.pct(r["errors"][n]), _paper_cell(paper, r, n))
                        for n in nets]
          + [core.number(r["distortion"]), str(r["images"])] for r in rows]
  return (f"### {title}\n\n" + core.markdown_table(header, body) + "\n"
          + (f"\n{note}\n" if note else ""))


def _plot_examples(path, sets: dict[str, Attacked], per_net: int = 4):
  tiles, titles = [], []
  for name, s in sets.items():
    rms = s.rms
    for j in range(min(per_net, len(s.labels))):
      tiles += [s.clean[j], s.adv[j], np.clip(0.5 + 5.0 * (s.adv[j] - s.clean[j]), 0, 1)]
      titles += [f"{display(name)}: {s.labels[j]}", f"-> {s.targets[j]}, rms {rms[j]:.3f}",
                 "difference x5"]
  if tiles:
    images.save_grid(path, np.stack(tiles), titles=titles, ncols=3 * per_net, scale=1.5)


# --------------------------------------------------------------------------
# Tables 1-4


def _attack_inputs(config, images):
  """The first ``num_attack_images`` of ``images`` and one wrong target label each.

  With ``config.target_rule`` "random" the targets are drawn once from the
  seed, so every net (of Table 1 and of Table 3) is attacked towards the same
  label on the same image; with "next" the target is ``(label + 1) mod 10``.
  """
  n = config.num_attack_images
  x = data.to_float(images[0][:n])
  y = np.asarray(images[1][:n])
  if config.target_rule == "next":
    targets = np.asarray(perturbations.next_targets(jnp.asarray(y), NUM_CLASSES))
  else:
    key = core.rng(config.seed, TARGETS_STREAM)
    targets = np.asarray(perturbations.random_targets(key, jnp.asarray(y), NUM_CLASSES))
  return x, y, targets


def _attack_all(nets, classifiers, predicts, config, images, workdir, *, log):
  x, y, targets = _attack_inputs(config, images)
  sets = {}
  for name in nets:
    state = adversarial_set(name, classifiers[name], x, y, targets, config,
                            workdir / "adversarial" / f"{file_stem(name)}.msgpack", log=log,
                            predict=predicts[name])
    sets[name] = Attacked.from_state(state, x, y, targets)
  return x, y, sets


def _training_error(name: str, classifier: Classifier) -> dict:
  """What a net was trained on and its error there; unknown for a user's model."""
  kind, preset_name, seed = zoo.parse_spec(name)
  if kind != "preset":  # an untrained architecture, or a user's model
    return {"trained_on": "untrained" if kind == "init" else "unknown",
            "train_images": None, "train_error": None}
  preset = zoo.preset_config(preset_name, seed=seed)
  own, _ = zoo.training_data(preset)  # the half a cross-training-set net saw
  part = preset.get("train_part")
  return {"trained_on": "all" if part is None else f"P{part + 1}",
          "train_images": len(own[1]),
          "train_error": 1.0 - training.accuracy(classifier, *own)}


def _study(nets, classifiers, config, key, test, images, workdir, *, log, noise_rms,
           noise_stddev, magnify_rms=None):
  """One table per net (errors, distortion) and the cross table of ``nets``.

  ``images`` (uint8 images and labels) are those attacked: the first
  ``config.num_attack_images`` of them.
  """
  per_net = {}
  for name in nets:
    per_net[name] = _training_error(name, classifiers[name])
    per_net[name]["test_error"] = 1.0 - training.accuracy(classifiers[name], *test)
  # One jitted predictor per net, shared by the attack's selection and the cross table.
  predicts = {n: _predict_fn(classifiers[n]) for n in nets}
  x, y, sets = _attack_all(nets, classifiers, predicts, config, images, workdir, log=log)
  for name, s in sets.items():
    per_net[name].update(distortion=s.mean_distortion, attacked=s.attacked,
                         succeeded=len(s.labels))
  rows, common = cross_rows(key, sets, predicts, x, y, noise_rms=noise_rms,
                            magnify_rms=magnify_rms,
                            noise_stddev=noise_stddev,
                            magnify=core.names(config.magnify))
  return per_net, sets, rows, common


def _cross_title(config, common: int, split: str) -> str:
  return (f"error rate of each net (columns) on the examples of each row, made from "
          f"the {common} of the first {config.num_attack_images} {split} images that "
          "every net classifies correctly")


def _count(v) -> str:
  return core.MISSING if v is None else str(v)


def run_tables(config, key, test, images, workdir, classifiers, *, log) -> dict:
  nets = core.names(config.table1)
  table1, sets, rows, common = _study(
      nets, classifiers, config, key, test, images, workdir, log=log,
      noise_rms=_floats(config.noise_rms, "noise_rms", empty_ok=True),
      noise_stddev=_floats(config.noise_stddev, "noise_stddev", empty_ok=True))
  _plot_examples(workdir / "adversarial_examples.png", sets)
  return {"table1": table1, "table2": rows, "table2_images": common}


def tables_markdown(config, numbers: dict) -> str:
  """Tables 1 and 2, in the config's order (``numbers`` may come back from JSON)."""
  nets = core.names(config.table1)
  table1 = numbers["table1"]
  body = []
  for n in nets:
    r = table1[n]
    paper = PAPER_TABLE1.get(paper_name(n))
    body.append([display(n), core.pct(r["train_error"]), core.pct(r["test_error"]),
                 core.number(r["distortion"]), f"{r['succeeded']}/{r['attacked']}",
                 core.MISSING if paper is None else
                 f"{core.pct(paper[0], 2)} / {core.pct(paper[1], 2)} / {paper[2]:g}"])
  title = _cross_title(config, numbers["table2_images"], config.attack_split)
  return ("### Table 1: training error, test error and average minimum distortion\n\n"
          + f"(attacked: the first {config.num_attack_images} {config.attack_split} images "
          "each net classifies correctly; the paper: the training set)\n\n"
          + core.markdown_table(["net", "training error", "test error",
                                 "av. min. distortion", "attacks succeeded",
                                 "paper: training / test error / distortion"], body)
          + "\n\n"
          + cross_markdown(f"Table 2: cross-model generalisation: {title}",
                           numbers["table2"], nets, PAPER_TABLE2))


def run_cross_training(config, key, test, images, workdir, classifiers, *, log) -> dict:
  nets = core.names(config.cross_training)
  table3, _, rows, common = _study(
      nets, classifiers, config, key, test, images, workdir, log=log,
      # Table 4's noise is at the magnified rows' level: RMS, and the paper's
      # stddev rows when the config asks for them.
      noise_rms=[config.magnify_rms],
      noise_stddev=[config.magnify_rms] if config.noise_stddev else [],
      magnify_rms=config.magnify_rms)
  return {"table3": table3, "table4": rows, "table4_images": common}


def cross_training_markdown(config, numbers: dict) -> str:
  """Tables 3 and 4, in the config's order (``numbers`` may come back from JSON)."""
  nets = core.names(config.cross_training)
  table3 = numbers["table3"]
  body = []
  for n in nets:
    r = table3[n]
    body.append([display(n), r["trained_on"], _count(r["train_images"]),
                 core.pct(r["train_error"]), core.pct(r["test_error"]),
                 core.number(r["distortion"])])
  title = _cross_title(config, numbers["table4_images"], config.cross_training_split)
  return ("### Table 3: nets trained on disjoint halves of the MNIST training set\n\n"
          + core.markdown_table(["net", "trained on", "training images",
                                 "training error", "test error", "av. min. distortion"],
                                body) + "\n\n"
          + cross_markdown(f"Table 4: cross-training-set generalisation: {title}",
                           numbers["table4"], nets, PAPER_TABLE4, PAPER_TABLE4_NOTE))


# --------------------------------------------------------------------------


def _specs(config, part: str) -> list[str]:
  """The classifier specs a part names."""
  if part == "units":
    return [split_layer(item)[0] for item in core.names(config.units.layers)]
  return core.names(config.table1 if part == "tables" else config.cross_training)


def validate(config, num_test: int, num_train: int = 60000) -> list[str]:
  """Checks every setting, loading nothing; returns the parts to run."""
  parts = core.parse_parts(config.parts, PARTS)
  if config.study:
    for factor in core.names(config.study):
      if factor not in szegedy_config.STUDY_FACTORS:
        raise ValueError(f"config.study names {factor!r}; known factors: "
                         f"{', '.join(szegedy_config.STUDY_FACTORS)}.")
    if parts != ["tables"]:
      raise ValueError("The study runs the tables part once per factor. Fix: "
                       "config.parts = 'tables' (or config.study = '' for no study).")
  for field, choices in (("attack_split", SPLITS), ("cross_training_split", SPLITS),
                         ("target_rule", ("random", "next"))):
    if config[field] not in choices:
      raise ValueError(f"config.{field} must be one of {', '.join(choices)}; got "
                       f"{config[field]!r}.")
  magnify = core.names(config.magnify)
  if not magnify or set(magnify) - set(MAGNIFY_KINDS):
    raise ValueError(f"config.magnify takes comma-separated kinds of "
                     f"{', '.join(MAGNIFY_KINDS)}; got {config.magnify!r}.")

  def positive_int(value, name, most=None):
    if not isinstance(value, int) or value < 1 or (most is not None and value > most):
      bound = f" and at most {most}" if most is not None else ""
      raise ValueError(f"config.{name} must be an int >= 1{bound}; got {value!r}.")

  if "units" in parts:
    u = config.units
    positive_int(u.num_images, "units.num_images", num_test)
    for name in ("num_random", "show_rows"):
      positive_int(u[name], f"units.{name}")
    positive_int(u.show_k, "units.show_k", u.num_images)
    for k in _floats(u.purity_k, "units.purity_k"):
      positive_int(int(k) if k == int(k) else k, "units.purity_k entries", u.num_images)
  for part in parts:
    specs = _specs(config, part)
    if not specs:
      field = {"units": "units.layers", "tables": "table1"}.get(part, part)
      raise ValueError(f"The {part} part names no nets. Fix: set config.{field}.")
    core.check_classifiers(*specs)  # one clear error for an unknown net
    for name in specs:
      if zoo.parse_spec(name)[0] == "pretrained":
        raise ValueError(f"The {part} part cannot take {name!r}: this experiment is on "
                         "MNIST. Fix: name a 10-class MNIST classifier.")
  if {"tables", "cross_training"} & set(parts):
    sizes = {"test": num_test, "train": num_train}
    used = ([config.attack_split] if "tables" in parts else []) + (
        [config.cross_training_split] if "cross_training" in parts else [])
    positive_int(config.num_attack_images, "num_attack_images", min(sizes[u] for u in used))
    for name in ("c_search_steps", "max_iters", "chunk_images"):
      positive_int(config.attack[name], f"attack.{name}")
    if not (isinstance(config.attack.chunk_size, int) and config.attack.chunk_size >= 0):
      raise ValueError(f"config.attack.chunk_size must be an int >= 0 (0: one vmap); got "
                       f"{config.attack.chunk_size!r}.")
    _floats(config.noise_rms, "noise_rms", empty_ok=True)
    _floats(config.noise_stddev, "noise_stddev", empty_ok=True)
    _floats(config.magnify_rms, "magnify_rms")
  return parts


def load_classifiers(config, parts, *, log=print) -> dict[str, Classifier]:
  """Every classifier the parts name (``zoo.resolve``), checked to fit its part.

  Raises:
    ValueError: a classifier does not take 28x28x1 images into 10 classes, or
      a units layer does not exist (the message names the part and the fix).
  """
  classifiers = {}
  for part in parts:
    for name in _specs(config, part):
      if name not in classifiers:
        classifier = zoo.resolve(name, log=log)
        shape = getattr(classifier.apply_fn, "input_shape", None)
        if shape is not None and tuple(shape) != IMAGE_SHAPE:
          raise ValueError(f"The {part} part cannot take {name!r}: it takes "
                           f"{tuple(shape)} images, not MNIST's {IMAGE_SHAPE}. Fix: "
                           "name a 10-class MNIST classifier.")
        k = num_classes_of(classifier.apply_fn, classifier.params, IMAGE_SHAPE)
        if k != NUM_CLASSES:
          raise ValueError(f"The {part} part cannot take {name!r}: it has {k} classes, "
                           f"not MNIST's {NUM_CLASSES}. Fix: name a 10-class MNIST "
                           "classifier.")
        classifiers[name] = classifier
  if "units" in parts:
    for item in core.names(config.units.layers):
      name, layer = split_layer(item)
      layers = feature_layers(name, classifiers[name])
      if layer not in layers:
        raise ValueError(f"{name} has no layer {layer!r}; its layers are "
                         f"{', '.join(layers)}. Fix: config.units.layers = "
                         "'net:layer'.")
  return classifiers


# The cells the study compares: Table 2's (row net, column net) and Table 1's
# distortions, by the paper's names.
STUDY_CELLS = (("FC10(1e-4)", "FC100-100-10"), ("FC10(1e-4)", "AE400-10"),
               ("FC100-100-10", "FC10(1e-4)"), ("FC200-200-10", "FC10(1e-4)"),
               ("FC200-200-10", "FC100-100-10"))
STUDY_DISTORTIONS = ("FC10(1e-4)", "FC100-100-10", "FC200-200-10", "AE400-10")


def _study_numbers(summary: dict) -> dict:
  """The study's cells of one variant's summary, keyed by the paper's names."""
  by_paper = {paper_name(n): n for n in summary["table1"]}
  cells = {}
  for row in summary["table2"]:
    if row.get("kind") == "adversarial":
      for column, net in by_paper.items():
        cells[(paper_name(row["source"]), column)] = row["errors"][net]
    if row.get("kind") == "noise_stddev":
      for column, net in by_paper.items():
        cells[(f"stddev {row['source']}", column)] = row["errors"][net]
  distortions = {paper_name(n): r["distortion"] for n, r in summary["table1"].items()}
  return {"cells": cells, "distortions": distortions, "images": summary["table2_images"]}


def study_markdown(config, summaries: dict) -> str:
  """One row per factor: the cells of Table 2 the paper reverses, and Table 1's distortions."""
  cells = STUDY_CELLS + (("stddev 0.3", "FC10(1e-4)"), ("stddev 0.3", "FC100-100-10"))
  fmt = lambda cell: f"{cell[0]} → {cell[1]}" if not cell[0].startswith("stddev") else (
      f"noise {cell[0]} → {cell[1]}")
  header = (["factor changed (one at a time)", "images"] + [fmt(c) for c in cells]
            + [f"distortion {n}" for n in STUDY_DISTORTIONS])
  paper_row = (["**the paper**", "train set"]
               + [core.pct(PAPER_TABLE2[c]) if c in PAPER_TABLE2 else core.MISSING
                  for c in cells]
               + [f"{PAPER_TABLE1[n][2]:g}" for n in STUDY_DISTORTIONS])
  rows = [paper_row]
  for factor, summary in summaries.items():
    numbers = _study_numbers(summary)
    rows.append([f"{factor}: {szegedy_config.STUDY_FACTORS[factor]}", str(numbers["images"])]
                + [core.pct(numbers["cells"][c]) if c in numbers["cells"] else core.MISSING
                   for c in cells]
                + [core.number(numbers["distortions"].get(n), 3) for n in STUDY_DISTORTIONS])
  return ("### Single-factor study: which of the paper's choices moves the cross-model "
          "cells\n\nEach row is the `tables` preset on the first "
          f"{config.num_attack_images} images with one factor changed (the last row: all "
          "of the paper's stated choices together). Cells: error of the column net on "
          "the row net's adversarial examples, on the images every net of that variant "
          "classifies correctly.\n\n" + core.markdown_table(header, rows) + "\n")


def run_study(config, workdir, *, log=print) -> dict:
  """Runs each factor of ``config.study`` as a variant in ``workdir/<factor>``.

  Each variant is a full run of its own (checkpointed, resumable); a finished
  one is read back. ``study.md`` and ``study.json`` compare them.
  """
  factors = core.names(config.study)
  variants = {f: szegedy_config.study_variant(config, f) for f in factors}
  test = data.load("mnist", "test")
  for variant in variants.values():
    validate(variant, len(test[1]))
  # Each variant guards its own subdirectory, so a study may be extended by
  # more factors: the finished variants are read back.
  workdir, resuming = core.prepare_workdir(workdir, config, ignore=("study",))
  if resuming:
    log(f"Resuming the study in {workdir}")
  summaries = {}
  for i, (factor, variant) in enumerate(variants.items()):
    log(f"[study] {i + 1}/{len(variants)} {factor}: {szegedy_config.STUDY_FACTORS[factor]}")
    summaries[factor] = run(variant, workdir / factor, log=log)
  markdown = ("# Intriguing properties: single-factor study\n\n"
              + study_markdown(config, summaries))
  core.write_text(workdir / "study.md", markdown)
  numbers = {f: {"cells": {f"{a} -> {b}": v for (a, b), v in n["cells"].items()},
                 "distortions": n["distortions"], "images": n["images"]}
             for f, n in ((f, _study_numbers(s)) for f, s in summaries.items())}
  core.write_json(workdir / "study.json", numbers)
  log(f"Wrote {workdir / 'study.md'}")
  return numbers


MARKDOWN = {"units": lambda config, r: units_markdown(config, r["units"]),
            "tables": tables_markdown, "cross_training": cross_training_markdown}


@core.reported
def run(config, workdir, *, log=print) -> dict:
  """Runs ``config.parts``; returns every number (also in ``summary.json``).

  Every setting is checked and every classifier loaded before the work
  directory is touched, so a bad config leaves nothing behind that a corrected
  rerun would conflict with. A part that finished (``<part>/result.json``) is
  read back on a rerun; an unfinished one resumes from its saved adversarial
  examples.
  """
  if config.study:
    return run_study(config, workdir, log=log)
  test = data.load("mnist", "test")
  parts = validate(config, len(test[1]))
  splits = {"test": test}
  if "train" in ((config.attack_split if "tables" in parts else ""),
                 (config.cross_training_split if "cross_training" in parts else "")):
    splits["train"] = data.load("mnist", "train")
  classifiers = load_classifiers(config, parts, log=log)
  workdir, resuming = core.prepare_workdir(workdir, config)
  if resuming:
    log(f"Resuming in {workdir}")
  args = lambda stream: (config, core.rng(config.seed, stream), test)
  rest = (workdir, classifiers)
  runners = {
      "units": lambda: {"units": run_units(*args(UNITS_STREAM), *rest, log=log)},
      "tables": lambda: run_tables(*args(TABLE2_STREAM), splits[config.attack_split],
                                   *rest, log=log),
      "cross_training": lambda: run_cross_training(
          *args(TABLE4_STREAM), splits[config.cross_training_split], *rest, log=log),
  }
  results = core.run_parts(workdir, parts, runners, log=log)
  summary = {key: value for part in parts for key, value in results[part].items()
             if key != "seconds"}
  target = ("a random wrong label" if config.target_rule == "random"
            else "the label (label + 1) mod 10")
  header = (f"# Intriguing properties of neural networks, on MNIST\n\npreset "
            f"`{config.preset}`; L-BFGS on the first {config.num_attack_images} "
            f"{config.attack_split} images (Tables 1-2) and "
            f"{config.cross_training_split} images (Tables 3-4) each net classifies "
            f"correctly, towards {target}. Where the paper gives a cell, its number "
            "stands beside ours: (paper x %).\n")
  core.write_text(workdir / "results.md",
                  "\n".join([header] + [MARKDOWN[part](config, results[part])
                                        for part in parts]))
  core.write_json(workdir / "summary.json", summary)
  core.write_tensorboard(workdir, [{"step": 0, **summary_scalars(summary)}], step="step",
                         name="summary")
  log(f"Wrote {workdir / 'results.md'}")
  return summary


def summary_scalars(summary: dict) -> dict[str, float]:
  """Every number of a summary as TensorBoard tags (step 0).

  ``table1/<net>/<field>`` (and table3), ``table2/<row>/<column net>`` (and
  table4) with the nets' table labels, and ``units/<net:layer>/...``.
  """
  from experiments import tensorboard
  summary = core.jsonable(summary)
  tags = {}
  for table in ("table1", "table3"):
    for net, fields in summary.get(table, {}).items():
      tags.update(tensorboard.flatten(fields, prefix=f"{table}/{display(net)}/"))
  for table in ("table2", "table4"):
    for row in summary.get(table, []):
      for net, error in row["errors"].items():
        if error is not None:
          tags[f"{table}/{row['row']}/{display(net)}"] = float(error)
  for item, fields in summary.get("units", {}).items():
    tags.update(tensorboard.flatten({"live": fields["live"], "purity": {
        k: {group: v["mean"] for group, v in groups.items()}
        for k, groups in fields["purity"].items()}}, prefix=f"units/{item}/"))
  return tags


def main(argv):
  del argv
  run(core.CONFIG.value, core.WORKDIR.value)


if __name__ == "__main__":
  core.cli(main)
