import json
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from experiments import core
from experiments.szegedy2013 import properties as szegedy_experiment
from experiments.szegedy2013.configs import properties as szegedy_config
from foolingjax import attacks, checkpoint, data, directions, zoo
from foolingjax.attacks import perturbations

# --------------------------------------------------------------------------
# Library


def test_random_directions_are_unit_vectors(key):
  v = directions.random_directions(key, 7, 50)
  chex.assert_shape(v, (7, 50))
  np.testing.assert_allclose(np.linalg.norm(np.asarray(v), axis=1), 1.0, rtol=1e-6)


def test_top_k_along_a_unit_and_a_direction_known_answer():
  # Feature 0 of image i is i; feature 1 is -i. Unit e_0 ranks images from the
  # last; direction (e_0 - e_1)/sqrt(2) too; e_1 ranks them from the first.
  n = 6
  features = jnp.stack([jnp.arange(n, dtype=jnp.float32), -jnp.arange(n, dtype=jnp.float32)], 1)
  dirs = jnp.array([[1.0, 0.0], [0.0, 1.0], [2 ** -0.5, -(2 ** -0.5)]])
  indices, scores = jax.jit(directions.top_k_along, static_argnums=2)(features, dirs, 3)
  np.testing.assert_array_equal(indices, [[5, 4, 3], [0, 1, 2], [5, 4, 3]])
  np.testing.assert_allclose(scores[0], [5, 4, 3])
  np.testing.assert_allclose(scores[2], np.array([5, 4, 3]) * 2 ** 0.5, rtol=1e-6)


def test_top_k_along_rejects_bad_shapes():
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    directions.top_k_along(jnp.zeros((4, 3)), jnp.zeros((2, 5)), 2)
  with pytest.raises(ValueError, match="k must be in"):
    directions.top_k_along(jnp.zeros((4, 3)), jnp.zeros((2, 3)), 5)


def test_label_purity_known_answer():
  labels = jnp.array([0, 0, 1, 2, 2, 2])
  indices = jnp.array([[0, 1, 2, 3], [3, 4, 5, 0], [0, 2, 3, 1]])
  np.testing.assert_allclose(directions.label_purity(labels, indices, 3), [0.5, 0.75, 0.5])


def test_random_targets_are_never_the_label_and_cover_the_others(key):
  labels = jnp.tile(jnp.arange(10), 500)
  targets = jax.jit(perturbations.random_targets, static_argnums=2)(key, labels, 10)
  assert not np.any(np.asarray(targets) == np.asarray(labels))
  for c in range(10):
    hit = set(np.asarray(targets)[np.asarray(labels) == c].tolist())
    assert hit == set(range(10)) - {c}


def test_scale_to_distortion_hits_the_target_after_clipping(key, mnist_test):
  x = jnp.asarray(data.to_float(mnist_test[0][:8]))
  # Gaussian noise on MNIST: most pixels are 0, so clipping removes about half
  # of the step and a plain rescaling would fall short.
  noise = jax.random.normal(key, x.shape)
  target = jnp.linspace(0.02, 0.3, 8)
  out, dist = jax.jit(perturbations.scale_to_distortion)(x, noise, target)
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  np.testing.assert_allclose(dist, target, rtol=1e-4)
  np.testing.assert_allclose(attacks.metrics.rms_distortion(x, out), dist, rtol=1e-5)
  # The naive unclipped rescaling would have given less.
  naive = jnp.clip(x + noise * (target * 28 / jnp.linalg.norm(
      noise.reshape(8, -1), axis=1))[:, None, None, None], 0, 1)
  assert np.all(np.asarray(attacks.metrics.rms_distortion(x, naive)) < 0.8 * np.asarray(target))


def test_scale_to_distortion_without_clipping_is_a_plain_rescaling(key):
  x = jnp.full((2, 4, 4, 1), 0.5)
  d = jax.random.normal(key, x.shape)
  out, dist = perturbations.scale_to_distortion(x, d, 0.01)
  expected = x + d * (0.01 * 4 / jnp.linalg.norm(d.reshape(2, -1), axis=1))[:, None, None, None]
  np.testing.assert_allclose(out, expected, atol=1e-6)
  np.testing.assert_allclose(dist, 0.01, rtol=1e-5)


