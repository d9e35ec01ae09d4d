"""Reading a tag output in chunks (``attrtag classify`` streams its input): the same records, bounded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attrtag.errors import OutputError
from attrtag.tagging import OutputMeta, RecordLayout, open_output, read_output
from attrtag.tagging.stream import iter_output
from attrtag.zeroshot.scoring import ClassScoring
from attrtag.zeroshot.rules import Rules
from tests.helpers import SCHEMA

RULES = Rules.from_dict({"classes": {"reddish": {"colour": "red"}, "top": {"band": "top"}}}, SCHEMA)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_chunks_hold_the_records_read_output_reads(tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    layout = RecordLayout(SCHEMA, thresholds={"band": 0.7}, classes=ClassScoring(RULES, SCHEMA))
    rng = np.random.default_rng(0)
    probs = {g.name: rng.dirichlet(np.ones(len(g)), size=11) for g in SCHEMA}
    records = layout.records([f"img/{i}, \"x\".jpg" for i in range(11)], probs)
    records[4] = layout.error_record(records[4]["path"], "decode", "broken")
    out = tmp_path / f"tags.{fmt}"
    with open_output(out, OutputMeta(layout, model="m.pt", model_sha256="b" * 64)) as w:
        w.write(records[:6])
        w.write(records[6:])
    meta, chunks = iter_output(out, chunk=4)
    chunks = list(chunks)
    assert [len(c) for c in chunks] == [4, 4, 3]
    want_meta, want = read_output(out)
    assert meta == want_meta and [r for c in chunks for r in c] == want


def test_a_torn_output_is_refused_before_any_chunk(tmp_path: Path) -> None:
    layout = RecordLayout(SCHEMA)
    out = tmp_path / "tags.jsonl"
    probs = {g.name: np.full((2, len(g)), 1 / len(g)) for g in SCHEMA}
    with open_output(out, OutputMeta(layout, model="m.pt", model_sha256="b" * 64)) as w:
        w.write(layout.records(["a.jpg", "b.jpg"], probs))
    with open(out, "ab") as f:
        f.write(b'{"path": "c.jpg", "col')  # a run killed mid-write
    with pytest.raises(OutputError, match="incomplete"):
        iter_output(out)


def test_an_old_layout_jsonl_streams_without_its_header_line(tmp_path: Path) -> None:
    """Written before the header moved to FILE.meta.json: line 1 is the header, never a record."""
    layout = RecordLayout(SCHEMA)
    probs = {g.name: np.full((5, len(g)), 1 / len(g)) for g in SCHEMA}
    records = layout.records([f"{i}.jpg" for i in range(5)], probs)
    meta = OutputMeta(layout, model="m.pt", model_sha256="b" * 64)
    out = tmp_path / "old.jsonl"
    lines = [{"_attrtag": meta.to_dict()}, *records]
    out.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    found, chunks = iter_output(out, chunk=2)
    assert found == meta and [r["path"] for c in chunks for r in c] == [f"{i}.jpg" for i in range(5)]
    assert not (tmp_path / "old.jsonl.meta.json").exists()
