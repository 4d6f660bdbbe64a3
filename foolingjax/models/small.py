"""Small classifiers for 28x28 / 32x32 inputs (flax linen).

All take float32 ``[B, H, W, C]`` images in [0, 1] and return ``[B, K]`` logits;
any normalisation happens inside the module.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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

  def reconstruct(self, x: jax.Array) -> jax.Array:
    flat = nn.sigmoid(self.decoder(self.encode(x)))
    return flat.reshape(x.shape)

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
