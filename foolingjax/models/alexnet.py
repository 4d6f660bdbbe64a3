"""AlexNet in Caffe's CaffeNet layout (the paper's ImageNet DNN), and torchvision's.

Nguyen et al. (2015) fooled "the already-trained AlexNet DNN provided by the
Caffe software package", i.e. ``bvlc_reference_caffenet``:

====== ======================================= ==========
layer  CaffeNet (``layout="caffenet"``)         output
====== ======================================= ==========
input  227x227 BGR, 0..255 minus the mean pixel 227x227x3
conv1  96 @ 11x11 /4, ReLU, max-pool 3/2, LRN   27x27x96
conv2  256 @ 5x5 pad 2, **2 groups**, ReLU,     13x13x256
       max-pool 3/2, LRN
conv3  384 @ 3x3 pad 1, ReLU                    13x13x384
conv4  384 @ 3x3 pad 1, 2 groups, ReLU          13x13x384
conv5  256 @ 3x3 pad 1, 2 groups, ReLU,         6x6x256
       max-pool 3/2
fc6    4096, ReLU (dropout in training)
fc7    4096, ReLU (dropout in training)
fc8    1000 logits
====== ======================================= ==========

LRN is Caffe's across-channel normalisation, ``local_size=5, alpha=1e-4,
beta=0.75, k=1`` (:func:`foolingjax.models.small.local_response_norm`).

torchvision's ``alexnet`` is a *different network* (the "one weird trick"
single-GPU variant): conv channels 64/192/384/256/256, no groups, no LRN,
conv1 padding 2, an adaptive 6x6 average pool, RGB input normalised with the
ImageNet mean/std, 224x224. Its weights cannot be poured into the CaffeNet
layout (the shapes differ and no mapping would preserve the function), so the
module has ``layout="torchvision"``, a faithful copy of that network with the
same layer names (conv1..conv5, fc6..fc8), and
:func:`from_torchvision_state_dict` builds that variant. Only
:func:`from_caffe_arrays` gives the paper's CaffeNet.

Both importers flip the first fully connected layer from the framework's
``C, H, W`` flattening order to flax's ``H, W, C``; conv kernels go from
``[out, in/groups, kh, kw]`` to ``[kh, kw, in/groups, out]`` (grouped kernels
keep their order: output channels of group g are rows ``g*out/G ..``).
"""

from __future__ import annotations

import os
import pathlib
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from foolingjax.contract import ApplyFn, Classifier
from foolingjax.models import torch_pickle
from foolingjax.models.registry import ArchSpec, register
from foolingjax.models.small import local_response_norm

# ilsvrc_2012_mean.npy averaged over its 256x256 pixels, BGR order (Caffe's
# python/caffe/imagenet); CaffeNet's deploy scripts subtract this mean pixel.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)

LAYOUTS = {
    # layer -> (features, kernel, stride, padding, groups)
    "caffenet": dict(
        convs=((96, 11, 4, 0, 1), (256, 5, 1, 2, 2), (384, 3, 1, 1, 1),
               (384, 3, 1, 1, 2), (256, 3, 1, 1, 2)),
        input_size=227),
    "torchvision": dict(
        convs=((64, 11, 4, 2, 1), (192, 5, 1, 2, 1), (384, 3, 1, 1, 1),
               (256, 3, 1, 1, 1), (256, 3, 1, 1, 1)),
        input_size=224),
}
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "fc8")
# torchvision's nn.Sequential indices of the same layers.
TORCHVISION_NAMES = {"conv1": "features.0", "conv2": "features.3",
                     "conv3": "features.6", "conv4": "features.8",
                     "conv5": "features.10", "fc6": "classifier.1",
                     "fc7": "classifier.4", "fc8": "classifier.6"}


def _pixel(values) -> jax.Array:
  return jnp.asarray(values, jnp.float32).reshape((1, 1, 1, -1))


