"""scripts/gpu_carry.py: the wheels a registry-less GPU machine lacks, split into parts that fit one
device call each, put back together there and checked; and gpu_check.sh --wheels that uses them."""
from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_carry  # noqa: E402


@pytest.fixture
def wheels(tmp_path: Path) -> list[Path]:
    """Three small wheels (deflated zips, as pip downloads them)."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    made = []
    for i, size in enumerate((50_000, 12_000, 7)):
        w = folder / f"pkg{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(w, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"pkg{i}/__init__.py", "x = 1\n" * (size // 6))
            z.writestr(f"pkg{i}/data.bin", random.Random(i).randbytes(size // 2))
            z.writestr(f"pkg{i}-1.0.dist-info/RECORD", f"pkg{i}/__init__.py,,\n")
        made.append(w)
    return made


def members(wheel: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(wheel) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def test_parts_fit_the_size_and_join_back_into_the_same_wheels(wheels, tmp_path) -> None:
    out = tmp_path / "carry"
    out.mkdir()
    parts = gpu_carry.pack(wheels, out, part_bytes=4096)
    assert [p.name for p in parts] == [f"carry.tar.xz.part-{k:02d}-of-{len(parts):02d}"
                                       for k in range(1, len(parts) + 1)]
    assert len(parts) >= 3 and all(p.stat().st_size <= 4096 for p in parts)
    # parts may sit in several folders (the machine's stash, and .carry/ for the last call's own)
    elsewhere = tmp_path / "stash"
    elsewhere.mkdir()
    parts[0].rename(elsewhere / parts[0].name)
    joined = gpu_carry.join([elsewhere, out], tmp_path / "joined")
    assert [j.name for j in joined] == [w.name for w in wheels]
    # the same members in the same order, stored rather than deflated: a wheel pip installs as it is
    assert [members(j) for j in joined] == [members(w) for w in wheels]
    with zipfile.ZipFile(joined[0]) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED} and z.testzip() is None


def test_a_missing_part_is_named(wheels, tmp_path) -> None:
    parts = gpu_carry.pack(wheels, tmp_path, part_bytes=4096)
    parts[1].unlink()
    with pytest.raises(SystemExit, match=rf"parts 2 of {len(parts)} missing \(was the machine given back"):
        gpu_carry.join([tmp_path], tmp_path / "joined")


def test_parts_of_two_packings_are_refused(wheels, tmp_path) -> None:
    gpu_carry.pack(wheels, tmp_path, part_bytes=4096)
    other = tmp_path / "other"
    other.mkdir()
    gpu_carry.pack(wheels[1:], other, part_bytes=4096)
    n, m = len(list(tmp_path.glob("carry.*"))), len(list(other.glob("carry.*")))
    assert n != m
    with pytest.raises(SystemExit, match=rf"parts of 2 packings in .* \(of {min(n, m)} and {max(n, m)} parts\); "
                                         "prepare again and carry all parts of one"):
        gpu_carry.join([tmp_path, other], tmp_path / "joined")


def test_a_damaged_part_is_refused(wheels, tmp_path) -> None:
    parts = gpu_carry.pack(wheels, tmp_path, part_bytes=4096)
    blob = bytearray(parts[1].read_bytes())
    blob[100] ^= 0xFF  # xz's checksums catch it before any wheel is written
    parts[1].write_bytes(bytes(blob))
    with pytest.raises(SystemExit, match="the joined parts are not a whole archive"):
        gpu_carry.join([tmp_path], tmp_path / "joined")


def test_a_wheel_that_differs_from_its_manifest_entry_is_named(wheels, tmp_path) -> None:
    # an archive that arrived whole (xz's checksums pass) but whose wheel is not the one packed
    stored = {w.name: gpu_carry._stored(w) for w in wheels}
    manifest = {n: gpu_carry.hashlib.sha256(d).hexdigest() for n, d in stored.items()}
    manifest[wheels[1].name] = "0" * 64
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [("MANIFEST.json", json.dumps(manifest).encode()), *stored.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "carry.tar.xz.part-01-of-01").write_bytes(gpu_carry._xz(buffer.getvalue()))
    with pytest.raises(SystemExit, match=f"damaged in transit: {wheels[1].name}$"):
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


def test_prepare_without_the_registry_says_so_in_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(gpu_carry.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(SystemExit, match="^gpu_carry: pip download failed \\(above\\); prepare needs the package "
                                         "registry$"):
        gpu_carry.download(tmp_path, "3.12")
