"""The original's gradient-ascent fooling (caffe/ascent/find_fooling_image.py): step rule, start, decay."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax import attacks


def _original_lr(grad, obj, max_lr=1e12, early_prog=0.03, late_prog_mult=0.1):
  """The original's lines, transcribed: late_prog, desired_prog, prog_lr, lr."""
  late_prog = late_prog_mult * (1 - obj)
  desired_prog = min(early_prog, late_prog)
  prog_lr = desired_prog / np.linalg.norm(grad) ** 2
  return min(max_lr, prog_lr)


@pytest.mark.parametrize("obj", [0.0, 0.1, 0.7, 0.95, 0.999999])
@pytest.mark.parametrize("scale", [1e-4, 1.0, 300.0])
def test_progress_rule_equals_the_originals_formula(obj, scale):
  grad = scale * np.random.default_rng(0).normal(size=(5, 5, 3))
  got = attacks.progress_step_size(jnp.sum(jnp.square(jnp.asarray(grad, jnp.float32))),
                                   jnp.float32(obj))
  # The original's formula in float64 on the float32 probability the net returns.
  assert float(got) == pytest.approx(_original_lr(grad, float(np.float32(obj))), rel=1e-4)
  capped = attacks.progress_step_size(jnp.float32(1e-20), jnp.float32(obj), max_lr=5.0)
  assert float(capped) == (5.0 if obj < 1 else 0.0)


def _linear(params, x):
  return x.reshape(x.shape[0], -1) @ params["w"]


def test_one_progress_step_predicts_the_desired_gain_on_a_toy_model():
  """The step taken is lr * g with first-order gain <dx, g> = min(0.03, 0.1 (1 - p))."""
  w = jax.random.normal(jax.random.key(0), (12, 4)) * 0.05
  x0 = jnp.full((1, 2, 2, 3), 0.5)
  p = lambda x: jax.nn.softmax(_linear({"w": w}, x[None]))[0, 2]
  images, metrics = attacks.gradient_ascent_fooling(
      None, _linear, {"w": w}, jnp.array([2]), steps=1, objective="softmax",
      init_images=x0, step_rule="progress", clip=False)
  g = jax.grad(p)(x0[0])
  dx = images[0] - x0[0]
  desired = min(0.03, 0.1 * (1 - float(p(x0[0]))))
  assert float(jnp.sum(dx * g)) == pytest.approx(desired, rel=1e-4)
  np.testing.assert_allclose(dx / jnp.linalg.norm(dx), g / jnp.linalg.norm(g), atol=1e-5)
  # and the probability does rise by about that much (second-order terms aside)
  assert float(p(images[0]) - p(x0[0])) == pytest.approx(desired, rel=0.15)


def test_original_start_and_decay_toward_the_mean():
  mean = jnp.linspace(0.2, 0.8, 2 * 2 * 1).reshape(2, 2, 1)
  start = attacks.mean_plus_noise(jax.random.key(0), mean, 3)
  assert start.shape == (3, 2, 2, 1)
  assert float(jnp.abs(start - mean[None]).max()) < 6 / 255   # N(0, 1) in 0-255 units
  # With no gradient, decay 0.01 toward the mean shrinks the distance by 0.99 a step.
  zero = lambda params, x: jnp.zeros((x.shape[0], 3))
  images, _ = attacks.gradient_ascent_fooling(
      None, zero, {}, jnp.array([0, 1, 2]), steps=10, step_size=0.0, l2_decay=0.01,
      decay_center=mean, init_images=start)
  np.testing.assert_allclose(images - mean[None], 0.99 ** 10 * (start - mean[None]),
                             atol=1e-6)


def test_keep_best_returns_the_most_confident_iterate():
  w = jax.random.normal(jax.random.key(1), (12, 4))
  images, metrics = attacks.gradient_ascent_fooling(
      None, _linear, {"w": w}, jnp.array([0, 3]), steps=20, objective="softmax",
      init_images=jnp.full((2, 2, 2, 3), 0.5), step_rule="progress", keep_best=True)
  p = jax.nn.softmax(_linear({"w": w}, images))[jnp.arange(2), jnp.array([0, 3])]
  np.testing.assert_allclose(p, metrics["final_confidence"], rtol=1e-5)
  np.testing.assert_allclose(metrics["final_confidence"], metrics["confidence"].max(0),
                             rtol=1e-6)


@pytest.mark.parametrize("keep_best", [False, True])
@pytest.mark.parametrize("early_prog, decay", [(0.3, 0.05), (0.02, 0.2)])
def test_trace_and_best_iterate_equal_a_step_by_step_loop(keep_best, early_prog, decay):
  """One forward-backward pass per step: the trace is p after each step, as a plain loop
  of the original's update (step, decay toward the centre, clip) computes it. With
  decay 0.2 the pull toward the centre wins and p falls, so the best iterate is not
  the last one."""
  w = jax.random.normal(jax.random.key(1), (12, 4)) * 2.0
  x0 = jax.random.uniform(jax.random.key(2), (2, 2, 2, 3))
  center = jnp.full((2, 2, 3), 0.4)
  target = jnp.array([1, 3])
  images, metrics = attacks.gradient_ascent_fooling(
      None, _linear, {"w": w}, target, steps=6, objective="softmax", init_images=x0,
      step_rule="progress", early_prog=early_prog, late_prog_mult=0.5, l2_decay=decay,
      decay_center=center, keep_best=keep_best)
  for b in range(2):
    p = lambda x: jax.nn.softmax(_linear({"w": w}, x[None]))[0, target[b]]
    x, trace, best_x, best_p = x0[b], [], x0[b], float(p(x0[b]))
    for _ in range(6):
      g = jax.grad(p)(x)
      lr = _original_lr(np.asarray(g, np.float64), float(p(x)), early_prog=early_prog,
                        late_prog_mult=0.5)
      x = jnp.clip(center + (1 - decay) * (x + lr * g - center), 0.0, 1.0)
      trace.append(float(p(x)))
      if trace[-1] > best_p:
        best_x, best_p = x, trace[-1]
    np.testing.assert_allclose(metrics["confidence"][:, b], trace, rtol=1e-4, atol=1e-6)
    want_x, want_p = (best_x, best_p) if keep_best else (x, trace[-1])
    np.testing.assert_allclose(images[b], want_x, atol=1e-5)
    assert float(metrics["final_confidence"][b]) == pytest.approx(want_p, rel=1e-4)
    if keep_best and decay == 0.2:   # the case keep_best is for: p fell after its best
      assert best_p > trace[-1] + 0.01
