"""scripts/gpu_carry.py: the wheels a registry-less GPU machine lacks, split into parts that fit one
device call each, put back together there and checked; and gpu_check.sh --wheels that uses them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_carry  # noqa: E402


@pytest.fixture
def wheels(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "wheels"
    folder.mkdir()
    made = []
    for i, size in enumerate((5000, 1200, 7)):
        w = folder / f"pkg{i}-1.0-py3-none-any.whl"
        w.write_bytes(bytes((i * 31 + k) % 251 for k in range(size)))
        made.append(w)
    return made


def test_parts_fit_the_size_and_join_back_into_the_same_wheels(wheels, tmp_path) -> None:
    out = tmp_path / "carry"
    out.mkdir()
    parts = gpu_carry.pack(wheels, out, part_bytes=4096)
    assert [p.name for p in parts] == [f"carry.tar.part-{k:02d}-of-{len(parts):02d}" for k in range(1, len(parts) + 1)]
    assert len(parts) >= 3 and all(p.stat().st_size <= 4096 for p in parts)
    # parts may sit in several folders (the machine's stash, and .carry/ for the last call's own)
    elsewhere = tmp_path / "stash"
    elsewhere.mkdir()
    parts[0].rename(elsewhere / parts[0].name)
    joined = gpu_carry.join([elsewhere, out], tmp_path / "joined")
    assert [j.name for j in joined] == [w.name for w in wheels]
    assert [j.read_bytes() for j in joined] == [w.read_bytes() for w in wheels]


def test_a_missing_part_is_named(wheels, tmp_path) -> None:
    parts = gpu_carry.pack(wheels, tmp_path, part_bytes=4096)
    parts[1].unlink()
    with pytest.raises(SystemExit, match=rf"parts 2 of {len(parts)} missing \(was the machine given back"):
        gpu_carry.join([tmp_path], tmp_path / "joined")


def test_a_damaged_wheel_is_named(wheels, tmp_path) -> None:
    parts = gpu_carry.pack(wheels, tmp_path, part_bytes=4096)
    blob = bytearray(b"".join(p.read_bytes() for p in parts))
    blob[blob.index(wheels[0].read_bytes()) + 100] ^= 0xFF  # in pkg0's bytes: the tar reads, the digest differs
    for k, part in enumerate(parts):
        part.write_bytes(bytes(blob[k * 4096 : (k + 1) * 4096]))
    with pytest.raises(SystemExit, match="damaged in transit: pkg0-1.0-py3-none-any.whl$"):
        gpu_carry.join([tmp_path], tmp_path / "joined")


def test_the_plan_carries_one_part_per_call_and_checks_in_the_last(wheels) -> None:
    out = ROOT / ".carry" / "test-plan"
    out.mkdir(parents=True, exist_ok=True)
    try:
        parts = gpu_carry.pack(wheels, out, part_bytes=4096)
        text = gpu_carry.plan(parts, "--budget 400")
    finally:
        for p in out.iterdir():
            p.unlink()
        out.rmdir()
    calls = [line for line in text.splitlines() if line[:1].isdigit()]
    assert len(calls) == len(parts)
    for k, (call, part) in enumerate(zip(calls, parts), 1):
        assert f'carry `[".carry/test-plan/{part.name}"]`' in call
        assert ("gpu_check.sh $OUT/gpu --wheels /tmp/attrtag-carry --budget 400" in call) == (k == len(parts))


def test_check_with_wheels_that_are_not_there_records_why_and_goes_on(tmp_path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--wheels", str(tmp_path / "none"),
                           "--cpu-dry-run", "--only", "env"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = {r["check"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert lines["install"]["status"] == "fail"
    assert "carried wheels: gpu_carry: no parts in" in lines["install"]["figure"]
    assert lines["env"]["status"] == "ok"


def test_wheels_needs_a_folder(tmp_path) -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path), "--wheels"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip() == "gpu_check.sh: --wheels needs a folder"
