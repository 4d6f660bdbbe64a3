import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from foolingjax import contract, lipschitz, models
from foolingjax import visualize as vis

PARAM_COUNTS = {
    "lenet": 431_080,                      # Caffe's MNIST LeNet
    "fc10": 784 * 10 + 10,
    "fc100_100_10": 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10,
    "fc200_200_10": 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10,
    "fc123_456_10": 784 * 123 + 123 + 123 * 456 + 456 + 456 * 10 + 10,
    "ae400_10": 784 * 400 + 400 + 400 * 784 + 784 + 400 * 10 + 10,
}


MNIST_ARCHITECTURES = tuple(n for n in models.ARCHITECTURES
                            if models.spec(n).input_shape == (28, 28, 1))

DISPLAY_NAMES = {
    "lenet": "LeNet",
    "fc10": "FC10",
    "fc100_100_10": "FC100-100-10",
    "fc200_200_10": "FC200-200-10",
    "fc123_456_10": "FC123-456-10",
    "fc100_100_10_sigmoid": "FC100-100-10 sigmoid",
    "fc200_200_10_sigmoid": "FC200-200-10 sigmoid",
    "fc123_456_10_sigmoid": "FC123-456-10 sigmoid",
    "ae400_10": "AE400-10",
    "alexnet_small": "AlexNet-small",
    "alexnet": "AlexNet",
    "alexnet_torchvision": "AlexNet (torchvision)",
    "efficientnet_lite0": "EfficientNet-Lite0",
}


@pytest.mark.parametrize("name", MNIST_ARCHITECTURES)
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


def test_every_registered_architecture_has_a_complete_spec(key):
  assert set(models.names()) == set(models.ARCHITECTURES) == set(DISPLAY_NAMES)
  for name in models.names():
    spec = models.spec(name)
    assert spec.name == name
    assert spec.display_name == DISPLAY_NAMES[name]
    # feature_layers are the keys of the module's features dict (shapes only:
    # no ImageNet-sized computation).
    module = models.create(name)
    x = jax.ShapeDtypeStruct((1, *spec.input_shape), jnp.float32)
    variables = jax.eval_shape(module.init, key, x)
    feats = jax.eval_shape(lambda v, x, m=module: m.apply(v, x, method="features"),
                           variables, x)
    assert set(feats) == set(spec.feature_layers), name
    chex.assert_shape(feats["logits"], (1, spec.num_classes))
    assert set(spec.receptive_fields) <= set(spec.feature_layers)


def test_feature_layers_are_in_network_order(key):
  apply_fn, params = models.init("lenet", key)
  feats = models.feature_fn(apply_fn)(params, jnp.zeros((1, 28, 28, 1)))
  assert tuple(feats) == models.spec("lenet").feature_layers


def test_unknown_spec_is_one_clear_error():
  with pytest.raises(ValueError, match=r"Unknown model 'nope'.*fc10.*lenet"):
    models.spec("nope")


def test_spec_of_finds_the_architecture_of_a_built_classifier(key):
  apply_fn, _ = models.init("fc100_100_10", key)
  assert models.spec_of(apply_fn) is models.spec("fc100_100_10")
  # By module when the name is not an architecture's.
  module = models.MLP(hidden=(100, 100), activation="sigmoid")
  variables = module.init(key, jnp.zeros((1, 28, 28, 1)))
  apply_fn, _ = models.from_linen(module, variables, input_shape=(28, 28, 1))
  assert models.spec_of(apply_fn).name == "fc100_100_10_sigmoid"
  caffenet = models.alexnet.AlexNet(layout="caffenet")
  assert models.spec_of(
      contract.ApplyFn(caffenet, (227, 227, 3), 1000, name="alexnet_caffenet")
  ).display_name == "AlexNet"
  with pytest.raises(ValueError, match="No architecture spec"):
    models.spec_of(lambda params, x: x)


class TinyNet(nn.Module):
  """A test-local architecture: conv 4@3x3 VALID, ReLU, dense K."""

  num_classes: int = 3

  @nn.compact
  def features(self, x):
    conv = nn.Conv(4, (3, 3), padding="VALID", name="conv")(x)
    flat = nn.relu(conv).reshape((x.shape[0], -1))
    return {"conv": conv, "logits": nn.Dense(self.num_classes, name="out")(flat)}

  def __call__(self, x):
    return self.features(x)["logits"]


TINY = models.ArchSpec(
    name="tiny_test_net", display_name="Tiny", factory=lambda k: TinyNet(num_classes=k),
    input_shape=(8, 8, 1), num_classes=3, feature_layers=("conv", "logits"),
    lipschitz_layers=lambda m: (
        lipschitz.Affine("conv", lipschitz.conv("conv", padding="VALID")),
        lipschitz.relu("relu"),
        lipschitz.Affine("out", lipschitz.dense("out", flatten=True))),
    receptive_fields={"conv": ((3, 1, 0),)})


@pytest.fixture
def tiny_registered():
  models.register(TINY)
  yield TINY
  if TINY.name in models.names():
    models.unregister(TINY.name)


def test_one_spec_adds_an_architecture_everywhere(key, tiny_registered):
  apply_fn, params = models.init("tiny_test_net", key)
  assert apply_fn.input_shape == (8, 8, 1) and apply_fn.num_classes == 3
  assert models.spec_of(apply_fn) is TINY
  x = jax.random.uniform(key, (2, 8, 8, 1))
  chex.assert_shape(apply_fn(params, x), (2, 3))
  # Lipschitz: the spec's description reproduces the net and bounds it.
  layers = lipschitz.zoo_layers(apply_fn)
  variables = lipschitz.variables_of(apply_fn, params)
  np.testing.assert_allclose(
      jax.vmap(lambda xi: lipschitz.compose(layers, variables, xi))(x),
      apply_fn(params, x), rtol=1e-5, atol=1e-5)
  result = lipschitz.layer_bounds(key, layers, variables, input_shape=(8, 8, 1),
                                  num_iters=50)
  assert result.top_level == ("conv", "relu", "out")
  r = 1e-2 * jax.random.normal(jax.random.fold_in(key, 1), x.shape)
  ratio = lipschitz.sensitivity_ratio(apply_fn, params, x, x + r)
  assert np.all(np.asarray(ratio) <= 10.0 ** float(result.log10_network))
  # Receptive fields: from the spec, by architecture name.
  assert vis.zoo_receptive_field("tiny_test_net", "conv") == (3, 1, 0)


def test_unregister_removes_and_register_keeps_its_old_form(key, tiny_registered):
  models.unregister(TINY.name)
  with pytest.raises(ValueError, match="Unknown model 'tiny_test_net'"):
    models.spec("tiny_test_net")
  models.register("tiny_test_net", lambda k: TinyNet(num_classes=k))
  spec = models.spec("tiny_test_net")
  assert spec.display_name == "tiny_test_net" and spec.lipschitz_layers is None
  apply_fn, params = models.init("tiny_test_net", key, input_shape=(6, 6, 1),
                                 num_classes=2)
  chex.assert_shape(apply_fn(params, jnp.zeros((1, 6, 6, 1))), (1, 2))
  with pytest.raises(ValueError, match="No layer description"):
    lipschitz.zoo_layers(apply_fn)
