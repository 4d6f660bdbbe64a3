"""The interface between an image encoding and the evolutionary algorithm.

An encoding is three per-individual pure functions; the evolution code lifts
them over the population with ``jax.vmap`` and jits the whole generation:

* ``init(key) -> genome``: one random individual (a pytree of fixed shape).
* ``vary(key, parent, mate, generation) -> (child, stats)``: crossover with
  ``mate`` (ignored by encodings without crossover) then mutation.
  ``generation`` is an int32 scalar for schedules such as mutation-rate decay.
  ``stats`` is a dict of scalars (e.g. how many structural adds were skipped
  because the genome was full), averaged over the batch into the metrics.
* ``render(genome) -> image``: float32 ``[H, W, C]`` in [0, 1].
* ``population_render(render, genomes) -> images`` (optional): how ``render``
  is lifted over a population, :func:`vmap_render` (``jax.vmap``, the default)
  or :func:`map_render` (``jax.lax.map``, one genome after another; the same
  images up to a few ulps). :meth:`Encoding.render_batch` applies it.
* ``validate(genomes)`` (optional): checks genomes that enter from outside (a
  restored checkpoint) on the host and raises one clear error; returns them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import jax
import numpy as np

Genome = Any


def vmap_render(render: Callable[[Genome], jax.Array], genomes: Genome) -> jax.Array:
  """All genomes at once (``jax.vmap``): the default, and the fast way on accelerators."""
  return jax.vmap(render)(genomes)


def map_render(render: Callable[[Genome], jax.Array], genomes: Genome) -> jax.Array:
  """One genome after another inside the jit (``jax.lax.map``).

  On XLA:CPU a vmapped render that holds every genome's hidden-node values in
  flight leaves the cache; rendering one genome at a time is faster there
  (``benchmarks/bench_cppn.py``'s "one after another in one jit" row). XLA may
  compile the per-genome arithmetic differently from the vmapped one, so the
  images can differ by a few ulps (the CPPN's colour images do).
  """
  return jax.lax.map(render, genomes)


@dataclasses.dataclass(frozen=True, eq=False)
class Encoding:
  """Per-individual functions of an image encoding (see module docstring)."""

  init: Callable[[jax.Array], Genome]
  vary: Callable[[jax.Array, Genome, Genome, jax.Array], tuple[Genome, dict]]
  render: Callable[[Genome], jax.Array]
  image_shape: tuple[int, int, int]
  name: str = "encoding"
  validate: Callable[[Genome], Genome] | None = None
  population_render: Callable[[Callable, Genome], jax.Array] = vmap_render

  def render_batch(self, genomes: Genome) -> jax.Array:
    """Images ``[B, H, W, C]`` of a batch of genomes (leading axis ``B``)."""
    return self.population_render(self.render, genomes)


def check_choice(kind: str, switch: str, value, valid: Sequence) -> None:
  """One ValueError naming the valid values when ``value`` is not one of them.

  Booleans must be real bools (1 is not True) and strings real strings.
  """
  if valid and all(isinstance(v, bool) for v in valid):
    if not isinstance(value, (bool, np.bool_)):
      raise ValueError(f"{kind} {switch} must be True or False; got {value!r}. Fix: pass a "
                       "bool.")
    return
  if not isinstance(value, str) or value not in valid:
    raise ValueError(f"Unknown {kind} {switch} {value!r}. Fix: use one of "
                     f"{', '.join(repr(v) for v in valid)}.")


def resolve_variant(kind: str, variant: str, table: Mapping[str, Mapping[str, Any]],
                    choices: Mapping[str, Sequence | None], **overrides) -> dict:
  """An encoding variant's switch values, overridden by the switches not None.

  Args:
    kind: the encoding's name in error messages ("CPPN", "direct-encoding").
    variant: a key of ``table``.
    table: variant -> its value of every switch.
    choices: switch -> its valid values, or None for a value checked elsewhere
      (e.g. a rate).
    **overrides: switches to set; None keeps the variant's value.

  Returns:
    A new dict holding every switch.

  Raises:
    ValueError: an unknown variant, switch name or switch value, naming the
      valid ones.
  """
  check_choice(kind, "variant", variant, tuple(table))
  out = dict(table[variant])
  unknown = sorted(set(overrides) - set(out))
  if unknown:
    raise ValueError(f"Unknown {kind} switch {unknown[0]!r}. Fix: use one of "
                     f"{', '.join(repr(s) for s in out)}.")
  for name, value in overrides.items():
    if value is None:
      continue
    if choices.get(name) is not None:
      check_choice(kind, name, value, choices[name])
    out[name] = value
  return out
