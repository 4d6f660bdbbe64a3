"""Known answers for the researcher's attacks: C&W, DeepFool, APGD, Square, FMN,
AutoAttack, and PGD's restarts / early stop / vector eps.

Most checks use an affine classifier ``logits = flatten(x) @ W + b`` on 6 x 6
images well inside the box, where the distance to the nearest decision
boundary has a closed form: ``min_k (z_y - z_k) / ||w_y - w_k||_*`` (``*`` the
dual norm: L2 for L2, L1 for L∞).
"""

import functools
import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax import attacks
from foolingjax.attacks import losses, metrics

# The package exports functions under the modules' names: fetch the modules.
apgd_module = importlib.import_module("foolingjax.attacks.apgd")
square_module = importlib.import_module("foolingjax.attacks.square")

SHAPE = (6, 6, 1)
DIM = 36

# These programs are tiny: XLA's backend optimisations cost ~2.5x more compile
# time than they save at run time, and compiling is nearly all of this file.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def linear_apply(params, x):
  return jnp.reshape(x, (x.shape[0], -1)) @ params["w"] + params["b"][None]


def linear_params(key, num_classes):
  k_w, k_b = jax.random.split(key)
  return {"w": jax.random.normal(k_w, (DIM, num_classes)),
          "b": 0.1 * jax.random.normal(k_b, (num_classes,))}


def linear_problem(key, num_classes, n):
  """Params, interior images [0.3, 0.7] and their predicted labels."""
  k_p, k_x = jax.random.split(key)
  params = linear_params(k_p, num_classes)
  x = jax.random.uniform(k_x, (n, *SHAPE), minval=0.3, maxval=0.7)
  return params, x, jnp.argmax(linear_apply(params, x), -1)


def boundary_distance(params, x, labels, dual_ord):
  """Closed-form distance of each image to its class region's boundary (numpy)."""
  w = np.asarray(params["w"], np.float64)
  z = np.asarray(linear_apply(params, x), np.float64)
  out = []
  for zi, yi in zip(z, np.asarray(labels)):
    others = [k for k in range(w.shape[1]) if k != yi]
    gaps = zi[yi] - zi[others]
    norms = np.linalg.norm(w[:, [yi]] - w[:, others], ord=dual_ord, axis=0)
    out.append(np.min(gaps / norms))
  return np.array(out)


def tiny_mlp():
  """A random 36-32-10 tanh net (fixed seed), small enough to compile fast."""
  k1, k2 = jax.random.split(jax.random.key(7))
  params = {"w1": jax.random.normal(k1, (DIM, 32)) / 3.0,
            "w2": jax.random.normal(k2, (32, 10)) / 2.0}

  def apply_fn(p, x):
    h = jnp.tanh(jnp.reshape(x, (x.shape[0], -1)) @ p["w1"] * 4.0 - 2.0)
    return h @ p["w2"]
  return apply_fn, params


# --- DeepFool -----------------------------------------------------------------

def test_deepfool_step_is_the_closed_form_boundary_distance(key):
  overshoot = 0.02
  for num_classes, norm, dual_ord in ((2, "l2", 2), (5, "l2", 2), (5, "linf", 1)):
    params, x, y = linear_problem(jax.random.fold_in(key, num_classes), num_classes, 6)
    adv, info = jit(lambda p, x, y, norm=norm: attacks.deepfool(
        linear_apply, p, x, y, overshoot=overshoot, norm=norm))(params, x, y)
    # The original's step: the distance plus 1e-4, times (1 + overshoot).
    expected = (1 + overshoot) * (boundary_distance(params, x, y, dual_ord) + 1e-4)
    dist = (metrics.l2_distortion if norm == "l2" else metrics.linf_distortion)(x, adv)
    assert float(adv.min()) > 0.0 and float(adv.max()) < 1.0  # box inactive
    assert np.all(np.asarray(info.success))
    np.testing.assert_array_equal(np.asarray(info.iterations), 1)
    np.testing.assert_allclose(np.asarray(dist), expected, rtol=2e-3)
    np.testing.assert_allclose(np.asarray(info.distance), np.asarray(dist), rtol=1e-5)


def test_deepfool_early_stop_and_top_k(key):
  params, x, y = linear_problem(key, 5, 4)
  wrong = y.at[0].set((y[0] + 1) % 5)  # image 0 starts misclassified
  adv, info = jit(lambda p, x, y: attacks.deepfool(
      linear_apply, p, x, y, candidates=2))(params, x, wrong)
  assert int(info.iterations[0]) == 0
  chex.assert_trees_all_close(adv[0], x[0])  # a fooled image never moves
  # Fewer candidates can only find a farther (or the same) boundary.
  full = boundary_distance(params, x, y, 2)[1:]
  assert np.all(np.asarray(info.distance[1:]) >= 1.02 * full * (1 - 1e-4))
  assert np.all(np.asarray(info.success))


