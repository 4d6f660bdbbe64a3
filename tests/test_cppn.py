import colorsys
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax import checkpoint
from foolingjax.evolution import cppn
from foolingjax.evolution.cppn import CPPNGenome, InvalidGenomeError

# Small capacities so that genomes hit them within a few dozen mutations.
MAX_NODES, MAX_CONNS = 10, 16
POP, STEPS = 128, 40
OPS = {
    "weights": cppn.mutate_weights,
    "rewire": cppn.rewire_connection,
    "activations": cppn.mutate_activations,
    "add_connection": cppn.add_connection,
    "delete_connection": cppn.delete_connection,
    "add_node": cppn.add_node,
    "delete_node": cppn.delete_node,
}
# Jitted once per module: single-genome operators (rates are traced arguments).
_mutate = jax.jit(cppn.mutate)
_add_node = jax.jit(cppn.add_node)
_add_connection = jax.jit(cppn.add_connection)
_delete_node = jax.jit(cppn.delete_node)


def _init(key, num_outputs=1):
  return cppn.init_genome(key, num_outputs=num_outputs, max_nodes=MAX_NODES,
                          max_conns=MAX_CONNS)


@functools.partial(jax.jit, static_argnames="num_outputs")
def _evolve(key, *, num_outputs):
  """POP lineages, STEPS mutations each; every op is also applied on the side.

  Returns (history [STEPS, POP], op results [STEPS, len(OPS), POP], stats).
  Add rates are raised so that capacity is reached and exercised.
  """
  k_init, k_steps = jax.random.split(key)
  pop = jax.vmap(functools.partial(_init, num_outputs=num_outputs))(
      jax.random.split(k_init, POP))
  mutate = functools.partial(cppn.mutate, add_conn_rate=0.8, add_node_rate=0.8)

  def step(pop, key):
    k_ops, k_mut = jax.random.split(key)
    op_keys = jax.random.split(k_ops, (len(OPS), POP))
    ops = [jax.vmap(op)(k, pop) for op, k in zip(OPS.values(), op_keys)]
    ops = jax.tree.map(lambda *xs: jnp.stack(xs), *ops)
    child, stats = jax.vmap(mutate)(jax.random.split(k_mut, POP), pop)
    return child, (pop, ops, stats)

  _, (history, ops, stats) = jax.lax.scan(step, pop, jax.random.split(k_steps, STEPS))
  return history, ops, stats


@pytest.fixture(scope="module")
def evolved():
  return jax.device_get(_evolve(jax.random.key(42), num_outputs=1))


@pytest.fixture(scope="module")
def grown(evolved):
  """The last generation of the grown grey population, leaves [POP, ...]."""
  history, _, _ = evolved
  return jax.tree.map(lambda a: a[-1], history)


def _counts(g):
  hidden = g.node_mask.sum(-1) - cppn.NUM_INPUTS - g.num_outputs
  return hidden, g.conn_mask.sum(-1)


def _has_free_pair(g):
  """bool [...]: some forward pair of used nodes is not yet connected."""
  n = g.node_mask.shape[-1]
  slots = np.arange(n)
  can_src = g.node_mask & (slots < n - g.num_outputs)
  can_dst = g.node_mask & (slots >= cppn.NUM_INPUTS)
  pairs = can_src[..., :, None] & can_dst[..., None, :] & np.triu(np.ones((n, n), bool), 1)
  existing = (g.conn_mask[..., None, None]
              & (g.conn_src[..., None, None] == slots[:, None])
              & (g.conn_dst[..., None, None] == slots[None, :])).any(-3)
  return (pairs & ~existing).any((-2, -1))


