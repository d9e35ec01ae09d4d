"""``attrtag tag MODEL INPUT... --out FILE``: tag folders, files, globs and lists of images.

Re-running the same command after a crash or ``kill -9`` resumes: images already in ``--out``
are skipped and the rest appended (see ``datasets/OUTPUT.md``). Unreadable images get an
error record and do not stop the run; the exit status is 0 when the run completed, whatever
the images held.
"""
from __future__ import annotations

import argparse
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import AttrtagError
from ..zeroshot.fields import ClassTagging, class_tagging_for
from ._rules import (
    add_class_options, add_scoring_options, class_options, class_options_given, note, warn, warn_unconstrained_overrides,
)

if TYPE_CHECKING:
    from ..card import ModelCard

_logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Tag images with a trained checkpoint or an exported .onnx model (the .onnx path needs no torch).
One record per image: the top value of every group, its probability and the distribution;
unreadable images get a record with 'error' and 'message' and the run goes on.

Classes: with --rules R, or rules embedded in the model (attrtag export --rules), every record
also gets 'class' (best class, or 'unknown' below --unknown-threshold), 'class_prob', 'classes'
(the --class-top-k best, with probabilities) and 'class_explanation' (each group's contribution
to the best class's score). --no-rules skips embedded rules. 'attrtag classify' re-scores a finished
output with other rules or --set interventions without running the model.

What travels with the model is applied to class scores by default, and a note says so: the
training label priors (--no-priors turns them off) and the calibration stored by 'attrtag
calibrate' (--no-calibration), the latter only with the rules it was chosen for (other rules get
a warning and no calibration).

Resumable: rerun the same command after a crash or kill and the images already in --out are
skipped, the rest appended. An output made by another model, schema, --top-k, --threshold or
class rules and options is refused (use --overwrite or another --out). Parquet output is written
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
        "--format", choices=("jsonl", "csv", "parquet"), help="output format (default: from --out's extension)"
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
        "--threshold", action="append", default=[], metavar="[GROUP=]P",
        help="mark a group 'uncertain' when its top probability is below P; P alone applies to every "
        "group, GROUP=P to one (repeatable; GROUP=P overrides P)",
    )
    p.add_argument(
        "--device", default="auto", help="auto (default: GPU when usable), cpu, cuda[:N] or tensorrt (ONNX only)"
    )
    rules = p.add_mutually_exclusive_group()
    rules.add_argument("--rules", metavar="R", help="class rules YAML: add zero-shot class fields to every record "
                       "(default: the rules embedded in the model, if any)")
    rules.add_argument("--no-rules", action="store_true", help="ignore rules embedded in the model")
    add_class_options(p)
    add_scoring_options(p)
    p.add_argument("--threads", type=int, help="model runtime threads (default: the CPUs the decode workers leave "
                   "for a .pt checkpoint, all CPUs for ONNX Runtime, 1 on a GPU)")
    p.add_argument("--trt-cache-dir", help="TensorRT engine cache folder (ONNX models on a GPU)")
    p.add_argument("--max-pixels", type=int, help="refuse larger images as decompression bombs")
    p.add_argument("--overwrite", action="store_true", help="start --out again instead of resuming it")
    p.add_argument("--retry-failed", action="store_true",
                   help="tag again the inputs that --out holds error records for (e.g. files fixed on disk), "
                   "replacing those records")
    ray = p.add_argument_group("Ray engine (pip install \"attrtag[ray]\")")
    ray.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: threads in this process (default); ray: a Ray Data actor pool")
    ray.add_argument("--ray-address", metavar="ADDR",
                     help="head node HOST:PORT (from 'ray start --head'), ray://HOST:PORT or auto; "
                     "default: start a local Ray instance")
    ray.add_argument("--actors", type=int, help="actors, one model each (default: 1, or one per GPU with "
                     "--gpus-per-actor)")
    ray.add_argument("--gpus-per-actor", type=float, default=0.0, metavar="G",
                     help="GPUs per actor (default: 0, the model runs on the CPU)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress (default: a bar on a terminal, otherwise a line every 30 s)")
    p.set_defaults(func=run)


def parse_thresholds(specs: Sequence[str], groups: Sequence[str]) -> dict[str, float]:
    """``["0.5", "colour=0.7"]`` -> ``{group: threshold}`` for every group that gets one.

    Args:
        specs: ``--threshold`` values: ``P`` (all groups) or ``GROUP=P`` (one group; wins over ``P``).
        groups: the model's group names, in order.

    Returns:
        Thresholds in group order.

    Raises:
        AttrtagError: a value that is not a probability, or an unknown group.
    """
    default: float | None = None
    per_group: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        try:
            p = float(value)
        except ValueError:
            p = float("nan")
        if not 0.0 <= p <= 1.0:
            raise AttrtagError(f"--threshold {spec}: expected P or GROUP=P with P a probability between 0 and 1")
        if not sep:
            default = p
        elif name not in groups:
            raise AttrtagError(f"--threshold {spec}: the model has no group '{name}' (groups: {', '.join(groups)})")
        else:
            per_group[name] = p
    return {g: per_group.get(g, default) for g in groups if g in per_group or default is not None}  # type: ignore[misc]


