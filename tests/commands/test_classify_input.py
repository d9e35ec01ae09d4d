"""``attrtag classify``: every bad value of every option is one line, exit 2, and nothing written."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from attrtag.schema import Schema
from attrtag.tagging import OutputMeta, RecordLayout, open_output
from tests.helpers import run_cli

SCHEMA = Schema.from_dict({"covering": ["fur", "feathers", "scales"], "tail": ["no", "yes"]})
RULES = "classes:\n  bear: {covering: fur, tail: 'no'}\n  duck: {covering: feathers, tail: 'yes'}\n"


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    """A hand-made tag output (no model needed), rules and a file."""
    layout = RecordLayout(SCHEMA)
    probs = {"covering": np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]]), "tail": np.array([[0.9, 0.1], [0.2, 0.8]])}
    tags = tmp_path / "tags.jsonl"
    with open_output(tags, OutputMeta(layout, model="hand.onnx", model_sha256="0" * 64)) as w:
        w.write(layout.records(["a.png", "b.png"], probs))
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    return {"dir": tmp_path, "tags": tags, "rules": tmp_path / "rules.yaml"}


# (extra arguments given a tmp folder d; text the one stderr line must hold; the --out that must not appear)
BAD: list[tuple[str, Callable[[Path], list[object]], str]] = [
    ("gamma nan", lambda d: ["--gamma", "nan", "--seen", "bear"], "--gamma must be a finite number, got nan"),
    ("gamma inf", lambda d: ["--gamma", "inf", "--seen", "bear"], "--gamma must be a finite number, got inf"),
    ("seen unknown", lambda d: ["--gamma", "0.5", "--seen", "bear,yeti"], "--seen: yeti not among the classes"),
    ("seen without gamma", lambda d: ["--seen", "bear"], "--seen names the classes --gamma applies to"),
    ("gamma without seen", lambda d: ["--gamma", "0.5"], "--gamma 0.5: which classes are seen?"),
    ("class top k 0", lambda d: ["--class-top-k", "0"], "--class-top-k must be an integer >= 1, got 0"),
    ("class top k -3", lambda d: ["--class-top-k", "-3"], "--class-top-k must be an integer >= 1, got -3"),
    ("unknown threshold 1.5", lambda d: ["--unknown-threshold", "1.5"], "--unknown-threshold must be a probability"),
    ("unknown threshold -0.1", lambda d: ["--unknown-threshold", "-0.1"], "--unknown-threshold must be a probability"),
    ("unknown threshold nan", lambda d: ["--unknown-threshold", "nan"], "--unknown-threshold must be a probability"),
    ("set no =", lambda d: ["--set", "tail"], "--set tail: expected GROUP=VALUE"),
    ("set empty value", lambda d: ["--set", "tail="], "--set tail=: expected GROUP=VALUE"),
    ("set twice", lambda d: ["--set", "tail=no", "--set", "tail=yes"], "group 'tail' is already set to 'no'"),
    ("set unknown group", lambda d: ["--set", "size=xl"], "--set size=xl: unknown group 'size'"),
    ("set unknown value", lambda d: ["--set", "tail=maybe"], "unknown value 'maybe' (allowed: no, yes)"),
    ("format contradicts out", lambda d: ["--format", "csv"], "--format csv contradicts --out"),
    ("rules missing", lambda d: ["--rules", d / "nope.yaml"], "nope.yaml: cannot read YAML file"),
    ("rules bad value", lambda d: ["--rules", _write(d / "bad.yaml", "classes:\n  x: {tail: maybe}\n")],
     "bad.yaml:2: class 'x': unknown value 'maybe'"),
    ("model missing", lambda d: ["--model", d / "nope.onnx"], "--model " + "{d}/nope.onnx: not found"),
    ("model is another file", lambda d: ["--model", d / "rules.yaml"], "is not the model that tagged"),
]

# Bad --out values: (name, --out given a tmp folder d, text of the one line)
BAD_OUT: list[tuple[str, Callable[[Path], Path], str]] = [
    ("out a folder", lambda d: d / "folder", "--out {d}/folder is a folder; name a file in it"),
    ("out under a file", lambda d: d / "a_file" / "c.jsonl", "a_file is a file, not a folder"),
    ("out no format", lambda d: d / "c.xlsx", "names no output format"),
    ("out is the input", lambda d: d / "tags.jsonl", "is the input file"),
    ("out exists", lambda d: d / "rules.yaml.jsonl", "exists; pass --overwrite"),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _snapshot(d: Path) -> dict[str, int]:
    return {str(p.relative_to(d)): p.stat().st_size for p in d.rglob("*") if p.is_file()}


def _one_error_line(rc: int, err: str, want: str) -> None:
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("attrtag: error: "), err
    assert want in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("name, extra, want", BAD, ids=[b[0] for b in BAD])
def test_a_bad_option_value_is_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], name: str, extra: Callable[[Path], list[object]],
    want: str,
) -> None:
    d = files["dir"]
    args = extra(d)  # may write an input of its own
    before = _snapshot(d)
    out = d / "out" / "classes.jsonl"
    rc, _, err = run_cli(capsys, "classify", files["tags"], "--rules", files["rules"], "--out", out, *args)
    _one_error_line(rc, err, want.format(d=d))
    assert not (d / "out").exists() and _snapshot(d) == before


@pytest.mark.parametrize("name, out, want", BAD_OUT, ids=[b[0] for b in BAD_OUT])
def test_a_bad_out_is_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], name: str, out: Callable[[Path], Path], want: str
) -> None:
    d = files["dir"]
    (d / "rules.yaml.jsonl").write_text("someone's file\n")
    before = _snapshot(d)
    rc, _, err = run_cli(capsys, "classify", files["tags"], "--rules", files["rules"], "--out", out(d))
    _one_error_line(rc, err, want.format(d=d))
    assert _snapshot(d) == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is the folder no one writes in, root too")
def test_an_unwritable_out_is_one_line(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    rc, _, err = run_cli(capsys, "classify", files["tags"], "--rules", files["rules"],
                         "--out", Path("/proc/attrtag-test/c.jsonl"))
    _one_error_line(rc, err, "cannot write in")


def test_tags_that_are_missing_or_a_folder_are_one_line(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    d = files["dir"]
    for tags, want in ((d / "none.jsonl", "tag output not found"), (d / "folder", "tag output is a folder")):
        rc, _, err = run_cli(capsys, "classify", tags, "--rules", files["rules"], "--out", d / "c.jsonl")
        _one_error_line(rc, err, want)
        assert not (d / "c.jsonl").exists()


def test_the_good_run_beside_them_works(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    """The fixture is sound: the same command with good values writes the classes."""
    d = files["dir"]
    rc, out, err = run_cli(capsys, "classify", files["tags"], "--rules", files["rules"], "--out", d / "c.csv",
                           "--format", "csv", "--gamma", "0.1", "--seen", "bear", "--class-top-k", "1")
    assert rc == 0 and "scored 2 image(s)" in out and (d / "c.csv").exists()
    assert err.count("no label priors or calibration") == 1  # hand.onnx is nowhere: said once
