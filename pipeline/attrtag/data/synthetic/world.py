"""The synthetic demo world: which images exist, their labels and splits, and the files written.

Two kinds of images, so that missing labels occur naturally (see ``schema.yaml`` here):

* creatures: a body with a ``covering`` texture (fur, feathers, scales, exoskeleton), a
  ``pattern`` over it (plain, spots, stripes), a ``bill`` at the head (none, duck, beak) and a
  ``tail`` (no, yes). Labelled for those four groups only.
* logos: one of four brand marks (acme, globex, initech, umbrella) printed on a ``medium``
  (sign, billboard, bottle), with any number of ``stickers`` (star, arrow, badge: a multi-label
  group), none included. Labelled for ``logo``, ``medium`` and ``stickers`` only.

Creature attributes are drawn independently at random, so they are not tied to classes; a row's
``class`` is the class of ``rules.yaml`` whose full signature it matches, if any. The signatures
of the :data:`UNSEEN` classes are never drawn for training: those classes get their own images,
placed only in the val and test splits, for zero-shot (Direct Attribute Prediction) checks.

``schema.yaml`` and ``rules.yaml`` next to this module are the only copies of the world's
schema and classes (``datasets/demo_*.yaml`` link to them). Everything is a function of
``seed``: each image has its own random stream derived from ``(seed, image index)``, so the
output does not depend on the number of worker processes.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..._files import write_text
from ..._yaml import load_yaml
from ...errors import SchemaError
from ...schema import Schema
from .draw import render

logger = logging.getLogger(__name__)

SCHEMA_FILE = Path(__file__).with_name("schema.yaml")
RULES_FILE = Path(__file__).with_name("rules.yaml")

#: Groups labelled on creature images and on logo images (disjoint; together the schema).
CREATURE_GROUPS: tuple[str, ...] = ("covering", "pattern", "bill", "tail")
LOGO_GROUPS: tuple[str, ...] = ("logo", "medium")
#: The multi-label group of logo images, and how often each of its values is drawn.
STICKERS, STICKER_RATE = "stickers", 0.35

#: Held-out classes: their signatures never occur in the train split.
UNSEEN: tuple[str, ...] = ("platypus", "pangolin", "penguin", "snake")

#: Train/val/test fractions of the randomly drawn images (unseen-class images are val/test only).
SPLIT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


@lru_cache(maxsize=1)
def demo_schema() -> Schema:
    """The demo world's schema (``schema.yaml`` of this package)."""
    return Schema.load(SCHEMA_FILE)


@lru_cache(maxsize=1)
def demo_classes() -> dict[str, dict[str, str]]:
    """Every creature class of ``rules.yaml`` with its full signature over :data:`CREATURE_GROUPS`.

    Raises:
        SchemaError: a class that does not give exactly one value of each creature group, or
            an :data:`UNSEEN` class missing from the file (the renderer needs full signatures).
    """
    doc = load_yaml(RULES_FILE)
    out: dict[str, dict[str, str]] = {}
    for name, spec in (doc.data or {}).get("classes", {}).items():
        if not isinstance(spec, dict) or sorted(spec) != sorted(CREATURE_GROUPS) or not all(
            isinstance(v, str) for v in spec.values()
        ):
            raise SchemaError(f"{doc.where('classes', name)}: demo class '{name}' must give one value of each of "
                              f"{', '.join(CREATURE_GROUPS)}")
        out[str(name)] = {g: spec[g] for g in CREATURE_GROUPS}
    missing = [c for c in UNSEEN if c not in out]
    if missing:
        raise SchemaError(f"{RULES_FILE}: unseen demo classes {missing} are not in the rules")
    return out


# --------------------------------------------------------------------------------------------
# Planning: which image gets which labels and which split
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Item:
    """One planned image: what to draw (``truth``) and what the manifest says about it."""

    index: int
    kind: str  # "creature" or "logo"
    truth: dict[str, str]  # the drawn attributes, all of them
    split: str
    klass: str


def _class_of(truth: dict[str, str]) -> str:
    for name, sig in demo_classes().items():
        if all(truth.get(g) == v for g, v in sig.items()):
            return name
    return ""


def _pick(values: Sequence[str], rng: np.random.Generator) -> str:
    return values[int(rng.integers(len(values)))]


