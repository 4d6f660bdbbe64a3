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
