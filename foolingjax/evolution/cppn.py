"""CPPN image encoding that grows NEAT-style (Nguyen, Yosinski & Clune 2015).

A compositional pattern-producing network maps a pixel's coordinates
``(x, y, d, bias)`` to its value; evolving the network instead of the pixels
gives regular images (symmetry, repetition, stripes). The genome and its
mutations follow the fooling paper's sferes2 code (github
Evolving-AI-Lab/fooling): the CPPN is a ``gen::HyperNn``
(``modules/nn2/gen_hyper_nn.hpp``), i.e. a feed-forward ``gen::DnnFF``
(``modules/nn2/gen_dnn_ff.hpp``, built on ``gen_dnn.hpp``) of ``AfCppn``
nodes, run by ``exp/images/dl_map_elites_images*.cpp`` and drawn by
``exp/images/phen/phen_grayscale_image.hpp`` and ``phen_color_image.hpp``.
Where foolingjax's default differs from that code, :func:`make_encoding`'s
``variant="original"`` restores the original (see **Variants**).

**Genome layout.** Every genome of a run has ``N = max_nodes`` node slots and
``C = max_conns`` connection slots, so a population is one pytree whose leaves
have a leading population axis, and every function here is vmappable and
jittable. Node slots are ordered::

    0..3             inputs x, y, d, bias (always present)
    4..4+h-1         the h hidden nodes, in topological order (a prefix of the
                     hidden slots; ``node_mask`` marks them)
    4+h..N-O-1       free hidden slots
    N-O..N-1         the O outputs (1: grey; 3: hue, lightness, saturation)

and every active connection runs from a lower to a higher slot
(``src < dst``), from a non-output to a non-input. Slot order is therefore a
topological order: the graph is acyclic by construction (as ``DnnFF``'s,
which only adds feed-forward connections) and the renderer evaluates nodes in
slot order. Adding a node by splitting ``a -> b`` inserts it just before
``b`` (shifting later hidden nodes up by one slot); deleting one shifts them
down. Free connection slots are zero (``src = dst = 0``, ``weight = 0``,
``conn_mask = False``).

**Mutation** (:func:`mutate`, in the order of ``DnnFF::mutate``):

* every weight with probability 0.1: polynomial mutation (η_m = 15) on
  [-10, 10] (the paper's ``evo_float`` and ``parameters`` settings;
  ``DnnFF::_change_conns``);
* change connection (``change_conn_rate``; foolingjax 0.5, original 0): one
  connection's source or target (a coin flip) moves elsewhere, keeping its
  weight; a genome with E connections is rewired once with probability
  ``1 - (1 - rate)^E``, the moved connection drawn uniformly. **The original
  never does this.** Its parameters set ``m_rate_change_conn = 0.5``, but
  ``DnnFF::mutate`` calls ``DnnFF``'s own ``_change_conns``, which only
  mutates the weights and hides ``Dnn::_change_conns`` (``gen_dnn.hpp``, the
  loop that tests each connection with that rate and moves the first that
  passes, which the operator here is modelled on). foolingjax's default keeps
  rewiring because the results produced so far used it; ``variant="original"``
  sets the rate to 0;
* every non-input node's activation is redrawn with probability 0.1
  (``_change_neurons``, ``cppn::sampled``);
* add connection 0.5 (weight uniform in [-10, 10]), delete connection 0.3,
  add node by splitting a connection 0.5 (both halves keep the old weight, as
  ``_add_neuron_on_conn``), delete node 0.2 (with its connections).

A genome that is full skips an add and :func:`mutate` reports it in its stats
(``cppn_add_conn_full``, ``cppn_add_node_full``). The original has no
crossover (``DnnFF::cross`` copies the parents); :func:`make_encoding`'s
``vary`` ignores its mate too.

Not kept from the original, in either variant:

* ``DnnFF::_add_conn`` draws a source uniformly among the non-output nodes,
  then a target uniformly among the non-input nodes that are not the source's
  ancestors, and may add a second edge parallel to an existing one. Here the
  new connection is uniform over the forward (source, target) pairs that are
  not connected yet (the two-stage draw favours pairs whose source has few
  possible targets; that bias is not kept) and never duplicates an edge: a
  genome stores one weight per pair and :func:`validate_genome` rejects
  duplicates, and a parallel edge would act as one edge with the summed
  weight, which can leave the weight range [-10, 10].
* sferes evaluates the network by stepping every node synchronously
  ``depth`` times (the longest input-to-output path plus one,
  ``DnnFF::_compute_depth``); for an acyclic graph that gives the same values
  as :func:`render`'s one pass in topological order, so nothing is lost.

**Rendering.** Hidden and output nodes take one of :data:`ACTIVATIONS`
(values in [-1, 1]); how pixels become inputs and outputs become an image is
set by four switches of :func:`render`.

What the original does (``phen_grayscale_image.hpp``,
``phen_color_image.hpp``): for the pixel at column ``x`` (0..W-1) and row
``y`` (0..H-1) the inputs are ``x`` and ``y`` themselves (raw indices),
``d = sqrt(xn^2 + yn^2)`` with ``xn = -1 + 2x / (W - 1)`` (0 if W == 1) and
``yn`` likewise, so d lies in [0, sqrt 2], and ``bias = 1``. Each output
``v`` is written into an 8-bit ``cv::Mat`` as ``int(v * 255)``, negated if
negative (``convert_to_color_scale``), i.e. the byte ``floor(|v| * 255)``;
a grey image reaches the network as ``byte / 255``. Three outputs are
written as hue, lightness and saturation bytes and converted by OpenCV's
8-bit ``CV_HLS2BGR``, whose hue byte is on a 0-180 scale (``2 * byte``
degrees, wrapped modulo 360): :func:`foolingjax.images.hls_opencv_to_rgb`.

Where foolingjax differs, and why:

* ``coordinates="centred"``: x and y on pixel centres in [-1, 1] and
  ``d / sqrt 2`` in [0, 1] instead of raw indices: raw indices times weights
  up to 10 alias into noise at the first mutation and make the picture depend
  on the resolution (the reasons in full are in :func:`render`).
* ``output_map="affine"``: ``(v + 1) / 2`` instead of ``|v|``. It is linear,
  so an output's sign is kept: ``sin`` of x draws one light and one dark
  band per period, where ``|sin|`` folds them into two equal bumps at the
  doubled frequency, with a crease at every zero. The other side: under
  ``(v + 1) / 2`` an output node that cannot go negative (a Gaussian, in
  (0, 1]) never draws below 0.5, and an output of 0 is mid-grey, so black,
  MNIST's background, takes a signed output node driven to -1; under
  ``|v|`` any output near 0 is black and a Gaussian output can draw the full
  range. For MNIST, ``"abs"`` is the closer match to the data.
* ``colour="hls"``: :func:`foolingjax.images.hls_to_rgb`, a hue of 1.0 is
  one full turn, so every hue is equally reachable; the original's 0-180 hue
  byte wraps, so hues 0-150 degrees are reached by two byte ranges.
* ``quantize=False``: the network sees the rendered floats; truncating them
  to bytes, as the original does, moves each value down by less than one
  grey level (1/255).

**Variants.** :data:`VARIANT_SWITCHES` (:func:`variant_switches`):

=====================  =======================  =========================
switch                 ``"foolingjax"``          ``"original"``
=====================  =======================  =========================
``coordinates``        ``"centred"``             ``"pixel_index"``
``output_map``         ``"affine"``              ``"abs"``
``colour``             ``"hls"``                 ``"hls_opencv"``
``quantize``           False                     True
``change_conn_rate``   0.5                       0.0
=====================  =======================  =========================

Functions called directly (:func:`render`, :func:`mutate`,
:func:`coordinates`) default to ``"foolingjax"``.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from foolingjax import images
from foolingjax.evolution.encoding import (Encoding, check_choice, map_render,
                                            resolve_variant, vmap_render)

NUM_INPUTS = 4
INPUT_NAMES = ("x", "y", "d", "bias")
# Indices of the activations a node can take; the names are the paper's.
SINE, SIGMOID, GAUSSIAN, LINEAR = range(4)
ACTIVATIONS = ("sine", "sigmoid", "gaussian", "linear")

# Rendering and mutation switches (see the module docstring, **Variants**).
COORDINATES = ("centred", "pixel_index")
OUTPUT_MAPS = ("affine", "abs")
COLOURS = ("hls", "hls_opencv")
# How render evaluates the network (same values; see render).
RENDER_METHODS = ("active", "slots")
# How make_encoding's render is lifted over a population: "vmap" (all genomes at
# once, the default), "map" (one after another in the jit; faster on XLA:CPU, see
# the README's CPPN section; bit-identical grey images in the tests, colour ones
# within a few ulps) or "auto" ("map" when the default backend is the CPU).
POPULATION_RENDERS = ("vmap", "map", "auto")
VARIANTS = ("foolingjax", "original")
VARIANT_SWITCHES = {
    "foolingjax": {"coordinates": "centred", "output_map": "affine",
                   "colour": "hls", "quantize": False, "change_conn_rate": 0.5},
    "original": {"coordinates": "pixel_index", "output_map": "abs",
                 "colour": "hls_opencv", "quantize": True, "change_conn_rate": 0.0},
}


class InvalidGenomeError(ValueError):
  """A genome from outside (a checkpoint, a hand-built graph) is malformed."""


@struct.dataclass
class CPPNGenome:
  """One CPPN, or a population of them (then every leaf has a leading axis).

  Attributes:
    node_mask: bool ``[N]``; True for inputs, outputs and the hidden prefix.
    activation: int32 ``[N]``; index into :data:`ACTIVATIONS` (ignored for
      inputs; 0 in free slots).
    conn_mask: bool ``[C]``; True for connections in use.
    conn_src: int32 ``[C]``; source node slot (``< conn_dst``).
    conn_dst: int32 ``[C]``; target node slot.
    conn_weight: float32 ``[C]``; weight in [-weight_limit, weight_limit].
    num_outputs: static; 1 (grey) or 3 (HLS colour).
  """

  node_mask: jax.Array
  activation: jax.Array
  conn_mask: jax.Array
  conn_src: jax.Array
  conn_dst: jax.Array
  conn_weight: jax.Array
  num_outputs: int = struct.field(pytree_node=False, default=1)

  @property
  def max_nodes(self) -> int:
    return self.node_mask.shape[-1]

  @property
  def max_conns(self) -> int:
    return self.conn_mask.shape[-1]


# --------------------------------------------------------------------------
# Construction


def _check_capacity(num_outputs: int, max_nodes: int, max_conns: int) -> None:
  if num_outputs not in (1, 3):
    raise ValueError(
        f"A CPPN has 1 (grey) or 3 (HLS colour) outputs; got {num_outputs}.")
  if max_nodes < NUM_INPUTS + num_outputs:
    raise ValueError(
        f"max_nodes={max_nodes} cannot hold the {NUM_INPUTS} inputs and {num_outputs} "
        f"outputs. Fix: max_nodes >= {NUM_INPUTS + num_outputs} (plus room to grow).")
  if max_conns < NUM_INPUTS * num_outputs:
    raise ValueError(
        f"max_conns={max_conns} cannot hold the initial {NUM_INPUTS}x{num_outputs} "
        f"input-to-output connections. Fix: max_conns >= {NUM_INPUTS * num_outputs}.")


def init_genome(key: jax.Array, *, num_outputs: int = 1, max_nodes: int = 32,
                max_conns: int = 128, weight_limit: float = 10.0) -> CPPNGenome:
  """The original's starting CPPN: no hidden nodes, every input to every output.

  Args:
    key: PRNG key.
    num_outputs: 1 (grey) or 3 (HLS colour).
    max_nodes: node slots N, inputs and outputs included.
    max_conns: connection slots C.
    weight_limit: weights are drawn uniformly from [-limit, limit].

  Returns:
    A :class:`CPPNGenome` with leaves ``[N]`` / ``[C]``; output activations are
    uniform over :data:`ACTIVATIONS`.
  """
  _check_capacity(num_outputs, max_nodes, max_conns)
  k_weight, k_act = jax.random.split(key)
  n_init = NUM_INPUTS * num_outputs
  first_out = max_nodes - num_outputs
  src = np.zeros(max_conns, np.int32)
  dst = np.zeros(max_conns, np.int32)
  src[:n_init] = np.tile(np.arange(NUM_INPUTS), num_outputs)
  dst[:n_init] = np.repeat(np.arange(first_out, max_nodes), NUM_INPUTS)
  conn_mask = np.arange(max_conns) < n_init
  weights = jax.random.uniform(k_weight, (max_conns,), jnp.float32, -weight_limit,
                               weight_limit)
  node_mask = np.zeros(max_nodes, bool)
  node_mask[:NUM_INPUTS] = True
  node_mask[first_out:] = True
  out_act = jax.random.randint(k_act, (num_outputs,), 0, len(ACTIVATIONS), jnp.int32)
  activation = jnp.zeros(max_nodes, jnp.int32).at[first_out:].set(out_act)
  return CPPNGenome(
      node_mask=jnp.asarray(node_mask), activation=activation,
      conn_mask=jnp.asarray(conn_mask), conn_src=jnp.asarray(src),
      conn_dst=jnp.asarray(dst), conn_weight=jnp.where(conn_mask, weights, 0.0),
      num_outputs=num_outputs)


def genome_from_graph(connections: Iterable[tuple[str, str, float]], *,
                      hidden: Sequence[tuple[str, str]] = (),
                      outputs: Sequence[str] = ("sine",), max_nodes: int = 32,
                      max_conns: int = 128) -> CPPNGenome:
  """Builds a genome from a readable graph, e.g. to draw a known pattern.

  Nodes are named ``x``, ``y``, ``d``, ``bias``, the given hidden names and
  ``out0``, ``out1``, ... Hidden nodes may be listed in any order; they are
  placed in a topological order.

  Args:
    connections: ``(source, target, weight)`` triples.
    hidden: ``(name, activation)`` pairs, activation from :data:`ACTIVATIONS`.
    outputs: one activation name per output (1 or 3 outputs).
    max_nodes: node slots N.
    max_conns: connection slots C.

  Returns:
    A validated :class:`CPPNGenome`.

  Raises:
    InvalidGenomeError: unknown name, cycle, duplicate, too many nodes or
      connections.
  """
  outputs = tuple(outputs)
  _check_capacity(len(outputs), max_nodes, max_conns)
  connections = [(str(s), str(t), float(w)) for s, t, w in connections]
  hidden = [(str(n), str(a)) for n, a in hidden]
  out_names = [f"out{k}" for k in range(len(outputs))]
  names = list(INPUT_NAMES) + [n for n, _ in hidden] + out_names
  if len(set(names)) != len(names):
    raise InvalidGenomeError(f"Node names must be unique; got {names}.")
  for n, a in list(hidden) + list(zip(out_names, outputs)):
    if a not in ACTIVATIONS:
      raise InvalidGenomeError(
          f"Node {n!r} has unknown activation {a!r}; choose from {ACTIVATIONS}.")
  for s, t, _ in connections:
    for n in (s, t):
      if n not in names:
        raise InvalidGenomeError(f"Connection {s} -> {t} names unknown node {n!r}; "
                                 f"known nodes: {names}.")
  if NUM_INPUTS + len(hidden) + len(outputs) > max_nodes:
    raise InvalidGenomeError(
        f"{len(hidden)} hidden nodes do not fit in max_nodes={max_nodes} with "
        f"{NUM_INPUTS} inputs and {len(outputs)} outputs.")
  if len(connections) > max_conns:
    raise InvalidGenomeError(
        f"{len(connections)} connections do not fit in max_conns={max_conns}.")
  # Kahn's algorithm over the hidden nodes: their slot order must be topological.
  hidden_names = [n for n, _ in hidden]
  edges = [(s, t) for s, t, _ in connections]
  order, cycle = _topological_order(hidden_names, edges)
  if cycle:
    raise InvalidGenomeError(
        f"The graph has a cycle {' -> '.join(cycle)}; a CPPN must be acyclic.")
  slot = {n: i for i, n in enumerate(INPUT_NAMES)}
  slot.update({n: NUM_INPUTS + i for i, n in enumerate(order)})
  first_out = max_nodes - len(outputs)
  slot.update({n: first_out + k for k, n in enumerate(out_names)})
  act_of = dict(hidden)
  node_mask = np.zeros(max_nodes, bool)
  node_mask[:NUM_INPUTS + len(hidden)] = True
  node_mask[first_out:] = True
  activation = np.zeros(max_nodes, np.int32)
  for n in order:
    activation[slot[n]] = ACTIVATIONS.index(act_of[n])
  for k, a in enumerate(outputs):
    activation[first_out + k] = ACTIVATIONS.index(a)
  src = np.zeros(max_conns, np.int32)
  dst = np.zeros(max_conns, np.int32)
  weight = np.zeros(max_conns, np.float32)
  for i, (s, t, w) in enumerate(connections):
    src[i], dst[i], weight[i] = slot[s], slot[t], w
  genome = CPPNGenome(
      node_mask=jnp.asarray(node_mask), activation=jnp.asarray(activation),
      conn_mask=jnp.asarray(np.arange(max_conns) < len(connections)),
      conn_src=jnp.asarray(src), conn_dst=jnp.asarray(dst),
      conn_weight=jnp.asarray(weight), num_outputs=len(outputs))
  return validate_genome(genome, weight_limit=None)


def _topological_order(nodes: Sequence[str], edges: Sequence[tuple[str, str]]):
  """``(order of nodes, [])`` or ``([], a cycle as a closed list of names)``."""
  succ = {n: [] for n in nodes}
  indeg = {n: 0 for n in nodes}
  for s, t in edges:
    if s in succ and t in succ:
      succ[s].append(t)
      indeg[t] += 1
  ready = [n for n in nodes if indeg[n] == 0]
  order = []
  while ready:
    n = ready.pop(0)
    order.append(n)
    for t in succ[n]:
      indeg[t] -= 1
      if indeg[t] == 0:
        ready.append(t)
  if len(order) == len(nodes):
    return order, []
  # Walk backwards along unresolved edges until a node repeats: that is a cycle.
  left = {n for n in nodes if indeg[n] > 0}
  pred = {t: s for s, t in edges if s in left and t in left}
  walk, seen = [next(iter(sorted(left)))], set()
  while walk[-1] not in seen:
    seen.add(walk[-1])
    walk.append(pred[walk[-1]])
  start = walk.index(walk[-1])
  return [], list(reversed(walk[start:]))


# --------------------------------------------------------------------------
# Validation (host side, for genomes that enter from outside)


def validate_genome(genome: CPPNGenome, *, weight_limit: float | None = 10.0
                    ) -> CPPNGenome:
  """Checks a genome or a population of genomes; raises one clear error.

  Call it where genomes enter from outside (restored checkpoints, hand-built
  graphs, other code). It runs on the host in numpy, so not under ``jit``.

  Args:
    genome: a :class:`CPPNGenome` whose leaves are ``[..., N]`` / ``[..., C]``
      (any leading population axes).
    weight_limit: if not None, weights must lie in [-limit, limit].

  Returns:
    ``genome`` unchanged.

  Raises:
    InvalidGenomeError: wrong type, shapes or dtypes; an index out of range;
      a connection from an output, into an input, to an unused slot, against
      the slot order, duplicated, or forming a cycle; an unknown activation;
      a non-finite or out-of-range weight. The message names the individual
      and the connection slot.
  """
  if not isinstance(genome, CPPNGenome):
    raise InvalidGenomeError(
        f"Expected a CPPNGenome, got {type(genome).__name__}. Fix: restore "
        "checkpoints with a CPPNGenome target (e.g. init_genome) and validate that.")
  try:
    node_mask = np.asarray(genome.node_mask)
    act = np.asarray(genome.activation)
    conn_mask = np.asarray(genome.conn_mask)
    src = np.asarray(genome.conn_src)
    dst = np.asarray(genome.conn_dst)
    weight = np.asarray(genome.conn_weight)
  except Exception as e:  # e.g. tracers
    raise InvalidGenomeError(
        f"validate_genome needs concrete arrays (it runs outside jit): {e}") from e
  num_out = genome.num_outputs
  if num_out not in (1, 3):
    raise InvalidGenomeError(f"num_outputs must be 1 or 3; got {num_out!r}.")
  batch = node_mask.shape[:-1]
  n = node_mask.shape[-1] if node_mask.ndim else 0
  c = conn_mask.shape[-1] if conn_mask.ndim else 0
  for name, a, last in (("node_mask", node_mask, n), ("activation", act, n),
                        ("conn_mask", conn_mask, c), ("conn_src", src, c),
                        ("conn_dst", dst, c), ("conn_weight", weight, c)):
    if a.ndim == 0 or a.shape != (*batch, last):
      raise InvalidGenomeError(
          f"Genome field {name} has shape {a.shape}; expected {(*batch, last)} "
          f"(node fields [..., N], connection fields [..., C]).")
  for name, a, want in (("node_mask", node_mask, "bool"),
                        ("conn_mask", conn_mask, "bool"), ("activation", act, "int32"),
                        ("conn_src", src, "int32"), ("conn_dst", dst, "int32"),
                        ("conn_weight", weight, "float32")):
    if a.dtype != np.dtype(want):
      raise InvalidGenomeError(
          f"Genome field {name} has dtype {a.dtype}; expected {want}.")
  if n < NUM_INPUTS + num_out:
    raise InvalidGenomeError(f"A genome with {num_out} outputs needs at least "
                             f"{NUM_INPUTS + num_out} node slots; it has {n}.")
  first_out = n - num_out
  flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
  node_mask, act, conn_mask = flat(node_mask), flat(act), flat(conn_mask)
  src, dst, weight = flat(src), flat(dst), flat(weight)

  def where_(b):
    ind = np.unravel_index(int(b), batch) if batch else ()
    return f"individual {tuple(int(i) for i in ind)}" if batch else "the genome"

  def fail(bad, what):
    b, *rest = np.argwhere(bad)[0]
    msg = what(b, *rest) if callable(what) else what
    raise InvalidGenomeError(f"Malformed CPPN genome ({where_(b)}): {msg}")

  io = np.zeros(n, bool)
  io[:NUM_INPUTS] = io[first_out:] = True
  if (~node_mask[:, io]).any():
    fail(~node_mask[:, io], "an input or output slot is marked unused.")
  hid = node_mask[:, NUM_INPUTS:first_out]
  if (hid[:, 1:] & ~hid[:, :-1]).any():
    fail(hid[:, 1:] & ~hid[:, :-1],
         lambda b, i: f"hidden slot {NUM_INPUTS + i + 1} is used but slot "
         f"{NUM_INPUTS + i} is not; hidden nodes must fill a prefix of the slots.")
  bad_act = (node_mask & (np.arange(n) >= NUM_INPUTS)
             & ((act < 0) | (act >= len(ACTIVATIONS))))
  if bad_act.any():
    fail(bad_act, lambda b, i: f"node {i} has activation index {act[b, i]}, out of "
         f"range [0, {len(ACTIVATIONS)}).")
  on = conn_mask
  for name, a in (("source", src), ("target", dst)):
    bad = on & ((a < 0) | (a >= n))
    if bad.any():
      fail(bad, lambda b, k, name=name, a=a: f"connection slot {k} has {name} node "
           f"index {a[b, k]}, out of range [0, {n}).")
  rows = np.arange(len(on))[:, None]
  s_safe, d_safe = np.where(on, src, 0), np.where(on, dst, 0)
  bad = on & (~node_mask[rows, s_safe] | ~node_mask[rows, d_safe])
  if bad.any():
    fail(bad, lambda b, k: f"connection slot {k} ({src[b, k]} -> {dst[b, k]}) "
         "touches an unused node slot.")
  bad = on & (src >= first_out)
  if bad.any():
    fail(bad, lambda b, k: f"connection slot {k} starts at output node {src[b, k]}; "
         "outputs have no outgoing connections.")
  bad = on & (dst < NUM_INPUTS)
  if bad.any():
    fail(bad, lambda b, k: f"connection slot {k} ends at input node {dst[b, k]}; "
         "inputs have no incoming connections.")
  bad = on & (src >= dst)
  if bad.any():
    b = int(np.argwhere(bad)[0][0])
    edges = [(int(s), int(t)) for s, t, m in zip(src[b], dst[b], on[b]) if m]
    _, cycle = _topological_order(sorted({v for e in edges for v in e}), edges)
    if cycle:
      fail(bad, f"the graph has a cycle through node slots "
           f"{' -> '.join(map(str, cycle))}; a CPPN must be acyclic.")
    fail(bad, lambda b, k: f"connection slot {k} ({src[b, k]} -> {dst[b, k]}) runs "
         "against the slot order (sources must come before targets); this genome "
         "was not made by foolingjax.evolution.cppn. Fix: rebuild it with "
         "genome_from_graph, which orders the hidden nodes.")
  key = np.where(on, src * n + dst, -1 - np.arange(c)[None])
  order = np.sort(key, axis=-1)
  dup = (order[:, 1:] == order[:, :-1]) & (order[:, 1:] >= 0)
  if dup.any():
    fail(dup, lambda b, k: f"connection {order[b, k] // n} -> {order[b, k] % n} is "
         "duplicated.")
  bad = on & ~np.isfinite(weight)
  if weight_limit is not None:
    bad |= on & (np.abs(weight) > weight_limit)
  if bad.any():
    fail(bad, lambda b, k: f"connection slot {k} has weight {weight[b, k]}, outside "
         f"[-{weight_limit}, {weight_limit}] or not finite.")
  return genome


# --------------------------------------------------------------------------
# Mutations: pure functions of (key, genome) for one genome; vmap them.
#
# Each operator draws all its randomness as one vector of uniforms and derives
# choices, coin flips and new values from it: one threefry call per operator
# instead of several keeps the vmapped generation quick to compile.


def count_hidden(genome: CPPNGenome) -> jax.Array:
  """int32 scalar: hidden nodes in use."""
  return (jnp.sum(genome.node_mask, dtype=jnp.int32) - NUM_INPUTS
          - genome.num_outputs)


def count_connections(genome: CPPNGenome) -> jax.Array:
  """int32 scalar: connections in use."""
  return jnp.sum(genome.conn_mask, dtype=jnp.int32)


def _hidden_capacity(genome: CPPNGenome) -> int:
  return genome.max_nodes - NUM_INPUTS - genome.num_outputs


def _uniforms(key: jax.Array, *sizes: int) -> list[jax.Array]:
  """Independent uniforms in [0, 1), one flat block per requested size."""
  u = jax.random.uniform(key, (sum(sizes),))
  return jnp.split(u, np.cumsum(sizes)[:-1].tolist())


def _choose(u: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A uniformly random True index of ``mask`` (given uniforms ``u`` of its
  shape), and ``any(mask)``: the largest of iid uniforms is equally likely at
  every eligible position."""
  return jnp.argmax(jnp.where(mask, u, -1.0)).astype(jnp.int32), jnp.any(mask)


