"""Creature images: a body and a head in a covering and a pattern, with or without bill and tail.

The geometry is designed in unit space (body half-length 1, facing right), placed in the safe
area and mirrored at random. Duck bills are orange and beaks red, on top of their shapes; a
tail stands clear of the body and ends in a pale tuft.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from ._canvas import (
    DESIGN_CANVAS, SUPERSAMPLE, Color, background, contrasting, hsv, jitter, mapper, place, ring, shade,
)
from ._textures import Ellipse, paint_covering, pattern_mask

# Duck bills and beaks are about these colours; creature backgrounds keep away from them.
_DUCK_ORANGE: Color = (250, 165, 25)
_BEAK_RED: Color = (215, 35, 45)

#: Unit space -> canvas pixels (see :func:`._canvas.mapper`).
ToPx = Callable[[float, float], tuple[float, float]]


@dataclass(frozen=True)
class _Shape:
    """A creature's geometry in unit space (body half-length 1, facing right)."""

    b: float  # body half-height
    hx: float  # head centre and radius
    hy: float
    hr: float
    tail: list[tuple[float, float]]  # the tail's outline polygon
    tip: tuple[float, float]  # the end of the tail's centre line
    tuft_r: float
    bill_end: float  # where the longer bill ends

    def bounds(self) -> tuple[float, float, float, float]:
        """The box of body, head, tail and the longer bill, whether or not tail and bill are drawn.

        So the object's scale and position say nothing about its tail or bill.
        """
        xs = [-1.0, self.bill_end, self.tip[0] - self.tuft_r] + [p[0] for p in self.tail]
        ys = [-self.b, self.b, self.hy - self.hr, self.hy + self.hr, self.tip[1] - self.tuft_r]
        ys += [p[1] for p in self.tail]
        return (min(xs), min(ys), max(xs), max(ys))


def creature(truth: dict[str, str], size: int, rng: np.random.Generator) -> Image.Image:
    """A creature with the attributes of ``truth``, on a canvas ``SUPERSAMPLE`` times ``size``."""
    canvas = size * SUPERSAMPLE
    u = canvas / DESIGN_CANVAS
    body_color = hsv(rng.random(), rng.uniform(0.35, 0.85), rng.uniform(0.6, 0.95))
    # Not dark and neither bill colour: outlines and bills must stand out from the background
    # as well as from the body.
    bg_color = contrasting(rng, [body_color, _DUCK_ORANGE, _BEAK_RED], (0.1, 0.6), (0.45, 0.95))
    img = background(canvas, rng, bg_color)
    shape = _shape(rng)
    scale, ox, oy = place(shape.bounds(), canvas, rng, (0.95, 1.0))
    to_px = mapper(scale, ox, oy)
    body = (*to_px(0, 0), scale, shape.b * scale)
    mask = _silhouette(shape, to_px, scale, canvas, truth["tail"] == "yes")
    img.paste(_skin(truth, body_color, mask, body, rng, u), (0, 0), mask)
    outline = shade(body_color, 0.2)
    line_w = max(1, round(1.5 * u))
    img.paste(outline, (0, 0), ring(mask, line_w))

    draw = ImageDraw.Draw(img)
    if truth["tail"] == "yes":
        _tuft(draw, to_px(*shape.tip), shape.tuft_r * scale, outline, line_w, rng)
    _bill(draw, truth["bill"], shape, to_px, outline, line_w, rng)
    _eye(draw, shape, to_px, scale, u)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def _shape(rng: np.random.Generator) -> _Shape:
    """A random body, head and tail (the tail's geometry is drawn even when it is not shown)."""
    b = rng.uniform(0.52, 0.62)
    hx, hy, hr = 0.82, -0.45 * b, rng.uniform(0.55, 0.6)
    # The tail leaves the rear end backwards and up (image y grows downwards), clear of the body.
    tail_start = (-0.88, -0.15 * b)
    tail_angle = math.pi + rng.uniform(0.25, 0.8)
    tail_len, tail_curl, tail_w = rng.uniform(0.9, 1.1), rng.uniform(-0.25, 0.25), 0.5 * b
    tail, tip = _tail_polygon(tail_start, tail_angle, tail_len, tail_curl, tail_w)
    return _Shape(b=b, hx=hx, hy=hy, hr=hr, tail=tail, tip=tip, tuft_r=0.32 * b, bill_end=hx + 2.1 * hr)


