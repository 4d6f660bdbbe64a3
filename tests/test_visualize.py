"""Known answers for foolingjax.visualize, and the experiment at its smoke preset."""

import json

import chex
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax import models
from foolingjax import visualize as vis


def linear_classifier(key, *, shape=(8, 8, 1), num_classes=3, ignore_right_half=False):
  h, w, c = shape
  weights = jax.random.normal(key, (h, w, c, num_classes))
  if ignore_right_half:
    weights = weights.at[:, w // 2:].set(0.0)

  def apply_fn(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"][None]

  params = {"w": weights.reshape(h * w * c, num_classes), "b": jnp.arange(num_classes) * 0.1}
  return apply_fn, params


def mlp_forward(params, x, *, relu=jax.nn.relu, taps=None):
  """fc100_100_10's forward written out, with the ReLU as an argument.

  ``taps``: optional additive zeros on each ReLU's output; their gradient is
  the gradient that reaches that ReLU from above.
  """
  taps = taps or (0.0, 0.0)
  h = x.reshape(x.shape[0], -1)
  pre = []
  for i, tap in zip((1, 2), taps):
    z = h @ params[f"fc{i}"]["kernel"] + params[f"fc{i}"]["bias"][None]
    pre.append(z)
    h = relu(z) + tap
  return h @ params["out"]["kernel"] + params["out"]["bias"][None], pre


@pytest.mark.parametrize("jit", [False, True])
def test_saliency_of_linear_model_is_its_weight_row(key, jit):
  k_model, k_x = jax.random.split(key)
  apply_fn, params = linear_classifier(k_model)
  x = jax.random.uniform(k_x, (4, 8, 8, 1))
  labels = jnp.array([0, 2, 1, 2])
  fn = jax.jit(vis.saliency, static_argnums=0) if jit else vis.saliency
  grads = fn(apply_fn, params, x, labels)
  chex.assert_shape(grads, x.shape)
  expected = params["w"][:, labels].T.reshape(x.shape)
  np.testing.assert_allclose(grads, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(vis.saliency_map(grads), jnp.abs(expected)[..., 0], atol=1e-6)


def test_saliency_of_zoo_softmax_regression_is_its_weight_row(key):
  apply_fn, params = models.init("fc10", key)
  x = jax.random.uniform(key, (2, 28, 28, 1))
  grads = vis.saliency(apply_fn, params, x, jnp.array([3, 7]))
  kernel = params["out"]["kernel"]
  np.testing.assert_allclose(grads[0].ravel(), kernel[:, 3], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(grads[1].ravel(), kernel[:, 7], rtol=1e-6, atol=1e-7)


def test_smoothgrad_of_linear_model_is_its_weight_row_and_batching_is_exact(key):
  k_model, k_x, k_noise = jax.random.split(key, 3)
  apply_fn, params = linear_classifier(k_model)
  x = jax.random.uniform(k_x, (2, 8, 8, 1))
  labels = jnp.array([1, 0])
  smooth_fn = jax.jit(vis.smoothgrad, static_argnums=1,
                      static_argnames=("num_samples", "batch_size"))
  smooth = smooth_fn(k_noise, apply_fn, params, x, labels, num_samples=6)
  chunked = smooth_fn(k_noise, apply_fn, params, x, labels, num_samples=6, batch_size=4)
  np.testing.assert_allclose(smooth, params["w"][:, labels].T.reshape(x.shape),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(smooth, chunked, rtol=1e-6, atol=1e-7)


def test_smoothgrad_averages_noisy_gradients_of_a_nonlinear_model(key):
  apply_fn, params = models.init("fc100_100_10", key)
  x = jax.random.uniform(key, (1, 28, 28, 1))
  labels = jnp.array([4])
  smooth = jax.jit(lambda k, x: vis.smoothgrad(k, apply_fn, params, x, labels,
                                               num_samples=4, noise_level=0.2))(
      jax.random.key(1), x)
  # The noisy copies leave [0, 1], which vis.saliency refuses: the plain
  # gradient of the label's logit instead.
  saliency = jax.jit(jax.grad(lambda x: apply_fn(params, x)[0, 4]))
  span = float(x.max() - x.min())
  keys = jax.random.split(jax.random.key(1), 4)
  by_hand = jnp.mean(jnp.stack([
      saliency(x + 0.2 * span * jax.random.normal(k, x.shape)) for k in keys]), axis=0)
  np.testing.assert_allclose(smooth, by_hand, rtol=1e-4, atol=1e-6)
  assert float(jnp.max(jnp.abs(smooth - saliency(x)))) > 1e-4


def test_guided_relu_passes_only_positive_gradients_where_the_input_was_positive(key):
  k_x, k_g = jax.random.split(key)
  x = jax.random.normal(k_x, (1000,))
  g = jax.random.normal(k_g, (1000,))
  out, vjp = jax.vjp(vis.guided_relu, x)
  (dx,) = vjp(g)
  np.testing.assert_array_equal(out, jax.nn.relu(x))
  np.testing.assert_array_equal(dx, jnp.where((x > 0) & (g > 0), g, 0.0))
  assert bool(jnp.all(dx[(x <= 0) | (g <= 0)] == 0))
  assert int(jnp.sum(dx > 0)) > 100  # some gradient does pass
  (dx6,) = jax.vjp(vis.guided_relu6, 4 * x)[1](g)
  np.testing.assert_array_equal(dx6, jnp.where((4 * x > 0) & (4 * x < 6) & (g > 0), g, 0.0))


def test_guided_backprop_in_a_network_never_passes_through_off_relus(key):
  _, params = models.init("fc100_100_10", key)
  x = jax.random.uniform(jax.random.key(3), (3, 28, 28, 1))
  labels = jnp.array([0, 5, 9])

  def selected(taps, relu):
    logits, _ = mlp_forward(params, x, relu=relu, taps=taps)
    return jnp.sum(jnp.take_along_axis(logits, labels[:, None], axis=1))

  taps = (jnp.zeros((3, 100)), jnp.zeros((3, 100)))
  _, pre = mlp_forward(params, x)
  guided_taps = jax.grad(selected)(taps, vis.guided_relu)
  plain_taps = jax.grad(selected)(taps, jax.nn.relu)
  # The gradient that leaves each guided ReLU downwards is its incoming one,
  # gated: zero where the ReLU was off or the incoming gradient was negative.
  below_second = jnp.where((pre[1] > 0) & (guided_taps[1] > 0), guided_taps[1], 0.0)
  _, vjp = jax.vjp(vis.guided_relu, pre[1])
  np.testing.assert_allclose(vjp(guided_taps[1])[0], below_second)
  assert bool(jnp.all(vjp(guided_taps[1])[0][pre[1] <= 0] == 0))
  # The top ReLU gets the plain gradient (only a linear layer above it).
  np.testing.assert_allclose(guided_taps[1], plain_taps[1], rtol=1e-6)
  # What reaches the first ReLU from above went through guided gates only.
  assert bool(jnp.all(vjp(guided_taps[1])[0] >= 0))


@pytest.mark.parametrize("jit", [False, True])
def test_guided_backprop_on_zoo_net_matches_explicit_guided_forward(key, jit):
  apply_fn, params = models.init("fc100_100_10", key)
  x = jax.random.uniform(jax.random.key(4), (3, 28, 28, 1))
  labels = jnp.array([1, 2, 3])
  fn = jax.jit(vis.guided_backprop, static_argnums=0) if jit else vis.guided_backprop
  guided = fn(apply_fn, params, x, labels)
  explicit = vis.saliency(lambda p, x: mlp_forward(p, x, relu=vis.guided_relu)[0],
                          params, x, labels)
  plain = vis.saliency(apply_fn, params, x, labels)
  np.testing.assert_allclose(guided, explicit, rtol=1e-5, atol=1e-7)
  assert float(jnp.max(jnp.abs(guided - plain))) > 1e-3


def test_with_guided_relus_keeps_the_forward_of_a_zoo_conv_net(key):
  # AlexNetSmall has ReLUs after convolutions and dense layers alike.
  apply_fn, params = models.init("alexnet_small", key)
  x = jax.random.uniform(key, (2, 28, 28, 1))
  labels = jnp.array([0, 1])

  @jax.jit
  def both(params, x):
    return (vis.with_guided_relus(apply_fn)(params, x), apply_fn(params, x),
            vis.guided_backprop(apply_fn, params, x, labels),
            vis.saliency(apply_fn, params, x, labels))

  guided_logits, logits, guided, plain = both(params, x)
  np.testing.assert_array_equal(guided_logits, logits)
  chex.assert_tree_all_finite(guided)
  assert float(jnp.max(jnp.abs(guided - plain))) > 0


def test_with_guided_relus_finds_relu6_inside_nested_jit(key):
  # EfficientNet-Lite's activation is flax.linen.relu6, here inside a jit.
  k_x, k_w = jax.random.split(key)
  x = 4.0 * jax.random.normal(k_x, (200,))
  weights = jax.random.normal(k_w, (200,))
  inner = jax.jit(lambda x: flax.linen.relu6(x) * weights)
  f = lambda x: jnp.sum(inner(x))
  np.testing.assert_array_equal(vis.with_guided_relus(f)(x), f(x))
  guided = jax.grad(vis.with_guided_relus(f))(x)
  np.testing.assert_array_equal(
      guided, jnp.where((x > 0) & (x < 6) & (weights > 0), weights, 0.0))


@pytest.mark.parametrize("batch_size", [None, 5])
def test_occluding_an_ignored_region_changes_nothing(key, batch_size):
  apply_fn, params = linear_classifier(key, shape=(8, 8, 1), ignore_right_half=True)
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
  labels = jnp.array([0, 2])
  sens = vis.occlusion(apply_fn, params, x, labels, patch=2, stride=2, fill=0.5,
                       batch_size=batch_size)
  chex.assert_shape(sens, (2, 4, 4))
  np.testing.assert_array_equal(sens[:, :, 2:], 0.0)  # patches in columns 4..7
  assert bool(jnp.all(jnp.abs(sens[:, :, :2]) > 0))
  pixels = vis.occlusion_to_pixels(sens, height=8, width=8, patch=2, stride=2)
  np.testing.assert_allclose(pixels[:, ::2, ::2], sens)
  np.testing.assert_array_equal(pixels[:, :, 4:], 0.0)


def test_occlusion_is_the_probability_drop(key):
  apply_fn, params = linear_classifier(key, shape=(4, 4, 1))
  x = jax.random.uniform(jax.random.key(1), (1, 4, 4, 1))
  sens = vis.occlusion(apply_fn, params, x, jnp.array([1]), patch=2, stride=1, fill=0.0)
  occluded = x.at[0, 1:3, 2:4].set(0.0)
  p = lambda z: jax.nn.softmax(apply_fn(params, z))[0, 1]
  np.testing.assert_allclose(sens[0, 1, 2], p(x) - p(occluded), rtol=1e-5)


def test_gradient_ascent_on_a_linear_score_saturates_along_the_weights(key):
  apply_fn, params = linear_classifier(key, shape=(6, 6, 1), num_classes=2)
  objective = vis.class_objective(apply_fn, params, jnp.array([0, 1]))
  x, trace = jax.jit(lambda k, x0: vis.gradient_ascent(
      k, objective, x0, num_steps=60, step_size=0.1))(key, jnp.full((2, 6, 6, 1), 0.5))
  weights = params["w"][:, :2].T.reshape(2, 6, 6, 1)
  # Every pixel moves along its weight's sign; those with non-negligible
  # weights (normalised steps of >= 0.01 pixels) hit the bound.
  np.testing.assert_array_equal(jnp.sign(x - 0.5), jnp.sign(weights))
  large = jnp.abs(weights) > 0.1 * jnp.mean(jnp.abs(weights), axis=(1, 2, 3), keepdims=True)
  np.testing.assert_array_equal(x[large], (weights[large] > 0).astype(jnp.float32))
  assert int(jnp.sum(large)) > 60
  chex.assert_shape(trace, (60, 2))
  assert bool(jnp.all(jnp.diff(trace, axis=0) >= -1e-5))


def test_gradient_ascent_regularisers(key):
  apply_fn, params = linear_classifier(key, shape=(10, 10, 1), num_classes=1)
  objective = vis.class_objective(apply_fn, params, jnp.array([0]))
  x0 = jnp.full((1, 10, 10, 1), 0.5)
  # L2 decay alone: the image stays where decay balances the step.
  plain, _ = vis.gradient_ascent(key, objective, x0, num_steps=5, step_size=0.05)
  decayed, _ = vis.gradient_ascent(key, objective, x0, num_steps=5, step_size=0.05,
                                   l2_decay=0.5)
  assert float(jnp.sum(jnp.abs(decayed - 0.5))) < float(jnp.sum(jnp.abs(plain - 0.5)))
  # Norm clipping at the 50th percentile leaves half the pixels at the centre.
  clipped, _ = vis.gradient_ascent(key, objective, x0, num_steps=1, step_size=0.05,
                                   norm_clip_percentile=50.0)
  assert int(jnp.sum(clipped == 0.5)) == 50
  contrib, _ = vis.gradient_ascent(key, objective, x0, num_steps=1, step_size=0.05,
                                   contribution_clip_percentile=80.0)
  assert int(jnp.sum(contrib == 0.5)) == 80
  # Blurring every step smooths: less total variation than without.
  blurred, _ = vis.gradient_ascent(key, objective, x0, num_steps=5, step_size=0.05,
                                   blur_every=1, blur_sigma=1.0)
  assert float(vis.total_variation(blurred)[0]) < float(vis.total_variation(plain)[0])
  # Jitter changes the path, and a split run equals the whole run.
  whole, _ = vis.gradient_ascent(key, objective, x0, num_steps=6, step_size=0.05, jitter=2,
                                 blur_every=2)
  half, _ = vis.gradient_ascent(key, objective, x0, num_steps=3, step_size=0.05, jitter=2,
                                blur_every=2)
  rest, _ = vis.gradient_ascent(key, objective, half, num_steps=3, step_size=0.05,
                                jitter=2, blur_every=2, first_step=3)
  np.testing.assert_allclose(rest, whole, atol=1e-6)


def test_gaussian_blur_keeps_constants_and_sums(key):
  assert float(jnp.sum(vis.gaussian_kernel(1.3))) == pytest.approx(1.0, abs=1e-6)
  blur = jax.jit(lambda x: vis.gaussian_blur(x, sigma=1.0))
  const = jnp.full((2, 9, 9, 3), 0.3)
  np.testing.assert_allclose(blur(const), const, atol=1e-6)
  x = jax.random.uniform(key, (2, 9, 9, 3))
  blurred = blur(x)
  chex.assert_shape(blurred, x.shape)
  assert float(jnp.std(blurred)) < float(jnp.std(x))


def test_unit_objective_reads_the_named_unit(key):
  apply_fn, params = models.init("lenet", key)
  features = models.feature_fn(apply_fn)
  x = jax.random.uniform(key, (2, 28, 28, 1))
  acts = features(params, x)
  channel = vis.unit_objective(features, params, layer="conv2", units=jnp.array([3, 7]))
  np.testing.assert_allclose(channel(x), [acts["conv2"][0, :, :, 3].mean(),
                                          acts["conv2"][1, :, :, 7].mean()], rtol=1e-5)
  neuron = vis.unit_objective(features, params, layer="conv1", units=jnp.array([0, 1]),
                              position=(5, 6))
  np.testing.assert_allclose(neuron(x), [acts["conv1"][0, 5, 6, 0],
                                         acts["conv1"][1, 5, 6, 1]], rtol=1e-6)
  dense = vis.unit_objective(features, params, layer="ip1", units=jnp.array([10, 20]))
  np.testing.assert_allclose(dense(x), [acts["ip1"][0, 10], acts["ip1"][1, 20]])


def test_receptive_field_of_lenet_contains_each_units_gradient(key):
  apply_fn, params = models.init("lenet", key)
  features = models.feature_fn(apply_fn)
  assert vis.zoo_receptive_field("lenet", "conv1") == (5, 1, 0)
  assert vis.zoo_receptive_field("lenet", "conv2") == (14, 2, 0)
  assert vis.zoo_receptive_field("lenet", "pool2") == (16, 4, 0)
  x = jax.random.uniform(key, (1, 28, 28, 1))
  for layer, (i, j) in [("conv1", (3, 17)), ("conv2", (2, 5)), ("pool2", (1, 3))]:
    field = vis.zoo_receptive_field("lenet", layer)
    def unit(x, layer=layer, i=i, j=j):
      return features(params, x)[layer][0, i, j, 0]
    grad = jax.grad(unit)(x)[0, ..., 0]
    inside = np.zeros((28, 28), bool)
    r0, c0 = field.start + i * field.jump, field.start + j * field.jump
    inside[r0:r0 + field.size, c0:c0 + field.size] = True
    assert bool(jnp.all(grad[~inside] == 0)), layer
    if layer == "conv1":  # no pooling below: the support is the whole field
      assert bool(jnp.all(grad[inside] != 0))


def test_max_activating_patches_crop_the_receptive_field(key):
  # A 3x3 box filter (VALID): each activation is the sum of its 3x3 field.
  def features(params, x):
    box = jnp.ones((3, 3, 1, 1))
    out = jax.lax.conv_general_dilated(x, box, (1, 1), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return {"box": out, "flat": x.reshape(x.shape[0], -1)}

  images = jax.random.uniform(key, (20, 9, 9, 1))
  field = vis.receptive_field([(3, 1, 0)])
  top = jax.jit(lambda images: vis.max_activating_patches(
      features, None, images, layer="box", units=[0], top_k=4, field=field,
      batch_size=8))(images)
  chex.assert_shape(top.patches, (1, 4, 3, 3, 1))
  np.testing.assert_allclose(jnp.sum(top.patches, axis=(2, 3, 4)), top.activations,
                             rtol=1e-5)
  best_per_image = jnp.max(features(None, images)["box"], axis=(1, 2, 3))
  np.testing.assert_allclose(top.activations[0], jnp.sort(best_per_image)[::-1][:4],
                             rtol=1e-6)
  assert len(set(np.asarray(top.image_index[0]).tolist())) == 4
  dense = vis.max_activating_patches(features, None, images, layer="flat", units=[5, 40],
                                     top_k=2)
  np.testing.assert_array_equal(dense.patches[0, 0], images[dense.image_index[0, 0]])
  assert float(dense.activations[1, 0]) == float(jnp.max(images.reshape(20, -1)[:, 40]))


def test_filter_grid_maps_zero_to_grey_and_keeps_signs(key):
  kernel = jax.random.normal(key, (5, 5, 1, 20))
  grid = vis.filter_grid(kernel)
  chex.assert_shape(grid, (20, 5, 5, 1))
  assert float(grid.min()) >= 0.0 and float(grid.max()) <= 1.0
  np.testing.assert_array_equal(grid > 0.5, jnp.moveaxis(kernel, -1, 0) > 0)
  np.testing.assert_allclose(jnp.max(jnp.abs(grid - 0.5), axis=(1, 2, 3)), 0.5, rtol=1e-6)


def test_gram_matrix_is_symmetric_positive_semidefinite(key):
  features = jax.random.normal(key, (3, 7, 5, 16))
  gram = vis.gram_matrix(features)
  chex.assert_shape(gram, (3, 16, 16))
  np.testing.assert_allclose(gram, jnp.swapaxes(gram, 1, 2), atol=1e-6)
  eig = np.linalg.eigvalsh(np.asarray(gram, np.float64))
  assert eig.min() >= -1e-5 * eig.max()
  flat = features[1].reshape(-1, 16)
  np.testing.assert_allclose(gram[1], flat.T @ flat / 35, rtol=1e-5, atol=1e-6)


def test_total_variation_known_values():
  ramp = jnp.tile(jnp.arange(4.0)[None, :, None, None], (1, 1, 4, 1))  # rows 0..3
  # 3 x 4 differences of 1 in y (every column, the last included), none in x.
  assert float(vis.total_variation(ramp)[0]) == pytest.approx(12.0)
  assert float(vis.total_variation(ramp, beta=1.0)[0]) == pytest.approx(12.0, rel=1e-3)
  assert float(vis.total_variation(jnp.ones((1, 5, 5, 3)))[0]) == 0.0


@pytest.mark.parametrize("jit", [False, True])
def test_inverting_the_identity_feature_map_recovers_the_image(key, jit):
  image = jax.random.uniform(key, (2, 12, 12, 3))
  features = lambda params, x: {"pixels": x}

  def invert(target, x0):
    return vis.invert_features(features, None, target, x0, layer="pixels",
                               num_steps=300, learning_rate=0.02)

  invert = jax.jit(invert) if jit else invert
  recovered, metrics = invert(image, jnp.full_like(image, 0.5))
  np.testing.assert_allclose(recovered, image, atol=2e-2)
  chex.assert_shape(metrics["feature_loss"], (300, 2))
  assert bool(jnp.all(metrics["feature_loss"][-1] < 1e-3 * metrics["feature_loss"][0]))


def test_tv_weight_smooths_the_inversion(key):
  image = jax.random.uniform(key, (1, 12, 12, 1))
  features = lambda params, x: {"pixels": x}
  sharp, _ = vis.invert_features(features, None, image, jnp.full_like(image, 0.5),
                                 layer="pixels", num_steps=100)
  smooth, _ = vis.invert_features(features, None, image, jnp.full_like(image, 0.5),
                                  layer="pixels", num_steps=100, tv_weight=0.05)
  assert float(vis.total_variation(smooth)[0]) < 0.5 * float(vis.total_variation(sharp)[0])


def test_style_transfer_fixed_point_and_progress(key):
  apply_fn, params = models.init("lenet", key)
  features = models.feature_fn(apply_fn)
  content = jax.random.uniform(jax.random.key(1), (1, 28, 28, 1))
  style = jax.random.uniform(jax.random.key(2), (1, 28, 28, 1)) ** 3
  _, metrics = vis.style_transfer(features, params, content, content, content,
                                  content_layer="conv2", style_layers=["conv1"],
                                  num_steps=1)
  # Starting at the content, which is also the style: both losses are zero.
  np.testing.assert_allclose(metrics["content"][0], 0.0, atol=1e-10)
  np.testing.assert_allclose(metrics["style"][0], 0.0, atol=1e-10)
  styled, metrics = vis.style_transfer(features, params, content, style, content,
                                       content_layer="conv2",
                                       style_layers=["conv1", "conv2"], num_steps=40,
                                       content_weight=0.0, style_weights=[1.0, 1.0])
  assert float(metrics["style"][-1, 0]) < 0.2 * float(metrics["style"][0, 0])
  assert float(styled.min()) >= 0.0 and float(styled.max()) <= 1.0


def test_deep_dream_amplifies_the_layer(key):
  apply_fn, params = models.init("lenet", key)
  features = models.feature_fn(apply_fn)
  image = jax.random.uniform(key, (1, 40, 40, 1))
  dreamed = vis.deep_dream(key, features, params, image, layer="conv1", num_octaves=2,
                           steps_per_octave=5, step_size=0.02, input_size=(28, 28))
  chex.assert_shape(dreamed, image.shape)
  energy = lambda x: float(jnp.mean(jnp.square(features(
      params, jax.image.resize(x, (1, 28, 28, 1), "linear"))["conv1"])))
  assert energy(dreamed) > 1.2 * energy(image)
  assert float(dreamed.min()) >= 0.0 and float(dreamed.max()) <= 1.0


def test_tsne_calibrates_perplexity_and_separates_clusters(key):
  k_points, k_embed = jax.random.split(key)
  centres = 10.0 * jnp.eye(3, 10)
  labels = jnp.repeat(jnp.arange(3), 40)
  points = centres[labels] + jax.random.normal(k_points, (120, 10))
  cond = vis.conditional_probabilities(vis.squared_distances(points), perplexity=15.0)
  np.testing.assert_allclose(jnp.sum(cond, axis=1), 1.0, rtol=1e-5)
  entropy = -jnp.sum(jnp.where(cond > 0, cond * jnp.log(jnp.where(cond > 0, cond, 1)), 0),
                     axis=1)
  np.testing.assert_allclose(entropy, jnp.log(15.0), atol=1e-3)
  assert bool(jnp.all(jnp.diag(cond) == 0))
  result = jax.jit(lambda k, x: vis.tsne(k, x, perplexity=15.0, num_iters=250,
                                        exaggeration_iters=100))(k_embed, points)
  chex.assert_shape(result.embedding, (120, 2))
  # Separated clusters: nearly every point's neighbours share its label (a random
  # embedding gives about 1/3). Not exactly 1.0: on an AVX-512 machine, compiled at
  # LLVM level 0 (tests/conftest.py), 5 of the 600 neighbour pairs crossed clusters
  # (0.992); at XLA's default level none did.
  assert float(vis.neighbour_agreement(result.embedding, labels, k=5)) >= 0.95
  assert float(result.kl[-1]) < float(result.kl[101])


def test_visualize_experiment_smoke_writes_pngs(tmp_path):
  from PIL import Image

  from experiments.cs231n import visualize as experiment
  from experiments.cs231n.configs import visualize as configs

  config = configs.get_config("smoke")
  summary = experiment.run(config, tmp_path)
  figures = sorted((tmp_path / "figures").glob("*.png"))
  names = {f.stem for f in figures}
  assert {"attribution", "class_models", "units", "patches", "filters", "tsne",
          "inversion", "deepdream", "style", "attribution_plus", "segmentation",
          "activations", "fourier"} <= names
  for path in figures:
    with Image.open(path) as image:
      image.load()
      pixels = np.asarray(image.convert("L"))
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50, path
    assert pixels.std() > 5, path  # not a blank canvas
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved == json.loads(json.dumps(summary))
  assert 0.0 <= saved["tsne"]["neighbour_agreement"] <= 1.0
  # Integrated gradients are complete: they sum to logit(x) - logit(black).
  np.testing.assert_allclose(saved["attribution_plus"]["ig_sum"],
                             saved["attribution_plus"]["logit_minus_black_logit"],
                             rtol=0.2, atol=0.05)
  errors = saved["inversion"]["relative_feature_error"]["conv1"]
  np.testing.assert_allclose(np.square(errors),
                             saved["inversion"]["feature_loss_squared_ratio"]["conv1"])
  assert set(saved["fourier"]) >= {"pixel", "fourier"}
  # TensorBoard: the ascent traces per step and summary.json's numbers at step 0.
  from tests.test_tensorboard import read_scalars
  scalars = read_scalars(tmp_path / "tensorboard")
  last = config.ascent_steps - 1
  for target, end in zip(saved["class_models"]["targets"], saved["class_models"]["logit_end"]):
    assert scalars[(last, f"class_models/logit/{target}")] == pytest.approx(end, rel=1e-5)
  assert scalars[(0, "tsne/neighbour_agreement")] == pytest.approx(
      saved["tsne"]["neighbour_agreement"])
  assert scalars[(config.tsne_iters - 1, "tsne/kl")] == pytest.approx(
      saved["tsne"]["kl_final"], rel=1e-5)
  assert scalars[(0, "style/style/end")] == pytest.approx(saved["style"]["style"]["end"])


def test_visualize_experiment_runs_a_user_model_and_refuses_feature_parts(tmp_path):
  from PIL import Image

  from experiments.cs231n import visualize as experiment
  from experiments.cs231n.configs import visualize as configs

  config = configs.get_config("smoke")
  config.classifier = "tests.user_models:tiny_mnist_classifier"
  config.parts = "attribution,units,filters"
  refused = tmp_path / "refused"
  with pytest.raises(ValueError, match=r"units .*Fix: drop them from config.parts, "
                     r"e.g. --config.parts=attribution,filters") as error:
    experiment.run(config, refused)
  assert "filter_layer 'conv1'" in str(error.value), error.value
  assert "--config.filter_layer to one of Conv_0" in str(error.value), error.value
  assert not refused.exists()  # refused before the work directory is made

  config.parts = "attribution,class_models,filters"
  config.filter_layer = "Conv_0"
  workdir = tmp_path / "user"
  summary = experiment.run(config, workdir)
  for part in ("attribution", "class_models", "filters"):
    with Image.open(workdir / "figures" / f"{part}.png") as image:
      image.load()
      pixels = np.asarray(image.convert("L"))
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50, part
    assert pixels.std() > 5, part  # not a blank canvas
    assert (workdir / part / "result.json").is_file(), part
  assert set(summary["seconds"]) == {"attribution", "class_models", "filters"}
  assert summary["filters"]["shape"] == [5, 5, 1, 4]
  assert len(summary["attribution"]["label_probability"]) == config.num_examples
  assert all(0.0 <= p <= 1.0 for p in summary["class_models"]["target_probability"])
  assert json.loads((workdir / "summary.json").read_text()) == summary
  # A rerun of the same config reads every part back instead of redoing it.
  assert experiment.run(config, workdir) == summary
