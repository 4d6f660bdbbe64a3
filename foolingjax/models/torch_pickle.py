"""Reads PyTorch ``.pth`` state dicts into numpy without torch and without pickle code.

``torch.save`` writes a pickle whose tensors point at raw storages by
"persistent id". Two container formats exist:

* zip (torch >= 1.6): ``<archive>/data.pkl`` holds the pickle and
  ``<archive>/data/<key>`` each storage's raw bytes; ``<archive>/byteorder``
  says ``little`` or ``big`` (absent = little).
* legacy (torch < 1.6, and ``_use_new_zipfile_serialization=False``): five
  pickles back to back (magic number, protocol version, ``sys_info``, the
  object, the list of storage keys), then for each key an int64 element count
  followed by the storage's raw bytes.

:func:`load` reads both with an unpickler that resolves only a short
allow-list of globals (``collections.OrderedDict`` and torch's tensor/storage
rebuild functions, mapped to numpy) and refuses everything else, so a file
cannot run code on load. Tensors come back as C-contiguous numpy arrays;
strided views are bounds-checked against their storage before they are read.

The helpers at the end turn torch layouts into flax layouts (``OIHW`` conv
kernels -> ``HWIO``, ``[out, in]`` dense weights -> ``[in, out]``) and fill a
flax variables template by name, checking every shape.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pathlib
import pickle
import struct
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchPickleError(ValueError):
  """The file is not a torch checkpoint this reader understands, or is unsafe."""


def _bfloat16():
  import ml_dtypes  # a jax dependency
  return ml_dtypes.bfloat16


@dataclasses.dataclass(frozen=True)
class _StorageType:
  dtype: Any


@dataclasses.dataclass(eq=False)
class _Deferred:
  """A tensor to rebuild: in the legacy format its bytes follow the pickle."""

  args: tuple


@dataclasses.dataclass
class _Storage:
  data: np.ndarray  # 1-D, the storage's elements


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """Numpy version of ``torch._utils._rebuild_tensor(_v2)``."""
  if not isinstance(storage, _Storage):
    raise TorchPickleError(
        f"Tensor rebuilt from {type(storage).__name__}, not a storage.")
  size = tuple(int(s) for s in size)
  stride = tuple(int(s) for s in stride)
  offset = int(storage_offset)
  if len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
    raise TorchPickleError(f"Invalid tensor geometry size={size} stride={stride}.")
  flat = storage.data
  if 0 in size:
    return np.zeros(size, flat.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= flat.size:
    raise TorchPickleError(
        f"Tensor of size {size}, stride {stride} at offset {offset} reads past the "
        f"end of its storage of {flat.size} elements: the file is corrupt.")
  view = np.lib.stride_tricks.as_strided(
      flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride),
      writeable=False)
  return np.array(view, order="C")


def _rebuild_parameter(data, *unused):
  return data


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): lambda *args: _Deferred(args),
    ("torch._utils", "_rebuild_tensor_v2"): lambda *args: _Deferred(args),
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
for _name, _dtype in _STORAGE_DTYPES.items():
  _SAFE_GLOBALS[("torch", _name)] = _StorageType(_dtype)
_SAFE_GLOBALS[("torch", "BFloat16Storage")] = _StorageType("bfloat16")


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only :data:`_SAFE_GLOBALS`; storages come from ``load_storage``."""

  def __init__(self, file, load_storage: Callable[[tuple], _Storage] | None = None):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module, name):
    try:
      return _SAFE_GLOBALS[(module, name)]
    except KeyError:
      raise TorchPickleError(
          f"Refusing to load {module}.{name}: only plain state dicts of tensors "
          "are read (no pickled code or custom classes). Fix: save model.state_dict() "
          "instead of the model object.") from None

  def persistent_load(self, pid):
    if self._load_storage is None:
      raise TorchPickleError(f"Unexpected persistent id {pid!r} in a header pickle.")
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise TorchPickleError(f"Unsupported persistent id {pid!r}.")
    return self._load_storage(pid)


def _dtype_of(storage_type) -> np.dtype:
  if not isinstance(storage_type, _StorageType):
    raise TorchPickleError(f"Unsupported storage type {storage_type!r}.")
  if storage_type.dtype == "bfloat16":
    return np.dtype(_bfloat16())
  return np.dtype(storage_type.dtype)


