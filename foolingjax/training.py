"""Classifier training with optax: jitted epochs as one ``lax.scan`` over batches.

The whole training split lives on the device as uint8; an epoch is one jitted
call that permutes it, scans over the batches and returns the per-step losses.
Each epoch ends with a pickle-free atomic checkpoint, so an interrupted
:func:`fit` resumes from the last finished epoch with the same result as an
uninterrupted one (per-epoch keys are ``fold_in(key, epoch)``).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from foolingjax import checkpoint, models
from foolingjax.contract import ApplyFn, Classifier


def default_config() -> ml_collections.ConfigDict:
  """Training hyperparameters shared by all zoo models (presets override)."""
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
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return sum(jnp.sum(jnp.square(w)) for path, w in leaves
             if getattr(path[-1], "key", None) == "kernel")


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


def cross_entropy_loss(apply_fn: Callable, weight_decay: float):
  def loss_fn(params, images, labels):
    logits = apply_fn(params, images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    if weight_decay:
      loss = loss + weight_decay * l2_penalty(params)
    return loss, logits
  return loss_fn


def reconstruction_loss(apply_fn: ApplyFn):
  recon = dataclasses.replace(apply_fn, method="reconstruct")

  def loss_fn(params, images, labels):
    del labels
    out = recon(params, images)
    return jnp.mean(jnp.square(out - images)), None
  return loss_fn


def make_train_step(loss_fn: Callable):
  """``step(state, images_u8 [B, ...], labels [B]) -> (state, loss)``.

  The epoch loop over batches stays in Python on purpose: on XLA:CPU a
  convolution's backward pass inside ``lax.scan`` runs 4-9x slower than the
  same step dispatched from Python (measured on LeNet, jax 0.10), and the
  dispatch overhead of one call per batch is negligible next to it.
  """

  def step(state: TrainState, images_u8, labels):
    x = images_u8.astype(jnp.float32) / 255.0
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, _), grads = grad_fn(state.params, x, labels)
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
        log: Callable[[str], None] | None = print) -> tuple[Classifier, dict]:
  """Trains a zoo model; resumes from ``workdir``'s last epoch checkpoint.

  Args:
    config: see :func:`default_config`.
    train: uint8 images ``[N, H, W, C]`` and int labels ``[N]``.
    test: optional held-out split evaluated after every epoch.
    workdir: directory for per-epoch checkpoints (``None``: no checkpoints).
    log: progress printer (``None`` for silence).

  Returns:
    ``(Classifier(apply_fn, params), history)`` where history holds per-epoch
    ``train_loss``, ``train_accuracy``, ``test_accuracy`` and ``seconds``.
  """
  log = log or (lambda s: None)
  images, labels = _validate_split(train, config.num_classes, "train")
  input_shape = tuple(images.shape[1:])
  key = jax.random.key(config.seed)
  k_init, k_pre, k_train = jax.random.split(key, 3)
  apply_fn, params = models.init(config.model, k_init, input_shape=input_shape,
                                 num_classes=config.num_classes)
  steps_per_epoch = images.shape[0] // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"batch_size {config.batch_size} exceeds the {images.shape[0]} "
                     "training images. Fix: lower config.batch_size.")
  images_d, labels_d = jnp.asarray(images), jnp.asarray(labels)
  evaluate = jax.jit(make_eval_fn(apply_fn, batch_size=config.eval_batch_size))

  phases = []
  if config.ae_pretrain_epochs:
    phases.append(("pretrain", config.ae_pretrain_epochs, reconstruction_loss(apply_fn), k_pre))
  phases.append(("train", config.epochs, cross_entropy_loss(apply_fn, config.weight_decay),
                 k_train))

  history: dict[str, list] = {"phase": [], "epoch": [], "train_loss": [],
                              "train_accuracy": [], "test_accuracy": [], "seconds": []}
  for phase, epochs, loss_fn, phase_key in phases:
    tx = make_optimizer(config, epochs * steps_per_epoch)
    # step as an int32 array from the start, the dtype apply_gradients leaves it
    # in, so a checkpoint restores into a fresh state without a dtype mismatch.
    state = TrainState.create(apply_fn=apply_fn, params=params, tx=tx).replace(
        step=jnp.zeros((), jnp.int32))
    start = 0
    if workdir is not None:
      last = checkpoint.latest(workdir, prefix=phase)
      if last is not None:
        state, meta = checkpoint.restore(last, state)
        history = meta["history"]
        start = meta["epoch"] + 1
        log(f"[{phase}] resumed from {last.name} (epoch {meta['epoch'] + 1}/{epochs})")
    train_step = jax.jit(make_train_step(loss_fn), donate_argnums=0)
    for epoch in range(start, epochs):
      t0 = time.perf_counter()
      losses = []
      for idx in epoch_batches(jax.random.fold_in(phase_key, epoch), len(images),
                               config.batch_size):
        state, loss = train_step(state, images[idx], labels[idx])
        losses.append(loss)
      mean_loss = float(jnp.mean(jnp.stack(losses)))
      seconds = time.perf_counter() - t0
      train_acc = test_acc = float("nan")
      if phase == "train":
        train_acc = float(evaluate(state.params, images_d, labels_d)[0])
        if test is not None:
          test_x, test_y = _validate_split(test, config.num_classes, "test")
          test_acc = float(evaluate(state.params, jnp.asarray(test_x), jnp.asarray(test_y))[0])
      for name, value in (("phase", phase), ("epoch", epoch + 1), ("train_loss", mean_loss),
                          ("train_accuracy", train_acc), ("test_accuracy", test_acc),
                          ("seconds", seconds)):
        history[name].append(value)
      if workdir is not None:
        checkpoint.save(checkpoint.step_path(workdir, epoch, prefix=phase), state,
                        meta={"epoch": epoch, "phase": phase, "model": config.model,
                              "history": history})
        checkpoint.prune(workdir, keep=2, prefix=phase)
      # Logged after the checkpoint: a run stopped at this line resumes after it.
      log(f"[{config.model}/{phase}] epoch {epoch + 1}/{epochs} loss {mean_loss:.4f} "
          f"train acc {train_acc:.4f} test acc {test_acc:.4f} ({seconds:.1f}s)")
    params = state.params
  return Classifier(apply_fn, params), history


def _validate_split(split, num_classes, name):
  images, labels = split
  images, labels = np.asarray(images), np.asarray(labels)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"{name} images must be uint8 [N, H, W, C]; got {images.dtype} "
                     f"{images.shape}. Fix: use foolingjax.data.load or convert with "
                     "np.round(x * 255).astype(np.uint8).")
  if labels.shape != (images.shape[0],):
    raise ValueError(f"{name} labels must have shape ({images.shape[0]},); got {labels.shape}.")
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

