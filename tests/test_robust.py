"""Bad input is refused with one clear error, also under jit; nothing is written or overwritten.

The matrix runs every public entry point family (attacks, visualisation,
evolution, data, adapters, checkpoints, experiments) against the bad inputs
it can receive. Each case asserts the error's type and the words of its
message (the problem and the fix), and that the files it might touch are
byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import core
from experiments.nguyen2015 import fool
from experiments.nguyen2015.configs import fool as fool_config
from foolingjax import attacks, checkpoint, checks, contract, data, visualize, zoo
from foolingjax.evolution import driver

# --------------------------------------------------------------------------
# helpers


def _snapshot(directory: pathlib.Path) -> dict[str, str]:
  """Every file under ``directory`` with the sha256 of its bytes."""
  if not directory.exists():
    return {}
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fc():
  return zoo.resolve("fc100_100_10_mnist")


def _images(n=4, scale=1.0, nan=False):
  x = np.asarray(jax.random.uniform(jax.random.key(0), (n, 28, 28, 1))) * scale
  if nan:
    x[0, 3, 4, 0] = np.nan
  return x


GOOD_LABELS = np.arange(4, dtype=np.int32)
BAD_LABELS = np.array([0, 1, 2, 10], np.int32)


def _call(fn, jit, *args):
  """Runs ``fn(*args)`` eagerly or under one jit over all array arguments."""
  if not jit:
    return fn(*args)
  return jax.block_until_ready(jax.jit(fn)(*args))


# --------------------------------------------------------------------------
# 1. Library entry points x bad values, eager and under jit.
#    (entry, bad input) -> a callable of (classifier, jit) and the message words.


def _fgsm(fc, jit, x=None, labels=GOOD_LABELS, eps=0.1):
  x = _images() if x is None else x
  return _call(lambda a, b, e: attacks.fgsm(fc.apply_fn, fc.params, a, b, eps=e),
               jit, x, labels, jnp.float32(eps))


def _pgd(fc, jit, x=None, labels=GOOD_LABELS, eps=0.1):
  x = _images() if x is None else x
  return _call(lambda a, b, e: attacks.pgd(jax.random.key(0), fc.apply_fn, fc.params, a, b,
                                           eps=e, step_size=0.01, steps=2),
               jit, x, labels, jnp.float32(eps))


def _lbfgs(fc, jit, x=None, labels=GOOD_LABELS):
  x = _images() if x is None else x
  return _call(lambda a, b: attacks.lbfgs_attack(fc.apply_fn, fc.params, a, b,
                                                 c_search_steps=1, max_iters=2)[0],
               jit, x, labels)


def _fooling(fc, jit, x=None, labels=GOOD_LABELS):
  x = _images() if x is None else x
  return _call(lambda a, b: attacks.gradient_ascent_fooling(
      None, fc.apply_fn, fc.params, b, init_images=a, steps=2, step_size=0.01)[0],
      jit, x, labels)


def _saliency(fc, jit, x=None, labels=GOOD_LABELS):
  x = _images() if x is None else x
  return _call(lambda a, b: visualize.saliency(fc.apply_fn, fc.params, a, b), jit, x, labels)


LIBRARY_CASES = {
    "fgsm/labels out of range": (lambda fc, j: _fgsm(fc, j, labels=BAD_LABELS),
                                 ValueError, r"labels must lie in \[0, 10\).*Fix"),
    "fgsm/negative eps": (lambda fc, j: _fgsm(fc, j, eps=-0.1),
                          ValueError, r"eps must be finite, >= 0.*Fix|eps must be finite"),
    "fgsm/0-255 floats": (lambda fc, j: _fgsm(fc, j, x=_images(scale=255.0)),
                          ValueError, r"\[0, 1\].*(divide by 255|255)"),
    "fgsm/NaN pixels": (lambda fc, j: _fgsm(fc, j, x=_images(nan=True)),
                        ValueError, r"NaN"),
    "pgd/labels out of range": (lambda fc, j: _pgd(fc, j, labels=BAD_LABELS),
                                ValueError, r"labels must lie in \[0, 10\)"),
    "pgd/negative eps": (lambda fc, j: _pgd(fc, j, eps=-0.5), ValueError, r"eps must be"),
    "pgd/0-255 floats": (lambda fc, j: _pgd(fc, j, x=_images(scale=255.0)),
                         ValueError, r"255"),
    "lbfgs/targets out of range": (lambda fc, j: _lbfgs(fc, j, labels=BAD_LABELS),
                                   ValueError, r"targets must lie in \[0, 10\)"),
    "lbfgs/NaN pixels": (lambda fc, j: _lbfgs(fc, j, x=_images(nan=True)),
                         ValueError, r"NaN"),
    "fooling/target out of range": (lambda fc, j: _fooling(fc, j, labels=BAD_LABELS),
                                    ValueError, r"must lie in \[0, 10\)"),
    "saliency/labels out of range": (lambda fc, j: _saliency(fc, j, labels=BAD_LABELS),
                                     ValueError, r"must lie in \[0, 10\)"),
}


def _raises(exc, pattern, fn):
  """``exc`` eagerly; under jit the host check's ValueError arrives inside a JaxRuntimeError."""
  with pytest.raises((exc, jax.errors.JaxRuntimeError)) as info:
    fn()
  import re
  assert re.search(pattern, str(info.value), re.S), str(info.value)[-2000:]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("case", sorted(LIBRARY_CASES))
