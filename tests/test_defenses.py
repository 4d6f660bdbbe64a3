import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from experiments import core
from experiments.attacks_defences import defend
from experiments.attacks_defences.configs import defend as defend_config
from foolingjax import attacks, defenses, models, training, zoo
from foolingjax.attacks import losses
from tests.test_tensorboard import read_scalars


@pytest.fixture(scope="module")
def fc100():
  return zoo.load_classifier("fc100_100_10_mnist", seed=0, train_if_missing=False)


@pytest.fixture(scope="module")
def mnist_small(mnist_test):
  x, y = mnist_test
  return x[:96].astype(np.float32) / 255.0, y[:96].astype(np.int32)


def _placement(center, scale=1.0, angle=0.0):
  return defenses.Placement(center=jnp.asarray(center, jnp.float32),
                            scale=jnp.float32(scale), angle=jnp.float32(angle))


def test_patch_at_scale_one_covers_exactly_its_pixels():
  patch = jnp.arange(100, dtype=jnp.float32).reshape(10, 10, 1) / 100.0
  image = jnp.full((28, 28, 1), -1.0)
  # Centre (9.5, 14.5) puts the 10x10 patch on rows 5..14 and columns 10..19.
  out = defenses.place_patch(image, patch, _placement([9.5, 14.5]))
  np.testing.assert_allclose(out[5:15, 10:20], patch, atol=1e-6)
  assert int(jnp.sum(out != -1.0)) == 100  # nothing outside the 10x10 window


def test_patch_rotated_a_quarter_turn_is_rot90():
  patch = jax.random.uniform(jax.random.key(1), (6, 6, 1))
  image = jnp.zeros((16, 16, 1))
  out = defenses.place_patch(image, patch, _placement([7.5, 7.5], angle=math.pi / 2))
  window = out[5:11, 5:11, 0]
  # Image offset (dr, dc) samples the patch at (dc, -dr) from its centre.
  np.testing.assert_allclose(window, np.rot90(np.asarray(patch[..., 0]), k=1), atol=1e-5)


def test_patch_scale_two_doubles_the_side():
  out = defenses.place_patch(jnp.zeros((28, 28, 1)), jnp.ones((5, 5, 1)),
                             _placement([13.5, 13.5], scale=2.0))
  assert int(jnp.sum(out > 0)) == 100


def test_random_placements_keep_unrotated_patches_inside(key):
  p = defenses.random_placements(key, 500, image_shape=(28, 28, 1), patch_side=10,
                                 scale_range=(0.8, 1.2), max_angle=0.0)
  chex.assert_shape(p.center, (500, 2))
  half = p.scale[:, None] * 5.0
  assert bool(jnp.all(p.center - half >= -0.5 - 1e-4))
  assert bool(jnp.all(p.center + half <= 27.5 + 1e-4))
  assert bool(jnp.all((p.scale >= 0.8) & (p.scale <= 1.2)))


def test_train_patch_lowers_the_target_loss(key, fc100, mnist_small):
  apply_fn, params = fc100
  x, y = mnist_small
  train = jax.jit(lambda k, xs: defenses.train_patch(
      k, apply_fn, params, xs, 3, patch_side=12, steps=30, batch_size=32,
      learning_rate=0.1))
  patch, loss = train(key, jnp.asarray(x[:64]))
  chex.assert_shape(patch, (12, 12, 1))
  assert bool(jnp.all((patch >= 0) & (patch <= 1)))
  assert float(jnp.mean(loss[-10:])) < float(jnp.mean(loss[:5])) - 1.0
  # On held-out images at the same random placements, the trained patch pulls
  # towards the target more than a fresh random patch does.
  held_out = jnp.asarray(x[64:])
  place = defenses.random_placements(jax.random.key(4), len(held_out),
                                     image_shape=(28, 28, 1), patch_side=12)
  target_ce = lambda p: optax.softmax_cross_entropy_with_integer_labels(
      apply_fn(params, defenses.apply_patch(held_out, p, place)),
      jnp.full(len(held_out), 3)).mean()
  noise = jax.random.uniform(jax.random.key(9), (12, 12, 1))
  assert float(target_ce(patch)) < float(target_ce(noise)) - 1.0
  rate = defenses.patch_success_rate(key, apply_fn, params, held_out,
                                     jnp.asarray(y[64:]), patch, 3)
  assert 0.0 <= float(rate) <= 1.0


