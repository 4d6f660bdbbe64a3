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


PRESETS = ("all", *PARTS, "sigmoid", "smoke")


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
  ))
  c.noise_rms = "0.1,0.3"  # Table 2's Gaussian-noise rows (RMS distortion after clipping)
  c.magnify_rms = 0.1      # Table 4's magnified rows

  if preset == "all":
    pass
  elif preset in PARTS:
    c.parts = preset
  elif preset == "sigmoid":
    # Tables 1-2 for ReLU and sigmoid versions of the same nets.
    c.parts = "tables"
    c.table1 = ("fc100_100_10_mnist,fc100_100_10_sigmoid_mnist,fc200_200_10_mnist,"
                "fc200_200_10_sigmoid_mnist")
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
    raise ValueError(f"Unknown preset {preset!r}; known: all, {', '.join(PARTS)}, sigmoid, "
                     "smoke.")
  return c
