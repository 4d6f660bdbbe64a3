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
  imagenet  gradient ascent and the repetition ablation on EfficientNet-Lite0
            (standing in for CaffeNet): the original's gradient-ascent setting
            on the 20 classes of its supplementary images, beside the elites of
            the CPU-scale ImageNet fooling runs, which must exist first
            (runs/imagenet_study/{cppn,direct}, see the README's ImageNet section).
  imagenet_retrain
            the n+1 retraining on ImageNet, output layer only: a 1001st output
            on the frozen EfficientNet-Lite0 trained on the elites of the
            CPU-scale CPPN run (class 1001) against crops of the offline demo
            photos, then MAP-Elites against it with that run's settings and key.
            Not in `all`: it needs runs/imagenet_study/cppn first.
  reduced   all four at the reduced scale measured for the README on a shared
            2-core CPU (see the README's nguyen section).
  smoke     everything tiny, for the tests.
"""

import ml_collections

PARTS = ("gradient", "transfer", "retrain", "ablation")
# Parts that take a finished fool run and so are not in the default `parts`.
EXTRA_PARTS = ("imagenet_retrain",)
ALL_PARTS = PARTS + EXTRA_PARTS

# The ImageNet n+1 retraining, output layer only (imagenet_retrain part). No
# ImageNet training images can be had offline, so the net's 1000 outputs stay
# frozen and only the new one is trained: on the logits of the fooling images
# (label 1001) and of random crops of the offline demo photos
# (foolingjax.imagenet.DEMO_PHOTOS; their own softmax is their target).
# fooling_from: fool runs whose elites make class 1001; the first one's
#   classifier, encoding, population, fitness and seed are the evolution's.
# real_photos / heldout_photos: training photos and photos only measured.
# generations: of the evolution against DNN_2 (0: the first run's).
# weight_decay 1.0 (AdamW's decoupled decay): on the CPU-scale CPPN run's elites
# at generation ~150, leaving each of the 17 photos out in turn, 18 % of the
# left-out photo's crops were taken for fooling images, against 26 % at 1e-3
# and 22 % at 0.1; 98.5-99.5 % of left-out fooling images were recognised at all three.
IMAGENET_RETRAIN = dict(
    fooling_from="runs/imagenet_study/cppn",
    real_photos=("astronaut,brick,camera,clock,coins,grass,gravel,hubble_deep_field,"
                 "immunohistochemistry,moon,page,retina,text"),
    heldout_photos="chelsea,coffee,rocket,grace_hopper",
    crops_per_photo=64, min_scale=0.35, steps=2000, learning_rate=1e-2,
    weight_decay=1.0, holdout_share=0.2, generations=0, batch_size=32)


PRESETS = (*PARTS, "all", "imagenet", "imagenet_retrain", "reduced", "smoke")

# The 20 classes of the original's supplementary gradient-ascent images
# (caffe/ascent/run_chosen_supplementary.sh, ascent branch).
ORIGINAL_SUPPLEMENTARY_CLASSES = (
    "200,207,215,279,366,367,390,414,445,500,509,580,643,657,704,713,782,805,826,906")


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
  # blur, 300 steps, the best iterate kept). original_max_lr is in the original's
  # units (0-255 pixels): the ascent divides it by 255^2 for [0, 1] pixels.
  # classes: "" is every class of the classifier, else names or indices.
  # other: a second classifier that scores the same images ("" for none).
  # mean_image: the original's start and decay centre: "mnist_train" (the mean
  # training digit) or "imagenet_mean_colour" (a constant image of the average colour
  # of the original's ilsvrc_2012_mean.npy, which is not copied into this project).
  # evolved_from: fool run work directories whose elites are the evolved rows
  # ("" evolves this config's own sources).
  c.gradient = ml_collections.ConfigDict(dict(
      classifier="lenet_mnist", other="lenet_mnist@1", classes="", starts_per_class=10,
      steps=200, step_size=0.1, objective="log_softmax", l2_decay=0.0, blur_every=0,
      blur_sigma=0.5, original_steps=300, original_decay=0.01, original_early_prog=0.03,
      original_late_prog_mult=0.1, original_max_lr=1e12, mean_image="mnist_train",
      evolved_from=""))

  # DNN_A -> DNN_B (same architecture, another seed) and the cross-architecture pairs.
  # Classifiers are foolingjax.zoo.resolve specs (a user's package.module:function too).
  # from_runs: fool run work directories whose elites (evolved on the run's
  # classifier) dnn_b and cross score, instead of this config's own sources; cross
  # "" leaves the cross-architecture rows out.
  c.transfer = ml_collections.ConfigDict(dict(
      dnn_a="lenet_mnist", dnn_b="lenet_mnist@1", cross="fc100_100_10_mnist",
      encodings="direct,cppn", from_runs=""))

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
      # After the loop, evolve again against DNN_1, the last DNN and the control with
      # this (larger) budget: whether a longer search fools the retrained net.
      # probe_generations=0: no probe.
      probe_generations=0, probe_population=200, probe_runs=2,
  ))

  # from_run: a fool run's work directory whose elites are ablated (its classifier
  # and fitness) instead of this config's own CPPN sources; batch_size: images per
  # jitted call (0: all at once).
  c.ablation = ml_collections.ConfigDict(dict(
      classifier="lenet_mnist", encoding="cppn", steps=4,
      max_components=64, iou_threshold=0.75, min_area=4, examples=8, from_run="",
      batch_size=0))

  c.imagenet_retrain = ml_collections.ConfigDict(dict(IMAGENET_RETRAIN))

  if preset in ("all",):
    pass
  elif preset == "imagenet_retrain":
    c.parts = "imagenet_retrain"
  elif preset in PARTS:
    c.parts = preset
  elif preset == "imagenet":
    c.parts = "gradient,transfer,ablation"
    # Table S1 on ImageNet: no two CaffeNets differing only in seed can be had here,
    # so DNN_B is EfficientNet-Lite1 (the same family, deeper, trained at 240x240).
    c.transfer.from_runs = "runs/imagenet_study/cppn,runs/imagenet_study/direct"
    c.transfer.dnn_b, c.transfer.cross = "efficientnet_lite1_imagenet", ""
    g = c.gradient
    g.classifier, g.other = "efficientnet_lite0_imagenet", ""
    g.classes = ORIGINAL_SUPPLEMENTARY_CLASSES
    g.starts_per_class = 1            # the original: 5 start seeds per class
    g.steps = 100                     # foolingjax's ascent: fixed 0.1 on log p
    g.mean_image = "imagenet_mean_colour"
    # The original's unregularised setting of its supplementary images
    # (hyperparam_search.py --hp_seed -1): no decay, 500 steps, early_prog 0.02,
    # late_prog_mult 0.1, max_lr 1e7. Its --hp_seed 169 draw is decay 0.01, 1500
    # steps, early_prog 0.03, late_prog_mult 0.02 (no blur): set those to run it.
    g.original_steps, g.original_decay = 500, 0.0
    g.original_early_prog, g.original_late_prog_mult, g.original_max_lr = 0.02, 0.1, 1e7
    g.evolved_from = "runs/imagenet_study/cppn,runs/imagenet_study/direct"
    a = c.ablation
    a.from_run = "runs/imagenet_study/cppn"
    a.batch_size = 20
    a.max_components = 128
    a.min_area = 256                  # 4 of 784 pixels on MNIST: the same share of 224x224
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
    # The loop's population and runs: the probe reuses its compiled evolvers.
    c.retrain.probe_generations = 2
    c.retrain.probe_population = 16
    c.retrain.probe_runs = 2
    c.retrain.population = 16
    c.retrain.generations = 3
    c.retrain.runs = 2
    c.retrain.epochs = 1
    c.retrain.train_size = 640
    c.retrain.fooling_class_size = 64
    c.ablation.steps = 2
    c.ablation.examples = 4
  else:
    raise ValueError(f"Unknown preset {preset!r}; use one of {PRESETS}.")
  return c
