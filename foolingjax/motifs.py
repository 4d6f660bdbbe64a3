"""Repeated motifs of an image, and their progressive removal (repetition ablation).

A motif is a connected component of the image's foreground; a component is a
*repeat* when its shape (its binary mask moved to the top-left corner of its
bounding box) has an intersection over union of at least ``iou_threshold``
with a component that comes earlier in raster order (the first copy of every
motif is never a repeat). Removing a copy paints its pixels with the
background colour. Nguyen et al. (2015, Fig. 10) ablate the repeats of
CPPN-evolved fooling images this way.

The foreground is the minority side of a threshold halfway between the image's
darkest and brightest grey level, so dark motifs on a bright field are found
as well as bright ones on a dark field. Pure; jitted by callers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

@struct.dataclass
class Motifs:
  """The connected components of one image's foreground.

  Attributes:
    component: int32 ``[H, W]``, the component index of each pixel in
      ``[0, max_components)``, or -1 for background (and for components beyond
      the capacity, which are then ignored).
    valid: bool ``[M]``, slot m holds a component.
    area: int32 ``[M]`` pixels per component.
    repeat: bool ``[M]``, the component repeats the shape of an earlier one.
    background: float32 ``[C]``, the median background colour (what a removed
      copy is painted with).
  """

  component: jax.Array
  valid: jax.Array
  area: jax.Array
  repeat: jax.Array
  background: jax.Array

  @property
  def num_repeats(self) -> jax.Array:
    return jnp.sum(self.repeat)


def foreground_mask(image: jax.Array) -> jax.Array:
  """Bool ``[H, W]``: the minority side of the mid-grey threshold of ``image`` ``[H, W, C]``."""
  grey = jnp.mean(image, axis=-1)
  mid = 0.5 * (jnp.min(grey) + jnp.max(grey))
  bright = grey > mid
  # A flat image has no foreground.
  flat = jnp.max(grey) - jnp.min(grey) < 1e-6
  fg = jnp.where(jnp.sum(bright) * 2 <= bright.size, bright, ~bright)
  return fg & ~flat


def connected_components(mask: jax.Array) -> jax.Array:
  """4-connected components of a bool ``[H, W]`` mask by min-label propagation.

  Returns:
    int32 ``[H, W]``: each foreground pixel holds the raster index of its
    component's first pixel; background pixels hold ``H * W``.
  """
  height, width = mask.shape
  none = height * width
  start = jnp.where(mask, jnp.arange(none, dtype=jnp.int32).reshape(height, width), none)

  def sweep(labels):
    padded = jnp.pad(labels, 1, constant_values=none)
    neighbours = jnp.minimum(
        jnp.minimum(padded[:-2, 1:-1], padded[2:, 1:-1]),
        jnp.minimum(padded[1:-1, :-2], padded[1:-1, 2:]))
    return jnp.where(mask, jnp.minimum(labels, neighbours), none)

  def body(carry):
    labels, _ = carry
    new = sweep(labels)
    return new, jnp.any(new != labels)

  labels, _ = jax.lax.while_loop(lambda c: c[1], body, (start, jnp.array(True)))
  return labels


def _aligned_mask(component: jax.Array, m: jax.Array) -> jax.Array:
  """Component m's mask shifted so its bounding box starts at (0, 0)."""
  mask = component == m
  rows = jnp.any(mask, axis=1)
  cols = jnp.any(mask, axis=0)
  top = jnp.argmax(rows)
  left = jnp.argmax(cols)
  # The component lies at rows >= top and columns >= left: rolling back never wraps it.
  return jnp.roll(mask, (-top, -left), axis=(0, 1))


