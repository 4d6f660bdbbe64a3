import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from experiments import core
from experiments.nguyen2015 import followups as nguyen_experiment
from experiments.nguyen2015.configs import followups as nguyen_config
from foolingjax import motifs as motifs_lib
from foolingjax import transfer
from tests.test_tensorboard import read_scalars


def _bars_image(dark_on_bright=False):
  """Three identical 3x2 bars, one 3x3 block (bars' IoU with it: 2/3) and a dot."""
  image = np.zeros((12, 12, 1), np.float32)
  for col in (1, 5, 9):
    image[2:5, col:col + 2] = 1.0
  image[8:11, 1:4] = 1.0
  image[8, 8] = 1.0
  return jnp.asarray(1.0 - image if dark_on_bright else image)


# --------------------------------------------------------------------------
# Transfer statistics


def test_transfer_statistics_known_answer():
  probs_a = jnp.array([[0.99999, 0.00001], [0.99999, 0.00001], [0.2, 0.8], [0.9, 0.1]])
  probs_b = jnp.array([[0.999995, 0.000005], [0.3, 0.7], [0.1, 0.9], [0.95, 0.05]])
  targets = jnp.array([0, 0, 1, 0])
  stats = jax.jit(transfer.transfer_statistics)(probs_a, probs_b, targets)
  # Same top-1: images 0, 2, 3. Both >= 99.99 %: image 0 only. B < A: image 1.
  assert int(stats["count"]) == 4
  np.testing.assert_allclose(stats["same_top1"], 0.75)
  np.testing.assert_allclose(stats["both_above"], 0.25)
  np.testing.assert_allclose(stats["b_less_confident"], 0.25)
  np.testing.assert_allclose(stats["a_above"], 0.5)
  np.testing.assert_allclose(stats["b_above_given_a_above"], 0.5)
  np.testing.assert_allclose(stats["median_conf_a"], (0.9 + 0.99999) / 2, rtol=1e-6)


def test_transfer_statistics_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="same class set"):
    transfer.transfer_statistics(jnp.ones((3, 10)) / 10, jnp.ones((3, 11)) / 11,
                               jnp.zeros(3, jnp.int32))


# --------------------------------------------------------------------------
# Motifs


def test_connected_components_label_each_blob_by_its_first_pixel():
  mask = _bars_image()[..., 0] > 0.5
  labels = np.asarray(jax.jit(motifs_lib.connected_components)(mask))
  assert labels[8, 8] == 8 * 12 + 8                 # the dot
  assert np.all(labels[2:5, 1:3] == 2 * 12 + 1)     # first bar
  assert np.all(labels[8:11, 1:4] == 8 * 12 + 1)    # block
  assert np.all(labels[~np.asarray(mask)] == 144)
  assert len(np.unique(labels)) == 6                # 5 components + background


@pytest.mark.parametrize("dark_on_bright", [False, True])
def test_find_motifs_flags_copies_after_the_first(dark_on_bright):
  image = _bars_image(dark_on_bright)
  motifs = jax.jit(motifs_lib.find_motifs)(image)
  # Components in raster order: bar, bar, bar, block, dot.
  assert int(motifs.valid.sum()) == 5
  np.testing.assert_array_equal(motifs.area[:5], [6, 6, 6, 9, 1])
  np.testing.assert_array_equal(motifs.repeat[:5], [False, True, True, False, False])
  np.testing.assert_allclose(motifs.background, [1.0 if dark_on_bright else 0.0])
  # A looser threshold also takes the block for a bar (IoU 6/9).
  loose = motifs_lib.find_motifs(image, iou_threshold=0.6)
  np.testing.assert_array_equal(loose.repeat[:5], [False, True, True, True, False])


def test_flat_image_has_no_motifs():
  motifs = motifs_lib.find_motifs(jnp.full((8, 8, 3), 0.3))
  assert int(motifs.valid.sum()) == 0 and int(motifs.num_repeats) == 0


