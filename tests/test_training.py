import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from foolingjax import checkpoint, data, models, training, zoo


def _small_config(**overrides):
  config = training.default_config()
  config.update({"epochs": 2, "batch_size": 32, "eval_batch_size": 100})
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def small_mnist():
  x, y = data.load("mnist", "test")
  return (x[:512], y[:512]), (x[512:712], y[512:712])


def test_training_is_deterministic_and_learns(small_mnist):
  train, test = small_mnist
  config = _small_config(model="fc100_100_10")
  clf_a, hist_a = training.fit(config, train, test, log=None)
  clf_b, _ = training.fit(config, train, test, log=None)
  chex.assert_trees_all_equal(clf_a.params, clf_b.params)
  assert hist_a["train_loss"][-1] < hist_a["train_loss"][0]
  assert hist_a["test_accuracy"][-1] > 0.6


def test_interrupted_fit_resumes_to_the_same_params(small_mnist, tmp_path):
  train, _ = small_mnist
  full, _ = training.fit(_small_config(model="fc10", epochs=3), train, None, log=None)
  # "Interrupt" after 1 epoch: run a 3-epoch job that we stop by raising in log().
  calls = []

  def stop_after_first(msg):
    calls.append(msg)
    if "epoch 1/3" in msg:
      raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    training.fit(_small_config(model="fc10", epochs=3), train, None, workdir=tmp_path,
                 log=stop_after_first)
  resumed_log = []
  resumed, hist = training.fit(_small_config(model="fc10", epochs=3), train, None,
                               workdir=tmp_path, log=resumed_log.append)
  assert "resumed from" in resumed_log[0] and "epoch 1/3" in resumed_log[0]
  assert not any("epoch 1/3 loss" in line for line in resumed_log)
  chex.assert_trees_all_close(resumed.params, full.params, rtol=1e-6, atol=1e-6)
  assert hist["epoch"] == [1, 2, 3]


def test_autoencoder_pretraining_runs(small_mnist):
  train, test = small_mnist
  config = _small_config(model="ae400_10", ae_pretrain_epochs=1, epochs=1)
  _, hist = training.fit(config, train, test, log=None)
  assert hist["phase"] == ["pretrain", "train"]


def test_bad_training_inputs(small_mnist):
  (x, y), _ = small_mnist
  with pytest.raises(ValueError, match="uint8"):
    training.fit(_small_config(), (x.astype(np.float32), y), log=None)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
    training.fit(_small_config(num_classes=3), (x, y), log=None)


def test_checkpoint_round_trip_and_mismatch(tmp_path, key):
  _, params = models.init("lenet", key)
  path = checkpoint.save(tmp_path / "p.msgpack", params, meta={"note": "x"})
  restored, meta = checkpoint.restore(path, params)
  chex.assert_trees_all_equal(restored, params)
  assert meta == {"note": "x"}
  _, other = models.init("fc100_100_10", key)
  with pytest.raises(checkpoint.CheckpointError, match="does not match"):
    checkpoint.restore(path, other)
  _, lenet5 = models.init("lenet", key, num_classes=5)
  with pytest.raises(checkpoint.CheckpointError, match=r"ip2/kernel.*\[500, 10\]"):
    checkpoint.restore(path, lenet5)
  bad = tmp_path / "bad.msgpack"
  bad.write_bytes(b"\x00garbage" * 10)
  with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
    checkpoint.restore(bad, params)
  # A failed restore leaves the file as it was.
  assert bad.read_bytes() == b"\x00garbage" * 10


def test_unwritable_cache_is_one_clear_error(tmp_path, monkeypatch):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  monkeypatch.setenv("FOOLINGJAX_CACHE", str(blocker / "cache"))
  with pytest.raises(OSError, match="FOOLINGJAX_CACHE"):
    zoo.load_classifier("fc10_wd1e-4_mnist", seed=7, log=None)
  assert blocker.read_text() == "not a directory"


def test_unknown_classifier():
  with pytest.raises(ValueError, match="Unknown classifier 'vgg_mnist'.*lenet_mnist"):
    zoo.load_classifier("vgg_mnist")


def test_bundled_lenet_meets_caffe_accuracy(lenet, mnist_test):
  acc = training.accuracy(lenet, *mnist_test)
  assert acc >= 0.99, acc


def test_two_seeds_are_different_nets(lenet, mnist_test):
  other = zoo.load_classifier("lenet_mnist", seed=1, train_if_missing=False)
  x = mnist_test[0][:100].astype(np.float32) / 255
  assert not np.allclose(lenet.apply_fn(lenet.params, x), other.apply_fn(other.params, x))
  assert training.accuracy(other, *mnist_test) >= 0.99


def test_train_experiment_smoke(tmp_path):
  from experiments.zoo import train
  from experiments.zoo.configs import train as train_config
  summary = train.run(train_config.get_config("smoke"), tmp_path)
  written = json.loads((tmp_path / "summary.json").read_text())
  assert written["test_error"] == pytest.approx(summary["test_error"])
  assert written["test_error"] < 0.3
  assert (tmp_path / "params.msgpack").exists()


def test_custom_loss_that_ignores_the_labels_learns_its_own_target(small_mnist):
  # A loss that asks for class 3 whatever the label: the net learns to say 3.
  train, test = small_mnist

  def always_three(apply_fn, params, x, y, key):
    del y, key
    logits = apply_fn(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.full(x.shape[0], 3)).mean()

  clf, hist = training.fit(_small_config(model="fc10", epochs=1), train, test,
                           loss_fn=always_three, log=None)
  predictions = np.argmax(clf.apply_fn(clf.params, test[0].astype(np.float32) / 255), -1)
  assert np.all(predictions == 3)
  np.testing.assert_allclose(hist["test_accuracy"][-1], np.mean(test[1] == 3))


