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
    # Saved by an editor that starts UTF-8 with a byte order mark (as a CSV may): read the same.
    (folder / "bom.jsonl").write_bytes("\ufeff".encode() + (folder / "m.jsonl").read_bytes())
    assert [r.labels for r in read_manifest(folder / "bom.jsonl", SCHEMA).samples] == [(1, -1), (-1, 0)]


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


MULTI = Schema.from_dict({"colour": ["red", "green", "blue"], "tags": {"kind": "multi", "values": ["p", "q", "-r", "s"]}})


def test_multi_label_cells_in_csv_and_jsonl_say_present_absent_or_unknown_per_value(folder):
    for n in ("d.png", "e.png"):
        (folder / n).write_bytes(b"x")
    (folder / "m.csv").write_text("path,colour,tags\na.png,red,p|s\nb.png,,[]\nc.png,blue,+q|--r\nd.png,green,NA\n"
                                  "e.png,,-r\n")
    m = read_manifest(folder / "m.csv", MULTI)
    assert [dict(s.multi) for s in m.samples] == [
        {"tags": (1, 0, 0, 1)}, {"tags": (0, 0, 0, 0)}, {"tags": (-1, 1, 0, -1)}, {}, {"tags": (0, 0, 1, 0)},
    ]  # "-r" alone is the value -r present (a plain list); "--r" is that value absent
    assert m.samples[0].targets(MULTI) == [0, -1, 1, 0, 0, 1] and m.samples[3].targets(MULTI) == [1, -1, -1, -1, -1, -1]
    (folder / "m.jsonl").write_text(json.dumps({"path": "a.png", "labels": {"tags": ["q"]}}) + "\n"
                                    + json.dumps({"path": "b.png", "labels": {"tags": {"p": 1, "s": False}}}) + "\n"
                                    + json.dumps({"path": "c.png", "labels": {"tags": None, "colour": "red"}}) + "\n")
    assert [dict(s.multi) for s in read_manifest(folder / "m.jsonl", MULTI).samples] == [
        {"tags": (0, 1, 0, 0)}, {"tags": (1, -1, -1, 0)}, {}]
    cov = {c.group: c for c in coverage(MULTI, m.samples)}
    assert cov["tags"].labelled == 4 and dict(cov["tags"].per_value) == {"p": 1, "q": 1, "-r": 1, "s": 1}


#: A bad multi-label cell, and what its one-line error says after "m.csv:3: ".
BAD_CELLS = {
    "p|x": "group 'tags' has value 'x', not in the schema (p, q, -r, s)",
    "p||q": "group 'tags': empty entry in 'p||q'",
    "p|-q": "mixes signed (+v, -v) and plain values",
    "p|p": "lists value 'p' twice",
    "+p|-p": "labels value 'p' twice",
}


@pytest.mark.parametrize("cell", BAD_CELLS)
def test_a_bad_multi_label_cell_names_file_line_and_value(folder, cell):
    (folder / "m.csv").write_text(f"path,colour,tags\na.png,red,p\nb.png,green,{cell}\n")
    with pytest.raises(ManifestError, match=r"m\.csv:3: ") as err:
        read_manifest(folder / "m.csv", MULTI)
    assert BAD_CELLS[cell] in str(err.value)


def test_rows_repeating_an_image_are_merged_into_its_first_row_with_one_warning(folder, caplog):
    (folder / "m.csv").write_text("path,colour,shape,split\na.png,red,,train\nb.png,,s1,val\na.png,red,,train\n"
                                  "./a.png,,s0,train\n")
    with caplog.at_level("WARNING", logger="attrtag.data.manifest"):
        m = read_manifest(folder / "m.csv", SCHEMA)
    assert [(r.labels, r.line) for r in m.samples] == [((0, 0), 2), ((-1, 1), 3)] and m.merged == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"{folder / 'm.csv'}: 2 row(s) name an image an earlier row names (first: line 4 repeats line 2); "
        "each was merged into that row"]


# A repeat that contradicts its image's first row, and what the one-line error says after "m.csv:2 and line 4: ".
CONTRADICTIONS = {
    "a.png,blue,,train": "has colour 'red' and 'blue'; keep one row per image",
    "a.png,,,val": "is in split 'train' and in split 'val': the same image in train and val leaks into validation; "
                   "keep the image in one split",
    "a.png,,,test": "is in split 'train' and in split 'test'; keep the image in one split",
}


@pytest.mark.parametrize("row", CONTRADICTIONS)
def test_a_contradicting_repeat_names_both_lines_or_is_skipped_with_the_image(folder, row):
    (folder / "m.csv").write_text(f"path,colour,shape,split\na.png,red,,train\nb.png,,s1,train\n{row}\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(folder / "m.csv", SCHEMA)
    assert str(err.value) == f"{folder / 'm.csv'}:2 and line 4: {folder / 'a.png'} {CONTRADICTIONS[row]}"
    m = read_manifest(folder / "m.csv", SCHEMA, skip_bad=True)  # the image is dropped: which row is true?
    assert [r.path for r in m.samples] == [str(folder / "b.png")] and m.skipped == [str(err.value)]


def test_an_image_reached_through_a_linked_folder_is_the_same_image(folder):
    (folder / "linked").symlink_to(folder, target_is_directory=True)
    (folder / "m.csv").write_text("path,colour,shape,split\na.png,red,,train\nlinked/a.png,,,val\n")
    with pytest.raises(ManifestError, match=r"m\.csv:2 and line 3: .* leaks into validation"):
        read_manifest(folder / "m.csv", SCHEMA)
    (folder / "m.csv").write_text("path,colour,shape\na.png,red,\nlinked/a.png,,s1\nb.png,green,\n")
    m = read_manifest(folder / "m.csv", SCHEMA)
    assert [r.labels for r in m.samples] == [(0, 1), (1, -1)] and m.merged == 1


def test_multi_label_repeats_merge_values_and_refuse_present_against_absent(folder):
    (folder / "m.csv").write_text("path,colour,tags\na.png,red,+p\na.png,,-q\n")
    assert dict(read_manifest(folder / "m.csv", MULTI).samples[0].multi) == {"tags": (1, 0, -1, -1)}
    (folder / "m.csv").write_text("path,colour,tags\na.png,red,p|s\na.png,,p\n")
    with pytest.raises(ManifestError, match=r"m\.csv:2 and line 3: .*a\.png has tags 's' present and absent"):
        read_manifest(folder / "m.csv", MULTI)