def _tail_polygon(start: tuple[float, float], angle: float, length: float, curl: float,
                  width: float) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    """A tapered, gently curved tail from ``start`` (unit space, pointing along ``angle``).

    Returns:
        The outline polygon and the tip (end of the centre line).
    """
    dx, dy = math.cos(angle), math.sin(angle)
    px, py = -dy, dx
    left, right = [], []
    cx = cy = 0.0
    for t in np.linspace(0, 1, 9):
        cx = start[0] + length * (t * dx + curl * t * t * px)
        cy = start[1] + length * (t * dy + curl * t * t * py)
        w = width * (1 - 0.75 * t)
        left.append((cx + w * px, cy + w * py))
        right.append((cx - w * px, cy - w * py))
    return left + right[::-1], (cx, cy)


def _silhouette(shape: _Shape, to_px: ToPx, scale: float, canvas: int, tail: bool) -> Image.Image:
    """The mask of body, head and (when it is drawn) tail."""
    cx, cy = to_px(0, 0)
    a, b, hr = scale, shape.b * scale, shape.hr * scale
    hx, hy = to_px(shape.hx, shape.hy)
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse((cx - a, cy - b, cx + a, cy + b), fill=255)
    draw.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), fill=255)
    if tail:
        draw.polygon([to_px(*p) for p in shape.tail], fill=255)
    return mask


def _skin(truth: dict[str, str], color: Color, mask: Image.Image, body: Ellipse, rng: np.random.Generator,
          u: float) -> Image.Image:
    """The covering's texture over the silhouette's box, darkened where the pattern is."""
    canvas = mask.width
    bbox = mask.getbbox() or (0, 0, canvas, canvas)
    box = (bbox[0] - 2, bbox[1] - 2, bbox[2] + 2, bbox[3] + 2)
    tex = Image.new("RGB", (canvas, canvas), color)
    paint_covering(ImageDraw.Draw(tex), truth["covering"], box, color, rng, u, body)
    pmask = pattern_mask(canvas, truth["pattern"], rng, body, box)
    if pmask is None:
        return tex
    factor = np.array(hsv(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.18, 0.32)), np.float32) / 255
    arr = np.asarray(tex, np.float32)
    m = np.asarray(pmask, np.float32)[..., None] / 255
    arr = arr * (1 - m) + arr * factor * m
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _tuft(draw: ImageDraw.ImageDraw, centre: tuple[float, float], r: float, outline: Color, width: int,
          rng: np.random.Generator) -> None:
    # A pale round tuft marks the tail's end. Round and pale, so it is not mistaken for a
    # (pointed, dark) beak; a dark pointed tip was, in a learnability check.
    tx, ty = centre
    draw.ellipse((tx - r, ty - r, tx + r, ty + r), fill=jitter((245, 238, 215), rng, 8), outline=outline, width=width)


def _bill(draw: ImageDraw.ImageDraw, kind: str, shape: _Shape, to_px: ToPx, outline: Color, width: int,
          rng: np.random.Generator) -> None:
    # Bill colour helps, as it does in nature: duck bills are orange, beaks red (dark beaks
    # were confused with dark outlines and patterns in a learnability check). The shapes
    # differ too (flat and rounded vs. pointed), and body colours may take either colour.
    hx, hy, hr = shape.hx, shape.hy, shape.hr
    if kind == "duck":
        bill_color = jitter(_DUCK_ORANGE, rng, 25)
        x0, y0 = to_px(hx + 0.45 * hr, hy - 0.25 * hr)
        x1, y1 = to_px(shape.bill_end, hy + 0.85 * hr)
        draw.rounded_rectangle((x0, y0, x1, y1), radius=(y1 - y0) / 2, fill=bill_color, outline=outline, width=width)
        ym = (y0 + y1) / 2  # the line between the two mandibles
        draw.line((x0 + (x1 - x0) * 0.2, ym, x1 - (y1 - y0) * 0.4, ym), fill=outline, width=width)
    elif kind == "beak":
        bill_color = jitter(_BEAK_RED, rng, 25)
        base_x = hx + 0.45 * hr
        pts = [to_px(base_x, hy - 0.85 * hr), to_px(shape.bill_end, hy + 0.35 * hr), to_px(base_x, hy + 1.0 * hr)]
        draw.polygon(pts, fill=bill_color, outline=outline, width=width)


def _eye(draw: ImageDraw.ImageDraw, shape: _Shape, to_px: ToPx, scale: float, u: float) -> None:
    ex, ey = to_px(shape.hx + 0.15 * shape.hr, shape.hy - 0.3 * shape.hr)
    er = max(1.5 * u, 0.2 * (shape.hr * scale))
    draw.ellipse((ex - er, ey - er, ex + er, ey + er), fill=(255, 255, 255))
    draw.ellipse((ex - er * 0.55, ey - er * 0.55, ex + er * 0.55, ey + er * 0.55), fill=(15, 15, 15))
