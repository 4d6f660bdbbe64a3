"""Adversarial-attack presets: accuracy-vs-ε curves and an L-BFGS grid.

Run:
  python -m experiments.attacks_defences.attack --config=experiments/attacks_defences/configs/attack.py:mnist \
      --workdir=runs/attack_mnist [--config.num_images=2000]
Presets:
  mnist: FGSM / PGD curves (L∞ and L2) for LeNet and the FC nets, L-BFGS grid
    on LeNet. Zoo presets not trained yet are trained once and cached.
  lenet: the same for LeNet alone.
  lenet_quick: LeNet at a budget a 2-core CPU runs in a few minutes: the first
    100 test images, ε in {0.1, 0.2, 0.3} (L∞) and {1, 2, 3} (L2), every
    attack but C&W and APGD-L2, Square with 300 queries, a one-image L-BFGS grid.
  fc: the same for the FC nets alone, L-BFGS grid on FC100-100-10.
  smoke: the bundled trained FC10(1e-4), a few images: seconds, for the tests.
Classifiers are any ``foolingjax.zoo.resolve`` spec: zoo presets
(``lenet_mnist``, ``lenet_mnist@1`` for seed 1), ``init:<arch>`` for an
untrained architecture, or ``package.module:function`` for your own model.
"""

import ml_collections

FC_NETS = "fc10_wd1e-4_mnist,fc100_100_10_mnist,fc200_200_10_mnist"


PRESETS = ("mnist", "lenet", "lenet_quick", "fc", "smoke")


def get_config(preset: str = "mnist"):
  config = ml_collections.ConfigDict()
  config.preset = preset
  config.seed = 0
  config.dataset = "mnist"
  config.classifiers = f"lenet_mnist,{FC_NETS}"  # comma-separated zoo.resolve specs
  config.num_images = 1000  # first test images, for the curves
  config.batch_size = 250
  config.eps_linf = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3)
  config.eps_l2 = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
  config.pgd_steps = 20
  config.pgd_step_factor = 2.5  # step = factor * eps / steps (Madry et al.)
  config.pgd_random_start = True
  # Which curves: FGSM, PGD, APGD, Square at each ε; DeepFool, C&W, FMN once each.
  config.attacks = ("fgsm_linf,pgd_linf,fgsm_l2,pgd_l2,apgd_linf,apgd_l2,square_linf,"
                    "deepfool_l2,cw_l2,fmn_linf,fmn_l2")
  config.apgd_steps = 100
  config.square_queries = 1000
  config.deepfool_max_iter = 50
  config.cw_search_steps = 5
  config.cw_steps = 100
  config.fmn_steps = 100
  config.lbfgs_classifier = "lenet_mnist"
  config.lbfgs_num_images = 10
  config.lbfgs_c_search_steps = 8
  config.lbfgs_max_iters = 100
  config.lbfgs_tol = 1e-4
  # lax.map over chunks of this many images (0: one vmap over all of them).
  # 1 measured fastest on XLA:CPU; see foolingjax.attacks.lbfgs_attack.
  config.lbfgs_chunk_size = 1
  # L-BFGS inner loop: "zoom" (optax.lbfgs, every README table's) or "armijo"
  # (foolingjax's own, about 3x faster on MNIST nets; README, attacks section).
  config.lbfgs_solver = "zoom"
  config.magnify = 10.0  # perturbation shown as 0.5 + magnify * (adv - x)
  if preset == "mnist":
    pass
  elif preset == "lenet":
    config.classifiers = "lenet_mnist"
  elif preset == "lenet_quick":
    config.classifiers = "lenet_mnist"
    config.num_images = 100
    config.batch_size = 100
    config.eps_linf = (0.0, 0.1, 0.2, 0.3)
    config.eps_l2 = (0.0, 1.0, 2.0, 3.0)
    config.attacks = ("fgsm_linf,pgd_linf,fgsm_l2,pgd_l2,apgd_linf,square_linf,"
                      "deepfool_l2,fmn_linf,fmn_l2")
    config.square_queries = 300
    config.lbfgs_num_images = 1
    config.lbfgs_c_search_steps = 1
    config.lbfgs_max_iters = 10
  elif preset == "fc":
    config.classifiers = FC_NETS
    config.lbfgs_classifier = "fc100_100_10_mnist"
  elif preset == "smoke":
    config.classifiers = "fc10_wd1e-4_mnist"
    config.lbfgs_classifier = "fc10_wd1e-4_mnist"
    config.num_images = 48
    config.batch_size = 32
    config.eps_linf = (0.0, 0.1, 0.3)
    config.eps_l2 = (0.0, 1.0)
    config.pgd_steps = 3
    config.lbfgs_num_images = 3
    config.lbfgs_c_search_steps = 2
    config.lbfgs_max_iters = 10
    config.attacks = "fgsm_linf,pgd_linf,fgsm_l2,pgd_l2,apgd_linf,square_linf,deepfool_l2"
    config.apgd_steps = 5
    config.square_queries = 20
  else:
    raise ValueError(f"Unknown preset {preset!r}; known: {', '.join(PRESETS)}.")
  return config
