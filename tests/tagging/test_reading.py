"""What every reader of a tag file can count on: one record per input, checked records, the content's format."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attrtag.errors import OutputError
from attrtag.tagging import OutputMeta, RecordLayout, iter_output, open_output, read_output
from attrtag.zeroshot.rules import Rules
from attrtag.zeroshot.scoring import ClassScoring
from tests.helpers import SCHEMA, run_cli

RULES = Rules.from_dict({"classes": {"reddish": {"colour": "red"}, "top": {"band": "top"}}}, SCHEMA)
LAYOUT = RecordLayout(SCHEMA, thresholds={"band": 0.7}, classes=ClassScoring(RULES, SCHEMA))
META = OutputMeta(LAYOUT, model="m.pt", model_sha256="b" * 64)


def _records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    probs = {g.name: rng.dirichlet(np.ones(len(g)), size=n) for g in SCHEMA}
    records = LAYOUT.records([f"img/{i}.jpg" for i in range(n)], probs)
    records[1] = LAYOUT.error_record(records[1]["path"], "decode", "broken")
    return records


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    with open_output(path, META) as w:
        w.write(records)
    return path


def _paths(records: list[dict[str, Any]]) -> list[str]:
    return [r["path"] for r in records]


# -- duplicates: outputs written by two runs at once, before outputs were locked ----------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_duplicate_records_read_back_once_keeping_the_last_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fmt: str
) -> None:
    first, again = _records(5, seed=0), _records(5, seed=1)  # the same paths, other probabilities
    mixed = first[:3] + again[:2] + first[3:]  # 0.jpg and 1.jpg recorded twice, the later at 3 and 4
    out = tmp_path / f"tags.{fmt}"
    if fmt == "parquet":  # the writer never repeats a path in Parquet: build the file as an old run left it
        pq = pytest.importorskip("pyarrow.parquet")
        from attrtag.tagging.files import _arrow_schema

        pq.write_table(__import__("pyarrow").Table.from_pylist([LAYOUT.to_flat(r) for r in mixed],
                                                              schema=_arrow_schema(META)), out)
    else:
        _write(out, mixed)
    want = first[2:3] + again[:2] + first[3:]
    with caplog.at_level(logging.WARNING):
        assert read_output(out)[1] == want
    assert [r.getMessage() for r in caplog.records if "repeat" in r.getMessage()] == [
        f"{out}: 2 record(s) repeat an image recorded again later (two runs wrote the file at once); "
        "reading the last record of each"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, chunks = iter_output(out, chunk=2)
        assert [r for c in chunks for r in c] == want
    assert sum("repeat" in r.getMessage() for r in caplog.records) == 1
    if fmt != "parquet":
        with open_output(out, META) as w:  # a resume counts inputs, not records
            assert w.done == set(_paths(first))


# -- malformed records: one line naming file, line (record) and field ----------------------------


def _edit_jsonl(out: Path, line: int, edit: Any) -> None:
    lines = out.read_text(encoding="utf-8").splitlines()
    lines[line - 1] = edit(json.loads(lines[line - 1])) if callable(edit) else edit
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _set(**fields: Any) -> Any:
    def edit(rec: dict[str, Any]) -> str:
        rec.update(fields)
        return json.dumps({k: v for k, v in rec.items() if v is not ...})
    return edit


@pytest.mark.parametrize("edit, said", [
    (_set(shape=...), "tags.jsonl:3: field 'shape' is missing"),
    (_set(colour_prob="high"), "tags.jsonl:3: field 'colour_prob': 'high' is not a probability"),
    (_set(colour_prob=1.5), "tags.jsonl:3: field 'colour_prob': 1.5 is not a probability"),
    (_set(band_probs=[0.5, 0.5]), "tags.jsonl:3: field 'band_probs': [0.5, 0.5] is not a mapping"),
    (_set(band_probs={"top": 0.5, "middle": 0.5}), "tags.jsonl:3: field 'band_probs': 'middle' is not one of"),
    (_set(colour="purple"), "tags.jsonl:3: field 'colour': 'purple' is not one of its values (red, green, blue)"),
    (_set(uncertain="band"), "tags.jsonl:3: field 'uncertain': 'band' is not a list of groups"),
    (_set(**{"class": "ducky"}), "tags.jsonl:3: field 'class': 'ducky' is not a class of the rules"),
    (_set(**{"class": ["reddish"]}), "tags.jsonl:3: field 'class': ['reddish'] is not a class of the rules"),
    (_set(uncertain=[["band"]]), "tags.jsonl:3: field 'uncertain': [['band']] is not a list of groups"),
    (_set(classes={"reddish": 1}), "tags.jsonl:3: field 'classes'"),
    (_set(note="checked"), "tags.jsonl:3: field 'note' is not one of this output's fields"),
    (_set(error=None), "tags.jsonl:3: field 'error': None is not text"),
    ("{not json", "tags.jsonl:3: not a JSON record"),
    ('["img/2.jpg"]', "tags.jsonl:3: not a tag record (no 'path'"),
])
def test_a_malformed_jsonl_record_is_one_line_naming_line_and_field(tmp_path: Path, edit: Any, said: str) -> None:
    out = _write(tmp_path / "tags.jsonl", _records(5))
    _edit_jsonl(out, 3, edit)
    for read in (read_output, iter_output):
        with pytest.raises(OutputError) as err:
            read(out)
        assert said in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("column, cell, said", [
    ("colour_prob", "high", "tags.csv:4: column 'colour_prob': 'high' is not a number"),
    ("colour_prob", "nan", "tags.csv:4: field 'colour_prob': nan is not a probability"),
    ("shape_probs", "{s0: 1}", "tags.csv:4: column 'shape_probs': '{s0: 1}' is not JSON"),
    ("shape_probs", "[1, 2]", "tags.csv:4: field 'shape_probs': [1, 2] is not a mapping"),
    ("band", "", "tags.csv:4: field 'band' is missing"),
])
def test_a_malformed_csv_cell_is_one_line_naming_line_and_field(
    tmp_path: Path, column: str, cell: str, said: str
) -> None:
    import csv

    out = _write(tmp_path / "tags.csv", _records(5))
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rows[3][rows[0].index(column)] = cell
    with open(out, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with pytest.raises(OutputError) as err:
        read_output(out)
    assert said in str(err.value), str(err.value)


def test_a_csv_with_a_column_missing_is_one_line(tmp_path: Path) -> None:
    import csv

    out = _write(tmp_path / "tags.csv", _records(3))
    with open(out, newline="", encoding="utf-8") as f:
        rows = [row[:2] + row[3:] for row in csv.reader(f)]  # colour_prob cut out
    with open(out, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with pytest.raises(OutputError, match=r"tags\.csv:1: column\(s\) colour_prob missing") as err:
        read_output(out)
    assert "\n" not in str(err.value)


def test_a_malformed_parquet_record_is_named_by_its_number(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    out = _write(tmp_path / "tags.parquet", _records(5))
    table = pq.read_table(out)
    cells = table.column("band_probs").to_pylist()
    cells[3] = '"high"'
    pq.write_table(table.set_column(table.column_names.index("band_probs"), "band_probs", pa.array(cells)), out)
    with pytest.raises(OutputError, match=r"tags\.parquet, record 4: field 'band_probs': 'high' is not a mapping"):
        read_output(out)


@pytest.mark.parametrize("to", ["fiftyone", "labelstudio"])
def test_convert_of_a_hand_edited_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, to: str
) -> None:
    out = _write(tmp_path / "tags.jsonl", _records(5))
    _edit_jsonl(out, 4, _set(colour=...))
    rc, _, err = run_cli(capsys, "convert", out, "--to", to, "--out", tmp_path / "review")
    assert rc == 2 and err.count("\n") == 1 and f"{out}:4: field 'colour' is missing" in err, err
    assert not (tmp_path / "review").exists()


# -- the format is the content's ----------------------------------------------------------------


def test_a_file_is_read_by_its_content_whatever_its_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = _records(4)
    for fmt, name in (("csv", "tags.dat"), ("jsonl", "tags")):
        out = tmp_path / name
        with open_output(out, META, fmt=fmt) as w:
            w.write(records)
        assert read_output(out)[1] == records, name
    # CSV in t.jsonl, as --format csv --out t.jsonl wrote it before that was refused: said, and read.
    csv_out = _write(tmp_path / "t.csv", records)
    renamed = tmp_path / "t.jsonl"
    csv_out.rename(renamed)
    (tmp_path / "t.csv.meta.json").rename(tmp_path / "t.jsonl.meta.json")
    with caplog.at_level(logging.WARNING):
        assert read_output(renamed)[1] == records
    assert any("t.jsonl holds CSV, not the JSONL its name says" in r.getMessage() for r in caplog.records)
    junk = tmp_path / "notes.dat"
    junk.write_text("hello\n")
    with pytest.raises(OutputError, match=r"notes\.dat: neither JSONL, CSV nor Parquet"):
        read_output(junk)


def test_a_tag_file_without_its_header_says_how_to_read_it_not_how_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lone = tmp_path / "tags.jsonl"
    lone.write_text('{"path": "a.png", "colour": "red"}\n')  # its .meta.json was not copied along
    code, _, err = run_cli(capsys, "report", lone, "--out", tmp_path / "r.html")
    assert code == 2 and "no tags.jsonl.meta.json next to it" in err and "tag the images again" in err, err
    assert "--overwrite" not in err  # the fix of an output to resume, not of an input
