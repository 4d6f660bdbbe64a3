"""Classifier training with optax: one loop for every loss.

:func:`fit` trains a zoo model (or given starting params) on any
:data:`Loss`: plain cross-entropy by default; adversarial training and
defensive distillation (:mod:`foolingjax.defenses`) pass their own. The
training split stays in host memory as uint8; each batch is one jitted step.
Each epoch ends with a pickle-free atomic checkpoint, so an interrupted
:func:`fit` resumes from the last finished epoch with the same result as an
uninterrupted one: batch orders are ``fold_in(order_key, epoch)`` and the
loss's keys ``fold_in(loss_key, step)``, with the step restored from the
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from foolingjax import checkpoint, models
from foolingjax.contract import ApplyFn, Classifier


def default_config() -> ml_collections.ConfigDict:
  """Training hyperparameters shared by all zoo models (presets override).

  Optional keys a preset may add (absent here so that adding them left every
  existing preset's config hash, and so its cached and bundled weights, as
  they were):

  * ``layer_weight_decay``: per-layer λ, ``"fc1:1e-5,fc2:1e-5,out:1e-6"`` (the
    names of the params' top-level layers); a layer not named takes
    ``weight_decay``.
  * ``weight_decay_per_unit``: if True, each layer's penalty is
    ``λ/k · Σ w²`` with ``k`` its number of output units (Szegedy et al.'s
    form), not ``λ · Σ w²``.
  * ``frozen``: comma-separated layers left untouched by the classification
    phase (e.g. AE400-10's encoder, frozen under its softmax).
  * ``ae_loss``: ``"mse"`` (default) or ``"sparse"``: the pre-training loss of
    an autoencoder, see :func:`sparse_reconstruction_loss` with
    ``ae_sparsity_target`` (ρ), ``ae_sparsity_weight`` (β) and
    ``ae_weight_decay`` (λ·Σ w² over its kernels); ``ae_learning_rate`` its
    learning rate (default ``learning_rate``).
  """
  c = ml_collections.ConfigDict()
  c.model = "lenet"
  c.dataset = "mnist"
  c.num_classes = 10
  c.seed = 0
  c.epochs = 8
  c.batch_size = 64
  c.optimizer = "adam"   # adam | sgd
  c.learning_rate = 1e-3
  c.momentum = 0.9       # sgd only
  c.schedule = "cosine"  # cosine | constant
  c.weight_decay = 0.0   # λ: adds λ·Σ w² over kernels to the loss (Szegedy's FC10(λ))
  c.ae_pretrain_epochs = 0  # AE400-10: reconstruction epochs before classification
  c.eval_batch_size = 1000
  return c


class TrainState(train_state.TrainState):
  pass


def l2_penalty(params) -> jax.Array:
  """Σ w² over every kernel (biases are not decayed)."""
  return sum(jnp.sum(jnp.square(w)) for _, w in _kernels(params))


def _kernels(params) -> list[tuple[str, jax.Array]]:
  """``(layer name, kernel)`` of every kernel: the name is the key above ``kernel``."""
  return [(str(getattr(path[-2], "key", path[-2])) if len(path) > 1 else "", w)
          for path, w in jax.tree_util.tree_leaves_with_path(params)
          if getattr(path[-1], "key", None) == "kernel"]


def parse_layer_values(text: str, name: str = "layer_weight_decay") -> dict[str, float]:
  """``"fc1:1e-5,out:1e-6"`` -> ``{"fc1": 1e-5, "out": 1e-6}``."""
  values = {}
  for item in filter(None, (t.strip() for t in (text or "").split(","))):
    layer, sep, value = item.partition(":")
    try:
      number = float(value)
    except ValueError:
      number = -1.0
    if not sep or not layer or not number >= 0:
      raise ValueError(f"config.{name} takes 'layer:λ' pairs with λ >= 0, e.g. "
                       f"'fc1:1e-5,out:1e-6'; got {item!r} in {text!r}.")
    values[layer.strip()] = number
  return values


def make_penalty(config, params) -> Callable[[Any], jax.Array] | None:
  """The weight-decay term of ``config`` as ``penalty(params) -> scalar``, or None.

  ``λ · Σ w²`` over every kernel with ``config.weight_decay``; per layer with
  ``config.layer_weight_decay``; ``λ/k · Σ w²`` (``k`` the layer's output
  units) with ``config.weight_decay_per_unit``.

  Raises:
    ValueError: ``layer_weight_decay`` names a layer ``params`` does not have.
  """
  per_layer = parse_layer_values(config.get("layer_weight_decay", ""))
  layers = {name for name, _ in _kernels(params)}
  unknown = sorted(set(per_layer) - layers)
  if unknown:
    raise ValueError(f"config.layer_weight_decay names {', '.join(unknown)}, which "
                     f"{config.model} does not have. Fix: name its layers: "
                     f"{', '.join(sorted(layers))}.")
  per_unit = bool(config.get("weight_decay_per_unit", False))
  default = float(config.weight_decay)
  if not per_layer and not per_unit:
    return (lambda p: default * l2_penalty(p)) if default else None
  if not default and not any(per_layer.values()):
    return None

  def penalty(p):
    total = jnp.zeros(())
    for name, w in _kernels(p):
      lam = per_layer.get(name, default)
      if lam:
        total = total + (lam / w.shape[-1] if per_unit else lam) * jnp.sum(jnp.square(w))
    return total

  return penalty


def frozen_layers(config, params) -> tuple[str, ...]:
  """The top-level layers ``config.frozen`` names, checked against ``params``."""
  names = tuple(filter(None, (t.strip() for t in config.get("frozen", "").split(","))))
  unknown = sorted(set(names) - set(params))
  if unknown:
    raise ValueError(f"config.frozen names {', '.join(unknown)}, which {config.model} "
                     f"does not have. Fix: name its layers: {', '.join(sorted(params))}.")
  return names


def make_optimizer(config, steps_total: int) -> optax.GradientTransformation:
  if config.schedule == "cosine":
    lr = optax.cosine_decay_schedule(config.learning_rate, max(steps_total, 1))
  elif config.schedule == "constant":
    lr = config.learning_rate
  else:
    raise ValueError(f"Unknown schedule {config.schedule!r}; use 'cosine' or 'constant'.")
  if config.optimizer == "adam":
    return optax.adam(lr)
  if config.optimizer == "sgd":
    return optax.sgd(lr, momentum=config.momentum)
  raise ValueError(f"Unknown optimizer {config.optimizer!r}; use 'adam' or 'sgd'.")


def _freeze(tx: optax.GradientTransformation, params, frozen: tuple[str, ...]):
  """``tx`` on every top-level layer but ``frozen``, whose updates are zero."""
  if not frozen:
    return tx
  labels = {name: jax.tree.map(lambda _, tag="frozen" if name in frozen else "train": tag, sub)
            for name, sub in params.items()}
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


# ``loss_fn(apply_fn, params, x, y, key) -> scalar``: ``x`` float32
# ``[B, H, W, C]`` in [0, 1]; ``y`` int labels ``[B]`` or probabilities
# ``[B, K]``; ``key`` a per-step PRNG key (unused by deterministic losses).
Loss = Callable[[Callable, Any, jax.Array, jax.Array, jax.Array], jax.Array]


def cross_entropy(apply_fn: Callable, params, x: jax.Array, y: jax.Array,
                  key: jax.Array | None = None) -> jax.Array:
  """Mean cross-entropy of ``apply_fn(params, x)``; the default :data:`Loss`.

  Args:
    apply_fn: classifier.
    params: its parameters.
    x: float32 ``[B, H, W, C]`` in [0, 1].
    y: int labels ``[B]`` or probabilities ``[B, K]``.
    key: unused.

  Returns:
    A float scalar.
  """
  del key
  logits = apply_fn(params, x)
  if y.ndim == 1:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return optax.softmax_cross_entropy(logits, y).mean()


def reconstruction_loss(apply_fn: ApplyFn, params, x: jax.Array, y: jax.Array,
                        key: jax.Array | None = None) -> jax.Array:
  """Mean squared error of an autoencoder's ``reconstruct`` (a :data:`Loss`)."""
  del y, key
  out = dataclasses.replace(apply_fn, method="reconstruct")(params, x)
  return jnp.mean(jnp.square(out - x))


def sparse_reconstruction_loss(target: float = 0.1, weight: float = 3.0) -> Loss:
  """A sparse autoencoder's pre-training loss (a :data:`Loss`).

  ``½ · mean over images of Σ_pixels (x̂ − x)² + β · Σ_j KL(ρ ‖ ρ̂_j)`` with
  ``ρ̂_j`` unit j's mean code activation over the batch: the sparse
  autoencoder of Ng's UFLDL notes (their MNIST exercise: ρ = 0.1, β = 3).

  Args:
    target: ρ, the mean activation each code unit is pulled towards, in (0, 1).
    weight: β, the weight of the sparsity term.
  """
  if not 0.0 < target < 1.0 or not weight >= 0.0:
    raise ValueError(f"sparse_reconstruction_loss needs 0 < target < 1 and weight >= 0; "
                     f"got target={target}, weight={weight}.")

  def loss(apply_fn: ApplyFn, params, x, y, key=None):
    del y, key
    code, out = dataclasses.replace(apply_fn, method="code_and_reconstruction")(params, x)
    error = 0.5 * jnp.mean(jnp.sum(jnp.square(out - x).reshape((x.shape[0], -1)), -1))
    rho_hat = jnp.clip(jnp.mean(code, 0), 1e-6, 1 - 1e-6)
    kl = (target * jnp.log(target / rho_hat)
          + (1 - target) * jnp.log((1 - target) / (1 - rho_hat)))
    return error + weight * jnp.sum(kl)

  return loss


def make_train_step(loss_fn: Loss, *, weight_decay: float = 0.0,
                    penalty: Callable[[Any], jax.Array] | None = None):
  """``step(state, loss_key, images_u8 [B, ...], y) -> (state, loss)``.

  The loss sees ``fold_in(loss_key, state.step)``, so a resumed run draws the
  same keys. ``weight_decay`` adds ``λ·Σ w²`` over kernels to the loss;
  ``penalty(params)`` (see :func:`make_penalty`) adds any other weight decay.

  The epoch loop over batches stays in Python on purpose: on XLA:CPU a
  convolution's backward pass inside ``lax.scan`` runs 4-9x slower than the
  same step dispatched from Python (measured on LeNet, jax 0.10), and the
  dispatch overhead of one call per batch is negligible next to it.
  """

  def step(state: TrainState, loss_key, images_u8, y):
    x = images_u8.astype(jnp.float32) / 255.0
    key = jax.random.fold_in(loss_key, state.step)

    def objective(params):
      loss = loss_fn(state.apply_fn, params, x, y, key)
      if weight_decay:
        loss = loss + weight_decay * l2_penalty(params)
      if penalty is not None:
        loss = loss + penalty(params)
      return loss

    loss, grads = jax.value_and_grad(objective)(state.params)
    return state.apply_gradients(grads=grads), loss

  return step


def epoch_batches(key, n: int, batch_size: int) -> np.ndarray:
  """Shuffled batch indices ``[n // batch_size, batch_size]`` (last partial dropped)."""
  steps = n // batch_size
  perm = np.asarray(jax.random.permutation(key, n))
  return perm[: steps * batch_size].reshape(steps, batch_size)


def make_eval_fn(apply_fn: Callable, *, batch_size: int):
  """``evaluate(params, images_u8, labels) -> (accuracy, mean loss)`` in batches."""

  def evaluate(params, images_u8, labels):
    n = images_u8.shape[0]
    steps = -(-n // batch_size)
    pad = steps * batch_size - n
    x = jnp.pad(images_u8, [(0, pad)] + [(0, 0)] * (images_u8.ndim - 1))
    y = jnp.pad(labels, (0, pad))
    valid = jnp.arange(steps * batch_size) < n
    x = x.reshape(steps, batch_size, *images_u8.shape[1:])
    y, valid = y.reshape(steps, batch_size), valid.reshape(steps, batch_size)

    def body(carry, batch):
      xb, yb, vb = batch
      logits = apply_fn(params, xb.astype(jnp.float32) / 255.0)
      correct = jnp.sum((jnp.argmax(logits, -1) == yb) & vb)
      loss = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, yb) * vb)
      return carry, (correct, loss)

    _, (correct, loss) = jax.lax.scan(body, None, (x, y, valid))
    return jnp.sum(correct) / n, jnp.sum(loss) / n

  return evaluate


def fit(config: ml_collections.ConfigDict, train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray] | None = None, *,
        workdir: str | pathlib.Path | None = None,
        log: Callable[[str], None] | None = print,
        loss_fn: Loss = cross_entropy, init: tuple | None = None,
        fingerprint: dict | None = None,
        key: jax.Array | None = None) -> tuple[Classifier, dict]:
  """Trains a classifier on ``loss_fn``; resumes from ``workdir``'s last epoch.

  With ``config.ae_pretrain_epochs`` an autoencoder first trains on
  :func:`reconstruction_loss` (its own optimiser and checkpoints).

  Args:
    config: see :func:`default_config`.
    train: uint8 images ``[N, H, W, C]`` and targets: int labels ``[N]`` or
      probabilities ``[N, num_classes]`` (soft labels, e.g. a teacher's).
    test: optional held-out uint8 images and int labels, evaluated after every
      epoch.
    workdir: directory for per-epoch checkpoints (``None``: no checkpoints).
      A rerun with the same arguments resumes bit-identically, whatever the
      loss.
    log: progress printer (``None`` for silence).
    loss_fn: a :data:`Loss`, ``loss_fn(apply_fn, params, x, y, key) ->
      scalar``, called once per batch with ``x`` float32 ``[B, H, W, C]`` in
      [0, 1], ``y`` the batch's targets (``[B]`` or ``[B, K]``) and a fresh
      key; it may run an attack (adversarial training) or close over a
      temperature (distillation). ``config.weight_decay·Σ w²`` over kernels is
      added to it. Default: :func:`cross_entropy`.
    init: ``(apply_fn, params)`` to start from (copied, never donated);
      default ``models.init(config.model, ...)`` from ``config.seed``.
    key: PRNG key of the classification phase, split into its batch-order and
      loss keys; default: derived from ``config.seed``.
    fingerprint: what else identifies this run (JSON-able; e.g. the loss's
      name and settings, which cannot be hashed). The checkpoints also record
      digests of the config, the training data, ``init``'s params and ``key``;
      a checkpoint in ``workdir`` that differs in any of them is refused with
      :class:`~foolingjax.checkpoint.CheckpointError`, never resumed.

  Returns:
    ``(Classifier(apply_fn, params), history)`` where history holds per-epoch
    ``phase``, ``epoch``, ``train_loss``, ``train_accuracy`` (against the
    argmax of soft targets), ``test_accuracy`` and ``seconds``.
  """
  log = log or (lambda s: None)
  images, labels = _validate_split(train, config.num_classes, "train", soft_ok=True)
  root = jax.random.key(config.seed)
  k_init, k_pre, k_train = jax.random.split(root, 3)
  # The loss keys come from a stream of their own so that adding them left the
  # seed's initialisation and batch orders (and so every zoo model) unchanged.
  k_pre_loss, k_train_loss = jax.random.split(jax.random.fold_in(root, 3))
  if key is not None:
    k_train, k_train_loss = jax.random.split(key)
  if init is None:
    apply_fn, params = models.init(config.model, k_init,
                                   input_shape=tuple(images.shape[1:]),
                                   num_classes=config.num_classes)
  else:
    apply_fn, params = init
    params = jax.tree.map(jnp.copy, params)  # the step donates its state
  steps_per_epoch = images.shape[0] // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"batch_size {config.batch_size} exceeds the {images.shape[0]} "
                     "training images. Fix: lower config.batch_size.")
  eval_labels = labels if labels.ndim == 1 else np.argmax(labels, -1).astype(np.int32)
  images_d, eval_labels_d = jnp.asarray(images), jnp.asarray(eval_labels)
  evaluate = jax.jit(make_eval_fn(apply_fn, batch_size=config.eval_batch_size))
  if test is not None:
    test_x, test_y = _validate_split(test, config.num_classes, "test")
    test_x, test_y = jnp.asarray(test_x), jnp.asarray(test_y)

  if workdir is not None:
    fingerprint = {"kind": "training", **(fingerprint or {}),
                   "config": checkpoint.digest(np.frombuffer(json.dumps(
                       config.to_dict(), sort_keys=True).encode(), np.uint8)),
                   "data": checkpoint.digest(images, labels),
                   "init": checkpoint.digest(params) if init is not None else None,
                   "key": checkpoint.digest(key) if key is not None else None}
  phases = []
  if config.ae_pretrain_epochs:
    ae_loss = config.get("ae_loss", "mse")
    if ae_loss == "mse":
      pre_loss = reconstruction_loss
    elif ae_loss == "sparse":
      pre_loss = sparse_reconstruction_loss(config.get("ae_sparsity_target", 0.1),
                                            config.get("ae_sparsity_weight", 3.0))
    else:
      raise ValueError(f"Unknown config.ae_loss {ae_loss!r}; use 'mse' or 'sparse'.")
    phases.append(("pretrain", config.ae_pretrain_epochs,
                   make_train_step(pre_loss, weight_decay=config.get("ae_weight_decay", 0.0)),
                   k_pre, k_pre_loss, ()))
  phases.append(("train", config.epochs,
                 make_train_step(loss_fn, penalty=make_penalty(config, params)),
                 k_train, k_train_loss, frozen_layers(config, params)))

  history: dict[str, list] = {"phase": [], "epoch": [], "train_loss": [],
                              "train_accuracy": [], "test_accuracy": [], "seconds": []}
  for phase, epochs, step_fn, order_key, loss_key, frozen in phases:
    phase_config = config
    if phase == "pretrain" and "ae_learning_rate" in config:
      phase_config = config.copy_and_resolve_references()
      phase_config.learning_rate = config.ae_learning_rate
    tx = _freeze(make_optimizer(phase_config, epochs * steps_per_epoch), params, frozen)
    # step as an int32 array from the start, the dtype apply_gradients leaves it
    # in, so a checkpoint restores into a fresh state without a dtype mismatch.
    state = TrainState.create(apply_fn=apply_fn, params=params, tx=tx).replace(
        step=jnp.zeros((), jnp.int32))
    start = 0
    if workdir is not None:
      last = checkpoint.latest(workdir, prefix=phase)
      if last is not None:
        state, meta = checkpoint.restore(last, state, fingerprint=fingerprint)
        history = meta["history"]
        start = meta["epoch"] + 1
        log(f"[{phase}] resumed from {last.name} (epoch {meta['epoch'] + 1}/{epochs})")
    train_step = jax.jit(step_fn, donate_argnums=0)
    for epoch in range(start, epochs):
      t0 = time.perf_counter()
      losses = []
      for idx in epoch_batches(jax.random.fold_in(order_key, epoch), len(images),
                               config.batch_size):
        state, loss = train_step(state, loss_key, images[idx], labels[idx])
        losses.append(loss)
      mean_loss = float(jnp.mean(jnp.stack(losses)))
      seconds = time.perf_counter() - t0
      train_acc = test_acc = float("nan")
      if phase == "train":
        train_acc = float(evaluate(state.params, images_d, eval_labels_d)[0])
        if test is not None:
          test_acc = float(evaluate(state.params, test_x, test_y)[0])
      for name, value in (("phase", phase), ("epoch", epoch + 1), ("train_loss", mean_loss),
                          ("train_accuracy", train_acc), ("test_accuracy", test_acc),
                          ("seconds", seconds)):
        history[name].append(value)
      if workdir is not None:
        checkpoint.save(checkpoint.step_path(workdir, epoch, prefix=phase), state,
                        meta={"epoch": epoch, "phase": phase, "model": config.model,
                              "history": history},
                        fingerprint=fingerprint)
        checkpoint.prune(workdir, keep=2, prefix=phase)
      # Logged after the checkpoint: a run stopped at this line resumes after it.
      log(f"[{config.model}/{phase}] epoch {epoch + 1}/{epochs} loss {mean_loss:.4f} "
          f"train acc {train_acc:.4f} test acc {test_acc:.4f} ({seconds:.1f}s)")
    params = state.params
  return Classifier(apply_fn, params), history


