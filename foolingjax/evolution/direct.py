"""Direct encoding: one gene per pixel value, as in the fooling paper.

Genes live in [0, 1]: grayscale intensities for one channel, HSV for three
(rendered to RGB with :func:`foolingjax.images.hsv_to_rgb`, as the original).
Variation is the original's (sferes2 ``gen_evo_float``): with probability
``cross_rate`` an SBX crossover (η_c = 10) with a mate, each gene taken from
the SBX child with probability 0.5; then polynomial mutation of each gene with
probability ``mutation_rate`` (η_m = 15). An optional exponential decay
shrinks the mutation rate with the generation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from foolingjax.evolution.encoding import Encoding
from foolingjax.images import hsv_to_rgb


def polynomial_mutation(key: jax.Array, genes: jax.Array, *, rate: float | jax.Array,
                        eta: float) -> jax.Array:
  """sferes2's polynomial mutation on genes in [0, 1].

  Each gene mutates with probability ``rate`` by
  δ = (2u)^(1/(η+1)) − 1 for u < 0.5, else 1 − (2(1−u))^(1/(η+1)),
  then is clipped back into [0, 1].
  """
  # One uniform draw serves both the mask and u: given v < rate, v / rate is
  # uniform on [0, 1). Random bits dominate a generation's cost on CPU.
  v = jax.random.uniform(key, genes.shape)
  mask = v < rate
  u = v / jnp.maximum(rate, 1e-12)
  power = 1.0 / (eta + 1.0)
  delta = jnp.where(u < 0.5, jnp.power(2.0 * u, power) - 1.0,
                    1.0 - jnp.power(jnp.maximum(2.0 * (1.0 - u), 0.0), power))
  return jnp.clip(jnp.where(mask, genes + delta, genes), 0.0, 1.0)


def sbx_crossover(key: jax.Array, a: jax.Array, b: jax.Array, *, eta: float,
                  gene_rate: float = 0.5) -> jax.Array:
  """Simulated binary crossover (Deb & Agrawal 1995), bounded to [0, 1].

  Returns one child: each gene, with probability ``gene_rate``, is one of the
  two SBX offspring values (chosen at random), otherwise ``a``'s gene.
  """
  k_gene, k_u = jax.random.split(key)
  y1, y2 = jnp.minimum(a, b), jnp.maximum(a, b)
  spread = jnp.maximum(y2 - y1, 1e-14)
  u = jax.random.uniform(k_u, a.shape)
  power = 1.0 / (eta + 1.0)

  def betaq(beta):
    alpha = 2.0 - jnp.power(beta, -(eta + 1.0))
    return jnp.where(u <= 1.0 / alpha, jnp.power(u * alpha, power),
                     jnp.power(1.0 / (2.0 - u * alpha), power))

  c1 = 0.5 * ((y1 + y2) - betaq(1.0 + 2.0 * y1 / spread) * (y2 - y1))
  c2 = 0.5 * ((y1 + y2) + betaq(1.0 + 2.0 * (1.0 - y2) / spread) * (y2 - y1))
  # One draw picks the genes (m < gene_rate) and, given that, the side
  # (m < gene_rate / 2 is a fair coin): fewer random bits, same distribution.
  m = jax.random.uniform(k_gene, a.shape)
  child = jnp.clip(jnp.where(m < 0.5 * gene_rate, c1, c2), 0.0, 1.0)
  # Identical genes have nothing to cross.
  child = jnp.where(jnp.abs(a - b) > 1e-14, child, a)
  return jnp.where(m < gene_rate, child, a)


def make_encoding(*, height: int, width: int, channels: int, mutation_rate: float = 0.1,
                  eta_m: float = 15.0, cross_rate: float = 0.5, eta_c: float = 10.0,
                  mutation_decay: float = 1.0, min_mutation_rate: float = 0.0) -> Encoding:
  """The direct encoding for ``[height, width, channels]`` images.

  Args:
    height, width, channels: image shape; 3 channels are HSV genes.
    mutation_rate: per-gene mutation probability (original: 0.1).
    eta_m: polynomial mutation index (original: 15).
    cross_rate: probability of crossover per offspring (original: 0.5).
    eta_c: SBX distribution index (original: 10).
    mutation_decay: the rate at generation g is
      ``max(min_mutation_rate, mutation_rate * mutation_decay**g)``; 1 = none.
    min_mutation_rate: floor of the decayed rate.
  """
  if channels not in (1, 3):
    raise ValueError(f"The direct encoding renders 1 (gray) or 3 (HSV) channels, got {channels}.")
  if not 0.0 <= mutation_rate <= 1.0 or not 0.0 <= cross_rate <= 1.0:
    raise ValueError("mutation_rate and cross_rate must lie in [0, 1]; got "
                     f"{mutation_rate} and {cross_rate}.")
  if not 0.0 < mutation_decay <= 1.0:
    raise ValueError(f"mutation_decay must lie in (0, 1], got {mutation_decay}.")
  shape = (height, width, channels)

  def init(key):
    return jax.random.uniform(key, shape)

  def vary(key, parent, mate, generation):
    k_cross, k_do_cross, k_mut = jax.random.split(key, 3)
    crossed = sbx_crossover(k_cross, parent, mate, eta=eta_c)
    child = jnp.where(jax.random.uniform(k_do_cross) < cross_rate, crossed, parent)
    rate = jnp.maximum(min_mutation_rate,
                       mutation_rate * jnp.power(mutation_decay, generation.astype(jnp.float32)))
    child = polynomial_mutation(k_mut, child, rate=rate, eta=eta_m)
    return child, {"mutation_rate": rate}

  def render(genome):
    return hsv_to_rgb(genome) if channels == 3 else genome

  return Encoding(init=init, vary=vary, render=render, image_shape=shape, name="direct")
