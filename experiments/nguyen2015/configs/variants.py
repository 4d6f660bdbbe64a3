"""Presets for the side-by-side measurement of the encodings' variants and scores.

Run:
  python -m experiments.nguyen2015.variants \
      --config=experiments/nguyen2015/configs/variants.py:mnist --workdir=runs/variants

Each arm is ``encoding:variant:fitness`` (encoding direct | cppn; variant
original | foolingjax, or a variant with one switch changed,
``original+coordinates=centred``; fitness probability | log_odds) and runs
``seeds`` MAP-Elites runs under one vmap at the paper's population.

Presets:
  mnist     the 2 x 2 x 2 arms on LeNet/MNIST, 5 seeds, population 200, 250
            generations (the paper's claims are about generations 50 and 200).
  ablation  each encoding's original variant with one switch at a time set to
            foolingjax's (and the CPPN's foolingjax variant with one switch set
            to the original's), log-odds score, same scale: which difference
            does what.
  smoke     two tiny arms, for the tests.
"""

import ml_collections

ARMS = ",".join(f"{e}:{v}:{f}" for e in ("direct", "cppn") for v in ("original", "foolingjax")
                for f in ("probability", "log_odds"))
ABLATION = ",".join(
    ["direct:original:log_odds"]
    + [f"direct:original+{s}:log_odds" for s in ("sbx_genes=half", "sbx_equal_genes=parent",
                                                 "quantize=false")]
    + ["cppn:original:log_odds"]
    + [f"cppn:original+{s}:log_odds" for s in ("coordinates=centred", "output_map=affine",
                                               "quantize=false", "change_conn_rate=0.5")]
    + ["cppn:foolingjax:log_odds"]
    + [f"cppn:foolingjax+{s}:log_odds" for s in ("coordinates=pixel_index", "output_map=abs",
                                                 "change_conn_rate=0.0")])


PRESETS = ("mnist", "ablation", "smoke")


def get_config(preset: str = "mnist"):
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.classifier = "lenet_mnist"
  c.arms = ARMS
  c.seeds = 5
  c.population = 200
  c.generations = 250
  c.log_every = 25
  c.checkpoint_every = 50
  c.cppn = ml_collections.ConfigDict(dict(max_nodes=16, max_conns=64))
  if preset == "mnist":
    pass
  elif preset == "ablation":
    c.arms = ABLATION
  elif preset == "smoke":
    c.arms = "direct:original:probability,cppn:foolingjax:log_odds"
    c.seeds = 2
    c.population = 8
    c.generations = 4
    c.log_every = 2
    c.checkpoint_every = 2
  else:
    raise ValueError(f"Unknown preset {preset!r}; use mnist, ablation or smoke.")
  return c
