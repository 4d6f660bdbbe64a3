import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization
from PIL import Image

from experiments import core
from experiments.nguyen2015 import fool
from experiments.nguyen2015.configs import fool as fool_config
from foolingjax import checkpoint


def _config(**overrides):
  config = fool_config.get_config("smoke")
  config.update(overrides)
  return config


def _final_archive(workdir):
  raw, meta = checkpoint.load_raw(checkpoint.latest(workdir / "checkpoints", prefix="archive"))
  return raw, meta


def test_smoke_run_writes_every_output(tmp_path):
  summary = fool.run(_config(), tmp_path)
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["preset"] == "smoke" and config["population"] == 16
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [l["generation"] for l in lines] == list(range(0, 7))
  assert all(len(l["best"]) == 10 for l in lines)
  # Fitness per class never decreases.
  best = np.array([l["best"] for l in lines])
  assert np.all(np.diff(best, axis=0) >= 0)
  for name in ("elites.png", "curves.png", "elites_gen00000.png", "elites_gen00004.png",
               "elites_gen00006.png"):
    with Image.open(tmp_path / name) as image:
      assert image.size[0] > 100 and image.size[1] > 100
  written = json.loads((tmp_path / "summary.json").read_text())
  assert written["generations"] == 6 and written["evaluations"] == 16 * 7
  assert written["final_median"] == pytest.approx(summary["final_median"])
  assert 0.0 < written["final_mean"] <= 1.0


def test_kill_and_resume_equals_uninterrupted(tmp_path):
  fool.run(_config(generations=6), tmp_path / "straight")
  fool.run(_config(generations=4), tmp_path / "resumed")      # "killed" at generation 4
  # A partial chunk of metrics written after the last checkpoint must be dropped.
  with open(tmp_path / "resumed" / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"generation": 5, "best": [0.0] * 10}) + "\n")
  fool.run(_config(generations=6), tmp_path / "resumed")
  a, _ = _final_archive(tmp_path / "straight")
  b, _ = _final_archive(tmp_path / "resumed")
  chex.assert_trees_all_equal(a, b)
  lines_a = (tmp_path / "straight" / "metrics.jsonl").read_text()
  lines_b = (tmp_path / "resumed" / "metrics.jsonl").read_text()
  assert lines_a == lines_b


def test_fast_kernel_runs_and_an_older_workdir_without_the_key_resumes(tmp_path):
  fast = fool.run(_config(direct=dict(kernel="fast")), tmp_path / "fast")
  assert fast["kernel"] == "fast" and fast["generations"] == 6
  # A work directory written before config.direct.kernel existed: its config.json
  # lacks the key, which reads as "reference" (what that run did), so it resumes.
  fool.run(_config(generations=4), tmp_path / "old")
  path = tmp_path / "old" / "config.json"
  recorded = json.loads(path.read_text())
  del recorded["direct"]["kernel"]
  path.write_text(json.dumps(recorded))
  resumed = fool.run(_config(generations=6), tmp_path / "old")
  assert resumed["kernel"] == "reference" and resumed["generations"] == 6
  reference, _ = _final_archive(tmp_path / "old")
  other, _ = _final_archive(tmp_path / "fast")
  assert not np.array_equal(reference["genomes"], other["genomes"])   # other numbers
  with pytest.raises(core.WorkdirConflictError, match="direct"):
    fool.run(_config(generations=6, direct=dict(kernel="fast")), tmp_path / "old")


def test_different_config_refuses_to_overwrite(tmp_path):
  fool.run(_config(), tmp_path)
  before = (tmp_path / "summary.json").read_text()
  with pytest.raises(core.WorkdirConflictError, match="seed"):
    fool.run(_config(seed=3), tmp_path)
  assert (tmp_path / "summary.json").read_text() == before


