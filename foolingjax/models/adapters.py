"""Adapters from a user's flax model to the ``(apply_fn, params)`` contract.

Linen: ``from_linen(module, variables)`` keeps ``variables["params"]`` as the
differentiable ``params`` and closes over every other collection (e.g.
``batch_stats``), applied in inference mode.

NNX: ``from_nnx(model)`` splits the model into its graph definition, its
``nnx.Param`` state (the ``params``) and the rest (closed over).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from foolingjax.contract import ApplyFn, Classifier, check_images


def from_linen(module, variables: dict, *, input_shape=None, num_classes: int | None = None,
               method: str | None = None, name: str | None = None,
               **apply_kwargs) -> Classifier:
  """Wraps a linen module whose call maps [0, 1] images to logits.

  Args:
    module: a ``flax.linen.Module``.
    variables: the output of ``module.init`` (or a trained copy); must hold
      ``"params"``.
    input_shape: ``(H, W, C)`` to check inputs against; ``None`` accepts any.
    num_classes: K; inferred by one abstract evaluation when ``input_shape``
      is given.
    method: module method to call instead of ``__call__``.
    name: used in error messages.
    **apply_kwargs: fixed keyword arguments, e.g. ``train=False``.

  Returns:
    ``Classifier(apply_fn, params)``.
  """
  if "params" not in variables:
    raise ValueError(
        "from_linen needs the full variables dict from module.init (with a "
        f"'params' entry); got keys {sorted(variables)}.")
  params = variables["params"]
  extra = {k: v for k, v in variables.items() if k != "params"}
  apply_fn = ApplyFn(module=module, input_shape=tuple(input_shape) if input_shape else None,
                     num_classes=-1, extra_variables=extra, method=method,
                     name=name or type(module).__name__, apply_kwargs=apply_kwargs)
  if num_classes is None and input_shape is not None:
    out = jax.eval_shape(apply_fn, params,
                         jax.ShapeDtypeStruct((1, *input_shape), jax.numpy.float32))
    num_classes = int(out.shape[-1])
  apply_fn = dataclasses.replace(apply_fn, num_classes=num_classes)
  return Classifier(apply_fn, params)


@dataclasses.dataclass(frozen=True, eq=False)
class NNXApplyFn:
  """``apply_fn(params, x)`` for an NNX model split into graph and state."""

  graphdef: Any
  rest: Any
  input_shape: tuple | None
  num_classes: int | None
  name: str = "nnx model"

  def __call__(self, params, x):
    from flax import nnx

    x = check_images(x, expected_hwc=self.input_shape, who=self.name)
    model = nnx.merge(self.graphdef, params, self.rest)
    return model(x)


def from_nnx(model, *, input_shape=None, num_classes: int | None = None,
             name: str | None = None) -> Classifier:
  """Wraps an ``nnx.Module`` whose call maps [0, 1] images to logits.

  The model must be in inference mode (``model.eval()``) if it has dropout
  or batch norm; one in training mode is refused with that fix. Its ``nnx.Param`` variables become ``params``; everything else
  (batch statistics, RNG counters) is closed over, unchanged between calls.
  """
  from flax import nnx

  training = [
      "/".join(map(str, path)) or type(model).__name__
      for path, sub in nnx.iter_graph(model) if isinstance(sub, nnx.Module)
      and (getattr(sub, "deterministic", None) is False
           or getattr(sub, "use_running_average", None) is False)]
  if training:
    raise ValueError(
        f"from_nnx: {type(model).__name__} is in training mode (dropout or batch "
        f"statistics active in {', '.join(training[:4])}), so its outputs would be random "
        "or change its state at every call. Fix: call model.eval() before from_nnx.")
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  apply_fn = NNXApplyFn(graphdef=graphdef, rest=rest,
                        input_shape=tuple(input_shape) if input_shape else None,
                        num_classes=num_classes, name=name or type(model).__name__)
  if num_classes is None and input_shape is not None:
    out = jax.eval_shape(apply_fn, params,
                         jax.ShapeDtypeStruct((1, *input_shape), jax.numpy.float32))
    apply_fn = dataclasses.replace(apply_fn, num_classes=int(out.shape[-1]))
  return Classifier(apply_fn, params)
