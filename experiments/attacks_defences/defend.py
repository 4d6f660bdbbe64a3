"""Defences and the attacks that get through them, in one results table.

  python -m experiments.attacks_defences.defend --config=experiments/attacks_defences/configs/defend.py:all \
      --workdir=runs/defend_all

Trains (or reuses from ``<workdir>/models``) a standard classifier, Goodfellow
FGSM-trained and Madry PGD-trained versions, and a defensively distilled one;
then measures, on the first ``num_test`` test images:

* clean accuracy and robust accuracy vs L∞ ε under FGSM and PGD, and under a
  targeted L-BFGS attack limited to an L2 budget;
* distillation's gradient masking: FGSM/PGD on the plain cross-entropy (whose
  gradient underflows) against the numerically stable loss, the CW logit
  margin and an attack at temperature T;
* adversarial patches (EOT over placement, scale and rotation) of several
  sizes against the standard net;
* a universal perturbation of the standard net and its fooling rate on
  held-out images and on other nets;
* a detector on the standard net's activations: ROC AUC on held-out FGSM and
  PGD examples (seen in training) and L-BFGS and UAP examples (unseen).

Writes: config.json, results.json, results.md (the tables), robust_vs_eps.png,
patch_success.png, patches.png, uap.png, detector_roc.png, models/*.msgpack, and
TensorBoard scalars in tensorboard/ (:func:`training_records` and
:func:`evaluation_records` name the tags).
"""

from __future__ import annotations

import functools
import re
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import core, tensorboard
from foolingjax import attacks, checkpoint, data, defenses, images, models, zoo
from foolingjax.attacks import losses
from foolingjax.contract import ApplyFn

MODELS = ("standard", "fgsm_trained", "pgd_trained", "distilled")
LABELS = {"standard": "standard", "fgsm_trained": "FGSM-trained (Goodfellow)",
          "pgd_trained": "PGD-trained (Madry)", "distilled": "distilled"}


def initial_model(config, key):
  """The net every defence trains from: ``(apply_fn, initial params)``.

  ``config.model`` is a zoo architecture (initialised from ``key``) or any
  :func:`foolingjax.zoo.resolve` spec, e.g. a user's ``package.module:function``,
  whose parameters are the starting point.
  """
  if config.model in models.ARCHITECTURES:
    return models.init(config.model, key)
  return zoo.resolve(config.model)


def has_features(apply_fn) -> bool:
  return isinstance(apply_fn, ApplyFn) and hasattr(apply_fn.module, "features")


def validate(config) -> None:
  """Every setting, and every classifier named, before the work directory exists."""
  core.check([
      (config.train_size >= 1 and config.num_test >= 1,
       "train_size and num_test must be >= 1"),
      (all(e >= 0 for e in config.eps_linf) and config.table_eps in config.eps_linf,
       f"eps_linf must be >= 0 and hold table_eps ({config.table_eps})"),
      (config.temperature > 0, f"temperature must be > 0, got {config.temperature}"),
      (config.uap_norm in ("linf", "l2"), f"uap_norm must be linf or l2, got "
       f"{config.uap_norm!r}"),
  ], what="defend")
  if config.model not in models.ARCHITECTURES:
    core.check_classifiers(config.model)
  core.check_classifiers(*core.names(config.uap_transfer))
  if config.standard != "train":
    core.check_classifiers(config.standard)


def _train_config(config, epochs=None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.train.to_dict())
  if epochs is not None:
    c.epochs = epochs
  return c


