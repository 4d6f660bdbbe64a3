"""The CPPN variants: foolingjax's default and the fooling paper's original code."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax import images
from foolingjax.evolution import cppn

MAX_NODES, MAX_CONNS = 10, 16
POP = 32
ORIGINAL = {"coordinates": "pixel_index", "output_map": "abs",
            "colour": "hls_opencv", "quantize": True}
ZERO_STRUCTURE = {"add_conn_rate": 0.0, "del_conn_rate": 0.0, "add_node_rate": 0.0,
                  "del_node_rate": 0.0}


def _centred(size):
  """The old formula of the default coordinates: pixel centres in [-1, 1]."""
  return ((2.0 * np.arange(size) + 1.0) / size - 1.0).astype(np.float32)


@functools.partial(jax.jit, static_argnames="num_outputs")
def _init(key, *, num_outputs):
  init = functools.partial(cppn.init_genome, num_outputs=num_outputs,
                           max_nodes=MAX_NODES, max_conns=MAX_CONNS)
  return jax.vmap(init)(jax.random.split(key, POP))


@functools.partial(jax.jit, static_argnames="steps")
def _mutate_steps(key, pop, rates, *, steps):
  """``steps`` mutations of every genome with ``rates`` (traced); the history."""
  mutate = jax.vmap(functools.partial(cppn.mutate, **rates))

  def step(pop, key):
    child = mutate(jax.random.split(key, POP), pop)[0]
    return child, child

  return jax.lax.scan(step, pop, jax.random.split(key, steps))[1]


def _rates(change_conn_rate, add_conn_rate, del_conn_rate, add_node_rate,
           del_node_rate):
  """The rates as traced float32 scalars: one compilation of _mutate_steps."""
  return {k: jnp.float32(v) for k, v in locals().items()}


@pytest.fixture(scope="module")
def grown():
  """POP grey genomes after 12 mutations with high add rates (hidden nodes)."""
  history = _mutate_steps(jax.random.key(3), _init(jax.random.key(4), num_outputs=1),
                          _rates(0.5, 0.9, 0.3, 0.9, 0.2), steps=12)
  return jax.device_get(jax.tree.map(lambda a: a[-1], history))


def _assert_bytes(image):
  """Every value is a byte / 255 (up to float32 rounding of the division)."""
  np.testing.assert_allclose(image * 255.0, np.round(image * 255.0), atol=1e-4, rtol=0)


def _edges(pop):
  return (np.asarray(pop.conn_mask),
          np.where(pop.conn_mask, pop.conn_src, -1),
          np.where(pop.conn_mask, pop.conn_dst, -1))


# --------------------------------------------------------------------------
# The table and its errors


def test_variant_table_and_overrides():
  assert cppn.VARIANTS == ("foolingjax", "original")
  assert cppn.VARIANT_SWITCHES == {
      "foolingjax": {"coordinates": "centred", "output_map": "affine",
                     "colour": "hls", "quantize": False, "change_conn_rate": 0.5},
      "original": {"coordinates": "pixel_index", "output_map": "abs",
                   "colour": "hls_opencv", "quantize": True, "change_conn_rate": 0.0},
  }
  assert cppn.variant_switches() == cppn.VARIANT_SWITCHES["foolingjax"]
  got = cppn.variant_switches("original", colour="hls", change_conn_rate=0.3,
                              quantize=None)
  assert got == {**cppn.VARIANT_SWITCHES["original"], "colour": "hls",
                 "change_conn_rate": 0.3}
  got["coordinates"] = "centred"  # a copy: the table is untouched
  assert cppn.VARIANT_SWITCHES["original"]["coordinates"] == "pixel_index"
  # An explicit switch overrides the variant in the encoding too.
  g = cppn.genome_from_graph([("bias", "out0", -1.7)], outputs=("linear",),
                             max_nodes=MAX_NODES, max_conns=MAX_CONNS)
  enc = cppn.make_encoding(height=3, width=3, channels=1, max_nodes=MAX_NODES,
                           max_conns=MAX_CONNS, variant="original", quantize=False,
                           pixels_per_tile=None)
  np.testing.assert_array_equal(
      enc.render(g), cppn.render(g, height=3, width=3, channels=1,
                                 **{**ORIGINAL, "quantize": False}))


@pytest.mark.parametrize("call, message", [
    (lambda: cppn.make_encoding(height=4, width=4, channels=1, variant="orignal"),
     "Unknown CPPN variant 'orignal'. Fix: use one of 'foolingjax', 'original'."),
    (lambda: cppn.make_encoding(height=4, width=4, channels=1, coordinates="pixels"),
     "Unknown CPPN coordinates 'pixels'. Fix: use one of 'centred', 'pixel_index'."),
    (lambda: cppn.make_encoding(height=4, width=4, channels=1, output_map="relu"),
     "Unknown CPPN output_map 'relu'. Fix: use one of 'affine', 'abs'."),
    (lambda: cppn.make_encoding(height=4, width=4, channels=3, variant="original",
                                colour="hsv"),
     "Unknown CPPN colour 'hsv'. Fix: use one of 'hls', 'hls_opencv'."),
    (lambda: cppn.make_encoding(height=4, width=4, channels=1, quantize="yes"),
     "CPPN quantize must be True or False; got 'yes'."),
    (lambda: cppn.variant_switches("original", colours="hls"),
     ("Unknown CPPN switch 'colours'. Fix: use one of 'coordinates', 'output_map', "
      "'colour', 'quantize', 'change_conn_rate'.")),
    (lambda: cppn.coordinates(4, 4, kind="centered"),
     "Unknown CPPN coordinates 'centered'. Fix: use one of 'centred', 'pixel_index'."),
    (lambda: cppn.render(cppn.genome_from_graph([("x", "out0", 1.0)]), height=4,
                         width=4, channels=1, output_map="Abs"),
     "Unknown CPPN output_map 'Abs'. Fix: use one of 'affine', 'abs'."),
])
def test_unknown_variant_or_switch_names_the_valid_values(call, message):
  with pytest.raises(ValueError) as info:
    call()
  assert str(info.value).startswith(message)


# --------------------------------------------------------------------------
# Rendering


def test_original_coordinates_are_raw_indices_and_unscaled_distance():
  c = cppn.coordinates(28, 28, kind="pixel_index")
  assert c.shape == (4, 28 * 28) and c.dtype == np.float32

  def at(row, col):
    return c[:, row * 28 + col]

  assert at(3, 27)[0] == 27.0 and at(3, 27)[1] == 3.0
  assert at(27, 0)[0] == 0.0 and at(27, 0)[1] == 27.0
  for corner in ((0, 0), (0, 27), (27, 0), (27, 27)):
    assert at(*corner)[2] == np.float32(math.sqrt(2.0))
  xn, yn = -1.0 + 2.0 * 10 / 27, -1.0 + 2.0 * 3 / 27
  np.testing.assert_allclose(at(3, 10)[2], math.hypot(xn, yn), rtol=1e-6)
  assert (c[3] == 1.0).all()
  c5 = cppn.coordinates(5, 5, kind="pixel_index")
  assert c5[2, 2 * 5 + 2] == 0.0 and c5[2, 2 * 5 + 1] == 0.5  # centre; xn = -0.5
  # A single column or row sits at normalised 0 (the original's W == 1 case).
  c1 = cppn.coordinates(3, 1, kind="pixel_index")
  np.testing.assert_array_equal(c1[:3], [[0, 0, 0], [0, 1, 2], [1, 0, 1]])


def test_default_coordinates_and_rendering_are_unchanged():
  c = cppn.coordinates(6, 4)
  y, x = np.meshgrid(_centred(6), _centred(4), indexing="ij")
  np.testing.assert_allclose(c[0], x.ravel(), atol=1e-7)
  np.testing.assert_allclose(c[1], y.ravel(), atol=1e-7)
  np.testing.assert_allclose(c[2], np.hypot(x, y).ravel() / math.sqrt(2.0), atol=1e-7)
  np.testing.assert_array_equal(c, cppn.coordinates(6, 4, kind="centred"))
  # (v + 1) / 2 of a Gaussian of d: never below 0.5, whatever d.
  g = cppn.genome_from_graph([("d", "out0", 1.5)], outputs=("gaussian",))
  img = np.asarray(cppn.render(g, height=6, width=4, channels=1))
  expected = (np.exp(-(1.5 * np.hypot(x, y) / math.sqrt(2.0)) ** 2) + 1.0) / 2.0
  np.testing.assert_allclose(img[..., 0], expected, atol=2e-6, rtol=0)
  assert img.min() >= 0.5
  enc = cppn.make_encoding(height=6, width=4, channels=1, pixels_per_tile=None)
  np.testing.assert_array_equal(enc.render(g), img)
  enc = cppn.make_encoding(height=6, width=4, channels=1, variant="foolingjax",
                           pixels_per_tile=None)
  np.testing.assert_array_equal(enc.render(g), img)


def test_abs_output_map_truncates_to_bytes_like_the_original():
  w = 1.7
  g = cppn.genome_from_graph([("bias", "out0", -w)], outputs=("linear",))
  out = np.float32(-w) / np.float32(3.0)  # linear: clip(z, -3, 3) / 3
  v = np.abs(out)
  plain = np.asarray(cppn.render(g, height=5, width=5, channels=1, output_map="abs"))
  np.testing.assert_allclose(plain, np.full((5, 5, 1), v), atol=1e-6, rtol=0)
  img = np.asarray(cppn.render(g, height=5, width=5, channels=1, **ORIGINAL))
  byte = np.floor(v * np.float32(255.0))
  assert byte == 144.0  # int(0.5667 * 255), not rounded to 145
  _assert_bytes(img)
  np.testing.assert_array_equal(np.round(img * 255.0), np.full((5, 5, 1), byte))
  # Raw column index into a sine: |sin(0.5 x)| truncated, one row like the next.
  g = cppn.genome_from_graph([("x", "out0", 0.5)], outputs=("sine",))
  img = np.asarray(cppn.render(g, height=3, width=28, channels=1, **ORIGINAL))
  expected = np.floor(np.abs(np.sin(np.float32(0.5) * np.arange(28, dtype=np.float32)))
                      * np.float32(255.0))
  _assert_bytes(img)
  got = np.round(img[1, :, 0] * 255.0)
  np.testing.assert_allclose(got, expected, atol=1.0, rtol=0)
  assert (got == expected).mean() > 0.9  # 1-ulp sin differences can flip a byte
  assert (img == img[:1]).all()


def _colour_genome():
  # Linear outputs of the bias: out = w / 3 -> hue -0.9, lightness 0.7, sat. 0.9.
  return cppn.genome_from_graph(
      [("bias", "out0", -2.7), ("bias", "out1", 2.1), ("bias", "out2", 2.7)],
      outputs=("linear", "linear", "linear"))


def test_original_colour_goes_through_opencv_hls():
  g = _colour_genome()
  hls = np.abs(np.float32([-2.7, 2.1, 2.7]) / np.float32(3.0))
  img = np.asarray(cppn.render(g, height=2, width=3, channels=3, **ORIGINAL))
  expected = np.asarray(images.hls_opencv_to_rgb(jnp.asarray(hls)))
  np.testing.assert_array_equal(img, np.broadcast_to(expected, (2, 3, 3)))
  # Hue byte 229 on OpenCV's 0-180 scale is 458 = 98 degrees: not colorsys's 0.9 turn.
  other = np.asarray(cppn.render(g, height=2, width=3, channels=3,
                                 **{**ORIGINAL, "colour": "hls"}))
  np.testing.assert_array_equal(
      other[0, 0], images.hls_to_rgb(images.quantize_uint8(jnp.asarray(hls))))
  assert np.abs(other - img).max() > 0.1
  cv2 = pytest.importorskip("cv2")
  hls_bytes = np.floor(hls * np.float32(255.0)).astype(np.uint8).reshape(1, 1, 3)
  bgr = cv2.cvtColor(hls_bytes, cv2.COLOR_HLS2BGR)[0, 0]
  np.testing.assert_array_equal(np.round(img[0, 0] * 255.0), bgr[::-1])


def test_grey_ignores_colour():
  g = cppn.genome_from_graph([("x", "out0", 0.4), ("d", "out0", -2.0)],
                             outputs=("sine",))
  a = cppn.render(g, height=4, width=4, channels=1, **ORIGINAL)
  b = cppn.render(g, height=4, width=4, channels=1, **{**ORIGINAL, "colour": "hls"})
  np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# Mutation


def test_original_variant_never_rewires(grown):
  """With the structural rates at 0, only rewiring could change an edge."""
  assert (np.asarray(grown.node_mask).sum(-1) > 5).mean() > 0.5  # room to rewire
  original = cppn.VARIANT_SWITCHES["original"]["change_conn_rate"]
  history = jax.device_get(_mutate_steps(
      jax.random.key(1), grown, _rates(original, 0.0, 0.0, 0.0, 0.0), steps=12))
  for a, b in zip(_edges(history), _edges(grown)):
    np.testing.assert_array_equal(a, np.broadcast_to(b, a.shape))
  changed = np.asarray(history.conn_weight[-1] != grown.conn_weight).any(-1)
  assert changed.mean() > 0.9  # weights still mutate
  # The same runs with foolingjax's rate rewire most genomes.
  default = cppn.VARIANT_SWITCHES["foolingjax"]["change_conn_rate"]
  moved = jax.device_get(_mutate_steps(
      jax.random.key(1), grown, _rates(default, 0.0, 0.0, 0.0, 0.0), steps=12))
  assert (_edges(moved)[1][-1] != _edges(grown)[1]).any(-1).mean() > 0.5
  # The encoding's vary (jitted, vmapped) passes the variant's rate on.
  enc = cppn.make_encoding(height=4, width=4, channels=1, max_nodes=MAX_NODES,
                           max_conns=MAX_CONNS, variant="original", **ZERO_STRUCTURE)
  vary = jax.jit(jax.vmap(lambda k, g: enc.vary(k, g, g, jnp.int32(0))))
  child, stats = jax.device_get(vary(jax.random.split(jax.random.key(2), POP), grown))
  cppn.validate_genome(child)
  assert stats["cppn_connections"].shape == (POP,)
  for a, b in zip(_edges(child), _edges(grown)):
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# jit and vmap


@pytest.mark.parametrize("channels", [1, 3])
def test_original_variant_jits_and_vmaps(channels, grown):
  # Grey: grown genomes; colour: fresh ones (inputs straight to the outputs).
  pop = grown if channels == 1 else _init(jax.random.key(5), num_outputs=3)
  few = jax.tree.map(lambda a: a[:3], pop)
  shape = {"height": 7, "width": 6, "channels": channels}
  enc = cppn.make_encoding(variant="original", max_nodes=MAX_NODES,
                           max_conns=MAX_CONNS, pixels_per_tile=16, **shape)
  drawn = np.asarray(jax.jit(jax.vmap(enc.render))(few))
  assert drawn.shape == (3, 7, 6, channels)
  assert 0.0 <= drawn.min() and drawn.max() <= 1.0
  _assert_bytes(drawn)
  for i in range(3):
    one = np.asarray(cppn.render(jax.tree.map(lambda a, i=i: jnp.asarray(a[i]), few),
                                 **shape,
                                 **ORIGINAL))
    # Truncation to bytes can flip a byte where two compilations differ by an ulp.
    np.testing.assert_allclose(drawn[i], one, atol=1.01 / 255.0, rtol=0)
    assert (drawn[i] == one).mean() > 0.95
  if channels == 1:  # render_population passes the switches on (one compile)
    chunked = jax.jit(functools.partial(cppn.render_population, chunk_size=2, **shape,
                                        **ORIGINAL))(few)
    np.testing.assert_allclose(chunked, drawn, atol=1.01 / 255.0, rtol=0)