def test_uap_inner_step_is_attacks_deepfool(fc100, mnist_small):
  apply_fn, params = fc100
  x, _ = mnist_small
  image = jnp.asarray(x[0])
  label = jnp.argmax(apply_fn(params, image[None])[0])
  v = 0.1 * jnp.sign(jax.random.normal(jax.random.key(2), image.shape))
  step = jax.jit(lambda xi, vi, l: defenses.uap_step(
      apply_fn, params, xi, vi, l, deepfool_steps=10))(image, v, label)
  x_v = jnp.clip(image + v, 0.0, 1.0)
  adv, info = jax.jit(lambda xs, ls: attacks.deepfool(
      apply_fn, params, xs, ls, max_iter=10))(x_v[None], label[None])
  np.testing.assert_array_equal(np.asarray(step), np.asarray(adv[0] - x_v))
  assert bool(info.success[0])
  # The universal perturbation of one image after one pass is that step from
  # v = 0, projected onto the ball: universal_perturbation calls the same function.
  uap = jax.jit(lambda k, xs: defenses.universal_perturbation(
      k, apply_fn, params, xs, eps=0.15, norm="linf", passes=1, deepfool_steps=10))
  adv0, _ = attacks.deepfool(apply_fn, params, image[None], label[None], max_iter=10)
  np.testing.assert_allclose(
      np.asarray(uap(jax.random.key(0), image[None])),
      np.asarray(defenses.project_ball(adv0[0] - image, eps=0.15, norm="linf")), atol=1e-6)


def _unboxed_deepfool(apply_fn, params, x, *, steps, overshoot=0.02):
  """The UAP's former inner step: single-image L2 DeepFool without the box."""
  logits_of = lambda z: apply_fn(params, z[None])[0]
  label = jnp.argmax(logits_of(x))

  def step(r, _):
    z = x + (1.0 + overshoot) * r
    logits = logits_of(z)
    jac = jax.jacrev(logits_of)(z).reshape(logits.shape[0], -1)
    w, f = jac - jac[label][None, :], logits - logits[label]
    w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=-1)) + 1e-8
    dist = jnp.where(jnp.arange(logits.shape[0]) == label, jnp.inf, jnp.abs(f) / w_norm)
    best = jnp.argmin(dist)
    r_step = ((jnp.abs(f[best]) + 1e-4) / jnp.square(w_norm[best]) * w[best]).reshape(x.shape)
    return jnp.where(jnp.argmax(logits) != label, r, r + r_step), None

  r, _ = jax.lax.scan(step, jnp.zeros_like(x), None, length=steps)
  return (1.0 + overshoot) * r


def _unboxed_uap(key, apply_fn, params, x, *, eps, norm, passes, steps):
  predict = lambda z: jnp.argmax(apply_fn(params, z[None])[0])
  clean = jax.vmap(predict)(x)

  def visit(v, i):
    x_v = jnp.clip(x[i] + v, 0.0, 1.0)
    push = lambda v: defenses.project_ball(
        v + _unboxed_deepfool(apply_fn, params, x_v, steps=steps), eps=eps, norm=norm)
    return jax.lax.cond(predict(x_v) != clean[i], lambda v: v, push, v), None

  def one_pass(v, k):
    return jax.lax.scan(visit, v, jax.random.permutation(k, x.shape[0]))[0], None

  return jax.lax.scan(one_pass, jnp.zeros(x.shape[1:]), jax.random.split(key, passes))[0]


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 3.0)])
def test_uap_with_box_aware_deepfool_fools_as_many_as_the_unboxed_one(fc100, mnist_small,
                                                                      norm, eps):
  # Box-aware DeepFool (attacks.deepfool) replaced an unboxed one inside the UAP;
  # the mean held-out fooling rate over a few keys must not drop.
  apply_fn, params = fc100
  x, _ = mnist_small
  train, held_out = jnp.asarray(x[:48]), jnp.asarray(x[48:])
  kwargs = {"eps": eps, "norm": norm, "passes": 2}
  new = jax.jit(lambda k: defenses.fooling_rate(apply_fn, params, held_out,
      defenses.universal_perturbation(k, apply_fn, params, train, deepfool_steps=5,
                                      **kwargs)))
  old = jax.jit(lambda k: defenses.fooling_rate(apply_fn, params, held_out,
      _unboxed_uap(k, apply_fn, params, train, steps=5, **kwargs)))
  keys = [jax.random.key(s) for s in range(4)]
  new_rate = np.mean([float(new(k)) for k in keys])
  old_rate = np.mean([float(old(k)) for k in keys])
  print(f"{norm}: new {new_rate:.3f} old {old_rate:.3f}")
  assert new_rate >= old_rate - 0.05


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 3.0)])
def test_universal_perturbation_stays_in_the_ball_and_beats_noise(key, fc100, mnist_small,
                                                                  norm, eps):
  apply_fn, params = fc100
  x, _ = mnist_small
  v = jax.jit(lambda k, xs: defenses.universal_perturbation(
      k, apply_fn, params, xs, eps=eps, norm=norm, passes=1, deepfool_steps=5))(
          key, jnp.asarray(x[:48]))
  chex.assert_shape(v, (28, 28, 1))
  size = jnp.max(jnp.abs(v)) if norm == "linf" else jnp.linalg.norm(v)
  assert float(size) <= eps + 1e-5
  noise = defenses.project_ball(
      jax.random.normal(jax.random.key(5), v.shape) * 10.0, eps=eps, norm=norm)
  held_out = jnp.asarray(x[48:])
  assert (float(defenses.fooling_rate(apply_fn, params, held_out, v))
          > float(defenses.fooling_rate(apply_fn, params, held_out, noise)))