def _max_pool(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """torch's ``AdaptiveAvgPool2d(size)`` on ``[B, H, W, C]`` (static shapes)."""
  _, h, w, _ = x.shape
  if (h, w) == (size, size):
    return x
  rows = []
  for i in range(size):
    h0, h1 = (i * h) // size, -((-(i + 1) * h) // size)
    cols = []
    for j in range(size):
      w0, w1 = (j * w) // size, -((-(j + 1) * w) // size)
      cols.append(jnp.mean(x[:, h0:h1, w0:w1], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)


def grouped_conv(x: jax.Array, kernel: jax.Array, *, stride: int, padding: int,
                 groups: int, method: str = "auto") -> jax.Array:
  """Grouped convolution, ``kernel`` ``[kh, kw, in/groups, out]`` (flax layout).

  ``method="split"`` runs one dense convolution per group and concatenates
  them, ``"conv"`` uses XLA's ``feature_group_count``; ``"auto"`` picks split
  on CPU, where XLA's grouped convolution is 4-5x slower than the split on
  CaffeNet's conv2/conv4 shapes (measured here), and conv elsewhere.
  """
  pads = ((padding, padding), (padding, padding))
  dims = ("NHWC", "HWIO", "NHWC")
  if method == "auto":
    method = "split" if jax.default_backend() == "cpu" and groups > 1 else "conv"
  if method == "conv":
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pads,
                                        dimension_numbers=dims,
                                        feature_group_count=groups)
  if method != "split":
    raise ValueError(
        f"Unknown grouped-conv method {method!r}: use auto, conv or split.")
  cin, cout = x.shape[-1] // groups, kernel.shape[-1] // groups
  return jnp.concatenate([
      jax.lax.conv_general_dilated(
          x[..., g * cin:(g + 1) * cin], kernel[..., g * cout:(g + 1) * cout],
          (stride, stride), pads, dimension_numbers=dims)
      for g in range(groups)], axis=-1)


class Conv(nn.Module):
  """``nn.Conv`` with the same params (``kernel``, ``bias``) and a fast grouped path."""

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  groups: int = 1
  method: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.kernel_size, self.kernel_size, x.shape[-1] // self.groups,
                         self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                      jnp.float32)
    y = grouped_conv(x, kernel, stride=self.stride, padding=self.padding,
                     groups=self.groups, method=self.method)
    return y + bias.reshape((1, 1, 1, -1))


class AlexNet(nn.Module):
  """AlexNet: float32 ``[B, S, S, 3]`` RGB in [0, 1] -> ``[B, K]`` logits.

  Attributes:
    layout: ``"caffenet"`` (227x227, grouped convs, LRN, BGR minus the mean
      pixel; the paper's network) or ``"torchvision"`` (torchvision's
      ``alexnet``); see the module docstring.
    num_classes: K.
    mean_bgr: CaffeNet's mean pixel on the 0..255 scale, BGR.
    grouped: how grouped convolutions run (see :func:`grouped_conv`).
  """

  layout: str = "caffenet"
  num_classes: int = 1000
  mean_bgr: Sequence[float] = CAFFE_MEAN_BGR
  grouped: str = "auto"

  @nn.compact
  def features(self, x: jax.Array) -> dict[str, jax.Array]:
    """Activations of every layer (after ReLU/pool/LRN), plus the logits."""
    if self.layout not in LAYOUTS:
      raise ValueError(f"Unknown AlexNet layout {self.layout!r}; use one of "
                       f"{sorted(LAYOUTS)}.")
    caffe = self.layout == "caffenet"
    if caffe:
      x = x[..., ::-1] * 255.0 - _pixel(self.mean_bgr)
    else:
      x = (x - _pixel(TORCHVISION_MEAN)) / _pixel(TORCHVISION_STD)
    acts = {}
    for name, (features, kernel, stride, pad, groups) in zip(
        CONV_LAYERS, LAYOUTS[self.layout]["convs"]):
      x = Conv(features, kernel, stride, pad, groups, self.grouped, name=name)(x)
      x = nn.relu(x)
      if name in ("conv1", "conv2"):
        x = _max_pool(x)
        if caffe:
          x = local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=1.0)
      elif name == "conv5":
        x = _max_pool(x)
        if not caffe:
          x = adaptive_avg_pool(x, 6)
      acts[name] = x
    x = x.reshape((x.shape[0], -1))
    for name, width in zip(FC_LAYERS, (4096, 4096, self.num_classes)):
      x = nn.Dense(width, name=name)(x)
      if name != "fc8":
        x = nn.relu(x)
      acts[name] = x
    acts["logits"] = x
    return acts

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x)["logits"]


def _input_shape(layout: str) -> tuple[int, int, int]:
  size = LAYOUTS[layout]["input_size"]
  return (size, size, 3)


