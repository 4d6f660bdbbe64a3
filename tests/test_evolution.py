import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax.evolution import direct, map_elites


def _toy(num_cells=2, shape=(4, 4, 1)):
  """Cell k rewards images close to the constant image k / (num_cells - 1)."""
  encoding = direct.make_encoding(height=shape[0], width=shape[1], channels=shape[2])
  targets = jnp.linspace(0.0, 1.0, num_cells)

  def score_fn(images):
    err = jnp.mean(jnp.square(images.reshape(images.shape[0], 1, -1) - targets[None, :, None]),
                   axis=-1)
    return jnp.exp(-10.0 * err)  # 1.0 exactly at the optimum
  return encoding, score_fn


def _run(key, encoding, score_fn, *, generations, batch_size=16, num_cells=2):
  archive = map_elites.init_archive(key, encoding=encoding, score_fn=score_fn,
                                    num_cells=num_cells, init_size=batch_size)

  @jax.jit
  def scan(archive):
    def body(a, _):
      return map_elites.map_elites_step(jax.random.fold_in(key, a.generation), a,
                                        encoding=encoding, score_fn=score_fn,
                                        batch_size=batch_size)
    return jax.lax.scan(body, archive, length=generations)
  return scan(archive)


def test_cell_fitness_never_decreases(key):
  encoding, score_fn = _toy(num_cells=3)
  _, metrics = _run(key, encoding, score_fn, generations=30, num_cells=3)
  best = np.asarray(metrics["best"])
  assert best.shape == (30, 3)
  assert np.all(np.diff(best, axis=0) >= 0)
  assert np.all(np.asarray(metrics["generation"]) == np.arange(1, 31))


def test_one_offspring_can_take_several_cells(key):
  encoding, _ = _toy(num_cells=3)
  archive = map_elites.Archive(
      genomes=jnp.zeros((3, 4, 4, 1)), fitness=jnp.array([0.5, 0.5, 0.9]),
      generation=jnp.array(0), evaluations=jnp.array(0))
  candidates = jnp.stack([jnp.full((4, 4, 1), 0.25), jnp.full((4, 4, 1), 0.75)])
  scores = jnp.array([[0.1, 0.2, 0.95], [0.8, 0.7, 0.3]])
  new = map_elites.insert(archive, candidates, scores)
  np.testing.assert_allclose(new.fitness, [0.8, 0.7, 0.95])
  np.testing.assert_array_equal(new.genomes[0], candidates[1])
  np.testing.assert_array_equal(new.genomes[1], candidates[1])   # the same offspring, twice
  np.testing.assert_array_equal(new.genomes[2], candidates[0])
  # Not strictly better: no replacement.
  same = map_elites.insert(new, candidates, jnp.array([[0.8, 0.7, 0.95], [0.0, 0.0, 0.0]]))
  chex.assert_trees_all_equal(same.genomes, new.genomes)


def test_toy_objective_reaches_its_known_optimum(key):
  encoding, score_fn = _toy(num_cells=2)
  archive, _ = _run(key, encoding, score_fn, generations=300, batch_size=32)
  assert np.all(np.asarray(archive.fitness) > 0.99), archive.fitness
  np.testing.assert_allclose(archive.genomes[0], 0.0, atol=0.12)
  np.testing.assert_allclose(archive.genomes[1], 1.0, atol=0.12)


def test_same_seed_same_archive_bit_for_bit(key):
  encoding, score_fn = _toy()
  a, _ = _run(key, encoding, score_fn, generations=10)
  b, _ = _run(key, encoding, score_fn, generations=10)
  chex.assert_trees_all_equal(a, b)
  c, _ = _run(jax.random.key(1), encoding, score_fn, generations=10)
  assert not np.array_equal(a.genomes, c.genomes)