def train_models(key, config, train, test, workdir, *, log) -> tuple[object, dict, dict]:
  """``(apply_fn, {name: params}, {name: history})``, reusing saved params."""
  keys = dict(zip(("init", "standard", "fgsm", "pgd", "teacher", "student"),
                  jax.random.split(key, 6)))
  init = initial_model(config, keys["init"])
  apply_fn, template = init
  model_dir = workdir / "models"
  model_dir.mkdir(exist_ok=True)
  params, histories = {}, {}
  # One bar over every epoch this call trains (a distilled net is two fits),
  # advanced by the training loop's one line per epoch.
  fits = {"standard": int(config.standard == "train"), "fgsm_trained": 1, "pgd_trained": 1,
          "distilled": 2}
  epochs = config.train.epochs + config.train.get("ae_pretrain_epochs", 0)
  bar = core.Progress(epochs * sum(n for name, n in fits.items()
                                   if not (model_dir / f"{name}.msgpack").exists()),
                      "[defend] training", unit="epochs")
  epochs_done = 0

  def fit_log(line):
    nonlocal epochs_done
    bar.clear()
    log(line)
    epochs_done += bool(EPOCH_LINE.search(line))
    bar.update(epochs_done)

  def cached(name, make):
    path = model_dir / f"{name}.msgpack"
    fingerprint = core.fingerprint("attacks_defences.defend", config, model=name)
    if path.exists():
      params[name], meta = checkpoint.restore(path, template, fingerprint=fingerprint)
      histories[name] = meta.get("history", {})
      log(f"{name}: reused {path}")
      return
    log(f"{name}: training")
    t0 = time.perf_counter()
    params[name], histories[name] = make()
    histories[name]["total_seconds"] = time.perf_counter() - t0
    checkpoint.save(path, params[name], meta={"history": histories[name]},
                    fingerprint=fingerprint)

  if config.standard != "train":
    params["standard"] = zoo.resolve(config.standard, log=log).params
    if (jax.tree_util.tree_structure(params["standard"])
        != jax.tree_util.tree_structure(template)):
      raise ValueError(f"config.standard {config.standard!r} is not a {config.model} "
                       "net (its parameters differ). Fix: name a classifier of "
                       "config.model's architecture, or --config.standard=train.")
    histories["standard"] = {"source": config.standard}
  else:
    cached("standard", lambda: defenses.fit(
        keys["standard"], init, train, loss_fn=defenses.cross_entropy_loss(),
        config=_train_config(config), test=test, log=fit_log))
  cached("fgsm_trained", lambda: defenses.fit(
      keys["fgsm"], init, train, config=_train_config(config), test=test, log=fit_log,
      loss_fn=defenses.make_adversarial_loss(
          adversary="fgsm", eps=config.fgsm_train_eps,
          alpha=config.fgsm_train_alpha)))
  cached("pgd_trained", lambda: defenses.fit(
      keys["pgd"], init, train, config=_train_config(config), test=test, log=fit_log,
      loss_fn=defenses.make_adversarial_loss(
          adversary="pgd", eps=config.pgd_train_eps, alpha=0.0,
          steps=config.pgd_train_steps)))

  def distill():
    loss_t = defenses.temperature_loss(temperature=config.temperature)
    fit_log(f"  teacher at T = {config.temperature:g}")
    teacher, h_teacher = defenses.fit(keys["teacher"], init, train, loss_fn=loss_t,
                                      config=_train_config(config), test=test, log=fit_log)
    soft = np.asarray(jax.jit(lambda p, x: defenses.predict_proba(
        apply_fn, p, x, temperature=config.temperature,
        batch_size=config.eval_batch_size))(teacher, jnp.asarray(train[0])))
    fit_log(f"  student at T = {config.temperature:g} on the teacher's soft labels")
    student, h_student = defenses.fit(keys["student"], init, (train[0], soft),
                                      loss_fn=loss_t, config=_train_config(config),
                                      test=test, log=fit_log)
    return student, {"teacher": h_teacher, "student": h_student}
  cached("distilled", distill)
  bar.close()
  return apply_fn, params, histories


# foolingjax.training.fit's one line per epoch: "[model/phase] epoch 3/5 loss ...".
EPOCH_LINE = re.compile(r"\] epoch \d+/\d+ ")


