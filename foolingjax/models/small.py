"""Small classifiers for 28x28 / 32x32 inputs (flax linen).

All take float32 ``[B, H, W, C]`` images in [0, 1] and return ``[B, K]`` logits;
any normalisation happens inside the module.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from foolingjax.models import description as desc
from foolingjax.models.registry import ArchSpec, register

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
}


class LeNet(nn.Module):
  """Caffe's MNIST LeNet (examples/mnist/lenet_train_test.prototxt).

  conv 20@5x5 -> max-pool 2 -> conv 50@5x5 -> max-pool 2 -> fc 500 + ReLU ->
  fc K. Caffe scales uint8 pixels by 1/256, i.e. feeds [0, 1) images, which is
  what the contract already provides. 431,080 parameters for 28x28x1, K = 10.
  """

  num_classes: int = 10

  @nn.compact
  def features(self, x: jax.Array) -> dict[str, jax.Array]:
    """All intermediate activations, by name (used by visualisation)."""
    acts = {}
    x = nn.Conv(20, (5, 5), padding="VALID", name="conv1")(x)
    acts["conv1"] = x
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    acts["pool1"] = x
    x = nn.Conv(50, (5, 5), padding="VALID", name="conv2")(x)
    acts["conv2"] = x
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    acts["pool2"] = x
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(500, name="ip1")(x))
    acts["ip1"] = x
    acts["logits"] = nn.Dense(self.num_classes, name="ip2")(x)
    return acts

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x)["logits"]


class MLP(nn.Module):
  """Szegedy et al.'s fully connected nets: FC10(λ), FC100-100-10, ...

  ``hidden=()`` is softmax regression (FC10); the weight decay λ lives in the
  training config, not in the module.
  """

  hidden: Sequence[int] = (100, 100)
  num_classes: int = 10
  activation: str = "relu"

  @nn.compact
  def features(self, x: jax.Array) -> dict[str, jax.Array]:
    act = _ACTIVATIONS[self.activation]
    acts = {}
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      x = act(nn.Dense(width, name=f"fc{i + 1}")(x))
      acts[f"fc{i + 1}"] = x
    acts["logits"] = nn.Dense(self.num_classes, name="out")(x)
    return acts

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x)["logits"]


class AutoencoderClassifier(nn.Module):
  """AE400-10: a sigmoid autoencoder's 400 features and a linear classifier.

  ``reconstruct`` is the autoencoder (used for its pre-training); ``__call__``
  classifies from the code layer.
  """

  code_size: int = 400
  num_classes: int = 10

  def setup(self):
    self.encoder = nn.Dense(self.code_size, name="encoder")
    self.decoder = nn.Dense(784, name="decoder")
    self.classifier = nn.Dense(self.num_classes, name="classifier")

  def encode(self, x: jax.Array) -> jax.Array:
    return nn.sigmoid(self.encoder(x.reshape((x.shape[0], -1))))

  def code_and_reconstruction(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(code [B, 400], reconstruction shaped like x)`` from one encoding."""
    code = self.encode(x)
    return code, nn.sigmoid(self.decoder(code)).reshape(x.shape)

  def reconstruct(self, x: jax.Array) -> jax.Array:
    return self.code_and_reconstruction(x)[1]

  def features(self, x: jax.Array) -> dict[str, jax.Array]:
    code = self.encode(x)
    return {"code": code, "logits": self.classifier(code)}

  def __call__(self, x: jax.Array) -> jax.Array:
    # Touch the decoder so that init creates its parameters too.
    if self.is_initializing():
      self.decoder(self.encode(x))
    return self.classifier(self.encode(x))


