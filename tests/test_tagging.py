"""The tagging engine, input expansion and output files (library level, in one process)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attrtag.checkpoint import save_checkpoint
from attrtag.images import display_path
from attrtag.model import build_model
from attrtag.predictor import open_predictor
from attrtag.preprocess import Preprocessing
from attrtag.schema import Schema
from attrtag.tag_inputs import InputError, expand_inputs
from attrtag.tag_output import (
    OutputError,
    OutputMeta,
    OutputMismatchError,
    RecordLayout,
    open_output,
    read_output,
)
from attrtag.errors import AttrtagError
from attrtag.tagging import Decoded, TagWorker, decode_resized, predict_records, tag_paths
from badfiles import make_corpus

# Unusual sizes (3, 7, 2) so that nothing hard-coded can pass.
SCHEMA = Schema.from_dict(
    {"colour": ["red", "green", "blue"], "shape": [f"s{i}" for i in range(7)], "band": ["top", "bottom"]}
)
PREP = Preprocessing((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def make_checkpoint(path: Path, schema: Schema = SCHEMA, *, seed: int = 0) -> Path:
    """A random ``test_resnet`` checkpoint at 32 px; different seeds give different weights."""
    torch.manual_seed(seed)
    model = build_model(schema, "test_resnet")
    save_checkpoint(path, {
        "model": model.state_dict(), "schema": schema.to_dict(), "preprocessing": PREP.to_dict(),
        "backbone": "test_resnet", "config": {},
    })
    return path


def write_images(folder: Path, n: int, *, size: int = 40, fmt: str = "png") -> list[Path]:
    """``n`` small images of different colours (so predictions differ between them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        arr = rng.integers(0, 256, (size, size + i % 5, 3), dtype=np.uint8)
        arr[: size // 2] = (i * 37 % 256, i * 91 % 256, i * 13 % 256)
        p = folder / f"img{i:04d}.{fmt}"
        Image.fromarray(arr).save(p)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def predictor(ckpt: Path):  # noqa: ANN201 - attrtag.predictor.Predictor
    return open_predictor(ckpt, device="cpu", threads=1)


def meta_for(layout: RecordLayout, sha: str = "a" * 64) -> OutputMeta:
    return OutputMeta(layout, model="model.pt", model_sha256=sha)


# --- input expansion ------------------------------------------------------------------------


def test_folder_recursion_keeps_images_and_file_links_only(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ("a/1.jpg", "a/b/2.PNG", "a/notes.txt", "a/b/data.csv", "top.webp"):
        (tmp_path / p).write_bytes(b"x")
    os.symlink(tmp_path / "top.webp", tmp_path / "a" / "link.webp")
    os.symlink("missing.jpg", tmp_path / "a" / "dangling.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a folder link: not followed
    got = expand_inputs([str(tmp_path / "a")])
    rel = [os.path.relpath(p, tmp_path) for p in got]
    assert rel == sorted(["a/1.jpg", "a/b/2.PNG", "a/link.webp", "a/dangling.jpg"], key=os.fsencode)


def test_glob_list_file_duplicates_and_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs" / "deep").mkdir(parents=True)
    for p in ("imgs/b.jpg", "imgs/a.jpg", "imgs/deep/c.png", "imgs/deep/skip.txt"):
        (tmp_path / p).write_bytes(b"x")
    odd = os.fsdecode(b"imgs/\xff odd.jpg")
    Path(odd).write_bytes(b"x")
    lists = tmp_path / "lists"
    lists.mkdir()
    # Relative to the list's folder; comments and blank lines skipped; a missing file is kept.
    (lists / "some.txt").write_bytes(b"# header\n../imgs/a.jpg\n\n../imgs/gone.jpg\r\n../imgs/\xff odd.jpg\n")
    got = expand_inputs(["imgs/**/*.png", "@lists/some.txt", "imgs", "./imgs/b.jpg", str(tmp_path / "imgs/a.jpg")])
    # a.jpg is named twice; the spelling that sorts first (here the absolute one) is kept.
    want = [str(tmp_path / "imgs/a.jpg"), "imgs/b.jpg", "imgs/deep/c.png", "imgs/gone.jpg", odd]
    assert got == sorted(want, key=os.fsencode)
    assert expand_inputs(["lists/some.txt"]) == sorted(["imgs/a.jpg", "imgs/gone.jpg", odd], key=os.fsencode)
    # Order does not depend on argument order.
    assert expand_inputs(["imgs", "imgs/**/*.png"]) == expand_inputs(["imgs/**/*.png", "imgs"])
    assert expand_inputs(["imgs/**"]) == expand_inputs(["imgs"])


def test_inputs_that_match_nothing_are_errors_but_missing_files_are_kept(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for bad in (str(tmp_path / "empty"), str(tmp_path / "*.jpg"), f"@{tmp_path / 'nolist.txt'}"):
        with pytest.raises(InputError, match="INPUT|list file"):
            expand_inputs([bad])
    (tmp_path / "blank.txt").write_text("\n# only a comment\n")
    with pytest.raises(InputError, match="matches no image"):
        expand_inputs([str(tmp_path / "blank.txt")])
    missing = str(tmp_path / "missing.jpg")
    assert expand_inputs([missing]) == [missing]


# --- record layout --------------------------------------------------------------------------


def test_prediction_records_top_k_and_thresholds() -> None:
    probs = {
        "colour": np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]], np.float32),
        "shape": np.full((2, 7), 1 / 7, np.float32),
        "band": np.array([[0.9, 0.1], [0.3, 0.7]], np.float32),
    }
    layout = RecordLayout(SCHEMA, top_k=2, thresholds={"colour": 0.6, "band": 0.8})
    r0, r1 = layout.prediction_records(["a.jpg", "b.jpg"], probs)
    assert (r0["colour"], r0["colour_prob"], r0["band"]) == ("green", 0.7, "top")
    assert list(r0["colour_probs"]) == ["green", "red"]  # most probable first
    assert list(r1["colour_probs"]) == ["red", "green"]  # a tie keeps schema order
    assert list(r0["shape_probs"]) == ["s0", "s1"] and r0["shape"] == "s0"
    assert r0["uncertain"] == [] and r1["uncertain"] == ["colour", "band"]

    full = RecordLayout(SCHEMA).prediction_records(["a.jpg", "b.jpg"], probs)[0]
    assert tuple(full["shape_probs"]) == SCHEMA["shape"].values and "uncertain" not in full
    assert full["colour_probs"] == {"red": 0.2, "green": 0.7, "blue": 0.1}  # rounded to 6 decimals


def test_layout_rejects_bad_settings() -> None:
    with pytest.raises(OutputError, match="unknown group 'size'"):
        RecordLayout(SCHEMA, thresholds={"size": 0.5})
    with pytest.raises(OutputError, match="top-k"):
        RecordLayout(SCHEMA, top_k=0)
    with pytest.raises(OutputError, match="group 'a_prob'"):
        RecordLayout(Schema.from_dict({"a": ["x", "y"], "a_prob": ["x", "y"]}))


# --- engine ---------------------------------------------------------------------------------


def test_bad_file_corpus_gives_one_record_per_file(tmp_path: Path, predictor) -> None:  # noqa: ANN001
    corpus = make_corpus(tmp_path / "corpus")
    paths = expand_inputs([str(tmp_path / "corpus")])
    assert len(paths) == len(corpus)  # the folder scan finds every entry, links and odd names too
    records = [r for batch in tag_paths(predictor, paths, batch_size=3, workers=2) for r in batch]
    assert [r["path"] for r in records] == [display_path(p) for p in paths]  # one each, in order
    by_path = {r["path"]: r for r in records}
    problems = []
    for name, entry in corpus.items():
        rec = by_path[display_path(entry.path)]
        got = rec.get("error", "ok")
        if got != entry.expected:
            problems.append(f"{name} ({entry.note}): got {got} {rec.get('message', '')}")
        if got == "ok":
            assert set(rec) >= {"colour", "colour_prob", "shape_probs", "band"}, name
        else:
            assert set(rec) == {"path", "error", "message"} and "\n" not in rec["message"], name
    assert not problems, "\n".join(problems)
    assert {"truncated", "bomb", "not_image", "empty"} <= {r.get("error") for r in records}


def test_workers_and_kinds_give_identical_records(tmp_path: Path, predictor) -> None:  # noqa: ANN001
    paths = [str(p) for p in write_images(tmp_path, 11)] + [str(tmp_path / "missing.png")]
    runs = {
        (kind, w): [r for b in tag_paths(predictor, paths, batch_size=4, workers=w, worker_kind=kind) for r in b]
        for kind, w in (("thread", 0), ("thread", 3), ("process", 2))
    }
    first = next(iter(runs.values()))
    assert all(r == first for r in runs.values())
    assert [len(b) for b in tag_paths(predictor, paths, batch_size=5, workers=1)] == [5, 5, 2]
    assert first[-1]["error"] == "missing"
    # Records match the model run directly on the same preprocessed pixels.
    direct = predictor(np.stack([PREP(Image.open(paths[0]).convert("RGB"))]))
    assert first[0]["colour_prob"] == pytest.approx(float(direct["colour"].max()), abs=1e-6)
    assert len({r["colour_prob"] for r in first[:-1]}) > 1  # images differ, so must predictions


def test_postprocess_hook_sees_records_and_full_probabilities(tmp_path: Path, predictor) -> None:  # noqa: ANN001
    paths = [str(p) for p in write_images(tmp_path, 3)]
    paths.insert(1, str(tmp_path / "missing.png"))
    seen = []

    def hook(records: list, probs: dict) -> list:
        seen.append((len(records), {g: p.shape for g, p in probs.items()}))
        return [{**r, "hooked": True} for r in records]

    layout = RecordLayout(SCHEMA, top_k=1)
    out = [r for b in tag_paths(predictor, paths, layout=layout, batch_size=4, workers=1, postprocess=hook) for r in b]
    assert seen == [(4, {"colour": (3, 3), "shape": (3, 7), "band": (3, 2)})]
    assert all(r["hooked"] for r in out)


def test_predict_records_on_an_all_failed_batch_does_not_call_the_model() -> None:
    class NoModel:
        schema, preprocessing = SCHEMA, PREP

        def __call__(self, batch: np.ndarray) -> dict:
            raise AssertionError("called")

    out = predict_records(NoModel(), RecordLayout(SCHEMA), [Decoded("x.jpg", error="empty", message="x.jpg: empty")])
    assert out == [{"path": "x.jpg", "error": "empty", "message": "x.jpg: empty"}]


def test_decode_resized_turns_any_exception_into_a_record(monkeypatch: pytest.MonkeyPatch) -> None:
    import attrtag.tagging as tagging

    def explode(path: str, **kw: object) -> None:
        raise struct_error("bad\nthing")

    struct_error = type("WeirdError", (Exception,), {})
    monkeypatch.setattr(tagging, "load_rgb", explode)
    d = decode_resized("x.jpg", PREP)
    assert (d.pixels, d.error) == (None, "decode") and "WeirdError" in (d.message or "")


def test_tag_worker_returns_flat_columns(tmp_path: Path, ckpt: Path) -> None:
    paths = [str(p) for p in write_images(tmp_path, 3)] + [str(tmp_path / "gone.jpg")]
    worker = TagWorker(str(ckpt), device="cpu", thresholds={"band": 0.99}, workers=2)
    cols = worker({"path": np.array(paths)})
    assert list(cols) == list(worker.layout.columns)
    assert all(len(v) == 4 for v in cols.values())
    assert cols["colour_prob"].dtype == np.float64 and np.isnan(cols["colour_prob"][3])
    assert list(cols["error"]) == [None, None, None, "missing"]
    assert json.loads(cols["uncertain"][0]) == ["band"]
    assert set(json.loads(cols["shape_probs"][0])) == set(SCHEMA["shape"].values)
    assert len(worker({"path": np.array([], dtype=str)})["path"]) == 0


# --- output files ---------------------------------------------------------------------------


def _records(layout: RecordLayout, n: int, *, start: int = 0) -> list[dict]:
    rng = np.random.default_rng(start)
    probs = {g.name: rng.dirichlet(np.ones(len(g)), size=n).astype(np.float32) for g in SCHEMA}
    recs = layout.prediction_records([f"p/{i:03d} é,\"q\".jpg" for i in range(start, start + n)], probs)
    recs[1] = layout.error_record(recs[1]["path"], "truncated", "p: file is truncated,\nends early")
    return recs


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_formats_read_back_the_same_records(tmp_path: Path, fmt: str) -> None:
    layout = RecordLayout(SCHEMA, top_k=3, thresholds={"colour": 0.5})
    recs = _records(layout, 6)
    out = tmp_path / f"tags.{fmt}"
    with open_output(out, meta_for(layout)) as w:
        assert w.done == set()
        w.write(recs[:4])
        w.write(recs[4:])
    meta, back = read_output(out)
    assert back == recs
    assert meta == meta_for(layout)
    assert back[1]["message"] == "p: file is truncated, ends early"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_torn_last_line_is_cut_off_on_resume(tmp_path: Path, fmt: str) -> None:
    layout = RecordLayout(SCHEMA)
    recs = _records(layout, 5)
    out = tmp_path / f"tags.{fmt}"
    with open_output(out, meta_for(layout)) as w:
        w.write(recs[:3])
    intact = out.stat().st_size
    with open(out, "ab") as f:  # what a kill in the middle of writing the next batch leaves
        f.write(json.dumps(recs[3]).encode()[:57] if fmt == "jsonl" else b'"p/003 \xc3\xa9,""q"".jpg",green,0.4')
    with pytest.raises(OutputError, match="incomplete"):
        read_output(out)
    with open_output(out, meta_for(layout)) as w:
        assert out.stat().st_size == intact
        assert w.done == {r["path"] for r in recs[:3]}
        w.write(recs[3:])
    assert read_output(out)[1] == recs


def test_resume_refuses_other_model_schema_or_settings(tmp_path: Path) -> None:
    layout = RecordLayout(SCHEMA)
    out = tmp_path / "tags.jsonl"
    with open_output(out, meta_for(layout)) as w:
        w.write(_records(layout, 2))
    other_schema = Schema.from_dict({"colour": ["red", "green", "blue"], "shape": ["s0", "s1"], "band": ["top"]})
    cases = [
        (meta_for(layout, sha="b" * 64), "written by model"),
        (meta_for(RecordLayout(other_schema)), "values of group 'shape' differ"),
        (meta_for(RecordLayout(SCHEMA, top_k=2)), "--top-k"),
        (meta_for(RecordLayout(SCHEMA, thresholds={"band": 0.5})), "--threshold"),
    ]
    for meta, match in cases:
        with pytest.raises(OutputMismatchError, match=match):
            open_output(out, meta)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"path": "x"}\n')
    with pytest.raises(OutputError, match="not an attrtag tag output"):
        open_output(foreign, meta_for(layout))
    with open_output(foreign, meta_for(layout), overwrite=True) as w:
        assert w.done == set()


def test_parquet_resumes_from_its_sidecar_and_writes_atomically(tmp_path: Path) -> None:
    layout = RecordLayout(SCHEMA)
    recs = _records(layout, 9)
    out = tmp_path / "tags.parquet"
    sidecar = tmp_path / "tags.parquet.partial.jsonl"
    with pytest.raises(KeyboardInterrupt):  # an interrupted run: no Parquet, the sidecar stays
        with open_output(out, meta_for(layout)) as w:
            w.write(recs[:3])
            raise KeyboardInterrupt
    assert not out.exists() and sidecar.exists()
    with open_output(out, meta_for(layout)) as w:
        assert w.done == {r["path"] for r in recs[:3]}
        w.write(recs[3:6])
    assert not sidecar.exists() and read_output(out)[1] == recs[:6]

    # Crash after os.replace but before the sidecar was deleted, then a run with new inputs:
    # the merge must not duplicate the records that are in both.
    with open_output(out, meta_for(layout)) as w:
        w.write(recs[6:8])
        w._partial.write(recs[:2])  # type: ignore[attr-defined]  # stale copies, as after that crash
    assert [r["path"] for r in read_output(out)[1]] == [r["path"] for r in recs[:8]]
    mtime = out.stat().st_mtime_ns
    with open_output(out, meta_for(layout)) as w:  # nothing new: the file is left alone
        assert len(w.done) == 8
    assert out.stat().st_mtime_ns == mtime and not sidecar.exists()


def test_tag_worker_adds_classes_from_rules(tmp_path: Path, ckpt: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("classes:\n  redtop: {colour: red, band: top}\n  bluebottom: {colour: blue, band: bottom}\n")
    paths = [str(p) for p in write_images(tmp_path, 2)]
    worker = TagWorker(str(ckpt), device="cpu", workers=0, rules=str(rules), class_top_k=2)
    cols = worker({"path": np.array(paths)})
    assert set(cols["class"]) <= {"redtop", "bluebottom"}
    assert cols["class_prob"].dtype == np.float64 and np.all(cols["class_prob"] >= 0.5)
    assert [c["class"] for c in json.loads(cols["classes"][0])][0] == cols["class"][0]
    with pytest.raises(AttrtagError, match="no embedded rules"):
        TagWorker(str(ckpt), device="cpu", workers=0, rules="embedded")
