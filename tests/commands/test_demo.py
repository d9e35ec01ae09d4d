"""``attrtag demo`` end to end at a tiny size: every step runs (calibrate included), and it ends with the report."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from attrtag.cli import main
from attrtag.tagging import read_output


def test_the_demo_ends_by_writing_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--epochs", "1", "--creatures", "120", "--logos", "20", "--unseen", "3",
               "--image-size", "32", "--batch-size", "32", "--workers", "1", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert (out / "calibrated.onnx").is_file()  # calibrate needs seen-class images in val: 120 creatures give some
    report = out / "report.html"
    assert printed.rstrip().splitlines()[-1] == f"open the report: {report.resolve().as_uri()}"
    (blob,) = re.findall(r'id="attrtag-data">(.*?)</script>', report.read_text(encoding="utf-8"), re.S)
    items = json.loads(blob)["items"]
    assert [it[0] for it in items] == [r["path"] for r in read_output(out / "tags.jsonl")[1]]
    assert all(it[1].startswith("data:image/jpeg;base64,") for it in items)
