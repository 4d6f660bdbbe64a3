"""Defence presets: adversarial training, distillation, patch, UAP, detector.

Run:
  python -m experiments.attacks_defences.defend --config=experiments/attacks_defences/configs/defend.py:all \
      --workdir=runs/defend_all
Presets:
  all: FC100-100-10 on MNIST: the bundled standard net, Goodfellow FGSM
    training, Madry PGD training and defensive distillation at T = 100 trained
    here (a few epochs each: CPU minutes); robust accuracy vs ε, L-BFGS,
    distillation's gradient masking, patches of five sizes, an L∞ UAP with its
    transfer to LeNet and FC200-200-10, and an activation detector.
  smoke: the same pipeline at toy sizes (seconds), for the tests.
Trained models are saved under ``<workdir>/models`` and reused by a rerun of
the same config. ``model``, ``standard`` and ``uap_transfer`` take
``foolingjax.zoo.resolve`` specs, so your own model defends and is attacked too.
"""

import ml_collections


PRESETS = ("all", "smoke")


def get_config(preset: str = "all"):
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.dataset = "mnist"
  # The architecture every defence trains from (or any foolingjax.zoo.resolve spec,
  # e.g. your package.module:function, whose parameters are the starting point).
  c.model = "fc100_100_10"
  # The standard net: a zoo.resolve spec of config.model's architecture, or "train"
  # to train it here.
  c.standard = "fc100_100_10_mnist"
  c.train_size = 60000         # first training images used by the trained models
  c.num_test = 1000            # first test images for every evaluation
  c.eval_batch_size = 500

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 5
  c.train.batch_size = 128
  c.train.optimizer = "adam"
  c.train.learning_rate = 1e-3
  c.train.momentum = 0.9
  c.train.schedule = "cosine"
  c.train.eval_batch_size = 1000

  c.table_eps = 0.1            # L∞ ε of the results table
  c.eps_linf = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
  c.pgd_steps = 20
  c.pgd_step_factor = 2.5      # step = factor * ε / steps

  c.fgsm_train_eps = 0.1       # Goodfellow's mixed objective
  c.fgsm_train_alpha = 0.5
  c.pgd_train_eps = 0.1        # Madry's PGD training
  c.pgd_train_steps = 10

  c.temperature = 100.0        # defensive distillation (Papernot et al. use 100)

  c.lbfgs_images = 30
  c.lbfgs_l2_budget = 1.5      # L-BFGS counts only below this L2 distortion
  c.lbfgs_c_search_steps = 4
  c.lbfgs_max_iters = 30
  # lax.map over chunks of this many images (None: one vmap); 1 measured fastest
  # on XLA:CPU, see foolingjax.attacks.lbfgs_attack.
  c.lbfgs_chunk_size = 1
  # L-BFGS inner loop: "zoom" (optax.lbfgs, every README table's) or "armijo"
  # (foolingjax's own, about 3x faster on MNIST nets; README, attacks section).
  c.lbfgs_solver = "zoom"

  c.patch_sides = (4, 8, 12, 16, 20)
  c.patch_target = 3
  c.patch_steps = 300
  c.patch_batch = 64
  c.patch_lr = 0.1
  c.patch_train_images = 2000

  c.uap_norm = "linf"
  c.uap_eps = 0.15
  c.uap_images = 1000          # training images the UAP is computed on
  c.uap_passes = 3
  c.uap_deepfool_steps = 10
  c.uap_transfer = "lenet_mnist,fc200_200_10_mnist"  # zoo.resolve specs

  c.detector_layers = ("fc1", "fc2", "logits")  # () leaves the detector out
  c.detector_train_images = 1000  # training images (clean + FGSM + PGD at table ε)
  c.detector_test_images = 300    # test images for the held-out AUCs
  c.detector_steps = 500
  c.detector_hidden = 64
  c.magnify = 5.0

  if preset == "all":
    pass
  elif preset == "smoke":
    # The bundled trained standard net: "attacks lower accuracy" is a real check.
    c.train_size = 512
    c.num_test = 64
    c.eval_batch_size = 32
    c.train.epochs = 1
    c.train.batch_size = 64
    c.eps_linf = (0.0, 0.1, 0.3)
    c.pgd_steps = 3
    c.pgd_train_steps = 2
    c.temperature = 20.0
    c.lbfgs_images = 4
    c.lbfgs_c_search_steps = 2
    c.lbfgs_max_iters = 5
    c.patch_sides = (6, 14)
    c.patch_steps = 5
    c.patch_batch = 8
    c.patch_train_images = 64
    c.uap_images = 24
    c.uap_passes = 1
    c.uap_deepfool_steps = 3
    c.uap_transfer = "fc10_wd1e-4_mnist"
    c.detector_train_images = 48
    c.detector_test_images = 24
    c.detector_steps = 20
    c.detector_hidden = 8
  else:
    raise ValueError(f"Unknown preset {preset!r}; known: all, smoke.")
  return c
