import pytest

from attrtag.errors import SchemaError
from attrtag.schema import Schema


def write(tmp_path, text):
    p = tmp_path / "schema.yaml"
    p.write_text(text)
    return p


def test_load_keeps_order_and_literal_strings(tmp_path):
    s = Schema.load(write(tmp_path, "groups:\n  tail: [\"no\", \"yes\"]\n  flag: [on, off, 1]\n  covering: [fur, scales]\n"))
    assert s.names == ("tail", "flag", "covering")
    assert s["flag"].values == ("on", "off", "1")  # YAML 1.1 would have made these booleans/ints
    assert s.sizes == (2, 3, 2) and s.num_outputs == 7
    assert Schema.from_dict(s.to_dict()) == s


def test_demo_schema_has_required_groups():
    from pathlib import Path

    s = Schema.load(Path(__file__).resolve().parents[1] / "datasets" / "demo_schema.yaml")
    assert {"covering", "pattern", "logo", "medium"} <= set(s.names)


@pytest.mark.parametrize(
    "text, fragment, line",
    [
        ("groups:\n  a: [x, y]\nextra: 1\n", "unknown top-level key 'extra'", 3),
        ("groups:\n  a: [x, y]\n  a: [z]\n", "duplicate key 'a'", 3),
        ("groups:\n  a: [x, y, x]\n", "lists value 'x' twice", 2),
        ("groups:\n  a: []\n", "group 'a' is empty", 2),
        ("groups:\n  a: [x]\n  b:\n", "group 'b' is empty", 3),
        ("groupz:\n  a: [x]\n", "unknown top-level key 'groupz'", 1),
        ("groups: [a, b]\n", "non-empty mapping", 1),
        ("groups:\n  a: [x, y\n", "invalid YAML", None),
        # multi-label groups
        ("groups:\n  a: [x]\n  c: {kind: multi, vals: [r]}\n", "group 'c': unknown key 'vals'", 3),
        ("groups:\n  a: [x]\n  c:\n    kind: multy\n    values: [r]\n", "kind 'multy' is not one of exclusive, multi", 4),
        ("groups:\n  c: {kind: multi}\n", "group 'c' has no 'values'", 2),
        ("groups:\n  c: {kind: multi, values: [r, r]}\n", "lists value 'r' twice", 2),
        ("groups:\n  gender: Men\n", "group 'gender' is the single value 'Men', not a list", 2),
        ("groups:\n  c: {kind: multi, values: [r, 'a|b']}\n", "value 'a|b', which a manifest cell cannot name", 2),
        ("groups:\n  c: {kind: multi, values: [r, ' s']}\n", "value ' s', which a manifest cell cannot name", 2),
    ],
)
def test_errors_name_file_line_and_entry(tmp_path, text, fragment, line):
    p = write(tmp_path, text)
    with pytest.raises(SchemaError) as e:
        Schema.load(p)
    msg = str(e.value)
    assert fragment in msg and str(p) in msg
    if line is not None:
        assert f"{p}:{line}:" in msg


def test_check_same_says_expected_and_got():
    a = Schema.from_dict({"g": ["x", "y"]})
    b = Schema.from_dict({"g": ["y", "x"]})
    with pytest.raises(SchemaError, match=r"expected \['x', 'y'\], got \['y', 'x'\]"):
        a.check_same(b, what="resume")
    a.check_same(Schema.from_dict({"g": ["x", "y"]}), what="same")


@pytest.mark.parametrize(
    "groups, fragment",
    [
        ({"a": ["x", "NA"]}, "invalid value 'NA'"),
        ({"a": ["x", ""]}, "invalid value ''"),
        ({"a": ["x", 1]}, "invalid value 1"),
        ({"a": ["x", "x"]}, "lists value 'x' twice"),
        ({"a": []}, "group 'a' is empty"),
        ({}, "non-empty mapping"),
    ],
)
def test_stored_dicts_get_the_same_checks_as_files(tmp_path, groups, fragment):
    # One validator: what a schema file may not say, a checkpoint's or ONNX file's schema may not either.
    with pytest.raises(SchemaError, match=fragment) as e:
        Schema.from_dict(groups, source="model.onnx metadata")
    assert str(e.value).startswith("model.onnx metadata")
    if groups and all(isinstance(v, str) for vs in groups.values() for v in vs):  # YAML reads 1 as "1"
        text = "groups:\n" + "".join(f"  {g}: [{', '.join(repr(v) if v == '' else str(v) for v in vs)}]\n"
                                     for g, vs in groups.items())
        with pytest.raises(SchemaError, match=fragment.split("'")[0]):
            Schema.load(write(tmp_path, text))


def test_a_multi_label_group_keeps_its_kind_through_dicts_and_is_compared():
    s = Schema.from_dict({"a": ["x", "y"], "c": {"kind": "multi", "values": ["r", "g"]}})
    assert [g.multi for g in s] == [False, True] and s.target_width == 4 and s.multi_slices == {"c": slice(2, 4)}
    assert Schema.from_dict(s.to_dict()) == s and s.to_dict()["a"] == ["x", "y"]  # exclusive: a plain list
    plain = Schema.from_dict({"a": ["x", "y"], "c": ["r", "g"]})
    with pytest.raises(SchemaError, match="group 'c' is exclusive there, multi here"):
        plain.check_same(s, what="model")
