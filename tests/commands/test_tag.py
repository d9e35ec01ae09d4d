"""``attrtag tag`` end to end: formats, thresholds, errors, kill -9 and resume, the torch-free path."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attrtag.cli import main
from attrtag.data.images import display_path
from attrtag.schema import Schema
from attrtag.tagging import read_output
from tests.helpers import SCHEMA, make_checkpoint, write_images

N_IMAGES = 300  # enough that a run with batch size 2 can be killed half-way


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints: ``a``; ``b`` (same schema, other weights); ``c`` (other schema); ``onnx`` of ``a``."""
    d = tmp_path_factory.mktemp("models")
    other = Schema.from_dict({"colour": ["red", "green", "blue"], "size": ["s", "m", "l", "xl", "xxl"]})
    out = {
        "a": make_checkpoint(d / "a.pt", seed=0),
        "b": make_checkpoint(d / "b.pt", seed=1),
        "c": make_checkpoint(d / "c.pt", other, seed=0),
    }
    try:
        from attrtag_onnx.export import export_onnx
    except ImportError:
        return out
    export_onnx(out["a"], d / "a.onnx", batch_check=2)
    out["onnx"] = d / "a.onnx"
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("imgs")
    write_images(folder / "many", N_IMAGES, size=48, fmt="jpg")
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def fast_model(models: dict[str, Path]) -> Path:
    """The ONNX file when the exporter is there (starts in a fraction of torch's time)."""
    return models.get("onnx", models["a"])