def _random_activation(u: jax.Array) -> jax.Array:
  return jnp.minimum(u * len(ACTIVATIONS), len(ACTIVATIONS) - 1).astype(jnp.int32)


def _set(array: jax.Array, index: jax.Array, value) -> jax.Array:
  """``array.at[index].set(value)`` for a 1-D array, written as a select.

  Under vmap a select stays elementwise, where a scatter with batched indices
  becomes a batched scatter, slower to compile and to run on CPU.
  """
  return jnp.where(jnp.arange(array.shape[0]) == index, value, array)


def _select(pred: jax.Array, on_true: CPPNGenome, on_false: CPPNGenome) -> CPPNGenome:
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _adjacency(genome: CPPNGenome) -> jax.Array:
  """bool ``[N, N]``: ``A[i, j]`` iff an active connection i -> j exists."""
  slots = jnp.arange(genome.max_nodes)
  # One-hot [C, N] factors and a matmul: a batched scatter under vmap compiles
  # slowly, and a [C, N, N] elementwise product costs C N^2 memory traffic.
  from_i = (genome.conn_mask[:, None]
            & (genome.conn_src[:, None] == slots[None, :])).astype(jnp.float32)
  to_j = (genome.conn_dst[:, None] == slots[None, :]).astype(jnp.float32)
  return jnp.dot(from_i.T, to_j, precision=jax.lax.Precision.HIGHEST) > 0.5


