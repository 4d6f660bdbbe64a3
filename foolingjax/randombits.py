"""``jax.random``'s threefry numbers, computed so that XLA:CPU fuses them.

JAX lowers its threefry-2x32 hash on CPU as a rolled loop (five XLA
``while`` iterations of four rounds), so every draw writes and rereads its
counters five times and fuses with nothing. :func:`threefry2x32` is the same
hash (Salmon et al. 2011, the rounds and key schedule of
``jax._src.random.threefry2x32``) written out as 20 rounds of element-wise
ops: XLA fuses them with the ops that consume the bits, and the numbers are
bit-for-bit JAX's (``tests/test_evolution.py`` compares them). On XLA:CPU a
generation's uniforms for the direct encoding take about half the time
(``benchmarks/bench_evolution.py``).

:func:`uniform` returns exactly ``jax.random.uniform(key, shape)`` for a
threefry key under JAX's default ``jax_threefry_partitionable`` layout, and
falls back to ``jax.random.uniform`` for any other key or layout.
:func:`words` returns both 32-bit words of each hash, which
``jax.random.uniform`` XORs into one.

Keys are still split with ``jax.random.split``: with an unrolled split a
``kernel="fast"`` generation took twice the time (measured; XLA probably fused
the split into every gene that uses its keys).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def _rotate_left(x: jax.Array, d: int) -> jax.Array:
  return jax.lax.shift_left(x, np.uint32(d)) | jax.lax.shift_right_logical(x, np.uint32(32 - d))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32 (20 rounds) of the count pairs ``(x1, x2)`` under key ``(k1, k2)``.

  All uint32; the keys broadcast against the counts. The same two output
  words as ``jax.extend.random.threefry2x32_p``, unrolled.
  """
  ks = (k1, k2, k1 ^ k2 ^ np.uint32(_PARITY))
  x0, x1 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ _rotate_left(x1, r)
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def _fusable(key: jax.Array, size: int) -> bool:
  """Whether ``key`` draws through the partitionable threefry layout for ``size`` numbers."""
  return (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
          and jax.random.key_impl(key) == "threefry2x32"
          and bool(jax.config.jax_threefry_partitionable) and size < 2 ** 32)


def words(key: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
  """Both uint32 words of the hashes of counts ``(0, i)``, ``i < size``: ``[size]`` each.

  Under JAX's partitionable layout ``jax.random.bits(key, (size,))`` is
  their XOR. Keys other than threefry draw the same amount with
  ``jax.random.bits`` (other numbers, the same distribution).
  """
  if not _fusable(key, size):
    bits = jax.random.bits(key, (2, size), jnp.uint32)
    return bits[0], bits[1]
  data = jax.random.key_data(key)
  return threefry2x32(data[0], data[1], jnp.zeros((size,), jnp.uint32),
                      jax.lax.iota(jnp.uint32, size))


def to_unit(bits: jax.Array) -> jax.Array:
  """uint32 -> float32 in [0, 1) from the top 23 bits, as ``jax.random.uniform``."""
  one = jax.lax.shift_right_logical(bits, np.uint32(9)) | np.uint32(0x3F800000)
  return jax.lax.bitcast_convert_type(one, jnp.float32) - np.float32(1.0)


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """``jax.random.uniform(key, shape)`` (float32, [0, 1)), the same numbers, fusable."""
  size = math.prod(shape)
  if not _fusable(key, size):
    return jax.random.uniform(key, (size,)).reshape(shape)
  first, second = words(key, size)
  return to_unit(first ^ second).reshape(shape)