def _split_names(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` split names in a random order, with counts as close to SPLIT_FRACTIONS as can be."""
    n_train = round(n * SPLIT_FRACTIONS[0])
    n_val = round(n * SPLIT_FRACTIONS[1])
    names = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
    return [names[i] for i in rng.permutation(n)]


def _plan(schema: Schema, *, n_creatures: int, n_logos: int, n_unseen: int, seed: int) -> list[_Item]:
    classes = demo_classes()
    rng = np.random.default_rng([seed, 0])
    unseen_sigs = [tuple(classes[c][g] for g in CREATURE_GROUPS) for c in UNSEEN]
    truths: list[tuple[str, dict[str, str]]] = []
    while len(truths) < n_creatures:
        sig = tuple(_pick(schema[g].values, rng) for g in CREATURE_GROUPS)
        if sig in unseen_sigs:  # held out for zero-shot: redraw
            continue
        truths.append(("creature", dict(zip(CREATURE_GROUPS, sig))))
    for _ in range(n_logos):
        truth = {g: _pick(schema[g].values, rng) for g in LOGO_GROUPS}
        shown = [v for v in schema[STICKERS].values if rng.random() < STICKER_RATE]
        truths.append(("logo", {**truth, STICKERS: "|".join(shown) or "[]"}))  # the manifest's cell syntax

    split_rng = np.random.default_rng([seed, 1])
    # Split creatures and logos separately so that every split holds both kinds.
    splits = _split_names(n_creatures, split_rng) + _split_names(n_logos, split_rng)
    items = [
        _Item(i, kind, truth, split, _class_of(truth) if kind == "creature" else "")
        for i, ((kind, truth), split) in enumerate(zip(truths, splits))
    ]
    for name in UNSEEN:
        for j in range(n_unseen):
            split = "val" if j % 2 == 0 else "test"
            items.append(_Item(len(items), "creature", dict(classes[name]), split, name))
    return items


def _drop(items: Sequence[_Item], p: float, seed: int) -> list[dict[str, str]]:
    """The labels each row keeps: each present label is blanked with probability ``p``, but a
    row never loses all of them (one, chosen at random, is then kept): a row with no label at
    all teaches nothing and only inflates the manifest."""
    rng = np.random.default_rng([seed, 2])
    out = []
    for item in items:
        names = list(item.truth)
        keep = rng.random(len(names)) >= p
        if not keep.any():
            keep[rng.integers(len(names))] = True
        out.append({g: item.truth[g] for g, k in zip(names, keep) if k})
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
#: One image to write: ``(path, index, kind, truth, size, seed)``.
_Job = tuple[str, int, str, dict[str, str], int, int]


def _write_images(jobs: Sequence[_Job]) -> None:
    """Worker body: render and save a chunk of ``(path, index, kind, truth, size, seed)`` jobs."""
    for path, index, kind, truth, size, seed in jobs:
        # Per-image stream from (seed, 3, index): independent of chunking and worker count.
        img = render(kind, truth, image_size=size, seed=[seed, 3, index])
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=False, compress_level=6)
        Path(path).write_bytes(buf.getvalue())


def _write_all_images(jobs: Sequence[_Job], workers: int) -> None:
    """Render every job, in this process or spread over ``workers`` processes."""
    if workers == 1 or len(jobs) < 2 * workers:
        _write_images(jobs)
        return
    chunks = [jobs[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_images, chunks))


def _manifest_text(schema: Schema, items: Sequence[_Item], labels: Sequence[dict[str, str]],
                   paths: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", *schema.names, "split", "class"])
    for item, lab, path in zip(items, labels, paths):
        writer.writerow([path, *(lab.get(g, "") for g in schema.names), item.split, item.klass])
    return buf.getvalue()


def generate(
    out_dir: str | Path,
    *,
    n_creatures: int = 1600,
    n_logos: int = 800,
    n_unseen: int = 60,
    image_size: int = 64,
    seed: int = 0,
    drop_labels: float = 0.0,
    workers: int = 1,
) -> Path:
    """Write a synthetic demo dataset: images, ``manifest.csv``, ``schema.yaml``, ``rules.yaml``.

    The same arguments (``workers`` aside) give byte-identical files. Files of an earlier run
    in ``out_dir`` are overwritten, not removed; the manifest names exactly this run's images.

    Args:
        out_dir: folder to write to (created if needed); images go to ``out_dir/images/``.
        n_creatures: creature images with randomly drawn attributes (80/10/10 train/val/test).
        n_logos: logo images (80/10/10 train/val/test).
        n_unseen: extra images of each :data:`UNSEEN` class, split evenly between val and test.
        image_size: side of the square images in pixels (at least 32).
        seed: seed of everything: attributes, splits, dropped labels and pixels.
        drop_labels: probability of additionally blanking each present label (0 to 1); a row
            always keeps at least one label. Images and splits do not depend on it.
        workers: processes used to render images (1 renders in this process).

    Returns:
        The path of ``out_dir/manifest.csv``. Its columns are ``path`` (relative to the
        manifest's folder), one column per schema group in schema order (empty = no label),
        ``split`` and ``class`` (the matching class of the rules, or empty).

    Raises:
        ValueError: a count is negative, ``image_size`` < 32, ``drop_labels`` outside [0, 1]
            or ``workers`` < 1.
    """
    _check_arguments(n_creatures=n_creatures, n_logos=n_logos, n_unseen=n_unseen, image_size=image_size,
                     drop_labels=drop_labels, workers=workers)
    start = time.perf_counter()
    schema = demo_schema()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    items = _plan(schema, n_creatures=n_creatures, n_logos=n_logos, n_unseen=n_unseen, seed=seed)
    labels = _drop(items, drop_labels, seed)
    digits = max(5, len(str(len(items))))
    paths = [f"images/{item.index + 1:0{digits}d}.png" for item in items]
    jobs = [(str(out / p), it.index, it.kind, it.truth, image_size, seed) for p, it in zip(paths, items)]
    _write_all_images(jobs, workers)
    write_text(out / "schema.yaml", SCHEMA_FILE.read_text(encoding="utf-8"))
    write_text(out / "rules.yaml", RULES_FILE.read_text(encoding="utf-8"))
    manifest = out / "manifest.csv"  # last: its presence means the folder is complete
    write_text(manifest, _manifest_text(schema, items, labels, paths))
    logger.info("wrote %d synthetic images and %s in %.1f s", len(items), manifest, time.perf_counter() - start)
    return manifest


def _check_arguments(*, n_creatures: int, n_logos: int, n_unseen: int, image_size: int, drop_labels: float,
                     workers: int) -> None:
    """Refuse the arguments :func:`generate` cannot honour, before anything is written."""
    for name, n in (("n_creatures", n_creatures), ("n_logos", n_logos), ("n_unseen", n_unseen)):
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 (textures need the pixels), got {image_size}")
    if not 0.0 <= drop_labels <= 1.0:
        raise ValueError(f"drop_labels must be between 0 and 1, got {drop_labels}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