def _assert_acyclic_and_well_formed(g: CPPNGenome):
  """Independent of the slot-order invariant: adjacency must be nilpotent."""
  flat = jax.tree.map(lambda a: a.reshape(-1, a.shape[-1]), g)
  b, n = flat.node_mask.shape
  adj = np.zeros((b, n, n), np.int64)
  rows = np.repeat(np.arange(b), flat.conn_mask.shape[-1])
  on = flat.conn_mask.reshape(-1)
  np.add.at(adj, (rows[on], flat.conn_src.reshape(-1)[on], flat.conn_dst.reshape(-1)[on]),
            1)
  assert adj.max() <= 1, "duplicate connection"
  reach = adj.copy()
  for _ in range(n):  # A^n == 0 for every genome iff no genome has a cycle
    reach = np.minimum(reach @ adj, 1)
  assert not reach.any(), "cycle"
  # Connections only touch used slots; counts stay within capacity.
  s, d = np.where(flat.conn_mask, flat.conn_src, 0), np.where(flat.conn_mask, flat.conn_dst, 0)
  r = np.arange(b)[:, None]
  assert (flat.node_mask[r, s] | ~flat.conn_mask).all()
  assert (flat.node_mask[r, d] | ~flat.conn_mask).all()
  hidden, conns = _counts(flat)
  assert (hidden >= 0).all() and (hidden <= n - cppn.NUM_INPUTS - g.num_outputs).all()
  assert (conns <= flat.conn_mask.shape[-1]).all()
  # Free slots are zeroed; weights in range.
  assert (flat.conn_weight[~flat.conn_mask] == 0).all()
  assert (np.abs(flat.conn_weight) <= 10.0).all()


# --------------------------------------------------------------------------
# Start


@pytest.mark.parametrize("num_outputs", [1, 3])
def test_init_is_the_original_start(key, num_outputs):
  g = jax.device_get(_init(key, num_outputs))
  hidden, conns = _counts(g)
  assert hidden == 0 and conns == 4 * num_outputs
  on = g.conn_mask
  assert set(zip(g.conn_src[on].tolist(), g.conn_dst[on].tolist())) == {
      (i, MAX_NODES - num_outputs + o) for i in range(4) for o in range(num_outputs)}
  assert (np.abs(g.conn_weight[on]) <= 10).all() and np.abs(g.conn_weight[on]).max() > 1
  cppn.validate_genome(g)


# --------------------------------------------------------------------------
# Mutations


def test_every_mutation_keeps_the_graph_acyclic_and_within_capacity(evolved):
  history, ops, stats = evolved
  _assert_acyclic_and_well_formed(history)
  _assert_acyclic_and_well_formed(ops)
  cppn.validate_genome(history)
  cppn.validate_genome(ops)
  # Capacity was actually reached (the test exercised full genomes) ...
  hidden, conns = _counts(history)
  assert hidden.max() == MAX_NODES - 5 and conns.max() == MAX_CONNS
  # ... and skipped adds are reported.
  assert stats["cppn_add_node_full"].sum() > 0 and stats["cppn_add_conn_full"].sum() > 0
  assert stats["cppn_hidden_nodes"].max() == MAX_NODES - 5


def test_each_mutation_changes_counts_as_documented(evolved):
  history, ops, _ = evolved
  h0, c0 = _counts(history)
  results = {name: _counts(jax.tree.map(lambda a, i=i: a[:, i], ops))
             for i, name in enumerate(OPS)}
  hidden_free = h0 < MAX_NODES - 5
  conn_free = c0 < MAX_CONNS
  for name in ("weights", "rewire", "activations"):
    np.testing.assert_array_equal(results[name][0], h0)
    np.testing.assert_array_equal(results[name][1], c0)
  h, c = results["add_connection"]
  np.testing.assert_array_equal(h, h0)
  np.testing.assert_array_equal(c, c0 + (conn_free & _has_free_pair(history)))
  assert (c == c0 + 1).mean() > 0.5
  h, c = results["delete_connection"]
  np.testing.assert_array_equal(c, np.maximum(c0 - 1, 0))
  h, c = results["add_node"]
  can = hidden_free & conn_free & (c0 > 0)
  np.testing.assert_array_equal(h, h0 + can)
  np.testing.assert_array_equal(c, c0 + can)
  h, c = results["delete_node"]
  np.testing.assert_array_equal(h, np.maximum(h0 - 1, 0))
  assert (c <= c0).all()


