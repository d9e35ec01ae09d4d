"""Calibration that travels with the model: ``attrtag calibrate``, then ``tag``, ``classify`` and ``export``.

The world: a random ``test_resnet`` checkpoint whose card stores label counts, 24 images and six
class rules (three seen, three unseen). Class labels are made from the model's own scores so
that the right gamma is known: images are ranked by the gap between their best seen and best
unseen class; the half with the largest gaps is labelled with its best seen class, the other
half with its best unseen class. On those images one gamma (between the two halves) names every
image right, and none smaller or larger does.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import attrtag
from attrtag.card import ModelCard
from attrtag.cli import main
from attrtag.model import build_model, load_checkpoint, save_checkpoint
from attrtag.model.checkpoint import replace_card
from attrtag.tagging import read_output
from attrtag.zeroshot.calibration import Calibration, priors_from_counts, rules_digest
from attrtag.zeroshot.classifier import ClassScorer
from attrtag.tagging import CLASS_FIELDS
from attrtag.zeroshot.metrics import choose_gamma, evaluate_gzsl
from attrtag.zeroshot.rules import Rules
from tests.helpers import PREP, SCHEMA, make_checkpoint, write_images

RULES = """\
classes:
  red_top:     {colour: red, band: top}
  green_top:   {colour: green, band: top}
  blue_small:  {colour: blue, shape: [s0, s1, s2]}
  red_bottom:  {colour: red, band: bottom}
  green_big:   {colour: green, shape: {s4: 1, s5: 0.5}}
  blue_bottom: {colour: blue, band: bottom}
