"""A user's own flax model, loaded by dotted path in the experiment tests."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from foolingjax import models


class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def tiny_linen_classifier():
  module = Tiny()
  variables = module.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  return models.from_linen(module, variables, input_shape=(28, 28, 1))


class TinyCNN(nn.Module):
  """A 10-class MNIST-shaped convnet: a user's model for every experiment."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (5, 5), strides=(2, 2))(x))
    return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def tiny_mnist_classifier():
  """``(apply_fn, params)`` of an untrained 10-class MNIST model, via from_linen."""
  module = TinyCNN()
  variables = module.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  return models.from_linen(module, variables, input_shape=(28, 28, 1))


def tiny_rgb224_classifier():
  """``(apply_fn, params)`` of a 5-class model on ImageNet-sized ``[B, 224, 224, 3]`` input.

  Position-dependent (a weighted mean over a coarse grid), so one centred crop
  and the 10-crop average give different scores.
  """
  w = jax.random.normal(jax.random.key(3), (4 * 4 * 3, 5))

  def apply_fn(params, x):
    b = x.shape[0]
    pooled = x.reshape(b, 4, x.shape[1] // 4, 4, x.shape[2] // 4, 3).mean((2, 4))
    return 20.0 * pooled.reshape(b, -1) @ params

  apply_fn.input_shape = (224, 224, 3)
  return apply_fn, w
