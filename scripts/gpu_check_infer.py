"""The inference checks of ``scripts/gpu_check.py``: decode ceiling, export and parity, tagging.

Tagging is timed as users run it, ``attrtag tag`` in its own process; its images/s is the
tagging loop's own rate (model loading and TensorRT's engine build excluded), and its pace over
the run's second half (past the GPU's kernel search and the decode pipeline filling, which on a
run of 1,024 images at GPU speed would otherwise dominate). The summary divides the latter by
the decode ceiling measured here with the same number of decode workers.
"""
from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from gpu_check_steps import Context, GpuMemory, last_line, run

IMAGES = ("photos", "small")
PRECISIONS = ("fp32", "fp16")
# ONNX Runtime's CUDA convolutions may use TF32 (10-bit mantissa) while the reference runs
# strict float32, so fp32 gets 5e-3; fp16 is held to twice the export check's 1e-2.
PARITY_ATOL = {"fp32": 5e-3, "fp16": 2e-2}
PROVIDER = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider", "cpu": "CPUExecutionProvider"}


def checkpoint(ctx: Context) -> tuple[Path, str]:
    """The trained checkpoint of the train step, else the random one of the model step."""
    trained = ctx.work / "train" / "best.pt"
    return (trained, "trained") if trained.is_file() else (ctx.work / "random.pt", "random init")


def onnx_path(ctx: Context, precision: str) -> Path:
    return ctx.work / f"model-{precision}.onnx"


def image_paths(ctx: Context, images: str) -> list[str]:
    return sorted(str(p) for p in (ctx.work / images).glob("*.jpg"))


# -- decode ceiling -------------------------------------------------------------------------------
def step_decode(ctx: Context) -> None:
    """Images/s of the tagging decode path alone (decode, resize, normalise, stack) per worker count."""
    from attrtag.data.batches import decode_batches
    from attrtag.model import load_checkpoint

    prep = load_checkpoint(ctx.work / "random.pt")["card"].preprocessing
    for images in IMAGES:
        paths = image_paths(ctx, images)
        for workers in ctx.sizes.workers:
            t0 = time.perf_counter()
            decoded = [d for b in decode_batches(paths, prep, batch_size=ctx.sizes.batch, workers=workers) for d in b]
            rate = len(decoded) / (time.perf_counter() - t0)
            bad = sum(d.error is not None for d in decoded)
            ctx.record(f"decode {images} x{workers}", "fail" if bad else "ok", f"{rate:.0f} img/s", images=images,
                       workers=workers, images_per_s=round(rate, 1), n=len(decoded), failed=bad)


# -- export and parity ----------------------------------------------------------------------------
def step_export(ctx: Context) -> None:
    """fp32 and fp16 exports (each checked on the CPU by export itself), then parity on the device."""
    from attrtag_onnx.export import export_onnx

    ckpt, source = checkpoint(ctx)
    for precision in PRECISIONS:
        t0 = time.perf_counter()
        try:
            report = export_onnx(ckpt, onnx_path(ctx, precision), fp16=precision == "fp16")
        except Exception as err:  # noqa: BLE001 - record it and go on with the other precision
            ctx.record(f"export {precision}", "fail", type(err).__name__, message=last_line(str(err)))
            continue
        diff = max(report.max_abs_diff.values())
        ctx.record(f"export {precision}", "ok", f"max diff vs torch {diff:.1e} ({', '.join(report.check_providers)})",
                   seconds=round(time.perf_counter() - t0, 1), mb=round(report.size_bytes / 1e6, 1),
                   exporter=report.exporter, weights=source)
    parity(ctx, ckpt)


def parity(ctx: Context, ckpt: Path) -> None:
    """ONNX Runtime fp32/fp16 and PyTorch's own GPU path vs PyTorch float32 on the same device."""
    import numpy as np
    import torch

    from attrtag.model import ProbabilityModel, load_model
    from attrtag.runtime.onnx_backend import OnnxModel
    from attrtag.runtime.torch_backend import TorchPredictor

    model = load_model(ckpt)
    prep, schema, device = model.card.preprocessing, model.card.schema, ctx.sizes.device
    batch = np.stack([prep.normalize(prep.load(p)) for p in image_paths(ctx, "small")[:32]])
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # a strict float32 reference
    net = ProbabilityModel(model).eval().to(device)
    with torch.inference_mode():
        ref = dict(zip(schema.names, (p.float().cpu().numpy() for p in net(torch.from_numpy(batch).to(device)))))
    runs: dict[str, tuple[Callable[[], object], float]] = {
        f"onnxruntime {p}": (lambda p=p: OnnxModel(onnx_path(ctx, p), device=device, calibrated=False), PARITY_ATOL[p])
        for p in PRECISIONS if onnx_path(ctx, p).is_file()
    }
    # attrtag's PyTorch path: fp16 autocast, channels-last on CUDA. Raw probabilities on both sides
    # (calibrated=False): the reference is the network's own output, before the card's temperatures.
    runs["torch predictor"] = (lambda: TorchPredictor(model, device=device, calibrated=False), PARITY_ATOL["fp16"])
    for name, (open_model, atol) in runs.items():
        try:
            predictor = open_model()
            got = predictor(batch)
        except Exception as err:  # noqa: BLE001
            ctx.record(f"parity {name}", "fail", type(err).__name__, message=last_line(str(err)))
            continue
        diff = max(float(np.abs(got[g] - ref[g]).max()) for g in ref)
        same = [float((got[g.name].argmax(1) == ref[g.name].argmax(1)).mean()) for g in schema if not g.multi]
        ctx.record(f"parity {name}", "ok" if diff <= atol else "fail",
                   f"max diff {diff:.1e}, top-1 same {100 * min(same):.0f}%", max_abs_diff=diff, atol=atol,
                   runs_on=str(predictor.placement), images=len(batch))