def _classifier(module: AlexNet, params) -> Classifier:
  apply_fn = ApplyFn(module=module, input_shape=_input_shape(module.layout),
                     num_classes=module.num_classes, name=f"alexnet_{module.layout}")
  return Classifier(apply_fn, jax.device_put(params))


def params_template(*, layout: str = "caffenet", num_classes: int = 1000) -> dict:
  """Shapes and dtypes of the ``params`` of a layout (no computation)."""
  module = AlexNet(layout=layout, num_classes=num_classes)
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, *_input_shape(layout)), jnp.float32))
  return shapes["params"]


def init(key: jax.Array, *, layout: str = "caffenet",
         num_classes: int = 1000) -> Classifier:
  """A randomly initialised AlexNet as ``(apply_fn, params)``."""
  module = AlexNet(layout=layout, num_classes=num_classes)
  variables = module.init(key, jnp.zeros((1, *_input_shape(layout)), jnp.float32))
  return _classifier(module, variables["params"])


def _fc6_chw_to_hwc(weight: np.ndarray, channels: int) -> np.ndarray:
  """``[out, C*H*W]`` (framework flatten order) -> ``[out, H*W*C]`` (flax's)."""
  out, n = weight.shape
  side = int(round((n // channels) ** 0.5))
  if channels * side * side != n:
    return weight  # let the shape check report it
  return weight.reshape(out, channels, side, side).transpose(0, 2, 3, 1).reshape(out, n)


def _assign(layer_arrays: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
            layout: str, num_classes: int, source: str, unused: dict) -> Classifier:
  conv5_channels = LAYOUTS[layout]["convs"][-1][0]
  assignments = {}
  for layer, (weight, bias) in layer_arrays.items():
    weight, bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
    if layer in CONV_LAYERS and weight.ndim == 4:
      kernel = torch_pickle.conv_kernel(weight)
    elif layer in FC_LAYERS and weight.ndim == 2:
      if layer == "fc6":
        weight = _fc6_chw_to_hwc(weight, conv5_channels)
      kernel = torch_pickle.dense_kernel(weight)
    else:
      kernel = weight  # wrong rank: reported by the shape check
    assignments[("params", layer, "kernel")] = kernel
    assignments[("params", layer, "bias")] = bias
  template = {"params": params_template(layout=layout, num_classes=num_classes)}
  params = torch_pickle.fill_variables(template, assignments, source=source,
                                       unused=unused)["params"]
  return _classifier(AlexNet(layout=layout, num_classes=num_classes), params)


def from_caffe_arrays(blobs: Mapping[str, Sequence[np.ndarray]], *,
                      num_classes: int | None = None,
                      mean_bgr: Sequence[float] = CAFFE_MEAN_BGR) -> Classifier:
  """CaffeNet from Caffe's weight blobs.

  With pycaffe: ``{k: [b.data for b in v] for k, v in net.params.items()}``.

  Args:
    blobs: layer name -> ``(weight, bias)`` for ``conv1..conv5, fc6..fc8``,
      in Caffe's layout: conv ``[out, in/groups, kh, kw]`` (filters applied to
      BGR input on the 0..255 scale minus the mean pixel), inner product
      ``[out, in]`` with fc6's inputs in ``C, H, W`` order.
    num_classes: K (default: fc8's rows).
    mean_bgr: the mean pixel subtracted in the deploy transform.

  Returns:
    ``Classifier`` for float32 ``[B, 227, 227, 3]`` RGB in [0, 1].

  Raises:
    torch_pickle.WeightMismatchError: any missing, extra or mis-shaped blob.
  """
  pairs, unused = {}, {}
  for name, arrays in blobs.items():
    arrays = list(arrays)
    if name in CONV_LAYERS + FC_LAYERS and len(arrays) == 2:
      pairs[name] = (arrays[0], arrays[1])
    else:
      unused[name] = tuple(np.shape(arrays[0])) if arrays else ()
  if num_classes is None:
    num_classes = int(np.shape(pairs["fc8"][1])[0]) if "fc8" in pairs else 1000
  classifier = _assign(pairs, layout="caffenet", num_classes=num_classes,
                       source="the Caffe blobs", unused=unused)
  if tuple(mean_bgr) != CAFFE_MEAN_BGR:
    module = AlexNet(layout="caffenet", num_classes=num_classes,
                     mean_bgr=tuple(float(m) for m in mean_bgr))
    classifier = _classifier(module, classifier.params)
  return classifier


def from_torchvision_state_dict(state_dict: Mapping[str, np.ndarray], *,
                                num_classes: int | None = None) -> Classifier:
  """torchvision's ``alexnet`` (``layout="torchvision"``) from its state dict.

  Args:
    state_dict: ``{name: numpy array}`` with torchvision's keys
      (``features.0.weight`` ... ``classifier.6.bias``), e.g. from
      :func:`foolingjax.models.torch_pickle.load` or
      ``{k: v.numpy() for k, v in model.state_dict().items()}``.
    num_classes: K (default: ``classifier.6.bias``'s length).

  Returns:
    ``Classifier`` for float32 ``[B, 224, 224, 3]`` RGB in [0, 1].

  Raises:
    torch_pickle.WeightMismatchError: any missing, extra or mis-shaped tensor.
  """
  to_layer = {v: k for k, v in TORCHVISION_NAMES.items()}
  pairs: dict[str, list] = {}
  unused = {}
  for key, value in state_dict.items():
    prefix, _, field = key.rpartition(".")
    layer = to_layer.get(prefix)
    if layer is None or field not in ("weight", "bias"):
      unused[key] = tuple(np.shape(value))
      continue
    pairs.setdefault(layer, [None, None])[0 if field == "weight" else 1] = value
  missing = {layer: TORCHVISION_NAMES[layer] for layer in TORCHVISION_NAMES
             if layer not in pairs or any(v is None for v in pairs[layer])}
  complete = {k: tuple(v) for k, v in pairs.items() if k not in missing}
  if num_classes is None:
    bias = state_dict.get("classifier.6.bias")
    num_classes = int(np.shape(bias)[0]) if bias is not None else 1000
  return _assign(complete, layout="torchvision", num_classes=num_classes,
                 source="the torchvision state dict", unused=unused)


def save_npz(path: str | os.PathLike, classifier: Classifier) -> pathlib.Path:
  """Writes an AlexNet's params and layout to ``.npz`` (no pickle)."""
  path = pathlib.Path(path)
  module = classifier.apply_fn.module
  flat = {f"{layer}/{field}": np.asarray(v)
          for layer, fields in classifier.params.items() for field, v in fields.items()}
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, layout=np.array(module.layout),
           num_classes=np.array(module.num_classes),
           mean_bgr=np.asarray(module.mean_bgr, np.float64), **flat)
  os.replace(tmp, path)
  return path


def load_npz(path: str | os.PathLike) -> Classifier:
  """Reads :func:`save_npz` output (``allow_pickle=False``), checking every shape."""
  with np.load(path, allow_pickle=False) as f:
    layout, num_classes = str(f["layout"]), int(f["num_classes"])
    if layout not in LAYOUTS:
      raise ValueError(f"{path}: unknown AlexNet layout {layout!r}.")
    mean_bgr = tuple(float(m) for m in f["mean_bgr"])
    assignments = {("params", *k.split("/")): f[k] for k in f.files
                   if k not in ("layout", "num_classes", "mean_bgr")}
  template = {"params": params_template(layout=layout, num_classes=num_classes)}
  params = torch_pickle.fill_variables(template, assignments,
                                       source=str(path))["params"]
  return _classifier(AlexNet(layout=layout, num_classes=num_classes, mean_bgr=mean_bgr),
                     params)


def _spec(name: str, display_name: str, layout: str) -> ArchSpec:
  return ArchSpec(
      name=name, display_name=display_name,
      factory=lambda k: AlexNet(layout=layout, num_classes=k),
      input_shape=_input_shape(layout), num_classes=1000,
      feature_layers=CONV_LAYERS + FC_LAYERS + ("logits",))


SPECS = (
    _spec("alexnet", "AlexNet", "caffenet"),
    _spec("alexnet_torchvision", "AlexNet (torchvision)", "torchvision"),
)
for _arch in SPECS:
  register(_arch)


__all__ = [
  "CAFFE_MEAN_BGR",
  "LAYOUTS",
  "SPECS",
  "AlexNet",
  "adaptive_avg_pool",
  "from_caffe_arrays",
  "from_torchvision_state_dict",
  "init",
  "load_npz",
  "params_template",
  "save_npz",
]
