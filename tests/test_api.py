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
    assert tagger.tag(pil[0])[0]["colour"] == from_files[0]["colour"]  # a single image
    with pytest.raises(AttrtagError, match="uint8 arrays"):
        tagger.tag(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(AttrtagError, match="broken.png"):
        tagger.predict(str(files["images"] / "broken.png"))


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
