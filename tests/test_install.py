"""The base install is what tagging with an ``.onnx`` model needs: no torch, and it tags a folder.

A fresh virtual environment gets ``pip install <repo>`` without extras (the registry must be
reachable, as for ``.ci/run`` itself). In it torch, timm, onnx and matplotlib cannot be imported,
yet ``attrtag tag`` writes the records the full install writes, ``classify``, ``report``,
``convert`` and ``evaluate`` of an ``.onnx`` model work, and the commands that need the
``train`` extra say so in one line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import attrtag
from attrtag_onnx.export import export_onnx
from tests.helpers import make_checkpoint, make_dataset, write_images

ROOT = Path(__file__).resolve().parents[1]
RULES = "classes:\n  redtop: {colour: red, band: top}\n  bluebottom: {colour: blue, band: bottom}\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("base-install")
    venv = d / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          str(ROOT)], capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    onnx = export_onnx(make_checkpoint(d / "model.pt"), d / "model.onnx", exporter="torchscript").path
    write_images(d / "imgs", 5)
    (d / "rules.yaml").write_text(RULES)
    _, manifest = make_dataset(d / "data", 20)
    return {"dir": d, "bin": venv / "bin", "onnx": onnx, "images": d / "imgs", "rules": d / "rules.yaml",
            "manifest": manifest}


def run(base: dict[str, Path], *argv: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(base["bin"] / argv[0]), *map(str, argv[1:])], capture_output=True, text=True,
                          timeout=300, cwd=base["dir"], env=env)


def test_the_base_install_has_no_torch(base: dict[str, Path]) -> None:
    code = "import importlib.util as u, json; print(json.dumps([m for m in ('torch', 'timm', 'torchvision', " \
           "'albumentations', 'onnx', 'matplotlib', 'onnxruntime', 'attrtag') if u.find_spec(m)]))"
    proc = run(base, "python", "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["onnxruntime", "attrtag"]


def test_it_tags_a_folder_as_the_full_install_does(base: dict[str, Path]) -> None:
    out = base["dir"] / "tags.jsonl"
    proc = run(base, "attrtag", "tag", base["onnx"], base["images"], "--out", out, "--rules", base["rules"],
               "--no-progress", "--device", "cpu")
    assert proc.returncode == 0 and "tagged 5, failed 0" in proc.stdout, proc.stderr
    here = attrtag.load(base["onnx"], device="cpu", rules=base["rules"]).tag(str(base["images"]))
    there = attrtag.read_output(out)[1]
    assert [{k: v for k, v in r.items() if k != "path"} for r in there] == \
           [{k: v for k, v in r.items() if k != "path"} for r in here]
    assert {"class", "classes"} <= set(there[0])


def test_classify_report_convert_and_evaluate_work_there(base: dict[str, Path]) -> None:
    d, tags = base["dir"], base["dir"] / "tags2.jsonl"
    assert run(base, "attrtag", "tag", base["onnx"], base["images"], "--out", tags, "--no-progress").returncode == 0
    steps = [
        ("classify", tags, "--rules", base["rules"], "--out", d / "classes.jsonl"),
        ("report", tags, "--out", d / "report.html", "--no-progress"),
        ("convert", tags, "--to", "labelstudio", "--out", d / "ls"),
        ("evaluate", "--model", base["onnx"], "--manifest", base["manifest"], "--out", d / "eval", "--workers", "0"),
    ]
    for argv in steps:
        proc = run(base, "attrtag", *argv)
        assert proc.returncode == 0, (argv, proc.stderr)
    assert (d / "classes.jsonl").is_file() and (d / "report.html").is_file() and (d / "ls" / "tasks.json").is_file()
    assert json.loads((d / "eval" / "metrics.json").read_text())["groups"][0]["group"] == "colour"
    assert "matplotlib is not installed (pip install 'attrtag[train]')" in proc.stderr


@pytest.mark.parametrize("argv, missing", [
    (["train", "--schema", "s.yaml", "--manifest", "m.csv", "--out", "run"], "torch"),
    (["export", "--checkpoint", "model.pt", "--out", "m2.onnx"], "torch"),
    (["demo", "--out", "demo"], "torch"),
])
def test_commands_that_need_the_train_extra_say_so_in_one_line(base: dict[str, Path], argv: list[str],
                                                               missing: str) -> None:
    proc = run(base, "attrtag", *argv)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"needs the 'train' extra ({missing} is not installed): pip install 'attrtag[train]'" in proc.stderr