# --- Carlini & Wagner ---------------------------------------------------------

def test_carlini_wagner_finds_near_minimal_l2_on_linear_model(key):
  params, x, y = linear_problem(key, 5, 6)
  attack = jit(lambda p, x, y: attacks.carlini_wagner_l2(
      linear_apply, p, x, y, c_init=1e-2, binary_search_steps=8, steps=150,
      learning_rate=5e-3))
  adv, info = attack(params, x, y)
  expected = boundary_distance(params, x, y, 2)
  assert np.all(np.asarray(info.success))
  assert np.all(np.asarray(jnp.argmax(linear_apply(params, adv), -1) != y))
  np.testing.assert_allclose(np.asarray(metrics.l2_distortion(x, adv)),
                             np.asarray(info.l2), rtol=1e-5)
  # No adversarial point is closer than the boundary; C&W gets within 3 %.
  assert np.all(np.asarray(info.l2) >= expected * (1 - 1e-4))
  assert np.all(np.asarray(info.l2) <= expected * 1.03), (info.l2, expected)
  # Targeted: every target reached.
  targets = (y + 1) % 5
  _, info_t = jit(lambda p, x, t: attacks.carlini_wagner_l2(
      linear_apply, p, x, t, targeted=True, kappa=0.1, binary_search_steps=6,
      steps=100, c_init=0.1))(params, x, targets)
  assert np.all(np.asarray(info_t.success))


# --- Square -------------------------------------------------------------------

@pytest.mark.parametrize("norm,dual_ord,budget", [("linf", 1, 400), ("l2", 2, 1500)])
def test_square_finds_the_boundary_of_a_linear_model_within_budget(key, norm, dual_ord,
                                                                    budget):
  params, x, y = linear_problem(key, 5, 8)
  eps = 1.3 * float(boundary_distance(params, x, y, dual_ord).max())
  adv, info = jit(lambda p, x, y: attacks.square(
      key, linear_apply, p, x, y, eps=eps, norm=norm, queries=budget))(params, x, y)
  dist = (metrics.linf_distortion if norm == "linf" else metrics.l2_distortion)(x, adv)
  assert np.all(np.asarray(info.success))
  assert float(dist.max()) <= eps * (1 + 1e-5)
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
  queries = np.asarray(info.queries)
  assert queries.min() >= 1 and queries.max() <= budget
  assert np.all(np.asarray(linear_apply(params, adv).argmax(-1)) != np.asarray(y))
  np.testing.assert_array_less(np.asarray(info.margin), 0.0)


def test_square_p_schedule_halves_at_the_papers_iterations():
  p = square_module.p_schedule
  its = jnp.array([0, 10, 11, 50, 51, 200, 201, 8000, 8001, 9999])
  got = p(its, queries=10000, p_init=0.8)
  expected = 0.8 / 2.0 ** np.array([0, 0, 1, 1, 2, 2, 3, 8, 9, 9])
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


# --- APGD and PGD -------------------------------------------------------------

def test_apgd_checkpoints_follow_the_paper():
  is_check, window = apgd_module.checkpoints(100)
  marks = np.flatnonzero(is_check) + 1
  np.testing.assert_array_equal(marks, [22, 41, 57, 70, 80, 87, 93, 99])
  np.testing.assert_array_equal(window[is_check], [22, 19, 16, 13, 10, 7, 6, 6])
  assert apgd_module.checkpoints(3)[0].sum() >= 1


