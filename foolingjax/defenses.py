"""Defences and the attacks that test them, for any ``(apply_fn, params)`` classifier.

* Adversarial patch (Brown et al. 2017): :func:`place_patch`,
  :func:`random_placements`, :func:`train_patch`, :func:`patch_success_rate`.
* Universal adversarial perturbation (Moosavi-Dezfooli et al. 2017):
  :func:`universal_perturbation` (its inner step :func:`uap_step` is
  :func:`foolingjax.attacks.deepfool`), :func:`fooling_rate`.
* Adversarial training: :func:`make_adversarial_loss` (Goodfellow et al.'s
  mixed FGSM objective, Madry et al.'s PGD objective) trained by :func:`fit`.
* Defensive distillation (Papernot et al. 2016): :func:`temperature_loss`,
  :func:`predict_proba`, :class:`TemperatureScaled` (an attack at temperature T).
  The losses follow :data:`foolingjax.training.Loss`; :func:`fit` hands them to
  :func:`foolingjax.training.fit`, the one training loop.
* Detection: :func:`layer_features`, :func:`fit_detector`,
  :func:`detector_scores`, :func:`roc_auc`.
* A fooling class on a frozen net (Nguyen et al. 2015's n+1 retraining, its
  output layer only): :class:`FoolingClass`, :func:`fit_fooling_class`,
  :func:`with_fooling_class`, :func:`fooling_class_logit`,
  :func:`append_fooling_class`, :func:`fooling_class_margin`.

Everything is pure and unjitted except :func:`fit`, which is
:func:`foolingjax.training.fit` (a Python loop over jitted steps).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from foolingjax import attacks, checks, training
from foolingjax.attacks.deepfool import deepfool_unchecked

# --------------------------------------------------------------------------
# Adversarial patch (Brown et al. 2017, "Adversarial Patch").
# --------------------------------------------------------------------------


@struct.dataclass
class Placement:
  """Where a patch goes; each leaf is a scalar, or ``[B]`` for a batch.

  Attributes:
    center: ``[2]`` (row, column) of the patch centre in image pixels.
    scale: rendered side / patch side.
    angle: rotation in radians.
  """

  center: jax.Array
  scale: jax.Array
  angle: jax.Array


def place_patch(image: jax.Array, patch: jax.Array, placement: Placement) -> jax.Array:
  """Pastes a scaled and rotated square patch onto one image.

  Each image pixel is mapped back into the patch frame (inverse rotation and
  scale about the centre) and the patch is sampled bilinearly there, so the
  result is differentiable in the patch. Pixels that map outside the patch
  keep the image.

  Args:
    image: ``[H, W, C]`` in [0, 1].
    patch: ``[P, P, C]`` in [0, 1].
    placement: a single :class:`Placement` (scalar leaves).

  Returns:
    ``[H, W, C]``.
  """
  height, width, _ = image.shape
  side = patch.shape[0]
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing="ij")
  dr, dc = rows - placement.center[0], cols - placement.center[1]
  cos, sin = jnp.cos(placement.angle), jnp.sin(placement.angle)
  half = (side - 1) / 2.0
  u = (cos * dr + sin * dc) / placement.scale + half
  v = (-sin * dr + cos * dc) / placement.scale + half
  # Half-open, so a patch at scale 1 covers exactly P x P pixels.
  inside = (u >= -0.5) & (u < side - 0.5) & (v >= -0.5) & (v < side - 0.5)
  sampled = jnp.stack([
      jax.scipy.ndimage.map_coordinates(patch[..., c], [u, v], order=1, mode="nearest")
      for c in range(patch.shape[-1])], axis=-1)
  return jnp.where(inside[..., None], sampled, image)


def random_placements(key: jax.Array, num: int, *, image_shape, patch_side: int,
                      scale_range=(0.8, 1.2), max_angle: float = math.pi / 8) -> Placement:
  """``num`` placements: uniform scale, angle and a centre that keeps the patch in.

  Args:
    key: PRNG key.
    num: how many.
    image_shape: ``(H, W, C)``.
    patch_side: ``P``.
    scale_range: ``(low, high)`` of the uniform scale.
    max_angle: angles are uniform in ``[-max_angle, max_angle]``.

  Returns:
    A :class:`Placement` with leaves ``[num, 2]``, ``[num]``, ``[num]``.
  """
  k_scale, k_angle, k_center = jax.random.split(key, 3)
  scale = jax.random.uniform(k_scale, (num,), minval=scale_range[0], maxval=scale_range[1])
  angle = jax.random.uniform(k_angle, (num,), minval=-max_angle, maxval=max_angle)
  extent = jnp.asarray(image_shape[:2], jnp.float32)
  half = scale[:, None] * patch_side / 2.0
  extent = extent[None, :]
  low = jnp.minimum(half - 0.5, (extent - 1) / 2)
  high = jnp.maximum(extent - 0.5 - half, (extent - 1) / 2)
  center = low + jax.random.uniform(k_center, (num, 2)) * (high - low)
  return Placement(center=center, scale=scale, angle=angle)


def apply_patch(x: jax.Array, patch: jax.Array, placements: Placement) -> jax.Array:
  """:func:`place_patch` over a batch ``x [B, H, W, C]`` with ``[B]`` placements."""
  return jax.vmap(place_patch, in_axes=(0, None, 0))(x, patch, placements)


def train_patch(key: jax.Array, apply_fn, params, x: jax.Array, target: int, *,
                patch_side: int, steps: int, batch_size: int = 64,
                learning_rate: float = 0.05, scale_range=(0.8, 1.2),
                max_angle: float = math.pi / 8) -> tuple[jax.Array, jax.Array]:
  """A targeted patch trained in expectation over images and placements (EOT).

  Each step draws ``batch_size`` images of ``x`` and a random placement for
  each, and takes an Adam step (cosine-decayed) down the mean cross-entropy of ``target``; the
  patch is clipped to [0, 1] after every step.

  Args:
    key: PRNG key (initial patch, batches and placements).
    apply_fn: classifier ``apply_fn(params, x) -> logits [B, K]``.
    params: its parameters.
    x: float32 training images ``[N, H, W, C]`` in [0, 1].
    target: the class the patch should force.
    patch_side: ``P``, the patch's side in pixels (before scaling).
    steps: optimisation steps (a ``lax.scan``).
    batch_size: images per step.
    learning_rate: Adam's step size.
    scale_range: ``(low, high)`` of the random scale.
    max_angle: random rotations lie in ``[-max_angle, max_angle]``.

  Returns:
    ``(patch [P, P, C], losses [steps])``.
  """
  x = checks.images(x, who="train_patch")
  k_init, k_steps = jax.random.split(key)
  patch = jax.random.uniform(k_init, (patch_side, patch_side, x.shape[-1]))
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1)))
  targets = jnp.full((batch_size,), target, jnp.int32)

  def loss(patch, xb, placements):
    logits = apply_fn(params, apply_patch(xb, patch, placements))
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  def step(carry, k):
    patch, opt_state = carry
    k_idx, k_place = jax.random.split(k)
    idx = jax.random.randint(k_idx, (batch_size,), 0, x.shape[0])
    placements = random_placements(k_place, batch_size, image_shape=x.shape[1:],
                                   patch_side=patch_side, scale_range=scale_range,
                                   max_angle=max_angle)
    value, grad = jax.value_and_grad(loss)(patch, x[idx], placements)
    updates, opt_state = tx.update(grad, opt_state, patch)
    patch = jnp.clip(optax.apply_updates(patch, updates), 0.0, 1.0)
    return (patch, opt_state), value

  (patch, _), values = jax.lax.scan(step, (patch, tx.init(patch)),
                                    jax.random.split(k_steps, steps))
  return patch, values


def patch_success_rate(key: jax.Array, apply_fn, params, x: jax.Array, labels: jax.Array,
                       patch: jax.Array, target: int, *, scale_range=(0.8, 1.2),
                       max_angle: float = math.pi / 8) -> jax.Array:
  """Fraction of images not of class ``target`` that a randomly placed patch
  turns into ``target``.

  Args:
    key: PRNG key for the placements.
    apply_fn: classifier.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` held-out images.
    labels: int ``[B]`` true labels.
    patch: ``[P, P, C]``.
    target: the patch's target class.
    scale_range: as in :func:`train_patch`.
    max_angle: as in :func:`train_patch`.

  Returns:
    A float scalar (NaN if every image is of class ``target``).
  """
  placements = random_placements(key, x.shape[0], image_shape=x.shape[1:],
                                 patch_side=patch.shape[0], scale_range=scale_range,
                                 max_angle=max_angle)
  hit = jnp.argmax(apply_fn(params, apply_patch(x, patch, placements)), -1) == target
  other = labels != target
  return jnp.sum(hit & other) / jnp.sum(other)


# --------------------------------------------------------------------------
# Universal adversarial perturbation (Moosavi-Dezfooli et al. 2017).
# --------------------------------------------------------------------------


def uap_step(apply_fn, params, x: jax.Array, v: jax.Array, label: jax.Array, *,
             deepfool_steps: int = 20, overshoot: float = 0.02) -> jax.Array:
  """The universal perturbation's inner step for one image: DeepFool at ``clip(x + v)``.

  :func:`foolingjax.attacks.deepfool` (L2, all classes, box-aware) run from
  ``x_v = clip(x + v, 0, 1)`` away from ``label``; returns its perturbation
  ``adv - x_v``, so ``clip(x + v) + step`` stays in [0, 1] (the paper's
  DeepFool has no box: an unclipped step would spend part of the ε-ball on
  pixels the clip then throws away).

  Args:
    apply_fn: classifier.
    params: its parameters.
    x: one image ``[H, W, C]`` in [0, 1].
    v: the current universal perturbation ``[H, W, C]``.
    label: int scalar, the class to leave (``x``'s clean prediction).
    deepfool_steps: DeepFool's iteration cap (``max_iter``).
    overshoot: DeepFool's overshoot.

  Returns:
    The step ``[H, W, C]`` to add to ``v`` (before the projection).
  """
  # The same attack as attacks.deepfool, without its per-call input checks
  # (host callbacks under jit, once per visited image): universal_perturbation
  # checks its images once, and ``label`` is their own prediction.
  x_v = jnp.clip(x + v, 0.0, 1.0)
  adv, _ = deepfool_unchecked(apply_fn, params, x_v[None], jnp.reshape(label, (1,)),
                              overshoot=overshoot, max_iter=deepfool_steps, norm="l2")
  return adv[0] - x_v


def project_ball(v: jax.Array, *, eps, norm: str) -> jax.Array:
  """Projects ``v`` onto the L∞ or L2 ball of radius ``eps`` (no box)."""
  if norm == "linf":
    return jnp.clip(v, -eps, eps)
  return v * jnp.minimum(1.0, eps / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(v))), 1e-12))


def universal_perturbation(key: jax.Array, apply_fn, params, x: jax.Array, *, eps,
                           norm: str = "linf", passes: int = 5,
                           deepfool_steps: int = 20,
                           overshoot: float = 0.02) -> jax.Array:
  """One perturbation ``v`` that changes the prediction of most images of ``x``.

  Moosavi-Dezfooli et al.'s Algorithm 1: go over the images (shuffled per
  pass); whenever ``clip(x_i + v)`` keeps ``x_i``'s prediction, add DeepFool's
  minimal perturbation of ``clip(x_i + v)`` (:func:`uap_step`, which is
  :func:`foolingjax.attacks.deepfool`, so ``clip(x_i + v)`` plus the step stays
  in [0, 1]) to ``v`` and project ``v`` back onto the ε-ball. The paper stops
  once the fooling rate reaches ``1 - δ``; here the number of passes is fixed
  (a ``lax.scan``) and the caller measures the fooling rate.

  Args:
    key: PRNG key for the per-pass image order.
    apply_fn: classifier.
    params: its parameters.
    x: float32 ``[N, H, W, C]`` images in [0, 1] to compute ``v`` on.
    eps: ball radius.
    norm: ``"linf"`` or ``"l2"``.
    passes: passes over ``x``.
    deepfool_steps: DeepFool's iteration cap (``max_iter``).
    overshoot: DeepFool's overshoot.

  Returns:
    ``v`` of shape ``[H, W, C]`` with ``||v|| <= eps``.
  """
  x = checks.images(x, who="universal_perturbation")
  checks.norm(norm, who="universal_perturbation")
  predict = lambda z: jnp.argmax(apply_fn(params, z[None])[0])
  clean = jax.vmap(predict)(x)

  def visit(v, i):
    xi = x[i]
    fooled = predict(jnp.clip(xi + v, 0.0, 1.0)) != clean[i]

    def push(v):
      return project_ball(v + uap_step(apply_fn, params, xi, v, clean[i],
                                       deepfool_steps=deepfool_steps, overshoot=overshoot),
                          eps=eps, norm=norm)
    return jax.lax.cond(fooled, lambda v: v, push, v), None

  def one_pass(v, k):
    v, _ = jax.lax.scan(visit, v, jax.random.permutation(k, x.shape[0]))
    return v, None

  v, _ = jax.lax.scan(one_pass, jnp.zeros(x.shape[1:], jnp.float32),
                      jax.random.split(key, passes))
  return v


def fooling_rate(apply_fn, params, x: jax.Array, v: jax.Array) -> jax.Array:
  """Fraction of ``x [B, H, W, C]`` whose prediction ``clip(x + v)`` changes."""
  clean = jnp.argmax(apply_fn(params, x), -1)
  perturbed = jnp.argmax(apply_fn(params, jnp.clip(x + v[None], 0.0, 1.0)), -1)
  return jnp.mean((clean != perturbed).astype(jnp.float32))


# --------------------------------------------------------------------------
# Training with another loss: adversarial training and distillation.
# --------------------------------------------------------------------------

def make_adversarial_loss(*, adversary: str, eps, alpha: float, steps: int = 10,
                          step_size=None, norm: str = "linf") -> training.Loss:
  """The adversarial-training objective ``α J(x) + (1 - α) J(x_adv)``.

  ``J`` is the mean cross-entropy; ``x_adv`` is made against the current
  parameters (held constant: no gradient flows through the attack), PGD's
  random start drawn from the loss's key. Goodfellow et al. (2014):
  ``adversary="fgsm"``, ``alpha=0.5``, ε = 0.25 on MNIST. Madry et al. (2017):
  ``adversary="pgd"``, ``alpha=0`` (the inner maximisation only), random start.

  Args:
    adversary: ``"fgsm"`` or ``"pgd"``.
    eps: attack budget.
    alpha: weight of the clean term.
    steps: PGD steps.
    step_size: PGD step (default ``2.5 * eps / steps``, Madry et al.).
    norm: ``"linf"`` or ``"l2"``.

  Returns:
    A :data:`foolingjax.training.Loss`,
    ``loss(apply_fn, params, x, labels [B], key) -> scalar``.
  """
  if adversary not in ("fgsm", "pgd"):
    raise ValueError(f"adversary must be 'fgsm' or 'pgd'; got {adversary!r}.")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must lie in [0, 1]; got {alpha!r}.")
  step_size = 2.5 * eps / max(steps, 1) if step_size is None else step_size

  def loss_fn(apply_fn, params, x, labels, key):
    frozen = jax.lax.stop_gradient(params)
    if adversary == "fgsm":
      adv = attacks.fgsm(apply_fn, frozen, x, labels, eps=eps, norm=norm)
    else:
      adv = attacks.pgd(key, apply_fn, frozen, x, labels, eps=eps,
                        step_size=step_size, steps=steps, norm=norm)
    adv = jax.lax.stop_gradient(adv)
    adversarial = training.cross_entropy(apply_fn, params, adv, labels)
    if alpha == 0.0:
      return adversarial
    clean = training.cross_entropy(apply_fn, params, x, labels)
    return alpha * clean + (1.0 - alpha) * adversarial
  return loss_fn


def temperature_loss(*, temperature: float) -> training.Loss:
  """Cross-entropy of ``softmax(logits / T)`` against hard or soft targets.

  Papernot et al.'s defensive distillation (2016) trains the teacher on hard
  labels and the student on the teacher's ``softmax(logits / T)``, both at
  temperature ``T``; the student is deployed at ``T = 1`` (its raw logits).

  Args:
    temperature: ``T > 0``.

  Returns:
    A :data:`foolingjax.training.Loss`,
    ``loss(apply_fn, params, x, y, key) -> scalar`` with ``y`` int ``[B]`` or
    probabilities ``[B, K]``; the key is unused.
  """
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0; got {temperature!r}.")

  def loss_fn(apply_fn, params, x, y, key):
    return training.cross_entropy(TemperatureScaled(apply_fn, temperature), params, x,
                                  y, key)
  return loss_fn


def cross_entropy_loss() -> training.Loss:
  """Plain cross-entropy, :func:`foolingjax.training.cross_entropy` (the
  undefended baseline)."""
  return training.cross_entropy


@dataclasses.dataclass(frozen=True, eq=False)
class TemperatureScaled:
  """``apply_fn(params, x) / T``: a classifier seen at temperature ``T``.

  Attacking a distilled network through this undoes the ``T``-fold logit
  scale that saturates its softmax at ``T = 1`` (Carlini & Wagner 2016).
  Hashes by identity, like :class:`foolingjax.contract.ApplyFn`.
  """

  apply_fn: Callable
  temperature: float

  @property
  def input_shape(self):
    return getattr(self.apply_fn, "input_shape", None)

  @property
  def num_classes(self):
    return getattr(self.apply_fn, "num_classes", None)

  def __call__(self, params, x):
    return self.apply_fn(params, x) / self.temperature


def predict_proba(apply_fn, params, x: jax.Array, *, temperature: float = 1.0,
                  batch_size: int = 1000) -> jax.Array:
  """``softmax(logits / T)`` of ``x [N, H, W, C]`` (float or uint8), in batches.

  Returns:
    ``[N, K]`` probabilities.
  """
  def one(xi):  # lax.map vmaps this over chunks of batch_size images
    if xi.dtype == jnp.uint8:
      xi = xi.astype(jnp.float32) / 255.0
    return jax.nn.softmax(apply_fn(params, xi[None])[0] / temperature)
  return jax.lax.map(one, x, batch_size=batch_size)


def fit(key: jax.Array, classifier, train: tuple[np.ndarray, np.ndarray], *,
        loss_fn: training.Loss, config, test: tuple[np.ndarray, np.ndarray] | None = None,
        log: Callable[[str], None] | None = None, workdir=None) -> tuple[Any, dict]:
  """:func:`foolingjax.training.fit` from given params with a key of its own.

  Args:
    key: PRNG key (batch order, the loss's keys, e.g. PGD's random starts).
    classifier: ``(apply_fn, params)`` to start from (left usable).
    train: uint8 images ``[N, H, W, C]`` and targets (int ``[N]`` or
      probabilities ``[N, K]``).
    loss_fn: a :data:`foolingjax.training.Loss`.
    config: training hyperparameters (``epochs``, ``batch_size``,
      ``optimizer``, ``learning_rate``, ``schedule``, ``momentum``, ...);
      fields it lacks take :func:`foolingjax.training.default_config`'s values,
      ``num_classes`` the classifier's.
    test: optional uint8 images and int labels, evaluated after every epoch.
    log: progress printer.
    workdir: optional directory for per-epoch checkpoints (resumes from them).

  Returns:
    ``(params, history)``; history as :func:`foolingjax.training.fit`'s
    (per-epoch ``train_loss``, ``train_accuracy``, ``test_accuracy``,
    ``seconds``, ...).
  """
  apply_fn, _ = classifier
  full = training.default_config()
  full.model = getattr(apply_fn, "name", full.model)
  num_classes = getattr(apply_fn, "num_classes", None)
  if num_classes is None and np.ndim(train[1]) == 2:
    num_classes = np.shape(train[1])[1]
  if num_classes is not None:
    full.num_classes = int(num_classes)
  full.update(config.to_dict() if hasattr(config, "to_dict") else dict(config))
  trained, history = training.fit(full, train, test, workdir=workdir, log=log,
                                  loss_fn=loss_fn, init=classifier, key=key)
  return trained.params, history


# --------------------------------------------------------------------------
# Detection of adversarial inputs from intermediate activations.
# --------------------------------------------------------------------------


@struct.dataclass
class Detector:
  """A one-hidden-layer MLP on standardised features; score > 0 = adversarial.

  Attributes:
    params: ``{"w1" [D, H], "b1" [H], "w2" [H], "b2" []}``.
    mean: ``[D]`` feature means of the training set.
    std: ``[D]`` feature standard deviations (floored).
  """

  params: dict
  mean: jax.Array
  std: jax.Array


def layer_features(features_fn, params, x: jax.Array, *, layers) -> jax.Array:
  """Named activations of ``features_fn(params, x) -> {name: [B, ...]}``, flattened
  and concatenated into ``[B, D]``."""
  acts = features_fn(params, x)
  missing = [name for name in layers if name not in acts]
  if missing:
    raise ValueError(f"layers {missing} not among the activations {sorted(acts)}.")
  return jnp.concatenate([acts[name].reshape(x.shape[0], -1) for name in layers], -1)


def detector_scores(detector: Detector, features: jax.Array) -> jax.Array:
  """Logit of "adversarial" for each row of ``features [B, D]``, ``[B]``."""
  p = detector.params
  z = (features - detector.mean[None, :]) / detector.std[None, :]
  return jax.nn.relu(z @ p["w1"] + p["b1"][None, :]) @ p["w2"] + p["b2"]


def fit_detector(key: jax.Array, clean: jax.Array, adversarial: jax.Array, *,
                 hidden: int = 64, steps: int = 500, learning_rate: float = 1e-2,
                 weight_decay: float = 1e-4) -> tuple[Detector, jax.Array]:
  """A binary clean-vs-adversarial classifier trained full-batch with AdamW.

  Args:
    key: PRNG key for the initial weights.
    clean: ``[N0, D]`` features of clean inputs (label 0).
    adversarial: ``[N1, D]`` features of adversarial inputs (label 1).
    hidden: hidden units.
    steps: AdamW steps (a ``lax.scan``).
    learning_rate: AdamW step size.
    weight_decay: AdamW weight decay.

  Returns:
    ``(detector, losses [steps])``.
  """
  features = jnp.concatenate([clean, adversarial])
  is_adv = jnp.concatenate([jnp.zeros(clean.shape[0]), jnp.ones(adversarial.shape[0])])
  mean = jnp.mean(features, 0)
  std = jnp.maximum(jnp.std(features, 0), 1e-3)
  dim = features.shape[-1]
  k1, k2 = jax.random.split(key)
  params = {"w1": jax.random.normal(k1, (dim, hidden)) * jnp.sqrt(2.0 / dim),
            "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden,)) * jnp.sqrt(1.0 / hidden),
            "b2": jnp.zeros(())}
  params, values = _fit_balanced_logistic(
      lambda params: detector_scores(Detector(params, mean, std), features), params, is_adv,
      num_positive=adversarial.shape[0], num_negative=clean.shape[0], steps=steps,
      learning_rate=learning_rate, weight_decay=weight_decay)
  return Detector(params, mean, std), values


def _fit_balanced_logistic(scores_fn, params, is_positive: jax.Array, *, num_positive: int,
                           num_negative: int, steps: int, learning_rate: float,
                           weight_decay: float):
  """Logistic regression of ``scores_fn(params) [N]`` on ``is_positive [N]``, the two
  classes weighed equally whatever their counts: full batch, AdamW, a ``lax.scan``.
  Returns ``(params, losses [steps])``."""
  weights = jnp.where(is_positive > 0, 0.5 / num_positive, 0.5 / num_negative)
  tx = optax.adamw(learning_rate, weight_decay=weight_decay)

  def loss(params):
    return jnp.sum(weights * optax.sigmoid_binary_cross_entropy(scores_fn(params),
                                                                is_positive))

  def step(carry, _):
    params, opt_state = carry
    value, grad = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grad, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), value

  (params, _), values = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
  return params, values


def roc_auc(scores: jax.Array, is_positive: jax.Array) -> jax.Array:
  """Area under the ROC curve: P(score of a positive > score of a negative).

  Ties count one half (the Mann-Whitney statistic). Exact, ``O(P N)`` memory.

  Args:
    scores: ``[B]`` higher = more positive.
    is_positive: bool ``[B]``.

  Returns:
    A float scalar in [0, 1] (NaN without both classes).
  """
  is_positive = jnp.asarray(is_positive, bool)
  diff = scores[:, None] - scores[None, :]
  pair = is_positive[:, None] & ~is_positive[None, :]
  wins = jnp.where(diff > 0, 1.0, jnp.where(diff == 0, 0.5, 0.0))
  return jnp.sum(jnp.where(pair, wins, 0.0)) / jnp.sum(pair)


__all__ = [
    "Detector", "Placement", "TemperatureScaled", "apply_patch",
    "cross_entropy_loss", "detector_scores", "fit", "fit_detector",
    "fooling_rate", "layer_features", "make_adversarial_loss",
    "patch_success_rate", "place_patch", "predict_proba", "project_ball",
    "random_placements", "roc_auc", "temperature_loss", "train_patch", "uap_step",
    "universal_perturbation",
]


# --------------------------------------------------------------------------
# A fooling class added to a frozen classifier (Nguyen et al. 2015's n+1 retraining,
# with the network's K outputs kept and only the new one trained).
# --------------------------------------------------------------------------


@struct.dataclass
class FoolingClass:
  """Output K+1 of a frozen K-class net: an affine function of its standardised logits.

  ``logit_{K+1}(x) = w . (z(x) - mean) / std + b`` where ``z`` are the net's
  ``K`` logits. The K logits are the net's own, so real-class rankings are
  unchanged; the new output only takes probability from all of them.

  Attributes:
    params: ``{"w": [K], "b": []}``.
    mean: ``[K]`` logit means of the training set.
    std: ``[K]`` logit standard deviations (floored).
  """

  params: dict
  mean: jax.Array
  std: jax.Array


def fooling_class_logit(head: FoolingClass, logits: jax.Array) -> jax.Array:
  """The fooling output ``[B]`` for base logits ``[B, K]``."""
  z = (logits.astype(jnp.float32) - head.mean[None, :]) / head.std[None, :]
  return z @ head.params["w"] + head.params["b"]


def append_fooling_class(head: FoolingClass, logits: jax.Array) -> jax.Array:
  """The K+1 logits ``[B, K+1]``: the net's ``[B, K]`` and the fooling output last."""
  logits = logits.astype(jnp.float32)
  return jnp.concatenate([logits, fooling_class_logit(head, logits)[:, None]], axis=-1)


def fooling_class_margin(head: FoolingClass, logits: jax.Array) -> jax.Array:
  """``logit_{K+1} - logsumexp(logits)`` ``[B]``: the fooling class's log-odds.

  ``sigmoid`` of it is the fooling class's share of the K+1-way softmax.
  """
  return fooling_class_logit(head, logits) - jax.nn.logsumexp(
      logits.astype(jnp.float32), axis=-1)


def fit_fooling_class(fooling_logits: jax.Array, real_logits: jax.Array, *,
                      steps: int = 1000, learning_rate: float = 1e-2,
                      weight_decay: float = 1e-3) -> tuple[FoolingClass, jax.Array]:
  """Trains output K+1 on the frozen net's logits of fooling and real images.

  The loss is the K+1-way cross-entropy with label K+1 for fooling images and,
  for real images, the frozen net's own softmax as the target (its K outputs
  cannot change). With the K logits frozen this is exactly logistic regression
  of :func:`fooling_class_margin` (``softplus(-margin)`` for a fooling image,
  ``softplus(margin)`` plus a constant for a real one), so it is what
  fine-tuning the new output alone minimises. The two groups weigh equally
  whatever their counts; full batch, AdamW, a ``lax.scan`` over ``steps``.

  Args:
    fooling_logits: ``[N1, K]`` the net's logits of fooling images.
    real_logits: ``[N0, K]`` its logits of real images.
    steps: AdamW steps.
    learning_rate: AdamW step size.
    weight_decay: AdamW weight decay on ``w`` and ``b``.

  Returns:
    ``(head, losses [steps])``.
  """
  fooling_logits = jnp.asarray(fooling_logits, jnp.float32)
  real_logits = jnp.asarray(real_logits, jnp.float32)
  if fooling_logits.ndim != 2 or real_logits.ndim != 2 or (
      fooling_logits.shape[1] != real_logits.shape[1]):
    raise ValueError(
        f"fit_fooling_class: logits must be [N, K] with the same K, got "
        f"{fooling_logits.shape} and {real_logits.shape}. Fix: pass the classifier's "
        "logits of the fooling and of the real images.")
  if fooling_logits.shape[0] == 0 or real_logits.shape[0] == 0:
    raise ValueError("fit_fooling_class: needs at least one fooling and one real image.")
  logits = jnp.concatenate([fooling_logits, real_logits])
  is_fooling = jnp.concatenate([jnp.ones(fooling_logits.shape[0]),
                                jnp.zeros(real_logits.shape[0])])
  mean = jnp.mean(logits, 0)
  std = jnp.maximum(jnp.std(logits, 0), 1e-3)
  params = {"w": jnp.zeros(logits.shape[1]), "b": jnp.zeros(())}
  params, values = _fit_balanced_logistic(
      lambda params: fooling_class_margin(FoolingClass(params, mean, std), logits), params,
      is_fooling, num_positive=fooling_logits.shape[0], num_negative=real_logits.shape[0],
      steps=steps, learning_rate=learning_rate, weight_decay=weight_decay)
  return FoolingClass(params, mean, std), values


@dataclasses.dataclass(frozen=True, eq=False)
class WithFoolingClass:
  """``apply_fn(params, x) -> [B, K+1]`` logits: the frozen net's and the fooling output.

  ``params`` is ``{"base": the net's params, "fooling_class": FoolingClass}``
  (see :func:`with_fooling_class`).
  """

  base: Callable[[Any, jax.Array], jax.Array]
  input_shape: tuple | None
  num_classes: int | None
  name: str = "with_fooling_class"

  def __call__(self, params, x: jax.Array) -> jax.Array:
    return append_fooling_class(params["fooling_class"], self.base(params["base"], x))


def with_fooling_class(apply_fn: Callable, params: Any,
                       head: FoolingClass) -> tuple[WithFoolingClass, dict]:
  """The K+1-class net ``(apply_fn, params)``: class index K is the fooling class."""
  k = getattr(apply_fn, "num_classes", None)
  if k is not None and head.mean.shape != (k,):
    raise ValueError(f"with_fooling_class: the head was fitted on {head.mean.shape[0]} "
                     f"logits but the net has {k}. Fix: fit it on this net's logits.")
  wrapped = WithFoolingClass(base=apply_fn, input_shape=getattr(apply_fn, "input_shape", None),
                             num_classes=None if k is None else int(k) + 1,
                             name=f"with_fooling_class({getattr(apply_fn, 'name', 'apply_fn')})")
  return wrapped, {"base": params, "fooling_class": head}