def test_adversarial_loss_mixes_clean_and_adversarial_terms(key, mnist_small):
  apply_fn, params = models.init("fc10", key)
  x, y = jnp.asarray(mnist_small[0][:16]), jnp.asarray(mnist_small[1][:16])
  ce = lambda p, xs: optax.softmax_cross_entropy_with_integer_labels(
      apply_fn(p, xs), y).mean()
  from foolingjax import attacks
  adv = attacks.fgsm(apply_fn, params, x, y, eps=0.1)
  half = defenses.make_adversarial_loss(adversary="fgsm", eps=0.1, alpha=0.5)
  value = half(apply_fn, params, x, y, key)
  np.testing.assert_allclose(value, 0.5 * ce(params, x) + 0.5 * ce(params, adv), rtol=1e-5)
  # No gradient flows through the attack: the gradient is that of J at fixed x_adv.
  only_adv = defenses.make_adversarial_loss(adversary="fgsm", eps=0.1, alpha=0.0)
  grad = jax.grad(lambda p: only_adv(apply_fn, p, x, y, key))(params)
  chex.assert_trees_all_close(grad, jax.grad(lambda p: ce(p, adv))(params), rtol=1e-5)
  madry = defenses.make_adversarial_loss(adversary="pgd", eps=0.1, alpha=0.0, steps=5)
  assert float(madry(apply_fn, params, x, y, key)) > float(ce(params, x))
  # PGD's random start comes from the loss's key.
  assert float(madry(apply_fn, params, x, y, jax.random.key(7))) != float(
      madry(apply_fn, params, x, y, key))
  with pytest.raises(ValueError, match="adversary"):
    defenses.make_adversarial_loss(adversary="cw", eps=0.1, alpha=0.5)


def test_temperature_loss_and_scaled_classifier(key, mnist_small):
  apply_fn, params = models.init("fc10", key)
  x, y = jnp.asarray(mnist_small[0][:8]), jnp.asarray(mnist_small[1][:8])
  logits = apply_fn(params, x)
  loss = defenses.temperature_loss(temperature=4.0)
  hard = loss(apply_fn, params, x, y, None)
  soft = loss(apply_fn, params, x, jax.nn.one_hot(y, 10), None)
  expected = optax.softmax_cross_entropy_with_integer_labels(logits / 4.0, y).mean()
  np.testing.assert_allclose(hard, expected, rtol=1e-6)
  np.testing.assert_allclose(soft, expected, rtol=1e-6)
  hot = defenses.TemperatureScaled(apply_fn, 4.0)
  np.testing.assert_allclose(hot(params, x), logits / 4.0, rtol=1e-6)
  assert hot.num_classes == 10 and hot.input_shape == (28, 28, 1)
  u8 = np.round(mnist_small[0][:10] * 255).astype(np.uint8)
  proba = defenses.predict_proba(apply_fn, params, jnp.asarray(u8), temperature=4.0,
                                 batch_size=4)
  np.testing.assert_allclose(
      proba, jax.nn.softmax(apply_fn(params, jnp.asarray(u8, jnp.float32) / 255) / 4.0),
      rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="temperature"):
    defenses.temperature_loss(temperature=0.0)