def classes_for_run(args: argparse.Namespace, card: ModelCard, model_name: str) -> ClassTagging | None:
    """The class rules and options of a ``tag`` run: ``--rules``, else the model's own, else none;
    with the card's priors and calibration unless turned off.

    Raises:
        AttrtagError: bad rules ("file:line: ..."), or class options without rules.
    """
    rules = args.rules if args.rules else (False if args.no_rules else None)
    tagging = class_tagging_for(
        card.schema, card.rules, rules, model_name=model_name, warn=warn, **class_options(args),
        label_counts=None if args.no_priors else card.label_counts,
        calibration=None if args.no_calibration else card.calibration,
    )
    if tagging is None:
        given = class_options_given(args)
        if given:
            why = "--no-rules was given" if args.no_rules else f"{model_name} embeds no rules"
            raise AttrtagError(f"{', '.join(given)} need class rules, but {why}; pass --rules R")
        return None
    if not args.rules:
        _logger.info("classes: %s (--no-rules to skip them)", tagging.describe())
    scoring = tagging.scoring_note()
    if scoring:
        note(scoring)
    warn_unconstrained_overrides(tagging)
    return tagging


def run(args: argparse.Namespace) -> int:
    """Tag the inputs into ``args.out``; returns the exit status."""
    from ..data.images import DEFAULT_MAX_PIXELS
    from ..runtime import model_kind, read_card
    from ..runtime.threads import open_with_thread_plan
    from ..tagging.header import model_fingerprint, output_format
    from ..tagging.inputs import expand_inputs
    from ..tagging.job import TagJob
    from ..tagging.records import RecordLayout
    from ._progress import count_progress

    fmt = output_format(args.out, args.format)  # a bad --out fails before the model loads
    if args.batch_size < 1:
        raise AttrtagError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise AttrtagError(f"--workers must be 0 or more, got {args.workers}")
    ray_options = [o for o, v in (("--ray-address", args.ray_address), ("--actors", args.actors),
                                  ("--gpus-per-actor", args.gpus_per_actor)) if v]
    if args.engine == "local" and ray_options:
        raise AttrtagError(f"{', '.join(ray_options)} need --engine ray")
    if args.engine == "ray":
        from ..tagging.ray_engine import import_ray

        import_ray()  # a missing install fails before any work
        if args.worker_kind != "thread":
            raise AttrtagError("--worker-kind process is for the local engine; Ray actors decode in threads")
    paths = expand_inputs(args.inputs)
    model_kind(args.model)  # a file that is not a model fails here, saying what it is
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    # The output header names the model by its SHA-256: hash it (0.13 s for a ResNet-50, GIL
    # released) while the model loads, which is most of a short run's start-up.
    hashing = ThreadPoolExecutor(1, thread_name_prefix="attrtag-hash")
    fingerprint = hashing.submit(model_fingerprint, args.model)
    hashing.shutdown(wait=False)
    predictor = None
    if args.engine == "local":
        predictor, split = open_with_thread_plan(
            args.model, device=args.device, workers=args.workers, threads=args.threads,
            batch_size_hint=args.batch_size, trt_cache_dir=args.trt_cache_dir,
        )
        _logger.info("%d decode threads, %d model threads", split.decode_workers, split.model_threads)
        card = predictor.card
    else:
        card = read_card(args.model)
    layout = RecordLayout(
        card.schema, top_k=args.top_k, thresholds=parse_thresholds(args.threshold, card.schema.names),
        classes=classes_for_run(args, card, os.path.basename(args.model)),
    )
    ray_started = False
    try:
        if args.engine == "ray":
            from ..tagging import ray_engine

            ray_started = ray_engine.connect(args.ray_address)
            ray_plan = ray_engine.plan(args.model, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                                       device=args.device, workers=args.workers, threads=args.threads)
            _logger.info("Ray: %d actors, %d CPUs and %g GPUs each, %d decode and %d model threads each",
                         ray_plan.actors, ray_plan.cpus_per_actor, ray_plan.gpus_per_actor, ray_plan.decode_workers,
                         ray_plan.model_threads)
        with TagJob(predictor, paths, args.out, layout=layout, model_path=args.model, fmt=fmt, overwrite=args.overwrite,
                    retry_failed=args.retry_failed, model_sha256=fingerprint.result()) as job:
            if job.retried:
                _logger.info("retrying %d images that failed before", job.retried)
            if job.skipped:
                _logger.info("resuming %s: %d of %d images already there", args.out, job.skipped, len(paths))
            if args.engine == "ray":
                batches = job.record(ray_engine.tag_with_ray(
                    args.model, job.todo, layout, ray_plan, batch_size=args.batch_size, max_pixels=max_pixels))
            else:
                batches = job.run(batch_size=args.batch_size, workers=split.decode_workers,
                                  worker_kind=args.worker_kind, max_pixels=max_pixels)
            with count_progress(len(job.todo), desc="tagging", disable=args.no_progress) as bar:
                for records in batches:
                    if job.failed:
                        bar.set_postfix_str(f"failed {job.failed}", refresh=False)
                    bar.update(len(records))
    finally:
        if ray_started:
            ray_engine.shutdown()

    reasons = ", ".join(f"{k} {n}" for k, n in sorted(job.counts.items()) if k != "ok")
    print(
        f"tagged {job.tagged}, failed {job.failed}" + (f" ({reasons})" if reasons else "")
        + (f", {job.retried} retried" if job.retried else "")
        + (f", {job.skipped} already in {args.out}" if job.skipped else "")
        + f"; {job.rate:.1f} images/s -> {args.out}"
    )
    return 0

