"""A hand-made manifest with planted wrong labels, and one audit of it shared by the tests."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.helpers import COLOURS, write_csv

MARKS = ("dot", "bar")
SCHEMA_YAML = "groups:\n  colour: [red, green, blue]\n  band: [top, bottom]\n  marks: {kind: multi, values: [dot, bar]}\n"
#: The images whose colour label is planted wrong (another colour than the one they show).
PLANTED = (5, 17, 30, 44)
#: Training options small enough for seconds on a CPU, large enough for a solid-colour task.
TINY = ["--backbone", "test_resnet", "--image-size", "32", "--epochs", "4", "--batch-size", "8", "--lr", "1e-2",
        "--warmup-epochs", "0.2", "--workers", "0", "--device", "cpu"]
TINY_API: dict[str, Any] = dict(backbone="test_resnet", image_size=32, epochs=4, batch_size=8, lr=1e-2,
                                warmup_epochs=0.2, workers=0, device="cpu")


def _image(colour: str, band: str, marks: set[str], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(COLOURS[colour])[None, None] + rng.integers(-25, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 1 if band == "top" else 27, 32, 4 if band == "top" else 30], fill=(0, 0, 0))
    if "dot" in marks:
        d.ellipse([4, 10, 12, 18], fill=(255, 255, 255))
    if "bar" in marks:
        d.rectangle([24, 8, 28, 24], fill=(255, 255, 0))
    return img


def make_planted(root: Path, n: int = 64) -> dict[str, Any]:
    """``n`` solid-colour images; every label known except the ones left unknown on purpose:
    colour of every 9th image, band of every 4th, marks of every 5th (some values of every 7th)."""
    rnd = random.Random(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows, truth = [], {}
    for i in range(n):
        colour, band = list(COLOURS)[i % 3], rnd.choice(["top", "bottom"])
        marks = {m for m in MARKS if rnd.random() < 0.5}
        path = f"img/{i:03d}.png"
        _image(colour, band, marks, i).save(root / path)
        truth[path] = colour
        given = list(COLOURS)[(i + 1) % 3] if i in PLANTED else colour
        cell = "|".join(m for m in MARKS if m in marks) or "[]"
        if i % 7 == 0:
            cell = "+dot" if "dot" in marks else "-dot"  # bar unknown
        rows.append({"path": path, "colour": "" if i % 9 == 0 and i not in PLANTED else given,
                     "band": "" if i % 4 == 0 else band, "marks": "" if i % 5 == 0 else cell,
                     "split": "val" if i % 6 == 0 else "train"})
    manifest = write_csv(root / "manifest.csv", rows)
    schema = root / "schema.yaml"
    schema.write_text(SCHEMA_YAML)
    planted = {str((root / f"img/{i:03d}.png").resolve()) for i in PLANTED}
    return {"dir": root, "schema": schema, "manifest": manifest, "rows": rows, "planted": planted}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_planted(tmp_path_factory.mktemp("audit"))
