"""A real two-process run: jax.distributed over 127.0.0.1 with gloo CPU collectives.

Two processes of one CPU device each form a 2-device mesh; the fool
experiment splits its population over it (``--config.shard``) and must end
with the archive of a single-process run.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
from foolingjax import checkpoint
from tests.conftest import REPO

CONFIG = "experiments/nguyen2015/configs/fool.py:smoke"
COMMON = ["--config.generations=4", "--config.log_every=2", "--config.checkpoint_every=2"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env():
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)       # one CPU device per process
  return env


def _final(workdir):
  raw, _ = checkpoint.load_raw(checkpoint.latest(workdir / "checkpoints", prefix="archive"))
  return raw


def test_two_process_sharded_fool_run_equals_one_process(tmp_path):
  port = _free_port()
  procs = []
  for pid in range(2):
    args = [sys.executable, "-m", "experiments.nguyen2015.fool", f"--config={CONFIG}",
            f"--workdir={tmp_path / 'multi'}", *COMMON, "--config.shard=true",
            "--config.distributed=true", f"--config.coordinator_address=127.0.0.1:{port}",
            "--config.num_processes=2", f"--config.process_id={pid}"]
    procs.append(subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "2 device(s) (cpu) on 2 host(s)" in outs[0][0] + outs[0][1]
  single = subprocess.run([sys.executable, "-m", "experiments.nguyen2015.fool",
                           f"--config={CONFIG}", f"--workdir={tmp_path / 'single'}", *COMMON],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  multi, one = _final(tmp_path / "multi"), _final(tmp_path / "single")
  np.testing.assert_allclose(multi["fitness"], one["fitness"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(multi["genomes"], one["genomes"], rtol=1e-5, atol=1e-6)
  summary = json.loads((tmp_path / "multi" / "summary.json").read_text())
  assert summary["generations"] == 4
  # Process 1 computed the same archive and wrote it under its own directory.
  np.testing.assert_array_equal(_final(tmp_path / "multi" / "process_1")["fitness"],
                                multi["fitness"])
  # Each process's page is its own and finished (process 0's at the top).
  for page in (tmp_path / "multi" / "index.html",
               tmp_path / "multi" / "process_1" / "index.html"):
    assert "Generation 4 of 4" in page.read_text() and "finished" in page.read_text()


def test_initializing_after_the_backend_started_is_one_clear_error():
  code = ("import jax\nfrom foolingjax import sharding\njax.devices()\n"
          "sharding.initialize_distributed(coordinator_address='127.0.0.1:1', "
          "num_processes=2, process_id=0)\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "Fix: call initialize_distributed before anything touches jax.devices()" in \
      result.stderr


ATTACK = """
import sys
import numpy as np
import jax, jax.numpy as jnp
from foolingjax import attacks, sharding, zoo
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sharding.initialize_distributed(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                                process_id=pid)
from jax.experimental import multihost_utils
clf = zoo.resolve("fc100_100_10_mnist")
x = np.asarray(jax.random.uniform(jax.random.key(1), (8, 28, 28, 1)))
y = np.arange(8, dtype=np.int32) % 10
mesh = sharding.data_mesh()
assert mesh.devices.size == 2 and jax.process_count() == 2
xs, ys = sharding.shard_batch((x, y), mesh)
params = sharding.replicate(clf.params, mesh)
attack = jax.jit(lambda p, a, b: attacks.pgd(jax.random.key(2), clf.apply_fn, p, a, b, eps=0.1,
                                             step_size=0.02, steps=5))
adv = attack(params, xs, ys)
assert len(adv.addressable_shards) == 1 and adv.addressable_shards[0].data.shape[0] == 4
full = multihost_utils.process_allgather(adv, tiled=True)
np.save(out, np.asarray(full))
"""


def test_two_process_sharded_attack_batch_equals_one_process(tmp_path):
  """Each process attacks its half of the batch; gathered, it is the unsharded attack."""
  import jax
  from foolingjax import attacks, zoo
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-c", ATTACK, str(pid), str(port),
                             str(tmp_path / f"adv_{pid}.npy")], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for pid in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  clf = zoo.resolve("fc100_100_10_mnist")
  x = np.asarray(jax.random.uniform(jax.random.key(1), (8, 28, 28, 1)))
  y = np.arange(8, dtype=np.int32) % 10
  expected = np.asarray(jax.jit(lambda p, a, b: attacks.pgd(
      jax.random.key(2), clf.apply_fn, p, a, b, eps=0.1, step_size=0.02, steps=5))(clf.params, x, y))
  for pid in range(2):
    np.testing.assert_allclose(np.load(tmp_path / f"adv_{pid}.npy"), expected, atol=1e-6)
