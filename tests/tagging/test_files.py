"""Tag records, the output header and the output files: layouts, formats, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attrtag.errors import OutputError, OutputMismatchError
from attrtag.schema import Schema
from attrtag.tagging import OutputMeta, RecordLayout, open_output, read_output
from tests.helpers import SCHEMA


def meta_for(layout: RecordLayout, sha: str = "a" * 64) -> OutputMeta:
    return OutputMeta(layout, model="model.pt", model_sha256=sha)


def test_prediction_records_top_k_and_thresholds() -> None:
    probs = {
        "colour": np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]], np.float32),
        "shape": np.full((2, 7), 1 / 7, np.float32),
        "band": np.array([[0.9, 0.1], [0.3, 0.7]], np.float32),
    }
    layout = RecordLayout(SCHEMA, top_k=2, thresholds={"colour": 0.6, "band": 0.8})
    r0, r1 = layout.records(["a.jpg", "b.jpg"], probs)
    assert (r0["colour"], r0["colour_prob"], r0["band"]) == ("green", 0.7, "top")
    assert list(r0["colour_probs"]) == ["green", "red"]  # most probable first
    assert list(r1["colour_probs"]) == ["red", "green"]  # a tie keeps schema order
    assert list(r0["shape_probs"]) == ["s0", "s1"] and r0["shape"] == "s0"
    assert r0["uncertain"] == [] and r1["uncertain"] == ["colour", "band"]

    full = RecordLayout(SCHEMA).records(["a.jpg", "b.jpg"], probs)[0]
    assert tuple(full["shape_probs"]) == SCHEMA["shape"].values and "uncertain" not in full
    assert full["colour_probs"] == {"red": 0.2, "green": 0.7, "blue": 0.1}  # rounded to 6 decimals


def test_layout_rejects_bad_settings() -> None:
    with pytest.raises(OutputError, match="the model has no group 'size'"):
        RecordLayout(SCHEMA, thresholds={"size": 0.5})
    with pytest.raises(OutputError, match="top_k must be at least 1"):
        RecordLayout(SCHEMA, top_k=0)
    with pytest.raises(OutputError, match="group 'a_prob'"):
        RecordLayout(Schema.from_dict({"a": ["x", "y"], "a_prob": ["x", "y"]}))


def _records(layout: RecordLayout, n: int, *, start: int = 0) -> list[dict]:
    rng = np.random.default_rng(start)
    probs = {g.name: rng.dirichlet(np.ones(len(g)), size=n).astype(np.float32) for g in SCHEMA}
    recs = layout.records([f"p/{i:03d} é,\"q\".jpg" for i in range(start, start + n)], probs)
    recs[1] = layout.error_record(recs[1]["path"], "truncated", "p: file is truncated,\nends early")
    return recs


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_formats_read_back_the_same_records(tmp_path: Path, fmt: str) -> None:
    layout = RecordLayout(SCHEMA, top_k=3, thresholds={"colour": 0.5})
    recs = _records(layout, 6)
    out = tmp_path / f"tags.{fmt}"
    with open_output(out, meta_for(layout)) as w:
        assert w.done == set()
        w.write(recs[:4])
        w.write(recs[4:])
    meta, back = read_output(out)
    assert back == recs
    assert meta == meta_for(layout)
    assert back[1]["message"] == "p: file is truncated, ends early"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_torn_last_line_is_cut_off_on_resume(tmp_path: Path, fmt: str) -> None:
    layout = RecordLayout(SCHEMA)
    recs = _records(layout, 5)
    out = tmp_path / f"tags.{fmt}"
    with open_output(out, meta_for(layout)) as w:
        w.write(recs[:3])
    intact = out.stat().st_size
    with open(out, "ab") as f:  # what a kill in the middle of writing the next batch leaves
        f.write(json.dumps(recs[3]).encode()[:57] if fmt == "jsonl" else b'"p/003 \xc3\xa9,""q"".jpg",green,0.4')
    with pytest.raises(OutputError, match="incomplete"):
        read_output(out)
    with open_output(out, meta_for(layout)) as w:
        assert out.stat().st_size == intact
        assert w.done == {r["path"] for r in recs[:3]}
        w.write(recs[3:])
    assert read_output(out)[1] == recs


def test_resume_refuses_other_model_schema_or_settings(tmp_path: Path) -> None:
    layout = RecordLayout(SCHEMA)
    out = tmp_path / "tags.jsonl"
    with open_output(out, meta_for(layout)) as w:
        w.write(_records(layout, 2))
    other_schema = Schema.from_dict({"colour": ["red", "green", "blue"], "shape": ["s0", "s1"], "band": ["top"]})
    cases = [
        (meta_for(layout, sha="b" * 64), "written by model"),
        (meta_for(RecordLayout(other_schema)), "values of group 'shape' differ"),
        (meta_for(RecordLayout(SCHEMA, top_k=2)), "written with top_k unset"),
        (meta_for(RecordLayout(SCHEMA, thresholds={"band": 0.5})), "written with thresholds"),
    ]
    for meta, match in cases:
        with pytest.raises(OutputMismatchError, match=match):
            open_output(out, meta)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"path": "x"}\n')
    with pytest.raises(OutputError, match="not an attrtag tag output"):
        open_output(foreign, meta_for(layout))
    with open_output(foreign, meta_for(layout), overwrite=True) as w:
        assert w.done == set()


def test_parquet_resumes_from_its_sidecar_and_writes_atomically(tmp_path: Path) -> None:
    layout = RecordLayout(SCHEMA)
    recs = _records(layout, 9)
    out = tmp_path / "tags.parquet"
    sidecar = tmp_path / "tags.parquet.partial.jsonl"
    with pytest.raises(KeyboardInterrupt):  # an interrupted run: no Parquet, the sidecar stays
        with open_output(out, meta_for(layout)) as w:
            w.write(recs[:3])
            raise KeyboardInterrupt
    assert not out.exists() and sidecar.exists()
    with open_output(out, meta_for(layout)) as w:
        assert w.done == {r["path"] for r in recs[:3]}
        w.write(recs[3:6])
    assert not sidecar.exists() and read_output(out)[1] == recs[:6]

    # Crash after os.replace but before the sidecar was deleted, then a run with new inputs:
    # the merge must not duplicate the records that are in both.
    with open_output(out, meta_for(layout)) as w:
        w.write(recs[6:8])
        w._partial.write(recs[:2])  # type: ignore[attr-defined]  # stale copies, as after that crash
    assert [r["path"] for r in read_output(out)[1]] == [r["path"] for r in recs[:8]]
    mtime = out.stat().st_mtime_ns
    with open_output(out, meta_for(layout)) as w:  # nothing new: the file is left alone
        assert len(w.done) == 8
    assert out.stat().st_mtime_ns == mtime and not sidecar.exists()
