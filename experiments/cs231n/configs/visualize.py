"""Presets of the CNN-visualisation experiment.

Run:
  python -m experiments.cs231n.visualize --config=experiments/cs231n/configs/visualize.py:mnist \
      --workdir=runs/visualize_mnist [--config.classifier=lenet_mnist]
Presets:
  ``mnist``: the bundled LeNet, every part, MNIST test images (a few minutes
    on two CPU cores).
  ``imagenet``: EfficientNet-Lite0 (pretrained, offline) on the shipped photos
    (scikit-image's chelsea, coffee, astronaut, rocket; matplotlib's
    grace_hopper) at a reduced resolution; attribution, class models, filters,
    inversion, DeepDream, style transfer, and the newer attribution_plus,
    segmentation, activations and fourier parts.
  ``imagenet_fourier``: only the fourier part on EfficientNet-Lite0, 20
    named classes, pixel vs Fourier class models (the README measurement).
  ``smoke``: every MNIST part with tiny budgets on an untrained LeNet
    (``init:lenet``; seconds; used by the tests).
``config.classifier`` is any classifier spec of ``foolingjax.zoo.resolve``: a
zoo preset (``lenet_mnist``, ``lenet_mnist@1`` for seed 1, ...),
``efficientnet_lite0_imagenet``, ``init:<architecture>[@seed]`` (untrained) or
a dotted path ``package.module:function`` to a function returning
``(apply_fn, params)``. A user's model runs the parts that need only
``(apply_fn, params)``: attribution, class_models, and filters with
``--config.filter_layer`` set to one of its conv layers.
"""

import ml_collections


PRESETS = ("mnist", "imagenet", "imagenet_fourier", "smoke")