def test_distilled_logits_saturate_the_cross_entropy_gradient(key):
  # A T-fold logit scale (what distillation at T learns) zeroes the float32
  # cross-entropy gradient, while the margin's gradient is unchanged in direction.
  apply_fn, params = models.init("fc10", key)
  scaled = jax.tree.map(lambda w: w * 1e5, params)
  x = jax.random.uniform(jax.random.key(2), (1, 28, 28, 1))
  label = jnp.argmax(apply_fn(scaled, x)[0])
  ce_grad = jax.grad(lambda z: losses.cross_entropy(apply_fn(scaled, z)[0], label))(x)
  margin_grad = jax.grad(lambda z: losses.logit_margin(apply_fn(scaled, z)[0], label))(x)
  assert float(jnp.max(jnp.abs(ce_grad))) == 0.0
  assert float(jnp.max(jnp.abs(margin_grad))) > 0.0


def test_fit_lowers_the_loss_and_leaves_the_start_params_usable(key, mnist_test):
  x, y = mnist_test
  train = (x[:512], y[:512].astype(np.int32))
  apply_fn, params = models.init("fc10", key)
  config = training.default_config()
  config.update(epochs=2, batch_size=64, learning_rate=1e-2)
  trained, history = defenses.fit(key, (apply_fn, params), train, config=config,
                                  loss_fn=defenses.cross_entropy_loss(),
                                  test=(x[:256], y[:256].astype(np.int32)))
  assert history["train_loss"][1] < history["train_loss"][0]
  assert history["test_accuracy"][-1] > 0.5
  chex.assert_tree_all_finite(params)  # not donated away
  assert not np.allclose(trained["out"]["kernel"], params["out"]["kernel"])


def test_defences_train_with_the_one_training_loop(key, mnist_test, monkeypatch):
  # defenses.fit is training.fit from the given params with the given key: no
  # optimiser loop of its own.
  import inspect
  source = inspect.getsource(defenses)
  for loop_part in ("apply_gradients", "make_optimizer", "epoch_batches", "TrainState"):
    assert loop_part not in source
  x, y = mnist_test
  train, test = (x[:256], y[:256]), (x[256:456], y[256:456])
  init = models.init("fc10", key)
  config = training.default_config()
  config.update(epochs=1, batch_size=64, learning_rate=1e-2, model="fc10")
  adversarial = defenses.make_adversarial_loss(adversary="pgd", eps=0.1, alpha=0.0,
                                               steps=2)
  distillation = defenses.temperature_loss(temperature=20.0)
  soft = np.asarray(defenses.predict_proba(init.apply_fn, init.params,
                                           jnp.asarray(x[:256]), temperature=20.0))
  calls, real_fit = [], training.fit

  def spy(*args, **kwargs):
    calls.append(kwargs["loss_fn"])
    return real_fit(*args, **kwargs)
  monkeypatch.setattr(training, "fit", spy)
  for loss_fn, split in ((adversarial, train), (distillation, (x[:256], soft))):
    params, history = defenses.fit(jax.random.key(2), init, split, loss_fn=loss_fn,
                                   config=config, test=test)
    direct, direct_history = real_fit(config, split, test, loss_fn=loss_fn, init=init,
                                      key=jax.random.key(2), log=None)
    chex.assert_trees_all_equal(params, direct.params)
    assert history["train_loss"] == direct_history["train_loss"]
  assert calls == [adversarial, distillation]


def test_adversarial_training_resumes_bit_identically(key, mnist_test, tmp_path):
  x, y = mnist_test
  train = (x[:256], y[:256])
  init = models.init("fc10", key)
  config = training.default_config()
  config.update(epochs=3, batch_size=64, learning_rate=1e-2)
  pgd = defenses.make_adversarial_loss(adversary="pgd", eps=0.1, alpha=0.5, steps=2)
  run = lambda **kw: defenses.fit(jax.random.key(4), init, train, loss_fn=pgd,
                                  config=config, **kw)
  full, _ = run()

  def stop_after_second(msg):
    if "epoch 2/3" in msg:
      raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    run(workdir=tmp_path, log=stop_after_second)
  resumed_log = []
  resumed, history = run(workdir=tmp_path, log=resumed_log.append)
  assert "resumed from" in resumed_log[0] and "epoch 2/3" in resumed_log[0]
  assert history["epoch"] == [1, 2, 3]
  chex.assert_trees_all_equal(resumed, full)


