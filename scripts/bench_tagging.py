"""Tagging benchmarks: five ratios, each between two things measured in the same run on the same images.

    ort-vs-torch  ONNX Runtime fp32 vs PyTorch eager, model only ........ speed-up   target >= 2.0
    end-to-end    `attrtag tag` (decode, resize, infer, write) vs
                  model-only ONNX Runtime on the same images ............ ratio      target >= 0.9
    int8          int8 vs fp32 ONNX Runtime on the CPU, model only ...... speed-up   target >= 1.5
                  and each group's accuracy, int8 minus fp32 ............ |change|   target <= 1 point
    grouped       one G-group model vs G single-group models,
                  model-only ONNX Runtime ............................... time ratio target <= 1.1 / G
    memory        RSS of an `attrtag tag` process at 2,000 and 20,000
                  images ................................................ growth     target <= 10%
    all           the five above with their defaults, then a summary table

Timed pairs are interleaved (A B, B A, A B, ...) so drift on a shared machine hits both sides,
and each side's median over the repeats is used. Model-only means pre-decoded, preprocessed
float32 batches in memory: no file reading, decoding or writing is timed. Thread counts are
equal on both sides (``torch.set_num_threads(T)``, ONNX Runtime ``intra_op_num_threads=T``).

Without ``--checkpoint`` the models are random-initialised (no weights are downloaded), which
is fine for speed and memory and meaningless for accuracy; the int8 benchmark says so then.
Exported models are cached in ``--work-dir`` (``--fresh`` rebuilds them).

Each benchmark prints what it measured and a small markdown table, and writes JSON
(``--json``, default ``<work-dir>/<benchmark>.json``). See scripts/README.md.

    python scripts/bench_tagging.py ort-vs-torch
    python scripts/bench_tagging.py int8 --checkpoint runs/fashion/best.pt
    python scripts/bench_tagging.py all
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from attrtag.runtime.threads import plan_threads

DEFAULT_IMAGES = "../shared/data/fashion-products/images"
DEFAULT_GROUPS = ["masterCategory", "gender", "usage", "baseColour"]
#: Used when no labels table is found next to --images (sizes only matter for the head).
FALLBACK_SCHEMA = {
    "category": ["a", "b", "c", "d", "e", "f"],
    "gender": ["a", "b", "c", "d", "e"],
    "usage": ["a", "b", "c", "d", "e", "f", "g"],
    "colour": [f"c{i}" for i in range(44)],
}
BENCHMARKS = ("ort-vs-torch", "end-to-end", "int8", "grouped", "memory")
MB = 1024 * 1024


# -- shared helpers -------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def list_images(folder: str | Path, n: int | None) -> list[str]:
    """The first ``n`` (None: all) image files of ``folder``, sorted by name as ``attrtag tag`` orders them."""
    from attrtag.data.images import is_image_path

    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"--images {folder}: not a folder (run from the repository root, or pass --images)")
    names = sorted((e.name for e in os.scandir(folder) if e.is_file() and is_image_path(e.name)), key=os.fsencode)
    if not names:
        raise SystemExit(f"--images {folder}: no image files")
    if n is not None and n > len(names):
        raise SystemExit(f"--n-images {n}: {folder} has only {len(names)} images")
    return [str((folder / name).resolve()) for name in names[:n]]


def decode(paths: Sequence[str], prep: Any, batch_size: int) -> list[np.ndarray]:
    """Pre-decoded model input: float32 ``[B, 3, H, W]`` batches (the last may be shorter)."""
    rows = [prep.normalize(prep.load(p)) for p in paths]
    return [np.ascontiguousarray(np.stack(rows[i : i + batch_size])) for i in range(0, len(rows), batch_size)]


def run_batches(model: Callable[[np.ndarray], Any], batches: Sequence[np.ndarray]) -> float:
    """Seconds to run every batch through ``model``."""
    t0 = time.perf_counter()
    for b in batches:
        model(b)
    return time.perf_counter() - t0


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each runner ``repeats`` times, alternating which goes first; seconds per call."""
    names = list(runs)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            out[n].append(runs[n]())
            log(f"  repeat {r + 1}/{repeats} {n}: {out[n][-1]:.2f}s")
    return out


