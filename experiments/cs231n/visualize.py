"""Seeing inside a CNN: writes one PNG figure per technique, plus summary.json.

  python -m experiments.cs231n.visualize --config=experiments/cs231n/configs/visualize.py:mnist \
      --workdir=runs/visualize_mnist
  python -m experiments.cs231n.visualize --config=experiments/cs231n/configs/visualize.py:imagenet \
      --workdir=runs/visualize_imagenet

Parts (``config.parts``, comma separated): attribution, attribution_plus
(deconvnet, integrated gradients, Grad-CAM, guided backprop from the most active
unit of ``unit_layer``), segmentation (saliency-seeded colour segmentation),
activations (every channel of ``activation_layer``), class_models, fourier
(class models in pixel space vs lucid's decorrelated Fourier space, each checked
by the net and under random crops/flips), units, patches, filters, tsne,
inversion, deepdream, style. Figures land in
``WORKDIR/figures/<part>.png``, each part's numbers in
``WORKDIR/<part>/result.json`` (a rerun with the same config skips the parts
that have one) and all of them in summary.json; every number is measured in the
run (seconds per part included). TensorBoard scalars land in
``WORKDIR/tensorboard``: the per-step traces of the optimisations
(``class_models/logit/<class>``, ``units/activation/<unit>``, ``style/<loss>``,
``tsne/kl``, step = the optimisation step) and summary.json's numbers at step 0
(``<part>/<field>``, ``seconds/<part>``).

``config.classifier`` is any :func:`foolingjax.zoo.resolve` spec. A user's
model (``package.module:function``) runs attribution, segmentation,
class_models, fourier and filters (with ``--config.filter_layer`` naming one of
its conv layers); the other parts read layer activations and need a model with
a ``.features`` method, as the zoo nets have.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments import core, tensorboard
from foolingjax import data, images, models, zoo
from foolingjax import visualize as vis
from foolingjax.contract import ApplyFn, Classifier

PARTS = ("attribution", "class_models", "units", "patches", "filters", "tsne",
         "inversion", "deepdream", "style", "attribution_plus", "segmentation",
         "activations", "fourier")
# Parts that read layer activations through the model's .features method.
FEATURE_PARTS = ("units", "patches", "tsne", "inversion", "deepdream", "style",
                 "attribution_plus", "activations")
IMAGENET = "efficientnet_lite0_imagenet"


def is_imagenet(config) -> bool:
  return zoo.parse_spec(config.classifier)[1] == IMAGENET


def load_classifier(config) -> Classifier:
  """``config.classifier`` via :func:`foolingjax.zoo.resolve`; EfficientNet any size."""
  apply_fn, params = zoo.resolve(config.classifier)
  if is_imagenet(config):
    # Fully convolutional up to its global pool: the CPU demos run smaller.
    apply_fn = dataclasses.replace(apply_fn, input_shape=(None, None, 3))
  return Classifier(apply_fn, params)


def has_features(apply_fn) -> bool:
  return isinstance(apply_fn, ApplyFn) and hasattr(apply_fn.module, "features")


def features_of(apply_fn, part: str):
  if has_features(apply_fn):
    return models.feature_fn(apply_fn)
  raise ValueError(_no_features_message([part], apply_fn))


def _no_features_message(needing, apply_fn, runnable=()) -> str:
  name = getattr(apply_fn, "name", type(apply_fn).__name__)
  keep = ",".join(runnable) or "attribution,class_models"
  return (f"part(s) {', '.join(needing)} read layer activations and need a model with "
          f"a .features method (the zoo nets have one); the classifier {name} has "
          f"none. Fix: drop them from config.parts, e.g. --config.parts={keep}, or "
          "use a zoo classifier")


def validate(config) -> list[str]:
  """Checks every setting without loading anything; returns the parts to run."""
  if str(config.classifier).startswith("random:"):  # this experiment's former grammar
    raise ValueError(f"Bad visualize config: classifier {config.classifier!r}. Fix: an "
                     "untrained architecture is init:<architecture>[@seed] now, e.g. "
                     "init:lenet.")
  core.check_classifiers(config.classifier)
  parts = core.parse_parts(config.parts, PARTS)
  imagenet = is_imagenet(config)
  photos = core.names(config.photos)
  num_examples = len(photos) if imagenet else config.num_examples
  checks = []

  def positive(*fields):
    for field in fields:
      value = getattr(config, field)
      checks.append((value >= 1, f"{field} must be >= 1, got {value}"))

  def not_empty(*fields):
    checks.extend((len(getattr(config, f)) > 0, f"{f} must not be empty")
                  for f in fields)

  def within(field, low, high, what):
    value = getattr(config, field)
    checks.append((low <= value <= high,
                   f"{field} must be in {low}..{high} ({what}), got {value}"))

  positive("eval_batch_size")
  if imagenet:
    checks.append((bool(photos),
                   f"photos must name the photos for {IMAGENET}, e.g. chelsea,coffee"))
  else:
    within("num_examples", 1, 10, "the first test image of classes 0..n-1")
  if "attribution" in parts:
    positive("smoothgrad_samples", "occlusion_patch", "occlusion_stride")
  if "attribution_plus" in parts:
    positive("ig_steps")
  if "segmentation" in parts:
    checks.append((0.0 <= config.seg_background_quantile
                   < config.seg_foreground_quantile <= 1.0,
                   ("seg_background_quantile < seg_foreground_quantile must lie in "
                    f"[0, 1], got {config.seg_background_quantile}, "
                    f"{config.seg_foreground_quantile}")))
  if "fourier" in parts:
    positive("fourier_steps", "fourier_augmentations")
    not_empty("fourier_targets")
  if "class_models" in parts or "units" in parts:
    positive("ascent_steps")
  if "class_models" in parts:
    not_empty("class_targets")
  if "units" in parts:
    not_empty("unit_ids")
  if "patches" in parts:
    not_empty("patch_units")
    within("top_k", 1, config.num_dataset_images, "at most num_dataset_images")
  if "tsne" in parts:
    positive("tsne_iters")
    within("tsne_points", 2, config.num_dataset_images, "at most num_dataset_images")
    checks.append((0 < config.perplexity < config.tsne_points,
                   f"perplexity must be in (0, tsne_points), got {config.perplexity}"))
  if "inversion" in parts:
    positive("inversion_steps")
    not_empty("inversion_layers")
    within("num_inversions", 1, num_examples, "at most the number of examples")
  if "deepdream" in parts:
    positive("dream_size", "octaves", "dream_steps")
    within("num_dreams", 1, num_examples, "at most the number of examples")
  if "style" in parts:
    positive("style_steps")
    not_empty("style_layers")
    checks.append((len(config.style_weights) == len(config.style_layers),
                   (f"style_weights needs one weight per style layer "
                    f"({len(config.style_layers)}), got {len(config.style_weights)}")))
    if imagenet:
      for field in ("style_content", "style_image"):
        checks.append((getattr(config, field) in photos,
                       (f"{field} must be one of photos ({config.photos}), got "
                        f"{getattr(config, field)!r}")))
  core.check(checks, what="visualize")
  return parts


def check_classifier(config, parts, apply_fn, params, num_classes: int) -> None:
  """Refuses parts the loaded classifier cannot run, before any work."""
  needing = [p for p in parts if p in FEATURE_PARTS]
  runnable = [p for p in parts if p not in FEATURE_PARTS]
  checks = [(has_features(apply_fn) or not needing,
             _no_features_message(needing, apply_fn, runnable))]
  for part, field in (("class_models", "class_targets"), ("fourier", "fourier_targets")):
    if part in parts:
      targets = tuple(getattr(config, field))
      checks.append((all(0 <= t < num_classes for t in targets),
                     (f"{field} {targets} must be classes of the classifier, "
                      f"0..{num_classes - 1}")))
  if "filters" in parts:
    convs = sorted(name for name, layer in params.items()
                   if hasattr(layer, "get") and np.ndim(layer.get("kernel")) == 4)
    fix = (f"set --config.filter_layer to one of {', '.join(convs)}" if convs
           else "the classifier has no conv layer")
    checks.append((config.filter_layer in convs,
                   (f"part filters shows the conv kernel of filter_layer "
                    f"{config.filter_layer!r}, which the classifier lacks. Fix: {fix}, "
                    "or drop filters from config.parts")))
  if "patches" in parts and has_features(apply_fn):
    try:
      vis.zoo_receptive_field(apply_fn.name, config.patch_layer)
    except ValueError as e:
      checks.append((False, f"part patches: {e}"))
  core.check(checks, what="visualize")


def class_names(config, num_classes: int) -> list[str]:
  if is_imagenet(config):
    from foolingjax import imagenet
    return list(imagenet.class_names())
  return [str(k) for k in range(num_classes)]


def load_photos(config) -> tuple[np.ndarray, list[str]]:
  """The shipped photos (scikit-image, matplotlib) at ``config.image_size``."""
  from foolingjax import imagenet
  arrays, names = [], []
  for name in core.names(config.photos):
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
  if is_imagenet(config):
    x, names = load_photos(config)
    labels = np.asarray(jnp.argmax(apply_fn(params, jnp.asarray(x)), axis=-1))
    return x, labels, names
  x, y = data.load(config.dataset, "test")
  # The first example of each class, in class order.
  picks = [int(np.flatnonzero(y == k)[0]) for k in range(config.num_examples)]
  return data.to_float(x[picks]), y[picks], [f"test #{i}" for i in picks]


# --- figures -------------------------------------------------------------------

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
  return core.save_figure(fig, path, dpi=figure_dpi(fig))


def figure_dpi(fig) -> int:
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
  plt = core.pyplot()
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


def _write_traces(scalars, traces: dict[str, np.ndarray]) -> None:
  """``{tag: [steps]}`` -> ``scalars([{"step": s, tag: value}, ...])``, if asked for."""
  if scalars is None:
    return
  steps = max(len(v) for v in traces.values())
  scalars([{"step": s, **{tag: float(v[s]) for tag, v in traces.items() if s < len(v)}}
           for s in range(steps)])


def part_class_models(config, key, apply_fn, params, image_shape, classes, path, *,
                      scalars=None):
  targets = jnp.asarray(config.class_targets)
  k_init, k_ascent = jax.random.split(key)
  x0 = _start_images(k_init, config, len(targets), image_shape)

  @jax.jit
  def visualise(params, k, x0):
    objective = vis.class_objective(apply_fn, params, targets)
    return vis.gradient_ascent(k, objective, x0, **_ascent_kwargs(config))

  x, trace = visualise(params, k_ascent, x0)
  trace = np.asarray(trace)                                   # [steps, targets]
  _write_traces(scalars, {f"class_models/logit/{int(t)}": trace[:, i]
                          for i, t in enumerate(targets)})
  probs = jax.nn.softmax(apply_fn(params, x), axis=-1)
  target_probs = [float(probs[i, int(t)]) for i, t in enumerate(targets)]
  images.save_grid(path, np.asarray(x), labels=[classes[int(t)][:18] for t in targets],
                   confidences=target_probs, ncols=min(len(targets), 10),
                   title="Class models by regularised gradient ascent (logit)")
  return {"targets": [int(t) for t in targets], "target_probability": target_probs,
          "logit_start": [float(v) for v in trace[0]],
          "logit_end": [float(v) for v in trace[-1]]}


def part_units(config, key, apply_fn, params, image_shape, path, *, scalars=None):
  features = features_of(apply_fn, "units")
  units = jnp.asarray(config.unit_ids)
  k_init, k_ascent = jax.random.split(key)
  x0 = _start_images(k_init, config, len(units), image_shape)

  @jax.jit
  def visualise(params, k, x0):
    objective = vis.unit_objective(features, params, layer=config.unit_layer, units=units)
    return vis.gradient_ascent(k, objective, x0, **_ascent_kwargs(config))

  x, trace = visualise(params, k_ascent, x0)
  trace = np.asarray(trace)                                   # [steps, units]
  _write_traces(scalars, {f"units/activation/{int(u)}": trace[:, i]
                          for i, u in enumerate(units)})
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
  features = features_of(apply_fn, "patches")
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


def part_tsne(config, key, apply_fn, params, path, *, scalars=None):
  features = features_of(apply_fn, "tsne")
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
  _write_traces(scalars, {"tsne/kl": np.asarray(result.kl)})
  agreement = float(vis.neighbour_agreement(result.embedding, jnp.asarray(y), k=5))
  pixel_agreement = float(vis.neighbour_agreement(
      jnp.asarray(x.reshape(len(x), -1)), jnp.asarray(y), k=5))
  feature_agreement = float(vis.neighbour_agreement(feats, jnp.asarray(y), k=5))
  plt = core.pyplot()
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
  features = features_of(apply_fn, "inversion")
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

  panels, titles, errors, losses = [np.asarray(x)], ["original"], {}, {}
  for layer in layers:
    recon, _ = invert(params, x, x0, layer)
    panels.append(np.asarray(recon))
    titles.append(f"from {layer}")
    # The relative error ||phi(x) - phi0|| / ||phi0|| of the final image
    # (measured afresh: the scan's metrics are taken before each step), and
    # the loss Adam minimised, its square.
    error = relative_feature_error(features, params, recon, x, layer)
    errors[layer] = [float(v) for v in error]
    losses[layer] = [float(v) ** 2 for v in error]
  grid = np.stack(panels, axis=1).reshape(-1, *x.shape[1:])
  images.save_grid(path, grid, titles=titles * x.shape[0], ncols=len(panels),
                   title=f"Feature inversion with TV (weight {config.tv_weight})")
  return {"layers": layers, "relative_feature_error": errors,
          "feature_loss_squared_ratio": losses}


def relative_feature_error(features, params, recon, originals, layer) -> np.ndarray:
  """``||phi(recon) - phi(original)|| / ||phi(original)||`` per image, ``[B]``."""
  phi = np.asarray(features(params, jnp.asarray(recon))[layer], np.float64)
  target = np.asarray(features(params, jnp.asarray(originals))[layer], np.float64)
  flat = lambda a: a.reshape(a.shape[0], -1)
  return (np.linalg.norm(flat(phi - target), axis=1)
          / np.maximum(np.linalg.norm(flat(target), axis=1), 1e-12))


def part_deepdream(config, key, apply_fn, params, x, path):
  features = features_of(apply_fn, "deepdream")
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


def part_style(config, apply_fn, params, x, names, path, *, scalars=None):
  features = features_of(apply_fn, "style")
  if is_imagenet(config):
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
  _write_traces(scalars, {f"style/{k}": np.asarray(v)[:, 0] for k, v in metrics.items()})
  grid = np.concatenate([np.asarray(content), np.asarray(style), np.asarray(result)])
  images.save_grid(path, grid, titles=["content", f"style ({style_name})", "result"],
                   ncols=3, scale=2.2, title="Neural style transfer (content + Gram + TV)")
  return {k: {"start": float(v[0, 0]), "end": float(v[-1, 0])} for k, v in metrics.items()}


# --- parts beyond cs231n: deconvnet, IG, Grad-CAM, segmentation, activations,
# Fourier class models -------------------------------------------------------

def _overlay(image, heat):
  # A heat map over the (greyed) image: what Grad-CAM papers show.
  import matplotlib
  grey = np.repeat(np.mean(np.asarray(image), axis=-1, keepdims=True), 3, axis=-1)
  colour = matplotlib.colormaps["jet"](np.clip(np.asarray(heat), 0.0, 1.0))[..., :3]
  return np.clip(0.5 * grey + 0.5 * colour, 0.0, 1.0)


def part_attribution_plus(config, apply_fn, params, x, labels, names, classes, path):
  features = features_of(apply_fn, "attribution_plus")
  labels = jnp.asarray(labels)
  x = jnp.asarray(x)
  # The unit to project down per image: the channel of unit_layer with the
  # strongest single activation (Zeiler & Fergus project strong activations).
  acts = features(params, x)[config.unit_layer]
  strongest = jnp.argmax(jnp.max(acts.reshape(acts.shape[0], -1, acts.shape[-1]),
                                 axis=1), axis=-1) if acts.ndim == 4 else jnp.argmax(
                                     acts, axis=-1)

  @jax.jit
  def explain(params, x, labels, units):
    deconv = vis.deconvnet(apply_fn, params, x, labels)
    ig = vis.integrated_gradients(apply_fn, params, x, labels, steps=config.ig_steps,
                                  batch_size=config.ig_batch_size or None)
    cam = vis.grad_cam(features, params, x, labels, layer=config.gradcam_layer)
    unit = vis.unit_backprop(features, params, x, units, layer=config.unit_layer,
                             rule="guided")
    logits = apply_fn(params, x)
    baseline = apply_fn(params, jnp.zeros_like(x))
    return deconv, ig, cam, unit, logits, baseline

  deconv, ig, cam, unit, logits, baseline = explain(params, x, labels, strongest)
  n = x.shape[0]
  picked = np.arange(n), np.asarray(labels)
  # Completeness of IG: its attributions sum to logit(x) - logit(black).
  ig_sum = np.asarray(jnp.sum(ig, axis=(1, 2, 3)))
  logit_gap = np.asarray(logits)[picked] - np.asarray(baseline)[picked]
  cam_max = np.maximum(np.asarray(jnp.max(cam, axis=(1, 2))), 1e-12)
  columns = ["input", "deconvnet", "integrated grad.", f"Grad-CAM {config.gradcam_layer}",
             f"guided {config.unit_layer}[unit]"]
  panels = [np.asarray(x), _signed_image(deconv),
            _normalise(vis.saliency_map(ig)),
            np.stack([_overlay(x[i], cam[i] / cam_max[i]) for i in range(n)]),
            _signed_image(unit)]
  cmaps = [None, None, "hot", None, None]
  plt = core.pyplot()
  fig, axes = plt.subplots(n, len(columns), figsize=(1.7 * len(columns), 1.7 * n + 0.3),
                           squeeze=False)
  for i in range(n):
    label = int(labels[i])
    for j, (title, panel) in enumerate(zip(columns, panels)):
      caption = title if i == 0 else None
      if j == 0:
        caption = f"{names[i]}\n{classes[label][:18]}"
      elif j == 4:
        caption = f"{config.unit_layer}[{int(strongest[i])}]"
      _show(axes[i, j], panel[i], cmap=cmaps[j], title=caption)
  fig.tight_layout()
  _save(fig, path)
  return {"explained_labels": [int(v) for v in labels],
          "gradcam_layer": config.gradcam_layer, "ig_steps": config.ig_steps,
          "ig_sum": [float(v) for v in ig_sum],
          "logit_minus_black_logit": [float(v) for v in logit_gap],
          "unit_layer": config.unit_layer,
          "projected_units": [int(u) for u in strongest]}


def part_segmentation(config, apply_fn, params, x, labels, names, path):
  labels = jnp.asarray(labels)
  x = jnp.asarray(x)

  @jax.jit
  def segment(params, x, labels):
    sal = vis.saliency_map(vis.saliency(apply_fn, params, x, labels))
    prob = vis.segment_from_saliency(
        x, sal, foreground_quantile=config.seg_foreground_quantile,
        background_quantile=config.seg_background_quantile,
        num_iterations=config.seg_iterations, smoothness=config.seg_smoothness)
    return sal, prob

  sal, prob = segment(params, x, labels)
  mask = np.asarray(prob) > 0.5
  n = x.shape[0]
  masked = np.where(mask[..., None], np.asarray(x), 0.15 * np.asarray(x))
  columns = [("input", None), ("saliency", "hot"), ("P(foreground)", "gray"),
             ("segment", None)]
  panels = [np.asarray(x), _normalise(sal), np.asarray(prob), masked]
  plt = core.pyplot()
  fig, axes = plt.subplots(n, len(columns), figsize=(1.7 * len(columns), 1.7 * n + 0.3),
                           squeeze=False)
  for i in range(n):
    for j, ((title, cmap), panel) in enumerate(zip(columns, panels)):
      _show(axes[i, j], panel[i], cmap=cmap,
            title=names[i] if j == 0 else (title if i == 0 else None))
  fig.tight_layout()
  _save(fig, path)
  return {"foreground_fraction": [float(m.mean()) for m in mask],
          "quantiles": [config.seg_background_quantile, config.seg_foreground_quantile]}


def part_activations(config, apply_fn, params, x, names, path):
  features = features_of(apply_fn, "activations")
  x = jnp.asarray(x[:config.num_activation_images])
  layer = config.activation_layer
  grid = jax.jit(lambda params, x: vis.activation_grid(features, params, x,
                                                        layer=layer))(params, x)
  channels = int(features(params, x[:1])[layer].shape[-1])
  images.save_grid(path, np.asarray(grid)[..., None],
                   titles=[f"{names[i]}: {layer}" for i in range(x.shape[0])],
                   ncols=x.shape[0], scale=3.0,
                   title=f"Every channel of {layer} ({channels}), white = strongest")
  return {"layer": layer, "channels": channels, "grid_shape": list(grid.shape[1:])}


def augmented_agreement(key, apply_fn, params, x, targets, *, num: int,
                        min_area: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """How a class model fares under random crops (area ``min_area``-1) and flips.

  Each image gets ``num`` square crops resized back to its size and flipped
  left-right with probability 1/2. Returns per image the fraction whose top-1
  is the target and the mean target probability, each ``[B]`` (jittable).
  """
  b, height, width, c = x.shape
  k_area, k_pos, k_flip = jax.random.split(key, 3)
  side = jnp.sqrt(jax.random.uniform(k_area, (b, num), minval=min_area, maxval=1.0))
  offset = jax.random.uniform(k_pos, (b, num, 2)) * (1.0 - side[..., None])
  flip = jax.random.bernoulli(k_flip, 0.5, (b, num))

  def crop(image, side, offset, flip):
    scale = jnp.array([1.0, 1.0]) / side
    translation = -offset * jnp.array([height, width]) * scale
    out = jax.image.scale_and_translate(image, (height, width, c), (0, 1), scale,
                                        translation, method="linear")
    return jnp.where(flip, out[:, ::-1], out)

  crops = jax.vmap(jax.vmap(crop, in_axes=(None, 0, 0, 0)))(x, side, offset, flip)
  probs = jax.nn.softmax(apply_fn(params, jnp.clip(crops.reshape(-1, height, width, c),
                                                   0.0, 1.0)), axis=-1)
  probs = probs.reshape(b, num, -1)
  targets = jnp.asarray(targets)
  top1 = jnp.argmax(probs, axis=-1) == targets[:, None]
  target_prob = jnp.take_along_axis(probs, targets[:, None, None], axis=-1)[..., 0]
  return jnp.mean(top1, axis=1), jnp.mean(target_prob, axis=1)


def part_fourier(config, key, apply_fn, params, image_shape, classes, path):
  targets = jnp.asarray(config.fourier_targets)
  size = config.fourier_size or image_shape[0]
  height, width, channels = size, size, image_shape[2]
  k_init, k_pixel, k_fourier, k_aug = jax.random.split(key, 4)
  x0 = _start_images(k_init, config, len(targets), (height, width, channels))
  spectrum0 = vis.fourier_init(k_init, len(targets), height=height, width=width,
                               channels=channels)
  pixel_kwargs = dict(_ascent_kwargs(config), num_steps=config.fourier_steps)

  @jax.jit
  def pixel(params, k, x0):
    objective = vis.class_objective(apply_fn, params, targets)
    return vis.gradient_ascent(k, objective, x0, **pixel_kwargs)

  @jax.jit
  def fourier(params, k, spectrum0):
    objective = vis.class_objective(apply_fn, params, targets)
    return vis.fourier_ascent(
        k, objective, spectrum0, height=height, width=width,
        num_steps=config.fourier_steps, learning_rate=config.fourier_lr,
        jitter=config.fourier_jitter,
        scale_range=(1.0 - config.fourier_scale, 1.0 + config.fourier_scale),
        max_angle=config.fourier_angle)

  eval_size = config.fourier_eval_size or size

  # One compiled check for both parameterisations (same shapes).
  @jax.jit
  def evaluate(params, x):
    probs = jax.nn.softmax(apply_fn(params, x), axis=-1)
    aug_top1, aug_prob = augmented_agreement(k_aug, apply_fn, params, x, targets,
                                             num=config.fourier_augmentations)
    big = jax.image.resize(x, (x.shape[0], eval_size, eval_size, channels), "linear")
    big_top1 = jnp.argmax(apply_fn(params, jnp.clip(big, 0.0, 1.0)), axis=-1) == targets
    return probs, aug_top1, aug_prob, big_top1

  results, rows = {}, []
  for name, run_ascent, start in (("pixel", pixel, x0), ("fourier", fourier, spectrum0)):
    out = run_ascent(params, k_pixel if name == "pixel" else k_fourier, start)
    x = jnp.clip(out[0], 0.0, 1.0)
    probs, aug_top1, aug_prob, big_top1 = (np.asarray(v) for v in evaluate(params, x))
    top1 = np.argmax(probs, axis=-1) == np.asarray(targets)
    target_prob = probs[np.arange(len(targets)), np.asarray(targets)]
    results[name] = {"top1": top1.tolist(), "target_probability": target_prob.tolist(),
                     "augmented_top1": aug_top1.tolist(),
                     "augmented_target_probability": aug_prob.tolist(),
                     f"top1_at_{eval_size}": big_top1.tolist(),
                     "top1_rate": float(top1.mean()),
                     "augmented_top1_rate": float(aug_top1.mean()),
                     f"top1_rate_at_{eval_size}": float(big_top1.mean())}
    rows.append((name, np.asarray(x), target_prob, aug_top1))
  names = [classes[int(t)][:14] for t in targets]
  # Blocks of at most 10 classes: a pixel-space row, then the Fourier row.
  ncols = min(len(targets), 10)
  tiles, titles = [], []
  for start in range(0, len(targets), ncols):
    block = slice(start, start + ncols)
    for name, x, probs, aug in rows:
      pad = ncols - len(names[block])
      tiles.append(np.concatenate([x[block], np.ones((pad, *x.shape[1:]), x.dtype)]))
      titles += [f"{label}\n{p:.0%}, crops {a:.0%}" if name == "pixel" else
                 f"{p:.0%}, crops {a:.0%}"
                 for label, p, a in zip(names[block], probs[block], aug[block])]
      titles += [""] * pad
  images.save_grid(path, np.concatenate(tiles), titles=titles, ncols=ncols, scale=1.3,
                   title=(f"Class models, {config.fourier_steps} steps at {size}x{size}: "
                          "pixel space vs decorrelated Fourier space (row below); "
                          "p(class), top-1 rate under random crops/flips"))
  return {"targets": [int(t) for t in targets], "size": size,
          "steps": config.fourier_steps,
          "augmentations": config.fourier_augmentations, **results}


@core.reported
def run(config, workdir) -> dict:
  """Runs (or resumes) the experiment: ``figures/<part>.png`` per part, summary.json.

  Args:
    config: a config of ``experiments/cs231n/configs/visualize.py``.
    workdir: the work directory (created; a rerun with the same config skips
      the parts whose ``<part>/result.json`` exists).

  Returns:
    The summary written to summary.json: the classifier, the examples, each
    part's numbers and ``seconds`` per part.
  """
  parts = validate(config)
  apply_fn, params = load_classifier(config)
  x, labels, names = load_examples(config, apply_fn, params)
  classes = class_names(config, int(apply_fn(params, jnp.asarray(x[:1])).shape[-1]))
  check_classifier(config, parts, apply_fn, params, len(classes))
  workdir, _ = core.prepare_workdir(workdir, config)
  figures = workdir / "figures"
  key = jax.random.key(config.seed)
  # The first nine parts keep the keys they always had; later parts get
  # their own stream, so adding a part never changes another's numbers.
  keys = dict(zip(PARTS[:9], jax.random.split(key, 9)))
  keys.update({part: jax.random.fold_in(key, core.stream_id(part)) for part in PARTS[9:]})
  image_shape = x.shape[1:]

  def figure(part):
    return figures / f"{part}.png"

  def scalars(part):
    return lambda records: core.write_tensorboard(workdir, records, step="step", name=part)

  runners = {
      "attribution": lambda: part_attribution(config, keys["attribution"], apply_fn,
                                              params, x, labels, names, classes,
                                              figure("attribution")),
      "class_models": lambda: part_class_models(config, keys["class_models"], apply_fn,
                                                params, image_shape, classes,
                                                figure("class_models"),
                                                scalars=scalars("class_models")),
      "units": lambda: part_units(config, keys["units"], apply_fn, params, image_shape,
                                  figure("units"), scalars=scalars("units")),
      "patches": lambda: part_patches(config, apply_fn, params, figure("patches")),
      "filters": lambda: part_filters(config, apply_fn, params, figure("filters")),
      "tsne": lambda: part_tsne(config, keys["tsne"], apply_fn, params, figure("tsne"),
                                scalars=scalars("tsne")),
      "inversion": lambda: part_inversion(config, keys["inversion"], apply_fn, params,
                                          x, figure("inversion")),
      "deepdream": lambda: part_deepdream(config, keys["deepdream"], apply_fn, params,
                                          x, figure("deepdream")),
      "style": lambda: part_style(config, apply_fn, params, x, names, figure("style"),
                                  scalars=scalars("style")),
      "attribution_plus": lambda: part_attribution_plus(
          config, apply_fn, params, x, labels, names, classes,
          figure("attribution_plus")),
      "segmentation": lambda: part_segmentation(config, apply_fn, params, x, labels,
                                                names, figure("segmentation")),
      "activations": lambda: part_activations(config, apply_fn, params, x, names,
                                              figure("activations")),
      "fourier": lambda: part_fourier(config, keys["fourier"], apply_fn, params,
                                      image_shape, classes, figure("fourier")),
  }
  results = core.run_parts(workdir, parts, runners)
  summary = {"classifier": config.classifier, "examples": names, "seconds": {}}
  for part, result in results.items():
    result = dict(result)
    summary["seconds"][part] = round(result.pop("seconds"), 2)
    summary[part] = result
  core.write_json(workdir / "summary.json", summary)
  core.write_tensorboard(workdir, [{"step": 0, **tensorboard.flatten(core.jsonable(
      {k: v for k, v in summary.items() if k not in ("classifier", "examples")}))}],
      step="step", name="summary")
  return core.jsonable(summary)


def main(argv):
  del argv
  run(core.CONFIG.value, core.WORKDIR.value)


if __name__ == "__main__":
  core.cli(main)
