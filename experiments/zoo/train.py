"""Trains a zoo classifier with checkpoints and resumption.

  python -m experiments.zoo.train --config=experiments/zoo/configs/train.py:lenet_mnist \
      --workdir=runs/lenet_mnist

Writes params.msgpack (load it with ``checkpoint.restore``) and summary.json;
``checkpoints/`` holds one checkpoint per epoch, and a rerun resumes there.
"""

from __future__ import annotations

import time

import ml_collections

from experiments import core
from foolingjax import checkpoint, models, training, zoo


@core.reported
def run(config, workdir) -> dict:
  """Trains ``config.model`` on ``config.dataset``; writes params.msgpack and summary.json."""
  core.check([
      (config.model in models.ARCHITECTURES,
       f"unknown model {config.model!r}; known: {', '.join(models.ARCHITECTURES)}"),
      (config.epochs >= 1, f"epochs must be >= 1, got {config.epochs}"),
      (config.train_limit >= 0 and config.test_limit >= 0,
       "train_limit and test_limit must be >= 0 (0: the whole split)"),
  ], what="train")
  workdir, _ = core.prepare_workdir(workdir, config)
  train, test = zoo.training_data(config)
  if config.train_limit:
    train = tuple(a[: config.train_limit] for a in train)
  if config.test_limit:
    test = tuple(a[: config.test_limit] for a in test)
  t0 = time.perf_counter()
  # The flag's config is locked: build training's own config from a plain dict.
  fit_config = ml_collections.ConfigDict({
      k: v for k, v in config.to_dict().items()
      if k not in ("train_limit", "test_limit", "preset")})
  classifier, history = training.fit(fit_config, train, test, workdir=workdir / "checkpoints")
  summary = {
      "model": config.model, "dataset": config.dataset, "seed": config.seed,
      "train_error": 1.0 - training.accuracy(classifier, *train),
      "test_error": 1.0 - training.accuracy(classifier, *test),
      "seconds": time.perf_counter() - t0, "history": history,
  }
  checkpoint.save(workdir / "params.msgpack", classifier.params,
                  meta={"config": fit_config.to_dict()},
                  fingerprint=core.fingerprint("zoo.train", config))
  core.write_tensorboard(workdir, [
      {"step": i, **{f"{history['phase'][i]}/{k}": v[i] for k, v in history.items()
                     if k not in ("phase", "epoch")}}
      for i in range(len(history["epoch"]))], step="step")
  core.write_json(workdir / "summary.json", summary)
  print(f"{config.model} on {config.dataset}: test accuracy "
        f"{1 - summary['test_error']:.4f}, train accuracy {1 - summary['train_error']:.4f}")
  return summary


def main(argv):
  del argv
  run(core.CONFIG.value, core.WORKDIR.value)


if __name__ == "__main__":
  core.cli(main)
