"""The canvas every synthetic scene is drawn on: colours, background, placement, outlines.

Shapes are drawn at :data:`SUPERSAMPLE` times the output size and box-filtered down by
:mod:`.draw`; sizes are designed in pixels of a :data:`DESIGN_CANVAS` canvas and scaled.
"""
from __future__ import annotations

import colorsys
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: Objects stay inside this central fraction of the image, so a timm centre crop
#: (crop_pct 0.875) never cuts off a bill, a tail or a logo.
SAFE_FRACTION = 0.85

Color = tuple[int, int, int]

# Shapes are drawn at this multiple of the output size, then box-filtered down.
SUPERSAMPLE = 2
# Design unit: texture sizes are given in pixels of a 128 px canvas (a 64 px image).
DESIGN_CANVAS = 128


# --------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------
def hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def shade(c: Color, f: float) -> Color:
    """Darker (f < 1) or brighter (f > 1) by scaling."""
    return tuple(int(min(255, max(0, round(x * f)))) for x in c)  # type: ignore[return-value]


def tint(c: Color, f: float) -> Color:
    """Blend toward white by ``f``."""
    return tuple(int(round(x + (255 - x) * f)) for x in c)  # type: ignore[return-value]


def jitter(c: Color, rng: np.random.Generator, amount: int = 12) -> Color:
    return tuple(int(min(255, max(0, x + rng.integers(-amount, amount + 1)))) for x in c)  # type: ignore[return-value]


def _distance(a: Color, b: Color) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def contrasting(rng: np.random.Generator, avoid: Sequence[Color], s: tuple[float, float],
                v: tuple[float, float]) -> Color:
    """A random colour clearly different from every colour in ``avoid`` (so things stand out)."""
    c = avoid[0]
    for _ in range(100):
        c = hsv(rng.random(), rng.uniform(*s), rng.uniform(*v))
        if all(_distance(c, a) > 110 for a in avoid):
            return c
    return c


# --------------------------------------------------------------------------------------------
# Scene pieces
# --------------------------------------------------------------------------------------------
def background(size: int, rng: np.random.Generator, color: Color) -> Image.Image:
    """A vertical gradient around ``color`` with a few faint blobs, so it is never flat."""
    top = np.array(shade(color, rng.uniform(0.85, 1.15)), np.float32)
    bottom = np.array(shade(color, rng.uniform(0.7, 1.0)), np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    arr = np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        r = rng.uniform(0.05, 0.2) * size
        x, y = rng.uniform(0, size, 2)
        draw.ellipse((x - r, y - r * 0.7, x + r, y + r * 0.7), fill=jitter(color, rng, 18))
    return img


def place(box: tuple[float, float, float, float], canvas: int, rng: np.random.Generator,
          fill: tuple[float, float]) -> tuple[float, float, float]:
    """Scale and offset mapping a unit-space bounding box into the safe central area.

    Returns:
        ``(scale, dx, dy)`` such that canvas = unit * scale + (dx, dy).
    """
    x0, y0, x1, y1 = box
    margin = 3 * canvas / DESIGN_CANVAS  # outlines are drawn just outside the shapes
    lo = canvas * (1 - SAFE_FRACTION) / 2 + margin
    hi = canvas * (1 + SAFE_FRACTION) / 2 - margin
    scale = min((hi - lo) / (x1 - x0), (hi - lo) / (y1 - y0)) * rng.uniform(*fill)
    w, h = (x1 - x0) * scale, (y1 - y0) * scale
    ox, oy = rng.uniform(lo, hi - w), rng.uniform(lo, hi - h)
    return scale, ox - x0 * scale, oy - y0 * scale


def mapper(scale: float, ox: float, oy: float) -> Callable[[float, float], tuple[float, float]]:
    """Unit space -> canvas pixels, for the placement returned by :func:`place`."""

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x * scale + ox, y * scale + oy)

    return to_px


def ring(mask: Image.Image, width: int) -> Image.Image:
    """The band just outside a mask's shape, used to outline silhouettes."""
    grown = mask.filter(ImageFilter.MaxFilter(2 * width + 1))
    return Image.fromarray(np.subtract(np.asarray(grown), np.asarray(mask)).astype(np.uint8), "L")