def load(path: str | os.PathLike) -> dict[str, Any]:
  """Reads a ``torch.save`` file (zip or legacy format) without torch.

  Args:
    path: the ``.pth`` / ``.pt`` file.

  Returns:
    The saved object with every tensor as a numpy array; for a state dict, an
    ordered ``{name: np.ndarray}``.

  Raises:
    TorchPickleError: not a torch file, a truncated/corrupt one, or one that
      pickles anything but tensors in dicts/lists/tuples/numbers/strings.
  """
  path = pathlib.Path(path)
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  with open(path, "rb") as f:
    return _load_legacy(f, path)


def _load_zip(path: pathlib.Path):
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkl) != 1:
      raise TorchPickleError(f"{path} is a zip file but not a torch checkpoint "
                             f"(found {len(pkl)} data.pkl records).")
    prefix = pkl[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = archive.read(prefix + "byteorder").decode().strip()
    cache: dict[str, _Storage] = {}

    def load_storage(pid):
      if len(pid) != 5:
        raise TorchPickleError(f"Unsupported zip storage id {pid!r}.")
      _, storage_type, key, _location, numel = pid
      if key not in cache:
        dtype = _dtype_of(storage_type)
        record = f"{prefix}data/{key}"
        try:
          raw = archive.read(record)
        except KeyError:
          raise TorchPickleError(f"{path} lacks the storage record {record}.") from None
        cache[key] = _Storage(_to_array(raw, dtype, int(numel), byteorder, path))
      return cache[key]

    try:
      obj = _RestrictedUnpickler(io.BytesIO(archive.read(pkl[0])), load_storage).load()
    except TorchPickleError:
      raise
    except Exception as e:  # pickle raises many types on garbage
      raise TorchPickleError(f"{path}: corrupt torch checkpoint ({e}).") from e
  return _resolve(obj)


def _to_array(raw: bytes, dtype: np.dtype, numel: int, byteorder: str,
              path) -> np.ndarray:
  if len(raw) < numel * dtype.itemsize:
    raise TorchPickleError(f"{path}: a storage holds {len(raw)} bytes, fewer than its "
                           f"{numel} elements of {dtype}: the file is truncated.")
  data = np.frombuffer(raw, dtype=dtype, count=numel)
  if byteorder != "little" and dtype.itemsize > 1:
    data = data.byteswap()
  return data


def _load_legacy(f, path: pathlib.Path):
  def header():
    try:
      return _RestrictedUnpickler(f).load()
    except TorchPickleError:
      raise
    except Exception as e:  # pickle raises many types on garbage
      raise TorchPickleError(f"{path} is not a torch checkpoint ({e}).") from e

  if header() != _LEGACY_MAGIC:
    raise TorchPickleError(f"{path} is not a torch checkpoint (bad magic number).")
  protocol = header()
  if protocol != 1001:
    raise TorchPickleError(f"{path}: unsupported legacy protocol version {protocol}.")
  sys_info = header()
  little = True
  if isinstance(sys_info, dict):
    little = bool(sys_info.get("little_endian", True))

  # The object pickle refers to storages before their bytes follow, so it
  # records their dtypes and sizes first and the arrays are filled in after.
  declared: dict[str, tuple[np.dtype, int]] = {}
  storages: dict[str, _Storage] = {}
  views: list[tuple[_Storage, str, int, int]] = []

  def load_storage(pid):
    if len(pid) != 6:
      raise TorchPickleError(f"Unsupported legacy storage id {pid!r}.")
    _, storage_type, root_key, _location, numel, view_metadata = pid
    dtype = _dtype_of(storage_type)
    declared.setdefault(root_key, (dtype, int(numel)))
    root = storages.setdefault(root_key, _Storage(np.empty(0, dtype)))
    if view_metadata is None:
      return root
    _view_key, offset, view_size = view_metadata
    view = _Storage(np.empty(0, dtype))
    views.append((view, root_key, int(offset), int(view_size)))
    return view

  unpickler = _RestrictedUnpickler(f, load_storage)
  try:
    obj = unpickler.load()
    keys = _RestrictedUnpickler(f).load()
  except TorchPickleError:
    raise
  except Exception as e:
    raise TorchPickleError(f"{path}: corrupt torch checkpoint ({e}).") from e

  for key in keys:
    if key not in declared:
      raise TorchPickleError(f"{path}: storage {key!r} has bytes but no tensor.")
    dtype, numel = declared[key]
    count_bytes = f.read(8)
    if len(count_bytes) != 8:
      raise TorchPickleError(f"{path} is truncated before storage {key!r}.")
    (count,) = struct.unpack("<q" if little else ">q", count_bytes)
    if count != numel:
      raise TorchPickleError(f"{path}: storage {key!r} declares {numel} elements but "
                             f"holds {count}: the file is corrupt.")
    raw = f.read(count * dtype.itemsize)
    storages[key].data = _to_array(raw, dtype, count,
                                   "little" if little else "big", path)
  for view, root_key, offset, size in views:
    root = storages[root_key].data
    if offset < 0 or offset + size > root.size:
      raise TorchPickleError(f"{path}: a storage view reads past its root storage.")
    view.data = root[offset:offset + size]
  return _resolve(obj)


def _resolve(obj):
  """Rebuilds the tensors of an unpickled object once all storages are read."""
  if isinstance(obj, _Deferred):
    return _rebuild_tensor(*obj.args)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v)) for k, v in obj.items())
  if isinstance(obj, list):
    return [_resolve(v) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_resolve(v) for v in obj)
  return obj


