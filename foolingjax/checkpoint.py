"""Pickle-free, atomic checkpoints of pytrees (flax msgpack).

A checkpoint is one msgpack file ``{"format", "sha256", "payload"}`` whose
payload is the msgpack of ``{"tree": state_dict, "meta": {...}, "fingerprint":
{...}}`` and ``sha256`` its checksum. It is written to a temporary file in the
same directory, flushed and fsynced, then renamed over the destination, so a
crash never leaves half a file under the final name.

Reading verifies, in order, and raises :class:`CheckpointError` naming the file
and the fix on the first failure:

* the checksum (garbled bytes of the same size are caught, not loaded);
* the fingerprint, when the reader passes one: what produced the file (for
  example experiment, seed, classifier and config hash), so a checkpoint of
  another run is refused rather than resumed;
* every leaf's shape and dtype against a target pytree.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import tempfile
from typing import Any, Callable

import jax
import numpy as np
from flax import serialization


class CheckpointError(ValueError):
  """A checkpoint is corrupt, or does not match the structure asked for."""


FORMAT = "foolingjax-checkpoint/2"


def _fingerprint_json(fingerprint: dict | None) -> str:
  return json.dumps(fingerprint or {}, sort_keys=True)


def encode(tree: Any, *, meta: dict | None = None,
           fingerprint: dict | None = None) -> bytes:
  """The bytes :func:`save` writes: the checksummed msgpack of tree, meta and fingerprint."""
  state = serialization.to_state_dict(jax.device_get(tree))
  payload = serialization.msgpack_serialize(
      {"tree": state, "meta": json.dumps(meta or {}),
       "fingerprint": _fingerprint_json(fingerprint)})
  return serialization.msgpack_serialize(
      {"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
       "payload": payload})


def digest(*trees: Any) -> str:
  """A short sha256 of pytrees' leaves (values, shapes and dtypes), for fingerprints.

  PRNG keys count by their key data. Arrays are read to the host once.
  """
  h = hashlib.sha256()
  for tree in trees:
    for leaf in jax.tree_util.tree_leaves(tree):
      if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype,
                                                               jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
      arr = np.ascontiguousarray(np.asarray(leaf))
      h.update(f"{arr.dtype.str}{arr.shape}".encode())
      h.update(arr.tobytes())
  return h.hexdigest()[:16]


def save(path: str | os.PathLike, tree: Any, *, meta: dict | None = None,
         fingerprint: dict | None = None) -> pathlib.Path:
  """Atomically writes ``tree`` (any pytree of arrays) and JSON-able ``meta``.

  ``fingerprint`` (JSON-able) records what produced the file; a reader that
  passes another fingerprint to :func:`restore` or :func:`load_raw` is refused.
  """
  path = pathlib.Path(path)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OSError(f"Cannot create the checkpoint directory {path.parent}: {e}. "
                  "Fix: choose a writable directory.") from e
  payload = encode(tree, meta=meta, fingerprint=fingerprint)
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


def load_raw(path: str | os.PathLike, *, fingerprint: dict | None = None,
             allow_unchecked: bool = False) -> tuple[dict, dict]:
  """Reads a checkpoint into ``(state_dict, meta)`` without a target structure.

  Args:
    path: file written by :func:`save`.
    fingerprint: if given, the file's fingerprint must equal it.
    allow_unchecked: accept a file of the first format (no checksum, no
      fingerprint), e.g. to re-save it with :func:`save`. Off by default: such a
      file cannot be told from a garbled one.

  Raises:
    CheckpointError: not a foolingjax checkpoint, checksum mismatch (the bytes
      changed after writing), no checksum, or another fingerprint.
  """
  state, meta, _ = _read(path, fingerprint=fingerprint, allow_unchecked=allow_unchecked)
  return state, meta


def read_fingerprint(path: str | os.PathLike) -> dict:
  """The fingerprint a checkpoint was saved with (checksum verified)."""
  return _read(path, fingerprint=None, allow_unchecked=False)[2]


def _read(path, *, fingerprint, allow_unchecked):
  path = pathlib.Path(path)
  fix = "Fix: delete it to start over (a cache is rebuilt), or restore an earlier copy."
  try:
    outer = serialization.msgpack_restore(path.read_bytes())
  except FileNotFoundError:
    raise
  except Exception as e:  # msgpack raises several types on garbage.
    raise CheckpointError(
        f"Checkpoint {path} is corrupt or not a foolingjax checkpoint ({e}). {fix}") from e
  if not isinstance(outer, dict):
    raise CheckpointError(f"Checkpoint {path} is not a foolingjax checkpoint. {fix}")
  if "format" not in outer:
    if not allow_unchecked or "tree" not in outer:
      raise CheckpointError(
          f"Checkpoint {path} has no checksum (written by an earlier foolingjax, or not "
          f"a foolingjax checkpoint), so garbled bytes in it could not be detected. {fix}")
    inner, stored_fp = outer, {}
  else:
    if outer.get("format") != FORMAT or not isinstance(outer.get("payload"), bytes):
      raise CheckpointError(f"Checkpoint {path} has an unknown format "
                            f"{outer.get('format')!r}; this foolingjax reads {FORMAT}. {fix}")
    digest = hashlib.sha256(outer["payload"]).hexdigest()
    if digest != outer.get("sha256"):
      raise CheckpointError(
          f"Checkpoint {path} fails its checksum (sha256 {digest[:12]}... stored "
          f"{str(outer.get('sha256'))[:12]}...): its bytes changed after it was written "
          f"(disk or copy error). {fix}")
    try:
      inner = serialization.msgpack_restore(outer["payload"])
      stored_fp = json.loads(inner["fingerprint"])
    except Exception as e:
      raise CheckpointError(f"Checkpoint {path} is corrupt ({e}). {fix}") from e
  if fingerprint is not None and "format" in outer:
    want = json.loads(_fingerprint_json(fingerprint))
    if stored_fp != want:
      keys = sorted(k for k in set(stored_fp) | set(want) if stored_fp.get(k) != want.get(k))
      detail = "; ".join(f"{k}: file {stored_fp.get(k)!r}, this run {want.get(k)!r}"
                         for k in keys[:4])
      raise CheckpointError(
          f"Checkpoint {path} was written by another run ({detail}). Refusing to resume "
          "from it. Fix: use a fresh work directory for this run, or rerun the "
          "command that wrote it.")
  elif fingerprint is not None:
    raise CheckpointError(f"Checkpoint {path} records no fingerprint, so it cannot be "
                          f"checked against this run. {fix}")
  try:
    return inner["tree"], json.loads(inner["meta"]), stored_fp
  except Exception as e:
    raise CheckpointError(f"Checkpoint {path} is corrupt ({e}). {fix}") from e


def restore(path: str | os.PathLike, target: Any, *,
            fingerprint: dict | None = None) -> tuple[Any, dict]:
  """Restores a checkpoint into the structure of ``target``.

  Args:
    path: file written by :func:`save`.
    target: a pytree with the expected structure, shapes and dtypes (e.g.
      freshly initialised parameters).
    fingerprint: if given, the file's fingerprint must equal it.

  Returns:
    ``(tree, meta)``.

  Raises:
    CheckpointError: corrupt file (checksum), another run's file (fingerprint),
      or any leaf missing or of another shape/dtype than in ``target``.
  """
  state, meta = load_raw(path, fingerprint=fingerprint)
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


# --------------------------------------------------------------------------
# Temporaries a kill left behind


def is_temporary(name: str) -> bool:
  """Whether a file name is one of foolingjax's write-then-rename temporaries."""
  return name.endswith(".tmp") or ".tmp." in name


def clean_temporaries(directory: str | os.PathLike, *,
                      skip: Callable[[pathlib.Path], bool] | None = None) -> list[pathlib.Path]:
  """Deletes the temporaries under ``directory`` (recursively); returns what it deleted.

  Every foolingjax write goes to a temporary name and is renamed when complete,
  so a temporary that exists when a run starts was left by a kill: its content
  is incomplete and nothing reads it. Call this only when no other process is
  writing in ``directory``; ``skip`` prunes subdirectories (e.g. another
  process's).
  """
  directory = pathlib.Path(directory)
  removed = []
  if not directory.is_dir():
    return removed
  for root, dirs, files in os.walk(directory):
    root_path = pathlib.Path(root)
    if skip is not None:
      dirs[:] = [d for d in dirs if not skip(root_path / d)]
    for name in files:
      if is_temporary(name):
        p = root_path / name
        try:
          p.unlink()
          removed.append(p)
        except FileNotFoundError:
          pass
  return removed
