"""What a class or a unit wants to see: regularised gradient ascent in pixel space.

Starting from a blank or noise image, the pixels climb an objective (a class
logit, or a unit's activation) while a regulariser keeps them image-like:
Simonyan et al. 2013 (class models, L2 decay) and Yosinski, Clune, Nguyen,
Fuchs & Lipson 2015, "Understanding neural networks through deep
visualization" (L2 decay, Gaussian blur every k steps, clipping pixels of small
norm or small contribution), plus the random jitter of Mordvintsev et al. 2015.

An objective is ``objective(x) -> [B]``: one value per image, images being
independent, so a batch visualises B classes or units at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from foolingjax import checks
from foolingjax.images import gaussian_blur
from foolingjax.visualize import _args

Params = Any
Objective = Callable[[jax.Array], jax.Array]


def class_objective(apply_fn: Callable[[Params, jax.Array], jax.Array], params: Params,
                    labels: jax.Array) -> Objective:
  """The unnormalised score (logit) of ``labels[b]`` for image ``b``.

  Simonyan et al. ascend the logit, not the softmax probability, which can
  also rise by pushing the other classes down.

  Returns:
    ``objective(x [B, H, W, C]) -> [B]``; it raises a ``ValueError`` (under
    ``jit`` when the compiled function runs) for labels outside ``[0, K)``.
  """
  k = getattr(apply_fn, "num_classes", None)
  if k is not None:
    # Checked once here, not in every ascent step (a traced label's check is a
    # host callback; inside the loop it would run at every step).
    batch = int(np.shape(labels)[0]) if np.ndim(labels) == 1 else 0
    labels = checks.labels(labels, batch=batch, num_classes=int(k), who="class_objective")

  def objective(x):
    logits = apply_fn(params, x)
    checked = (labels if k is not None else
               _args.class_labels(labels, logits.shape, who="class_objective"))
    return jnp.take_along_axis(logits, checked[:, None], axis=1)[:, 0]
  return objective


def unit_objective(features_fn: Callable[[Params, jax.Array], dict], params: Params, *,
                   layer: str, units: jax.Array,
                   position: tuple[int, int] | None = None) -> Objective:
  """The activation of unit ``units[b]`` of ``layer`` for image ``b``.

  Args:
    features_fn: ``features(params, x) -> {layer: [B, ...]}``, e.g.
      ``models.feature_fn(apply_fn)``.
    params: its parameters.
    layer: key of the feature dict.
    units: int ``[B]``; a channel of a ``[B, H, W, C]`` map or a neuron of a
      ``[B, N]`` layer.
    position: for a conv layer, the ``(row, col)`` of the one neuron to excite;
      ``None`` excites the whole channel (its spatial mean).

  Returns:
    ``objective(x [B, H, W, C]) -> [B]``. Calling it raises one ``ValueError``
    for an unknown layer (listing the known ones), a position outside the map,
    or a unit outside the layer's channels (under ``jit`` when the compiled
    function runs).
  """
  who = "unit_objective"

  def objective(x):
    act = _args.layer(features_fn(params, x), layer, who=who)
    if act.ndim == 4:
      if position is None:
        act = jnp.mean(act, axis=(1, 2))
      else:
        row, col = _args.position(position, height=act.shape[1], width=act.shape[2],
                                  who=who, layer=layer)
        act = act[:, row, col, :]
    elif act.ndim != 2:
      raise ValueError(f"{who}: layer {layer!r} has shape {act.shape}; expected "
                       "[B, H, W, C] or [B, N].")
    checked = _args.units(units, batch=act.shape[0], count=act.shape[-1], who=who,
                          what=f"the {act.shape[-1]} channels of layer {layer!r}")
    return jnp.take_along_axis(act, checked[:, None], axis=1)[:, 0]
  return objective


def _below_percentile(values: jax.Array, percentile: float) -> jax.Array:
  # values: [B, H, W]; True where a pixel is below its image's percentile.
  threshold = jnp.percentile(values.reshape(values.shape[0], -1), percentile, axis=1)
  return values < threshold[:, None, None]


def gradient_ascent(key: jax.Array, objective: Objective, x0: jax.Array, *,
                    num_steps: int, step_size: float, l2_decay: float = 0.0,
                    blur_every: int = 0, blur_sigma: float = 0.5,
                    norm_clip_percentile: float = 0.0,
                    contribution_clip_percentile: float = 0.0, jitter: int = 0,
                    center: float = 0.5, value_range: tuple[float, float] = (0.0, 1.0),
                    normalize_gradient: bool = True,
                    first_step: int = 0) -> tuple[jax.Array, jax.Array]:
  """Regularised gradient ascent on the pixels, one ``lax.scan``.

  Each step: jitter the image by a random roll of up to ``jitter`` pixels,
  take the gradient of ``objective`` (rolled back), step by ``step_size``
  (times the gradient divided by its mean absolute value when
  ``normalize_gradient``), then apply Yosinski et al.'s regulariser to
  ``z = x - center``: L2 decay ``z *= 1 - l2_decay``; a Gaussian blur every
  ``blur_every`` steps; zeroing pixels whose norm over channels, or whose
  contribution ``|sum_c z * grad|``, is below the given percentile of the
  image; finally clipping ``x`` to ``value_range``.

  Args:
    key: PRNG key for the jitter (``fold_in(key, step)`` per step).
    objective: ``objective(x [B, H, W, C]) -> [B]``, to maximise.
    x0: ``[B, H, W, C]`` starting images (blank or noise).
    num_steps: steps in this call (static).
    step_size: pixel step per unit of (normalised) gradient.
    l2_decay: fraction of ``z`` removed each step (0: none).
    blur_every: blur period in steps (0: never).
    blur_sigma: blur standard deviation in pixels.
    norm_clip_percentile: percentile (0-100) below which pixel norms are
      zeroed (0: off).
    contribution_clip_percentile: same for contributions (0: off).
    jitter: maximum roll in pixels (0: off).
    center: the "empty" pixel value that decay and clipping move towards.
    value_range: the pixels are clipped to this range after every step.
    normalize_gradient: divide each image's gradient by its mean absolute
      value, so that ``step_size`` is in pixels whatever the objective's scale.
    first_step: global index of the first step, so that a run split into
      several calls blurs and jitters as one run would.

  Returns:
    ``(images [B, H, W, C], objective_trace [num_steps, B])``, the trace
    holding the objective before each step.
  """
  lo, hi = value_range

  def step(x, t):
    step_key = jax.random.fold_in(key, t)
    shift = jax.random.randint(step_key, (2,), -jitter, jitter + 1)

    def jittered(x):
      values = objective(jnp.roll(x, (shift[0], shift[1]), axis=(1, 2)))
      return jnp.sum(values), values

    grad, values = jax.grad(jittered, has_aux=True)(x)
    if normalize_gradient:
      grad = grad / (jnp.mean(jnp.abs(grad), axis=(1, 2, 3), keepdims=True) + 1e-12)
    x = x + step_size * grad
    z = (x - center) * (1.0 - l2_decay)
    if blur_every > 0:
      z = jax.lax.cond(t % blur_every == 0,
                       lambda z: gaussian_blur(z, sigma=blur_sigma), lambda z: z, z)
    if norm_clip_percentile > 0:
      norms = jnp.linalg.norm(z, axis=-1)
      z = jnp.where(_below_percentile(norms, norm_clip_percentile)[..., None], 0.0, z)
    if contribution_clip_percentile > 0:
      contribution = jnp.abs(jnp.sum(z * grad, axis=-1))
      small = _below_percentile(contribution, contribution_clip_percentile)
      z = jnp.where(small[..., None], 0.0, z)
    return jnp.clip(center + z, lo, hi), values

  steps = first_step + jnp.arange(num_steps)
  return jax.lax.scan(step, x0, steps)