def test_roc_auc_known_answers():
  pos = jnp.array([True, True, False, False])
  assert float(defenses.roc_auc(jnp.array([3.0, 2.0, 1.0, 0.0]), pos)) == 1.0
  assert float(defenses.roc_auc(jnp.array([0.0, 1.0, 2.0, 3.0]), pos)) == 0.0
  assert float(defenses.roc_auc(jnp.zeros(4), pos)) == 0.5
  rng = np.random.default_rng(0)
  scores, labels = rng.normal(size=60).round(1), rng.random(60) < 0.4
  brute = np.mean([(a > b) + 0.5 * (a == b) for a in scores[labels]
                   for b in scores[~labels]])
  np.testing.assert_allclose(defenses.roc_auc(jnp.asarray(scores), jnp.asarray(labels)),
                             brute, rtol=1e-6)


def test_detector_separates_shifted_features(key):
  k1, k2, k3 = jax.random.split(key, 3)
  clean = jax.random.normal(k1, (200, 5))
  adv = jax.random.normal(k2, (100, 5)) + jnp.array([[2.0, 0, 0, 0, 0]])
  detector, loss = defenses.fit_detector(k3, clean[:100], adv[:50], hidden=8, steps=200)
  assert float(loss[-1]) < float(loss[0])
  scores = defenses.detector_scores(detector, jnp.concatenate([clean[100:], adv[50:]]))
  auc = defenses.roc_auc(scores, jnp.arange(150) >= 100)
  assert float(auc) > 0.8  # Bayes AUC for a 2σ shift is Φ(2/√2) ≈ 0.92


def test_layer_features_concatenates_named_activations(key, mnist_small):
  apply_fn, params = models.init("fc100_100_10", key)
  x = jnp.asarray(mnist_small[0][:4])
  feats = defenses.layer_features(models.feature_fn(apply_fn), params, x,
                                  layers=("fc1", "logits"))
  chex.assert_shape(feats, (4, 110))
  with pytest.raises(ValueError, match="conv1"):
    defenses.layer_features(models.feature_fn(apply_fn), params, x, layers=("conv1",))


