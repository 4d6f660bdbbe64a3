"""Presets for the fooling-images experiment (MAP-Elites over classes).

Run:
  python -m experiments.nguyen2015.fool --config=experiments/nguyen2015/configs/fool.py:mnist_direct \
      --workdir=runs/fool_mnist_direct [--config.seed=1] [--config.classifier=...]

Presets:
  mnist_direct  LeNet on MNIST, direct encoding, the original's scale
                (population 200, 1001 generations).
  mnist_cppn    LeNet on MNIST, CPPN encoding, population 200, 1001 generations.
  imagenet_direct, imagenet_cppn
                EfficientNet-Lite0 (standing in for the paper's AlexNet), HSV
                direct / HLS CPPN at 224x224, population 16, 10 generations:
                CPU-sized, a few minutes on two cores.
  imagenet_direct_full, imagenet_cppn_full
                the paper's scale for accelerators: 256x256 renderings scored by
                the softmax averaged over 10 crops, population 400, 5001
                generations.
  smoke         a few generations, for the tests.
``config.classifier`` is any classifier spec of ``foolingjax.zoo.resolve``: a
zoo preset (``lenet_mnist``, ``lenet_mnist@1`` for seed 1, ...),
``efficientnet_lite0_imagenet``, ``init:<architecture>`` or a dotted path
``package.module:function`` to a function returning ``(apply_fn, params)``.
"""

import ml_collections


def get_config(preset: str = "mnist_direct"):
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.classifier = "lenet_mnist"  # any foolingjax.zoo.resolve spec, e.g. lenet_mnist@1
  c.num_classes = -1          # -1: take it from the classifier; else it must match
  c.encoding = "direct"       # direct | cppn
  c.population = 200          # offspring per generation (and initial population)
  c.generations = 1001
  c.log_every = 25            # generations per jitted scan (one metrics/progress line)
  c.checkpoint_every = 100    # generations between archive checkpoints and PNG grids
  c.ten_crop = False          # ImageNet fitness: softmax averaged over 10 crops
  c.shard = False             # split the population over all devices (NamedSharding)
  c.distributed = False       # jax.distributed.initialize() first (multi-host runs)

  c.direct = ml_collections.ConfigDict(dict(
      mutation_rate=0.1, eta_m=15.0, cross_rate=0.5, eta_c=10.0,
      mutation_decay=1.0, min_mutation_rate=0.0))
  c.cppn = ml_collections.ConfigDict(dict(max_nodes=16, max_conns=64))  # elites use <= 6 hidden nodes

  if preset == "mnist_direct":
    pass
  elif preset == "mnist_cppn":
    c.encoding = "cppn"
  elif preset.startswith("imagenet_"):
    c.classifier = "efficientnet_lite0_imagenet"
    c.encoding = "cppn" if "cppn" in preset else "direct"
    if preset.endswith("_full"):
      c.population = 400
      c.generations = 5001
      c.ten_crop = True
      c.checkpoint_every = 250
    else:
      c.population = 16
      c.generations = 10
      c.log_every = 5
      c.checkpoint_every = 5
    if preset.removesuffix("_full") not in ("imagenet_direct", "imagenet_cppn"):
      raise ValueError(f"Unknown preset {preset!r}.")
  elif preset == "smoke":
    c.population = 16
    c.generations = 6
    c.log_every = 2
    c.checkpoint_every = 4
  else:
    raise ValueError(f"Unknown preset {preset!r}; use mnist_direct, mnist_cppn, "
                     "imagenet_direct[_full], imagenet_cppn[_full] or smoke.")
  return c
