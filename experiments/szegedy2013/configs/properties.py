"""Presets for "Intriguing properties of neural networks" (experiments/szegedy2013/properties.py).

Run:
  python -m experiments.szegedy2013.properties --config=experiments/szegedy2013/configs/properties.py:all \
      --workdir=runs/szegedy_all [--config.num_attack_images=300]

Presets:
  all    every part at the scale measured for the README: 10,000 held-out
         images ranked per direction; L-BFGS on the first 1,000 MNIST test
         images for each of the nine nets (6 minutes on two CPU cores).
  units / tables / cross_training   one part at that scale.
  sigmoid  Tables 1-2 for FC100-100-10 and FC200-200-10 with ReLU (ours) and
         sigmoid (the paper's) hidden units; the sigmoid nets are trained on
         first use.
  paper  the paper's protocol as far as it states it: Tables 1-2 on the first
         1,000 training images, Tables 3-4 on test images, nets trained as the
         paper says (``*_paper_mnist`` zoo presets: sigmoid units, SGD, weight
         decay λ/k per layer, a sparse autoencoder, frozen under its softmax), Gaussian
         noise of a fixed stddev added unclipped (the paper's rows; clipped and
         our RMS-after-clipping rows beside them), the paper's magnification.
  study  the single-factor study: the ``tables`` preset on 500 images and that
         preset with one factor of the paper's protocol changed at a time
         (STUDY_FACTORS), each in its own subdirectory, and study.md comparing
         the cells each factor moves.
  smoke  every part tiny (bundled weights, 12 attacked images, a short c
         search), for the tests: a few minutes on two CPU cores.

Nets are foolingjax.zoo.resolve specs: a zoo preset (``fc100_100_10_mnist``, or
``fc100_100_10_mnist@1`` for the net trained with seed 1), ``init:<arch>[@seed]``
(untrained), or ``package.module:function`` (a user's 10-class MNIST model; the
units part needs named hidden layers, so it takes a user's model only if its
module has a ``features`` method).
"""

import ml_collections

PARTS = ("units", "tables", "cross_training")

# Table 1's nets (and Table 2's rows and columns).
TABLE1 = ("fc10_wd1e-4_mnist,fc10_wd1e-2_mnist,fc10_wd1_mnist,fc100_100_10_mnist,"
          "fc200_200_10_mnist,ae400_10_mnist")
# Table 3's nets: two trained on P1, one on P2 (FC100-100-10').
CROSS_TRAINING = "fc100_100_10_mnist_p1,fc123_456_10_mnist_p1,fc100_100_10_mnist_p2"


# Szegedy et al.'s nets trained as the paper says (foolingjax.zoo), and the
# single-factor variants of our nets.
PAPER_TABLE1 = ("fc10_wd1e-4_paper_mnist,fc10_wd1e-2_paper_mnist,fc10_wd1_paper_mnist,"
                "fc100_100_10_paper_mnist,fc200_200_10_paper_mnist,ae400_10_paper_mnist")
PAPER_CROSS_TRAINING = ("fc100_100_10_paper_mnist_p1,fc123_456_10_paper_mnist_p1,"
                        "fc100_100_10_paper_mnist_p2")

# One factor of the paper's protocol each: (what it changes, its nets: ours ->
# the variant's). The study runs the ``tables`` part once per factor.
STUDY_FACTORS = {
    "ours": "our protocol (the tables preset)",
    "train_images": "attack training images, not test images",
    "sigmoid": "sigmoid hidden units (FC100-100-10, FC200-200-10; Adam as ours)",
    "sgd": "SGD + the paper's per-layer weight decay λ/k (FC10s and the ReLU FC nets)",
    "sgd_fc10": "SGD + the paper's weight decay λ/k, the three FC10s only",
    "sgd_hidden": "SGD + the paper's per-layer weight decay λ/k, the ReLU FC100-100-10 "
                  "and FC200-200-10 only",
    "sparse_ae": "AE400-10: a sparse autoencoder, encoder not fine-tuned, SGD",
    "short_search": "under-optimised L-BFGS: 2 solves of the c search, 20 iterations each",
    "next_target": "fixed targets (label + 1) mod 10, not random",
    "paper": "all of the paper's stated choices at once: training images, sigmoid + SGD "
             "+ weight decay, the sparse autoencoder",
}
_SWAPS = {
    "sigmoid": {"fc100_100_10_mnist": "fc100_100_10_sigmoid_mnist",
                "fc200_200_10_mnist": "fc200_200_10_sigmoid_mnist"},
    "sgd": {"fc10_wd1e-4_mnist": "fc10_wd1e-4_paper_mnist",
            "fc10_wd1e-2_mnist": "fc10_wd1e-2_paper_mnist",
            "fc10_wd1_mnist": "fc10_wd1_paper_mnist",
            "fc100_100_10_mnist": "fc100_100_10_sgd_mnist",
            "fc200_200_10_mnist": "fc200_200_10_sgd_mnist"},
    "sparse_ae": {"ae400_10_mnist": "ae400_10_paper_mnist"},
}
_SWAPS["sgd_fc10"] = {k: v for k, v in _SWAPS["sgd"].items() if k.startswith("fc10_")}
_SWAPS["sgd_hidden"] = {k: v for k, v in _SWAPS["sgd"].items() if not k.startswith("fc10_")}

