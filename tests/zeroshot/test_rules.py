"""Rules files: the three spec forms, round trip through JSON, errors with line numbers, lint."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from attrtag.errors import SchemaError
from attrtag.zeroshot.rules import Constraint, Rule, Rules, lint
from attrtag.schema import Schema

# Unusual group sizes (4, 3, 3, 2) so nothing can rely on a fixed width.
SCHEMA = Schema.from_dict(
    {
        "covering": ["fur", "feathers", "scales", "exoskeleton"],
        "pattern": ["plain", "spots", "stripes"],
        "bill": ["none", "duck", "beak"],
        "tail": ["no", "yes"],
    }
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_load_reads_the_three_spec_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        classes:
          platypus:
            covering: fur
            bill: duck
            tail: yes
          leopard:
            pattern: [spots, stripes]
          tabby:
            pattern:
              stripes: 0.7
              spots: "3e-1"
        """,
    )
    rules = Rules.load(path, SCHEMA)
    assert rules.names == ("platypus", "leopard", "tabby")
    # "yes" stays the string value, not YAML 1.1's boolean.
    assert rules["platypus"].constraints[2] == Constraint("tail", ("yes",), (1.0,))
    assert rules["leopard"].constraints == (Constraint("pattern", ("spots", "stripes"), (1.0, 1.0)),)
    tabby = rules["tabby"].constraints[0]
    assert tabby.values == ("stripes", "spots")
    assert tabby.weights == (0.7, 0.3)
    assert tabby.normalised_weights == (1.0, pytest.approx(0.3 / 0.7))
    assert rules.index("tabby") == 2


def test_to_dict_from_dict_round_trips_through_json(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        classes:
          a: {covering: fur, pattern: [spots, stripes]}
          b: {pattern: {spots: 2, stripes: 1}, tail: "no"}
        """,
    )
    rules = Rules.load(path, SCHEMA)
    data = json.loads(json.dumps(rules.to_dict()))
    assert data == {
        "classes": {
            "a": {"covering": "fur", "pattern": ["spots", "stripes"]},
            "b": {"pattern": {"spots": 2.0, "stripes": 1.0}, "tail": "no"},
        }
    }
    assert Rules.from_dict(data, SCHEMA) == rules


@pytest.mark.parametrize(
    "text, line, fragments",
    [
        (
            """
            classes:
              a: {covering: fur}
            colours: {}
            """,
            3,
            ["unknown top-level key 'colours'", "allowed: classes"],
        ),
        ("classes: {}\n", 1, ["non-empty mapping"]),
        (
            """
            classes:
              a:
                covering: fur
                colour: red
            """,
            4,
            ["class 'a'", "unknown group 'colour'", "covering, pattern, bill, tail"],
        ),
        (
            """
            classes:
              a:
                pattern:
                  - spots
                  - dots
            """,
            5,
            ["unknown value 'dots'", "group 'pattern'", "allowed: plain, spots, stripes"],
        ),
        (
            """
            classes:
              a:
                pattern:
                  spots: 0.5
                  stripes: lots
            """,
            5,
            ["weight 'lots' is not a number"],
        ),
        (
            """
            classes:
              a:
                pattern:
                  spots: 0
            """,
            4,
            ["weight '0' must be a number > 0"],
        ),
        (
            """
            classes:
              a:
                pattern: {spots: -1}
            """,
            3,
            ["weight '-1' must be a number > 0"],
        ),
        (
            """
            classes:
              a: {covering: fur}
              b: {covering: scales}
              a: {covering: feathers}
            """,
            4,
            ["duplicate key 'a'", "first at line 2"],
        ),
        (
            """
            classes:
              a: fur
            """,
            2,
            ["class 'a' must map groups to values"],
        ),
        (
            """
            classes:
              a:
                pattern: []
            """,
            3,
            ["empty list"],
        ),
        (
            """
            classes:
              a:
                pattern: [spots, spots]
            """,
            3,
            ["value 'spots' listed twice"],
        ),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SchemaError) as info:
        Rules.load(path, SCHEMA)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    for fragment in fragments:
        assert fragment in message


def test_from_dict_errors_name_the_source_and_key_path() -> None:
    with pytest.raises(SchemaError, match=r"model\.onnx metadata \(classes\.a\.colour\).*unknown group"):
        Rules.from_dict({"classes": {"a": {"colour": "red"}}}, SCHEMA, source="model.onnx metadata")
    # JSON booleans are not weights: they mark a multi-label group's values, and 'tail' is exclusive
    # (refused when read with the schema, or when rules read without it are checked).
    with pytest.raises(SchemaError, match=r"\(classes\.a\.tail\.yes\): .*true/false .* is exclusive"):
        Rules.from_dict({"classes": {"a": {"tail": {"yes": True}}}}, SCHEMA)
    unchecked = Rules.from_dict({"classes": {"a": {"tail": {"yes": True}}}})
    with pytest.raises(SchemaError, match="true/false .* 'tail' is exclusive"):
        unchecked.check(SCHEMA)


def test_constructor_rejects_empty_and_duplicate_classes() -> None:
    with pytest.raises(SchemaError, match="no classes"):
        Rules(())
    rule = Rule("a", (Constraint("tail", ("yes",), (1.0,)),))
    with pytest.raises(SchemaError, match="duplicate class 'a'"):
        Rules((rule, rule))
    with pytest.raises(SchemaError, match="weights must be > 0"):
        Constraint("tail", ("yes",), (0.0,))


def test_lint_reports_unconstrained_and_identical_classes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        classes:
          ghost:
          otter: {covering: fur, bill: [none, beak]}
          weasel: {bill: [beak, none], covering: fur}
          tabby: {pattern: {stripes: 0.7, spots: 0.3}}
          tiger: {pattern: {spots: 3, stripes: 7}}
          ocelot: {pattern: {spots: 7, stripes: 3}}
          cat: {pattern: [spots, stripes]}
        """,
    )
    rules = Rules.load(path, SCHEMA)
    warnings = lint(rules)
    assert len(warnings) == 3, warnings
    assert warnings[0].startswith(f"{path}:2: class 'ghost' constrains no group")
    # Order of groups/values does not matter, and weights only by their ratio.
    assert "classes 'otter', 'weasel' have identical rules" in warnings[1]
    assert "classes 'tabby', 'tiger' have identical rules" in warnings[2]
    assert not any("ocelot" in w or "'cat'" in w for w in warnings)


def test_lint_with_schema_reports_constraints_that_accept_everything() -> None:
    rules = Rules.from_dict({"classes": {"a": {"tail": ["no", "yes"], "covering": "fur"}}}, SCHEMA)
    assert lint(rules) == []
    (warning,) = lint(rules, SCHEMA)
    assert "class 'a' accepts every value of 'tail'" in warning
