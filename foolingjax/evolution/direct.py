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

**Kernel** (``kernel``, not a variant: the same operators either way).
``"reference"`` (the default; every measurement in the README ran it) draws
three ``jax.random.uniform`` numbers per gene and takes powers with
``jnp.power``. ``"fast"`` draws the same distributions from one threefry hash
per gene (:func:`packed_uniforms`) and takes the powers as ``exp(log)``,
repeated square roots (η_m + 1 a power of two, as the default 16) and integer
powers (η_c + 1 an integer, as the default 11): the same search
distribution, other random numbers and last-bit roundings, so a seeded run
takes another path. ``benchmarks/bench_evolution.py`` measures both.

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
import numpy as np

from foolingjax import images, randombits
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
KERNELS = ("reference", "fast")


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """``jax.random.uniform(key, shape)``: the same numbers, drawn flat and fusable.

  The same numbers: threefry's bits (``jax_threefry_partitionable``, JAX's
  default) follow each element's flat index, so the draw does not depend on
  the shape it is reshaped to, and :func:`foolingjax.randombits.uniform`
  computes JAX's hash unrolled, so XLA fuses it with its consumers
  (``tests/test_evolution.py`` checks both). On XLA:CPU a generation's draws
  (three per gene) took 0.010 s this way against 0.086 s for
  ``jax.random.uniform`` drawing each ``[28, 28, 1]`` shaped
  (``benchmarks/bench_evolution.py``, run of 2026-12-04).
  """
  return randombits.uniform(key, shape)