def training_records(histories: dict) -> list[dict]:
  """Per-epoch training curves as TensorBoard records, step = the epoch's index.

  Tags ``<model>/<phase>/<metric>`` (``distilled/teacher/...`` and
  ``distilled/student/...`` for the two fits of distillation), as the zoo's
  train experiment writes ``<phase>/<metric>``; a reused standard net has none.
  """
  records = []
  for name, history in histories.items():
    fits = ({f"{name}/{k}": h for k, h in history.items() if isinstance(h, dict)}
            if "epoch" not in history else {name: history})
    for prefix, h in fits.items():
      for i in range(len(h.get("epoch", []))):
        records.append({"step": i, **{f"{prefix}/{h['phase'][i]}/{k}": v[i]
                                      for k, v in h.items()
                                      if isinstance(v, list) and k not in ("phase", "epoch")}})
  return records


def evaluation_records(results: dict) -> list[dict]:
  """The evaluation numbers as TensorBoard records.

  ``robust/<model>/<attack>`` and ``eps/<model>/<attack>`` with step = the ε's
  index in ``eps_linf``; ``patch/<metric>`` with step = the patch side in
  pixels; the rest at step 0 under its path in results.json
  (``lbfgs/<model>/robust_accuracy``, ``masking/rows/<attack>/<model>``,
  ``uap/fooling_rate/<evaluated on>``, ``detector/auc/<attack>``, ...).
  """
  records = [{"step": i, f"robust/{name}/{attack}": point["accuracy"],
              f"eps/{name}/{attack}": point["eps"]}
             for name, by_attack in results["curves"].items()
             for attack, points in by_attack.items() for i, point in enumerate(points)]
  records += [{"step": row["side"], **{f"patch/{k}": v for k, v in row.items() if k != "side"}}
              for row in results["patch"]["rows"]]
  records.append({"step": 0, **tensorboard.flatten(
      {k: results[k] for k in ("lbfgs", "masking", "uap", "detector", "seconds")
       if results.get(k)})})
  return records


def make_gradient_attack(apply_fn, *, attack, steps, step_factor, loss_fn=None):
  """``attack(key, params, x, labels, eps) -> adv``, jitted once; ε is traced."""
  def run(key, params, x, labels, eps):
    if attack == "fgsm":
      return attacks.fgsm(apply_fn, params, x, labels, eps=eps, loss_fn=loss_fn)
    return attacks.pgd(key, apply_fn, params, x, labels, eps=eps,
                       step_size=step_factor * eps / steps, steps=steps, loss_fn=loss_fn)
  return jax.jit(run)


def attacked_accuracy(key, attack_fn, predict, params, x, y, eps, batch_size) -> float:
  correct = 0
  for start in range(0, len(x), batch_size):
    xb, yb = jnp.asarray(x[start:start + batch_size]), jnp.asarray(y[start:start + batch_size])
    adv = attack_fn(jax.random.fold_in(key, start), params, xb, yb, jnp.float32(eps))
    correct += int(jnp.sum(predict(params, adv) == yb))
  return correct / len(x)


def robust_curves(key, apply_fn, params, x, y, config, *, log) -> dict:
  predict = jax.jit(lambda p, x: jnp.argmax(apply_fn(p, x), -1))
  fns = {a: make_gradient_attack(apply_fn, attack=a, steps=config.pgd_steps,
                                 step_factor=config.pgd_step_factor)
         for a in ("fgsm", "pgd")}
  curves = {}
  bar = core.Progress(len(params) * len(fns) * len(config.eps_linf), "[defend] curves",
                      unit="ε")
  done = 0
  for name, p in params.items():
    curves[name] = {}
    for attack, fn in fns.items():
      points = []
      for eps in config.eps_linf:
        points.append({"eps": float(eps), "accuracy": attacked_accuracy(
            key, fn, predict, p, x, y, eps, config.eval_batch_size)})
        done += 1
        bar.update(done)
      curves[name][attack] = points
      bar.clear()
      log(f"  {name} {attack}: " + ", ".join(
          f"{pt['eps']:g}:{pt['accuracy']:.3f}" for pt in points))
  bar.close()
  return curves