def test_scale_to_distortion_reports_an_unreachable_target():
  # Every pixel is at 1 and the direction pushes them up: no step moves the image.
  x = jnp.ones((1, 3, 3, 1))
  out, dist = perturbations.scale_to_distortion(x, jnp.ones_like(x), 0.1)
  np.testing.assert_array_equal(out, x)
  assert float(dist[0]) == 0.0
  # Half the pixels can move by at most 1: the distortion caps at sqrt(1/2).
  x = jnp.concatenate([jnp.zeros((1, 2, 3, 1)), jnp.ones((1, 1, 3, 1))], axis=1)
  x = jnp.pad(x, ((0, 0), (0, 1), (0, 0), (0, 0)), constant_values=1.0)  # 6 of 12 at 0
  out, dist = perturbations.scale_to_distortion(x, jnp.ones_like(x), 0.9)
  np.testing.assert_allclose(dist, np.sqrt(0.5), rtol=1e-5)
  with pytest.raises(ValueError, match="one shape"):
    perturbations.scale_to_distortion(x, jnp.ones((1, 4, 3, 2)), 0.1)


def test_gaussian_at_distortion_zero_target_leaves_images_alone(key):
  x = jnp.full((3, 5, 5, 1), 0.3)
  out, dist = perturbations.gaussian_at_distortion(key, x, jnp.array([0.0, 0.05, 0.1]))
  np.testing.assert_array_equal(out[0], x[0])
  np.testing.assert_allclose(dist, [0.0, 0.05, 0.1], atol=1e-6)


def test_disjoint_parts_cover_the_split_without_overlap():
  images = np.arange(11 * 2).reshape(11, 2, 1, 1).astype(np.uint8)
  labels = np.arange(11)
  parts = [data.disjoint_part((images, labels), p, 2) for p in range(2)]
  a, b = (set(p[1].tolist()) for p in parts)
  assert len(a) == len(b) == 5 and not a & b
  for imgs, labs in parts:
    np.testing.assert_array_equal(imgs[:, 0, 0, 0], labs * 2)  # images stay with their labels
  again = data.disjoint_part((images, labels), 0, 2)
  np.testing.assert_array_equal(again[1], parts[0][1])
  with pytest.raises(ValueError, match="numbered from 0"):
    data.disjoint_part((images, labels), 2, 2)


def test_cross_training_presets_are_bundled_and_trained_on_their_half():
  for name, part in (("fc100_100_10_mnist_p1", 0), ("fc123_456_10_mnist_p1", 0),
                     ("fc100_100_10_mnist_p2", 1)):
    zoo.load_classifier(name, train_if_missing=False)
    meta = zoo.info(name)
    assert meta["config"]["train_part"] == part
    assert meta["history"]["test_accuracy"][-1] > 0.97
  train = data.load("mnist", "train")
  for name, part in (("fc100_100_10_mnist_p1", 0), ("fc100_100_10_mnist_p2", 1)):
    images, labels = zoo.training_data(zoo.preset_config(name))[0]
    assert len(labels) == 30000
    np.testing.assert_array_equal(images, data.disjoint_part(train, part, 2)[0])


# --------------------------------------------------------------------------
# The experiment at its smoke preset


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("szegedy_smoke")
  config = szegedy_config.get_config("smoke")
  logs = []
  summary = szegedy_experiment.run(config, workdir, log=logs.append)
  tables = core.parse_markdown_tables((workdir / "results.md").read_text())
  return config, workdir, summary, tables, logs


def _pct(cell: str) -> float:
  """``"54.5%"`` or ``"54.5% (paper 2.0%)"`` (the paper's number beside ours) -> 0.545."""
  cell = cell.split(" (paper ")[0]
  assert cell.endswith("%"), cell
  return float(cell[:-1]) / 100


def _table(tables, prefix):
  (title,) = [t for t in tables if t.startswith(prefix)]
  return tables[title]


