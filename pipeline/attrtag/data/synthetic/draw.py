"""Drawing the synthetic demo world: creatures and logo scenes whose attributes are known exactly.

Every cue is deliberately strong at 64 px, so that a small CNN learns it from scratch: the four
textures differ in scale and structure, duck bills are orange and beaks red (on top of their
shapes), a tail stands clear of the body and ends in a pale tuft, and backgrounds avoid dark tones
and both bill colours. Body colour, size, position, facing and background vary at random, and
objects stay inside the central :data:`SAFE_FRACTION` of the image. Shapes are drawn at twice
the output size and box-filtered down, which antialiases edges without blurring the textures.

Only numpy and PIL; every image is a function of its random generator.
"""
from __future__ import annotations

import colorsys
import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: Objects stay inside this central fraction of the image, so a timm centre crop
#: (crop_pct 0.875) never cuts off a bill, a tail or a logo.
SAFE_FRACTION = 0.85

Color = tuple[int, int, int]

# Duck bills and beaks are about these colours; creature backgrounds keep away from them.
_DUCK_ORANGE: Color = (250, 165, 25)
_BEAK_RED: Color = (215, 35, 45)
# Shapes are drawn at this multiple of the output size, then box-filtered down.
_SUPERSAMPLE = 2
# Design unit: texture sizes are given in pixels of a 128 px canvas (a 64 px image).
_DESIGN_CANVAS = 128



# --------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------
def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def _shade(c: Color, f: float) -> Color:
    """Darker (f < 1) or brighter (f > 1) by scaling."""
    return tuple(int(min(255, max(0, round(x * f)))) for x in c)  # type: ignore[return-value]


def _tint(c: Color, f: float) -> Color:
    """Blend toward white by ``f``."""
    return tuple(int(round(x + (255 - x) * f)) for x in c)  # type: ignore[return-value]


def _jitter(c: Color, rng: np.random.Generator, amount: int = 12) -> Color:
    return tuple(int(min(255, max(0, x + rng.integers(-amount, amount + 1)))) for x in c)  # type: ignore[return-value]


def _distance(a: Color, b: Color) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def _contrasting(rng: np.random.Generator, avoid: Sequence[Color], s: tuple[float, float],
                 v: tuple[float, float]) -> Color:
    """A random colour clearly different from every colour in ``avoid`` (so things stand out)."""
    c = avoid[0]
    for _ in range(100):
        c = _hsv(rng.random(), rng.uniform(*s), rng.uniform(*v))
        if all(_distance(c, a) > 110 for a in avoid):
            return c
    return c


# --------------------------------------------------------------------------------------------
# Scene pieces
# --------------------------------------------------------------------------------------------
def _background(size: int, rng: np.random.Generator, color: Color) -> Image.Image:
    """A vertical gradient around ``color`` with a few faint blobs, so it is never flat."""
    top = np.array(_shade(color, rng.uniform(0.85, 1.15)), np.float32)
    bottom = np.array(_shade(color, rng.uniform(0.7, 1.0)), np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    arr = np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        r = rng.uniform(0.05, 0.2) * size
        x, y = rng.uniform(0, size, 2)
        draw.ellipse((x - r, y - r * 0.7, x + r, y + r * 0.7), fill=_jitter(color, rng, 18))
    return img


def _place(box: tuple[float, float, float, float], canvas: int, rng: np.random.Generator,
           fill: tuple[float, float]) -> tuple[float, float, float]:
    """Scale and offset mapping a unit-space bounding box into the safe central area.

    Returns:
        ``(scale, dx, dy)`` such that canvas = unit * scale + (dx, dy).
    """
    x0, y0, x1, y1 = box
    margin = 3 * canvas / _DESIGN_CANVAS  # outlines are drawn just outside the shapes
    lo = canvas * (1 - SAFE_FRACTION) / 2 + margin
    hi = canvas * (1 + SAFE_FRACTION) / 2 - margin
    scale = min((hi - lo) / (x1 - x0), (hi - lo) / (y1 - y0)) * rng.uniform(*fill)
    w, h = (x1 - x0) * scale, (y1 - y0) * scale
    ox, oy = rng.uniform(lo, hi - w), rng.uniform(lo, hi - h)
    return scale, ox - x0 * scale, oy - y0 * scale


def _mapper(scale: float, ox: float, oy: float) -> Callable[[float, float], tuple[float, float]]:
    """Unit space -> canvas pixels, for the placement returned by :func:`_place`."""

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x * scale + ox, y * scale + oy)

    return to_px


