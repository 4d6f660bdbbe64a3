"""The experiment core every entrypoint shares.

One place for what experiments do around the library:

* the command line: ``--config`` and ``--workdir`` are both required
  (:func:`cli`), and an entrypoint's ``main`` only calls ``run(config, workdir)``;
* the work directory: a config is validated *before* the directory is created,
  ``config.json`` records it, a rerun with the same config resumes, another
  config is refused (:func:`prepare_workdir`);
* named parts that skip when their ``<part>/result.json`` exists
  (:func:`parse_parts`, :func:`run_parts`);
* named random streams (:func:`rng`);
* outputs: atomic JSON, JSON lines that survive a cut last line, figures,
  markdown tables written and parsed back, and one way to print percentages
  and confidences, with ``None`` and NaN shown as ``—``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import re
import zlib
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments.nguyen2015.configs import followups as _followups_config
from foolingjax import checkpoint, evolution, zoo
from foolingjax.contract import Classifier, num_classes_of
from foolingjax.evolution import driver, map_elites

# Defined once here, not in each entrypoint: absl refuses a flag defined twice,
# and the tests import several experiments into one process.
CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config: experiments/<group>/configs/<name>.py:<preset>.")
WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (a rerun resumes there).")

MISSING = "—"


# --------------------------------------------------------------------------
# Command line


def cli(main: Callable[[list[str]], Any]) -> None:
  """``app.run(main)`` with ``--config`` and ``--workdir`` required.

  ``main(argv)`` should only call ``run(CONFIG.value, WORKDIR.value)``; stray
  positional arguments are refused.
  """
  flags.mark_flags_as_required(["config", "workdir"])

  def checked(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments {argv[1:]}. Fix: settings go in "
                           "--config.<field>=<value>.")
    return main(argv)

  app.run(checked)


# --------------------------------------------------------------------------
# Work directory


class WorkdirConflictError(FileExistsError):
  """The work directory holds results of a different config."""


def check(checks: Iterable[tuple[bool, str]], *, what: str) -> None:
  """Raises one ValueError listing every failed ``(ok, message)`` check."""
  failed = [message for ok, message in checks if not ok]
  if failed:
    raise ValueError(f"Bad {what} config: " + "; ".join(failed) + ".")


def check_classifiers(*specs: str) -> None:
  """Checks classifier specs without loading them, so a typo fails before any work."""
  for spec in specs:
    zoo.check_spec(spec)


def names(text: str) -> list[str]:
  """``"a, b,c"`` -> ``["a", "b", "c"]``."""
  return [n.strip() for n in str(text).split(",") if n.strip()]


# Config keys added after runs were recorded, with the value that gives those
# runs' behaviour. A recorded config without one reads as having that value, and
# a key at that value is left out of checkpoint fingerprints, so older work
# directories and checkpoints still resume.
ADDED_LATER: dict[tuple[str, ...], Any] = {
    ("direct", "kernel"): "reference",     # foolingjax.evolution.direct.KERNELS
    # nguyen2015.followups' imagenet_retrain part (a part that is not run by default).
    ("imagenet_retrain",): _followups_config.IMAGENET_RETRAIN,
}


def canonical_config(d: dict) -> dict:
  """A config dict without the :data:`ADDED_LATER` keys that hold their old behaviour."""
  d = json.loads(json.dumps(d))
  for path, value in ADDED_LATER.items():
    node = d
    for name in path[:-1]:
      node = node.get(name) if isinstance(node, dict) else None
    if isinstance(node, dict) and path[-1] in node and node[path[-1]] == value:
      del node[path[-1]]
  return d


def prepare_workdir(workdir, config: ml_collections.ConfigDict, *,
                    ignore: tuple[str, ...] = ()) -> tuple[pathlib.Path, bool]:
  """Creates ``workdir`` and writes config.json; refuses to mix two configs.

  Call it after the config is validated. Returns ``(path, resuming)``:
  ``resuming`` is True when the directory already holds a run of the same
  config (the caller then resumes from its checkpoints). A different config
  raises instead of overwriting the earlier results, unless the directory holds
  nothing but its config.json (no results). Keys in ``ignore`` (e.g. the total
  number of generations, which a resumed run may extend) are left out of the
  comparison.
  """
  if workdir is None or not str(workdir).strip():
    raise ValueError("No work directory. Fix: pass --workdir=DIR (a new directory, or "
                     "the one of the run to resume).")
  workdir = pathlib.Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OSError(f"Cannot create work directory {workdir}: {e}. Fix: pass a writable "
                  "--workdir.") from e
  config_path = workdir / "config.json"
  current = json.loads(json.dumps(config.to_dict()))
  strip = lambda d: {k: v for k, v in d.items() if k not in ignore}
  # A directory holding nothing but config.json has no results to protect (a
  # run that stopped on bad input before writing any): a new config takes it.
  only_config = {p.name for p in workdir.iterdir()} == {"config.json"}
  resuming = False
  if config_path.exists():
    try:
      previous = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
      raise WorkdirConflictError(
          f"{config_path} is not valid JSON ({e}). Fix: pass a new --workdir.") from e
    was, now = strip(canonical_config(previous)), strip(canonical_config(current))
    if was != now and not only_config:
      changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
      raise WorkdirConflictError(
          f"{workdir} holds a run with a different config (differs in: "
          f"{', '.join(changed)}). Refusing to overwrite it. Fix: pass a new --workdir, "
          "or the same config to resume.")
    resuming = was == now
  write_text(config_path, json.dumps(current, indent=2, sort_keys=True))
  # Every write goes to a temporary and is renamed when complete, so one that
  # exists now was left by a kill: incomplete, and read by nothing.
  stale = checkpoint.clean_temporaries(
      workdir, skip=lambda p: re.fullmatch(r"process_\d+", p.name) is not None)
  if stale:
    print(f"Removed {len(stale)} incomplete temporary file(s) a killed run left in "
          f"{workdir}: {', '.join(str(p.relative_to(workdir)) for p in stale[:5])}"
          + (" ..." if len(stale) > 5 else ""))
  return workdir, resuming


def fingerprint(experiment: str, config: ml_collections.ConfigDict, *,
                ignore: tuple[str, ...] = (), **extra) -> dict:
  """What a checkpoint of this run records: experiment, seed, classifier, config hash.

  ``ignore`` lists the keys a resumed run may change (as in
  :func:`prepare_workdir`); ``extra`` adds JSON-able entries (e.g. the part).
  A checkpoint whose fingerprint differs is refused on resume.
  """
  d = {k: v for k, v in canonical_config(config.to_dict()).items() if k not in ignore}
  return {"experiment": experiment, "seed": d.get("seed"),
          "classifier": d.get("classifier"),
          "config": hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16],
          **extra}


# --------------------------------------------------------------------------
# Parts


def parse_parts(text: str, known: Sequence[str]) -> list[str]:
  """``config.parts`` -> the named parts, in ``known``'s order; one error otherwise."""
  parts = names(text)
  unknown = sorted(set(parts) - set(known))
  if unknown or not parts:
    raise ValueError(f"Bad config.parts {text!r}: unknown {unknown}. Fix: a "
                     f"comma-separated subset of {', '.join(known)}.")
  return [p for p in known if p in parts]