@pytest.mark.parametrize("jit", [False, True])
def test_progressive_ablation_known_images(key, jit):
  image = _bars_image()
  motifs = motifs_lib.find_motifs(image)
  fn = motifs_lib.progressive_ablation
  if jit:
    fn = jax.jit(fn, static_argnames="steps")
  ablated, removed = fn(key, image, motifs, steps=3)
  chex.assert_shape(ablated, (4, 12, 12, 1))
  np.testing.assert_array_equal(removed, [0, 1, 1, 2])   # round(s / 3 * 2)
  chex.assert_trees_all_close(ablated[0], image)
  expected = np.asarray(image).copy()
  expected[2:5, 5:7] = 0.0
  expected[2:5, 9:11] = 0.0
  np.testing.assert_array_equal(ablated[3], expected)   # one bar left, block and dot kept
  # Each step removes a superset of the previous step's pixels.
  lit = np.asarray(ablated[..., 0] > 0.5)
  assert np.all(lit[1:] <= lit[:-1])
  assert lit[1].sum() == lit[0].sum() - 6


def test_ablation_fn_confidence_falls_as_copies_go(key):
  # Logit of class 1 grows with the number of lit pixels: removing copies lowers it.
  def apply_fn(params, x):
    lit = jnp.sum(x, axis=(1, 2, 3))
    return jnp.stack([jnp.zeros_like(lit), params * lit], axis=-1)

  ablate = jax.jit(motifs_lib.make_ablation_fn(apply_fn=apply_fn, steps=2))
  images = jnp.stack([_bars_image(), jnp.zeros((12, 12, 1))])
  out = ablate(key, jnp.float32(0.2), images, jnp.array([1, 1]))
  np.testing.assert_array_equal(out["repeats"], [2, 0])
  np.testing.assert_array_equal(out["components"], [5, 0])
  conf = np.asarray(out["confidence"])
  lit = np.array([28.0, 22.0, 16.0])  # 3 bars of 6, a block of 9, a dot
  np.testing.assert_allclose(conf[0], jax.nn.sigmoid(0.2 * lit), rtol=1e-5)
  np.testing.assert_allclose(conf[1], 0.5)
  # The control removes the same area (0, 6, 12 pixels) of non-repeated foreground:
  # the first bar, the block and the dot (16 pixels), never a repeat.
  np.testing.assert_array_equal(out["removed_area"][0], [0, 6, 12])
  np.testing.assert_array_equal(out["control_area"][0], out["removed_area"][0])
  np.testing.assert_allclose(out["control_confidence"][0], conf[0], rtol=1e-5)  # same lit


def test_ablation_fn_in_chunks_of_per_image_keys_equals_one_call(key):
  def apply_fn(params, x):
    lit = jnp.sum(x, axis=(1, 2, 3))
    return jnp.stack([jnp.full_like(lit, 3.0), params * lit], axis=-1)

  images = jnp.stack([_bars_image(), jnp.zeros((12, 12, 1)), _bars_image()[::-1],
                      _bars_image()[:, ::-1]])
  targets = jnp.array([1, 1, 0, 1])
  whole = jax.jit(motifs_lib.make_ablation_fn(apply_fn=apply_fn, steps=2))(
      key, jnp.float32(0.2), images, targets)
  lean = jax.jit(motifs_lib.make_ablation_fn(apply_fn=apply_fn, steps=2, return_images=False))
  keys = jax.random.split(key, 4)
  parts = [lean(keys[i:i + 2], jnp.float32(0.2), images[i:i + 2], targets[i:i + 2])
           for i in (0, 2)]
  assert "images" not in parts[0] and "control_images" not in parts[0]
  for name, value in parts[0].items():
    np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]), whole[name],
                                  err_msg=name)
  # top1 is the label of each ablated image: 3 > 0.2 * lit until lit > 15.
  lit = np.asarray(jnp.sum(whole["images"], axis=(2, 3, 4)))
  np.testing.assert_array_equal(whole["top1"], (0.2 * lit > 3.0).astype(int))


