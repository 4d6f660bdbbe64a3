"""The curve of a fooling run so far, from its work directory (also mid-run).

  python -m benchmarks.curve_so_far runs/device_check/cppn [--every 5]

Prints one row per logged generation: the median confidence over the cells,
the cells >= 99 % and >= 99.99 %; then the last throughput the run's log
printed, if ``<workdir>.log`` exists. Reads only ``metrics.jsonl``, so it works
on a run that a time limit stopped.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

import numpy as np


def curve(workdir, every: int = 1) -> list[dict]:
  rows = []
  path = pathlib.Path(workdir) / "metrics.jsonl"
  for line in path.read_text().splitlines() if path.exists() else []:
    try:
      m = json.loads(line)
    except json.JSONDecodeError:   # a line cut by the kill
      continue
    if m["generation"] % every:
      continue
    best = np.asarray(m["best"], np.float64)
    rows.append({"generation": m["generation"], "median": float(np.median(best)),
                 "cells_99": int(np.sum(best >= 0.99)),
                 "cells_9999": int(np.sum(best >= 0.9999)), "cells": int(best.size)})
  return rows


def last_rate(log_path) -> str | None:
  path = pathlib.Path(log_path)
  if not path.exists():
    return None
  rates = re.findall(r"([\d,]+) evals/s", path.read_text(errors="replace"))
  return rates[-1] if rates else None


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("workdir")
  parser.add_argument("--every", type=int, default=1, help="print every N-th generation")
  args = parser.parse_args()
  rows = curve(args.workdir, args.every)
  every = f" (every {args.every}th generation)" if args.every > 1 else ""
  print(f"{args.workdir}: {len(rows)} rows{every}")
  print("generation | median | cells >= 99 % | cells >= 99.99 %")
  for r in rows:
    print(f"{r['generation']:10d} | {100 * r['median']:6.2f} % | {r['cells_99']:4d} / "
          f"{r['cells']} | {r['cells_9999']:4d}")
  rate = last_rate(str(pathlib.Path(args.workdir)) + ".log")
  print(f"last throughput: {rate} evals/s" if rate else "no log with a throughput")


if __name__ == "__main__":
  main()