def _edges(g):
  on = np.asarray(g.conn_mask)
  return sorted(zip(np.asarray(g.conn_src)[on].tolist(), np.asarray(g.conn_dst)[on].tolist(),
                    np.asarray(g.conn_weight)[on].tolist()))


def test_add_node_splits_a_connection_keeping_its_weight(key):
  out = MAX_NODES - 1
  g = cppn.genome_from_graph([("x", "out0", 2.5)], outputs=("sine",),
                             max_nodes=MAX_NODES, max_conns=MAX_CONNS)
  g1 = _add_node(key, g)
  assert _edges(g1) == [(0, 4, 2.5), (4, out, 2.5)]
  # Splitting an edge into hidden node a inserts the new node before a.
  g = cppn.genome_from_graph([("y", "a", -1.5), ("bias", "out0", 1.0)],
                             hidden=[("a", "gaussian")], max_nodes=MAX_NODES,
                             max_conns=MAX_CONNS)
  conn_mask = g.conn_mask.at[1].set(False)  # leave y -> a as the only edge
  g = g.replace(conn_mask=conn_mask, conn_src=jnp.where(conn_mask, g.conn_src, 0),
                conn_dst=jnp.where(conn_mask, g.conn_dst, 0),
                conn_weight=jnp.where(conn_mask, g.conn_weight, 0.0))
  g2 = _add_node(key, g)
  assert _edges(g2) == [(1, 4, -1.5), (4, 5, -1.5)]
  assert int(g2.activation[5]) == cppn.GAUSSIAN  # a moved up one slot
  cppn.validate_genome(g2)
  # Deleting a hidden node removes its connections and closes the gap.
  g3 = _delete_node(jax.random.key(3), g2)
  assert _counts(jax.device_get(g3)) == (1, 1)
  assert _edges(g3) in ([(1, 4, -1.5)], [])
  cppn.validate_genome(g3)


def test_full_genome_skips_adds_and_reports_it(key):
  inputs = ("x", "y", "d", "bias")
  hidden = [(f"h{i}", "sine") for i in range(4)]
  # 16 connections fill all MAX_CONNS slots.
  full_conns = cppn.genome_from_graph(
      [(i, "out0", 1.0) for i in inputs] + [(i, h, 1.0) for i in inputs[:3] for h, _ in
                                           hidden],
      hidden=hidden, max_nodes=MAX_NODES, max_conns=MAX_CONNS)
  # 5 hidden nodes fill all MAX_NODES - 5 hidden slots.
  hidden = [(f"h{i}", "sine") for i in range(5)]
  full_nodes = cppn.genome_from_graph(
      [("x", h, 1.0) for h, _ in hidden] + [("bias", "out0", 1.0)], hidden=hidden,
      max_nodes=MAX_NODES, max_conns=MAX_CONNS)
  assert _counts(full_conns) == (4, MAX_CONNS) and _counts(full_nodes) == (5, 6)
  chex.assert_trees_all_equal(_add_connection(key, full_conns), full_conns)
  chex.assert_trees_all_equal(_add_node(key, full_conns), full_conns)
  chex.assert_trees_all_equal(_add_node(key, full_nodes), full_nodes)
  assert _counts(jax.device_get(_add_connection(key, full_nodes))) == (5, 7)
  only_adds = dict(add_conn_rate=1.0, add_node_rate=1.0, del_conn_rate=0.0,
                   del_node_rate=0.0)
  child, stats = _mutate(key, full_conns, **only_adds)
  assert stats["cppn_add_conn_full"] == 1 and stats["cppn_add_node_full"] == 1
  assert _counts(child) == (4, MAX_CONNS)
  child, stats = _mutate(key, full_nodes, **only_adds)
  assert stats["cppn_add_conn_full"] == 0 and stats["cppn_add_node_full"] == 1
  assert _counts(child) == (5, 7) and stats["cppn_connections"] == 7