def _roles(genome: CPPNGenome) -> tuple[jax.Array, jax.Array]:
  """Which slots may be a connection's source, and which its target."""
  slots = jnp.arange(genome.max_nodes)
  first_out = genome.max_nodes - genome.num_outputs
  is_source = genome.node_mask & (slots < first_out)
  return is_source, genome.node_mask & (slots >= NUM_INPUTS)


def polynomial_delta(u: jax.Array, *, eta: float) -> jax.Array:
  """Deb's polynomial mutation step in [-1, 1] from uniforms ``u``.

  The form of sferes2's ``evo_float`` (the range-unaware variant): small
  steps are likely, large ones rare, more so as ``eta`` grows.
  """
  power = 1.0 / (eta + 1.0)
  return jnp.where(u < 0.5, (2.0 * u) ** power - 1.0, 1.0 - (2.0 * (1.0 - u)) ** power)


def mutate_weights(key: jax.Array, genome: CPPNGenome, *, rate: float = 0.1,
                   eta: float = 15.0, weight_limit: float = 10.0) -> CPPNGenome:
  """Polynomial mutation of each weight with probability ``rate``.

  The step is taken on the weight range normalised to [0, 1] (sferes2 stores
  each weight as a gene in [0, 1]), then clipped to [-limit, limit].
  """
  c = genome.max_conns
  u_flip, u_step = _uniforms(key, c, c)
  flip = genome.conn_mask & (u_flip < rate)
  step = polynomial_delta(u_step, eta=eta) * 2.0 * weight_limit
  new = jnp.clip(genome.conn_weight + step, -weight_limit, weight_limit)
  return genome.replace(conn_weight=jnp.where(flip, new, genome.conn_weight))