def lbfgs_results(apply_fn, params, x, y, config) -> dict:
  """Targeted L-BFGS (target = label + 1): robust accuracy under an L2 budget."""
  attack = jax.jit(lambda p, x, t: attacks.lbfgs_attack(
      apply_fn, p, x, t, c_search_steps=config.lbfgs_c_search_steps,
      max_iters=config.lbfgs_max_iters, chunk_size=config.lbfgs_chunk_size or None,
      solver=config.lbfgs_solver))
  out = {}
  for name, p in params.items():
    clean_ok = np.asarray(jnp.argmax(apply_fn(p, jnp.asarray(x)), -1)) == y
    adv, info = attack(p, jnp.asarray(x), jnp.asarray((y + 1) % 10, jnp.int32))
    success, l2 = np.asarray(info.success), np.asarray(info.l2)
    broken = success & (l2 <= config.lbfgs_l2_budget)
    out[name] = {"success_rate": float(success.mean()),
                 "median_l2": float(np.median(l2[success])) if success.any() else None,
                 "robust_accuracy": float(np.mean(clean_ok & ~broken)),
                 "adv": np.asarray(adv), "success": success}
  return out


def masking_results(key, apply_fn, params, x, y, config) -> dict:
  """Attacks on the standard and the distilled net at the table ε."""
  predict = jax.jit(lambda p, x: jnp.argmax(apply_fn(p, x), -1))
  hot = defenses.TemperatureScaled(apply_fn, config.temperature)
  variants = {
      "FGSM, cross-entropy": (apply_fn, "fgsm", losses.cross_entropy),
      "PGD, cross-entropy": (apply_fn, "pgd", losses.cross_entropy),
      "FGSM, stable CE (library default)": (apply_fn, "fgsm", None),
      "PGD, stable CE (library default)": (apply_fn, "pgd", None),
      "PGD, CW logit margin": (apply_fn, "pgd", losses.logit_margin),
      f"PGD, cross-entropy at T = {config.temperature:g}": (hot, "pgd",
                                                           losses.cross_entropy),
  }
  grad_ce = jax.jit(jax.vmap(jax.grad(lambda xi, yi, p: losses.cross_entropy(
      apply_fn(p, xi[None])[0], yi)), in_axes=(0, 0, None)))
  out = {"rows": {}, "zero_gradient_fraction": {}}
  for name in ("standard", "distilled"):
    g = np.asarray(grad_ce(jnp.asarray(x), jnp.asarray(y), params[name]))
    out["zero_gradient_fraction"][name] = float(np.mean(
        np.all(g.reshape(len(x), -1) == 0, axis=-1)))
  for label, (fn, attack, loss_fn) in variants.items():
    attack_fn = make_gradient_attack(fn, attack=attack, steps=config.pgd_steps,
                                     step_factor=config.pgd_step_factor, loss_fn=loss_fn)
    out["rows"][label] = {
        name: attacked_accuracy(key, attack_fn, predict, params[name], x, y,
                                config.table_eps, config.eval_batch_size)
        for name in ("standard", "distilled")}
  return out


