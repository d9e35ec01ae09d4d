"""``attrtag calibrate MODEL --manifest M (--out FILE | --in-place)``: calibration that travels.

With ``--temperature``: each group's temperature, fitted again (least NLL of the labelled images)
on the val split of M (every row without a split column), e.g. on images from where the model will
be used; the expected calibration error (ECE) of each group is printed raw, at the temperatures
the model had and at the new ones. Training already fits them on its own val split after every
epoch; 'attrtag tag', the API and evaluation apply them (tag --no-calibration: raw probabilities).
A model's multi-label thresholds apply to the calibrated probabilities, so they are moved with
the temperatures (t' = sigmoid(logit(t) * T_old / T_new)) and decide every value as before.

With ``--thresholds``: each multi-label value's decision threshold, chosen again (best F1) on the
val split of M, on the calibrated probabilities; printed before and after. To refit both, run
--temperature first, then --thresholds. Otherwise the zero-shot constant, as follows.

Chooses the calibrated-stacking constant (subtracted from the scores of the classes that had
training images, so unseen classes are no longer swamped by seen ones) on the val split of a
labelled manifest with a class column, prints seen/unseen/H before and after (and on the test
split, which played no part in the choice) with AUSUC, and stores the constant with the rules in
the model: a new file with --out, or the model itself, replaced atomically, with --in-place.
'attrtag tag' and 'attrtag classify' then apply it by default (--no-calibration turns it off),
with these rules only. Works for .onnx files and checkpoints alike.
"""
from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="choose the zero-shot calibration (or the thresholds, or the temperatures) on labelled images and store it in the model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help=".onnx file or training checkpoint (.pt)")
    p.add_argument("--manifest", required=True, metavar="M",
                   help="labelled manifest with a class column; gamma is chosen on its val split (every row without "
                   "a split column)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="FILE", help="write the calibrated model here (same suffix as MODEL)")
    target.add_argument("--in-place", action="store_true", help="replace MODEL itself (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.add_argument("--thresholds", action="store_true",
                   help="choose the multi-label values' decision thresholds again (best F1 on the val split) "
                   "instead of the zero-shot calibration")
    p.add_argument("--temperature", action="store_true",
                   help="fit each group's temperature again (least NLL on the val split) instead of the zero-shot "
                   "calibration; multi-label thresholds move with it, deciding as before (not with --thresholds)")
    p.add_argument("--rules", metavar="R", help="class rules YAML (default: the rules embedded in MODEL)")
    p.add_argument("--class-column", default="class", metavar="NAME",
                   help="manifest column with each image's class (default: class)")
    p.add_argument("--unseen", metavar="A,B,...",
                   help="the unseen classes (default: the classes of the rules with no image in the train split)")
    p.add_argument("--no-priors", action="store_true",
                   help="score without the training label priors (tagging must then pass --no-priors too)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-bad-rows", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ._progress import tqdm_progress
    from ._rules import warn

    unseen = [c.strip() for c in args.unseen.split(",") if c.strip()] if args.unseen else None
    result = api.calibrate(
        args.model, args.manifest, out=args.out, in_place=args.in_place, rules=args.rules, priors=not args.no_priors,
        device=args.device, skip_bad_rows=args.skip_bad_rows, warn=warn, class_column=args.class_column, unseen=unseen,
        batch_size=args.batch_size, workers=args.workers, progress=tqdm_progress, value_thresholds=args.thresholds,
        overwrite=args.overwrite, temperature=args.temperature,
    )
    written = args.model if args.in_place else args.out
    if args.temperature:
        print(format_temperatures(result))
        print(f"stored in {written}{' (replaced)' if args.in_place else ''}; attrtag tag applies them "
              "(--no-calibration: raw probabilities)")
        return 0
    if args.thresholds:
        print(format_refit(result))
        print(f"stored in {written}{' (replaced)' if args.in_place else ''}; attrtag tag decides values with them "
              "(--threshold GROUP.VALUE=P overrides one)")
        return 0
    cal = result.calibration
    seen = ", ".join(cal.seen)
    print(f"calibrated {args.model} for {len(result.rules)} classes of {args.rules or 'its embedded rules'}: "
          f"{len(cal.seen)} seen ({seen}), {len(result.unseen)} unseen ({', '.join(result.unseen)})")
    print("class scores " + ("divided by the model's training label priors" if cal.priors else "without label priors"))
    print(format_figures(result.figures, cal.gamma))
    if result.skipped:
        warn(f"left out (class not in the rules): {', '.join(f'{c} {n}' for c, n in sorted(result.skipped.items()))}")
    if result.failed:
        warn(f"{len(result.failed)} image(s) could not be decoded and were left out")
    print(f"gamma {cal.gamma:.4g} chosen on {cal.info['chosen_on']} to maximise H; stored with the rules in "
          f"{written}{' (replaced)' if args.in_place else ''}")
    print("attrtag tag and classify apply it by default with these rules (--no-calibration turns it off)")
    return 0


def format_figures(figures: Any, gamma: float) -> str:
    """The before/after table of :class:`attrtag.evaluation.calibrate.SplitFigures` rows."""
    def pct(x: float) -> str:
        return f"{100 * x:5.1f}"

    lines = [f"  {'split':<5} {'images (seen+unseen)':>20}   {'before: seen unseen     H':>25}   "
             f"{'after: seen unseen     H':>24}   AUSUC"]
    for f in figures:
        lines.append(
            f"  {f.split:<5} {f'{f.seen_images}+{f.unseen_images}':>20}   {'':>7}{pct(f.before.seen)}  "
            f"{pct(f.before.unseen)}  {pct(f.before.harmonic)}   {'':>6}{pct(f.after.seen)}  {pct(f.after.unseen)}  "
            f"{pct(f.after.harmonic)}   {f.ausuc:.3f}"
        )
    lines.append(f"  (per-class accuracy in %, all classes candidates; after: gamma {gamma:.4g} subtracted from seen "
                 "classes; AUSUC: area under the seen-unseen curve over every gamma)")
    return "\n".join(lines)


def format_refit(refit: Any) -> str:
    """Each multi-label value's threshold and F1 before and after :func:`attrtag.evaluation.calibrate.refit_thresholds`."""
    lines = [f"value thresholds chosen on {refit.value_thresholds['chosen_on']} (best F1 per value; "
             f"{refit.value_thresholds['min_positives']} positives at least, else {refit.value_thresholds['default']:g})"]
    for before, after in zip(refit.before, refit.after):
        lines.append(f"  {after.group}: macro-F1 {_pct(before.macro_f1)} -> {_pct(after.macro_f1)}, micro-F1 "
                     f"{_pct(before.micro_f1)} -> {_pct(after.micro_f1)}, mAP {_pct(after.mean_ap)}")
        for b, a in zip(before.values, after.values):
            lines.append(f"    {a.value:<16} threshold {b.threshold:.3f} -> {a.threshold:.3f}   F1 {_pct(b.f1)} -> "
                         f"{_pct(a.f1)}   ({a.positives} positives, {a.negatives} negatives)")
    fallback = [f"{g}.{v}" for g, vs in refit.value_thresholds["fallback"].items() for v in vs]
    if fallback:
        lines.append(f"  too few positives, kept at {refit.value_thresholds['default']:g}: {', '.join(fallback)}")
    return "\n".join(lines)


def format_temperatures(fit: Any) -> str:
    """Each group's temperature and ECE before and after :func:`attrtag.evaluation.calibrate.refit_temperatures`."""
    def ece(x: float | None) -> str:
        return "   n/a" if x is None else f"{x:.4f}"

    width = max([5, *(len(c.group) for c in fit.after)])
    lines = [f"temperatures fitted on {fit.temperatures['fitted_on']} (least NLL per group; ECE over "
             f"{fit.after[0].raw.counts.size} confidence bins)",
             f"  {'group':<{width}}  {'T before':>8}  {'T after':>8}  {'ECE raw':>8}  {'before':>8}  {'after':>8}  "
             f"{'over':>6}"]
    for b, a in zip(fit.before, fit.after):
        lines.append(f"  {a.group:<{width}}  {b.temperature:>8.3f}  {a.temperature:>8.3f}  {ece(a.raw.ece):>8}  "
                     f"{ece(b.calibrated.ece):>8}  {ece(a.calibrated.ece):>8}  {a.labelled:>6}")
    if fit.value_thresholds is not None:
        lines.append("  multi-label thresholds moved to the new temperatures (every value decided as before)")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}%"