def mutate_activations(key: jax.Array, genome: CPPNGenome, *, rate: float = 0.1
                       ) -> CPPNGenome:
  """Redraws each hidden/output activation uniformly with probability ``rate``."""
  n = genome.max_nodes
  u_flip, u_new = _uniforms(key, n, n)
  flip = genome.node_mask & (jnp.arange(n) >= NUM_INPUTS) & (u_flip < rate)
  return genome.replace(
      activation=jnp.where(flip, _random_activation(u_new), genome.activation))


def rewire_connection(key: jax.Array, genome: CPPNGenome) -> CPPNGenome:
  """Moves one random connection's source or target (a coin flip) elsewhere.

  The new endpoint is uniform among nodes that keep the graph acyclic and
  create no duplicate; the weight is kept. No change if there is none.
  """
  n, c = genome.max_nodes, genome.max_conns
  u_conn, u_coin, u_node = _uniforms(key, c, 1, n)
  k, any_conn = _choose(u_conn, genome.conn_mask)
  s, d = genome.conn_src[k], genome.conn_dst[k]
  adj = _adjacency(genome)
  can_src, can_dst = _roles(genome)
  slots = jnp.arange(n)
  move_src = u_coin[0] < 0.5
  cand = jnp.where(move_src, can_src & (slots < d) & ~adj[:, d],
                   can_dst & (slots > s) & ~adj[s, :])
  v, any_cand = _choose(u_node, cand)
  ok = any_conn & any_cand
  return genome.replace(
      conn_src=_set(genome.conn_src, k, jnp.where(ok & move_src, v, s)),
      conn_dst=_set(genome.conn_dst, k, jnp.where(ok & ~move_src, v, d)))