def test_library_refuses_bad_values(case, jit, fc):
  fn, exc, pattern = LIBRARY_CASES[case]
  _raises(exc, pattern, lambda: fn(fc, jit))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_the_good_inputs_of_the_matrix_pass(jit, fc):
  """The same calls with good values run (the matrix is not refusing everything)."""
  for fn in (_fgsm, _pgd, _saliency):
    out = fn(fc, jit)
    assert np.isfinite(np.asarray(out)).all()


def test_require_fails_loudly_under_jit_vmap_and_grad():
  def f(x):
    checks.require(x >= 0, "f: x must be >= 0. Fix: pass x >= 0.")
    return x * 2.0
  assert float(jax.jit(f)(1.0)) == 2.0
  cases = [(jax.jit(f), -1.0), (jax.jit(jax.vmap(f)), jnp.array([1.0, -1.0])),
           (jax.jit(jax.grad(f)), -1.0)]
  for g, arg in cases:
    with pytest.raises(Exception, match=r"x must be >= 0\. Fix: pass x >= 0\."):
      jax.block_until_ready(g(arg))


@pytest.mark.parametrize("shape, expected, hint", [
    ((4, 28, 28), (28, 28, 1), r"add the channel axis with x\[\.\.\., None\]"),
    ((28, 28, 1), (28, 28, 1), r"add the batch axis with x\[None\]"),
    ((28, 28), None, r"add the batch and channel axes"),
])
def test_a_missing_axis_is_named(shape, expected, hint):
  with pytest.raises(ValueError, match=hint):
    contract.check_images(np.zeros(shape, np.float32), expected_hwc=expected)


def test_a_missing_channel_axis_under_jit_is_named(fc):
  with pytest.raises(ValueError, match=r"add the channel axis"):
    jax.jit(fc.apply_fn)(fc.params, jnp.zeros((4, 28, 28)))


# --------------------------------------------------------------------------
# 2. Data and adapters.


def test_idx_files_of_different_lengths_are_refused(tmp_path, monkeypatch):
  import gzip
  def idx(path, array, code):
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
      f.write(header + array.tobytes())
  idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8), 0x08)
  idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((4,), np.uint8), 0x08)
  before = _snapshot(tmp_path)
  with pytest.raises(ValueError, match=r"5 images but 4 labels.*Fix"):
    data.load("mnist", "test", data_dir=str(tmp_path))
  assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_named_mnist_directory_is_used_or_refused_never_skipped(tmp_path, monkeypatch,
                                                                  make):
  directory = tmp_path / "mnist"
  if make == "empty":
    directory.mkdir()
  monkeypatch.setenv("FOOLINGJAX_MNIST_DIR", str(directory))
  match = "not a directory" if make == "missing" else "holds no test split"
  with pytest.raises(data.DatasetNotFoundError, match=rf"FOOLINGJAX_MNIST_DIR.*{match}.*Fix"):
    data.load("mnist", "test")


def test_an_nnx_model_in_training_mode_points_to_eval():
  from flax import nnx
  from foolingjax import models

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(784, 10, rngs=rngs)
      self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
      return self.drop(self.dense(x.reshape(x.shape[0], -1)))

  net = Net(nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"training mode.*drop.*Fix: call model.eval\(\)"):
    models.from_nnx(net, input_shape=(28, 28, 1))
  net.eval()
  apply_fn, params = models.from_nnx(net, input_shape=(28, 28, 1))
  assert apply_fn(params, jnp.zeros((2, 28, 28, 1))).shape == (2, 10)


