"""A small tag output on real image files, written without a model (records made directly)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attrtag.tagging import OutputMeta, RecordLayout, open_output
from attrtag.zeroshot.scoring import ClassScoring
from attrtag.zeroshot.rules import resolve_rules
from tests.helpers import MULTI_SCHEMA, SCHEMA, write_images

RULES = {"classes": {"ruby": {"colour": "red"}, "sky": {"colour": "blue", "band": "top"}, "moss": {"colour": "green"}}}
#: Decision thresholds of the multi-label group ``marks`` (dot, bar, ring): one each, none 0.5.
MARK_THRESHOLDS = (0.3, 0.55, 0.8)


def make_tags(folder: Path, n: int, *, classes: bool = True, thresholds: dict[str, float] | None = None,
              fmt: str = "jsonl", seed: int = 0, multi: bool = False,
              top_k: int | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """``n`` images in ``folder/img`` (two more that fail), and their tag output ``folder/tags.FMT``.

    Paths in the records are relative to ``folder`` (as when ``attrtag tag img`` ran there).
    ``multi`` adds the multi-label group ``marks`` (``MULTI_SCHEMA``), decided at
    :data:`MARK_THRESHOLDS`; the exclusive groups' probabilities are the same either way.
    """
    images = write_images(folder / "img", n, size=40)
    schema = MULTI_SCHEMA if multi else SCHEMA
    tagging = ClassScoring(resolve_rules(RULES, schema)[0], schema, top_k=2) if classes else None
    layout = RecordLayout(schema, thresholds=thresholds or {}, classes=tagging, top_k=top_k,
                          value_thresholds={"marks": MARK_THRESHOLDS} if multi else {})
    rng = np.random.default_rng(seed)
    # Peaked distributions, so that some groups are sure and some are not.
    probs = {g.name: rng.dirichlet(np.full(len(g), 0.4), size=n).astype(np.float32) for g in SCHEMA}
    if multi:  # independent sigmoids, most far from their thresholds, a few close
        probs["marks"] = rng.beta(0.5, 0.5, size=(n, len(schema["marks"]))).astype(np.float32)
    recs = layout.records([p.relative_to(folder).as_posix() for p in images], probs)
    recs.insert(n // 2, layout.error_record("img/broken.jpg", "truncated", "img/broken.jpg: file is truncated"))
    recs.append(layout.error_record("img/gone.jpg", "missing", "img/gone.jpg: no such file"))
    out = folder / f"tags.{fmt}"
    with open_output(out, OutputMeta(layout, model="model.onnx", model_sha256="d" * 64)) as w:
        w.write(recs)
    return out, recs


@pytest.fixture
def tags_dir(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """(tags.jsonl, records) of 12 tagged and 2 failed images under ``tmp_path``."""
    return make_tags(tmp_path, 12, thresholds={"colour": 0.6, "shape": 0.5})