def find_motifs(image: jax.Array, *, max_components: int = 64, iou_threshold: float = 0.75,
                min_area: int = 2) -> Motifs:
  """Finds the repeated motifs of one image (see the module docstring).

  Args:
    image: float ``[H, W, C]`` in [0, 1].
    max_components: component capacity M; further components are ignored.
    iou_threshold: shape IoU above which two components are copies of one motif.
    min_area: components smaller than this (in pixels) never count as repeats.

  Returns:
    The image's :class:`Motifs`.
  """
  if image.ndim != 3:
    raise ValueError(f"find_motifs takes one [H, W, C] image; got shape {image.shape}. "
                     "Fix: jax.vmap it over a batch.")
  height, width, _ = image.shape
  none = height * width
  fg = foreground_mask(image)
  roots = connected_components(fg)
  firsts = jnp.unique(roots.ravel(), size=max_components + 1, fill_value=none)[:max_components]
  valid = firsts < none
  index = jnp.searchsorted(firsts, roots)
  index = jnp.minimum(index, max_components - 1)
  component = jnp.where(fg & (firsts[index] == roots), index, -1)
  area = jax.ops.segment_sum(jnp.ones(none, jnp.int32), jnp.where(
      component.ravel() >= 0, component.ravel(), max_components), num_segments=max_components + 1)
  area = area[:max_components]
  masks = jax.vmap(_aligned_mask, in_axes=(None, 0))(
      component, jnp.arange(max_components)).astype(jnp.float32)
  flat = masks.reshape(max_components, -1)
  inter = flat @ flat.T
  union = area[:, None] + area[None, :] - inter
  iou = inter / jnp.maximum(union, 1.0)
  big = valid & (area >= min_area)
  earlier = jnp.tril(jnp.ones((max_components, max_components), bool), k=-1)
  similar = (iou >= iou_threshold) & big[:, None] & big[None, :] & earlier
  repeat = jnp.any(similar, axis=1)
  background = jnp.nanmedian(
      jnp.where(fg[..., None], jnp.nan, image).reshape(-1, image.shape[-1]), axis=0)
  background = jnp.where(jnp.isnan(background), jnp.median(image, axis=(0, 1)), background)
  return Motifs(component=component, valid=valid, area=area, repeat=repeat,
                background=background)


def remove_components(image: jax.Array, motifs: Motifs, remove: jax.Array) -> jax.Array:
  """Paints the components flagged in ``remove`` (bool ``[M]``) with the background.

  Args:
    image: float ``[H, W, C]``.
    motifs: the image's :class:`Motifs`.
    remove: bool ``[M]``.

  Returns:
    The ablated ``[H, W, C]`` image.
  """
  hit = (motifs.component >= 0) & remove[jnp.maximum(motifs.component, 0)]
  return jnp.where(hit[..., None], motifs.background, image)


def progressive_ablation(key: jax.Array, image: jax.Array, motifs: Motifs, *,
                         steps: int) -> tuple[jax.Array, jax.Array]:
  """Removes the repeats of ``image`` progressively, in a random order.

  Step s (0..steps) removes ``round(s / steps * R)`` of the image's R repeats,
  so step 0 is the original and step ``steps`` keeps exactly one copy of every
  motif. Each step removes a superset of the previous step's copies.

  Args:
    key: PRNG key for the removal order.
    image: float ``[H, W, C]``.
    motifs: ``find_motifs(image)``.
    steps: number of removal steps (a Python int >= 1).

  Returns:
    ``(images, removed)``: ``[steps + 1, H, W, C]`` ablated images and int32
    ``[steps + 1]`` copies removed at each step.
  """
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a Python int >= 1; got {steps!r}.")
  total = motifs.num_repeats
  removed = jnp.round(jnp.arange(steps + 1) / steps * total).astype(jnp.int32)
  masks = _removal_masks(key, motifs, removed)
  images = jax.vmap(remove_components, in_axes=(None, None, 0))(image, motifs, masks)
  return images, removed


def _removal_masks(key: jax.Array, motifs: Motifs, removed: jax.Array) -> jax.Array:
  """Bool ``[S, M]``: the ``removed[s]`` repeats first in ``key``'s random order."""
  priority = jnp.where(motifs.repeat, jax.random.uniform(key, motifs.repeat.shape), jnp.inf)
  rank = jnp.argsort(jnp.argsort(priority))
  return motifs.repeat[None, :] & (rank[None, :] < removed[:, None])


def removed_area(motifs: Motifs, removed: jax.Array, key: jax.Array) -> jax.Array:
  """Pixels removed at each step of :func:`progressive_ablation` (same key): int32 ``[S]``."""
  masks = _removal_masks(key, motifs, removed)
  return jnp.sum(jnp.where(masks, motifs.area[None, :], 0), axis=1).astype(jnp.int32)


