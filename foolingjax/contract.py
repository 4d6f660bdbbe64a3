"""The classifier contract: ``apply_fn(params, x) -> logits``.

Every attack, evolution and visualisation routine in foolingjax takes a pair
``(apply_fn, params)``: ``x`` is float32 ``[B, H, W, C]`` with pixels in [0, 1]
and the result is ``[B, K]`` logits. Normalisation lives inside ``apply_fn`` so
that the algorithms work in pixel space.

:class:`ApplyFn` is the callable the zoo and the adapters return. It checks the
input's rank, shape and dtype when it is traced (free under ``jit``: shapes are
static) so that a uint8 image or a missing batch axis fails with one clear
message instead of a silently wrong answer. It hashes by identity, so keep one
instance per model and pass it as a static argument or close over it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Params = Any


def check_images(x, *, expected_hwc: tuple[int, int, int] | None = None, who: str = "apply_fn"):
  """Raises one clear error unless ``x`` is a float ``[B, H, W, C]`` batch.

  Args:
    x: array-like to check (numpy, jax or tracer).
    expected_hwc: optional required ``(H, W, C)``; ``None`` entries are free.
    who: name used in the error message.

  Returns:
    ``x`` as a float32 jax array.
  """
  shape = tuple(np.shape(x))
  dtype = np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype
  want = "float32 images [B, H, W, C] with pixels in [0, 1]"
  if expected_hwc is not None:
    want = "float32 images [B, {}, {}, {}] with pixels in [0, 1]".format(
        *(d if d is not None else "?" for d in expected_hwc))
  if not (jnp.issubdtype(dtype, jnp.floating)):
    raise TypeError(
        f"{who} expects {want}; got dtype {dtype} with shape {shape}. "
        "Fix: convert uint8 pixels with x.astype(np.float32) / 255.")
  if len(shape) != 4:
    raise ValueError(f"{who} expects {want}; got an array of shape {shape}."
                     + _rank_hint(shape, expected_hwc))
  if expected_hwc is not None:
    for got, exp in zip(shape[1:], expected_hwc):
      if exp is not None and got != exp:
        raise ValueError(
            f"{who} expects {want}; got shape {shape}. Fix: resize the images "
            "or build the model for this input shape.")
  return jnp.asarray(x, jnp.float32)


def _rank_hint(shape: tuple, expected_hwc) -> str:
  """Which axis a 2-D, 3-D or 5-D array most likely lacks or has too many of."""
  batch = " Fix: add the batch axis with x[None]."
  channel = " Fix: add the channel axis with x[..., None]."
  if len(shape) == 2:
    return " Fix: add the batch and channel axes with x[None, ..., None]."
  if len(shape) == 5 and shape[0] == 1:
    return " Fix: drop the extra leading axis with x[0]."
  if len(shape) != 3:
    return ""
  if expected_hwc is not None:
    if all(e is None or s == e for s, e in zip(shape, expected_hwc)):
      return batch
    if all(e is None or s == e for s, e in zip(shape[1:], expected_hwc[:2])):
      return channel
  if shape[-1] in (1, 3, 4) and shape[0] != 1:
    return batch + " (If it is a batch of single-channel images, add the channel " \
        "axis with x[..., None] instead.)"
  return channel + " (If it is one image, add the batch axis with x[None] instead.)"


@dataclasses.dataclass(frozen=True, eq=False)
class ApplyFn:
  """``apply_fn(params, x) -> logits`` for a flax linen module.

  Attributes:
    module: the linen module; its ``__call__`` (or ``method``) maps images in
      [0, 1] to logits.
    input_shape: ``(H, W, C)`` the module was built for (``None`` = any).
    num_classes: K, the number of logits.
    extra_variables: non-``params`` collections (e.g. ``batch_stats``) closed
      over, as a dict; applied in inference mode.
    method: optional name of the module method to call.
    name: human readable name for messages.
  """

  module: Any
  input_shape: tuple[int | None, int | None, int | None] | None
  num_classes: int
  extra_variables: dict = dataclasses.field(default_factory=dict)
  method: str | None = None
  name: str = "apply_fn"
  apply_kwargs: dict = dataclasses.field(default_factory=dict)

  def __call__(self, params: Params, x: jax.Array) -> jax.Array:
    x = check_images(x, expected_hwc=self.input_shape, who=self.name)
    variables = {"params": params, **self.extra_variables}
    kwargs = dict(self.apply_kwargs)
    if self.method is not None:
      kwargs["method"] = self.method
    return self.module.apply(variables, x, **kwargs)


class Classifier(NamedTuple):
  """A trained classifier: unpacks as ``apply_fn, params = classifier``."""

  apply_fn: Callable[[Params, jax.Array], jax.Array]
  params: Params


def num_classes_of(apply_fn, params, input_shape=None) -> int:
  """K of a classifier, from its metadata or one abstract evaluation."""
  k = getattr(apply_fn, "num_classes", None)
  if k is not None:
    return int(k)
  if input_shape is None:
    input_shape = getattr(apply_fn, "input_shape", None)
  if input_shape is None or any(d is None for d in input_shape):
    raise ValueError(
        "Cannot infer the number of classes of this apply_fn; pass input_shape.")
  out = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  return int(out.shape[-1])