def test_smoke_writes_every_table_and_figure(smoke_run):
  config, workdir, summary, tables, _ = smoke_run
  assert len(tables) == 5
  for name in ("adversarial_examples.png", "units_fc100_100_10_mnist_fc2.png"):
    with Image.open(workdir / name) as im:
      assert im.size[0] > 200 and im.size[1] > 100
  saved = json.loads((workdir / "summary.json").read_text())
  assert set(saved) == {"units", "table1", "table2", "table2_images", "table3", "table4",
                        "table4_images"}


def test_smoke_units_table(smoke_run):
  config, _, summary, tables, _ = smoke_run
  rows = _table(tables, "Units vs random directions")
  assert set(rows) == {"FC100-100-10 fc2, top 5", "FC100-100-10 fc2, top 20"}
  result = summary["units"]["fc100_100_10_mnist:fc2"]
  assert 0 < result["live"] <= result["dim"] == 100
  for k, purity in result["purity"].items():
    for group in ("units", "directions", "random_sets"):
      values = np.array(purity[group]["values"])
      assert np.all((values >= 1 / int(k) - 1e-6) & (values <= 1))
      assert purity[group]["mean"] == pytest.approx(values.mean())
    assert len(purity["units"]["values"]) == result["live"]
    assert len(purity["directions"]["values"]) == config.units.num_random
    # Top-k images of a trained net's units share labels far more than random sets.
    assert purity["units"]["mean"] > purity["random_sets"]["mean"] + 0.1


def test_smoke_table1_matches_the_saved_adversarial_examples(smoke_run, mnist_test):
  config, workdir, summary, tables, _ = smoke_run
  table1 = _table(tables, "Table 1")
  x = data.to_float(mnist_test[0][: config.num_attack_images])
  y = mnist_test[1][: config.num_attack_images]
  targets = np.asarray(perturbations.random_targets(
      jax.random.fold_in(jax.random.key(config.seed), szegedy_experiment.TARGETS_STREAM),
      jnp.asarray(y), 10))
  for name in core.names(config.table1):
    row = table1[szegedy_experiment.display(name)]
    apply_fn, params = zoo.load_classifier(name, train_if_missing=False)
    saved, _ = checkpoint.load_raw(workdir / "adversarial" / f"{name}.msgpack")
    index, adv, success = saved["index"], saved["adv"], saved["success"]
    np.testing.assert_array_equal(saved["targets"], targets[index])
    assert int(saved["done"]) == len(index)
    # Attacked: exactly the images the net gets right.
    clean_pred = np.asarray(jnp.argmax(apply_fn(params, jnp.asarray(x)), -1))
    np.testing.assert_array_equal(index, np.flatnonzero(clean_pred == y))
    # Every success is classified as its target, and stays in the box.
    adv_pred = np.asarray(jnp.argmax(apply_fn(params, jnp.asarray(adv)), -1))
    np.testing.assert_array_equal(adv_pred[success], targets[index][success])
    assert adv.min() >= 0 and adv.max() <= 1
    distortion = float(attacks.metrics.average_minimum_distortion(
        x[index], adv, success))
    assert float(row["av. min. distortion"]) == pytest.approx(distortion, abs=6e-5)
    assert 0.005 < distortion < 0.3
    assert row["attacks succeeded"] == f"{success.sum()}/{len(index)}"
    # The test error is the trained net's own, as recorded when it was trained.
    history = zoo.info(name)["history"]
    assert _pct(row["test error"]) == pytest.approx(1 - history["test_accuracy"][-1], abs=6e-4)


