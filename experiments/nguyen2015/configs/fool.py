"""Presets for the fooling-images experiment (MAP-Elites over classes).

Run:
  python -m experiments.nguyen2015.fool --config=experiments/nguyen2015/configs/fool.py:mnist_direct \
      --workdir=runs/fool_mnist_direct [--config.seed=1] [--config.classifier=...]

Presets (append ``_original`` to any of them for the original code's variant
of the encoding, e.g. ``mnist_direct_original``; see
``foolingjax.evolution.direct`` and ``foolingjax.evolution.cppn``):
  mnist_direct  LeNet on MNIST, direct encoding, population 200, 1001
                generations (the original's 200 x 1010, rounded like its CPPN run).
  mnist_cppn    LeNet on MNIST, CPPN encoding, population 200, 1001 generations.
  imagenet_direct, imagenet_cppn
                EfficientNet-Lite0 (standing in for the paper's AlexNet) at
                224x224, population 16, 10 generations: CPU-sized, a few
                minutes on two cores.
  imagenet_direct_full
                the original code's direct run for accelerators: 256x256
                renderings scored by the softmax averaged over 10 crops,
                population 200, 5010 generations.
  imagenet_direct_paper
                the paper's text: as _full, 20,000 generations, the mutation
                rate halved every 1000 generations.
  imagenet_cppn_full
                the original's CPPN run: 10 crops, population 400, 5001 generations.
  imagenet_cppn_cpu, imagenet_direct_cpu
                the CPU-scale study of the README: all 1000 cells, one 224x224
                crop, population 128; 600 (CPPN) and 300 (direct) generations,
                about 40 and 35 minutes on two cores. Resumable, and a rerun
                with a larger --config.generations continues the same run.
  smoke         a few generations, for the tests.

``config.fitness`` is the archive's score: ``log_odds`` (default; keeps ranking
where the float32 softmax rounds to 1) or ``probability`` (the original's).
``config.stop_when_frozen`` ends a run once no cell can improve any more.
``config.classifier`` is any classifier spec of ``foolingjax.zoo.resolve``: a
zoo preset (``lenet_mnist``, ``lenet_mnist@1`` for seed 1, ...),
``efficientnet_lite0_imagenet``, ``init:<architecture>`` or a dotted path
``package.module:function`` to a function returning ``(apply_fn, params)``.
"""

import ml_collections
from ml_collections import config_dict

BASES = ("mnist_direct", "mnist_cppn", "imagenet_direct", "imagenet_cppn",
         "imagenet_direct_full", "imagenet_direct_paper", "imagenet_cppn_full",
         "imagenet_cppn_cpu", "imagenet_direct_cpu", "smoke")
PRESETS = BASES + tuple(f"{b}_original" for b in BASES if b != "smoke")


def get_config(preset: str = "mnist_direct"):
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r}; use one of {', '.join(PRESETS)}.")
  base = preset.removesuffix("_original")
  variant = "original" if preset.endswith("_original") else "foolingjax"
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.classifier = "lenet_mnist"  # any foolingjax.zoo.resolve spec, e.g. lenet_mnist@1
  c.num_classes = -1          # -1: take it from the classifier; else it must match
  c.encoding = "direct"       # direct | cppn
  c.fitness = "log_odds"      # log_odds | probability (the original's softmax)
  c.stop_when_frozen = True   # end the run once every cell's score is unbeatable
  c.population = 200          # offspring per generation (and initial population)
  c.generations = 1001
  c.log_every = 25            # generations per jitted scan (one metrics/progress line)
  c.checkpoint_every = 100    # generations between archive checkpoints and PNG grids
  c.ten_crop = False          # ImageNet fitness: softmax averaged over 10 crops
  # Reporting only (a finished run may be rerun with other values):
  c.grid_classes = ""         # e.g. "king penguin,starfish" or "145,327": elites_chosen.png
  c.cross_score = False       # also score the elites under the other ImageNet fitness
  c.shard = False             # split the population over all devices (NamedSharding)
  c.distributed = False       # jax.distributed.initialize() first (multi-host runs)
  c.coordinator_address = ""  # host:port of process 0; "" lets JAX find it (cluster env)
  c.num_processes = 0         # 0 lets JAX find it
  c.process_id = -1           # -1 lets JAX find it

  # None switches take the variant's value (foolingjax.evolution.direct.VARIANT_SWITCHES).
  c.direct = ml_collections.ConfigDict(dict(
      variant=variant, sbx_genes=config_dict.placeholder(str),
      sbx_equal_genes=config_dict.placeholder(str), quantize=config_dict.placeholder(bool),
      colour=config_dict.placeholder(str),
      mutation_rate=0.1, eta_m=15.0, cross_rate=0.5, eta_c=10.0,
      mutation_decay=1.0, mutation_halving_every=0, min_mutation_rate=0.0,
      # "fast": one threefry hash per gene, cheaper powers (same distributions, other
      # numbers); "reference" is what every README measurement ran.
      kernel="reference"))
  # (foolingjax.evolution.cppn.VARIANT_SWITCHES); elites use <= 6 hidden nodes.
  c.cppn = ml_collections.ConfigDict(dict(
      variant=variant, coordinates=config_dict.placeholder(str),
      output_map=config_dict.placeholder(str), colour=config_dict.placeholder(str),
      quantize=config_dict.placeholder(bool), change_conn_rate=config_dict.placeholder(float),
      max_nodes=16, max_conns=64))

  if base == "mnist_direct":
    pass
  elif base == "mnist_cppn":
    c.encoding = "cppn"
  elif base.startswith("imagenet_"):
    c.classifier = "efficientnet_lite0_imagenet"
    c.encoding = "cppn" if "cppn" in base else "direct"
    if base in ("imagenet_direct", "imagenet_cppn"):
      c.population = 16
      c.generations = 10
      c.log_every = 5
      c.checkpoint_every = 5
    elif base in ("imagenet_cppn_cpu", "imagenet_direct_cpu"):
      c.population = 128
      c.generations = 600 if c.encoding == "cppn" else 300
      c.log_every = 10
      c.checkpoint_every = 50
    else:
      c.ten_crop = True
      c.checkpoint_every = 250
      c.log_every = 25
      if base == "imagenet_cppn_full":
        c.population, c.generations = 400, 5001
      else:
        c.population = 200
        c.generations = 5010 if base == "imagenet_direct_full" else 20000
        c.checkpoint_every = 250 if base == "imagenet_direct_full" else 500
        if base == "imagenet_direct_paper":
          c.direct.mutation_halving_every = 1000
  elif base == "smoke":
    c.population = 16
    c.generations = 6
    c.log_every = 2
    c.checkpoint_every = 4
  return c
