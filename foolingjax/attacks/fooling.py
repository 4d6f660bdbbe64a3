"""Gradient-ascent fooling images (Simonyan et al. 2013; Nguyen et al. 2015, Sec. 3).

From noise or a given image, climb the score of a target class with L2 decay,
optional Gaussian blur every ``blur_every`` steps (Yosinski et al. 2015's
regularisers), clipping to the pixel box and a step-size schedule. One
``lax.scan`` over steps, ``vmap``-ed over images; the per-step confidence (the
target's softmax probability) comes back stacked.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from foolingjax import checks
from foolingjax.images import gaussian_blur

OBJECTIVES = ("logit", "log_softmax", "softmax")
STEP_RULES = ("fixed", "progress")


def progress_step_size(grad_sq_norm: jax.Array, confidence: jax.Array, *,
                       early_prog: float = 0.03, late_prog_mult: float = 0.1,
                       max_lr: float = 1e12) -> jax.Array:
  """The original's "progress" learning rate (caffe/ascent/find_fooling_image.py).

  ``lr = min(max_lr, min(early_prog, late_prog_mult * (1 - p)) / ||g||^2)``:
  the step whose first-order gain ``lr * ||g||^2`` in the target's probability
  ``p`` is ``early_prog`` early on, and ``late_prog_mult`` of the distance to 1
  once ``p`` is close to it. The rule does not depend on the pixel scale (the
  step ``lr * g`` is the same image change in [0, 1] or [0, 255] units); only
  ``max_lr`` does, and the original's 1e12 never binds.
  """
  desired = jnp.minimum(early_prog, late_prog_mult * (1.0 - confidence))
  return jnp.minimum(max_lr, desired / jnp.maximum(grad_sq_norm, 1e-30))


def mean_plus_noise(key: jax.Array, mean: jax.Array, batch: int, *,
                    std: float = 1.0 / 255.0) -> jax.Array:
  """The original's start: the mean image plus N(0, std) noise, clipped to [0, 1].

  ``std`` 1/255 is the original's N(0, 1) in 0-255 pixel units. ``mean`` is
  ``[H, W, C]`` in [0, 1]; returns ``[batch, H, W, C]``.
  """
  mean = jnp.asarray(mean, jnp.float32)
  noise = std * jax.random.normal(key, (batch, *mean.shape), jnp.float32)
  return jnp.clip(mean[None] + noise, 0.0, 1.0)


def _score(logits: jax.Array, target: jax.Array, objective: str) -> jax.Array:
  if objective == "logit":
    return logits[target]
  log_p = jax.nn.log_softmax(logits)[target]
  return log_p if objective == "log_softmax" else jnp.exp(log_p)


def gradient_ascent_fooling(
    key: jax.Array | None, apply_fn, params, target: jax.Array, *, steps: int,
    step_size: float | Callable[[jax.Array], jax.Array] = 0.1,
    objective: str = "log_softmax", l2_decay: float = 0.0,
    decay_center: float | jax.Array = 0.0, blur_every: int = 0, blur_sigma: float = 0.5,
    init_images: jax.Array | None = None, image_shape: tuple[int, int, int] | None = None,
    clip: bool = True, step_rule: str = "fixed", early_prog: float = 0.03,
    late_prog_mult: float = 0.1, max_lr: float = 1e12,
    keep_best: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Images that a classifier assigns to ``target`` by gradient ascent.

  Each step: ``x += step_size(t) * grad score(x)``; then L2 decay
  ``x = center + (1 - l2_decay) * (x - center)`` (the gradient of
  ``-(l2_decay / (2 step)) ||x - center||^2``, Simonyan et al.'s regulariser);
  every ``blur_every`` steps a Gaussian blur; then clipping to [0, 1].

  Args:
    key: PRNG key for the uniform-noise start (unused when ``init_images``).
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    target: int ``[B]`` classes to reach, in ``[0, K)``.
    steps: number of ascent steps (a Python int; the loop is a ``lax.scan``).
    step_size: a float, or a schedule ``step_size(step) -> float`` such as an
      optax schedule.
    objective: ``"logit"`` (Simonyan's unnormalised score), ``"log_softmax"``
      or ``"softmax"`` (the fooling paper's confidence; its gradient vanishes
      as the softmax saturates).
    l2_decay: fraction of ``x - decay_center`` removed per step, in [0, 1).
    decay_center: pixel value, or ``[H, W, C]`` image (the original: the
      mean image), the decay pulls towards.
    blur_every: blur every this many steps; 0 never blurs.
    blur_sigma: blur standard deviation in pixels.
    init_images: optional float ``[B, H, W, C]`` starting images in [0, 1].
    image_shape: ``(H, W, C)`` of the noise start when ``init_images`` is None
      (default: ``apply_fn.input_shape``).
    clip: clip to [0, 1] after each step.
    step_rule: ``"fixed"`` uses ``step_size``; ``"progress"`` is the
      original's rule (:func:`progress_step_size` with ``early_prog``,
      ``late_prog_mult``, ``max_lr``), driven by the target's softmax
      probability whatever the ``objective`` (the original climbs the
      probability itself: ``objective="softmax"``).
    keep_best: return, per image, the iterate of highest target probability
      (the original saves its ``X_best``) instead of the last one.

  Returns:
    ``(images, metrics)``: images ``[B, H, W, C]`` and a dict with
    ``"confidence"`` ``[steps, B]`` (the target's softmax probability after each
    step), ``"score"`` ``[steps, B]`` (the objective) and
    ``"final_confidence"`` ``[B]`` (the returned images' probability).
  """
  who = "gradient_ascent_fooling"
  if objective not in OBJECTIVES:
    raise ValueError(f"{who}: objective must be one of {OBJECTIVES}; got {objective!r}.")
  if step_rule not in STEP_RULES:
    raise ValueError(f"{who}: step_rule must be one of {STEP_RULES}; got {step_rule!r}.")
  if step_rule == "progress":
    for name, value in (("early_prog", early_prog), ("late_prog_mult", late_prog_mult),
                        ("max_lr", max_lr)):
      checks.nonnegative(value, name=name, who=who, strict=True)
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"{who}: steps must be a Python int >= 1; got {steps!r}.")
  if not isinstance(blur_every, int) or blur_every < 0:
    raise ValueError(f"{who}: blur_every must be a Python int >= 0; got {blur_every!r}.")
  checks.nonnegative(l2_decay, name="l2_decay", who=who, upper=0.999)
  if blur_every:
    checks.nonnegative(blur_sigma, name="blur_sigma", who=who, strict=True)
  if not callable(step_size):
    checks.nonnegative(step_size, name="step_size", who=who)
  input_shape = getattr(apply_fn, "input_shape", None)
  if init_images is None:
    shape = image_shape or input_shape
    if shape is None or key is None:
      raise ValueError(f"{who}: starting from noise needs a key and an image_shape "
                       "(or an apply_fn with .input_shape); or pass init_images.")
    batch = int(jnp.shape(target)[0]) if jnp.ndim(target) == 1 else -1
    if batch < 0:
      raise ValueError(f"{who}: target must have shape [B]; got {jnp.shape(target)}.")
    init_images = jax.random.uniform(key, (batch, *shape), jnp.float32)
  x0 = checks.images(init_images, who=who, input_shape=input_shape)
  k = checks.num_classes(apply_fn, params, x0)
  target = checks.labels(target, batch=x0.shape[0], num_classes=k, who=who,
                          name="target")
  schedule = step_size if callable(step_size) else (lambda _: step_size)

  def one(xi, t):
    def score_and_confidence(x):
      logits = apply_fn(params, x[None])[0]
      return _score(logits, t, objective), jax.nn.softmax(logits)[t]

    # One forward-backward pass per step: the gradient pass at x_i also gives
    # p(x_i), which is the trace's entry of the previous step; only the last
    # iterate needs a forward of its own.
    grad_fn = jax.value_and_grad(score_and_confidence, has_aux=True)

    def step(carry, i):
      x, best_x, best_p = carry
      (score_now, p_now), grad = grad_fn(x)
      better = p_now > best_p
      best_x = jnp.where(better, x, best_x)
      best_p = jnp.where(better, p_now, best_p)
      if step_rule == "progress":
        lr = progress_step_size(jnp.sum(jnp.square(grad)), p_now, early_prog=early_prog,
                                late_prog_mult=late_prog_mult, max_lr=max_lr)
      else:
        lr = schedule(i)
      x = x + lr * grad
      x = decay_center + (1.0 - l2_decay) * (x - decay_center)
      if blur_every:
        x = jnp.where((i + 1) % blur_every == 0, gaussian_blur(x, sigma=blur_sigma), x)
      if clip:
        x = jnp.clip(x, 0.0, 1.0)
      return (x, best_x, best_p), (score_now, p_now)

    (x, best_x, best_p), (scores, confidences) = jax.lax.scan(
        step, (xi, xi, -jnp.inf), jnp.arange(steps))
    score_last, p_last = score_and_confidence(x)
    best_x = jnp.where(p_last > best_p, x, best_x)
    best_p = jnp.maximum(p_last, best_p)
    # After each step: p(x_1) .. p(x_steps).
    scores = jnp.concatenate([scores[1:], score_last[None]])
    confidences = jnp.concatenate([confidences[1:], p_last[None]])
    if keep_best:
      return best_x, scores, confidences, best_p
    return x, scores, confidences, p_last

  images, scores, confidences, final = jax.vmap(one)(x0, target)
  metrics = {"confidence": confidences.T, "score": scores.T, "final_confidence": final}
  return images, metrics
