"""Adversarial attacks on any ``(apply_fn, params)`` classifier.

* :func:`fgsm`, :func:`bim`, :func:`pgd`: gradient-sign / normalised-gradient
  attacks in L∞ or L2, clipped to the pixel box; :func:`pgd` takes
  ``restarts=``, ``early_stop=`` and a vector of radii ``eps=[E]``.
* :func:`apgd`: Croce & Hein's step-size-free Auto-PGD (CE, DLR and targeted
  losses, checkpointed step halving, momentum), L∞ and L2, with restarts and
  vector ``eps``.
* :func:`carlini_wagner_l2`: Carlini & Wagner's L2 attack (tanh box, margin
  loss with confidence ``kappa``, per-image search over ``c``, Adam).
* :func:`deepfool`: Moosavi-Dezfooli et al.'s DeepFool, L2 or L∞, box-aware,
  over all or the top-k classes.
* :func:`square`: Andriushchenko et al.'s score-based Square Attack, L∞ and
  L2, with per-image query counts.
* :func:`fmn`: Pintor et al.'s Fast Minimum-Norm attack, L2 and L∞.
* :func:`auto_attack`: APGD-CE, APGD-T, FMN and Square in sequence, each on
  the points the earlier ones left robust; per-image worst case and robust
  accuracy.
* :func:`gradient_ascent_fooling`: class-score ascent from noise or an image.
* :func:`lbfgs_attack`: Szegedy et al.'s box-constrained L-BFGS attack with a
  per-image search over ``c``, driven by ``optax.lbfgs`` or its own Armijo L-BFGS loop.
* :mod:`~foolingjax.attacks.metrics`: success rate, L2 / L∞ distortion and
  Szegedy's average minimum distortion.
* :mod:`~foolingjax.attacks.losses`: per-example losses ``loss_fn(logits [K],
  label) -> []``; pass your own as ``loss_fn=``.

All functions are pure and unjitted; the caller jits once with the classifier
closed over.
"""

from foolingjax.attacks import losses, metrics
from foolingjax.attacks.apgd import ApgdInfo, apgd, dlr_loss, dlr_targeted_loss
from foolingjax.attacks.auto_attack import AutoAttackResult, auto_attack
from foolingjax.attacks.carlini_wagner import CarliniWagnerInfo, carlini_wagner_l2
from foolingjax.attacks.deepfool import DeepFoolInfo, deepfool
from foolingjax.attacks.fmn import FmnInfo, fmn
from foolingjax.attacks.fooling import (
    gaussian_blur,
    gradient_ascent_fooling,
    mean_plus_noise,
    progress_step_size,
)
from foolingjax.attacks.gradient import bim, fgsm, pgd, project
from foolingjax.attacks.lbfgs import LbfgsInfo, lbfgs_attack, make_objective
from foolingjax.attacks.square import SquareInfo, square

__all__ = [
    "ApgdInfo", "AutoAttackResult", "CarliniWagnerInfo", "DeepFoolInfo", "FmnInfo",
    "LbfgsInfo", "SquareInfo", "apgd", "auto_attack", "bim", "carlini_wagner_l2",
    "deepfool", "dlr_loss", "dlr_targeted_loss", "fgsm", "fmn", "gaussian_blur",
    "gradient_ascent_fooling", "lbfgs_attack", "losses", "make_objective",
    "mean_plus_noise", "metrics", "progress_step_size",
    "pgd", "project", "square",
]