def load_schema(args: argparse.Namespace) -> tuple[Any, str]:
    """The schema of the random-init models: --groups columns of the labels table next to --images."""
    from attrtag.data.tables import schema_from_table
    from attrtag.schema import Schema

    labels = Path(args.labels) if args.labels else Path(args.images).parent / "labels.csv"
    if labels.is_file():
        return schema_from_table(labels, args.groups), f"{labels} columns {', '.join(args.groups)}"
    return Schema.from_dict(FALLBACK_SCHEMA), "built-in (no labels table found)"


def build_onnx(args: argparse.Namespace, schema: Any, *, backbone: str, image_size: int | None) -> Path:
    """Random-init checkpoint (``build_model`` + ``save_checkpoint``) exported to ONNX; cached."""
    key = json.dumps([backbone, image_size, schema.to_dict(), args.seed], sort_keys=True)
    stem = f"{backbone}-{image_size or 'default'}px-{len(schema)}g-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    folder = Path(args.work_dir) / "models"
    onnx_path, ckpt_path = folder / f"{stem}.onnx", folder / f"{stem}.pt"
    if onnx_path.is_file() and ckpt_path.is_file() and not args.fresh:
        log(f"reusing {onnx_path} (--fresh rebuilds)")
        return onnx_path
    import torch

    from attrtag.model import build_model, save_checkpoint
    from attrtag_onnx.export import export_onnx

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = build_model(schema, backbone, image_size=image_size).eval()
    save_checkpoint(ckpt_path, model, config={})
    t0 = time.perf_counter()
    report = export_onnx(ckpt_path, onnx_path)
    log(f"exported {onnx_path} in {time.perf_counter() - t0:.0f}s "
        f"(max |onnx - torch| {max(report.max_abs_diff.values()):.1e})")
    return onnx_path


def open_ort(path: Path, threads: int) -> Any:
    from attrtag.runtime.onnx_backend import OnnxModel

    return OnnxModel(path, device="cpu", threads=threads)


def settings_of(model: Any, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    h, w = model.preprocessing.input_size
    return {"backbone": model.card.backbone, "image_size": f"{h}x{w}", "groups": len(model.schema),
            "batch_size": args.batch_size, "threads": args.threads, "n_images": args.n_images,
            "repeats": args.repeats, **extra}


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "PASS on speed; accuracy NOT JUDGED (random init)"}[passed]


