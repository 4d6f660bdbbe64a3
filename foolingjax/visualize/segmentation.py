"""Object segmentation from a saliency map (Simonyan et al. 2014, section 3.1).

Simonyan, Vedaldi & Zisserman seed a GraphCut colour segmentation with the
saliency map: the most salient pixels (above the 95 % quantile) are foreground
seeds, the least salient (below the 30 % quantile) background seeds, colour
models fitted to the seeds give each pixel its unary cost, and a graph cut with
a contrast-sensitive smoothness term labels the rest. Here the same energy is
minimised approximately in JAX, GrabCut-style: a Gaussian colour model per
label, refitted a few times, and mean-field inference of the Potts smoothness
on the 4-neighbour grid, all vectorised (no graph library, no Python loop over
pixels).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from foolingjax import checks


def _neighbour_sum(values: jax.Array, weights: tuple[jax.Array, jax.Array]) -> jax.Array:
  # values [H, W]; weights (down [H-1, W], right [H, W-1]): sum_j w_ij v_j over
  # the 4-neighbourhood, zero outside the image.
  down, right = weights
  total = jnp.zeros_like(values)
  total = total.at[:-1].add(down * values[1:])
  total = total.at[1:].add(down * values[:-1])
  total = total.at[:, :-1].add(right * values[:, 1:])
  total = total.at[:, 1:].add(right * values[:, :-1])
  return total


def _gaussian_nll(pixels: jax.Array, weights: jax.Array, floor: float) -> jax.Array:
  # pixels [N, C], weights [N] >= 0: the weighted Gaussian's negative log
  # likelihood of every pixel, [N].
  total = jnp.maximum(jnp.sum(weights), 1e-6)
  mean = jnp.sum(weights[:, None] * pixels, axis=0) / total
  centred = pixels - mean[None]
  cov = jnp.einsum("n,nc,nd->cd", weights, centred, centred) / total
  cov = cov + floor * jnp.eye(pixels.shape[1], dtype=pixels.dtype)
  chol = jnp.linalg.cholesky(cov)
  whitened = jax.scipy.linalg.solve_triangular(chol, centred.T, lower=True)
  logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
  return 0.5 * jnp.sum(jnp.square(whitened), axis=0) + 0.5 * logdet


def _segment_one(image, saliency, *, foreground_quantile, background_quantile,
                 num_iterations, mean_field_steps, smoothness, variance_floor):
  height, width, channels = image.shape
  fg_seed = saliency >= jnp.quantile(saliency, foreground_quantile)
  bg_seed = (saliency <= jnp.quantile(saliency, background_quantile)) & ~fg_seed
  pixels = image.reshape(-1, channels)
  # GrabCut's contrast-sensitive Potts weights: exp(-|I_i - I_j|^2 / (2 <.>)).
  d_down = jnp.sum(jnp.square(image[1:] - image[:-1]), axis=-1)
  d_right = jnp.sum(jnp.square(image[:, 1:] - image[:, :-1]), axis=-1)
  mean_d = (jnp.sum(d_down) + jnp.sum(d_right)) / (d_down.size + d_right.size)
  scale = 2.0 * jnp.maximum(mean_d, 1e-12)
  weights = (jnp.exp(-d_down / scale), jnp.exp(-d_right / scale))

  def clamp(q):
    return jnp.where(fg_seed, 1.0, jnp.where(bg_seed, 0.0, q))

  def refit(carry, _):
    w_fg, w_bg = carry
    unary = (_gaussian_nll(pixels, w_bg.ravel(), variance_floor)
             - _gaussian_nll(pixels, w_fg.ravel(), variance_floor)).reshape(height, width)

    def mean_field(q, _):
      # Potts mean field for two labels: log q_fg - log q_bg =
      # unary + smoothness * sum_j w_ij (q_fg(j) - q_bg(j)).
      pull = _neighbour_sum(2.0 * q - 1.0, weights)
      return clamp(jax.nn.sigmoid(unary + smoothness * pull)), None

    q, _ = jax.lax.scan(mean_field, clamp(jax.nn.sigmoid(unary)), None,
                        length=mean_field_steps)
    return (q, 1.0 - q), None

  seeds = (fg_seed.astype(image.dtype), bg_seed.astype(image.dtype))
  (q, _), _ = jax.lax.scan(refit, seeds, None, length=num_iterations)
  return q


def segment_from_saliency(images: jax.Array, saliency: jax.Array, *,
                          foreground_quantile: float = 0.95,
                          background_quantile: float = 0.30, num_iterations: int = 4,
                          mean_field_steps: int = 10, smoothness: float = 1.0,
                          variance_floor: float = 1e-3) -> jax.Array:
  """Foreground probability of every pixel, seeded by a saliency map.

  Seeds: pixels at or above the ``foreground_quantile`` of the image's
  saliency are foreground, at or below ``background_quantile`` background
  (Simonyan et al.'s 95 % / 30 %); seeds keep their label. Each of
  ``num_iterations`` rounds fits one Gaussian colour model per label (the
  first round to the seeds, later rounds to the current soft labels) and runs
  ``mean_field_steps`` of mean-field inference of the energy
  ``sum_i U(l_i) + smoothness * sum_ij w_ij [l_i != l_j]`` on the 4-neighbour
  grid, ``w_ij`` contrast-sensitive as in GrabCut.

  Args:
    images: float32 ``[B, H, W, C]`` in [0, 1].
    saliency: ``[B, H, W]`` non-negative maps, e.g. ``saliency_map(grads)``.
    foreground_quantile: saliency quantile of the foreground seeds.
    background_quantile: saliency quantile of the background seeds.
    num_iterations: colour-model refits (static).
    mean_field_steps: mean-field updates per refit (static).
    smoothness: Potts weight (0: colour model alone).
    variance_floor: added to each colour covariance's diagonal.

  Returns:
    ``[B, H, W]`` foreground probabilities in [0, 1]; ``> 0.5`` is the mask.
  """
  who = "segment_from_saliency"
  images = checks.images(images, who=who)
  if tuple(saliency.shape) != tuple(images.shape[:3]):
    raise ValueError(f"{who}: saliency must be [B, H, W] = {list(images.shape[:3])}; "
                     f"got {list(saliency.shape)}. Fix: reduce gradients with "
                     "saliency_map(grads).")
  if not 0.0 <= background_quantile < foreground_quantile <= 1.0:
    raise ValueError(f"{who}: need 0 <= background_quantile < foreground_quantile <= 1;"
                     f" got {background_quantile}, {foreground_quantile}.")
  return jax.vmap(lambda image, sal: _segment_one(
      image, sal, foreground_quantile=foreground_quantile,
      background_quantile=background_quantile, num_iterations=num_iterations,
      mean_field_steps=mean_field_steps, smoothness=smoothness,
      variance_floor=variance_floor))(images, jnp.asarray(saliency, images.dtype))
