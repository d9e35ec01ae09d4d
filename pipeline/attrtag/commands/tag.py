"""``attrtag tag MODEL INPUT... --out FILE``: tag folders, files, globs and lists of images.

Re-running the same command after a crash or ``kill -9`` resumes: images already in ``--out``
are skipped and the rest appended (see ``datasets/OUTPUT.md``). Unreadable images get an
error record and do not stop the run; the exit status is 0 when the run completed, whatever
the images held.
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Sequence

from ..errors import AttrtagError
from ._rules import add_class_options, add_scoring_options, announce, class_options, warn

_DESCRIPTION = """\
Tag images with a trained checkpoint or an exported .onnx model (the .onnx path needs no torch).
One record per image: the top value of every group, its probability and the distribution;
unreadable images get a record with 'error' and 'message' and the run goes on.

Classes: with --rules R, or rules embedded in the model (attrtag export --rules), every record
also gets 'class' (best class, or 'unknown' below --unknown-threshold), 'class_prob', 'classes'
(the --class-top-k best, with probabilities) and 'class_explanation' (each group's contribution
to the best class's score). --no-rules skips embedded rules. 'attrtag classify' re-scores a finished
output with other rules or --set interventions without running the model.

What travels with the model is applied by default: each group's temperature, fitted on the val
split when the model was trained (or by 'attrtag calibrate --temperature'), so the probabilities
are calibrated; and to class scores, with a note that says so, the training label priors
(--no-priors turns them off) and the zero-shot calibration stored by 'attrtag calibrate', the
latter only with the rules it was chosen for (other rules get a warning and no calibration).
--no-calibration turns off both calibrations: the records then hold the model's raw probabilities.

Resumable: rerun the same command after a crash or kill and the images already in --out are
skipped, the rest appended. An output made by another model, schema, --top-k, --threshold or
class rules and options is refused (use --overwrite or another --out), and so is an output another
run is writing (one run at a time: FILE.lock beside it names the holder). Parquet output is written
at the end; until then the records live in FILE.partial.jsonl. JSONL and CSV files hold records
only (any tool reads them as they are); what made them is in FILE.meta.json beside them.
"""


def register(sub: Any) -> None:
    """Add the ``tag`` subcommand to ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser(
        "tag",
        help="tag images with a trained or exported model (resumable)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help=".onnx file (no torch needed) or training checkpoint (.pt)")
    p.add_argument(
        "inputs", metavar="INPUT", nargs="+",
        help="image file, folder (recursive), glob pattern ('**' allowed; quote it), or a list file "
        "(@list.txt or any .txt: one path per line, relative to the list's folder)",
    )
    p.add_argument(
        "--out", required=True, metavar="FILE",
        help="output file: .jsonl (.ndjson), .csv or .parquet (.pq); other names need --format",
    )
    p.add_argument(
        "--format", choices=("jsonl", "csv", "parquet"),
        help="output format (default: from --out's extension; one that contradicts it is refused)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (default: 32)")
    p.add_argument(
        "--workers", type=int, default=None,
        help="parallel decoding workers; 0 decodes in the main thread (default: a quarter of the CPUs, 1 to 8, "
        "on a CPU, at least 2 beside an .onnx model; all CPUs but one when the model runs on a GPU)",
    )
    p.add_argument("--worker-kind", choices=("thread", "process"), default="thread",
                   help="decode in threads (default; PIL releases the GIL) or processes")
    p.add_argument("--top-k", type=int, help="keep only the K most probable values of each group in <group>_probs")
    p.add_argument(
        "--threshold", action="append", default=[], metavar="[GROUP[.VALUE]=]P",
        help="mark an exclusive group 'uncertain' when its top probability is below P; P alone applies to "
        "every exclusive group, GROUP=P to one (repeatable; GROUP=P overrides P). For a multi-label group, "
        "GROUP=P decides all its values at P and GROUP.VALUE=P one value (default: the thresholds the model "
        "carries, chosen on the val split)",
    )
    p.add_argument(
        "--device", default="auto", help="auto (default: GPU when usable), cpu, cuda[:N] or tensorrt (ONNX only)"
    )
    rules = p.add_mutually_exclusive_group()
    rules.add_argument("--rules", metavar="R", help="class rules YAML: add zero-shot class fields to every record "
                       "(default: the rules embedded in the model, if any)")
    rules.add_argument("--no-rules", action="store_true", help="ignore rules embedded in the model")
    add_class_options(p)
    add_scoring_options(p, temperatures=True)
    p.add_argument("--threads", type=int, help="model runtime threads (default: the CPUs the decode workers leave "
                   "for a .pt checkpoint, all CPUs for ONNX Runtime, 1 on a GPU)")
    p.add_argument("--trt-cache-dir", help="TensorRT engine cache folder (ONNX models on a GPU)")
    p.add_argument("--max-pixels", type=int, help="refuse larger images as decompression bombs")
    p.add_argument("--overwrite", action="store_true", help="start --out again instead of resuming it")
    p.add_argument("--retry-failed", action="store_true",
                   help="tag again the inputs that --out holds error records for (e.g. files fixed on disk), "
                   "replacing those records")
    _add_ray_options(p)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress (default: a bar on a terminal, otherwise a line every 30 s)")
    p.set_defaults(func=run)


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    ray = p.add_argument_group("Ray engine (pip install \"attrtag[ray]\")")
    ray.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: threads in this process (default); ray: a Ray Data actor pool")
    ray.add_argument("--ray-address", metavar="ADDR",
                     help="head node HOST:PORT (from 'ray start --head'), ray://HOST:PORT or auto; "
                     "default: start a local Ray instance")
    ray.add_argument("--actors", type=int, help="actors, one model each (default: 1, or one per GPU with "
                     "--gpus-per-actor)")
    ray.add_argument("--gpus-per-actor", type=float, metavar="G",
                     help="GPUs per actor (default: 0, the model runs on the CPU)")


def parse_thresholds(specs: Sequence[str]) -> dict[str, float]:
    """``["0.5", "colour=0.7"]`` -> ``{"*": 0.5, "colour": 0.7}`` (``--threshold``'s syntax;
    the library checks the groups and the range).

    Raises:
        AttrtagError: a value that is not a number.
    """
    out: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        try:
            if sep and not name.strip():
                raise ValueError(spec)
            out[name if sep else "*"] = float(value)
        except ValueError:
            raise AttrtagError(f"--threshold {spec}: expected P or GROUP=P with P a probability between 0 and 1"
                               ) from None
    return out


def engine_of(args: argparse.Namespace) -> Any:
    """``local``, or the Ray engine's options (``--ray-address``, ``--actors``, ``--gpus-per-actor``)."""
    given = [o for o, v in (("--ray-address", args.ray_address), ("--actors", args.actors),
                            ("--gpus-per-actor", args.gpus_per_actor)) if v is not None]
    if args.engine == "local":
        if given:
            raise AttrtagError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --engine ray")
        return "local"
    from ..tagging.ray_engine import Ray  # only a Ray run pays for the Ray engine's imports

    return Ray(args.ray_address, args.actors, args.gpus_per_actor or 0.0)


def run(args: argparse.Namespace) -> int:
    """Tag the inputs into ``args.out``; returns the exit status."""
    from .. import api
    from ..tagging import expand_inputs
    from ..tagging.files import check_out
    from .._lock import OutputLock
    from ._progress import progress_to

    check_out(args.out, args.format)  # a bad --out or INPUT fails before the model loads
    inputs = expand_inputs(args.inputs)
    engine, thresholds = engine_of(args), parse_thresholds(args.threshold)
    # Another run writing --out is refused now, not once the model (or a Ray cluster) is up. A
    # folder that does not exist yet holds no output; the job locks --out once it has made it.
    held = OutputLock(args.out) if Path(args.out).parent.is_dir() else contextlib.nullcontext()
    with held, api.load(
        args.model, device=args.device, rules=args.rules or (False if args.no_rules else None), top_k=args.top_k,
        thresholds=thresholds, **class_options(args), batch_size=args.batch_size,
        workers=args.workers, worker_kind=args.worker_kind, threads=args.threads, max_pixels=args.max_pixels,
        trt_cache_dir=args.trt_cache_dir, engine=engine, warn=warn,
    ) as tagger:
        announce(tagger.layout.classes, embedded=not args.rules)
        with progress_to("tagging", disable=args.no_progress) as progress:
            summary = tagger.tag_to(args.out, inputs, fmt=args.format, overwrite=args.overwrite,
                                    retry_failed=args.retry_failed, progress=progress)
    reasons = ", ".join(f"{k} {n}" for k, n in sorted(summary.counts.items()) if k != "ok")
    print(
        f"tagged {summary.tagged}, failed {summary.failed}" + (f" ({reasons})" if reasons else "")
        + (f", {summary.retried} retried" if summary.retried else "")
        + (f", {summary.skipped} already in {args.out}" if summary.skipped else "")
        + f"; {summary.rate:.1f} images/s"
        + (f" ({summary.steady_rate:.1f} in its second half)" if summary.steady_rate is not None else "")
        + f" -> {args.out}"
    )
    return 0
