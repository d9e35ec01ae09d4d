"""Tag records: how a batch of probabilities becomes one record per image, and flat columns.

The record and column layout is specified in ``datasets/OUTPUT.md``. This module owns every
field of a record: the group fields, ``uncertain``, the class fields (scored by the run's
:class:`~attrtag.zeroshot.scoring.ClassScoring` from the rounded distributions the record
itself holds, so re-scoring a finished output reproduces them exactly) and the error fields.
Probabilities are rounded here, once.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.batches import Decoded
from ..errors import OutputError
from ..card import DEFAULT_THRESHOLD
from ..schema import Group, Schema
from ..zeroshot.classifier import ZeroShotResult
from ..zeroshot.scoring import ClassScoring

#: One output record (a JSON object), as specified in ``datasets/OUTPUT.md``.
TagRecord = dict[str, Any]

#: Probabilities are rounded to this many decimals (float32 softmax outputs carry about 7
#: digits): files stay small, and records of the same model are byte-identical across runs.
PROB_DECIMALS = 6
#: Record fields (and flat columns, in this order) of a run with class rules.
CLASS_FIELDS = ("class", "class_prob", "classes", "class_explanation")
#: ``class`` of an image whose best class probability is below the unknown threshold.
UNKNOWN = "unknown"
_FIXED_COLUMNS = ("path", "uncertain", "error", "message")


def round_probs(probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float64 copies rounded to :data:`PROB_DECIMALS`: the values records hold."""
    return {g: np.round(np.asarray(p, dtype=np.float64), PROB_DECIMALS) for g, p in probs.items()}


def class_fields(result: ZeroShotResult) -> list[dict[str, Any]]:
    """The class fields of ``N`` scored images, keys in :data:`CLASS_FIELDS` order."""
    names = result.class_names
    top_probs = np.round(result.top_k_probs, PROB_DECIMALS).tolist()
    out = []
    for i, (idx, ps, unknown) in enumerate(zip(result.top_k.tolist(), top_probs, result.unknown.tolist())):
        out.append({
            "class": UNKNOWN if unknown else names[idx[0]],
            "class_prob": ps[0],
            "classes": [{"class": names[c], "prob": p} for c, p in zip(idx, ps)],
            "class_explanation": {g: round(v, PROB_DECIMALS) for g, v in result.explain(i, idx[0]).items()},
        })
    return out