"""
SEEN = ("red_top", "green_top", "blue_small")
UNSEEN = ("red_bottom", "green_big", "blue_bottom")
# s6 was never labelled in training (the lint says so for no class here: none accepts s6).
COUNTS = {"colour": (30, 12, 5), "shape": (4, 6, 5, 9, 3, 7, 0), "band": (20, 27)}


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def classes_of(records: list[dict]) -> list[dict]:
    return [{k: r[k] for k in CLASS_FIELDS} for r in records if "error" not in r]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("calibrate")
    import torch

    torch.manual_seed(3)
    model = build_model(SCHEMA, "test_resnet", card=ModelCard(SCHEMA, PREP, "test_resnet", label_counts=COUNTS))
    save_checkpoint(d / "model.pt", model, config={})
    images = write_images(d / "imgs", 24, size=36)
    (d / "rules.yaml").write_text(RULES)
    rules = Rules.load(d / "rules.yaml", SCHEMA)
    probs = attrtag.load(d / "model.pt", device="cpu", workers=0).predict([str(p) for p in images])
    scores = ClassScorer(rules, SCHEMA, priors=priors_from_counts(COUNTS))(probs).scores
    s_idx, u_idx = [rules.index(c) for c in SEEN], [rules.index(c) for c in UNSEEN]
    gap = scores[:, s_idx].max(axis=1) - scores[:, u_idx].max(axis=1)
    assert len(np.unique(gap)) == len(images), "the random model gives two images the same scores"
    order = np.argsort(-gap)
    rows, labels = [], {}
    for rank, i in enumerate(order):
        side = s_idx if rank < len(images) // 2 else u_idx
        labels[i] = rules.names[side[int(scores[i, side].argmax())]]
        rows.append({"path": images[i].name, "split": "val" if rank % 2 == 0 else "test", "class": labels[i]})
    seen_images = write_images(d / "seen", len(SEEN), size=36)  # one image per row: a manifest names an image once
    rows += [{"path": f"../seen/{p.name}", "split": "train", "class": c} for p, c in zip(seen_images, SEEN)]
    manifest = d / "imgs" / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "colour", "shape", "band", "split", "class"])
        w.writeheader()
        w.writerows(rows)
    test_list = d / "test.txt"
    test_list.write_text("".join(f"imgs/{r['path']}\n" for r in rows if r["split"] == "test"))
    return {"dir": d, "model": d / "model.pt", "rules": d / "rules.yaml", "manifest": manifest, "list": test_list,
            "rules_obj": rules, "scores": scores, "labels": labels, "rows": rows}


def val_arrays(world: dict) -> tuple[np.ndarray, np.ndarray]:
    """Scores and label indices of the val images, as the fixture computed them."""
    names = {p.name: i for i, p in enumerate(sorted((world["dir"] / "imgs").glob("*.png")))}
    val = [r for r in world["rows"] if r["split"] == "val"]
    idx = [names[r["path"]] for r in val]
    return world["scores"][idx], np.array([world["rules_obj"].index(r["class"]) for r in val])


def test_calibrate_a_checkpoint_into_a_new_file(capsys: pytest.CaptureFixture[str], world: dict) -> None:
    before = sha(world["model"])
    out = world["dir"] / "calibrated.pt"
    rc, stdout, err = run(capsys, "calibrate", world["model"], "--manifest", world["manifest"], "--rules",
                          world["rules"], "--out", out, "--workers", "0", "--device", "cpu")
    assert rc == 0, err
    assert sha(world["model"]) == before  # --out: the model itself is untouched
    card = load_checkpoint(out)["card"]
    cal = Calibration.from_dict(card.calibration)
    rules = world["rules_obj"]
    assert cal.seen == SEEN and cal.priors and cal.rules_sha256 == rules_digest(rules)
    assert card.rules == rules.to_dict() and card.label_counts == COUNTS
    # The gamma is the one choose_gamma finds on the val images; it names every val image right.
    v_scores, v_labels = val_arrays(world)
    s_idx, u_idx = [rules.index(c) for c in SEEN], [rules.index(c) for c in UNSEEN]
    assert cal.gamma == pytest.approx(choose_gamma(v_scores, v_labels, s_idx, u_idx), abs=1e-6)
    after = evaluate_gzsl(v_scores, v_labels, s_idx, u_idx, gamma=cal.gamma)
    assert (after.seen, after.unseen) == (1.0, 1.0)
    val, test = cal.info["figures"]
    assert val["split"] == "val" and val["after"]["harmonic"] == 1.0 and val["seen_images"] == 6
    assert test["split"] == "test" and val["ausuc"] == pytest.approx(1.0)
    assert val["before"]["harmonic"] <= val["after"]["harmonic"]
    assert cal.info["chosen_on"] == "manifest.csv, split val, 12 images"
    assert "val" in stdout and "test" in stdout and "AUSUC" in stdout and f"gamma {cal.gamma:.4g}" in stdout
    assert "divided by the model's training label priors" in stdout
    # Weights and training state are the original checkpoint's.
    a, b = load_checkpoint(world["model"]), load_checkpoint(out)
    assert all(np.array_equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_calibrate_an_onnx_model_in_place(capsys: pytest.CaptureFixture[str], tmp_path: Path, world: dict) -> None:
    from attrtag_onnx.export import export_onnx
    from attrtag_onnx.metadata import read_metadata

    onnx_path = export_onnx(world["model"], tmp_path / "model.onnx", batch_check=2).path
    plain = read_metadata(onnx_path)
    assert plain.calibration is None and plain.rules is None and plain.label_counts == COUNTS
    before = sha(onnx_path)
    rc, stdout, err = run(capsys, "calibrate", onnx_path, "--manifest", world["manifest"], "--rules", world["rules"],
                          "--in-place", "--workers", "0", "--device", "cpu")
    assert rc == 0, err
    assert sha(onnx_path) != before and "(replaced)" in stdout
    card = read_metadata(onnx_path)
    assert card.replace(rules=None, calibration=None) == plain  # schema, preprocessing, counts unchanged
    assert card.rules == world["rules_obj"].to_dict()
    cal = Calibration.from_dict(card.calibration)
    # The gamma PyTorch's scores give (ONNX Runtime's differ in the last digits): same choice.
    rules = world["rules_obj"]
    v_scores, v_labels = val_arrays(world)
    torch_gamma = choose_gamma(v_scores, v_labels, [rules.index(c) for c in SEEN], [rules.index(c) for c in UNSEEN])
    assert cal.gamma == pytest.approx(torch_gamma, abs=1e-4)
    tagger = attrtag.load(onnx_path, device="cpu", workers=0)  # still a working model
    assert tagger.layout.classes.calibration == cal


def crafted(world: dict, gamma: float, name: str) -> Path:
    """The model with the rules and a calibration of ``gamma`` written into its card."""
    card = load_checkpoint(world["model"])["card"]
    rules = world["rules_obj"]
    cal = Calibration(gamma, SEEN, True, rules_digest(rules), info={"chosen_on": "the test"})
    return replace_card(world["model"], card.replace(rules=rules.to_dict(), calibration=cal.to_dict()),
                        out=world["dir"] / name)


def test_tag_with_a_stored_constant_equals_classify_with_that_constant(
    capsys: pytest.CaptureFixture[str], world: dict
) -> None:
    d, rules = world["dir"], world["rules_obj"]
    s_idx, u_idx = [rules.index(c) for c in SEEN], [rules.index(c) for c in UNSEEN]
    gap = world["scores"][:, s_idx].max(axis=1) - world["scores"][:, u_idx].max(axis=1)
    gamma = float(np.median(gap))  # about half the images change sides
    model = crafted(world, gamma, "gamma.pt")
    tags = d / "tagged.jsonl"
    rc, _, err = run(capsys, "tag", model, f"@{world['list']}", "--out", tags, "--workers", "0", "--no-progress",
                     "--device", "cpu")
    assert rc == 0, err
    assert "class scores divided by the model's training label priors" in err and f"gamma {gamma:.4g}" in err
    meta, records = read_output(tags)
    assert meta.layout.classes.calibration.gamma == gamma and meta.layout.classes.label_counts == COUNTS
    # By hand: the records' own (rounded) distributions, priors, gamma off the seen classes.
    probs = meta.layout.probabilities(records)
    want = ClassScorer(rules, SCHEMA, priors=priors_from_counts(COUNTS), gamma=gamma, seen=SEEN)(probs)
    assert [r["class"] for r in records] == list(want.predicted)
    plain = ClassScorer(rules, SCHEMA, priors=priors_from_counts(COUNTS))(probs)
    assert list(want.predicted) != list(plain.predicted)  # the constant changed some classes

    # classify inherits what tag applied ...
    same = d / "same.jsonl"
    assert run(capsys, "classify", tags, "--out", same)[0] == 0
    assert classes_of(read_output(same)[1]) == classes_of(records)
    # ... turns it off ...
    off = d / "off.jsonl"
    rc, _, err = run(capsys, "classify", tags, "--out", off, "--no-calibration")
    assert rc == 0 and "--no-calibration" not in err
    assert [r["class"] for r in read_output(off)[1]] == list(plain.predicted)
    assert read_output(off)[0].layout.classes.calibration is None
    # ... and applies a constant given on the command line: the same one gives tag's classes.
    again = d / "again.jsonl"
    rc, _, err = run(capsys, "classify", off, "--out", again, "--gamma", gamma, "--seen", ",".join(SEEN))
    assert rc == 0, err
    assert classes_of(read_output(again)[1]) == classes_of(records)
    # A huge constant hands every image to an unseen class; the seen classes come from the header.
    huge = d / "huge.jsonl"
    assert run(capsys, "classify", tags, "--out", huge, "--gamma", 50)[0] == 0
    assert {r["class"] for r in read_output(huge)[1]} <= set(UNSEEN)


def test_a_model_without_priors_or_calibration_scores_as_before(
    capsys: pytest.CaptureFixture[str], world: dict
) -> None:
    d = world["dir"]
    bare = make_checkpoint(d / "bare.pt")  # no label counts in its card
    out = d / "bare.jsonl"
    rc, _, err = run(capsys, "tag", bare, f"@{world['list']}", "--out", out, "--rules", world["rules"],
                     "--workers", "0", "--no-progress", "--device", "cpu")
    assert rc == 0 and "attrtag: note" not in err
    meta, records = read_output(out)
    assert meta.layout.classes.label_counts is None and meta.layout.classes.calibration is None
    probs = meta.layout.probabilities(records)
    assert [r["class"] for r in records] == list(ClassScorer(world["rules_obj"], SCHEMA)(probs).predicted)
    # A calibrated model with both turned off scores the same way.
    off = d / "off_flags.jsonl"
    rc, _, err = run(capsys, "tag", crafted(world, 0.4, "flags.pt"), f"@{world['list']}", "--out", off,
                     "--no-priors", "--no-calibration", "--workers", "0", "--no-progress", "--device", "cpu")
    assert rc == 0 and "attrtag: note" not in err
    meta, records = read_output(off)
    probs = meta.layout.probabilities(records)
    assert meta.layout.classes.label_counts is None and meta.layout.classes.calibration is None
    assert [r["class"] for r in records] == list(ClassScorer(world["rules_obj"], SCHEMA)(probs).predicted)


def test_other_rules_or_other_scoring_get_a_warning_and_no_calibration(
    capsys: pytest.CaptureFixture[str], world: dict, tmp_path: Path
) -> None:
    model = crafted(world, 0.4, "warn.pt")
    other = tmp_path / "other.yaml"
    other.write_text("classes:\n  reddish: {colour: red}\n  blueish: {colour: blue}\n")
    out = tmp_path / "other.jsonl"
    rc, _, err = run(capsys, "tag", model, f"@{world['list']}", "--out", out, "--rules", other, "--workers", "0",
                     "--no-progress", "--device", "cpu")
    assert rc == 0
    assert "warning: warn.pt: its calibration (gamma 0.4 on 3 seen classes (chosen on the test)) was chosen for other " \
           "class rules" in err
    classes = read_output(out)[0].layout.classes
    assert classes.calibration is None and classes.label_counts == COUNTS
    rc, _, err = run(capsys, "tag", model, f"@{world['list']}", "--out", tmp_path / "np.jsonl", "--no-priors",
                     "--workers", "0", "--no-progress", "--device", "cpu")
    assert rc == 0 and "chosen on scores with label priors" in err
    assert read_output(tmp_path / "np.jsonl")[0].layout.classes.calibration is None


def test_calibrate_without_priors_is_applied_only_without_priors(
    capsys: pytest.CaptureFixture[str], world: dict, tmp_path: Path
) -> None:
    out = tmp_path / "np.pt"
    rc, stdout, err = run(capsys, "calibrate", world["model"], "--manifest", world["manifest"], "--rules",
                          world["rules"], "--out", out, "--no-priors", "--workers", "0", "--device", "cpu")
    assert rc == 0, err
    assert "without label priors" in stdout
    assert Calibration.from_dict(load_checkpoint(out)["card"].calibration).priors is False
    rc, _, err = run(capsys, "tag", out, f"@{world['list']}", "--out", tmp_path / "a.jsonl", "--no-priors",
                     "--workers", "0", "--no-progress", "--device", "cpu")
    assert rc == 0 and "calibrated: gamma" in err and "warning" not in err


def test_export_keeps_the_calibration_only_for_its_rules(world: dict, tmp_path: Path) -> None:
    from attrtag_onnx.export import export_onnx
    from attrtag_onnx.metadata import read_metadata

    model = crafted(world, 0.4, "export.pt")
    kept = read_metadata(export_onnx(model, tmp_path / "kept.onnx", batch_check=2).path)
    assert kept.calibration == load_checkpoint(model)["card"].calibration and kept.label_counts == COUNTS
    same = read_metadata(export_onnx(model, tmp_path / "same.onnx", batch_check=2,
                                     rules=world["rules_obj"].to_dict()).path)
    assert same.calibration == kept.calibration
    other = {"classes": {"reddish": {"colour": "red"}, "blueish": {"colour": "blue"}}}
    dropped = read_metadata(export_onnx(model, tmp_path / "other.onnx", batch_check=2, rules=other).path)
    assert dropped.calibration is None and dropped.rules == other


def test_export_rules_prints_the_lint_warnings(capsys: pytest.CaptureFixture[str], world: dict, tmp_path: Path) -> None:
    rules = tmp_path / "lint.yaml"
    rules.write_text("classes:\n  a: {colour: red}\n  b: {colour: red}\n  big: {shape: s6}\n")
    rc, _, err = run(capsys, "export", "--checkpoint", world["model"], "--out", tmp_path / "m.onnx",
                     "--rules", rules, "--batch-check", "2")
    assert rc == 0
    assert "classes 'a', 'b' have identical rules" in err
    assert "lint.yaml:4: class 'big' depends on shape=s6, which no training image of the model carries" in err


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--out", "cal.onnx"], "must be another file with model.pt's suffix '.pt'"),
        (["--out", "{model}"], "must be another file"),
        (["--out", "c.pt", "--class-column", "kind"], "no 'kind' column"),
        (["--out", "c.pt", "--unseen", "zebra"], "--unseen: zebra not among the classes"),
        (["--out", "c.pt", "--unseen", "red_top,green_top,blue_small,red_bottom,green_big,blue_bottom"],
         "no seen class"),
    ],
)
def test_calibrate_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], world: dict, tmp_path: Path, extra: list[str], fragment: str
) -> None:
    extra = [e.format(model=world["model"]) if e == "{model}" else str(tmp_path / e) if e.endswith((".pt", ".onnx"))
             else e for e in extra]
    rc, _, err = run(capsys, "calibrate", world["model"], "--manifest", world["manifest"], "--rules", world["rules"],
                     *extra, "--workers", "0", "--device", "cpu")
    assert rc == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c.pt").exists()


def test_a_missing_model_or_manifest_or_a_file_that_is_no_model_is_named_first(
    capsys: pytest.CaptureFixture[str], world: dict, tmp_path: Path
) -> None:
    for model, manifest, fragment in [
        (tmp_path / "gone.pt", world["manifest"], "gone.pt: model file not found"),
        (world["rules"], world["manifest"], "not an ONNX model or an attrtag checkpoint"),
        (world["model"], tmp_path / "gone.csv", "gone.csv: manifest not found"),
    ]:
        rc, _, err = run(capsys, "calibrate", model, "--manifest", manifest, "--out", tmp_path / "c.yaml")
        assert rc == 2 and fragment in err and len(err.strip().splitlines()) == 1, err


def test_calibrate_needs_out_or_in_place_and_rules(capsys: pytest.CaptureFixture[str], world: dict) -> None:
    with pytest.raises(SystemExit) as info:
        main(["calibrate", str(world["model"]), "--manifest", str(world["manifest"])])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err
    rc, _, err = run(capsys, "calibrate", world["model"], "--manifest", world["manifest"], "--in-place")
    assert rc == 2 and "embeds no rules" in err


def test_evaluate_reports_the_stored_calibration_and_ausuc(
    capsys: pytest.CaptureFixture[str], world: dict, tmp_path: Path
) -> None:
    model = crafted(world, 0.25, "evaluate.pt")
    rc, stdout, err = run(capsys, "evaluate", "--checkpoint", model, "--manifest", world["manifest"], "--rules",
                          world["rules"], "--out", tmp_path, "--workers", "0", "--device", "cpu")
    assert rc == 0, err
    zs = json.loads((tmp_path / "metrics.json").read_text())["zero_shot"]
    stored = zs["gzsl"]["stored_calibration"]
    assert stored["gamma"] == 0.25 and "stored in the model (gamma 0.25)" in stdout
    assert zs["ausuc"] is not None and "AUSUC" in stdout and "divided by the training label priors" in stdout
    # The stored gamma's figures are the test images' GZSL at that gamma, priors included.
    rules = world["rules_obj"]
    names = {p.name: i for i, p in enumerate(sorted((world["dir"] / "imgs").glob("*.png")))}
    test = [r for r in world["rows"] if r["split"] == "test"]
    scores = world["scores"][[names[r["path"]] for r in test]]
    labels = np.array([rules.index(r["class"]) for r in test])
    want = evaluate_gzsl(scores, labels, [rules.index(c) for c in SEEN], [rules.index(c) for c in UNSEEN], gamma=0.25)
    assert (stored["seen"], stored["unseen"]) == pytest.approx((want.seen, want.unseen))
    rc, _, _ = run(capsys, "evaluate", "--checkpoint", model, "--manifest", world["manifest"], "--rules",
                   world["rules"], "--out", tmp_path, "--workers", "0", "--device", "cpu", "--no-priors",
                       "--overwrite")
    zs = json.loads((tmp_path / "metrics.json").read_text())["zero_shot"]
    assert rc == 0 and zs["gzsl"]["stored_calibration"] is None  # chosen with priors: does not hold


def test_classify_calibration_options_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], world: dict, tmp_path: Path
) -> None:
    tags = tmp_path / "t.jsonl"
    bare_rules = ["--rules", str(world["rules"])]
    assert run(capsys, "tag", make_checkpoint(tmp_path / "bare.pt"), f"@{world['list']}", "--out", tags,
               *bare_rules, "--workers", "0", "--no-progress", "--device", "cpu")[0] == 0
    for extra, fragment in (
        (["--seen", "red_top"], "--seen names the classes --gamma applies to"),
        (["--gamma", "0.3", "--no-calibration"], "contradict each other"),
        (["--gamma", "0.3"], "which classes are seen?"),  # tagged without a calibration
        (["--gamma", "0.3", "--seen", "zebra"], "--seen: zebra not among the classes"),
    ):
        rc, _, err = run(capsys, "classify", tags, "--out", tmp_path / "c.jsonl", "--overwrite", *extra)
        assert rc == 2 and fragment in err and len(err.strip().splitlines()) == 1, (extra, err)