def test_one_hot_soft_labels_train_like_int_labels(small_mnist):
  train, _ = small_mnist
  config = _small_config(model="fc10")
  hard, hist_hard = training.fit(config, train, None, log=None)
  soft_train = (train[0], np.eye(10, dtype=np.float32)[train[1]])
  soft, hist_soft = training.fit(config, soft_train, None, log=None)
  chex.assert_trees_all_close(soft.params, hard.params, atol=1e-6)
  assert hist_soft["train_accuracy"] == hist_hard["train_accuracy"]
  with pytest.raises(ValueError, match=r"soft labels must be float \[512, 10\]"):
    training.fit(config, (train[0], soft_train[1][:, :5]), None, log=None)


def test_loss_sees_fresh_keys_and_resumes_bit_identically(small_mnist, tmp_path):
  # Labels drawn from the loss's key: a different key stream after a resume
  # would give different params.
  train, _ = small_mnist
  config = _small_config(model="fc10", epochs=3)
  init = models.init("fc10", jax.random.key(5))

  def random_labels(apply_fn, params, x, y, key):
    noise = jax.random.randint(key, y.shape, 0, 10)
    return training.cross_entropy(apply_fn, params, x, jnp.where(y < 5, y, noise))

  run = lambda **kw: training.fit(config, train, None, loss_fn=random_labels, init=init,
                                  key=jax.random.key(9), **kw)
  full, _ = run(log=None)

  def stop_after_first(msg):
    if "epoch 1/3" in msg:
      raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    run(workdir=tmp_path, log=stop_after_first)
  resumed_log = []
  resumed, hist = run(workdir=tmp_path, log=resumed_log.append)
  assert "resumed from" in resumed_log[0]
  assert hist["epoch"] == [1, 2, 3]
  chex.assert_trees_all_equal(resumed.params, full.params)
  # The keys matter: another key, other params; init was copied, not donated.
  other, _ = training.fit(config, train, None, loss_fn=random_labels, init=init,
                          key=jax.random.key(10), log=None)
  assert not np.array_equal(other.params["out"]["kernel"], full.params["out"]["kernel"])
  chex.assert_tree_all_finite(init.params)


def test_per_layer_weight_decay_is_the_papers_formula(key):
  _, params = models.init("fc100_100_10", key)
  config = _small_config(model="fc100_100_10", layer_weight_decay="fc1:1e-5,out:1e-6",
                         weight_decay=2e-4, weight_decay_per_unit=True)
  penalty = training.make_penalty(config, params)
  sq = lambda w: float(jnp.sum(jnp.square(w)))
  expected = (1e-5 / 100 * sq(params["fc1"]["kernel"]) + 2e-4 / 100 * sq(params["fc2"]["kernel"])
              + 1e-6 / 10 * sq(params["out"]["kernel"]))  # λ/k, k = the layer's units
  assert float(penalty(params)) == pytest.approx(expected, rel=1e-5)
  # Without the optional keys: λ·Σw² over every kernel, as before.
  plain = training.make_penalty(_small_config(model="fc100_100_10", weight_decay=2e-4), params)
  assert float(plain(params)) == pytest.approx(2e-4 * float(training.l2_penalty(params)),
                                               rel=1e-6)
  assert training.make_penalty(_small_config(model="fc100_100_10"), params) is None
  with pytest.raises(ValueError, match="fc9.*fc1, fc2, out"):
    training.make_penalty(_small_config(model="fc100_100_10", layer_weight_decay="fc9:1"),
                          params)
  with pytest.raises(ValueError, match="layer:λ"):
    training.make_penalty(_small_config(model="fc100_100_10", layer_weight_decay="fc1=1"),
                          params)


def test_frozen_encoder_and_sparse_pretraining(small_mnist):
  train, _ = small_mnist
  config = _small_config(model="ae400_10", ae_pretrain_epochs=1, epochs=1, ae_loss="sparse",
                         frozen="encoder,decoder", optimizer="sgd", learning_rate=0.05,
                         ae_learning_rate=0.01)
  pre_only = config.copy_and_resolve_references()
  pre_only.epochs = 0  # the pre-trained autoencoder, before the classification phase
  (_, pretrained), _ = training.fit(pre_only, train, log=None)
  (_, params), hist = training.fit(config, train, log=None)
  assert hist["phase"] == ["pretrain", "train"]
  chex.assert_trees_all_equal(params["encoder"], pretrained["encoder"])  # not fine-tuned
  chex.assert_trees_all_equal(params["decoder"], pretrained["decoder"])
  assert not np.allclose(params["classifier"]["kernel"], pretrained["classifier"]["kernel"])
  with pytest.raises(ValueError, match="coder.*classifier, decoder, encoder"):
    training.fit(_small_config(model="ae400_10", frozen="coder"), train, log=None)


def test_sparse_reconstruction_loss_known_answer():
  apply_fn, params = models.init("ae400_10", jax.random.key(0))
  x = jnp.full((2, 28, 28, 1), 0.5)
  loss = training.sparse_reconstruction_loss(target=0.1, weight=3.0)
  enc = dataclasses.replace(apply_fn, method="encode")(params, x)
  rec = dataclasses.replace(apply_fn, method="reconstruct")(params, x)
  rho = jnp.mean(enc, 0)
  kl = jnp.sum(0.1 * jnp.log(0.1 / rho) + 0.9 * jnp.log(0.9 / (1 - rho)))
  expected = 0.5 * jnp.sum(jnp.square(rec - x)) / 2 + 3.0 * kl
  assert float(loss(apply_fn, params, x, None)) == pytest.approx(float(expected), rel=1e-5)
  with pytest.raises(ValueError, match="0 < target < 1"):
    training.sparse_reconstruction_loss(target=1.5)
