"""Known answers for foolingjax.attacks.

Most checks use a linear classifier ``logits = flatten(x) @ W + b``, where the
FGSM step and the minimal box-constrained L2 perturbation have closed forms.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax import attacks, models
from foolingjax.attacks import losses, metrics

SHAPE = (6, 6, 1)
DIM = 36


def linear_apply(params, x):
  return jnp.reshape(x, (x.shape[0], -1)) @ params["w"] + params["b"][None]


def linear_params(key, num_classes, *, scale=1.0):
  k_w, k_b = jax.random.split(key)
  return {"w": scale * jax.random.normal(k_w, (DIM, num_classes)),
          "b": scale * 0.1 * jax.random.normal(k_b, (num_classes,))}


def interior_images(key, n):
  return jax.random.uniform(key, (n, *SHAPE), minval=0.3, maxval=0.7)


def mean_ce(apply_fn, params, x, labels):
  return jax.vmap(losses.cross_entropy)(apply_fn(params, x), labels)


def test_fgsm_matches_closed_form_on_linear_model_and_raises_loss(key):
  k_p, k_x, k_y = jax.random.split(key, 3)
  params = linear_params(k_p, 5)
  x = interior_images(k_x, 8)
  y = jax.random.randint(k_y, (8,), 0, 5)
  eps = 0.05
  adv = attacks.fgsm(linear_apply, params, x, y, eps=eps)
  p = jax.nn.softmax(linear_apply(params, x))
  grad = (p - jax.nn.one_hot(y, 5)) @ params["w"].T  # d CE / d x, [B, DIM]
  expected = jnp.clip(x + eps * jnp.sign(grad).reshape(x.shape), 0, 1)
  chex.assert_trees_all_close(adv, expected, atol=1e-6)
  # CE is convex in x for a linear model, so the first-order gain is a lower bound.
  gain = mean_ce(linear_apply, params, adv, y) - mean_ce(linear_apply, params, x, y)
  assert np.all(np.asarray(gain) >= eps * np.abs(np.asarray(grad)).sum(-1) * 0.999)

  adv_l2 = attacks.fgsm(linear_apply, params, x, y, eps=0.5, norm="l2")
  unit = grad / jnp.linalg.norm(grad, axis=-1, keepdims=True)
  chex.assert_trees_all_close(adv_l2, x + 0.5 * unit.reshape(x.shape), atol=1e-6)


def test_fgsm_targeted_moves_towards_target_on_a_cnn(key, mnist_test):
  apply_fn, params = models.init("lenet", key)
  x = jnp.asarray(mnist_test[0][:8], jnp.float32) / 255.0
  targets = jnp.arange(8) % 10
  adv = jax.jit(lambda p, x, t: attacks.fgsm(apply_fn, p, x, t, eps=0.02, targeted=True))(
      params, x, targets)
  before = mean_ce(apply_fn, params, x, targets)
  after = mean_ce(apply_fn, params, adv, targets)
  assert np.all(np.asarray(after) < np.asarray(before))
  chex.assert_shape(adv, x.shape)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_pgd_stays_in_ball_and_box(key, norm, eps):
  k_p, k_x, k_a = jax.random.split(key, 3)
  params = linear_params(k_p, 10)
  # Pixels at 0 and 1 make the box bind.
  x = jnp.round(jax.random.uniform(k_x, (16, *SHAPE)))
  targets = jnp.arange(16) % 10
  attack = jax.jit(lambda p, x, t: attacks.pgd(
      k_a, linear_apply, p, x, t, eps=eps, step_size=eps / 4, steps=20, norm=norm,
      targeted=True))
  adv = attack(params, x, targets)
  dist = (metrics.linf_distortion if norm == "linf" else metrics.l2_distortion)(x, adv)
  assert float(dist.max()) <= eps * (1 + 1e-5)
  assert float(dist.min()) > 0.5 * eps
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_pgd_reaches_every_reachable_target(key, norm):
  # Two classes, so reachability has a closed form: the target t = 1 is reachable
  # iff the minimal box-constrained perturbation fits in the ball.
  k_p, k_x, k_a = jax.random.split(key, 3)
  params = linear_params(k_p, 2)
  a = np.asarray(params["w"][:, 1] - params["w"][:, 0], np.float64)
  offset = float(params["b"][1] - params["b"][0])
  x = np.asarray(jax.random.uniform(k_x, (8, DIM)), np.float64)
  x = x[x @ a + offset < 0][:4]
  needed = [_minimal_box_perturbation(a, offset, xi) for xi in x]
  needed = max(np.abs(r).max() if norm == "linf" else np.linalg.norm(r) for r in needed)
  eps = 1.2 * needed
  x_img = jnp.asarray(x.reshape(-1, *SHAPE), jnp.float32)
  targets = jnp.ones(x.shape[0], jnp.int32)
  adv = jax.jit(lambda p, x, t: attacks.pgd(
      k_a, linear_apply, p, x, t, eps=eps, step_size=eps / 10, steps=40, norm=norm,
      targeted=True))(params, x_img, targets)
  rate = metrics.success_rate(linear_apply(params, adv), targets, targeted=True)
  assert float(rate) == 1.0


@pytest.mark.parametrize("use_jit", [False, True])
def test_pgd_and_bim_same_with_and_without_jit(key, use_jit):
  k_p, k_x, k_a = jax.random.split(key, 3)
  params = linear_params(k_p, 3)
  x = interior_images(k_x, 4)
  y = jnp.array([0, 1, 2, 0])

  def run(params, x, y):
    return (attacks.pgd(k_a, linear_apply, params, x, y, eps=0.1, step_size=0.03,
                        steps=3),
            attacks.bim(linear_apply, params, x, y, eps=0.1, step_size=0.03, steps=3))
  reference = run(params, x, y)
  fn = jax.jit(chex.assert_max_traces(run, n=1)) if use_jit else run
  got = fn(params, x, y)
  fn(params, x + 0.01, y)  # same shapes: no retrace
  chex.assert_trees_all_close(got, reference, atol=1e-6)
  # Untargeted BIM raises the loss of the true label.
  gain = mean_ce(linear_apply, params, got[1], y) - mean_ce(linear_apply, params, x, y)
  assert np.all(np.asarray(gain) > 0)


def _minimal_box_perturbation(a, offset, x):
  """argmin ||r||_2 s.t. a . (x + r) + offset >= 0, 0 <= x + r <= 1 (numpy)."""
  need = -(a @ x + offset)
  lo, hi = -x, 1.0 - x
  r_of = lambda lam: np.clip(lam * a, lo, hi)
  low, high = 0.0, 1.0
  while a @ r_of(high) < need:
    high *= 2
  for _ in range(200):
    mid = 0.5 * (low + high)
    low, high = (mid, high) if a @ r_of(mid) < need else (low, mid)
  return r_of(high)


@pytest.mark.parametrize("solver", attacks.lbfgs.SOLVERS)
def test_lbfgs_finds_minimal_perturbation_of_linear_model(key, solver):
  params = linear_params(jax.random.split(key)[0], 2)
  a = np.asarray(params["w"][:, 1] - params["w"][:, 0], np.float64)
  # At the grey image class 0 wins by a margin of 1: the boundary is
  # 1 / ||a|| ~ 0.13 away, well inside the box.
  offset = -1.0 - a @ np.full(DIM, 0.5)
  params["b"] = jnp.array([0.0, offset], jnp.float32)
  x_int = np.full(DIM, 0.5)
  # Binary pixels: 12 already on the bound that favours class 1 (the
  # unconstrained optimum would push them past it), the rest against it.
  x_box = (a < 0).astype(np.float64)
  x_box[:12] = a[:12] > 0
  x = np.stack([x_int, x_box])
  assert np.all(x @ a + offset < 0)  # both start as class 0
  expected = np.array([np.linalg.norm(_minimal_box_perturbation(a, offset, xi))
                       for xi in x])
  # The box changes the answer for the binary image: unconstrained it is 0.29.
  assert expected[1] > 1.4 * np.abs(a @ x_box + offset) / np.linalg.norm(a)
  x_img = jnp.asarray(x.reshape(2, *SHAPE), jnp.float32)
  attack = jax.jit(lambda p, x, t: attacks.lbfgs_attack(
      linear_apply, p, x, t, c_search_steps=14, max_iters=200, tol=1e-6,
      solver=solver))
  adv, info = attack(params, x_img, jnp.array([1, 1]))
  assert np.all(np.asarray(info.success))
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
  np.testing.assert_allclose(np.asarray(info.l2), expected, rtol=0.02)
  np.testing.assert_allclose(np.asarray(metrics.l2_distortion(x_img, adv)),
                             np.asarray(info.l2), rtol=1e-5)


def test_saturated_softmax_gives_finite_nonzero_steps(key):
  k_p, k_x = jax.random.split(key)
  params = linear_params(k_p, 4, scale=100.0)
  # Image c points along class c's weights: class c wins by thousands of logits.
  x = jnp.clip(0.5 + 0.2 * jnp.sign(params["w"].T), 0, 1).reshape(4, *SHAPE)
  logits = linear_apply(params, x)
  y = jnp.argmax(logits, -1)
  p = jax.nn.softmax(logits)
  assert np.all(np.asarray(jnp.max(p, -1)) == 1.0)  # saturated in float32
  # Plain cross-entropy's gradient underflows to zero here ...
  ce_grad = jax.grad(lambda x: jnp.sum(mean_ce(linear_apply, params, x, y)))(x)
  assert float(jnp.abs(ce_grad).max()) == 0.0
  # ... but the attacks still move, by exactly eps.
  adv = jax.jit(lambda p, x, y: attacks.fgsm(linear_apply, p, x, y, eps=0.01))(
      params, x, y)
  np.testing.assert_allclose(np.asarray(metrics.linf_distortion(x, adv)), 0.01, rtol=1e-5)
  adv = jax.jit(lambda p, x, y: attacks.pgd(
      k_x, linear_apply, p, x, y, eps=0.3, step_size=0.05, steps=10, norm="l2"))(
          params, x, y)
  chex.assert_tree_all_finite(adv)
  assert float(metrics.l2_distortion(x, adv).min()) > 0.0
  targets = (y + 1) % 4
  adv, info = jax.jit(lambda p, x, t: attacks.lbfgs_attack(
      linear_apply, p, x, t, c_search_steps=3))(params, x, targets)
  chex.assert_tree_all_finite((adv, info.l2, info.objective))
  assert np.all(np.asarray(info.success))
  images, out = jax.jit(lambda p, x, y: attacks.gradient_ascent_fooling(
      None, linear_apply, p, y, steps=3, init_images=x, objective="log_softmax"))(
          params, x, y)
  chex.assert_tree_all_finite((images, out["confidence"]))


def test_any_number_of_classes(key):
  for k in (2, 3, 100):
    params = linear_params(jax.random.fold_in(key, k), k)
    x = interior_images(key, 3)
    labels = jnp.array([0, 1, k - 1])
    adv = jax.jit(lambda p, x, y: attacks.fgsm(linear_apply, p, x, y, eps=0.1))(
        params, x, labels)
    chex.assert_shape(adv, x.shape)
    _images, out = jax.jit(lambda p, y: attacks.gradient_ascent_fooling(
        key, linear_apply, p, y, steps=2, image_shape=SHAPE))(params, labels)
    chex.assert_shape(out["confidence"], (2, 3))


def test_gradient_ascent_raises_confidence_with_schedule_blur_and_decay(key):
  apply_fn, params = models.init("fc100_100_10", key)
  target = jnp.arange(10)
  images, out = jax.jit(lambda p, t: attacks.gradient_ascent_fooling(
      key, apply_fn, p, t, steps=30, step_size=lambda i: 20.0 / (1 + 0.1 * i),
      objective="log_softmax", l2_decay=0.01, blur_every=10, blur_sigma=0.5))(
          params, target)
  chex.assert_shape(images, (10, 28, 28, 1))
  chex.assert_shape(out["confidence"], (30, 10))
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  logits = apply_fn(params, images)
  np.testing.assert_allclose(out["final_confidence"],
                             jax.nn.softmax(logits)[jnp.arange(10), target], rtol=1e-5)
  start = jax.random.uniform(key, (10, 28, 28, 1))
  p0 = jax.nn.softmax(apply_fn(params, start))[jnp.arange(10), target]
  assert np.all(np.asarray(out["final_confidence"]) > np.asarray(p0))
  assert float(metrics.success_rate(logits, target, targeted=True)) == 1.0


def test_gaussian_blur_preserves_constant_and_mass():
  image = jnp.full((7, 9, 2), 0.3)
  chex.assert_trees_all_close(attacks.gaussian_blur(image, sigma=1.0), image, atol=1e-6)
  spike = jnp.zeros((9, 9, 1)).at[4, 4, 0].set(1.0)
  blurred = attacks.gaussian_blur(spike, sigma=1.0)
  np.testing.assert_allclose(float(blurred.sum()), 1.0, rtol=1e-5)
  assert float(blurred[4, 4, 0]) < 0.5
  # One image and a batch of it go through the same function.
  batch = jnp.stack([spike, 2 * spike])
  np.testing.assert_allclose(attacks.gaussian_blur(batch, sigma=1.0)[1], 2 * blurred, atol=1e-6)
  with pytest.raises(ValueError, match=r"\[..., H, W, C\]"):
    attacks.gaussian_blur(jnp.zeros((9, 9)), sigma=1.0)


def test_metrics_known_values():
  x = jnp.zeros((2, 2, 2, 1))
  adv = x.at[0].set(0.5).at[1, 0, 0, 0].set(1.0)
  np.testing.assert_allclose(metrics.l2_distortion(x, adv), [1.0, 1.0])
  np.testing.assert_allclose(metrics.linf_distortion(x, adv), [0.5, 1.0])
  # sqrt(sum / n): image 0: sqrt(4 * 0.25 / 4) = 0.5; image 1: sqrt(1 / 4) = 0.5.
  np.testing.assert_allclose(metrics.average_minimum_distortion(x, adv), 0.5)
  np.testing.assert_allclose(
      metrics.average_minimum_distortion(x, adv.at[1].set(0.0),
                                         mask=jnp.array([True, False])), 0.5)
  logits = jnp.array([[0.0, 1.0], [2.0, 1.0]])
  assert float(metrics.success_rate(logits, jnp.array([1, 1]), targeted=True)) == 0.5
  assert float(metrics.success_rate(logits, jnp.array([1, 1]), targeted=False)) == 0.5


def test_bad_arguments_give_one_clear_error_each(key):
  apply_fn, params = models.init("fc10", key)
  x = jnp.full((2, 28, 28, 1), 0.5)
  y = jnp.array([1, 2])
  with pytest.raises(ValueError, match=r"eps must be finite, >= 0 and <= 1.0; got -0.1"):
    attacks.fgsm(apply_fn, params, x, y, eps=-0.1)
  with pytest.raises(ValueError, match=r"eps must be finite"):
    attacks.pgd(key, apply_fn, params, x, y, eps=float("nan"), step_size=0.1, steps=1)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\); got \[10\]"):
    attacks.fgsm(apply_fn, params, x, jnp.array([1, 10]), eps=0.1)
  with pytest.raises(ValueError, match=r"targets must lie in \[0, 10\); got \[-1\]"):
    attacks.lbfgs_attack(apply_fn, params, x, jnp.array([-1, 3]))
  with pytest.raises(ValueError, match=r"labels must have shape \[2\]"):
    attacks.fgsm(apply_fn, params, x, jnp.array([1, 2, 3]), eps=0.1)
  with pytest.raises(ValueError, match=r"add the batch axis"):
    attacks.fgsm(apply_fn, params, x[0], y, eps=0.1)
  with pytest.raises(ValueError, match=r"\[B, 28, 28, 1\]"):
    attacks.lbfgs_attack(apply_fn, params, jnp.zeros((2, 32, 32, 1)), y)
  with pytest.raises(ValueError, match=r"solver must be one of \('zoom', 'armijo'\); got 'lbfgsb'"):
    attacks.lbfgs_attack(apply_fn, params, x, y, solver="lbfgsb")
  with pytest.raises(TypeError, match=r"uint8"):
    attacks.fgsm(apply_fn, params, (x * 255).astype(jnp.uint8), y, eps=0.1)
  with pytest.raises(ValueError, match=r"norm must be one of"):
    attacks.fgsm(apply_fn, params, x, y, eps=0.1, norm="l1")
  with pytest.raises(ValueError, match=r"target must lie in \[0, 10\)"):
    attacks.gradient_ascent_fooling(key, apply_fn, params, jnp.array([0, 12]), steps=1)


@pytest.mark.slow
def test_lbfgs_matches_scipy_on_100_mnist_images():
  """Mean distortion within 5 % of scipy's L-BFGS-B on the same objective, both
  solvers."""
  from benchmarks import bench_lbfgs
  from foolingjax import data, zoo
  apply_fn, params = zoo.load_classifier("fc100_100_10_mnist", seed=0)
  images, labels = data.load("mnist", "test")
  x = images[:100].astype(np.float32) / 255.0
  result = bench_lbfgs.compare(apply_fn, params, x, (labels[:100] + 1) % 10,
                               rounds=1)
  assert result["scipy_success_rate"] >= 0.99
  for tag in bench_lbfgs.CONTENDERS:
    assert result[f"jax_success_rate_{tag}"] >= 0.99
    assert result[f"jax_in_box_{tag}"]
    ratio = result[f"jax_mean_l2_{tag}"] / result[f"scipy_mean_l2_{tag}"]
    assert abs(ratio - 1) < 0.05, result


@pytest.mark.parametrize("minimize", [attacks.lbfgs.minimize_lbfgs,
                                      attacks.lbfgs.minimize_lbfgs_armijo])
def test_inner_lbfgs_loops_find_the_minimum_inside_the_box(minimize):
  """An ill-conditioned quadratic (curvatures 1 to 1000) and a log-cosh whose
  unit steps overshoot, so the Armijo loop has to backtrack: both loops reach
  the minimiser, which lies inside the box, well before the iteration cap."""
  c = jnp.linspace(0.2, 0.8, 12).reshape(3, 4, 1)
  a = jnp.logspace(0, 3, 12).reshape(3, 4, 1)
  quadratic = lambda w: jnp.sum(a * jnp.square(w - c))
  log_cosh = lambda w: jnp.sum(jnp.log(jnp.cosh(20.0 * (w - c))))
  for fun in (quadratic, log_cosh):
    w, value, iterations = jax.jit(lambda w0, fun=fun: minimize(
        fun, w0, max_iters=200, tol=1e-6, ftol=0.0))(jnp.full((3, 4, 1), 0.5))
    np.testing.assert_allclose(np.asarray(w), np.asarray(c), atol=1e-3)
    assert int(iterations) < 200
    assert float(value) == pytest.approx(float(fun(w)), rel=1e-5, abs=1e-6)