def test_dlr_losses_known_values():
  z = jnp.array([3.0, 1.0, 0.0, -1.0])
  # Correct (label 0): -(3 - 1) / (3 - 0) ; misclassified (label 1): +(3 - 1) / 3.
  np.testing.assert_allclose(attacks.dlr_loss(z, 0), -2 / 3, rtol=1e-6)
  np.testing.assert_allclose(attacks.dlr_loss(z, 1), 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(attacks.dlr_loss(10 * z + 5, 0), -2 / 3, rtol=1e-6)
  np.testing.assert_allclose(attacks.dlr_targeted_loss(z, 0, 2), -3 / (3 + 0.5),
                             rtol=1e-6)


def test_apgd_is_at_least_as_strong_as_pgd_and_restarts_never_weaken(key):
  apply_fn, params = tiny_mlp()
  x = jax.random.uniform(jax.random.fold_in(key, 1), (32, *SHAPE))
  y = jnp.argmax(apply_fn(params, x), -1)
  eps, steps = 0.05, 20

  @jax.jit
  def run(params, x, y):
    adv_pgd = attacks.pgd(key, apply_fn, params, x, y, eps=eps, step_size=eps / 4,
                          steps=steps)
    adv_pgd3 = attacks.pgd(key, apply_fn, params, x, y, eps=eps, step_size=eps / 4,
                           steps=steps, restarts=3)
    adv_apgd, info = attacks.apgd(key, apply_fn, params, x, y, eps=eps, steps=steps)
    adv_apgd3, info3 = attacks.apgd(key, apply_fn, params, x, y, eps=eps, steps=steps,
                                    restarts=3)
    adv_stop = attacks.pgd(key, apply_fn, params, x, y, eps=eps, step_size=eps / 4,
                           steps=steps, early_stop=True)
    return adv_pgd, adv_pgd3, adv_apgd, info, adv_apgd3, info3, adv_stop

  adv_pgd, adv_pgd3, adv_apgd, info, adv_apgd3, info3, adv_stop = run(params, x, y)
  fooled = lambda adv: np.asarray(jnp.argmax(apply_fn(params, adv), -1) != y)
  ce = lambda adv: np.asarray(jax.vmap(losses.cross_entropy)(apply_fn(params, adv), y))
  for adv in (adv_pgd, adv_pgd3, adv_apgd, adv_apgd3):
    assert float(metrics.linf_distortion(x, adv).max()) <= eps * (1 + 1e-6)
  np.testing.assert_array_equal(np.asarray(info.success), fooled(adv_apgd))
  # The budget matters: some but not all points fall.
  assert 0 < fooled(adv_pgd).sum() < len(y)
  assert fooled(adv_apgd).sum() >= fooled(adv_pgd).sum()
  # Restarts keep every success of the single run, and never lower the loss of
  # a point that stays robust.
  for one, three in ((adv_pgd, adv_pgd3), (adv_apgd, adv_apgd3)):
    assert np.all(fooled(three)[fooled(one)])
    robust = ~fooled(three)
    assert np.all(ce(three)[robust] >= ce(one)[robust] - 1e-5)
  assert np.all(np.asarray(info3.success) >= np.asarray(info.success))
  # Early stop: the same trajectory, frozen at its first fooling iterate, so it
  # fools the same points at a loss no higher than the full run's.
  np.testing.assert_array_equal(fooled(adv_stop), fooled(adv_pgd))
  stopped = fooled(adv_stop)
  assert np.all(ce(adv_stop)[stopped] <= ce(adv_pgd)[stopped] + 1e-5)
  chex.assert_trees_all_close(adv_stop[~stopped], adv_pgd[~stopped])


def test_vector_eps_equals_separate_calls(key):
  params, x, y = linear_problem(key, 5, 4)
  epss = (0.02, 0.05)

  def run(eps, step):
    return (attacks.pgd(key, linear_apply, params, x, y, eps=eps, step_size=step,
                        steps=5, early_stop=True),
            attacks.apgd(key, linear_apply, params, x, y, eps=eps, steps=6, norm="l2"))
  together = jit(run)(jnp.array(epss), jnp.array(epss) / 4)
  chex.assert_shape(together[0], (2, 4, *SHAPE))
  chex.assert_shape(together[1][1].success, (2, 4))
  separate = jit(run)
  for i, eps in enumerate(epss):
    got = jax.tree.map(lambda leaf, i=i: leaf[i], together)
    chex.assert_trees_all_close(got, separate(eps, eps / 4), atol=1e-6)


def test_square_and_auto_attack_vector_eps_equal_separate_calls_in_one_compile(key):
  params, x, y = linear_problem(key, 5, 6)
  d_inf = np.sort(boundary_distance(params, x, y, 1))
  # Radii between the distances, so each radius breaks a different set.
  epss = jnp.array([0.5 * (d_inf[1] + d_inf[2]), 0.5 * (d_inf[3] + d_inf[4])])
  traces = []

  def run(eps):
    traces.append(np.shape(eps))
    # Square breaks two points at the larger radius only; FMN's one run then
    # serves both radii, each with its own survivors (and breaks two at each).
    return (attacks.square(key, linear_apply, params, x, y, eps=eps, queries=30),
            attacks.auto_attack(key, linear_apply, params, x, y, eps=eps,
                                attacks=("square", "fmn", "apgd-t", "apgd-ce"),
                                steps=5, target_classes=2, fmn_steps=3,
                                square_queries=10))
  compiled = jit(run)
  together = compiled(epss)
  compiled(0.5 * epss)  # other radii of the same shape: no second compile
  assert traces == [(2,)]
  chex.assert_shape(together[0][0], (2, 6, *SHAPE))
  chex.assert_shape(together[0][1].queries, (2, 6))
  chex.assert_shape(together[1].accuracy_after, (2, 4))
  chex.assert_shape(together[1].robust_accuracy, (2,))
  broken_by = np.asarray(together[1].broken_by)
  assert not np.array_equal(broken_by[0], broken_by[1])  # the radius matters
  assert {1, 2} <= set(broken_by.ravel().tolist())  # Square and FMN both count
  separate = jit(run)
  for i, eps in enumerate(epss):
    got = jax.tree.map(lambda leaf, i=i: leaf[i], together)
    chex.assert_trees_all_close(got, separate(eps), atol=1e-6)


# --- FMN and AutoAttack ---------------------------------------------------------

def test_fmn_finds_the_closed_form_minimum_l2(key):
  params, x, y = linear_problem(key, 5, 6)
  _, info = jit(lambda p, x, y: attacks.fmn(linear_apply, p, x, y, steps=60))(
      params, x, y)
  expected = boundary_distance(params, x, y, 2)
  assert np.all(np.asarray(info.success))
  np.testing.assert_allclose(np.asarray(info.distance), expected, rtol=0.03)


def test_auto_attack_robust_accuracy_is_exact_on_a_linear_model(key):
  params, x, y = linear_problem(key, 5, 16)
  y = y.at[0].set((y[0] + 1) % 5)  # one clean mistake
  d_inf = boundary_distance(params, x[1:], y[1:], 1)
  # Halfway between the two middle distances: no point sits near the ball's edge.
  ordered = np.sort(d_inf)
  eps = float(0.5 * (ordered[7] + ordered[8]))
  result = jit(lambda p, x, y: attacks.auto_attack(
      key, linear_apply, p, x, y, eps=eps, steps=20, target_classes=3, fmn_steps=20,
      square_queries=100))(params, x, y)
  exact = np.concatenate([[False], d_inf > eps])
  np.testing.assert_array_equal(np.asarray(result.robust), exact)
  assert int(result.broken_by[0]) == 0 and not bool(result.clean_correct[0])
  assert float(metrics.linf_distortion(x, result.adv).max()) <= eps * (1 + 1e-5)
  predicted = np.asarray(jnp.argmax(linear_apply(params, result.adv), -1))
  np.testing.assert_array_equal(predicted == np.asarray(y), exact)
  np.testing.assert_allclose(float(result.robust_accuracy), exact.mean())
  after = np.asarray(result.accuracy_after)
  assert np.all(np.diff(after) <= 0) and after[-1] == exact.mean()
  # APGD-CE breaks a linear model on its own: later attacks find nothing left.
  assert set(np.asarray(result.broken_by).tolist()) <= {-1, 0, 1}


# --- Bad arguments ---------------------------------------------------------------

def test_bad_arguments_give_clear_errors_also_under_jit(key):
  params, x, y = linear_problem(key, 5, 2)
  with pytest.raises(ValueError, match=r"apgd: eps must be finite, >= 0 and <= 1.0"):
    attacks.apgd(key, linear_apply, params, x, y, eps=-0.1)
  with pytest.raises(ValueError, match=r"every eps must be finite, >= 0 and <= 1.0; "
                                       r"got eps\[1\] = -0.1"):
    attacks.pgd(key, linear_apply, params, x, y, eps=[0.1, -0.1], step_size=0.1,
                steps=1)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\); got \[7\]"):
    attacks.deepfool(linear_apply, params, x, jnp.array([0, 7]))
  with pytest.raises(ValueError, match=r"divide by 255"):
    attacks.square(key, linear_apply, params, x * 255, y, eps=0.1)
  with pytest.raises(ValueError, match=r"targets must lie in \[0, 5\)"):
    attacks.carlini_wagner_l2(linear_apply, params, x, jnp.array([-1, 0]),
                              targeted=True)
  with pytest.raises(ValueError, match=r"needs at least 3 classes"):
    attacks.apgd(key, linear_apply, linear_params(key, 2), x, y % 2, eps=0.1,
                 loss="dlr")
  with pytest.raises(ValueError, match=r"needs targets"):
    attacks.apgd(key, linear_apply, params, x, y, eps=0.1, loss="dlr_targeted")
  with pytest.raises(ValueError, match=r"attacks must be distinct names"):
    attacks.auto_attack(key, linear_apply, params, x, y, eps=0.1, attacks=("fab",))
  # Traced values: the same messages when the compiled function runs.
  with pytest.raises(Exception, match=r"every eps must be finite, >= 0 and <= 1.0"):
    jax.block_until_ready(jit(lambda e: attacks.pgd(
        key, linear_apply, params, x, y, eps=e, step_size=0.1, steps=1))(
            jnp.array([0.1, -0.1])))
  with pytest.raises(Exception, match=r"labels must lie in \[0, 5\)"):
    jax.block_until_ready(jit(lambda l: attacks.deepfool(
        linear_apply, params, x, l, max_iter=1))(jnp.array([0, 7])))
  with pytest.raises(Exception, match=r"divide 0-255 values by 255"):
    jax.block_until_ready(jit(lambda im: attacks.fmn(
        linear_apply, params, im, y, steps=1))(x * 255))
