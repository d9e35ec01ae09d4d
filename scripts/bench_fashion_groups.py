"""Fashion-products: grouped model with all labels / half the labels / separate models / sigmoid BCE.

Per-group validation accuracy (and macro-F1, with denominators) of
  (a) one grouped-softmax model, all labels;
  (b) the same with 50% of each group's training labels removed at random;
  (c) one separate model per group trained on that group's labels alone (same epochs and resolution each);
  (d) the independent-sigmoid + BCE-over-one-hot recipe on the labels of (a).
All runs share backbone, resolution, epochs, batch size, learning rate, seed and training subset.

    python scripts/bench_fashion_groups.py --data ../shared/data/fashion-products --out runs/bench_fashion
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from attrtag.training.config import TrainConfig
from attrtag.data.manifest import Manifest, read_manifest
from attrtag.data.tables import drop_labels, schema_from_table
from attrtag.schema import Schema
from attrtag.training.loop import train

DEFAULT_GROUPS = ["masterCategory", "gender", "usage", "baseColour"]


def run_one(cfg: TrainConfig, schema: Schema, recs: list, out: Path) -> dict:
    res = train(cfg, schema, Manifest(source="bench", schema=schema, samples=recs), out)
    best = max(res.history, key=lambda h: h.get("val_score", 0))  # model selection as train does (best.pt)
    return {g: {"acc": best[f"val_acc/{g}"], "f1": best[f"val_f1/{g}"], "n": best[f"val_n/{g}"]} for g in schema.names} | {
        "_epoch": best["epoch"], "_images_per_s": res.history[-1]["train_images_per_s"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/fashion-products")
    ap.add_argument("--out", default="runs/bench_fashion")
    ap.add_argument("--groups", nargs="+", default=DEFAULT_GROUPS)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--train-images", type=int, default=0, help="use the first N training images (0 = all)")
    ap.add_argument("--val-images", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=["a", "b", "c", "d"], default=["a", "b", "c", "d"])
    args = ap.parse_args(argv)

    labels = Path(args.data) / "labels.csv"
    schema = schema_from_table(labels, args.groups)
    full = read_manifest(labels, schema)
    tr, va = full.split("train"), full.split("val")
    if args.train_images:
        tr = tr[: args.train_images]
    if args.val_images:
        va = va[: args.val_images]
    cfg = TrainConfig(backbone=args.backbone, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, workers=args.workers, warmup_epochs=0.5, seed=0)
    out = Path(args.out)
    results: dict = {"config": cfg.to_dict(), "train_images": len(tr), "val_images": len(va), "groups": args.groups}
    if "a" in args.only:
        results["a_all_labels"] = run_one(cfg, schema, tr + va, out / "a")
        print("a", results["a_all_labels"], flush=True)
    if "b" in args.only:
        results["b_half_labels"] = run_one(cfg, schema, drop_labels(tr, 0.5, seed=0) + va, out / "b")
        print("b", results["b_half_labels"], flush=True)
    if "c" in args.only:
        sep = {}
        for j, g in enumerate(args.groups):
            sub = Schema((schema[g],))
            recs = [replace(r, labels=(r.labels[j],)) for r in tr + va]
            sep[g] = run_one(cfg, sub, recs, out / f"c_{g}")[g]
        results["c_separate"] = sep
        print("c", sep, flush=True)
    if "d" in args.only:
        results["d_sigmoid_bce"] = run_one(replace(cfg, loss="sigmoid_bce"), schema, tr + va, out / "d")
        print("d", results["d_sigmoid_bce"], flush=True)

    keys = [k for k in ("a_all_labels", "b_half_labels", "c_separate", "d_sigmoid_bce") if k in results]
    print(f"\nval accuracy (macro-F1) per group; {len(tr)} train / {len(va)} val images, {args.backbone} {args.image_size}px, {args.epochs} epochs")
    print("| group | n val | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for g in args.groups:
        n = results[keys[0]][g]["n"]
        cells = [f"{100 * results[k][g]['acc']:.1f} ({100 * results[k][g]['f1']:.1f})" for k in keys]
        print(f"| {g} | {n} | " + " | ".join(cells) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
