"""Every option of ``attrtag audit`` fed a value that cannot work: one ``attrtag: error:`` line
naming it, exit status 2, no traceback, and nothing written (refused before any training)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from attrtag.auditing.output import sidecar
from tests.audit.conftest import TINY
from tests.helpers import run_cli

Argv = Callable[[dict[str, Any]], list[object]]


def _audit(*extra: object, out: str = "new.csv") -> Argv:
    def argv(f: dict[str, Any]) -> list[object]:
        base = {"--schema": f["schema"], "--manifest": f["manifest"], "--out": f["dir"] / out}
        given = dict(zip(extra[::2], extra[1::2]))
        merged = {**base, **{k: (f[v] if isinstance(v, str) and v in f else v) for k, v in given.items()}}
        return ["audit", *TINY, *[x for kv in merged.items() for x in kv]]  # the case last: it wins
    return argv


CASES: list[tuple[str, Argv, str]] = [
    ("manifest-missing", _audit("--manifest", "nope"), "nope.csv: manifest not found"),
    ("schema-missing", _audit("--schema", "nope"), "nope.csv"),
    ("method", _audit("--method", "vote"), "--method vote: not one of oof, both, dynamics"),
    ("rank-by", _audit("--rank-by", "entropy"), "--rank-by entropy: not one of self_confidence, normalized_margin"),
    ("folds-1", _audit("--folds", 1), "--folds 1: must be at least 2"),
    ("out-folder", _audit("--out", "folder"), "is a folder; name a file in it"),
    ("out-suffix", _audit(out="new.txt"), "name the file .csv or .jsonl"),
    ("out-exists", _audit("--out", "existing"), "exists; pass --overwrite"),
    ("out-under-file", _audit("--out", "under_file"), "is a file, not a folder"),
    ("epochs-0", _audit("--epochs", 0), "--epochs 0: must be at least 1"),
    ("crop-mode", _audit("--crop-mode", "zoom"), "--crop-mode zoom: not one of"),
    ("loss", _audit("--loss", "hinge"), "--loss hinge: not one of"),
    ("group-weight", _audit("--group-weight", "colour"), "--group-weight 'colour': expected GROUP=NUMBER"),
    ("group-weight-unknown", _audit("--group-weight", "size=2"), "no group 'size'"),
    ("device", _audit("--device", "gpu"), "gpu"),
    ("too-few-images", _audit("--manifest", "tiny_manifest"), "too few to audit"),
]


@pytest.fixture(scope="module")
def f(planted: dict[str, Any]) -> dict[str, Any]:
    d: Path = planted["dir"]
    (d / "folder").mkdir(exist_ok=True)
    (d / "a_file").write_text("x\n")
    (d / "existing.csv").write_text("an earlier audit\n")
    lines = planted["manifest"].read_text().splitlines()
    (d / "tiny.csv").write_text("\n".join(lines[:3]) + "\n")
    return {**planted, "nope": d / "nope.csv", "folder": d / "folder", "existing": d / "existing.csv",
            "under_file": d / "a_file" / "x.csv", "tiny_manifest": d / "tiny.csv"}


@pytest.mark.parametrize("name,argv,words", CASES, ids=[c[0] for c in CASES])
def test_bad_value_is_one_line_exit_2_and_nothing_written(f: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                          name: str, argv: Argv, words: str) -> None:
    before = sorted(p.name for p in f["dir"].iterdir())
    existing = f["existing"].read_text()
    code, out, err = run_cli(capsys, *argv(f))
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attrtag: error: ") and words in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in f["dir"].iterdir()) == before
    assert f["existing"].read_text() == existing and not sidecar(f["existing"]).exists()
