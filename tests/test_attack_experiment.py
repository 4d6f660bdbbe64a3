import json

import numpy as np
import pytest
from PIL import Image

from experiments import core
from experiments.attacks_defences import attack
from experiments.attacks_defences.configs import attack as attack_config
from tests.test_tensorboard import read_scalars


def test_smoke_run_writes_checked_files(tmp_path):
  config = attack_config.get_config("smoke")
  result = attack.run(config, tmp_path, log=lambda _: None)

  net = "fc10_wd1e-4_mnist"  # the bundled trained net: a fall in accuracy means something
  curves = json.loads((tmp_path / "curves.json").read_text())
  assert list(curves) == [net]
  assert set(curves[net]) == set(core.names(config.attacks))
  assert {"apgd_linf", "square_linf", "deepfool_l2"} <= set(curves[net])
  linf = curves[net]["pgd_linf"]
  assert [p["eps"] for p in linf] == list(config.eps_linf)
  accuracies = [p["accuracy"] for p in linf]
  # ε = 0 leaves the images alone, so every attack starts at clean accuracy,
  # which for the trained FC10 is high.
  assert len({c[0]["accuracy"] for c in curves[net].values()}) == 1
  assert accuracies[0] >= 0.85
  # Trained linear nets fall apart at ε = 0.1 and 0.3 L∞ (Goodfellow et al.).
  assert accuracies[1] < accuracies[0] - 0.3 and accuracies[-1] <= 0.05
  for attack_norm in curves[net]:
    points = [p["accuracy"] for p in curves[net][attack_norm]]
    assert points == sorted(points, reverse=True), attack_norm
  # DeepFool (minimum norm, run once) breaks most images within L2 1.0 of FC10.
  assert curves[net]["deepfool_l2"][1]["accuracy"] < accuracies[0] - 0.3
  # PGD is at least as strong as FGSM at every ε.
  for norm in ("linf", "l2"):
    for fgsm, pgd in zip(curves[net][f"fgsm_{norm}"], curves[net][f"pgd_{norm}"]):
      assert pgd["accuracy"] <= fgsm["accuracy"]
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == sum(len(config[f"eps_{name.split('_')[1]}"])
                           for name in core.names(config.attacks))
  assert json.loads(lines[0])["classifier"] == net

  lbfgs = json.loads((tmp_path / "lbfgs.json").read_text())
  assert lbfgs == json.loads(json.dumps(result["lbfgs"]))
  assert len(lbfgs["images"]) == config.lbfgs_num_images
  for record in lbfgs["images"]:
    assert record["target"] == (record["label"] + 1) % 10
    if record["success"]:
      assert record["adversarial_prediction"] == record["target"]
      np.testing.assert_allclose(record["rms_distortion"],
                                 record["l2"] / np.sqrt(784), rtol=1e-4)
  assert lbfgs["success_rate"] == np.mean([r["success"] for r in lbfgs["images"]])
  assert lbfgs["success_rate"] == 1.0  # L-BFGS flips a trained FC10 on every image

  # TensorBoard: one tag per attack, step = the ε's index, values as in curves.json.
  scalars = read_scalars(tmp_path / "tensorboard")
  for attack_norm, points in curves[net].items():
    for i, point in enumerate(points):
      assert scalars[(i, f"accuracy/{net}/{attack_norm}")] == pytest.approx(point["accuracy"])
      assert scalars[(i, f"eps/{net}/{attack_norm}")] == pytest.approx(point["eps"])
  assert scalars[(0, "lbfgs/success_rate")] == lbfgs["success_rate"]

  for name in ("accuracy_vs_eps.png", "lbfgs_grid.png"):
    with Image.open(tmp_path / name) as png:
      png.verify()
  with Image.open(tmp_path / "lbfgs_grid.png") as png:
    # save_grid: 1.6 inch tiles at 100 dpi, 3 columns x 3 rows + a 0.4 inch title.
    assert png.size == (480, 520)
    pixels = np.asarray(png.convert("L"))
    assert pixels.std() > 10  # not blank
  assert json.loads((tmp_path / "config.json").read_text())["preset"] == "smoke"

  other = attack_config.get_config("smoke")
  other.pgd_steps = 4
  with pytest.raises(core.WorkdirConflictError):
    attack.run(other, tmp_path, log=lambda _: None)


def test_bad_eps_in_config_is_rejected(tmp_path):
  config = attack_config.get_config("smoke")
  config.eps_linf = (0.1, -0.2)
  with pytest.raises(ValueError, match=r"eps_linf holds -0.2"):
    attack.run(config, tmp_path, log=lambda _: None)


# A user's model through every experiment's path is also tested, faster, by
# test_szegedy, test_nguyen and test_resolve; this one runs with -m slow.
@pytest.mark.slow
def test_user_model_by_dotted_path(tmp_path):
  config = attack_config.get_config("smoke")
  config.classifiers = "tests.user_models:tiny_mnist_classifier"
  config.lbfgs_classifier = "tests.user_models:tiny_mnist_classifier"
  result = attack.run(config, tmp_path, log=lambda _: None)
  assert list(result["curves"]) == ["tests.user_models:tiny_mnist_classifier"]
  assert len(result["lbfgs"]["images"]) == config.lbfgs_num_images


def test_unknown_classifier_fails_before_the_workdir(tmp_path):
  config = attack_config.get_config("smoke")
  config.classifiers = "lenet_mnist,mymod:cnn"
  with pytest.raises(ValueError, match="mymod:cnn"):
    attack.run(config, tmp_path / "run", log=lambda _: None)
  assert not (tmp_path / "run").exists()
