"""Logo images: one of four brand marks printed on a sign, a billboard or a bottle, and stickers.

Stickers (a multi-label group: any of star, arrow, badge, or none) are drawn last, each in a
colour and shape no brand mark or medium has (a magenta star, a cyan arrow, a white badge with a
black ring), in its own third of the image width, so they never hide each other.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ._canvas import DESIGN_CANVAS, SUPERSAMPLE, background, hsv, jitter, mapper, place, shade, tint


def logo_scene(truth: dict[str, str], size: int, rng: np.random.Generator) -> Image.Image:
    """A logo scene with the attributes of ``truth``, on a canvas ``SUPERSAMPLE`` times ``size``."""
    canvas = size * SUPERSAMPLE
    u = canvas / DESIGN_CANVAS
    bg_color = hsv(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))
    img = background(canvas, rng, bg_color)
    draw = ImageDraw.Draw(img)
    panel = jitter(tint(hsv(rng.random(), rng.uniform(0.0, 0.3), 1.0), rng.uniform(0.5, 0.9)), rng, 6)
    edge_color = (40, 40, 40)
    edge = max(1, round(1.5 * u))
    post = jitter((110, 95, 80), rng, 25)
    medium = truth["medium"]
    if medium == "sign":
        ph, post_len = rng.uniform(0.75, 0.9), rng.uniform(0.5, 0.75)
        scale, ox, oy = place((-0.5, 0.0, 0.5, ph + post_len), canvas, rng, (0.65, 0.85))
        P = mapper(scale, ox, oy)
        draw.rectangle((*P(-0.06, ph), *P(0.06, ph + post_len)), fill=post)
        draw.rectangle((*P(-0.5, 0), *P(0.5, ph)), fill=panel, outline=edge_color, width=edge)
        _brand(draw, truth["logo"], *P(0, ph / 2), 0.7 * ph * scale, rng, u)
    elif medium == "billboard":
        ph, leg = rng.uniform(0.4, 0.48), rng.uniform(0.25, 0.4)
        scale, ox, oy = place((-0.5, 0.0, 0.5, ph + leg), canvas, rng, (0.85, 1.0))
        P = mapper(scale, ox, oy)
        for lx in (-0.3, 0.3):
            draw.rectangle((*P(lx - 0.03, ph), *P(lx + 0.03, ph + leg)), fill=post)
        draw.rectangle((*P(-0.5, 0), *P(0.5, ph)), fill=panel, outline=edge_color, width=edge)
        _brand(draw, truth["logo"], *P(-0.25, ph / 2), 0.75 * ph * scale, rng, u)
        for k in range(int(rng.integers(2, 4))):  # a few "lines of text" beside the mark
            ty = ph * (0.3 + 0.2 * k)
            draw.rectangle((*P(0.02, ty - 0.03), *P(rng.uniform(0.25, 0.42), ty + 0.03)), fill=shade(panel, 0.45))
    else:  # bottle
        bh = rng.uniform(1.5, 1.8)
        # unit space: body width 1, neck on top, cap above it
        scale, ox, oy = place((-0.5, -0.85, 0.5, bh), canvas, rng, (0.75, 0.95))
        P = mapper(scale, ox, oy)
        glass = hsv(rng.choice([0.08, 0.3, 0.38, 0.55, 0.6]), rng.uniform(0.4, 0.8), rng.uniform(0.35, 0.7))
        draw.rectangle((*P(-0.2, -0.75), *P(0.2, -0.2)), fill=glass, outline=edge_color, width=edge)
        draw.rectangle((*P(-0.24, -0.85), *P(0.24, -0.68)), fill=jitter((200, 40, 40), rng, 40))
        draw.polygon([P(-0.2, -0.2), P(0.2, -0.2), P(0.5, 0.15), P(-0.5, 0.15)], fill=glass, outline=edge_color)
        draw.rounded_rectangle((*P(-0.5, 0.1), *P(0.5, bh)), radius=0.12 * scale, fill=glass,
                               outline=edge_color, width=edge)
        draw.rectangle((*P(-0.38, 0.2), *P(-0.28, bh - 0.1)), fill=tint(glass, 0.4))  # highlight
        ly0, ly1 = bh * 0.35, bh * 0.35 + 0.75
        draw.rectangle((*P(-0.5, ly0), *P(0.5, ly1)), fill=panel, outline=edge_color, width=edge)
        _brand(draw, truth["logo"], *P(0, (ly0 + ly1) / 2), 0.62 * scale, rng, u)
    shown = truth.get("stickers", "[]")
    for slot, sticker in enumerate(("star", "arrow", "badge")):
        if sticker in shown.split("|"):
            _sticker(draw, sticker, slot, canvas, rng, u)
    return img


def _sticker(draw: ImageDraw.ImageDraw, sticker: str, slot: int, canvas: int, rng: np.random.Generator,
             u: float) -> None:
    """One sticker in third ``slot`` of the image's width, inside the safe area, at a random height."""
    r = canvas * rng.uniform(0.07, 0.09)
    lo, hi = canvas * 0.12 + r, canvas * 0.88 - r
    x = canvas * (0.22 + 0.28 * slot) + rng.uniform(-0.04, 0.04) * canvas
    y = rng.uniform(lo, hi)
    if sticker == "star":
        pts = [(x + (r if k % 2 == 0 else 0.45 * r) * np.sin(k * np.pi / 5),
                y - (r if k % 2 == 0 else 0.45 * r) * np.cos(k * np.pi / 5)) for k in range(10)]
        draw.polygon(pts, fill=jitter((230, 40, 200), rng, 15))
    elif sticker == "arrow":
        pts = [(x - r, y - 0.3 * r), (x + 0.1 * r, y - 0.3 * r), (x + 0.1 * r, y - 0.8 * r), (x + r, y),
               (x + 0.1 * r, y + 0.8 * r), (x + 0.1 * r, y + 0.3 * r), (x - r, y + 0.3 * r)]
        draw.polygon(pts, fill=jitter((0, 200, 220), rng, 15))
    else:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(250, 250, 250), outline=(10, 10, 10),
                     width=max(2, round(2.5 * u)))


