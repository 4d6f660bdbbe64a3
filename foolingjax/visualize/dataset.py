"""What a unit responds to in real data: top patches, first-layer filters and
the activation view.

Zeiler & Fergus 2013 and Yosinski et al. 2015 show, for each unit, the dataset
images that excite it most, cropped to the unit's receptive field; Yosinski et
al.'s deepvis tool shows every channel of a layer for one image
(:func:`activation_grid`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from foolingjax import checks, models
from foolingjax.visualize import _args

Params = Any
FeaturesFn = Callable[[Params, jax.Array], Mapping[str, jax.Array]]


class ReceptiveField(NamedTuple):
  """Where unit ``(i, j)`` of a layer looks in the input.

  It covers input rows ``start + i * jump`` up to (not including) that plus
  ``size``, and the same for columns. ``start`` is negative where padding
  makes part of the field fall outside the image.
  """

  size: int
  jump: int
  start: int


def receptive_field(layers: Sequence[tuple[int, int, int]]) -> ReceptiveField:
  """Receptive field after a chain of convolutions / poolings.

  Args:
    layers: ``(kernel, stride, padding_before)`` of each layer from the input
      on (square kernels; element-wise layers can be left out).

  Returns:
    The :class:`ReceptiveField` of the last layer's units.
  """
  size, jump, start = 1, 1, 0
  for kernel, stride, pad in layers:
    start -= pad * jump
    size += (kernel - 1) * jump
    jump *= stride
  return ReceptiveField(size, jump, start)


def zoo_receptive_field(architecture: str, layer: str) -> ReceptiveField:
  """Receptive field of a spatial layer of a zoo net (``"lenet"``, ``"conv2"``).

  The chain comes from the architecture's spec
  (``foolingjax.models.spec(architecture).receptive_fields``).
  """
  try:
    chain = models.spec(architecture).receptive_fields[layer]
  except (ValueError, KeyError):
    known = {name: sorted(models.spec(name).receptive_fields) for name in models.names()
             if models.spec(name).receptive_fields}
    raise ValueError(
        f"No receptive field for {architecture!r} layer {layer!r}. Known: {known}. "
        "Fix: compute one with receptive_field(layers).") from None
  return receptive_field(chain)


@flax.struct.dataclass
class TopPatches:
  """The ``top_k`` most exciting dataset images per unit, with crops.

  Attributes:
    patches: ``[U, top_k, size, size, C]`` receptive-field crops (the whole
      image for a dense layer), zero where the field leaves the image.
    activations: ``[U, top_k]`` the unit's activation, highest first.
    image_index: ``[U, top_k]`` index into the dataset.
    position: ``[U, top_k, 2]`` ``(row, col)`` of the unit in its feature map.
  """

  patches: jax.Array
  activations: jax.Array
  image_index: jax.Array
  position: jax.Array


def max_activating_patches(features_fn: Callable[[Params, jax.Array], dict],
                           params: Params, images: jax.Array, *, layer: str,
                           units: Sequence[int], top_k: int,
                           field: ReceptiveField | None = None,
                           batch_size: int = 256) -> TopPatches:
  """For each unit, the ``top_k`` images whose best position excites it most.

  Each image counts once per unit (at its maximal position), as in Zeiler &
  Fergus's figures, so the crops come from ``top_k`` different images.

  Args:
    features_fn: ``features(params, x) -> {layer: [B, h, w, C] or [B, N]}``.
    params: its parameters.
    images: float32 ``[N, H, W, C]`` in [0, 1].
    layer: key of the feature dict.
    units: channel (or neuron) indices to report, ``U`` of them.
    top_k: images per unit.
    field: the layer's :class:`ReceptiveField`; required for a spatial layer.
    batch_size: images per forward pass (``lax.map``).

  Returns:
    :class:`TopPatches`.
  """
  who = "max_activating_patches"
  shape = _args.layer(jax.eval_shape(features_fn, params, images[:1]), layer,
                      who=who).shape
  units = jnp.asarray(units)
  _args.units(units, batch=units.shape[0], count=shape[-1], who=who,
              what=f"the {shape[-1]} channels of layer {layer!r}")

  def unit_acts(image):
    act = features_fn(params, image[None])[layer][0]
    return act[..., units]

  acts = jax.lax.map(unit_acts, images, batch_size=batch_size)  # [N, (h, w,) U]
  if acts.ndim == 2:
    values, index = jax.lax.top_k(acts.T, top_k)  # [U, k]
    patches = images[index]
    return TopPatches(patches, values, index, jnp.zeros((*index.shape, 2), jnp.int32))
  if field is None:
    raise ValueError(f"Layer {layer!r} is spatial {acts.shape[1:3]}; pass its "
                     "receptive field (field=zoo_receptive_field(...) or "
                     "receptive_field(layers)).")
  n, h, w, u = acts.shape
  flat = acts.reshape(n, h * w, u)
  best_position = jnp.argmax(flat, axis=1)  # [N, U]
  best_value = jnp.max(flat, axis=1)
  values, index = jax.lax.top_k(best_value.T, top_k)  # [U, k]
  flat_pos = jnp.take_along_axis(best_position.T, index, axis=1)
  position = jnp.stack([flat_pos // w, flat_pos % w], axis=-1).astype(jnp.int32)
  pad = field.size
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

  def crop(image_index, pos):
    corner = field.start + pos * field.jump + pad
    return jax.lax.dynamic_slice(
        padded[image_index], (corner[0], corner[1], 0),
        (field.size, field.size, images.shape[-1]))

  patches = jax.vmap(jax.vmap(crop))(index, position)
  return TopPatches(patches, values, index, position)


def filter_grid(kernel: jax.Array) -> jax.Array:
  """First-layer filters as images, zero at mid grey.

  Args:
    kernel: conv weights ``[kh, kw, C_in, C_out]`` (flax's HWIO).

  Returns:
    ``[C_out, kh, kw, C_in]`` in [0, 1]: ``0.5 + w / (2 max|w|)`` per filter, so
    the sign of every weight is visible and each filter uses the full range.
  """
  filters = jnp.moveaxis(kernel, -1, 0)
  scale = jnp.max(jnp.abs(filters), axis=(1, 2, 3), keepdims=True)
  return 0.5 + filters / (2.0 * jnp.maximum(scale, 1e-12))


def tile_channels(maps: jax.Array, *, ncols: int | None = None, pad: int = 1,
                  pad_value: float = 1.0) -> jax.Array:
  """Tiles ``K`` maps ``[B, h, w, K]`` into one grid per image.

  Args:
    maps: ``[B, h, w, K]``.
    ncols: tiles per row (default ``ceil(sqrt(K))``).
    pad: pixels between tiles.
    pad_value: value of the separating lines and of the empty tiles.

  Returns:
    ``[B, rows * (h + pad) - pad, ncols * (w + pad) - pad]``, tile ``k`` at
    row ``k // ncols``, column ``k % ncols``.
  """
  b, h, w, k = maps.shape
  ncols = ncols or math.ceil(math.sqrt(k))
  rows = -(-k // ncols)
  tiles = jnp.moveaxis(maps, -1, 1)  # [B, K, h, w]
  tiles = jnp.pad(tiles, ((0, 0), (0, rows * ncols - k), (0, pad), (0, pad)),
                  constant_values=pad_value)
  grid = tiles.reshape(b, rows, ncols, h + pad, w + pad)
  grid = jnp.transpose(grid, (0, 1, 3, 2, 4)).reshape(b, rows * (h + pad),
                                                      ncols * (w + pad))
  return grid[:, :rows * (h + pad) - pad, :ncols * (w + pad) - pad]


def activation_grid(features_fn: FeaturesFn, params: Params, x: jax.Array, *,
                    layer: str, ncols: int | None = None, pad: int = 1,
                    per_channel: bool = True) -> jax.Array:
  """Every channel's activation map of ``layer``, tiled (Yosinski et al.'s deepvis view).

  Each map is scaled to [0, 1]: by its own min and max (``per_channel``; a
  constant map is 0) or by the layer's, so tiles compare across channels.

  Args:
    features_fn: ``features(params, x) -> {layer: [B, h, w, K]}``.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    layer: a conv layer of the feature dict.
    ncols: tiles per row (default ``ceil(sqrt(K))``).
    pad: pixels of white between tiles.
    per_channel: normalise each channel alone (else the whole layer at once).

  Returns:
    ``[B, rows * (h + pad) - pad, ncols * (w + pad) - pad]`` in [0, 1].
  """
  who = "activation_grid"
  x = checks.images(x, who=who)
  act = _args.layer(features_fn(params, x), layer, who=who)
  if act.ndim != 4:
    raise ValueError(f"{who}: layer {layer!r} has shape {act.shape}; the view needs a "
                     "conv layer [B, h, w, K].")
  axes = (1, 2) if per_channel else (1, 2, 3)
  lo = jnp.min(act, axis=axes, keepdims=True)
  hi = jnp.max(act, axis=axes, keepdims=True)
  scaled = jnp.where(hi > lo, (act - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0)
  return tile_channels(scaled, ncols=ncols, pad=pad)
