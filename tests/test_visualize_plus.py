"""Known answers for the newer foolingjax.visualize tools: deconvnet, unit backprop,
integrated gradients, Grad-CAM, saliency segmentation, the activation view, the
Fourier parameterisation, and the argument checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax import visualize as vis


# Test data comes from numpy: every new shape through jax.random would compile.
def normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def uniform(seed, shape, minval=0.0, maxval=1.0):
  return jnp.asarray(np.random.default_rng(seed).uniform(minval, maxval, shape),
                     jnp.float32)


def linear_classifier(seed=0, *, shape=(8, 8, 1), num_classes=3):
  h, w, c = shape
  weights = normal(seed, (h * w * c, num_classes))

  def apply_fn(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"][None]

  return apply_fn, {"w": weights, "b": jnp.arange(num_classes) * 0.1}


def conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def tiny_conv_net(seed=0, *, relu=jax.nn.relu, channels=4, num_classes=3):
  """conv -> relu -> conv -> relu -> global average pool -> dense."""
  params = {"k1": normal(seed, (3, 3, 3, channels)) * 0.5,
            "k2": normal(seed + 1, (3, 3, channels, channels)) * 0.5,
            "w": normal(seed + 2, (channels, num_classes))}

  def features(params, x, relu=relu):
    a1 = relu(conv(x, params["k1"]))
    a2 = relu(conv(a1, params["k2"]))
    logits = jnp.mean(a2, axis=(1, 2)) @ params["w"]
    return {"a1": a1, "a2": a2, "logits": logits}

  return features, params


def _raises(pattern, fn):
  # Eagerly a ValueError; under jit the host check's ValueError arrives inside
  # a JaxRuntimeError that carries its message.
  with pytest.raises((ValueError, jax.errors.JaxRuntimeError)) as info:
    jax.block_until_ready(fn())
  assert pattern in str(info.value), str(info.value)[-1000:]


# --- integrated gradients ----------------------------------------------------

@pytest.mark.parametrize("jit, method", [(False, "trapezoid"), (True, "riemann")])
def test_integrated_gradients_of_a_linear_model_is_gradient_times_delta(key, jit,
                                                                        method):
  apply_fn, params = linear_classifier(0)
  x = uniform(9622, (3, 8, 8, 1))
  labels = jnp.array([2, 0, 1])
  baseline = uniform(4492, (8, 8, 1))

  def ig(x, labels, batch_size=None, baseline=None):
    return vis.integrated_gradients(apply_fn, params, x, labels, baseline=baseline,
                                    steps=7, method=method, batch_size=batch_size)

  fn = jax.jit(ig, static_argnames="batch_size") if jit else ig
  weights = params["w"][:, labels].T.reshape(x.shape)
  np.testing.assert_allclose(fn(x, labels), weights * x, rtol=1e-5, atol=1e-6)
  attributions = fn(x, labels, baseline=baseline)
  np.testing.assert_allclose(attributions, weights * (x - baseline[None]), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(fn(x, labels, batch_size=3, baseline=baseline),
                             attributions, rtol=1e-6, atol=1e-7)


def test_integrated_gradients_are_complete_on_a_nonlinear_net(key):
  params = {"w1": normal(1033, (16, 32)), "w2": normal(8707, (32, 4))}

  def apply_fn(params, x):
    return jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"] - 1.0) @ params["w2"]

  x = uniform(9622, (2, 4, 4, 1))
  labels = jnp.array([3, 1])

  @jax.jit
  def attributions(x):
    ig = vis.integrated_gradients(apply_fn, params, x, labels, steps=64)
    return ig, vis.saliency(apply_fn, params, x, labels) * x

  ig, gradient_times_input = attributions(x)
  picked = jnp.arange(2), labels
  gap = apply_fn(params, x)[picked] - apply_fn(params, jnp.zeros_like(x))[picked]
  np.testing.assert_allclose(jnp.sum(ig, axis=(1, 2, 3)), gap, rtol=1e-2, atol=1e-3)
  assert float(jnp.max(jnp.abs(ig - gradient_times_input))) > 1e-2  # not linear


# --- Grad-CAM ------------------------------------------------------------------

@pytest.mark.parametrize("jit", [True])
def test_grad_cam_of_a_gap_dense_net_is_its_cam(key, jit):
  features, params = tiny_conv_net()
  x = uniform(4601, (2, 6, 6, 3))
  labels = jnp.array([0, 2])

  def cams(params, x, labels):
    low = vis.grad_cam(features, params, x, labels, layer="a2", upsample=False)
    _, grads = vis.layer_gradients(features, params, x, labels, layer="a2")
    return low, vis.grad_cam(features, params, x, labels, layer="a2"), grads

  low, high, grads = (jax.jit(cams) if jit else cams)(params, x, labels)
  acts = features(params, x)["a2"]
  # Zhou et al.'s CAM: relu(sum_k W[k, c] A^k), over h w from the pooling.
  cam = jax.nn.relu(jnp.einsum("bhwk,kb->bhw", acts, params["w"][:, labels])) / 36
  chex.assert_shape(low, (2, 6, 6))
  np.testing.assert_allclose(low, cam, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(high, cam, rtol=1e-5, atol=1e-7)  # same size: no resize
  assert float(jnp.max(cam)) > 0
  # The layer gradient itself is W[:, c] / (h w) at every position.
  np.testing.assert_allclose(grads[1, 3, 4], params["w"][:, 2] / 36, rtol=1e-5)


def test_grad_cam_upsamples_a_coarse_layer_and_finds_layers_inside_jit(key):
  # A stride-2 layer inside a nested jit: the offset follows it in.
  params = {"k": normal(1033, (2, 2, 1, 3)), "w": normal(8707, (3, 2))}

  @jax.jit
  def coarse(params, x):
    return jax.nn.relu(jax.lax.conv_general_dilated(
        x, params["k"], (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))

  def features(params, x):
    a = coarse(params, x)
    return {"a": a, "logits": jnp.mean(a, axis=(1, 2)) @ params["w"]}

  x = uniform(6937, (1, 8, 8, 1))
  cam = vis.grad_cam(features, params, x, jnp.array([1]), layer="a")
  chex.assert_shape(cam, (1, 8, 8))
  acts = features(params, x)["a"]
  closed = jax.nn.relu(jnp.einsum("bhwk,k->bhw", acts, params["w"][:, 1])) / 16
  np.testing.assert_allclose(cam, jax.image.resize(closed, (1, 8, 8), "linear"),
                             rtol=1e-5, atol=1e-7)


# --- deconvnet and unit backprop ----------------------------------------------

def test_deconv_relu_rectifies_the_incoming_gradient_whatever_the_input(key):
  x = normal(9622, (500,))
  g = normal(915, (500,))
  out, vjp = jax.vjp(vis.deconv_relu, x)
  np.testing.assert_array_equal(out, jax.nn.relu(x))
  np.testing.assert_array_equal(vjp(g)[0], jnp.maximum(g, 0.0))
  np.testing.assert_array_equal(jax.vjp(vis.deconv_relu6, 4 * x)[1](g)[0],
                                jnp.maximum(g, 0.0))


@pytest.mark.parametrize("jit", [False, True])
def test_deconvnet_on_a_one_layer_relu_net_is_the_hand_rule(key, jit):
  params = {"w1": normal(1033, (16, 12)), "w2": normal(8707, (12, 3))}

  def apply_fn(params, x):
    return jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"]) @ params["w2"]

  x = uniform(9622, (2, 4, 4, 1))
  labels = jnp.array([1, 1])
  fn = jax.jit(vis.deconvnet, static_argnums=0) if jit else vis.deconvnet
  deconv = fn(apply_fn, params, x, labels).reshape(2, 16)
  # Down through the dense layer, the ReLU rectifies the signal, whatever the
  # forward pre-activation was: the same map for both images.
  expected = params["w1"] @ jnp.maximum(params["w2"][:, 1], 0.0)
  np.testing.assert_allclose(deconv, jnp.stack([expected, expected]), rtol=1e-5,
                             atol=1e-6)
  hidden = x.reshape(2, 16) @ params["w1"]
  plain = (params["w2"][None, :, 1] * (hidden > 0)) @ params["w1"].T
  np.testing.assert_allclose(vis.saliency(apply_fn, params, x, labels).reshape(2, 16),
                             plain, rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(deconv - plain))) > 1e-3


def test_guided_backprop_from_a_hidden_unit_is_the_hand_rule(key):
  params = {"w1": normal(1033, (12, 10)), "w2": normal(8707, (10, 6)),
            "w3": normal(5461, (6, 3))}

  def features(params, x):
    z1 = x.reshape(x.shape[0], -1) @ params["w1"]
    h1 = jax.nn.relu(z1)
    h2 = jax.nn.relu(h1 @ params["w2"])
    return {"z1": z1, "h1": h1, "h2": h2, "logits": h2 @ params["w3"]}

  x = uniform(9622, (3, 2, 2, 3))
  units = jnp.array([0, 4, 5])
  guided = jax.jit(lambda x: vis.unit_backprop(features, params, x, units,
                                               layer="h2"))(x).reshape(3, 12)
  z1 = features(params, x)["z1"]
  z2 = features(params, x)["h1"] @ params["w2"]
  for b, k in enumerate(units.tolist()):
    # Guided rule at h2[k] (incoming 1): passes iff z2 > 0; then at h1 the
    # gradient w2[:, k] passes only where z1 > 0 and it is positive.
    g_h1 = params["w2"][:, k] * (z2[b, k] > 0)
    g_z1 = jnp.where((z1[b] > 0) & (g_h1 > 0), g_h1, 0.0)
    np.testing.assert_allclose(guided[b], params["w1"] @ g_z1, rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(guided))) > 0


@pytest.mark.parametrize("rule, relu", [("guided", vis.guided_relu),
                                        ("deconvnet", vis.deconv_relu),
                                        (None, jax.nn.relu)])
def test_unit_backprop_in_a_conv_net_matches_an_explicit_forward(key, rule, relu):
  features, params = tiny_conv_net()
  x = uniform(2090, (2, 6, 6, 3))
  units = jnp.array([1, 3])
  got = vis.unit_backprop(features, params, x, units, layer="a2", position=(2, 3),
                          rule=rule)
  explicit = lambda x: jnp.sum(features(params, x, relu=relu)["a2"][
      jnp.arange(2), 2, 3, units])
  np.testing.assert_allclose(got, jax.grad(explicit)(x), rtol=1e-5, atol=1e-7)


# --- segmentation ----------------------------------------------------------------

def test_segmentation_seeded_by_a_saliency_blob_recovers_the_square(key):
  size, lo, hi = 32, 8, 22
  rows, cols = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
  square = (rows >= lo) & (rows < hi) & (cols >= lo) & (cols < hi)
  noise = 0.08 * normal(6937, (2, size, size, 3))
  image = jnp.clip(jnp.where(square[None, ..., None], 0.75, 0.3) + noise, 0.0, 1.0)
  # A saliency blob off the square's centre, plus noise: only its peak is
  # inside the square.
  centre = jnp.array([[13.0, 12.0], [16.0, 17.0]])
  blob = jnp.exp(-((rows[None] - centre[:, 0, None, None]) ** 2
                   + (cols[None] - centre[:, 1, None, None]) ** 2) / (2 * 4.0 ** 2))
  saliency = blob + 0.05 * uniform(4601, blob.shape)
  prob = jax.jit(vis.segment_from_saliency)(image, saliency)
  chex.assert_shape(prob, (2, size, size))
  mask = prob > 0.5
  iou = (jnp.sum(mask & square[None], axis=(1, 2))
         / jnp.sum(mask | square[None], axis=(1, 2)))
  assert bool(jnp.all(iou > 0.9)), iou
  # The seeds alone cover far less: the colour model and smoothing did the work.
  seeds = saliency >= jnp.quantile(saliency.reshape(2, -1), 0.95, axis=1)[:, None, None]
  assert int(jnp.sum(seeds[0])) < 0.4 * int(jnp.sum(square))


# --- activation view ---------------------------------------------------------------

def test_activation_grid_tiles_every_channel_scaled_to_unit_range(key):
  maps = normal(6937, (2, 3, 4, 5))
  features = lambda params, x: {"maps": maps, "flat": maps.reshape(2, -1)}
  x = jnp.zeros((2, 6, 6, 1))
  grid, whole = jax.jit(lambda x: (
      vis.activation_grid(features, None, x, layer="maps", ncols=2),
      vis.activation_grid(features, None, x, layer="maps", per_channel=False)))(x)
  chex.assert_shape(grid, (2, 3 * 4 - 1, 2 * 5 - 1))  # 3 rows of 2 tiles, 1-px gaps
  lo = jnp.min(maps, axis=(1, 2), keepdims=True)
  scaled = (maps - lo) / (jnp.max(maps, axis=(1, 2), keepdims=True) - lo)
  for k in range(5):
    r, c = divmod(k, 2)
    np.testing.assert_allclose(grid[:, 4 * r:4 * r + 3, 5 * c:5 * c + 4],
                               scaled[..., k], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(grid[:, 8:, 5:], 1.0)  # the empty sixth tile
  np.testing.assert_array_equal(grid[:, 3, :], 1.0)  # a separator row
  assert float(whole.min()) == 0.0 and float(whole.max()) == 1.0
  with pytest.raises(ValueError, match="needs a conv layer"):
    vis.activation_grid(features, None, x, layer="flat")


# --- Fourier parameterisation ---------------------------------------------------------

def test_fourier_image_inverts_image_to_spectrum(key):
  images = uniform(6937, (2, 10, 13, 3), minval=0.05, maxval=0.95)

  @jax.jit
  def round_trip(images):
    spectrum = vis.image_to_spectrum(images)
    return spectrum, vis.fourier_image(spectrum, height=10, width=13)

  spectrum, back = round_trip(images)
  chex.assert_shape(spectrum, (2, 3, 10, 7, 2))
  np.testing.assert_allclose(back, images, atol=2e-4)
  _, grey = round_trip(images[..., :1])  # 1 channel: no colour mixing
  np.testing.assert_allclose(grey, images[..., :1], atol=2e-4)
  # lucid's matrix, normalised so its largest column has norm 1.
  np.testing.assert_allclose(np.linalg.norm(vis.COLOR_CORRELATION, axis=0).max(), 1.0,
                             rtol=1e-6)
  scale = vis.spectrum_scale(10, 13)
  assert float(scale[0, 0]) == pytest.approx(13 * np.sqrt(130), rel=1e-5)  # DC capped
  assert float(scale[0, 1]) == pytest.approx(13 * np.sqrt(130), rel=1e-5)  # f = 1/13
  assert float(scale[5, 0]) == pytest.approx(2 * np.sqrt(130), rel=1e-5)  # f = 1/2


def test_random_transform_is_the_identity_without_transforms(key):
  x = uniform(6937, (2, 9, 9, 3))
  same, moved = jax.jit(lambda x: (
      vis.random_transform(key, x, jitter=0.0, scale_range=(1.0, 1.0), max_angle=0.0),
      vis.random_transform(key, x)))(x)
  np.testing.assert_allclose(same, x, atol=1e-6)
  assert float(jnp.max(jnp.abs(moved - x))) > 0.05


@pytest.mark.parametrize("jit", [True])
def test_fourier_ascent_raises_a_class_score(key, jit):
  apply_fn, params = linear_classifier(0, shape=(12, 12, 3), num_classes=2)
  objective = vis.class_objective(apply_fn, params, jnp.array([0, 1]))
  spectrum0 = vis.fourier_init(jax.random.key(1), 2, height=12, width=12)

  def ascend(spectrum0):
    return vis.fourier_ascent(key, objective, spectrum0, height=12, width=12,
                              num_steps=20, jitter=1.0, max_angle=5.0)

  images, spectrum, trace = (jax.jit(ascend) if jit else ascend)(spectrum0)
  chex.assert_shape(images, (2, 12, 12, 3))
  chex.assert_shape(trace, (20, 2))
  assert float(images.min()) > 0.0 and float(images.max()) < 1.0
  start = objective(vis.fourier_image(spectrum0, height=12, width=12))
  assert bool(jnp.all(objective(images) > start + 3.0)), (objective(images), start)
  np.testing.assert_allclose(vis.fourier_image(spectrum, height=12, width=12), images)


def test_fourier_deep_dream_from_a_photo_amplifies_the_layer(key):
  features, params = tiny_conv_net()
  image = uniform(6937, (1, 16, 16, 3), minval=0.1, maxval=0.9)
  objective = vis.dream_objective(features, params, layer="a1")
  dreamed, _, trace = jax.jit(lambda image: vis.fourier_ascent(
      key, objective, vis.image_to_spectrum(image), height=16, width=16, num_steps=8,
      jitter=1.0))(image)
  assert float(objective(dreamed)[0]) > 1.05 * float(objective(image)[0])
  assert float(trace[0, 0]) < float(trace[-1, 0])


# --- total variation and inversion ------------------------------------------------------

def test_total_variation_gives_every_pixel_a_gradient_corner_included(key):
  x = uniform(6937, (1, 5, 6, 2))
  grad = jax.grad(lambda x: vis.total_variation(x)[0])(x)
  assert float(jnp.min(jnp.abs(grad[0, -1, -1]))) > 1e-4  # the corner, each channel
  assert bool(jnp.all(grad != 0))
  # beta = 1: the corner's two differences (up, left) each pull with +-1; they
  # cancel where their signs differ, so only some channel need move.
  grad = jax.grad(lambda x: vis.total_variation(x, beta=1.0)[0])(x)
  assert float(jnp.max(jnp.abs(grad[0, -1, -1]))) > 0.5
  # beta = 2: every horizontal and vertical squared neighbour difference, once.
  expected = (jnp.sum(jnp.square(jnp.diff(x, axis=1)))
              + jnp.sum(jnp.square(jnp.diff(x, axis=2))))
  np.testing.assert_allclose(vis.total_variation(x)[0], expected, rtol=1e-6)


def test_invert_features_reports_the_true_relative_error(key):
  target = uniform(6937, (2, 6, 6, 1), minval=0.2, maxval=0.8)
  _, metrics = vis.invert_features(lambda params, x: {"pixels": x}, None, target,
                                   0.5 * target, layer="pixels", num_steps=1)
  np.testing.assert_allclose(metrics["relative_error"][0], [0.5, 0.5], rtol=1e-5)
  np.testing.assert_allclose(metrics["feature_loss"][0], [0.25, 0.25], rtol=1e-5)


# --- argument checks --------------------------------------------------------------------

@pytest.mark.parametrize("jit", [False, True])
def test_out_of_range_classes_and_units_raise_one_clear_error(key, jit):
  apply_fn, params = linear_classifier(0, shape=(4, 4, 3), num_classes=3)
  features, conv_params = tiny_conv_net()
  x = uniform(6937, (2, 4, 4, 3))
  bad = jnp.array([0, 3])
  call = (lambda f, *a: jax.jit(f)(*a)) if jit else (lambda f, *a: f(*a))
  for fn in (vis.saliency, vis.deconvnet, vis.guided_backprop,
             vis.integrated_gradients):
    _raises("labels must lie in [0, 3)",
            lambda fn=fn: call(lambda x, y: fn(apply_fn, params, x, y), x, bad))
  _raises("labels must lie in [0, 3)", lambda: call(
      lambda x, y: vis.class_objective(apply_fn, params, y)(x), x, bad))
  _raises("labels must lie in [0, 3)", lambda: call(
      lambda x, y: vis.grad_cam(features, conv_params, x, y, layer="a2"), x, bad))
  _raises("units must lie in [0, 4), the 4 channels of layer 'a2'", lambda: call(
      lambda x, u: vis.unit_objective(features, conv_params, layer="a2", units=u)(x),
      x, jnp.array([1, 4])))
  _raises("units must lie in [0, 4)", lambda: call(
      lambda x, u: vis.unit_backprop(features, conv_params, x, u, layer="a1"),
      x, jnp.array([-1, 0])))
  _raises("position (4, 0) lies outside layer 'a2'", lambda: call(
      lambda x: vis.unit_objective(features, conv_params, layer="a2",
                                   units=jnp.array([0, 1]), position=(4, 0))(x), x))


def test_unknown_layers_and_bad_pixels_raise_one_clear_error(key):
  features, params = tiny_conv_net()
  x = uniform(6937, (1, 4, 4, 3))
  known = "'a1', 'a2', 'logits'"
  cases = [
      lambda: vis.unit_objective(features, params, layer="conv9", units=[0])(x),
      lambda: vis.grad_cam(features, params, x, jnp.array([0]), layer="conv9"),
      lambda: vis.activation_grid(features, params, x, layer="conv9"),
      lambda: vis.invert_features(features, params, x, x, layer="conv9", num_steps=1),
      lambda: vis.deep_dream(key, features, params, x, layer="conv9", num_octaves=1,
                             steps_per_octave=1),
      lambda: vis.style_transfer(features, params, x, x, x, content_layer="a1",
                                 style_layers=["conv9"], num_steps=1),
  ]
  for case in cases:
    with pytest.raises(ValueError, match="unknown layer 'conv9'") as info:
      case()
    assert known in str(info.value)
  apply_fn, lin = linear_classifier(0, shape=(4, 4, 3))
  with pytest.raises(ValueError, match="divide by 255"):
    vis.saliency(apply_fn, lin, 255.0 * x, jnp.array([0]))
  with pytest.raises(ValueError, match="must have pixels in"):
    vis.segment_from_saliency(x - 0.5, jnp.zeros((1, 4, 4)))
  _raises("must be finite pixels in [0, 1]", lambda: jax.jit(
      lambda x: vis.grad_cam(features, params, x, jnp.array([0]), layer="a2"))(x + 2))
