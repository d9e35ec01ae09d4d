"""Carry the wheels a lent GPU machine lacks, in parts that fit its calls (issue 23).

This workplace's GPU machine reaches no package registry, runs Python 3.12 with its own torch,
timm and the CPU build of onnxruntime, and takes at most 64 MiB per call (the working tree
included). The ``onnxruntime-gpu`` wheel alone is 256 MB, so it travels in parts, one call
each; files a call leaves on the machine stay while it is held (it is given back after 30 s
idle), and the last call joins them and runs the check:

    python scripts/gpu_carry.py prepare            # here: download, pack, split; prints the calls
    python scripts/gpu_carry.py join DIR... --out W    # there (gpu_check.sh --wheels does it)

``prepare`` writes ``.carry/carry.tar.xz.part-KK-of-NN`` (an xz-compressed tar of the wheels
and a MANIFEST.json of their sha256) and ``.carry/plan.md``, the exact sequence of device
calls. ``join`` puts the parts found in the given folders back together, checks every wheel
against the manifest and says in one line what is missing or damaged (exit 1).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
#: What the machine's image lacks or has in another version, pinned as pyproject.toml pins them
#: (albumentations' dependencies from its metadata). torch and torchvision stay the machine's own.
WHEELS = (
    "onnxruntime-gpu==1.31.1", "timm==1.0.31", "albumentations==2.0.8", "albucore==0.0.24",
    "pydantic==2.13.4", "pydantic-core==2.46.4", "annotated-types==0.7.0", "typing-inspection==0.4.2",
    "stringzilla==5.3.2", "simsimd==6.5.16",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
CALL_MIB = 64  # what one device call carries, the working tree included
STASH = "/tmp/attrtag-carry"  # where each call puts its part on the machine
PART = re.compile(r"carry\.tar\.xz\.part-(\d+)-of-(\d+)$")


def download(folder: Path, python: str) -> list[Path]:
    """The wheels of :data:`WHEELS` for CPython ``python`` on x86-64 Linux (pip's cache makes reruns fast)."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python, "--implementation", "cp", "-d", str(folder)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    if subprocess.run(cmd + list(WHEELS)).returncode != 0:
        raise SystemExit("gpu_carry: pip download failed (above); prepare needs the package registry")
    wanted = {re.sub(r"[-_.]+", "_", w.split("==")[0]).lower() for w in WHEELS}
    wheels = sorted(p for p in folder.glob("*.whl") if p.name.split("-")[0].lower() in wanted)
    if len(wheels) != len(WHEELS):
        raise SystemExit(f"gpu_carry: expected {len(WHEELS)} wheels in {folder}, found {len(wheels)}")
    return wheels


def pack(wheels: Sequence[Path], out: Path, part_bytes: int) -> list[Path]:
    """The wheels and their manifest as one xz-compressed tar, split into ``carry.tar.xz.part-KK-of-NN``
    files of ``part_bytes``.

    Each wheel is stored uncompressed inside (the same members in the same order, so still a valid
    wheel: pip checks its RECORD, not the zip's compression) and xz compresses the whole: the 10
    wheels, 254 MiB as downloaded (5 parts), are 200 MiB this way (4 parts, one device call fewer;
    the CUDA provider's 284 MB library is 231 MB deflated, 187 MB in xz).
    """
    stored = {w.name: _stored(w) for w in wheels}
    manifest = {name: hashlib.sha256(data).hexdigest() for name, data in stored.items()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [("MANIFEST.json", json.dumps(manifest, indent=1).encode()), *stored.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = _xz(buffer.getvalue())
    for old in out.glob("carry.tar*.part-*"):
        old.unlink()
    n = -(-len(blob) // part_bytes)
    parts = []
    for k in range(n):
        part = out / f"carry.tar.xz.part-{k + 1:02d}-of-{n:02d}"
        part.write_bytes(blob[k * part_bytes : (k + 1) * part_bytes])
        parts.append(part)
    return parts


def _stored(wheel: Path) -> bytes:
    """``wheel`` rewritten with its members stored, not deflated (for xz to compress them better)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.external_attr, copy.compress_type = info.external_attr, zipfile.ZIP_STORED
            dst.writestr(copy, src.read(info))
    return buffer.getvalue()


def _xz(data: bytes) -> bytes:
    """xz-compressed ``data``: the ``xz`` tool on every core where there is one, else Python's lzma."""
    if shutil.which("xz"):
        return subprocess.run(["xz", "-T0", "-6", "-c"], input=data, capture_output=True, check=True).stdout
    return lzma.compress(data, preset=6)


def join(folders: Sequence[Path], out: Path) -> list[Path]:
    """The wheels, from the parts found in ``folders``; SystemExit naming what is missing or damaged."""
    found: dict[int, Path] = {}
    totals = set()
    for folder in folders:
        for p in sorted(folder.glob("carry.tar.xz.part-*")) if folder.is_dir() else []:
            m = PART.search(p.name)
            if m:
                found.setdefault(int(m.group(1)), p)
                totals.add(int(m.group(2)))
    if len(totals) != 1:
        where = ", ".join(map(str, folders))
        raise SystemExit(f"gpu_carry: no parts in {where}" if not totals else "gpu_carry: parts of "
                         f"{len(totals)} packings in {where} (of {' and '.join(map(str, sorted(totals)))} parts); "
                         "prepare again and carry all parts of one")
    total = totals.pop()
    missing = [k for k in range(1, total + 1) if k not in found]
    if missing:
        raise SystemExit(f"gpu_carry: parts {', '.join(map(str, missing))} of {total} missing (was the machine given "
                         "back between calls? each call must follow the last within 30 s)")
    out.mkdir(parents=True, exist_ok=True)
    try:
        blob = lzma.decompress(b"".join(found[k].read_bytes() for k in range(1, total + 1)))
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(out, filter="data")
    except (lzma.LZMAError, tarfile.TarError) as err:
        raise SystemExit(f"gpu_carry: the joined parts are not a whole archive ({err}); prepare and carry them again")
    manifest = json.loads((out / "MANIFEST.json").read_text())
    bad = [n for n, digest in manifest.items()
           if not (out / n).is_file() or hashlib.sha256((out / n).read_bytes()).hexdigest() != digest]
    if bad:
        raise SystemExit(f"gpu_carry: damaged in transit: {', '.join(bad)}")
    return [out / n for n in manifest]


def plan(parts: Sequence[Path], check_args: str) -> str:
    """The device calls, in order: one part each, the last one joining, installing and checking."""
    rel = [p.relative_to(ROOT) for p in parts]
    lines = [
        "# The GPU check on this workplace's lent machine: calls in order, each within 30 s of the last",
        "",
        f"Parts: {len(parts)} ({sum(p.stat().st_size for p in parts) / 2**20:.0f} MiB). Each `run` call names one in",
        "`carry`; the machine keeps it while held. Start each call as soon as the previous returns.",
        "First `status` (free): `can_start_another` must be true, with 12 minutes or more of budget left.",
        "",
    ]
    stash = f"mkdir -p {STASH} && cp {{part}} {STASH}/ && ls -l {STASH}"
    for k, part in enumerate(rel, 1):
        command = stash.format(part=part)
        if k == len(rel):
            command += (f" && bash scripts/gpu_check.sh $OUT/gpu --wheels {STASH} {check_args}").rstrip()
        timeout = 600 if k == len(rel) else 120
        lines.append(f"{k}. carry `[\"{part}\"]`, timeout_s {timeout}: `{command}`")
    lines += ["", "Then `give_back`. $OUT/gpu holds summary.md, results.jsonl, steps.log and install.log."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="download the wheels, pack and split them, write the plan of calls")
    prep.add_argument("--dir", type=Path, default=ROOT / ".carry", help="where the parts go (default .carry/)")
    prep.add_argument("--python", default="3.12", help="the machine's Python (default 3.12)")
    prep.add_argument("--check-args", default="", help="more arguments for gpu_check.sh in the last call")
    j = sub.add_parser("join", help="parts -> wheels, checked against the manifest")
    j.add_argument("folders", type=Path, nargs="+", help="folders holding carry.tar.xz.part-* files")
    j.add_argument("--out", type=Path, required=True, help="folder for the wheels")
    args = p.parse_args(argv)
    if args.command == "join":
        wheels = join(args.folders, args.out)
        print(f"gpu_carry: {len(wheels)} wheels checked in {args.out}")
        return 0
    tree = _tree_bytes()  # what travels beside each part
    part_bytes = (CALL_MIB << 20) - tree - (2 << 20)  # 2 MiB to spare: new files before the call
    args.dir = args.dir.resolve()
    wheels = download(args.dir / "wheels", args.python)
    parts = pack(wheels, args.dir, part_bytes)
    text = plan(parts, args.check_args)
    (args.dir / "plan.md").write_text(text)
    print(text, end="")
    return 0


def _tree_bytes() -> int:
    """Bytes of the working tree that travels with every call (tracked and untracked, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.split(b"\0")
    files = [ROOT / name.decode() for name in listed if name]
    return sum(f.stat().st_size for f in files if f.is_file())


if __name__ == "__main__":
    sys.exit(main())
