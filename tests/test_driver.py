"""The library's resumable MAP-Elites driver (foolingjax.evolution.driver)."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax import checkpoint, evolution
from foolingjax.evolution import driver


def _toy_apply_fn(params, x):
  """3 'classes' that reward dark, grey and bright images: a cheap classifier."""
  mean = jnp.mean(x, axis=(1, 2, 3))[:, None]
  return -params["sharpness"] * jnp.square(mean - jnp.array([0.0, 0.5, 1.0])[None])


PARAMS = {"sharpness": jnp.float32(20.0)}


def _evolver(runs=None):
  encoding = evolution.make_encoding("direct", (4, 4, 1))
  return driver.Evolver(encoding=encoding, apply_fn=_toy_apply_fn, num_cells=3,
                        population=8, runs=runs)


@pytest.mark.parametrize("runs", [None, 2])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, runs):
  key = jax.random.key(0)
  kw = dict(checkpoint_every=2, log_every=1, log=None)
  straight, hist_a = _evolver(runs).evolve(key, PARAMS, generations=6,
                                           directory=tmp_path / "a", **kw)
  # A fresh evolver, as after a restart: killed at 4, a metrics line cut short.
  _evolver(runs).evolve(key, PARAMS, generations=4, directory=tmp_path / "b", **kw)
  with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
    f.write('{"generation": 5, "be')
  resumed, hist_b = _evolver(runs).evolve(key, PARAMS, generations=6,
                                          directory=tmp_path / "b", **kw)
  chex.assert_trees_all_equal(straight, resumed)
  assert hist_a == hist_b
  assert [h["generation"] for h in hist_b] == list(range(7))
  lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["generation"] for line in lines] == list(range(7))
  if runs:
    assert straight.fitness.shape == (runs, 3)
    assert np.asarray(hist_b[-1]["best"]).shape == (runs, 3)
    # Independent runs: different keys, different archives.
    assert not np.array_equal(straight.genomes[0], straight.genomes[1])


def test_fitness_never_decreases_and_elites_render(tmp_path):
  evolver = _evolver(runs=2)
  archive, history = evolver.evolve(jax.random.key(1), PARAMS, generations=5, log=None)
  best = np.array([h["best"] for h in history])             # [gen, runs, cells]
  assert np.all(np.diff(best, axis=0) >= 0)
  images, fitness, cells = evolver.elites(archive)
  chex.assert_shape(images, (6, 4, 4, 1))
  np.testing.assert_array_equal(cells, [0, 1, 2, 0, 1, 2])
  np.testing.assert_allclose(fitness, np.asarray(archive.fitness).reshape(-1))
  assert not (tmp_path / "metrics.jsonl").exists()   # no directory: nothing written


def test_checkpoints_are_pruned_and_called_back(tmp_path):
  seen = []
  _evolver().evolve(jax.random.key(0), PARAMS, generations=8, directory=tmp_path,
                    checkpoint_every=2, log_every=2, keep=2, log=None,
                    on_checkpoint=lambda a: seen.append(int(a.generation)))
  assert seen == [0, 2, 4, 6, 8]
  kept = sorted(p.name for p in tmp_path.glob("archive_*.msgpack"))
  assert kept == ["archive_00000006.msgpack", "archive_00000008.msgpack"]


def test_a_corrupted_cppn_checkpoint_is_refused(tmp_path):
  from foolingjax.evolution import cppn
  encoding = evolution.make_encoding("cppn", (8, 8, 1), max_nodes=8, max_conns=16)
  evolver = driver.Evolver(encoding=encoding, apply_fn=_toy_apply_fn, num_cells=3,
                           population=4)
  evolver.evolve(jax.random.key(0), PARAMS, generations=1, directory=tmp_path, log=None)
  path = checkpoint.latest(tmp_path, prefix=driver.PREFIX)
  raw, meta = checkpoint.load_raw(path)
  genomes = raw["genomes"]
  genomes["conn_mask"] = np.ones_like(np.asarray(genomes["conn_mask"]))
  genomes["conn_src"] = np.asarray(genomes["conn_src"]).copy()
  genomes["conn_dst"] = np.asarray(genomes["conn_dst"]).copy()
  genomes["conn_src"][0, 0], genomes["conn_dst"][0, 0] = 7, 5   # a backward edge
  checkpoint.save(path, raw, meta=meta, fingerprint=checkpoint.read_fingerprint(path))
  with pytest.raises(cppn.InvalidGenomeError):
    evolver.evolve(jax.random.key(0), PARAMS, generations=2, directory=tmp_path, log=None)


@pytest.mark.parametrize("name, message", [("bitmap", "Unknown encoding 'bitmap'")])
def test_make_encoding_by_name(name, message):
  assert evolution.make_encoding("direct", (2, 3, 3)).image_shape == (2, 3, 3)
  with pytest.raises(ValueError, match=message):
    evolution.make_encoding(name, (2, 2, 1))
  with pytest.raises(ValueError, match="concrete"):
    evolution.make_encoding("direct", (None, None, 3))


def test_a_run_compiles_its_block_once_tail_and_resume_included(tmp_path):
  """7 generations in blocks of 3 (3, 3, then a tail of 1), then a resume mid-block: one jit."""
  encoding = evolution.make_encoding("direct", (4, 4, 1))
  evolver = driver.Evolver(encoding=encoding, apply_fn=_toy_apply_fn, num_cells=3,
                           population=4)
  straight, _ = evolver.evolve(jax.random.key(0), PARAMS, generations=7, log_every=3,
                               log=None)
  evolver.evolve(jax.random.key(0), PARAMS, generations=4, log_every=2,
                 checkpoint_every=2, directory=tmp_path, log=None)
  resumed, _ = evolver.evolve(jax.random.key(0), PARAMS, generations=7, log_every=3,
                              checkpoint_every=3, directory=tmp_path, log=None)
  assert set(evolver._blocks) == {2, 3}
  assert {k: fn._cache_size() for k, fn in evolver._blocks.items()} == {2: 1, 3: 1}
  jax.tree_util.tree_map(np.testing.assert_array_equal, straight, resumed)