def test_smoke_run_writes_checked_files(tmp_path):
  config = defend_config.get_config("smoke")
  result = defend.run(config, tmp_path, log=lambda _: None)

  saved = json.loads((tmp_path / "results.json").read_text())
  assert set(saved["curves"]) == set(defend.MODELS)
  # The standard net is the bundled trained FC100-100-10; the others train here.
  assert saved["histories"]["standard"] == {"source": "fc100_100_10_mnist"}
  for name in defend.MODELS[1:]:
    assert (tmp_path / "models" / f"{name}.msgpack").is_file()
  standard_pgd = [p["accuracy"] for p in saved["curves"]["standard"]["pgd"]]
  assert standard_pgd[0] >= 0.9                   # a trained net, clean
  assert standard_pgd[-1] <= standard_pgd[0] - 0.5  # and PGD at ε = 0.3 breaks it
  for name in defend.MODELS:
    for attack in ("fgsm", "pgd"):
      points = saved["curves"][name][attack]
      assert [p["eps"] for p in points] == list(config.eps_linf)
      # ε = 0 leaves the images alone; a stronger ε never helps PGD here.
      assert points[0]["accuracy"] == saved["curves"][name]["fgsm"][0]["accuracy"]
      assert points[-1]["accuracy"] <= points[0]["accuracy"]
  assert saved["curves"] == json.loads(json.dumps(result["curves"]))
  assert [r["side"] for r in saved["patch"]["rows"]] == list(config.patch_sides)
  assert all(0 <= r["success_rate"] <= 1 for r in saved["patch"]["rows"])
  assert saved["uap"]["norm_linf"] <= config.uap_eps + 1e-6
  assert "fc10_wd1e-4_mnist (held-out)" in saved["uap"]["fooling_rate"]
  assert set(saved["detector"]["auc"]) == {"fgsm", "pgd", "lbfgs", "uap"}
  for name, auc in saved["detector"]["auc"].items():
    assert auc is None or 0 <= auc <= 1
    assert (auc is None) == (saved["detector"]["num_adversarial"][name] == 0)
  assert set(saved["masking"]["rows"]) >= {"FGSM, cross-entropy", "PGD, CW logit margin"}

  # TensorBoard: training curves per defence and the evaluation, as in results.json.
  scalars = read_scalars(tmp_path / "tensorboard")
  for i, point in enumerate(saved["curves"]["pgd_trained"]["pgd"]):
    assert scalars[(i, "robust/pgd_trained/pgd")] == pytest.approx(point["accuracy"])
  history = saved["histories"]["pgd_trained"]
  for i, loss in enumerate(history["train_loss"]):
    assert scalars[(i, "pgd_trained/train/train_loss")] == pytest.approx(loss, rel=1e-6)
  student = saved["histories"]["distilled"]["student"]
  assert scalars[(len(student["epoch"]) - 1, "distilled/student/train/test_accuracy")] == \
      pytest.approx(student["test_accuracy"][-1])
  assert not any(tag.startswith("standard/") for _, tag in scalars)  # reused, not trained
  row = saved["patch"]["rows"][0]
  assert scalars[(row["side"], "patch/success_rate")] == pytest.approx(row["success_rate"])
  assert scalars[(0, "lbfgs/distilled/robust_accuracy")] == pytest.approx(
      saved["lbfgs"]["distilled"]["robust_accuracy"])
  assert scalars[(0, "masking/rows/PGD, CW logit margin/standard")] == pytest.approx(
      saved["masking"]["rows"]["PGD, CW logit margin"]["standard"])

  table = (tmp_path / "results.md").read_text()
  rows = [line for line in table.splitlines() if line.startswith("| ")]
  for label in defend.LABELS.values():
    assert any(line.startswith(f"| {label} |") for line in rows)
  standard = next(line for line in rows if line.startswith("| standard |"))
  clean = saved["curves"]["standard"]["fgsm"][0]["accuracy"]
  assert standard.split(" | ")[1] == f"{100 * clean:.1f}%"
  assert "PGD, cross-entropy at T = 20" in table

  for name in ("robust_vs_eps.png", "patch_success.png", "patches.png", "uap.png",
               "detector_roc.png"):
    with Image.open(tmp_path / name) as png:
      png.verify()
    with Image.open(tmp_path / name) as png:
      assert np.asarray(png.convert("L")).std() > 10  # not blank

  other = defend_config.get_config("smoke")
  other.temperature = 5.0
  with pytest.raises(core.WorkdirConflictError):
    defend.run(other, tmp_path, log=lambda _: None)


def _tiny_defend_config(**overrides):
  config = defend_config.get_config("smoke")
  config.update(dict(train_size=128, num_test=16, eval_batch_size=16, lbfgs_images=2,
                     patch_sides=(6,), patch_steps=2, patch_train_images=16,
                     uap_images=8, eps_linf=(0.0, 0.1)))
  config.update(overrides)
  return config


# A user's model through every experiment's path is also tested, faster, by
# test_szegedy, test_nguyen and test_resolve; this one runs with -m slow.
@pytest.mark.slow
def test_a_users_model_defends_and_is_attacked(tmp_path):
  user = "tests.user_models:tiny_mnist_classifier"
  config = _tiny_defend_config(model=user, standard="train", uap_transfer=user,
                               detector_layers=())
  result = defend.run(config, tmp_path, log=lambda _: None)
  assert set(result["curves"]) == set(defend.MODELS)
  assert result["detector"] is None
  assert f"{user} (held-out)" in result["uap"]["fooling_rate"]
  assert "No detector" in (tmp_path / "results.md").read_text()


def test_defend_refuses_bad_classifiers_before_the_workdir(tmp_path):
  user = "tests.user_models:tiny_mnist_classifier"
  with pytest.raises(ValueError, match="has no features method"):
    defend.run(_tiny_defend_config(model=user, standard="train"), tmp_path / "a",
               log=lambda _: None)
  with pytest.raises(ValueError, match="nosuchnet"):
    defend.run(_tiny_defend_config(uap_transfer="nosuchnet"), tmp_path / "b",
               log=lambda _: None)
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --------------------------------------------------------------------------
# A fooling class on a frozen net