# ---------------------------------------------------------------------------
# torch layout -> flax layout


class WeightMismatchError(ValueError):
  """Imported weights do not match the flax model (names or shapes)."""


def conv_kernel(weight: np.ndarray) -> np.ndarray:
  """torch/Caffe ``[out, in/groups, kh, kw]`` -> flax ``[kh, kw, in/groups, out]``."""
  return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))


def dense_kernel(weight: np.ndarray) -> np.ndarray:
  """torch/Caffe ``[out, in]`` -> flax ``[in, out]``."""
  return np.ascontiguousarray(np.transpose(weight))


def fill_variables(template: Mapping, assignments: Mapping[tuple[str, ...], np.ndarray],
                   *, source: str, unused: Mapping[str, tuple] | None = None) -> dict:
  """Fills a flax variables template, checking names and shapes all at once.

  Args:
    template: nested dict of arrays or ``jax.ShapeDtypeStruct`` (e.g. from
      ``jax.eval_shape(module.init, ...)``), the structure to fill.
    assignments: ``{path tuple: array}``, e.g. ``("params", "conv1", "kernel")``,
      already in flax layout.
    source: a description of where the weights came from, for the error.
    unused: source tensors that mapped to no path, ``{name: shape}``.

  Returns:
    A nested dict like ``template`` holding float32/int numpy arrays.

  Raises:
    WeightMismatchError: listing every missing, unexpected and mis-shaped
      tensor, so one run shows the whole problem.
  """
  problems = []
  flat_template = _flatten(template)
  for path in sorted(set(flat_template) - set(assignments)):
    problems.append(f"missing {'/'.join(path)} {tuple(flat_template[path].shape)}")
  for path in sorted(set(assignments) - set(flat_template)):
    problems.append(f"unexpected {'/'.join(path)} {tuple(np.shape(assignments[path]))}")
  for name, shape in sorted((unused or {}).items()):
    problems.append(f"unused source tensor {name} {tuple(shape)}")
  for path in sorted(set(assignments) & set(flat_template)):
    want, got = tuple(flat_template[path].shape), tuple(np.shape(assignments[path]))
    if want != got:
      problems.append(f"shape of {'/'.join(path)}: model {want}, {source} {got}")
  if problems:
    raise WeightMismatchError(
        f"The weights from {source} do not match the model ({len(problems)} "
        "problems):\n  " + "\n  ".join(problems) + "\nFix: use weights saved for this "
        "architecture (same layer names and sizes), or the matching model variant.")
  out: dict = {}
  for path, value in assignments.items():
    node = out
    for part in path[:-1]:
      node = node.setdefault(part, {})
    want_dtype = np.dtype(flat_template[path].dtype)
    node[path[-1]] = np.asarray(value, want_dtype)
  return out


def _flatten(tree, prefix=()):
  if isinstance(tree, Mapping):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, prefix + (k,)))
    return out
  return {prefix: tree}
