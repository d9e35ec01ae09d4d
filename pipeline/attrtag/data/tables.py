"""Labelled tables: a schema from a table's columns, and label removal for experiments.

Used to turn an existing labelled table (such as the fashion-products ``labels.csv``, which is
already in manifest form) into an attrtag schema, and to simulate partially labelled data by
removing a share of each group's labels for experiments.
"""
from __future__ import annotations

import csv
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..errors import ManifestError
from .manifest import Sample
from ..schema import MISSING_TOKENS, Group, Schema


def schema_from_table(path: str | Path, groups: Sequence[str]) -> Schema:
    """A schema whose groups are columns of a CSV table, values ordered by frequency (then name).

    Args:
        path: CSV with a header row.
        groups: the columns to use as attribute groups, in the order wanted.

    Returns:
        The schema (``NA`` and empty cells are not values).
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [g for g in groups if g not in header]
        if missing:
            raise ManifestError(f"{path}:1: no column '{missing[0]}' (columns: {', '.join(header)})")
        counts = {g: Counter() for g in groups}
        for line, row in enumerate(reader, start=2):
            for g in groups:
                v = (row[g] or "").strip()
                if v == "[]" or "|" in v:  # read as one exclusive value, it would become a value named 'red|white'
                    raise ManifestError(
                        f"{path}:{line}: column '{g}' holds the multi-label cell {v!r}, and groups read from the "
                        f"columns are exclusive; pass `schema=S` declaring {g}: {{kind: multi, values: [...]}}")
                if v not in MISSING_TOKENS:
                    counts[g][v] += 1
    return Schema(tuple(Group(g, tuple(v for v, _ in sorted(counts[g].items(), key=lambda kv: (-kv[1], kv[0])))) for g in groups))


def drop_labels(samples: Sequence[Sample], fraction: float, *, seed: int = 0) -> list[Sample]:
    """Remove ``fraction`` of each group's labels, chosen at random per group (not per image).

    Exactly ``round(fraction * labelled)`` labels of every group are removed, so each group
    keeps the same share; images may end up with no label at all (they then only cost time).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = random.Random(seed)
    labels = [list(r.labels) for r in samples]
    n_groups = len(labels[0]) if labels else 0
    for j in range(n_groups):
        have = [i for i, lab in enumerate(labels) if lab[j] >= 0]
        for i in rng.sample(have, round(fraction * len(have))):
            labels[i][j] = -1
    return [replace(r, labels=tuple(lab)) for r, lab in zip(samples, labels)]