def _separable_logits(key, n=200, k=5):
  """Real images: one confident class; fooling images: flat logits (K=5)."""
  k1, k2, k3 = jax.random.split(key, 3)
  labels = jax.random.randint(k1, (n,), 0, k)
  real = 6.0 * jax.nn.one_hot(labels, k) + 0.5 * jax.random.normal(k2, (n, k))
  fooling = 1.0 + 0.5 * jax.random.normal(k3, (n, k))
  return fooling, real


def test_fooling_class_loss_is_the_k_plus_1_cross_entropy_with_frozen_outputs(key):
  """The fitted loss is the (K+1)-way cross-entropy (label K+1 for fooling images,
  the net's own softmax for real ones) minus the frozen net's own cross-entropy."""
  fooling, real = _separable_logits(key)
  head, losses = jax.jit(defenses.fit_fooling_class, static_argnames="steps")(
      fooling, real, steps=3)
  k = fooling.shape[1]
  z_f = jnp.concatenate([fooling, defenses.fooling_class_logit(head, fooling)[:, None]], -1)
  z_r = jnp.concatenate([real, defenses.fooling_class_logit(head, real)[:, None]], -1)
  ce_fooling = -jax.nn.log_softmax(z_f)[:, k]
  target = jnp.concatenate([jax.nn.softmax(real), jnp.zeros((len(real), 1))], -1)
  ce_real = -jnp.sum(target * jax.nn.log_softmax(z_r), -1)
  ce_real_base = -jnp.sum(jax.nn.softmax(real) * jax.nn.log_softmax(real), -1)
  expected = 0.5 * jnp.mean(ce_fooling) + 0.5 * jnp.mean(ce_real - ce_real_base)
  margin = defenses.fooling_class_margin(head, jnp.concatenate([fooling, real]))
  is_fooling = jnp.concatenate([jnp.ones(len(fooling)), jnp.zeros(len(real))])
  got = jnp.sum(jnp.where(is_fooling > 0, 0.5 / len(fooling), 0.5 / len(real))
                * optax.sigmoid_binary_cross_entropy(margin, is_fooling))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert losses.shape == (3,)
  # The loss fit_fooling_class minimises is that cross-entropy: its first value is the
  # cross-entropy of the starting head (w = 0, b = 0: output K+1 is 0 everywhere).
  z_f0 = jnp.concatenate([fooling, jnp.zeros((len(fooling), 1))], -1)
  z_r0 = jnp.concatenate([real, jnp.zeros((len(real), 1))], -1)
  expected0 = (0.5 * jnp.mean(-jax.nn.log_softmax(z_f0)[:, k])
               + 0.5 * jnp.mean(-jnp.sum(target * jax.nn.log_softmax(z_r0), -1) - ce_real_base))
  np.testing.assert_allclose(losses[0], expected0, rtol=1e-5)
  np.testing.assert_array_equal(defenses.append_fooling_class(head, real), z_r)


def test_fooling_class_separates_and_keeps_the_real_outputs(key):
  fooling, real = _separable_logits(key)
  head, losses = defenses.fit_fooling_class(fooling, real, steps=300, learning_rate=0.05)
  assert losses[-1] < 0.25 * losses[0]
  # A net whose logits are its input: the wrapped net adds output K+1, keeps the K.
  base = lambda params, x: x @ params  # noqa: E731
  wrapped, params = defenses.with_fooling_class(base, jnp.eye(5), head)
  out_f, out_r = (jax.jit(wrapped)(params, z) for z in (fooling, real))
  assert out_f.shape == (len(fooling), 6)
  np.testing.assert_array_equal(out_r[:, :5], real)
  assert np.mean(np.argmax(out_f, -1) == 5) > 0.95
  assert np.mean(np.argmax(out_r, -1) == np.argmax(real, -1)) > 0.95


def test_fooling_class_bad_input_is_one_clear_error(fc100):
  with pytest.raises(ValueError, match="same K.*Fix"):
    defenses.fit_fooling_class(jnp.zeros((3, 4)), jnp.zeros((3, 5)))
  with pytest.raises(ValueError, match="at least one fooling"):
    defenses.fit_fooling_class(jnp.zeros((0, 4)), jnp.zeros((3, 4)))
  head, _ = defenses.fit_fooling_class(jnp.ones((2, 4)), jnp.zeros((2, 4)), steps=1)
  with pytest.raises(ValueError, match="fitted on 4 logits but the net has 10.*Fix"):
    defenses.with_fooling_class(fc100.apply_fn, fc100.params, head)
