"""Seeing inside a CNN: attribution, feature visualisation, embeddings, synthesis.

Every function is pure and unjitted, and takes a classifier
``(apply_fn, params)`` (``apply_fn(params, x) -> logits``, ``x`` float32
``[B, H, W, C]`` in [0, 1]) or a feature extractor
``features(params, x) -> {layer name: activation}`` such as
``models.feature_fn(apply_fn)``. The caller jits once, closing over the
callables; every optimisation runs as one ``lax.scan``.

* :mod:`.attribution`: :func:`saliency`, :func:`smoothgrad`,
  :func:`guided_backprop` (:func:`guided_relu`, :func:`with_guided_relus`),
  :func:`occlusion`.
* :mod:`.ascent`: :func:`gradient_ascent` with L2 decay, blur, clipping and
  jitter; :func:`class_objective`, :func:`unit_objective`.
* :mod:`.dataset`: :func:`max_activating_patches` with receptive-field crops,
  :func:`filter_grid`.
* :mod:`.tsne`: exact :func:`tsne`.
* :mod:`.synthesis`: :func:`invert_features`, :func:`deep_dream`,
  :func:`style_transfer`, :func:`gram_matrix`, :func:`total_variation`.
"""

from foolingjax.images import gaussian_blur, gaussian_kernel
from foolingjax.visualize.ascent import (
    class_objective,
    gradient_ascent,
    unit_objective,
)
from foolingjax.visualize.attribution import (
    guided_backprop,
    guided_relu,
    guided_relu6,
    occlusion,
    occlusion_positions,
    occlusion_to_pixels,
    saliency,
    saliency_map,
    smoothgrad,
    with_guided_relus,
)
from foolingjax.visualize.dataset import (
    ReceptiveField,
    TopPatches,
    filter_grid,
    max_activating_patches,
    receptive_field,
    zoo_receptive_field,
)
from foolingjax.visualize.synthesis import (
    deep_dream,
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
    "ReceptiveField", "TSNEResult", "TopPatches", "class_objective",
    "conditional_probabilities", "deep_dream", "filter_grid", "gaussian_blur",
    "gaussian_kernel", "gradient_ascent", "gram_matrix", "guided_backprop",
    "guided_relu", "guided_relu6", "invert_features", "joint_probabilities",
    "max_activating_patches", "neighbour_agreement", "occlusion",
    "occlusion_positions", "occlusion_to_pixels", "receptive_field", "saliency",
    "saliency_map", "smoothgrad", "squared_distances", "style_transfer",
    "total_variation", "tsne", "unit_objective", "with_guided_relus",
    "zoo_receptive_field",
]
