"""ImageNet helpers: class names, photo preparation and the 10-crop fitness.

Nguyen et al. (2015) scored an evolved image with Caffe's AlexNet the way
Caffe classifies: render it at 256x256, take the four corner crops, the centre
crop and the horizontal mirrors of all five (Caffe's ``oversample``), and
average the ten softmax outputs. :func:`make_ten_crop_apply_fn` builds that
scorer around any ``apply_fn`` and keeps the classifier contract: it returns
``log(mean softmax)``, so ``softmax`` of its output *is* the averaged
probability and every consumer of logits (argmax, softmax, cross-entropy)
sees the 10-crop average.

The class names (``assets/imagenet_classes.txt``) are the 1000 ILSVRC-2012
classes in the standard index order (synset-sorted, as Caffe, torchvision,
TF-slim without background and EfficientNet use), copied from torchvision
0.28's ``torchvision/models/_meta.py`` (``_IMAGENET_CATEGORIES``). Two names
repeat there as in ImageNet itself: "crane" (bird 134, machine 517) and
"maillot" (638, 639).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from foolingjax.contract import check_images

ASSETS = pathlib.Path(__file__).parent / "assets"
NUM_CROPS = 10
RENDER_SIZE = 256


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
  """The 1000 ImageNet class names, index ``i`` = logit ``i``."""
  names = tuple((ASSETS / "imagenet_classes.txt").read_text().splitlines())
  if len(names) != 1000:
    raise RuntimeError(
        f"{ASSETS / 'imagenet_classes.txt'} holds {len(names)} names, not 1000: "
        "the installation is damaged. Fix: reinstall foolingjax.")
  return names


def prepare_photo(image, *, size: int = 224,
                  resize_to: int | None = None) -> np.ndarray:
  """A photo as the network wants it: shorter side resized, centre crop.

  Args:
    image: uint8 ``[H, W, 3]`` (or ``[H, W]`` grey, or RGBA) array.
    size: side of the square crop.
    resize_to: the shorter side is first resized to this (default ``size``,
      i.e. the largest centre square; 256 with ``size=224`` gives the usual
      "resize 256, crop 224").

  Returns:
    float32 ``[size, size, 3]`` in [0, 1].
  """
  from PIL import Image
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  image = image[..., :3]
  if image.dtype != np.uint8:
    image = (np.clip(image.astype(np.float32), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
  resize_to = resize_to or size
  h, w = image.shape[:2]
  scale = resize_to / min(h, w)
  new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
  resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return resized[top:top + size, left:left + size].astype(np.float32) / 255.0


def ten_crop(images: jax.Array, *, crop_size: int) -> jax.Array:
  """Caffe's oversampling: 4 corners, centre, and their horizontal mirrors.

  Args:
    images: ``[B, H, W, C]`` (the original used ``H = W = 256``).
    crop_size: side of each square crop (227 for CaffeNet, 224 for
      EfficientNet-Lite0 and torchvision models).

  Returns:
    ``[10 * B, crop_size, crop_size, C]``, image-major: rows ``10 i .. 10 i + 9``
    are image ``i``'s top-left, top-right, bottom-left, bottom-right and centre
    crops, then the same five mirrored left-right (Caffe's order).
  """
  b, h, w, c = images.shape
  if crop_size > min(h, w):
    raise ValueError(f"ten_crop: crop_size {crop_size} exceeds the image {h}x{w}.")
  bottom, right = h - crop_size, w - crop_size
  corners = [(0, 0), (0, right), (bottom, 0), (bottom, right),
             ((h - crop_size) // 2, (w - crop_size) // 2)]
  crops = [images[:, top:top + crop_size, left:left + crop_size]
           for top, left in corners]
  crops = jnp.stack(crops, axis=1)                        # [B, 5, S, S, C]
  crops = jnp.concatenate([crops, crops[:, :, :, ::-1]], axis=1)  # [B, 10, S, S, C]
  return crops.reshape(b * NUM_CROPS, crop_size, crop_size, c)


@dataclasses.dataclass(frozen=True, eq=False)
class TenCropApplyFn:
  """``apply_fn(params, images_256) -> log(mean over 10 crops of softmax)``.

  Attributes:
    base: the wrapped ``apply_fn(params, crops) -> logits``.
    crop_size: side of each crop fed to ``base``.
    input_shape: ``(H, W, C)`` of the rendering, e.g. ``(256, 256, 3)``.
    num_classes: K (``None`` if the wrapped apply_fn did not say).
    name: for messages.
  """

  base: Callable[[Any, jax.Array], jax.Array]
  crop_size: int
  input_shape: tuple[int, int, int]
  num_classes: int | None
  name: str = "ten_crop"

  def __call__(self, params: Any, x: jax.Array) -> jax.Array:
    x = check_images(x, expected_hwc=self.input_shape, who=self.name)
    logits = self.base(params, ten_crop(x, crop_size=self.crop_size))
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_probs = log_probs.reshape(x.shape[0], NUM_CROPS, -1)
    # log(mean_j p_j) computed stably in log space.
    return jax.nn.logsumexp(log_probs, axis=1) - jnp.log(float(NUM_CROPS))


def make_ten_crop_apply_fn(apply_fn: Callable[[Any, jax.Array], jax.Array], *,
                           render_size: int = RENDER_SIZE,
                           crop_size: int | None = None, channels: int = 3,
                           num_classes: int | None = None) -> TenCropApplyFn:
  """The original ImageNet fitness around a classifier, as a new ``apply_fn``.

  The result takes float32 ``[B, render_size, render_size, channels]`` in
  [0, 1] and returns ``[B, K]`` = ``log(mean_{10 crops} softmax(logits))``.
  These are valid logits: ``softmax`` of them is exactly the crop-averaged
  probability (they already sum to 1 after ``exp``), ``argmax`` is the
  averaged prediction, and cross-entropy on them is the loss of the average.
  It is differentiable and unjitted; jit the caller once.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits`` for ``crop_size`` inputs.
    render_size: side of the rendered images (256 in the paper).
    crop_size: crop side; default ``apply_fn.input_shape[0]`` (224 for
      EfficientNet-Lite0, 227 for CaffeNet).
    channels: C of the rendering.
    num_classes: K; default ``apply_fn.num_classes``.

  Returns:
    A :class:`TenCropApplyFn` (hashes by identity: build it once).
  """
  base_shape = getattr(apply_fn, "input_shape", None)
  if crop_size is None:
    if not base_shape or base_shape[0] is None:
      raise ValueError("make_ten_crop_apply_fn: pass crop_size; apply_fn does not say "
                       "its input size.")
    crop_size = int(base_shape[0])
  if crop_size > render_size:
    raise ValueError(f"crop_size {crop_size} exceeds render_size {render_size}.")
  if num_classes is None:
    num_classes = getattr(apply_fn, "num_classes", None)
  return TenCropApplyFn(base=apply_fn, crop_size=crop_size,
                        input_shape=(render_size, render_size, channels),
                        num_classes=int(num_classes) if num_classes else None,
                        name=f"ten_crop({getattr(apply_fn, 'name', 'apply_fn')})")


def top_k(logits: jax.Array, k: int = 5) -> list[list[tuple[str, float]]]:
  """``[(class name, probability), ...]`` of the ``k`` best classes per row."""
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1))
  names = class_names()
  order = np.argsort(-probs, axis=-1)[:, :k]
  return [[(names[j], float(p[j])) for j in row] for p, row in zip(probs, order)]


# Photos that ship with scikit-image and matplotlib (no download): the only
# natural images this project has offline. Synthetic images (checkerboard,
# colour wheel, logos, blobs, phantoms) are left out.
DEMO_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins",
               "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon",
               "page", "retina", "rocket", "text", "grace_hopper")


def demo_photos(names: tuple[str, ...] | list[str] = DEMO_PHOTOS) -> dict[str, np.ndarray]:
  """``{name: uint8 [H, W, 3]}`` of scikit-image's sample photos and matplotlib's
  ``grace_hopper`` (grey photos repeated over three channels).

  scikit-image is in the ``imagenet`` extra (``pip install -e '.[imagenet]'``).
  """
  unknown = [n for n in names if n not in DEMO_PHOTOS]
  if unknown:
    raise ValueError(f"Unknown demo photos {unknown}. Fix: use names from "
                     f"foolingjax.imagenet.DEMO_PHOTOS: {', '.join(DEMO_PHOTOS)}.")
  photos = {}
  for name in names:
    if name == "grace_hopper":
      import matplotlib.cbook
      from PIL import Image
      with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        image = np.asarray(Image.open(f).convert("RGB"))
    else:
      try:
        import skimage.data
      except ImportError as e:
        raise ImportError("demo_photos needs scikit-image. Fix: pip install -e "
                          "'.[imagenet]' (or pip install scikit-image).") from e
      image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
      image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
      image = (np.clip(image.astype(np.float32) / image.max(), 0, 1) * 255 + 0.5
               ).astype(np.uint8)
    photos[name] = image
  return photos


def random_crops(key: jax.Array, image: jax.Array, num: int, *, size: int = 224,
                 min_scale: float = 0.35) -> jax.Array:
  """``num`` random square crops of one photo, mirrored at random, resized to ``size``.

  Each crop's side is ``s * min(H, W)`` with ``s ~ U[min_scale, 1]`` and its
  corner uniform over the positions that keep it inside the photo; the crop is
  resampled bilinearly (antialiased) to ``size x size`` and mirrored left-right
  with probability 1/2. Pure and unjitted.

  Args:
    key: PRNG key.
    image: ``[H, W, C]`` float in [0, 1] (or uint8, divided by 255).
    num: number of crops.
    size: output side.
    min_scale: smallest crop side as a share of the shorter side, in (0, 1].

  Returns:
    float32 ``[num, size, size, C]`` in [0, 1].
  """
  if not 0.0 < min_scale <= 1.0:
    raise ValueError(f"random_crops: min_scale must be in (0, 1], got {min_scale}.")
  image = jnp.asarray(image)
  if image.dtype == jnp.uint8:
    image = image.astype(jnp.float32) / 255.0
  h, w, c = image.shape
  k_scale, k_top, k_left, k_flip = jax.random.split(key, 4)
  side = jax.random.uniform(k_scale, (num,), minval=min_scale, maxval=1.0) * min(h, w)
  top = jax.random.uniform(k_top, (num,)) * (h - side)
  left = jax.random.uniform(k_left, (num,)) * (w - side)
  flip = jax.random.bernoulli(k_flip, 0.5, (num,))

  def crop(side, top, left, flip):
    scale = size / side
    out = jax.image.scale_and_translate(
        image, (size, size, c), (0, 1), jnp.stack([scale, scale]),
        jnp.stack([-top * scale, -left * scale]), method="linear", antialias=True)
    return jnp.where(flip, out[:, ::-1], out)

  return jnp.clip(jax.vmap(crop)(side, top, left, flip), 0.0, 1.0)
