"""Test helpers: a tiny learnable image set with unusual group sizes (3, 7 and 2 values)."""
from __future__ import annotations

import csv
import functools
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from attrtag.card import ModelCard
from attrtag.data.preprocess import Preprocessing
from attrtag.model import build_model, save_checkpoint
from attrtag.schema import Schema

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


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as a CSV manifest at ``path`` (columns: the first row's keys, in order)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


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
    manifest = write_csv(root / "manifest.csv", rows)
    schema = root / "schema.yaml"
    schema.write_text(SCHEMA_YAML)
    return schema, manifest


# Unusual sizes (3, 7, 2) so that nothing hard-coded can pass.
SCHEMA = Schema.from_dict(
    {"colour": ["red", "green", "blue"], "shape": [f"s{i}" for i in range(7)], "band": ["top", "bottom"]}
)
PREP = Preprocessing((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def make_checkpoint(path: Path, schema: Schema = SCHEMA, *, seed: int = 0) -> Path:
    """A random ``test_resnet`` checkpoint at 32 px; different seeds give different weights."""
    torch.manual_seed(seed)
    model = build_model(schema, "test_resnet", card=ModelCard(schema, PREP, "test_resnet"))
    save_checkpoint(path, model, config={})
    return path


def write_images(folder: Path, n: int, *, size: int = 40, fmt: str = "png") -> list[Path]:
    """``n`` small images of different colours (so predictions differ between them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        arr = rng.integers(0, 256, (size, size + i % 5, 3), dtype=np.uint8)
        arr[: size // 2] = (i * 37 % 256, i * 91 % 256, i * 13 % 256)
        p = folder / f"img{i:04d}.{fmt}"
        Image.fromarray(arr).save(p)
        out.append(p)
    return out


# A multi-label group beside two exclusive ones: marks drawn independently (any number, none too).
MARKS = ("dot", "bar", "ring")
MULTI_SCHEMA_YAML = SCHEMA_YAML + "  marks: {kind: multi, values: [dot, bar, ring]}\n"
MULTI_SCHEMA = Schema.from_dict({**SCHEMA.to_dict(), "marks": {"kind": "multi", "values": list(MARKS)}})


def draw_marks(img: Image.Image, marks: set[str]) -> Image.Image:
    """``img`` with the marks present: a dot at the top left, a bar on the right, a ring bottom left."""
    d = ImageDraw.Draw(img)
    w, h = img.size
    if "dot" in marks:
        d.ellipse([2, 8, 10, 16], fill=(255, 255, 255))
    if "bar" in marks:
        d.rectangle([w - 6, 6, w - 2, h - 8], fill=(255, 255, 0))
    if "ring" in marks:
        d.ellipse([2, h - 14, 12, h - 4], outline=(0, 0, 0), width=2)
    return img


def make_multilabel_dataset(root: Path, n: int = 120, *, missing: float = 0.3, seed: int = 0) -> tuple[Path, Path]:
    """Like :func:`make_dataset`, plus a ``marks`` column in every label syntax: values present
    (``dot|ring``), none (``[]``), some values only (``+dot|-bar``), unknown (empty)."""
    rnd = random.Random(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        c, s, b = rnd.choice(list(COLOURS)), rnd.choice(SHAPES), rnd.choice(["top", "bottom"])
        marks = {m for m in MARKS if rnd.random() < 0.4}
        draw_marks(draw(c, s, b, seed=i), marks).save(root / "img" / f"{i:04d}.png")
        cells = {g: (v if rnd.random() >= missing else "") for g, v in (("colour", c), ("shape", s), ("band", b))}
        r = rnd.random()
        if r < missing / 2:
            cells["marks"] = ""
        elif r < missing:  # some values known
            cells["marks"] = "|".join(("+" if m in marks else "-") + m for m in MARKS if rnd.random() < 0.5) or ""
        else:
            cells["marks"] = "|".join(m for m in MARKS if m in marks) or "[]"
        rows.append({"path": f"img/{i:04d}.png", **cells, "split": "val" if i % 5 == 0 else "train"})
    manifest = write_csv(root / "manifest.csv", rows)
    schema = root / "schema.yaml"
    schema.write_text(MULTI_SCHEMA_YAML)
    return schema, manifest


def cli_files(d: Path, *, rules: str = "classes:\n  A: {colour: red}\n") -> dict[str, Path]:
    """What a CLI test feeds commands: a random checkpoint, its ONNX export, 3 images tagged into
    ``tags.jsonl``, a 10-row dataset and a rules file, all in ``d``."""
    from attrtag.cli import main
    from attrtag_onnx.export import export_onnx

    ckpt = make_checkpoint(d / "model.pt")
    write_images(d / "imgs", 3)
    schema, manifest = make_dataset(d / "data", 10)
    onnx = export_onnx(ckpt, d / "model.onnx", exporter="torchscript").path
    (d / "rules.yaml").write_text(rules)
    tags = d / "tags.jsonl"
    assert main(["tag", str(onnx), str(d / "imgs"), "--out", str(tags), "--no-progress", "--device", "cpu"]) == 0
    return {"dir": d, "ckpt": ckpt, "onnx": onnx, "tags": tags, "manifest": manifest, "schema": schema,
            "images": d / "imgs", "rules": d / "rules.yaml"}


def run_cli(capsys: Any, *argv: object) -> tuple[int, str, str]:
    """``attrtag ARGV...`` in this process: its exit status, stdout and stderr."""
    from attrtag.cli import main

    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def train_multilabel(folder: Path, n: int, *, epochs: int = 2) -> dict[str, Path]:
    """:func:`make_multilabel_dataset` in ``folder/data`` and a ``test_resnet`` trained on it by the CLI."""
    from attrtag.cli import main

    schema, manifest = make_multilabel_dataset(folder / "data", n)
    assert main(["train", "--schema", str(schema), "--manifest", str(manifest), "--out", str(folder / "run"),
                 "--backbone", "test_resnet", "--image-size", "32", "--epochs", str(epochs), "--batch-size", "16",
                 "--lr", "5e-3", "--warmup-epochs", "0.5", "--workers", "0", "--device", "cpu"]) == 0
    return {"dir": folder, "schema": schema, "manifest": manifest, "best": folder / "run" / "best.pt",
            "images": folder / "data" / "img"}


@functools.lru_cache(maxsize=None)
def cuda_usable(model_path: str) -> bool:
    """Whether ONNX Runtime really runs on CUDA here (the provider is listed even without a GPU)."""
    import onnxruntime as ort

    from attrtag.runtime.gpu_libraries import preload_cuda

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    preload_cuda(ort)  # as OnnxModel does: CUDA from pip packages is found only when loaded first
    session = ort.InferenceSession(model_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    return session.get_providers()[0] == "CUDAExecutionProvider"
