"""The checks of ``scripts/gpu_check.py``: each step runs in its own process and records its results.

A step reads what earlier steps left in the work folder (images, checkpoints, ONNX files) and
appends one JSON line per check to ``results.jsonl`` as soon as the check ends, so a step that
is stopped at its time limit keeps what it finished. Steps never raise for a failed check:
they record ``fail`` with the reason, so the next steps still run.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    """How big each check is: the GPU machine's sizes, or the CPU dry run's."""

    device: str  # what --device the model checks ask for
    backbone: str
    image_size: int
    creatures: int  # synthetic images to generate (train/val/test), plus logos
    logos: int
    photos: int  # 4032x3024 JPEGs
    small: int  # images at the backbone's input size
    workers: tuple[int, ...]  # decode workers for the ceiling; tagging uses the largest
    batch: int  # tagging batch
    train_batch: int
    epochs: int
    steps_per_epoch: int


# 1600 creature + 400 logo images give 1600 training images: 50 steps of the default batch of
# 32 per epoch, so 5 epochs are 250 steps.
# 512 photos are 8 tagging batches of 64, enough for the pace of a run's second half (tag says
# it from 6 batches on); making them took 213 CPU-seconds per 256 here, so about 30 s on 16 cores.
GPU = Sizes("cuda", "resnetv2_50", 224, 1600, 400, 512, 1024, (1, 4, 8, 15), 64, 32, 5, 50)
DRY = Sizes("cpu", "test_resnet", 64, 48, 16, 4, 32, (1, 2), 4, 16, 2, 3)  # tag batches of 4: 8 of small


@dataclass
class Context:
    """One step's view of the run: where things are, how big, and how to record a result."""

    out: Path
    work: Path
    sizes: Sizes
    dry: bool
    step: str

    def record(self, check: str, status: str, figure: str = "", **fields: Any) -> None:
        """Append one result line now (``status``: ok, fail or skip)."""
        line = {"check": check, "step": self.step, "status": status, "figure": figure, **fields}
        with open(self.out / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")
        print(f"[{status}] {check}: {figure} {fields.get('message', '')}", flush=True)

    @property
    def world(self) -> Path:
        return self.work / "world"

    @property
    def tag_workers(self) -> int:
        return max(self.sizes.workers)


class GpuMemory:
    """Peak GPU memory (MiB, all processes) while the block runs, read by ``nvidia-smi`` every 100 ms."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuMemory":
        try:
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return self  # no nvidia-smi: no figure
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.peak = max(self.peak or 0, int(line))

    def __exit__(self, *_: Any) -> None:
        if self._proc is not None:
            time.sleep(0.15)  # one more reading after the work ended
            self._proc.terminate()
            self._proc.wait()


def run(cmd: Sequence[str], *, log: str = "", env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """``cmd`` as a child process: (exit status, stdout + stderr, seconds); output echoed to the step log."""
    t0 = time.perf_counter()
    done = subprocess.run(list(cmd), capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - t0
    text = done.stdout + done.stderr
    print(f"$ {' '.join(map(str, cmd))}  ({log}exit {done.returncode}, {seconds:.1f} s)\n{text[-4000:]}", flush=True)
    return done.returncode, text, seconds


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


# -- environment and data -------------------------------------------------------------------------
def step_env(ctx: Context) -> None:
    import importlib.metadata as md

    versions = {}
    for name in ("attrtag", "torch", "torchvision", "timm", "onnxruntime-gpu", "onnxruntime", "onnx"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    import onnxruntime as ort

    from attrtag.runtime.gpu_libraries import cuda_device_count, preload_cuda, tensorrt_loadable

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True) if _which("nvidia-smi") else None
    gpu = smi.stdout.strip() if smi is not None and smi.returncode == 0 else "none"
    missing = preload_cuda(ort)  # before torch loads its own copies (which would skip the preload)
    torch_cuda = _torch_cuda()
    fields = {"gpu": gpu, "cpus": os.cpu_count(), "python": sys.version.split()[0], "versions": versions,
              "ort_providers_listed": ort.get_available_providers(), "driver_gpus": cuda_device_count(),
              "cuda_libs_missing": missing, "tensorrt_libs": tensorrt_loadable(), "torch_cuda": torch_cuda}
    usable = bool(fields["driver_gpus"]) and torch_cuda and versions["onnxruntime-gpu"]
    status = "ok" if usable or ctx.dry else "fail"
    why = "" if status == "ok" else "a GPU run needs the NVIDIA driver, PyTorch with CUDA and onnxruntime-gpu"
    ctx.record("env", status, f"{gpu}; {os.cpu_count()} CPUs; torch cuda {torch_cuda}", message=why, **fields)


def _which(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


def _torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _jpeg_copy(src: str, dest: str) -> None:
    from PIL import Image

    with Image.open(src) as im:
        im.convert("RGB").save(dest, "JPEG", quality=90)


def _photos(chunk: list[Path], folder: Path) -> int:
    from bench_photos import build_photos

    return len(build_photos(chunk, folder))


def step_data(ctx: Context) -> None:
    from attrtag.data.synthetic import generate

    s, cpus = ctx.sizes, os.cpu_count() or 1
    t0 = time.perf_counter()
    generate(ctx.world, n_creatures=s.creatures, n_logos=s.logos, n_unseen=0, image_size=s.image_size,
             workers=cpus, seed=0)
    sources = sorted((ctx.world / "images").glob("*.png"))
    small, photos = ctx.work / "small", ctx.work / "photos"
    small.mkdir(exist_ok=True)
    with ProcessPoolExecutor(cpus) as pool:
        picks = [sources[i % len(sources)] for i in range(s.small)]
        list(pool.map(_jpeg_copy, map(str, picks), [str(small / f"{i:05d}.jpg") for i in range(s.small)]))
        chunks = [sources[i : s.photos : cpus] for i in range(min(cpus, s.photos))]
        made = sum(pool.map(_photos, chunks, [photos] * len(chunks)))
    mb = statistics.mean(p.stat().st_size for p in photos.glob("*.jpg")) / 1e6
    ctx.record("data", "ok", f"{len(sources)} synthetic, {s.small} small JPEGs, {made} photos 4032x3024 "
               f"({mb:.1f} MB each)", seconds=round(time.perf_counter() - t0, 1), photo_mb=round(mb, 2))


def step_model(ctx: Context) -> None:
    """A random-initialised checkpoint of the backbone: what decode, export and tagging fall back on."""
    import torch

    from attrtag.data.synthetic import demo_schema
    from attrtag.model import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(demo_schema(), ctx.sizes.backbone, image_size=ctx.sizes.image_size)
    save_checkpoint(ctx.work / "random.pt", model, config={})
    h, w = model.card.preprocessing.input_size
    ctx.record("model", "ok", f"{ctx.sizes.backbone} {h}x{w}, random init",
               parameters=sum(p.numel() for p in model.parameters()))


def step_gpu_tests(ctx: Context) -> None:
    import xml.etree.ElementTree as ET

    xml = ctx.work / "gpu-tests.xml"
    code, text, seconds = run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                               f"--junitxml={xml}", "tests"])
    if not xml.is_file():
        ctx.record("gpu-tests", "fail", "pytest wrote no report", message=last_line(text))
        return
    counts = {"ok": 0, "fail": 0, "skip": 0}
    for case in ET.parse(xml).iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        status = "fail" if bad is not None else "skip" if skipped is not None else "ok"
        counts[status] += 1
        why = (bad if bad is not None else skipped if skipped is not None else None)
        message = (why.get("message") or "")[:300] if why is not None else ""
        ctx.record(f"test {case.get('name')}", status, case.get("classname", ""), message=message)
    status = "fail" if counts["fail"] or code not in (0, 5) else "ok" if counts["ok"] else "skip"
    ctx.record("gpu-tests", status, f"{counts['ok']} passed, {counts['fail']} failed, {counts['skip']} skipped",
               seconds=round(seconds, 1), **counts)


# -- training -------------------------------------------------------------------------------------
def _train_cmd(ctx: Context, out: Path) -> list[str]:
    s = ctx.sizes
    return ["train", "--schema", str(ctx.world / "schema.yaml"), "--manifest", str(ctx.world / "manifest.csv"),
            "--out", str(out), "--overwrite", "--backbone", s.backbone, "--image-size", str(s.image_size),
            "--batch-size", str(s.train_batch), "--epochs", str(s.epochs),
            "--max-steps-per-epoch", str(s.steps_per_epoch), "--workers", str(min(12, os.cpu_count() or 1)),
            "--device", s.device]


def _record_training(ctx: Context, check: str, out: Path, code: int, text: str, seconds: float,
                     mem: GpuMemory, expect: str) -> None:
    history = out / "history.json"
    if code != 0 or not history.is_file():
        ctx.record(check, "fail", f"exit {code}", message=last_line(text), seconds=round(seconds, 1))
        return
    rows = json.loads(history.read_text())
    rates = [r["train_images_per_s"] for r in rows[1:]] or [rows[0]["train_images_per_s"]]  # epoch 1 warms up
    steps = sum(r["train_images"] for r in rows) // ctx.sizes.train_batch
    said = expect in text
    status = "ok" if said else "fail"
    ctx.record(check, status, f"{statistics.median(rates):.0f} img/s, {steps} steps",
               images_per_s=round(statistics.median(rates), 1), steps=steps, seconds=round(seconds, 1),
               gpu_mem_peak_mib=mem.peak, val_score=round(rows[-1]["val_score"], 3),
               message="" if said else f"the run did not say '{expect}'")


def step_train(ctx: Context) -> None:
    """A short training run as users start it: AMP and channels-last are the CUDA defaults."""
    out = ctx.work / "train"
    with GpuMemory() as mem:
        code, text, seconds = run([sys.executable, "-m", "attrtag", *_train_cmd(ctx, out)])
    _record_training(ctx, "train", out, code, text, seconds, mem, f"PyTorch runs the model on {ctx.sizes.device}")


def step_torchrun(ctx: Context) -> None:
    """The same under ``torchrun --nproc_per_node 1``: a process group (NCCL on a GPU) and --sync-bn."""
    out = ctx.work / "train-ddp"
    sync_bn = [] if ctx.dry else ["--sync-bn"]  # SyncBatchNorm needs CUDA
    backend = "gloo" if ctx.dry else "nccl"
    device = "cpu" if ctx.dry else "cuda:0"
    with GpuMemory() as mem:
        code, text, seconds = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                   "1", "-m", "attrtag", *_train_cmd(ctx, out), *sync_bn])
    _record_training(ctx, "torchrun", out, code, text, seconds, mem, f"process 0 of 1 on {device} ({backend})")
