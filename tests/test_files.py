import pytest

from attrtag._files import atomic_path, write_text


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