def add_connection(key: jax.Array, genome: CPPNGenome, *, weight_limit: float = 10.0
                   ) -> CPPNGenome:
  """Adds one new connection (uniform over valid pairs, weight uniform).

  Valid pairs run forward in slot order and do not exist yet; the first free
  slot takes it. No change if the connection slots are full or no pair is
  left.
  """
  n = genome.max_nodes
  u_pair, u_w = _uniforms(key, n * n, 1)
  can_src, can_dst = _roles(genome)
  slots = jnp.arange(n)
  valid = (can_src[:, None] & can_dst[None, :] & (slots[:, None] < slots[None, :])
           & ~_adjacency(genome))
  pair, any_pair = _choose(u_pair, valid.reshape(-1))
  free = jnp.argmin(genome.conn_mask).astype(jnp.int32)
  w = (2.0 * u_w[0] - 1.0) * weight_limit
  added = genome.replace(
      conn_mask=_set(genome.conn_mask, free, True),
      conn_src=_set(genome.conn_src, free, pair // n),
      conn_dst=_set(genome.conn_dst, free, pair % n),
      conn_weight=_set(genome.conn_weight, free, w))
  return _select(any_pair & ~jnp.all(genome.conn_mask), added, genome)


def delete_connection(key: jax.Array, genome: CPPNGenome) -> CPPNGenome:
  """Removes one random connection (its slot is zeroed). No change if none."""
  (u,) = _uniforms(key, genome.max_conns)
  k, _ = _choose(u, genome.conn_mask)
  return genome.replace(conn_mask=_set(genome.conn_mask, k, False),
                        conn_src=_set(genome.conn_src, k, 0),
                        conn_dst=_set(genome.conn_dst, k, 0),
                        conn_weight=_set(genome.conn_weight, k, 0.0))


def add_node(key: jax.Array, genome: CPPNGenome) -> CPPNGenome:
  """Splits a random connection ``a -> b`` into ``a -> new -> b``.

  Both halves keep the old weight and the new node's activation is uniform
  (sferes2's ``_add_neuron_on_conn``). The new node takes the slot just before
  ``b`` (or the first free hidden slot if ``b`` is an output); later hidden
  nodes shift up one slot, so slot order stays topological. No change if
  there is no connection, no free hidden slot or no free connection slot.
  """
  u_conn, u_act = _uniforms(key, genome.max_conns, 1)
  k, any_conn = _choose(u_conn, genome.conn_mask)
  h = count_hidden(genome)
  end = NUM_INPUTS + h  # first free hidden slot; it becomes used
  a, b, w = genome.conn_src[k], genome.conn_dst[k], genome.conn_weight[k]
  first_out = genome.max_nodes - genome.num_outputs
  q = jnp.where(b >= first_out, end, b)  # the new node's slot
  slots = jnp.arange(genome.max_nodes)
  shift = lambda i: i + ((i >= q) & (i < end)).astype(i.dtype)  # noqa: E731
  from_slot = jnp.where((slots > q) & (slots <= end), slots - 1, slots)
  activation = _set(genome.activation[from_slot], q, _random_activation(u_act[0]))
  src = jnp.where(genome.conn_mask, shift(genome.conn_src), 0)
  dst = jnp.where(genome.conn_mask, shift(genome.conn_dst), 0)
  free = jnp.argmin(genome.conn_mask).astype(jnp.int32)
  # The old slot k becomes a -> new, the free slot new -> b (b shifted).
  split = genome.replace(
      node_mask=_set(genome.node_mask, end, True),
      activation=activation,
      conn_mask=_set(genome.conn_mask, free, True),
      conn_src=_set(_set(src, k, a), free, q),
      conn_dst=_set(_set(dst, free, shift(b)), k, q),
      conn_weight=_set(genome.conn_weight, free, w))
  ok = any_conn & (h < _hidden_capacity(genome)) & ~jnp.all(genome.conn_mask)
  return _select(ok, split, genome)


def delete_node(key: jax.Array, genome: CPPNGenome) -> CPPNGenome:
  """Removes a random hidden node and its connections. No change if none.

  Later hidden nodes shift down one slot, keeping the hidden slots a prefix.
  """
  h = count_hidden(genome)
  end = NUM_INPUTS + h
  slots = jnp.arange(genome.max_nodes)
  (u,) = _uniforms(key, genome.max_nodes)
  p, any_hidden = _choose(u, (slots >= NUM_INPUTS) & (slots < end))
  keep = genome.conn_mask & (genome.conn_src != p) & (genome.conn_dst != p)
  shift = lambda i: i - ((i > p) & (i < end)).astype(i.dtype)  # noqa: E731
  from_slot = jnp.where((slots >= p) & (slots < end - 1), slots + 1, slots)
  last = end - 1
  pruned = genome.replace(
      node_mask=_set(genome.node_mask, last, False),
      activation=_set(genome.activation[from_slot], last, 0),
      conn_mask=keep,
      conn_src=jnp.where(keep, shift(genome.conn_src), 0),
      conn_dst=jnp.where(keep, shift(genome.conn_dst), 0),
      conn_weight=jnp.where(keep, genome.conn_weight, 0.0))
  return _select(any_hidden, pruned, genome)


def mutate(key: jax.Array, genome: CPPNGenome, *, weight_rate: float = 0.1,
           eta: float = 15.0, weight_limit: float = 10.0,
           change_conn_rate: float = 0.5, activation_rate: float = 0.1,
           add_conn_rate: float = 0.5, del_conn_rate: float = 0.3,
           add_node_rate: float = 0.5, del_node_rate: float = 0.2
           ) -> tuple[CPPNGenome, dict[str, jax.Array]]:
  """One application of the CPPN mutation operator (see module doc).

  The defaults are foolingjax's; ``change_conn_rate=0`` gives the original's
  ``DnnFF::mutate``.

  Args:
    key: PRNG key.
    genome: one genome (leaves ``[N]`` / ``[C]``).
    weight_rate: per-weight probability of polynomial mutation.
    eta: polynomial mutation's η_m.
    weight_limit: weights stay in [-limit, limit].
    change_conn_rate: per-connection probability of the rewiring loop
      (``Dnn::_change_conns``, which the original's ``DnnFF`` never runs):
      one connection's endpoint moves with probability
      ``1 - (1 - change_conn_rate) ** connections``. 0 never rewires (the
      original); the default 0.5 is foolingjax's.
    activation_rate: per-node probability of redrawing the activation.
    add_conn_rate: probability of adding a connection.
    del_conn_rate: probability of deleting a connection.
    add_node_rate: probability of splitting a connection with a new node.
    del_node_rate: probability of deleting a hidden node.

  Returns:
    ``(child, stats)``; stats are float32 scalars: ``cppn_hidden_nodes``,
    ``cppn_connections`` (after mutation), ``cppn_add_conn_full`` and
    ``cppn_add_node_full`` (1 when that add was drawn but skipped because the
    genome was full).
  """
  k_gates, k_w, k_rewire, k_act, k_add_c, k_del_c, k_add_n, k_del_n = (
      jax.random.split(key, 8))
  u_gates = jax.random.uniform(k_gates, (5,))
  gate = u_gates[1:] < jnp.array([add_conn_rate, del_conn_rate, add_node_rate,
                                  del_node_rate])
  do_add_conn, do_del_conn, do_add_node, do_del_node = gate
  g = mutate_weights(k_w, genome, rate=weight_rate, eta=eta, weight_limit=weight_limit)
  # gate[0] < 1 - (1 - p)^E, written as a comparison of logs: (1 - p)^E < 1 - u.
  keep_rate = jnp.maximum(1.0 - change_conn_rate, 1e-7)  # log(0) guard for rate 1
  do_rewire = count_connections(g) * jnp.log(keep_rate) < jnp.log1p(-u_gates[0])
  g = _select(do_rewire, rewire_connection(k_rewire, g), g)
  g = mutate_activations(k_act, g, rate=activation_rate)
  conns_full = jnp.all(g.conn_mask)
  g = _select(do_add_conn, add_connection(k_add_c, g, weight_limit=weight_limit), g)
  g = _select(do_del_conn, delete_connection(k_del_c, g), g)
  node_full = (count_hidden(g) >= _hidden_capacity(g)) | jnp.all(g.conn_mask)
  g = _select(do_add_node, add_node(k_add_n, g), g)
  g = _select(do_del_node, delete_node(k_del_n, g), g)
  stats = {
      "cppn_hidden_nodes": count_hidden(g).astype(jnp.float32),
      "cppn_connections": count_connections(g).astype(jnp.float32),
      "cppn_add_conn_full": (do_add_conn & conns_full).astype(jnp.float32),
      "cppn_add_node_full": (do_add_node & node_full).astype(jnp.float32),
  }
  return g, stats


# --------------------------------------------------------------------------
# Rendering


def _check_choice(switch: str, value, valid: Sequence) -> None:
  """Raises one ValueError naming the valid values if ``value`` is not one."""
  check_choice("CPPN", switch, value, valid)


def _check_render_switches(coordinates: str, output_map: str, colour: str,
                           quantize: bool) -> None:
  _check_choice("coordinates", coordinates, COORDINATES)
  _check_choice("output_map", output_map, OUTPUT_MAPS)
  _check_choice("colour", colour, COLOURS)
  _check_choice("quantize", quantize, (False, True))


def _input_grid(height: int, width: int, kind: str) -> np.ndarray:
  if kind == "centred":
    xs = (2.0 * np.arange(width) + 1.0) / width - 1.0
    ys = (2.0 * np.arange(height) + 1.0) / height - 1.0
    y, x = np.meshgrid(ys, xs, indexing="ij")
    d = np.sqrt(x * x + y * y) / math.sqrt(2.0)
    return np.stack([x, y, d, np.ones_like(x)]).reshape(4, -1).astype(np.float32)

  # The original's float arithmetic: normalize_map_xy_to_grid in double, stored
  # as float; the distance in double from those floats, stored as float.
  def grid(size):
    if size == 1:
      return np.zeros(1, np.float32)
    return (-1.0 + np.arange(size) * 2.0 / (size - 1)).astype(np.float32)

  yn, xn = np.meshgrid(grid(height).astype(np.float64), grid(width).astype(np.float64),
                       indexing="ij")
  d = np.sqrt(xn * xn + yn * yn).astype(np.float32)
  y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return np.stack([x.astype(np.float32), y.astype(np.float32), d,
                   np.ones_like(d)]).reshape(4, -1)


def coordinates(height: int, width: int, kind: str = "centred") -> np.ndarray:
  """float32 ``[4, H * W]``: the inputs x, y, d, bias at every pixel (row-major).

  Args:
    height: H.
    width: W.
    kind: ``"centred"`` (foolingjax): pixel centres ``x_j = (2j + 1) / W - 1``
      in [-1, 1], likewise y, and ``d = sqrt(x^2 + y^2) / sqrt(2)`` in
      [0, 1]. ``"pixel_index"`` (the original's ``cppn_value``): x is the
      column index j and y the row index i themselves, and ``d = sqrt(xn^2 +
      yn^2)`` in [0, sqrt 2] with ``xn = -1 + 2j / (W - 1)`` (0 if W == 1)
      and ``yn`` likewise, in the original's float arithmetic.

  Raises:
    ValueError: unknown ``kind``.
  """
  _check_choice("coordinates", kind, COORDINATES)
  return _input_grid(height, width, kind)


def activate(index: jax.Array, z: jax.Array) -> jax.Array:
  """The activation ``index`` (scalar int) of :data:`ACTIVATIONS` applied to ``z``.

  sine: sin(z); sigmoid rescaled to [-1, 1]: 2 / (1 + e^-z) - 1; Gaussian:
  exp(-z^2); linear: clip(z, -3, 3) / 3 (the formulas of nn2's ``AfCppn``).
  Sigmoid and Gaussian share one ``exp`` (of -z or of -z^2): under vmap every
  branch is computed for every genome, and two transcendentals per node
  instead of three render about 15 % faster.
  """
  e = jnp.exp(jnp.where(index == SIGMOID, -z, -z * z))
  return jnp.where(index == SINE, jnp.sin(z),
                   jnp.where(index == SIGMOID, 2.0 / (1.0 + e) - 1.0,
                             jnp.where(index == GAUSSIAN, e,
                                       jnp.clip(z, -3.0, 3.0) / 3.0)))


def _weights_in(genome: CPPNGenome) -> jax.Array:
  """float32 ``[N, N]``: ``w_in[j, i]`` is the weight of ``i -> j`` (0 if none)."""
  slots = jnp.arange(genome.max_nodes)
  weights = jnp.where(genome.conn_mask, genome.conn_weight, 0.0)
  # Built with one-hot products rather than a scatter (which vmap turns into a
  # slow batched scatter); free slots add 0.
  into = (genome.conn_dst[:, None] == slots[None, :]).astype(jnp.float32)  # [C, N]
  out_of = (genome.conn_src[:, None] == slots[None, :]).astype(jnp.float32)
  return jnp.dot(into.T, weights[:, None] * out_of, precision=jax.lax.Precision.HIGHEST)


def _tiled(evaluate, coords: np.ndarray, pixels_per_tile: int | None) -> jax.Array:
  """``evaluate`` (inputs ``[4, T]`` -> ``[..., T]``) over the pixels of
  ``coords`` ``[4, P]``, in tiles of at most ``pixels_per_tile`` pixels."""
  num_pixels = coords.shape[1]
  if pixels_per_tile is None or pixels_per_tile >= num_pixels:
    return evaluate(jnp.asarray(coords))
  # Equal tiles with the least padding: ceil(P / T) tiles of ceil(P / tiles).
  num_tiles = -(-num_pixels // max(1, pixels_per_tile))
  tile = -(-num_pixels // num_tiles)
  padded = np.pad(coords, ((0, 0), (0, num_tiles * tile - num_pixels)))
  tiles = padded.reshape(NUM_INPUTS, num_tiles, tile).transpose(1, 0, 2)
  out = jnp.moveaxis(jax.lax.map(evaluate, jnp.asarray(tiles)), 0, -2)
  return out.reshape(*out.shape[:-2], -1)[..., :num_pixels]  # [..., P]


def _evaluate_slots(w_in: jax.Array, activation: jax.Array, num_outputs: int,
                    inputs: jax.Array) -> jax.Array:
  """One genome, every slot (``render(method="slots")``): ``[O, T]``."""
  n = activation.shape[0]
  values = jnp.zeros((n, inputs.shape[1]), jnp.float32).at[:NUM_INPUTS].set(inputs)

  def evaluate_node(j, values):
    z = jnp.dot(w_in[j], values, precision=jax.lax.Precision.HIGHEST)
    return values.at[j].set(activate(activation[j], z))

  return jax.lax.fori_loop(NUM_INPUTS, n, evaluate_node, values)[n - num_outputs:]


# Hidden slots are evaluated in blocks of this many; a block's nodes sum over a
# static prefix of slots (up to the block's end). Smaller blocks do less work
# per node and compile one more loop and output branch each.
_BLOCK = 4


def _evaluate_active(w_in: jax.Array, activation: jax.Array, end: jax.Array,
                     num_outputs: int, inputs: jax.Array) -> jax.Array:
  """A population, the nodes in use (``render(method="active")``).

  Args:
    w_in: float32 ``[B, N, N]`` (:func:`_weights_in` of each genome).
    activation: int32 ``[B, N]``.
    end: int32 scalar; ``4 + max(hidden nodes)``: slots ``>= end`` below the
      outputs are free in every genome, so nothing reads them.
    num_outputs: O.
    inputs: float32 ``[4, T]``.

  Returns:
    float32 ``[B, O, T]``, the output nodes' values.
  """
  b, n = activation.shape
  first_out = n - num_outputs
  bounds = sorted({*range(NUM_INPUTS, first_out, _BLOCK), first_out})
  dot = functools.partial(jnp.einsum, "bi,bit->bt",
                          precision=jax.lax.Precision.HIGHEST)
  act = jax.vmap(activate)

  def evaluate_node(size, j, values):  # values [B, first_out, T]
    # The slots a node in this block can read: a static prefix of ``size``.
    w_j = jax.lax.dynamic_index_in_dim(w_in, j, axis=1, keepdims=False)[:, :size]
    a_j = jax.lax.dynamic_index_in_dim(activation, j, axis=1, keepdims=False)
    return jax.lax.dynamic_update_index_in_dim(
        values, act(a_j, dot(w_j, values[:, :size])), j, axis=1)

  def outputs(size, values):
    # One matrix-vector product per output, the same dot as every node's.
    return jnp.stack([act(activation[:, first_out + k],
                          dot(w_in[:, first_out + k, :size], values[:, :size]))
                      for k in range(num_outputs)], axis=1)

  values = jnp.zeros((b, first_out, inputs.shape[1]), jnp.float32)
  values = values.at[:, :NUM_INPUTS].set(inputs)
  # One loop per block of slots (a handful, static); a block past ``end``
  # runs no step.
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    values = jax.lax.fori_loop(lo, jnp.clip(end, lo, hi),
                               functools.partial(evaluate_node, hi), values)
  # ``end`` is one scalar for the population, so this is a real branch.
  smallest = jnp.searchsorted(jnp.asarray(bounds), end)
  return jax.lax.switch(smallest, [functools.partial(outputs, size) for size in bounds],
                        values)


def _active_population_fn(coords: np.ndarray, pixels_per_tile: int | None):
  """``population(genomes) -> [B, O, P]`` output values of a population.

  ``render(method="active")`` calls it on a population of one; under
  ``jax.vmap`` its batching rule renders the batch as one population, so the
  loop bound (the most hidden nodes in use) is one scalar, not a per-genome
  bound that vmap would turn into a loop over every genome's maximum with a
  select of every value at every step. Nested vmaps (e.g. over independent
  runs) flatten into one population.
  """

  @jax.custom_batching.custom_vmap
  def population(genomes):
    w_in = jax.vmap(_weights_in)(genomes)
    end = NUM_INPUTS + jnp.max(jax.vmap(count_hidden)(genomes), initial=0)
    evaluate = functools.partial(_evaluate_active, w_in, genomes.activation, end,
                                 genomes.num_outputs)
    return _tiled(evaluate, coords, pixels_per_tile)

  @population.def_vmap
  def population_rule(axis_size, in_batched, genomes):
    genomes = jax.tree.map(
        lambda a, batched: a if batched else jnp.broadcast_to(a, (axis_size, *a.shape)),
        genomes, in_batched[0])
    flat = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), genomes)
    out = population(flat)
    return out.reshape(axis_size, -1, *out.shape[1:]), True

  return population


def render(genome: CPPNGenome, *, height: int, width: int, channels: int,
           pixels_per_tile: int | None = None, coordinates: str = "centred",
           output_map: str = "affine", colour: str = "hls",
           quantize: bool = False, method: str = "slots") -> jax.Array:
  """Evaluates the CPPN at every pixel of a ``height x width`` image.

  The keyword defaults are foolingjax's; ``coordinates="pixel_index",
  output_map="abs", colour="hls_opencv", quantize=True`` draw as the original
  (:data:`VARIANT_SWITCHES`, module docstring).

  Coordinates (``"centred"``): ``x`` and ``y`` run over pixel centres in
  [-1, 1] (``x_j = (2j + 1) / W - 1``), ``d = sqrt(x^2 + y^2) / sqrt(2)`` in
  [0, 1] and ``bias = 1``. Why not the original's raw pixel indices
  (``"pixel_index"``, see :func:`coordinates`): with weights up
  to 10, ``sin(10 * j)`` changes faster than once per pixel, so a first
  mutation already gives aliased noise rather than stripes, and the same
  genome draws a different picture at 28 and at 224 pixels. On [-1, 1] the
  steepest single input weight gives about 3 periods across the image, far
  below the 14-period Nyquist limit at 28 pixels, so regularity has to be
  built by composition, as in Picbreeder; the pattern is independent of the
  resolution; and pixel centres make the coordinates exactly mirror-symmetric
  (``x_j = -x_{W-1-j}``), so a Gaussian of x draws an exactly symmetric image.

  Nodes are evaluated in slot order (a topological order): ``v_j =
  act_j(sum_i w_ij v_i)`` for many pixels at once, with one dense ``[N, N]``
  weight matrix per genome. ``method`` picks which slots are evaluated:

  * ``"active"``: only the hidden nodes in use, each summing over the
    slots that can feed it, so the cost follows the nodes in use rather than
    ``max_nodes``. Under ``jax.vmap`` (a custom batching rule, see
    :func:`_active_population_fn`) the population shares one loop over
    ``max(hidden nodes)`` node steps; node ``j`` sums over the first
    ``4 * (j // 4 + 1)`` slots (a static size per block of 4 slots, so the
    work per step also grows with the nodes in use) and the outputs over the
    smallest such prefix that holds every hidden node in use.
  * ``"slots"`` (default): every one of the ``N - 4`` non-input slots, each
    summing over all ``N`` slots (this module's first renderer; its cost grows
    about with ``N ** 2`` whatever the graph). It stays the default because
    ``"active"`` is not faster everywhere: ``python -m benchmarks.bench_cppn
    --methods`` measured ``"active"`` 2.2x faster at ``max_nodes=32`` with at
    most 9 hidden nodes in use, but 0.64x (N=32) and 0.73x (N=16) on genomes
    grown to capacity, and 0.85x at N=16 with up to 9 of 11 hidden slots used
    (README, CPPN encoding).

  Both give the same floats on the CPU (tests/test_cppn_render.py checks
  bit-equality): the terms they skip are products with a zero weight, and
  XLA's CPU dot accumulates its terms in slot order, so adding ``0 * v`` with
  ``v`` finite changes nothing. Other backends may order a dot's sum
  differently; there the two agree to float32 rounding.

  Every node step reads the node values of every pixel in flight, so
  speed on a CPU depends on those values staying in cache: under
  ``jax.vmap`` over ``B`` genomes that is up to ``B * N * pixels * 4`` bytes.
  ``pixels_per_tile`` evaluates the image in tiles of about that many pixels,
  one after another (``lax.map``). On a busy 2-core CPU, 200 vmapped genomes
  at 28 x 28 rendered 1.8x faster in two tiles of 392 pixels than in one of
  784 (``benchmarks/bench_cppn.py`` measures it). Accelerators prefer one tile
  (None).

  Args:
    genome: one genome (leaves ``[N]`` / ``[C]``); vmap over a population.
    height: H.
    width: W.
    channels: 1 (grey) or 3 (the three outputs read as hue, lightness,
      saturation, converted to RGB); must equal ``genome.num_outputs``.
    pixels_per_tile: at most this many pixels per tile; None for one tile.
    coordinates: the inputs, ``"centred"`` or ``"pixel_index"`` (see
      :func:`coordinates`).
    output_map: how an output ``v`` in [-1, 1] becomes a value in [0, 1]:
      ``"affine"``, ``(v + 1) / 2``, or ``"abs"``, ``|v|`` (the original).
    colour: for ``channels == 3``, the HLS to RGB conversion:
      ``"hls"`` (:func:`foolingjax.images.hls_to_rgb`, hue 1.0 = one turn) or
      ``"hls_opencv"`` (:func:`foolingjax.images.hls_opencv_to_rgb`, the
      original's 8-bit OpenCV conversion with its 0-180 hue byte; it truncates
      to bytes and rounds the RGB to bytes itself, whatever ``quantize``).
      Grey images ignore it.
    quantize: truncate the mapped outputs to bytes, ``floor(v * 255) / 255``
      (:func:`foolingjax.images.quantize_uint8`), before any colour
      conversion, as the original writes them into an 8-bit ``cv::Mat``.
    method: ``"active"`` (the nodes in use) or ``"slots"`` (every slot); the
      same image either way (see above).

  Returns:
    float32 ``[H, W, channels]`` in [0, 1].

  Raises:
    ValueError: ``channels`` is not the genome's output count, ``genome`` is a
      population, or a switch has an unknown value.
  """
  _check_render_switches(coordinates, output_map, colour, quantize)
  if channels != genome.num_outputs:
    raise ValueError(f"render(channels={channels}) needs a genome with {channels} "
                     f"outputs; this one has {genome.num_outputs}.")
  if genome.node_mask.ndim != 1:
    raise ValueError(f"render takes one genome (node_mask [N]); got leaves of shape "
                     f"{genome.node_mask.shape}. Fix: jax.vmap(render) over the "
                     "population.")
  _check_choice("method", method, RENDER_METHODS)
  coords = _input_grid(height, width, coordinates)
  if method == "slots":
    evaluate = functools.partial(_evaluate_slots, _weights_in(genome),
                                 genome.activation, channels)
    out = _tiled(evaluate, coords, pixels_per_tile)
  else:
    population = _active_population_fn(coords, pixels_per_tile)
    out = population(jax.tree.map(lambda a: a[None], genome))[0]
  mapped = (out + 1.0) * 0.5 if output_map == "affine" else jnp.abs(out)
  image = mapped.reshape(channels, height, width).transpose(1, 2, 0)
  if quantize:
    image = images.quantize_uint8(image)
  if channels == 3:
    to_rgb = images.hls_to_rgb if colour == "hls" else images.hls_opencv_to_rgb
    image = to_rgb(image)
  return jnp.clip(image, 0.0, 1.0)


def render_population(genomes: CPPNGenome, *, height: int, width: int, channels: int,
                      chunk_size: int | None = None,
                      pixels_per_tile: int | None = None,
                      coordinates: str = "centred", output_map: str = "affine",
                      colour: str = "hls", quantize: bool = False,
                      method: str = "slots") -> jax.Array:
  """:func:`render` over a population, optionally a chunk of genomes at a time.

  ``jax.vmap(render)`` holds every node's value at every pixel in flight of
  every genome at once: ``B * N * H * W * 4`` bytes untiled, 2.6 GB for 400
  genomes of 32 nodes at 224 x 224. ``chunk_size`` bounds the genomes in
  flight (``jax.lax.map``; ``chunk_size=1`` renders one genome after another),
  ``pixels_per_tile`` the pixels (see :func:`render`). Results are the same.

  Args:
    genomes: a population, leaves ``[B, N]`` / ``[B, C]``.
    height, width, channels, pixels_per_tile, coordinates, output_map, colour,
      quantize, method: as :func:`render`.
    chunk_size: genomes rendered together; None renders all at once.

  Returns:
    float32 ``[B, H, W, channels]`` in [0, 1].
  """
  draw = functools.partial(render, height=height, width=width, channels=channels,
                           pixels_per_tile=pixels_per_tile, coordinates=coordinates,
                           output_map=output_map, colour=colour, quantize=quantize,
                           method=method)
  if chunk_size is None:
    return jax.vmap(draw)(genomes)
  return jax.lax.map(draw, genomes, batch_size=chunk_size)


# --------------------------------------------------------------------------
# Variants and the Encoding used by MAP-Elites


def variant_switches(variant: str = "foolingjax", **overrides) -> dict:
  """The switches of ``variant`` (:data:`VARIANT_SWITCHES`), overridden.

  Args:
    variant: one of :data:`VARIANTS`.
    **overrides: switches (``coordinates``, ``output_map``, ``colour``,
      ``quantize``, ``change_conn_rate``) that replace the variant's; None
      keeps the variant's value.

  Returns:
    A new dict with every switch, e.g. to print the settings of a run.

  Raises:
    ValueError: an unknown variant, switch name or switch value.
  """
  return resolve_variant("CPPN", variant, VARIANT_SWITCHES,
                         {"coordinates": COORDINATES, "output_map": OUTPUT_MAPS,
                          "colour": COLOURS, "quantize": (False, True),
                          "change_conn_rate": None}, **overrides)


def make_encoding(*, height: int, width: int, channels: int, max_nodes: int = 32,
                  max_conns: int = 128, weight_limit: float = 10.0,
                  weight_rate: float = 0.1, eta: float = 15.0,
                  variant: str = "foolingjax", coordinates: str | None = None,
                  output_map: str | None = None, colour: str | None = None,
                  quantize: bool | None = None,
                  change_conn_rate: float | None = None, activation_rate: float = 0.1,
                  add_conn_rate: float = 0.5, del_conn_rate: float = 0.3,
                  add_node_rate: float = 0.5, del_node_rate: float = 0.2,
                  pixels_per_tile: int | None | str = "auto",
                  render_method: str = "slots",
                  population_render: str = "vmap") -> Encoding:
  """The CPPN encoding for :mod:`foolingjax.evolution`.

  The mutation rates other than ``change_conn_rate`` default to the
  original's. ``variant`` picks the defaults of the switches where foolingjax
  and the original code differ (module docstring, :data:`VARIANT_SWITCHES`);
  a switch given explicitly overrides the variant's.

  Args:
    height, width, channels: the image shape; channels 1 (grey) or 3 (colour).
    max_nodes: node slots per genome, 4 inputs and the outputs included.
    max_conns: connection slots per genome.
    weight_limit, weight_rate, eta, activation_rate, add_conn_rate,
      del_conn_rate, add_node_rate, del_node_rate: see :func:`mutate`.
    variant: ``"foolingjax"`` (centred coordinates, ``(v + 1) / 2``,
      colorsys HLS, floats, rewiring 0.5) or ``"original"`` (raw pixel
      indices, ``|v|``, OpenCV's 8-bit HLS, bytes, no rewiring).
    coordinates, output_map, colour, quantize: see :func:`render`; None takes
      the variant's.
    change_conn_rate: see :func:`mutate`; None takes the variant's.
    pixels_per_tile: see :func:`render`; ``"auto"`` picks 512 when the default
      backend is the CPU (cache-sized tiles under the population vmap) and
      one tile otherwise.
    render_method: see :func:`render`'s ``method``; both draw the same image.
    population_render: how the evolution renders a population
      (:attr:`Encoding.population_render`): ``"vmap"`` (the default: every
      measured result in the README used it), ``"map"`` (one genome after
      another inside the jit: faster on XLA:CPU (README, CPPN section); the same
      grey images bit for bit in the tests, colour images within a few ulps,
      which a long evolution can amplify) or ``"auto"`` (``"map"`` when the
      default backend is the CPU, ``"vmap"`` otherwise).

  Returns:
    An :class:`~foolingjax.evolution.encoding.Encoding` whose genomes are
    :class:`CPPNGenome` and whose ``vary`` ignores the mate (the original has
    no CPPN crossover).

  Raises:
    ValueError: an unknown variant or switch value, a rate outside [0, 1],
      a bad image size or capacities.
  """
  switches = variant_switches(variant, coordinates=coordinates, output_map=output_map,
                              colour=colour, quantize=quantize,
                              change_conn_rate=change_conn_rate)
  change_conn_rate = switches.pop("change_conn_rate")
  _check_capacity(channels, max_nodes, max_conns)
  _check_choice("method", render_method, RENDER_METHODS)
  _check_choice("population_render", population_render, POPULATION_RENDERS)
  if height < 1 or width < 1:
    raise ValueError(f"Image size must be positive; got {height}x{width}.")
  rates = dict(weight_rate=weight_rate, change_conn_rate=change_conn_rate,
               activation_rate=activation_rate, add_conn_rate=add_conn_rate,
               del_conn_rate=del_conn_rate, add_node_rate=add_node_rate,
               del_node_rate=del_node_rate)
  for name, p in rates.items():
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"{name} must be a probability in [0, 1]; got {p}.")
  init = functools.partial(init_genome, num_outputs=channels, max_nodes=max_nodes,
                           max_conns=max_conns, weight_limit=weight_limit)
  mutate_fn = functools.partial(
      mutate, weight_rate=weight_rate, eta=eta, weight_limit=weight_limit,
      change_conn_rate=change_conn_rate, activation_rate=activation_rate,
      add_conn_rate=add_conn_rate, del_conn_rate=del_conn_rate,
      add_node_rate=add_node_rate, del_node_rate=del_node_rate)

  def vary(key, parent, mate, generation):
    del mate, generation  # no crossover, no schedule in the original
    return mutate_fn(key, parent)

  if pixels_per_tile == "auto":
    pixels_per_tile = 512 if jax.default_backend() == "cpu" else None
  render_fn = functools.partial(render, height=height, width=width, channels=channels,
                                pixels_per_tile=pixels_per_tile, method=render_method,
                                **switches)
  if population_render == "auto":
    population_render = "map" if jax.default_backend() == "cpu" else "vmap"
  return Encoding(init=init, vary=vary, render=render_fn,
                  image_shape=(height, width, channels), name="cppn",
                  validate=validate_genome,
                  population_render=map_render if population_render == "map" else vmap_render)
