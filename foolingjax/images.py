"""Colour conversions and Gaussian blur (pure jnp), and labelled image grids saved as PNG."""

from __future__ import annotations

import math
import os
import pathlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def hsv_to_rgb(hsv: jnp.ndarray) -> jnp.ndarray:
  """HSV in [0, 1]^3 (last axis) -> RGB in [0, 1]^3."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  # The standard piecewise formula, written with one smooth expression per channel.
  def f(n):
    k = jnp.mod(n + h * 6.0, 6.0)
    return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
  return jnp.stack([f(5.0), f(3.0), f(1.0)], axis=-1)


def hls_to_rgb(hls: jnp.ndarray) -> jnp.ndarray:
  """HLS in [0, 1]^3 (last axis; hue, lightness, saturation) -> RGB in [0, 1]^3.

  Matches :func:`colorsys.hls_to_rgb` (hue 1.0 is a full turn). The fooling
  paper's code went through OpenCV's 8-bit conversion instead: see
  :func:`hls_opencv_to_rgb`.
  """
  h, l, s = hls[..., 0], hls[..., 1], hls[..., 2]
  a = s * jnp.minimum(l, 1.0 - l)
  def f(n):
    k = jnp.mod(n + h * 12.0, 12.0)
    return l - a * jnp.clip(jnp.minimum(k - 3.0, 9.0 - k), -1.0, 1.0)
  return jnp.stack([f(0.0), f(8.0), f(4.0)], axis=-1)


def quantize_uint8(x: jnp.ndarray) -> jnp.ndarray:
  """``floor(v * 255) / 255``: the value the original's ``int(v * 255)`` byte stands for.

  The fooling paper's code wrote each gene or CPPN output into an 8-bit
  ``cv::Mat`` with ``int color = value * 255`` (truncation), so its networks saw
  256 levels per channel, not floats. Values are clipped to [0, 1] first.
  """
  return jnp.floor(jnp.clip(x, 0.0, 1.0) * 255.0) / 255.0


def hls_opencv_to_rgb(hls: jnp.ndarray) -> jnp.ndarray:
  """HLS as the fooling paper's code stored and converted it -> RGB in [0, 1]^3.

  Each channel ``v`` in [0, 1] becomes the byte ``int(v * 255)`` (as
  ``phen_image_direct.hpp`` and ``phen_color_image.hpp`` write it), and
  OpenCV's 8-bit ``CV_HLS2BGR`` reads the hue byte on its 0-180 scale: hue
  ``2 * byte`` degrees, wrapped modulo 360. A hue gene of 1.0 is therefore
  510 degrees = 150 degrees, and hues 0-150 degrees are twice as likely as
  the rest under a uniform gene. Lightness and saturation are ``byte / 255``;
  the result is rounded to bytes, as OpenCV's 8-bit output is.
  """
  byte = jnp.floor(jnp.clip(hls, 0.0, 1.0) * 255.0)
  hue = jnp.mod(2.0 * byte[..., 0], 360.0) / 360.0
  rgb = hls_to_rgb(jnp.stack([hue, byte[..., 1] / 255.0, byte[..., 2] / 255.0], axis=-1))
  return jnp.round(jnp.clip(rgb, 0.0, 1.0) * 255.0) / 255.0


def neighbour_difference(x: jnp.ndarray) -> jnp.ndarray:
  """Mean absolute difference between 4-neighbouring pixels: ``[..., H, W, C] -> [...]``.

  0 for a flat image, about 1/3 for uniform noise in [0, 1]; a measure of
  (ir)regularity for evolved images (the paper contrasts the direct
  encoding's noise with the CPPN's smooth patterns).
  """
  dy = jnp.abs(x[..., 1:, :, :] - x[..., :-1, :, :])
  dx = jnp.abs(x[..., :, 1:, :] - x[..., :, :-1, :])
  pairs = math.prod(dy.shape[-3:]) + math.prod(dx.shape[-3:])
  return (jnp.sum(dy, axis=(-3, -2, -1)) + jnp.sum(dx, axis=(-3, -2, -1))) / pairs


def mirror_asymmetry(x: jnp.ndarray) -> jnp.ndarray:
  """Mean ``|x - fliplr(x)|``: ``[..., H, W, C] -> [...]``; 0 for a left-right symmetric image."""
  return jnp.mean(jnp.abs(x - x[..., :, ::-1, :]), axis=(-3, -2, -1))


def gaussian_kernel(sigma: float) -> jax.Array:
  """Normalised 1-D Gaussian of radius ``ceil(3 sigma)``: ``[2r + 1]``."""
  radius = max(1, math.ceil(3.0 * sigma))
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * jnp.square(offsets / sigma))
  return weights / jnp.sum(weights)


def gaussian_blur(x: jax.Array, *, sigma: float) -> jax.Array:
  """Separable Gaussian blur of each channel, edges padded by replication.

  Used by the regularised gradient ascent of both the fooling images
  (:func:`foolingjax.attacks.gradient_ascent_fooling`) and the class and
  neuron visualisations (:mod:`foolingjax.visualize`).

  Args:
    x: ``[..., H, W, C]``: one image or any batch of them.
    sigma: standard deviation in pixels (static).

  Returns:
    The same shape; a constant image is left unchanged.
  """
  if x.ndim < 3:
    raise ValueError(f"gaussian_blur expects [..., H, W, C] images; got shape {x.shape}.")
  kernel = gaussian_kernel(sigma)
  radius = (kernel.shape[0] - 1) // 2
  shape = x.shape
  channels = shape[-1]
  y = x.reshape((-1, *shape[-3:]))

  def blur_axis(y, axis):
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    y = jnp.pad(y, pad, mode="edge")
    taps = [1, 1, 1, channels]
    taps[axis - 1] = kernel.shape[0]
    weights = jnp.broadcast_to(kernel.reshape([-1 if i == axis - 1 else 1
                                               for i in range(4)]), taps)
    return jax.lax.conv_general_dilated(
        y, weights.astype(y.dtype), window_strides=(1, 1), padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)

  return blur_axis(blur_axis(y, 1), 2).reshape(shape)


def to_uint8(images) -> np.ndarray:
  """Float images in [0, 1] -> uint8, clipping out-of-range values."""
  return np.asarray(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0 + 0.5,
                    np.uint8)


def save_grid(path: str | os.PathLike, images, *, titles: Sequence[str] | None = None,
              labels: Sequence | None = None, confidences: Sequence[float] | None = None,
              ncols: int | None = None, title: str | None = None, scale: float = 1.6,
              overwrite: bool = True) -> pathlib.Path:
  """Saves a grid of images, each captioned with its class and confidence.

  Args:
    path: PNG destination (parent directories are created).
    images: float ``[N, H, W, C]`` in [0, 1] (C = 1 or 3) or uint8.
    titles: captions; built from ``labels`` and ``confidences`` when omitted.
    labels: class names or ids, one per image.
    confidences: probabilities in [0, 1], one per image, shown as percentages.
    ncols: columns (default: up to 10).
    title: figure title.
    scale: inches per tile.
    overwrite: if False, refuse to replace an existing file.

  Returns:
    The path written.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  path = pathlib.Path(path)
  if not overwrite and path.exists():
    raise FileExistsError(f"{path} exists; refusing to overwrite it. Fix: choose another path.")
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"save_grid expects [N, H, W, 1 or 3] images; got {images.shape}.")
  if images.dtype != np.uint8:
    images = to_uint8(images)
  n = images.shape[0]
  if titles is None:
    titles = []
    for i in range(n):
      parts = []
      if labels is not None:
        parts.append(str(labels[i]))
      if confidences is not None:
        parts.append(format_confidence(float(confidences[i])))
      titles.append("\n".join(parts))
  ncols = ncols or min(n, 10)
  nrows = -(-n // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.4),
                           squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i < n:
      img = images[i]
      if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
      else:
        ax.imshow(img, interpolation="nearest")
      if titles[i]:
        ax.set_title(titles[i], fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp.png")
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)
  return path


def format_confidence(p: float) -> str:
  # Truncate, never round up: a float32 softmax of 0.99999988 is not "100%".
  if p >= 0.9999:
    return f"{np.floor(p * 1e6) / 1e4:.4f}%"
  return f"{np.floor(p * 1e4) / 1e2:.2f}%"
