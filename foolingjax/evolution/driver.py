"""A resumable MAP-Elites driver: evolve to N generations, checkpointing as it goes.

>>> evolver = Evolver(encoding=encoding, apply_fn=apply_fn, num_cells=10, population=200)
>>> archive, history = evolver.evolve(jax.random.key(0), params, generations=1001,
...                                   directory="runs/x/evolve")

Generations run in jitted ``lax.scan`` blocks of ``log_every``; every
``checkpoint_every`` generations (and at the end) the archive is written to
``directory/archive_<generation>.msgpack`` and each generation's metrics are in
``directory/metrics.jsonl`` (or ``metrics_path``). A later call with the same directory resumes from
the newest checkpoint. Each generation's key is ``fold_in(run key,
generation)``, so the result does not depend on where a run was cut: a resumed
run equals an uninterrupted one bit for bit.

With ``runs=R`` the evolver runs R independent archives under one ``vmap``
(one compilation for all of them): every archive leaf gets a leading ``[R]``
axis, and run r uses the r-th key of ``split(key, R)``.

The archive's score is the log-odds by default (``fitness="probability"``
is the original's softmax; see :mod:`foolingjax.evolution.map_elites`). When
every cell is frozen (no offspring can beat its elite: a float32 probability
of 1.0), the driver logs it once, and ``stop_when_frozen=True`` ends the run
there with a checkpoint: the generations left could not change the archive.

The driver writes only under the ``directory`` it is given, and nothing when
it is None.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from foolingjax import checkpoint, sharding
from foolingjax.evolution import map_elites
from foolingjax.evolution.encoding import Encoding

PREFIX = "archive"
METRICS = "metrics.jsonl"


class BadScoresError(ValueError):
  """The classifier's scores were NaN, infinite, or probabilities outside [0, 1]."""


