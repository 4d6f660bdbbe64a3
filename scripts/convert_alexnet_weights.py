"""Converts a torchvision-layout AlexNet state dict (.pth) to a foolingjax .npz.

    python scripts/convert_alexnet_weights.py alexnet-owt-7be5be79.pth alexnet.npz

The .pth is read by foolingjax's own reader (no torch needed, no pickle code
run); ``--reader=torch`` uses ``torch.load(weights_only=True)`` instead where
torch is installed. The file may hold a bare state dict or a checkpoint dict
with it under ``state_dict``/``model``; a ``module.`` prefix (DataParallel) is
stripped. Load the result with ``foolingjax.models.alexnet.load_npz``; it is
torchvision's AlexNet variant (``layout="torchvision"``, 224x224), not CaffeNet
(see ``foolingjax/models/alexnet.py``).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np


def read_state_dict(path: pathlib.Path, *, reader: str = "foolingjax") -> dict:
  """``{name: np.ndarray}`` from a torch file."""
  if reader == "torch":
    import torch  # optional; only on request
    obj = torch.load(path, map_location="cpu", weights_only=True)

    def to_numpy(v):
      return v.detach().cpu().numpy() if hasattr(v, "detach") else v
  else:
    from foolingjax.models import torch_pickle
    obj = torch_pickle.load(path)

    def to_numpy(v):
      return v
  for key in ("state_dict", "model"):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise SystemExit(f"{path} does not hold a state dict (found {type(obj).__name__}).")
  return {k.removeprefix("module."): np.asarray(to_numpy(v)) for k, v in obj.items()}


def main(argv: list[str] | None = None) -> pathlib.Path:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("input", type=pathlib.Path, help="torchvision AlexNet .pth")
  parser.add_argument("output", type=pathlib.Path, help="destination .npz")
  parser.add_argument("--reader", choices=("foolingjax", "torch"), default="foolingjax")
  args = parser.parse_args(argv)
  from foolingjax.models import alexnet
  classifier = alexnet.from_torchvision_state_dict(
      read_state_dict(args.input, reader=args.reader))
  path = alexnet.save_npz(args.output, classifier)
  n = sum(int(np.size(v)) for layer in classifier.params.values()
          for v in layer.values())
  print(f"Wrote {path}: torchvision-layout AlexNet, {n:,} parameters.")
  return path


if __name__ == "__main__":
  main(sys.argv[1:])
