"""zoo.resolve: one grammar for every classifier an experiment or notebook takes."""

import jax
import numpy as np
import pytest

from foolingjax import zoo
from foolingjax.contract import Classifier


@pytest.mark.parametrize("spec, parsed", [
    ("lenet_mnist", ("preset", "lenet_mnist", 0)),
    ("lenet_mnist@1", ("preset", "lenet_mnist", 1)),
    ("efficientnet_lite0_imagenet", ("pretrained", "efficientnet_lite0_imagenet", 0)),
    ("init:fc10", ("init", "fc10", 0)),
    ("init:lenet@3", ("init", "lenet", 3)),
    ("tests.user_models:tiny_mnist_classifier",
     ("user", "tests.user_models:tiny_mnist_classifier", 0)),
])
def test_parse_spec_forms(spec, parsed):
  assert zoo.parse_spec(spec) == parsed


@pytest.mark.parametrize("spec, why", [
    ("lenet", "no preset 'lenet'"),
    ("zoo:lenet_mnist", "Cannot load classifier"),        # the old prefix is no module
    ("random:lenet", "Cannot load classifier"),
    ("init:nope", "no architecture 'nope'"),
    ("lenet_mnist@x", "seed after @"),
    ("efficientnet_lite0_imagenet@1", "no seeds"),
    ("", "empty"),
    ("a b:c", "not a valid package.module:function"),
    ("mymod:cnn", "Cannot load classifier"),
    ("tests.user_models:nothing_here", "Cannot load classifier"),
])
def test_bad_specs_get_one_error_listing_the_forms(spec, why):
  with pytest.raises(ValueError, match=why) as info:
    zoo.check_spec(spec)
  if "Unknown classifier" in str(info.value):
    for form in ("<preset>@<seed>", "init:<architecture>", "package.module:function",
                 "lenet_mnist", "fc100_100_10_mnist"):
      assert form in str(info.value)


def test_resolve_preset_seed_and_init(mnist_test):
  x = mnist_test[0][:64].astype(np.float32) / 255
  seed0 = zoo.resolve("lenet_mnist")
  seed1 = zoo.resolve("lenet_mnist@1", train_if_missing=False)
  direct = zoo.load_classifier("lenet_mnist", seed=1, train_if_missing=False)
  np.testing.assert_array_equal(seed1.apply_fn(seed1.params, x),
                                direct.apply_fn(direct.params, x))
  assert not np.allclose(seed0.apply_fn(seed0.params, x), seed1.apply_fn(seed1.params, x))
  a, b = zoo.resolve("init:fc10"), zoo.resolve("init:fc10@1")
  assert any(not np.allclose(u, v) for u, v in zip(jax.tree.leaves(a.params),
                                                   jax.tree.leaves(b.params)))
  with pytest.raises(FileNotFoundError):
    zoo.resolve("lenet_mnist@7", train_if_missing=False)


def test_resolve_a_users_model():
  clf = zoo.resolve("tests.user_models:tiny_mnist_classifier")
  assert isinstance(clf, Classifier)
  assert clf.apply_fn(clf.params, np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)


def test_a_factory_returning_the_wrong_thing_is_refused(monkeypatch):
  import tests.user_models as user_models
  monkeypatch.setattr(user_models, "bad", lambda: "not a pair", raising=False)
  with pytest.raises(ValueError, match=r"must return \(apply_fn, params\)"):
    zoo.resolve("tests.user_models:bad")


@pytest.mark.parametrize("spec, label", [
    ("fc10_wd1e-4_mnist", "FC10(1e-4)"), ("fc10_wd1_mnist", "FC10(1)"),
    ("fc100_100_10_mnist_p2", "FC100-100-10' (P2)"), ("ae400_10_mnist", "AE400-10"),
    ("lenet_mnist@1", "LeNet seed 1"), ("init:fc10", "FC10 (untrained)"),
    ("efficientnet_lite0_imagenet", "EfficientNet-Lite0"),
])
def test_display_names(spec, label):
  assert zoo.display_name(spec) == label
