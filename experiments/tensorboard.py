"""TensorBoard scalars without a TensorFlow or tensorboardX dependency.

An event file is a TFRecord stream of ``Event`` protocol buffers; scalars need
four message fields (``wall_time``, ``step``, ``summary.value.tag``,
``summary.value.simple_value``) and the record framing (a length, the data and
a masked CRC-32C of each). That is ~80 lines here against a runtime dependency
(tensorboardX pulls protobuf; clu pulls TensorFlow), so the experiments write
their scalars themselves. ``tensorboard --logdir=<workdir>/tensorboard`` (with
TensorBoard installed anywhere) reads them; the tests read them back with
TensorFlow's own ``summary_iterator``.

The experiments keep their per-step metrics in ``metrics.jsonl``; the event file
is a view of it, rewritten whole and atomically (:func:`write_scalars`), so a
resumed run never logs a step twice.
"""

from __future__ import annotations

import math
import os
import pathlib
import socket
import struct
import time
from typing import Iterable, Mapping

FILE_VERSION = b"brain.Event:2"


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), the checksum of TFRecord framing."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, wire: int) -> bytes:
  return _varint(number << 3 | wire)


def _bytes_field(number: int, payload: bytes) -> bytes:
  return _field(number, 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: bytes | None = None,
           scalars: Mapping[str, float] | None = None) -> bytes:
  msg = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
  if file_version is not None:
    msg += _bytes_field(3, file_version)
  if scalars:
    summary = b"".join(
        _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5)
                     + struct.pack("<f", float(value)))
        for tag, value in scalars.items())
    msg += _bytes_field(5, summary)
  return msg


def _record(data: bytes) -> bytes:
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", _masked(crc32c(length))) + data
          + struct.pack("<I", _masked(crc32c(data))))


def scalars_of(record: Mapping, *, prefix: str = "") -> dict[str, float]:
  """The finite int/float/bool entries of a metrics record (lists and text are left out)."""
  out = {}
  for key, value in record.items():
    if isinstance(value, bool):
      value = float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
      out[prefix + key] = float(value)
  return out


def flatten(tree: Mapping, *, prefix: str = "") -> dict[str, float]:
  """The finite numbers of nested mappings as ``{"a/b/c": value}`` (lists and text left out).

  How an experiment's summary numbers become step-0 scalars.
  """
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, prefix=f"{prefix}{key}/"))
    else:
      out.update(scalars_of({key: value}, prefix=prefix))
  return out


def write_scalars(directory: str | os.PathLike, steps: Iterable[tuple[int, Mapping[str, float]]],
                  *, name: str = "metrics") -> pathlib.Path:
  """Writes ``(step, {tag: value})`` pairs as one TensorBoard event file, atomically.

  The file is ``directory/events.out.tfevents.<name>.<host>``, replaced whole
  on every call (write to a temporary, then rename).
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / f"events.out.tfevents.{name}.{socket.gethostname()}"
  now = time.time()
  chunks = [_record(_event(now, 0, file_version=FILE_VERSION))]
  chunks += [_record(_event(now, int(step), scalars=values))
             for step, values in steps if values]
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(b"".join(chunks))
  tmp.replace(path)
  return path
