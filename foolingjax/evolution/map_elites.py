"""MAP-Elites over classes, as in the fooling-images paper's code.

One archive cell per class. Each generation draws ``batch_size`` parents (and
as many mates) uniformly from the filled cells, applies the encoding's
crossover then mutation, renders and classifies the whole batch at once, and
lets **every offspring compete for every cell**: the elite of cell k is
replaced by the offspring with the highest score for class k when that score
beats the elite's (strictly, as ``map_elite.hpp``'s ``_add_to_archive``; one
batched argmax equals its one-offspring-at-a-time loop).

**The score** (``fitness``): the original's is the softmax probability of the
class. In float32 it saturates: once an elite's probability rounds to 1.0 no
offspring can beat it, and on MNIST every cell reaches 1.0 early in a run, so
the rest of the run cannot change the archive. ``"log_odds"`` (our default)
scores class k by ``z_k - logsumexp_{j != k} z_j`` = ``log(p_k / (1 - p_k))``,
computed from the logits without forming ``p``: the same ranking as the
probability wherever float32 can tell probabilities apart, and it keeps ranking
far past the point where ``p`` rounds to 1 (see :func:`log_odds`). Metrics and
figures still show the probability (``sigmoid`` of the log-odds).
``"probability"`` keeps the original's score. A cell is *frozen* when its
elite's score can no longer be beaten (probability 1.0, or log-odds +inf); the
metrics count such cells.

Everything here is pure; callers jit. :func:`make_run_fn` builds a function
that runs ``num_generations`` generations as one ``lax.scan``; the per
generation key is ``fold_in(key, archive.generation)``, so a run resumed from
a checkpointed archive replays exactly what an uninterrupted run would do.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from foolingjax import sharding
from foolingjax.evolution.encoding import Encoding, Genome

ScoreFn = Callable[[jax.Array], jax.Array]  # images [B, H, W, C] -> scores [B, K]

EMPTY = -jnp.inf
FITNESS = ("log_odds", "probability")


def check_fitness(fitness: str) -> str:
  if fitness not in FITNESS:
    raise ValueError(f"Unknown fitness {fitness!r}. Fix: use one of "
                     f"{', '.join(repr(f) for f in FITNESS)} (log_odds keeps ranking where "
                     "the float32 probability rounds to 1; probability is the original's).")
  return fitness


def log_odds(logits: jax.Array) -> jax.Array:
  """``[..., K]`` logits -> ``[..., K]`` log-odds ``z_k - logsumexp_{j != k} z_j``.

  Equals ``log p_k - log(1 - p_k)`` for ``p = softmax(z)``, computed without
  forming ``p``: for a class that is not the row's argmax, ``logsumexp_{j!=k}``
  is ``m + log(S - e^{z_k - m})`` with ``m`` the row max and ``S >= 1 +
  e^{z_k - m}``, so the subtraction loses at most a couple of ulps; for the
  argmax class it is a logsumexp over the other classes directly. A margin of
  30 between the top two logits gives 30.0 here where ``softmax`` gives
  exactly 1.0 for margins above about 17. Memory ``O(B K)`` (no ``[B, K, K]``).
  With one class the log-odds are +inf.
  """
  z = jnp.asarray(logits, jnp.float32)
  m = jnp.max(z, axis=-1, keepdims=True)
  e = jnp.exp(z - m)
  total = jnp.sum(e, axis=-1, keepdims=True)
  others_not_top = m + jnp.log(jnp.maximum(total - e, jnp.finfo(jnp.float32).tiny))
  is_top = jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=bool)
  others_top = jax.nn.logsumexp(jnp.where(is_top, -jnp.inf, z), axis=-1, keepdims=True)
  return z - jnp.where(is_top, others_top, others_not_top)


def to_probability(scores: jax.Array, fitness: str) -> jax.Array:
  """Scores of kind ``fitness`` as probabilities (what reports and plots show)."""
  return jax.nn.sigmoid(scores) if check_fitness(fitness) == "log_odds" else scores


def score_threshold(probability: float, fitness: str) -> float:
  """The score of kind ``fitness`` that a probability threshold corresponds to."""
  if check_fitness(fitness) == "log_odds":
    return math.log(probability) - math.log1p(-probability)
  return probability


def ceiling(fitness: str) -> float:
  """The score no offspring can beat (strictly): a cell there is frozen."""
  return float("inf") if check_fitness(fitness) == "log_odds" else 1.0


@struct.dataclass
class Archive:
  """The MAP-Elites archive; cells are classes.

  Attributes:
    genomes: the encoding's genome pytree, each leaf ``[num_cells, ...]``;
      meaningless where the cell is empty.
    fitness: ``[num_cells]`` float32, the elite's score for its cell's class;
      ``-inf`` for an empty cell.
    generation: int32 scalar, generations run so far (0 after initialisation).
    evaluations: int32 scalar, individuals rendered and classified so far.
    fitness_kind: static; what ``fitness`` holds, one of :data:`FITNESS`.
  """

  genomes: Genome
  fitness: jax.Array
  generation: jax.Array
  evaluations: jax.Array
  fitness_kind: str = struct.field(pytree_node=False, default="probability")

  @property
  def filled(self) -> jax.Array:
    return self.fitness > EMPTY

  @property
  def num_cells(self) -> int:
    return self.fitness.shape[0]


def insert(archive: Archive, genomes: Genome, scores: jax.Array) -> Archive:
  """Lets every candidate compete for every cell.

  Args:
    archive: current archive.
    genomes: candidates, each leaf ``[B, ...]``.
    scores: ``[B, num_cells]`` score of each candidate for each cell.

  Returns:
    The archive where cell k holds the best of its elite and the candidates
    by ``scores[:, k]`` (strictly higher replaces; fitness never decreases).
  """
  if scores.ndim != 2 or scores.shape[1] != archive.num_cells:
    raise ValueError(f"scores must be [batch, {archive.num_cells}] (one column per cell); "
                     f"got {scores.shape}. Fix: the classifier's class count must equal "
                     "the number of archive cells.")
  best = jnp.argmax(scores, axis=0)                     # [K] index into the batch
  best_score = jnp.take_along_axis(scores, best[None], axis=0)[0]
  improved = best_score > archive.fitness

  # The winners are written cell by cell (a loop of row updates, each under a
  # cond), not as one select over the whole archive with the candidates
  # gathered per cell: XLA fused the candidates' own computation (the
  # variation, its random hash) into that select and redid it for every cell,
  # and the select rewrote every cell each generation. The same archive,
  # bit for bit; a 1000-cell ImageNet direct generation of 32 took 0.93 s
  # instead of 1.77 s (a one-off comparison in one process;
  # benchmarks/bench_imagenet.py --generation times the generation).
  def write(k, cells):
    def put(cells):
      return jax.tree_util.tree_map(
          lambda old, cand: jax.lax.dynamic_update_index_in_dim(old, cand[best[k]], k, 0),
          cells, genomes)
    return jax.lax.cond(improved[k], put, lambda cells: cells, cells)

  new_genomes = jax.lax.fori_loop(0, archive.num_cells, write, archive.genomes)
  return archive.replace(genomes=new_genomes,
                         fitness=jnp.where(improved, best_score, archive.fitness),
                         evaluations=archive.evaluations + scores.shape[0])


def evaluate(genomes: Genome, *, encoding: Encoding, score_fn: ScoreFn) -> jax.Array:
  """Renders (``encoding.render_batch``) and scores a batch of genomes: ``[B, K]``."""
  images = encoding.render_batch(genomes)
  return score_fn(images)


def init_archive(key: jax.Array, *, encoding: Encoding, score_fn: ScoreFn, num_cells: int,
                 init_size: int, fitness: str = "probability") -> Archive:
  """Evaluates ``init_size`` random individuals and inserts them into empty cells.

  ``fitness`` names what ``score_fn`` returns (one of :data:`FITNESS`).
  """
  check_fitness(fitness)
  if init_size < 1:
    raise ValueError(f"init_size (the initial population) must be >= 1, got {init_size}.")
  genomes = jax.vmap(encoding.init)(jax.random.split(key, init_size))
  template = jax.tree_util.tree_map(
      lambda leaf: jnp.zeros((num_cells,) + leaf.shape[1:], leaf.dtype), genomes)
  archive = Archive(genomes=template, fitness=jnp.full((num_cells,), EMPTY, jnp.float32),
                    generation=jnp.zeros((), jnp.int32), evaluations=jnp.zeros((), jnp.int32),
                    fitness_kind=fitness)
  scores = evaluate(genomes, encoding=encoding, score_fn=score_fn)
  return insert(archive, genomes, scores)


def sample_filled(key: jax.Array, archive: Archive, n: int) -> jax.Array:
  """``[n]`` cell indices drawn uniformly from the filled cells."""
  logits = jnp.where(archive.filled, 0.0, -jnp.inf)
  return jax.random.categorical(key, logits, shape=(n,))


def map_elites_step(key: jax.Array, archive: Archive, *, encoding: Encoding,
                    score_fn: ScoreFn, batch_size: int,
                    mesh: jax.sharding.Mesh | None = None) -> tuple[Archive, dict[str, Any]]:
  """One generation: select, vary, evaluate, insert.

  With a ``mesh``, the offspring (their keys, genomes, images and scores) are
  split over its devices along the population axis; the archive stays
  replicated. Random draws do not depend on the sharding, so the result is
  the single-device one.

  Returns:
    ``(archive, metrics)``: :func:`archive_metrics` after the insertion,
    ``bad_scores`` (:func:`count_bad_scores` of the offspring) and the
    encoding's stats averaged over the batch.
  """
  k_parents, k_mates, k_vary = jax.random.split(key, 3)
  parents = sample_filled(k_parents, archive, batch_size)
  mates = sample_filled(k_mates, archive, batch_size)
  pick = lambda idx: jax.tree_util.tree_map(lambda leaf: leaf[idx], archive.genomes)
  keys, parents, mates = sharding.constrain_batch(
      (jax.random.split(k_vary, batch_size), pick(parents), pick(mates)), mesh)
  children, stats = jax.vmap(encoding.vary, in_axes=(0, 0, 0, None))(
      keys, parents, mates, archive.generation)
  children = sharding.constrain_batch(children, mesh)
  scores = sharding.constrain_batch(evaluate(children, encoding=encoding, score_fn=score_fn),
                                    mesh)
  if mesh is not None:   # the insert reads single rows: one all-gather, not one per cell
    children = jax.lax.with_sharding_constraint(children, sharding.replicated(mesh))
  archive = insert(archive, children, scores)
  archive = archive.replace(generation=archive.generation + 1)
  metrics = archive_metrics(archive)
  metrics["bad_scores"] = count_bad_scores(scores, archive.fitness_kind)
  metrics.update({k: jnp.mean(v) for k, v in stats.items()})
  return archive, metrics


def count_bad_scores(scores: jax.Array, fitness: str) -> jax.Array:
  """int32: scores that are not finite, or (probabilities) outside [0, 1].

  A NaN never wins a comparison, so without this check a classifier that
  returns NaN would leave cells unchanged (or empty) without a word.
  """
  bad = ~jnp.isfinite(scores)
  if fitness == "probability":
    bad |= (scores < 0.0) | (scores > 1.0 + 1e-6)
  return jnp.sum(bad, dtype=jnp.int32)


def archive_metrics(archive: Archive) -> dict[str, jax.Array]:
  """Per-generation metrics, as probabilities whatever the archive's score.

  ``best`` ``[K]`` (each elite's probability, 0 for an empty cell),
  ``cells_99``, ``cells_9999`` (thresholds applied to the score itself, so
  exact for log-odds), ``cells_frozen`` (cells whose score can no longer be
  beaten), ``mean`` and ``median`` of ``best``; with log-odds also
  ``log_odds`` ``[K]`` (0 for an empty cell).
  """
  kind = archive.fitness_kind
  score = jnp.where(archive.filled, archive.fitness, 0.0)
  best = jnp.where(archive.filled, to_probability(archive.fitness, kind), 0.0)
  metrics = {
      "generation": archive.generation,
      "best": best,
      "cells_99": jnp.sum(archive.filled & (archive.fitness >= score_threshold(0.99, kind))),
      "cells_9999": jnp.sum(archive.filled
                            & (archive.fitness >= score_threshold(0.9999, kind))),
      "cells_frozen": jnp.sum(archive.fitness >= ceiling(kind)),
      "mean": jnp.mean(best),
      "median": jnp.median(best),
  }
  if kind == "log_odds":
    metrics["log_odds"] = score
  return metrics


def softmax_score_fn(apply_fn: Callable, params: Any) -> ScoreFn:
  """Scores images by the classifier's softmax probabilities ``[B, K]``."""
  return lambda images: jax.nn.softmax(apply_fn(params, images), axis=-1)


def log_odds_score_fn(apply_fn: Callable, params: Any) -> ScoreFn:
  """Scores images by the classifier's log-odds ``[B, K]`` (:func:`log_odds`)."""
  return lambda images: log_odds(apply_fn(params, images))


def _score_maker(fitness: str, score_transform: Callable | None) -> Callable:
  check_fitness(fitness)
  if score_transform is not None:
    return score_transform
  return log_odds_score_fn if fitness == "log_odds" else softmax_score_fn


def make_run_fn(*, encoding: Encoding, apply_fn: Callable, batch_size: int,
                num_generations: int, fitness: str = "log_odds",
                score_transform: Callable | None = None,
                mesh: jax.sharding.Mesh | None = None):
  """``run(key, archive, params[, num_active]) -> (archive, metrics stacked over generations)``.

  Runs ``num_generations`` generations as one ``lax.scan``. With ``num_active``
  (an int32 scalar, may be traced) only the first ``num_active`` steps run
  and the rest leave the archive unchanged with zero metrics: one compiled
  function serves every block length up to ``num_generations``. The classifier's
  ``params`` are an argument (not a closed-over constant) so one compilation
  serves any weights. ``fitness`` picks the score (:data:`FITNESS`);
  ``score_transform(apply_fn, params)`` may replace it (e.g. real classes
  only), and must then return scores of the kind ``fitness`` names. With a
  ``mesh`` the population is split over its devices (``batch_size`` must
  divide evenly).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size (population per generation) must be >= 1, got {batch_size}.")
  if mesh is not None:
    sharding.check_divisible(batch_size, mesh, what="The population")
  make_score = _score_maker(fitness, score_transform)

  def run(key, archive, params, num_active=None):
    score_fn = make_score(apply_fn, params)

    def step(archive):
      gen_key = jax.random.fold_in(key, archive.generation)
      return map_elites_step(gen_key, archive, encoding=encoding, score_fn=score_fn,
                             batch_size=batch_size, mesh=mesh)

    if num_active is None:
      return jax.lax.scan(lambda a, _: step(a), archive, length=num_generations)

    # A shorter block (the tail of a run, or the rest of a block after a
    # resume) runs through the same compiled scan: the steps past num_active
    # leave the archive as it is and return zero metrics, which the caller
    # drops. The active steps are exactly those of a scan of that length.
    metric_shapes = jax.eval_shape(step, archive)[1]

    def skip(archive):
      return archive, jax.tree_util.tree_map(lambda m: jnp.zeros(m.shape, m.dtype),
                                             metric_shapes)

    def body(archive, i):
      return jax.lax.cond(i < num_active, step, skip, archive)

    return jax.lax.scan(body, archive, jnp.arange(num_generations))

  return run


def make_init_fn(*, encoding: Encoding, apply_fn: Callable, num_cells: int, init_size: int,
                 fitness: str = "log_odds", score_transform: Callable | None = None):
  """``init(key, params) -> archive`` (jit it); ``fitness`` as :func:`make_run_fn`."""
  make_score = _score_maker(fitness, score_transform)

  def init(key, params):
    return init_archive(key, encoding=encoding, score_fn=make_score(apply_fn, params),
                        num_cells=num_cells, init_size=init_size, fitness=fitness)

  return init
