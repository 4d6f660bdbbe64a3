"""Runs every benchmark and prints one table of its ratios against same-run baselines.

  python -m benchmarks.run_all [--only evolution,lbfgs] [--timeout 900]

Each ``benchmarks/bench_*.py`` runs in its own process (so one benchmark's
compilation caches and memory do not colour the next); every line it prints
that states a ratio or speed-up goes into the final table, next to the machine
description. Absolute timings on shared machines are noisy; the ratios compare
contenders measured in the same process, round-robin where the benchmark can.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import resource
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
# "ratio" as a word: "iterations" holds it too.
RATIO_LINE = re.compile(r"\bratio\b|speed-?up|\d\s*x\b|×", re.IGNORECASE)


def machine() -> str:
  import jax
  cpu = platform.processor() or platform.machine()
  return (f"{cpu}, {os.cpu_count()} cores, {jax.device_count()} x "
          f"{jax.devices()[0].device_kind}, jax {jax.__version__}, python "
          f"{platform.python_version()}")


def _children_cpu() -> float:
  """CPU seconds (user + system) of the finished benchmark processes so far."""
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", default="", help="comma-separated names (bench_<name>.py)")
  parser.add_argument("--timeout", type=int, default=1800, help="seconds per benchmark")
  args = parser.parse_args()
  names = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
  if args.only:
    wanted = set(args.only.split(","))
    unknown = wanted - set(names)
    if unknown:
      parser.error(f"unknown benchmarks {sorted(unknown)}; known: {names}")
    names = [n for n in names if n in wanted]
  rows, failures = [], []
  for name in names:
    print(f"=== {name}", flush=True)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    cpu0 = _children_cpu()
    try:
      result = subprocess.run([sys.executable, "-m", f"benchmarks.bench_{name}"],
                              cwd=HERE.parent, capture_output=True, text=True,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired:
      failures.append((name, f"timed out after {args.timeout}s"))
      continue
    print(result.stdout, flush=True)
    if result.returncode != 0:
      failures.append((name, result.stderr.strip().splitlines()[-1:] or ["failed"]))
      continue
    for line in result.stdout.splitlines():
      if RATIO_LINE.search(line) and not line.startswith("machine:"):
        rows.append((name, " ".join(line.split())))
    rows.append((name, f"(benchmark wall time {time.perf_counter() - t0:.0f} s, CPU time "
                       f"{_children_cpu() - cpu0:.0f} s, load average {load0:.2f} -> "
                       f"{os.getloadavg()[0]:.2f})"))
  print("\n## Benchmark ratios\n")
  print(f"machine: {machine()}\n")
  print("| benchmark | result |\n|---|---|")
  for name, line in rows:
    print(f"| {name} | {line} |")
  for name, why in failures:
    print(f"| {name} | FAILED: {why} |")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