@pytest.mark.parametrize("overrides, message", [
    (dict(population=0), "population must be >= 1"),
    (dict(encoding="bitmap"), "unknown encoding 'bitmap'"),
    (dict(num_classes=1000), "has 10 classes"),
    (dict(classifier="no_such_module:make"), "package.module:function"),
    (dict(checkpoint_every=3), "multiple of log_every"),
    (dict(fitness="softmax"), "unknown fitness 'softmax'"),
    (dict(direct=dict(variant="orignal")), "variant 'orignal'.*'foolingjax', 'original'"),
    (dict(direct=dict(kernel="quick")), "kernel 'quick'.*reference, fast"),
    (dict(encoding="cppn", cppn=dict(output_map="sqrt")), "output_map"),
])
def test_bad_configs_fail_clearly(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    fool.run(_config(**overrides), tmp_path)


def test_original_variant_summary_says_what_ran(tmp_path):
  config = fool_config.get_config("mnist_direct_original")
  config.update(dict(population=8, generations=2, log_every=1, checkpoint_every=2,
                     fitness="probability"))
  summary = fool.run(config, tmp_path)
  assert (summary["variant"], summary["fitness"]) == ("original", "probability")
  assert summary["generations"] == 2 and not summary["stopped_frozen"]
  assert all(0.0 <= p <= 1.0 for p in summary["best"].values())


def test_user_classifier_by_dotted_path(tmp_path):
  summary = fool.run(_config(classifier="tests.user_models:tiny_linen_classifier",
                             generations=2), tmp_path)
  assert len(summary["best"]) == 3


@pytest.mark.parametrize("encoding", ["direct", "cppn"])
def test_cross_score_per_class_plot_and_chosen_grid(tmp_path, encoding):
  user = "tests.user_models:tiny_rgb224_classifier"
  config = _config(classifier=user, encoding=encoding, population=4, generations=2)
  first = fool.run(config, tmp_path)
  assert "cross_score" not in first and not (tmp_path / "elites_chosen.png").exists()
  # The reporting keys may change on a finished run: it is resumed, not refused.
  summary = fool.run(_config(classifier=user, encoding=encoding, population=4, generations=2,
                             cross_score=True, grid_classes="3,0"), tmp_path)
  assert summary["final_median"] == first["final_median"]
  cross = summary["cross_score"]
  assert cross["fitness"] == "ten_crop" and cross["cells"] == 5
  assert cross["median_evolved_fitness"] == pytest.approx(summary["final_median"])
  # The 10-crop scores, recomputed by hand from the final archive's elites.
  from foolingjax import imagenet, zoo
  classifier = zoo.resolve(user)
  archive, _ = _final_archive(tmp_path)
  shape = (imagenet.RENDER_SIZE, imagenet.RENDER_SIZE, 3)
  encoding_fn = core.fool_encoding(config, (224, 224, 3) if encoding == "direct" else shape)
  ten = imagenet.make_ten_crop_apply_fn(classifier.apply_fn)
  for cell in range(5):
    genome = serialization.from_state_dict(
        encoding_fn.init(jax.random.key(0)),
        jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf)[cell], archive["genomes"]))
    image = encoding_fn.render(genome)
    if encoding == "direct":
      image = jax.image.resize(image, shape, "bilinear")
    want = float(jax.nn.softmax(ten(classifier.params, image[None]))[0, cell])
    assert cross["per_class"][str(cell)] == pytest.approx(want, rel=1e-4, abs=1e-6)
  assert summary["final_cells_99"] == sum(p >= 0.99 for p in summary["best"].values())
  for name in ("per_class.png", "elites_chosen.png"):
    with Image.open(tmp_path / name) as image:
      assert image.size[0] > 100
  assert summary["cpu_seconds_this_invocation"] > 0 and len(summary["load_average_end"]) == 3


def test_unknown_grid_class_is_one_clear_error(tmp_path):
  with pytest.raises(ValueError, match="grid_classes names 'zebra'.*Fix"):
    fool.run(_config(grid_classes="3,zebra"), tmp_path)
  with pytest.raises(ValueError, match="cross_score.*Fix"):
    fool.run(_config(cross_score=True), tmp_path / "b")


def test_cppn_run_resumes_and_validates_its_genomes(tmp_path):
  fool.run(_config(encoding="cppn", generations=2), tmp_path)
  summary = fool.run(_config(encoding="cppn", generations=4), tmp_path)
  assert summary["generations"] == 4 and summary["encoding"] == "cppn"
  # A corrupted genome in the checkpoint is rejected on resume, not rendered.
  from foolingjax.evolution import cppn
  path = checkpoint.latest(tmp_path / "checkpoints", prefix="archive")
  raw, meta = checkpoint.load_raw(path)
  genomes = raw["genomes"]
  genomes["conn_src"] = np.asarray(genomes["conn_src"]).copy()
  genomes["conn_dst"] = np.asarray(genomes["conn_dst"]).copy()
  genomes["conn_mask"] = np.ones_like(np.asarray(genomes["conn_mask"]))
  genomes["conn_src"][0, 0], genomes["conn_dst"][0, 0] = 9, 5   # a backward edge
  checkpoint.save(path, raw, meta=meta, fingerprint=checkpoint.read_fingerprint(path))
  with pytest.raises(cppn.InvalidGenomeError):
    fool.run(_config(encoding="cppn", generations=6), tmp_path)
