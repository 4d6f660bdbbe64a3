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
* ``validate(genomes)`` (optional): checks genomes that enter from outside (a
  restored checkpoint) on the host and raises one clear error; returns them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

Genome = Any


@dataclasses.dataclass(frozen=True, eq=False)
class Encoding:
  """Per-individual functions of an image encoding (see module docstring)."""

  init: Callable[[jax.Array], Genome]
  vary: Callable[[jax.Array, Genome, Genome, jax.Array], tuple[Genome, dict]]
  render: Callable[[Genome], jax.Array]
  image_shape: tuple[int, int, int]
  name: str = "encoding"
  validate: Callable[[Genome], Genome] | None = None