def test_smoke_table2_rows(smoke_run, mnist_test):
  config, workdir, summary, tables, _ = smoke_run
  table2 = _table(tables, "Table 2")
  names = core.names(config.table1)
  nets = [szegedy_experiment.display(n) for n in names]
  for net in nets:
    adv = table2[f"adversarial for {net}"]
    assert adv[net] == "100.0%"  # each net fails on all of its own adversarial examples
    noise = table2[f"Gaussian noise at the distortion of {net}"]
    assert noise["av. distortion"] == adv["av. distortion"]
    assert noise["images"] == adv["images"]
    for other in nets:
      assert 0 <= _pct(adv[other]) <= 1 and 0 <= _pct(noise[other]) <= 1
  for rms in ("0.1", "0.3"):
    row = table2[f"Gaussian noise, RMS {rms}"]
    assert row["av. distortion"] == f"{float(rms):.4f}"
    assert int(row["images"]) == summary["table2_images"]
  # One cell by hand: net B's error on net A's adversarial examples, made from
  # the images both nets classify correctly.
  a, b = names
  x = data.to_float(mnist_test[0][: config.num_attack_images])
  y = mnist_test[1][: config.num_attack_images]
  clf_a, clf_b = (zoo.load_classifier(n, train_if_missing=False) for n in (a, b))
  predict = lambda clf, images: np.asarray(jnp.argmax(clf[0](clf[1], jnp.asarray(images)), -1))
  common = np.flatnonzero((predict(clf_a, x) == y) & (predict(clf_b, x) == y))
  assert summary["table2_images"] == len(common)
  saved, _ = checkpoint.load_raw(workdir / "adversarial" / f"{a}.msgpack")
  keep = saved["success"] & np.isin(saved["index"], common)
  adv, labels = saved["adv"][keep], y[saved["index"][keep]]
  assert table2[f"adversarial for {nets[0]}"]["images"] == str(len(labels))
  expected = np.mean(predict(clf_b, adv) != labels)
  assert _pct(table2[f"adversarial for {nets[0]}"][nets[1]]) == pytest.approx(expected, abs=6e-4)


def test_smoke_tables_3_and_4(smoke_run):
  config, workdir, summary, tables, _ = smoke_run
  table3 = _table(tables, "Table 3")
  assert table3["FC100-100-10 (P1)"]["trained on"] == "P1"
  assert table3["FC100-100-10' (P2)"]["trained on"] == "P2"
  assert all(r["training images"] == "30000" for r in table3.values())
  table4 = _table(tables, "Table 4")
  for net in table3:
    assert table4[f"adversarial for {net}"][net] == "100.0%"
    magnified = table4[f"adversarial for {net}, magnified to RMS 0.1"]
    assert magnified["av. distortion"] == "0.1000"
    assert magnified[net] == "100.0%"  # larger along the same direction: still fooled
  assert table4["Gaussian noise, RMS 0.1"]["av. distortion"] == "0.1000"


def test_smoke_refuses_saved_attacks_with_other_targets(smoke_run, tmp_path):
  config, workdir, *_ = smoke_run
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  path = copy / "adversarial" / "fc10_wd1e-4_mnist.msgpack"
  arrays, _ = checkpoint.load_raw(path)
  arrays["targets"] = (arrays["targets"] + 1) % 10
  checkpoint.save(path, arrays, fingerprint=checkpoint.read_fingerprint(path))
  (copy / "tables" / "result.json").unlink()  # else the finished part is read back
  with pytest.raises(RuntimeError, match="other images or targets"):
    szegedy_experiment.run(config, copy)


def test_smoke_rerun_resumes_and_a_changed_config_refuses(smoke_run):
  config, workdir, summary, tables, _ = smoke_run
  # Cut one net's saved attack back to its first chunk: the rerun resumes there.
  path = workdir / "adversarial" / "fc100_100_10_mnist.msgpack"
  arrays, _ = checkpoint.load_raw(path)
  arrays = {k: np.array(v) for k, v in arrays.items()}
  full = arrays["adv"].copy()
  arrays["done"] = np.array(config.attack.chunk_images)
  arrays["adv"][config.attack.chunk_images:] = 0.0
  checkpoint.save(path, arrays, fingerprint=checkpoint.read_fingerprint(path))
  # As if the run had been killed in the tables part: it has no result yet.
  (workdir / "tables" / "result.json").unlink()
  logs = []
  again = szegedy_experiment.run(config, workdir, log=logs.append)
  # Finished parts are read back; the tables part resumes its saved attacks.
  assert any(line.startswith("[units] done earlier") for line in logs)
  assert any(line.startswith("[cross_training] done earlier") for line in logs)
  assert any("FC100-100-10: resuming at image 5" in line for line in logs)
  assert not any("FC10(1e-4): " in line and "images" in line for line in logs)
  saved, _ = checkpoint.load_raw(path)
  np.testing.assert_allclose(saved["adv"], full, atol=1e-6)
  assert again["table1"] == summary["table1"]
  assert core.parse_markdown_tables((workdir / "results.md").read_text()) == tables
  other = szegedy_config.get_config("smoke")
  other.attack.max_iters = 31
  with pytest.raises(core.WorkdirConflictError, match="attack"):
    szegedy_experiment.run(other, workdir)