def packed_uniforms(key: jax.Array, shape: tuple[int, ...]
                    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Three uniforms per gene and one per genome from one threefry hash per gene.

  Returns ``(u, v, m, coin)``: ``u`` and ``v`` (``shape``) are the top 23 bits
  of a hash's two 32-bit words, as ``jax.random.uniform`` makes a float;
  ``m`` (``shape``) is an 18-bit uniform from the 9 bits each word has left
  (``m < r`` holds with probability exactly ``r`` for every multiple ``r`` of
  2^-18, such as SBX's 0.25, 0.5 and 1); ``coin`` (a scalar) is a 23-bit
  uniform from one more hash. All four are independent.

  ``jax.random.uniform`` spends one threefry hash on each 32-bit word (JAX's
  partitionable layout, the default, XORs each hash's two words into one), so
  three draws cost three hashes per gene; this costs one
  (:func:`foolingjax.randombits.words`).
  """
  n = math.prod(shape)
  first, second = randombits.words(key, n + 1)
  low = np.uint32(511)
  m18 = ((first[:n] & low) << np.uint32(9)) | (second[:n] & low)
  m = randombits.to_unit(m18 << np.uint32(14))      # m18 / 2^18, exactly
  return (randombits.to_unit(first[:n]).reshape(shape),
          randombits.to_unit(second[:n]).reshape(shape), m.reshape(shape),
          randombits.to_unit(first[n]))


def _root(x: jax.Array, n, fast: bool) -> jax.Array:
  """``x ** (1 / n)`` for ``x >= 0``: ``jnp.power``, or (fast) square roots or exp(log)."""
  if not fast:
    return jnp.power(x, 1.0 / n)
  if isinstance(n, (int, float)) and n >= 1 and float(n).is_integer() and \
      int(n) & (int(n) - 1) == 0 and int(n) <= 64:
    for _ in range(int(n).bit_length() - 1):   # n = 2^k: k square roots, each exact-rounded
      x = jnp.sqrt(x)
    return x
  return jnp.exp(jnp.log(x) * (1.0 / n))


def _inverse_power(x: jax.Array, n, fast: bool) -> jax.Array:
  """``x ** -n`` for ``x >= 1``: ``jnp.power``, or (fast) an integer power or exp(log)."""
  if not fast:
    return jnp.power(x, -n)
  if isinstance(n, (int, float)) and float(n).is_integer() and 0 < n <= 64:
    return jax.lax.integer_pow(x, -int(n))   # overflow gives 1 / inf = 0, as jnp.power's
  return jnp.exp(jnp.log(x) * -n)


def polynomial_mutation(key: jax.Array, genes: jax.Array, *, rate: float | jax.Array,
                        eta: float) -> jax.Array:
  """sferes2's polynomial mutation on genes in [0, 1].

  Each gene mutates with probability ``rate`` by
  δ = (2u)^(1/(η+1)) − 1 for u < 0.5, else 1 − (2(1−u))^(1/(η+1)),
  then is clipped back into [0, 1].
  """
  return mutate_with(uniform(key, genes.shape), genes, rate=rate, eta=eta)


def mutate_with(v: jax.Array, genes: jax.Array, *, rate: float | jax.Array, eta: float,
                fast: bool = False) -> jax.Array:
  """:func:`polynomial_mutation` given its uniforms ``v`` (one per gene).

  ``fast`` takes the power as :func:`_root` does (the same number up to rounding).
  """
  # One uniform draw serves both the mask and u: given v < rate, v / rate is
  # uniform on [0, 1): fewer random bits, the same distribution.
  mask = v < rate
  if fast:  # one division per genome, not per gene
    u = v * (1.0 / jnp.maximum(rate, 1e-12))
  else:
    u = v / jnp.maximum(rate, 1e-12)
  # One power per gene: the branch's base is picked first (the same numbers as
  # computing both powers and picking one).
  low = u < 0.5
  r = _root(jnp.where(low, 2.0 * u, jnp.maximum(2.0 * (1.0 - u), 0.0)), eta + 1.0, fast)
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
  u = uniform(k_u, a.shape)
  # One draw picks the genes (m < gene_rate) and, given that, the side
  # (m < gene_rate / 2 is a fair coin): fewer random bits, same distribution.
  m = uniform(k_gene, a.shape)
  return crossover_with(u, m, a, b, eta=eta, gene_rate=gene_rate, equal_value=equal_value,
                        tolerance=tolerance)


def crossover_with(u: jax.Array, m: jax.Array, a: jax.Array, b: jax.Array, *, eta: float,
                   gene_rate: float = 0.5, equal_value: float | None = None,
                   tolerance: float = 1e-14, fast: bool = False) -> jax.Array:
  """:func:`sbx_crossover` given its uniforms: ``u`` (SBX's) and ``m`` (gene and side).

  ``fast`` takes the powers as :func:`_root` and :func:`_inverse_power` do.
  """
  y1, y2 = jnp.minimum(a, b), jnp.maximum(a, b)
  spread = jnp.maximum(y2 - y1, 1e-14)
  first = m < 0.5 * gene_rate
  # The side is picked before the powers: one beta, one alpha and one betaq
  # per gene instead of both offspring's (bit-identical to computing c1 and c2
  # and picking one; tests/test_evolution.py), 27 % less time per crossover
  # on XLA:CPU, where the powers dominate.
  # The numerator is picked before the division (the same numbers, one division).
  beta = 1.0 + 2.0 * jnp.where(first, y1, 1.0 - y2) / spread
  alpha = 2.0 - _inverse_power(beta, eta + 1.0, fast)
  ua = u * alpha
  inner = (ua <= 1.0) if fast else (u <= 1.0 / alpha)   # alpha > 0: the same test, rounded
  betaq = _root(jnp.where(inner, ua, 1.0 / (2.0 - ua)), eta + 1.0, fast)
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
                  min_mutation_rate: float = 0.0, kernel: str = "reference") -> Encoding:
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
    kernel: ``"reference"`` (three ``jax.random.uniform`` draws per gene and
      ``jnp.power``) or ``"fast"`` (one threefry hash per gene and cheaper
      powers: the same distributions, other numbers; see the module docstring).
  """
  if kernel not in KERNELS:
    raise ValueError(f"Unknown direct-encoding kernel {kernel!r}. Fix: use one of "
                     f"{', '.join(KERNELS)}.")
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
    rate = mutation_rate_at(generation, mutation_rate=mutation_rate,
                            mutation_decay=mutation_decay,
                            mutation_halving_every=mutation_halving_every,
                            min_mutation_rate=min_mutation_rate)
    if kernel == "fast":
      u, v, m, coin = packed_uniforms(key, shape)
      crossed = crossover_with(u, m, parent, mate, eta=eta_c, fast=True, **original_sbx)
      child = jnp.where(coin < cross_rate, crossed, parent)
      return mutate_with(v, child, rate=rate, eta=eta_m, fast=True), {"mutation_rate": rate}
    k_cross, k_do_cross, k_mut = jax.random.split(key, 3)
    crossed = sbx_crossover(k_cross, parent, mate, eta=eta_c, **original_sbx)
    child = jnp.where(jax.random.uniform(k_do_cross) < cross_rate, crossed, parent)
    child = polynomial_mutation(k_mut, child, rate=rate, eta=eta_m)
    return child, {"mutation_rate": rate}

  def render(genome):
    if channels == 3 and s["colour"] == "hls_opencv":
      return images.hls_opencv_to_rgb(genome)  # bytes in, bytes out
    image = images.hsv_to_rgb(genome) if channels == 3 else genome
    return images.quantize_uint8(image) if s["quantize"] else image

  return Encoding(init=init, vary=vary, render=render, image_shape=shape, name="direct")
