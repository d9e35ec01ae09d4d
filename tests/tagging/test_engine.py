"""The tagging engine: one record per input, workers, hooks, the Ray-shaped TagWorker."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attrtag.data.batches import Decoded, decode_one
from attrtag.data.images import display_path
from attrtag.errors import AttrtagError
from attrtag.runtime import open_predictor
from attrtag.schema import Schema
from attrtag.tagging import RecordLayout, TagWorker, expand_inputs, predict_records, tag_paths
from attrtag.zeroshot.scoring import class_scoring
from tests.badfiles import make_corpus
from tests.helpers import PREP, SCHEMA, make_checkpoint, write_images


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def predictor(ckpt: Path):  # noqa: ANN201 - attrtag.predictor.Predictor
    return open_predictor(ckpt, device="cpu", threads=1)


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


def test_decode_one_turns_any_exception_into_a_record(monkeypatch: pytest.MonkeyPatch) -> None:
    import attrtag.data.preprocess as preprocess

    def explode(path: str, **kw: object) -> None:
        raise struct_error("bad\nthing")

    struct_error = type("WeirdError", (Exception,), {})
    monkeypatch.setattr(preprocess, "load_rgb", explode)
    d = decode_one("x.jpg", PREP)
    assert (d.pixels, d.error) == (None, "decode") and "WeirdError" in (d.message or "")


def test_tag_worker_returns_each_record_once_as_json_text(tmp_path: Path, ckpt: Path) -> None:
    paths = [str(p) for p in write_images(tmp_path, 3)] + [str(tmp_path / "gone.jpg")]
    layout = RecordLayout(SCHEMA, thresholds={"band": 0.99})
    worker = TagWorker(str(ckpt), layout, device="cpu", workers=2)
    out = worker({"path": np.array(paths)})
    assert list(out) == ["record"] and out["record"].dtype == object
    records = [json.loads(t) for t in out["record"]]
    local = [r for b in tag_paths(open_predictor(ckpt, device="cpu"), paths, layout=layout, workers=0) for r in b]
    assert records == local  # what the local engine makes, record for record
    assert [r.get("error") for r in records] == [None, None, None, "missing"]
    assert records[0]["uncertain"] == ["band"] and set(records[0]["shape_probs"]) == set(SCHEMA["shape"].values)
    assert len(worker({"path": np.array([], dtype=str)})["record"]) == 0


def test_tag_worker_adds_the_class_fields_of_its_layout(tmp_path: Path, ckpt: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("classes:\n  redtop: {colour: red, band: top}\n  bluebottom: {colour: blue, band: bottom}\n")
    paths = [str(p) for p in write_images(tmp_path, 2)]
    card = open_predictor(ckpt, device="cpu").card
    layout = RecordLayout(SCHEMA, classes=class_scoring(card, str(rules), top_k=2))
    worker = TagWorker(str(ckpt), layout, device="cpu", workers=0)
    records = [json.loads(t) for t in worker({"path": np.array(paths)})["record"]]
    assert {r["class"] for r in records} <= {"redtop", "bluebottom"} and all(r["class_prob"] >= 0.5 for r in records)
    assert [c["class"] for c in records[0]["classes"]][0] == records[0]["class"]
    with pytest.raises(AttrtagError, match="no embedded rules"):
        class_scoring(card, True, name="model.pt")
    other = Schema.from_dict({"colour": ["red", "green", "blue"]})
    with pytest.raises(AttrtagError, match="not the model this run was set up for"):
        TagWorker(str(ckpt), RecordLayout(other), device="cpu", workers=0)
