"""Direct encoding: one gene per pixel value, after the fooling paper's code.

Genes live in [0, 1]: grey intensities for one channel, three colour values
per pixel for three. Variation follows the original's
``exp/images/gen/evo_float_image.hpp`` (sferes2): with probability
``cross_rate`` an SBX crossover (η_c = 10) with a mate, then polynomial
mutation of each gene with probability ``mutation_rate`` (η_m = 15), clipped
to [0, 1].

**Variants.** ``variant="original"`` does what the released code does;
``variant="foolingjax"`` (the default, unchanged since the first release) keeps
four differences. Each is a switch of :func:`make_encoding` that overrides the
variant (:data:`VARIANT_SWITCHES`):

=====================  ==========================  ==============================
switch                 original (the code)         foolingjax
=====================  ==========================  ==============================
``sbx_genes``          ``"all"``: every gene where  ``"half"``: each gene takes an
                       the parents differ gets an   SBX value with probability 0.5,
                       SBX value (measured: 100 %   else the parent's (50.8 %
                       of such genes change)        change)
``sbx_equal_genes``    ``"gray"``: genes where the  ``"parent"``: the parent's gene
                       parents agree (within float
                       epsilon) are left at 0.5,
                       the value of a freshly
                       constructed sferes genome
                       (``gen/float.hpp``), so a
                       parent crossed with itself
                       gives a flat grey child
``quantize``           True: genes are written as  False: the net sees the floats
                       bytes ``int(v * 255)``
                       (``phen_*_image_direct.hpp``)
                       before the net sees them
``colour`` (3 ch.)     ``"hls_opencv"``: the bytes  ``"hsv"``: HSV, as the paper's
                       are HLS through OpenCV's     text says, on a full hue turn
                       8-bit conversion, hue on
                       its 0-180 scale
                       (:func:`foolingjax.images.hls_opencv_to_rgb`)
=====================  ==========================  ==============================

Why foolingjax's defaults: a flat grey child is a wasted evaluation, and
half-uniform SBX keeps more of the parent (a smaller step); the float and HSV
choices follow the paper's text rather than the code's storage format. The
side-by-side measurement is in the README.

**Mutation-rate schedule.** The paper's text says the rate starts at 0.1 and
halves every 1000 generations; the released code keeps it at 0.1 (the
ImageNet direct run declares it ``static`` but never changes it). Both
variants default to the code; ``mutation_halving_every=1000`` gives the
paper's schedule (``mutation_decay`` an exponential one).

**Not reproduced** (no effect on the search distribution): the original makes
two sibling children per mating (SBX's two offspring, or the two parents
without crossover) where we draw one child per mating with the same marginal
distribution (a coin picks the SBX offspring or the parent); and it stores
genes column-major, which per-gene operators do not see.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from foolingjax import images
from foolingjax.evolution.encoding import Encoding, resolve_variant

VARIANTS = ("foolingjax", "original")
VARIANT_SWITCHES = {
    "foolingjax": dict(sbx_genes="half", sbx_equal_genes="parent", quantize=False,
                       colour="hsv"),
    "original": dict(sbx_genes="all", sbx_equal_genes="gray", quantize=True,
                     colour="hls_opencv"),
}
SWITCH_VALUES = {"sbx_genes": ("half", "all"), "sbx_equal_genes": ("parent", "gray"),
                 "quantize": (False, True), "colour": ("hsv", "hls_opencv")}
FLOAT32_EPS = float(jnp.finfo(jnp.float32).eps)  # std::numeric_limits<float>::epsilon()


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """``jax.random.uniform(key, shape)``, drawn flat and reshaped.

  The same numbers: threefry's bits (``jax_threefry_partitionable``, JAX's
  default) follow each element's flat index, so the draw does not depend on
  the shape it is reshaped to (``tests/test_evolution.py`` checks it). On
  XLA:CPU a flat draw costs about a quarter of one shaped ``[28, 28, 1]``
  (``benchmarks/bench_evolution.py``), and a generation draws three per gene.
  """
  return jax.random.uniform(key, (math.prod(shape),)).reshape(shape)


def polynomial_mutation(key: jax.Array, genes: jax.Array, *, rate: float | jax.Array,
                        eta: float) -> jax.Array:
  """sferes2's polynomial mutation on genes in [0, 1].

  Each gene mutates with probability ``rate`` by
  δ = (2u)^(1/(η+1)) − 1 for u < 0.5, else 1 − (2(1−u))^(1/(η+1)),
  then is clipped back into [0, 1].
  """
  # One uniform draw serves both the mask and u: given v < rate, v / rate is
  # uniform on [0, 1). Random bits dominate a generation's cost on CPU.
  v = uniform(key, genes.shape)
  mask = v < rate
  u = v / jnp.maximum(rate, 1e-12)
  power = 1.0 / (eta + 1.0)
  # One power per gene: the branch's base is picked first (the same numbers as
  # computing both powers and picking one).
  low = u < 0.5
  r = jnp.power(jnp.where(low, 2.0 * u, jnp.maximum(2.0 * (1.0 - u), 0.0)), power)
  delta = jnp.where(low, r - 1.0, 1.0 - r)
  return jnp.clip(jnp.where(mask, genes + delta, genes), 0.0, 1.0)


def sbx_crossover(key: jax.Array, a: jax.Array, b: jax.Array, *, eta: float,
                  gene_rate: float = 0.5, equal_value: float | None = None,
                  tolerance: float = 1e-14) -> jax.Array:
  """Simulated binary crossover (Deb & Agrawal 1995), bounded to [0, 1].

  Returns one child: each gene, with probability ``gene_rate``, is one of the
  two SBX offspring values (chosen at random), otherwise ``a``'s gene.
  ``gene_rate=1`` is the original's (every gene crossed). Genes where the
  parents differ by at most ``tolerance`` have nothing to cross: they keep
  ``a``'s value, or ``equal_value`` if given (the original leaves them at 0.5
  with ``tolerance`` = float32 epsilon).
  """
  k_gene, k_u = jax.random.split(key)
  y1, y2 = jnp.minimum(a, b), jnp.maximum(a, b)
  spread = jnp.maximum(y2 - y1, 1e-14)
  u = uniform(k_u, a.shape)
  power = 1.0 / (eta + 1.0)

  # One draw picks the genes (m < gene_rate) and, given that, the side
  # (m < gene_rate / 2 is a fair coin): fewer random bits, same distribution.
  m = uniform(k_gene, a.shape)
  first = m < 0.5 * gene_rate
  # The side is picked before the powers: one beta, one alpha and one betaq
  # per gene instead of both offspring's (bit-identical to computing c1 and c2
  # and picking one; tests/test_evolution.py), 27 % less time per crossover
  # on XLA:CPU, where the powers dominate.
  beta = jnp.where(first, 1.0 + 2.0 * y1 / spread, 1.0 + 2.0 * (1.0 - y2) / spread)
  alpha = 2.0 - jnp.power(beta, -(eta + 1.0))
  betaq = jnp.power(jnp.where(u <= 1.0 / alpha, u * alpha, 1.0 / (2.0 - u * alpha)), power)
  child = jnp.where(first, 0.5 * ((y1 + y2) - betaq * (y2 - y1)),
                    0.5 * ((y1 + y2) + betaq * (y2 - y1)))
  child = jnp.clip(child, 0.0, 1.0)
  unset = a if equal_value is None else jnp.full_like(a, equal_value)
  child = jnp.where(jnp.abs(a - b) > tolerance, child, unset)
  return jnp.where(m < gene_rate, child, a)


def resolve_switches(variant: str, **switches) -> dict:
  """The variant's switch values, overridden by the switches that are not None."""
  return resolve_variant("direct-encoding", variant, VARIANT_SWITCHES, SWITCH_VALUES,
                         **switches)


