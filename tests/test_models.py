import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from foolingjax import models

PARAM_COUNTS = {
    "lenet": 431_080,                      # Caffe's MNIST LeNet
    "fc10": 784 * 10 + 10,
    "fc100_100_10": 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10,
    "fc200_200_10": 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10,
    "fc123_456_10": 784 * 123 + 123 + 123 * 456 + 456 + 456 * 10 + 10,
    "ae400_10": 784 * 400 + 400 + 400 * 784 + 784 + 400 * 10 + 10,
}


@pytest.mark.parametrize("name", models.ARCHITECTURES)
def test_shapes_and_parameter_counts(name, key):
  apply_fn, params = models.init(name, key)
  logits = apply_fn(params, jnp.zeros((3, 28, 28, 1)))
  chex.assert_shape(logits, (3, 10))
  chex.assert_tree_all_finite(logits)
  if name in PARAM_COUNTS:
    assert models.param_count(params) == PARAM_COUNTS[name]


def test_alexnet_small_on_colour_32x32(key):
  apply_fn, params = models.init("alexnet_small", key, input_shape=(32, 32, 3), num_classes=7)
  chex.assert_shape(apply_fn(params, jnp.zeros((2, 32, 32, 3))), (2, 7))


def test_bad_inputs_give_one_clear_error(key):
  apply_fn, params = models.init("lenet", key)
  with pytest.raises(TypeError, match=r"float32 images.*astype"):
    apply_fn(params, np.zeros((2, 28, 28, 1), np.uint8))
  with pytest.raises(ValueError, match=r"x\[None\]"):
    apply_fn(params, jnp.zeros((28, 28, 1)))
  with pytest.raises(ValueError, match=r"\[B, 28, 28, 1\]"):
    apply_fn(params, jnp.zeros((2, 32, 32, 3)))
  with pytest.raises(ValueError, match="Unknown model 'resnet9000'.*lenet"):
    models.create("resnet9000")


def test_feature_fn_exposes_layers(key):
  apply_fn, params = models.init("lenet", key)
  feats = models.feature_fn(apply_fn)(params, jnp.zeros((2, 28, 28, 1)))
  chex.assert_shape(feats["ip1"], (2, 500))
  np.testing.assert_allclose(feats["logits"], apply_fn(params, jnp.zeros((2, 28, 28, 1))))


class UserLinenNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.relu(x).reshape((x.shape[0], -1))
    return nn.Dense(5)(x)


class UserNNXNet(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.out = nnx.Linear(8 * 8 * 4, 3, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x)))
    return self.out(x.reshape((x.shape[0], -1)))


def test_linen_adapter_closes_over_batch_stats(key):
  module = UserLinenNet()
  variables = module.init(key, jnp.zeros((1, 8, 8, 1)))
  variables = jax.tree_util.tree_map(lambda v: v, variables)
  variables["batch_stats"] = jax.tree_util.tree_map(lambda v: v + 0.5, variables["batch_stats"])
  apply_fn, params = models.from_linen(module, variables, input_shape=(8, 8, 1))
  assert apply_fn.num_classes == 5 and "batch_stats" not in params
  x = jax.random.uniform(key, (2, 8, 8, 1))
  np.testing.assert_allclose(apply_fn(params, x), module.apply(variables, x), rtol=1e-6)
  grad = jax.grad(lambda x: apply_fn(params, x)[:, 0].sum())(x)
  chex.assert_shape(grad, x.shape)
  assert float(jnp.abs(grad).sum()) > 0
  with pytest.raises(ValueError, match=r"\[B, 8, 8, 1\]"):
    apply_fn(params, jnp.zeros((2, 9, 9, 1)))


def test_nnx_adapter(key):
  model = UserNNXNet(nnx.Rngs(0))
  model.eval()
  apply_fn, params = models.from_nnx(model, input_shape=(8, 8, 1))
  assert apply_fn.num_classes == 3
  x = jax.random.uniform(key, (2, 8, 8, 1))
  np.testing.assert_allclose(apply_fn(params, x), model(x), rtol=1e-5)
  grad = jax.jit(jax.grad(lambda x: apply_fn(params, x)[:, 1].sum()))(x)
  assert float(jnp.abs(grad).sum()) > 0
  # Gradients flow to the params too (what training and attacks on params need).
  pgrad = jax.grad(lambda p: apply_fn(p, x).sum())(params)
  chex.assert_tree_all_finite(pgrad)
