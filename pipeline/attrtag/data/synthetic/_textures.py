"""Creature coverings and patterns: the textures a small CNN must tell apart at 64 px.

The four coverings differ in scale and structure (short combed strokes, chevron feathers,
round scales, smooth glossy plates); a pattern darkens spots or stripes of the texture.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ._canvas import Color, shade, tint

#: A creature's body ellipse on the canvas: ``(cx, cy, a, b)`` (centre, half-axes).
Ellipse = tuple[float, float, float, float]


def paint_covering(draw: ImageDraw.ImageDraw, covering: str, box: Sequence[float], base: Color,
                   rng: np.random.Generator, u: float, body: Ellipse) -> None:
    """Fill ``box`` with the texture of ``covering`` (anything unknown is exoskeleton)."""
    if covering == "fur":
        _fur(draw, box, base, rng, u)
    elif covering == "feathers":
        _feathers(draw, box, base, rng, u)
    elif covering == "scales":
        _scales(draw, box, base, rng, u)
    else:
        _exoskeleton(draw, box, base, rng, u, body)


def _fur(draw: ImageDraw.ImageDraw, box: Sequence[float], base: Color, rng: np.random.Generator, u: float) -> None:
    """Dense short thin strokes in light and dark, combed in one direction."""
    light, dark = tint(base, 0.6), shade(base, 0.3)
    flow = rng.uniform(0, math.pi)
    step = 3.0 * u
    width = max(1, round(2 * u))
    x0, y0, x1, y1 = box
    for y in np.arange(y0, y1, step):
        for x in np.arange(x0, x1, step):
            px, py = x + rng.uniform(-1.5, 1.5) * u, y + rng.uniform(-1.5, 1.5) * u
            ang = flow + rng.normal(0, 0.3)
            length = rng.uniform(5, 8) * u
            dx, dy = math.cos(ang) * length / 2, math.sin(ang) * length / 2
            draw.line((px - dx, py - dy, px + dx, py + dy), fill=light if rng.random() < 0.5 else dark, width=width)


def _feathers(draw: ImageDraw.ImageDraw, box: Sequence[float], base: Color, rng: np.random.Generator, u: float) -> None:
    """Rows of overlapping chevron-shaped feathers pointing back, each with a dark edge and shaft."""
    dark = shade(base, 0.3)
    x0, y0, x1, y1 = box
    fl, fw = 16 * u, 7 * u
    width = max(1, round(2 * u))
    for r, y in enumerate(np.arange(y0 - fw, y1 + fw, 8 * u)):
        shift = (r % 2) * 6 * u
        # right to left: feathers nearer the tail lie on top, so their pointed tips show
        for x in np.arange(x1 + fl, x0 - fl, -12 * u):
            x = x + shift
            fill = tint(base, rng.uniform(0.15, 0.5))
            pts = [(x - fl, y), (x, y - fw), (x + 0.3 * fl, y), (x, y + fw)]
            draw.polygon(pts, fill=fill, outline=dark, width=width)
            draw.line((x - fl, y, x + 0.3 * fl, y), fill=dark, width=max(1, round(u)))


def _scales(draw: ImageDraw.ImageDraw, box: Sequence[float], base: Color, rng: np.random.Generator, u: float) -> None:
    """A regular grid of overlapping round scales; each row covers the upper half of the one
    above it, so semicircles show."""
    dark = shade(base, 0.3)
    x0, y0, x1, y1 = box
    r, dx, dy = 4.5 * u, 7 * u, 4 * u
    width = max(1, round(1.5 * u))
    for row, y in enumerate(np.arange(y0 - r, y1 + r, dy)):
        shift = (row % 2) * dx / 2
        for x in np.arange(x0 - r, x1 + r, dx):
            fill = tint(base, rng.uniform(0.1, 0.3))
            draw.ellipse((x + shift - r, y - r, x + shift + r, y + r), fill=fill, outline=dark, width=width)


def _exoskeleton(draw: ImageDraw.ImageDraw, box: Sequence[float], base: Color, rng: np.random.Generator,
                 u: float, body: Ellipse) -> None:
    """Smooth glossy plates: a top-lit gradient, a specular highlight, hard dark segment lines."""
    x0, y0, x1, y1 = box
    top, bottom = np.array(tint(base, 0.3), float), np.array(shade(base, 0.55), float)
    for y in range(int(y0), int(y1) + 1):
        t = (y - y0) / max(1.0, y1 - y0)
        draw.line((x0, y, x1, y), fill=tuple(int(v) for v in top * (1 - t) + bottom * t))
    cx, cy, a, b = body
    for k, f in enumerate((0.55, 0.8)):  # two nested ellipses fake a soft highlight
        hw, hh = a * 0.75 * (1 - 0.3 * k), b * 0.22 * (1 - 0.3 * k)
        hx, hy = cx - 0.1 * a, cy - 0.5 * b
        draw.ellipse((hx - hw, hy - hh, hx + hw, hy + hh), fill=tint(base, f))
    dark = shade(base, 0.15)
    n = int(rng.integers(3, 6))
    width = max(2, round(3 * u))
    for i in range(1, n + 1):  # segment lines, slightly bowed, also crossing the tail region
        sx = x0 + (x1 - x0) * i / (n + 1)
        bow = 0.15 * a
        draw.arc((sx - bow, y0 - 2, sx + bow, y1 + 2), 270, 90, fill=dark, width=width)
    draw.line((x0, cy + 0.05 * b, x1, cy + 0.05 * b), fill=dark, width=max(1, round(1.5 * u)))


def pattern_mask(size: int, pattern: str, rng: np.random.Generator, body: Ellipse,
                 box: Sequence[float]) -> Image.Image | None:
    """Where the pattern darkens the texture (``None`` for plain): dark spots on the body, or
    bands across the whole silhouette."""
    if pattern == "plain":
        return None
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, a, b = body
    if pattern == "spots":
        for _ in range(int(rng.integers(5, 9))):
            rho, phi = math.sqrt(rng.random()) * 0.8, rng.uniform(0, 2 * math.pi)
            x, y = cx + rho * a * math.cos(phi), cy + rho * b * math.sin(phi)
            r = rng.uniform(0.24, 0.34) * b
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        return mask
    # stripes: bands across the body axis, about half the period dark
    period = rng.uniform(0.42, 0.55) * a
    tilt = rng.uniform(-0.3, 0.3)
    x0, y0, x1, y1 = box
    h = y1 - y0
    start = x0 - h + rng.uniform(0, period)
    for x in np.arange(start, x1 + h, period):
        off = math.tan(tilt) * h
        draw.polygon([(x, y0), (x + period * 0.5, y0), (x + period * 0.5 + off, y1), (x + off, y1)], fill=255)
    return mask