def patch_results(key, apply_fn, params, train_x, x, y, config, workdir, *, log) -> dict:
  rows, patches = [], []
  for side in config.patch_sides:
    k_train, k_eval = jax.random.split(jax.random.fold_in(key, side))
    train = jax.jit(functools.partial(
        defenses.train_patch, apply_fn=apply_fn, target=config.patch_target,
        patch_side=side, steps=config.patch_steps, batch_size=config.patch_batch,
        learning_rate=config.patch_lr))
    t0 = time.perf_counter()
    patch, loss = train(k_train, params=params, x=jnp.asarray(train_x))
    rate = float(defenses.patch_success_rate(k_eval, apply_fn, params, jnp.asarray(x),
                                             jnp.asarray(y), patch, config.patch_target))
    rows.append({"side": int(side), "area_fraction": side * side / (x.shape[1] * x.shape[2]),
                 "success_rate": rate, "final_loss": float(loss[-1]),
                 "seconds": time.perf_counter() - t0})
    patches.append(np.asarray(patch))
    log(f"  patch {side}x{side}: success {rate:.3f}")
  # One held-out image per patch, at a random placement.
  tiles, titles = [], []
  for i, (patch, row) in enumerate(zip(patches, rows)):
    place = jax.tree.map(lambda a: a[0], defenses.random_placements(
        jax.random.fold_in(key, 10_000 + i), 1, image_shape=x.shape[1:],
        patch_side=row["side"]))
    pasted = defenses.place_patch(jnp.asarray(x[i]), jnp.asarray(patch), place)
    pred = int(jnp.argmax(apply_fn(params, pasted[None])[0]))
    padded = np.zeros_like(x[0])
    padded[:patch.shape[0], :patch.shape[1]] = patch
    tiles += [padded, np.asarray(pasted)]
    titles += [f"{row['side']}px: {row['success_rate']:.0%}", f"{y[i]} -> {pred}"]
  images.save_grid(workdir / "patches.png", np.stack(tiles), titles=titles, ncols=2,
                   title=f"Patches (target {config.patch_target}) and one use each")
  _plot(workdir / "patch_success.png",
        [("standard", [r["area_fraction"] for r in rows],
          [r["success_rate"] for r in rows], "-")],
        xlabel="patch area / image area", ylabel=f"success (-> {config.patch_target})",
        title="Adversarial patch (EOT over placement, scale 0.8-1.2, rotation ±22.5°)")
  return {"rows": rows}


def uap_results(key, apply_fn, params, train_x, x, y, config, workdir, *, log) -> dict:
  uap = jax.jit(lambda k, p, xs: defenses.universal_perturbation(
      k, apply_fn, p, xs, eps=config.uap_eps, norm=config.uap_norm,
      passes=config.uap_passes, deepfool_steps=config.uap_deepfool_steps))
  t0 = time.perf_counter()
  v = uap(key, params["standard"], jnp.asarray(train_x))
  seconds = time.perf_counter() - t0
  rate = lambda fn, p, xs: float(defenses.fooling_rate(fn, p, jnp.asarray(xs), v))
  rows = {"standard (its training images)": rate(apply_fn, params["standard"], train_x),
          "standard (held-out)": rate(apply_fn, params["standard"], x)}
  for name in MODELS[1:]:
    rows[f"{LABELS[name]} (held-out)"] = rate(apply_fn, params[name], x)
  for name in core.names(config.uap_transfer):
    other_fn, other_params = zoo.resolve(name, log=log)
    rows[f"{name} (held-out)"] = rate(other_fn, other_params, x)
  # Random noise of the same norm, as the paper's baseline.
  noise = jax.random.uniform(jax.random.fold_in(key, 12345), v.shape, minval=-1, maxval=1)
  noise = defenses.project_ball(jnp.sign(noise) * config.uap_eps if config.uap_norm == "linf"
                                else noise * 1e3, eps=config.uap_eps, norm=config.uap_norm)
  rows["standard, random noise of the same norm (held-out)"] = float(
      defenses.fooling_rate(apply_fn, params["standard"], jnp.asarray(x), noise))
  for k, r in rows.items():
    log(f"  UAP fooling rate, {k}: {r:.3f}")
  shown = np.clip(x[:6] + np.asarray(v), 0, 1)
  preds = np.asarray(jnp.argmax(apply_fn(params["standard"], jnp.asarray(shown)), -1))
  perturbation = np.clip(0.5 + config.magnify * np.asarray(v) / 2, 0, 1)[None]
  images.save_grid(workdir / "uap.png", np.concatenate([perturbation, x[:6], shown]),
                   titles=[f"v x{config.magnify / 2:g}"] + [f"{int(l)}" for l in y[:6]]
                   + [f"-> {int(p)}" for p in preds], ncols=7,
                   title=f"UAP ({config.uap_norm}, eps {config.uap_eps:g}) on the standard net")
  return {"fooling_rate": rows, "seconds": seconds,
          "norm_linf": float(jnp.max(jnp.abs(v))),
          "norm_l2": float(jnp.sqrt(jnp.sum(jnp.square(v)))), "v": np.asarray(v)}


