"""Images from features: inversion, DeepDream and neural style transfer.

References:
  Mahendran & Vedaldi 2015, "Understanding deep image representations by
  inverting them" (feature inversion with a total-variation prior).
  Mordvintsev, Olah & Tyka 2015, "Inceptionism" (DeepDream: octaves, jitter).
  Gatys, Ecker & Bethge 2016, "Image style transfer using convolutional neural
  networks" (content loss, Gram-matrix style loss; TV as in Johnson et al.).

A feature extractor is ``features(params, x) -> {layer name: [B, ...]}``, e.g.
``models.feature_fn(apply_fn)``; images are float32 ``[B, H, W, C]`` in [0, 1]
and stay in that range (projected after every step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from foolingjax import checks
from foolingjax.visualize import _args, ascent

Params = Any
FeaturesFn = Callable[[Params, jax.Array], Mapping[str, jax.Array]]


def gram_matrix(features: jax.Array) -> jax.Array:
  """Channel correlations ``G = F^T F / (H W)`` of a feature map.

  Args:
    features: ``[B, H, W, C]``.

  Returns:
    ``[B, C, C]``, symmetric positive semi-definite.
  """
  b, h, w, c = features.shape
  flat = features.reshape(b, h * w, c)
  return jnp.einsum("bpc,bpd->bcd", flat, flat) / (h * w)


def total_variation(x: jax.Array, *, beta: float = 2.0) -> jax.Array:
  """Mahendran & Vedaldi's ``sum_ij ((dx_ij)^2 + (dy_ij)^2)^(beta / 2)``.

  Forward differences over every pixel, the image extended by replicating its
  last row and column (so the differences leaving the image are 0): every
  pixel, the bottom-right corner included, is in some difference and gets a
  gradient. For ``beta = 2`` this is the sum of all squared horizontal and
  vertical neighbour differences.

  Args:
    x: ``[B, H, W, C]``.
    beta: 2 penalises squared differences (smooth images), 1 gives the
      edge-preserving isotropic TV.

  Returns:
    ``[B]``, summed over pixels and channels.
  """
  padded = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
  dy = padded[:, 1:, :-1, :] - x
  dx = padded[:, :-1, 1:, :] - x
  sq = jnp.square(dx) + jnp.square(dy)
  if beta == 2.0:
    return jnp.sum(sq, axis=(1, 2, 3))
  # The epsilon keeps the gradient finite at flat regions for beta < 2.
  return jnp.sum(jnp.power(sq + 1e-8, beta / 2.0), axis=(1, 2, 3))


def _projected_adam(loss_fn: Callable[[jax.Array], tuple[jax.Array, dict]],
                    x0: jax.Array, *, num_steps: int, learning_rate: float):
  # Adam on the pixels, clipped back into [0, 1] after every step; the loss
  # returns [B] values (images independent) and per-image metrics.
  optimizer = optax.adam(learning_rate)

  def total(x):
    values, metrics = loss_fn(x)
    return jnp.sum(values), metrics

  def step(carry, _):
    x, opt_state = carry
    grad, metrics = jax.grad(total, has_aux=True)(x)
    updates, opt_state = optimizer.update(grad, opt_state, x)
    x = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)
    return (x, opt_state), metrics

  (x, _), metrics = jax.lax.scan(step, (x0, optimizer.init(x0)), None, length=num_steps)
  return x, metrics


def invert_features(features_fn: FeaturesFn, params: Params, target: jax.Array,
                    x0: jax.Array, *, layer: str, num_steps: int,
                    learning_rate: float = 0.05, tv_weight: float = 0.0,
                    tv_beta: float = 2.0) -> tuple[jax.Array, dict]:
  """An image whose ``layer`` features match ``target``, with a TV prior.

  Minimises ``||phi(x) - target||^2 / ||target||^2 + tv_weight * TV(x)`` per
  image by projected Adam (Mahendran & Vedaldi's normalised loss, so one
  ``tv_weight`` suits every layer). The loss is a squared ratio; the relative
  error ``||phi(x) - target|| / ||target||`` is its square root and is
  reported as ``metrics["relative_error"]``.

  Args:
    features_fn: feature extractor.
    params: its parameters.
    target: ``[B, ...]`` features of the images to reconstruct,
      ``features_fn(params, originals)[layer]``.
    x0: ``[B, H, W, C]`` start (grey or noise).
    layer: key of the feature dict.
    num_steps: Adam steps (static).
    learning_rate: Adam step size in pixel units.
    tv_weight: weight of :func:`total_variation`.
    tv_beta: its exponent.

  Returns:
    ``(images [B, H, W, C], metrics)``, each metric ``[num_steps, B]`` and
    measured before the step: ``"feature_loss"`` (the squared ratio above),
    ``"relative_error"`` (its square root, ``||phi(x) - target|| /
    ||target||``) and ``"tv"``.
  """
  x0 = checks.images(x0, who="invert_features")
  axes = tuple(range(1, target.ndim))
  target_norm = jnp.maximum(jnp.sum(jnp.square(target), axis=axes), 1e-12)

  def loss(x):
    phi = _args.layer(features_fn(params, x), layer, who="invert_features")
    feature_loss = jnp.sum(jnp.square(phi - target), axis=axes) / target_norm
    tv = total_variation(x, beta=tv_beta)
    return feature_loss + tv_weight * tv, {
        "feature_loss": feature_loss, "relative_error": jnp.sqrt(feature_loss),
        "tv": tv}

  return _projected_adam(loss, x0, num_steps=num_steps, learning_rate=learning_rate)


def _resize(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  if tuple(x.shape[1:3]) == tuple(hw):
    return x
  return jax.image.resize(x, (x.shape[0], *hw, x.shape[3]), method="linear")


def dream_objective(features_fn: FeaturesFn, params: Params, *, layer: str,
                    channels: Sequence[int] | None = None,
                    input_size: tuple[int, int] | None = None) -> ascent.Objective:
  """DeepDream's objective ``mean(activation^2) / 2`` of ``layer``, per image.

  Usable with :func:`foolingjax.visualize.gradient_ascent` or
  :func:`foolingjax.visualize.fourier_ascent` (start from
  ``image_to_spectrum(image)`` to dream on a photo in Fourier space).

  Args:
    features_fn: feature extractor.
    params: its parameters.
    layer: layer to amplify.
    channels: amplify only these channels (``None``: all).
    input_size: resize the images to this ``(H, W)`` before the network.

  Returns:
    ``objective(x [B, H, W, C]) -> [B]``.
  """
  def objective(x):
    if input_size is not None:
      x = _resize(x, input_size)
    act = _args.layer(features_fn(params, x), layer, who="deep_dream")
    if channels is not None:
      act = act[..., jnp.asarray(channels)]
    return 0.5 * jnp.mean(jnp.square(act).reshape(act.shape[0], -1), axis=1)
  return objective


def deep_dream(key: jax.Array, features_fn: FeaturesFn, params: Params, image: jax.Array,
               *, layer: str, num_octaves: int = 3, octave_scale: float = 1.4,
               steps_per_octave: int = 10, step_size: float = 0.01, jitter: int = 4,
               channels: Sequence[int] | None = None,
               input_size: tuple[int, int] | None = None) -> jax.Array:
  """DeepDream: amplify whatever ``layer`` sees, coarse octaves first.

  The image is shrunk ``num_octaves - 1`` times by ``octave_scale``; from the
  smallest up, the dream detail found so far is upsampled onto the next octave
  and refined by jittered, normalised gradient ascent on
  ``mean(activation^2) / 2`` (Mordvintsev et al.'s L2 objective). Octaves
  differ in shape, so each gets its own ``lax.scan`` (a fixed, small Python
  loop at trace time).

  Args:
    key: PRNG key for the jitter.
    features_fn: feature extractor.
    params: its parameters.
    image: float32 ``[B, H, W, C]`` in [0, 1].
    layer: layer to amplify.
    num_octaves: pyramid levels.
    octave_scale: size ratio between levels.
    steps_per_octave: ascent steps per level.
    step_size: pixel step per unit of mean-normalised gradient.
    jitter: maximum random roll in pixels.
    channels: amplify only these channels (``None``: all).
    input_size: ``(H, W)`` the network needs; each octave is resized to it
      before the network (differentiably). ``None`` feeds octaves as they are
      (fully convolutional extractors).

  Returns:
    ``[B, H, W, C]`` dreamed images in [0, 1].
  """
  image = checks.images(image, who="deep_dream")
  height, width = image.shape[1:3]
  shapes = [(max(1, round(height / octave_scale ** o)), max(1, round(width / octave_scale ** o)))
            for o in range(num_octaves)][::-1]
  objective = dream_objective(features_fn, params, layer=layer, channels=channels,
                              input_size=input_size)

  detail = jnp.zeros((image.shape[0], *shapes[0], image.shape[3]), image.dtype)
  dreamed = image
  for octave, hw in enumerate(shapes):
    base = _resize(image, hw)
    detail = _resize(detail, hw)
    dreamed, _ = ascent.gradient_ascent(
        jax.random.fold_in(key, octave), objective, jnp.clip(base + detail, 0.0, 1.0),
        num_steps=steps_per_octave, step_size=step_size, jitter=jitter,
        center=0.0, value_range=(0.0, 1.0))
    detail = dreamed - base
  return dreamed


def style_transfer(features_fn: FeaturesFn, params: Params, content: jax.Array,
                   style: jax.Array, x0: jax.Array, *, content_layer: str,
                   style_layers: Sequence[str], num_steps: int,
                   content_weight: float = 1.0,
                   style_weights: Sequence[float] | float = 1.0,
                   tv_weight: float = 0.0, learning_rate: float = 0.02,
                   input_size: tuple[int, int] | None = None) -> tuple[jax.Array, dict]:
  """Gatys et al.'s neural style transfer by projected Adam on the pixels.

  Loss per image: ``content_weight * mean((F(x) - F(content))^2)`` at
  ``content_layer`` + ``sum_l style_weights[l] * mean((G_l(x) - G_l(style))^2)``
  over ``style_layers`` (Gram matrices, :func:`gram_matrix`) +
  ``tv_weight * TV(x)``.

  Args:
    features_fn: feature extractor.
    params: its parameters.
    content: ``[B, H, W, C]`` content images.
    style: ``[1 or B, H', W', C]`` style images (any size the extractor
      accepts; Gram matrices do not depend on it).
    x0: ``[B, H, W, C]`` start, usually ``content``.
    content_layer: layer whose features are kept.
    style_layers: layers whose Gram matrices are matched.
    num_steps: Adam steps (static).
    content_weight: content weight.
    style_weights: one weight per style layer, or one for all.
    tv_weight: weight of :func:`total_variation` (beta 2).
    learning_rate: Adam step size in pixel units.
    input_size: resize images to this ``(H, W)`` before the extractor.

  Returns:
    ``(images [B, H, W, C], metrics)``, each ``[num_steps, B]``:
    ``"content"`` and ``"tv"`` unweighted, ``"style"`` the weighted sum over
    the style layers.
  """
  if isinstance(style_weights, (int, float)):
    style_weights = [float(style_weights)] * len(style_layers)
  if len(style_weights) != len(style_layers):
    raise ValueError(f"{len(style_weights)} style weights for {len(style_layers)} layers.")
  who = "style_transfer"
  content = checks.images(content, who=who, pixels=True)
  style = checks.images(style, who=who)
  x0 = checks.images(x0, who=who)

  def features(x):
    feats = features_fn(params, _resize(x, input_size) if input_size else x)
    for name in (content_layer, *style_layers):
      _args.layer(feats, name, who=who)
    return feats

  content_target = features(content)[content_layer]
  style_features = features(style)
  style_targets = [gram_matrix(style_features[name]) for name in style_layers]

  def loss(x):
    feats = features(x)
    diff = feats[content_layer] - content_target
    content_loss = jnp.mean(jnp.square(diff).reshape(diff.shape[0], -1), axis=1)
    style_loss = jnp.zeros(x.shape[0], x.dtype)
    for name, weight, target in zip(style_layers, style_weights, style_targets):
      gram_diff = gram_matrix(feats[name]) - target
      style_loss = style_loss + weight * jnp.mean(jnp.square(gram_diff), axis=(1, 2))
    tv = total_variation(x)
    value = content_weight * content_loss + style_loss + tv_weight * tv
    return value, {"content": content_loss, "style": style_loss, "tv": tv}

  return _projected_adam(loss, x0, num_steps=num_steps, learning_rate=learning_rate)