def tag(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = main(["tag", *map(str, argv), "--workers", "1"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def cli_command(model: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "attrtag", "tag", str(model), str(images), "--out", str(out),
            "--batch-size", "2", "--workers", "1", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def clean_run(models: dict[str, Path], images: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Records of one uninterrupted run of the command used in the kill test."""
    out = tmp_path_factory.mktemp("clean") / "clean.jsonl"
    done = subprocess.run(cli_command(fast_model(models), images, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"tagged {N_IMAGES}, failed 2 (empty 1, truncated 1)" in done.stdout
    # 151 batches of 2: the pace of the second half (past the start-up) is said too
    assert re.search(r"; [\d.]+ images/s \([\d.]+ in its second half\) -> ", done.stdout), done.stdout
    return read_output(out)[1]


# --- formats and options -----------------------------------------------------------------------


@pytest.mark.parquet
def test_all_formats_hold_the_same_records(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, models: dict[str, Path], images: Path
) -> None:
    got = {}
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"tags.{fmt}"
        rc, stdout, _ = tag(capsys, models["a"], images / "many" / "img000*.jpg", images / "bad.png", "--out", out,
                            "--top-k", "2", "--threshold", "0.99", "--threshold", "band=0.1")
        assert rc == 0 and "tagged 10, failed 1 (truncated 1)" in stdout
        meta, got[fmt] = read_output(out)
        assert meta.layout.top_k == 2 and dict(meta.layout.thresholds) == {"colour": 0.99, "shape": 0.99, "band": 0.1}
    assert got["jsonl"] == got["csv"] == got["parquet"]
    recs = got["jsonl"]
    assert [r["path"] for r in recs] == sorted((r["path"] for r in recs), key=os.fsencode)
    ok = [r for r in recs if "error" not in r]
    assert len(ok) == 10 and all(len(r["shape_probs"]) == 2 for r in ok)
    assert all(r["uncertain"] == ["colour", "shape"] for r in ok)  # a random model is never 99% sure
    assert recs[0]["error"] == "truncated" and recs[0]["path"] == display_path(images / "bad.png")


def test_csv_and_parquet_columns_are_flat(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, models: dict[str, Path], images: Path
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "t.parquet"
    assert tag(capsys, models["a"], images / "many" / "img0001.jpg", "--out", out)[0] == 0
    table = pq.read_table(out)
    assert table.column_names == [
        "path", "colour", "colour_prob", "colour_probs", "shape", "shape_prob", "shape_probs",
        "band", "band_prob", "band_probs", "error", "message",
    ]
    assert str(table.schema.field("colour_prob").type) == "double"
    assert set(json.loads(table.column("shape_probs")[0].as_py())) == set(SCHEMA["shape"].values)
    assert not (tmp_path / "t.parquet.partial.jsonl").exists()


def test_missing_list_entries_get_records_but_missing_inputs_and_empty_matches_fail(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, models: dict[str, Path], images: Path
) -> None:
    out = tmp_path / "t.jsonl"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{images / 'many' / 'img0001.jpg'}\ngone.jpg\n")
    rc, stdout, _ = tag(capsys, models["a"], f"@{listing}", "--out", out)
    assert rc == 0 and "failed 1 (missing 1)" in stdout
    by_path = {r["path"]: r for r in read_output(out)[1]}
    assert by_path[display_path(tmp_path / "gone.jpg")]["error"] == "missing"
    rc, _, err = tag(capsys, models["a"], tmp_path / "nothing*.jpg", "--out", tmp_path / "u.jsonl")
    assert rc == 2 and err.count("\n") == 1 and "matches no image files" in err
    # A typo on the command line stops the run before the model is even looked at (the
    # MODEL here is not a model at all, and the error is about the INPUT).
    rc, _, err = tag(capsys, listing, images / "many" / "img0001.jpg", tmp_path / "tpyo", "--out", tmp_path / "v.jsonl")
    assert rc == 2 and err.count("\n") == 1 and "tpyo': no such file or folder" in err, err
    assert not (tmp_path / "v.jsonl").exists()


def test_a_file_that_is_not_a_model_says_what_it_is(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, images: Path
) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("groups:\n  colour: [red, green]\n")
    photo = images / "many" / "img0001.jpg"
    for model, what in ((schema, "a text file starting with 'groups:'"), (photo, "a JPEG image")):
        rc, _, err = tag(capsys, model, photo, "--out", tmp_path / "o.jsonl")
        assert rc == 2 and err.count("\n") == 1, err
        assert f"not an ONNX model or an attrtag checkpoint: it is {what}" in err and "weights_only" not in err, err
    assert not (tmp_path / "o.jsonl").exists()


def test_an_output_name_without_a_format_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, models: dict[str, Path], images: Path
) -> None:
    one = images / "many" / "img0001.jpg"
    for name in ("tags.xlsx", "tags"):
        rc, _, err = tag(capsys, models["a"], one, "--out", tmp_path / name)
        why = "no extension to name its format" if name == "tags" else "extension '.xlsx' names no output format"
        assert rc == 2 and err.count("\n") == 1 and why in err and ".csv" in err, err
        assert not (tmp_path / name).exists()
    rc, _, _ = tag(capsys, models["a"], one, "--out", tmp_path / "tags.xlsx", "--format", "csv")
    assert rc == 0 and read_output(tmp_path / "tags.xlsx", fmt="csv")[1][0]["path"] == display_path(one)


def test_bad_options_fail_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, models: dict[str, Path], images: Path
) -> None:
    one = images / "many" / "img0001.jpg"
    for extra, match in (
        (["--threshold", "size=0.5"], "no group 'size'"),
        (["--threshold", "1.5"], "between 0 and 1"),
        (["--top-k", "0"], "top-k"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ):
        argv = [models["a"], one, "--out", tmp_path / "o.jsonl", *extra]
        rc, _, err = tag(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and match in err, (extra, err)


def test_resume_with_another_model_or_schema_fails_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, models: dict[str, Path], images: Path
) -> None:
    out = tmp_path / "t.jsonl"
    few = images / "many" / "img000[0-3].jpg"
    assert tag(capsys, models["a"], few, "--out", out)[0] == 0
    before = out.read_bytes()
    for model, match in ((models["b"], "written by model 'a.pt'"), (models["c"], "schema groups differ")):
        rc, _, err = tag(capsys, model, few, "--out", out)
        assert rc == 2 and err.count("\n") == 1 and match in err, err
    assert out.read_bytes() == before
    rc, stdout, _ = tag(capsys, models["a"], few, images / "many" / "img0004.jpg", "--out", out)
    assert rc == 0 and "tagged 1, failed 0, 4 already in" in stdout
    rc, _, _ = tag(capsys, models["b"], few, "--out", out, "--overwrite")
    assert rc == 0 and len(read_output(out)[1]) == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="a usable GPU: --device cuda is allowed here")
def test_device_cuda_without_a_gpu_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, models: dict[str, Path], images: Path
) -> None:
    for model in {models["a"], fast_model(models)}:
        one = images / "many" / "img0001.jpg"
        rc, _, err = tag(capsys, model, one, "--out", tmp_path / "o.jsonl", "--device", "cuda")
        assert rc == 2 and err.count("\n") == 1 and "cuda" in err.lower(), err
        assert not (tmp_path / "o.jsonl").exists()


def test_onnx_path_runs_without_torch(tmp_path: Path, models: dict[str, Path], images: Path) -> None:
    if "onnx" not in models:
        pytest.skip("attrtag_onnx.onnx_export is not available")
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
        "from attrtag.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "assert not [m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in ('torch', 'timm')]\n"
        "sys.exit(rc)\n"
    )
    out = tmp_path / "o.csv"
    argv = ["tag", str(models["onnx"]), str(images / "many" / "img000*.jpg"), "--out", str(out), "--workers", "2"]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    onnx_recs = read_output(out)[1]
    ckpt_out = tmp_path / "p.csv"
    assert main([*argv[:1], str(models["a"]), *argv[2:4], str(ckpt_out)]) == 0
    ckpt_recs = read_output(ckpt_out)[1]
    assert len(onnx_recs) == 10
    for o, c in zip(onnx_recs, ckpt_recs):
        assert o["path"] == c["path"]
        for v, p in c["shape_probs"].items():
            assert o["shape_probs"][v] == pytest.approx(p, abs=1e-4)


# --- kill -9 and resume ------------------------------------------------------------------------


def _records_on_disk(out: Path, fmt: str) -> int:
    live = out.with_name(out.name + ".partial.jsonl") if fmt == "parquet" else out
    try:
        # CSV has a column row and the Parquet journal a header line; JSONL holds records only.
        return live.read_bytes().count(b"\n") - (fmt != "jsonl")
    except FileNotFoundError:
        return 0


def _kill_mid_run(cmd: list[str], out: Path, fmt: str) -> int:
    """Start the command, ``kill -9`` it once some records are on disk; returns how many were."""
    for _attempt in range(3):  # a very fast machine might finish before we look: try again
        out.unlink(missing_ok=True)
        out.with_name(out.name + ".partial.jsonl").unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if _records_on_disk(out, fmt) >= 20:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.002)
        finally:
            proc.kill()
            proc.wait()
        if proc.returncode == -signal.SIGKILL:
            return _records_on_disk(out, fmt)
    pytest.fail("the run always finished before it could be killed")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_kill_9_then_rerun_tags_every_image_exactly_once(
    tmp_path: Path, models: dict[str, Path], images: Path, clean_run: list[dict], fmt: str
) -> None:
    out = tmp_path / f"tags.{fmt}"
    cmd = cli_command(fast_model(models), images, out)
    on_disk = _kill_mid_run(cmd, out, fmt)
    assert 20 <= on_disk < N_IMAGES + 2
    if fmt == "parquet":
        assert not out.exists()  # no half-written Parquet, ever

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "already in" in done.stdout
    records = read_output(out)[1]
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths)) == N_IMAGES + 2
    # Same records, in the same order, as the run that was never interrupted.
    assert records == clean_run

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"tagged 0, failed 0, {N_IMAGES + 2} already in" in again.stdout
    assert read_output(out)[1] == clean_run


def test_engine_ray_without_ray_installed_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, models: dict[str, Path],
    images: Path,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now fails as if it were not installed
    rc, _, err = tag(capsys, fast_model(models), images / "many" / "img0001.jpg", "--out", tmp_path / "o.jsonl",
                     "--engine", "ray")
    assert rc == 2 and err.count("\n") == 1 and 'pip install "attrtag[ray]"' in err, err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_run_without_a_terminal_logs_progress_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, models: dict[str, Path], images: Path,
    tmp_path: Path,
) -> None:
    from attrtag.commands import _progress

    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)  # a line after every batch but the last
    rc, _, err = tag(capsys, fast_model(models), images, "--out", tmp_path / "t.jsonl", "--batch-size", "100")
    assert rc == 0
    progress = [line for line in err.splitlines() if line.startswith("tagging: ")]
    assert [line.split(" img (")[0] for line in progress] == ["tagging: 100 of 302", "tagging: 200 of 302",
                                                               "tagging: 300 of 302"]
    assert all(" img/s, " in line and " left" in line for line in progress)
    assert "failed 2" in progress[-1]  # bad.png and empty.jpg sort before many/
    rc, _, err = tag(capsys, fast_model(models), images, "--out", tmp_path / "u.jsonl", "--no-progress")
    assert rc == 0 and "tagging: " not in err