def _ring(mask: Image.Image, width: int) -> Image.Image:
    """The band just outside a mask's shape, used to outline silhouettes."""
    grown = mask.filter(ImageFilter.MaxFilter(2 * width + 1))
    return Image.fromarray(np.subtract(np.asarray(grown), np.asarray(mask)).astype(np.uint8), "L")


# --------------------------------------------------------------------------------------------
# Creatures
# --------------------------------------------------------------------------------------------
def _fur(draw: ImageDraw.ImageDraw, box: Sequence[float], base: Color, rng: np.random.Generator, u: float) -> None:
    """Dense short thin strokes in light and dark, combed in one direction."""
    light, dark = _tint(base, 0.6), _shade(base, 0.3)
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
    dark = _shade(base, 0.3)
    x0, y0, x1, y1 = box
    fl, fw = 16 * u, 7 * u
    width = max(1, round(2 * u))
    for r, y in enumerate(np.arange(y0 - fw, y1 + fw, 8 * u)):
        shift = (r % 2) * 6 * u
        # right to left: feathers nearer the tail lie on top, so their pointed tips show
        for x in np.arange(x1 + fl, x0 - fl, -12 * u):
            x = x + shift
            fill = _tint(base, rng.uniform(0.15, 0.5))
            pts = [(x - fl, y), (x, y - fw), (x + 0.3 * fl, y), (x, y + fw)]
            draw.polygon(pts, fill=fill, outline=dark, width=width)
            draw.line((x - fl, y, x + 0.3 * fl, y), fill=dark, width=max(1, round(u)))


def _scales(draw: ImageDraw.ImageDraw, box: Sequence[float], base: Color, rng: np.random.Generator, u: float) -> None:
    """A regular grid of overlapping round scales; each row covers the upper half of the one
    above it, so semicircles show."""
    dark = _shade(base, 0.3)
    x0, y0, x1, y1 = box
    r, dx, dy = 4.5 * u, 7 * u, 4 * u
    width = max(1, round(1.5 * u))
    for row, y in enumerate(np.arange(y0 - r, y1 + r, dy)):
        shift = (row % 2) * dx / 2
        for x in np.arange(x0 - r, x1 + r, dx):
            fill = _tint(base, rng.uniform(0.1, 0.3))
            draw.ellipse((x + shift - r, y - r, x + shift + r, y + r), fill=fill, outline=dark, width=width)


def _exoskeleton(draw: ImageDraw.ImageDraw, box: Sequence[float], base: Color, rng: np.random.Generator,
                 u: float, body: tuple[float, float, float, float]) -> None:
    """Smooth glossy plates: a top-lit gradient, a specular highlight, hard dark segment lines."""
    x0, y0, x1, y1 = box
    top, bottom = np.array(_tint(base, 0.3), float), np.array(_shade(base, 0.55), float)
    for y in range(int(y0), int(y1) + 1):
        t = (y - y0) / max(1.0, y1 - y0)
        draw.line((x0, y, x1, y), fill=tuple(int(v) for v in top * (1 - t) + bottom * t))
    cx, cy, a, b = body
    for k, f in enumerate((0.55, 0.8)):  # two nested ellipses fake a soft highlight
        hw, hh = a * 0.75 * (1 - 0.3 * k), b * 0.22 * (1 - 0.3 * k)
        hx, hy = cx - 0.1 * a, cy - 0.5 * b
        draw.ellipse((hx - hw, hy - hh, hx + hw, hy + hh), fill=_tint(base, f))
    dark = _shade(base, 0.15)
    n = int(rng.integers(3, 6))
    width = max(2, round(3 * u))
    for i in range(1, n + 1):  # segment lines, slightly bowed, also crossing the tail region
        sx = x0 + (x1 - x0) * i / (n + 1)
        bow = 0.15 * a
        draw.arc((sx - bow, y0 - 2, sx + bow, y1 + 2), 270, 90, fill=dark, width=width)
    draw.line((x0, cy + 0.05 * b, x1, cy + 0.05 * b), fill=dark, width=max(1, round(1.5 * u)))


