"""Class rules over a multi-label group: syntax and errors, DAP over binary attributes by hand,
priors, explanations, overrides, round trips, the lint, ``rules suggest`` and calibration."""
from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from attrtag.card import ModelCard
from attrtag.cli import main
from attrtag.data.manifest import Sample
from attrtag.data.preprocess import Preprocessing
from attrtag.errors import AttrtagError, SchemaError
from attrtag.schema import Schema
from attrtag.tagging import OutputMeta, RecordLayout, open_output, read_output
from attrtag.zeroshot.calibration import priors_from_counts, resolve_calibration, rules_digest
from attrtag.zeroshot.classifier import EPS, ClassScorer, apply_overrides, score_classes
from attrtag.zeroshot.evaluation import evaluate_zero_shot, labelled_scores
from attrtag.zeroshot.rules import Constraint, Rules, lint
from attrtag.zeroshot.scoring import ClassScoring, class_scoring
from attrtag.zeroshot.suggest import suggest_rules

# An exclusive group of 3 and a multi-label group of 5: nothing can rely on a fixed width.
WINGS = ["brown", "white", "red", "blue", "black"]
SCHEMA = Schema.from_dict({"body": ["small", "large", "huge"], "wings": {"kind": "multi", "values": WINGS}})
RULES_DICT = {"classes": {
    "sparrow": {"body": "small", "wings": ["brown", "white"]},
    "robin": {"body": "small", "wings": {"brown": True, "red": True, "blue": False}},
    "dove": {"wings": {"red": False}},
    "crow": {"body": ["large", "huge"]},
}}
RULES = Rules.from_dict(RULES_DICT, SCHEMA)
# Image 1 is certain about red (0) and blue (1): robin's wings=red and wings!=blue clip to eps.
PROBS = {
    "body": np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]),
    "wings": np.array([[0.9, 0.2, 0.7, 0.05, 0.5], [0.1, 0.8, 0.0, 1.0, 0.3]]),
}
LN = math.log
# Mean over each class's terms: an exclusive group is one, every listed wing value one more.
BY_HAND = [
    [(LN(0.6) + LN(0.9) + LN(0.2)) / 3, (LN(0.6) + LN(0.9) + LN(0.7) + LN(0.95)) / 4, LN(1 - 0.7), LN(0.4)],
    [(LN(0.1) + LN(0.1) + LN(0.8)) / 3, (LN(0.1) + LN(0.1) + LN(EPS) + LN(EPS)) / 4, LN(1.0), LN(0.9)],
]
COUNTS = {"body": (3, 5, 0), "wings": (4, 1, 0, 2, 9)}  # wings: images each value is present in
TOTALS = {"wings": (10, 10, 3, 4, 9)}  # ... and known in (present or absent)
PREP = Preprocessing((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# -- syntax -----------------------------------------------------------------------------------
def test_a_list_means_present_and_true_false_mean_present_absent(tmp_path: Path) -> None:
    path = write(tmp_path, """
        classes:
          sparrow: {body: small, wings: [brown, white]}
          robin:
            wings: {brown: yes, red: "true", blue: no, black: off}
          dove: {wings: {red: false}}
          lark: {wings: brown}
        """)
    rules = Rules.load(path, SCHEMA)
    assert rules["sparrow"].constraints[1] == Constraint("wings", ("brown", "white"), (1.0, 1.0))
    robin = rules["robin"].constraints[0]
    assert (robin.values, robin.absent, robin.weights) == (("brown", "red"), ("blue", "black"), (1.0, 1.0))
    assert robin.value_where == (f"{path}:4", f"{path}:4") and robin.absent_where == (f"{path}:4",) * 2
    dove = rules["dove"].constraints[0]
    assert (dove.values, dove.absent) == ((), ("red",))
    assert rules["lark"].constraints[0].values == ("brown",)
    # {value: true} scores as a list: equal constraints.
    assert Rules.from_dict({"classes": {"a": {"wings": {"brown": True}}}}, SCHEMA)["a"] == \
        Rules.from_dict({"classes": {"a": {"wings": ["brown"]}}}, SCHEMA)["a"]


@pytest.mark.parametrize("text, line, fragments", [
    ("classes:\n  a:\n    wings:\n      brown: 0.7\n", 4,
     ["class 'a', group 'wings'", "multi-label group", "weights are not meaningful", "'0.7'"]),
    ("classes:\n  a:\n    wings: {brown: maybe}\n", 3, ["mark each value true (present) or false (absent)"]),
    ("classes:\n  a:\n    wings:\n      brown: true\n      purple: false\n", 5,
     ["unknown value 'purple' for group 'wings'", "allowed: brown, white, red, blue, black"]),
    ("classes:\n  a:\n    wings: [red, teal]\n", 3, ["unknown value 'teal'"]),
    ("classes:\n  a:\n    body:\n      small: true\n", 4, ["true/false marks the values of a multi-label group",
                                                          "exclusive"]),
    ("classes:\n  a:\n    wings: {}\n", 3, ["empty mapping; give {value: true|false} pairs"]),
    ("classes:\n  a:\n    wings:\n      - red\n      - red\n", 5, ["value 'red' listed twice"]),
    ("classes:\n  a:\n    wings: {red: true}\n    wings: {red: false}\n", 4, ["duplicate key 'wings'"]),
])
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, fragments: list[str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(SchemaError) as info:
        Rules.load(path, SCHEMA)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_rules_read_without_the_schema_are_refused_when_checked() -> None:
    weighted = Rules.from_dict({"classes": {"a": {"wings": {"brown": 2, "red": 1}}}}, source="m.onnx metadata")
    with pytest.raises(SchemaError, match=r"m\.onnx metadata \(classes\.a\.wings\.brown\): .*weights are not "
                                          r"meaningful; write \{brown: true\} or \{brown: false\}"):
        weighted.check(SCHEMA)
    with pytest.raises(SchemaError, match=r"\(classes\.a\.wings\.blue\): .*mixes true/false .* with weights"):
        Rules.from_dict({"classes": {"a": {"wings": {"red": True, "blue": 0.5}}}})
    # The scorer checks too: unchecked rules cannot slip through.
    with pytest.raises(SchemaError, match="weights are not meaningful"):
        ClassScorer(weighted, SCHEMA)


def test_a_value_both_present_and_absent_is_refused() -> None:
    with pytest.raises(SchemaError, match="r.yaml:7: group 'wings' marks value 'red' both present and absent"):
        Constraint("wings", ("brown", "red"), (1.0, 1.0), where="r.yaml:7", absent=("red",))
    with pytest.raises(SchemaError, match="lists value 'blue' twice"):
        Constraint("wings", (), (), absent=("blue", "blue"))


def test_to_dict_round_trips_and_keeps_the_exclusive_forms_byte_identical() -> None:
    data = RULES.to_dict()
    assert json.dumps(data) == (
        '{"classes": {"sparrow": {"body": "small", "wings": ["brown", "white"]}, '
        '"robin": {"body": "small", "wings": {"brown": true, "red": true, "blue": false}}, '
        '"dove": {"wings": {"red": false}}, "crow": {"body": ["large", "huge"]}}}'
    )
    back = Rules.from_dict(json.loads(json.dumps(data)), SCHEMA)
    assert back == RULES and back.to_dict() == data
    # Absent values read from YAML words come back as JSON booleans; the digest follows the meaning.
    words = Rules.from_dict({"classes": {**RULES_DICT["classes"], "robin": {
        "body": "small", "wings": {"blue": "no", "brown": "yes", "red": "on"}}}}, SCHEMA)
    assert rules_digest(words) == rules_digest(RULES)


# -- scoring ----------------------------------------------------------------------------------
def test_scores_match_hand_computation() -> None:
    result = score_classes(PROBS, RULES, SCHEMA)
    np.testing.assert_allclose(result.scores, BY_HAND, rtol=1e-12)
    assert result.term_names == ("body", "wings=brown", "wings=white", "wings=red", "wings!=red", "wings!=blue")
    # Terms: robin has 4 (NaN where it lists nothing), dove 1, crow only its exclusive group.
    np.testing.assert_allclose(result.terms[0, 1], [LN(0.6), LN(0.9), np.nan, LN(0.7), np.nan, LN(0.95)])
    assert np.isnan(result.terms[:, 3, 1:]).all()
    assert result.predicted == ("robin", "dove")
    # Sigmoids need not sum to 1 (image 0's sum to 2.35); they must be probabilities.
    with pytest.raises(AttrtagError, match=r"probs\['wings'\]: a multi-label group's entries must be probabilities"):
        score_classes({**PROBS, "wings": PROBS["wings"] * 2}, RULES, SCHEMA)


def test_exclusive_groups_score_exactly_as_without_multi_label_classes() -> None:
    exclusive_only = Rules.from_dict({"classes": {"crow": {"body": ["large", "huge"]}, "finch": {"body": "small"}}},
                                     SCHEMA)
    alone = score_classes(PROBS, exclusive_only, SCHEMA)
    mixed = score_classes(PROBS, RULES, SCHEMA)
    np.testing.assert_array_equal(mixed.scores[:, 3], alone.scores[:, 0])  # bit for bit
    np.testing.assert_array_equal(mixed.terms[:, 0, 0], alone.terms[:, 1, 0])
    assert alone.term_names == alone.group_names == ("body",)


def test_priors_divide_by_the_prior_of_the_listed_state() -> None:
    priors = priors_from_counts(COUNTS, TOTALS)
    # Each state (present, absent) gets one pseudo-count, and at least a quarter of the mean state
    # count: the last value is absent in none of its 9 images, so its absent state counts 9 / 2 / 4.
    present = [(4 + 1) / (10 + 2), (1 + 1) / (10 + 2), (0 + 1) / (3 + 2), (2 + 1) / (4 + 2), 10 / (10 + 9 / 8)]
    np.testing.assert_allclose(priors["wings"], present)
    np.testing.assert_allclose(priors["body"], [4, 6, 1])  # exclusive: counts + 1, normalised by the scorer
    scores = ClassScorer(RULES, SCHEMA, priors=priors)(PROBS).scores
    small = 4 / 11
    want = [
        (LN(0.6 / small) + LN(0.9 / present[0]) + LN(0.2 / present[1])) / 3,
        (LN(0.6 / small) + LN(0.9 / present[0]) + LN(0.7 / present[2]) + LN(0.95 / (1 - present[3]))) / 4,
        LN(0.3 / (1 - present[2])),
        LN(0.4 / (7 / 11)),
    ]
    np.testing.assert_allclose(scores[0], want, rtol=1e-12)


def test_a_multi_label_prior_needs_the_totals() -> None:
    # Without label_totals a multi-label group's "prior" is counts + 1: not a probability.
    with pytest.raises(AttrtagError, match=r"priors\['wings'\]: .*strictly between 0 and 1.*priors=False"):
        ClassScorer(RULES, SCHEMA, priors=priors_from_counts(COUNTS))
    # ...which does not matter for rules that leave the group alone.
    crow = Rules.from_dict({"classes": {"crow": {"body": "large"}}}, SCHEMA)
    assert ClassScorer(crow, SCHEMA, priors=priors_from_counts(COUNTS)).has_priors


def test_explanation_names_each_listed_value_and_adds_up_to_the_score() -> None:
    cal = ClassScorer(RULES, SCHEMA, gamma=0.25, seen=("sparrow", "crow"))(PROBS)
    robin = cal.explain(0, 1)
    assert list(robin) == ["body", "wings=brown", "wings=red", "wings!=blue"]
    assert robin["wings!=blue"] == pytest.approx(LN(0.95) / 4)
    assert cal.explain(1, 2) == {"wings!=red": 0.0}
    for i in range(2):
        for c in range(4):
            assert sum(cal.explain(i, c).values()) == pytest.approx(cal.scores[i, c] - cal.offsets[c])


# -- overrides --------------------------------------------------------------------------------
def test_an_override_is_a_label_as_the_manifest_writes_it() -> None:
    only_red = apply_overrides(PROBS, SCHEMA, {"wings": "red"})["wings"]
    np.testing.assert_array_equal(only_red, [[0, 0, 1, 0, 0]] * 2)  # red present, the rest absent
    partial = apply_overrides(PROBS, SCHEMA, {"wings": "+red|-brown"})["wings"]
    np.testing.assert_array_equal(partial[:, :3], [[0, 0.2, 1], [0, 0.8, 1]])
    np.testing.assert_array_equal(partial[:, 3:], PROBS["wings"][:, 3:])  # the others as predicted
    np.testing.assert_array_equal(apply_overrides(PROBS, SCHEMA, {"wings": "[]"})["wings"], np.zeros((2, 5)))
    assert PROBS["wings"][0, 2] == 0.7  # the input is left alone
    # Image 1 was certain red is absent; forcing it present makes robin match it, as a dove no longer does.
    forced = ClassScorer(RULES, SCHEMA)(PROBS, overrides={"wings": "+red|-blue"})
    assert forced.explain(1, 1)["wings=red"] == 0.0 and forced.explain(1, 2)["wings!=red"] == pytest.approx(LN(EPS))
    with pytest.raises(AttrtagError, match="override 'wings=teal': group 'wings' has value 'teal', not in the schema"):
        apply_overrides(PROBS, SCHEMA, {"wings": "teal"})
    with pytest.raises(AttrtagError, match="keeps some values of 'wings' as predicted, but there is no prediction"):
        apply_overrides({"body": PROBS["body"]}, SCHEMA, {"wings": "+red"})
    with pytest.raises(AttrtagError, match=r"overrides wings=purple\|red: group 'wings' has value 'purple'"):
        ClassScoring(RULES, SCHEMA, overrides={"wings": "purple|red"})
    # Red forced present on image 1: the dove (red absent) loses it to the crow.
    assert ClassScoring(RULES, SCHEMA, overrides={"wings": "+red"})(PROBS).predicted == ("robin", "crow")


# -- what travels: header, card ----------------------------------------------------------------
def test_scoring_header_carries_label_totals_and_old_headers_still_read() -> None:
    scoring = ClassScoring(RULES, SCHEMA, source="r.yaml", label_counts=COUNTS, label_totals=TOTALS)
    d = json.loads(json.dumps(scoring.to_dict()))
    assert d["label_totals"] == {"wings": [10, 10, 3, 4, 9]}
    back = ClassScoring.from_dict(d, SCHEMA, source="tags.jsonl")
    assert back == scoring and back.label_totals == TOTALS
    np.testing.assert_array_equal(back(PROBS).scores, scoring(PROBS).scores)
    # A header from before the totals: no key, no totals; a scoring without them writes none.
    del d["label_totals"]
    old = ClassScoring.from_dict({**d, "rules": {"classes": {"crow": {"body": "large"}}}}, SCHEMA, source="t")
    assert old.label_totals is None and "label_totals" not in old.to_dict()


def test_class_scoring_takes_the_totals_from_a_card_and_from_a_tag_header() -> None:
    card = ModelCard(SCHEMA, PREP, "test_resnet", rules=RULES_DICT, label_counts=COUNTS, label_totals=TOTALS)
    scoring = class_scoring(card)
    assert scoring.label_totals == TOTALS
    np.testing.assert_allclose(scoring.priors["wings"], priors_from_counts(COUNTS, TOTALS)["wings"])
    meta = OutputMeta(RecordLayout(SCHEMA, classes=scoring), "m.onnx", "0" * 64)
    assert meta.label_totals == TOTALS
    header = OutputMeta.from_dict(json.loads(json.dumps(meta.to_dict())), source="tags.jsonl")
    again = class_scoring(header, name="tags.jsonl")
    assert again == scoring and again.label_totals == TOTALS
    assert class_scoring(card, priors=False).label_totals is None  # no priors: nothing to divide by


def test_classify_rescores_a_tag_file_with_multi_label_rules_and_an_intervention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cuts = {"wings": tuple(0.3 + 0.1 * i for i in range(len(SCHEMA["wings"])))}  # the card's, not 0.5
    layout = RecordLayout(SCHEMA, classes=ClassScoring(RULES, SCHEMA, label_counts=COUNTS, label_totals=TOTALS),
                          value_thresholds=cuts)
    records = layout.records(["a.png", "b.png"], PROBS)
    assert records[0]["class_explanation"]["wings!=blue"] == round(LN(0.95 / 0.5) / 4, 6)
    tags = tmp_path / "tags.jsonl"
    with open_output(tags, OutputMeta(layout, model="hand.onnx", model_sha256="0" * 64)) as writer:
        writer.write(records)
    assert main(["classify", str(tags), "--out", str(tmp_path / "same.jsonl")]) == 0
    meta, same = read_output(tmp_path / "same.jsonl")
    assert [r["class"] for r in same] == [r["class"] for r in records]  # the header's priors, totals included
    assert meta.label_totals == TOTALS
    assert meta.layout.value_thresholds == cuts  # what the copied `wings` lists were decided with
    assert [r["wings"] for r in same] == [r["wings"] for r in records]
    assert main(["classify", str(tags), "--set", "wings=-red|+blue", "--out", str(tmp_path / "what_if.jsonl")]) == 0
    what_if = read_output(tmp_path / "what_if.jsonl")[1]
    # Blue forced present rules the robin out (its wings!=blue clips to eps); the sparrow lists neither.
    assert what_if[0]["class"] == "sparrow" and what_if[0]["wings_probs"] == records[0]["wings_probs"]
    assert list(what_if[0]["class_explanation"]) == ["body", "wings=brown", "wings=white"]
    assert main(["classify", str(tags), "--set", "wings=teal", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "--set wings=teal: group 'wings' has value 'teal'" in capsys.readouterr().err


# -- lint ---------------------------------------------------------------------------------------
def test_lint_covers_multi_label_constraints(tmp_path: Path) -> None:
    path = write(tmp_path, """
        classes:
          a: {wings: [brown, white]}
          b: {wings: {white: yes, brown: on}}
          c: {wings: {brown: true, white: false}}
          d: {wings: [brown, white, red, blue, black]}
          e:
            body: small
            wings:
              red: true
              black: false
        """)
    rules = Rules.load(path, SCHEMA)
    warnings = lint(rules, SCHEMA)
    assert len(warnings) == 1, warnings  # listing every value present is information, unlike in an exclusive group
    assert f"{path}:2: classes 'a', 'b' have identical rules (wings=brown, wings=white)" in warnings[0]
    trained = lint(rules, SCHEMA, COUNTS, TOTALS)[1:]
    # red is present in no training image; every image that labels black has it present.
    assert [w.split(":", 2)[1] for w in trained] == ["5", "9", "10"]
    assert "class 'd' depends on wings=red, which no training image of the model carries" in trained[0]
    assert "class 'e' depends on wings=red, which no training image of the model carries" in trained[1]
    assert "class 'e' depends on wings!=black, which no training image" in trained[2]
    assert len(lint(rules, SCHEMA, COUNTS)) == 3  # without totals, nothing to say about absent values


# -- rules suggest ----------------------------------------------------------------------------
def sample(cls: str, body: int, wings: tuple[int, ...] | None) -> Sample:
    return Sample("x.png", (body, -1), extra={"bird": cls}, multi={} if wings is None else {"wings": wings})


def test_suggest_marks_values_present_or_absent_in_cover_of_the_images_that_label_them(tmp_path: Path) -> None:
    # wings per image: 1 present, 0 absent, -1 unknown (brown, white, red, blue, black).
    samples = (
        [sample("robin", 0, (1, -1, 1, 0, -1))] * 4 + [sample("robin", 0, (1, 1, 0, 0, -1))]  # red 4 of 5, white 1/1
        + [sample("robin", 0, None)] * 2  # no wing label: counts as nothing
        + [sample("crow", 1, (0, 0, 0, 0, 1))] * 3 + [sample("crow", 2, (1, 0, 0, 1, 1))]  # brown and blue 1 of 4
        + [sample("jay", 0, (1, 0, 0, 0, 0)), sample("jay", 0, (0, 1, 1, 1, 1))]  # every value 1 of 2
        + [sample("wren", 0, None)]
    )
    draft = {c.name: c for c in suggest_rules(samples, SCHEMA, "bird", cover=0.75).classes}
    assert draft["robin"].spec == {"body": "small", "wings": {"brown": True, "white": True, "red": True, "blue": False}}
    assert draft["crow"].spec == {"body": "large",  # 3 of 4: exactly the cover
                                  "wings": {"brown": False, "white": False, "red": False, "blue": False, "black": True}}
    assert "wings" not in draft["jay"].spec and "75% of the images that label it" in draft["jay"].left_out["wings"]
    assert draft["wren"].left_out["wings"] == "no label"
    strict = {c.name: c for c in suggest_rules(samples, SCHEMA, "bird", cover=0.9).classes}
    assert strict["robin"].spec["wings"] == {"brown": True, "white": True, "blue": False}  # red's 80% is short
    out = tmp_path / "draft.yaml"
    out.write_text(suggest_rules(samples, SCHEMA, "bird", cover=0.75).to_yaml("drafted"))
    loaded = Rules.load(out, SCHEMA)
    robin = loaded["robin"].constraints[1]
    assert (robin.values, robin.absent) == (("brown", "white", "red"), ("blue",))
    assert loaded.to_dict()["classes"]["crow"]["wings"] == {"black": True, "brown": False, "white": False,
                                                           "red": False, "blue": False}


def test_suggest_reports_classes_whose_wings_coincide_and_keeps_states_apart() -> None:
    samples = ([sample("a", -1, (1, 0, -1, -1, -1))] * 2 + [sample("b", -1, (1, 0, -1, -1, -1))]
               + [sample("c", -1, (0, 1, -1, -1, -1))])
    draft = suggest_rules(samples, SCHEMA, "bird")
    assert draft.coincident == (("a", "b"),)  # c has the same values in the other states


# -- calibration and evaluation ----------------------------------------------------------------
# One image of each class: (body softmax, wings sigmoids). The robin looks like a sparrow that
# also has red: uncalibrated, the seen sparrow wins it; a gamma between 0.155 and 0.34 fixes that.
ARCHETYPES = {
    "sparrow": ([0.8, 0.1, 0.1], [0.9, 0.9, 0.4, 0.5, 0.5]),
    "crow": ([0.05, 0.9, 0.05], [0.5, 0.5, 0.5, 0.5, 0.5]),
    "robin": ([0.8, 0.1, 0.1], [0.9, 0.9, 0.6, 0.3, 0.5]),
    "dove": ([0.3, 0.4, 0.3], [0.2, 0.5, 0.05, 0.5, 0.5]),
}
SEEN, UNSEEN = ("sparrow", "crow"), ("robin", "dove")


def archetype_probs() -> tuple[dict[str, np.ndarray], list[str]]:
    names = list(ARCHETYPES)
    return {"body": np.array([ARCHETYPES[n][0] for n in names]),
            "wings": np.array([ARCHETYPES[n][1] for n in names])}, names


def test_calibrated_stacking_and_evaluation_work_with_multi_label_rules() -> None:
    probs, names = archetype_probs()
    plain = score_classes(probs, RULES, SCHEMA)
    assert plain.predicted == ("sparrow", "crow", "sparrow", "dove")
    gap = plain.scores[2, 0] - plain.scores[2, 1]  # sparrow over robin on the robin image
    assert gap == pytest.approx((LN(0.8) + 2 * LN(0.9)) / 3 - (LN(0.8) + LN(0.9) + LN(0.6) + LN(0.7)) / 4)
    stacked = ClassScorer(RULES, SCHEMA, gamma=0.3, seen=SEEN)(probs)
    np.testing.assert_allclose(stacked.scores, plain.scores - [0.3, 0.0, 0.0, 0.3])
    assert stacked.predicted == tuple(names)

    data = labelled_scores(probs, names, RULES, SCHEMA)
    report = evaluate_zero_shot(data, RULES, seen=SEEN, unseen=UNSEEN, val=data)
    assert report.zsl.top1 == 1.0  # among robin and dove alone, each image is named right
    assert (report.gzsl.seen, report.gzsl.unseen) == (1.0, 0.5)
    assert report.gzsl.harmonic == pytest.approx(2 / 3)
    assert report.unseen_as_seen["uncalibrated"] == 0.5
    cal = report.gzsl_calibrated
    margin = plain.scores[0, 0] - plain.scores[0, 1:3].max()  # sparrow over the best unseen class on its image
    assert (cal.seen, cal.unseen, cal.harmonic) == (1.0, 1.0, 1.0) and gap < cal.gamma < margin
    assert report.images == {"zsl": 2, "gzsl_seen": 2, "gzsl_unseen": 2, "calibration": 4}


def test_a_stored_calibration_holds_for_multi_label_rules_from_any_source(tmp_path: Path) -> None:
    probs, names = archetype_probs()
    card = ModelCard(SCHEMA, PREP, "test_resnet", rules=RULES_DICT, label_counts=COUNTS, label_totals=TOTALS)
    given = class_scoring(card, gamma=0.3, seen=list(SEEN))
    path = write(tmp_path, """
        classes:
          sparrow: {body: small, wings: [brown, white]}
          robin: {body: small, wings: {blue: no, brown: yes, red: yes}}
          dove: {wings: {red: no}}
          crow: {body: [large, huge]}
        """)
    from_file = Rules.load(path, SCHEMA)
    held, why = resolve_calibration(given.calibration, from_file, priors=True, source="m.onnx")
    assert why is None and held == given.calibration
    stored = class_scoring(card.replace(calibration=given.calibration.to_dict()), path)
    assert stored.calibration == given.calibration
    np.testing.assert_allclose(stored(probs).scores, given(probs).scores)
    # With priors, the scores given calibration's scorer computes are the priors' own.
    plain = ClassScorer(RULES, SCHEMA, priors=priors_from_counts(COUNTS, TOTALS))(probs)
    np.testing.assert_allclose(given(probs).scores, plain.scores - [0.3, 0.0, 0.0, 0.3])
