"""Tests of the synthetic demo world (attrtag.data.synthetic): layout, determinism, zero-shot splits."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attrtag.data import synthetic
from attrtag.data.synthetic import draw
from attrtag._yaml import load_yaml
from attrtag.data.multilabel import parse_values
from attrtag.schema import Schema

# Small sizes keep the module fast; unusual counts so that nothing can rely on the defaults.
SMALL = dict(n_creatures=240, n_logos=60, n_unseen=6)


def read_rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def is_creature(row: dict[str, str]) -> bool:
    return any(row[g] for g in synthetic.CREATURE_GROUPS)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.generate(tmp_path_factory.mktemp("base"), seed=0, **SMALL)


@pytest.fixture(scope="module")
def rows(base: Path) -> list[dict[str, str]]:
    return read_rows(base)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return synthetic.demo_schema()


def test_the_world_has_one_copy_of_its_schema_and_rules() -> None:
    # datasets/demo_*.yaml are links to the package's files, not copies that could drift.
    datasets = Path(__file__).resolve().parents[2] / "datasets"
    assert (datasets / "demo_schema.yaml").resolve() == synthetic.SCHEMA_FILE.resolve()
    assert (datasets / "demo_rules.yaml").resolve() == synthetic.RULES_FILE.resolve()
    assert synthetic.demo_schema() == Schema.load(synthetic.SCHEMA_FILE)


def test_rules_file_lists_every_class_with_its_signature(schema: Schema) -> None:
    rules = load_yaml(synthetic.RULES_FILE).data
    classes = synthetic.demo_classes()
    assert list(rules) == ["classes"]
    assert rules["classes"] == classes
    for name, sig in classes.items():
        assert list(sig) == list(synthetic.CREATURE_GROUPS), name
        for group, value in sig.items():
            assert value in schema[group].values, (name, group, value)
    signatures = [tuple(sig.values()) for sig in classes.values()]
    assert len(set(signatures)) == len(signatures), "class signatures must be distinct"
    assert set(synthetic.UNSEEN) < set(classes)
    assert "platypus" in synthetic.UNSEEN
    assert classes["platypus"]["bill"] == "duck"
    assert 8 <= len(classes) - len(synthetic.UNSEEN) <= 12
    assert 3 <= len(synthetic.UNSEEN) <= 5


def test_output_folder_is_self_contained(base: Path, rows: list[dict[str, str]], schema: Schema) -> None:
    out = base.parent
    assert base.name == "manifest.csv"
    assert Schema.load(out / "schema.yaml") == schema
    assert (out / "rules.yaml").read_text(encoding="utf-8") == synthetic.RULES_FILE.read_text(encoding="utf-8")
    with base.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == ["path", *schema.names, "split", "class"]
    n_total = SMALL["n_creatures"] + SMALL["n_logos"] + SMALL["n_unseen"] * len(synthetic.UNSEEN)
    assert len(rows) == n_total
    assert len({r["path"] for r in rows}) == n_total
    assert all(r["path"].startswith("images/") and (out / r["path"]).is_file() for r in rows)
    assert not list(out.glob(".*.tmp")), "temporary files must not be left behind"


def test_every_label_is_a_schema_value(rows: list[dict[str, str]], schema: Schema) -> None:
    for row in rows:
        for group in schema:
            if group.multi:  # the values present, or [] for none: read back as the manifest reads it
                assert row[group.name] == "" or parse_values(group, row[group.name], row["path"]), row["path"]
                continue
            assert row[group.name] == "" or row[group.name] in group.values, (row["path"], group.name)
        assert row["split"] in {"train", "val", "test"}
        assert row["class"] == "" or row["class"] in synthetic.demo_classes()


def test_creature_rows_carry_creature_groups_and_logo_rows_logo_groups(rows: list[dict[str, str]]) -> None:
    creatures = [r for r in rows if is_creature(r)]
    logos = [r for r in rows if not is_creature(r)]
    assert len(logos) == SMALL["n_logos"]
    for r in creatures:
        assert all(r[g] for g in synthetic.CREATURE_GROUPS), r
        assert not any(r[g] for g in synthetic.LOGO_GROUPS), r
        assert not r[synthetic.STICKERS], r
    for r in logos:
        assert all(r[g] for g in synthetic.LOGO_GROUPS) and r[synthetic.STICKERS], r
        assert r["class"] == ""
    shown = [v for r in logos for v in r[synthetic.STICKERS].split("|") if v != "[]"]
    assert {v: shown.count(v) / len(logos) for v in ("star", "arrow", "badge")} == pytest.approx(
        dict.fromkeys(("star", "arrow", "badge"), synthetic.STICKER_RATE), abs=0.15)


def test_class_column_names_the_exactly_matching_signature(rows: list[dict[str, str]]) -> None:
    by_signature = {tuple(sig.values()): name for name, sig in synthetic.demo_classes().items()}
    named = 0
    for r in (r for r in rows if is_creature(r)):
        signature = tuple(r[g] for g in synthetic.CREATURE_GROUPS)
        assert r["class"] == by_signature.get(signature, ""), r
        named += bool(r["class"])
    assert named > 0


def test_unseen_classes_are_held_out_of_training(rows: list[dict[str, str]]) -> None:
    unseen_signatures = {tuple(synthetic.demo_classes()[c].values()) for c in synthetic.UNSEEN}
    train = [r for r in rows if r["split"] == "train" and is_creature(r)]
    for r in train:
        assert r["class"] not in synthetic.UNSEEN
        assert tuple(r[g] for g in synthetic.CREATURE_GROUPS) not in unseen_signatures
    for name in synthetic.UNSEEN:
        for split in ("val", "test"):
            found = [r for r in rows if r["class"] == name and r["split"] == split]
            assert len(found) == SMALL["n_unseen"] // 2, (name, split)
    # Zero-shot is only possible when every value of an unseen class was seen in training.
    for name in synthetic.UNSEEN:
        for group, value in synthetic.demo_classes()[name].items():
            assert any(r[group] == value for r in train), (name, group, value)


def test_splits_are_about_80_10_10_for_each_kind(rows: list[dict[str, str]]) -> None:
    drawn = [r for r in rows if r["class"] not in synthetic.UNSEEN]
    for kind in (True, False):
        subset = [r for r in drawn if is_creature(r) == kind]
        counts = {s: sum(r["split"] == s for r in subset) / len(subset) for s in ("train", "val", "test")}
        assert counts["train"] == pytest.approx(0.8, abs=0.02)
        assert counts["val"] == pytest.approx(0.1, abs=0.02)
        assert counts["test"] == pytest.approx(0.1, abs=0.02)


def test_images_are_small_rgb_squares(base: Path, rows: list[dict[str, str]]) -> None:
    for r in rows[:: len(rows) // 12]:
        with Image.open(base.parent / r["path"]) as img:
            assert img.format == "PNG"
            assert img.mode == "RGB"
            assert img.size == (64, 64)
            assert np.asarray(img).std() > 5, "an image must not be blank"


def test_same_seed_gives_identical_files_and_another_seed_does_not(base: Path, tmp_path: Path) -> None:
    again = synthetic.generate(tmp_path / "again", seed=0, **SMALL)
    assert again.read_bytes() == base.read_bytes()
    names = [r["path"] for r in read_rows(base)]
    for name in names[:: len(names) // 10]:
        assert (again.parent / name).read_bytes() == (base.parent / name).read_bytes(), name

    other = synthetic.generate(tmp_path / "other", seed=1, **SMALL)
    assert other.read_bytes() != base.read_bytes()
    differing = sum((other.parent / n).read_bytes() != (base.parent / n).read_bytes() for n in names[:10])
    assert differing == 10


def test_workers_do_not_change_the_output(base: Path, tmp_path: Path) -> None:
    small = dict(n_creatures=24, n_logos=8, n_unseen=2)
    one = synthetic.generate(tmp_path / "one", seed=5, workers=1, **small)
    two = synthetic.generate(tmp_path / "two", seed=5, workers=2, **small)
    assert one.read_bytes() == two.read_bytes()
    for r in read_rows(one):
        assert (one.parent / r["path"]).read_bytes() == (two.parent / r["path"]).read_bytes(), r["path"]


def test_drop_labels_blanks_about_the_requested_share(base: Path, tmp_path: Path) -> None:
    p = 0.5
    dropped = synthetic.generate(tmp_path / "drop", seed=0, drop_labels=p, **SMALL)
    full, part = read_rows(base), read_rows(dropped)
    groups = [*synthetic.CREATURE_GROUPS, *synthetic.LOGO_GROUPS, synthetic.STICKERS]
    kept = sum(bool(r[g]) for r in part for g in groups)
    present = sum(bool(r[g]) for r in full for g in groups)
    # Each label survives with probability 1 - p, plus the one a row keeps when all would go:
    # 4-label rows (creatures) lose everything with probability p**4, 3-label rows (logos) p**3.
    n4 = sum(is_creature(r) for r in full)
    n3 = len(full) - n4
    expected = n4 * (4 * (1 - p) + p**4) + n3 * (3 * (1 - p) + p**3)
    assert kept == pytest.approx(expected, rel=0.08)
    assert kept < 0.7 * present
    for a, b in zip(full, part):
        assert a["path"] == b["path"] and a["split"] == b["split"] and a["class"] == b["class"]
        assert any(b[g] for g in groups), "a row always keeps at least one label"
        assert all(b[g] in ("", a[g]) for g in groups), "dropping only blanks, never changes"
        # Dropping labels does not change the pixels.
        if a["path"].endswith("0.png"):
            assert (dropped.parent / b["path"]).read_bytes() == (base.parent / a["path"]).read_bytes()


def test_other_image_sizes(tmp_path: Path) -> None:
    manifest = synthetic.generate(tmp_path, n_creatures=6, n_logos=3, n_unseen=0, image_size=48)
    for r in read_rows(manifest):
        with Image.open(tmp_path / r["path"]) as img:
            assert img.size == (48, 48) and img.mode == "RGB"


def test_objects_are_placed_inside_the_centre_crop() -> None:
    rng = np.random.default_rng(0)
    canvas = 128
    lo, hi = canvas * (1 - synthetic.SAFE_FRACTION) / 2, canvas * (1 + synthetic.SAFE_FRACTION) / 2
    for _ in range(200):
        x0, y0 = rng.uniform(-3, 0, 2)
        box = (x0, y0, x0 + rng.uniform(0.5, 4), y0 + rng.uniform(0.5, 4))
        scale, dx, dy = draw._place(box, canvas, rng, (0.9, 1.0))
        assert lo <= box[0] * scale + dx and box[2] * scale + dx <= hi
        assert lo <= box[1] * scale + dy and box[3] * scale + dy <= hi


@pytest.mark.parametrize(
    "kwargs",
    [dict(drop_labels=1.5), dict(drop_labels=-0.1), dict(n_logos=-1), dict(image_size=16), dict(workers=0)],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        synthetic.generate(tmp_path, **kwargs)
    assert not (tmp_path / "manifest.csv").exists()
