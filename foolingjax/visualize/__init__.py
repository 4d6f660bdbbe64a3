"""Seeing inside a CNN: attribution, feature visualisation, embeddings, synthesis.

Every function is pure and unjitted, and takes a classifier
``(apply_fn, params)`` (``apply_fn(params, x) -> logits``, ``x`` float32
``[B, H, W, C]`` in [0, 1]) or a feature extractor
``features(params, x) -> {layer name: activation}`` such as
``models.feature_fn(apply_fn)``. The caller jits once, closing over the
callables; every optimisation runs as one ``lax.scan``.

* :mod:`.attribution`: :func:`saliency`, :func:`smoothgrad`,
  :func:`guided_backprop` (:func:`guided_relu`, :func:`with_guided_relus`),
  :func:`deconvnet` (:func:`deconv_relu`, :func:`with_relu_rule`),
  :func:`unit_backprop` (guided/deconvnet from any unit of any layer),
  :func:`integrated_gradients`, :func:`grad_cam` (:func:`layer_gradients`,
  :func:`with_layer_offset`), :func:`occlusion`.
* :mod:`.segmentation`: :func:`segment_from_saliency` (Simonyan et al.'s
  saliency-seeded colour segmentation, mean-field on a 4-neighbour grid).
* :mod:`.ascent`: :func:`gradient_ascent` with L2 decay, blur, clipping and
  jitter; :func:`class_objective`, :func:`unit_objective`.
* :mod:`.fourier`: :func:`fourier_ascent` on lucid's decorrelated Fourier
  parameterisation (:func:`fourier_image`, :func:`fourier_init`,
  :func:`image_to_spectrum`) with :func:`random_transform` per step.
* :mod:`.dataset`: :func:`max_activating_patches` with receptive-field crops,
  :func:`filter_grid`, :func:`activation_grid` (every channel of a layer).
* :mod:`.tsne`: exact :func:`tsne`.
* :mod:`.synthesis`: :func:`invert_features`, :func:`deep_dream`
  (:func:`dream_objective`), :func:`style_transfer`, :func:`gram_matrix`,
  :func:`total_variation`.
"""

from foolingjax.images import gaussian_blur, gaussian_kernel
from foolingjax.visualize.ascent import (
    class_objective,
    gradient_ascent,
    unit_objective,
)
from foolingjax.visualize.attribution import (
    RELU_RULES,
    deconv_relu,
    deconv_relu6,
    deconvnet,
    grad_cam,
    guided_backprop,
    guided_relu,
    guided_relu6,
    integrated_gradients,
    layer_gradients,
    occlusion,
    occlusion_positions,
    occlusion_to_pixels,
    saliency,
    saliency_map,
    smoothgrad,
    unit_backprop,
    with_guided_relus,
    with_layer_offset,
    with_relu_rule,
)
from foolingjax.visualize.dataset import (
    ReceptiveField,
    TopPatches,
    activation_grid,
    filter_grid,
    max_activating_patches,
    receptive_field,
    tile_channels,
    zoo_receptive_field,
)
from foolingjax.visualize.fourier import (
    COLOR_CORRELATION,
    COLOR_CORRELATION_SVD_SQRT,
    fourier_ascent,
    fourier_image,
    fourier_init,
    image_to_spectrum,
    random_transform,
    spectrum_scale,
)
from foolingjax.visualize.segmentation import segment_from_saliency
from foolingjax.visualize.synthesis import (
    deep_dream,
    dream_objective,
    gram_matrix,
    invert_features,
    style_transfer,
    total_variation,
)
from foolingjax.visualize.tsne import (
    TSNEResult,
    conditional_probabilities,
    joint_probabilities,
    neighbour_agreement,
    squared_distances,
    tsne,
)

__all__ = [
    "COLOR_CORRELATION", "COLOR_CORRELATION_SVD_SQRT", "RELU_RULES",
    "ReceptiveField", "TSNEResult", "TopPatches", "activation_grid",
    "class_objective", "conditional_probabilities", "deconv_relu", "deconv_relu6",
    "deconvnet", "deep_dream", "dream_objective", "filter_grid", "fourier_ascent",
    "fourier_image", "fourier_init", "gaussian_blur", "gaussian_kernel",
    "grad_cam", "gradient_ascent", "gram_matrix", "guided_backprop", "guided_relu",
    "guided_relu6", "image_to_spectrum", "integrated_gradients", "invert_features",
    "joint_probabilities", "layer_gradients", "max_activating_patches",
    "neighbour_agreement", "occlusion", "occlusion_positions",
    "occlusion_to_pixels", "random_transform", "receptive_field", "saliency",
    "saliency_map", "segment_from_saliency", "smoothgrad", "spectrum_scale",
    "squared_distances", "style_transfer", "tile_channels", "total_variation",
    "tsne", "unit_backprop", "unit_objective", "with_guided_relus",
    "with_layer_offset", "with_relu_rule", "zoo_receptive_field",
]
