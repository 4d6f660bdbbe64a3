"""FGSM / PGD accuracy-vs-ε curves and a grid of L-BFGS adversarial examples.

  python -m experiments.attacks_defences.attack --config=experiments/attacks_defences/configs/attack.py:mnist \
      --workdir=runs/attack_mnist

Writes to the work directory:
  config.json; curves.json ({classifier: {attack_norm: [{eps, accuracy}]}});
  metrics.jsonl (one line per classifier, attack and ε); accuracy_vs_eps.png;
  lbfgs.json (per-image labels, confidences, distortions and Szegedy's average
  minimum distortion); lbfgs_grid.png (rows: original, perturbation magnified,
  adversarial, each captioned with the predicted label and its confidence).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import core
from foolingjax import attacks, contract, data, images, zoo
from foolingjax.attacks import metrics

ATTACKS = (("fgsm", "linf"), ("pgd", "linf"), ("fgsm", "l2"), ("pgd", "l2"))


def make_attack_fn(apply_fn, *, attack: str, norm: str, steps: int, step_factor: float,
                   random_start: bool):
  """``attack(key, params, x, labels, eps) -> adv``, jitted once; ε is traced."""
  def run(key, params, x, labels, eps):
    if attack == "fgsm":
      return attacks.fgsm(apply_fn, params, x, labels, eps=eps, norm=norm)
    return attacks.pgd(key, apply_fn, params, x, labels, eps=eps,
                       step_size=step_factor * eps / steps, steps=steps, norm=norm,
                       random_start=random_start)
  return jax.jit(run)


def _check_config(config) -> None:
  for name in ("eps_linf", "eps_l2"):
    for eps in config[name]:
      if not (eps >= 0 and np.isfinite(eps)) or (name == "eps_linf" and eps > 1):
        raise ValueError(f"config.{name} holds {eps!r}; each ε must be finite, >= 0 "
                         "(and <= 1 for L∞).")
  core.check([
      (config.num_images >= 1 and config.batch_size >= 1 and config.lbfgs_num_images >= 1,
       "num_images, batch_size and lbfgs_num_images must be >= 1"),
      (len(core.names(config.classifiers)) >= 1, "classifiers names no classifier"),
  ], what="attack")
  core.check_classifiers(*core.names(config.classifiers), config.lbfgs_classifier)


def accuracy_curves(key, classifier, x, y, config, *, log) -> dict[str, list[dict]]:
  """Accuracy of ``classifier`` under each attack for each ε, over ``x``."""
  apply_fn, params = classifier
  predict = jax.jit(lambda p, x: jnp.argmax(apply_fn(p, x), -1))
  curves = {}
  for attack, norm in ATTACKS:
    attack_fn = make_attack_fn(apply_fn, attack=attack, norm=norm,
                               steps=config.pgd_steps,
                               step_factor=config.pgd_step_factor,
                               random_start=config.pgd_random_start)
    points = []
    for eps in config[f"eps_{norm}"]:
      correct = 0
      for start in range(0, len(x), config.batch_size):
        xb = jnp.asarray(x[start:start + config.batch_size])
        yb = jnp.asarray(y[start:start + config.batch_size])
        k_batch = jax.random.fold_in(key, start)
        adv = attack_fn(k_batch, params, xb, yb, jnp.float32(eps))
        correct += int(jnp.sum(predict(params, adv) == yb))
      points.append({"eps": float(eps), "accuracy": correct / len(x)})
      log(f"  {attack}-{norm} eps={eps:g}: accuracy {points[-1]['accuracy']:.4f}")
    curves[f"{attack}_{norm}"] = points
  return curves


def plot_curves(path, curves: dict) -> None:
  plt = core.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for ax, norm, unit in ((axes[0], "linf", "L∞ ε (pixels in [0, 1])"),
                         (axes[1], "l2", "L2 ε")):
    for name, by_attack in curves.items():
      for attack in ("fgsm", "pgd"):
        points = by_attack[f"{attack}_{norm}"]
        ax.plot([p["eps"] for p in points], [p["accuracy"] for p in points],
                marker="o", ms=3, linestyle="-" if attack == "pgd" else "--",
                label=f"{name} {attack.upper()}")
    ax.set_xlabel(unit)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  core.save_figure(fig, path)


def lbfgs_grid(classifier, x, y, config, workdir, *, log) -> dict:
  """Targeted L-BFGS examples (target = label + 1 mod K): JSON and a PNG grid."""
  apply_fn, params = classifier
  k = contract.num_classes_of(apply_fn, params, x.shape[1:])
  targets = (y + 1) % k
  attack = jax.jit(lambda p, x, t: attacks.lbfgs_attack(
      apply_fn, p, x, t, c_search_steps=config.lbfgs_c_search_steps,
      max_iters=config.lbfgs_max_iters, tol=config.lbfgs_tol,
      chunk_size=config.lbfgs_chunk_size or None))
  t0 = time.perf_counter()
  adv, info = jax.block_until_ready(attack(params, jnp.asarray(x), jnp.asarray(targets)))
  seconds = time.perf_counter() - t0
  probs_clean = jax.nn.softmax(apply_fn(params, jnp.asarray(x)))
  probs_adv = jax.nn.softmax(apply_fn(params, adv))
  pred_clean = np.asarray(jnp.argmax(probs_clean, -1))
  pred_adv = np.asarray(jnp.argmax(probs_adv, -1))
  conf_clean = np.asarray(jnp.max(probs_clean, -1))
  conf_adv = np.asarray(jnp.max(probs_adv, -1))
  success = np.asarray(info.success)
  rms = np.asarray(metrics.rms_distortion(jnp.asarray(x), adv))
  result = {
      "classifier": config.lbfgs_classifier,
      "num_images": len(x),
      "success_rate": float(success.mean()),
      "average_minimum_distortion": (
          float(metrics.average_minimum_distortion(jnp.asarray(x), adv, mask=success))
          if success.any() else None),
      "mean_l2": float(np.asarray(info.l2)[success].mean()) if success.any() else None,
      "seconds_including_compile": seconds,
      "images": [
          {"label": int(y[i]), "target": int(targets[i]),
           "clean_prediction": int(pred_clean[i]), "clean_confidence": float(conf_clean[i]),
           "adversarial_prediction": int(pred_adv[i]),
           "adversarial_confidence": float(conf_adv[i]), "success": bool(success[i]),
           "l2": float(info.l2[i]), "rms_distortion": float(rms[i]), "c": float(info.c[i])}
          for i in range(len(x))],
  }
  core.write_json(workdir / "lbfgs.json", result)
  perturbation = np.clip(0.5 + config.magnify * (np.asarray(adv) - x), 0.0, 1.0)
  titles = ([f"{pred_clean[i]} ({conf_clean[i]:.1%})" for i in range(len(x))]
            + [f"x{config.magnify:g}" for _ in range(len(x))]
            + [f"{pred_adv[i]} ({conf_adv[i]:.1%})" for i in range(len(x))])
  images.save_grid(workdir / "lbfgs_grid.png",
                   np.concatenate([x, perturbation, np.asarray(adv)]), titles=titles,
                   ncols=len(x),
                   title=(f"L-BFGS on {config.lbfgs_classifier}: original / perturbation "
                          f"x{config.magnify:g} / adversarial (target = label + 1)"))
  log(f"L-BFGS on {config.lbfgs_classifier}: success {result['success_rate']:.2f}, "
      f"average minimum distortion {result['average_minimum_distortion']}, "
      f"{seconds:.1f} s including compilation")
  return result


@core.reported
def run(config, workdir, *, log=print) -> dict:
  """Runs the curves and the L-BFGS grid; returns ``{"curves", "lbfgs"}``."""
  _check_config(config)
  workdir, _ = core.prepare_workdir(workdir, config)
  key = jax.random.key(config.seed)
  k_curves, _ = jax.random.split(key)
  test_x, test_y = data.load(config.dataset, "test")
  x = test_x[: config.num_images].astype(np.float32) / 255.0
  y = test_y[: config.num_images].astype(np.int32)
  (workdir / "metrics.jsonl").unlink(missing_ok=True)
  curves = {}
  for name in core.names(config.classifiers):
    log(f"{name}:")
    classifier = zoo.resolve(name, log=log)
    curves[name] = accuracy_curves(jax.random.fold_in(k_curves, len(curves)),
                                   classifier, x, y, config, log=log)
    for attack_norm, points in curves[name].items():
      for point in points:
        core.append_jsonl(workdir / "metrics.jsonl",
                            {"classifier": name, "attack": attack_norm, **point})
  core.write_json(workdir / "curves.json", curves)
  plot_curves(workdir / "accuracy_vs_eps.png", curves)
  n = config.lbfgs_num_images
  lbfgs = lbfgs_grid(zoo.resolve(config.lbfgs_classifier, log=log),
                     test_x[:n].astype(np.float32) / 255.0, test_y[:n].astype(np.int32),
                     config, workdir, log=log)
  return {"curves": curves, "lbfgs": lbfgs}


def main(argv):
  del argv
  run(core.CONFIG.value, core.WORKDIR.value)


if __name__ == "__main__":
  core.cli(main)
