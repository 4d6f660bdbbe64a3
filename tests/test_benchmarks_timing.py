"""The benchmarks' timing helpers report wall and CPU time, measured round-robin."""

import jax.numpy as jnp
import pytest

from benchmarks import timing


def test_interleaved_best_cpu_runs_contenders_round_robin():
  order = []
  fns = {"a": lambda: order.append("a") or jnp.zeros(1),
         "b": lambda: order.append("b") or jnp.ones(1)}
  best = timing.interleaved_best_cpu(fns, rounds=3)
  assert order == ["a", "b"] * 3
  for wall, cpu in best.values():
    assert 0 <= wall < 1 and 0 <= cpu < 1
  assert timing.interleaved_best(fns, rounds=1).keys() == {"a", "b"}


def test_clock_measures_wall_cpu_and_load():
  with timing.Clock() as clock:
    sum(i * i for i in range(200_000))   # busy: CPU time accrues
  assert clock.wall > 0 and clock.cpu > 0
  assert "s CPU" in str(clock) and "load average" in str(clock)
  assert timing.load().startswith("load average ")


@pytest.mark.slow
def test_bench_evolution_measures_every_contender_at_a_tiny_scale():
  """The evolution benchmark runs end to end (QDax's contenders when it is importable)."""
  import importlib.util
  from benchmarks import bench_evolution
  r = bench_evolution.measure(population=8, generations=2, repeats=1, single_images=2)
  names = set(r["timed"])
  assert {"generation", "forward", "single", "part_variation", "part_render_forward",
          "part_insert_metrics", "draws_shaped", "draws_flat"} <= names
  assert r["shaped_over_flat_draws"] > 0
  has_qdax = importlib.util.find_spec("qdax") is not None
  assert ({"qdax_scan_update", "qdax_all_cells"} <= names) == has_qdax
  assert r["ratio_vs_forward"] > 0 and all(v > 0 for v in r["parts_share_of_generation"].values())
  for wall, cpu in r["timed"].values():
    assert wall > 0 and cpu >= 0
