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

Outputs: ``results.md`` (every table), ``summary.json`` (every number),
``adversarial_examples.png``, the units figures, and
``adversarial/<net>.npz`` (the adversarial examples, saved after every chunk
of ``attack.chunk_images`` images: a rerun of the same command resumes there).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import common
from experiments.szegedy2013.configs import properties as szegedy_config
from foolingjax import attacks, data, directions, images, models, training, zoo
from foolingjax.attacks import perturbations

_CONFIG = common.CONFIG
_WORKDIR = common.WORKDIR

PARTS = szegedy_config.PARTS
NUM_CLASSES = 10
# fold_in streams of the seed's key: units 0, Table 2's noise 1, Table 4's noise
# 2, the attack targets 3.
TARGETS_STREAM = 3

DISPLAY = {
    "fc10_wd1e-4_mnist": "FC10(1e-4)",
    "fc10_wd1e-2_mnist": "FC10(1e-2)",
    "fc10_wd1_mnist": "FC10(1)",
    "fc100_100_10_mnist": "FC100-100-10",
    "fc200_200_10_mnist": "FC200-200-10",
    "fc100_100_10_sigmoid_mnist": "FC100-100-10 sigmoid",
    "fc200_200_10_sigmoid_mnist": "FC200-200-10 sigmoid",
    "fc123_456_10_mnist": "FC123-456-10",
    "ae400_10_mnist": "AE400-10",
    "lenet_mnist": "LeNet",
    "fc100_100_10_mnist_p1": "FC100-100-10 (P1)",
    "fc123_456_10_mnist_p1": "FC123-456-10 (P1)",
    "fc100_100_10_mnist_p2": "FC100-100-10' (P2)",
}


def display(name: str) -> str:
  return DISPLAY.get(name, name)


def _names(text: str) -> list[str]:
  return [n.strip() for n in text.split(",") if n.strip()]


def parts_of(config) -> list[str]:
  parts = _names(config.parts)
  unknown = sorted(set(parts) - set(PARTS))
  if unknown or not parts:
    raise ValueError(f"Bad config.parts {config.parts!r}: unknown {unknown}. Fix: a "
                     f"comma-separated subset of {', '.join(PARTS)}.")
  return [p for p in PARTS if p in parts]


def _floats(text: str, name: str) -> list[float]:
  try:
    values = [float(v) for v in _names(str(text))]
  except ValueError:
    values = []
  if not values or any(v <= 0 for v in values):
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


def _pct(v: float) -> str:
  return "—" if not np.isfinite(v) else f"{100 * v:.1f}%"


def _dist(v: float) -> str:
  return "—" if not np.isfinite(v) else f"{v:.4f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def parse_tables(text: str) -> dict[str, dict[str, dict[str, str]]]:
  """Reads ``results.md`` back: ``{section heading: {row label: {column: cell}}}``."""
  tables: dict[str, dict[str, dict[str, str]]] = {}
  heading, header = None, None
  for line in text.splitlines():
    if line.startswith("### "):
      heading, header = line[4:].strip(), None
    elif line.startswith("|") and heading is not None:
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if header is None:
        header = cells
        tables[heading] = {}
      elif not set("".join(cells)) <= set("-"):
        tables[heading][cells[0]] = dict(zip(header, cells))
  return tables


# --------------------------------------------------------------------------
# Units vs random directions


def _features(classifier, layer: str, x: np.ndarray, batch: int = 1000) -> np.ndarray:
  apply_fn, params = classifier
  features = models.feature_fn(apply_fn)
  step = jax.jit(lambda p, xb: features(p, xb)[layer].reshape((xb.shape[0], -1)))
  probe = features(params, jnp.asarray(x[:1]))
  if layer not in probe:
    raise ValueError(f"{apply_fn.name} has no layer {layer!r}; its layers are "
                     f"{', '.join(probe)}. Fix: config.units.layers = 'net:layer'.")
  return np.concatenate([np.asarray(step(params, x[i:i + batch]))
                         for i in range(0, len(x), batch)])


