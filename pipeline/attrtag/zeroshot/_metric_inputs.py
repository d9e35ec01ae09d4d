"""The inputs of the zero-shot metrics, checked: score matrices, labels and lists of class indices.

Every metric of :mod:`.metrics` validates its inputs here, so a bad shape, index or class list
fails with the same message whichever metric received it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import AttrtagError


def check_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(N, C)`` scores and int ``(N,)`` labels in ``[-1, C)``."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise AttrtagError(f"scores must be a non-empty (N, C) matrix, got shape {s.shape}")
    if np.isnan(s).any():
        raise AttrtagError("scores contain NaN")
    y = np.asarray(labels)
    if y.shape != (s.shape[0],):
        raise AttrtagError(f"labels must have shape ({s.shape[0]},) to match scores, got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise AttrtagError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < -1) | (y >= s.shape[1])
    if bad.any():
        raise AttrtagError(
            f"label {int(y[bad][0])} at row {int(np.flatnonzero(bad)[0])} is not a class index in "
            f"[0, {s.shape[1]}) (use -1 for 'no label')"
        )
    return s, y


def class_indices(idx: Sequence[int], num_classes: int, what: str) -> np.ndarray:
    """Sorted unique class indices, each in ``[0, num_classes)``; at least one."""
    a = np.asarray(idx)
    if a.size == 0:
        raise AttrtagError(f"{what}: no classes given")
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise AttrtagError(f"{what}: expected a list of class indices, got {idx!r}")
    if a.min() < 0 or a.max() >= num_classes:
        raise AttrtagError(f"{what}: class indices must be in [0, {num_classes}), got {a.tolist()}")
    return np.unique(a)


def seen_unseen_indices(
    seen: Sequence[int], unseen: Sequence[int], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The seen and the unseen classes as :func:`class_indices`; no class may be both."""
    s, u = class_indices(seen, num_classes, "seen"), class_indices(unseen, num_classes, "unseen")
    both = np.intersect1d(s, u)
    if both.size:
        raise AttrtagError(f"classes {both.tolist()} are listed as both seen and unseen")
    return s, u
