"""Every entrypoint through its command line, as a user types it (subprocesses).

The experiments' own tests call ``run(config, workdir)``; these catch what only
the command line does: the locked flag config, required flags, ``--config.x``
overrides, the module path in the README.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# entrypoint module, config file, preset, overrides keeping the run to seconds.
ENTRYPOINTS = {
    "experiments.nguyen2015.fool": ("experiments/nguyen2015/configs/fool.py", "smoke",
                                    ["--config.generations=2"]),
    "experiments.nguyen2015.followups": (
        "experiments/nguyen2015/configs/followups.py", "smoke",
        ["--config.parts=transfer", "--config.evolve.generations=2",
         "--config.evolve.runs=1"]),
    "experiments.nguyen2015.variants": ("experiments/nguyen2015/configs/variants.py", "smoke",
                                        ["--config.generations=2", "--config.seeds=1",
                                         "--config.arms=cppn:original:log_odds"]),
    "experiments.szegedy2013.properties": (
        "experiments/szegedy2013/configs/properties.py", "smoke",
        ["--config.parts=units"]),
    "experiments.szegedy2013.lipschitz": ("experiments/szegedy2013/configs/lipschitz.py",
                                          "smoke", []),
    "experiments.attacks_defences.attack": (
        "experiments/attacks_defences/configs/attack.py", "smoke",
        ["--config.pgd_steps=1", "--config.lbfgs_num_images=1"]),
    "experiments.attacks_defences.defend": (
        "experiments/attacks_defences/configs/defend.py", "smoke",
        ["--config.train_size=128", "--config.num_test=16", "--config.eval_batch_size=16",
         "--config.lbfgs_images=2", "--config.patch_steps=2",
         "--config.patch_train_images=16", "--config.uap_images=8"]),
    "experiments.cs231n.visualize": ("experiments/cs231n/configs/visualize.py", "smoke",
                                     ["--config.parts=attribution"]),
    "experiments.zoo.train": ("experiments/zoo/configs/train.py", "smoke",
                              ["--config.train_limit=512", "--config.test_limit=128"]),
}


def _run(args, cwd=REPO, timeout=900):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


# Their run() is smoke-tested in process by their own test files and their README
# commands are checked by tests/test_readme.py; through a subprocess they add three
# minutes to the default suite, so they run with `pytest -m slow`. The default
# suite runs the main job's entry point this way (and the console command below).
SLOW_ON_THE_COMMAND_LINE = {
    "experiments.attacks_defences.attack", "experiments.attacks_defences.defend",
    "experiments.cs231n.visualize", "experiments.nguyen2015.followups",
    "experiments.nguyen2015.variants", "experiments.szegedy2013.properties",
    "experiments.szegedy2013.lipschitz", "experiments.zoo.train"}


@pytest.mark.parametrize("module", [
    pytest.param(m, marks=pytest.mark.slow) if m in SLOW_ON_THE_COMMAND_LINE else m
    for m in sorted(ENTRYPOINTS)])
def test_entrypoint_runs_from_the_command_line(module, tmp_path):
  config_file, preset, overrides = ENTRYPOINTS[module]
  workdir = tmp_path / "run"
  result = _run([module, f"--config={config_file}:{preset}", f"--workdir={workdir}",
                 *overrides])
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.loads((workdir / "config.json").read_text())
  assert written["preset"] == preset
  for override in overrides:  # --config.a.b=v reached the run
    path, _, value = override.removeprefix("--config.").partition("=")
    node = written
    for part in path.split("."):
      node = node[part]
    assert str(node) == value or str(node).lower() == value.lower()
  outputs = {p.name for p in workdir.iterdir()} - {"config.json"}
  assert outputs, f"{module} wrote nothing but config.json"


@pytest.mark.parametrize("module", sorted(ENTRYPOINTS))
def test_missing_flags_give_one_clear_error(module, tmp_path):
  result = _run([module], cwd=tmp_path, timeout=300)
  assert result.returncode != 0
  for flag in ("--config", "--workdir"):   # absl names both at once
    assert f"Flag {flag} must have a value other than None" in result.stderr
  assert "Traceback" not in result.stderr
  assert not any(tmp_path.iterdir())      # nothing written


def test_the_console_command_runs_an_experiment_from_any_directory(tmp_path):
  """``foolingjax run fool --config=smoke`` from outside the repository (as installed)."""
  import pathlib
  script = pathlib.Path(sys.executable).parent / "foolingjax"
  assert script.exists(), "pip install -e . creates the foolingjax command"
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  listed = subprocess.run([str(script), "list"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
  assert listed.returncode == 0, listed.stderr[-2000:]
  assert "fool " in listed.stdout and "mnist_direct" in listed.stdout
  assert "visualize" in listed.stdout and "smoke" in listed.stdout
  result = subprocess.run([str(script), "run", "fool", "--config=smoke",
                           f"--workdir={tmp_path / 'run'}", "--config.generations=1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["generations"] == 1
  bad = subprocess.run([str(script), "run", "fooling"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "Unknown experiment 'fooling'" in bad.stderr
