"""Model zoo: flax linen classifiers behind the ``apply_fn(params, x)`` contract.

>>> apply_fn, params = models.init("lenet", jax.random.key(0))
>>> logits = apply_fn(params, images)        # images: float32 [B, 28, 28, 1]
>>> models.spec("fc100_100_10").display_name
'FC100-100-10'

Each architecture is one :class:`ArchSpec` (factory, default input shape,
feature layers, Lipschitz layer description, receptive fields, display name),
declared and registered next to its module in ``small.py``,
``efficientnet.py`` or ``alexnet.py``; :func:`register` adds your own.
Trained weights come from :func:`foolingjax.zoo.load_classifier`.
"""

from __future__ import annotations

from typing import Any

import jax

from foolingjax.models import alexnet, description, efficientnet, small
from foolingjax.models.adapters import from_linen, from_nnx
from foolingjax.models.registry import (
    ArchSpec,
    create,
    feature_fn,
    init,
    names,
    register,
    spec,
    spec_of,
    unregister,
)
from foolingjax.models.small import MLP, AlexNetSmall, AutoencoderClassifier, LeNet

# The built-in architectures (a snapshot: see names() for those registered later).
ARCHITECTURES = names()


def param_count(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


__all__ = [
  "ARCHITECTURES",
  "MLP",
  "AlexNetSmall",
  "ArchSpec",
  "AutoencoderClassifier",
  "LeNet",
  "alexnet",
  "create",
  "description",
  "efficientnet",
  "feature_fn",
  "from_linen",
  "from_nnx",
  "init",
  "names",
  "param_count",
  "register",
  "small",
  "spec",
  "spec_of",
  "unregister",
]
