"""Reduced JPEG decoding keeps the tags: top-1 agreement with full decoding, and accuracy, per group.

On labelled fashion-products images stored as 12-megapixel JPEGs (the photos of
``bench_photos.py``: upscaled, grain, every fourth one EXIF-rotated), a trained model tags each
image twice: from a full decode (``prep.pixels(load_rgb(path))``, every pixel, then timm's
resize) and from the decode attrtag uses (``Preprocessing.load``: the smallest DCT scale that
covers the resize target). Optionally also with more headroom (``--headroom 2``) and on the
original thumbnails. Targets (issue 7): each group's top-1 agrees on >= 99% of the images and
its accuracy moves by <= 0.3 points.

    python scripts/check_reduced_decode.py --checkpoint runs/fashion/best.pt --n-images 600
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_photos import build_photos  # noqa: E402
from bench_tagging import log, print_table  # noqa: E402


def predictions(predictor: Any, paths: Sequence[Path], load: Callable[[Path], np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Top-1 index per group for every path, decoding each with ``load`` (uint8 pixels)."""
    prep = predictor.preprocessing
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(paths), batch):
        x = np.stack([prep.normalize(load(p)) for p in paths[i : i + batch]])
        for g, probs in predictor(x).items():
            out.setdefault(g, []).append(probs.argmax(axis=1))
    return {g: np.concatenate(v) for g, v in out.items()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a trained checkpoint (.pt) or exported .onnx")
    ap.add_argument("--manifest", default="../shared/data/fashion-products/labels.csv")
    ap.add_argument("--split", default="test", help="manifest split (default: test)")
    ap.add_argument("--n-images", type=int, default=600, help="images (default: 600; the issue asks >= 500)")
    ap.add_argument("--headroom", type=float, nargs="*", default=[2.0], help="extra headrooms to compare (default: 2)")
    ap.add_argument("--work-dir", default="runs/check_decode", help="where the photos are built")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    from attrtag.data.images import load_rgb
    from attrtag.runtime import open_predictor

    predictor = open_predictor(args.checkpoint, device="cpu", threads=args.threads)
    schema, prep = predictor.schema, predictor.preprocessing
    manifest = Path(args.manifest)
    with manifest.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("split") == args.split][: args.n_images]
    if len(rows) < args.n_images:
        raise SystemExit(f"{manifest}: only {len(rows)} images in split '{args.split}'")
    sources = [manifest.parent / r["path"] for r in rows]
    log(f"building / reusing {len(sources)} photos in {Path(args.work_dir) / 'photos'}")
    photos = build_photos(sources, Path(args.work_dir) / "photos")

    ways: dict[str, tuple[Sequence[Path], Callable[[Path], np.ndarray]]] = {
        "full decode": (photos, lambda p: prep.pixels(load_rgb(p))),
        "reduced (attrtag)": (photos, prep.load),
        **{f"reduced, headroom {h:g}": (photos, lambda p, h=h: prep.pixels(load_rgb(p, min_size=prep.decode_size(h))))
           for h in args.headroom},
        "small originals": (sources, prep.load),
    }
    top1 = {}
    for name, (paths, load) in ways.items():
        log(f"tagging {len(paths)} images: {name}")
        top1[name] = predictions(predictor, paths, load, 32)

    result: dict[str, Any] = {"checkpoint": args.checkpoint, "backbone": predictor.card.backbone,
                              "input_size": prep.input_size, "decode_size": prep.decode_size(), "images": len(rows),
                              "groups": {}}
    table, ok = [], True
    for group in schema:
        truth = np.array([group.values.index(r[group.name]) if r.get(group.name) in group.values else -1 for r in rows])
        labelled = truth >= 0
        acc = {k: 100 * float(np.mean(v[group.name][labelled] == truth[labelled])) for k, v in top1.items()}
        agree = {k: 100 * float(np.mean(v[group.name] == top1["full decode"][group.name])) for k, v in top1.items()}
        delta = acc["reduced (attrtag)"] - acc["full decode"]
        ok &= agree["reduced (attrtag)"] >= 99.0 and abs(delta) <= 0.3
        result["groups"][group.name] = {"labelled": int(labelled.sum()), "accuracy": acc, "agreement_with_full": agree}
        table.append((group.name, int(labelled.sum()), f"{agree['reduced (attrtag)']:.2f}",
                      *[f"{agree[k]:.2f}" for k in top1 if k.startswith("reduced, ")],
                      f"{acc['full decode']:.2f}", f"{acc['reduced (attrtag)']:.2f}", f"{delta:+.2f}",
                      f"{acc['small originals']:.2f}"))
    extra = [f"agree % ({k})" for k in top1 if k.startswith("reduced, ")]
    print_table(["group", "labelled", "top-1 agree % (attrtag)", *extra, "acc % full", "acc % attrtag",
                 "change (points)", "acc % small originals"], table)
    print(f"\n{predictor.card.backbone} {prep.input_size[0]} px, {len(rows)} images of split '{args.split}', decoded "
          f"at >= {prep.decode_size()} -> {'PASS' if ok else 'FAIL'} (agree >= 99%, |change| <= 0.3 points)")
    result["pass"] = ok
    out = Path(args.work_dir) / "check_reduced_decode.json"
    out.write_text(json.dumps(result, indent=1))
    log(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