def run_parts(workdir: pathlib.Path, parts: Sequence[str],
              runners: Mapping[str, Callable[[], dict]], *,
              log: Callable[[str], None] = print) -> dict[str, dict]:
  """Runs each part once: a part whose ``<part>/result.json`` exists is read back.

  A part's runner returns a JSON-able dict, written atomically to
  ``workdir/<part>/result.json`` when the part finishes; a killed part has no
  result and runs again (resuming from its own checkpoints, if it keeps any).
  """
  import time
  results = {}
  for part in parts:
    path = workdir / part / "result.json"
    if path.exists():
      log(f"[{part}] done earlier; reading {path}.")
      try:
        results[part] = json.loads(path.read_text())
      except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}). Fix: delete it to run the "
                         f"{part!r} part again (its checkpoints are kept).") from e
      continue
    t0 = time.perf_counter()
    result = jsonable(runners[part]())
    result["seconds"] = time.perf_counter() - t0
    write_json(path, result)
    results[part] = result
    log(f"[{part}] finished in {result['seconds']:.0f} s.")
    from experiments import report
    report.write_report(workdir, running=part != parts[-1])
  return results


# --------------------------------------------------------------------------
# Progress


duration = driver.format_duration   # ``42s``, ``3m05s``, ``2h07m``