def test_change_connection_rate_follows_the_originals_loop(key):
  # Both connections can always move, so one of them does with 1 - 0.5^2.
  g = cppn.genome_from_graph([("x", "h0", 1.0), ("h0", "out0", 1.0)],
                             hidden=[("h0", "sine"), ("h1", "sine"), ("h2", "sine")],
                             max_nodes=MAX_NODES, max_conns=MAX_CONNS)
  only_rewire = dict(weight_rate=0.0, activation_rate=0.0, add_conn_rate=0.0,
                     del_conn_rate=0.0, add_node_rate=0.0, del_node_rate=0.0)
  kids, _ = jax.jit(jax.vmap(lambda k: cppn.mutate(k, g, **only_rewire)))(
      jax.random.split(key, 4000))
  kids, g = jax.device_get((kids, g))
  moved = ((kids.conn_src != g.conn_src) | (kids.conn_dst != g.conn_dst)).sum(-1)
  assert set(np.unique(moved)) <= {0, 1}  # at most one connection moves
  assert abs(moved.mean() - 0.75) < 0.03  # 4000 draws: 4.4 standard errors
  np.testing.assert_array_equal(kids.conn_weight[:, :2], np.ones((4000, 2)))
  cppn.validate_genome(kids)


def test_polynomial_mutation_keeps_weights_in_range_and_mostly_small(key):
  delta = cppn.polynomial_delta(jax.random.uniform(key, (20000,)), eta=15.0)
  assert float(jnp.abs(delta).max()) <= 1.0
  # η = 15: the median step is a few percent of the range.
  assert 0.01 < float(jnp.median(jnp.abs(delta))) < 0.1


# --------------------------------------------------------------------------
# Rendering


def _column_coords(width):
  return ((2.0 * np.arange(width) + 1.0) / width - 1.0).astype(np.float32)


@pytest.mark.parametrize("size", [28, 64])
def test_hand_built_genome_renders_sine_stripes(size):
  w = 3.0 * math.pi  # three periods across the image: vertical stripes
  g = cppn.genome_from_graph([("x", "out0", w)], outputs=("sine",))
  img = np.asarray(cppn.render(g, height=size, width=size, channels=1))
  chex.assert_shape(img, (size, size, 1))
  expected = (np.sin(np.float32(w) * _column_coords(size)) + 1.0) / 2.0
  np.testing.assert_allclose(img[0, :, 0], expected, atol=2e-6, rtol=0)
  assert (img == img[:1]).all()  # every row identical: y does not enter
  assert (np.diff(np.sign(expected - 0.5)) != 0).sum() == 5  # 3 periods, 5 crossings


def test_hidden_gaussian_is_exactly_mirror_symmetric():
  g = cppn.genome_from_graph(
      [("x", "g", 2.0), ("g", "out0", 4.0), ("bias", "out0", -2.0)],
      hidden=[("g", "gaussian")], outputs=("linear",))
  img = np.asarray(cppn.render(g, height=28, width=28, channels=1))
  x = _column_coords(28).astype(np.float64)
  expected = (np.clip(4.0 * np.exp(-(2.0 * x) ** 2) - 2.0, -3, 3) / 3 + 1) / 2
  np.testing.assert_allclose(img[5, :, 0], expected, atol=2e-6, rtol=0)
  np.testing.assert_array_equal(img, img[:, ::-1])


def test_three_outputs_are_read_as_hls():
  g = cppn.genome_from_graph(
      [("x", "out0", 3.0), ("bias", "out2", 3.0), ("y", "out1", 1.5)],
      outputs=("linear", "linear", "linear"))
  img = np.asarray(cppn.render(g, height=8, width=8, channels=3))
  coords = _column_coords(8)
  for r in (0, 3, 7):
    for c in (0, 2, 5, 7):
      hue, light = (coords[c] + 1) / 2, (coords[r] * 0.5 + 1) / 2
      np.testing.assert_allclose(img[r, c], colorsys.hls_to_rgb(hue, light, 1.0),
                                 atol=2e-6)


