"""Pickle-free, atomic checkpoints of pytrees (flax msgpack).

A checkpoint is one msgpack file holding ``{"tree": state_dict, "meta": {...}}``.
It is written to a temporary file in the same directory, flushed and fsynced,
then renamed over the destination, so a crash never leaves half a file under
the final name. Restoring checks every leaf's shape and dtype against a target
pytree and raises :class:`CheckpointError` naming the first mismatch.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import tempfile
from typing import Any

import jax
import numpy as np
from flax import serialization


class CheckpointError(ValueError):
  """A checkpoint is corrupt, or does not match the structure asked for."""


def save(path: str | os.PathLike, tree: Any, *, meta: dict | None = None) -> pathlib.Path:
  """Atomically writes ``tree`` (any pytree of arrays) and JSON-able ``meta``."""
  path = pathlib.Path(path)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OSError(f"Cannot create the checkpoint directory {path.parent}: {e}. "
                  "Fix: choose a writable directory.") from e
  state = serialization.to_state_dict(jax.device_get(tree))
  payload = serialization.msgpack_serialize(
      {"tree": state, "meta": json.dumps(meta or {})})
  try:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  except OSError as e:
    raise OSError(f"Cannot write a checkpoint in {path.parent}: {e}. "
                  "Fix: choose a writable directory.") from e
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode.
    with os.fdopen(fd, "wb") as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def load_raw(path: str | os.PathLike) -> tuple[dict, dict]:
  """Reads a checkpoint into ``(state_dict, meta)`` without a target structure."""
  path = pathlib.Path(path)
  try:
    payload = serialization.msgpack_restore(path.read_bytes())
    state, meta = payload["tree"], json.loads(payload["meta"])
  except FileNotFoundError:
    raise
  except Exception as e:  # msgpack raises several types on garbage.
    raise CheckpointError(
        f"Checkpoint {path} is corrupt or not a foolingjax checkpoint ({e}). "
        "Fix: delete it to start over, or restore an earlier one.") from e
  return state, meta


def restore(path: str | os.PathLike, target: Any) -> tuple[Any, dict]:
  """Restores a checkpoint into the structure of ``target``.

  Args:
    path: file written by :func:`save`.
    target: a pytree with the expected structure, shapes and dtypes (e.g.
      freshly initialised parameters).

  Returns:
    ``(tree, meta)``.

  Raises:
    CheckpointError: corrupt file, or any leaf missing or of another
      shape/dtype than in ``target``.
  """
  state, meta = load_raw(path)
  target_state = serialization.to_state_dict(target)
  _check_match(target_state, state, path, prefix="")
  return serialization.from_state_dict(target, state), meta


def _check_match(expected, got, path, prefix):
  if isinstance(expected, dict):
    if not isinstance(got, dict):
      raise CheckpointError(f"Checkpoint {path} does not match: {prefix or '/'} should be "
                            "a dict of arrays. Fix: it was written for another model.")
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
      raise CheckpointError(
          f"Checkpoint {path} does not match the model at {prefix or '/'}: missing "
          f"{missing}, unexpected {extra}. Fix: it was written for another model or "
          "config; use a matching one or a fresh work directory.")
    for k in expected:
      _check_match(expected[k], got[k], path, f"{prefix}/{k}")
    return
  e, g = np.asarray(expected), np.asarray(got)
  if e.shape != g.shape or (e.dtype != g.dtype and e.dtype != object):
    raise CheckpointError(
        f"Checkpoint {path} does not match the model at {prefix}: stored "
        f"{g.dtype}{list(g.shape)}, expected {e.dtype}{list(e.shape)}. Fix: it was "
        "written for another model or config; use a matching one or a fresh work "
        "directory.")


_STEP = re.compile(r"^(?P<prefix>.+)_(?P<step>\d+)\.msgpack$")


def latest(directory: str | os.PathLike, prefix: str = "ckpt") -> pathlib.Path | None:
  """The checkpoint ``{prefix}_{step}.msgpack`` with the highest step, if any."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return None
  best = None
  for p in directory.iterdir():
    m = _STEP.match(p.name)
    if m and m["prefix"] == prefix and (best is None or int(m["step"]) > best[0]):
      best = (int(m["step"]), p)
  return best[1] if best else None


def step_path(directory: str | os.PathLike, step: int, prefix: str = "ckpt") -> pathlib.Path:
  return pathlib.Path(directory) / f"{prefix}_{step:08d}.msgpack"


def prune(directory: str | os.PathLike, keep: int, prefix: str = "ckpt") -> None:
  """Deletes all but the ``keep`` newest step checkpoints."""
  directory = pathlib.Path(directory)
  found = sorted((int(m["step"]), p) for p in directory.iterdir()
                 if (m := _STEP.match(p.name)) and m["prefix"] == prefix)
  for _, p in found[:-keep] if keep > 0 else []:
    p.unlink()


# --------------------------------------------------------------------------
# JSON lines: per-step metrics that a resumed run truncates and extends


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The records of a JSON-lines file (``[]`` if there is none).

  A last line cut short by a kill is dropped (the run that resumes rewrites
  it); a bad line anywhere else raises one error naming the file and line.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return []
  lines = path.read_text().splitlines()
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        break
      raise ValueError(f"{path}, line {i + 1}, is not JSON ({e}). Fix: delete that "
                       "line, or start again in a new work directory.") from e
  return records


def write_jsonl(path: str | os.PathLike, records) -> None:
  """Writes the records atomically (temporary file, then rename)."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
  tmp.replace(path)


def append_jsonl(path: str | os.PathLike, records) -> None:
  with open(path, "a") as f:
    f.write("".join(json.dumps(r) + "\n" for r in records))
