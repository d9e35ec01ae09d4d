"""``attrtag export``: a checkpoint to an ONNX file that carries its schema, checked against PyTorch."""
from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (fp32, fp16 or int8)", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="training checkpoint (best.pt / last.pt)")
    p.add_argument("--out", required=True, help="ONNX file to write (e.g. model.onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="float16 graph for GPUs (float32 input/outputs kept)")
    precision.add_argument("--int8", action="store_true",
                           help="static int8 quantisation for CPUs (needs --calib-manifest)")
    p.add_argument("--calib-manifest", metavar="M",
                   help="labelled manifest for int8 calibration and the accuracy check")
    p.add_argument("--calib-images", type=int, default=None, metavar="N",
                   help="images to calibrate int8 ranges on (default 128)")
    p.add_argument("--eval-images", type=int, default=None, metavar="N",
                   help="images of the manifest to compare fp32 vs int8 accuracy on (default all)")
    p.add_argument("--rules", metavar="R", help="class rules YAML to embed in the model (for zero-shot tagging)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    p.add_argument("--batch-check", type=int, default=5, metavar="N",
                   help="batch size of the ONNX Runtime vs PyTorch check, besides batch 1 (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ..runtime import read_card
    from ._progress import tqdm_progress
    from ._rules import warn

    report = api.export(args.checkpoint, args.out, fp16=args.fp16, int8=args.int8, calib_manifest=args.calib_manifest,
                        calib_images=args.calib_images, eval_images=args.eval_images, rules=args.rules,
                        opset=args.opset, batch_check=args.batch_check, progress=tqdm_progress, warn=warn,
                        overwrite=args.overwrite)
    card = read_card(report.path)  # what the file says about itself
    prep = card.preprocessing
    print(f"wrote {report.path} ({report.size_bytes / 1e6:.1f} MB, {report.precision}, opset {report.opset}, "
          f"{report.exporter} exporter, {report.seconds:.1f}s)")
    print(f"input: image float32 [batch, 3, {prep.input_size[0]}, {prep.input_size[1]}]")
    print("groups: " + ", ".join(f"{g.name} ({len(g)}{', multi-label' if g.multi else ''})" for g in card.schema))
    if args.rules:
        print(f"rules: {len(card.rules['classes'])} class(es) embedded from {args.rules}")
    checked = "float32 model" if args.int8 else "model"
    if report.max_abs_diff:
        print(f"parity check ({checked} vs PyTorch, batches {', '.join(map(str, report.check_batches))}) "
              f"on {', '.join(report.check_providers)}; tolerance {report.atol:g}:")
    width = max(len(n) for n in report.groups)
    for name, diff in report.max_abs_diff.items():
        print(f"  {name:<{width}}  max |onnx - torch| = {diff:.2e}")
    if report.note:
        print(f"note: {report.note}")
    if report.quantization is not None:
        print(format_int8_table(report.quantization))
    return 0


def format_int8_table(q: Any) -> str:
    """The fp32 vs int8 table of a :class:`attrtag_onnx.quantize.QuantReport`: accuracy of each
    exclusive group, then mAP and micro-F1 (at the card's value thresholds) of each multi-label one."""
    multi = q.multi_label
    width = max([len("group")] + [len(g.group) for g in [*q.groups, *multi]])
    lines = [
        f"int8: calibrated on {q.calib_images} image(s), compared on {q.eval_images} "
        f"(quant_pre_process {'applied' if q.preprocessed else 'skipped'})",
    ]

    def pct(x: float | None) -> str:
        return "     --" if x is None else f"{100 * x:6.1f}%"

    def change(d: float | None) -> str:
        return "      --" if d is None else f"{d:+7.1f}p"

    if q.groups:
        lines.append(f"  {'group':<{width}}  {'labelled':>8}  {'fp32':>7}  {'int8':>7}  {'change':>8}  "
                     f"{'max |int8 - fp32|':>17}")
    for g in q.groups:
        diff = q.max_abs_diff[g.group]
        lines.append(f"  {g.group:<{width}}  {g.labelled:>8}  {pct(g.fp32)}  {pct(g.int8)}  {change(g.delta_points)}  "
                     f"{diff:>17.2e}")
    if multi:
        lines.append(f"  {'group':<{width}}  {'labelled':>8}  {'mAP fp32':>8}  {'int8':>7}  {'change':>8}  "
                     f"{'F1 fp32':>7}  {'int8':>7}  {'change':>8}  {'max |int8 - fp32|':>17}  (multi-label)")
    for m in multi:
        diff = q.max_abs_diff[m.group]
        lines.append(f"  {m.group:<{width}}  {m.labelled:>8}  {pct(m.fp32_map):>8}  {pct(m.int8_map)}  "
                     f"{change(m.delta_map_points)}  {pct(m.fp32_f1)}  {pct(m.int8_f1)}  {change(m.delta_f1_points)}  "
                     f"{diff:>17.2e}")
    if multi:
        lines.append("  multi-label groups: mAP, and micro-F1 with each value decided at the model card's threshold")
    if q.failed_images:
        lines.append(f"  warning: {len(q.failed_images)} image(s) could not be decoded and were skipped")
    return "\n".join(lines)
