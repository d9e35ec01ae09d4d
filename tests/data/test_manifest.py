import json

import pytest

from attrtag.errors import ManifestError
from attrtag.data.manifest import coverage, read_manifest
from attrtag.schema import Schema

SCHEMA = Schema.from_dict({"colour": ["red", "green", "blue"], "shape": ["s0", "s1"]})


@pytest.fixture
def folder(tmp_path):
    for n in ("a.png", "b.png", "c.png"):
        (tmp_path / n).write_bytes(b"x")
    return tmp_path


def test_csv_missing_labels_extras_and_absolute_paths(folder):
    (folder / "m.csv").write_text(
        f"path,colour,shape,split,class\na.png,red,,train,cat\nb.png,NA,s1,val,\n{folder / 'c.png'},blue,s0,test,dog\n"
    )
    m = read_manifest(folder / "m.csv", SCHEMA)
    assert [r.labels for r in m.samples] == [(0, -1), (-1, 1), (2, 0)]
    assert [r.split for r in m.samples] == ["train", "val", "test"]
    assert m.samples[0].extra["class"] == "cat"
    assert m.samples[2].path == str(folder / "c.png")
    cov = {c.group: c for c in coverage(SCHEMA, m.samples)}
    assert cov["colour"].labelled == 2 and dict(cov["colour"].per_value) == {"red": 1, "green": 0, "blue": 1}


def test_jsonl(folder):
    lines = [{"path": "a.png", "labels": {"colour": "green"}}, {"path": "b.png", "labels": {"shape": "s0"}, "split": "train"}]
    (folder / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    m = read_manifest(folder / "m.jsonl", SCHEMA)
    assert [r.labels for r in m.samples] == [(1, -1), (-1, 0)]


@pytest.mark.parametrize(
    "body, fragment, line",
    [
        ("a.png,purple,s0\n", "group 'colour' has value 'purple', not in the schema (red, green, blue)", 2),
        ("a.png,red,s0\nnope.png,red,s0\n", "image file not found: nope.png", 3),
        ("a.png,red\n", "malformed row: has 2 fields, the header has 3", 2),
        ("a.png,red,s0\n,red,s0\n", "empty or missing 'path'", 3),
    ],
)
def test_bad_rows_name_file_and_line(folder, body, fragment, line):
    p = folder / "m.csv"
    p.write_text("path,colour,shape\n" + body)
    with pytest.raises(ManifestError) as e:
        read_manifest(p, SCHEMA)
    assert f"{p}:{line}: " in str(e.value) and fragment in str(e.value)


def test_skip_bad_rows_counts_them(folder):
    p = folder / "m.csv"
    p.write_text("path,colour,shape\na.png,red,s0\nb.png,purple,s0\nmissing.png,red,s1\nc.png,blue,s1\n")
    m = read_manifest(p, SCHEMA, skip_bad=True)
    assert len(m) == 2 and len(m.skipped) == 2
    assert "purple" in m.skipped[0] and "missing.png" in m.skipped[1]


def test_unreadable_manifests(folder):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(folder / "none.csv", SCHEMA)
    (folder / "bin.csv").write_bytes(b"path,colour\n\xff\xfe\x00bad\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(folder / "bin.csv", SCHEMA)
    (folder / "nopath.csv").write_text("file,colour\na.png,red\n")
    with pytest.raises(ManifestError, match=r"nopath.csv:1: no 'path' column"):
        read_manifest(folder / "nopath.csv", SCHEMA)
    (folder / "m.jsonl").write_text('{"path": "a.png", "labels": {}}\n{not json}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2: malformed row: invalid JSON"):
        read_manifest(folder / "m.jsonl", SCHEMA)
