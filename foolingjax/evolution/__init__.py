"""Evolving images: encodings, MAP-Elites over classes, and a resumable driver.

* :func:`make_encoding` builds an image encoding by name (``direct``, ``cppn``).
* :mod:`foolingjax.evolution.map_elites`: the pure archive, step and scan.
* :func:`foolingjax.evolution.driver.evolve`: runs MAP-Elites to a number of
  generations with checkpoints, resuming bit-identically.
"""

from __future__ import annotations

from foolingjax.evolution.encoding import Encoding

ENCODINGS = ("direct", "cppn")


def make_encoding(name: str, image_shape: tuple[int, int, int], **options) -> Encoding:
  """The encoding ``name`` for images of ``image_shape`` ``(H, W, C)``.

  Args:
    name: ``"direct"`` (one gene per pixel value) or ``"cppn"``.
    image_shape: ``(height, width, channels)``.
    **options: the encoding's own settings (see
      :func:`foolingjax.evolution.direct.make_encoding` and
      :func:`foolingjax.evolution.cppn.make_encoding`).
  """
  if len(tuple(image_shape)) != 3 or any(d is None for d in image_shape):
    raise ValueError(f"image_shape must be a concrete (H, W, C); got {image_shape}. Fix: "
                     "give the classifier's input shape (from_linen(..., input_shape=...)).")
  height, width, channels = image_shape
  if name == "direct":
    from foolingjax.evolution import direct
    return direct.make_encoding(height=height, width=width, channels=channels, **options)
  if name == "cppn":
    from foolingjax.evolution import cppn
    return cppn.make_encoding(height=height, width=width, channels=channels, **options)
  raise ValueError(f"Unknown encoding {name!r}. Fix: use one of {', '.join(ENCODINGS)}.")


__all__ = ["ENCODINGS", "Encoding", "make_encoding"]
