"""Drawing the synthetic demo world: creatures and logo scenes whose attributes are known exactly.

Every cue is deliberately strong at 64 px, so that a small CNN learns it from scratch: the four
textures differ in scale and structure, duck bills are orange and beaks red (on top of their
shapes), a tail stands clear of the body and ends in a pale tuft, and backgrounds avoid dark tones
and both bill colours. Body colour, size, position, facing and background vary at random, and
objects stay inside the central :data:`SAFE_FRACTION` of the image. Shapes are drawn at twice
the output size and box-filtered down, which antialiases edges without blurring the textures.

Only numpy and PIL; every image is a function of its random generator. Creatures are drawn by
:mod:`._creature` (coverings and patterns in :mod:`._textures`), logo scenes by :mod:`._logo`,
both on the canvas of :mod:`._canvas`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ._canvas import SAFE_FRACTION
from ._canvas import place as _place  # noqa: F401 - the placement tests reach it here
from ._creature import creature
from ._logo import logo_scene

__all__ = ["SAFE_FRACTION", "render"]


def render(kind: str, truth: dict[str, str], *, image_size: int = 64, seed: int | Sequence[int] = 0) -> Image.Image:
    """Draw one image with the given attributes.

    Args:
        kind: ``"creature"`` (``truth`` has covering/pattern/bill/tail) or ``"logo"``
            (``truth`` has logo/medium).
        truth: the attribute values to draw.
        image_size: side of the square output image in pixels.
        seed: seed of this image's random stream (colours, placement, texture jitter); a
            sequence is an entropy list as ``numpy.random.default_rng`` takes it.

    Returns:
        An RGB image of ``image_size`` x ``image_size`` pixels.
    """
    return _render(kind, truth, image_size, np.random.default_rng(seed))


def _render(kind: str, truth: dict[str, str], size: int, rng: np.random.Generator) -> Image.Image:
    img = creature(truth, size, rng) if kind == "creature" else logo_scene(truth, size, rng)
    img = img.resize((size, size), Image.Resampling.BOX)
    # Pixel noise after downsampling, so that flat areas are never exactly flat.
    arr = np.asarray(img, np.int16) + rng.normal(0, rng.uniform(2, 7), (size, size, 3)).round().astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