class Progress:
  """A one-line progress bar with rate and time left, drawn only on a terminal.

  ``update(done)`` redraws ``desc [#####     ] done/total  40 %  1.5 unit/s
  ~2m10s left`` in place on ``stream`` (default stderr) when it is a terminal;
  elsewhere (logs, CI, tests) it draws nothing, and the experiments' one line
  per block stays the record. ``done`` counts from where a resumed run started,
  so the rate is this invocation's.
  """

  def __init__(self, total: int, desc: str, *, unit: str = "it", start: int = 0,
               stream=None, width: int = 28):
    import sys
    import time
    self.total, self.desc, self.unit, self.width = max(int(total), 1), desc, unit, width
    self.start, self.t0, self._time = int(start), time.perf_counter(), time.perf_counter
    self.stream = stream if stream is not None else sys.stderr
    self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())

  def line(self, done: int) -> str:
    elapsed = self._time() - self.t0
    rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
    left = (self.total - done) / rate if rate > 0 else float("nan")
    filled = int(self.width * min(done / self.total, 1.0))
    eta = f"~{duration(left)} left" if math.isfinite(left) else "time left unknown"
    return (f"{self.desc} [{'#' * filled}{' ' * (self.width - filled)}] {done}/{self.total} "
            f"{100 * done / self.total:3.0f} %  {rate:.2f} {self.unit}/s  {eta}")

  def update(self, done: int) -> None:
    if self.enabled:
      self.stream.write("\r" + self.line(done) + "\x1b[K")
      self.stream.flush()

  def clear(self) -> None:
    """Erases the bar's line, so a log line printed next starts clean (then ``update``)."""
    if self.enabled:
      self.stream.write("\r\x1b[K")
      self.stream.flush()

  def close(self) -> None:
    self.clear()


# --------------------------------------------------------------------------
# Fooling runs: what the fool experiment evolves, and what other studies read back


def with_fitness(base: Classifier, ten_crop: bool) -> Classifier:
  """``base`` as the evolution scores images: one rendering at its input size, or
  the original's ImageNet fitness (softmax averaged over 10 crops of a 256x256
  rendering; the wrapper's softmax is that average)."""
  if not ten_crop:
    return base
  from foolingjax import imagenet
  return Classifier(imagenet.make_ten_crop_apply_fn(base.apply_fn), base.params)


def input_shape_of(apply_fn) -> tuple[int, int, int]:
  shape = getattr(apply_fn, "input_shape", None)
  if shape is None or any(d is None for d in shape):
    raise ValueError("The classifier's apply_fn does not declare its input_shape. Fix: wrap "
                     "it with foolingjax.models.from_linen/from_nnx(..., input_shape=(H, W, C)).")
  return tuple(shape)


def fool_encoding(config, image_shape):
  """The encoding of a fool config (``config.encoding`` with its options block)."""
  options = config.direct if config.encoding == "direct" else config.cppn
  return evolution.make_encoding(config.encoding, image_shape, **options.to_dict())


def class_labels(num_classes: int) -> list[str]:
  """ImageNet's class names for 1000 classes, else the indices as text."""
  if num_classes == 1000:
    try:
      from foolingjax import imagenet
      return list(imagenet.class_names())
    except (ImportError, FileNotFoundError):
      pass
  return [str(k) for k in range(num_classes)]


def parse_classes(text: str, labels: Sequence[str], *, setting: str) -> list[int]:
  """``"king penguin,starfish"`` or ``"145,327"`` -> class indices into ``labels``.

  A name that is no class is one error naming ``setting``, with close names.
  """
  cells = []
  for item in names(text):
    if item.isdigit() and int(item) < len(labels):
      cells.append(int(item))
    elif item in labels:
      cells.append(list(labels).index(item))
    else:
      near = [name for name in labels if item.lower() in name.lower()][:5]
      raise ValueError(f"{setting} names {item!r}, which is not a class of this "
                       f"classifier. Fix: use class names or indices 0-{len(labels) - 1}"
                       + (f" (close: {', '.join(near)})" if near else "") + ".")
  return cells


