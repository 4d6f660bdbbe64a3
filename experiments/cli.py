"""One command line for every experiment: ``foolingjax list`` and ``foolingjax run``.

    foolingjax list
    foolingjax run fool --config=smoke --workdir=runs/fool_smoke --config.generations=4
    foolingjax run fool --config=path/to/my_config.py:preset --workdir=DIR

``run`` takes an experiment's short name (``foolingjax list`` prints them with
their presets) and hands the rest to that experiment's own command line, so
every ``--config.<field>=<value>`` override works as with ``python -m
experiments.<group>.<name>``, which stays. A ``--config`` without a file is a
preset of the experiment's own config file, found wherever the package is
installed, so the command works from any directory.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent

# short name -> (module, config file relative to experiments/, what it reproduces)
EXPERIMENTS = {
    "fool": ("experiments.nguyen2015.fool", "nguyen2015/configs/fool.py",
             "Nguyen et al. 2015: MAP-Elites fooling images (direct, CPPN)"),
    "followups": ("experiments.nguyen2015.followups", "nguyen2015/configs/followups.py",
                  "Nguyen et al. 2015: gradient fooling, transfer, n+1 retraining, ablation"),
    "variants": ("experiments.nguyen2015.variants", "nguyen2015/configs/variants.py",
                 "the original's algorithms beside foolingjax's, side by side"),
    "properties": ("experiments.szegedy2013.properties", "szegedy2013/configs/properties.py",
                   "Szegedy et al. 2013: units vs directions, Tables 1-4"),
    "lipschitz": ("experiments.szegedy2013.lipschitz", "szegedy2013/configs/lipschitz.py",
                  "Szegedy et al. 2013 section 4.3: per-layer Lipschitz bounds"),
    "attack": ("experiments.attacks_defences.attack", "attacks_defences/configs/attack.py",
               "attacks: accuracy-vs-eps curves, L-BFGS"),
    "defend": ("experiments.attacks_defences.defend", "attacks_defences/configs/defend.py",
               "defences: adversarial training, distillation, patch, UAP, detector"),
    "visualize": ("experiments.cs231n.visualize", "cs231n/configs/visualize.py",
                  "cs231n lecture 9: seeing inside a CNN"),
    "train": ("experiments.zoo.train", "zoo/configs/train.py",
              "train a zoo classifier"),
}

USAGE = ("usage: foolingjax list\n"
         "       foolingjax run <experiment> --config=<preset | file.py:preset> "
         "--workdir=DIR [--config.<field>=<value> ...]")


def presets(name: str) -> list[str]:
  """The presets of an experiment's config file (its ``PRESETS``)."""
  return list(importlib.import_module(_config_module(name)).PRESETS)


def _config_module(name: str) -> str:
  return "experiments." + EXPERIMENTS[name][1].removesuffix(".py").replace("/", ".")


def default_preset(name: str) -> str:
  module = importlib.import_module(_config_module(name))
  return inspect.signature(module.get_config).parameters["preset"].default


def list_experiments() -> str:
  lines = []
  for name, (module, _, what) in EXPERIMENTS.items():
    lines.append(f"{name:10s} {what}\n{'':10s} python -m {module}; presets "
                 f"(default {default_preset(name)}): {', '.join(presets(name))}")
  return "\n".join(lines)


def config_argument(name: str, value: str) -> str:
  """``--config`` for the experiment's own command line: a preset becomes its file."""
  if value.endswith(".py") or ".py:" in value:
    return value
  return f"{HERE / EXPERIMENTS[name][1]}:{value}"


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(USAGE + "\n\nexperiments:\n" + list_experiments())
    return 0
  command, rest = argv[0], argv[1:]
  if command == "list":
    print(list_experiments())
    return 0
  if command != "run":
    print(f"Unknown command {command!r}.\n{USAGE}", file=sys.stderr)
    return 2
  if not rest or rest[0].startswith("-"):
    print(f"Name the experiment to run: one of {', '.join(EXPERIMENTS)}.\n{USAGE}",
          file=sys.stderr)
    return 2
  name, flags = rest[0], rest[1:]
  if name not in EXPERIMENTS:
    print(f"Unknown experiment {name!r}. Fix: one of {', '.join(EXPERIMENTS)} "
          "(foolingjax list shows their presets).", file=sys.stderr)
    return 2
  out = []
  for i, flag in enumerate(flags):
    if flag.startswith("--config="):
      flag = "--config=" + config_argument(name, flag[len("--config="):])
    elif flag == "--config" and i + 1 < len(flags):
      flags[i + 1] = config_argument(name, flags[i + 1])
    out.append(flag)
  module_name = EXPERIMENTS[name][0]
  module = importlib.import_module(module_name)
  from experiments import core
  sys.argv = [f"foolingjax run {name}", *out]
  core.cli(module.main)     # absl's app.run: parses the flags, exits with the status
  return 0


if __name__ == "__main__":
  sys.exit(main())
