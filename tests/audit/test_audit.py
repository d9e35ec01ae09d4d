"""The audit end to end on a tiny model: planted wrong labels rank first, unknown labels never
appear, and the file it writes reads back (CSV from the CLI, JSONL from the API)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

import attrtag
from attrtag.auditing.output import COLUMNS, read_audit, sidecar
from tests.audit.conftest import TINY, TINY_API


@pytest.fixture(scope="module")
def cli_audit(planted: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from attrtag.cli import main

    out = tmp_path_factory.mktemp("cli") / "all.csv"
    code = main([str(a) for a in ("audit", "--schema", planted["schema"], "--manifest", planted["manifest"],
                                  "--out", out, "--all", *TINY)])
    assert code == 0
    return {"out": out, **planted}


def _given(planted: dict[str, Any]) -> set[tuple[str, str, str | None]]:
    """(path, group, value) of every label the manifest gives; unknown ones are not in it."""
    out: set[tuple[str, str, str | None]] = set()
    for r in planted["rows"]:
        path = str((planted["dir"] / r["path"]).resolve())
        for g in ("colour", "band"):
            if r[g]:
                out.add((path, g, None))
        cell = r["marks"]
        if cell.startswith(("+", "-")):
            out.add((path, "marks", cell[1:]))
        elif cell:
            out |= {(path, "marks", v) for v in ("dot", "bar")}
    return out


def test_planted_errors_rank_first_and_are_flagged(cli_audit: dict[str, Any]) -> None:
    found = read_audit(cli_audit["out"])
    colour = [r for r in found.rows if r["group"] == "colour"]
    assert [r["rank"] for r in colour] == list(range(1, len(colour) + 1))
    top = {r["path"] for r in colour[: len(cli_audit["planted"])]}
    assert top == cli_audit["planted"]
    for r in colour[:4]:  # the given value is the next colour; the suggestion is the one shown
        assert r["label"] != r["suggested"] and r["p_suggested"] > r["p_label"]
    flagged = {r["path"] for r in colour if r["flagged"]}
    assert flagged and flagged <= cli_audit["planted"]


def test_every_given_label_is_checked_once_and_no_unknown_one_appears(cli_audit: dict[str, Any]) -> None:
    rows = read_audit(cli_audit["out"]).rows
    keys = [(r["path"], r["group"], r["value"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == _given(cli_audit)
    multi = [r for r in rows if r["group"] == "marks"]
    assert multi and {r["label"] for r in multi} == {"present", "absent"}
    assert all({r["label"], r["suggested"]} == {"present", "absent"} for r in multi)


def test_the_csv_parses_and_its_summary_counts_the_rows(cli_audit: dict[str, Any]) -> None:
    with open(cli_audit["out"], newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == COLUMNS
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    meta = json.loads(sidecar(cli_audit["out"]).read_text())
    assert meta["rows"] == "all" and meta["count"] == len(rows) and meta["method"] == "oof"
    assert meta["folds"] == 2 and meta["trainings"] == 2 and meta["training"]["backbone"] == "test_resnet"
    checked = {g["group"]: g["checked"] for g in meta["groups"]}
    assert checked == {g: sum(r["group"] == g for r in rows) for g in ("colour", "band", "marks")}


def test_api_writes_the_suspects_as_jsonl(planted: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "suspects.jsonl"
    result = attrtag.audit(planted["schema"], planted["manifest"], out, method="both", **TINY_API)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(result.suspects) and all(x.flagged for x in result.suspects)
    assert lines == read_audit(out).rows
    assert {k for line in lines for k in line} == set(COLUMNS)
    colour = [x for x in result.labels if x.group == "colour"]
    assert {x.path for x in colour[: len(planted["planted"])]} == planted["planted"]
    assert {x["path"] for x in lines if x["group"] == "colour"} <= planted["planted"]
    s = {g.group: g for g in result.summary}
    assert s["colour"].flagged == sum(x["group"] == "colour" for x in lines)
    assert 0 < s["colour"].estimated_error_rate < 0.5 and result.method == "both" and result.trainings == 2
