"""How big the HTML report gets per 10,000 images, how long it takes to write, and to open.

Not run by the tests. Figures go to ``scripts/README.md``. What it does, in one run:

1. Records for ``--n`` images (default 10,000) cycling over the fashion-products photos
   (``--images``), with the seven groups of its ``labels.csv`` as the schema, peaked random
   probabilities, class rules over two groups, 1% failed images. The records are made
   directly: the report's cost does not depend on how good the model is.
2. ``embed`` and ``link`` reports of them, alternated (embed, link, link, embed, ...) for
   ``--repeats`` rounds: file size (identical each time) and the median build time.
3. Thumbnail cost on full-size photos (what users have): ``--large`` fashion photos upscaled to
   4032x3024 JPEGs (quality 90), thumbnails made by the report's own code, alternated with the
   same number of the 224 px originals; the median seconds per image of each.
4. With ``--browser`` (needs playwright and Chromium): headless Chromium opens the embed report,
   time to the first page of cards ("ready"), and the time of a filter change, median of
   ``--repeats`` loads.

    python scripts/bench_report.py                  # 10,000 images, about 4 min on 2 cores
    python scripts/bench_report.py --n 50000 --browser --large 0
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from attrtag.review.report import embedded_thumbnails, write_report
from attrtag.review.sources import TagSet
from attrtag.schema import Schema
from attrtag.tagging import OutputMeta, RecordLayout
from attrtag.zeroshot.scoring import ClassScoring
from attrtag.zeroshot.rules import resolve_rules

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "fashion-products" / "images"
GROUPS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")


def fashion_schema(labels: Path) -> Schema:
    values: dict[str, set[str]] = {g: set() for g in GROUPS}
    with open(labels, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for g in GROUPS:
                if row.get(g) and row[g] != "NA":
                    values[g].add(row[g])
    return Schema.from_dict({g: sorted(v) for g, v in values.items()})


def make_tags(images: list[Path], n: int, schema: Schema, seed: int = 0) -> TagSet:
    rules, _ = resolve_rules({"classes": {
        "summer_dress": {"articleType": "Dresses", "season": "Summer"},
        "winter_jacket": {"articleType": "Jackets", "season": "Winter"},
        "sports_shoe": {"masterCategory": "Footwear", "usage": "Sports"},
    }}, schema)
    classes = ClassScoring(rules, schema, top_k=3)
    layout = RecordLayout(schema, thresholds={g: 0.5 for g in schema.names}, classes=classes)
    rng = np.random.default_rng(seed)
    paths = [str(images[i % len(images)]) for i in range(n)]
    probs = {g.name: rng.dirichlet(np.full(len(g), 0.3), size=n).astype(np.float32) for g in schema}
    recs = layout.records(paths, probs)
    for i in range(0, n, 100):  # 1% failed
        recs[i] = layout.error_record(recs[i]["path"], "truncated", f"{recs[i]['path']}: file is truncated")
    meta = OutputMeta(layout, model="bench.onnx", model_sha256="0" * 64)
    return TagSet(Path("bench.jsonl"), meta, recs, Path("/"))


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="thumbnail decode threads (the CLI default here: 1)")
    ap.add_argument("--large", type=int, default=100, help="full-size photos for the thumbnail cost (0: skip)")
    ap.add_argument("--browser", action="store_true", help="also time opening the report in headless Chromium")
    ap.add_argument("--json", type=Path, default=ROOT / "runs" / "bench_report.json")
    args = ap.parse_args(argv)

    images = sorted(args.images.glob("*.jpg"))
    if not images:
        print(f"no .jpg under {args.images}; pass --images", file=sys.stderr)
        return 2
    schema = fashion_schema(args.images.parent / "labels.csv")
    tags = make_tags(images, args.n, schema)
    result: dict[str, object] = {"n": args.n, "groups": {g.name: len(g) for g in schema}, "workers": args.workers}
    print(f"{args.n} records ({sum('error' in r for r in tags.records)} failed) over {len(images)} photos of "
          f"{args.images}; schema {result['groups']}")

    with tempfile.TemporaryDirectory() as tmp:
        out = {m: Path(tmp) / f"report_{m}.html" for m in ("embed", "link")}
        times: dict[str, list[float]] = {"embed": [], "link": []}
        sizes: dict[str, int] = {}
        for r in range(args.repeats):
            for mode in (("embed", "link") if r % 2 == 0 else ("link", "embed")):
                summary = None

                def build(mode: str = mode) -> None:
                    nonlocal summary
                    summary = write_report(tags, out[mode], thumbnails=mode, workers=args.workers)

                times[mode].append(timed(build))
                sizes[mode] = summary.bytes  # type: ignore[attr-defined]
        for mode in ("embed", "link"):
            per10k = sizes[mode] * 10_000 / args.n
            result[mode] = {"bytes": sizes[mode], "mb_per_10k": per10k / 1e6, "seconds": times[mode],
                            "median_s": statistics.median(times[mode])}
        print("\n| thumbnails | file size | per 10,000 images | build time (median of "
              f"{args.repeats}, {args.workers} decode thread(s)) |\n|---|---|---|---|")
        for mode in ("embed", "link"):
            m = result[mode]  # type: ignore[index]
            print(f"| {mode} | {m['bytes'] / 1e6:.1f} MB | {m['mb_per_10k']:.1f} MB | {m['median_s']:.1f} s |")

        if args.large:
            big_dir = Path(tmp) / "large"
            big_dir.mkdir()
            big, small = [], images[: args.large]
            for i, src in enumerate(small):
                with Image.open(src) as im:
                    im.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC).save(big_dir / f"{i}.jpg", quality=90)
                big.append(big_dir / f"{i}.jpg")
            per: dict[str, list[float]] = {"4032x3024": [], "224x224": []}
            for r in range(args.repeats):
                pairs = [("4032x3024", big), ("224x224", small)]
                for name, paths in (pairs if r % 2 == 0 else pairs[::-1]):
                    per[name].append(timed(lambda p=paths: embedded_thumbnails(p, size=128, workers=args.workers))
                                     / len(paths))
            result["thumbnail_s_per_image"] = {k: statistics.median(v) for k, v in per.items()}
            print(f"\nthumbnail time per image, median of {args.repeats} (alternated, {args.large} images each):")
            for k, v in result["thumbnail_s_per_image"].items():  # type: ignore[attr-defined]
                print(f"  {k}: {v * 1000:.1f} ms -> {v * 10_000 / 60:.1f} min per 10,000 images")

        if args.browser:
            result["browser"] = browser_times(out["embed"], args.repeats)
            b = result["browser"]
            print(f"\nChromium, embed report: ready in {b['ready_median_s']:.2f} s, "  # type: ignore[index]
                  f"a filter change in {b['filter_median_s'] * 1000:.0f} ms (median of {args.repeats})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"\nJSON -> {args.json}")
    return 0


def browser_times(report: Path, repeats: int) -> dict[str, object]:
    import shutil

    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    ready, filt = [], []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=shutil.which("chromium"), headless=True,
                                                   args=flags)
        for _ in range(repeats):
            page = ctx.new_page()
            t0 = time.perf_counter()
            page.goto(report.as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=120_000)
            ready.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            page.check("#f-uncertain")
            page.wait_for_function("document.querySelector('#count').textContent.length > 0")
            filt.append(time.perf_counter() - t0)
            page.close()
        ctx.close()
    return {"ready_s": ready, "ready_median_s": statistics.median(ready), "filter_s": filt,
            "filter_median_s": statistics.median(filt)}


if __name__ == "__main__":
    sys.exit(main())