def test_ablation_control_removes_an_area_equal_to_the_repeats_and_no_repeat(key):
  image = _bars_image()
  motifs = motifs_lib.find_motifs(image)
  ablated, removed = motifs_lib.progressive_ablation(key, image, motifs, steps=2)
  areas = motifs_lib.removed_area(motifs, removed, key)
  np.testing.assert_array_equal(areas, [0, 6, 12])
  control, control_area = jax.jit(motifs_lib.area_matched_control)(
      jax.random.key(5), image, motifs, areas)
  np.testing.assert_array_equal(control_area, areas)
  changed = np.asarray(control[..., 0] != image[None, ..., 0])
  np.testing.assert_array_equal(changed.sum(axis=(1, 2)), areas)
  repeat_pixels = np.zeros((12, 12), bool)
  repeat_pixels[2:5, 5:7] = repeat_pixels[2:5, 9:11] = True   # the two repeated bars
  assert not (changed & repeat_pixels[None]).any()
  assert np.all(changed[2] >= changed[1])                       # a superset per step
  # More than the non-repeated foreground (16 pixels): all of it, and says so.
  _, capped = motifs_lib.area_matched_control(jax.random.key(5), image, motifs,
                                              jnp.array([20]))
  assert int(capped[0]) == 16


# --------------------------------------------------------------------------
# The experiment at its smoke preset


def test_fooling_class_accumulates_exactly_the_distinct_images_so_far():
  rng = np.random.default_rng(0)
  first = rng.integers(0, 256, (5, 4, 4, 1), dtype=np.uint8)
  second = np.concatenate([first[:2], rng.integers(0, 256, (3, 4, 4, 1), dtype=np.uint8)])
  pool = [first, second]                  # two of iteration 2's images repeat iteration 1's
  key = jax.random.key(0)
  got = nguyen_experiment.fooling_class_images(pool, "accumulate", 6000, key)
  distinct = {im.tobytes() for im in np.concatenate(pool)}
  assert len(got) == len(distinct) == 8
  assert {im.tobytes() for im in got} == distinct
  # resample: a fixed size, drawn from the pool, repeats when the pool is smaller.
  drawn = nguyen_experiment.fooling_class_images(pool, "resample", 20, key)
  assert drawn.shape == (20, 4, 4, 1) and {im.tobytes() for im in drawn} <= distinct
  few = nguyen_experiment.fooling_class_images([first], "resample", 4, key)
  assert len({im.tobytes() for im in few}) == 4   # without replacement when enough


def test_bad_parts_fail_clearly(tmp_path):
  config = nguyen_config.get_config("smoke")
  config.parts = "gradient,transfr"
  with pytest.raises(ValueError, match="transfr"):
    nguyen_experiment.run(config, tmp_path)


def _smoke(tmp_path_factory, parts, **retrain):
  workdir = tmp_path_factory.mktemp("nguyen_smoke")
  config = nguyen_config.get_config("smoke")
  config.parts = parts
  config.retrain.update(retrain)
  return config, workdir, nguyen_experiment.run(config, workdir)


# Direct encoding only: the default suite. The retrain loop runs the accumulating
# fooling class (its resampling default is tested on its own above).
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  return _smoke(tmp_path_factory, "transfer,retrain", fooling_class="accumulate",
                iterations=3)


# These need the CPPN encoding, whose compilation took ~45 s here (XLA:CPU, loaded).
@pytest.fixture(scope="module")
def smoke_cppn_run(tmp_path_factory):
  return _smoke(tmp_path_factory, "gradient,ablation")


def _png(path):
  with Image.open(path) as image:
    assert image.size[0] > 100 and image.size[1] > 100
    return image.size


