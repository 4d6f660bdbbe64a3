"""Trained classifiers on demand: ``load_classifier("lenet_mnist", seed=0)``.

The first call trains the preset (a few minutes at most on two CPU cores) and
caches the parameters under ``$FOOLINGJAX_CACHE`` (default
``~/.cache/foolingjax``); later calls read the cache. Weights trained by
``python -m experiments.zoo.train --config=experiments/zoo/configs/train.py:lenet_mnist``
for seeds 0 and 1 also ship inside the package (``foolingjax/assets``), so the
main job needs neither a download nor a training run. Two seeds give the
fooling paper's DNN_A and DNN_B: same architecture and data, another seed.

Each cached file records a hash of its training config; a preset whose config
changed is retrained instead of silently loading stale weights.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Callable

import jax
import ml_collections

from foolingjax import checkpoint, data, models, training
from foolingjax.cache import cache_dir, check_writable
from foolingjax.contract import Classifier

ASSETS = pathlib.Path(__file__).parent / "assets"

# preset -> overrides of training.default_config(). Training budgets were chosen
# to reach the accuracies quoted in the README on two CPU cores.
PRESETS: dict[str, dict] = {
    "lenet_mnist": dict(model="lenet", epochs=5),
    "lenet_fashion_mnist": dict(model="lenet", dataset="fashion_mnist", epochs=10),
    "fc10_wd1e-4_mnist": dict(model="fc10", weight_decay=1e-4, epochs=10, batch_size=128),
    "fc10_wd1e-2_mnist": dict(model="fc10", weight_decay=1e-2, epochs=10, batch_size=128),
    "fc10_wd1_mnist": dict(model="fc10", weight_decay=1.0, epochs=10, batch_size=128),
    "fc100_100_10_mnist": dict(model="fc100_100_10", epochs=20, batch_size=128),
    "fc200_200_10_mnist": dict(model="fc200_200_10", epochs=20, batch_size=128),
    "fc123_456_10_mnist": dict(model="fc123_456_10", epochs=20, batch_size=128),
    # The same nets with the paper's sigmoid units (not bundled: ~30 s to train;
    # sigmoid units fit slower, 20 epochs left 1.2 % training error).
    "fc100_100_10_sigmoid_mnist": dict(model="fc100_100_10_sigmoid", epochs=60,
                                       batch_size=128),
    "fc200_200_10_sigmoid_mnist": dict(model="fc200_200_10_sigmoid", epochs=60,
                                       batch_size=128),
    "ae400_10_mnist": dict(model="ae400_10", ae_pretrain_epochs=10, epochs=20,
                           batch_size=128),
    "alexnet_small_mnist": dict(model="alexnet_small", epochs=5),
    # Szegedy et al.'s cross-training-set nets: trained on the disjoint halves
    # P1 (part 0) and P2 (part 1) of the MNIST training set, see
    # data.disjoint_part. FC100-100-10' is fc100_100_10_mnist_p2.
    "fc100_100_10_mnist_p1": dict(model="fc100_100_10", epochs=20, batch_size=128,
                                  train_part=0, train_parts=2),
    "fc123_456_10_mnist_p1": dict(model="fc123_456_10", epochs=20, batch_size=128,
                                  train_part=0, train_parts=2),
    "fc100_100_10_mnist_p2": dict(model="fc100_100_10", epochs=20, batch_size=128,
                                  train_part=1, train_parts=2),
}


# Pretrained networks that are converted, not trained, here.
PRETRAINED = ("efficientnet_lite0_imagenet",)


def preset_config(name: str, *, seed: int = 0) -> ml_collections.ConfigDict:
  """The training config of a zoo preset."""
  if name not in PRESETS:
    raise ValueError(
        f"Unknown classifier {name!r}. Known: {', '.join(sorted(PRESETS) + list(PRETRAINED))}. Fix: pick "
        "one of these, or train your own model and wrap it with "
        "foolingjax.models.from_linen / from_nnx.")
  config = training.default_config()
  config.update(PRESETS[name])
  config.seed = seed
  return config


def training_data(config: ml_collections.ConfigDict):
  """``(train, test)`` splits of a preset: its dataset, or one part of its training set."""
  train = data.load(config.dataset, "train")
  if "train_part" in config:
    train = data.disjoint_part(train, config.train_part, config.train_parts)
  return train, data.load(config.dataset, "test")


def config_hash(config: ml_collections.ConfigDict) -> str:
  return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def load_classifier(name: str = "lenet_mnist", seed: int = 0, *, train_if_missing: bool = True,
                    log: Callable[[str], None] | None = print,
                    config: ml_collections.ConfigDict | None = None) -> Classifier:
  """A trained zoo classifier ``(apply_fn, params)``, training it on first use.

  Args:
    name: a key of :data:`PRESETS`, e.g. ``"lenet_mnist"``.
    seed: training seed; different seeds give independently trained nets.
    train_if_missing: if False, raise instead of training.
    log: progress printer for a training run.
    config: override the preset's training config (cached under its own hash).

  Returns:
    ``Classifier(apply_fn, params)``; ``apply_fn`` also carries
    ``input_shape`` and ``num_classes``.
  """
  if name == "efficientnet_lite0_imagenet":
    from foolingjax.models import efficientnet
    return efficientnet.load_efficientnet_lite0()
  config = config if config is not None else preset_config(name, seed=seed)
  digest = config_hash(config)
  filename = f"{name}_seed{seed}_{digest}.msgpack"
  apply_fn, template = models.init(config.model, jax.random.key(0),
                                   input_shape=data.image_shape(config.dataset),
                                   num_classes=config.num_classes)
  for directory in (cache_dir() / "classifiers", ASSETS):
    path = directory / filename
    if path.is_file():
      params, _ = checkpoint.restore(path, template)
      return Classifier(apply_fn, params)
  if not train_if_missing:
    raise FileNotFoundError(
        f"No trained {name} (seed {seed}) in {cache_dir() / 'classifiers'}. Fix: call "
        "with train_if_missing=True or run experiments.zoo.train for this preset.")
  target = cache_dir() / "classifiers" / filename
  check_writable(target.parent)
  if log:
    log(f"Training {name} (seed {seed}) once; it will be cached at {target}.")
  classifier, history = training.fit(
      config, *training_data(config),
      workdir=cache_dir() / "training" / f"{name}_seed{seed}_{digest}", log=log)
  checkpoint.save(target, classifier.params,
                  meta={"config": config.to_dict(), "history": history})
  return classifier


def info(name: str, seed: int = 0) -> dict:
  """Training config and history stored with a cached or bundled classifier."""
  digest = config_hash(preset_config(name, seed=seed))
  filename = f"{name}_seed{seed}_{digest}.msgpack"
  for directory in (cache_dir() / "classifiers", ASSETS):
    if (directory / filename).is_file():
      return checkpoint.load_raw(directory / filename)[1]
  raise FileNotFoundError(f"{name} seed {seed} is not trained yet.")
