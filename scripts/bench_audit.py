"""The label audit (issue 21) on real photos: planted wrong labels, found by `attrtag.audit` and by cleanlab.

Settings, each with every seed, on the fashion products (train + val rows audited, test scored):

  flip10        10% of the labels of masterCategory, gender and subCategory changed to another
                value at random
  flip5-unk50   50% of every group's labels removed (unknown), then 5% of the remaining labels of
                the three groups changed

Runs per seed and setting (one JSON line each in OUT/results.jsonl as it ends; a rerun skips
those there): ``clean`` and ``noisy`` (ordinary `attrtag.train` runs, test accuracy and time),
``audit`` (`attrtag.audit`, method both, K = 2: its out-of-fold probabilities, training dynamics
and both, ranked and given to `cleanlab.filter.find_label_issues` as the peer), ``dynfull``
(`method=dynamics`: one training on every image) and, for flip10, ``fixed`` (the noisy manifest
with the audit's top-k suspects of each group set back to their true values, trained again).
Precision@k and recall@k per group, k = the labels changed in the group.

    nice -n 10 python scripts/bench_audit.py --out runs/bench_audit     # ~60 min, a shared 2-core CPU
    python scripts/bench_audit.py --smoke                               # a minute: numbers mean nothing
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import attrtag
from attrtag.auditing.run import DEFAULT_METHOD, chosen_probs
from attrtag.auditing.scores import score_labels
from attrtag.data.manifest import read_manifest
from attrtag.evaluation.evaluate import compute_metrics, predict
from attrtag.runtime.torch_backend import TorchPredictor
from attrtag.schema import Schema

GROUPS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")
FLIPPED = ("masterCategory", "gender", "subCategory")
SETTINGS = {"flip10": (0.10, 0.0), "flip5-unk50": (0.05, 0.5)}
VARIANTS = ("oof", "dynamics-half", "both", "dynamics-full")


def select_rows(data: Path, args: argparse.Namespace) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rows = list(csv.DictReader(open(data / "labels.csv")))
    for r in rows:
        r["path"] = str((data / r["path"]).resolve())
    pick = lambda s, n: [r for r in rows if r["split"] == s][: n or None]  # noqa: E731
    return pick("train", args.train_images) + pick("val", args.val_images), pick("test", args.test_images)


def schema_of(data: Path) -> Schema:
    rows = list(csv.DictReader(open(data / "labels.csv")))
    return Schema.from_dict({g: sorted({r[g] for r in rows} - {"NA"}) for g in GROUPS})


def corrupt(rows: list[dict[str, str]], schema: Schema, setting: str, seed: int
            ) -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, set[str]]]:
    """(clean rows with the unknowns of the setting, noisy rows, paths changed per group)."""
    flip, unknown = SETTINGS[setting]
    rng = random.Random(seed * 7919 + int(flip * 100))
    clean = [dict(r) for r in rows]
    for r in clean:
        for g in GROUPS:
            if unknown and rng.random() < unknown:
                r[g] = "NA"
    noisy = [dict(r) for r in clean]
    changed: dict[str, set[str]] = {}
    for g in FLIPPED:
        known = [r for r in noisy if r[g] != "NA"]
        chosen = rng.sample(known, round(flip * len(known)))
        for r in chosen:
            r[g] = rng.choice([v for v in schema[g].values if v != r[g]])
        changed[g] = {r["path"] for r in chosen}
    return clean, noisy, changed


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", *GROUPS, "split"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def options(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return dict(backbone=args.backbone, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                lr=args.lr, warmup_epochs=0.5, seed=seed, workers=args.workers, device="cpu")


def test_accuracy(ckpt: Path, test: Path, schema: Schema, workers: int) -> dict[str, float]:
    samples = read_manifest(test, schema).samples
    preds = predict(TorchPredictor.from_checkpoint(ckpt, device="cpu"), samples, batch_size=128, workers=workers)
    return {m.group: m.accuracy for m in compute_metrics(schema, preds)}


def train_run(manifest: Path, run_dir: Path, test: Path, schema: Schema, args: argparse.Namespace, seed: int
              ) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = attrtag.train(schema, manifest, run_dir, overwrite=True, **options(args, seed))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "accuracy": test_accuracy(result.last, test, schema, args.workers)}


def precision_recall(ranked: list[str], changed: set[str], k: int) -> tuple[float, float]:
    """Precision and recall of the first k paths (precision over those given when fewer than k)."""
    top = ranked[:k]
    hits = sum(p in changed for p in top)
    return (hits / len(top) if top else 0.0), (hits / k if k else 0.0)


def judge(result: Any, probs: dict[str, np.ndarray], changed: dict[str, set[str]], schema: Schema,
          rank_by: str = "self_confidence") -> dict[str, Any]:
    """Per flipped group: our ranking's P@k, R@k; our flagged set's; cleanlab's on the same probabilities."""
    out = {}
    for g in FLIPPED:
        j = schema.group_index(g)
        given = np.array([s.labels[j] for s in result.samples])
        hit = np.array([s.path in changed[g] for s in result.samples])
        out[g] = judge_arrays(probs[g], given, hit, rank_by)
    return out


