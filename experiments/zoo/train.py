"""Trains a zoo classifier with checkpoints and resumption.

  python -m experiments.zoo.train --config=experiments/zoo/configs/train.py:lenet_mnist \
      --workdir=runs/lenet_mnist
"""

from __future__ import annotations

import pathlib
import time

from absl import app

from experiments import common
from foolingjax import checkpoint, training, zoo

_CONFIG = common.CONFIG
_WORKDIR = common.WORKDIR


def run(config, workdir) -> dict:
  """Trains ``config.model`` on ``config.dataset``; writes params.msgpack and summary.json."""
  workdir, _ = common.prepare_workdir(workdir, config)
  train, test = zoo.training_data(config)
  if config.train_limit:
    train = tuple(a[: config.train_limit] for a in train)
  if config.test_limit:
    test = tuple(a[: config.test_limit] for a in test)
  t0 = time.perf_counter()
  fit_config = config.copy_and_resolve_references()
  for key in ("train_limit", "test_limit", "preset"):
    del fit_config[key]
  classifier, history = training.fit(fit_config, train, test, workdir=workdir / "checkpoints")
  summary = {
      "model": config.model, "dataset": config.dataset, "seed": config.seed,
      "train_error": 1.0 - training.accuracy(classifier, *train),
      "test_error": 1.0 - training.accuracy(classifier, *test),
      "seconds": time.perf_counter() - t0, "history": history,
  }
  checkpoint.save(workdir / "params.msgpack", classifier.params,
                  meta={"config": fit_config.to_dict()})
  common.write_json(workdir / "summary.json", summary)
  print(f"{config.model} on {config.dataset}: test accuracy "
        f"{1 - summary['test_error']:.4f}, train accuracy {1 - summary['train_error']:.4f}")
  return summary


def main(argv):
  del argv
  run(_CONFIG.value, pathlib.Path(_WORKDIR.value or f"runs/train_{_CONFIG.value.preset}"))


if __name__ == "__main__":
  app.run(main)