def mutation_rate_at(generation: jax.Array, *, mutation_rate: float, mutation_decay: float = 1.0,
                     mutation_halving_every: int = 0,
                     min_mutation_rate: float = 0.0) -> jax.Array:
  """The per-gene mutation rate at ``generation`` (int32 scalar)."""
  g = jnp.asarray(generation)
  rate = mutation_rate * jnp.power(mutation_decay, g.astype(jnp.float32))
  if mutation_halving_every > 0:
    rate = rate * jnp.power(0.5, (g // mutation_halving_every).astype(jnp.float32))
  return jnp.maximum(min_mutation_rate, rate)


def make_encoding(*, height: int, width: int, channels: int, variant: str = "foolingjax",
                  sbx_genes: str | None = None, sbx_equal_genes: str | None = None,
                  quantize: bool | None = None, colour: str | None = None,
                  mutation_rate: float = 0.1, eta_m: float = 15.0, cross_rate: float = 0.5,
                  eta_c: float = 10.0, mutation_decay: float = 1.0,
                  mutation_halving_every: int = 0,
                  min_mutation_rate: float = 0.0) -> Encoding:
  """The direct encoding for ``[height, width, channels]`` images.

  Args:
    height, width, channels: image shape; 3 channels are colour genes.
    variant: ``"foolingjax"`` or ``"original"``: the defaults of the four
      switches below (see the module docstring's table).
    sbx_genes: ``"half"`` or ``"all"``; None takes the variant's.
    sbx_equal_genes: ``"parent"`` or ``"gray"``; None takes the variant's.
    quantize: render through bytes ``int(v * 255)``; None takes the variant's.
    colour: ``"hsv"`` or ``"hls_opencv"`` (3 channels only); None takes the
      variant's.
    mutation_rate: per-gene mutation probability (original: 0.1).
    eta_m: polynomial mutation index (original: 15).
    cross_rate: probability of crossover per offspring (original: 0.5).
    eta_c: SBX distribution index (original: 10).
    mutation_decay: an exponential schedule, ``mutation_rate * decay**g``; 1 = none.
    mutation_halving_every: halve the rate every this many generations (the
      paper's text: 1000); 0 = never (the released code).
    min_mutation_rate: floor of the scheduled rate.
  """
  s = resolve_switches(variant, sbx_genes=sbx_genes, sbx_equal_genes=sbx_equal_genes,
                       quantize=quantize, colour=colour)
  if channels not in (1, 3):
    raise ValueError(f"The direct encoding renders 1 (gray) or 3 (colour) channels, got "
                     f"{channels}.")
  if not 0.0 <= mutation_rate <= 1.0 or not 0.0 <= cross_rate <= 1.0:
    raise ValueError("mutation_rate and cross_rate must lie in [0, 1]; got "
                     f"{mutation_rate} and {cross_rate}.")
  if not 0.0 < mutation_decay <= 1.0:
    raise ValueError(f"mutation_decay must lie in (0, 1], got {mutation_decay}.")
  if mutation_halving_every < 0:
    raise ValueError(f"mutation_halving_every must be >= 0 (0: never), got "
                     f"{mutation_halving_every}.")
  shape = (height, width, channels)
  original_sbx = dict(gene_rate=1.0 if s["sbx_genes"] == "all" else 0.5,
                      equal_value=0.5 if s["sbx_equal_genes"] == "gray" else None,
                      tolerance=FLOAT32_EPS if s["sbx_genes"] == "all" else 1e-14)

  def init(key):
    return uniform(key, shape)

  def vary(key, parent, mate, generation):
    k_cross, k_do_cross, k_mut = jax.random.split(key, 3)
    crossed = sbx_crossover(k_cross, parent, mate, eta=eta_c, **original_sbx)
    child = jnp.where(jax.random.uniform(k_do_cross) < cross_rate, crossed, parent)
    rate = mutation_rate_at(generation, mutation_rate=mutation_rate,
                            mutation_decay=mutation_decay,
                            mutation_halving_every=mutation_halving_every,
                            min_mutation_rate=min_mutation_rate)
    child = polynomial_mutation(k_mut, child, rate=rate, eta=eta_m)
    return child, {"mutation_rate": rate}

  def render(genome):
    if channels == 3 and s["colour"] == "hls_opencv":
      return images.hls_opencv_to_rgb(genome)  # bytes in, bytes out
    image = images.hsv_to_rgb(genome) if channels == 3 else genome
    return images.quantize_uint8(image) if s["quantize"] else image

  return Encoding(init=init, vary=vary, render=render, image_shape=shape, name="direct")
