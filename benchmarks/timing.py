"""Timing shared by the benchmarks: wall and CPU time side by side, with the load.

On a shared machine wall time alone says little; every benchmark prints the
CPU time (``time.process_time``, all threads of this process) beside it, and
the 1-minute load average when it ran.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import jax


def interleaved_best_cpu(fns: dict[str, Callable[[], object]],
                         rounds: int) -> dict[str, tuple[float, float]]:
  """Best-of-``rounds`` per function, measured round-robin so that load from
  other processes hits every contender alike: name -> (wall s, CPU s) of the
  round with the least wall time."""
  best = {name: (float("inf"), float("inf")) for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      c0, t0 = time.process_time(), time.perf_counter()
      jax.block_until_ready(fn())
      wall, cpu = time.perf_counter() - t0, time.process_time() - c0
      if wall < best[name][0]:
        best[name] = (wall, cpu)
  return best


def interleaved_best(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
  """As :func:`interleaved_best_cpu`, wall seconds only."""
  return {name: wall for name, (wall, _) in interleaved_best_cpu(fns, rounds).items()}


class Clock:
  """Wall and CPU seconds of a block: ``with Clock() as c: ...; c.wall, c.cpu``."""

  def __enter__(self):
    self._t0, self._c0 = time.perf_counter(), time.process_time()
    self.load_before = os.getloadavg()[0]
    return self

  def __exit__(self, *exc):
    self.wall = time.perf_counter() - self._t0
    self.cpu = time.process_time() - self._c0
    self.load_after = os.getloadavg()[0]
    return False

  def __str__(self):
    return (f"{self.wall:.2f} s wall, {self.cpu:.2f} s CPU, load average "
            f"{self.load_before:.2f} -> {self.load_after:.2f}")


def load() -> str:
  """``load average 1.23 (1 min)``: print it beside every timing."""
  return f"load average {os.getloadavg()[0]:.2f} (1 min)"
