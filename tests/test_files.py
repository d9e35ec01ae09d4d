import os
import stat

import pytest

from attrtag._files import atomic_dir, atomic_path, write_text


def test_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    p = tmp_path / "sub" / "out.json"
    write_text(p, "first")
    write_text(p, "second")
    assert p.read_text() == "second" and sorted(x.name for x in p.parent.iterdir()) == ["out.json"]


def test_failure_keeps_the_old_file(tmp_path):
    p = tmp_path / "out.txt"
    write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["out.txt"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "dataset"
    with atomic_dir(out) as tmp:
        (tmp / "a.json").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "b.json").write_text("half")
            raise RuntimeError("killed mid-write")
    assert [x.name for x in out.iterdir()] == ["a.json"]
    with atomic_dir(out) as tmp:
        (tmp / "c.json").write_text("2")
    assert [x.name for x in out.iterdir()] == ["c.json"]
    assert [x.name for x in tmp_path.iterdir()] == ["dataset"]  # no temporary or old folder left
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()  # an ordinary folder, not mkdtemp's 0700


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_writes_make_ordinary_files_not_private_ones(tmp_path) -> None:
    # mkstemp creates 0600 files; a written report, manifest or checkpoint must follow the umask.
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
