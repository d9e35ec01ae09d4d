"""Every option of evaluate, export, calibrate, report, convert and demo, fed a value that cannot
work: one ``attrtag: error:`` line naming the option (or file), exit status 2, no traceback, and
nothing written or replaced. (train, tag, classify and rules have their own tables.)
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Callable

import pytest

from attrtag.cli import main
from tests.helpers import cli_files, run_cli

# A folder no one may write in, root included (a real write is tried, not os.access).
UNWRITABLE = Path("/proc/attrtag-test")
needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc as an unwritable folder")


@pytest.fixture(scope="module")
def f(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    f = cli_files(d, rules="classes:\n  A: {colour: red}\n  B: {colour: blue}\n")
    (d / "a_file.txt").write_text("not a folder\n")
    (d / "report.html").write_text("an earlier report\n")
    (d / "existing.onnx").write_bytes(f["onnx"].read_bytes())
    return {**f, "file": d / "a_file.txt", "existing": d / "existing.onnx", "report": d / "report.html",
            "new": d / "new"}


Argv = Callable[[dict[str, Path]], list[object]]


def _eval(*extra: object) -> Argv:
    return lambda f: ["evaluate", "--checkpoint", f["ckpt"], "--manifest", f["manifest"], "--workers", "0",
                      "--device", "cpu", *[f.get(x, x) if isinstance(x, str) else x for x in extra]]


def _export(*extra: object) -> Argv:
    return lambda f: ["export", "--checkpoint", f["ckpt"], *[f.get(x, x) if isinstance(x, str) else x for x in extra]]


def _calibrate(*extra: object) -> Argv:
    return lambda f: ["calibrate", f["onnx"], "--manifest", f["manifest"], "--rules", f["rules"], "--workers", "0",
                      "--device", "cpu", *[f.get(x, x) if isinstance(x, str) else x for x in extra]]


def _report(*extra: object) -> Argv:
    return lambda f: ["report", f["tags"], "--no-progress", *[f.get(x, x) if isinstance(x, str) else x for x in extra]]


def _convert(*extra: object) -> Argv:
    return lambda f: ["convert", f["tags"], *[f.get(x, x) if isinstance(x, str) else x for x in extra]]


def _demo(*extra: object) -> Argv:
    return lambda f: ["demo", "--out", f["new"], *[f.get(x, x) if isinstance(x, str) else x for x in extra]]


NEW_ONNX = Path("new") / "m.onnx"
# (id, argv, words the error line must hold)
CASES: list[tuple[str, Argv, str]] = [
    ("evaluate-batch-size-0", _eval("--batch-size", "0", "--out", "new"), "--batch-size must be at least 1, got 0"),
    ("evaluate-workers", _eval("--workers", "-1", "--out", "new"), "--workers must be 0 or more, got -1"),
    ("evaluate-out-file", _eval("--out", "file"), "is a file; name a folder"),
    ("evaluate-out-under-file", lambda f: _eval("--out", f["file"] / "r")(f), "is a file, not a folder"),
    ("evaluate-device", _eval("--device", "gpu", "--out", "new"), "--device gpu: not a device"),
    ("evaluate-manifest", lambda f: _eval()(f)[:3] + ["--manifest", f["dir"] / "nope.csv", "--out", f["new"]],
     "nope.csv"),
    ("evaluate-class-column", _eval("--rules", "rules", "--class-column", "kind", "--out", "new"),
     "no 'kind' column"),
    ("export-opset-low", _export("--out", NEW_ONNX, "--opset", "5"), "--opset 5 is not one the exporter writes"),
    ("export-opset-high", _export("--out", NEW_ONNX, "--opset", "99"), "--opset 99 is not one the exporter writes"),
    ("export-out-folder", _export("--out", "dir"), "--out"),
    ("export-out-under-file", lambda f: _export("--out", f["file"] / "m.onnx")(f), "is a file, not a folder"),
    ("export-out-exists", _export("--out", "existing"), "exists; pass --overwrite to replace it"),
    ("export-batch-check", _export("--out", NEW_ONNX, "--batch-check", "0"), "--batch-check must be at least 1"),
    ("export-calib-images", _export("--out", NEW_ONNX, "--int8", "--calib-manifest", "manifest", "--calib-images",
                                    "0"), "--calib-images must be at least 1, got 0"),
    ("export-eval-images", _export("--out", NEW_ONNX, "--int8", "--calib-manifest", "manifest", "--eval-images",
                                   "-1"), "--eval-images must be at least 1, got -1"),
    ("export-calib-without-int8", _export("--out", NEW_ONNX, "--calib-images", "4"), "only apply with --int8"),
    ("export-rules-missing", lambda f: _export("--out", NEW_ONNX, "--rules", f["dir"] / "nope.yaml")(f), "nope.yaml"),
    ("export-checkpoint-missing", lambda f: ["export", "--checkpoint", f["dir"] / "nope.pt", "--out", f["dir"] / "x.onnx"],
     "nope.pt"),
    ("calibrate-out-exists", _calibrate("--out", "existing"), "exists; pass --overwrite to replace it"),
    ("calibrate-out-folder", _calibrate("--out", "dir"), "--out"),
    ("calibrate-out-under-file", lambda f: _calibrate("--out", f["file"] / "c.onnx")(f), "is a file, not a folder"),
    ("calibrate-batch-size", _calibrate("--out", NEW_ONNX, "--batch-size", "0"), "--batch-size must be at least 1"),
    ("calibrate-workers", _calibrate("--out", NEW_ONNX, "--workers", "-1"), "--workers must be 0 or more"),
    ("calibrate-suffix", _calibrate("--out", Path("new") / "c.pt"), "must be another file with model.onnx's suffix"),
    ("calibrate-temperature-and-thresholds", _calibrate("--out", NEW_ONNX, "--temperature", "--thresholds"),
     "--thresholds and --temperature exclude each other"),
    ("calibrate-temperature-out-exists", _calibrate("--out", "existing", "--temperature"),
     "exists; pass --overwrite to replace it"),
    ("calibrate-temperature-batch-size", _calibrate("--out", NEW_ONNX, "--temperature", "--batch-size", "0"),
     "--batch-size must be at least 1"),
    ("calibrate-temperature-suffix", _calibrate("--out", Path("new") / "c.pt", "--temperature"),
     "must be another file with model.onnx's suffix"),
    ("calibrate-temperature-manifest", lambda f: ["calibrate", f["onnx"], "--manifest", f["dir"] / "nope.csv",
                                                  "--temperature", "--out", f["new"] / "c.onnx"], "nope.csv"),
    ("report-out-exists", _report("--out", "report"), "exists; pass --overwrite to replace it"),
    ("report-out-folder", _report("--out", "dir", "--overwrite"), "is a folder; name a file in it"),
    ("report-out-under-file", lambda f: _report("--out", f["file"] / "r.html")(f), "is a file, not a folder"),
    ("report-thumb-size", _report("--out", Path("new") / "r.html", "--thumb-size", "-1"), "--thumb-size -1"),
    ("report-workers", _report("--out", Path("new") / "r.html", "--workers", "-1"), "--workers must be 0 or more"),
    ("report-threshold", _report("--out", Path("new") / "r.html", "--threshold", "2"), "--threshold"),
    ("report-root", lambda f: _report("--out", f["new"] / "r.html", "--root", f["dir"] / "nope")(f),
     "--root"),
    ("convert-fiftyone-out-file", _convert("--to", "fiftyone", "--out", "file"), "--out"),
    ("convert-labelstudio-under-file", lambda f: _convert("--to", "labelstudio", "--out", f["file"] / "x.json")(f),
     "is a file, not a folder"),
    ("convert-from-labelstudio-no-schema", _convert("--from", "labelstudio", "--out", Path("new") / "m.csv"),
     "--from labelstudio needs --schema S"),
    ("convert-image-url-for-fiftyone", _convert("--to", "fiftyone", "--out", "new", "--image-url", "x"),
     "--image-url are for --to labelstudio"),
    ("demo-epochs", _demo("--epochs", "0"), "epochs"),
    ("demo-creatures", _demo("--creatures", "10"), "--creatures must be at least"),
    ("demo-logos", _demo("--logos", "0"), "--logos must be at least 1"),
    ("demo-unseen", _demo("--unseen", "-1"), "--unseen must be at least 1"),
    ("demo-image-size", _demo("--image-size", "0"), "--image-size must be at least 32"),
    ("demo-drop-labels", _demo("--drop-labels", "2"), "--drop-labels must be a share in [0, 1)"),
    ("demo-lr", _demo("--lr", "-1"), "lr"),
    ("demo-batch-size", _demo("--batch-size", "0"), "batch"),
    ("demo-workers", _demo("--workers", "-1"), "workers"),
    ("demo-out-file", lambda f: ["demo", "--out", f["file"]], "is a file; name a folder"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_value_is_one_line_exit_2_and_nothing_written(
    f: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: Argv, words: str,
) -> None:
    f = {**f, "dir": f["dir"] / "imgs"}  # "dir" in a table is a folder that exists
    root = f["new"].parent
    before = _snapshot(root)
    code, _, err = run_cli(capsys, *argv(f))
    assert code == 2 and err.count("\n") == 1 and err.startswith("attrtag: error: "), err
    assert words in err and "Traceback" not in err, err
    assert _snapshot(root) == before and not f["new"].exists()


@needs_proc
@pytest.mark.parametrize("argv", [
    _eval("--out", UNWRITABLE / "r"), _export("--out", UNWRITABLE / "m.onnx"),
    _calibrate("--out", UNWRITABLE / "c.onnx"), _report("--out", UNWRITABLE / "r.html"),
    _convert("--to", "fiftyone", "--out", UNWRITABLE / "fo"), lambda f: ["demo", "--out", UNWRITABLE / "demo"],
], ids=["evaluate", "export", "calibrate", "report", "convert", "demo"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(
    f: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: Argv,
) -> None:
    code, out, err = run_cli(capsys, *argv(f))
    assert code == 2 and err.count("\n") == 1 and f"--out {UNWRITABLE}" in err and "cannot write in /proc" in err, err
    assert out == ""  # refused before the work (nothing evaluated, exported or generated)


def test_an_os_error_mid_run_names_its_file_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, f: dict[str, Path],
) -> None:
    # What no check can foresee (a disk that fills mid-write) still is one line, not a traceback.
    import attrtag.api.models as models

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(f["dir"] / "m.onnx"))

    monkeypatch.setattr(models, "_check_export", disk_full)
    code, _, err = run_cli(capsys, "export", "--checkpoint", f["ckpt"], "--out", f["dir"] / "m.onnx")
    assert code == 2 and err == f"attrtag: error: {f['dir'] / 'm.onnx'}: No space left on device\n"
    monkeypatch.setattr(models, "_check_export", lambda *a, **k: (_ for _ in ()).throw(OSError("no file")))
    with pytest.raises(OSError):  # an OSError that names no file is a bug: it keeps its traceback
        main(["export", "--checkpoint", str(f["ckpt"]), "--out", str(f["dir"] / "m.onnx")])


def test_with_overwrite_export_replaces_its_output(f: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    target = f["dir"] / "replace.onnx"
    target.write_bytes(b"old")
    assert run_cli(capsys, "export", "--checkpoint", f["ckpt"], "--out", target)[0] == 2
    assert target.read_bytes() == b"old"
    assert run_cli(capsys, "export", "--checkpoint", f["ckpt"], "--out", target, "--overwrite")[0] == 0
    assert target.read_bytes()[:3] != b"old" and target.stat().st_size > 1000  # a whole model now