def _brand(draw: ImageDraw.ImageDraw, logo: str, x: float, y: float, s: float, rng: np.random.Generator,
           u: float) -> None:
    """One brand mark of size ``s`` centred at ``(x, y)``; each has its own shape and colour."""
    h = s / 2
    edge = max(1, round(1.2 * u))
    if logo == "acme":  # orange triangle
        draw.polygon([(x, y - h), (x + h, y + h * 0.85), (x - h, y + h * 0.85)],
                     fill=jitter((250, 160, 0), rng), outline=(30, 20, 10), width=edge)
    elif logo == "globex":  # blue globe
        draw.ellipse((x - h, y - h, x + h, y + h), fill=jitter((30, 80, 225), rng))
        w = max(1, round(1.5 * u))
        draw.line((x - h, y, x + h, y), fill=(255, 255, 255), width=w)
        draw.ellipse((x - h * 0.45, y - h, x + h * 0.45, y + h), outline=(255, 255, 255), width=w)
    elif logo == "initech":  # green square with a white bar
        draw.rectangle((x - h * 0.9, y - h * 0.9, x + h * 0.9, y + h * 0.9), fill=jitter((25, 150, 60), rng))
        draw.rectangle((x - h * 0.2, y - h * 0.6, x + h * 0.2, y + h * 0.6), fill=(255, 255, 255))
    else:  # umbrella: red and white wedges
        red = jitter((215, 20, 40), rng)
        for k in range(8):
            draw.pieslice((x - h, y - h, x + h, y + h), k * 45 - 22.5, k * 45 + 22.5,
                          fill=red if k % 2 == 0 else (250, 250, 250))
        draw.ellipse((x - h, y - h, x + h, y + h), outline=(40, 10, 10), width=edge)
