"""TensorBoard scalars written without TensorFlow, read back with TensorFlow's own reader."""

import json

import numpy as np
import pytest

from experiments import tensorboard


def _read(path):
  tf = pytest.importorskip("tensorflow")
  events = list(tf.compat.v1.train.summary_iterator(str(path)))  # checks both CRCs
  assert events[0].file_version == "brain.Event:2"
  return {(e.step, v.tag): v.simple_value for e in events[1:] for v in e.summary.value}


def test_crc32c_known_answer():
  assert tensorboard.crc32c(b"123456789") == 0xE3069283


def test_scalars_round_trip(tmp_path):
  path = tensorboard.write_scalars(tmp_path, [(0, {"a": 1.0, "b/c": 2.5}), (7, {"a": -3.0}),
                                              (2 ** 40, {"big": 0.125})])
  assert _read(path) == {(0, "a"): 1.0, (0, "b/c"): 2.5, (7, "a"): -3.0,
                         (2 ** 40, "big"): 0.125}
  # Rewritten whole: a second call replaces the first (a resumed run logs no step twice).
  tensorboard.write_scalars(tmp_path, [(1, {"a": 2.0})])
  assert _read(path) == {(1, "a"): 2.0}


def test_fool_writes_its_metrics_as_scalars(fool_smoke_run):
  [path] = (fool_smoke_run / "tensorboard").glob("events.out.tfevents.*")
  scalars = _read(path)
  records = [json.loads(line)
             for line in (fool_smoke_run / "metrics.jsonl").read_text().splitlines()]
  for r in records:
    assert scalars[(r["generation"], "median")] == pytest.approx(r["median"], rel=1e-6)
    assert scalars[(r["generation"], "cells_9999")] == r["cells_9999"]
  assert sorted({step for step, _ in scalars}) == [r["generation"] for r in records]
  assert np.isfinite(list(scalars.values())).all()