# -- tagging --------------------------------------------------------------------------------------
RATE = re.compile(r"tagged (\d+), failed (\d+)(?: \([^)]*\))?; ([\d.]+) images/s")
STEADY = re.compile(r"images/s \(([\d.]+) in its second half\)")
RUNS_ON = re.compile(r"runs \S+ on (\w+ExecutionProvider)|PyTorch runs the model on (\S+)")


def tag(ctx: Context, check: str, model: Path, inputs: str, device: str, *, expect: tuple[str, ...]) -> dict | None:
    """``attrtag tag`` as users run it; records the check and returns its figures (None: not ok).

    ``expect``: what the run must say it runs on (a provider, or ``cuda`` for PyTorch).
    """
    out = ctx.work / "tags" / f"{check.replace(' ', '-')}.jsonl"
    out.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "attrtag", "tag", str(model), inputs, "--out", str(out), "--overwrite",
           "--no-progress", "--device", device, "--batch-size", str(ctx.sizes.batch),
           "--workers", str(ctx.tag_workers), "--trt-cache-dir", str(ctx.work / "trt")]
    with GpuMemory() as mem:
        code, text, seconds = run(cmd)
    if code == 2 and "is not usable here" in text:
        ctx.record(check, "skip", "device not usable here", message=last_line(text))
        return None
    rate, where = RATE.search(text), RUNS_ON.search(text)
    used = (where.group(1) or where.group(2)) if where else "?"
    if code != 0 or rate is None:
        ctx.record(check, "fail", f"exit {code}", message=last_line(text), seconds=round(seconds, 1))
        return None
    steady = STEADY.search(text)
    figures = {"images_per_s": float(rate.group(3)), "steady_images_per_s": float(steady.group(1)) if steady else None,
               "n": int(rate.group(1)) + int(rate.group(2)),
               "failed": int(rate.group(2)), "provider": used, "process_s": round(seconds, 1),
               "gpu_mem_peak_mib": mem.peak, "workers": ctx.tag_workers}
    ok = used.startswith(expect) and figures["failed"] == 0
    ctx.record(check, "ok" if ok else "fail", f"{figures['images_per_s']:.0f} img/s on {used}",
               message="" if ok else f"expected {' or '.join(expect)} and no failed images", **figures)
    return figures if ok else None


def tag_step(images: str, device: str, precision: str) -> Callable[[Context], None]:
    """The step that tags folder ``images`` with the ``precision`` model on ``device`` (cpu in a dry run)."""
    def step(ctx: Context) -> None:
        asked = "cpu" if ctx.dry and device == "cuda" else device
        check = f"tag {images} {asked} {precision}"
        tag(ctx, check, onnx_path(ctx, precision), str(ctx.work / images), asked, expect=(PROVIDER[asked],))
    return step


def trt_build_step(precision: str) -> Callable[[Context], None]:
    """TensorRT's engine build, timed on its own: 64 images with an empty engine cache."""
    def step(ctx: Context) -> None:
        shutil.rmtree(ctx.work / "trt", ignore_errors=True)
        listing = ctx.work / "first64.txt"
        listing.write_text("\n".join(image_paths(ctx, "small")[:64]) + "\n")
        t0 = time.perf_counter()
        figures = tag(ctx, f"tensorrt build {precision}", onnx_path(ctx, precision), f"@{listing}", "tensorrt",
                      expect=(PROVIDER["tensorrt"],))
        if figures is not None:
            print(f"engine build and 64 images: {time.perf_counter() - t0:.1f} s")
    return step


def step_device(ctx: Context) -> None:
    """``--device cuda`` with a checkpoint (PyTorch), and what ``--device auto`` picks for an .onnx file."""
    ckpt, _ = checkpoint(ctx)
    device = ctx.sizes.device
    small = str(ctx.work / "small")
    tag(ctx, f"tag checkpoint {device}", ckpt, small, device, expect=(device,))
    on_gpu = (PROVIDER["tensorrt"], PROVIDER["cuda"])  # TensorRT first when its libraries load
    tag(ctx, "tag onnx auto", onnx_path(ctx, "fp32"), small, "auto", expect=(PROVIDER["cpu"],) if ctx.dry else on_gpu)


def tag_steps() -> dict[str, Callable[[Context], None]]:
    """Every tagging step by name, in the order the driver runs them (CUDA before TensorRT)."""
    steps: dict[str, Callable[[Context], None]] = {}
    for device in ("cuda", "tensorrt"):
        for precision in PRECISIONS:
            if device == "tensorrt":
                steps[f"trt-build-{precision}"] = trt_build_step(precision)
            for images in IMAGES:
                steps[f"tag-{images}-{device}-{precision}"] = tag_step(images, device, precision)
    return steps