class AlexNetSmall(nn.Module):
  """An AlexNet-style CNN for 28x28 / 32x32 inputs (cuda-convnet's CIFAR net).

  conv 64@5x5 -> max-pool 3/2 -> LRN -> conv 64@5x5 -> LRN -> max-pool 3/2 ->
  fc 384 -> fc 192 -> fc K, ReLU throughout; inputs are centred at 0.5.
  """

  num_classes: int = 10

  @nn.compact
  def features(self, x: jax.Array) -> dict[str, jax.Array]:
    acts = {}
    x = (x - 0.5) / 0.25
    x = nn.relu(nn.Conv(64, (5, 5), name="conv1")(x))
    acts["conv1"] = x
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    x = local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=1.0)
    x = nn.relu(nn.Conv(64, (5, 5), name="conv2")(x))
    acts["conv2"] = x
    x = local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=1.0)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(384, name="fc3")(x))
    acts["fc3"] = x
    x = nn.relu(nn.Dense(192, name="fc4")(x))
    acts["fc4"] = x
    acts["logits"] = nn.Dense(self.num_classes, name="logits")(x)
    return acts

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x)["logits"]


def local_response_norm(x: jax.Array, *, size: int, alpha: float, beta: float,
                        k: float) -> jax.Array:
  """Cross-channel LRN as in Caffe/AlexNet: x / (k + α/n Σ x²)^β over n channels."""
  sq = jnp.square(x)
  half = size // 2
  padded = jnp.pad(sq, [(0, 0)] * (x.ndim - 1) + [(half, size - 1 - half)])
  window = sum(padded[..., i:i + x.shape[-1]] for i in range(size))
  return x / jnp.power(k + (alpha / size) * window, beta)


# --- Layer descriptions for foolingjax.lipschitz ------------------------------


def lenet_lipschitz_layers() -> tuple[desc.Layer, ...]:
  """Caffe's LeNet (no ReLU after the convolutions, as in Caffe)."""
  return (
      desc.Affine("conv1", desc.conv("conv1", padding="VALID")),
      desc.max_pool("pool1", window=(2, 2), strides=(2, 2)),
      desc.Affine("conv2", desc.conv("conv2", padding="VALID")),
      desc.max_pool("pool2", window=(2, 2), strides=(2, 2)),
      desc.Affine("ip1", desc.dense("ip1", flatten=True)),
      desc.relu("relu1"),
      desc.Affine("ip2", desc.dense("ip2")),
  )


_FIXED_ACTIVATIONS = {"relu": desc.relu, "sigmoid": desc.sigmoid}


def mlp_lipschitz_layers(hidden: Sequence[int], *,
                         activation: str = "relu") -> tuple[desc.Layer, ...]:
  """Szegedy's FC nets (:class:`MLP`)."""
  if activation not in _FIXED_ACTIVATIONS and activation != "tanh":
    raise ValueError(f"No Lipschitz constant for activation {activation!r}.")
  layers = []
  for i in range(len(hidden)):
    layers.append(desc.Affine(f"fc{i + 1}", desc.dense(f"fc{i + 1}", flatten=i == 0)))
    if activation == "tanh":
      layers.append(desc.fixed(f"tanh{i + 1}", jnp.tanh, 1.0))
    else:
      layers.append(_FIXED_ACTIVATIONS[activation](f"{activation}{i + 1}"))
  layers.append(desc.Affine("out", desc.dense("out", flatten=not hidden)))
  return tuple(layers)


def autoencoder_lipschitz_layers() -> tuple[desc.Layer, ...]:
  """AE400-10: encoder, sigmoid (1/4), linear classifier."""
  return (desc.Affine("encoder", desc.dense("encoder", flatten=True)),
          desc.sigmoid("sigmoid"),
          desc.Affine("classifier", desc.dense("classifier")))


