"""Tag files of a model with a multi-label group: records, every format read back exactly, by attrtag
and as they are by pandas, polars and DuckDB, and a header that holds the value thresholds.

``marks`` (dot, bar, ring) is decided at 0.3, 0.5 and 0.7: a reader or writer that decides at 0.5
everywhere, or that keeps one value per group, cannot pass.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from attrtag.errors import OutputMismatchError
from attrtag.tagging import RecordLayout, iter_output, open_output, read_output
from attrtag.zeroshot.rules import resolve_rules
from attrtag.zeroshot.scoring import ClassScoring
from tests.helpers import MULTI_SCHEMA
from tests.tagging.test_pure_files import _meta, _write

N = 23  # records: two failed images, and the first tagged ones with no mark present
CUTS = (0.3, 0.5, 0.7)


def _layout(cuts: tuple[float, ...] = CUTS, *, classes: bool = True) -> RecordLayout:
    scoring = None
    if classes:  # class rules over the exclusive groups
        rules, _ = resolve_rules({"classes": {"ruby": {"colour": "red"}, "sky": {"colour": "blue", "band": "top"}}},
                                 MULTI_SCHEMA)
        scoring = ClassScoring(rules, MULTI_SCHEMA, top_k=2)
    return RecordLayout(MULTI_SCHEMA, thresholds={"colour": 0.5}, classes=scoring, value_thresholds={"marks": cuts})


def _probs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = {g.name: rng.dirichlet(np.ones(len(g)), size=n).astype(np.float32) for g in MULTI_SCHEMA if not g.multi}
    marks = rng.random((n, 3)).astype(np.float32)
    marks[:4] *= 0.25  # the first rows hold no mark: readers that infer a type from them must cope
    marks[5] = (0.3, 0.5, 0.7)  # exactly at each threshold: present
    return {**probs, "marks": marks}


def _records(layout: RecordLayout, n: int = N) -> list[dict[str, Any]]:
    recs = layout.records([f"img/{i:03d} é,\"q\".jpg" for i in range(n)], _probs(n))
    for i in (1, n // 2):
        recs[i] = layout.error_record(recs[i]["path"], "truncated", "file is truncated")
    return recs


def test_a_record_holds_the_values_present_and_every_probability() -> None:
    probs = _probs(8)
    recs = _layout().records([f"{i}.jpg" for i in range(8)], probs)
    for rec, p in zip(recs, np.round(probs["marks"].astype(np.float64), 6)):
        assert rec["marks"] == [v for v, x, t in zip(("dot", "bar", "ring"), p, CUTS) if x >= t]
        assert rec["marks_probs"] == dict(zip(("dot", "bar", "ring"), p.tolist()))
        assert "marks_prob" not in rec and "marks" not in rec["uncertain"]
    assert recs[0]["marks"] == [] and recs[5]["marks"] == ["dot", "bar", "ring"]
    first = {g: p[:1] for g, p in probs.items()}  # no mark at the card's thresholds, all of them at 0
    assert _layout((0.0, 0.0, 0.0)).records(["a"], first)[0]["marks"] == ["dot", "bar", "ring"]
    assert list(_layout(classes=False).columns) == [
        "path", "colour", "colour_prob", "colour_probs", "shape", "shape_prob", "shape_probs",
        "band", "band_prob", "band_probs", "marks", "marks_probs", "uncertain", "error", "message"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_every_format_reads_back_the_same_records(tmp_path: Path, fmt: str) -> None:
    layout = _layout()
    recs = _records(layout)
    out = _write(tmp_path, fmt, layout, recs)
    meta, back = read_output(out)
    assert back == recs and meta == _meta(layout)
    assert meta.layout.value_thresholds == {"marks": CUTS}
    header, chunks = iter_output(out, chunk=5)
    assert header == meta and [r for c in chunks for r in c] == recs


def test_the_header_stores_the_value_thresholds(tmp_path: Path) -> None:
    layout = _layout(classes=False)
    _write(tmp_path, "jsonl", layout, _records(layout))
    header = json.loads((tmp_path / "tags.jsonl.meta.json").read_text(encoding="utf-8"))
    assert header["value_thresholds"] == {"marks": {"dot": 0.3, "bar": 0.5, "ring": 0.7}}
    assert header["schema"]["marks"] == {"kind": "multi", "values": ["dot", "bar", "ring"]}
    assert header["format_version"] == 3  # attrtag before multi-label groups says "upgrade", not "corrupt"


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_resuming_with_other_value_thresholds_is_refused(tmp_path: Path, fmt: str) -> None:
    layout = _layout()
    recs = _records(layout)
    out = _write(tmp_path, fmt, layout, recs[:7])
    refused = r"written with value thresholds .*'ring': 0\.7.*this run uses .*'ring': 0\.6"
    with pytest.raises(OutputMismatchError, match=refused):
        open_output(out, _meta(_layout((0.3, 0.5, 0.6))))
    with open_output(out, _meta(layout)) as w:  # the same thresholds resume
        assert w.done == {r["path"] for r in recs[:7]}
        w.write(recs[7:])
    assert read_output(out)[1] == recs


# -- other tools read the files as they are ------------------------------------------------------


def _pandas(path: Path, fmt: str) -> tuple[list[str], list[Any], list[Any]]:
    pd = pytest.importorskip("pandas")
    df = {"jsonl": lambda: pd.read_json(path, lines=True), "csv": lambda: pd.read_csv(path),
          "parquet": lambda: pd.read_parquet(path)}[fmt]()
    return df["path"].tolist(), df["marks"].tolist(), df["marks_probs"].tolist()


def _polars(path: Path, fmt: str) -> tuple[list[str], list[Any], list[Any]]:
    pl = pytest.importorskip("polars")
    df = {"jsonl": lambda: pl.read_ndjson(path, infer_schema_length=None), "csv": lambda: pl.read_csv(path),
          "parquet": lambda: pl.read_parquet(path)}[fmt]()
    return df["path"].to_list(), df["marks"].to_list(), df["marks_probs"].to_list()


def _duckdb(path: Path, fmt: str) -> tuple[list[str], list[Any], list[Any]]:
    duckdb = pytest.importorskip("duckdb")
    reader = {"jsonl": "read_json_auto", "csv": "read_csv_auto", "parquet": "read_parquet"}[fmt]
    with duckdb.connect() as con:
        rows = con.execute(f"SELECT path, marks, marks_probs FROM {reader}(?)", [str(path)]).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _plain(value: Any) -> Any:
    """A cell as data: JSON text (CSV, Parquet) parsed, a missing cell None, an array a list."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return json.loads(value)
    return value.tolist() if hasattr(value, "tolist") else value


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("reader", [_pandas, _polars, _duckdb], ids=["pandas", "polars", "duckdb"])
def test_every_tool_reads_one_row_per_input_with_the_marks(
    tmp_path: Path, fmt: str, reader: Callable[[Path, str], tuple[list[str], list[Any], list[Any]]]
) -> None:
    layout = _layout()
    recs = _records(layout)
    paths, marks, probs = reader(_write(tmp_path, fmt, layout, recs), fmt)
    assert paths == [r["path"] for r in recs]  # one row per input, in order, no header row
    assert [_plain(m) for m in marks] == [r.get("marks") for r in recs]
    # pandas parses JSON numbers to within an ulp (read_json's precise_float=False), hence approx.
    assert [_plain(p) for p in probs] == [
        None if "error" in r else pytest.approx(r["marks_probs"], rel=1e-12) for r in recs]
