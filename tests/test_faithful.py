"""The original algorithms as selectable variants, and a fitness that never saturates."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.nguyen2015 import variants
from experiments.nguyen2015.configs import fool as fool_configs
from foolingjax import images
from foolingjax.evolution import direct, driver, map_elites
from tests.test_tensorboard import read_scalars

# --------------------------------------------------------------------------
# The score


def test_log_odds_ranks_margins_where_the_softmax_ties():
  # Two elites of one cell with logit margins 20 and 30 over every other class.
  logits = jnp.array([[20.0, 0.0, 0.0], [30.0, 0.0, 0.0]])
  p = jax.nn.softmax(logits)[:, 0]
  assert p[0] == p[1] == 1.0                       # float32 cannot tell them apart
  lo = map_elites.log_odds(logits)[:, 0]
  assert lo[1] > lo[0]
  np.testing.assert_allclose(lo, [20.0 + np.log(0.5), 30.0 + np.log(0.5)], rtol=1e-6)


def test_log_odds_matches_the_float64_formula():
  z = np.random.default_rng(0).normal(size=(64, 10)) * np.array([[1.0], [5.0], [20.0], [0.1]] * 16)
  z[0, :] = 3.0                                       # ties
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = np.log(p) - np.log1p(-p)
  ok = np.isfinite(want)
  got = np.asarray(map_elites.log_odds(jnp.asarray(z, jnp.float32)))
  np.testing.assert_allclose(got[ok], want[ok], rtol=1e-4, atol=1e-4)
  # Where float64 still saturates, the exact margin form holds.
  others = np.array([[np.logaddexp.reduce(np.delete(row, k)) for k in range(10)] for row in z])
  np.testing.assert_allclose(got, z - others, rtol=1e-4, atol=1e-4)


def test_log_odds_archive_keeps_improving_where_probability_freezes():
  # One cell; a genome's logit margin is its mean pixel times 60 (>= 17 saturates p).
  encoding = direct.make_encoding(height=2, width=2, channels=1)

  def apply_fn(params, x):
    m = jnp.mean(x, axis=(1, 2, 3))
    return jnp.stack([60.0 * m, jnp.zeros_like(m)], axis=-1)

  out = {}
  for fitness in map_elites.FITNESS:
    run = jax.jit(map_elites.make_run_fn(encoding=encoding, apply_fn=apply_fn, batch_size=16,
                                         num_generations=60, fitness=fitness))
    init = jax.jit(map_elites.make_init_fn(encoding=encoding, apply_fn=apply_fn, num_cells=2,
                                           init_size=16, fitness=fitness))
    archive = init(jax.random.key(0), None)
    archive, metrics = run(jax.random.key(1), archive, None)
    out[fitness] = (archive, metrics)
  prob_archive, prob_metrics = out["probability"]
  lo_archive, lo_metrics = out["log_odds"]
  # The probability archive froze at 1.0 for cell 0 and says so.
  assert float(prob_archive.fitness[0]) == 1.0
  assert int(prob_metrics["cells_frozen"][-1]) >= 1
  # The log-odds archive is never frozen at 1.0 and went on to brighter images.
  assert int(lo_metrics["cells_frozen"][-1]) == 0
  assert lo_archive.fitness_kind == "log_odds"
  assert float(jnp.mean(lo_archive.genomes[0])) > float(jnp.mean(prob_archive.genomes[0]))
  # Metrics report probabilities either way.
  assert float(lo_metrics["best"][-1][0]) == pytest.approx(1.0)
  assert np.all(np.diff(np.asarray(lo_metrics["log_odds"])[:, 0]) >= 0)


def test_unknown_fitness_is_one_clear_error():
  with pytest.raises(ValueError, match="Unknown fitness 'softmax'.*'log_odds', 'probability'"):
    map_elites.make_run_fn(encoding=direct.make_encoding(height=2, width=2, channels=1),
                           apply_fn=lambda p, x: x, batch_size=2, num_generations=1,
                           fitness="softmax")


def _saturating_apply_fn(params, x):
  """Two classes; any image is class 0 with a logit margin of 200 (p = 1.0 exactly)."""
  return jnp.stack([jnp.full(x.shape[0], 200.0), jnp.mean(x, axis=(1, 2, 3))], axis=-1)


def test_a_frozen_run_says_so_and_can_stop_there(tmp_path):
  encoding = direct.make_encoding(height=2, width=2, channels=1)
  lines = []
  evolver = driver.Evolver(encoding=encoding, apply_fn=_saturating_apply_fn, num_cells=1,
                           population=4, fitness="probability",
                           score_transform=lambda f, p: lambda x: jax.nn.softmax(f(p, x))[:, :1])
  archive, history = evolver.evolve(jax.random.key(0), None, generations=50,
                                    directory=tmp_path, log_every=5, checkpoint_every=10,
                                    log=lines.append, stop_when_frozen=True)
  assert int(archive.generation) == 0 and len(history) == 1
  assert any("every cell is frozen" in line and "stopping" in line for line in lines)
  assert driver.frozen_at(history, 1) == 0
  # Without the option it runs on, and still says so once.
  lines.clear()
  archive, history = evolver.evolve(jax.random.key(0), None, generations=10, log_every=5,
                                    log=lines.append)
  assert int(archive.generation) == 10
  assert sum("every cell is frozen" in line for line in lines) == 1


# --------------------------------------------------------------------------
# The direct encoding's variants


def test_direct_variant_switches_and_errors():
  assert direct.VARIANT_SWITCHES["original"] == dict(
      sbx_genes="all", sbx_equal_genes="gray", quantize=True, colour="hls_opencv")
  with pytest.raises(ValueError, match="variant 'orig'.*'foolingjax', 'original'"):
    direct.make_encoding(height=2, width=2, channels=1, variant="orig")
  with pytest.raises(ValueError, match="sbx_genes.*'half', 'all'"):
    direct.make_encoding(height=2, width=2, channels=1, sbx_genes="most")
  with pytest.raises(ValueError, match="quantize"):
    direct.make_encoding(height=2, width=2, channels=1, quantize="yes")


def test_original_sbx_writes_every_differing_gene_and_leaves_equal_ones_grey():
  enc = {v: direct.make_encoding(height=28, width=28, channels=1, variant=v, cross_rate=1.0,
                                 mutation_rate=0.0) for v in direct.VARIANTS}
  a = enc["original"].init(jax.random.key(1))
  b = enc["original"].init(jax.random.key(2)).at[:4].set(a[:4])   # 4 rows agree
  changed = {v: np.mean([np.mean(np.asarray(e.vary(jax.random.key(i), a, b, jnp.int32(0))[0]
                                            != a)[4:]) for i in range(10)])
             for v, e in enc.items()}
  assert changed["original"] == 1.0
  assert 0.45 < changed["foolingjax"] < 0.55
  child, _ = enc["original"].vary(jax.random.key(0), a, b, jnp.int32(0))
  np.testing.assert_array_equal(child[:4], 0.5)                    # sferes' fresh genome
  child, _ = enc["foolingjax"].vary(jax.random.key(0), a, b, jnp.int32(0))
  np.testing.assert_array_equal(child[:4], a[:4])


def test_original_renders_bytes_and_opencv_hls():
  grey = direct.make_encoding(height=3, width=3, channels=1, variant="original")
  g = jnp.array([0.0, 0.5, 0.999, 1.0, 0.00392, 0.2, 0.3, 0.4, 0.6]).reshape(3, 3, 1)
  np.testing.assert_allclose(grey.render(g), np.floor(np.asarray(g) * 255) / 255)
  colour = direct.make_encoding(height=1, width=2, channels=3, variant="original")
  hls = jnp.array([[[1.0, 0.5, 1.0], [0.2, 0.3, 0.9]]])
  # Hue byte 255 is 510 degrees = 150 degrees on OpenCV's 0-180 scale: (0, 254, 127).
  np.testing.assert_allclose(np.asarray(colour.render(hls))[0, 0] * 255, [0, 254, 127],
                             atol=1e-3)
  fj = direct.make_encoding(height=1, width=2, channels=3)
  np.testing.assert_allclose(fj.render(hls), images.hsv_to_rgb(hls))


def test_hls_opencv_matches_opencv():
  cv2 = pytest.importorskip("cv2")
  v = np.random.default_rng(0).uniform(size=(40, 40, 3)).astype(np.float32)
  v[0, 0], v[0, 1] = 1.0, 0.0
  want = cv2.cvtColor((v * 255).astype(np.uint8), cv2.COLOR_HLS2RGB)
  got = np.round(np.asarray(images.hls_opencv_to_rgb(jnp.asarray(v))) * 255)
  np.testing.assert_array_equal(got, want)


def test_mutation_halving_schedule():
  rate = lambda g: float(direct.mutation_rate_at(  # noqa: E731
      jnp.int32(g), mutation_rate=0.1, mutation_halving_every=1000))
  assert [rate(g) for g in (0, 999, 1000, 2500, 19999)] == pytest.approx(
      [0.1, 0.1, 0.05, 0.025, 0.1 * 0.5 ** 19])
  enc = direct.make_encoding(height=2, width=2, channels=1, mutation_halving_every=1000)
  _, stats = enc.vary(jax.random.key(0), jnp.zeros((2, 2, 1)), jnp.zeros((2, 2, 1)),
                      jnp.int32(3000))
  assert float(stats["mutation_rate"]) == pytest.approx(0.0125)


def test_default_direct_encoding_unchanged():
  # The foolingjax variant is what every earlier measurement ran: pin one child.
  enc = direct.make_encoding(height=4, width=4, channels=1)
  a, b = enc.init(jax.random.key(1)), enc.init(jax.random.key(2))
  child, _ = enc.vary(jax.random.key(3), a, b, jnp.int32(0))
  old = direct.polynomial_mutation(
      jax.random.split(jax.random.key(3), 3)[2],
      jnp.where(jax.random.uniform(jax.random.split(jax.random.key(3), 3)[1]) < 0.5,
                direct.sbx_crossover(jax.random.split(jax.random.key(3), 3)[0], a, b, eta=10.0),
                a), rate=0.1, eta=15.0)
  chex.assert_trees_all_equal(child, old)
  assert enc.render(a) is a or np.array_equal(enc.render(a), a)
  # Values the code before the variants produced (same jax), so a change to the
  # operators themselves fails here too.
  np.testing.assert_allclose(np.asarray(child).ravel(), [
      0.4386324882507324, 0.4184463620185852, 0.44591832160949707, 0.4383963346481323,
      0.40211933851242065, 0.5589460134506226, 0.9838855266571045, 0.2272147238254547,
      0.7806854844093323, 0.8171330690383911, 0.2394951581954956, 0.06834632158279419,
      0.8371660113334656, 0.7828829288482666, 0.8129788637161255, 0.708608865737915],
      rtol=1e-6)
  colour = direct.make_encoding(height=2, width=2, channels=3)
  np.testing.assert_allclose(np.asarray(colour.render(colour.init(jax.random.key(5)))).ravel(), [
      0.05821651220321655, 0.7358101606369019, 0.5991255044937134, 0.6777292490005493,
      0.4115282893180847, 0.057952880859375, 0.20122122764587402, 0.19142597913742065,
      0.19032490253448486, 0.3867303431034088, 0.3870302438735962, 0.3869099020957947],
      rtol=1e-6)


# --------------------------------------------------------------------------
# Presets and the side-by-side experiment


def test_presets_follow_the_original_scale():
  c = fool_configs.get_config("mnist_direct_original")
  assert (c.direct.variant, c.cppn.variant, c.fitness) == ("original", "original", "log_odds")
  assert fool_configs.get_config("mnist_cppn").cppn.variant == "foolingjax"
  full = fool_configs.get_config("imagenet_direct_full")
  assert (full.population, full.generations, full.ten_crop) == (200, 5010, True)
  paper = fool_configs.get_config("imagenet_direct_paper_original")
  assert (paper.population, paper.generations) == (200, 20000)
  assert paper.direct.mutation_halving_every == 1000 and paper.direct.variant == "original"
  cppn = fool_configs.get_config("imagenet_cppn_full")
  assert (cppn.population, cppn.generations) == (400, 5001)
  with pytest.raises(ValueError, match="Unknown preset 'mnist_direct_orignal'"):
    fool_configs.get_config("mnist_direct_orignal")


def test_arm_grammar():
  assert variants.parse_arm("cppn:original+coordinates=centred+quantize=false:log_odds") == (
      "cppn", "original", {"coordinates": "centred", "quantize": False}, "log_odds")
  assert variants.arm_name("cppn:original+change_conn_rate=0.5:log_odds") == \
      "cppn_original+change_conn_rate-0.5_log_odds"
  for bad, match in (("cppn:original", "encoding:variant"), ("rgb:original:log_odds",
                                                             "unknown encoding"),
                     ("direct:original:softmax", "Unknown fitness"),
                     ("direct:original+quantize:log_odds", "has no value")):
    with pytest.raises(ValueError, match=match):
      variants.parse_arm(bad)


def test_variants_experiment_reports_each_arm_beside_the_paper(tmp_path):
  from experiments.nguyen2015.configs import variants as variant_configs
  config = variant_configs.get_config("smoke")
  config.arms = "direct:original:probability"
  config.generations = 2
  results = variants.run(config, tmp_path)
  assert set(results) == {"direct_original_probability"}
  for result in results.values():
    assert len(result["seeds"]) == config.seeds
    assert (tmp_path / variants.arm_name(result["arm"]) / "elites.png").exists()
  text = (tmp_path / "results.md").read_text()
  assert "paper: every class >= 99.99 %" in text and "`direct:original:probability`" in text
  # TensorBoard: per arm, one tag per seed and metric, step = the generation.
  arm = tmp_path / "direct_original_probability"
  scalars = read_scalars(arm / "tensorboard")
  records = [json.loads(line) for line in (arm / "metrics.jsonl").read_text().splitlines()]
  assert sorted({step for step, _ in scalars}) == [r["generation"] for r in records]
  for r in records:
    for seed in range(config.seeds):
      assert scalars[(r["generation"], f"seed{seed}/median")] == pytest.approx(
          r["median"][seed], rel=1e-6)
      assert scalars[(r["generation"], f"seed{seed}/cells_9999")] == r["cells_9999"][seed]
  # A rerun reads the finished arms back.
  again = variants.run(config, tmp_path)
  assert json.dumps(again, sort_keys=True, default=str) == json.dumps(results, sort_keys=True,
                                                                       default=str)


@pytest.mark.parametrize("when", ["init", "later"])
def test_non_finite_scores_stop_the_run_naming_the_generation(tmp_path, when):
  encoding = direct.make_encoding(height=2, width=2, channels=1)

  def nan_apply_fn(params, x):
    m = jnp.mean(x, axis=(1, 2, 3))
    # "later": NaN only for bright images, which evolution soon finds.
    bad = jnp.full_like(m, True, dtype=bool) if when == "init" else m > 0.95
    z = jnp.stack([10.0 * m, -10.0 * m], axis=-1)
    return jnp.where(bad[:, None], jnp.nan, z)

  evolver = driver.Evolver(encoding=encoding, apply_fn=nan_apply_fn, num_cells=2,
                           population=16)
  match = "initial population" if when == "init" else r"At generation \d+ the classifier"
  with pytest.raises(driver.BadScoresError, match=match):
    evolver.evolve(jax.random.key(0), None, generations=200, directory=tmp_path / "run",
                   log_every=10, checkpoint_every=10, log=None)
  if when == "init":
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