def _validate_split(split, num_classes, name, *, soft_ok=False):
  images, labels = split
  images, labels = np.asarray(images), np.asarray(labels)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"{name} images must be uint8 [N, H, W, C]; got {images.dtype} "
                     f"{images.shape}. Fix: use foolingjax.data.load or convert with "
                     "np.round(x * 255).astype(np.uint8).")
  n = images.shape[0]
  if soft_ok and labels.ndim == 2:
    if labels.shape != (n, num_classes) or not np.issubdtype(labels.dtype, np.floating):
      raise ValueError(f"{name} soft labels must be float [{n}, {num_classes}]; got "
                       f"{labels.dtype} {labels.shape}. Fix: set config.num_classes.")
    return images, labels.astype(np.float32)
  if labels.shape != (n,):
    soft = f" or ({n}, {num_classes}) probabilities" if soft_ok else ""
    raise ValueError(f"{name} labels must have shape ({n},){soft}; got {labels.shape}.")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"{name} labels must lie in [0, {num_classes}); got range "
                     f"[{labels.min()}, {labels.max()}]. Fix: set config.num_classes.")
  return images, labels.astype(np.int32)


def accuracy(classifier: tuple, images_u8: np.ndarray, labels: np.ndarray,
             batch_size: int = 1000) -> float:
  """Top-1 accuracy of any ``(apply_fn, params)`` pair on uint8 images."""
  apply_fn, params = classifier
  evaluate = jax.jit(make_eval_fn(apply_fn, batch_size=min(batch_size, len(labels))))
  return float(evaluate(params, jnp.asarray(images_u8), jnp.asarray(labels))[0])