@pytest.mark.slow
def test_smoke_gradient(smoke_cppn_run):
  config, workdir, summary = smoke_cppn_run
  result = json.loads((workdir / "gradient" / "result.json").read_text())
  assert result["median_confidence"] == summary["gradient"]["median_confidence"]
  n = 10 * config.gradient.starts_per_class
  assert result["images"] == n and len(result["per_class_median"]) == 10
  with np.load(workdir / "gradient" / "gradient_images.npz", allow_pickle=False) as f:
    chex.assert_shape(f["images"], (n, 28, 28, 1))
    assert f["images"].min() >= 0.0 and f["images"].max() <= 1.0
    np.testing.assert_allclose(np.median(f["confidence"]), result["median_confidence"])
  # Even 5 ascent steps on LeNet beat chance by far.
  assert min(result["per_class_min"]) > 0.5
  for encoding in ("direct", "cppn"):
    assert 0.0 <= result["evolved"][encoding]["median_confidence"] <= 1.0
  width, height = _png(workdir / "gradient" / "gradient_vs_evolved.png")
  assert width > height  # 3 rows of 10
  for name in ("gradient_original.png", "gradient_original_stretched.png"):
    _png(workdir / "gradient" / name)
  # The original's view of X = image - mean: 0 at 0.5, the largest |X| at 0 or 1.
  x = np.array([[[[-0.2]], [[0.1]]], [[[0.0]], [[0.05]]]])
  np.testing.assert_allclose(nguyen_experiment.norm01c(x)[..., 0, 0],
                             [[0.0, 0.75], [0.5, 1.0]])
  # TensorBoard: the median confidence per ascent step, ending at result.json's.
  scalars = read_scalars(workdir / "tensorboard")
  steps = config.gradient.steps
  assert {s for s, tag in scalars if tag == "gradient/median_confidence"} == set(
      range(1, steps + 1))
  assert scalars[(steps, "gradient/median_confidence")] == pytest.approx(
      result["median_confidence"], rel=1e-4)


def test_smoke_transfer(smoke_run):
  config, workdir, _ = smoke_run
  result = json.loads((workdir / "transfer" / "result.json").read_text())
  pairs = {(r["source"], r["target"], r["encoding"]) for r in result["rows"]}
  assert ("lenet_mnist seed 0", "lenet_mnist seed 1", "direct") in pairs
  assert ("fc100_100_10_mnist seed 0", "lenet_mnist seed 0", "direct") in pairs
  assert len(pairs) == len(nguyen_experiment.transfer_pairs(config))
  for row in result["rows"]:
    assert row["count"] == 10 * config.evolve.runs
    for share in ("same_top1", "both_above", "b_less_confident", "a_above"):
      assert 0.0 <= row[share] <= 1.0
    assert row["both_above"] <= row["a_above"]
  _png(workdir / "transfer" / "transfer.png")
  # Each image's confidence on A and B: the rows' medians come from them.
  with np.load(workdir / "transfer" / "transfer.npz") as f:
    a = f["direct_lenet_seed_0_to_lenet_seed_1_a"]
    b = f["direct_lenet_seed_0_to_lenet_seed_1_b"]
  [row] = [r for r in result["rows"] if r["target"] == "lenet_mnist seed 1"]
  assert np.median(a) == pytest.approx(row["median_conf_a"], rel=1e-5)
  assert np.median(b) == pytest.approx(row["median_conf_b"], rel=1e-5)
  scalars = read_scalars(workdir / "tensorboard")
  for row in result["rows"]:
    tag = f"transfer/{row['source']} -> {row['target']}/{row['encoding']}/same_top1"
    assert scalars[(0, tag)] == pytest.approx(row["same_top1"])


