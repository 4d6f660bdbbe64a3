import json

import numpy as np
import pytest
from PIL import Image

from experiments import common
from experiments.attacks_defences import attack
from experiments.attacks_defences.configs import attack as attack_config


def test_smoke_run_writes_checked_files(tmp_path):
  config = attack_config.get_config("smoke")
  result = attack.run(config, tmp_path, log=lambda _: None)

  curves = json.loads((tmp_path / "curves.json").read_text())
  assert list(curves) == ["init:fc10"]
  assert set(curves["init:fc10"]) == {"fgsm_linf", "pgd_linf", "fgsm_l2", "pgd_l2"}
  linf = curves["init:fc10"]["pgd_linf"]
  assert [p["eps"] for p in linf] == list(config.eps_linf)
  accuracies = [p["accuracy"] for p in linf]
  assert all(0.0 <= a <= 1.0 for a in accuracies)
  # ε = 0 leaves the images alone, so every attack starts at clean accuracy.
  assert len({c[0]["accuracy"] for c in curves["init:fc10"].values()}) == 1
  # At ε = 0.3 PGD leaves no more correct predictions than at ε = 0.
  assert accuracies[-1] <= accuracies[0]
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2 * len(config.eps_linf) + 2 * len(config.eps_l2)
  assert json.loads(lines[0])["classifier"] == "init:fc10"

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
  with pytest.raises(common.WorkdirConflictError):
    attack.run(other, tmp_path, log=lambda _: None)


def test_bad_eps_in_config_is_rejected(tmp_path):
  config = attack_config.get_config("smoke")
  config.eps_linf = (0.1, -0.2)
  with pytest.raises(ValueError, match=r"eps_linf holds -0.2"):
    attack.run(config, tmp_path, log=lambda _: None)