PRESETS = ("all", *PARTS, "sigmoid", "paper", "study", "smoke")


def _swap(nets: str, swaps: dict) -> str:
  return ",".join(swaps.get(n, n) for n in nets.split(","))


def study_variant(base, factor: str):
  """``base`` (a config) with one factor of the paper's protocol changed."""
  if factor not in STUDY_FACTORS:
    raise ValueError(f"Unknown study factor {factor!r}; known: {', '.join(STUDY_FACTORS)}.")
  c = ml_collections.ConfigDict(base.to_dict())
  c.study = ""
  c.preset = f"{base.preset}/{factor}"
  if factor in _SWAPS:
    c.table1 = _swap(c.table1, _SWAPS[factor])
  elif factor == "train_images":
    c.attack_split = "train"
  elif factor == "short_search":
    c.attack.c_search_steps = 2
    c.attack.max_iters = 20
  elif factor == "next_target":
    c.target_rule = "next"
  elif factor == "paper":
    c.table1 = PAPER_TABLE1
    c.attack_split = "train"
  return c


def get_config(preset: str = "all"):
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.parts = ",".join(PARTS)

  # Units vs random directions: "classifier:layer" pairs (layer = a key of the
  # model's features()); the images are the first num_images test images.
  c.units = ml_collections.ConfigDict(dict(
      layers="fc100_100_10_mnist:fc2,lenet_mnist:ip1",
      num_images=10000,
      num_random=100,     # random directions compared with all live units
      purity_k="10,100",  # top-k sizes whose label purity is tabulated
      show_rows=4,        # units (and directions) drawn in the figure
      show_k=8,           # images per drawn row
  ))

  c.table1 = TABLE1
  c.cross_training = CROSS_TRAINING
  c.num_attack_images = 1000  # the first N MNIST test images (those each net gets right)
  c.attack = ml_collections.ConfigDict(dict(
      c_search_steps=8, max_iters=100, tol=1e-4,
      chunk_images=100,   # images per jitted call and per checkpoint
      # lax.map over chunks of this many images inside a call (0: one vmap);
      # 1 measured fastest on XLA:CPU, see foolingjax.attacks.lbfgs_attack.
      chunk_size=1,
      # The inner L-BFGS loop: "zoom" (optax.lbfgs; every README table's) or
      # "armijo" (foolingjax's own, about 3x faster on MNIST nets; README,
      # attacks section).
      solver="zoom",
  ))
  # Which images Tables 1-2 and Tables 3-4 attack: the first num_attack_images
  # of the MNIST "test" or "train" split (the paper: training images for
  # Tables 1-2, test images for Table 4).
  c.attack_split = "test"
  c.cross_training_split = "test"
  c.target_rule = "random"  # random: a random wrong label per image; next: (label + 1) mod 10
  c.noise_rms = "0.1,0.3"  # Gaussian-noise rows at an RMS distortion measured after clipping (ours)
  # Gaussian-noise rows as the paper defines them: x + N(0, σ²) at each σ here,
  # unclipped (the paper's), and clipped to [0, 1] beside it. Empty: none.
  c.noise_stddev = ""
  c.magnify_rms = 0.1      # Table 4's magnified rows
  # How a perturbation is magnified: rms_after_clip (ours: clipped, RMS met
  # after clipping, foolingjax.attacks.perturbations.scale_to_distortion) and/or
  # paper (x + 0.1 r / RMS(r), unclipped, perturbations.magnify).
  c.magnify = "rms_after_clip"
  # The single-factor study (preset study): factors of STUDY_FACTORS, each run
  # as its own variant of this config in <workdir>/<factor>/. Empty: no study.
  c.study = ""

  if preset == "all":
    pass
  elif preset in PARTS:
    c.parts = preset
  elif preset == "sigmoid":
    # Tables 1-2 for ReLU and sigmoid versions of the same nets.
    c.parts = "tables"
    c.table1 = ("fc100_100_10_mnist,fc100_100_10_sigmoid_mnist,fc200_200_10_mnist,"
                "fc200_200_10_sigmoid_mnist")
  elif preset == "paper":
    c.parts = ",".join(PARTS)
    c.units.layers = "fc100_100_10_paper_mnist:fc2,lenet_mnist:ip1"
    c.table1 = PAPER_TABLE1
    c.cross_training = PAPER_CROSS_TRAINING
    c.attack_split = "train"
    c.noise_stddev = "0.1,0.3"
    c.magnify = "paper,rms_after_clip"
  elif preset == "study":
    c.parts = "tables"
    c.num_attack_images = 500
    c.noise_stddev = "0.1,0.3"
    c.study = ",".join(STUDY_FACTORS)
  elif preset == "smoke":
    c.units.layers = "fc100_100_10_mnist:fc2"
    c.units.num_images = 500
    c.units.num_random = 20
    c.units.purity_k = "5,20"
    c.units.show_rows = 2
    c.units.show_k = 4
    c.table1 = "fc10_wd1e-4_mnist,fc100_100_10_mnist"
    c.cross_training = "fc100_100_10_mnist_p1,fc100_100_10_mnist_p2"
    c.num_attack_images = 12
    c.attack.c_search_steps = 3
    c.attack.max_iters = 30
    c.attack.chunk_images = 5
  else:
    raise ValueError(f"Unknown preset {preset!r}; known: {', '.join(PRESETS)}.")
  return c