def test_smoke_retrain(smoke_run):
  config, workdir, _ = smoke_run
  r = config.retrain
  lines = [json.loads(l) for l in (workdir / "retrain" / "metrics.jsonl").read_text()
           .splitlines()]
  assert [l["iteration"] for l in lines] == list(range(1, r.iterations + 1))
  # DNN_1 is the bundled 10-class LeNet; later ones have the fooling class.
  assert [l["num_outputs"] for l in lines] == [10] + [11] * (r.iterations - 1)
  assert lines[0]["test_accuracy"] > 0.99
  assert all(0.0 < l["test_accuracy"] <= 1.0 for l in lines)
  assert [l["fooling_images_so_far"] for l in lines] == [
      10 * r.runs * i for i in range(1, r.iterations + 1)]
  # accumulate: DNN_i's class n+1 holds exactly the distinct elites of iterations < i.
  pool = []
  for line in lines:
    want = len({im.tobytes() for p in pool for im in p})
    assert line["fooling_class_images"] == want, line
    assert line["fooling_class_share"] == pytest.approx(want / (r.train_size + want))
    with np.load(workdir / "retrain" / f"iter_{line['iteration']:02d}" / "fooling.npz") as f:
      pool.append(f["images"])
  assert lines[-1]["fooling_class_images"] > lines[1]["fooling_class_images"] > 0
  with np.load(workdir / "retrain" / "iter_02" / "fooling.npz", allow_pickle=False) as f:
    assert f["images"].dtype == np.uint8 and f["images"].shape == (10 * r.runs, 28, 28, 1)
    np.testing.assert_allclose(np.median(f["fitness"]), lines[1]["median_confidence"])
  result = json.loads((workdir / "retrain" / "result.json").read_text())
  assert result["control"]["test_accuracy"] > 0.3   # 1 epoch on 640 digits (chance: 0.1)
  assert 0.0 <= result["control"]["median_confidence"] <= 1.0
  _png(workdir / "retrain" / "retrain.png")
  # TensorBoard: one step per iteration, values as in metrics.jsonl; control at step 0.
  scalars = read_scalars(workdir / "tensorboard")
  for line in lines:
    assert scalars[(line["iteration"], "retrain/test_accuracy")] == pytest.approx(
        line["test_accuracy"])
    assert scalars[(line["iteration"], "retrain/median_confidence")] == pytest.approx(
        line["median_confidence"], rel=1e-6)
  assert scalars[(0, "retrain/control/test_accuracy")] == pytest.approx(
      result["control"]["test_accuracy"])
  # The probe evolves again, with its own budget, against DNN_1, the last DNN and
  # the control; the last DNN it attacks is the loop's (loaded, not retrained).
  last = f"DNN_{r.iterations}"
  assert list(result["probe"]) == ["DNN_1", last, "control"]
  for name, p in result["probe"].items():
    assert 0.0 <= p["median_confidence"] <= 1.0 and 0.0 <= p["share_9999"] <= p["share_99"] <= 1
    assert (workdir / "retrain" / "probe" / name).is_dir()
    generations, medians = np.asarray(p["median_curve"]).T
    assert generations[0] == 0 and generations[-1] == r.probe_generations
    assert medians[-1] == pytest.approx(p["median_confidence"], rel=1e-6)
  assert result["scale"]["probe_generations"] == r.probe_generations
  train, (test_x, test_y) = nguyen_experiment._training_data(config)
  clf, _, size = nguyen_experiment._dnn(
      config, r.iterations, pool[:-1], train, jax.random.fold_in(jax.random.key(config.seed), 3),
      workdir / "retrain" / f"iter_{r.iterations:02d}")
  assert size == lines[-1]["fooling_class_images"]
  logits = nguyen_experiment._logits(clf, test_x)
  assert np.mean(np.argmax(logits, -1) == test_y) == pytest.approx(lines[-1]["test_accuracy"])
  tables = nguyen_experiment.markdown_tables({"retrain": result})
  assert f"| {last} | " in tables and "| control (same budget, 10 classes) |" in tables


@pytest.mark.slow
def test_smoke_ablation(smoke_cppn_run):
  config, workdir, _ = smoke_cppn_run
  result = json.loads((workdir / "ablation" / "result.json").read_text())
  with np.load(workdir / "ablation" / "ablation.npz", allow_pickle=False) as f:
    confidence, repeats = f["confidence"], f["repeats"]
  assert result["images"] == 10 * config.evolve.runs == len(repeats)
  assert result["with_repeats"] == int(np.sum(repeats >= 1))
  chex.assert_shape(confidence, (len(repeats), config.ablation.steps + 1))
  # Images without repeats are untouched by the ablation.
  np.testing.assert_allclose(confidence[repeats == 0, -1], confidence[repeats == 0, 0],
                             rtol=1e-6)
  _png(workdir / "ablation" / "ablation.png")
  if result["with_repeats"]:
    scalars = read_scalars(workdir / "tensorboard")
    for s, quartiles in enumerate(result["confidence_quartiles_per_step"]):
      assert scalars[(s, "ablation/confidence_median")] == pytest.approx(quartiles[1],
                                                                         rel=1e-5)
    _png(workdir / "ablation" / "ablation_examples.png")