@dataclasses.dataclass(frozen=True)
class FoolRun:
  """A fool experiment's work directory, read back.

  ``classifier`` is the run's classifier under its fitness (10 crops when
  ``config.ten_crop``), ``archive`` its latest checkpoint, and ``evolver``
  renders the archive's genomes at the fitness's input size.
  """
  config: ml_collections.ConfigDict
  classifier: Classifier
  evolver: driver.Evolver
  archive: map_elites.Archive

  def elites(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images [M, H, W, C], probability [M], cell [M])`` of the filled cells."""
    cells = np.flatnonzero(np.asarray(self.archive.filled))
    genomes = jax.tree_util.tree_map(lambda leaf: leaf[cells], self.archive.genomes)
    probs = np.asarray(map_elites.to_probability(self.archive.fitness,
                                                 self.archive.fitness_kind))
    return np.asarray(self.evolver.render(genomes)), probs[cells], cells


def load_fool_run(workdir) -> FoolRun:
  """Reads the latest archive of ``python -m experiments.nguyen2015.fool --workdir=DIR``.

  The classifier is resolved again from the run's config and must be the one
  the run evolved against (the checkpoint records a digest of its parameters).
  """
  workdir = pathlib.Path(workdir)
  fix = ("Fix: give the --workdir of a run of python -m experiments.nguyen2015.fool "
         "(it needs its config.json and checkpoints/).")
  if not (workdir / "config.json").exists():
    raise FileNotFoundError(f"{workdir} holds no fool run: no config.json. {fix}")
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  last = checkpoint.latest(workdir / "checkpoints", prefix=driver.PREFIX)
  if last is None:
    raise FileNotFoundError(f"{workdir} holds no archive checkpoint yet. {fix}")
  classifier = with_fitness(zoo.resolve(config.classifier), config.ten_crop)
  shape = input_shape_of(classifier.apply_fn)
  num_classes = num_classes_of(classifier.apply_fn, classifier.params, shape)
  recorded = checkpoint.read_fingerprint(last).get("params")
  if recorded is not None and recorded != checkpoint.digest(classifier.params):
    raise ValueError(f"{last} was evolved against other parameters than "
                     f"{config.classifier!r} resolves to now (another checkpoint or "
                     "version of the weights). Fix: use the weights of that run, or evolve "
                     "the run again.")
  evolver = driver.Evolver(encoding=fool_encoding(config, shape), apply_fn=classifier.apply_fn,
                           num_cells=num_classes, population=config.population,
                           fitness=config.fitness)
  init_key, _ = evolver.keys(jax.random.key(config.seed))
  archive, _ = checkpoint.restore(last, evolver.template(init_key, classifier.params))
  return FoolRun(config=config, classifier=classifier, evolver=evolver,
                 archive=jax.device_put(archive))


# --------------------------------------------------------------------------
# Randomness


def stream_id(name: str | int) -> int:
  """A stable non-negative int for a stream name (ints pass through)."""
  if isinstance(name, int):
    return name
  return zlib.crc32(name.encode()) % (2 ** 31)


def rng(seed: int | jax.Array, name: str | int) -> jax.Array:
  """The named random stream ``fold_in(key(seed), id(name))``; names never collide by order."""
  key = jax.random.key(seed) if isinstance(seed, int) else seed
  return jax.random.fold_in(key, stream_id(name))


# --------------------------------------------------------------------------
# Files


def write_text(path, text: str) -> None:
  """Writes ``text`` to a temporary name, then renames: never a half-written file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)


def write_json(path, obj) -> None:
  write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=True))


def append_jsonl(path, record: dict) -> None:
  checkpoint.append_jsonl(path, [jsonable(record)])


def read_jsonl(path) -> list[dict]:
  """The records of a JSON-lines file; a last line cut by a kill is dropped."""
  return checkpoint.read_jsonl(path)


def write_jsonl(path, records: Iterable[dict]) -> None:
  checkpoint.write_jsonl(path, [jsonable(r) for r in records])


