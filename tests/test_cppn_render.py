"""render(method="active") draws exactly what render(method="slots") draws."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax import models
from foolingjax.evolution import cppn, map_elites
from foolingjax.evolution import encoding as encoding_lib

SIZE = 28
ORIGINAL = {k: v for k, v in cppn.VARIANT_SWITCHES["original"].items()
            if k != "change_conn_rate"}


@functools.partial(jax.jit, static_argnames=("num_outputs", "max_nodes", "max_conns",
                                             "rounds"))
def _grown(key, *, num_outputs, max_nodes, max_conns, rounds, pop=24):
  """``pop`` lineages of ``rounds`` mutations; add and delete rates as the
  original, so sizes vary from none to full, some nodes lose their inputs."""
  k_init, k_steps = jax.random.split(key)
  init = functools.partial(cppn.init_genome, num_outputs=num_outputs,
                           max_nodes=max_nodes, max_conns=max_conns)
  genomes = jax.vmap(init)(jax.random.split(k_init, pop))

  def step(genomes, key):
    child = jax.vmap(cppn.mutate)(jax.random.split(key, pop), genomes)[0]
    return child, child

  _, history = jax.lax.scan(step, genomes, jax.random.split(k_steps, rounds))
  # Every few rounds of every lineage: young and old genomes in one population.
  return jax.tree.map(lambda a: a[::4].reshape(-1, *a.shape[2:]), history)


def _draw(genomes, method, channels, **switches):
  draw = functools.partial(cppn.render, height=SIZE, width=SIZE, channels=channels,
                           method=method, **switches)
  return np.asarray(jax.jit(jax.vmap(draw))(genomes))


# The preset's capacity (16 slots) in grey and colour runs by default; the other
# capacities (~30 s more on 2 cores) with `pytest -m slow`.
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("max_nodes,max_conns", [
    pytest.param(7, 12, marks=pytest.mark.slow), (16, 64),
    pytest.param(32, 128, marks=pytest.mark.slow)])
def test_active_equals_slots_on_grown_genomes(key, channels, max_nodes, max_conns):
  if max_nodes < cppn.NUM_INPUTS + channels:
    pytest.skip("no room for the outputs")
  genomes = _grown(key, num_outputs=channels, max_nodes=max_nodes,
                   max_conns=max_conns, rounds=32)
  cppn.validate_genome(jax.device_get(genomes))
  hidden = np.asarray(jax.vmap(cppn.count_hidden)(genomes))
  capacity = max_nodes - cppn.NUM_INPUTS - channels  # 0: no hidden slot at all
  assert hidden.min() == 0 and (hidden.max() > 0 or capacity == 0)  # young and old
  # The original's switches (raw indices, |v|, bytes, OpenCV HLS) at one capacity.
  for switches in ({}, ORIGINAL) if max_nodes == 16 else ({},):
    np.testing.assert_array_equal(_draw(genomes, "active", channels, **switches),
                                  _draw(genomes, "slots", channels, **switches))


def test_active_equals_slots_with_dead_slots_and_stale_free_slots(key):
  """Hidden nodes cut off from their inputs, free hidden slots with odd
  activations, and free connection slots holding stale indices and weights."""
  genomes = _grown(key, num_outputs=1, max_nodes=16, max_conns=64, rounds=48)
  k_act, k_src, k_dst, k_w, k_cut = jax.random.split(key, 5)
  free_slot = ~genomes.node_mask
  free_conn = ~genomes.conn_mask
  shape = genomes.conn_mask.shape
  activation = jnp.where(free_slot, jax.random.randint(k_act, free_slot.shape, 0, 4),
                         genomes.activation)
  # Masked-off connections must be ignored whatever they hold.
  src = jnp.where(free_conn, jax.random.randint(k_src, shape, 0, 16), genomes.conn_src)
  dst = jnp.where(free_conn, jax.random.randint(k_dst, shape, 0, 16), genomes.conn_dst)
  weight = jnp.where(free_conn, jax.random.uniform(k_w, shape, minval=-10, maxval=10),
                     genomes.conn_weight)
  # Switch off about a third of the connections in use (hidden nodes lose
  # inputs or outputs, some outputs read only the bias or nothing).
  cut = genomes.conn_mask & (jax.random.uniform(k_cut, shape) < 0.3)
  stale = genomes.replace(activation=activation, conn_src=src, conn_dst=dst,
                          conn_weight=weight, conn_mask=genomes.conn_mask & ~cut)
  assert int(jnp.sum(cut)) > 0
  np.testing.assert_array_equal(_draw(stale, "active", 1), _draw(stale, "slots", 1))


def test_active_equals_slots_on_hand_built_deep_colour_genome():
  # A chain through every hidden slot: the last block of slots is in use.
  hidden = [(f"h{i}", cppn.ACTIVATIONS[i % 4]) for i in range(9)]
  conns = [("x", "h0", 2.0), ("y", "h0", -1.5), ("d", "h1", 3.0)]
  conns += [(f"h{i}", f"h{i + 1}", 1.0 + 0.3 * i) for i in range(8)]
  conns += [("h8", "out0", 2.5), ("h3", "out1", -4.0), ("bias", "out2", 0.7),
            ("h5", "out2", 1.1), ("x", "out1", 0.4)]
  genome = cppn.genome_from_graph(conns, hidden=hidden,
                                  outputs=("sine", "gaussian", "sigmoid"),
                                  max_nodes=16, max_conns=24)
  for switches in ({}, ORIGINAL):
    kw = dict(height=SIZE, width=SIZE, channels=3, **switches)
    new = cppn.render(genome, method="active", **kw)
    np.testing.assert_array_equal(new, cppn.render(genome, method="slots", **kw))
    assert float(jnp.std(new)) > 0.01


@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True])
def test_one_genome_jit_or_not_equals_the_population(key, jit):
  genomes = _grown(key, num_outputs=1, max_nodes=12, max_conns=32, rounds=24)
  draw = functools.partial(cppn.render, height=SIZE, width=SIZE, channels=1)
  draw_one = jax.jit(draw) if jit else draw
  whole = _draw(genomes, "slots", 1)
  for i in (0, 5, genomes.node_mask.shape[0] - 1):
    one = draw_one(jax.tree.map(lambda a, i=i: a[i], genomes))
    np.testing.assert_array_equal(one, whole[i])


def test_nested_vmap_chunks_and_tiles_equal_slots(key):
  """A vmap over runs (flattened into one population by the batching rule),
  lax.map chunks (each chunk its own loop bound) and pixel tiles."""
  genomes = _grown(key, num_outputs=1, max_nodes=16, max_conns=64, rounds=32)
  whole = _draw(genomes, "slots", 1)
  runs = jax.tree.map(lambda a: a.reshape(4, -1, *a.shape[1:]), genomes)
  draw = functools.partial(cppn.render, height=SIZE, width=SIZE, channels=1,
                           pixels_per_tile=300)
  nested = jax.jit(jax.vmap(jax.vmap(draw)))(runs)
  np.testing.assert_array_equal(np.asarray(nested).reshape(whole.shape), whole)
  # One leaf shared across the batch (in_axes None) is broadcast by the rule.
  shared = jax.tree.map(lambda a: a[0], genomes)
  only_weights = jax.vmap(lambda w: draw(shared.replace(conn_weight=w)))(
      genomes.conn_weight[:3].at[1].multiply(0.5))
  expect = jax.vmap(lambda w: cppn.render(
      shared.replace(conn_weight=w), height=SIZE, width=SIZE, channels=1,
      method="slots"))(genomes.conn_weight[:3].at[1].multiply(0.5))
  np.testing.assert_array_equal(only_weights, expect)
  for chunk in (1, 7):
    chunked = jax.jit(functools.partial(cppn.render_population, height=SIZE,
                                        width=SIZE, channels=1, chunk_size=chunk,
                                        pixels_per_tile=200))(genomes)
    np.testing.assert_array_equal(chunked, whole)


def test_encoding_renders_with_either_method_and_rejects_others(key):
  genomes = _grown(key, num_outputs=1, max_nodes=12, max_conns=32, rounds=16)
  images = [jax.jit(jax.vmap(cppn.make_encoding(height=SIZE, width=SIZE, channels=1,
                                                max_nodes=12, max_conns=32,
                                                render_method=m).render))(genomes)
            for m in cppn.RENDER_METHODS]
  np.testing.assert_array_equal(images[0], images[1])
  with pytest.raises(ValueError, match="method"):
    cppn.render(jax.tree.map(lambda a: a[0], genomes), height=SIZE, width=SIZE,
                channels=1, method="dense")
  with pytest.raises(ValueError, match="method"):
    cppn.make_encoding(height=SIZE, width=SIZE, channels=1, render_method="dense")


@pytest.mark.parametrize("method", ["slots", pytest.param("active", marks=pytest.mark.slow)])
def test_population_render_map_equals_vmap(key, method):
  """The encoding's population render one genome after another ("map") draws
  the vmapped render's grey images bit for bit; colour images agree within a
  few ulps (XLA compiles the colour conversion differently under vmap)."""
  def drawn(channels, how):
    enc = cppn.make_encoding(height=SIZE, width=SIZE, channels=channels, max_nodes=16,
                             max_conns=64, render_method=method, population_render=how)
    genomes = _grown(key, num_outputs=channels, max_nodes=16, max_conns=64, rounds=32)
    return np.asarray(jax.jit(enc.render_batch)(genomes)), genomes

  grey_map, grey_genomes = drawn(1, "map")
  np.testing.assert_array_equal(grey_map, drawn(1, "vmap")[0])
  np.testing.assert_array_equal(grey_map, _draw(grey_genomes, method, 1))
  np.testing.assert_allclose(drawn(3, "map")[0], drawn(3, "vmap")[0], rtol=0, atol=2e-6)
  assert cppn.make_encoding(height=SIZE, width=SIZE, channels=1).population_render is (
      encoding_lib.vmap_render)
  auto = cppn.make_encoding(height=SIZE, width=SIZE, channels=1, population_render="auto")
  assert auto.population_render is (encoding_lib.map_render if jax.default_backend() == "cpu"
                                    else encoding_lib.vmap_render)
  with pytest.raises(ValueError, match="population_render"):
    cppn.make_encoding(height=SIZE, width=SIZE, channels=1, population_render="pmap")


@pytest.mark.slow
def test_map_elites_archives_equal_with_either_population_render():
  """A short grey run: the archives are identical, genomes and fitness."""
  method = "slots"
  apply_fn, params = models.init("lenet", jax.random.key(1))
  archives = {}
  for how in ("map", "vmap"):
    enc = cppn.make_encoding(height=SIZE, width=SIZE, channels=1, max_nodes=8, max_conns=16,
                             render_method=method, population_render=how)
    init = jax.jit(map_elites.make_init_fn(encoding=enc, apply_fn=apply_fn, num_cells=10,
                                           init_size=8))
    run = jax.jit(map_elites.make_run_fn(encoding=enc, apply_fn=apply_fn, batch_size=8,
                                         num_generations=2))
    archives[how] = run(jax.random.key(2), init(jax.random.key(2), params), params)[0]
  jax.tree.map(np.testing.assert_array_equal, archives["map"], archives["vmap"])
