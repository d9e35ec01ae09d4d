"""Tagging INPUT expansion: folders, globs, list files, duplicates and order."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from attrtag.errors import InputError
from attrtag.tagging.inputs import expand_inputs


def test_folder_recursion_keeps_images_and_file_links_only(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ("a/1.jpg", "a/b/2.PNG", "a/notes.txt", "a/b/data.csv", "top.webp"):
        (tmp_path / p).write_bytes(b"x")
    os.symlink(tmp_path / "top.webp", tmp_path / "a" / "link.webp")
    os.symlink("missing.jpg", tmp_path / "a" / "dangling.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a folder link: not followed
    got = expand_inputs([str(tmp_path / "a")])
    rel = [os.path.relpath(p, tmp_path) for p in got]
    assert rel == sorted(["a/1.jpg", "a/b/2.PNG", "a/link.webp", "a/dangling.jpg"], key=os.fsencode)


def test_glob_list_file_duplicates_and_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs" / "deep").mkdir(parents=True)
    for p in ("imgs/b.jpg", "imgs/a.jpg", "imgs/deep/c.png", "imgs/deep/skip.txt"):
        (tmp_path / p).write_bytes(b"x")
    odd = os.fsdecode(b"imgs/\xff odd.jpg")
    Path(odd).write_bytes(b"x")
    lists = tmp_path / "lists"
    lists.mkdir()
    # Relative to the list's folder; comments and blank lines skipped; a missing file is kept.
    (lists / "some.txt").write_bytes(b"# header\n../imgs/a.jpg\n\n../imgs/gone.jpg\r\n../imgs/\xff odd.jpg\n")
    got = expand_inputs(["imgs/**/*.png", "@lists/some.txt", "imgs", "./imgs/b.jpg", str(tmp_path / "imgs/a.jpg")])
    # a.jpg is named twice; the spelling that sorts first (here the absolute one) is kept.
    want = [str(tmp_path / "imgs/a.jpg"), "imgs/b.jpg", "imgs/deep/c.png", "imgs/gone.jpg", odd]
    assert got == sorted(want, key=os.fsencode)
    assert expand_inputs(["lists/some.txt"]) == sorted(["imgs/a.jpg", "imgs/gone.jpg", odd], key=os.fsencode)
    # Order does not depend on argument order.
    assert expand_inputs(["imgs", "imgs/**/*.png"]) == expand_inputs(["imgs/**/*.png", "imgs"])
    assert expand_inputs(["imgs/**"]) == expand_inputs(["imgs"])


def test_inputs_that_match_nothing_or_do_not_exist_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for bad in (str(tmp_path / "empty"), str(tmp_path / "*.jpg"), f"@{tmp_path / 'nolist.txt'}"):
        with pytest.raises(InputError, match="inputs|list file"):
            expand_inputs([bad])
    (tmp_path / "blank.txt").write_text("\n# only a comment\n")
    with pytest.raises(InputError, match="matches no image"):
        expand_inputs([str(tmp_path / "blank.txt")])
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match=r"inputs '.*missing\.jpg': no such file or folder"):
        expand_inputs([missing])
    assert expand_inputs([missing], must_exist=False) == [missing]  # the Python API records it
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert expand_inputs([str(tmp_path / "dangling.jpg")]) == [str(tmp_path / "dangling.jpg")]  # broken_link record