def _pattern_mask(size: int, pattern: str, rng: np.random.Generator, body: tuple[float, float, float, float],
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


def _creature(truth: dict[str, str], size: int, rng: np.random.Generator) -> Image.Image:
    canvas = size * _SUPERSAMPLE
    u = canvas / _DESIGN_CANVAS
    body_color = _hsv(rng.random(), rng.uniform(0.35, 0.85), rng.uniform(0.6, 0.95))
    # Not dark and neither bill colour: outlines and bills must stand out from the background
    # as well as from the body.
    bg_color = _contrasting(rng, [body_color, _DUCK_ORANGE, _BEAK_RED], (0.1, 0.6), (0.45, 0.95))
    img = _background(canvas, rng, bg_color)

    # Geometry in unit space (body half-length 1), facing right; mirrored at the end.
    b = rng.uniform(0.52, 0.62)
    hx, hy, hr = 0.82, -0.45 * b, rng.uniform(0.55, 0.6)
    # The tail leaves the rear end backwards and up (image y grows downwards), clear of the body.
    tail_start = (-0.88, -0.15 * b)
    tail_angle = math.pi + rng.uniform(0.25, 0.8)
    tail_len, tail_curl, tail_w = rng.uniform(0.9, 1.1), rng.uniform(-0.25, 0.25), 0.5 * b
    tail, tip = _tail_polygon(tail_start, tail_angle, tail_len, tail_curl, tail_w)
    tuft_r = 0.32 * b
    bill_end = hx + 2.1 * hr
    # The box includes the tail and the longest bill whether or not they are drawn, so that the
    # object's scale and position say nothing about its tail or bill.
    xs = [-1.0, bill_end, tip[0] - tuft_r] + [p[0] for p in tail]
    ys = [-b, b, hy - hr, hy + hr, tip[1] - tuft_r] + [p[1] for p in tail]
    scale, ox, oy = _place((min(xs), min(ys), max(xs), max(ys)), canvas, rng, (0.95, 1.0))
    to_px = _mapper(scale, ox, oy)

    cx, cy = to_px(0, 0)
    a_px, b_px, hr_px = scale, b * scale, hr * scale
    hxp, hyp = to_px(hx, hy)
    mask = Image.new("L", (canvas, canvas), 0)
    mdraw = ImageDraw.Draw(mask)
    mdraw.ellipse((cx - a_px, cy - b_px, cx + a_px, cy + b_px), fill=255)
    mdraw.ellipse((hxp - hr_px, hyp - hr_px, hxp + hr_px, hyp + hr_px), fill=255)
    if truth["tail"] == "yes":
        mdraw.polygon([to_px(*p) for p in tail], fill=255)
    bbox = mask.getbbox() or (0, 0, canvas, canvas)
    box = (bbox[0] - 2, bbox[1] - 2, bbox[2] + 2, bbox[3] + 2)

    # Texture layer for the whole silhouette, then the pattern multiplied on top.
    tex = Image.new("RGB", (canvas, canvas), body_color)
    tdraw = ImageDraw.Draw(tex)
    covering = truth["covering"]
    if covering == "fur":
        _fur(tdraw, box, body_color, rng, u)
    elif covering == "feathers":
        _feathers(tdraw, box, body_color, rng, u)
    elif covering == "scales":
        _scales(tdraw, box, body_color, rng, u)
    else:
        _exoskeleton(tdraw, box, body_color, rng, u, (cx, cy, a_px, b_px))
    pmask = _pattern_mask(canvas, truth["pattern"], rng, (cx, cy, a_px, b_px), box)
    if pmask is not None:
        factor = np.array(_hsv(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.18, 0.32)), np.float32) / 255
        arr = np.asarray(tex, np.float32)
        m = np.asarray(pmask, np.float32)[..., None] / 255
        arr = arr * (1 - m) + arr * factor * m
        tex = Image.fromarray(arr.astype(np.uint8), "RGB")
    img.paste(tex, (0, 0), mask)
    outline = _shade(body_color, 0.2)
    img.paste(outline, (0, 0), _ring(mask, max(1, round(1.5 * u))))

    draw = ImageDraw.Draw(img)
    line_w = max(1, round(1.5 * u))
    if truth["tail"] == "yes":
        # A pale round tuft marks the tail's end. Round and pale, so it is not mistaken for a
        # (pointed, dark) beak; a dark pointed tip was, in a learnability check.
        tx, ty = to_px(*tip)
        tr = tuft_r * scale
        draw.ellipse((tx - tr, ty - tr, tx + tr, ty + tr), fill=_jitter((245, 238, 215), rng, 8),
                     outline=outline, width=line_w)
    # Bill colour helps, as it does in nature: duck bills are orange, beaks red (dark beaks
    # were confused with dark outlines and patterns in a learnability check). The shapes
    # differ too (flat and rounded vs. pointed), and body colours may take either colour.
    if truth["bill"] == "duck":
        bill_color = _jitter(_DUCK_ORANGE, rng, 25)
        x0, y0 = to_px(hx + 0.45 * hr, hy - 0.25 * hr)
        x1, y1 = to_px(bill_end, hy + 0.85 * hr)
        draw.rounded_rectangle((x0, y0, x1, y1), radius=(y1 - y0) / 2, fill=bill_color, outline=outline, width=line_w)
        ym = (y0 + y1) / 2  # the line between the two mandibles
        draw.line((x0 + (x1 - x0) * 0.2, ym, x1 - (y1 - y0) * 0.4, ym), fill=outline, width=line_w)
    elif truth["bill"] == "beak":
        bill_color = _jitter(_BEAK_RED, rng, 25)
        base_x = hx + 0.45 * hr
        pts = [to_px(base_x, hy - 0.85 * hr), to_px(bill_end, hy + 0.35 * hr), to_px(base_x, hy + 1.0 * hr)]
        draw.polygon(pts, fill=bill_color, outline=outline, width=line_w)
    ex, ey = to_px(hx + 0.15 * hr, hy - 0.3 * hr)
    er = max(1.5 * u, 0.2 * hr_px)
    draw.ellipse((ex - er, ey - er, ex + er, ey + er), fill=(255, 255, 255))
    draw.ellipse((ex - er * 0.55, ey - er * 0.55, ex + er * 0.55, ey + er * 0.55), fill=(15, 15, 15))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


