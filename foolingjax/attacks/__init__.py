"""Adversarial attacks on any ``(apply_fn, params)`` classifier.

* :func:`fgsm`, :func:`bim`, :func:`pgd`: gradient-sign / normalised-gradient
  attacks in L∞ or L2, clipped to the pixel box.
* :func:`gradient_ascent_fooling`: class-score ascent from noise or an image.
* :func:`lbfgs_attack`: Szegedy et al.'s box-constrained L-BFGS attack with a
  per-image search over ``c``, driven by ``optax.lbfgs``.
* :mod:`~foolingjax.attacks.metrics`: success rate, L2 / L∞ distortion and
  Szegedy's average minimum distortion.
* :mod:`~foolingjax.attacks.losses`: per-example losses ``loss_fn(logits [K],
  label) -> []``; pass your own as ``loss_fn=``.

All functions are pure and unjitted; the caller jits once with the classifier
closed over.
"""

from foolingjax.attacks import losses, metrics
from foolingjax.attacks.fooling import gaussian_blur, gradient_ascent_fooling
from foolingjax.attacks.gradient import bim, fgsm, pgd, project
from foolingjax.attacks.lbfgs import LbfgsInfo, lbfgs_attack, make_objective

__all__ = [
    "LbfgsInfo", "bim", "fgsm", "gaussian_blur", "gradient_ascent_fooling",
    "lbfgs_attack", "losses", "make_objective", "metrics", "pgd", "project",
]