class Evolver:
  """Jitted init, scan blocks and rendering of MAP-Elites for one encoding and net.

  Keep one per (encoding, classifier architecture): its compiled functions
  serve any ``params`` of that architecture, so retraining loops reuse them.

  Args:
    encoding: the image encoding.
    apply_fn: the classifier, ``apply_fn(params, images) -> logits``.
    num_cells: archive cells (the classes competed for).
    population: offspring per generation, also the initial population.
    runs: None for one archive; R for R independent archives under one vmap.
    fitness: the archive's score, ``"log_odds"`` (default; never saturates) or
      ``"probability"`` (the original's softmax).
    score_transform: ``score_transform(apply_fn, params) -> images -> [B, num_cells]``
      replacing the score (e.g. real classes only); it must return scores of
      the kind ``fitness`` names.
    mesh: split the population over this mesh's devices (single run only).
  """

  def __init__(self, *, encoding: Encoding, apply_fn: Callable, num_cells: int,
               population: int, runs: int | None = None, fitness: str = "log_odds",
               score_transform: Callable | None = None,
               mesh: jax.sharding.Mesh | None = None):
    if population < 1:
      raise ValueError(f"population must be >= 1, got {population}.")
    if runs is not None and runs < 1:
      raise ValueError(f"runs must be >= 1 (or None for one archive), got {runs}.")
    if runs is not None and mesh is not None:
      raise ValueError("Sharding (mesh) is for a single run; pass runs=None.")
    self.encoding = encoding
    self.apply_fn = apply_fn
    self.num_cells = num_cells
    self.population = population
    self.runs = runs
    self.fitness = map_elites.check_fitness(fitness)
    self.score_transform = score_transform
    self.mesh = mesh
    init_fn = map_elites.make_init_fn(encoding=encoding, apply_fn=apply_fn,
                                      num_cells=num_cells, init_size=population,
                                      fitness=fitness, score_transform=score_transform)
    render = encoding.render_batch
    if runs is None:
      self._init = jax.jit(init_fn)
      self._render = jax.jit(render)
    else:
      self._init = jax.jit(jax.vmap(init_fn, in_axes=(0, None)))
      self._render = jax.jit(jax.vmap(render))
    self._blocks: dict[int, Callable] = {}

  # ------------------------------------------------------------------ pieces

  def keys(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(init key, run key)`` of ``key``; ``[R]`` keys each with ``runs``."""
    k_init, k_run = jax.random.split(key)
    if self.runs is None:
      return k_init, k_run
    return jax.random.split(k_init, self.runs), jax.random.split(k_run, self.runs)

  def init(self, init_key: jax.Array, params: Any) -> map_elites.Archive:
    return self._init(init_key, params)

  def block(self, num_generations: int) -> Callable:
    """The jitted ``(run_key, archive, params, num_active) -> (archive, metrics [n, ...])``.

    One compilation per block length ``num_generations``; ``num_active`` (an
    int32 scalar, ``<= num_generations``) runs only that many generations
    through it (the rest leave the archive unchanged), so a run's tail block
    or the rest of a block after a resume does not compile again.
    """
    if num_generations not in self._blocks:
      run_fn = map_elites.make_run_fn(
          encoding=self.encoding, apply_fn=self.apply_fn, batch_size=self.population,
          num_generations=num_generations, fitness=self.fitness,
          score_transform=self.score_transform, mesh=self.mesh)
      if self.runs is None:
        out = sharding.replicated(self.mesh) if self.mesh is not None else None
        fn = jax.jit(run_fn, out_shardings=out)
      else:
        # Metrics come back [R, n, ...]; put generations first like one run's.
        vmapped = jax.vmap(run_fn, in_axes=(0, 0, None, None))

        def fn_runs(keys, archives, params, num_active, vmapped=vmapped):
          archives, metrics = vmapped(keys, archives, params, num_active)
          return archives, jax.tree_util.tree_map(lambda m: jnp.swapaxes(m, 0, 1), metrics)

        fn = jax.jit(fn_runs)
      self._blocks[num_generations] = fn
    return self._blocks[num_generations]

  def template(self, init_key: jax.Array, params: Any) -> map_elites.Archive:
    """Zeros shaped like an archive (the restore target of a checkpoint)."""
    shapes = jax.eval_shape(self._init, init_key, params)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def render(self, genomes) -> jax.Array:
    """Images of genomes ``[N, ...]`` (``[R, N, ...]`` with runs): ``[.., H, W, C]``."""
    return self._render(genomes)

  def elites(self, archive: map_elites.Archive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images [M, H, W, C], fitness [M], cell [M])`` of every cell (of every run)."""
    rendered = np.asarray(self.render(archive.genomes))
    fitness = np.asarray(archive.fitness)
    if self.runs is None:
      return rendered, fitness, np.arange(self.num_cells)
    return (rendered.reshape(-1, *rendered.shape[2:]), fitness.reshape(-1),
            np.tile(np.arange(self.num_cells), self.runs))

  # ------------------------------------------------------------------ driver

  def evolve(self, key: jax.Array, params: Any, *, generations: int,
             directory: str | pathlib.Path | None = None, checkpoint_every: int = 100,
             log_every: int = 25, keep: int = 3,
             metrics_path: str | pathlib.Path | None = None,
             on_checkpoint: Callable[[map_elites.Archive], None] | None = None,
             log: Callable[[str], None] | None = print, log_prefix: str = "",
             stop_when_frozen: bool = False, fingerprint: dict | None = None
             ) -> tuple[map_elites.Archive, list[dict]]:
    """Runs (or resumes) to ``generations``; returns ``(archive, metrics per generation)``.

    Args:
      key: the run's key; split into the init and run keys (:meth:`keys`).
      params: the classifier's parameters.
      generations: total generations (a resumed run may extend it).
      directory: where checkpoints and metrics.jsonl go; None keeps nothing.
      checkpoint_every: generations between checkpoints (also written at the end).
      log_every: generations per jitted scan block and per progress line.
      keep: newest checkpoints kept.
      metrics_path: where the per-generation metrics go (JSON lines); default
        ``directory/metrics.jsonl``.
      on_checkpoint: called with the archive after each checkpoint (and on a
        resume, for the checkpoint resumed from: e.g. to redraw its figure).
      log: progress printer, or None.
      log_prefix: put before every progress line.
      stop_when_frozen: end the run (with a checkpoint) at the end of the first
        block after which every cell of every run is frozen; a resumed run that
        is already frozen does nothing more. The history then ends there.
      fingerprint: what else identifies the run (JSON-able, e.g. the
        experiment's config hash). Checkpoints always record the encoding's
        name, population, cells, runs, fitness and digests of ``key`` and
        ``params``; a checkpoint in ``directory`` that differs in any of them
        is refused (:class:`~foolingjax.checkpoint.CheckpointError`), never
        resumed.

    Returns:
      The final archive and one metrics dict per generation from 0 (JSON-able:
      ``generation``, ``best`` per cell (probabilities), ``cells_99``,
      ``cells_9999``, ``cells_frozen``, ``mean``, ``median``, ``log_odds`` per
      cell when that is the score, and the encoding's stats; with runs each
      has a leading ``[R]``).
    """
    if generations < 0:
      raise ValueError(f"generations must be >= 0, got {generations}.")
    if log_every < 1 or checkpoint_every < 1:
      raise ValueError(f"log_every ({log_every}) and checkpoint_every ({checkpoint_every}) "
                       "must be >= 1.")
    directory = pathlib.Path(directory) if directory is not None else None
    if metrics_path is None and directory is not None:
      metrics_path = directory / METRICS
    metrics_path = pathlib.Path(metrics_path) if metrics_path is not None else None
    init_key, run_key = self.keys(key)
    if directory is not None:
      fingerprint = {"kind": "evolution", **(fingerprint or {}),
                     "encoding": self.encoding.name, "population": self.population,
                     "num_cells": self.num_cells, "runs": self.runs,
                     "fitness": self.fitness, "key": checkpoint.digest(key),
                     "params": checkpoint.digest(params)}
    history: list[dict] = []
    last = checkpoint.latest(directory, prefix=PREFIX) if directory is not None else None
    if last is not None:
      archive, _ = checkpoint.restore(last, self.template(init_key, params),
                                      fingerprint=fingerprint)
      # Device arrays, as a block returns them: numpy leaves would make the
      # jitted block compile a second time.
      archive = jax.device_put(archive)
      if self.encoding.validate is not None:
        self.encoding.validate(archive.genomes)
      history = [h for h in checkpoint.read_jsonl(metrics_path)
                 if h["generation"] <= _generation(archive)] if metrics_path else []
      if metrics_path is not None:
        checkpoint.write_jsonl(metrics_path, history)
      if log:
        log(f"{log_prefix}Resumed from {last} at generation {_generation(archive)}.")
      if on_checkpoint is not None:
        on_checkpoint(archive)
    else:
      archive = self.init(init_key, params)
      if not bool(np.all(np.asarray(archive.filled))):
        raise BadScoresError(
            "The classifier's scores of the initial population are not finite"
            + (" probabilities" if self.fitness == "probability" else "")
            + " (a cell could not be filled). Fix: check the classifier's outputs on "
            "images in [0, 1] (NaN or inf logits; a score_transform must return "
            f"{self.fitness} scores).")
      history = [_jsonable(map_elites.archive_metrics(archive) if self.runs is None else
                           jax.vmap(map_elites.archive_metrics)(archive))]
      if metrics_path is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_jsonl(metrics_path, history)
      self._checkpoint(directory, archive, keep, on_checkpoint, fingerprint)

    # With a mesh the block runs over every device of every host: its inputs go
    # in replicated and the archive comes back as this host's copy, so saving,
    # rendering and logging stay local (the archive is small).
    params_in, run_key_in = params, run_key
    if self.mesh is not None:
      params_in, run_key_in = (sharding.replicate(params, self.mesh),
                               sharding.replicate(run_key, self.mesh))
    said_frozen = False
    session_start, session_gen0 = time.perf_counter(), _generation(archive)
    while _generation(archive) < generations:
      if _all_frozen(archive):
        if log and not said_frozen:
          log(f"{log_prefix}gen {_generation(archive):5d}: every cell is frozen (its elite's "
              f"{self.fitness} is {map_elites.ceiling(self.fitness)}, which no offspring can "
              "beat); the generations left cannot change the archive"
              + ("; stopping." if stop_when_frozen else "."))
          said_frozen = True
        if stop_when_frozen:
          if directory is not None and checkpoint.latest(directory, prefix=PREFIX) != \
              checkpoint.step_path(directory, _generation(archive), prefix=PREFIX):
            self._checkpoint(directory, archive, keep, on_checkpoint, fingerprint)
          break
      gen = _generation(archive)
      n = min(log_every - gen % log_every, generations - gen)
      t0 = time.perf_counter()
      active = np.int32(n)
      if self.mesh is None:
        archive, metrics = self.block(log_every)(run_key_in, archive, params_in, active)
      else:
        archive, metrics = self.block(log_every)(
            run_key_in, sharding.replicate(archive, self.mesh), params_in,
            sharding.replicate(jnp.asarray(active), self.mesh))
        archive = jax.device_put(jax.device_get(archive))
      metrics = jax.tree_util.tree_map(lambda m: m[:n], jax.device_get(metrics))
      seconds = time.perf_counter() - t0
      bad = np.asarray(metrics["bad_scores"]).reshape(n, -1).sum(axis=1)
      if bad.any():
        first = int(np.argmax(bad > 0))
        raise BadScoresError(
            f"{log_prefix}At generation {gen + first + 1} the classifier returned "
            f"{int(bad[first])} scores that are not finite"
            + (" probabilities in [0, 1]" if self.fitness == "probability" else "")
            + ". Nothing of this block was kept (the last checkpoint is at generation "
            f"{gen} or before). Fix: check the classifier's outputs (NaN or inf logits) on "
            "the images this encoding draws.")
      records = [_jsonable({k: v[i] for k, v in metrics.items()}) for i in range(n)]
      history += records
      if metrics_path is not None:
        checkpoint.append_jsonl(metrics_path, records)
      gen = _generation(archive)
      if log:
        best = np.asarray(metrics["best"][-1])
        cells = np.asarray(metrics["cells_9999"][-1])
        runs = "" if self.runs is None else f" | {self.runs} runs"
        elapsed = time.perf_counter() - session_start
        left = elapsed / max(gen - session_gen0, 1) * (generations - gen)
        log(f"{log_prefix}gen {gen:5d}/{generations} ({100 * gen / max(generations, 1):.0f} %)"
            f" | cells >= 99.99%: {int(np.sum(cells))}/{best.size} | median "
            f"{np.median(best):.5f}{runs} | "
            f"{n * self.population * (self.runs or 1) / seconds:,.0f} evals/s | "
            f"{format_duration(elapsed)} elapsed, ~{format_duration(left)} left")
      if gen % checkpoint_every == 0 or gen == generations:
        self._checkpoint(directory, archive, keep, on_checkpoint, fingerprint)
    return archive, history

  def _checkpoint(self, directory, archive, keep, on_checkpoint, fingerprint):
    if directory is None:
      return
    gen = _generation(archive)
    checkpoint.save(checkpoint.step_path(directory, gen, prefix=PREFIX), archive,
                    meta={"generation": gen}, fingerprint=fingerprint)
    checkpoint.prune(directory, keep=keep, prefix=PREFIX)
    if on_checkpoint is not None:
      on_checkpoint(archive)


def format_duration(seconds: float) -> str:
  """``42s``, ``3m05s``, ``2h07m``."""
  seconds = int(round(max(seconds, 0)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _all_frozen(archive: map_elites.Archive) -> bool:
  return bool(np.all(np.asarray(archive.fitness) >= map_elites.ceiling(archive.fitness_kind)))


def frozen_at(history: list[dict], num_cells: int) -> int | None:
  """The first generation at which every cell (of every run) was frozen, or None."""
  for h in history:
    if int(np.sum(h.get("cells_frozen", 0))) == num_cells * np.size(h.get("cells_frozen", 0)):
      return h["generation"]
  return None


def _generation(archive: map_elites.Archive) -> int:
  # With runs every archive is at the same generation.
  return int(np.asarray(archive.generation).reshape(-1)[0])


def _jsonable(metrics: dict) -> dict:
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    if v.ndim:
      out[k] = v.tolist()
    else:
      out[k] = int(v) if v.dtype.kind in "iu" else float(v)
  if isinstance(out.get("generation"), list):  # runs: one generation for all
    out["generation"] = out["generation"][0]
  return out