def alexnet_small_lipschitz_layers() -> tuple[desc.Layer, ...]:
  """:class:`AlexNetSmall`, LRN bounded by :func:`~description.lrn_lipschitz`."""
  lrn = lambda name: desc.fixed(
      name, lambda x: local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=1.0),
      desc.lrn_lipschitz(size=5, beta=0.75, k=1.0))
  return (
      desc.Affine("normalise", lambda v, x: (x - 0.5) / 0.25),
      desc.Affine("conv1", desc.conv("conv1")), desc.relu("relu1"),
      desc.max_pool("pool1", window=(3, 3), strides=(2, 2), padding="SAME"),
      lrn("lrn1"),
      desc.Affine("conv2", desc.conv("conv2")), desc.relu("relu2"), lrn("lrn2"),
      desc.max_pool("pool2", window=(3, 3), strides=(2, 2), padding="SAME"),
      desc.Affine("fc3", desc.dense("fc3", flatten=True)), desc.relu("relu3"),
      desc.Affine("fc4", desc.dense("fc4")), desc.relu("relu4"),
      desc.Affine("logits", desc.dense("logits")),
  )


# --- Specs ----------------------------------------------------------------------


def _mlp_spec(name: str, display_name: str, hidden: tuple[int, ...], *,
              activation: str = "relu") -> ArchSpec:
  return ArchSpec(
      name=name, display_name=display_name,
      factory=lambda k: MLP(hidden=hidden, num_classes=k, activation=activation),
      feature_layers=tuple(f"fc{i + 1}" for i in range(len(hidden))) + ("logits",),
      lipschitz_layers=lambda m: mlp_lipschitz_layers(m.hidden,
                                                      activation=m.activation))


SPECS = (
    ArchSpec(
        name="lenet", display_name="LeNet", factory=lambda k: LeNet(num_classes=k),
        feature_layers=("conv1", "pool1", "conv2", "pool2", "ip1", "logits"),
        lipschitz_layers=lambda m: lenet_lipschitz_layers(),
        # (kernel, stride, padding before) from the input to each spatial layer.
        receptive_fields={
            "conv1": ((5, 1, 0),),
            "pool1": ((5, 1, 0), (2, 2, 0)),
            "conv2": ((5, 1, 0), (2, 2, 0), (5, 1, 0)),
            "pool2": ((5, 1, 0), (2, 2, 0), (5, 1, 0), (2, 2, 0)),
        }),
    _mlp_spec("fc10", "FC10", ()),
    _mlp_spec("fc100_100_10", "FC100-100-10", (100, 100)),
    _mlp_spec("fc200_200_10", "FC200-200-10", (200, 200)),
    _mlp_spec("fc123_456_10", "FC123-456-10", (123, 456)),
    # Szegedy et al.'s hidden layers are sigmoid; the nets above use ReLU.
    _mlp_spec("fc100_100_10_sigmoid", "FC100-100-10 sigmoid", (100, 100),
              activation="sigmoid"),
    _mlp_spec("fc200_200_10_sigmoid", "FC200-200-10 sigmoid", (200, 200),
              activation="sigmoid"),
    _mlp_spec("fc123_456_10_sigmoid", "FC123-456-10 sigmoid", (123, 456),
              activation="sigmoid"),
    ArchSpec(
        name="ae400_10", display_name="AE400-10",
        factory=lambda k: AutoencoderClassifier(code_size=400, num_classes=k),
        feature_layers=("code", "logits"),
        lipschitz_layers=lambda m: autoencoder_lipschitz_layers()),
    ArchSpec(
        name="alexnet_small", display_name="AlexNet-small",
        factory=lambda k: AlexNetSmall(num_classes=k),
        feature_layers=("conv1", "conv2", "fc3", "fc4", "logits"),
        lipschitz_layers=lambda m: alexnet_small_lipschitz_layers(),
        # The 5x5 convs pad by 2 ("SAME"); the 3/2 SAME pooling pads by 0 before
        # (1 after) for 28x28 and 32x32 inputs.
        receptive_fields={
            "conv1": ((5, 1, 2),),
            "conv2": ((5, 1, 2), (3, 2, 0), (5, 1, 2)),
        }),
)

for _arch in SPECS:
  register(_arch)
