"""Feature visualisation in a decorrelated Fourier space (lucid's parameterisation).

Pixel-space ascent on an ImageNet net fills the image with high-frequency
patterns the net likes but a person cannot read. Olah, Mordvintsev & Schubert
2017 ("Feature visualization", Distill) optimise instead the spectrum of the
image, scaled by ``1 / frequency`` so every frequency learns at the same rate
(a whitened, natural-image-like basis), with the three colour channels
decorrelated by a fixed 3x3 square root of ImageNet's colour covariance, and a
sigmoid to keep pixels in (0, 1). Every step sees the image through a random
jitter, scale and rotation ("transformation robustness"), so only patterns
that survive small shifts are rewarded.

``COLOR_CORRELATION_SVD_SQRT`` is lucid's published matrix
(``lucid/optvis/param/color.py``); the spectrum scaling and the ``/ 4`` follow
``lucid/optvis/param/spatial.py``'s ``fft_image``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from foolingjax import checks

Objective = Callable[[jax.Array], jax.Array]

COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                         [0.27, 0.00, -0.05],
                                         [0.27, -0.09, 0.03]], np.float32)
# Normalised so the largest column has norm 1 (lucid's color_correlation_normalized).
COLOR_CORRELATION = (COLOR_CORRELATION_SVD_SQRT
                     / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0)))


def spectrum_scale(height: int, width: int, *, decay_power: float = 1.0) -> jax.Array:
  """``[H, W // 2 + 1]``: ``sqrt(H W) / max(|f|, 1 / max(H, W)) ** decay_power``."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None, :]
  freqs = np.sqrt(fx * fx + fy * fy)
  scale = 1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power
  return jnp.asarray(scale * np.sqrt(height * width), jnp.float32)


def _decorrelate(default: bool | None, channels: int) -> bool:
  if default is None:
    return channels == 3
  if default and channels != 3:
    raise ValueError(f"Colour decorrelation needs 3 channels; got {channels}. Fix: "
                     "pass decorrelate=False.")
  return default


def fourier_init(key: jax.Array, batch: int, *, height: int, width: int,
                 channels: int = 3, sd: float = 0.01) -> jax.Array:
  """A random spectrum ``[B, C, H, W // 2 + 1, 2]`` (real, imaginary), lucid's init."""
  return sd * jax.random.normal(key, (batch, channels, height, width // 2 + 1, 2))


def fourier_image(spectrum: jax.Array, *, height: int, width: int,
                  decay_power: float = 1.0,
                  decorrelate: bool | None = None) -> jax.Array:
  """Images from a scaled spectrum: inverse real FFT, colour mixing, sigmoid.

  Args:
    spectrum: ``[B, C, H, W // 2 + 1, 2]`` real and imaginary parts.
    height: ``H``.
    width: ``W``.
    decay_power: exponent of the ``1 / frequency`` scaling (1: lucid's).
    decorrelate: mix channels by :data:`COLOR_CORRELATION` (default: when
      ``C == 3``).

  Returns:
    float32 ``[B, H, W, C]`` in (0, 1).
  """
  channels = spectrum.shape[1]
  scale = spectrum_scale(height, width, decay_power=decay_power)
  complex_spectrum = jax.lax.complex(spectrum[..., 0], spectrum[..., 1]) * scale[None, None]
  image = jnp.fft.irfft2(complex_spectrum, s=(height, width), axes=(-2, -1)) / 4.0
  image = jnp.moveaxis(image, 1, -1)
  if _decorrelate(decorrelate, channels):
    image = image @ jnp.asarray(COLOR_CORRELATION.T)
  return jax.nn.sigmoid(image)


def image_to_spectrum(images: jax.Array, *, decay_power: float = 1.0,
                      decorrelate: bool | None = None, eps: float = 1e-3) -> jax.Array:
  """The spectrum whose :func:`fourier_image` is ``images`` (clipped to
  ``[eps, 1 - eps]``), to start Fourier-space ascent (e.g. DeepDream) from a photo.

  Args:
    images: float32 ``[B, H, W, C]`` in [0, 1].
    decay_power: as in :func:`fourier_image`.
    decorrelate: as in :func:`fourier_image`.
    eps: clip margin (the sigmoid never reaches 0 or 1).

  Returns:
    ``[B, C, H, W // 2 + 1, 2]``.
  """
  images = checks.images(images, who="image_to_spectrum")
  _, height, width, channels = images.shape
  t = jax.scipy.special.logit(jnp.clip(images, eps, 1.0 - eps))
  if _decorrelate(decorrelate, channels):
    t = t @ jnp.asarray(np.linalg.inv(COLOR_CORRELATION.T.astype(np.float64)),
                        jnp.float32)
  spectrum = jnp.fft.rfft2(4.0 * jnp.moveaxis(t, -1, 1), axes=(-2, -1))
  spectrum = spectrum / spectrum_scale(height, width, decay_power=decay_power)[None, None]
  return jnp.stack([spectrum.real, spectrum.imag], axis=-1).astype(jnp.float32)


def random_transform(key: jax.Array, x: jax.Array, *, jitter: float = 8.0,
                     scale_range: tuple[float, float] = (0.9, 1.1),
                     max_angle: float = 10.0, fill: float = 0.5) -> jax.Array:
  """Per image: a random shift, scale and rotation about the centre (bilinear).

  Lucid's ``standard_transforms`` (pad, jitter 8, scale 0.95-1.05, rotate
  +-10 degrees, jitter 4) as one affine map; pixels from outside the image
  are ``fill``.

  Args:
    key: PRNG key (one draw per image).
    x: ``[B, H, W, C]``.
    jitter: maximum shift in pixels along each axis.
    scale_range: ``(low, high)`` zoom factor.
    max_angle: maximum rotation in degrees.
    fill: value outside the image.

  Returns:
    ``[B, H, W, C]``.
  """
  b, height, width, _ = x.shape
  k_shift, k_scale, k_angle = jax.random.split(key, 3)
  shifts = jax.random.uniform(k_shift, (b, 2), minval=-jitter, maxval=jitter)
  scales = jax.random.uniform(k_scale, (b,), minval=scale_range[0],
                              maxval=scale_range[1])
  angles = jnp.deg2rad(jax.random.uniform(k_angle, (b,), minval=-max_angle,
                                          maxval=max_angle))
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing="ij")
  cy, cx = (height - 1) / 2.0, (width - 1) / 2.0

  def one(image, shift, scale, angle):
    # Output pixel p shows input pixel c + R(-angle) (p - c) / scale - shift.
    dy, dx = rows - cy, cols - cx
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    src_r = cy + (cos * dy + sin * dx) / scale - shift[0]
    src_c = cx + (-sin * dy + cos * dx) / scale - shift[1]

    def channel(plane):
      return jax.scipy.ndimage.map_coordinates(plane, [src_r, src_c], order=1,
                                               mode="constant", cval=fill)
    return jax.vmap(channel, in_axes=-1, out_axes=-1)(image)

  return jax.vmap(one)(x, shifts, scales, angles)


def fourier_ascent(key: jax.Array, objective: Objective, spectrum0: jax.Array, *,
                   height: int, width: int, num_steps: int,
                   learning_rate: float = 0.05, decay_power: float = 1.0,
                   decorrelate: bool | None = None, jitter: float = 8.0,
                   scale_range: tuple[float, float] = (0.9, 1.1),
                   max_angle: float = 10.0,
                   first_step: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Maximise ``objective`` over a decorrelated Fourier spectrum by Adam, one ``lax.scan``.

  Each step renders :func:`fourier_image`, applies a fresh
  :func:`random_transform` (``fold_in(key, step)``) and takes an Adam step
  on the spectrum up the summed objective. Usable with
  :func:`foolingjax.visualize.class_objective`, ``unit_objective`` and
  ``dream_objective`` (start DeepDream from ``image_to_spectrum(photo)``).

  Args:
    key: PRNG key of the transforms.
    objective: ``objective(x [B, H, W, C]) -> [B]``, to maximise.
    spectrum0: ``[B, C, H, W // 2 + 1, 2]``, from :func:`fourier_init` or
      :func:`image_to_spectrum`.
    height: image height ``H``.
    width: image width ``W``.
    num_steps: steps (static).
    learning_rate: Adam step size (lucid: 0.05).
    decay_power: spectrum scaling exponent.
    decorrelate: colour decorrelation (default: when ``C == 3``).
    jitter: transform shift in pixels (0 with ``scale_range=(1, 1)`` and
      ``max_angle=0``: no transform).
    scale_range: transform zoom range.
    max_angle: transform rotation in degrees.
    first_step: global index of the first step (the transform keys), for a run
      split into calls; Adam's moments restart with each call.

  Returns:
    ``(images [B, H, W, C], spectrum, objective_trace [num_steps, B])``, the
    trace holding the objective of the transformed image before each step.
  """
  if spectrum0.shape[2:] != (height, width // 2 + 1, 2):
    raise ValueError(f"fourier_ascent: spectrum0 must be [B, C, {height}, "
                     f"{width // 2 + 1}, 2] for {height}x{width} images; got "
                     f"{list(spectrum0.shape)}. Fix: make it with fourier_init.")
  optimizer = optax.adam(learning_rate)
  render = lambda s: fourier_image(s, height=height, width=width,
                                   decay_power=decay_power, decorrelate=decorrelate)
  transform = jitter > 0 or max_angle > 0 or scale_range != (1.0, 1.0)

  def step(carry, t):
    spectrum, opt_state = carry

    def loss(spectrum):
      image = render(spectrum)
      if transform:
        image = random_transform(jax.random.fold_in(key, t), image, jitter=jitter,
                                 scale_range=scale_range, max_angle=max_angle)
      values = objective(image)
      return -jnp.sum(values), values

    grad, values = jax.grad(loss, has_aux=True)(spectrum)
    updates, opt_state = optimizer.update(grad, opt_state, spectrum)
    return (optax.apply_updates(spectrum, updates), opt_state), values

  (spectrum, _), trace = jax.lax.scan(step, (spectrum0, optimizer.init(spectrum0)),
                                      first_step + jnp.arange(num_steps))
  return render(spectrum), spectrum, trace