def test_bad_configs_fail_clearly(tmp_path):
  config = szegedy_config.get_config("smoke")
  config.parts = "units,tabels"
  with pytest.raises(ValueError, match="tabels"):
    szegedy_experiment.run(config, tmp_path / "a")
  config = szegedy_config.get_config("smoke")
  config.parts = "units"
  config.units.layers = "fc100_100_10_mnist:conv9"
  with pytest.raises(ValueError, match="fc1, fc2"):
    szegedy_experiment.run(config, tmp_path / "b")
  config.parts = "tables"
  config.table1 = "fc100_100_10_mnist,fc101_mnist"
  with pytest.raises(ValueError, match="fc101_mnist"):
    szegedy_experiment.run(config, tmp_path / "b")
  assert not (tmp_path / "b").exists()
  for field, value, match in (("num_attack_images", 0, "num_attack_images"),
                               ("num_attack_images", 10001, "at most 10000"),
                               ("noise_rms", "0.1,big", "noise_rms"),
                               ("noise_stddev", "0.1,-1", "noise_stddev"),
                               ("attack_split", "validation", "attack_split"),
                               ("target_rule", "least_likely", "target_rule"),
                               ("magnify", "paper,double", "magnify")):
    config = szegedy_config.get_config("smoke")
    config.parts = "tables"
    config[field] = value
    with pytest.raises(ValueError, match=match):
      szegedy_experiment.run(config, tmp_path / "c")
    # Nothing was written, so the corrected config runs there without a conflict.
    assert not (tmp_path / "c").exists()
  config = szegedy_config.get_config("smoke")
  config.units.purity_k = "5,600"  # more than units.num_images
  with pytest.raises(ValueError, match="purity_k"):
    szegedy_experiment.run(config, tmp_path / "d")
  with pytest.raises(ValueError, match="Unknown preset"):
    szegedy_config.get_config("table9")


@pytest.mark.parametrize("preset", list(szegedy_config.PRESETS))
def test_every_preset_names_zoo_nets(preset):
  config = szegedy_config.get_config(preset)
  layers = core.names(config.units.layers)
  units = [szegedy_experiment.split_layer(item)[0] for item in layers]
  nets = core.names(config.table1) + core.names(config.cross_training) + units
  for name in nets:
    assert zoo.parse_spec(name)[0] == "preset"  # raises for an unknown net
    assert szegedy_experiment.display(name) != name  # every table net has a paper name
  assert core.parse_parts(config.parts, szegedy_config.PARTS)
  for factor in core.names(config.study):  # the study's variants name zoo nets too
    for name in core.names(szegedy_config.study_variant(config, factor).table1):
      assert zoo.parse_spec(name)[0] == "preset"


def test_paper_preset_is_the_papers_protocol():
  config = szegedy_config.get_config("paper")
  assert (config.attack_split, config.cross_training_split) == ("train", "test")
  assert set(core.names(config.magnify)) == {"paper", "rms_after_clip"}
  assert config.noise_stddev == "0.1,0.3"
  for name in core.names(config.table1) + core.names(config.cross_training):
    preset = zoo.preset_config(name)
    assert preset.optimizer == "sgd" and preset.weight_decay_per_unit
    assert szegedy_experiment.paper_name(name) in (
        set(szegedy_experiment.PAPER_TABLE1) | {"FC100-100-10 (P1)", "FC123-456-10 (P1)",
                                                "FC100-100-10' (P2)"})
  hidden = zoo.preset_config("fc100_100_10_paper_mnist")
  assert hidden.model.endswith("_sigmoid") and hidden.layer_weight_decay == (
      "fc1:1e-5,fc2:1e-5,out:1e-6")
  ae = zoo.preset_config("ae400_10_paper_mnist")
  assert ae.ae_loss == "sparse" and ae.frozen == "encoder,decoder"


