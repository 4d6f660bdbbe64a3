"""Every command the README shows names a real module, config file, preset and fields.

Running each at full scale takes hours; the default suite checks what goes
stale when code moves: the module imports and has ``run``/``main`` (or is a
benchmark), the config file exists, the preset builds, every
``--config.<field>=<value>`` override names a field of that preset and parses
through the same absl flags the command line uses, a ``--workdir`` is given,
and a ``foolingjax run`` command names a known experiment. With ``-m slow``
every experiment command is also executed, in process, with its preset
swapped for the config file's ``smoke`` preset and every other flag as the
README writes it. The quick-start command itself runs in ``tests/test_cli.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

from experiments import cli
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
PLACEHOLDER = re.compile(r"[<>]|\bDIR\b|\bgroup\b|\.\.\.|\bN\b")


def _commands() -> list[str]:
  """Commands in code blocks and inline code, continuation lines joined."""
  blocks, prose, current = [], [], None
  for line in README.splitlines():
    if line.startswith("```"):
      if current is None:
        current = []
      else:
        blocks.append("\n".join(current))
        current = None
    elif current is not None:
      current.append(line)
    else:
      prose.append(line)
  found = []
  for block in blocks:
    text = re.sub(r"\\\n\s*", " ", block)
    found += [line.split(" #", 1)[0].strip() for line in text.splitlines()]
  # Inline code may wrap across lines in the markdown source.
  found += [re.sub(r"\s+", " ", m).strip()
            for m in re.findall(r"`([^`]+)`", "\n".join(prose), re.S)]
  return sorted({c.removeprefix("nice -n 10 ") for c in found
                 if c.startswith(("python -m ", "nice -n 10 python -m ", "foolingjax "))})


COMMANDS = [c for c in _commands() if not PLACEHOLDER.search(c)]


def test_the_readme_has_commands_to_check():
  assert len(COMMANDS) >= 15, COMMANDS


def _field_exists(config, dotted: str) -> bool:
  node = config
  for name in dotted.split("."):
    if not hasattr(node, "keys") or name not in node.keys():
      return False
    node = node[name]
  return True


def _module_and_flags(command: str) -> tuple[str, list[str]]:
  argv = shlex.split(command)
  if argv[0] == "foolingjax":
    module_name = cli.EXPERIMENTS[argv[2]][0]
    return module_name, [("--config=" + cli.config_argument(argv[2], f[len("--config="):]))
                         if f.startswith("--config=") else f for f in argv[3:]]
  return argv[2], argv[3:]


def _absl_config(flag_list: list[str]):
  """The config exactly as the command line builds it (ml_collections' config flag)."""
  values = flags.FlagValues()
  argv = ["readme", *flag_list]
  # sys_argv: where the config flag finds its --config.<field> overrides (the
  # command line's sys.argv in a real run).
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  cwd = os.getcwd()
  os.chdir(REPO)   # config paths in the README are relative to the repository
  try:
    values(argv)
  finally:
    os.chdir(cwd)
  return values.config


EXPERIMENT_COMMANDS = [c for c in COMMANDS if "--workdir=" in c]


@pytest.mark.parametrize("command", EXPERIMENT_COMMANDS)
def test_readme_command_parses_as_the_command_line_does(command):
  _, flag_list = _module_and_flags(command)
  config = _absl_config(flag_list)
  for flag in flag_list:
    if flag.startswith("--config.") and "=" in flag:
      key, value = flag[len("--config."):].split("=", 1)
      got = config
      for name in key.split("."):
        got = got[name]
      assert str(got).lower() == value.lower() or _same_number(got, value), (flag, got)


def _same_number(got, text) -> bool:
  try:
    return float(got) == float(text)
  except (TypeError, ValueError):
    return False


@pytest.mark.slow
@pytest.mark.parametrize("command", EXPERIMENT_COMMANDS)
def test_readme_command_runs_at_smoke_scale(command, tmp_path, monkeypatch):
  # The README's own-model example runs "from the directory that holds
  # mymodels.py": here that module is a small user model of the tests.
  (tmp_path / "mymodels.py").write_text(
      "from tests.user_models import tiny_mnist_classifier as my_cnn  # noqa: F401\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  module_name, flag_list = _module_and_flags(command)
  smoke = [re.sub(r"^(--config=[^:]+)(:.*)?$", r"\1:smoke", f) if f.startswith("--config=")
           else f for f in flag_list]
  if any(re.match(r"--config=.*:imagenet_", f) for f in flag_list):
    # ImageNet-only flags (10 crops, cross-scoring) need a 224x224 RGB net; the
    # smoke preset's is LeNet: a tiny RGB model of the tests stands in.
    smoke.append("--config.classifier=tests.user_models:tiny_rgb224_classifier")
  config = _absl_config(smoke)
  assert config.get("preset", "smoke") == "smoke"   # the preset swapped, where it is recorded
  module = importlib.import_module(module_name)
  summary = module.run(config, tmp_path / "run")
  assert summary, command
  assert (tmp_path / "run" / "config.json").is_file()
  assert (tmp_path / "run" / "index.html").is_file()


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_is_valid(command):
  argv = shlex.split(command)
  if argv[0] == "foolingjax":
    if argv[1] == "list":
      return
    assert argv[1] == "run" and argv[2] in cli.EXPERIMENTS, command
    module_name = cli.EXPERIMENTS[argv[2]][0]
    flags = argv[3:]
    flags = [("--config=" + cli.config_argument(argv[2], f[len("--config="):]))
             if f.startswith("--config=") else f for f in flags]
  else:
    assert argv[:2] == ["python", "-m"], command
    module_name, flags = argv[2], argv[3:]
  assert importlib.util.find_spec(module_name) is not None, f"no module {module_name}"
  if module_name.startswith("benchmarks."):
    module = importlib.import_module(module_name)
    assert hasattr(module, "main"), module_name
    return
  module = importlib.import_module(module_name)
  assert callable(module.run) and callable(module.main), module_name
  values = dict(f[2:].split("=", 1) for f in flags if "=" in f)
  assert "workdir" in values, f"no --workdir in {command}"
  path, _, preset = values["config"].partition(":")
  config_file = pathlib.Path(path) if path.startswith("/") else REPO / path
  assert config_file.is_file(), f"no config file {path}"
  spec = importlib.util.spec_from_file_location("readme_config", config_file)
  config_module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config_module)
  config = config_module.get_config(preset) if preset else config_module.get_config()
  for key in values:
    if key.startswith("config."):
      assert _field_exists(config, key[len("config."):]), f"{key} is not a field ({command})"
