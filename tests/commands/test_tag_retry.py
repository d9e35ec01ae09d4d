"""``attrtag tag --retry-failed``: a file fixed on disk becomes taggable without starting over."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attrtag.cli import main
from attrtag.data.images import display_path
from attrtag.tagging import read_output
from tests.helpers import make_checkpoint, write_images


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "m.pt")


def tag(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    rc = main(["tag", *map(str, argv), "--workers", "1", "--threads", "1", "--batch-size", "3"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_retry_failed_replaces_the_error_records_of_fixed_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path, fmt: str
) -> None:
    folder = tmp_path / "imgs"
    good = write_images(folder, 7)
    broken, still_broken = folder / "b_fixed_later.png", folder / "c_still_broken.png"
    for p in (broken, still_broken):
        p.write_bytes(b"\x89PNG\r\n\x1a\n cut off")
    out = tmp_path / f"tags.{fmt}"
    assert "tagged 7, failed 2 (not_image 2)" in tag(capsys, model, folder, "--out", out)
    first = read_output(out)[1]

    shutil.copy(good[0], broken)  # the file is fixed on disk
    # A plain resume does not retry: failed images count as done.
    assert "tagged 0, failed 0, 9 already in" in tag(capsys, model, folder, "--out", out)
    stdout = tag(capsys, model, folder, "--out", out, "--retry-failed")
    assert "tagged 1, failed 1 (not_image 1), 2 retried, 7 already in" in stdout

    records = read_output(out)[1]
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths)) == 9  # every input exactly once
    by_path = {r["path"]: r for r in records}
    assert "error" not in by_path[display_path(broken)] and by_path[display_path(still_broken)]["error"] == "not_image"
    assert by_path[display_path(broken)]["colour_probs"] == by_path[display_path(good[0])]["colour_probs"]
    # The records that were fine are untouched and keep their order; the retried ones follow.
    kept = [r for r in first if "error" not in r]
    assert records[: len(kept)] == kept


def test_retry_failed_keeps_error_records_of_other_inputs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path
) -> None:
    folder = tmp_path / "imgs"
    write_images(folder, 2)
    (folder / "x.png").write_bytes(b"")
    (tmp_path / "other").mkdir()
    other = tmp_path / "other" / "y.png"
    other.write_bytes(b"")
    out = tmp_path / "tags.jsonl"
    tag(capsys, model, folder, other, "--out", out)
    before = out.read_bytes()
    # Only `folder` this time: y.png's error record is not this run's to retry, and stays.
    assert "tagged 0, failed 1 (empty 1), 1 retried, 2 already in" in tag(
        capsys, model, folder, "--out", out, "--retry-failed")
    records = read_output(out)[1]
    assert {r["path"]: r.get("error") for r in records}[display_path(other)] == "empty"
    assert len(records) == 4
    # Nothing of this run's inputs failed: the file is not rewritten at all (same inode).
    (folder / "x.png").unlink()
    inode, size = out.stat().st_ino, out.stat().st_size
    assert "retried" not in tag(capsys, model, folder, "--out", out, "--retry-failed")
    assert (out.stat().st_ino, out.stat().st_size) == (inode, size)
    assert out.read_bytes().splitlines()[0] == before.splitlines()[0]  # the first record, kept byte for byte