def reported(run: Callable[..., Any]) -> Callable[..., Any]:
  """Decorates an experiment's ``run(config, workdir, ...)``: writes ``index.html`` at the end.

  Only after a run that returns (a refused or failed run leaves its work
  directory as it was); the page is :func:`experiments.report.write_report`.
  """
  import functools

  @functools.wraps(run)
  def wrapper(config, workdir, *args, **kwargs):
    result = run(config, workdir, *args, **kwargs)
    # In a multi-host run every process returns here; only the first writes the
    # page (the others keep their own files under workdir/process_<i>).
    if jax.process_index() == 0 and (pathlib.Path(workdir) / "config.json").exists():
      from experiments import report
      report.write_report(workdir)
    return result
  return wrapper


def write_tensorboard(workdir, records: Iterable[Mapping], *, step: str,
                      name: str = "metrics", prefix: str = "") -> pathlib.Path:
  """Writes the numeric fields of per-step records as TensorBoard scalars.

  Into ``workdir/tensorboard``, one event file per ``name``, replaced whole on
  each call (see :mod:`experiments.tensorboard`); ``step`` names the field
  that is the step. ``tensorboard --logdir=<workdir>/tensorboard`` shows them.
  """
  from experiments import tensorboard
  pairs = [(int(r[step]), tensorboard.scalars_of(
      {k: v for k, v in r.items() if k != step}, prefix=prefix)) for r in records]
  return tensorboard.write_scalars(pathlib.Path(workdir) / "tensorboard", pairs, name=name)


def jsonable(tree):
  """numpy/jax scalars and arrays -> Python numbers and lists; NaN -> None."""
  if isinstance(tree, Mapping):
    return {str(k): jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [jsonable(v) for v in tree]
  if isinstance(tree, (np.ndarray, jax.Array, np.generic)):
    arr = np.asarray(tree)
    if arr.ndim:
      return [jsonable(v) for v in arr]
    tree = arr.item()
  if isinstance(tree, float) and not math.isfinite(tree):
    return None
  return tree


def save_figure(fig, path, *, dpi: int = 100) -> pathlib.Path:
  """Saves a matplotlib figure atomically and closes it."""
  import matplotlib.pyplot as plt
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.stem + ".tmp" + path.suffix)
  fig.savefig(tmp, dpi=dpi)
  plt.close(fig)
  tmp.replace(path)
  return path


def pyplot():
  """matplotlib.pyplot on the Agg backend (no display needed)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


# --------------------------------------------------------------------------
# Numbers and tables


def _missing(v) -> bool:
  return v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v))


def pct(p, digits: int = 1) -> str:
  """A share as a percentage: ``0.1234 -> "12.3%"``; None or NaN -> ``—``."""
  return MISSING if _missing(p) else f"{100 * float(p):.{digits}f}%"


def confidence(p) -> str:
  """A softmax confidence, truncated, never rounded up (0.9999996 is not "100%").

  ``>= 99.99 %`` shows six digits of the probability, below 0.1 % scientific
  notation, else two decimals; None or NaN -> ``—``.
  """
  if _missing(p):
    return MISSING
  p = float(p)
  if p >= 0.9999:
    return f"{np.floor(p * 1e6) / 1e4:.4f}%"
  return f"{100 * p:.1e}%" if p < 1e-3 else f"{np.floor(p * 1e4) / 1e2:.2f}%"


def number(v, digits: int = 4) -> str:
  """A plain number with ``digits`` decimals; None or NaN -> ``—``."""
  return MISSING if _missing(v) else f"{float(v):.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A GitHub markdown table; :func:`parse_markdown_tables` reads it back."""
  if any(len(row) != len(header) for row in rows):
    raise ValueError(f"Every row needs {len(header)} cells: {header}.")
  lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
  return "\n".join(lines)


def parse_markdown_tables(text: str) -> dict[str, dict[str, dict[str, str]]]:
  """Reads tables back: ``{section heading: {row label: {column: cell}}}``.

  A table belongs to the last ``#``-heading above it; a second table under
  the same heading is merged into the first.
  """
  tables: dict[str, dict[str, dict[str, str]]] = {}
  heading, header = None, None
  for line in text.splitlines():
    if line.startswith("#"):
      heading, header = line.lstrip("#").strip(), None
    elif line.startswith("|") and heading is not None:
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if header is None:
        header = cells
        tables.setdefault(heading, {})
      elif not set("".join(cells)) <= set("-:"):
        tables[heading][cells[0]] = dict(zip(header, cells))
    elif not line.strip():
      header = None
  return tables
