"""TensorBoard scalars written without TensorFlow, read back with TensorFlow's own reader."""

import json
import pathlib
import struct

import numpy as np
import pytest

from experiments import tensorboard


def _read(path):
  tf = pytest.importorskip("tensorflow")
  events = list(tf.compat.v1.train.summary_iterator(str(path)))  # checks both CRCs
  assert events[0].file_version == "brain.Event:2"
  return {(e.step, v.tag): v.simple_value for e in events[1:] for v in e.summary.value}


def _fields(data: bytes):
  """``(field number, value)`` of a protobuf message (varint, fixed32/64, bytes)."""
  i = 0

  def varint():
    nonlocal i
    n = shift = 0
    while True:
      byte = data[i]
      i += 1
      n |= (byte & 0x7F) << shift
      shift += 7
      if not byte & 0x80:
        return n
  while i < len(data):
    key = varint()
    number, wire = key >> 3, key & 7
    if wire == 0:
      yield number, varint()
    elif wire == 1:
      yield number, data[i:i + 8]
      i += 8
    elif wire == 5:
      yield number, data[i:i + 4]
      i += 4
    else:
      length = varint()
      yield number, data[i:i + length]
      i += length


def _read_without_tensorflow(path):
  data, scalars, i = pathlib.Path(path).read_bytes(), {}, 0
  while i < len(data):
    header = data[i:i + 8]
    (length,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", data[i + 8:i + 12])[0] == tensorboard._masked(
        tensorboard.crc32c(header))
    event = data[i + 12:i + 12 + length]
    assert struct.unpack("<I", data[i + 12 + length:i + 16 + length])[0] == \
        tensorboard._masked(tensorboard.crc32c(event))
    i += 16 + length
    fields = list(_fields(event))
    step = next((v for n, v in fields if n == 2), 0)
    for value in (v for n, summary in fields if n == 5 for m, v in _fields(summary) if m == 1):
      parts = dict(_fields(value))
      scalars[(step, parts[1].decode())] = struct.unpack("<f", parts[2])[0]
  return scalars


def read_scalars(directory) -> dict[tuple[int, str], float]:
  """Every scalar of the event files in ``directory``: ``{(step, tag): value}``.

  Read with TensorFlow's own reader when it is installed (the ``tfds`` extra),
  else by decoding the records here (CRCs checked), so the experiments' smoke
  tests check their scalars either way.
  """
  paths = sorted(pathlib.Path(directory).glob("events.out.tfevents.*"))
  assert paths, f"no event file in {directory}"
  try:
    import tensorflow  # noqa: F401
    read = _read
  except ImportError:
    read = _read_without_tensorflow
  scalars = {}
  for path in paths:
    scalars.update(read(path))
  return scalars


def test_the_fallback_reader_agrees_with_tensorflow(tmp_path):
  path = tensorboard.write_scalars(tmp_path, [(0, {"a": 1.0, "b/c": 2.5}), (300, {"a": -3.0})])
  assert _read_without_tensorflow(path) == {(0, "a"): 1.0, (0, "b/c"): 2.5, (300, "a"): -3.0}
  assert _read(path) == _read_without_tensorflow(path)


def test_flatten_joins_nested_keys_and_keeps_finite_numbers():
  assert tensorboard.flatten({"a": {"b": 1, "c": [1, 2], "d": None, "e": {"f": True}},
                              "g": float("nan"), "h": "text", "i": 2.5}) == {
      "a/b": 1.0, "a/e/f": 1.0, "i": 2.5}


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