# --------------------------------------------------------------------------------------------
# Logos
# --------------------------------------------------------------------------------------------
def _brand(draw: ImageDraw.ImageDraw, logo: str, x: float, y: float, s: float, rng: np.random.Generator,
           u: float) -> None:
    """One brand mark of size ``s`` centred at ``(x, y)``; each has its own shape and colour."""
    h = s / 2
    edge = max(1, round(1.2 * u))
    if logo == "acme":  # orange triangle
        draw.polygon([(x, y - h), (x + h, y + h * 0.85), (x - h, y + h * 0.85)],
                     fill=_jitter((250, 160, 0), rng), outline=(30, 20, 10), width=edge)
    elif logo == "globex":  # blue globe
        draw.ellipse((x - h, y - h, x + h, y + h), fill=_jitter((30, 80, 225), rng))
        w = max(1, round(1.5 * u))
        draw.line((x - h, y, x + h, y), fill=(255, 255, 255), width=w)
        draw.ellipse((x - h * 0.45, y - h, x + h * 0.45, y + h), outline=(255, 255, 255), width=w)
    elif logo == "initech":  # green square with a white bar
        draw.rectangle((x - h * 0.9, y - h * 0.9, x + h * 0.9, y + h * 0.9), fill=_jitter((25, 150, 60), rng))
        draw.rectangle((x - h * 0.2, y - h * 0.6, x + h * 0.2, y + h * 0.6), fill=(255, 255, 255))
    else:  # umbrella: red and white wedges
        red = _jitter((215, 20, 40), rng)
        for k in range(8):
            draw.pieslice((x - h, y - h, x + h, y + h), k * 45 - 22.5, k * 45 + 22.5,
                          fill=red if k % 2 == 0 else (250, 250, 250))
        draw.ellipse((x - h, y - h, x + h, y + h), outline=(40, 10, 10), width=edge)


