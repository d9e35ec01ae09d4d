"""``attrtag tag``: every option's bad values are one line naming the option, exit 2, nothing written.

One table, every option of the command: the error names the flag (or the file) as the user typed
it, stderr holds that one line and nothing else (no traceback, no ONNX Runtime text: ``capfd``
sees what C++ writes too), and neither ``--out`` nor any file beside it exists afterwards.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from tests.helpers import make_checkpoint, run_cli, write_images

RULES = "classes:\n  reddish: {colour: red}\n  topper: {band: top}\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tag_input")
    write_images(d / "img", 3, size=32)
    (d / "rules.yaml").write_text(RULES)
    (d / "a_file").write_text("not a folder\n")
    return {"dir": d, "model": make_checkpoint(d / "m.pt"), "img": d / "img", "rules": d / "rules.yaml",
            "file": d / "a_file"}


# (extra arguments, what the one line must say); {out} is the default --out, {file} an existing
# file, {rules} a rules YAML, {dir} the shared folder.
CASES = [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--batch-size", "-3"], "--batch-size must be at least 1, got -3"),
    (["--workers", "-1"], "--workers must be 0 or more, got -1"),
    (["--top-k", "0"], "--top-k must be at least 1, got 0"),
    (["--top-k", "-2"], "--top-k must be at least 1, got -2"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--threads", "-1"], "--threads must be at least 1, got -1"),
    (["--max-pixels", "-5"], "--max-pixels must be at least 1, got -5"),
    (["--max-pixels", "0"], "--max-pixels must be at least 1, got 0"),
    (["--threshold", "1.5"], "--threshold 1.5: a threshold is a probability between 0 and 1"),
    (["--threshold", "-0.1"], "--threshold -0.1: a threshold is a probability"),
    (["--threshold", "nan"], "--threshold nan: a threshold is a probability"),
    (["--threshold", "inf"], "--threshold inf: a threshold is a probability"),
    (["--threshold", "band=2"], "--threshold band=2.0: a threshold is a probability"),
    (["--threshold", "high"], "--threshold high: expected P or GROUP=P"),
    (["--threshold", "=0.5"], "--threshold =0.5: expected P or GROUP=P"),
    (["--threshold", "size=0.5"], "--threshold size: the model has no group 'size'"),
    (["--threshold", "colour.red=0.5"], "--threshold colour.red: 'colour' is an exclusive group"),
    (["--class-top-k", "0", "--rules", "{rules}"], "--class-top-k must be an integer >= 1, got 0"),
    (["--class-top-k", "3"], "--class-top-k needs class rules"),
    (["--unknown-threshold", "nan", "--rules", "{rules}"], "--unknown-threshold must be a probability between 0 and 1"),
    (["--unknown-threshold", "1.5", "--rules", "{rules}"], "--unknown-threshold must be a probability"),
    (["--unknown-threshold", "-0.5", "--rules", "{rules}"], "--unknown-threshold must be a probability"),
    (["--set", "colour", "--rules", "{rules}"], "--set colour: expected GROUP=VALUE"),
    (["--set", "colour=purple", "--rules", "{rules}"], "--set"),
    (["--rules", "{dir}/missing.yaml"], "missing.yaml"),
    (["--device", "bogus"], "--device bogus: not a device"),
    (["--device", "cuda:x"], "--device cuda:x: not a device"),
    (["--device", "cuda:0 "], "--device 'cuda:0 ': not a device"),
    (["--trt-cache-dir", "{file}"], "--trt-cache-dir {file} is a file; name a folder"),
    (["--trt-cache-dir", "{file}/engines"], "--trt-cache-dir {file}/engines: {file} is a file, not a folder"),
    (["--actors", "0"], "--actors needs --engine ray"),
    (["--actors", "2"], "--actors needs --engine ray"),
    (["--gpus-per-actor", "0"], "--gpus-per-actor needs --engine ray"),
    (["--ray-address", "head:6379"], "--ray-address needs --engine ray"),
    (["--engine", "ray", "--actors", "0"], "--actors must be at least 1, got 0"),
    (["--engine", "ray", "--actors", "-2"], "--actors must be at least 1, got -2"),
    (["--engine", "ray", "--gpus-per-actor", "-1"], "--gpus-per-actor must be 0 or more, got -1.0"),
    (["--engine", "ray", "--gpus-per-actor", "nan"], "--gpus-per-actor must be 0 or more, got nan"),
    (["--engine", "ray", "--gpus-per-actor", "inf"], "--gpus-per-actor must be 0 or more, got inf"),
    (["--engine", "ray", "--worker-kind", "process"], "--worker-kind process is for the local engine"),
    (["--format", "csv", "--out", "{dir}/out/t.jsonl"],
     "--format csv contradicts --out {dir}/out/t.jsonl, a JSONL name; drop --format, or name the file .csv"),
    (["--format", "jsonl", "--out", "{dir}/out/t.parquet"], "--format jsonl contradicts --out"),
    (["--out", "{dir}/out/tags.xlsx"], "--out {dir}/out/tags.xlsx: extension '.xlsx' names no output format"),
    (["--out", "{dir}"], "--out {dir} is a folder; name a file in it"),
    (["--out", "{file}/t.jsonl"], "--out {file}/t.jsonl: {file} is a file, not a folder"),
    (["--out", "{file}/deeper/t.jsonl"], "--out {file}/deeper/t.jsonl: {file} is a file, not a folder"),
]


@pytest.mark.parametrize("extra, said", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_bad_value_is_one_line_naming_it_and_writes_nothing(
    capfd: pytest.CaptureFixture[str], world: dict[str, Path], extra: list[str], said: str
) -> None:
    d = world["dir"]
    out_dir = d / "out"
    names = {k: str(v) for k, v in world.items()}
    extra = [e.format(**names) for e in extra]
    argv = ["tag", world["model"], world["img"], *([] if "--out" in extra else ["--out", out_dir / "t.jsonl"]),
            *extra, *([] if "--workers" in extra else ["--workers", "0"]), "--no-progress"]
    before = sorted(p.name for p in d.iterdir())
    rc, stdout, err = run_cli(capfd, *argv)
    assert rc == 2 and stdout == "", (rc, stdout, err)
    assert err.startswith("attrtag: error: ") and err.count("\n") == 1, err
    assert said.format(**names) in err, err
    assert sorted(p.name for p in d.iterdir()) == before  # nothing written: no --out, no sidecar, no lock
    assert not out_dir.exists()


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(
    capfd: pytest.CaptureFixture[str], world: dict[str, Path]
) -> None:
    locked = Path("/sys/attrtag_test.jsonl")  # sysfs: read-only even for root
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _writable(Path("/sys")):
        pytest.skip("no read-only folder here")
    rc, _, err = run_cli(capfd, "tag", world["model"], world["img"], "--out", locked)
    assert rc == 2 and err.count("\n") == 1 and f"--out {locked}: cannot write in /sys" in err, err


def _writable(folder: Path) -> bool:
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def test_a_damaged_onnx_model_is_one_line_without_onnx_runtime_text(
    capfd: pytest.CaptureFixture[str], world: dict[str, Path], tmp_path: Path
) -> None:
    """ONNX Runtime logs C++ warnings straight to stderr (fd 2) while it fails to load a damaged graph."""
    onnx = pytest.importorskip("onnx")
    export = pytest.importorskip("attrtag_onnx.export")
    good = export.export_onnx(world["model"], tmp_path / "good.onnx", batch_check=2).path
    model = onnx.load(str(good))
    weight = next(i for i in model.graph.initializer if len(i.dims) == 2)  # the head: its shape no longer fits
    from onnx import numpy_helper

    import numpy as np

    rows = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array(np.zeros((rows.shape[0] + 3, rows.shape[1]), rows.dtype), weight.name))
    onnx.save(model, str(tmp_path / "model.onnx"))
    capfd.readouterr()
    rc, _, err = run_cli(capfd, "tag", tmp_path / "model.onnx", world["img"], "--out", tmp_path / "t.jsonl")
    assert rc == 2 and err.count("\n") == 1 and "model.onnx: ONNX Runtime cannot load the model" in err, err
    assert not (tmp_path / "t.jsonl").exists()


def test_an_image_over_the_size_limit_is_its_record_alone(world: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # 12000x10000 lies between Pillow's limit and twice it, where Pillow itself warns in two
    # lines on stderr; the record already says it, so the CLI prints neither.
    from tests.badfiles import _bomb_png

    (tmp_path / "big.png").write_bytes(_bomb_png(12000, 10000)[:200])
    out = tmp_path / "tags.jsonl"
    with warnings.catch_warnings(record=True) as shown:  # what Python would print on stderr
        warnings.simplefilter("always")  # as a first warning in a fresh process
        code, _, err = run_cli(capsys, "tag", world["model"], tmp_path / "big.png", "--out", out, "--no-progress")
    assert code == 0
    assert [w.category.__name__ for w in shown if "pixels" in str(w.message)] == []
    assert '"error": "bomb"' in out.read_text()
