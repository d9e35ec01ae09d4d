"""Tag files every tool reads as they are: JSONL and CSV hold records only, the header lives beside.

pandas, polars and DuckDB (test extras) each read every format back: exactly one row per input,
in input order, no header row among them. Files in the old JSONL layout (header on line 1) are
still read and resumed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from attrtag.errors import OutputError
from attrtag.tagging import OutputMeta, RecordLayout, open_output, read_output
from attrtag.zeroshot.scoring import ClassScoring
from attrtag.zeroshot.rules import resolve_rules
from tests.helpers import SCHEMA

N = 23  # records, two of them failed images


def _layout(classes: bool = True) -> RecordLayout:
    tagging = None
    if classes:
        rules, _ = resolve_rules({"classes": {"ruby": {"colour": "red"}, "sky": {"colour": "blue", "band": "top"}}},
                                 SCHEMA)
        tagging = ClassScoring(rules, SCHEMA, top_k=2)
    return RecordLayout(SCHEMA, thresholds={"colour": 0.5, "band": 0.7}, classes=tagging)


def _records(layout: RecordLayout, n: int = N, *, start: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(start)
    probs = {g.name: rng.dirichlet(np.ones(len(g)), size=n).astype(np.float32) for g in SCHEMA}
    recs = layout.records([f"img/{i:03d} é,\"q\".jpg" for i in range(start, start + n)], probs)
    # Failed images first and in the middle: readers that infer a schema from the first rows
    # must still cope.
    for i in (0, n // 2):
        recs[i] = layout.error_record(recs[i]["path"], "truncated", "file is truncated")
    return recs


def _meta(layout: RecordLayout) -> OutputMeta:
    return OutputMeta(layout, model="model.onnx", model_sha256="c" * 64)


def _write(tmp_path: Path, fmt: str, layout: RecordLayout, recs: list[dict[str, Any]]) -> Path:
    out = tmp_path / f"tags.{fmt}"
    with open_output(out, _meta(layout)) as w:
        w.write(recs[:5])
        w.write(recs[5:])
    return out


def test_jsonl_holds_records_only_and_its_header_beside_it(tmp_path: Path) -> None:
    layout = _layout()
    recs = _records(layout)
    out = _write(tmp_path, "jsonl", layout, recs)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == recs  # every line a record, nothing else
    sidecar = tmp_path / "tags.jsonl.meta.json"
    assert json.loads(sidecar.read_text(encoding="utf-8")) == _meta(layout).to_dict()
    assert read_output(out) == (_meta(layout), recs)


def _pandas(path: Path, fmt: str) -> tuple[int, list[str]]:
    pd = pytest.importorskip("pandas")
    df = {"jsonl": lambda: pd.read_json(path, lines=True), "csv": lambda: pd.read_csv(path),
          "parquet": lambda: pd.read_parquet(path)}[fmt]()
    return len(df), df["path"].tolist()


def _polars(path: Path, fmt: str) -> tuple[int, list[str]]:
    pl = pytest.importorskip("polars")
    df = {"jsonl": lambda: pl.read_ndjson(path, infer_schema_length=None), "csv": lambda: pl.read_csv(path),
          "parquet": lambda: pl.read_parquet(path)}[fmt]()
    return df.height, df["path"].to_list()


def _duckdb(path: Path, fmt: str) -> tuple[int, list[str]]:
    duckdb = pytest.importorskip("duckdb")
    reader = {"jsonl": "read_json_auto", "csv": "read_csv_auto", "parquet": "read_parquet"}[fmt]
    with duckdb.connect() as con:
        rows = con.execute(f"SELECT path FROM {reader}(?)", [str(path)]).fetchall()
    return len(rows), [r[0] for r in rows]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("reader", [_pandas, _polars, _duckdb], ids=["pandas", "polars", "duckdb"])
def test_every_format_reads_back_one_row_per_input(
    tmp_path: Path, fmt: str, reader: Callable[[Path, str], tuple[int, list[str]]]
) -> None:
    layout = _layout()
    recs = _records(layout)
    rows, paths = reader(_write(tmp_path, fmt, layout, recs), fmt)
    assert rows == N
    assert paths == [r["path"] for r in recs]


def test_pandas_sees_the_record_fields_as_columns(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    layout = _layout()
    recs = _records(layout)
    df = pd.read_json(_write(tmp_path, "jsonl", layout, recs), lines=True)
    assert df.loc[3, "colour"] == recs[3]["colour"] and df.loc[3, "colour_prob"] == recs[3]["colour_prob"]
    assert df.loc[3, "class"] == recs[3]["class"]
    assert df["error"].notna().sum() == 2


def _old_layout_file(path: Path, meta: OutputMeta, recs: list[dict[str, Any]]) -> None:
    """A JSONL as attrtag wrote it before the header moved beside it: the header on line 1."""
    lines = [{"_attrtag": meta.to_dict()}, *recs]
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")


def test_a_jsonl_written_the_old_way_is_read_and_resumed(tmp_path: Path) -> None:
    layout = _layout(classes=False)
    recs = _records(layout, 9)
    out = tmp_path / "old.jsonl"
    _old_layout_file(out, _meta(layout), recs[:4])
    assert read_output(out) == (_meta(layout), recs[:4])
    with open_output(out, _meta(layout)) as w:
        assert w.done == {r["path"] for r in recs[:4]}
        w.write(recs[4:])
    assert read_output(out) == (_meta(layout), recs)
    # Resumed in its own layout: still one header line, no sidecar that could disagree with it.
    assert "_attrtag" in json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert not (tmp_path / "old.jsonl.meta.json").exists()


def test_an_old_layout_file_with_a_torn_last_line_is_repaired_on_resume(tmp_path: Path) -> None:
    layout = _layout(classes=False)
    recs = _records(layout, 6)
    out = tmp_path / "old.jsonl"
    _old_layout_file(out, _meta(layout), recs[:3])
    with open(out, "ab") as f:
        f.write(json.dumps(recs[3]).encode()[:40])
    with pytest.raises(OutputError, match=r"old\.jsonl:5: the last record is incomplete"):
        read_output(out)
    with open_output(out, _meta(layout)) as w:
        assert len(w.done) == 3
        w.write(recs[3:])
    assert read_output(out)[1] == recs


def test_resume_of_a_pure_jsonl_checks_the_sidecar(tmp_path: Path) -> None:
    layout = _layout(classes=False)
    recs = _records(layout, 6)
    out = _write(tmp_path, "jsonl", layout, recs[:3])
    with pytest.raises(OutputError, match="written with top_k unset, this run uses 2"):
        open_output(out, _meta(RecordLayout(SCHEMA, top_k=2)))
    with open_output(out, _meta(layout)) as w:
        assert len(w.done) == 3
        w.write(recs[3:])
    assert read_output(out)[1] == recs


def test_a_stale_sidecar_beside_an_empty_output_is_replaced(tmp_path: Path) -> None:
    layout = _layout(classes=False)
    out = tmp_path / "tags.jsonl"
    (tmp_path / "tags.jsonl.meta.json").write_text("{not json")
    out.write_bytes(b"")
    with open_output(out, _meta(layout)) as w:
        w.write(_records(layout, 3))
    assert read_output(out)[0] == _meta(layout)


# -- files that are not tag outputs: one line naming the file (and line) -------------------------


def test_a_jsonl_without_its_sidecar_is_refused(tmp_path: Path) -> None:
    layout = _layout(classes=False)
    out = _write(tmp_path, "jsonl", layout, _records(layout, 3))
    (tmp_path / "tags.jsonl.meta.json").unlink()
    with pytest.raises(OutputError, match=r"tags\.jsonl: no tags\.jsonl\.meta\.json next to it"):
        read_output(out)


def test_a_csv_without_its_sidecar_is_refused(tmp_path: Path) -> None:
    layout = _layout(classes=False)
    out = _write(tmp_path, "csv", layout, _records(layout, 3))
    (tmp_path / "tags.csv.meta.json").unlink()
    with pytest.raises(OutputError, match=r"tags\.csv: no tags\.csv\.meta\.json next to it") as err:
        read_output(out)
    assert "\n" not in str(err.value)


def test_a_wrong_header_is_named(tmp_path: Path) -> None:
    layout = _layout(classes=False)
    out = _write(tmp_path, "jsonl", layout, _records(layout, 3))
    (tmp_path / "tags.jsonl.meta.json").write_text('{"model": "m.onnx"}')
    with pytest.raises(OutputError, match=r"tags\.jsonl\.meta\.json: unreadable attrtag header"):
        read_output(out)
    old = tmp_path / "old.jsonl"
    old.write_text('{"_attrtag": {"format_version": 99}}\n')
    with pytest.raises(OutputError, match="newer attrtag"):
        read_output(old)


def test_a_line_that_is_not_a_record_is_named_with_its_line(tmp_path: Path) -> None:
    layout = _layout(classes=False)
    out = _write(tmp_path, "jsonl", layout, _records(layout, 4))
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = '{"label": "cat"}\n'
    out.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(OutputError, match=r"tags\.jsonl:3: not a tag record \(no 'path'; first key 'label'\)"):
        read_output(out)
    lines[2] = "not json\n"
    out.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(OutputError, match=r"tags\.jsonl:3: not a JSON record"):
        read_output(out)