def test_each_study_variant_changes_one_factor():
  base = szegedy_config.get_config("study")
  ours = szegedy_config.study_variant(base, "ours")
  differ = lambda a, b: {k for k in a.to_dict() if a.to_dict()[k] != b.to_dict()[k]}
  assert differ(ours, base) == {"study", "preset"}
  for factor, changed in (("train_images", {"attack_split"}), ("sigmoid", {"table1"}),
                          ("sgd", {"table1"}), ("sgd_fc10", {"table1"}),
                          ("sgd_hidden", {"table1"}), ("sparse_ae", {"table1"}),
                          ("short_search", {"attack"}), ("next_target", {"target_rule"}),
                          ("paper", {"table1", "attack_split"})):
    variant = szegedy_config.study_variant(base, factor)
    assert differ(variant, ours) - {"preset"} == changed, factor
    if changed == {"table1"}:  # the swapped nets are the factor's only change
      swapped = [(a, b) for a, b in zip(core.names(ours.table1), core.names(variant.table1))
                 if a != b]
      assert swapped and all(szegedy_experiment.paper_name(a) ==
                             szegedy_experiment.paper_name(b) for a, b in swapped)
  with pytest.raises(ValueError, match="Unknown study factor"):
    szegedy_config.study_variant(base, "dropout")


def test_paper_numbers_stand_beside_ours():
  rows = [{"row": "adversarial for FC10(1e-4)", "kind": "adversarial",
           "source": "fc10_wd1e-4_paper_mnist", "distortion": 0.06, "images": 9,
           "errors": {"fc10_wd1e-4_paper_mnist": 1.0, "fc100_100_10_sgd_mnist": 0.25}},
          {"row": "noise", "kind": "noise_stddev", "source": "0.3", "distortion": 0.3,
           "images": 9, "errors": {"fc10_wd1e-4_paper_mnist": 0.5,
                                   "fc100_100_10_sgd_mnist": 0.125}}]
  table = szegedy_experiment.cross_markdown(
      "T", rows, ["fc10_wd1e-4_paper_mnist", "fc100_100_10_sgd_mnist"],
      szegedy_experiment.PAPER_TABLE2)
  (parsed,) = core.parse_markdown_tables(table).values()
  first, noise = parsed["adversarial for FC10(1e-4)"], parsed["noise"]
  assert first["FC10(1e-4) paper"] == "100.0%"  # the paper gives no diagonal cell
  assert first["FC100-100-10 SGD"] == "25.0% (paper 2.0%)"
  assert noise["FC10(1e-4) paper"] == "50.0% (paper 15.6%)"
  assert noise["FC100-100-10 SGD"] == "12.5% (paper 5.0%)"


def test_paper_noise_and_magnification(key, mnist_test):
  x = jnp.asarray(data.to_float(mnist_test[0][:64]))
  noisy = perturbations.gaussian_noise(key, x, 0.3)
  assert float(jnp.std(noisy - x)) == pytest.approx(0.3, rel=0.02)
  assert float(noisy.min()) < 0 and float(noisy.max()) > 1  # unclipped, as the paper's
  clipped = perturbations.gaussian_noise(key, x, 0.3, clip=True)
  np.testing.assert_array_equal(clipped, jnp.clip(noisy, 0, 1))  # the same draw
  r = 0.05 * jax.random.normal(key, x.shape)
  magnified = perturbations.magnify(x, r, 0.1)
  rms = jnp.sqrt(jnp.mean(jnp.square(magnified - x), axis=(1, 2, 3)))
  np.testing.assert_allclose(rms, 0.1, rtol=1e-5)
  # Direction kept per image: magnified - x is a positive multiple of r.
  ratio = (magnified - x).reshape(64, -1) / r.reshape(64, -1)
  # (x + s r) - x loses a few bits where x is near 1: a relative 2e-3 at most.
  np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=2e-3)
  assert bool(jnp.all(ratio > 0))
  np.testing.assert_array_equal(perturbations.next_targets(jnp.arange(10), 10),
                                (np.arange(10) + 1) % 10)


