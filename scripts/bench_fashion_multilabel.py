"""Multi-label groups on real photos: thresholds, one multi-label group vs yes/no groups, partial labels.

The task: the fashion products' season, usage and most common base colours as ONE tag group (a
product is e.g. Summer + Casual + Blue: three values present, the others absent). Configurations,
each trained from scratch with every seed and scored on the test split:

  multi     one multi-label group, every value of every training image known
  yesno     the same task written as one exclusive yes/no group per value (what a user had to do
            before multi-label groups), each tag decided at 0.5
  partial   one multi-label group with 50% of the (image, value) labels unknown, at random

For ``multi`` and ``partial`` the test figures are computed twice on the same predictions: with
each value's threshold chosen on the val split (what the model card carries) and with one fixed
0.5. Per configuration: mAP, macro-F1, micro-F1, mean accuracy (mA) and training images/s, mean
and spread over the seeds. Results are appended to OUT/results.jsonl as each run ends; a rerun
skips the runs already there.

    python scripts/bench_fashion_multilabel.py --out runs/bench_multilabel
    python scripts/bench_fashion_multilabel.py --smoke    # a minute: proves it runs; numbers mean nothing
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import attrtag
from attrtag.data.manifest import read_manifest
from attrtag.evaluation.evaluate import predict
from attrtag.evaluation.multilabel import multilabel_metrics
from attrtag.model import load_checkpoint
from attrtag.runtime.torch_backend import TorchPredictor
from attrtag.schema import Group, Schema

CONFIGS = ("multi", "yesno", "partial")
FIGURES = ("mean_ap", "macro_f1", "micro_f1", "mean_accuracy")


def tag_values(rows: list[dict[str, str]], colours: int) -> list[str]:
    """The tag group's values: every season and usage, and the ``colours`` most common base colours."""
    common = [c for c, _ in Counter(r["baseColour"] for r in rows if r["baseColour"] != "NA").most_common(colours)]
    values = sorted({r["season"] for r in rows} - {"NA"}) + sorted({r["usage"] for r in rows} - {"NA"}) + common
    assert len(set(values)) == len(values), "a season, usage and colour share a name"
    return values


def present(row: dict[str, str], values: list[str]) -> list[int]:
    """1 where the product has the value (season, usage or colour), else 0."""
    have = {row["season"], row["usage"], row["baseColour"]}
    return [int(v in have) for v in values]


