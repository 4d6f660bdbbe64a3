"""Accuracy-vs-ε curves for every attack, and a grid of L-BFGS adversarial examples.

``config.attacks`` picks from FGSM, PGD, APGD and Square at each ε, and
DeepFool, C&W and FMN, minimum-norm attacks run once whose accuracy at ε counts
the images with no adversarial found within ε.

  python -m experiments.attacks_defences.attack --config=experiments/attacks_defences/configs/attack.py:mnist \
      --workdir=runs/attack_mnist

Writes to the work directory:
  config.json; curves.json ({classifier: {attack_norm: [{eps, accuracy}]}});
  metrics.jsonl (one line per classifier, attack and ε); accuracy_vs_eps.png;
  tensorboard/ (scalars ``accuracy/<classifier>/<attack_norm>`` and
  ``eps/<classifier>/<attack_norm>``, step = the ε's index in ``eps_linf`` or
  ``eps_l2``; ``lbfgs/<field>`` at step 0);
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

# Attacks at a given ε (one run per ε) and minimum-norm attacks (one run; the
# accuracy at ε counts the images whose smallest adversarial found is farther).
EPS_ATTACKS = ("fgsm_linf", "pgd_linf", "fgsm_l2", "pgd_l2", "apgd_linf", "apgd_l2",
               "square_linf", "square_l2")
MIN_NORM_ATTACKS = ("deepfool_l2", "deepfool_linf", "cw_l2", "fmn_l2", "fmn_linf")
KNOWN_ATTACKS = EPS_ATTACKS + MIN_NORM_ATTACKS
ATTACKS = tuple(tuple(a.split("_")) for a in EPS_ATTACKS[:4])   # the first four


def make_attack_fn(apply_fn, *, attack: str, norm: str, steps: int, step_factor: float,
                   random_start: bool, apgd_steps: int = 100, square_queries: int = 1000):
  """``attack(key, params, x, labels, eps) -> adv``, jitted once; ε is traced."""
  def run(key, params, x, labels, eps):
    if attack == "fgsm":
      return attacks.fgsm(apply_fn, params, x, labels, eps=eps, norm=norm)
    if attack == "apgd":
      return attacks.apgd(key, apply_fn, params, x, labels, eps=eps, norm=norm,
                          steps=apgd_steps)[0]
    if attack == "square":
      return attacks.square(key, apply_fn, params, x, labels, eps=eps, norm=norm,
                            queries=square_queries)[0]
    return attacks.pgd(key, apply_fn, params, x, labels, eps=eps,
                       step_size=step_factor * eps / steps, steps=steps, norm=norm,
                       random_start=random_start)
  return jax.jit(run)


def make_min_norm_fn(apply_fn, *, attack: str, norm: str, config):
  """``attack(params, x, labels) -> (adv, fooled [B], distance [B])`` in ``norm``, jitted."""
  def run(params, x, labels):
    if attack == "deepfool":
      adv, info = attacks.deepfool(apply_fn, params, x, labels, norm=norm,
                                   max_iter=config.deepfool_max_iter)
    elif attack == "cw":
      adv, info = attacks.carlini_wagner_l2(
          apply_fn, params, x, labels, binary_search_steps=config.cw_search_steps,
          steps=config.cw_steps)
    else:
      adv, info = attacks.fmn(apply_fn, params, x, labels, norm=norm, steps=config.fmn_steps)
    fooled = jnp.argmax(apply_fn(params, adv), -1) != labels
    delta = (adv - x).reshape(x.shape[0], -1)
    distance = (jnp.max(jnp.abs(delta), -1) if norm == "linf"
                else jnp.sqrt(jnp.sum(jnp.square(delta), -1)))
    return adv, fooled, distance
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
      (bool(core.names(config.attacks))
       and set(core.names(config.attacks)) <= set(KNOWN_ATTACKS),
       f"attacks {config.attacks!r} must be a comma-separated subset of "
       f"{', '.join(KNOWN_ATTACKS)}"),
  ], what="attack")
  core.check_classifiers(*core.names(config.classifiers), config.lbfgs_classifier)


def accuracy_curves(key, classifier, x, y, config, *, log,
                    desc: str = "[attack]") -> dict[str, list[dict]]:
  """Accuracy of ``classifier`` under each of ``config.attacks`` for each ε, over ``x``."""
  apply_fn, params = classifier
  predict = jax.jit(lambda p, x: jnp.argmax(apply_fn(p, x), -1))
  curves = {}
  num_batches = -(-len(x) // config.batch_size)
  bar = core.Progress(num_batches * sum(
      1 if name in MIN_NORM_ATTACKS else len(config[f"eps_{name.split('_')[1]}"])
      for name in core.names(config.attacks)), desc, unit="batches")
  done = 0
  for name in core.names(config.attacks):
    attack, norm = name.split("_")
    points = []
    if name in MIN_NORM_ATTACKS:
      attack_fn = make_min_norm_fn(apply_fn, attack=attack, norm=norm, config=config)
      robust_at = {float(eps): 0 for eps in config[f"eps_{norm}"]}
      for start in range(0, len(x), config.batch_size):
        xb = jnp.asarray(x[start:start + config.batch_size])
        yb = jnp.asarray(y[start:start + config.batch_size])
        _, fooled, distance = attack_fn(params, xb, yb)
        correct = np.asarray(predict(params, xb) == yb)
        fooled, distance = np.asarray(fooled), np.asarray(distance)
        for eps in robust_at:   # correct, and no adversarial found within eps
          robust_at[eps] += int(np.sum(correct & ~(fooled & (distance <= eps + 1e-6))))
        done += 1
        bar.update(done)
      points = [{"eps": eps, "accuracy": count / len(x)} for eps, count in robust_at.items()]
    else:
      attack_fn = make_attack_fn(apply_fn, attack=attack, norm=norm,
                                 steps=config.pgd_steps,
                                 step_factor=config.pgd_step_factor,
                                 random_start=config.pgd_random_start,
                                 apgd_steps=config.apgd_steps,
                                 square_queries=config.square_queries)
      for eps in config[f"eps_{norm}"]:
        correct = 0
        for start in range(0, len(x), config.batch_size):
          xb = jnp.asarray(x[start:start + config.batch_size])
          yb = jnp.asarray(y[start:start + config.batch_size])
          k_batch = jax.random.fold_in(key, start)
          if eps == 0:   # the clean accuracy; attacks need eps > 0
            adv = xb
          else:
            adv = attack_fn(k_batch, params, xb, yb, jnp.float32(eps))
          correct += int(jnp.sum(predict(params, adv) == yb))
          done += 1
          bar.update(done)
        points.append({"eps": float(eps), "accuracy": correct / len(x)})
    bar.clear()
    for point in points:
      log(f"  {name} eps={point['eps']:g}: accuracy {point['accuracy']:.4f}")
    bar.update(done)
    curves[name] = points
  bar.close()
  return curves


def tensorboard_records(curves: dict, lbfgs: dict | None = None) -> list[dict]:
  """The curves as TensorBoard records: step = the ε's index, one tag per attack.

  ``accuracy/<classifier>/<attack_norm>`` and ``eps/<classifier>/<attack_norm>``
  (TensorBoard steps are integers, so the ε itself is a scalar beside the
  accuracy); the L-BFGS summary as ``lbfgs/<field>`` at step 0.
  """
  records = [{"step": i, f"accuracy/{name}/{attack_norm}": point["accuracy"],
              f"eps/{name}/{attack_norm}": point["eps"]}
             for name, by_attack in curves.items()
             for attack_norm, points in by_attack.items()
             for i, point in enumerate(points)]
  if lbfgs is not None:
    records.append({"step": 0, **{f"lbfgs/{k}": v for k, v in lbfgs.items()
                                  if k not in ("images", "classifier")}})
  return records


def plot_curves(path, curves: dict) -> None:
  plt = core.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
  styles = {"fgsm": "--", "pgd": "-", "apgd": "-", "square": ":", "deepfool": "-.",
            "cw": "-.", "fmn": (0, (3, 1, 1, 1))}
  for ax, norm, unit in ((axes[0], "linf", "L∞ ε (pixels in [0, 1])"),
                         (axes[1], "l2", "L2 ε")):
    for name, by_attack in curves.items():
      for attack_norm, points in by_attack.items():
        attack, attack_norm_name = attack_norm.split("_")
        if attack_norm_name != norm:
          continue
        ax.plot([p["eps"] for p in points], [p["accuracy"] for p in points],
                marker="o", ms=3, linestyle=styles.get(attack, "-"),
                label=f"{name} {attack.upper()}")
    ax.set_xlabel(unit)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=6, ncol=2)
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
      chunk_size=config.lbfgs_chunk_size or None, solver=config.lbfgs_solver))
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
                                   classifier, x, y, config, log=log, desc=f"[attack] {name}")
    for attack_norm, points in curves[name].items():
      for point in points:
        core.append_jsonl(workdir / "metrics.jsonl",
                            {"classifier": name, "attack": attack_norm, **point})
    core.write_tensorboard(workdir, tensorboard_records(curves), step="step")
  core.write_json(workdir / "curves.json", curves)
  plot_curves(workdir / "accuracy_vs_eps.png", curves)
  n = config.lbfgs_num_images
  lbfgs = lbfgs_grid(zoo.resolve(config.lbfgs_classifier, log=log),
                     test_x[:n].astype(np.float32) / 255.0, test_y[:n].astype(np.int32),
                     config, workdir, log=log)
  core.write_tensorboard(workdir, tensorboard_records(curves, lbfgs), step="step")
  return {"curves": curves, "lbfgs": lbfgs}


def main(argv):
  del argv
  run(core.CONFIG.value, core.WORKDIR.value)


if __name__ == "__main__":
  core.cli(main)