# --------------------------------------------------------------------------
# 3. Checkpoints and caches: checksums and fingerprints.


def _garble(path: pathlib.Path, offset_from_end: int = 64) -> None:
  """Flips bytes inside the payload; the file keeps its size."""
  raw = bytearray(path.read_bytes())
  for i in range(len(raw) - offset_from_end, len(raw) - offset_from_end + 8):
    raw[i] ^= 0x5A
  path.write_bytes(bytes(raw))


def test_garbled_bytes_of_the_same_size_are_caught(tmp_path):
  tree = {"w": np.arange(1000, dtype=np.float32)}
  path = checkpoint.save(tmp_path / "c.msgpack", tree, fingerprint={"run": 1})
  size = path.stat().st_size
  _garble(path, offset_from_end=2000)
  assert path.stat().st_size == size
  before = _snapshot(tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match=r"c.msgpack fails its checksum.*Fix"):
    checkpoint.restore(path, tree)
  assert _snapshot(tmp_path) == before


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
  tree = {"w": np.zeros(3, np.float32)}
  path = checkpoint.save(tmp_path / "c.msgpack", tree, fingerprint={"seed": 0, "c": "a"})
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"another run \(seed: file 0, this run 1\).*Fix"):
    checkpoint.restore(path, tree, fingerprint={"seed": 1, "c": "a"})
  restored, _ = checkpoint.restore(path, tree, fingerprint={"c": "a", "seed": 0})
  np.testing.assert_array_equal(restored["w"], tree["w"])


def test_a_file_without_checksum_is_refused_unless_asked(tmp_path):
  from flax import serialization
  path = tmp_path / "old.msgpack"
  path.write_bytes(serialization.msgpack_serialize(
      {"tree": {"w": np.ones(2, np.float32)}, "meta": "{}"}))
  with pytest.raises(checkpoint.CheckpointError, match=r"has no checksum.*Fix"):
    checkpoint.load_raw(path)
  state, _ = checkpoint.load_raw(path, allow_unchecked=True)
  np.testing.assert_array_equal(state["w"], [1, 1])


def test_a_garbled_cached_zoo_net_is_an_error_not_a_bad_net(tmp_path, monkeypatch):
  monkeypatch.setenv("FOOLINGJAX_CACHE", str(tmp_path))
  name, seed = "lenet_mnist", 0
  bundled = zoo.ASSETS / f"{name}_seed{seed}_{zoo.config_hash(zoo.preset_config(name))}.msgpack"
  cached = tmp_path / "classifiers" / bundled.name
  cached.parent.mkdir(parents=True)
  shutil.copy(bundled, cached)
  _garble(cached)
  with pytest.raises(checkpoint.CheckpointError, match=rf"{cached.name} fails its checksum"):
    zoo.load_classifier(name, seed, train_if_missing=False)
  # A cached file of another preset under this name: refused by its fingerprint.
  other = zoo.ASSETS / next(p.name for p in zoo.ASSETS.glob("lenet_mnist_seed1_*.msgpack"))
  shutil.copy(other, cached)
  with pytest.raises(checkpoint.CheckpointError, match=r"another run \(.*seed: file 1"):
    zoo.load_classifier(name, seed, train_if_missing=False)


def test_every_bundled_net_carries_its_checksum_and_fingerprint():
  for path in sorted(zoo.ASSETS.glob("*.msgpack")):
    fingerprint = checkpoint.read_fingerprint(path)
    assert fingerprint["kind"] == "zoo_classifier"
    assert path.name == (f"{fingerprint['name']}_seed{fingerprint['seed']}_"
                         f"{fingerprint['config']}.msgpack")


def _toy_apply_fn(params, x):
  return x.reshape(x.shape[0], -1)[:, :3] @ params["w"]


