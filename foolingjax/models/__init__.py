"""Model zoo: flax linen classifiers behind the ``apply_fn(params, x)`` contract.

>>> apply_fn, params = models.init("lenet", jax.random.key(0))
>>> logits = apply_fn(params, images)        # images: float32 [B, 28, 28, 1]

Trained weights come from :func:`foolingjax.zoo.load_classifier`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from foolingjax.contract import ApplyFn, Classifier
from foolingjax.models.adapters import from_linen, from_nnx
from foolingjax.models.small import MLP, AlexNetSmall, AutoencoderClassifier, LeNet

_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "lenet": lambda k: LeNet(num_classes=k),
    "fc10": lambda k: MLP(hidden=(), num_classes=k),
    "fc100_100_10": lambda k: MLP(hidden=(100, 100), num_classes=k),
    "fc200_200_10": lambda k: MLP(hidden=(200, 200), num_classes=k),
    "fc123_456_10": lambda k: MLP(hidden=(123, 456), num_classes=k),
    # Szegedy et al.'s hidden layers are sigmoid; the nets above use ReLU.
    "fc100_100_10_sigmoid": lambda k: MLP(hidden=(100, 100), num_classes=k,
                                          activation="sigmoid"),
    "fc200_200_10_sigmoid": lambda k: MLP(hidden=(200, 200), num_classes=k,
                                          activation="sigmoid"),
    "ae400_10": lambda k: AutoencoderClassifier(code_size=400, num_classes=k),
    "alexnet_small": lambda k: AlexNetSmall(num_classes=k),
}

ARCHITECTURES = tuple(_FACTORIES)


def register(name: str, factory: Callable[[int], nn.Module]) -> None:
  """Adds an architecture: ``factory(num_classes) -> linen Module``."""
  _FACTORIES[name] = factory


def create(name: str, *, num_classes: int = 10) -> nn.Module:
  """The linen module of a zoo architecture."""
  if name not in _FACTORIES:
    raise ValueError(
        f"Unknown model {name!r}. Known models: {', '.join(sorted(_FACTORIES))}. "
        "Fix: pick one of these, or register your own with "
        "foolingjax.models.register(name, factory).")
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
  return _FACTORIES[name](num_classes)


def init(name: str, key: jax.Array, *, input_shape=(28, 28, 1),
         num_classes: int = 10) -> Classifier:
  """A freshly initialised zoo classifier as ``(apply_fn, params)``."""
  module = create(name, num_classes=num_classes)
  variables = module.init(key, jnp.zeros((1, *input_shape), jnp.float32))
  apply_fn = ApplyFn(module=module, input_shape=tuple(input_shape),
                     num_classes=num_classes, name=name)
  return Classifier(apply_fn, variables["params"])


def feature_fn(apply_fn: ApplyFn) -> Callable[[Any, jax.Array], dict[str, jax.Array]]:
  """``features(params, x) -> {layer name: activation}`` for a zoo model."""
  if not isinstance(apply_fn, ApplyFn) or not hasattr(apply_fn.module, "features"):
    raise ValueError(
        "feature_fn needs a zoo model (an ApplyFn whose module has .features). "
        "Fix: for your own model, write features(params, x) yourself.")
  features_apply = ApplyFn(module=apply_fn.module, input_shape=apply_fn.input_shape,
                           num_classes=apply_fn.num_classes,
                           extra_variables=apply_fn.extra_variables,
                           method="features", name=apply_fn.name)
  return features_apply


def param_count(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


__all__ = [
    "ARCHITECTURES", "AlexNetSmall", "AutoencoderClassifier", "LeNet", "MLP",
    "create", "feature_fn", "from_linen", "from_nnx", "init", "param_count",
    "register",
]
