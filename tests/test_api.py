"""The public Python API: the same records as the CLI, in-memory images, classes, train and evaluate."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import attrtag
from attrtag.cli import main
from attrtag.errors import AttrtagError
from attrtag.tagging import read_output
from attrtag_onnx.export import export_onnx
from tests.helpers import make_checkpoint, write_images

RULES_YAML = "classes:\n  redtop: {colour: red, band: top}\n  bluebottom: {colour: blue, band: bottom}\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("api")
    ckpt = make_checkpoint(d / "model.pt")
    onnx_path = export_onnx(ckpt, d / "model.onnx", exporter="torchscript").path
    (d / "rules.yaml").write_text(RULES_YAML)
    write_images(d / "imgs", 6)
    (d / "imgs" / "broken.png").write_bytes(b"not a png")
    return {"dir": d, "ckpt": ckpt, "onnx": onnx_path, "rules": d / "rules.yaml", "images": d / "imgs"}


@pytest.mark.parametrize("model", ["onnx", "ckpt"])
def test_tag_gives_the_records_the_cli_writes(files: dict[str, Path], model: str, tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    argv = ["tag", str(files[model]), str(files["images"]), "--out", str(out), "--rules", str(files["rules"]),
            "--threshold", "0.6", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    tagger = attrtag.load(files[model], device="cpu", rules=files["rules"], thresholds={g: 0.6 for g in
                                                                                       ("colour", "shape", "band")})
    records = tagger.tag(str(files["images"]))
    assert records == read_output(out)[1]
    assert len(records) == 7 and records[0]["path"].endswith("broken.png") and records[0]["error"] == "not_image"
    assert {"class", "classes", "uncertain"} <= set(records[1])


def test_in_memory_images_match_their_files(files: dict[str, Path]) -> None:
    tagger = attrtag.load(files["onnx"], device="cpu")
    paths = sorted(p for p in files["images"].glob("img*.png"))
    from_files = tagger.tag([str(p) for p in paths])
    pil = [Image.open(p) for p in paths]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    for in_memory in (tagger.tag(pil), tagger.tag(arrays)):
        assert [r["path"] for r in in_memory] == [f"image{i}" for i in range(len(paths))]
        assert [{k: v for k, v in r.items() if k != "path"} for r in in_memory] == \
               [{k: v for k, v in r.items() if k != "path"} for r in from_files]
    probs = tagger.predict(pil)
    assert {g: p.shape for g, p in probs.items()} == {"colour": (6, 3), "shape": (6, 7), "band": (6, 2)}
    # Paths keep the caller's order and repeats too: rows are unnamed (tag() names and sorts its records).
    backwards = [str(p) for p in paths[::-1]] + [str(paths[0])]
    by_path = tagger.predict(backwards)
    for g in probs:
        np.testing.assert_allclose(by_path[g], np.concatenate([probs[g][::-1], probs[g][:1]]), atol=1e-5)
    folder_first = tagger.predict([str(paths[0]), str(files["images"] / "img*.png")])  # a glob expands in place
    assert len(folder_first["colour"]) == 7
    np.testing.assert_allclose(folder_first["colour"], np.concatenate([probs["colour"][:1], probs["colour"]]),
                               atol=1e-5)
    assert tagger.tag(pil[0])[0]["colour"] == from_files[0]["colour"]  # a single image
    with pytest.raises(AttrtagError, match="uint8 arrays"):
        tagger.tag(np.zeros((4, 4, 3), np.float32))
    for not_paths in (pil[0], pil, arrays[0]):  # tag_to and stream name files in their records
        with pytest.raises(AttrtagError, match=r"inputs are paths .*got a (PIL.*Image\w*|numpy.ndarray); tag\(\)"):
            tagger.tag_to(files["dir"] / "never.jsonl", not_paths)
    assert not (files["dir"] / "never.jsonl").exists()
    with pytest.raises(AttrtagError, match="broken.png"):
        tagger.predict(str(files["images"] / "broken.png"))


def test_a_pil_photo_is_turned_upright_as_its_file_is(files: dict[str, Path], tmp_path: Path) -> None:
    # A phone photo stored sideways (EXIF orientation 6): the file path and the same file opened
    # with PIL must give the same probabilities, and the caller's image must stay as it was.
    pixels = np.zeros((48, 96, 3), np.uint8)
    pixels[:, :48] = (200, 30, 30)
    pixels[:24, 48:] = (30, 30, 200)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    tagger = attrtag.load(files["onnx"], device="cpu")
    opened = Image.open(path)
    from_file, from_pil = tagger.predict(str(path)), tagger.predict(opened)
    as_stored = tagger.predict(np.asarray(Image.open(path).convert("RGB")))  # the pixels, not turned
    for g in from_file:
        np.testing.assert_allclose(from_pil[g], from_file[g], atol=1e-6)
    assert any(np.abs(as_stored[g] - from_file[g]).max() > 1e-3 for g in from_file)  # turning it matters here
    assert opened.size == (96, 48) and opened.getexif()[0x0112] == 6


def test_classify_scores_rules_with_the_compiled_scorer(files: dict[str, Path]) -> None:
    tagger = attrtag.load(files["onnx"], device="cpu", rules=files["rules"])
    probs = tagger.predict(str(files["images"] / "img0000.png"))
    result = tagger.classify(probs)
    records = tagger.tag(str(files["images"] / "img0000.png"))
    assert result.class_names == ("redtop", "bluebottom")
    assert result.predicted[0] == records[0]["class"]
    other = tagger.classify(probs, rules={"classes": {"only": {"colour": "green"}}})
    assert other.class_names == ("only",)
    with pytest.raises(AttrtagError, match="no class rules"):
        attrtag.load(files["onnx"], device="cpu").classify(probs)


def test_train_and_evaluate_from_python(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    schema, manifest = tiny_data
    result = attrtag.train(schema, manifest, tmp_path / "run", backbone="test_resnet", image_size=32, epochs=1,
                           batch_size=16, workers=0)
    assert result.best.is_file() and len(result.history) == 1
    ev = attrtag.evaluate(result.best, manifest, split="val", workers=0, device="cpu")
    assert [m.group for m in ev.metrics] == ["colour", "shape", "band"]
    assert ev.metrics[0].labelled == sum(1 for s in ev.predictions.samples if s.labels[0] >= 0) > 0


def test_import_attrtag_is_light() -> None:
    code = "import sys, attrtag; attrtag.load; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_tag_to_is_the_file_job_attrtag_tag_runs(files: dict[str, Path], tmp_path: Path) -> None:
    by_cli, by_api = tmp_path / "cli.jsonl", tmp_path / "api.jsonl"
    assert main(["tag", str(files["onnx"]), str(files["images"]), "--out", str(by_cli), "--rules",
                 str(files["rules"]), "--no-progress", "--device", "cpu"]) == 0
    seen: list[tuple[int, int, int]] = []
    with attrtag.load(files["onnx"], device="cpu", rules=files["rules"], batch_size=3) as tagger:
        summary = tagger.tag_to(by_api, files["images"], progress=lambda *a: seen.append(a))
        assert (summary.tagged, summary.failed, summary.skipped, summary.inputs) == (6, 1, 0, 7)
        assert summary.counts == {"ok": 6, "not_image": 1} and summary.rate > 0
        assert seen[-1] == (7, 7, 1) and [s[0] for s in seen] == [3, 6, 7]
        assert summary.second_half == (0, 0.0) and summary.steady_rate is None  # 3 batches: too few for a pace
        again = tagger.tag_to(by_api, files["images"])  # resumes: nothing left to do
        assert (again.skipped, sum(again.counts.values())) == (7, 0) and again.steady_rate is None
    cli_meta, cli_records = read_output(by_cli)
    api_meta, api_records = read_output(by_api)
    assert api_records == cli_records and api_meta == cli_meta


def test_stream_yields_records_as_they_come(files: dict[str, Path]) -> None:
    tagger = attrtag.load(files["onnx"], device="cpu", batch_size=2, workers=0)
    calls: list[int] = []

    class Counting:  # the model, counting the images of each call
        def __getattr__(self, name: str) -> object:
            return getattr(model, name)

        def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            calls.append(len(batch))
            return model(batch)

    model, tagger.engine.predictor = tagger.engine.predictor, Counting()
    stream = tagger.stream(files["images"])
    first = next(stream)
    assert first["path"].endswith("broken.png") and calls == [1]  # one batch run, not the folder
    rest = list(stream)
    assert len(rest) == 6 and sum(calls) == 6 and [first, *rest] == tagger.tag(str(files["images"]))


def test_a_tagger_says_where_it_runs_as_a_type(files: dict[str, Path]) -> None:
    from attrtag.runtime import Placement

    assert attrtag.load(files["onnx"], device="cpu").placement == Placement("onnxruntime", "cpu")
    assert attrtag.load(files["ckpt"], device="cpu").placement == Placement("torch", "cpu")


def test_evaluate_takes_an_onnx_file_and_agrees_with_its_checkpoint(tiny_data: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    _, manifest = tiny_data
    ckpt = make_checkpoint(tmp_path / "model.pt")
    report = attrtag.export(ckpt, tmp_path / "model.onnx")
    assert report.path.is_file() and report.precision == "fp32"
    by_pt = attrtag.evaluate(ckpt, manifest, split="val", workers=0, device="cpu")
    by_onnx = attrtag.evaluate(report.path, manifest, split="val", workers=0, device="cpu", out=tmp_path / "eval")
    assert [(m.group, m.labelled, m.accuracy) for m in by_onnx.metrics] == \
           [(m.group, m.labelled, m.accuracy) for m in by_pt.metrics]
    groups = {"colour", "shape", "band"}
    assert by_onnx.report["json"].is_file() and set(by_onnx.report) == {"json", *groups, *(f"reliability/{g}" for g in groups)}


@pytest.mark.parametrize("options, error", [
    ({"rules": {"classes": {"x": {"no_such_group": "v"}}}}, "no_such_group"),
    ({"class_top_k": 0}, "class_top_k must be an integer >= 1, got 0"),
    ({"overrides": {"colour": "purple"}}, "purple"),
])
def test_bad_rules_and_class_options_fail_before_an_onnx_session_opens(files, monkeypatch, options, error) -> None:
    # An .onnx model's card is its metadata: a TensorRT engine build (minutes) is not spent first.
    opened = []
    monkeypatch.setattr("attrtag.api.tagger.open_with_thread_plan", lambda *a, **k: opened.append(a))
    with pytest.raises(AttrtagError, match=error):
        attrtag.load(files["onnx"], device="cpu", **{"rules": files["rules"], **options})
    assert opened == []


def test_the_pace_is_the_second_half_of_a_run_of_six_batches_or_more() -> None:
    from attrtag.tagging.job import second_half

    # a slow first batch (start-up), then 2 prefetched batches consumed fast, then the steady pace
    marks = [(10, 5.0), (20, 5.1), (30, 5.2), (40, 6.2), (50, 7.2), (60, 8.2), (70, 9.2), (80, 10.2)]
    assert second_half(marks) == (40, pytest.approx(4.0))  # batches 5-8: 10 images/s, the steady pace
    assert second_half(marks[:5]) == (0, 0.0)  # 5 batches: the prefetched ones would still count
    assert second_half([(3, 1.0), (6, 1.5), (9, 2.0), (12, 2.5), (15, 3.0), (16, 3.1)]) == (7, pytest.approx(1.1))  # from 9 of 16
