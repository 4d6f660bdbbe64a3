"""Presets for the fooling paper's follow-up studies (experiments/nguyen2015/followups.py).

Run:
  python -m experiments.nguyen2015.followups --config=experiments/nguyen2015/configs/followups.py:all \
      --workdir=runs/nguyen_all [--config.seed=1] [--config.parts=transfer,ablation]

Presets:
  gradient  gradient-ascent fooling images for every MNIST class, next to
            evolved elites (1001-generation MAP-Elites on LeNet seed 0).
  transfer  Table S1: 10 runs each of direct and CPPN MAP-Elites on DNN_A
            (LeNet seed 0, 1001 generations), scored by DNN_B (LeNet seed 1),
            plus LeNet <-> FC100-100-10 cross-architecture transfer.
  retrain   the n+1 fooling-class loop at the paper's MNIST scale: 15
            iterations, full training set, 5 epochs per DNN.
  ablation  repetition ablation on the CPPN elites of the transfer runs.
  all       the four above at the paper's scale.
  reduced   all four at the reduced scale measured for the README on a shared
            2-core CPU (see the README's nguyen section).
  smoke     everything tiny, for the tests.
"""

import ml_collections

PARTS = ("gradient", "transfer", "retrain", "ablation")


PRESETS = (*PARTS, "all", "reduced", "smoke")


def get_config(preset: str = "all"):
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.parts = ",".join(PARTS)

  # MAP-Elites source runs shared by gradient (the grid of evolved elites),
  # transfer and ablation: R runs per (classifier, encoding) under one vmap, run r
  # keyed by split(rng(seed, "<classifier>-<seed>_<encoding>"), R)[r].
  c.evolve = ml_collections.ConfigDict(dict(
      population=200, generations=1001, log_every=25, checkpoint_every=100, runs=10))

  # CPPN genome capacity (the reduced run's sources were evolved with these).
  c.cppn = ml_collections.ConfigDict(dict(max_nodes=32, max_conns=128))

  # foolingjax's ascent (uniform-noise start, fixed step on the log-probability,
  # no decay) and, when original_steps > 0, the original's beside it
  # (caffe/ascent/find_fooling_image.py: mean image + N(0, 1) in 0-255 units,
  # the "progress" step rule on the probability, decay 0.01 toward the mean, no
  # blur, 300 steps, the best iterate kept).
  c.gradient = ml_collections.ConfigDict(dict(
      classifier="lenet_mnist", other="lenet_mnist@1", starts_per_class=10, steps=200,
      step_size=0.1, objective="log_softmax", l2_decay=0.0, blur_every=0, blur_sigma=0.5,
      original_steps=300, original_decay=0.01, original_early_prog=0.03,
      original_late_prog_mult=0.1, original_max_lr=1e12))

  # DNN_A -> DNN_B (same architecture, another seed) and the cross-architecture pairs.
  # Classifiers are foolingjax.zoo.resolve specs (a user's package.module:function too).
  c.transfer = ml_collections.ConfigDict(dict(
      dnn_a="lenet_mnist", dnn_b="lenet_mnist@1", cross="fc100_100_10_mnist",
      encodings="direct,cppn"))

  c.retrain = ml_collections.ConfigDict(dict(
      iterations=15,           # DNN_1 .. DNN_k
      encoding="direct",
      population=200, generations=1001, runs=5,   # MAP-Elites runs (vmapped) per iteration
      epochs=5, train_size=0,  # 0: the whole MNIST training split
      fooling_class_size=6000,  # images of class n+1 per retrain (a digit class's size)
      # resample: fooling_class_size images drawn from the elites so far (repeats when
      # fewer); accumulate: every distinct elite so far, once each (the class grows).
      fooling_class="resample",
      initial="zoo",           # DNN_1: the bundled LeNet seed 0 ("zoo") or "train"
      control=True,            # also train a 10-class LeNet with the same budget
  ))

  c.ablation = ml_collections.ConfigDict(dict(
      classifier="lenet_mnist", encoding="cppn", steps=4,
      max_components=64, iou_threshold=0.75, min_area=4, examples=8))

  if preset in ("all",):
    pass
  elif preset in PARTS:
    c.parts = preset
  elif preset == "reduced":
    c.evolve.population = 100
    c.evolve.generations = 100
    c.evolve.runs = 3
    c.evolve.checkpoint_every = 50
    c.gradient.starts_per_class = 5
    c.gradient.steps = 100
    c.retrain.population = 50
    c.retrain.generations = 50
    c.retrain.runs = 3
    c.retrain.epochs = 1
    c.retrain.train_size = 10000
    c.retrain.fooling_class_size = 1000
  elif preset == "smoke":
    c.evolve.population = 16
    c.evolve.generations = 4
    c.evolve.log_every = 2
    c.evolve.checkpoint_every = 4
    c.evolve.runs = 2
    c.gradient.starts_per_class = 2
    c.gradient.steps = 5
    c.gradient.original_steps = 5
    c.transfer.encodings = "direct"   # the CPPN path is exercised by gradient/ablation
    c.retrain.iterations = 2
    c.retrain.population = 16
    c.retrain.generations = 3
    c.retrain.runs = 2
    c.retrain.epochs = 1
    c.retrain.train_size = 640
    c.retrain.fooling_class_size = 64
    c.ablation.steps = 2
    c.ablation.examples = 4
  else:
    raise ValueError(f"Unknown preset {preset!r}; use one of {PARTS}, all, reduced or smoke.")
  return c
