"""The benchmarks' timing helpers report wall and CPU time, measured round-robin."""

import jax.numpy as jnp

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