def test_jit_and_no_jit_agree(key):
  encoding, score_fn = _toy()
  archive = map_elites.init_archive(key, encoding=encoding, score_fn=score_fn, num_cells=2,
                                    init_size=8)
  step = lambda k, a: map_elites.map_elites_step(k, a, encoding=encoding, score_fn=score_fn,
                                                 batch_size=8)
  jitted, jit_metrics = jax.jit(step)(key, archive)
  with jax.disable_jit():
    eager, eager_metrics = step(key, archive)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(jit_metrics, eager_metrics, rtol=1e-6, atol=1e-6)


def test_run_fn_compiles_once(key, lenet):
  encoding = direct.make_encoding(height=28, width=28, channels=1)
  run = map_elites.make_run_fn(encoding=encoding, apply_fn=lenet.apply_fn, batch_size=4,
                               num_generations=2)
  run = jax.jit(chex.assert_max_traces(run, n=1))
  init = jax.jit(map_elites.make_init_fn(encoding=encoding, apply_fn=lenet.apply_fn,
                                         num_cells=10, init_size=4))
  archive = init(key, lenet.params)
  archive, metrics = run(key, archive, lenet.params)
  archive, metrics = run(key, archive, lenet.params)
  assert int(archive.generation) == 4 and int(archive.evaluations) == 4 + 4 * 4
  chex.assert_shape(metrics["best"], (2, 10))


def test_variation_operators_stay_in_the_box(key):
  k1, k2, k3 = jax.random.split(key, 3)
  a = jax.random.uniform(k1, (10_000,))
  b = jax.random.uniform(k2, (10_000,))
  mutated = direct.polynomial_mutation(k3, a, rate=1.0, eta=15.0)
  assert float(mutated.min()) >= 0.0 and float(mutated.max()) <= 1.0
  assert float(jnp.mean(mutated != a)) > 0.9
  np.testing.assert_array_equal(direct.polynomial_mutation(k3, a, rate=0.0, eta=15.0), a)
  child = direct.sbx_crossover(k3, a, b, eta=10.0, gene_rate=1.0)
  assert float(child.min()) >= 0.0 and float(child.max()) <= 1.0
  # SBX children concentrate around the parents with η = 10.
  distance_to_nearest = jnp.minimum(jnp.abs(child - a), jnp.abs(child - b))
  assert float(jnp.median(distance_to_nearest)) < 0.05
  # Mutation rate 0.1 touches about 10 % of the genes.
  touched = jnp.mean(direct.polynomial_mutation(k3, a, rate=0.1, eta=15.0) != a)
  assert 0.08 < float(touched) < 0.12


def _sbx_both_offspring(key, a, b, *, eta, gene_rate, equal_value, tolerance):
  """Textbook SBX (Deb & Agrawal): both offspring computed, then one picked per gene."""
  k_gene, k_u = jax.random.split(key)
  y1, y2 = jnp.minimum(a, b), jnp.maximum(a, b)
  spread = jnp.maximum(y2 - y1, 1e-14)
  u = direct.uniform(k_u, a.shape)
  power = 1.0 / (eta + 1.0)

  def betaq(beta):
    alpha = 2.0 - jnp.power(beta, -(eta + 1.0))
    return jnp.where(u <= 1.0 / alpha, jnp.power(u * alpha, power),
                     jnp.power(1.0 / (2.0 - u * alpha), power))

  c1 = 0.5 * ((y1 + y2) - betaq(1.0 + 2.0 * y1 / spread) * (y2 - y1))
  c2 = 0.5 * ((y1 + y2) + betaq(1.0 + 2.0 * (1.0 - y2) / spread) * (y2 - y1))
  m = direct.uniform(k_gene, a.shape)
  child = jnp.clip(jnp.where(m < 0.5 * gene_rate, c1, c2), 0.0, 1.0)
  unset = a if equal_value is None else jnp.full_like(a, equal_value)
  child = jnp.where(jnp.abs(a - b) > tolerance, child, unset)
  return jnp.where(m < gene_rate, child, a)


