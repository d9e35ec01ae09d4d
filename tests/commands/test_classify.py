"""``attrtag infer``: re-scoring tag outputs with rules, exactly as ``tag --rules`` does, and interventions."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from attrtag.cli import main
from attrtag.schema import Schema
from attrtag.tagging import OutputMeta, RecordLayout, open_output, read_output
from attrtag.tagging import CLASS_FIELDS
from tests.helpers import make_checkpoint, write_images

# Rules for the test model's schema (colour 3, shape 7, band 2), with a list and weights.
MODEL_RULES = """\
classes:
  small_red: {colour: red, shape: [s0, s1, s2]}
  big_blue:  {colour: blue, shape: {s5: 1, s6: 0.5}}
  green_top: {colour: green, band: top}
  bottom:    {band: bottom}
"""

# A creature world small enough to score by hand (3, 3, 3 and 2 values).
CREATURES = Schema.from_dict({
    "covering": ["fur", "feathers", "scales"],
    "pattern": ["plain", "spots", "stripes"],
    "bill": ["none", "duck", "beak"],
    "tail": ["no", "yes"],
})
CREATURE_RULES = """\
classes:
  bear:     {covering: fur, pattern: plain, bill: none, tail: "no"}
  platypus: {covering: fur, pattern: plain, bill: duck, tail: "yes"}
  duck:     {covering: feathers, bill: duck, tail: "yes"}
  snake:    {covering: scales, pattern: stripes, bill: none, tail: "yes"}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def class_fields(records: list[dict]) -> list[dict]:
    return [{k: r[k] for k in CLASS_FIELDS} for r in records if "error" not in r]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("infer")
    write_images(d / "imgs", 9, size=36)
    (d / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    (d / "rules.yaml").write_text(MODEL_RULES)
    return {"dir": d, "model": make_checkpoint(d / "model.pt"), "images": d / "imgs", "rules": d / "rules.yaml"}


@pytest.fixture(scope="module")
def tagged(setup: dict[str, Path]) -> dict[str, Path]:
    """The same images tagged with --rules (batches of 2) and without rules, JSONL and CSV."""
    d = setup["dir"]
    out = {}
    for name, extra in (("rules", ["--rules", setup["rules"], "--class-top-k", "3"]), ("plain", [])):
        for fmt in ("jsonl", "csv"):
            path = d / f"{name}.{fmt}"
            rc = main([str(a) for a in ("tag", setup["model"], setup["images"], "--out", path, "--batch-size", "2",
                                        "--workers", "1", "--no-progress", *extra)])
            assert rc == 0
            out[f"{name}.{fmt}"] = path
    return out


def test_classify_reproduces_the_classes_tag_wrote(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, setup: dict[str, Path], tagged: dict[str, Path]
) -> None:
    _, with_rules = read_output(tagged["rules.jsonl"])
    assert len(class_fields(with_rules)) == 9 and sum("error" in r for r in with_rules) == 1
    for fmt in ("jsonl", "csv"):
        # From tags written without rules: the model is not run again, the classes are the same.
        out = tmp_path / f"from_plain.{fmt}"
        rc, stdout, _ = run(capsys, "classify", tagged[f"plain.{fmt}"], "--rules", setup["rules"], "--class-top-k", "3",
                            "--out", out)
        assert rc == 0 and "scored 9 image(s)" in stdout and "1 failed image(s) kept" in stdout
        meta, records = read_output(out)
        assert class_fields(records) == class_fields(with_rules)
        assert records == with_rules  # every field, the failed image's record included
        assert meta.layout.classes is not None and meta.layout.classes.top_k == 3
    # Re-scoring an output that has class fields, with its own rules and options, changes nothing.
    out = tmp_path / "again.jsonl"
    assert run(capsys, "classify", tagged["rules.csv"], "--out", out)[0] == 0
    assert read_output(out) == read_output(tagged["rules.jsonl"])


def test_infer_is_an_alias_of_classify_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, setup: dict[str, Path], tagged: dict[str, Path]
) -> None:
    rc, _, err = run(capsys, "infer", tagged["plain.jsonl"], "--rules", setup["rules"], "--class-top-k", "3",
                     "--out", tmp_path / "old_name.jsonl")
    assert rc == 0 and "'infer' is an alias of 'classify'" in err
    rc, _, err = run(capsys, "classify", tagged["plain.jsonl"], "--rules", setup["rules"], "--class-top-k", "3",
                     "--out", tmp_path / "new_name.jsonl")
    assert rc == 0 and "alias" not in err
    assert read_output(tmp_path / "old_name.jsonl") == read_output(tmp_path / "new_name.jsonl")