def test_an_evolution_checkpoint_of_another_key_or_classifier_is_refused(tmp_path):
  from foolingjax import evolution
  encoding = evolution.make_encoding("direct", (4, 4, 1))
  evolver = driver.Evolver(encoding=encoding, apply_fn=_toy_apply_fn, num_cells=3,
                           population=4)
  params = {"w": jnp.eye(3)}
  evolver.evolve(jax.random.key(0), params, generations=2, directory=tmp_path, log=None)
  before = _snapshot(tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match=r"another run \(key: file"):
    evolver.evolve(jax.random.key(1), params, generations=4, directory=tmp_path, log=None)
  with pytest.raises(checkpoint.CheckpointError, match=r"another run \(params: file"):
    evolver.evolve(jax.random.key(0), {"w": 2 * jnp.eye(3)}, generations=4,
                   directory=tmp_path, log=None)
  assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------
# 4. Experiments: the work directory is never corrupted or overwritten.


def _fool_config(**overrides):
  config = fool_config.get_config("smoke")
  config.update({"generations": 2, "log_every": 1, "checkpoint_every": 1, **overrides})
  return config


@pytest.fixture(scope="module")
def fool_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("fool")
  fool.run(_fool_config(), workdir)
  return workdir


def test_fool_refuses_a_checkpoint_copied_from_another_run(fool_run, tmp_path):
  other = tmp_path / "other"
  fool.run(_fool_config(seed=1), other)
  target = tmp_path / "target"
  shutil.copytree(fool_run, target)
  # The other run's newest checkpoint, under the name this run resumes from.
  src = checkpoint.latest(other / "checkpoints", prefix="archive")
  dst = checkpoint.latest(target / "checkpoints", prefix="archive")
  shutil.copy(src, dst)
  before = _snapshot(target)
  with pytest.raises(checkpoint.CheckpointError, match=r"another run \(.*seed: file 1, this "
                     r"run 0.*Fix: use a fresh work directory"):
    fool.run(_fool_config(), target)
  assert _snapshot(target) == before


@pytest.mark.parametrize("bad", ["invalid json", "other config"])
def test_fool_refuses_a_workdir_it_would_overwrite(fool_run, tmp_path, bad):
  target = tmp_path / "target"
  shutil.copytree(fool_run, target)
  if bad == "invalid json":
    (target / "config.json").write_text("{not json")
    match = r"config.json is not valid JSON.*Fix: pass a new --workdir"
  else:
    match = r"different config \(differs in: population\).*Fix"
  before = _snapshot(target)
  with pytest.raises(core.WorkdirConflictError, match=match):
    fool.run(_fool_config(population=8), target)
  assert _snapshot(target) == before


def test_fool_resume_after_a_kill(fool_run, tmp_path):
  """A cut metrics line, stale temporaries and an undrawn grid: the rerun repairs all three."""
  target = tmp_path / "target"
  shutil.copytree(fool_run, target)
  last = checkpoint.latest(target / "checkpoints", prefix="archive")
  generation = int(last.name.split("_")[1].split(".")[0])
  grid = target / f"elites_gen{generation:05d}.png"
  grid.unlink()                                                  # killed before drawing
  with open(target / "metrics.jsonl", "a") as f:
    f.write('{"generation": 3, "be')                             # killed mid-append
  stale = [target / "summary.json.tmp", target / "checkpoints" / "archive_3.msgpack.x1.tmp",
           target / "elites.tmp.png"]
  for p in stale:
    p.write_bytes(b"partial")
  fool.run(_fool_config(generations=3), target)
  assert grid.exists()
  assert not any(p.exists() for p in stale)
  lines = (target / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["generation"] for line in lines] == [0, 1, 2, 3]
  # ... and the result equals a run never killed.
  straight = tmp_path / "straight"
  fool.run(_fool_config(generations=3), straight)
  a, _ = checkpoint.load_raw(checkpoint.latest(straight / "checkpoints", prefix="archive"))
  b, _ = checkpoint.load_raw(checkpoint.latest(target / "checkpoints", prefix="archive"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_fool_with_a_nan_classifier_writes_no_result(tmp_path):
  workdir = tmp_path / "nan"
  with pytest.raises(driver.BadScoresError, match=r"not finite.*Fix"):
    fool.run(_fool_config(classifier="tests.test_robust:nan_classifier"), workdir)
  assert not (workdir / "summary.json").exists()
  assert not list(workdir.glob("elites*.png"))


def nan_classifier():
  """A user's model whose logits are NaN on every image."""
  return contract.Classifier(_nan_apply, {"w": jnp.zeros(())})


def _nan_apply(params, x):
  return jnp.full((x.shape[0], 10), jnp.nan) + params["w"]


_nan_apply.input_shape = (28, 28, 1)
_nan_apply.num_classes = 10