def judge_arrays(probs: np.ndarray, given: np.ndarray, changed: np.ndarray, rank_by: str) -> dict[str, Any]:
    """One group: ``probs`` (N, C), ``given`` (N,) with -1 unknown, ``changed`` (N,) bool."""
    from cleanlab.filter import find_label_issues

    keep = (given >= 0) & ~np.isnan(probs).any(1)
    p, y, hit = probs[keep], given[keep], changed[keep]
    s = score_labels(p, y, rank_by=rank_by)  # the audit's scorer (labels.score_manifest ranks the same way)
    order = np.lexsort((np.arange(len(y)), -s.score))
    k = int(hit.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = find_label_issues(y, p / p.sum(1, keepdims=True), return_indices_ranked_by="self_confidence")
    top, ptop = order[:k], peer[:k]
    return {"k": k, "checked": int(len(y)), "p_at_k": float(hit[top].mean()) if k else 0.0,
            "r_at_k": float(hit[top].sum() / k) if k else 0.0,
            "flagged": int(s.flagged.sum()), "flagged_precision": _ratio(hit[s.flagged].sum(), s.flagged.sum()),
            "flagged_recall": _ratio(hit[s.flagged].sum(), k),
            "estimated_error_rate": s.estimated_errors / max(1, len(y)), "true_error_rate": k / max(1, len(y)),
            "cleanlab_p_at_k": _ratio(hit[ptop].sum(), len(ptop)), "cleanlab_r_at_k": _ratio(hit[ptop].sum(), k),
            "cleanlab_flagged": int(len(peer)), "cleanlab_flagged_precision": _ratio(hit[peer].sum(), len(peer)),
            "cleanlab_flagged_recall": _ratio(hit[peer].sum(), k)}


def _refix(out: Path, seed: int, z: Any, rows: list[dict[str, str]], schema: Schema,
           results: list[dict[str, Any]]) -> None:
    clean, noisy, changed = corrupt(rows, schema, "flip10", seed)
    paths = [r["path"] for r in noisy]  # flip10 leaves every row labelled: the audit's samples, in order
    assert len(paths) == len(z[f"given/{FLIPPED[0]}"])
    truth = {"clean": {r["path"]: r for r in clean}, "noisy": {r["path"]: r for r in noisy}}
    probs = {g: (z[f"oof/{g}"] + z[f"dynamics/{g}"]) / 2 if DEFAULT_METHOD == "both" else z[f"{DEFAULT_METHOD}/{g}"]
             for g in FLIPPED}
    target = out / f"flip10-s{seed}" / "fixed.csv"
    before = target.read_text() if target.exists() else None
    write_fixed(target, paths, probs, {g: z[f"given/{g}"] for g in FLIPPED}, changed, truth)
    if target.read_text() != before:
        results[:] = [r for r in results if not (r["kind"] == "fixed" and r["seed"] == seed)]


def _ratio(a: Any, b: Any) -> float:
    return float(a) / float(b) if b else 0.0


def rescore(out: Path, results: list[dict[str, Any]], rows: list[dict[str, str]], schema: Schema
            ) -> list[dict[str, Any]]:
    """Judge every audit run again from its saved probabilities with the scorer as it is now, and
    write flip10's fixed manifests again from the default method's ranking (a "fixed" run whose
    manifest changed is dropped, so that the next run trains it again)."""
    for r in list(results):  # _refix may drop "fixed" runs from results
        if r["kind"] not in ("audit", "dynfull"):
            continue
        z = np.load(out / f"{r['setting']}-s{r['seed']}" / f"{r['kind']}-probs.npz")
        if r["kind"] == "audit" and r["setting"] == "flip10":
            _refix(out, r["seed"], z, rows, schema, results)
        variants = {"dynamics-full": "dynamics"} if r["kind"] == "dynfull" else \
            {"oof": "oof", "dynamics-half": "dynamics", "both": "both"}
        for name, source in variants.items():
            probs = {g: (z[f"oof/{g}"] + z[f"dynamics/{g}"]) / 2 if source == "both" else z[f"{source}/{g}"]
                     for g in FLIPPED}
            for suffix, rank_by in (("", "self_confidence"), ("/margin", "normalized_margin")):
                r[name + suffix] = {g: judge_arrays(probs[g], z[f"given/{g}"], z[f"changed/{g}"], rank_by)
                                    for g in FLIPPED}
    return results


def aum_judge(result: Any, changed: dict[str, set[str]], schema: Schema) -> dict[str, Any]:
    """Pleiss et al.'s ranking: the lowest mean logit margin first."""
    out = {}
    for g in FLIPPED:
        j = schema.group_index(g)
        m = result.predictions.margins[g]
        idx = [i for i, s in enumerate(result.samples) if s.labels[j] >= 0 and not np.isnan(m[i])]
        order = sorted(idx, key=lambda i: m[i])
        ranked = [result.samples[i].path for i in order]
        k = sum(p in changed[g] for p in ranked)
        out[g] = dict(zip(("p_at_k", "r_at_k"), precision_recall(ranked, changed[g], k)))
    return out


def unknown_rows(result: Any, schema: Schema) -> int:
    """Rows the audit wrote for a label the manifest does not give (must be 0)."""
    given = {(s.path, g.name) for s in result.samples for j, g in enumerate(schema) if s.labels[j] >= 0}
    return sum((x.path, x.group) not in given for x in result.labels)


def audit_run(noisy: Path, schema: Schema, changed: dict[str, set[str]], args: argparse.Namespace, seed: int,
              method: str, fixed_out: Path | None, truth: dict[str, dict[str, str]], dump: Path | None = None
              ) -> dict[str, Any]:
    result = attrtag.audit(schema, noisy, method=method, folds=2, **options(args, seed))
    row: dict[str, Any] = {"seconds": result.seconds, "trainings": result.trainings,
                           "unknown_rows": unknown_rows(result, schema)}
    preds = result.predictions
    if dump is not None:  # the probabilities themselves, for analyses the table does not make
        arrays = {f"{kind}/{g}": a for kind, d in (("oof", preds.out_of_fold or {}), ("dynamics", preds.dynamics))
                  for g, a in d.items()}
        for g in FLIPPED:
            j = schema.group_index(g)
            arrays[f"given/{g}"] = np.array([s.labels[j] for s in result.samples])
            arrays[f"changed/{g}"] = np.array([s.path in changed[g] for s in result.samples])
        np.savez_compressed(dump, **arrays)
    variants = {"dynamics-full": preds.dynamics} if method == "dynamics" else \
        {"oof": preds.out_of_fold, "dynamics-half": preds.dynamics, "both": chosen_probs(preds, "both")}
    for name, probs in variants.items():
        row[name] = judge(result, probs, changed, schema)
        row[f"{name}/margin"] = judge(result, probs, changed, schema, rank_by="normalized_margin")
    row["aum-half" if method != "dynamics" else "aum-full"] = aum_judge(result, changed, schema)
    if fixed_out is not None:
        given = {g: np.array([s.labels[schema.group_index(g)] for s in result.samples]) for g in FLIPPED}
        write_fixed(fixed_out, [s.path for s in result.samples], chosen_probs(preds, DEFAULT_METHOD), given,
                    changed, truth)
    return row


def write_fixed(out: Path, paths: list[str], probs: dict[str, np.ndarray], given: dict[str, np.ndarray],
                changed: dict[str, set[str]], truth: dict[str, dict[str, dict[str, str]]]) -> None:
    """The noisy manifest with the default method's top-k suspects of each group set back to the truth."""
    fixed = {p: dict(r) for p, r in truth["noisy"].items()}
    for g in FLIPPED:
        keep = np.flatnonzero((given[g] >= 0) & ~np.isnan(probs[g]).any(1))
        s = score_labels(probs[g][keep], given[g][keep])
        order = keep[np.lexsort((np.arange(len(keep)), -s.score))]
        k = sum(paths[i] in changed[g] for i in keep)
        for i in order[:k]:
            fixed[paths[i]][g] = truth["clean"][paths[i]][g]
    write_csv(out, list(fixed.values()))


def run_one(setting: str, seed: int, kind: str, rows: list[dict[str, str]], test: Path, schema: Schema,
            out: Path, args: argparse.Namespace) -> dict[str, Any]:
    clean, noisy, changed = corrupt(rows, schema, setting, seed)
    folder = out / f"{setting}-s{seed}"
    files = {"clean": write_csv(folder / "clean.csv", clean), "noisy": write_csv(folder / "noisy.csv", noisy)}
    truth = {"clean": {r["path"]: r for r in clean}, "noisy": {r["path"]: r for r in noisy}}
    if kind in ("clean", "noisy"):
        return train_run(files[kind], folder / kind, test, schema, args, seed)
    if kind == "fixed":
        return train_run(folder / "fixed.csv", folder / "fixed", test, schema, args, seed)
    fixed_out = folder / "fixed.csv" if kind == "audit" else None
    return audit_run(files["noisy"], schema, changed, args, seed, "dynamics" if kind == "dynfull" else "both",
                     fixed_out, truth, dump=folder / f"{kind}-probs.npz")


def timing(rows: list[dict[str, str]], schema: Schema, out: Path, args: argparse.Namespace, rep: int
           ) -> dict[str, Any]:
    """One ordinary training and one default audit of the same manifest, back to back (a quiet
    machine's cost, apart from the figures above, which ran beside other work)."""
    _, noisy, _ = corrupt(rows, schema, "flip10", 0)
    manifest = write_csv(out / "timing" / "noisy.csv", noisy)
    t0 = time.perf_counter()
    attrtag.train(schema, manifest, out / "timing" / "train", overwrite=True, **options(args, 0))
    t1 = time.perf_counter()
    result = attrtag.audit(schema, manifest, **options(args, 0))
    t2 = time.perf_counter()
    return {"train_seconds": t1 - t0, "audit_seconds": t2 - t1, "method": result.method,
            "trainings": result.trainings, "labels": len(result.labels)}


def plan(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    runs = []
    for seed in args.seeds:
        for setting in args.settings:
            # flip5-unk50 runs the audits only: their cost is compared with the same seed's flip10
            # ordinary training (the same images).
            kinds = ["noisy", "audit", "dynfull", "clean", "fixed"] if setting == "flip10" else ["audit", "dynfull"]
            runs += [(setting, seed, k) for k in kinds if k in args.only]
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, default, what in (
        ("--data", "../shared/data/fashion-products", "the fashion-products folder"),
        ("--out", "runs/bench_audit", "manifests, runs and results.jsonl"),
        ("--backbone", "resnet18", "timm backbone, random initialisation"),
        ("--image-size", 64, "input size"), ("--epochs", 3, "epochs"), ("--batch-size", 64, "batch size"),
        ("--lr", 2e-3, "learning rate"), ("--train-images", 1200, "the first N training images (0 = all)"),
        ("--val-images", 300, "the first N val images (0 = all)"), ("--test-images", 0, "test images (0 = all)"),
        ("--workers", 2, "decode workers"),
    ):
        ap.add_argument(flag, type=type(default), default=default, help=f"{what} (default: {default})")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    ap.add_argument("--only", nargs="+", default=["clean", "noisy", "audit", "dynfull", "fixed"])
    ap.add_argument("--smoke", action="store_true", help="test_resnet, 32 px, 160 images, 1 epoch, 1 seed")
    ap.add_argument("--timing", type=int, default=0, metavar="N",
                    help="also time N back-to-back pairs of one ordinary training and one default audit")
    ap.add_argument("--rescore", action="store_true",
                    help="train nothing: judge the saved probabilities of the runs done with the scorer as it is now")
    args = ap.parse_args()
    if args.smoke:
        args.backbone, args.image_size, args.epochs, args.seeds = "test_resnet", 32, 1, [0]
        args.train_images, args.val_images, args.test_images = 128, 32, 64
        args.out = args.out if args.out != "runs/bench_audit" else "runs/bench_audit_smoke"
    data, out = Path(args.data), Path(args.out)
    schema = schema_of(data)
    rows, test_rows = select_rows(data, args)
    test = write_csv(out / "test.csv", test_rows)
    done_file = out / "results.jsonl"
    results = [json.loads(line) for line in done_file.read_text().splitlines()] if done_file.exists() else []
    if args.rescore:
        results = rescore(out, results, rows, schema)
        done_file.write_text("".join(json.dumps(r) + "\n" for r in results))
        print(tables(results))
        return
    for setting, seed, kind in plan(args):
        if any(r["setting"] == setting and r["seed"] == seed and r["kind"] == kind for r in results):
            continue
        t0 = time.perf_counter()
        r = {"setting": setting, "seed": seed, "kind": kind,
             **run_one(setting, seed, kind, rows, test, schema, out, args)}
        results.append(r)
        with open(done_file, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"{setting} seed {seed} {kind}: {time.perf_counter() - t0:.0f} s", flush=True)
    for rep in range(args.timing):
        if sum(r["kind"] == "timing" for r in results) > rep:
            continue
        r = {"setting": "flip10", "seed": 0, "kind": "timing", "rep": rep, **timing(rows, schema, out, args, rep)}
        results.append(r)
        with open(done_file, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"timing {rep}: train {r['train_seconds']:.0f} s, audit {r['audit_seconds']:.0f} s", flush=True)
    print(tables(results))


def _cell(xs: list[float], scale: float = 1.0, digits: int = 2) -> str:
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return ""
    return f"{statistics.mean(xs):.{digits}f} ±{statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else f"{xs[0]:.{digits}f}"


def tables(results: list[dict[str, Any]]) -> str:
    """Markdown tables: precision/recall at k per variant and group; cost; recovery."""
    lines = []
    for setting in SETTINGS:
        audits = [r for r in results if r["setting"] == setting and r["kind"] in ("audit", "dynfull")]
        if not audits:
            continue
        lines += [f"\n### {setting}", "", "| scores from | ranking | " + " | ".join(
            f"{g} P@k / R@k" for g in FLIPPED) + " |", "|---|---|" + "---|" * len(FLIPPED)]
        for variant in (*VARIANTS, "aum-half", "aum-full"):
            for suffix, name in (("", "1 - p(given)"), ("/margin", "normalized margin"), ("cl", "cleanlab")):
                rs = [r[variant + ("" if suffix == "cl" else suffix)] for r in audits
                      if variant + ("" if suffix == "cl" else suffix) in r]
                if not rs or (variant.startswith("aum") and suffix):
                    continue
                key = "cleanlab_" if suffix == "cl" else ""
                cells = [f"{_cell([x[g][key + 'p_at_k'] for x in rs])} / {_cell([x[g][key + 'r_at_k'] for x in rs])}"
                         for g in FLIPPED]
                label = "AUM (logit margin)" if variant.startswith("aum") else name
                lines.append(f"| {variant} | {label} | " + " | ".join(cells) + " |")
        lines += _flagged(audits) + _cost(results, setting) + _recovery(results, setting)
    pairs = [r for r in results if r["kind"] == "timing"]
    if pairs:
        lines += ["", "| back to back | ordinary training, s | audit, s | audit / training |", "|---|---|---|---|"]
        for r in pairs:
            lines.append(f"| pair {r['rep'] + 1} ({r['method']}, {r['trainings']} trainings) | {r['train_seconds']:.0f} | "
                         f"{r['audit_seconds']:.0f} | {r['audit_seconds'] / r['train_seconds']:.2f} |")
    return "\n".join(lines)


def _flagged(audits: list[dict[str, Any]]) -> list[str]:
    rs = [r[DEFAULT_METHOD] for r in audits if DEFAULT_METHOD in r]
    if not rs:
        return []
    out = ["", f"| flagged set ({DEFAULT_METHOD}) | " + " | ".join(FLIPPED) + " |", "|---|" + "---|" * len(FLIPPED)]
    for key, name in (("flagged", "flagged labels"), ("flagged_precision", "precision"), ("flagged_recall", "recall"),
                      ("cleanlab_flagged", "cleanlab flagged"),
                      ("estimated_error_rate", "estimated error rate"), ("true_error_rate", "true error rate"),
                      ("cleanlab_flagged_precision", "cleanlab precision"), ("cleanlab_flagged_recall", "cleanlab recall")):
        out.append(f"| {name} | " + " | ".join(_cell([x[g][key] for x in rs]) for g in FLIPPED) + " |")
    return out


def _cost(results: list[dict[str, Any]], setting: str) -> list[str]:
    out = ["", "| run | trainings | seconds | x ordinary training |", "|---|---|---|---|"]
    ordinary = {r["seed"]: r["seconds"] for r in results if r["kind"] == "noisy"}  # flip10's: the same images
    for kind in ("noisy", "audit", "dynfull"):
        rs = [r for r in results if r["setting"] == setting and r["kind"] == kind]
        if rs:
            ratio = [r["seconds"] / ordinary[r["seed"]] for r in rs if r["seed"] in ordinary]
            out.append(f"| {kind} | {rs[0].get('trainings', 1)} | {_cell([r['seconds'] for r in rs], digits=0)} | "
                       f"{_cell(ratio)} |")
    return out


def _recovery(results: list[dict[str, Any]], setting: str) -> list[str]:
    acc = {k: {r["seed"]: r["accuracy"] for r in results if r["setting"] == setting and r["kind"] == k}
           for k in ("clean", "noisy", "fixed")}
    seeds = sorted(set(acc["clean"]) & set(acc["noisy"]) & set(acc["fixed"]))
    if not seeds:
        return []
    out = ["", "| test accuracy | " + " | ".join(FLIPPED) + " |", "|---|" + "---|" * len(FLIPPED)]
    for k in ("clean", "noisy", "fixed"):
        out.append(f"| {k} | " + " | ".join(_cell([acc[k][s][g] for s in seeds], 100, 1) for g in FLIPPED) + " |")
    rec = [_cell([(acc["fixed"][s][g] - acc["noisy"][s][g]) * 100 for s in seeds], digits=1) for g in FLIPPED]
    out.append("| fixed - noisy (points) | " + " | ".join(rec) + " |")
    return out


if __name__ == "__main__":
    main()