@pytest.mark.parametrize("variant", direct.VARIANTS)
def test_sbx_picks_the_side_before_the_powers_bit_for_bit(key, variant):
  # sbx_crossover computes only the picked offspring's powers; the numbers are
  # the textbook form's, jitted and vmapped as the evolution runs it.
  switches = direct.VARIANT_SWITCHES[variant]
  options = dict(eta=10.0, gene_rate=1.0 if switches["sbx_genes"] == "all" else 0.5,
                 equal_value=0.5 if switches["sbx_equal_genes"] == "gray" else None,
                 tolerance=direct.FLOAT32_EPS if switches["sbx_genes"] == "all" else 1e-14)
  ka, kb, kk = jax.random.split(key, 3)
  a = jax.random.uniform(ka, (64, 28, 28, 1))
  b = jax.random.uniform(kb, (64, 28, 28, 1)).at[:, :3].set(a[:, :3])   # equal genes too
  keys = jax.random.split(kk, 64)
  ours = jax.jit(jax.vmap(lambda k, x, y: direct.sbx_crossover(k, x, y, **options)))
  textbook = jax.jit(jax.vmap(lambda k, x, y: _sbx_both_offspring(k, x, y, **options)))
  np.testing.assert_array_equal(ours(keys, a, b), textbook(keys, a, b))
  np.testing.assert_array_equal(direct.sbx_crossover(kk, a[0], b[0], **options),
                                _sbx_both_offspring(kk, a[0], b[0], **options))


def test_mutation_rate_decay(key):
  encoding = direct.make_encoding(height=2, width=2, channels=1, mutation_rate=0.4,
                                  mutation_decay=0.5, min_mutation_rate=0.05)
  genome = encoding.init(key)
  _, stats0 = encoding.vary(key, genome, genome, jnp.array(0))
  _, stats2 = encoding.vary(key, genome, genome, jnp.array(2))
  _, stats9 = encoding.vary(key, genome, genome, jnp.array(9))
  np.testing.assert_allclose([stats0["mutation_rate"], stats2["mutation_rate"],
                              stats9["mutation_rate"]], [0.4, 0.1, 0.05], rtol=1e-6)


def test_bad_arguments():
  with pytest.raises(ValueError, match="1 \\(gray\\) or 3 \\(colour\\)"):
    direct.make_encoding(height=4, width=4, channels=2)
  encoding, score_fn = _toy()
  with pytest.raises(ValueError, match="init_size"):
    map_elites.init_archive(jax.random.key(0), encoding=encoding, score_fn=score_fn,
                            num_cells=2, init_size=0)
  with pytest.raises(ValueError, match="class count must equal"):
    archive = map_elites.init_archive(jax.random.key(0), encoding=encoding,
                                      score_fn=score_fn, num_cells=2, init_size=2)
    map_elites.insert(archive, archive.genomes, jnp.zeros((2, 3)))


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 3), (5,)])
def test_flat_uniform_draw_equals_the_shaped_one(shape):
  """direct.uniform draws flat and reshapes (4x cheaper on XLA:CPU): the numbers must be
  jax.random.uniform's, or every run's random stream would change with it."""
  keys = jax.random.split(jax.random.key(7), 3)
  want = jax.vmap(lambda k: jax.random.uniform(k, shape))(keys)
  got = jax.jit(jax.vmap(lambda k: direct.uniform(k, shape)))(keys)
  np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------
# Draws: foolingjax.randombits (JAX's numbers, fusable) and the fast kernel.


def test_unrolled_threefry_is_jaxs_hash():
  from jax.extend.random import threefry2x32_p
  from foolingjax import randombits
  rng = np.random.default_rng(0)
  k1, k2 = (jnp.asarray(rng.integers(0, 2 ** 32, (5, 1), dtype=np.uint32)) for _ in range(2))
  x1, x2 = (jnp.asarray(rng.integers(0, 2 ** 32, (5, 300), dtype=np.uint32)) for _ in range(2))
  want = threefry2x32_p.bind(jnp.broadcast_to(k1, x1.shape), jnp.broadcast_to(k2, x1.shape),
                             x1, x2)
  got = jax.jit(randombits.threefry2x32)(k1, k2, x1, x2)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("shape", [(28, 28, 1), (3, 5, 3), (1,)])
