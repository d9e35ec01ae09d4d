"""Fashion-products zero-shot: name article types the model never saw, from its predicted attributes.

One grouped-softmax model is trained on masterCategory, subCategory, gender, baseColour, usage
and season, with several article types held out of training entirely (no image of them in
training or in model selection). Every article type considered (seen and held out) gets a rule
written from its attributes, and the model's attribute distributions are scored against the
rules (:func:`attrtag.zeroshot.score_classes`) on the val and test splits. Reported on test:

* ZSL: top-1/top-5 accuracy averaged per class over the held-out types, choosing among them only
  (chance 1/#unseen);
* GZSL: every type a candidate; per-class accuracy on seen and on unseen types and their
  harmonic mean H, uncalibrated and with calibrated stacking (gamma chosen on val to maximise H);
  also, with the attribute priors of the training labels (DAP's division by the prior).

How the rules were written (this uses the table's labels, not images): for each article type and
each group, the values of that type's train+val rows (never test rows) sorted by frequency; the
fewest values that cover at least ``--cover`` (80%) of the labelled rows are kept, weighted by
their frequency, when there are at most ``--max-values`` (3) of them; otherwise (e.g. the colour
of T-shirts) the group is left unconstrained. That is what a curator reading the catalogue would
write ("Formal Shoes: Footwear, Shoes, Men, Formal, black or brown"), but it is read off the same
table the labels come from, so the rules are as good as rules can be: real hand-written rules
would be noisier. Held-out types were chosen so that every value their rules use still occurs in
training on other types (a subCategory value seen only on a held-out type could never be
predicted), and so that they differ from each other in their rules.

    python scripts/bench_fashion_zeroshot.py --data ../shared/data/fashion-products --out runs/bench_fashion_zs

A smoke run (minutes on a CPU; figures meaningless):

    python scripts/bench_fashion_zeroshot.py --backbone test_resnet --epochs 1 --train-images 300 \\
        --eval-images 200 --out /tmp/fzs
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import yaml

from attrtag.data.manifest import Manifest, Sample, read_manifest
from attrtag.data.tables import schema_from_table
from attrtag.evaluation.evaluate import compute_metrics, predict
from attrtag.runtime.torch_backend import TorchPredictor
from attrtag.schema import Schema
from attrtag.training.config import TrainConfig
from attrtag.training.loop import train
from attrtag.zeroshot.evaluation import ZeroShotReport, evaluate_zero_shot, format_zero_shot, labelled_scores
from attrtag.zeroshot.rules import Rules, lint

DEFAULT_GROUPS = ["masterCategory", "subCategory", "gender", "baseColour", "usage", "season"]
# Distinct from each other by subCategory/usage/colour, and every value they use is seen in
# training on other types (Bottomwear: Trousers, Shorts; Shoes: Casual Shoes, Heels; Ethnic:
# Kurtis; Bags: Backpacks, Clutches; Formal/Sports usage: Shirts, Track Pants, ...).
DEFAULT_UNSEEN = ["Jeans", "Formal Shoes", "Sports Shoes", "Kurtas", "Handbags"]
CLASS_COLUMN = "articleType"


def write_rules(records: list[Sample], schema: Schema, types: list[str], *, cover: float, max_values: int) -> dict:
    """``{"classes": {type: {group: {value: share}}}}`` from the labels of ``records`` (see the docstring)."""
    counts: dict[str, list[Counter]] = defaultdict(lambda: [Counter() for _ in schema.names])
    for r in records:
        for j, v in enumerate(r.labels):
            if v >= 0:
                counts[r.extra[CLASS_COLUMN]][j][v] += 1
    classes = {}
    for t in types:
        spec = {}
        for j, g in enumerate(schema.groups):
            c = counts[t][j]
            total = sum(c.values())
            if not total:
                continue
            kept, mass = [], 0
            for v, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])):
                kept.append((g.values[v], n))
                mass += n
                if mass >= cover * total:
                    break
            if len(kept) <= max_values:
                spec[g.name] = {v: round(n / total, 3) for v, n in kept}
        classes[t] = spec
    return {"classes": classes}


def priors_of(records: list[Sample], schema: Schema) -> dict[str, np.ndarray]:
    """Training label frequencies per group, add-one smoothed (no value has prior 0)."""
    y = np.array([r.labels for r in records])
    return {g.name: np.bincount(y[y[:, j] >= 0, j], minlength=len(g)) + 1.0 for j, g in enumerate(schema.groups)}


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def tables(reports: dict[str, ZeroShotReport]) -> str:
    """Markdown: ZSL per scoring, then GZSL per scoring and calibration, each with a chance row."""
    first = next(iter(reports.values()))
    chance = first.chance
    lines = ["| scoring | ZSL top-1 | ZSL top-5 |", "|---|---|---|",
             f"| chance | {pct(chance.get('zsl_top1'))} | {pct(chance.get('zsl_top5'))} |"]
    for name, r in reports.items():
        lines.append(f"| {name} | {pct(r.zsl.top1 if r.zsl else None)} | {pct(r.zsl.top5 if r.zsl else None)} |")
    lines += ["", "| scoring | GZSL calibration | seen | unseen | H | unseen images called seen |",
              "|---|---|---|---|---|---|",
              f"| chance | | {pct(chance.get('gzsl'))} | {pct(chance.get('gzsl'))} | {pct(chance.get('gzsl'))} | |"]
    for name, r in reports.items():
        for key, g in (("uncalibrated", r.gzsl), ("calibrated", r.gzsl_calibrated)):
            label = key if key == "uncalibrated" or g is None else f"gamma {g.gamma:.3g} (chosen on val)"
            cells = [pct(g.seen), pct(g.unseen), pct(g.harmonic)] if g else ["n/a"] * 3
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + f" | {pct(r.unseen_as_seen.get(key))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/fashion-products")
    ap.add_argument("--out", default="runs/bench_fashion_zs")
    ap.add_argument("--groups", nargs="+", default=DEFAULT_GROUPS)
    ap.add_argument("--unseen", nargs="+", default=DEFAULT_UNSEEN, help="article types held out of training")
    ap.add_argument("--min-images", type=int, default=30, help="article types with fewer rows are not considered")
    ap.add_argument("--cover", type=float, default=0.8, help="rules keep the values covering this share of a type")
    ap.add_argument("--max-values", type=int, default=3, help="more values than this: the group is left out")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--train-images", type=int, default=3000, help="random sample of the training images (0 = all)")
    ap.add_argument("--eval-images", type=int, default=0, help="random sample of each of val and test (0 = all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    labels = Path(args.data) / "labels.csv"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    schema = schema_from_table(labels, args.groups)
    manifest = read_manifest(labels, schema)
    sizes = Counter(r.extra[CLASS_COLUMN] for r in manifest.samples)
    types = [t for t, n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])) if n >= args.min_images]
    missing = [t for t in args.unseen if t not in types]
    if missing:
        raise SystemExit(f"--unseen: {missing} are not article types with >= {args.min_images} images")
    unseen = [t for t in types if t in args.unseen]
    seen = [t for t in types if t not in args.unseen]

    # Rules from the labels of train+val rows, for every type considered.
    rules_dict = write_rules([r for r in manifest.samples if r.split != "test"], schema, types,
                             cover=args.cover, max_values=args.max_values)
    rules = Rules.from_dict(rules_dict, schema, source="fashion rules")
    (out / "rules.yaml").write_text(yaml.safe_dump(rules.to_dict(), sort_keys=False, allow_unicode=True))
    for w in lint(rules, schema):
        print(f"warning: {w}")

    # Training data: every type but the held-out ones (small types too: more attribute labels).
    rng = random.Random(args.seed)
    held_out = set(args.unseen)
    train_recs = [r for r in manifest.split("train") if r.extra[CLASS_COLUMN] not in held_out]
    if args.train_images and len(train_recs) > args.train_images:
        train_recs = rng.sample(train_recs, args.train_images)
    val_seen = [r for r in manifest.split("val") if r.extra[CLASS_COLUMN] not in held_out]
    trained_values = {(g, v) for r in train_recs for g, v in zip(schema.names, r.labels) if v >= 0}
    for t in unseen:
        for c in rules[t].constraints:
            absent = [v for v in c.values if (c.group, schema[c.group].index(v)) not in trained_values]
            if absent:
                print(f"warning: rule of unseen '{t}' uses {c.group}={absent}, never seen in the training sample")

    cfg = TrainConfig(backbone=args.backbone, image_size=args.image_size, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, workers=args.workers, warmup_epochs=0.5,
                      seed=args.seed, device=args.device)
    print(f"training {args.backbone} {args.image_size}px, {args.epochs} epochs on {len(train_recs)} images "
          f"(held out: {', '.join(unseen)}); model selection on {len(val_seen)} val images of other types", flush=True)
    t0 = time.perf_counter()
    res = train(cfg, schema, Manifest(source=str(labels), schema=schema, samples=train_recs + val_seen), out / "run")
    train_s = time.perf_counter() - t0

    # Predictions on val and test images of every type considered.
    considered = set(types)
    predictor = TorchPredictor.from_checkpoint(res.best, device=args.device)
    preds, sample_rng = {}, random.Random(args.seed + 1)
    for split in ("val", "test"):
        recs = [r for r in manifest.split(split) if r.extra[CLASS_COLUMN] in considered]
        if args.eval_images and len(recs) > args.eval_images:
            recs = sample_rng.sample(recs, args.eval_images)
        preds[split] = predict(predictor, recs, batch_size=2 * args.batch_size, workers=args.workers)

    def scores(split: str, priors: dict | None = None):  # noqa: ANN202
        p = preds[split]
        return labelled_scores(p.probs, [r.extra[CLASS_COLUMN] for r in p.samples], rules, schema, priors=priors)

    reports = {
        "plain": evaluate_zero_shot(scores("test"), rules, seen=seen, unseen=unseen, val=scores("val")),
    }
    priors = priors_of(train_recs, schema)
    reports["priors"] = evaluate_zero_shot(scores("test", priors), rules, seen=seen, unseen=unseen,
                                           val=scores("val", priors))
    attr = {m.group: {"acc": m.accuracy, "f1": m.macro_f1, "n": m.labelled}
            for m in compute_metrics(schema, preds["test"])}

    results = {
        "config": cfg.to_dict(), "groups": args.groups, "seen": seen, "unseen": unseen,
        "train_images": len(train_recs), "train_seconds": train_s, "rules": rules_dict,
        "test_attribute_accuracy": attr, **{f"zero_shot_{k}": r.to_dict() for k, r in reports.items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))

    r = reports["plain"]
    print(format_zero_shot(r, title="\nzero-shot article types (test split, gamma chosen on val)"))
    n_test = r.images
    print(f"\n{len(seen)} seen + {len(unseen)} unseen article types; {len(train_recs)} training images; "
          f"{args.backbone} {args.image_size}px, {args.epochs} epochs; test images: {n_test['gzsl_seen']} seen-type, "
          f"{n_test['gzsl_unseen']} unseen-type; rules: {out / 'rules.yaml'}\n")
    print(tables({"attribute rules": reports["plain"], "rules + training priors (DAP)": reports["priors"]}))
    print("\nper unseen type, ZSL top-1 (test images):")
    print("| article type | images | top-1 |")
    print("|---|---|---|")
    for t, v in r.zsl_per_class.items():
        print(f"| {t} | {v['images']} | {100 * v['top1']:.1f} |")
    print("\nattribute accuracy on the test images (macro-F1):")
    print("| group | images | accuracy | macro-F1 |")
    print("|---|---|---|---|")
    for g, m in attr.items():
        acc = "n/a" if m["acc"] is None else f"{100 * m['acc']:.1f}"
        f1 = "n/a" if m["f1"] is None else f"{100 * m['f1']:.1f}"
        print(f"| {g} | {m['n']} | {acc} | {f1} |")
    print(f"\n({time.perf_counter() - t_start:.0f} s; results in {out / 'results.json'})")
    return results


if __name__ == "__main__":
    main()