def _random_dag(rng, *, num_outputs, num_hidden=4, num_conns=12):
  """A random hand-built genome (numpy), hidden nodes in random order."""
  names = ["x", "y", "d", "bias"] + [f"h{i}" for i in range(num_hidden)]
  outs = [f"out{k}" for k in range(num_outputs)]
  pairs = [(a, b) for i, a in enumerate(names) for b in names[max(i + 1, 4):] + outs]
  chosen = rng.choice(len(pairs), size=num_conns, replace=False)
  hidden = [(f"h{i}", cppn.ACTIVATIONS[rng.integers(4)]) for i in range(num_hidden)]
  rng.shuffle(hidden)
  return cppn.genome_from_graph(
      [(*pairs[i], float(rng.uniform(-10, 10))) for i in chosen], hidden=hidden,
      outputs=[cppn.ACTIVATIONS[rng.integers(4)] for _ in outs], max_nodes=MAX_NODES,
      max_conns=MAX_CONNS)


@pytest.mark.parametrize("channels", [1, 3])
def test_render_is_deterministic_and_in_range(grown, channels):
  chex.clear_trace_counter()
  if channels == 1:
    pop = jax.tree.map(lambda a: a[:32], grown)
  else:
    rng = np.random.default_rng(0)
    pop = jax.tree.map(lambda *a: jnp.stack(a),
                       *[_random_dag(rng, num_outputs=3, num_hidden=3) for _ in range(8)])
  @jax.jit
  @jax.vmap
  @chex.assert_max_traces(n=1)
  def draw(genome):
    return cppn.render(genome, height=28, width=28, channels=channels)

  first, second = draw(pop), draw(pop)
  chex.assert_shape(first, (pop.node_mask.shape[0], 28, 28, channels))
  chex.assert_trees_all_equal(first, second)
  chex.assert_tree_all_finite(first)
  assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
  # Patterns, not flat images, for most genomes.
  assert (np.asarray(first.std(axis=(1, 2, 3))) > 0.01).mean() > 0.5


def test_jit_and_no_jit_agree(evolved):
  """The jitted, vmapped scan of _evolve against eager calls, one genome each."""
  history, _, _ = evolved
  k_steps = jax.random.split(jax.random.key(42))[1]
  k_mut = jax.random.split(jax.random.split(k_steps, STEPS)[0])[1]
  keys = jax.random.split(k_mut, POP)
  draw = jax.jit(jax.vmap(functools.partial(cppn.render, height=12, width=12,
                                            channels=1)))
  children = jax.tree.map(lambda a: a[1, :2], history)
  drawn = np.asarray(draw(children))
  for i in range(2):
    parent = jax.tree.map(lambda a, i=i: a[0, i], history)
    child, _ = cppn.mutate(keys[i], parent, add_conn_rate=0.8, add_node_rate=0.8)
    chex.assert_trees_all_equal(jax.device_get(child),
                                jax.tree.map(lambda a, i=i: a[i], children))
    with jax.disable_jit():
      image = cppn.render(child, height=12, width=12, channels=1)
    np.testing.assert_allclose(image, drawn[i], atol=1e-6, rtol=0)


def test_activations_are_the_papers():
  z = jnp.array([-5.0, -1.0, -0.1, 0.0, 0.3, 2.0, 4.0])
  expected = {
      cppn.SINE: np.sin(z),
      cppn.SIGMOID: (1.0 / (1.0 + np.exp(-z)) - 0.5) * 2.0,
      cppn.GAUSSIAN: np.exp(-np.square(z)),
      cppn.LINEAR: np.clip(z, -3, 3) / 3,
  }
  for index, want in expected.items():
    np.testing.assert_allclose(cppn.activate(jnp.int32(index), z), want, atol=1e-6)