def detector_results(key, apply_fn, params, train_xy, test_xy, lbfgs, uap_v, config,
                     workdir, *, log) -> dict:
  """A detector on the standard net's activations; AUC on seen and unseen attacks."""
  features = models.feature_fn(apply_fn)
  feats = jax.jit(lambda p, x: defenses.layer_features(features, p, x,
                                                       layers=config.detector_layers))
  predict = jax.jit(lambda p, x: jnp.argmax(apply_fn(p, x), -1))
  fns = {a: make_gradient_attack(apply_fn, attack=a, steps=config.pgd_steps,
                                 step_factor=config.pgd_step_factor)
         for a in ("fgsm", "pgd")}
  k_train, k_test, k_fit = jax.random.split(key, 3)

  def adversarial(k, x, y):
    """Successful FGSM / PGD examples of correctly classified images, by attack."""
    out = {}
    ok = np.asarray(predict(params, jnp.asarray(x))) == y
    for attack, fn in fns.items():
      adv = np.asarray(fn(k, params, jnp.asarray(x), jnp.asarray(y),
                          jnp.float32(config.table_eps)))
      fooled = np.asarray(predict(params, jnp.asarray(adv))) != y
      out[attack] = adv[ok & fooled]
    return out

  (tx, ty), (ex, ey) = train_xy, test_xy
  seen_train = adversarial(k_train, tx, ty)
  detector, loss = defenses.fit_detector(
      k_fit, feats(params, jnp.asarray(tx)),
      jnp.concatenate([feats(params, jnp.asarray(a)) for a in seen_train.values()]),
      hidden=config.detector_hidden, steps=config.detector_steps)
  score = lambda xs: np.asarray(defenses.detector_scores(detector, feats(params, jnp.asarray(xs))))
  clean_scores = score(ex)
  positives = adversarial(k_test, ex, ey)
  positives["lbfgs"] = lbfgs["adv"][lbfgs["success"]]
  with_uap = np.clip(ex + uap_v, 0, 1)
  changed = (np.asarray(predict(params, jnp.asarray(with_uap)))
             != np.asarray(predict(params, jnp.asarray(ex))))
  positives["uap"] = with_uap[changed]
  aucs, counts, rocs = {}, {}, {}
  for name, adv in positives.items():
    counts[name] = len(adv)
    if not len(adv):
      aucs[name] = None
      continue
    s = np.concatenate([clean_scores, score(adv)])
    is_adv = np.arange(len(s)) >= len(clean_scores)
    aucs[name] = float(defenses.roc_auc(jnp.asarray(s), jnp.asarray(is_adv)))
    order = np.argsort(-s, kind="stable")
    rocs[name] = (np.concatenate([[0], np.cumsum(~is_adv[order]) / (~is_adv).sum()]),
                  np.concatenate([[0], np.cumsum(is_adv[order]) / is_adv.sum()]))
    log(f"  detector AUC on {name} ({'seen' if name in fns else 'unseen'}, "
        f"{len(adv)} examples): {aucs[name]:.3f}")
  _plot(workdir / "detector_roc.png",
        [(f"{n} ({'seen' if n in fns else 'unseen'}) AUC {aucs[n]:.3f}", *rocs[n], "-")
         for n in rocs] + [("chance", [0, 1], [0, 1], ":")],
        xlabel="false positive rate (clean flagged)", ylabel="true positive rate",
        title=f"Detector on {', '.join(config.detector_layers)} of the standard net")
  return {"auc": aucs, "num_adversarial": counts, "num_clean": len(ex),
          "final_train_loss": float(loss[-1]),
          "train_counts": {k: len(v) for k, v in seen_train.items()}}