def test_smoke_rerun_resumes_and_conflicting_config_refuses(smoke_run):
  config, workdir, summary = smoke_run
  # A lost retrain result is rebuilt from metrics.jsonl without evolving again.
  (workdir / "retrain" / "result.json").unlink()
  again = nguyen_experiment.run(config, workdir)
  assert again["retrain"]["iterations"] == summary["retrain"]["iterations"]
  assert again["retrain"]["control"] == summary["retrain"]["control"]
  assert again["transfer"] == summary["transfer"]
  other = nguyen_config.get_config("smoke")
  other.seed = 5
  with pytest.raises(core.WorkdirConflictError, match="seed"):
    nguyen_experiment.run(other, workdir)


def test_transfer_to_and_from_a_users_model(tmp_path):
  user = "tests.user_models:tiny_mnist_classifier"
  config = nguyen_config.get_config("smoke")
  config.parts = "transfer"
  config.transfer.cross = user
  config.evolve.runs = 1
  config.evolve.generations = 2
  summary = nguyen_experiment.run(config, tmp_path)
  pairs = {(r["source"], r["target"]) for r in summary["transfer"]["rows"]}
  assert ("lenet_mnist seed 0", user) in pairs and (user, "lenet_mnist seed 0") in pairs
  # The user's model got its own source run, keyed and stored by its spec.
  assert (tmp_path / "evolve" / "tests.user_models.tiny_mnist_classifier_direct"
          / "metrics.jsonl").exists()


