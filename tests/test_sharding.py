"""Sharded runs equal single-device runs (4 CPU devices forced in a subprocess)."""

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

SCRIPT = textwrap.dedent('''
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import chex, jax, jax.numpy as jnp, numpy as np
    from foolingjax import attacks, sharding, zoo
    from foolingjax.evolution import direct, map_elites
    assert jax.device_count() == 4
    clf = zoo.load_classifier("lenet_mnist", seed=0, train_if_missing=False)
    enc = direct.make_encoding(height=28, width=28, channels=1)
    key = jax.random.key(0)
    mesh = sharding.data_mesh()
    init = jax.jit(map_elites.make_init_fn(encoding=enc, apply_fn=clf.apply_fn,
                                           num_cells=10, init_size=8))
    archive = init(key, clf.params)
    kw = dict(encoding=enc, apply_fn=clf.apply_fn, batch_size=8, num_generations=3)
    single = jax.jit(map_elites.make_run_fn(**kw))
    split = jax.jit(map_elites.make_run_fn(**kw, mesh=mesh),
                    out_shardings=sharding.replicated(mesh))
    a1, m1 = single(key, archive, clf.params)
    a2, m2 = split(key, sharding.replicate(archive, mesh), sharding.replicate(clf.params, mesh))
    chex.assert_trees_all_close(a1, a2, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(m1, m2, rtol=1e-6, atol=1e-7)
    assert a2.fitness.sharding.is_fully_replicated
    try:
      map_elites.make_run_fn(**dict(kw, batch_size=6), mesh=mesh)
      raise SystemExit("population 6 on 4 devices was accepted")
    except ValueError as e:
      assert "divisible by the number of devices (4)" in str(e) and "Fix: use 8 or 4" in str(e)
    # Attacks batched over images: the same adversarial examples, split over devices.
    x = jax.random.uniform(key, (8, 28, 28, 1))
    y = jnp.arange(8) % 10
    fgsm = jax.jit(lambda p, x, y: attacks.fgsm(clf.apply_fn, p, x, y, eps=0.1))
    adv_single = fgsm(clf.params, x, y)
    adv_split = fgsm(sharding.replicate(clf.params, mesh), sharding.shard_batch(x, mesh), y)
    assert len(adv_split.sharding.device_set) == 4
    np.testing.assert_allclose(adv_single, adv_split, atol=1e-6)
    print("SHARDING-OK")
''')


def test_sharded_runs_equal_single_device_runs():
  result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
  assert "SHARDING-OK" in result.stdout, result.stdout + result.stderr


def test_indivisible_batch_is_rejected_on_one_host():
  import jax
  from foolingjax import sharding
  mesh = sharding.data_mesh(jax.devices()[:1])
  sharding.check_divisible(7, mesh, what="x")  # one device divides everything
  with pytest.raises(ValueError, match="Fix: use"):
    sharding.check_divisible(7, sharding.data_mesh(jax.devices() * 2), what="The batch")
