"""Logo images: one of four brand marks printed on a sign, a billboard or a bottle."""
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
    return img


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