def finish(name: str, args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Print the settings line and verdict, write the JSON."""
    result = {"benchmark": name, "verdict": verdict(result["pass"]), **result}
    s = result["settings"]
    print("settings: " + ", ".join(f"{k} {v}" for k, v in s.items()))
    print(f"**{name}: {result['summary']} -> {result['verdict']}** (target {result['target']})\n")
    out = Path(args.json or Path(args.work_dir) / f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    log(f"wrote {out}")
    return result


# -- 1. ONNX Runtime vs PyTorch -------------------------------------------------------------------
def bench_ort_vs_torch(args: argparse.Namespace) -> dict[str, Any]:
    """ONNX Runtime fp32 vs PyTorch eager (``TorchPredictor``: inference_mode), model only."""
    import torch

    from attrtag.runtime.torch_backend import TorchPredictor

    schema, schema_src = load_schema(args)
    onnx_path = build_onnx(args, schema, backbone=args.backbone, image_size=args.image_size)
    torch.set_num_threads(args.threads)
    ort_model = open_ort(onnx_path, args.threads)
    torch_model = TorchPredictor.from_checkpoint(onnx_path.with_suffix(".pt"), device="cpu", threads=args.threads)
    batches = decode(list_images(args.images, args.n_images), ort_model.preprocessing, args.batch_size)
    # Warm-up (allocations, lazy init) and a check that both compute the same thing.
    a, b = ort_model(batches[0]), torch_model(batches[0])
    diff = max(float(np.max(np.abs(a[g] - b[g]))) for g in a)
    times = interleaved({"onnxruntime": lambda: run_batches(ort_model, batches),
                         "torch": lambda: run_batches(torch_model, batches)}, args.repeats)
    t_ort, t_torch = median(times["onnxruntime"]), median(times["torch"])
    n = args.n_images
    print_table(["engine", "images/s (median)", "runs (s)"], [
        ("PyTorch eager fp32 (inference_mode)", f"{n / t_torch:.1f}", " ".join(f"{t:.2f}" for t in times["torch"])),
        (f"ONNX Runtime fp32 ({', '.join(ort_model.providers)})", f"{n / t_ort:.1f}",
         " ".join(f"{t:.2f}" for t in times["onnxruntime"])),
    ])
    ratio = t_torch / t_ort
    return finish("ort-vs-torch", args, {
        "settings": settings_of(ort_model, args, providers=ort_model.providers, torch_threads=torch.get_num_threads(),
                                torch_version=torch.__version__, schema=schema_src),
        "seconds": times, "images_per_s": {"onnxruntime": n / t_ort, "torch": n / t_torch},
        "max_abs_prob_diff": diff, "ratio": ratio, "target": ">= 2.0", "pass": ratio >= 2.0,
        "summary": f"ONNX Runtime / PyTorch speed-up {ratio:.2f}x",
    })


# -- 2. End-to-end tag vs model only --------------------------------------------------------------
_RATE = re.compile(r"tagged (\d+), failed (\d+).*?; ([\d.]+) images/s")


def bench_end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    """``attrtag.cli.main(["tag", ...])`` in this process vs model-only ONNX Runtime, same images."""
    from attrtag.cli import main as attrtag_main

    schema, schema_src = load_schema(args)
    onnx_path = build_onnx(args, schema, backbone=args.backbone, image_size=args.image_size)
    paths = list_images(args.images, args.n_images)
    ort_model = open_ort(onnx_path, args.threads)
    batches = decode(paths, ort_model.preprocessing, args.batch_size)  # also warms the page cache for both
    ort_model(batches[0])
    workers = args.workers if args.workers is not None else plan_threads(backend="onnx", on_gpu=False).decode_workers
    cli_rates: list[float] = []

    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        listing = Path(tmp) / "images.txt"
        listing.write_text("".join(p + "\n" for p in paths))
        out = Path(tmp) / "tags.jsonl"
        argv = ["tag", str(onnx_path), f"@{listing}", "--out", str(out), "--overwrite", "--no-progress",
                "--device", "cpu", "--threads", str(args.threads), "--batch-size", str(args.batch_size),
                "--workers", str(workers)]

        def tag_once() -> float:
            buf = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(buf):
                status = attrtag_main(argv)
            seconds = time.perf_counter() - t0
            with out.open("rb") as f:
                written = sum(1 for _ in f)  # records only: the header is in FILE.meta.json
            if status != 0 or written != len(paths):
                raise SystemExit(f"attrtag tag failed (status {status}, {written} of {len(paths)} records): "
                                 f"{buf.getvalue().strip()}")
            m = _RATE.search(buf.getvalue())  # its own rate; absent if the summary line changes
            cli_rates.append(float(m.group(3)) if m else float("nan"))
            return seconds

        times = interleaved({"attrtag tag": tag_once, "model only": lambda: run_batches(ort_model, batches)},
                            args.repeats)
        records = sum(1 for _ in out.open("rb"))

    n = len(paths)
    t_e2e, t_model = median(times["attrtag tag"]), median(times["model only"])
    ratio, ratio_loop = t_model / t_e2e, median(cli_rates) / (n / t_model)
    print_table(["what", "images/s (median)", "runs (s)"], [
        ("attrtag tag, whole command (model load, decode, resize, infer, write)", f"{n / t_e2e:.1f}",
         " ".join(f"{t:.2f}" for t in times["attrtag tag"])),
        ("attrtag tag, its own rate (tagging loop, excludes model load)", f"{median(cli_rates):.1f}",
         " ".join(f"{r:.1f}/s" for r in cli_rates)),
        (f"model only, ONNX Runtime ({', '.join(ort_model.providers)})", f"{n / t_model:.1f}",
         " ".join(f"{t:.2f}" for t in times["model only"])),
    ])
    return finish("end-to-end", args, {
        "settings": settings_of(ort_model, args, providers=ort_model.providers, decode_workers=workers,
                                worker_kind="thread", output="jsonl", records_written=records, schema=schema_src,
                                run="in-process attrtag.cli.main(['tag', ...])"),
        "seconds": times, "cli_reported_images_per_s": cli_rates,
        "images_per_s": {"attrtag_tag": n / t_e2e, "attrtag_tag_loop": median(cli_rates), "model_only": n / t_model},
        "ratio": ratio, "ratio_loop_only": ratio_loop, "target": ">= 0.9", "pass": ratio >= 0.9,
        "summary": f"end-to-end / model-only images/s {ratio:.3f} (tagging loop alone {ratio_loop:.3f})",
    })


# -- 3. int8 vs fp32 ------------------------------------------------------------------------------
def filtered_manifest(src: Path, split: str, dest: Path) -> Path:
    """A copy of the manifest holding only ``split`` rows, with absolute image paths."""
    base = src.resolve().parent
    absolute = lambda p: p if os.path.isabs(p) else str(base / p)  # noqa: E731
    if src.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        dest = dest.with_suffix(".jsonl")
        with src.open(encoding="utf-8") as f, dest.open("w", encoding="utf-8") as out:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    if split == "all" or row.get("split") == split:
                        out.write(json.dumps({**row, "path": absolute(row["path"])}) + "\n")
        return dest
    with src.open(newline="", encoding="utf-8-sig") as f, dest.open("w", newline="", encoding="utf-8") as out:
        reader = csv.DictReader(f)
        if split != "all" and "split" not in (reader.fieldnames or []):
            raise SystemExit(f"--manifest {src}: no 'split' column; pass --split all")
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        for row in reader:
            if split == "all" or row.get("split") == split:
                writer.writerow({**row, "path": absolute(row["path"])})
    return dest


def bench_int8(args: argparse.Namespace) -> dict[str, Any]:
    """int8 (static QDQ, :func:`attrtag_onnx.quantize.quantize_int8`) vs fp32 ONNX Runtime on the CPU."""
    from attrtag_onnx.export import export_onnx
    from attrtag_onnx.quantize import quantize_int8

    manifest = Path(args.manifest or Path(args.images).parent / "labels.csv")
    if not manifest.is_file():
        raise SystemExit(f"--manifest {manifest}: not found (int8 needs labelled images for calibration and accuracy)")
    trained = args.checkpoint is not None
    if not trained:
        log("no --checkpoint: random-init model; the accuracy figures below are MEANINGLESS (speed is fine)")

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        if trained:
            fp32_path = Path(tmp) / "fp32.onnx"
            t0 = time.perf_counter()
            export_onnx(args.checkpoint, fp32_path)
            log(f"exported {args.checkpoint} in {time.perf_counter() - t0:.0f}s")
            schema_src = f"from {args.checkpoint}"
        else:
            schema, schema_src = load_schema(args)
            fp32_path = build_onnx(args, schema, backbone=args.backbone, image_size=args.image_size)
        eval_manifest = filtered_manifest(manifest, args.split, Path(tmp) / "eval.csv")
        t0 = time.perf_counter()
        q = quantize_int8(fp32_path, Path(tmp) / "int8.onnx", eval_manifest, calib_images=args.calib_images,
                          eval_images=args.eval_images, batch_size=args.batch_size, seed=args.seed)
        quant_s = time.perf_counter() - t0
        log(f"quantised and compared on {q.eval_images} images in {quant_s:.0f}s")

        fp32, int8 = open_ort(fp32_path, args.threads), open_ort(q.path, args.threads)
        batches = decode(list_images(args.images, args.n_images), fp32.preprocessing, args.batch_size)
        fp32(batches[0]), int8(batches[0])  # warm-up
        times = interleaved({"fp32": lambda: run_batches(fp32, batches), "int8": lambda: run_batches(int8, batches)},
                            args.repeats)
        int8_mb, fp32_mb = q.path.stat().st_size / MB, fp32_path.stat().st_size / MB

    n = args.n_images
    t32, t8 = median(times["fp32"]), median(times["int8"])
    speedup = t32 / t8
    print_table(["model", "images/s (median)", "runs (s)", "file MB"], [
        (f"fp32 ({', '.join(fp32.providers)})", f"{n / t32:.1f}", " ".join(f"{t:.2f}" for t in times["fp32"]),
         f"{fp32_mb:.1f}"),
        (f"int8 ({', '.join(int8.providers)})", f"{n / t8:.1f}", " ".join(f"{t:.2f}" for t in times["int8"]),
         f"{int8_mb:.1f}"),
    ])
    print()
    note = "" if trained else " (random init: MEANINGLESS)"
    print(f"accuracy on split '{args.split}' of {manifest}, {q.eval_images} images "
          f"(calibrated on {q.calib_images} of them){note}:")
    rows, acc, ok_acc = [], {}, True
    for g in q.groups:
        d = g.delta_points
        within = d is None or abs(d) <= 1.0
        ok_acc &= within
        pct = lambda a: "-" if a is None else f"{100 * a:.2f}"  # noqa: E731
        rows.append((g.group, g.labelled, pct(g.fp32), pct(g.int8), "-" if d is None else f"{d:+.2f}",
                     "ok" if within else "OVER"))
        acc[g.group] = {"labelled": g.labelled, "fp32": g.fp32, "int8": g.int8, "delta_points": d}
    print_table(["group", "labelled", "fp32 acc %", "int8 acc %", "change (points)", "within 1"], rows)
    return finish("int8", args, {
        "settings": settings_of(fp32, args, providers=fp32.providers, checkpoint=args.checkpoint or "random init",
                                schema=schema_src, manifest=str(manifest), split=args.split,
                                calib_images=q.calib_images, eval_images=q.eval_images,
                                accuracy_meaningful=trained),
        "seconds": times, "images_per_s": {"fp32": n / t32, "int8": n / t8}, "speedup": speedup,
        "accuracy": acc, "max_abs_prob_diff": q.max_abs_diff, "quantize_seconds": quant_s,
        "file_mb": {"fp32": fp32_mb, "int8": int8_mb},
        "target": ">= 1.5x speed-up, and every group's accuracy change within +-1 point",
        # None: the speed passed but a random-init model cannot say anything about accuracy.
        "pass": (ok_acc if trained else None) if speedup >= 1.5 else False,
        "summary": f"int8 / fp32 speed-up {speedup:.2f}x, accuracy "
        + ("within 1 point" if ok_acc else "NOT within 1 point") + ("" if trained else " (random init: not judged)"),
    })


# -- 4. grouped vs separate -----------------------------------------------------------------------
def bench_grouped(args: argparse.Namespace) -> dict[str, Any]:
    """One model with G groups vs G single-group models (same backbone), model-only ONNX Runtime."""
    from attrtag.schema import Schema

    schema, schema_src = load_schema(args)
    grouped = open_ort(build_onnx(args, schema, backbone=args.backbone, image_size=args.image_size), args.threads)
    separate = [open_ort(build_onnx(args, Schema((g,)), backbone=args.backbone, image_size=args.image_size),
                         args.threads) for g in schema]
    batches = decode(list_images(args.images, args.n_images), grouped.preprocessing, args.batch_size)
    for m in (grouped, *separate):
        m(batches[0])  # warm-up
    per_model: list[list[float]] = [[] for _ in separate]
    calls = [0]

    def run_separate() -> float:
        # Reverse the models' order on alternate calls too; the sum is what is compared.
        order = list(range(len(separate)))[:: 1 if calls[0] % 2 == 0 else -1]
        calls[0] += 1
        for i in order:
            per_model[i].append(run_batches(separate[i], batches))
        return sum(per_model[i][-1] for i in order)

    times = interleaved({"grouped": lambda: run_batches(grouped, batches), "separate (sum)": run_separate},
                        args.repeats)
    G, n = len(schema), args.n_images
    t_g, t_s = median(times["grouped"]), median(times["separate (sum)"])
    ratio, target = t_g / t_s, 1.1 / G
    rows = [(f"grouped, {G} groups ({', '.join(f'{g.name} {len(g)}' for g in schema)})", f"{t_g:.3f}",
             f"{n / t_g:.1f}")]
    rows += [(f"separate: {g.name} ({len(g)} values)", f"{median(ts):.3f}", f"{n / median(ts):.1f}")
             for g, ts in zip(schema, per_model)]
    rows.append((f"separate, sum of {G}", f"{t_s:.3f}", f"{n / t_s:.1f}"))
    print_table(["model(s)", f"seconds for {n} images (median)", "images/s"], rows)
    return finish("grouped", args, {
        "settings": settings_of(grouped, args, providers=grouped.providers, schema=schema_src,
                                measured="model-only ONNX Runtime, pre-decoded inputs"),
        "seconds": {**times, **{f"separate:{g.name}": ts for g, ts in zip(schema, per_model)}},
        "ratio": ratio, "target": f"<= 1.1/G = {target:.3f}", "pass": ratio <= target,
        "summary": f"grouped / sum(separate) time {ratio:.3f} with G={G} (1/G = {1 / G:.3f})",
    })


# -- 5. memory ------------------------------------------------------------------------------------
def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes ({} once it has exited)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    """``attrtag tag`` in a subprocess over ``--n-images`` distinct names; RSS sampled from /proc.

    The record count comes from the output file (one line per image, flushed per batch), so an
    RSS sample is tied to how many images the process has finished when it was taken.
    """
    schema, schema_src = load_schema(args)
    onnx_path = build_onnx(args, schema, backbone=args.backbone, image_size=args.image_size)
    from attrtag.runtime.onnx_backend import read_onnx_card

    meta = read_onnx_card(onnx_path)
    n, mark = args.n_images, args.mark
    source = list_images(args.images, None)[:n]
    workers = args.workers if args.workers is not None else plan_threads(backend="onnx", on_gpu=False).decode_workers
    samples: list[tuple[float, int, int, int]] = []  # (seconds, records, rss, hwm)
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        # Distinct names (a list file repeating paths would be de-duplicated by the input expansion).
        links = Path(tmp) / "images"
        links.mkdir()
        for i in range(n):
            os.symlink(source[i % len(source)], links / f"{i:06d}.jpg")
        out = Path(tmp) / "tags.jsonl"
        cmd = [sys.executable, "-m", "attrtag", "tag", str(onnx_path), str(links), "--out", str(out), "--no-progress",
               "--device", "cpu", "--threads", str(args.threads), "--batch-size", str(args.batch_size),
               "--workers", str(workers)]
        log("running " + " ".join(cmd))
        with open(Path(tmp) / "stdout", "w+") as so, open(Path(tmp) / "stderr", "w+") as se:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=so, stderr=se)
            lines, pos = 0, 0
            while proc.poll() is None:
                mem = _proc_status(proc.pid)
                if out.exists():
                    with out.open("rb") as f:
                        f.seek(pos)
                        chunk = f.read()
                    pos += len(chunk)
                    lines += chunk.count(b"\n")
                if mem:
                    samples.append((time.perf_counter() - t0, lines, mem["VmRSS"], mem["VmHWM"]))
                time.sleep(args.poll)
            status = proc.returncode
            elapsed = time.perf_counter() - t0
            so.seek(0), se.seek(0)
            stdout, stderr = so.read(), se.read()
        with out.open("rb") as f:
            records = sum(1 for _ in f)  # records only: the header is in FILE.meta.json
    if status != 0 or records != n:
        raise SystemExit(f"attrtag tag failed (status {status}, {records} of {n} records):\n{stdout}\n{stderr[-2000:]}")

    at_mark = next((s for s in samples if s[1] >= mark), None)
    last = samples[-1]
    # VmHWM of the last sample, not getrusage's ru_maxrss: Linux carries the forking parent's
    # high-water mark across exec into ru_maxrss, so it would report this script's own size.
    peak = samples[-1][3]
    if at_mark is None:
        raise SystemExit(f"no RSS sample at {mark} records (the run was too quick; lower --poll)")
    growth_rss, growth_peak = last[2] / at_mark[2] - 1, peak / at_mark[3] - 1
    print_table(["images written", "seconds", "RSS MB", "peak RSS so far MB"], [
        (at_mark[1], f"{at_mark[0]:.1f}", f"{at_mark[2] / MB:.1f}", f"{at_mark[3] / MB:.1f}"),
        (last[1], f"{last[0]:.1f}", f"{last[2] / MB:.1f}", f"{last[3] / MB:.1f}"),
    ])
    print(f"RSS growth {at_mark[1]} -> {last[1]} images: {100 * growth_rss:+.1f}%; "
          f"peak growth to the end: {100 * growth_peak:+.1f}%; {records / elapsed:.0f} images/s overall")
    h, w = meta.preprocessing.input_size
    worst = max(growth_rss, growth_peak)
    step = max(1, len(samples) // 200)
    return finish("memory", args, {
        "settings": {"backbone": meta.backbone, "image_size": f"{h}x{w}", "groups": len(meta.schema),
                     "batch_size": args.batch_size, "threads": args.threads, "decode_workers": workers,
                     "n_images": n, "distinct_source_images": len(source), "mark": mark, "poll_s": args.poll,
                     "run": "subprocess python -m attrtag tag, JSONL output", "schema": schema_src},
        "rss_at_mark_mb": at_mark[2] / MB, "rss_at_end_mb": last[2] / MB, "records_at_end_sample": last[1],
        "peak_at_mark_mb": at_mark[3] / MB, "peak_mb": peak / MB, "growth_rss": growth_rss,
        "growth_peak": growth_peak, "seconds": elapsed,
        "samples": [{"s": round(s[0], 2), "records": s[1], "rss_mb": round(s[2] / MB, 1),
                     "hwm_mb": round(s[3] / MB, 1)} for s in samples[::step]],
        "target": "RSS and peak RSS grow <= 10% from the mark to the end", "pass": worst <= 0.10,
        "summary": f"RSS {at_mark[2] / MB:.0f} MB at {at_mark[1]} images, {last[2] / MB:.0f} MB at {last[1]} "
        f"(peak {peak / MB:.0f} MB), growth {100 * worst:+.1f}%",
    })


# -- command line ---------------------------------------------------------------------------------
RUNNERS = {"ort-vs-torch": bench_ort_vs_torch, "end-to-end": bench_end_to_end, "int8": bench_int8,
           "grouped": bench_grouped, "memory": bench_memory}
# Sized so that `all` takes about 15 minutes on a quiet 2-core CPU (see scripts/README.md).
DEFAULTS: dict[str, dict[str, Any]] = {
    "ort-vs-torch": dict(backbone="resnetv2_50", image_size=224, batch_size=32, n_images=192, repeats=5),
    "end-to-end": dict(backbone="resnetv2_50", image_size=224, batch_size=32, n_images=768, repeats=3),
    "int8": dict(backbone="resnetv2_50", image_size=224, batch_size=32, n_images=192, repeats=5),
    "grouped": dict(backbone="resnetv2_50", image_size=224, batch_size=32, n_images=96, repeats=5),
    "memory": dict(backbone="resnet18", image_size=64, batch_size=32, n_images=20000),
}

#: ``all --smoke``: proves every benchmark runs, in about a minute; the figures mean nothing.
SMOKE = {
    "*": ["--backbone", "test_resnet", "--image-size", "64", "--batch-size", "8", "--n-images", "32", "--repeats", "3"],
    "int8": ["--backbone", "test_resnet", "--image-size", "64", "--batch-size", "8", "--n-images", "32",
             "--repeats", "3", "--calib-images", "16", "--eval-images", "64"],
    "memory": ["--backbone", "test_resnet", "--image-size", "32", "--n-images", "3000", "--mark", "500"],
}


def add_common(p: argparse.ArgumentParser, name: str) -> None:
    d = DEFAULTS[name]
    p.add_argument("--images", default=DEFAULT_IMAGES, help=f"image folder (default: {DEFAULT_IMAGES})")
    p.add_argument("--backbone", default=d["backbone"], help=f"timm backbone, random init (default: {d['backbone']})")
    p.add_argument("--image-size", type=int, default=d["image_size"], help=f"input size (default: {d['image_size']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help=f"default: {d['batch_size']}")
    p.add_argument("--threads", type=int, default=default_threads(), help="inference threads (default: CPUs usable)")
    p.add_argument("--n-images", type=int, default=d["n_images"], help=f"images (default: {d['n_images']})")
    if name != "memory":
        p.add_argument("--repeats", type=int, default=d["repeats"], help=f"timed repeats (default: {d['repeats']})")
    p.add_argument("--groups", nargs="+", default=DEFAULT_GROUPS, help="labels-table columns used as the schema")
    p.add_argument("--labels", help="labels table for the schema (default: labels.csv next to --images)")
    p.add_argument("--work-dir", default="runs/bench_tagging", help="cached models and JSON results")
    p.add_argument("--json", help="result file (default: <work-dir>/<benchmark>.json)")
    p.add_argument("--fresh", action="store_true", help="rebuild cached models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true", help="library INFO logs")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    helps = {"ort-vs-torch": "ONNX Runtime fp32 vs PyTorch eager, model only (target >= 2.0x)",
             "end-to-end": "attrtag tag vs model-only ONNX Runtime images/s (target >= 0.9)",
             "int8": "int8 vs fp32 speed (target >= 1.5x) and per-group accuracy (within 1 point)",
             "grouped": "one G-group model vs G single-group models (target <= 1.1/G)",
             "memory": "RSS of attrtag tag at 2,000 and 20,000 images (target: growth <= 10%%)"}
    for name in BENCHMARKS:
        p = sub.add_parser(name, help=helps[name], description=helps[name])
        add_common(p, name)
        if name in ("end-to-end", "memory"):
            p.add_argument("--workers", type=int, help="attrtag tag decode workers (default: its own, see attrtag.runtime.threads)")
        if name == "int8":
            p.add_argument("--checkpoint", help="trained checkpoint (without one: random init, accuracy meaningless)")
            p.add_argument("--manifest", help="labelled images (default: labels.csv next to --images)")
            p.add_argument("--split", default="test", help="manifest split to calibrate and evaluate on, or 'all'")
            p.add_argument("--calib-images", type=int, default=128, help="calibration images (default: 128)")
            p.add_argument("--eval-images", type=int, help="accuracy on the first K images of the split (default all)")
        if name == "memory":
            p.add_argument("--mark", type=int, default=2000, help="first RSS reading (default: 2000 images)")
            p.add_argument("--poll", type=float, default=0.05, help="RSS sampling interval, seconds")
    p = sub.add_parser("all", help="all five benchmarks with their defaults, then a summary")
    p.add_argument("--images", default=DEFAULT_IMAGES)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--work-dir", default="runs/bench_tagging")
    p.add_argument("--checkpoint", help="trained checkpoint for the int8 benchmark")
    p.add_argument("--manifest", help="manifest for the int8 benchmark")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--smoke", action="store_true",
                   help="tiny settings (test_resnet, a few dozen images) to check the script works; numbers mean nothing")
    p.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    # Configured before attrtag.cli.main runs in-process, whose basicConfig is then a no-op.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command != "all":
        log(f"== {args.command} ==")
        return RUNNERS[args.command](args)
    common = ["--images", args.images, "--threads", str(args.threads), "--work-dir", args.work_dir]
    common += ["--fresh"] * args.fresh + ["-v"] * args.verbose
    results, t0 = {}, time.perf_counter()
    for name in BENCHMARKS:
        extra = [] if name != "int8" else (["--checkpoint", args.checkpoint] * bool(args.checkpoint)
                                          + ["--manifest", args.manifest] * bool(args.manifest))
        if args.smoke:
            extra += SMOKE.get(name, SMOKE["*"])
        t = time.perf_counter()
        results[name] = main([name, *common, *extra])
        results[name]["wall_seconds"] = time.perf_counter() - t
    print(f"summary ({(time.perf_counter() - t0) / 60:.1f} min):")
    print_table(["benchmark", "result", "target", "verdict", "wall s"],
                [(k, r["summary"], r["target"], r["verdict"], f"{r['wall_seconds']:.0f}")
                 for k, r in results.items()])
    Path(args.work_dir, "all.json").write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