def _plot(path, series, *, xlabel, ylabel, title, ylim=(-0.02, 1.02)):
  plt = core.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for label, xs, ys, style in series:
    ax.plot(xs, ys, linestyle=style, marker="o" if len(xs) < 30 else None, ms=3,
            label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_ylim(*ylim)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  core.save_figure(fig, path)


_pct = core.pct


def markdown(config, results) -> str:
  eps = config.table_eps
  at = lambda curve: next(p["accuracy"] for p in curve if abs(p["eps"] - eps) < 1e-9)
  det = results["detector"]["auc"] if results["detector"] else {}
  lines = [
      f"Dataset {config.dataset}, model {config.model}, first {config.num_test} test "
      f"images; L∞ ε = {eps:g}; PGD {config.pgd_steps} steps with random start; L-BFGS "
      f"targeted (label + 1) on {config.lbfgs_images} images, counted when its L2 "
      f"distortion <= {config.lbfgs_l2_budget:g}.",
      "",
      f"| model | clean | FGSM ε={eps:g} | PGD ε={eps:g} | L-BFGS L2≤{config.lbfgs_l2_budget:g} "
      "| L-BFGS median L2 | detector AUC |",
      "|---|---|---|---|---|---|---|"]
  for name in MODELS:
    curves, lb = results["curves"][name], results["lbfgs"][name]
    auc = "—"
    if name == "standard":
      auc = ", ".join(f"{k} {v:.3f}" for k, v in det.items() if v is not None)
    median = core.number(lb["median_l2"], 2)
    lines.append(f"| {LABELS[name]} | {_pct(curves['fgsm'][0]['accuracy'])} | "
                 f"{_pct(at(curves['fgsm']))} | {_pct(at(curves['pgd']))} | "
                 f"{_pct(lb['robust_accuracy'])} | {median} | {auc} |")
  lines += ["", ("Detector AUCs: fgsm and pgd were seen in training (at ε = "
            f"{eps:g}); lbfgs and uap were not." if det else
            "No detector (config.detector_layers is empty)."), "",
            f"Distillation (T = {config.temperature:g}) and gradient masking: accuracy "
            f"at ε = {eps:g}", "", "| attack | standard | distilled |", "|---|---|---|"]
  masking = results["masking"]
  for label, row in masking["rows"].items():
    lines.append(f"| {label} | {_pct(row['standard'])} | {_pct(row['distilled'])} |")
  zero = masking["zero_gradient_fraction"]
  lines += ["", f"Images whose cross-entropy input gradient is exactly zero: standard "
            f"{_pct(zero['standard'])}, distilled {_pct(zero['distilled'])}.", "",
            "Adversarial patch (target "
            f"{config.patch_target}), success on held-out images of other classes", "",
            "| side (px) | area | success |", "|---|---|---|"]
  for row in results["patch"]["rows"]:
    lines.append(f"| {row['side']} | {_pct(row['area_fraction'])} | "
                 f"{_pct(row['success_rate'])} |")
  uap = results["uap"]
  lines += ["", f"Universal perturbation ({config.uap_norm}, ε = {config.uap_eps:g}, "
            f"from {config.uap_images} training images of the standard net), "
            "fooling rate", "", "| evaluated on | fooling rate |", "|---|---|"]
  for label, rate in uap["fooling_rate"].items():
    lines.append(f"| {label} | {_pct(rate)} |")
  return "\n".join(lines) + "\n"


@core.reported
def run(config, workdir, *, log=print) -> dict:
  """Trains or reuses the models, measures everything, writes the files."""
  validate(config)
  if config.detector_layers and not has_features(
      initial_model(config, jax.random.key(0)).apply_fn):
    raise ValueError(f"The detector reads layers {tuple(config.detector_layers)} of the "
                     f"standard net, but {config.model!r} has no features method. Fix: "
                     "--config.detector_layers='()' to leave the detector out, or give "
                     "the model's module a features(x) method returning its layers.")
  workdir, _ = core.prepare_workdir(workdir, config)
  key = jax.random.key(config.seed)
  k_models, k_curves, k_mask, k_patch, k_uap, k_det = jax.random.split(key, 6)
  timings = {}
  train_x, train_y = data.load(config.dataset, "train")
  test_x, test_y = data.load(config.dataset, "test")
  train = (train_x[:config.train_size], train_y[:config.train_size].astype(np.int32))
  n = config.num_test
  test = (test_x[:n], test_y[:n].astype(np.int32))
  x, y = test_x[:n].astype(np.float32) / 255.0, test_y[:n].astype(np.int32)
  float_train = lambda m: train_x[:m].astype(np.float32) / 255.0

  t0 = time.perf_counter()
  apply_fn, params, histories = train_models(k_models, config, train, test, workdir, log=log)
  timings["models"] = time.perf_counter() - t0
  core.write_tensorboard(workdir, training_records(histories), step="step", name="training")
  stages = {}

  def stage(name, fn):
    log(f"{name}:")
    t0 = time.perf_counter()
    stages[name] = fn()
    timings[name] = time.perf_counter() - t0

  stage("curves", lambda: robust_curves(k_curves, apply_fn, params, x, y, config, log=log))
  m = config.lbfgs_images
  stage("lbfgs", lambda: lbfgs_results(apply_fn, params, x[:m], y[:m], config))
  stage("masking", lambda: masking_results(k_mask, apply_fn, params, x, y, config))
  stage("patch", lambda: patch_results(
      k_patch, apply_fn, params["standard"], float_train(config.patch_train_images), x, y,
      config, workdir, log=log))
  stage("uap", lambda: uap_results(k_uap, apply_fn, params, float_train(config.uap_images),
                                   x, y, config, workdir, log=log))
  d = config.detector_test_images
  stage("detector", lambda: None if not config.detector_layers else detector_results(
      k_det, apply_fn, params["standard"],
      (float_train(config.detector_train_images), train_y[:config.detector_train_images]
       .astype(np.int32)), (x[:d], y[:d]),
      jax.tree.map(lambda a: a[:d] if isinstance(a, np.ndarray) else a,
                   stages["lbfgs"]["standard"]),
      stages["uap"]["v"], config, workdir, log=log))

  curves = stages["curves"]
  _plot(workdir / "robust_vs_eps.png",
        [(f"{LABELS[name]} {attack.upper()}", [p["eps"] for p in curves[name][attack]],
          [p["accuracy"] for p in curves[name][attack]], "-" if attack == "pgd" else "--")
         for name in MODELS for attack in ("fgsm", "pgd")],
        xlabel="L∞ ε", ylabel="test accuracy",
        title=f"{config.model} on {config.dataset}: robust accuracy vs ε")
  results = {
      "curves": curves,
      "lbfgs": {k: {f: v for f, v in r.items() if f not in ("adv", "success")}
                for k, r in stages["lbfgs"].items()},
      "masking": stages["masking"], "patch": stages["patch"],
      "uap": {k: v for k, v in stages["uap"].items() if k != "v"},
      "detector": stages["detector"], "histories": histories, "seconds": timings,
  }
  core.write_json(workdir / "results.json", results)
  core.write_tensorboard(workdir, evaluation_records(core.jsonable(results)), step="step",
                         name="evaluation")
  table = markdown(config, results)
  core.write_text(workdir / "results.md", table)
  log(table)
  return results


def main(argv):
  del argv
  run(core.CONFIG.value, core.WORKDIR.value)


if __name__ == "__main__":
  core.cli(main)
