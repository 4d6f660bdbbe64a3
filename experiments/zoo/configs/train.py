"""Training presets, one per zoo classifier.

Run:
  python -m experiments.zoo.train --config=experiments/zoo/configs/train.py:lenet_mnist \
      --workdir=runs/lenet_mnist [--config.seed=1]
Presets: every key of foolingjax.zoo.PRESETS, plus ``smoke``.
"""

from foolingjax import zoo


PRESETS = (*zoo.PRESETS, "smoke")


def get_config(preset: str = "lenet_mnist"):
  if preset == "smoke":
    config = zoo.preset_config("lenet_mnist")
    config.epochs = 1
    config.train_limit = 2048
    config.test_limit = 512
  else:
    config = zoo.preset_config(preset)
    config.train_limit = 0  # 0: the whole split
    config.test_limit = 0
  config.preset = preset
  return config
