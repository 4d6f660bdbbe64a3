"""The accelerator check's commands work, at a tiny scale on CPU."""

import os
import subprocess
import sys

import pytest

from benchmarks import curve_so_far
from tests.conftest import REPO


@pytest.mark.slow
def test_device_check_runs_its_commands_at_a_tiny_scale(tmp_path):
  env = dict(os.environ, TINY="1", PYTHON=sys.executable)
  result = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900)
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert "benchmarks exit status 0" in out, out
  assert "evals/s" in out and "ratio 10-crop fitness time" in out, out
  for encoding in ("cppn", "direct"):
    assert f"== fool:imagenet_{encoding}_full" in out
    rows = curve_so_far.curve(tmp_path / encoding)
    assert [r["generation"] for r in rows] == [0, 1, 2], rows
  assert out.count("exit status 0 (finished)") == 2, out
  assert out.count("last throughput:") == 2, out


def test_curve_so_far_reads_a_run_cut_mid_line(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(
      '{"generation": 0, "best": [0.5, 0.995, 0.99995]}\n'
      '{"generation": 5, "best": [0.6, 0.999, 0.99999]}\n{"generation": 10, "be')
  (tmp_path.parent / f"{tmp_path.name}.log").write_text("gen 5 | 1,234 evals/s | ...\n")
  rows = curve_so_far.curve(tmp_path)
  assert rows == [
      {"generation": 0, "median": 0.995, "cells_99": 2, "cells_9999": 1, "cells": 3},
      {"generation": 5, "median": 0.999, "cells_99": 2, "cells_9999": 1, "cells": 3}]
  assert curve_so_far.last_rate(f"{tmp_path}.log") == "1,234"