def run_units(config, key, test, workdir: pathlib.Path, *, log) -> dict:
  cfg = config.units
  ks = [int(k) for k in _floats(cfg.purity_k, "units.purity_k")]
  x = data.to_float(test[0][: cfg.num_images])
  y = test[1][: cfg.num_images]
  results = {}
  for i, item in enumerate(_names(cfg.layers)):
    name, _, layer = item.partition(":")
    t0 = time.perf_counter()
    phi = jnp.asarray(_features(zoo.load_classifier(name, log=log), layer, x))
    dim = phi.shape[1]
    # Units whose activation never varies over the images (dead ReLUs) rank
    # nothing; they are counted and left out.
    live = np.flatnonzero(np.asarray(jnp.max(phi, 0) > jnp.min(phi, 0)))
    k_dirs, k_sets, k_show = jax.random.split(jax.random.fold_in(key, i), 3)
    units = jnp.eye(dim)[live]
    directions = directions.random_directions(k_dirs, cfg.num_random, dim)
    yj = jnp.asarray(y)
    per_k = {}
    for k in ks:
      sets = jax.vmap(lambda kk: jax.random.permutation(kk, len(y))[:k])(
          jax.random.split(jax.random.fold_in(k_sets, k), cfg.num_random))
      purity = {
          "units": directions.label_purity(yj, directions.top_k_along(phi, units, k)[0], NUM_CLASSES),
          "directions": directions.label_purity(
              yj, directions.top_k_along(phi, directions, k)[0], NUM_CLASSES),
          "random_sets": directions.label_purity(yj, sets, NUM_CLASSES),
      }
      per_k[k] = {group: {"mean": float(jnp.mean(p)), "at_least_90": float(jnp.mean(p >= 0.9)),
                          "values": [float(v) for v in p]} for group, p in purity.items()}
    shown_units = np.sort(np.asarray(jax.random.choice(
        k_show, jnp.asarray(live), (min(cfg.show_rows, len(live)),), replace=False)))
    top_units = np.asarray(directions.top_k_along(phi, jnp.eye(dim)[shown_units], cfg.show_k)[0])
    top_dirs = np.asarray(directions.top_k_along(phi, directions[: cfg.show_rows], cfg.show_k)[0])
    figure = workdir / f"units_{name}_{layer}.png"
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
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = max(len(top_units), len(top_dirs))
  k = top_units.shape[1]
  fig, axes = plt.subplots(rows, 2, figsize=(2 * 0.75 * k + 0.6, 0.95 * rows + 0.6),
                           squeeze=False)
  for column, (tops, label) in enumerate(((top_units, "unit"), (top_dirs, "random direction"))):
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
  _savefig(fig, path)


def _savefig(fig, path):
  import matplotlib.pyplot as plt
  tmp = path.with_name(path.name + ".tmp.png")
  fig.savefig(tmp, dpi=90)
  plt.close(fig)
  tmp.replace(path)


def units_markdown(results: dict) -> str:
  rows = []
  for item, r in results.items():
    for k, p in r["purity"].items():
      rows.append([f"{display(r['net'])} {r['layer']}, top {k}", f"{r['live']}/{r['dim']}",
                   str(r["num_random"]),
                   _pct(p["units"]["mean"]), _pct(p["directions"]["mean"]),
                   _pct(p["random_sets"]["mean"]),
                   _pct(p["units"]["at_least_90"]), _pct(p["directions"]["at_least_90"])])
  header = ["layer, top-k images", "live units", "random directions", "units: mean purity",
            "random directions: mean purity", "random image sets: mean purity",
            "units with purity ≥ 90%", "directions with purity ≥ 90%"]
  return ("### Units vs random directions: label purity of the top-k held-out images\n\n"
          + markdown_table(header, rows) + "\n")


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
  if path.exists():
    with np.load(path) as saved:
      if not (np.array_equal(saved["index"], index)
              and np.array_equal(saved["targets"], state["targets"])):
        raise RuntimeError(
            f"{path} holds adversarial examples of other images or targets than this "
            f"run gives {display(name)} (were its weights retrained?). Fix: pass a new "
            "--workdir, or delete that file to recompute it.")
      state = {k: saved[k] for k in state}
    if int(state["done"]) < n:
      log(f"[attack] {display(name)}: resuming at image {int(state['done'])}/{n}")
  cfg = config.attack
  attack = jax.jit(lambda p, xb, tb: attacks.lbfgs_attack(
      apply_fn, p, xb, tb, c_search_steps=cfg.c_search_steps, max_iters=cfg.max_iters,
      tol=cfg.tol, chunk_size=cfg.chunk_size or None))
  chunk = cfg.chunk_images
  t0 = time.perf_counter()
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
    _save_npz(path, state)
    log(f"[attack] {display(name)}: {int(state['done'])}/{n} images, "
        f"{int(state['success'][: int(state['done'])].sum())} succeeded "
        f"({time.perf_counter() - t0:.0f} s)")
  return state