def test_randombits_draw_jaxs_numbers(shape):
  from foolingjax import randombits
  keys = jax.random.split(jax.random.key(11), 4)
  np.testing.assert_array_equal(
      jax.jit(jax.vmap(lambda k: randombits.uniform(k, shape)))(keys),
      jax.vmap(lambda k: jax.random.uniform(k, shape))(keys))
  first, second = jax.jit(jax.vmap(lambda k: randombits.words(k, 7)))(keys)
  np.testing.assert_array_equal(first ^ second,
                                jax.vmap(lambda k: jax.random.bits(k, (7,), jnp.uint32))(keys))
  # Other key types fall back to jax.random (same distribution, their own numbers).
  rbg = jax.random.key(11, impl="rbg")
  np.testing.assert_array_equal(randombits.uniform(rbg, shape), jax.random.uniform(rbg, shape))
  assert randombits.words(rbg, 7)[0].shape == (7,)


def test_packed_uniforms_are_uniform_and_independent():
  n = 200_000
  u, v, m, coin = jax.jit(jax.vmap(lambda k: direct.packed_uniforms(k, (n // 50,))))(
      jax.random.split(jax.random.key(2), 50))
  assert coin.shape == (50,)
  for x in (u, v, m):
    x = np.asarray(x).ravel()
    assert x.min() >= 0.0 and x.max() < 1.0
    # Deciles within 5 standard errors of 0.1 each.
    counts = np.histogram(x, bins=10, range=(0, 1))[0] / x.size
    assert np.all(np.abs(counts - 0.1) < 5 * np.sqrt(0.09 / x.size)), counts
  # m is an 18-bit uniform: the SBX thresholds hold exactly in expectation.
  assert np.all(np.asarray(m) * 2 ** 18 == np.round(np.asarray(m) * 2 ** 18))
  assert abs(float(jnp.mean(m < 0.25)) - 0.25) < 5 * np.sqrt(0.1875 / n)
  flat = np.stack([np.asarray(a).ravel() for a in (u, v, m)])
  corr = np.corrcoef(flat)
  assert np.all(np.abs(corr[np.triu_indices(3, 1)]) < 5 / np.sqrt(n)), corr


def test_fast_powers_equal_the_reference_ones_up_to_rounding(key):
  ka, kb, ku, km = jax.random.split(key, 4)
  a, b = jax.random.uniform(ka, (4096,)), jax.random.uniform(kb, (4096,))
  u, m = jax.random.uniform(ku, (4096,)), jax.random.uniform(km, (4096,))
  b = b.at[:16].set(a[:16])                                  # equal genes too
  for gene_rate in (0.5, 1.0):
    ref = direct.crossover_with(u, m, a, b, eta=10.0, gene_rate=gene_rate)
    fast = direct.crossover_with(u, m, a, b, eta=10.0, gene_rate=gene_rate, fast=True)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=2e-6)
  for eta in (15.0, 20.0):                                   # square roots, then exp(log)
    ref = direct.mutate_with(u, a, rate=0.3, eta=eta)
    fast = direct.mutate_with(u, a, rate=0.3, eta=eta, fast=True)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("variant", direct.VARIANTS)
def test_fast_kernel_varies_like_the_reference(variant):
  """kernel="fast" draws other numbers from the same distribution: the children of one
  parent pair, over many keys, agree with the reference kernel's in distribution."""
  shape = (8, 8, 1)
  ka, kb = jax.random.split(jax.random.key(3))
  a = jax.random.uniform(ka, shape)
  b = jax.random.uniform(kb, shape).at[:2].set(a[:2])
  keys = jax.random.split(jax.random.key(4), 4000)
  children = {}
  for kernel in direct.KERNELS:
    enc = direct.make_encoding(height=8, width=8, channels=1, variant=variant, kernel=kernel)
    children[kernel] = np.asarray(jax.jit(jax.vmap(
        lambda k: enc.vary(k, a, b, jnp.int32(0))[0]))(keys))
  ref, fast = children["reference"], children["fast"]
  a, b = np.asarray(a), np.asarray(b)
  assert not np.array_equal(ref, fast)                        # other numbers
  n = len(keys)
  for stat in (lambda c: c != a,                              # genes changed
               lambda c: np.abs(c - a) < 1e-3,                # kept or barely moved
               lambda c: c < np.minimum(a, b),                # below both parents
               lambda c: c > np.maximum(a, b),                # above both
               lambda c: c == 0.5):                           # the original's grey genes
    p, q = stat(ref).mean(0), stat(fast).mean(0)             # per gene, over the keys
    se = np.sqrt(np.maximum(p * (1 - p), 1 / n) * 2 / n)
    assert np.all(np.abs(p - q) < 5 * se), np.max(np.abs(p - q) / se)
  # The whole distribution of a changed gene's step, pooled: two-sample KS.
  steps = [np.sort((c - a).ravel()) for c in (ref, fast)]
  grid = np.linspace(-1, 1, 401)
  cdf = [np.searchsorted(s, grid) / s.size for s in steps]
  assert np.max(np.abs(cdf[0] - cdf[1])) < 1.63 * np.sqrt(2 / steps[0].size) * 1.5


def test_bad_kernel_is_one_clear_error():
  with pytest.raises(ValueError, match="kernel 'quick'.*reference, fast"):
    direct.make_encoding(height=2, width=2, channels=1, kernel="quick")


@pytest.mark.parametrize("variant", direct.VARIANTS)
def test_fused_generations_draw_jaxs_numbers(monkeypatch, variant):
  """Inside jitted generations (where XLA fuses the unrolled hash with the operators)
  the reference kernel's archive is the one jax.random.uniform's draws give."""
  enc = direct.make_encoding(height=6, width=6, channels=3, variant=variant)
  _, score_fn = _toy(num_cells=3, shape=(6, 6, 3))
  ours = _run(jax.random.key(5), enc, score_fn, generations=4, num_cells=3)[0]
  monkeypatch.setattr(direct, "uniform", lambda k, shape: jax.random.uniform(
      k, (int(np.prod(shape)),)).reshape(shape))
  jaxs = _run(jax.random.key(5), enc, score_fn, generations=4, num_cells=3)[0]
  chex.assert_trees_all_equal(ours, jaxs)



def test_insert_writes_each_cell_as_the_archive_wide_select_would(key):
  """insert writes improved cells one by one; the result is the definition's: cell k
  takes the candidate with the best score for k if that beats the elite (strictly)."""
  ka, kg, ks, kf = jax.random.split(key, 4)
  num_cells, batch = 7, 5
  genomes = {"a": jax.random.uniform(kg, (batch, 3, 2)),
             "b": jnp.arange(batch * 4, dtype=jnp.int32).reshape(batch, 4)}
  archive = map_elites.Archive(
      genomes={"a": jax.random.uniform(ka, (num_cells, 3, 2)),
               "b": -jnp.ones((num_cells, 4), jnp.int32)},
      fitness=jax.random.uniform(kf, (num_cells,)),
      generation=jnp.int32(0), evaluations=jnp.int32(0), fitness_kind="probability")
  scores = jax.random.uniform(ks, (batch, num_cells)).at[:, 0].set(-1.0)   # cell 0: no win
  scores = scores.at[:, 1].set(archive.fitness[1])                          # ties keep the elite
  got = jax.jit(map_elites.insert)(archive, genomes, scores)
  best = jnp.argmax(scores, axis=0)
  wins = jnp.max(scores, axis=0) > archive.fitness
  for name in ("a", "b"):
    want = jnp.where(wins.reshape((-1,) + (1,) * (genomes[name].ndim - 1)),
                     genomes[name][best], archive.genomes[name])
    np.testing.assert_array_equal(got.genomes[name], want)
  np.testing.assert_array_equal(got.fitness, jnp.where(wins, jnp.max(scores, 0), archive.fitness))
  assert not bool(wins[0]) and not bool(wins[1]) and bool(jnp.any(wins))
  assert int(got.evaluations) == batch
