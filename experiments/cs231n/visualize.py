"""Seeing inside a CNN: writes one PNG figure per technique, plus summary.json.

  python -m experiments.cs231n.visualize --config=experiments/cs231n/configs/visualize.py:mnist \
      --workdir=runs/visualize_mnist
  python -m experiments.cs231n.visualize --config=experiments/cs231n/configs/visualize.py:imagenet \
      --workdir=runs/visualize_imagenet

Parts (``config.parts``, comma separated): attribution, class_models, units,
patches, filters, tsne, inversion, deepdream, style. Figures land in
``WORKDIR/figures/<part>.png``; every number in summary.json is measured in the
run (seconds per part included).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app

from experiments import common
from foolingjax import data, images, models, zoo
from foolingjax import visualize as vis
from foolingjax.contract import ApplyFn, Classifier

_CONFIG = common.CONFIG
_WORKDIR = common.WORKDIR

PARTS = ("attribution", "class_models", "units", "patches", "filters", "tsne",
         "inversion", "deepdream", "style")
IMAGENET = "efficientnet_lite0"


def load_classifier(config) -> Classifier:
  """A zoo preset, ``random:<architecture>``, ``efficientnet_lite0`` or ``module:fn``."""
  name = config.classifier
  if name == IMAGENET:
    from foolingjax.models import efficientnet
    apply_fn, params = efficientnet.load_efficientnet_lite0()
    # Fully convolutional up to its global pool: the CPU demos run smaller.
    return Classifier(dataclasses.replace(apply_fn, input_shape=(None, None, 3)), params)
  if name.startswith("random:"):
    return models.init(name.partition(":")[2], jax.random.key(config.classifier_seed))
  if ":" in name:
    return common.load_user_classifier(name)
  return zoo.load_classifier(name, seed=config.classifier_seed)


def features_of(apply_fn):
  if isinstance(apply_fn, ApplyFn) and hasattr(apply_fn.module, "features"):
    return models.feature_fn(apply_fn)
  raise ValueError("The feature-based parts (units, patches, tsne, inversion, deepdream, "
                   "style) need a model with a .features method; drop them from "
                   "config.parts for this classifier.")


def class_names(config, num_classes: int) -> list[str]:
  if config.classifier == IMAGENET:
    from foolingjax import imagenet
    return list(imagenet.class_names())
  return [str(k) for k in range(num_classes)]


def load_photos(config) -> tuple[np.ndarray, list[str]]:
  """The shipped photos (scikit-image, matplotlib) at ``config.image_size``."""
  from foolingjax import imagenet
  arrays, names = [], []
  for name in config.photos.split(","):
    if name == "grace_hopper":
      import matplotlib.cbook
      with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        from PIL import Image
        pixels = np.asarray(Image.open(f).convert("RGB"))
    else:
      try:
        import skimage.data
      except ImportError:
        raise ImportError("The ImageNet photos come from scikit-image. Fix: pip install "
                          "scikit-image (or the test extra).") from None
      pixels = getattr(skimage.data, name)()
    arrays.append(imagenet.prepare_photo(pixels, size=config.image_size))
    names.append(name)
  return np.stack(arrays), names


def load_examples(config, apply_fn, params):
  if config.classifier == IMAGENET:
    x, names = load_photos(config)
    labels = np.asarray(jnp.argmax(apply_fn(params, jnp.asarray(x)), axis=-1))
    return x, labels, names
  x, y = data.load(config.dataset, "test")
  # The first example of each class, in class order.
  picks = [int(np.flatnonzero(y == k)[0]) for k in range(config.num_examples)]
  return data.to_float(x[picks]), y[picks], [f"test #{i}" for i in picks]


# --- figures -------------------------------------------------------------------

def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _show(ax, image, *, cmap=None, title=None):
  # Every panel is in [0, 1]: images, normalised maps and signed maps alike.
  ax.axis("off")
  image = np.clip(np.asarray(image), 0.0, 1.0)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
    cmap = cmap or "gray"
  ax.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
  if title:
    ax.set_title(title, fontsize=8)


def _save(fig, path):
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp.png")
  fig.savefig(tmp, dpi=config_dpi(fig))
  _plt().close(fig)
  tmp.replace(path)
  return path


def config_dpi(fig) -> int:
  # Keeps every figure well under 300 KB for the README gallery.
  width, height = fig.get_size_inches()
  return int(min(100, (1.6e6 / (width * height)) ** 0.5))


def _normalise(maps):
  # Scaled by the 99.5th percentile of |map| per image, then clipped: a few
  # extreme pixels would otherwise leave the rest of a gradient map black.
  maps = np.asarray(maps)
  flat = np.abs(maps.reshape(maps.shape[0], -1))
  scale = np.maximum(np.percentile(flat, 99.5, axis=1), 1e-12)
  return np.clip(maps / scale.reshape((-1,) + (1,) * (maps.ndim - 1)), -1.0, 1.0)


def _signed_image(grads):
  # Guided-backprop gradients shown as an image: grey is zero.
  return 0.5 + 0.5 * _normalise(grads)


# --- parts ---------------------------------------------------------------------

def part_attribution(config, key, apply_fn, params, x, labels, names, classes, path):
  labels = jnp.asarray(labels)
  x = jnp.asarray(x)

  # params are an argument, not a closed-over constant: XLA would otherwise
  # constant-fold through the weights at compile time.
  @jax.jit
  def explain(params, key, x, labels):
    grads = vis.saliency(apply_fn, params, x, labels)
    smooth = vis.smoothgrad(key, apply_fn, params, x, labels,
                            num_samples=config.smoothgrad_samples,
                            noise_level=config.smoothgrad_noise,
                            batch_size=config.eval_batch_size)
    guided = vis.guided_backprop(apply_fn, params, x, labels)
    sens = vis.occlusion(apply_fn, params, x, labels, patch=config.occlusion_patch,
                         stride=config.occlusion_stride,
                         batch_size=config.eval_batch_size)
    probs = jax.nn.softmax(apply_fn(params, x), axis=-1)
    return grads, smooth, guided, sens, probs

  grads, smooth, guided, sens, probs = explain(params, key, x, labels)
  height, width = x.shape[1:3]
  occ_pixels = vis.occlusion_to_pixels(sens, height=height, width=width,
                                       patch=config.occlusion_patch,
                                       stride=config.occlusion_stride)
  columns = [("input", None), ("|gradient|", "hot"), ("SmoothGrad", "hot"),
             ("guided backprop", None), ("occlusion", "RdBu_r")]
  panels = [np.asarray(x), _normalise(vis.saliency_map(grads)),
            _normalise(vis.saliency_map(smooth)), _signed_image(guided),
            0.5 + 0.5 * _normalise(occ_pixels)]
  plt = _plt()
  n = x.shape[0]
  fig, axes = plt.subplots(n, len(columns), figsize=(1.7 * len(columns), 1.7 * n + 0.3),
                           squeeze=False)
  for i in range(n):
    label = int(labels[i])
    for j, ((title, cmap), panel) in enumerate(zip(columns, panels)):
      caption = title if i == 0 else None
      if j == 0:
        caption = f"{names[i]}\n{classes[label][:18]} {float(probs[i, label]):.0%}"
      _show(axes[i, j], panel[i], cmap=cmap, title=caption)
  fig.tight_layout()
  _save(fig, path)
  return {"explained_labels": [int(v) for v in labels],
          "label_probability": [float(probs[i, int(labels[i])]) for i in range(n)],
          "max_occlusion_drop": [float(jnp.max(sens[i])) for i in range(n)]}


def _ascent_kwargs(config):
  return {"num_steps": config.ascent_steps, "step_size": config.ascent_step_size,
          "l2_decay": config.l2_decay, "blur_every": config.blur_every,
          "blur_sigma": config.blur_sigma,
          "norm_clip_percentile": config.norm_clip_percentile,
          "contribution_clip_percentile": config.contribution_clip_percentile,
          "jitter": config.jitter, "center": config.center}


def _start_images(key, config, n, shape):
  # A faint noise image around the "empty" value (Yosinski et al. start from
  # noise; a blank start gives the same pictures with jitter on).
  noise = config.init_noise * jax.random.normal(key, (n, *shape))
  return jnp.clip(config.center + noise, 0.0, 1.0)


def part_class_models(config, key, apply_fn, params, image_shape, classes, path):
  targets = jnp.asarray(config.class_targets)
  k_init, k_ascent = jax.random.split(key)
  x0 = _start_images(k_init, config, len(targets), image_shape)

  @jax.jit
  def visualise(params, k, x0):
    objective = vis.class_objective(apply_fn, params, targets)
    return vis.gradient_ascent(k, objective, x0, **_ascent_kwargs(config))

  x, trace = visualise(params, k_ascent, x0)
  probs = jax.nn.softmax(apply_fn(params, x), axis=-1)
  target_probs = [float(probs[i, int(t)]) for i, t in enumerate(targets)]
  images.save_grid(path, np.asarray(x), labels=[classes[int(t)][:18] for t in targets],
                   confidences=target_probs, ncols=min(len(targets), 10),
                   title="Class models by regularised gradient ascent (logit)")
  return {"targets": [int(t) for t in targets], "target_probability": target_probs,
          "logit_start": [float(v) for v in trace[0]],
          "logit_end": [float(v) for v in trace[-1]]}


def part_units(config, key, apply_fn, params, image_shape, path):
  features = features_of(apply_fn)
  units = jnp.asarray(config.unit_ids)
  k_init, k_ascent = jax.random.split(key)
  x0 = _start_images(k_init, config, len(units), image_shape)

  @jax.jit
  def visualise(params, k, x0):
    objective = vis.unit_objective(features, params, layer=config.unit_layer, units=units)
    return vis.gradient_ascent(k, objective, x0, **_ascent_kwargs(config))

  x, trace = visualise(params, k_ascent, x0)
  images.save_grid(path, np.asarray(x),
                   titles=[f"{config.unit_layer}[{int(u)}]\n{float(v):.2f}"
                           for u, v in zip(units, trace[-1])],
                   ncols=min(len(units), 10),
                   title=f"Channels of {config.unit_layer} by gradient ascent")
  return {"layer": config.unit_layer, "units": [int(u) for u in units],
          "activation_start": [float(v) for v in trace[0]],
          "activation_end": [float(v) for v in trace[-1]]}


def _dataset_images(config):
  x, y = data.load(config.dataset, "test")
  return data.to_float(x[:config.num_dataset_images]), y[:config.num_dataset_images]


def part_patches(config, apply_fn, params, path):
  features = features_of(apply_fn)
  pool, _ = _dataset_images(config)
  field = vis.zoo_receptive_field(apply_fn.name, config.patch_layer)
  units = list(config.patch_units)

  @jax.jit
  def top(params, pool):
    return vis.max_activating_patches(features, params, pool, layer=config.patch_layer,
                                      units=units, top_k=config.top_k, field=field,
                                      batch_size=config.eval_batch_size)

  result = top(params, jnp.asarray(pool))
  k = config.top_k
  titles = [f"{config.patch_layer}[{u}]" if j == 0 else "" for u in units for j in range(k)]
  images.save_grid(path, np.asarray(result.patches).reshape(-1, *result.patches.shape[2:]),
                   titles=titles, ncols=k, scale=0.9,
                   title=f"Top-{k} test patches per {config.patch_layer} channel "
                         f"({field.size}x{field.size} receptive field)")
  return {"layer": config.patch_layer, "units": units,
          "receptive_field": field._asdict(),
          "top_activation": [float(v) for v in result.activations[:, 0]]}


def part_filters(config, apply_fn, params, path):
  layer = config.filter_layer
  kernel = params[layer]["kernel"]
  grid = vis.filter_grid(kernel)
  if grid.shape[-1] not in (1, 3):
    grid = grid[..., :1]
  images.save_grid(path, np.asarray(grid), titles=[str(i) for i in range(grid.shape[0])],
                   ncols=min(10, grid.shape[0]), scale=0.9,
                   title=f"First-layer filters ({layer}, grey = 0)")
  return {"layer": layer, "shape": list(kernel.shape)}


def part_tsne(config, key, apply_fn, params, path):
  features = features_of(apply_fn)
  x, y = _dataset_images(config)
  x, y = x[:config.tsne_points], y[:config.tsne_points]

  @jax.jit
  def embed(params, key, x):
    feats = jax.lax.map(lambda im: features(params, im[None])[config.tsne_layer][0], x,
                        batch_size=config.eval_batch_size)
    feats = feats.reshape(feats.shape[0], -1)
    result = vis.tsne(key, feats, perplexity=config.perplexity,
                      num_iters=config.tsne_iters)
    return result, feats

  result, feats = embed(params, key, jnp.asarray(x))
  agreement = float(vis.neighbour_agreement(result.embedding, jnp.asarray(y), k=5))
  pixel_agreement = float(vis.neighbour_agreement(
      jnp.asarray(x.reshape(len(x), -1)), jnp.asarray(y), k=5))
  feature_agreement = float(vis.neighbour_agreement(feats, jnp.asarray(y), k=5))
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.5, 5))
  emb = np.asarray(result.embedding)
  scatter = ax.scatter(emb[:, 0], emb[:, 1], c=y, cmap="tab10", s=5, vmin=-0.5,
                       vmax=9.5)
  fig.colorbar(scatter, ax=ax, ticks=range(10), label="label")
  ax.set_title(f"t-SNE of {config.tsne_layer} features, {len(y)} test images\n"
               f"5-NN label agreement {agreement:.3f}", fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  _save(fig, path)
  return {"layer": config.tsne_layer, "points": len(y),
          "neighbour_agreement": agreement,
          "neighbour_agreement_features": feature_agreement,
          "neighbour_agreement_pixels": pixel_agreement,
          "kl_final": float(result.kl[-1])}


def part_inversion(config, key, apply_fn, params, x, path):
  features = features_of(apply_fn)
  x = jnp.asarray(x[:config.num_inversions])
  layers = list(config.inversion_layers)
  x0 = jnp.clip(0.5 + 0.05 * jax.random.normal(key, x.shape), 0.0, 1.0)

  @functools.partial(jax.jit, static_argnames="layer")
  def invert(params, x, x0, layer):
    target = features(params, x)[layer]
    return vis.invert_features(features, params, target, x0, layer=layer,
                               num_steps=config.inversion_steps,
                               learning_rate=config.inversion_lr,
                               tv_weight=config.tv_weight)

  panels, titles, losses = [np.asarray(x)], ["original"], {}
  for layer in layers:
    recon, metrics = invert(params, x, x0, layer)
    panels.append(np.asarray(recon))
    titles.append(f"from {layer}")
    losses[layer] = [float(v) for v in metrics["feature_loss"][-1]]
  grid = np.stack(panels, axis=1).reshape(-1, *x.shape[1:])
  images.save_grid(path, grid, titles=titles * x.shape[0], ncols=len(panels),
                   title=f"Feature inversion with TV (weight {config.tv_weight})")
  return {"layers": layers, "relative_feature_loss": losses}


def part_deepdream(config, key, apply_fn, params, x, path):
  features = features_of(apply_fn)
  x = jnp.asarray(x[:config.num_dreams])
  size = config.dream_size
  canvas = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear")
  fixed = getattr(apply_fn, "input_shape", None)
  input_size = None if fixed is None or fixed[0] is None else tuple(fixed[:2])

  @jax.jit
  def dream(params, key, canvas):
    return vis.deep_dream(key, features, params, canvas, layer=config.dream_layer,
                          num_octaves=config.octaves, octave_scale=config.octave_scale,
                          steps_per_octave=config.dream_steps,
                          step_size=config.dream_step_size, jitter=config.dream_jitter,
                          input_size=input_size)

  dreamed = dream(params, key, canvas)
  grid = np.stack([np.asarray(canvas), np.asarray(dreamed)], axis=1)
  images.save_grid(path, grid.reshape(-1, *canvas.shape[1:]),
                   titles=["input", f"dream {config.dream_layer}"] * x.shape[0],
                   ncols=min(6, 2 * x.shape[0]), scale=2.0,
                   title=f"DeepDream, {config.octaves} octaves x {config.dream_steps} steps")
  change = jnp.mean(jnp.abs(dreamed - canvas))
  return {"layer": config.dream_layer, "mean_abs_change": float(change)}


def stripes(size: int, channels: int) -> np.ndarray:
  """A diagonal-stripe texture: the MNIST style image."""
  i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  pattern = (np.sin((i + j) * np.pi / 3.0) > 0.3).astype(np.float32)
  return np.repeat(pattern[None, ..., None], channels, axis=-1)


def part_style(config, apply_fn, params, x, names, path):
  features = features_of(apply_fn)
  if config.classifier == IMAGENET:
    index = {n: i for i, n in enumerate(names)}
    content = jnp.asarray(x[index[config.style_content]][None])
    style = jnp.asarray(x[index[config.style_image]][None])
    style_name = config.style_image
  else:
    content = jnp.asarray(x[:1])
    style = jnp.asarray(stripes(x.shape[1], x.shape[3]))
    style_name = "stripes"

  @jax.jit
  def transfer(params, content, style):
    return vis.style_transfer(features, params, content, style, content,
                              content_layer=config.content_layer,
                              style_layers=list(config.style_layers),
                              num_steps=config.style_steps,
                              content_weight=config.content_weight,
                              style_weights=list(config.style_weights),
                              tv_weight=config.style_tv_weight,
                              learning_rate=config.style_lr)

  result, metrics = transfer(params, content, style)
  grid = np.concatenate([np.asarray(content), np.asarray(style), np.asarray(result)])
  images.save_grid(path, grid, titles=["content", f"style ({style_name})", "result"],
                   ncols=3, scale=2.2, title="Neural style transfer (content + Gram + TV)")
  return {k: {"start": float(v[0, 0]), "end": float(v[-1, 0])} for k, v in metrics.items()}


def run(config, workdir) -> dict:
  """Writes ``figures/<part>.png`` for each of ``config.parts`` and summary.json."""
  workdir, _ = common.prepare_workdir(workdir, config)
  parts = [p.strip() for p in config.parts.split(",") if p.strip()]
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    raise ValueError(f"Unknown parts {unknown}; known: {', '.join(PARTS)}.")
  figures = workdir / "figures"
  key = jax.random.key(config.seed)
  keys = dict(zip(PARTS, jax.random.split(key, len(PARTS))))
  apply_fn, params = load_classifier(config)
  x, labels, names = load_examples(config, apply_fn, params)
  classes = class_names(config, int(apply_fn(params, jnp.asarray(x[:1])).shape[-1]))
  summary = {"classifier": config.classifier, "examples": names, "seconds": {}}
  for part in parts:
    t0 = time.perf_counter()
    path = figures / f"{part}.png"
    if part == "attribution":
      result = part_attribution(config, keys[part], apply_fn, params, x, labels, names,
                                classes, path)
    elif part == "class_models":
      result = part_class_models(config, keys[part], apply_fn, params, x.shape[1:],
                                 classes, path)
    elif part == "units":
      result = part_units(config, keys[part], apply_fn, params, x.shape[1:], path)
    elif part == "patches":
      result = part_patches(config, apply_fn, params, path)
    elif part == "filters":
      result = part_filters(config, apply_fn, params, path)
    elif part == "tsne":
      result = part_tsne(config, keys[part], apply_fn, params, path)
    elif part == "inversion":
      result = part_inversion(config, keys[part], apply_fn, params, x, path)
    elif part == "deepdream":
      result = part_deepdream(config, keys[part], apply_fn, params, x, path)
    else:
      result = part_style(config, apply_fn, params, x, names, path)
    summary[part] = result
    summary["seconds"][part] = round(time.perf_counter() - t0, 2)
    print(f"{part}: {summary['seconds'][part]:.1f}s -> {path}", flush=True)
  common.write_json(workdir / "summary.json", summary)
  return summary


def main(argv):
  del argv
  run(_CONFIG.value, pathlib.Path(_WORKDIR.value or f"runs/visualize_{_CONFIG.value.preset}"))


if __name__ == "__main__":
  app.run(main)