def get_config(preset: str = "mnist"):
  config = ml_collections.ConfigDict()
  config.preset = preset
  config.seed = 0
  config.classifier = "lenet_mnist"  # any zoo.resolve spec, see the docstring
  config.dataset = "mnist"
  config.parts = ("attribution,class_models,units,patches,filters,tsne,inversion,"
                  "deepdream,style,attribution_plus,segmentation,activations,fourier")
  config.num_examples = 10  # first test image of each class
  config.eval_batch_size = 256
  # attribution
  config.smoothgrad_samples = 50
  config.smoothgrad_noise = 0.15
  config.occlusion_patch = 6
  config.occlusion_stride = 2
  # regularised gradient ascent (class models and units)
  config.class_targets = tuple(range(10))
  config.ascent_steps = 400
  config.ascent_step_size = 0.02
  config.l2_decay = 0.002
  config.blur_every = 4
  config.blur_sigma = 0.5
  config.norm_clip_percentile = 10.0
  config.contribution_clip_percentile = 10.0
  config.jitter = 1
  config.center = 0.0  # MNIST's empty pixel is black
  config.init_noise = 0.05
  config.unit_layer = "conv2"
  config.unit_ids = tuple(range(10))
  # dataset patches and filters
  config.num_dataset_images = 2000
  config.patch_layer = "conv2"
  config.patch_units = tuple(range(8))
  config.top_k = 8
  config.filter_layer = "conv1"
  # t-SNE
  config.tsne_layer = "ip1"
  config.tsne_points = 2000
  config.perplexity = 30.0
  config.tsne_iters = 1000
  # feature inversion
  config.num_inversions = 3
  config.inversion_layers = ("conv1", "conv2", "ip1", "logits")
  config.inversion_steps = 400
  config.inversion_lr = 0.03
  config.tv_weight = 0.002
  # DeepDream
  config.num_dreams = 3
  config.dream_size = 56
  config.dream_layer = "conv2"
  config.octaves = 3
  config.octave_scale = 1.4
  config.dream_steps = 20
  config.dream_step_size = 0.02
  config.dream_jitter = 2
  # style transfer
  config.content_layer = "conv2"
  config.style_layers = ("conv1", "conv2")
  config.style_weights = (1.0, 1.0)
  config.content_weight = 3.0
  config.style_tv_weight = 0.003
  config.style_steps = 300
  config.style_lr = 0.02
  # attribution_plus: deconvnet, integrated gradients, Grad-CAM, unit guided BP
  config.ig_steps = 32
  config.ig_batch_size = 8  # path points per vectorised pass
  config.gradcam_layer = "conv2"
  # segmentation from the saliency map (Simonyan et al. 2014, section 3.1)
  config.seg_foreground_quantile = 0.95
  config.seg_background_quantile = 0.30
  config.seg_iterations = 4
  config.seg_smoothness = 1.0
  # activation view
  config.activation_layer = "conv1"
  config.num_activation_images = 2
  # Fourier-space class models vs pixel space (fourier part)
  config.fourier_targets = tuple(range(10))
  config.fourier_size = 0  # 0: the examples' size
  config.fourier_steps = 200
  config.fourier_lr = 0.05
  config.fourier_jitter = 2.0
  config.fourier_scale = 0.05  # zoom in 1 +- this
  config.fourier_angle = 5.0  # degrees
  config.fourier_augmentations = 8  # random crops/flips per image for the check
  config.fourier_eval_size = 0  # 0: the optimisation size
  # ImageNet photos
  config.photos = ""
  config.image_size = 224
  config.style_content = ""
  config.style_image = ""

  if preset == "mnist":
    pass
  elif preset == "smoke":
    config.classifier = "init:lenet"
    config.num_examples = 2
    config.smoothgrad_samples = 4
    config.occlusion_patch = 7
    config.occlusion_stride = 7
    config.class_targets = (0, 1, 2)
    config.ascent_steps = 5
    config.unit_ids = (0, 1)
    config.num_dataset_images = 64
    config.patch_units = (0, 1)
    config.top_k = 3
    config.tsne_points = 60
    config.perplexity = 10.0
    config.tsne_iters = 50
    config.num_inversions = 1
    config.inversion_layers = ("conv1",)
    config.inversion_steps = 5
    config.num_dreams = 1
    config.dream_size = 32
    config.octaves = 2
    config.dream_steps = 2
    config.style_steps = 3
    config.ig_steps = 4
    config.ig_batch_size = 0
    config.seg_iterations = 2
    config.fourier_targets = (0, 1)
    config.fourier_steps = 3
    config.fourier_augmentations = 2
  elif preset in ("imagenet", "imagenet_fourier"):
    config.classifier = "efficientnet_lite0_imagenet"
    config.photos = "chelsea,coffee,astronaut,rocket,grace_hopper"
    config.image_size = 160
    config.eval_batch_size = 16
    config.smoothgrad_samples = 8
    config.occlusion_patch = 32
    config.occlusion_stride = 16
    config.class_targets = (1, 130, 309, 945)  # goldfish, flamingo, bee, bell pepper
    config.ascent_steps = 60
    config.ascent_step_size = 0.03
    config.l2_decay = 0.002
    config.center = 0.5
    config.jitter = 8
    config.blur_sigma = 1.0
    config.filter_layer = "conv_stem"
    config.num_inversions = 2
    config.inversion_layers = ("blocks_2", "blocks_8")
    config.inversion_steps = 60
    config.inversion_lr = 0.05
    config.tv_weight = 1e-4
    config.num_dreams = 2
    config.dream_size = 160
    config.dream_layer = "blocks_8"
    config.dream_steps = 8
    config.dream_step_size = 0.02
    config.dream_jitter = 8
    config.style_content = "chelsea"
    config.style_image = "coffee"
    config.content_layer = "blocks_8"
    config.style_layers = ("stem", "blocks_2", "blocks_4")
    config.style_weights = (1.0, 1.0, 1.0)
    config.style_steps = 40
    config.style_lr = 0.03
    config.style_tv_weight = 1e-5
    config.ig_steps = 16
    config.ig_batch_size = 4
    config.gradcam_layer = "head"
    config.unit_layer = "blocks_8"
    config.activation_layer = "blocks_2"
    # 20 named classes: goldfish, ostrich, flamingo, king penguin, bee, monarch,
    # zebra, giant panda, balloon, basketball, castle, fire engine, golf ball,
    # teddy, bell pepper, mushroom, strawberry, banana, pizza, volcano.
    config.fourier_targets = (1, 9, 130, 145, 309, 323, 340, 388, 417, 430, 483,
                              555, 574, 850, 945, 947, 949, 954, 963, 980)
    config.fourier_size = 128
    config.fourier_steps = 60
    config.fourier_jitter = 8.0
    config.fourier_scale = 0.1
    config.fourier_angle = 10.0
    config.fourier_eval_size = 224
    config.parts = ("attribution,class_models,filters,inversion,deepdream,style,"
                    "attribution_plus,segmentation,activations,fourier")
    if preset == "imagenet_fourier":
      config.parts = "fourier"
      config.fourier_steps = 96
  else:
    raise ValueError(f"Unknown preset {preset!r}; use mnist, imagenet, "
                     "imagenet_fourier or smoke.")
  return config
