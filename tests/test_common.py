import json

import ml_collections
import pytest

from experiments import core


def _config(seed):
  return ml_collections.ConfigDict({"seed": seed, "steps": 3})


def test_prepare_workdir_resumes_the_same_config_and_refuses_another(tmp_path):
  workdir, resuming = core.prepare_workdir(tmp_path / "run", _config(0))
  assert not resuming
  (workdir / "results.json").write_text("{}")
  assert core.prepare_workdir(workdir, _config(0)) == (workdir, True)
  with pytest.raises(core.WorkdirConflictError, match="seed"):
    core.prepare_workdir(workdir, _config(1))
  assert json.loads((workdir / "config.json").read_text())["seed"] == 0


def test_prepare_workdir_takes_over_a_directory_with_no_results(tmp_path):
  # A run that stopped on bad input left only its config.json behind.
  workdir, _ = core.prepare_workdir(tmp_path / "run", _config(0))
  assert core.prepare_workdir(workdir, _config(1)) == (workdir, False)
  assert json.loads((workdir / "config.json").read_text())["seed"] == 1


def test_prepare_workdir_ignores_the_listed_keys(tmp_path):
  workdir, _ = core.prepare_workdir(tmp_path / "run", _config(0), ignore=("steps",))
  (workdir / "ckpt").mkdir()
  longer = _config(0)
  longer.steps = 10
  assert core.prepare_workdir(workdir, longer, ignore=("steps",)) == (workdir, True)
