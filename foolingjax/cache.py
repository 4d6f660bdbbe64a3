"""Where foolingjax caches what it trains or converts: ``$FOOLINGJAX_CACHE``.

A leaf module (it imports nothing of foolingjax), so the zoo and the model
readers can both use it without importing each other.
"""

from __future__ import annotations

import os
import pathlib


def cache_dir() -> pathlib.Path:
  """``$FOOLINGJAX_CACHE``, default ``~/.cache/foolingjax``."""
  return pathlib.Path(os.environ.get("FOOLINGJAX_CACHE",
                                     pathlib.Path.home() / ".cache" / "foolingjax"))


def check_writable(directory: pathlib.Path) -> None:
  """Creates ``directory``; raises one clear error if nothing can be written there."""
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / ".write_test"
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as e:
    raise OSError(
        f"The cache directory {directory} is not writable ({e}). Fix: set "
        "FOOLINGJAX_CACHE to a writable directory.") from e
