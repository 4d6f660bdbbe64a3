"""Timing shared by the benchmarks."""

from __future__ import annotations

import time
from typing import Callable

import jax


def interleaved_best(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
  """Best-of-``rounds`` seconds per function, measured round-robin so that load
  from other processes hits every contender alike."""
  best = {name: float("inf") for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      best[name] = min(best[name], time.perf_counter() - t0)
  return best
