"""Shared fixtures: a tiny learnable image set with unusual group sizes (3, 7 and 2 values)."""
from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("OMP_NUM_THREADS", "2")

SHARED_FASHION = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-products"

# colour (3) is fully learnable, shape (7) partly, and "band" (2) is a second cue.
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 220)}
SHAPES = ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]
SCHEMA_YAML = "groups:\n  colour: [red, green, blue]\n  shape: [s0, s1, s2, s3, s4, s5, s6]\n  band: [top, bottom]\n"


def draw(colour: str, shape: str, band: str, size: int = 40, seed: int = 0) -> Image.Image:
    rnd = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(rnd.randint(100, 160) for _ in range(3)))
    d = ImageDraw.Draw(img)
    k = SHAPES.index(shape)
    r = 5 + k  # shape value = size of the square
    cx, cy = size // 2 + rnd.randint(-2, 2), size // 2 + rnd.randint(-2, 2)
    d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=COLOURS[colour])
    y = 2 if band == "top" else size - 6
    d.rectangle([0, y, size, y + 3], fill=(0, 0, 0))
    return img


def make_dataset(root: Path, n: int = 120, *, missing: float = 0.3, seed: int = 0) -> tuple[Path, Path]:
    """Write ``n`` images, a manifest with ``missing`` of the labels blanked, and the schema."""
    rnd = random.Random(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        c, s, b = rnd.choice(list(COLOURS)), rnd.choice(SHAPES), rnd.choice(["top", "bottom"])
        draw(c, s, b, seed=i).save(root / "img" / f"{i:04d}.png")
        cells = {g: (v if rnd.random() >= missing else rnd.choice(["", "NA"])) for g, v in (("colour", c), ("shape", s), ("band", b))}
        rows.append({"path": f"img/{i:04d}.png", **cells, "split": "val" if i % 5 == 0 else "train"})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "colour", "shape", "band", "split"])
        w.writeheader()
        w.writerows(rows)
    schema = root / "schema.yaml"
    schema.write_text(SCHEMA_YAML)
    return schema, manifest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(schema.yaml, manifest.csv) of 120 small images, 30% of labels missing."""
    return make_dataset(tmp_path_factory.mktemp("tiny"))
