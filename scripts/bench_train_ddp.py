"""Training images/s with 1 and 2 processes (torchrun), and the communication time per step.

Each measurement is one ``torchrun --standalone --nproc_per_node P`` launch of this script in
``--worker`` mode, which trains through the product's own code (``prepare_run``, the
global-batch sampler, ``train_batch`` with DDP, gloo on the CPU / NCCL on CUDA) on real photos:

- images/s: global batch / median wall time of a step (decode + augment in the process, no
  loader workers, so the two settings load data the same way; forward, backward, all-reduces).
- gradient all-reduce time (exposed): median step with DDP's gradient all-reduce minus median
  step under ``no_sync()`` (the same step without it); the two kinds alternate, step by step.
- small all-reduces: the label counts and the loss the loop all-reduces each step, timed alone.

Settings are ``PROCESSES x THREADS`` (default ``1x2 2x1``: the two cores of this machine
shared out either way; add ``1x1`` for a baseline that a busy machine disturbs less, since a
2-thread process stalls at every OpenMP barrier whose partner thread is descheduled). Launches
alternate (A B, B A, ...) and each setting's median over ``--repeats`` is reported with the
ratios. The load average before each launch is recorded: anything else running shows there.

Photos: the fashion-products thumbnails (224 px) upscaled to ``--photo-size`` (default 896 px,
JPEG q90) stand in for full-size photos, so decoding costs what users' photos cost; they are
written once under ``--out``.

    python scripts/bench_train_ddp.py                      # 3-5 min per setting on a 2-core CPU
    python scripts/bench_train_ddp.py --smoke              # ~1 min: proves it runs; numbers mean nothing
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-products"
GROUPS = ["masterCategory", "gender", "usage", "baseColour"]


def photos(data: Path, out: Path, n: int, size: int) -> Path:
    """A manifest of ``n`` training photos of ``data``, upscaled to ``size`` px (0: as they are)."""
    from PIL import Image

    rows = [r for r in csv.DictReader(open(data / "labels.csv")) if r["split"] == "train"][:n]
    folder = out / f"photos{size}"
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        src = data / r["path"]
        if size:
            dst = folder / Path(r["path"]).name
            if not dst.exists():
                with Image.open(src) as im:
                    im.convert("RGB").resize((size, size), Image.BICUBIC).save(dst, quality=90)
            r["path"] = str(dst.resolve())
        else:
            r["path"] = str(src.resolve())
    manifest = out / f"manifest{size}_{n}.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def worker(args: argparse.Namespace) -> None:
    """One torchrun process: time training steps; rank 0 writes the figures to ``--result``."""
    import torch

    from attrtag.data.loader import epoch_batches, make_loader
    from attrtag.data.manifest import read_manifest
    from attrtag.data.tables import schema_from_table
    from attrtag.training.config import TrainConfig
    from attrtag.training.distributed import init_distributed
    from attrtag.training.loop import prepare_run, train_batch

    ctx = init_distributed(args.device)
    schema = schema_from_table(Path(args.data) / "labels.csv", GROUPS)
    manifest = read_manifest(args.manifest, schema)
    steps = 1 + 2 * args.steps  # one warm-up, then alternately with and without the gradient all-reduce
    cfg = TrainConfig(backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size, workers=0,
                      device=args.device, epochs=1, warmup_epochs=0, max_steps_per_epoch=steps)
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare_run(cfg, schema, manifest, Path(tmp), None, ctx)
    run.model.train()
    batches = epoch_batches(len(run.train_set), cfg.batch_size, steps=run.steps_per_epoch, seed=0, epoch=0,
                            rank=ctx.rank, world_size=ctx.world_size)
    it = iter(make_loader(run.train_set, batches=batches, workers=0, epoch=0))
    sync = run.device.type == "cuda"
    times: dict[str, list[float]] = {"load": [], "synced": [], "no_sync": []}
    for step in range(len(batches)):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        skip = ctx.active and step % 2 == 0  # odd steps: the real step; even ones: no gradient all-reduce
        if skip:
            with run.net.no_sync():
                train_batch(run, batch)
        else:
            train_batch(run, batch)
        if sync:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if step:  # step 0 warms up
            times["load"].append(t1 - t0)
            times["no_sync" if skip else "synced"].append(t2 - t1)
    small = []
    x = torch.zeros(len(schema) + 2, device=run.device)
    for _ in range(50):
        t0 = time.perf_counter()
        ctx.all_reduce_sum(x)
        ctx.all_reduce_sum(x[:1].clone())
        if sync:
            torch.cuda.synchronize()
        small.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) if v else None for k, v in times.items()}
    step_s = med["load"] + med["synced"]
    result = {
        "processes": ctx.world_size, "threads": torch.get_num_threads(), "device": str(run.device),
        "images_per_s": args.batch_size / step_s, "step_s": step_s, "load_s": med["load"], "synced_s": med["synced"],
        "no_sync_s": med["no_sync"], "grad_allreduce_s": (med["synced"] - med["no_sync"]) if ctx.active else 0.0,
        "small_allreduce_s": statistics.median(small) if ctx.active else 0.0, "steps": times,
    }
    if ctx.is_main:
        Path(args.result).write_text(json.dumps(result))
    ctx.close()


def launch(args: argparse.Namespace, nproc: int, threads: int, manifest: Path, result: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__,
           "--worker", "--manifest", str(manifest), "--result", str(result), "--data", str(args.data),
           "--backbone", args.backbone, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--device", args.device]
    load = os.getloadavg()[0]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return {**json.loads(result.read_text()), "load_avg_before": load}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default="runs/bench_train_ddp")
    ap.add_argument("--backbone", default="resnetv2_50")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="the global batch (split across processes)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps of each kind (synced / no_sync) per launch")
    ap.add_argument("--repeats", type=int, default=3, help="launches per setting")
    ap.add_argument("--settings", nargs="+", default=["1x2", "2x1"], help="PROCESSESxTHREADS, e.g. 1x2 2x1 1x1")
    ap.add_argument("--photo-size", type=int, default=896, help="upscale the thumbnails to this (0: keep 224 px)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny model and sizes: proves the script runs")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--manifest", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.smoke:
        args.backbone, args.image_size, args.steps, args.repeats, args.photo_size = "test_resnet", 64, 2, 1, 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = photos(Path(args.data), out, args.batch_size * (1 + 2 * args.steps), args.photo_size)
    runs: dict[str, list[dict]] = {s: [] for s in args.settings}
    for r in range(args.repeats):
        for setting in (args.settings if r % 2 == 0 else args.settings[::-1]):
            nproc, threads = (int(x) for x in setting.split("x"))
            res = launch(args, nproc, threads, manifest, out / "worker.json")
            runs[setting].append(res)
            print(f"  repeat {r + 1}, {setting}: {res['images_per_s']:.2f} images/s "
                  f"(load avg {res['load_avg_before']:.1f})", flush=True)
    keys = ("images_per_s", "step_s", "load_s", "synced_s", "grad_allreduce_s", "small_allreduce_s")
    med = {s: {k: statistics.median(x[k] for x in v) for k in keys} for s, v in runs.items()}
    summary = {
        "backbone": args.backbone, "image_size": args.image_size, "global_batch": args.batch_size,
        "photo_size": args.photo_size or 224, "device": args.device, "repeats": args.repeats, "steps": args.steps,
        "median": med, "runs": runs,
        "ratios": {f"{a} / {b}": med[a]["images_per_s"] / med[b]["images_per_s"]
                   for a in args.settings for b in args.settings if int(a.split("x")[0]) > int(b.split("x")[0])},
    }
    (out / "result.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{args.backbone} {args.image_size} px, global batch {args.batch_size}, {summary['photo_size']} px JPEGs, "
          f"{args.device}, median of {args.repeats} launches x {args.steps} steps:\n")
    print("| processes x threads | images/s | step (ms) | data (ms) | grad all-reduce, exposed (ms) "
          "| small all-reduces (ms) |")
    print("|---|---|---|---|---|---|")
    for setting, m in med.items():
        print(f"| {setting} | {m['images_per_s']:.2f} | {1e3 * m['step_s']:.0f} | {1e3 * m['load_s']:.0f} | "
              f"{1e3 * m['grad_allreduce_s']:.1f} | {1e3 * m['small_allreduce_s']:.2f} |")
    for name, ratio in summary["ratios"].items():
        print(f"images/s {name}: {ratio:.3f}")
    return summary


if __name__ == "__main__":
    main()