def test_chunked_and_tiled_render_match_one_pass(grown):
  few = jax.tree.map(lambda a: a[:6], grown)
  kw = dict(height=9, width=7, channels=1)
  whole = jax.jit(functools.partial(cppn.render_population, **kw))(few)
  # 63 pixels in tiles of at most 20: 4 tiles of 16, one padded pixel.
  pieces = jax.jit(functools.partial(cppn.render_population, chunk_size=4,
                                     pixels_per_tile=20, **kw))(few)
  chex.assert_trees_all_close(pieces, whole, atol=1e-6)


def test_render_rejects_wrong_channels_and_batches(grown):
  one = jax.tree.map(lambda a: a[0], grown)
  with pytest.raises(ValueError, match="3 outputs"):
    cppn.render(one, height=4, width=4, channels=3)
  with pytest.raises(ValueError, match="vmap"):
    cppn.render(grown, height=4, width=4, channels=1)


# --------------------------------------------------------------------------
# Encoding, checkpoints, malformed genomes


def test_encoding_is_vmappable_and_matches_the_functions(key, grown):
  enc = cppn.make_encoding(height=28, width=28, channels=1, max_nodes=MAX_NODES,
                           max_conns=MAX_CONNS)
  assert enc.image_shape == (28, 28, 1) and enc.name == "cppn"
  pop = jax.eval_shape(jax.vmap(enc.init), jax.random.split(key, 6))
  chex.assert_trees_all_equal_shapes(pop, jax.tree.map(lambda a: a[:6], grown))
  assert pop.num_outputs == 1
  keys = jax.random.split(jax.random.key(1), 6)
  # Shapes of the population-level functions, traced without compiling.
  child, stats = jax.eval_shape(jax.vmap(enc.vary, in_axes=(0, 0, 0, None)), keys, pop,
                                pop, jnp.int32(3))
  chex.assert_trees_all_equal_shapes(child, pop)
  assert set(stats) == {"cppn_hidden_nodes", "cppn_connections", "cppn_add_conn_full",
                        "cppn_add_node_full"}
  for v in stats.values():
    chex.assert_shape(v, (6,))
  images = jax.eval_shape(jax.vmap(enc.render), pop)
  assert images.shape == (6, 28, 28, 1) and images.dtype == jnp.float32
  # vary is mutate with the paper's rates; the mate is ignored.
  one = jax.tree.map(lambda a: a[0], grown)
  other = jax.tree.map(lambda a: a[1], grown)
  chex.assert_trees_all_equal(enc.vary(keys[0], one, other, 3), cppn.mutate(keys[0], one))
  with pytest.raises(ValueError, match="1 \\(grey\\) or 3"):
    cppn.make_encoding(height=28, width=28, channels=2)
  with pytest.raises(ValueError, match="max_nodes"):
    cppn.make_encoding(height=28, width=28, channels=3, max_nodes=6)
  with pytest.raises(ValueError, match="add_node_rate"):
    cppn.make_encoding(height=28, width=28, channels=1, add_node_rate=1.5)


def test_population_round_trips_through_a_checkpoint(tmp_path, grown, key):
  path = checkpoint.save(tmp_path / "genomes.msgpack", grown, meta={"generation": 40})
  target = jax.tree.map(np.zeros_like, grown)
  restored, meta = checkpoint.restore(path, target)
  assert meta == {"generation": 40}
  chex.assert_trees_all_equal(jax.device_get(restored), grown)
  assert restored.num_outputs == 1
  cppn.validate_genome(restored)
  # A checkpoint written with other capacities does not restore silently.
  other = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(
      jax.vmap(lambda k: cppn.init_genome(k, max_nodes=12, max_conns=16)),
      jax.random.split(key, POP)))
  with pytest.raises(checkpoint.CheckpointError, match="node_mask"):
    checkpoint.restore(path, other)


def _with(g, **fields):
  return g.replace(**{k: jnp.asarray(v) for k, v in fields.items()})