def test_study_compares_its_variants(tmp_path):
  config = szegedy_config.get_config("smoke")
  config.parts = "tables"
  config.study = "ours,next_target"
  config.num_attack_images = 5
  config.noise_stddev = "0.3"
  config.attack.c_search_steps = 2
  config.attack.max_iters = 10
  numbers = szegedy_experiment.run(config, tmp_path / "study", log=lambda s: None)
  assert set(numbers) == {"ours", "next_target"}
  for factor in numbers:
    summary = json.loads((tmp_path / "study" / factor / "summary.json").read_text())
    (row,) = [r for r in summary["table2"] if r["kind"] == "adversarial"
              and r["source"] == "fc10_wd1e-4_mnist"]
    assert numbers[factor]["cells"]["FC10(1e-4) -> FC100-100-10"] == row["errors"][
        "fc100_100_10_mnist"]
  tables = core.parse_markdown_tables((tmp_path / "study" / "study.md").read_text())
  (table,) = tables.values()
  assert table["**the paper**"]["FC100-100-10 → FC10(1e-4)"] == "28.9%"
  assert set(table) == {"**the paper**"} | {
      f"{f}: {szegedy_config.STUDY_FACTORS[f]}" for f in numbers}


USER_MODEL = "tests.user_models:tiny_mnist_classifier"


def test_a_users_model_in_the_tables_and_a_clear_error_in_the_units_part(tmp_path,
                                                                        mnist_test):
  # The units part ranks images along named hidden layers: a model without a
  # features method cannot take it, and says so before anything is written.
  config = szegedy_config.get_config("smoke")
  config.parts = "units"
  config.units.layers = f"{USER_MODEL}:conv"
  with pytest.raises(ValueError, match=r"units part cannot take .*tiny_mnist.*Fix"):
    szegedy_experiment.run(config, tmp_path / "units")
  assert not (tmp_path / "units").exists()
  # Tables 1-4 take any 10-class MNIST model.
  config = szegedy_config.get_config("smoke")
  config.parts = "tables,cross_training"
  config.table1 = f"fc10_wd1e-4_mnist,{USER_MODEL}"
  config.cross_training = USER_MODEL
  workdir = tmp_path / "tables"
  summary = szegedy_experiment.run(config, workdir, log=lambda s: None)
  tables = core.parse_markdown_tables((workdir / "results.md").read_text())
  user = zoo.resolve(USER_MODEL)
  expected_test_error = 1 - float(np.mean(np.asarray(jnp.argmax(user.apply_fn(
      user.params, jnp.asarray(data.to_float(mnist_test[0]))), -1)) == mnist_test[1]))
  for table, numbers in ((_table(tables, "Table 1"), summary["table1"]),
                         (_table(tables, "Table 3"), summary["table3"])):
    row = table[USER_MODEL]
    assert row["training error"] == core.MISSING  # its training set is unknown
    assert _pct(row["test error"]) == pytest.approx(expected_test_error, abs=6e-4)
    assert numbers[USER_MODEL]["trained_on"] == "unknown"
  assert _table(tables, "Table 3")[USER_MODEL]["trained on"] == "unknown"
  path = workdir / "adversarial" / "tests.user_models_tiny_mnist_classifier.msgpack"
  saved, _ = checkpoint.load_raw(path)
  assert int(saved["done"]) == len(saved["index"]) > 0
  table2 = _table(tables, "Table 2")
  assert f"adversarial for {USER_MODEL}" in table2
  assert int(table2["Gaussian noise, RMS 0.1"]["images"]) == summary["table2_images"]


def test_smoke_writes_its_numbers_as_tensorboard_scalars(smoke_run):
  from tests.test_tensorboard import read_scalars
  _, workdir, summary, _, _ = smoke_run
  scalars = read_scalars(workdir / "tensorboard")
  net = next(iter(summary["table1"]))
  label = szegedy_experiment.display(net)
  assert scalars[(0, f"table1/{label}/distortion")] == pytest.approx(
      summary["table1"][net]["distortion"], rel=1e-6)
  row = summary["table2"][0]
  assert scalars[(0, f"table2/{row['row']}/{label}")] == pytest.approx(
      row["errors"][net], rel=1e-6)
