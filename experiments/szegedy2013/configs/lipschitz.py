"""Presets for per-layer upper Lipschitz bounds vs. measured sensitivity.

Run:
  python -m experiments.szegedy2013.lipschitz --config=experiments/szegedy2013/configs/lipschitz.py:all \
      --workdir=runs/lipschitz_all
Presets:
  mnist: LeNet and the FC nets (bundled seed-0 weights), 20 test images each.
  imagenet: EfficientNet-Lite0 on 2 sample photos (scikit-image's chelsea and
    coffee), a small L-BFGS budget (CPU: minutes of compiling and running).
  all: both.
  smoke: an untrained FC100-100-10 ("init:fc100_100_10"), 2 images, a few
    iterations: seconds, for the tests.
Classifiers are foolingjax.zoo.resolve specs: a zoo preset (``lenet_mnist``, or
``lenet_mnist@1`` for the net trained with seed 1), ``init:<arch>[@seed]`` (an
untrained zoo architecture), or ``package.module:function`` (a user's model; the
bounds need its architecture's layer description).
"""

import ml_collections

MNIST_NETS = ("lenet_mnist,fc10_wd1e-4_mnist,fc100_100_10_mnist,fc200_200_10_mnist,"
              "ae400_10_mnist")
IMAGENET_NETS = "efficientnet_lite0_imagenet"


PRESETS = ("all", "mnist", "imagenet", "smoke")


def get_config(preset: str = "all"):
  config = ml_collections.ConfigDict()
  config.preset = preset
  config.seed = 0
  config.classifiers = f"{MNIST_NETS},{IMAGENET_NETS}"  # comma-separated, name[@seed]
  config.power_iters = 300  # power-iteration steps per affine layer
  config.mnist_num_images = 20  # first MNIST test images
  config.imagenet_num_images = 2  # scikit-image sample photos, in a fixed order
  # L-BFGS minimal perturbation towards target = (prediction + 1) mod K.
  config.lbfgs_c_search_steps = 8
  config.lbfgs_max_iters = 100
  config.lbfgs_tol = 1e-4
  # lax.map over chunks of this many images (None: one vmap); 1 measured fastest
  # on XLA:CPU, see foolingjax.attacks.lbfgs_attack.
  config.lbfgs_chunk_size = 1
  # L-BFGS inner loop: "zoom" (optax.lbfgs, every README table's) or "armijo"
  # (foolingjax's own, about 3x faster on MNIST nets; README, attacks section).
  config.lbfgs_solver = "zoom"
  config.imagenet_lbfgs_c_search_steps = 3
  config.imagenet_lbfgs_max_iters = 15
  config.random_l2 = 1.0  # ||r|| of the random-direction comparison
  if preset == "all":
    pass
  elif preset == "mnist":
    config.classifiers = MNIST_NETS
  elif preset == "imagenet":
    config.classifiers = IMAGENET_NETS
    config.power_iters = 100
  elif preset == "smoke":
    config.classifiers = "init:fc100_100_10"
    config.power_iters = 20
    config.mnist_num_images = 2
    config.lbfgs_c_search_steps = 3
    config.lbfgs_max_iters = 20
  else:
    raise ValueError(f"Unknown preset {preset!r}; known: all, mnist, imagenet, smoke.")
  return config