def write_manifests(data: Path, out: Path, args: argparse.Namespace) -> tuple[list[str], dict[str, Path]]:
    """The three manifests (and schemas) over the same images: multi, yes/no groups, partial labels."""
    rows = [r for r in csv.DictReader(open(data / "labels.csv"))]
    values = tag_values(rows, args.colours)
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    take = {"train": args.train_images, "val": args.val_images, "test": args.test_images}
    chosen = [r for s, rs in by_split.items() for r in (rs[: take[s]] if take[s] else rs)]
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    rng = random.Random(0)  # which labels the partial manifest hides: the same for every seed's run
    multi, yesno, partial = [], [], []
    for r in chosen:
        y = present(r, values)
        path = str((data / r["path"]).resolve())
        multi.append([path, "|".join(v for v, k in zip(values, y) if k) or "[]", r["split"]])
        yesno.append([path, *("yes" if k else "no" for k in y), r["split"]])
        hidden = [v for v in values if r["split"] != "train" or rng.random() >= 0.5]
        cell = "|".join(("+" if k else "-") + v for v, k in zip(values, y) if v in hidden)
        partial.append([path, cell, r["split"]])
    for name, header, body in (("multi", ["path", "tags", "split"], multi),
                               ("yesno", ["path", *[_yn(v) for v in values], "split"], yesno),
                               ("partial", ["path", "tags", "split"], partial)):
        with open(out / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows([header, *body])
        files[name] = out / f"{name}.csv"
    multi_schema = {"groups": {"tags": {"kind": "multi", "values": values}}}
    (out / "multi.yaml").write_text(json.dumps(multi_schema))
    (out / "yesno.yaml").write_text(json.dumps({"groups": {_yn(v): ["no", "yes"] for v in values}}))
    return values, files


def _yn(value: str) -> str:
    return "is_" + value.replace(" ", "_")


def score(ckpt: Path, manifest: Path, schema: Schema, values: list[str], workers: int) -> dict[str, Any]:
    """Test figures of a run: multi-label models at their card's thresholds and at 0.5; yes/no at 0.5."""
    card = load_checkpoint(ckpt)["card"]
    samples = read_manifest(manifest, schema).split("test")
    preds = predict(TorchPredictor.from_checkpoint(ckpt, device="cpu"), samples, batch_size=128, workers=workers)
    group = Group("tags", tuple(values), "multi")
    if schema.multi:
        probs, labels = preds.probs["tags"], preds.targets[:, schema.multi_slices["tags"]]
        tuned = multilabel_metrics(group, probs, labels, card.decision_thresholds["tags"])
    else:  # P(yes) of each yes/no group is the value's score; its label is yes (1) or no (0)
        probs = np.stack([preds.probs[_yn(v)][:, 1] for v in values], 1)
        labels = preds.targets[:, : len(values)]
        tuned = None
    fixed = multilabel_metrics(group, probs, labels, (0.5,) * len(values))
    out = {f"fixed/{k}": getattr(fixed, k) for k in FIGURES}
    if tuned is not None:
        out.update({f"tuned/{k}": getattr(tuned, k) for k in FIGURES})
    out["per_value_f1"] = {v.value: [v.f1, (tuned.values[i].f1 if tuned else None)] for i, v in enumerate(fixed.values)}
    return out


def run_one(config: str, seed: int, values: list[str], files: dict[str, Path], out: Path,
            args: argparse.Namespace) -> dict[str, Any]:
    kind = "yesno" if config == "yesno" else "multi"
    schema = Schema.load(out / f"{kind}.yaml")
    run_dir = out / "runs" / f"{config}-s{seed}"
    t0 = time.perf_counter()
    result = attrtag.train(schema, files[config], run_dir, backbone=args.backbone, image_size=args.image_size,
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=0.5,
                           seed=seed, workers=args.workers, device="cpu", overwrite=True)
    seconds = time.perf_counter() - t0
    figures = score(result.last, files[config], schema, values, args.workers)
    rate = statistics.median(h["train_images_per_s"] for h in result.history)
    return {"config": config, "seed": seed, "train_seconds": seconds, "train_images_per_s": rate, **figures}


def table(results: list[dict[str, Any]]) -> str:
    """Mean ± sd over the seeds, in points; one row per configuration and way of deciding."""
    lines = ["| configuration | decided at | seeds | mAP | macro-F1 | micro-F1 | mA | train images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for config in CONFIGS:
        rows = [r for r in results if r["config"] == config]
        for how in ("tuned", "fixed"):
            if not rows or f"{how}/mean_ap" not in rows[0]:
                continue
            cells = [_cell([100 * r[f"{how}/{k}"] for r in rows if r[f"{how}/{k}"] is not None]) for k in FIGURES]
            speed = _cell([r["train_images_per_s"] for r in rows])
            label = "val-chosen thresholds" if how == "tuned" else "0.5"
            lines.append(f"| {config} | {label} | {len(rows)} | {' | '.join(cells)} | {speed} |")
    return "\n".join(lines)


def _cell(xs: list[float]) -> str:
    if not xs:
        return ""
    return f"{statistics.mean(xs):.1f} ±{statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The learning benchmark's budget (bench_fashion_groups.py), so that the figures compare.
    for flag, default, what in (
        ("--data", "../shared/data/fashion-products", "the fashion-products folder"),
        ("--out", "runs/bench_multilabel", "manifests, runs and results.jsonl"),
        ("--backbone", "resnet18", "timm backbone, random initialisation"),
        ("--image-size", 64, "input size"), ("--epochs", 3, "epochs"), ("--batch-size", 64, "batch size"),
        ("--lr", 2e-3, "learning rate"), ("--colours", 8, "most common base colours in the tag group"),
        ("--train-images", 2000, "the first N training images (0 = all)"),
        ("--val-images", 400, "the first N val images, where thresholds are chosen (0 = all)"),
        ("--test-images", 0, "the first N test images (0 = all)"), ("--workers", 2, "decode workers"),
    ):
        ap.add_argument(flag, type=type(default), default=default, help=f"{what} (default: {default})")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument("--smoke", action="store_true", help="test_resnet, 32 px, 128 images, 1 epoch, 1 seed")
    args = ap.parse_args()
    if args.smoke:
        args.backbone, args.image_size, args.epochs, args.seeds = "test_resnet", 32, 1, [0]
        args.train_images, args.val_images, args.test_images = 128, 64, 64
    out = Path(args.out)
    values, files = write_manifests(Path(args.data), out, args)
    print(f"tag group: {len(values)} values ({', '.join(values)})")
    done_file = out / "results.jsonl"
    results = [json.loads(line) for line in done_file.read_text().splitlines()] if done_file.exists() else []
    for seed in args.seeds:
        for config in args.only:
            if any(r["config"] == config and r["seed"] == seed for r in results):
                continue
            r = run_one(config, seed, values, files, out, args)
            results.append(r)
            with open(done_file, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{config} seed {seed}: mAP {100 * r['fixed/mean_ap']:.1f}, {r['train_seconds']:.0f} s", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
