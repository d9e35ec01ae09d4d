"""scripts/gpu_check.sh --cpu-dry-run: every step of the GPU check runs on the CPU, so it cannot rot.

On a GPU machine the same steps run at full size (resnetv2_50, 12-megapixel photos, CUDA and
TensorRT); here they run small on the CPU provider, TensorRT skips and says why, and the
driver's own rules (a limit per step, the run's budget, steps that need an earlier check) are
checked on short runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "scripts"))


def gpu_check(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """Run the script without installing; (the process, {check: its last result line})."""
    done = subprocess.run(["bash", str(SCRIPT), str(out), "--no-install", *args], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    results = out / "results.jsonl"
    lines = [json.loads(x) for x in results.read_text().splitlines()] if results.is_file() else []
    return done, {(("step " if r.get("kind") == "step" else "") + r["check"]): r for r in lines}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("gpu-check")
    done, results = gpu_check(out, "--cpu-dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    return out, results


def test_every_step_runs_and_only_tensorrt_skips_on_the_cpu(dry_run) -> None:
    from gpu_check import plan

    _, results = dry_run
    steps = {s.name: results[f"step {s.name}"]["status"] for s in plan()}
    trt_tags = {n for n in steps if n.startswith("tag-") and "tensorrt" in n}
    assert {n for n, status in steps.items() if status != "ok"} == trt_tags
    assert {steps[n] for n in trt_tags} == {"skip"}
    for precision in ("fp32", "fp16"):
        build = results[f"tensorrt build {precision}"]
        assert build["status"] == "skip" and "TensorRT is not usable here" in build["message"]


def test_checks_record_what_ran_where(dry_run) -> None:
    _, results = dry_run
    checks = {k: r for k, r in results.items() if not k.startswith("step ")}
    failed = {k: r.get("message") for k, r in checks.items() if r["status"] not in ("ok", "skip")}
    assert failed == {}
    for images in ("photos", "small"):
        for workers in (1, 2):
            assert checks[f"decode {images} x{workers}"]["images_per_s"] > 0
        for precision in ("fp32", "fp16"):
            tag = checks[f"tag {images} cpu {precision}"]
            assert tag["provider"] == "CPUExecutionProvider" and tag["failed"] == 0 and tag["images_per_s"] > 0
    assert checks["data"]["photo_mb"] > 0.5  # 4032x3024 JPEGs with grain, not blank canvases
    assert checks["tag checkpoint cpu"]["provider"] == "cpu"
    assert checks["train"]["steps"] == checks["torchrun"]["steps"] == 6  # 2 epochs of 3 steps
    for name in ("onnxruntime fp32", "onnxruntime fp16", "torch predictor"):
        assert checks[f"parity {name}"]["max_abs_diff"] <= checks[f"parity {name}"]["atol"]
    tests = {k: r for k, r in checks.items() if k.startswith("test ")}
    assert len(tests) >= 10 and {r["status"] for r in tests.values()} == {"skip"}  # no GPU here
    assert checks["gpu-tests"]["skip"] == len(tests) and checks["gpu-tests"]["fail"] == 0


def test_the_summary_has_the_tagging_table_beside_the_decode_ceiling(dry_run) -> None:
    out, results = dry_run
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# attrtag GPU check (CPU dry run)")
    for heading in ("## Tagging vs the decode ceiling", "## Checks", "## Steps"):
        assert heading in summary
    ceiling = results["decode photos x2"]["images_per_s"]
    rate = results["tag photos cpu fp32"]["images_per_s"]
    row = next(x for x in summary.splitlines() if x.startswith("| photos | cpu | fp32 |"))
    assert f"| {100 * rate / ceiling:.0f}% |" in row and "(2 workers)" in row  # one batch: the whole rate
    # 32 small images in 8 batches of 4: the share is of the second half's pace (1 batch of photos: the whole)
    small, ceiling = results["tag small cpu fp32"], results["decode small x2"]["images_per_s"]
    assert small["steady_images_per_s"] > 0 and results["tag photos cpu fp32"]["steady_images_per_s"] is None
    row = next(x for x in summary.splitlines() if x.startswith("| small | cpu | fp32 |"))
    assert f"| {small['steady_images_per_s']:.0f} |" in row
    assert f"| {100 * small['steady_images_per_s'] / ceiling:.0f}% |" in row
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl", "steps.log", "summary.md"]


def test_a_step_past_its_limit_is_stopped_and_says_so(tmp_path) -> None:
    done, results = gpu_check(tmp_path, "--cpu-dry-run", "--only", "data,decode", "--limit", "data=0.5")
    assert done.returncode == 0
    data, decode = results["step data"], results["step decode"]
    assert data["status"] == "timeout" and data["message"] == "stopped at its 0.5 s limit"
    assert decode["status"] == "not-run" and decode["message"] == "needs 'data' (timeout)"
    assert "| data | **TIMEOUT** |" in (tmp_path / "summary.md").read_text()


def test_steps_are_not_started_once_the_budget_is_spent(tmp_path) -> None:
    done, results = gpu_check(tmp_path, "--cpu-dry-run", "--only", "env,model", "--budget", "1")
    assert done.returncode == 0
    for step in ("env", "model"):  # less than the 5 s a step needs to start was left from the first
        assert results[f"step {step}"]["status"] == "not-run"
        assert results[f"step {step}"]["message"] == "out of time: the run's budget of 1 s was spent"
    _, results = gpu_check(tmp_path, "--cpu-dry-run", "--only", "env", "--budget", "15")
    assert results["env"]["status"] == "ok" and results["step env"]["limit"] <= 15  # not its own 40 s: what was left


def test_a_new_run_does_not_count_the_checks_of_an_earlier_one(tmp_path) -> None:
    assert gpu_check(tmp_path, "--cpu-dry-run", "--only", "env")[1]["env"]["status"] == "ok"
    _, results = gpu_check(tmp_path, "--cpu-dry-run", "--only", "decode")
    assert "env" not in results and results["step decode"]["message"] == "needs 'data' (not run)"


def test_bad_arguments_are_one_line_and_exit_2(tmp_path) -> None:
    usage = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: bash scripts/gpu_check.sh OUT")
    (tmp_path / "file").write_text("")
    done, _ = gpu_check(tmp_path / "file")
    assert done.returncode == 2 and done.stderr.strip() == f"gpu_check.sh: OUT {tmp_path / 'file'}: not a folder"
    done, _ = gpu_check(tmp_path / "o", "--only", "nonsense")
    assert done.returncode != 0 and "--only: no step named nonsense" in done.stderr
