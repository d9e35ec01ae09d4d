"""Tagging full-size photos: large JPEGs vs thumbnails, vs timm's inference.py, threads, and Ray.

    speed    `attrtag tag` on large photos vs on the small originals (target >= 0.8), and vs
             timm's inference.py on the same large photos (target >= 4x); whole processes
    decode   CPU per image of a full decode vs the reduced (DCT-scaled) decode, decode only
    train-decode  the same for a training sample (decode, random crop, augmentation, normalise)
    threads  `attrtag tag` on large photos with .onnx and .pt models, for several thread splits,
             optionally beside --load busy processes (what "under load" means here)
    ray      the local engine vs --engine ray with 1 and 2 actors on the same images (whole
             processes, Ray start-up included; the tagging loop's own rate too)

The large photos are the fashion-products images (224x224) upscaled to 3024x3024 and centred
on a white 4032x3024 canvas (a 12-megapixel landscape photo), saved as JPEG quality 92; every
fourth one is stored rotated with EXIF orientation 6, as phones do. ``--grain 4`` adds Gaussian
grain so that they compress like camera photos (about 2 MB instead of 0.3 MB; entropy decoding,
which no DCT scaling skips, then costs twice as much). Built once into --work-dir.

Every timed figure alternates its sides (A B C, C B A, ...) and uses medians over --repeats;
each process is timed whole (Python start-up, model load, decode, inference, output).
Models are random-initialised (speed does not depend on the weights): resnetv2_50, 224 px,
exported to ONNX fp32, as in issue 7. See scripts/README.md for the figures.

    python scripts/bench_photos.py speed
    python scripts/bench_photos.py speed --int8     # also the int8 model (not the target's comparison)
    python scripts/bench_photos.py threads --load 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tagging import build_onnx, interleaved, load_schema, log, print_table  # noqa: E402

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers" / "timm_inference.py"
DEFAULT_IMAGES = "../shared/data/fashion-products/images"
PHOTO_SIZE = (4032, 3024)


# -- the photo folder -----------------------------------------------------------------------------
def build_photos(sources: Sequence[Path], out_dir: Path, *, grain: float = 4.0, rotate_every: int = 4) -> list[Path]:
    """Large JPEG versions of ``sources`` in ``out_dir`` (built once; reused when present).

    Returns:
        The photo paths, in the order of ``sources``.
    """
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    w, h = PHOTO_SIZE
    for i, src in enumerate(sources):
        dest = out_dir / f"{src.stem}.jpg"
        paths.append(dest)
        if dest.exists():
            continue
        with Image.open(src) as im:
            square = im.convert("RGB").resize((h, h), Image.Resampling.BICUBIC)
        canvas = Image.new("RGB", (w, h), (255, 255, 255))
        canvas.paste(square, ((w - h) // 2, 0))
        pixels = np.asarray(canvas, np.int16) + rng.normal(0, grain, (h, w, 1)).astype(np.int16)
        photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        params: dict[str, Any] = {"quality": 92}
        if rotate_every and i % rotate_every == 0:
            exif = Image.Exif()
            exif[0x0112] = 6  # "rotate 90 degrees clockwise to view": store it turned anticlockwise
            photo, params["exif"] = photo.transpose(Image.Transpose.ROTATE_90), exif
        tmp = dest.with_suffix(".tmp")
        photo.save(tmp, "JPEG", **params)
        os.replace(tmp, dest)
        if (i + 1) % 50 == 0:
            log(f"  built {i + 1}/{len(sources)} photos")
    return paths


def source_images(images: str, n: int, *, offset: int = 0) -> list[Path]:
    folder = Path(images)
    if not folder.is_dir():
        raise SystemExit(f"--images {folder}: not a folder (run from the repository root, or pass --images)")
    names = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")[offset : offset + n]
    if len(names) < n:
        raise SystemExit(f"--images {folder}: only {len(names)} JPEGs from {offset}, {n} wanted")
    return names


def small_folder(sources: Sequence[Path], folder: Path) -> Path:
    """The original thumbnails, linked into ``folder/small/thumbs/`` (same names, same count)."""
    out = folder / "small" / "thumbs"
    out.mkdir(parents=True, exist_ok=True)
    for src in sources:
        link = out / src.name
        if not link.exists():
            link.symlink_to(src.resolve())
    return out


# -- timing ---------------------------------------------------------------------------------------
def run_process(cmd: Sequence[str], *, env: dict[str, str] | None = None) -> float:
    """Seconds for a whole process; a failure stops the benchmark with its output."""
    t0 = time.perf_counter()
    done = subprocess.run(list(cmd), capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return seconds


def tag_cmd(model: Path, inputs: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "attrtag", "tag", str(model), str(inputs), "--out", str(out), "--overwrite",
            "--no-progress", "--device", "cpu", *extra]


def child_env() -> dict[str, str]:
    """This process's environment, with its import path, so children run the same attrtag."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    return env