@dataclass(frozen=True)
class RecordLayout:
    """How probabilities become records and records become flat columns.

    Attributes:
        schema: the model's groups and values (the record's group order).
        top_k: keep only the ``k`` most probable values in ``<group>_probs`` (None: all).
        thresholds: exclusive group -> minimum top probability; groups below it are listed in
            ``uncertain``. Empty: no ``uncertain`` field at all.
        classes: zero-shot class scoring (built for ``schema``); None: no class fields.
        value_thresholds: multi-label group -> each value's decision threshold, in value order
            (a value is present when its probability reaches it); a group not given decides
            every value at :data:`attrtag.card.DEFAULT_THRESHOLD`.
        temperatures: group -> the temperature the probabilities were calibrated with by the
            predictor (:attr:`attrtag.runtime.Predictor.temperatures`; empty: raw probabilities).
            Recorded in the output header: records of one file are all calibrated alike.
    """

    schema: Schema
    top_k: int | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    classes: ClassScoring | None = None
    value_thresholds: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    temperatures: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 1):
            raise OutputError(f"`top_k` must be at least 1, got {self.top_k}")
        for g, t in self.thresholds.items():
            if g not in self.schema:
                raise OutputError(f"`thresholds` {g}={t}: the model has no group '{g}' "
                                  f"(groups: {', '.join(self.schema.names)})")
            if not 0.0 <= t <= 1.0:
                raise OutputError(f"`thresholds` {g}={t}: a threshold is a probability between 0 and 1")
            if self.schema[g].multi:
                raise OutputError(f"`thresholds` {g}={t}: '{g}' is a multi-label group, so a threshold decides its "
                                  "values (value thresholds), not whether it is uncertain")
        self._check_value_thresholds()
        for g, t in self.temperatures.items():
            if g not in self.schema or not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
                raise OutputError(f"temperatures {g}={t}: not a group of the schema with a temperature > 0")
        for g in self.schema:
            for name in (g.name, *g.values):
                if any(c in name for c in "\r\n"):
                    # CSV torn-row detection relies on every row being one line.
                    raise OutputError(
                        f"schema group '{g.name}': {name!r} contains a line break; rename it in the schema"
                    )
        taken = set(_FIXED_COLUMNS) | (set(CLASS_FIELDS) if self.classes is not None else set())
        for g in self.schema.names:
            for col in (g, f"{g}_prob", f"{g}_probs"):  # a multi-label group has no _prob, yet keeps it free
                if col in taken:
                    raise OutputError(
                        f"schema group '{g}' gives output column '{col}', which is already used"
                        + (" by the class fields of `rules`" if col in CLASS_FIELDS else "")
                        + "; rename the group in the schema and retrain/re-export"
                    )
                taken.add(col)
        if self.classes is not None:
            self._check_classes(self.classes)

    def _check_value_thresholds(self) -> None:
        for g, ts in self.value_thresholds.items():
            if g not in self.schema or not self.schema[g].multi:
                raise OutputError(f"`thresholds` {g}: decision thresholds are for multi-label groups "
                                  f"({', '.join(x.name for x in self.schema.multi) or 'the model has none'})")
            if len(ts) != len(self.schema[g]) or not all(0.0 <= t <= 1.0 for t in ts):
                raise OutputError(f"`thresholds` {g}: {list(ts)} is not one probability per value of '{g}'")

    def decision_threshold(self, group: str, i: int) -> float:
        """Value ``i`` of multi-label ``group`` is present at this probability or above."""
        ts = self.value_thresholds.get(group)
        return ts[i] if ts else DEFAULT_THRESHOLD

    def _check_classes(self, classes: ClassScoring) -> None:
        if classes.schema != self.schema:
            raise OutputError("class scoring was built for another schema than the records'")
        if UNKNOWN in classes.rules.names:
            where = classes.rules[UNKNOWN].where or classes.source or "rules"
            raise OutputError(
                f"{where}: a class is named '{UNKNOWN}', which tagging writes for images below the "
                "unknown threshold; rename the class"
            )

    @cached_property  # read for every record written
    def columns(self) -> tuple[str, ...]:
        """Flat column names in order (CSV header, Parquet schema, the Ray engine's columns)."""
        cols = ["path"]
        for g in self.schema:
            cols += [g.name, f"{g.name}_probs"] if g.multi else [g.name, f"{g.name}_prob", f"{g.name}_probs"]
        if self.thresholds:
            cols.append("uncertain")
        if self.classes is not None:
            cols += CLASS_FIELDS
        return (*cols, "error", "message")

    def batch(self, decoded: Sequence[Decoded], probs: Mapping[str, np.ndarray]) -> list[TagRecord]:
        """One record per decoded image of a batch, in order: failures get error records.

        Args:
            decoded: the batch; images without pixels failed to decode.
            probs: group -> ``[n_ok, n_values]`` probabilities of the images that decoded, in order.
        """
        ok = [d.display for d in decoded if d.pixels is not None]
        tagged = iter(self.records(ok, probs) if ok else [])
        return [next(tagged) if d.pixels is not None
                else self.error_record(d.display, d.error or "decode", d.message or "") for d in decoded]

    def records(self, paths: Sequence[str], probs: Mapping[str, np.ndarray]) -> list[TagRecord]:
        """Records of images that were tagged: group fields, ``uncertain`` and class fields.

        Args:
            paths: display paths, one per row.
            probs: group -> ``[B, n_values]`` probabilities, rows in ``paths`` order (rounded
                here, see :func:`round_probs`; class fields are scored from the rounded values).

        Returns:
            One record per path, in order.
        """
        records: list[TagRecord] = [{"path": p} for p in paths]
        rounded = round_probs({g.name: probs[g.name] for g in self.schema})
        for group in self.schema:
            (self._multi_fields if group.multi else self._group_fields)(records, group, rounded[group.name])
        if self.thresholds:
            for rec in records:
                rec["uncertain"] = [g for g, t in self.threshold_items() if rec[f"{g}_prob"] < t]
        if self.classes is not None and records:
            for rec, fields in zip(records, class_fields(self.classes(rounded))):
                rec.update(fields)
        return records

    def _group_fields(self, records: list[TagRecord], group: Group, p: np.ndarray) -> None:
        """``<group>``, ``<group>_prob`` and ``<group>_probs`` of every record, from ``p`` (B, n)."""
        if p.shape != (len(records), len(group)):
            want = (len(records), len(group))
            raise ValueError(f"group '{group.name}': probabilities of shape {p.shape}, expected {want}")
        top = p.argmax(axis=1)
        if self.top_k is None:
            order = np.broadcast_to(np.arange(len(group)), p.shape)
        else:
            # Stable sort of -p: ties keep schema order, so output is deterministic.
            order = np.argsort(-p, axis=1, kind="stable")[:, : self.top_k]
        for rec, row, t, idx in zip(records, p.tolist(), top.tolist(), order.tolist()):
            rec[group.name] = group.values[t]
            rec[f"{group.name}_prob"] = row[t]
            rec[f"{group.name}_probs"] = {group.values[i]: row[i] for i in idx}

    def _multi_fields(self, records: list[TagRecord], group: Group, p: np.ndarray) -> None:
        """``<group>`` (the values present, in value order) and ``<group>_probs`` of every record."""
        if p.shape != (len(records), len(group)):
            raise ValueError(f"group '{group.name}': probabilities of shape {p.shape}, expected "
                             f"{(len(records), len(group))}")
        cut = np.array([self.decision_threshold(group.name, i) for i in range(len(group))])
        present = p >= cut  # (B, n)
        order = (np.broadcast_to(np.arange(len(group)), p.shape) if self.top_k is None
                 else np.argsort(-p, axis=1, kind="stable")[:, : self.top_k])
        for rec, row, on, idx in zip(records, p.tolist(), present.tolist(), order.tolist()):
            rec[group.name] = [v for v, yes in zip(group.values, on) if yes]
            rec[f"{group.name}_probs"] = {group.values[i]: row[i] for i in idx}

    def rescored(self, records: Sequence[TagRecord], source: "RecordLayout") -> list[TagRecord]:
        """Records of ``source`` with this layout's class fields (``classify``): failed images
        unchanged, tagged ones without their old class fields, plus the new ones.

        Raises:
            OutputError: ``source`` keeps only the top-k values (see :meth:`probabilities`).
        """
        out = [r if "error" in r else {k: v for k, v in r.items() if k not in CLASS_FIELDS} for r in records]
        tagged = [r for r in out if "error" not in r]
        if self.classes is not None and tagged:
            for rec, fields in zip(tagged, class_fields(self.classes(source.probabilities(tagged)))):
                rec.update(fields)
        return out

    def probabilities(self, records: Sequence[TagRecord]) -> dict[str, np.ndarray]:
        """The full distributions held by tagged records, as ``{group: (N, n_values)}``.

        Args:
            records: records of this layout without ``error``.

        Returns:
            float64 arrays, columns in schema value order.

        Raises:
            OutputError: the layout keeps only the top-k values (the distributions are gone), or
                a record lacks a value.
        """
        if self.top_k is not None:
            raise OutputError(
                f"the tags were written with `top_k={self.top_k}`, so they hold only the {self.top_k} most "
                "probable values of each group and class scores need all of them; tag again without `top_k`"
            )
        out = {}
        for group in self.schema:
            col = f"{group.name}_probs"
            try:
                out[group.name] = np.array(
                    [[r[col][v] for v in group.values] for r in records], dtype=np.float64
                ).reshape(len(records), len(group))
            except (KeyError, TypeError) as err:
                bad = next(r for r in records if not isinstance(r.get(col), dict) or set(r[col]) != set(group.values))
                raise OutputError(
                    f"record '{bad.get('path')}': '{col}' does not hold every value of '{group.name}' ({err}); "
                    "the file was edited or is corrupt"
                ) from None
        return out

    def threshold_items(self) -> list[tuple[str, float]]:
        return [(g, self.thresholds[g]) for g in self.schema.names if g in self.thresholds]

    def value_threshold_items(self) -> dict[str, dict[str, float]]:
        """Every multi-label value's decision threshold, ``{group: {value: t}}`` (the output header's)."""
        return {g.name: {v: self.decision_threshold(g.name, i) for i, v in enumerate(g.values)} for g in self.schema.multi}

    @staticmethod
    def error_record(path: str, code: str, message: str) -> TagRecord:
        """The record of an image that could not be tagged.

        Args:
            path: display path.
            code: short reason code (``attrtag.data.images.REASONS``).
            message: human-readable explanation; folded onto one line.

        Returns:
            ``{"path", "error", "message"}``.
        """
        # One line: CSV torn-row detection and line-based tools rely on it.
        return {"path": path, "error": code, "message": " ".join(str(message).split())}

    def to_flat(self, record: TagRecord) -> dict[str, Any]:
        """Record -> ``{column: str | float | None}`` (mappings and lists as JSON strings).

        Args:
            record: a record as made by this layout.

        Returns:
            One value per :attr:`columns` entry.
        """
        flat: dict[str, Any] = dict.fromkeys(self.columns)
        for k, v in record.items():
            if k not in flat:
                raise ValueError(f"record field '{k}' is not a column of this layout")
            flat[k] = json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
        return flat

    def from_flat(self, row: Mapping[str, Any]) -> TagRecord:
        """Flat row (CSV strings or Parquet values) -> record; inverse of :meth:`to_flat`.

        Args:
            row: column -> value; empty strings and None both mean "no value".

        Returns:
            The record.

        Raises:
            OutputError: a cell that is not what its column holds (``'high'`` as a probability,
                text that is not JSON where a mapping or list belongs), naming the column.
        """
        def get(col: str) -> Any:
            v = row.get(col)
            return None if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else v

        path = str(get("path") or "")
        if get("error") is not None:
            return self.error_record(path, str(get("error")), str(get("message") or ""))
        rec: TagRecord = {"path": path}
        for g in self.schema:
            if g.multi:
                rec[g.name] = _cell(g.name, get(g.name) or "[]", json.loads)
            else:
                rec[g.name] = get(g.name)
                rec[f"{g.name}_prob"] = _cell(f"{g.name}_prob", get(f"{g.name}_prob"), float)
            rec[f"{g.name}_probs"] = _cell(f"{g.name}_probs", get(f"{g.name}_probs"), json.loads)
        if self.thresholds:
            rec["uncertain"] = _cell("uncertain", get("uncertain") or "[]", json.loads)
        if self.classes is not None:
            rec["class"] = get("class")
            rec["class_prob"] = _cell("class_prob", get("class_prob"), float)
            for col in ("classes", "class_explanation"):
                rec[col] = _cell(col, get(col), json.loads)
        # An empty cell leaves its field out: the reader's check names it as missing.
        return {k: v for k, v in rec.items() if v is not None}


def _cell(column: str, value: Any, parse: Any) -> Any:
    """``parse(value)`` of a flat cell (None stays None), or an error naming the column."""
    if value is None:
        return None
    try:
        return parse(value)
    except (TypeError, ValueError):
        what = "a number" if parse is float else "JSON"
        raise OutputError(f"column '{column}': {str(value)[:80]!r} is not {what}") from None