def _save_npz(path: pathlib.Path, arrays: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  tmp.replace(path)


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


def cross_rows(key, sets: dict[str, Attacked], predicts: dict, x, y, *, noise_rms,
               magnify_rms=None) -> tuple[list[dict], int]:
  """Rows of a cross-model table: ``{"row", "distortion", "images", "errors": {net: rate}}``.

  Every row is made from the same images: those of ``x`` that every net
  classifies correctly, so each error is caused by the perturbation. Rows: each
  net's adversarial examples, Gaussian noise at the same per-image distortion,
  optionally the adversarial perturbations magnified to ``magnify_rms``, and
  Gaussian noise at each of ``noise_rms``.

  Returns:
    ``(rows, number of images every net classifies correctly)``.
  """
  common = np.flatnonzero(np.all([p(x) == y for p in predicts.values()], axis=0))
  sets = {n: s.within(common) for n, s in sets.items()}
  errors = lambda xs, ys: {m: _error(p, xs, ys) for m, p in predicts.items()}
  mean = lambda d: float(np.mean(d)) if len(d) else float("nan")
  rows = []
  for name, s in sets.items():
    rows.append({"row": f"adversarial for {display(name)}", "distortion": s.mean_distortion,
                 "errors": errors(s.adv, s.labels), "images": len(s.labels)})
  for i, (name, s) in enumerate(sets.items()):
    noisy, dist = (_at_distortion(jax.random.fold_in(key, i), s.clean, s.rms) if len(s.labels)
                   else (s.clean, np.zeros(0)))
    rows.append({"row": f"Gaussian noise at the distortion of {display(name)}",
                 "distortion": mean(dist), "errors": errors(np.asarray(noisy), s.labels),
                 "images": len(s.labels)})
  if magnify_rms is not None:
    for name, s in sets.items():
      magnified, dist = (_scale(s.clean, s.adv - s.clean, magnify_rms) if len(s.labels)
                         else (s.clean, np.zeros(0)))
      rows.append({"row": f"adversarial for {display(name)}, magnified to RMS {magnify_rms:g}",
                   "distortion": mean(dist), "errors": errors(np.asarray(magnified), s.labels),
                   "images": len(s.labels)})
  for j, rms in enumerate(noise_rms):
    noisy, dist = _at_distortion(jax.random.fold_in(key, 1000 + j), x[common], rms)
    rows.append({"row": f"Gaussian noise, RMS {rms:g}", "distortion": mean(dist),
                 "errors": errors(np.asarray(noisy), y[common]), "images": len(common)})
  return rows, len(common)


def cross_markdown(title: str, rows: list[dict], nets: list[str]) -> str:
  header = ["examples"] + [display(n) for n in nets] + ["av. distortion", "images"]
  body = [[r["row"]] + [_pct(r["errors"][n]) for n in nets]
          + [_dist(r["distortion"]), str(r["images"])] for r in rows]
  return f"### {title}\n\n" + markdown_table(header, body) + "\n"


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


def _attack_inputs(config, test):
  """The first ``num_attack_images`` test images and one wrong target label each.

  The targets are drawn once from the seed, so every net (of Table 1 and of
  Table 3) is attacked towards the same label on the same image.
  """
  n = config.num_attack_images
  x = data.to_float(test[0][:n])
  y = np.asarray(test[1][:n])
  key = jax.random.fold_in(jax.random.key(config.seed), TARGETS_STREAM)
  targets = np.asarray(perturbations.random_targets(key, jnp.asarray(y), NUM_CLASSES))
  return x, y, targets


def _attack_all(nets, classifiers, predicts, config, test, workdir, *, log):
  x, y, targets = _attack_inputs(config, test)
  sets = {}
  for name in nets:
    state = adversarial_set(name, classifiers[name], x, y, targets, config,
                            workdir / "adversarial" / f"{name}.npz", log=log,
                            predict=predicts[name])
    sets[name] = Attacked.from_state(state, x, y, targets)
  return x, y, sets


def _study(nets, config, key, test, workdir, *, log, noise_rms, magnify_rms=None):
  """One table per net (errors, distortion) and the cross table of ``nets``."""
  classifiers = {n: zoo.load_classifier(n, log=log) for n in nets}
  per_net = {}
  for name in nets:
    preset = zoo.preset_config(name)
    own, _ = zoo.training_data(preset)  # the half a cross-training-set net saw
    part = preset.get("train_part")
    per_net[name] = {"trained_on": "all" if part is None else f"P{part + 1}",
                     "train_images": len(own[1]),
                     "train_error": 1.0 - training.accuracy(classifiers[name], *own),
                     "test_error": 1.0 - training.accuracy(classifiers[name], *test)}
  # One jitted predictor per net, shared by the attack's selection and the cross table.
  predicts = {n: _predict_fn(classifiers[n]) for n in nets}
  x, y, sets = _attack_all(nets, classifiers, predicts, config, test, workdir, log=log)
  for name, s in sets.items():
    per_net[name].update(distortion=s.mean_distortion, attacked=s.attacked,
                         succeeded=len(s.labels))
  rows, common = cross_rows(key, sets, predicts, x, y, noise_rms=noise_rms,
                            magnify_rms=magnify_rms)
  title = (f"error rate of each net (columns) on the examples of each row, made from the "
           f"{common} of the first {len(y)} test images that every net classifies correctly")
  return per_net, sets, rows, common, title


def run_tables(config, key, test, workdir, *, log) -> tuple[dict, str]:
  nets = _names(config.table1)
  table1, sets, rows, common, title = _study(
      nets, config, key, test, workdir, log=log,
      noise_rms=_floats(config.noise_rms, "noise_rms"))
  _plot_examples(workdir / "adversarial_examples.png", sets)
  body = [[display(n), _pct(r["train_error"]), _pct(r["test_error"]), _dist(r["distortion"]),
           f"{r['succeeded']}/{r['attacked']}"] for n, r in table1.items()]
  md = ("### Table 1: training error, test error and average minimum distortion\n\n"
        + markdown_table(["net", "training error", "test error", "av. min. distortion",
                          "attacks succeeded"], body) + "\n\n"
        + cross_markdown(f"Table 2: cross-model generalisation: {title}", rows, nets))
  return {"table1": table1, "table2": rows, "table2_images": common}, md


def run_cross_training(config, key, test, workdir, *, log) -> tuple[dict, str]:
  nets = _names(config.cross_training)
  table3, _, rows, common, title = _study(
      nets, config, key, test, workdir, log=log, noise_rms=[config.magnify_rms],
      magnify_rms=config.magnify_rms)
  body = [[display(n), r["trained_on"], str(r["train_images"]), _pct(r["train_error"]),
           _pct(r["test_error"]), _dist(r["distortion"])] for n, r in table3.items()]
  md = ("### Table 3: nets trained on disjoint halves of the MNIST training set\n\n"
        + markdown_table(["net", "trained on", "training images", "training error",
                          "test error", "av. min. distortion"], body) + "\n\n"
        + cross_markdown(f"Table 4: cross-training-set generalisation: {title}", rows, nets))
  return {"table3": table3, "table4": rows, "table4_images": common}, md


# --------------------------------------------------------------------------


def validate(config, num_test: int) -> list[str]:
  """Checks every setting before anything is written; returns the parts to run."""
  parts = parts_of(config)

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
    for item in _names(u.layers):
      name, sep, layer = item.partition(":")
      if not sep:
        raise ValueError(f"config.units.layers entries are 'net:layer'; got {item!r}.")
      # The layer names of the net's architecture, from shapes alone.
      preset = zoo.preset_config(name)
      apply_fn, params = models.init(preset.model, jax.random.key(0),
                                     input_shape=data.image_shape(preset.dataset))
      layers = jax.eval_shape(models.feature_fn(apply_fn), params,
                              jnp.zeros((1, *apply_fn.input_shape), jnp.float32))
      if layer not in layers:
        raise ValueError(f"{name} has no layer {layer!r}; its layers are "
                         f"{', '.join(layers)}. Fix: config.units.layers = 'net:layer'.")
  for part, key in (("tables", "table1"), ("cross_training", "cross_training")):
    if part in parts:
      for name in _names(config[key]):
        zoo.preset_config(name)  # one clear error for an unknown net
  if {"tables", "cross_training"} & set(parts):
    positive_int(config.num_attack_images, "num_attack_images", num_test)
    for name in ("c_search_steps", "max_iters", "chunk_images"):
      positive_int(config.attack[name], f"attack.{name}")
    if not (isinstance(config.attack.chunk_size, int) and config.attack.chunk_size >= 0):
      raise ValueError(f"config.attack.chunk_size must be an int >= 0 (0: one vmap); got "
                       f"{config.attack.chunk_size!r}.")
    _floats(config.noise_rms, "noise_rms")
    _floats(config.magnify_rms, "magnify_rms")
  return parts


def run(config, workdir, *, log=print) -> dict:
  """Runs ``config.parts``; returns every number (also in ``summary.json``).

  Every setting is checked before the work directory is touched, so a bad
  config leaves nothing behind that a corrected rerun would conflict with.
  """
  test = data.load("mnist", "test")
  parts = validate(config, len(test[1]))
  workdir, resuming = common.prepare_workdir(workdir, config)
  if resuming:
    log(f"Resuming in {workdir}")
  key = jax.random.key(config.seed)
  summary, sections = {}, []
  if "units" in parts:
    summary["units"] = run_units(config, jax.random.fold_in(key, 0), test, workdir, log=log)
    sections.append(units_markdown(summary["units"]))
  if "tables" in parts:
    numbers, md = run_tables(config, jax.random.fold_in(key, 1), test, workdir, log=log)
    summary.update(numbers)
    sections.append(md)
  if "cross_training" in parts:
    numbers, md = run_cross_training(config, jax.random.fold_in(key, 2), test, workdir, log=log)
    summary.update(numbers)
    sections.append(md)
  header = (f"# Intriguing properties of neural networks, on MNIST\n\npreset "
            f"`{config.preset}`; L-BFGS on the first {config.num_attack_images} test images "
            f"each net classifies correctly, towards a random wrong label.\n")
  tmp = workdir / "results.md.tmp"
  tmp.write_text("\n".join([header] + sections))
  tmp.replace(workdir / "results.md")
  common.write_json(workdir / "summary.json", _jsonable(summary))
  log(f"Wrote {workdir / 'results.md'}")
  return summary


def _jsonable(tree):
  if isinstance(tree, dict):
    return {str(k): _jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_jsonable(v) for v in tree]
  if isinstance(tree, (np.floating, np.integer)):
    return tree.item()
  if isinstance(tree, float) and not np.isfinite(tree):
    return None
  return tree


def main(argv):
  del argv
  config = _CONFIG.value
  run(config, pathlib.Path(_WORKDIR.value or f"runs/szegedy_{config.preset}"))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
