"""One :class:`ArchSpec` per architecture: everything the library knows about it.

A model file declares its specs next to its module and registers them, e.g.
``small.py``::

    registry.register(registry.ArchSpec(
        name="lenet", display_name="LeNet", factory=lambda k: LeNet(num_classes=k),
        feature_layers=("conv1", "pool1", "conv2", "pool2", "ip1", "logits"),
        lipschitz_layers=lambda module: lenet_lipschitz_layers(),
        receptive_fields={"conv1": ((5, 1, 0),), ...}))

:func:`create`, :func:`init` and :func:`feature_fn` build the network,
:mod:`foolingjax.lipschitz` reads ``lipschitz_layers`` and
:mod:`foolingjax.visualize` reads ``receptive_fields``; tables print
``display_name``. Adding an architecture is one spec in one file.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from foolingjax.contract import ApplyFn, Classifier
from foolingjax.models import description

Chain = tuple[tuple[int, int, int], ...]


@dataclasses.dataclass(frozen=True, eq=False)
class ArchSpec:
  """What foolingjax knows about one architecture.

  Attributes:
    name: registry key (``"lenet"``); :func:`init` names its ``ApplyFn`` so.
    factory: ``factory(num_classes) -> linen Module`` mapping float32
      ``[B, H, W, C]`` images in [0, 1] to ``[B, K]`` logits.
    display_name: human name for tables and plots (``"FC100-100-10"``);
      defaults to ``name``.
    input_shape: default ``(H, W, C)`` of :func:`init`.
    num_classes: default K of :func:`init`.
    feature_layers: keys of the module's ``features(x)`` dict, in order
      (``()`` when it has no ``features`` method).
    lipschitz_layers: ``lipschitz_layers(module) -> tuple of
      foolingjax.models.description layers`` describing the module for
      :mod:`foolingjax.lipschitz` (it reads the module's fields, e.g. an
      MLP's widths); ``None`` when there is none.
    receptive_fields: ``{feature layer: ((kernel, stride, padding_before),
      ...)}`` from the input to that spatial layer, for
      :func:`foolingjax.visualize.receptive_field`.
  """

  name: str
  factory: Callable[[int], nn.Module]
  display_name: str = ""
  input_shape: tuple[int, int, int] = (28, 28, 1)
  num_classes: int = 10
  feature_layers: tuple[str, ...] = ()
  lipschitz_layers: Callable[[nn.Module], tuple[description.Layer, ...]] | None = None
  receptive_fields: Mapping[str, Chain] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise TypeError(f"ArchSpec.name must be a non-empty string; got {self.name!r}.")
    if not callable(self.factory):
      raise TypeError(f"ArchSpec {self.name!r}: factory must be callable "
                       "factory(num_classes) -> linen Module.")
    missing = sorted(set(self.receptive_fields) - set(self.feature_layers))
    if missing:
      raise ValueError(f"ArchSpec {self.name!r}: receptive_fields name layers "
                       f"{missing} that are not in feature_layers "
                       f"{list(self.feature_layers)}.")
    freeze = object.__setattr__
    freeze(self, "display_name", self.display_name or self.name)
    freeze(self, "input_shape", tuple(self.input_shape))
    freeze(self, "feature_layers", tuple(self.feature_layers))
    chains = {layer: tuple(tuple(step) for step in chain)
              for layer, chain in self.receptive_fields.items()}
    freeze(self, "receptive_fields", types.MappingProxyType(chains))


_SPECS: dict[str, ArchSpec] = {}


def register(spec: ArchSpec | str, factory: Callable[[int], nn.Module] | None = None,
             **fields: Any) -> ArchSpec:
  """Adds (or replaces) an architecture; returns its spec.

  ``register(ArchSpec(...))``, or as before ``register(name, factory)`` with
  any other :class:`ArchSpec` field as a keyword.
  """
  if not isinstance(spec, ArchSpec):
    if factory is None:
      raise ValueError("register needs an ArchSpec, or a name and a factory: "
                       "register(name, factory) with factory(num_classes) -> Module.")
    spec = ArchSpec(name=spec, factory=factory, **fields)
  elif factory is not None or fields:
    raise ValueError(
        "register(spec) takes no other arguments; put them in the ArchSpec.")
  _SPECS[spec.name] = spec
  return spec


def unregister(name: str) -> ArchSpec:
  """Removes an architecture (e.g. a test's); returns its spec."""
  found = spec(name)
  del _SPECS[name]
  return found


def names() -> tuple[str, ...]:
  """The registered architecture names, in registration order."""
  return tuple(_SPECS)


def spec(name: str) -> ArchSpec:
  """The :class:`ArchSpec` of a registered architecture.

  Raises:
    ValueError: ``name`` is not registered (the message lists those that are).
  """
  try:
    return _SPECS[name]
  except (KeyError, TypeError):
    raise ValueError(
        f"Unknown model {name!r}. Known models: {', '.join(sorted(_SPECS))}. "
        "Fix: pick one of these, or register your own with "
        "foolingjax.models.register(ArchSpec(name, factory, ...)).") from None


def spec_of(apply_fn: Any) -> ArchSpec:
  """The spec a classifier's ``apply_fn`` was built from.

  Matches, in order: the spec named ``apply_fn.name`` if it builds the same
  module class; the spec whose ``factory(num_classes)`` equals
  ``apply_fn.module`` (e.g. ``from_linen(LeNet(), ...)``, or AlexNet read by
  :func:`foolingjax.models.alexnet.load_npz`); the first spec building the
  same module class (a variant such as ``MLP(hidden=(50,))``: its
  ``lipschitz_layers`` read the module's own fields).

  Raises:
    ValueError: ``apply_fn`` has no linen ``module``, or no spec builds its class.
  """
  module = getattr(apply_fn, "module", None)
  if isinstance(module, nn.Module):
    num_classes = getattr(module, "num_classes", getattr(apply_fn, "num_classes", 1))
    same_class = [s for s in _SPECS.values()
                  if type(s.factory(num_classes or 1)) is type(module)]
  else:
    same_class = []
  by_name = _SPECS.get(getattr(apply_fn, "name", None))
  if by_name is not None and by_name in same_class:
    return by_name
  for s in same_class:
    if s.factory(num_classes or 1) == module:
      return s
  if same_class:
    return same_class[0]
  raise ValueError(
      f"No architecture spec for {type(apply_fn).__name__} with module "
      f"{type(module).__name__}. Known models: {', '.join(sorted(_SPECS))}. Fix: "
      "build it with foolingjax.models.init, or register an ArchSpec whose factory "
      "builds that module with foolingjax.models.register.")


def create(name: str, *, num_classes: int | None = None) -> nn.Module:
  """The linen module of a registered architecture (K = the spec's default)."""
  arch = spec(name)
  num_classes = arch.num_classes if num_classes is None else num_classes
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
  return arch.factory(num_classes)


def init(name: str, key: jax.Array, *, input_shape: tuple[int, int, int] | None = None,
         num_classes: int | None = None) -> Classifier:
  """A freshly initialised classifier as ``(apply_fn, params)``.

  Args:
    name: a registered architecture.
    key: PRNG key of the initialisation.
    input_shape: ``(H, W, C)`` (default: the spec's).
    num_classes: K (default: the spec's).

  Returns:
    ``Classifier(apply_fn, params)`` with ``apply_fn.name == name``; other
    collections (e.g. ``batch_stats``) are closed over in ``apply_fn``.
  """
  arch = spec(name)
  input_shape = tuple(arch.input_shape if input_shape is None else input_shape)
  num_classes = arch.num_classes if num_classes is None else num_classes
  module = create(name, num_classes=num_classes)
  variables = module.init(key, jnp.zeros((1, *input_shape), jnp.float32))
  extra = {k: v for k, v in variables.items() if k != "params"}
  apply_fn = ApplyFn(module=module, input_shape=input_shape, num_classes=num_classes,
                     extra_variables=extra, name=name)
  return Classifier(apply_fn, variables["params"])


def feature_fn(apply_fn: ApplyFn) -> Callable[[Any, jax.Array], dict[str, jax.Array]]:
  """``features(params, x) -> {layer name: activation}`` for a zoo model."""
  if not isinstance(apply_fn, ApplyFn) or not hasattr(apply_fn.module, "features"):
    raise ValueError(
        "feature_fn needs a zoo model (an ApplyFn whose module has .features). "
        "Fix: for your own model, write features(params, x) yourself.")
  return ApplyFn(module=apply_fn.module, input_shape=apply_fn.input_shape,
                 num_classes=apply_fn.num_classes,
                 extra_variables=apply_fn.extra_variables,
                 method="features", name=apply_fn.name)


__all__ = ["ArchSpec", "create", "feature_fn", "init", "names", "register", "spec",
           "spec_of", "unregister"]