def test_unknown_classifier_fails_before_the_workdir(tmp_path):
  config = nguyen_config.get_config("smoke")
  config.transfer.dnn_b = "lenet_mnist@x"
  with pytest.raises(ValueError, match="lenet_mnist@x"):
    nguyen_experiment.run(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_gradient_and_ablation_take_the_elites_of_a_fool_run(tmp_path):
  """gradient.evolved_from and ablation.from_run read a fool run's archive (how the
  ImageNet preset uses the CPU-scale ImageNet runs), for chosen classes, in batches."""
  from experiments import core
  from experiments.nguyen2015 import fool
  from experiments.nguyen2015.configs import fool as fool_config
  fool_dir = tmp_path / "fool"
  fool_cfg = fool_config.get_config("smoke")
  fool_cfg.update(generations=2, log_every=1, checkpoint_every=2)
  fool_summary = fool.run(fool_cfg, fool_dir)
  config = nguyen_config.get_config("smoke")
  config.parts = "gradient,transfer,ablation"
  config.gradient.update(classes="3,7", evolved_from=str(fool_dir), other="")
  config.transfer.update(from_runs=str(fool_dir), dnn_b="lenet_mnist@1", cross="")
  config.ablation.update(from_run=str(fool_dir), batch_size=3, encoding="direct")
  summary = nguyen_experiment.run(config, tmp_path / "followups")
  g = summary["gradient"]
  assert g["classes"] == ["3", "7"] and g["images"] == 2 * config.gradient.starts_per_class
  assert g["other"] is None and g["median_confidence_other_seed"] is None
  evolved = g["evolved"]["direct"]
  assert evolved["per_class_median"] == pytest.approx(
      [fool_summary["best"]["3"], fool_summary["best"]["7"]], rel=1e-5)
  assert len(g["original"]["per_class_median"]) == 2
  a = summary["ablation"]
  assert a["images"] == 10 and str(fool_dir) in a["elites"]
  with np.load(tmp_path / "followups" / "ablation" / "ablation.npz") as f:
    # Step 0 is the elite itself: its probability as the fool run recorded it.
    np.testing.assert_allclose(f["confidence"][:, 0],
                               [fool_summary["best"][str(k)] for k in f["targets"]],
                               rtol=1e-4, atol=1e-7)
  [row] = summary["transfer"]["rows"]
  assert (row["source"], row["target"], row["count"]) == ("lenet_mnist seed 0",
                                                          "lenet_mnist seed 1", 10)
  assert row["median_conf_a"] == pytest.approx(
      float(np.median(list(fool_summary["best"].values()))), rel=1e-4)
  tables = (tmp_path / "followups" / "tables.md").read_text()
  assert "| class | 3 | 7 | all |" in tables and "rank correlation A, B" in tables
  # core.load_fool_run: the elites' probabilities are the classifier's on their images;
  # weights other than the run's, and a directory without a run, are refused.
  run = core.load_fool_run(fool_dir)
  images_, prob, cells = run.elites()
  assert images_.shape == (10, 28, 28, 1) and list(cells) == list(range(10))
  probs = jax.nn.softmax(run.classifier.apply_fn(run.classifier.params, jnp.asarray(images_)))
  np.testing.assert_allclose(prob, np.asarray(probs)[np.arange(10), cells], rtol=1e-4,
                             atol=1e-7)
  path = fool_dir / "config.json"
  path.write_text(json.dumps({**json.loads(path.read_text()), "classifier": "lenet_mnist@1"}))
  with pytest.raises(ValueError, match="other parameters.*Fix"):
    core.load_fool_run(fool_dir)
  with pytest.raises(FileNotFoundError, match="no fool run.*Fix"):
    core.load_fool_run(tmp_path / "nothing")


def test_imagenet_retrain_part_on_a_fool_run_resumes_and_keeps_old_fingerprints(tmp_path):
  """The imagenet_retrain part on a small fool run (LeNet, so it is quick): class n+1
  from the run's elites, the new output only, evolution against DNN_2 with the run's
  key; a rerun reads the result; configs from before the part keep their fingerprint."""
  pytest.importorskip("skimage")
  from experiments.nguyen2015 import fool
  from experiments.nguyen2015.configs import fool as fool_config
  fool_dir = tmp_path / "fool"
  fool_cfg = fool_config.get_config("smoke")
  fool_cfg.update(generations=4, log_every=2, checkpoint_every=2)
  fool_summary = fool.run(fool_cfg, fool_dir)
  config = nguyen_config.get_config("imagenet_retrain")
  config.imagenet_retrain.update(fooling_from=str(fool_dir), crops_per_photo=4, steps=100,
                                 real_photos="camera,coins,grass", heldout_photos="coffee")
  summary = nguyen_experiment.run(config, tmp_path / "followups")
  r = summary["imagenet_retrain"]
  f = r["fooling_class"]
  assert (f["fooling_images"], f["training_crops"], f["heldout_crops"]) == (10, 12, 4)
  assert r["num_classes"] == 10 and r["generations"] == 4
  # DNN_1's row is the fool run's own last generation.
  assert r["dnn1"]["median"] == pytest.approx(
      float(np.median(list(fool_summary["best"].values()))), rel=1e-5)
  # Class n+1 holds the elites as 8-bit images: about the archive's confidences.
  assert f["dnn1_elites_median_on_dnn1"] == pytest.approx(r["dnn1"]["median"], rel=0.05)
  # The new output takes probability from the real classes, never gives it.
  assert f["dnn1_elites_median_on_dnn2"] <= f["dnn1_elites_median_on_dnn1"]
  assert [g for g, _, _ in r["curve"]] == [0, 2, 4]
  out = tmp_path / "followups" / "imagenet_retrain"
  for name in ("curves.png", "dnn2_best.png"):
    _png(out / name)
  with np.load(out / "fooling_class.npz") as npz:
    assert npz["w"].shape == (10,) and npz["losses"].shape == (100,)
  assert "DNN_2 (+ class 11)" in (tmp_path / "followups" / "tables.md").read_text()
  again = nguyen_experiment.run(config, tmp_path / "followups")
  assert again["imagenet_retrain"] == r
  # A config written before the part existed (no imagenet_retrain section) has the
  # fingerprint of today's default.
  old = nguyen_config.get_config("reduced")
  del old["imagenet_retrain"]
  assert (core.fingerprint("nguyen2015.followups", old)
          == core.fingerprint("nguyen2015.followups", nguyen_config.get_config("reduced")))
  bad = nguyen_config.get_config("imagenet_retrain")
  bad.imagenet_retrain.heldout_photos = "lena"
  with pytest.raises(ValueError, match="heldout_photos"):
    nguyen_experiment.run(bad, tmp_path / "bad")
