"""A resume finds the images an output holds however their paths are spelled, and says so."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import attrtag
from attrtag.tagging import read_output
from attrtag.tagging.recorded import as_recorded_here, recorded_as
from attrtag.tagging.scan import meta_path
from tests.helpers import make_checkpoint, write_images


def test_an_input_is_found_by_its_place_when_its_spelling_differs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = {"in/a.png", "/elsewhere/b.png"}
    paths = ["in/a.png", str(tmp_path / "in/a.png"), "./in/a.png", "/elsewhere/b.png", "in/c.png"]
    shown = [os.path.normpath(p) for p in paths]
    assert recorded_as(paths, shown, done, str(tmp_path)) == ["in/a.png", "in/a.png", "in/a.png", "/elsewhere/b.png",
                                                                None]
    (tmp_path / "in").mkdir()
    monkeypatch.chdir(tmp_path / "in")  # relative paths of the file stay relative to its own folder
    assert recorded_as(["a.png", "c.png"], ["a.png", "c.png"], done, str(tmp_path)) == ["in/a.png", None]
    assert recorded_as(["a.png"], ["a.png"], done, None) == [None]  # no base stored: this folder
    assert as_recorded_here(["c.png", "/x/d.png"], str(tmp_path)) == [str(tmp_path / "in/c.png"), "/x/d.png"]
    assert as_recorded_here(["c.png"], str(tmp_path / "in")) == ["c.png"]
    assert as_recorded_here(["c.png"], None) == ["c.png"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("recorded") / "m.pt")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", pytest.param("parquet", marks=pytest.mark.parquet)])
def test_the_same_images_spelled_otherwise_are_not_tagged_again(model: Path, fmt: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "in", 4)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / f"tags.{fmt}"
    monkeypatch.chdir(tmp_path)
    tagger = attrtag.load(model, device="cpu")
    first = tagger.tag_to(out, "in")
    assert (first.tagged, first.failed) == (4, 1)
    again = tagger.tag_to(out, str(tmp_path / "in"))  # the same images, absolute
    assert (again.tagged, again.failed, again.skipped) == (0, 0, 5)
    monkeypatch.chdir(tmp_path / "in")  # from inside the folder, with one image more
    write_images(tmp_path / "in" / "more", 1)
    inside = tagger.tag_to(out, ".")
    assert (inside.tagged, inside.skipped) == (1, 5)
    retried = tagger.tag_to(out, ".", retry_failed=True)  # the failed one, however it was spelled
    assert (retried.retried, retried.failed, retried.skipped) == (1, 1, 5)
    header, records = read_output(out)
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths)) == 6  # every image exactly once
    assert str(tmp_path / "in" / "more" / "img0000.png") in paths  # added from elsewhere: absolute
    assert sorted(p for p in paths if not os.path.isabs(p))[0].startswith("in/")  # the rest as first given
    assert header.relative_to == str(tmp_path)  # kept by every resume (and by a Parquet merge)


def test_an_output_from_before_the_base_was_stored_resolves_from_here(model: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "in", 3)
    out = tmp_path / "tags.jsonl"
    monkeypatch.chdir(tmp_path)
    tagger = attrtag.load(model, device="cpu")
    tagger.tag_to(out, "in")
    sidecar = json.loads(meta_path(out).read_text())
    del sidecar["paths_relative_to"]  # as an older attrtag wrote it
    meta_path(out).write_text(json.dumps(sidecar))
    again = tagger.tag_to(out, str(tmp_path / "in"))
    assert (again.tagged, again.skipped) == (0, 3)
    assert read_output(out)[0].relative_to is None


def test_review_finds_the_images_of_relative_records_from_any_folder(model: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from attrtag.review.sources import load_tags

    write_images(tmp_path / "in", 2)
    out = tmp_path / "tags.jsonl"
    monkeypatch.chdir(tmp_path)
    attrtag.load(model, device="cpu").tag_to(out, "in")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # report, convert: run from another folder
    loaded = load_tags(out)
    assert loaded.root == tmp_path and all((loaded.root / r["path"]).is_file() for r in loaded.records)
    assert load_tags(out, root=tmp_path / "in").root == tmp_path / "in"  # --root still decides


def test_absolute_inputs_tag_from_a_folder_that_was_deleted(model: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "in", 2)
    (tmp_path / "gone").mkdir()
    monkeypatch.chdir(tmp_path / "gone")
    (tmp_path / "gone").rmdir()  # a shell left in a deleted folder: getcwd() fails
    tagger = attrtag.load(model, device="cpu")
    out = tmp_path / "tags.jsonl"
    assert tagger.tag_to(out, str(tmp_path / "in")).tagged == 2
    assert tagger.tag_to(out, str(tmp_path / "in")).skipped == 2
    assert read_output(out)[0].relative_to is None