def test_class_fields_are_consistent(tagged: dict[str, Path]) -> None:
    meta, records = read_output(tagged["rules.jsonl"])
    for r in class_fields(records):
        probs = [c["prob"] for c in r["classes"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
        assert r["class"] == r["classes"][0]["class"] and r["class_prob"] == probs[0]
        # Explanation: the groups the best class constrains, each a share of its (negative) score.
        constrained = {c.group for c in meta.layout.classes.rules[r["class"]].constraints}
        assert set(r["class_explanation"]) == constrained and all(v <= 0 for v in r["class_explanation"].values())


def test_classify_refuses_top_k_tags(capsys: pytest.CaptureFixture[str], tmp_path: Path, setup: dict[str, Path]) -> None:
    tags = tmp_path / "top2.jsonl"
    assert main([str(a) for a in ("tag", setup["model"], setup["images"], "--out", tags, "--top-k", "2",
                                  "--workers", "0", "--no-progress")]) == 0
    capsys.readouterr()
    rc, _, err = run(capsys, "classify", tags, "--rules", setup["rules"], "--out", tmp_path / "x.jsonl")
    assert rc == 2 and err.count("\n") == 1 and "--top-k 2" in err and "without --top-k" in err
    assert not (tmp_path / "x.jsonl").exists()


def test_classify_option_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, setup: dict[str, Path], tagged: dict[str, Path]
) -> None:
    cases = [
        (("classify", tagged["plain.jsonl"], "--out", tmp_path / "a.jsonl"), "tagged without class rules; pass --rules"),
        (("classify", tagged["rules.jsonl"], "--out", tagged["rules.jsonl"]), "is the input file"),
        (("classify", tagged["rules.jsonl"], "--out", tagged["plain.csv"]), "exists; pass --overwrite"),
        (("classify", tagged["rules.jsonl"], "--out", tmp_path / "b.jsonl", "--set", "band"), "expected GROUP=VALUE"),
        (("classify", tagged["rules.jsonl"], "--out", tmp_path / "b.jsonl", "--set", "band=left"),
         "unknown value 'left' (allowed: top, bottom)"),
        (("classify", tagged["rules.jsonl"], "--out", tmp_path / "b.jsonl", "--set", "size=xl"), "unknown group 'size'"),
        (("classify", tagged["rules.jsonl"], "--out", tmp_path / "b.jsonl", "--unknown-threshold", "2"),
         "--unknown-threshold must be a probability"),
        (("classify", tmp_path / "nothing.jsonl", "--out", tmp_path / "b.jsonl"), "tag output not found"),
    ]
    for argv, message in cases:
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and message in err, (argv, err)


def write_tags(path: Path, rows: list[dict[str, list[float]]]) -> Path:
    """A tag output made by hand: one record per row of group -> distribution, then a failed image."""
    layout = RecordLayout(CREATURES)
    probs = {g: np.array([row[g] for row in rows]) for g in CREATURES.names}
    records = layout.records([f"img{i}.png" for i in range(len(rows))], probs)
    records.append(layout.error_record("broken.png", "truncated", "broken.png: file is truncated"))
    with open_output(path, OutputMeta(layout, model="hand.onnx", model_sha256="0" * 64)) as writer:
        writer.write(records)
    return path


def test_intervention_moves_a_creature_to_the_class_it_describes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Furry, plain, tailed, and (the model thinks) no bill: closest to a bear, whose only
    # mismatch is the tail (0.1), while a platypus also needs a duck bill (0.05).
    creature = {"covering": [0.9, 0.05, 0.05], "pattern": [0.9, 0.05, 0.05], "bill": [0.9, 0.05, 0.05],
                "tail": [0.1, 0.9]}
    tags = write_tags(tmp_path / "tags.jsonl", [creature])
    rules = tmp_path / "rules.yaml"
    rules.write_text(CREATURE_RULES)

    rc, _, _ = run(capsys, "classify", tags, "--rules", rules, "--out", tmp_path / "as_seen.jsonl")
    assert rc == 0
    (seen, failed) = read_output(tmp_path / "as_seen.jsonl")[1]
    assert seen["class"] == "bear" and [c["class"] for c in seen["classes"]][:2] == ["bear", "platypus"]
    # The tail argues most against the bear: log(0.1) over its 4 constrained groups.
    assert seen["class_explanation"]["tail"] == round(math.log(0.1) / 4, 6)
    assert min(seen["class_explanation"], key=seen["class_explanation"].get) == "tail"
    assert "error" in failed and not set(CLASS_FIELDS) & set(failed)

    rc, stdout, _ = run(capsys, "classify", tags, "--rules", rules, "--set", "bill=duck", "--out", tmp_path / "duck.jsonl")
    assert rc == 0 and "set bill=duck" in stdout
    meta, (what_if, _) = read_output(tmp_path / "duck.jsonl")
    assert what_if["class"] == "platypus" and what_if["class_prob"] > seen["class_prob"]
    assert what_if["class_explanation"]["bill"] == 0.0  # the forced value matches fully
    assert what_if["bill"] == "none" and what_if["bill_probs"] == seen["bill_probs"]  # attributes as the model saw them
    assert dict(meta.layout.classes.overrides) == {"bill": "duck"}

    # --set is not inherited: re-scoring the intervened file without it gives the bear back.
    rc, _, _ = run(capsys, "classify", tmp_path / "duck.jsonl", "--out", tmp_path / "back.jsonl")
    assert rc == 0 and read_output(tmp_path / "back.jsonl")[1][0]["class"] == "bear"


def test_unknown_threshold(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sure = {"covering": [0.98, 0.01, 0.01], "pattern": [0.98, 0.01, 0.01], "bill": [0.98, 0.01, 0.01],
            "tail": [0.98, 0.02]}
    vague = {g: [1 / len(CREATURES[g])] * len(CREATURES[g]) for g in CREATURES.names}
    tags = write_tags(tmp_path / "tags.jsonl", [sure, vague])
    rules = tmp_path / "rules.yaml"
    rules.write_text(CREATURE_RULES)
    rc, _, _ = run(capsys, "classify", tags, "--rules", rules, "--unknown-threshold", "0.5", "--out", tmp_path / "u.jsonl")
    assert rc == 0
    first, second, _ = read_output(tmp_path / "u.jsonl")[1]
    assert first["class"] == "bear" and first["class_prob"] >= 0.5
    assert second["class"] == "unknown" and second["class_prob"] < 0.5 and second["classes"][0]["class"] != "unknown"


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_an_interrupted_overwrite_keeps_the_old_output_and_a_finished_one_replaces_it(
    setup: dict[str, Path], tagged: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, suffix: str,
) -> None:
    from attrtag.tagging.records import RecordLayout

    out = tmp_path / f"classes.{suffix}"
    assert run(capsys, "classify", tagged["plain.jsonl"], "--rules", setup["rules"], "--out", out)[0] == 0
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())

    def killed(self: RecordLayout, records: list, old: RecordLayout) -> list:
        raise KeyboardInterrupt  # Ctrl-C (or a crash) in the middle of writing
    monkeypatch.setattr(RecordLayout, "rescored", killed)
    assert run(capsys, "classify", tagged["plain.jsonl"], "--rules", setup["rules"], "--out", out,
               "--class-top-k", "1", "--overwrite")[0] == 130
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before  # nothing lost, nothing left
    monkeypatch.undo()
    assert run(capsys, "classify", tagged["plain.jsonl"], "--rules", setup["rules"], "--out", out,
               "--class-top-k", "1", "--overwrite")[0] == 0
    records = read_output(out)[1]
    assert records and all(len(r["classes"]) == 1 for r in records if "error" not in r)
    assert sorted(p.name for p in tmp_path.iterdir()) == [n for n, _ in before]  # no staging files left
