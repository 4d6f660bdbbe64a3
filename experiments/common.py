"""Work-directory helpers shared by the experiment entrypoints."""

from __future__ import annotations

import importlib
import json
import pathlib

import ml_collections
from absl import flags
from ml_collections import config_flags

# Defined once here, not in each entrypoint: absl refuses a flag defined twice,
# and the tests import several experiments into one process.
CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config: experiments/configs/<name>.py:<preset>.")
WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (a rerun resumes there).")


class WorkdirConflictError(FileExistsError):
  """The work directory holds results of a different config."""


def prepare_workdir(workdir, config: ml_collections.ConfigDict, *,
                    ignore: tuple[str, ...] = ()) -> tuple[pathlib.Path, bool]:
  """Creates ``workdir`` and writes config.json; refuses to mix two configs.

  Returns ``(path, resuming)``: ``resuming`` is True when the directory already
  holds a run of the same config (the caller then resumes from its checkpoint).
  A different config raises instead of overwriting the earlier results,
  unless the directory holds nothing but its config.json (no results).
  Keys in ``ignore`` (e.g. the total number of generations, which a resumed
  run may extend) are left out of the comparison.
  """
  workdir = pathlib.Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OSError(f"Cannot create work directory {workdir}: {e}. Fix: pass a writable "
                  "--workdir.") from e
  config_path = workdir / "config.json"
  current = config.to_dict()
  # A directory holding nothing but config.json has no results to protect (a
  # run that stopped on bad input before writing any): a new config takes it.
  only_config = {p.name for p in workdir.iterdir()} == {"config.json"}
  if config_path.exists():
    previous = json.loads(config_path.read_text())
    strip = lambda d: {k: v for k, v in d.items() if k not in ignore}
    if strip(previous) != strip(json.loads(json.dumps(current))) and only_config:
      config_path.write_text(json.dumps(current, indent=2, sort_keys=True))
      return workdir, False
    if strip(previous) != strip(json.loads(json.dumps(current))):
      changed = sorted(k for k in set(previous) | set(current)
                       if k not in ignore and previous.get(k) != current.get(k))
      raise WorkdirConflictError(
          f"{workdir} holds a run with a different config (differs in: "
          f"{', '.join(changed)}). Refusing to overwrite it. Fix: pass a new --workdir, "
          "or the same config to resume.")
    config_path.write_text(json.dumps(current, indent=2, sort_keys=True))
    return workdir, True
  config_path.write_text(json.dumps(current, indent=2, sort_keys=True))
  return workdir, False


def append_jsonl(path, record: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def write_json(path, obj) -> None:
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  tmp.replace(path)


def load_user_classifier(name: str):
  """``package.module:function`` -> the ``(apply_fn, params)`` it returns."""
  from foolingjax.contract import Classifier
  module_name, _, attr = name.partition(":")
  try:
    factory = getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError) as e:
    raise ValueError(f"Cannot load classifier {name!r} ({e}). Fix: pass "
                     "'package.module:function' where function() returns "
                     "(apply_fn, params), with the package importable.") from e
  result = factory()
  if not (isinstance(result, tuple) and len(result) == 2 and callable(result[0])):
    raise ValueError(f"{name}() must return (apply_fn, params); got {type(result).__name__}.")
  return Classifier(*result)
