"""The given labels of a manifest, scored one by one: from samples and probabilities to ranked rows.

A label is what the manifest says about one image: an exclusive group's value, or one value of
a multi-label group known present or absent. An unknown label (an empty cell, a value a
``+a|-b`` cell leaves out) is no label: it is never scored, so it can never be called wrong
(suggesting a value for it is label completion's job, ``attrtag train --complete``).
Pure numpy over :mod:`.scores`; no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from ..data.manifest import Sample
from ..data.multilabel import ABSENT, PRESENT
from ..schema import Group, Schema
from .scores import LabelScores, score_labels, two_states

#: A multi-label value's two states, as the ``label`` and ``suggested`` fields write them.
STATES = {ABSENT: "absent", PRESENT: "present"}


@dataclass(frozen=True)
class AuditLabel:
    """One given label and what the audit thinks of it (a row of the output, ``datasets/AUDIT.md``)."""

    path: str
    line: int  # the manifest line of the image
    split: str | None
    group: str
    value: str | None  # a multi-label group's value (None for an exclusive group)
    label: str  # the given value, or ``present``/``absent`` for a multi-label value
    suggested: str  # the most probable other value (or state)
    score: float  # higher = more likely wrong, in [0, 1]
    p_label: float  # the model's probability of the given value (state)
    p_suggested: float  # ... and of the suggested one
    flagged: bool  # a suspect: the suggested value is confidently and more probably the image's
    rank: int = 0  # 1 = the most suspect label of its group


@dataclass(frozen=True)
class GroupSummary:
    """One group's audit: labels checked (with a prediction), flagged, and the estimated errors."""

    group: str
    kind: str
    checked: int
    flagged: int
    estimated_errors: float

    @property
    def estimated_error_rate(self) -> float:
        return self.estimated_errors / self.checked if self.checked else 0.0


def score_manifest(
    schema: Schema, samples: Sequence[Sample], probs: Mapping[str, np.ndarray], *, rank_by: str = "self_confidence",
) -> tuple[list[AuditLabel], list[GroupSummary]]:
    """Every given label of ``samples`` scored with ``probs`` (per group ``(N, n_g)``; a NaN row:
    no prediction for that image, its labels are not checked).

    Returns:
        The labels, most suspect first (by score over all groups), each with its rank in its
        group; and a summary per group in schema order.
    """
    labels: list[AuditLabel] = []
    summary: list[GroupSummary] = []
    for j, g in enumerate(schema):
        p = np.asarray(probs[g.name], dtype=np.float64)
        predicted = ~np.isnan(p).any(1)
        mine, estimated = _multi_rows(g, samples, p, predicted, rank_by) if g.multi else \
            _exclusive_rows(g, j, samples, p, predicted, rank_by)
        order = sorted(range(len(mine)), key=lambda i: (-mine[i].score, mine[i].line, mine[i].value or ""))
        ranked = [_with_rank(mine[i], r + 1) for r, i in enumerate(order)]
        labels += ranked
        summary.append(GroupSummary(g.name, g.kind, len(ranked), sum(x.flagged for x in ranked), estimated))
    labels.sort(key=lambda x: (-x.score, x.rank, schema.group_index(x.group)))
    return labels, summary


def _exclusive_rows(g: Group, j: int, samples: Sequence[Sample], p: np.ndarray, predicted: np.ndarray,
                    rank_by: str) -> tuple[list[AuditLabel], float]:
    idx = [i for i, s in enumerate(samples) if s.labels[j] >= 0 and predicted[i]]
    given = np.array([samples[i].labels[j] for i in idx], np.int64)
    scored = score_labels(p[idx].reshape(len(idx), len(g)), given, rank_by=rank_by)
    names = g.values
    rows = [_row(samples[i], g.name, None, names[given[k]], names[scored.suggested[k]], scored, k)
            for k, i in enumerate(idx)]
    return rows, scored.estimated_errors


def _multi_rows(g: Group, samples: Sequence[Sample], p: np.ndarray, predicted: np.ndarray,
                rank_by: str) -> tuple[list[AuditLabel], float]:
    """Each value of a multi-label group is a two-state group of its own (absent, present)."""
    out: list[AuditLabel] = []
    estimated = 0.0
    for v, value in enumerate(g.values):
        idx = [i for i, s in enumerate(samples)
               if predicted[i] and s.multi.get(g.name, (-1,) * len(g))[v] in (PRESENT, ABSENT)]
        if not idx:
            continue
        given = np.array([samples[i].multi[g.name][v] for i in idx], np.int64)
        scored = score_labels(two_states(p[idx, v]), given, rank_by=rank_by)
        estimated += scored.estimated_errors
        out += [_row(samples[i], g.name, value, STATES[int(given[k])], STATES[1 - int(given[k])], scored, k)
                for k, i in enumerate(idx)]
    return out, estimated


def _row(s: Sample, group: str, value: str | None, label: str, suggested: str, scored: LabelScores,
         k: int) -> AuditLabel:
    return AuditLabel(path=s.path, line=s.line, split=s.split, group=group, value=value, label=label,
                      suggested=suggested, score=float(scored.score[k]), p_label=float(scored.p_given[k]),
                      p_suggested=float(scored.p_suggested[k]), flagged=bool(scored.flagged[k]))


def _with_rank(label: AuditLabel, rank: int) -> AuditLabel:
    return replace(label, rank=rank)