def _logo_scene(truth: dict[str, str], size: int, rng: np.random.Generator) -> Image.Image:
    canvas = size * _SUPERSAMPLE
    u = canvas / _DESIGN_CANVAS
    bg_color = _hsv(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))
    img = _background(canvas, rng, bg_color)
    draw = ImageDraw.Draw(img)
    panel = _jitter(_tint(_hsv(rng.random(), rng.uniform(0.0, 0.3), 1.0), rng.uniform(0.5, 0.9)), rng, 6)
    edge_color = (40, 40, 40)
    edge = max(1, round(1.5 * u))
    post = _jitter((110, 95, 80), rng, 25)
    medium = truth["medium"]
    if medium == "sign":
        ph, post_len = rng.uniform(0.75, 0.9), rng.uniform(0.5, 0.75)
        scale, ox, oy = _place((-0.5, 0.0, 0.5, ph + post_len), canvas, rng, (0.65, 0.85))
        P = _mapper(scale, ox, oy)
        draw.rectangle((*P(-0.06, ph), *P(0.06, ph + post_len)), fill=post)
        draw.rectangle((*P(-0.5, 0), *P(0.5, ph)), fill=panel, outline=edge_color, width=edge)
        _brand(draw, truth["logo"], *P(0, ph / 2), 0.7 * ph * scale, rng, u)
    elif medium == "billboard":
        ph, leg = rng.uniform(0.4, 0.48), rng.uniform(0.25, 0.4)
        scale, ox, oy = _place((-0.5, 0.0, 0.5, ph + leg), canvas, rng, (0.85, 1.0))
        P = _mapper(scale, ox, oy)
        for lx in (-0.3, 0.3):
            draw.rectangle((*P(lx - 0.03, ph), *P(lx + 0.03, ph + leg)), fill=post)
        draw.rectangle((*P(-0.5, 0), *P(0.5, ph)), fill=panel, outline=edge_color, width=edge)
        _brand(draw, truth["logo"], *P(-0.25, ph / 2), 0.75 * ph * scale, rng, u)
        for k in range(int(rng.integers(2, 4))):  # a few "lines of text" beside the mark
            ty = ph * (0.3 + 0.2 * k)
            draw.rectangle((*P(0.02, ty - 0.03), *P(rng.uniform(0.25, 0.42), ty + 0.03)), fill=_shade(panel, 0.45))
    else:  # bottle
        bh = rng.uniform(1.5, 1.8)
        # unit space: body width 1, neck on top, cap above it
        scale, ox, oy = _place((-0.5, -0.85, 0.5, bh), canvas, rng, (0.75, 0.95))
        P = _mapper(scale, ox, oy)
        glass = _hsv(rng.choice([0.08, 0.3, 0.38, 0.55, 0.6]), rng.uniform(0.4, 0.8), rng.uniform(0.35, 0.7))
        draw.rectangle((*P(-0.2, -0.75), *P(0.2, -0.2)), fill=glass, outline=edge_color, width=edge)
        draw.rectangle((*P(-0.24, -0.85), *P(0.24, -0.68)), fill=_jitter((200, 40, 40), rng, 40))
        draw.polygon([P(-0.2, -0.2), P(0.2, -0.2), P(0.5, 0.15), P(-0.5, 0.15)], fill=glass, outline=edge_color)
        draw.rounded_rectangle((*P(-0.5, 0.1), *P(0.5, bh)), radius=0.12 * scale, fill=glass,
                               outline=edge_color, width=edge)
        draw.rectangle((*P(-0.38, 0.2), *P(-0.28, bh - 0.1)), fill=_tint(glass, 0.4))  # highlight
        ly0, ly1 = bh * 0.35, bh * 0.35 + 0.75
        draw.rectangle((*P(-0.5, ly0), *P(0.5, ly1)), fill=panel, outline=edge_color, width=edge)
        _brand(draw, truth["logo"], *P(0, (ly0 + ly1) / 2), 0.62 * scale, rng, u)
    return img


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
    img = _creature(truth, size, rng) if kind == "creature" else _logo_scene(truth, size, rng)
    img = img.resize((size, size), Image.Resampling.BOX)
    # Pixel noise after downsampling, so that flat areas are never exactly flat.
    arr = np.asarray(img, np.int16) + rng.normal(0, rng.uniform(2, 7), (size, size, 3)).round().astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