def setup(args: argparse.Namespace) -> tuple[Path, Path, list[Path], Path]:
    """(work folder, ONNX model, photo paths, thumbnail folder); the photos are in ``work/large``."""
    work = Path(args.work_dir)
    sources = source_images(args.images, args.n_images)
    # timm's inference.py reads class sub-folders of its root: large/ holds one, photos/.
    log(f"building / reusing {len(sources)} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} in {work / 'large'}")
    photos = build_photos(sources, work / "large" / "photos", grain=args.grain)
    args.groups, args.labels, args.seed, args.fresh = ["masterCategory", "gender", "usage", "baseColour"], None, 0, False
    schema, _ = load_schema(args)
    args.work_dir = str(work)
    model = build_onnx(args, schema, backbone=args.backbone, image_size=args.image_size)
    return work, model, photos, small_folder(sources, work)


def summary_row(name: str, seconds: list[float], n: int) -> tuple[str, str, str]:
    return name, f"{n / statistics.median(seconds):.1f}", " ".join(f"{s:.1f}" for s in seconds)


# -- speed ----------------------------------------------------------------------------------------
def bench_speed(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import timm

    work, model, photos, small = setup(args)
    n = len(photos)
    rand = work / "timm_rand.pth"
    if not rand.exists():
        torch.save(timm.create_model(args.backbone, num_classes=12).state_dict(), rand)
    env = child_env()
    with tempfile.TemporaryDirectory(prefix="bench-photos-") as tmp:
        timm_out = Path(tmp) / "timm"
        runs = {
            "attrtag tag, large photos": lambda: run_process(tag_cmd(model, work / "large", Path(tmp) / "a.jsonl"), env=env),
            "attrtag tag, small originals": lambda: run_process(tag_cmd(model, small, Path(tmp) / "b.jsonl"), env=env),
            "timm inference.py, large photos": lambda: run_process(
                [sys.executable, str(PEERS), str(work / "large"), "--model", args.backbone, "--num-classes", "12",
                 "--checkpoint", str(rand), "--device", "cpu", "-b", "16", "-j", "2", "--topk", "3", "--channels-last",
                 "--results-dir", str(timm_out), "--results-format", "csv"], env=env),
        }
        if args.int8:
            int8 = int8_model(model, args)
            runs[INT8_RUN] = lambda: run_process(tag_cmd(int8, work / "large", Path(tmp) / "c.jsonl"), env=env)
        times = interleaved(runs, args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    vs_small = med["attrtag tag, small originals"] / med["attrtag tag, large photos"]
    vs_timm = med["timm inference.py, large photos"] / med["attrtag tag, large photos"]
    print_table(["whole process", "images/s (median)", "runs (s)"], [summary_row(k, v, n) for k, v in times.items()])
    print(f"\nlarge / small images/s: {vs_small:.2f} (target >= 0.8); attrtag / timm on large photos: "
          f"{vs_timm:.2f}x (target >= 4)")
    result = {"images": n, "seconds": times, "large_vs_small": vs_small, "vs_timm": vs_timm,
              "pass": vs_small >= 0.8 and vs_timm >= 4}
    if args.int8:
        result["int8_vs_timm"] = med["timm inference.py, large photos"] / med[INT8_RUN]
        print(f"int8 model / timm (fp32) on large photos: {result['int8_vs_timm']:.2f}x (a different precision: "
              "not the target's comparison)")
    return save(args, "speed", result)


INT8_RUN = "attrtag tag, large photos, int8 model"


def int8_model(fp32: Path, args: argparse.Namespace) -> Path:
    """The fp32 model quantised to int8 (``attrtag export --int8``'s code), cached beside it.

    Random weights: its speed is real, its accuracy change says nothing (issue 3's benchmark,
    ``bench_tagging.py int8 --checkpoint``, measures that on a trained model).
    """
    from attrtag_onnx.quantize import quantize_int8

    out = fp32.with_name(fp32.stem + "-int8.onnx")
    if not out.is_file():
        manifest = Path(args.images).parent / "labels.csv"
        if not manifest.is_file():
            raise SystemExit(f"--int8 needs labelled images to calibrate on: {manifest} not found")
        log(f"quantising {fp32.name} to int8 (64 calibration images)")
        quantize_int8(fp32, out, manifest, calib_images=64, eval_images=64)
    return out


# -- decode only ----------------------------------------------------------------------------------
def bench_decode(args: argparse.Namespace) -> dict[str, Any]:
    from attrtag.data.images import load_rgb
    from attrtag.runtime import read_card

    work, model, photos, _ = setup(args)
    prep = read_card(model).preprocessing
    ways = {"full decode + resize": None, "reduced decode + resize (what attrtag does)": prep.decode_size(),
            "reduced, 2x headroom": prep.decode_size(2.0)}
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(args.repeats):
        for name in ways if r % 2 == 0 else list(ways)[::-1]:
            t0 = time.process_time()
            for p in photos:
                prep.pixels(load_rgb(p, min_size=ways[name]))
            cpu[name].append((time.process_time() - t0) / len(photos) * 1000)
    sizes = {k: load_rgb(photos[1], min_size=v).size for k, v in ways.items()}
    mb = statistics.mean(p.stat().st_size for p in photos) / 1e6
    print_table(["decode (one thread)", "decoded size", "CPU ms / image (median)", "runs"],
                [(k, f"{sizes[k][0]}x{sizes[k][1]}", f"{statistics.median(v):.1f}", " ".join(f"{x:.1f}" for x in v))
                 for k, v in cpu.items()])
    print(f"\n{len(photos)} photos, {mb:.2f} MB each on average")
    return save(args, "decode", {"cpu_ms": cpu, "decoded_size": sizes, "mean_file_mb": mb})


# -- training samples -----------------------------------------------------------------------------
def bench_train_decode(args: argparse.Namespace) -> dict[str, Any]:
    """CPU per training sample (decode + random crop + augment + normalise), one thread."""
    from attrtag.data.loader import ImageDataset, train_decode_size
    from attrtag.data.manifest import Sample
    from attrtag.runtime import read_card

    work, model, photos, _ = setup(args)
    card = read_card(model)
    prep = card.preprocessing
    samples = [Sample(str(p), (0,) * len(card.schema)) for p in photos]
    ways = {"full decode": None, "reduced: input / 0.61 (what training does)": train_decode_size(prep),
            "reduced, 2x that": tuple(2 * v for v in train_decode_size(prep))}
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(args.repeats):
        for name in ways if r % 2 == 0 else list(ways)[::-1]:
            ds = ImageDataset(samples, prep, card.schema, seed=r)
            ds.decode_size = ways[name]
            t0 = time.process_time()
            for i in range(len(ds)):
                ds[i]
            cpu[name].append((time.process_time() - t0) / len(ds) * 1000)
    print_table(["training sample (one thread)", "decode at least", "CPU ms / sample (median)", "runs"],
                [(k, "full" if ways[k] is None else f"{ways[k][0]}x{ways[k][1]}", f"{statistics.median(v):.1f}",
                  " ".join(f"{x:.1f}" for x in v)) for k, v in cpu.items()])
    return save(args, "train-decode", {"cpu_ms": cpu, "decode_at_least": {k: v for k, v in ways.items()}})


# -- threads --------------------------------------------------------------------------------------
def bench_threads(args: argparse.Namespace) -> dict[str, Any]:
    work, model, photos, _ = setup(args)
    ckpt = model.with_suffix(".pt")
    env = child_env()
    # The defaults, and each backend with the thread count the other plan would give it
    # (PyTorch with every core, as before issue 7; ONNX Runtime with the cores decoding leaves).
    cpus = len(os.sched_getaffinity(0))
    grid = [("onnx", model, []), ("onnx", model, ["--threads", str(max(1, cpus - max(1, cpus // 4)))]),
            ("pt", ckpt, []), ("pt", ckpt, ["--threads", str(cpus)])]
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
            runs = {f"{kind} {' '.join(extra) or 'defaults'}": (lambda m=m, e=extra: run_process(
                tag_cmd(m, work / "large", Path(tmp) / "t.jsonl", *e), env=env)) for kind, m, extra in grid}
            times = interleaved(runs, args.repeats)
    finally:
        for p in load:
            p.kill()
            p.wait()
    print_table(["model, settings", "images/s (median)", "runs (s)"], [summary_row(k, v, len(photos)) for k, v in times.items()])
    print(f"\nbusy-loop processes beside the runs: {args.load}")
    return save(args, "threads", {"images": len(photos), "load_processes": args.load, "seconds": times})


# -- ray ------------------------------------------------------------------------------------------
def bench_ray(args: argparse.Namespace) -> dict[str, Any]:
    work, model, photos, _ = setup(args)
    env = child_env()
    rates: dict[str, list[float]] = {}

    def timed(name: str, *extra: str) -> Callable[[], float]:
        def go() -> float:
            out = Path(tmp) / "r.jsonl"
            t0 = time.perf_counter()
            done = subprocess.run(tag_cmd(model, work / "large", out, *extra), capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            rates.setdefault(name, []).append(float(done.stdout.rsplit("; ", 1)[1].split()[0]))
            return seconds
        return go

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        times = interleaved({"local engine": timed("local engine"),
                           "ray, 1 actor": timed("ray, 1 actor", "--engine", "ray", "--actors", "1"),
                           "ray, 2 actors": timed("ray, 2 actors", "--engine", "ray", "--actors", "2")}, args.repeats)
    n = len(photos)
    print_table(["engine", "whole process images/s", "tagging loop images/s (its own rate)", "runs (s)"],
                [(k, f"{n / statistics.median(v):.1f}", f"{statistics.median(rates[k]):.1f}",
                  " ".join(f"{s:.1f}" for s in v)) for k, v in times.items()])
    return save(args, "ray", {"images": n, "seconds": times, "loop_rates": rates})


def save(args: argparse.Namespace, name: str, result: dict[str, Any]) -> dict[str, Any]:
    result["settings"] = {"backbone": args.backbone, "image_size": args.image_size, "n_images": args.n_images,
                          "repeats": args.repeats, "cpus": len(os.sched_getaffinity(0)),
                          "loadavg_at_end": os.getloadavg()}
    print(f"settings: {result['settings']}")
    out = Path(args.work_dir) / f"{name}.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    log(f"wrote {out}")
    return result


RUNNERS = {"speed": bench_speed, "decode": bench_decode, "train-decode": bench_train_decode, "threads": bench_threads,
           "ray": bench_ray}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=list(RUNNERS))
    ap.add_argument("--images", default=DEFAULT_IMAGES, help=f"source thumbnails (default: {DEFAULT_IMAGES})")
    ap.add_argument("--n-images", type=int, default=100, help="photos (default: 100, as in issue 7)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backbone", default="resnetv2_50")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--int8", action="store_true",
                    help="speed: also time the model quantised to int8 (not the target's comparison: timm runs fp32)")
    ap.add_argument("--load", type=int, default=0, help="threads: busy-loop processes running beside the runs")
    ap.add_argument("--grain", type=float, default=0.0,
                    help="Gaussian grain (std, grey levels) added to the photos: 0 (default) gives smooth upscaled "
                    "images (~0.3 MB), 4 camera-like files (~2 MB) that cost twice the CPU to decode")
    ap.add_argument("--work-dir", default=None, help="photos, cached models and JSON results "
                    "(default: runs/bench_photos, or runs/bench_photos-grainG with --grain G)")
    args = ap.parse_args(argv)
    args.work_dir = args.work_dir or ("runs/bench_photos" + (f"-grain{args.grain:g}" if args.grain else ""))
    return RUNNERS[args.command](args)


if __name__ == "__main__":
    main()