def test_malformed_genomes_are_rejected_clearly(tmp_path, key):
  g = cppn.genome_from_graph([("x", "a", 1.0), ("a", "b", 1.0), ("b", "out0", 1.0)],
                             hidden=[("a", "sine"), ("b", "linear")], outputs=("sine",),
                             max_nodes=MAX_NODES, max_conns=MAX_CONNS)
  src, dst = np.asarray(g.conn_src).copy(), np.asarray(g.conn_dst).copy()
  mask = np.asarray(g.conn_mask).copy()
  # A back edge b -> a closes the cycle a -> b -> a.
  src[3], dst[3], mask[3] = 5, 4, True
  cyclic = _with(g, conn_src=src, conn_dst=dst, conn_mask=mask)
  with pytest.raises(InvalidGenomeError, match=r"cycle through node slots 4 -> 5 -> 4"):
    cppn.validate_genome(cyclic)
  # The same cycle arriving through a checkpoint is caught at validation.
  path = checkpoint.save(tmp_path / "bad.msgpack", cyclic)
  restored, _ = checkpoint.restore(path, g)
  with pytest.raises(InvalidGenomeError, match="cycle"):
    cppn.validate_genome(restored)
  # Index out of range, named with its slot.
  dst = np.asarray(g.conn_dst).copy()
  dst[1] = 99
  with pytest.raises(InvalidGenomeError, match=r"slot 1 has target node index 99, out of "
                     r"range \[0, 10\)"):
    cppn.validate_genome(_with(g, conn_dst=dst))
  # Into an input; from an output; unknown activation; weight out of range.
  src, dst = np.asarray(g.conn_src).copy(), np.asarray(g.conn_dst).copy()
  dst[0] = 1
  with pytest.raises(InvalidGenomeError, match="ends at input"):
    cppn.validate_genome(_with(g, conn_dst=dst))
  act = np.asarray(g.activation).copy()
  act[4] = 7
  with pytest.raises(InvalidGenomeError, match="activation index 7"):
    cppn.validate_genome(_with(g, activation=act))
  w = np.asarray(g.conn_weight).copy()
  w[0] = np.nan
  with pytest.raises(InvalidGenomeError, match="not finite"):
    cppn.validate_genome(_with(g, conn_weight=w))
  # In a population the message names the individual.
  pop = jax.tree.map(lambda a, b: jnp.stack([a, a, b]), g, cyclic)
  with pytest.raises(InvalidGenomeError, match=r"individual \(2,\)"):
    cppn.validate_genome(pop)
  with pytest.raises(InvalidGenomeError, match="shape"):
    cppn.validate_genome(_with(g, conn_src=np.zeros(3, np.int32)))
  with pytest.raises(InvalidGenomeError, match="CPPNGenome"):
    cppn.validate_genome({"node_mask": g.node_mask})


def test_genome_from_graph_orders_hidden_nodes_and_rejects_cycles():
  # b feeds a although a is listed first: b takes the lower slot.
  g = cppn.genome_from_graph([("x", "b", 1.0), ("b", "a", 2.0), ("a", "out0", 1.0)],
                             hidden=[("a", "sine"), ("b", "gaussian")])
  assert int(g.activation[4]) == cppn.GAUSSIAN and int(g.activation[5]) == cppn.SINE
  with pytest.raises(InvalidGenomeError, match="cycle a -> b -> a|cycle b -> a -> b"):
    cppn.genome_from_graph([("x", "a", 1.0), ("a", "b", 1.0), ("b", "a", 1.0),
                            ("b", "out0", 1.0)], hidden=[("a", "sine"), ("b", "sine")])
  with pytest.raises(InvalidGenomeError, match="unknown node 'z'"):
    cppn.genome_from_graph([("z", "out0", 1.0)])
  with pytest.raises(InvalidGenomeError, match="duplicated"):
    cppn.genome_from_graph([("x", "out0", 1.0), ("x", "out0", 2.0)])