def area_matched_control(key: jax.Array, image: jax.Array, motifs: Motifs,
                         areas: jax.Array, *, smoothness: float = 1.5
                         ) -> tuple[jax.Array, jax.Array]:
  """The ablation's control: remove the same area of *non-repeated* foreground.

  At each step it paints, with the background colour, ``areas[s]`` pixels of
  the foreground that belongs to no repeat (the first copy of each motif and
  the motifs that never repeat). Which pixels: those of highest priority under
  a smoothed random field, so the removed area comes in blobs rather than
  scattered pixels, and each step removes a superset of the previous one.
  Where less non-repeated foreground exists than ``areas[s]``, all of it goes
  (the returned areas say how much was removed).

  Args:
    key: PRNG key of the random field.
    image: float ``[H, W, C]``.
    motifs: ``find_motifs(image)``.
    areas: int ``[S]`` pixels to remove per step (:func:`removed_area`).
    smoothness: blur sigma (pixels) of the random field.

  Returns:
    ``(images [S, H, W, C], removed_area [S])``.
  """
  from foolingjax.images import gaussian_blur
  in_repeat = (motifs.component >= 0) & motifs.repeat[jnp.maximum(motifs.component, 0)]
  fg = motifs.component >= 0
  eligible = fg & ~in_repeat
  field = gaussian_blur(jax.random.uniform(key, image.shape[:2] + (1,)), sigma=smoothness)[..., 0]
  priority = jnp.where(eligible, -field, jnp.inf).ravel()
  rank = jnp.argsort(jnp.argsort(priority)).reshape(image.shape[:2])
  hits = eligible[None] & (rank[None] < areas[:, None, None])           # [S, H, W]
  images = jnp.where(hits[..., None], motifs.background, image[None])
  return images, jnp.sum(hits, axis=(1, 2)).astype(jnp.int32)


def make_ablation_fn(*, apply_fn, steps: int, max_components: int = 64,
                     iou_threshold: float = 0.75, min_area: int = 2,
                     return_images: bool = True):
  """``ablate(key, params, images [N,H,W,C], targets [N]) -> dict`` (jit it).

  ``key`` is one PRNG key, split into one key per image, or ``[N]`` keys, one
  per image: calling the function on chunks of ``jax.random.split(key, N)``
  gives the same results as one call on all N images.

  The dict holds ``removed`` and ``repeats`` (``[N, steps + 1]`` and ``[N]``
  copies), ``components`` ``[N]``, ``confidence`` ``[N, steps + 1]`` (the
  target's softmax probability after each removal step) and ``top1`` (the
  classifier's label after each step); ``removed_area`` ``[N, steps + 1]``
  pixels removed; and the control (:func:`area_matched_control`):
  ``control_area`` (equal to ``removed_area`` wherever enough non-repeated
  foreground exists), ``control_confidence`` and ``control_top1``. With
  ``return_images`` also ``images`` and ``control_images`` ``[N, steps + 1,
  H, W, C]`` (leave them out for large images: they are steps + 1 copies of
  the input, twice).
  """

  def scored(params, ablated, targets):
    n, s = ablated.shape[:2]
    logits = apply_fn(params, ablated.reshape(n * s, *ablated.shape[2:])).reshape(n, s, -1)
    probs = jax.nn.softmax(logits, -1)
    return (jnp.take_along_axis(probs, targets[:, None, None], axis=2)[..., 0],
            jnp.argmax(logits, -1).astype(jnp.int32))

  def ablate(key, params, images, targets):
    motifs = jax.vmap(lambda x: find_motifs(x, max_components=max_components,
                                            iou_threshold=iou_threshold,
                                            min_area=min_area))(images)
    keys = key if key.ndim == 1 else jax.random.split(key, images.shape[0])
    ablated, removed = jax.vmap(
        lambda k, x, m: progressive_ablation(k, x, m, steps=steps))(keys, images, motifs)
    areas = jax.vmap(removed_area)(motifs, removed, keys)
    control_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    control, control_area = jax.vmap(area_matched_control)(control_keys, images, motifs, areas)
    confidence, top1 = scored(params, ablated, targets)
    control_confidence, control_top1 = scored(params, control, targets)
    out = {"removed": removed, "repeats": jnp.sum(motifs.repeat, 1),
           "components": jnp.sum(motifs.valid, 1), "confidence": confidence, "top1": top1,
           "removed_area": areas, "control_area": control_area,
           "control_confidence": control_confidence, "control_top1": control_top1}
    if return_images:
      out.update(images=ablated, control_images=control)
    return out

  return ablate
