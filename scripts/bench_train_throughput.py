"""Training throughput of the grouped masked model vs a plain single-head timm classifier.

Same backbone, batch, resolution and optimizer; both see the same in-memory batches (data
loading is identical for the two and is left out so the ratio isolates the model + loss).
The two are timed alternately in one process, several repeats, and the median images/s of
each is reported with their ratio (overhead = 1 - grouped/plain).

    python scripts/bench_train_throughput.py --backbone resnetv2_50 --image-size 128 --batch-size 16
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import timm
import torch
import torch.nn.functional as F

from attrtag.training.loss import MaskedGroupedCrossEntropy
from attrtag.model import build_model
from attrtag.schema import Schema
from attrtag.training.loop import train_step

SCHEMA = Schema.from_dict({
    "covering": ["fur", "feathers", "scales", "exoskeleton"], "pattern": ["plain", "spots", "stripes"],
    "bill": ["none", "duck", "beak"], "tail": ["no", "yes"], "logo": ["acme", "globex", "initech", "umbrella"],
    "medium": ["sign", "billboard", "bottle"],
})


def timed_steps(step, batches) -> float:
    t0 = time.perf_counter()
    for b in batches:
        step(*b)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnetv2_50")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--missing", type=float, default=0.5, help="share of labels removed in the grouped targets")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    B, S = args.batch_size, args.image_size

    grouped = build_model(SCHEMA, args.backbone).to(dev).train()
    plain = timm.create_model(args.backbone, num_classes=SCHEMA.num_outputs).to(dev).train()
    crit = MaskedGroupedCrossEntropy(SCHEMA)
    opt_g = torch.optim.AdamW(grouped.parameters(), lr=1e-4)
    opt_p = torch.optim.AdamW(plain.parameters(), lr=1e-4)

    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        x = torch.randn(B, 3, S, S, generator=g).to(dev)
        t = torch.stack([torch.randint(0, n, (B,), generator=g) for n in SCHEMA.sizes], 1)
        t[torch.rand(t.shape, generator=g) < args.missing] = -1
        y = torch.randint(0, SCHEMA.num_outputs, (B,), generator=g)
        batches.append((x, t.to(dev), y.to(dev)))

    def step_grouped(x, t, _y):
        out = train_step(grouped, crit, x, t)
        opt_g.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt_g.step()

    def step_plain(x, _t, y):
        loss = F.cross_entropy(plain(x), y)
        opt_p.zero_grad(set_to_none=True)
        loss.backward()
        opt_p.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    timed_steps(step_grouped, batches[:1]); timed_steps(step_plain, batches[:1])  # warm-up
    rates = {"grouped": [], "plain": []}
    for r in range(args.repeats):
        order = [("grouped", step_grouped), ("plain", step_plain)]
        if r % 2:
            order.reverse()  # alternate who goes first: drift on a shared machine hits both
        for name, fn in order:
            sync(); t = timed_steps(fn, batches); sync()
            rates[name].append(B * len(batches) / t)
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "backbone": args.backbone, "image_size": S, "batch_size": B, "device": str(dev), "threads": torch.get_num_threads(),
        "repeats": args.repeats, "steps": args.steps, "images_per_s": med, "all": rates,
        "ratio_grouped_over_plain": med["grouped"] / med["plain"], "overhead_pct": 100 * (1 - med["grouped"] / med["plain"]),
    }
    print(f"{args.backbone} {S}px batch {B} on {dev} ({torch.get_num_threads()} threads), median of {args.repeats}:")
    print(f"  plain single-head : {med['plain']:7.2f} images/s")
    print(f"  grouped + masked  : {med['grouped']:7.2f} images/s")
    print(f"  ratio {result['ratio_grouped_over_plain']:.3f}  (overhead {result['overhead_pct']:+.1f}%, target <= 5%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
