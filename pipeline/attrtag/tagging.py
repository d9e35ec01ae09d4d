"""The tagging engine: a batch of image paths in, a batch of records out.

Two ways to drive it, sharing :func:`decode_resized` (one image) and :func:`predict_records`
(one batch):

* :func:`tag_paths` — the local pipeline the ``attrtag tag`` command uses. Worker threads decode,
  resize and normalise images (``workers`` of them; Pillow and numpy release the GIL) up to
  ``prefetch`` batches ahead, while the main thread runs the model, so decoding overlaps
  inference. Batches come out in input order, which is what makes resumed outputs identical to
  uninterrupted ones (:mod:`attrtag.tag_output`).
* :class:`TagWorker` — the same work as a callable class that opens the model once in its
  constructor, the shape Ray Data's actor pools call. Ray is not a dependency; with it
  installed, a cluster run looks like::

      import ray
      from attrtag.tagging import TagWorker

      ds = ray.data.from_items([{"path": p} for p in paths])       # or ray.data.read_text(...)
      tags = ds.map_batches(
          TagWorker,
          fn_constructor_kwargs={"model_path": "model.onnx", "device": "cuda", "batch_size": 64},
          concurrency=4,             # actors, each holding one model session
          num_gpus=1,                # per actor; drop for CPU actors
          batch_size=64,
          batch_format="numpy",
      )
      tags.write_parquet("tags/")    # flat columns, see attrtag.tag_output

  Ray then owns scheduling, retries and output; the resume logic of ``attrtag tag`` does not
  apply (Ray Data restarts failed tasks instead).

Why threads and not processes (measured on the 2-core machine this was built on, 640x480
JPEGs to a 224 px centre crop): about 93% of decoding time is spent inside Pillow calls that
release the GIL (JPEG decode 37%, bicubic resize 44%, the RGB copy 9%), so threads run in
parallel. A thread pool costs 5.0 ms of CPU per image; a spawn process pool 6.9 ms (pickling
the pixels back, the queue feeder) plus 0.2 s of CPU per worker to start. Both were
CPU-bound on a shared machine (135 vs 106 images/s decode-only with 2 workers), and a crashed
worker process breaks the whole pool. ``worker_kind="process"`` stays available for decoders
that hold the GIL. Thread workers also normalise (float32 rows for the model), which takes
~1 ms per image off the main thread, the one that feeds the model: on this machine it made no
measurable difference (every core is busy either way), on a GPU box it keeps the main thread
from capping throughput at ~1,000 images/s. Process workers return uint8 pixels (4x smaller
to pass back) and the main thread normalises them.

Every image yields exactly one record: decoding failures of any kind become error records
(:meth:`attrtag.tag_output.RecordLayout.error_record`) and the run goes on. Only a failure of
the model itself stops a run.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from .errors import AttrtagError, ImageDecodeError
from .images import DEFAULT_MAX_PIXELS, display_path, load_rgb
from .preprocess import Preprocessing
from .schema import Schema
from .tag_output import Record, RecordLayout

_logger = logging.getLogger(__name__)

WORKER_KINDS = ("thread", "process")
DEFAULT_BATCH_SIZE = 32

def default_decode_workers() -> int:
    """Decode threads beside inference: half the usable CPUs, between 1 and 8.

    On a CPU-only machine the model's own threads need the cores; measured on 2 cores with
    resnetv2_50 (scripts/bench_tagging.py end-to-end), 1 decode thread gave end-to-end /
    model-only 0.913 against 0.897 with 2. One thread decodes ~200 images/s of 224 px JPEGs.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus // 2))


#: Hook run on every batch after records are made: ``postprocess(records, probs)`` where
#: ``probs[group]`` has one row per record without ``error``, in record order, with the full
#: distribution even under ``top_k``. Class fields from rules are made by the record layout
#: (``RecordLayout(classes=...)``), so this hook is free for callers' own additions.
Postprocess = Callable[[list[Record], Mapping[str, np.ndarray]], list[Record]]


class PredictorLike(Protocol):
    """What the engine needs of :class:`attrtag.predictor.Predictor`."""

    schema: Schema
    preprocessing: Preprocessing

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Decoded:
    """One image after the worker: its model input, or why there is none.

    Attributes:
        path: the path as given (may carry surrogate escapes).
        pixels: on success either uint8 ``[H, W, 3]`` at the model's input size, or (when the
            worker also normalised) the float32 ``[3, H, W]`` model input; None on failure.
        error: reason code on failure (``attrtag.images.REASONS``).
        message: one-line explanation on failure.
    """

    path: str
    pixels: np.ndarray | None = None
    error: str | None = None
    message: str | None = None


def decode_resized(
    path: str, preprocessing: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS, normalize: bool = False
) -> Decoded:
    """Decode one image and resize it to the model's input size; never raises for bad files.

    Module-level (picklable) so that process pools can run it.

    Args:
        path: image file.
        preprocessing: the model's preprocessing.
        max_pixels: images with more pixels are refused as ``bomb`` before decoding.
        normalize: also normalise (float32 ``[3, H, W]``); otherwise return uint8 pixels.

    Returns:
        :class:`Decoded` with pixels, or with ``error``/``message`` set.
    """
    try:
        img = load_rgb(path, max_pixels=max_pixels)
        pixels = np.asarray(preprocessing.resize(img), dtype=np.uint8)
        return Decoded(path, pixels=preprocessing.normalize(pixels) if normalize else pixels)
    except ImageDecodeError as err:
        return Decoded(path, error=err.reason, message=str(err))
    except MemoryError:
        return Decoded(path, error="decode", message=f"{display_path(path)}: out of memory while decoding")
    except Exception as err:  # noqa: BLE001 - one file must never stop a run of thousands
        _logger.debug("unexpected error decoding %s", display_path(path), exc_info=True)
        return Decoded(path, error="decode", message=f"{display_path(path)}: {type(err).__name__}: {err}")


def predict_records(
    predictor: PredictorLike,
    layout: RecordLayout,
    decoded: Sequence[Decoded],
    *,
    postprocess: Postprocess | None = None,
) -> list[Record]:
    """Run the model on the decoded images of one batch and make one record per image.

    Args:
        predictor: the model.
        layout: how probabilities become records.
        decoded: the batch, in output order; failed images become error records.
        postprocess: optional hook, see :data:`Postprocess`.

    Returns:
        Records in the order of ``decoded``.
    """
    ok = [d for d in decoded if d.pixels is not None]
    probs: dict[str, np.ndarray] = {}
    tagged: list[Record] = []
    if ok:
        prep = predictor.preprocessing
        # (B, 3, H, W) float32; uint8 rows still need normalising (process workers send those)
        x = np.stack([d.pixels if d.pixels.dtype == np.float32 else prep.normalize(d.pixels) for d in ok])
        probs = predictor(x)
        tagged = layout.prediction_records([display_path(d.path) for d in ok], probs)
    next_tagged = iter(tagged)
    records = [
        next(next_tagged)
        if d.pixels is not None
        else layout.error_record(display_path(d.path), d.error or "decode", d.message or "")
        for d in decoded
    ]
    if postprocess is not None:
        records = postprocess(records, probs)
    return records


def _make_pool(kind: str, workers: int) -> Executor:
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attrtag-decode")
    if kind == "process":
        # spawn, not fork: the parent holds model runtime threads, and forking a multi-threaded
        # process can deadlock the child on a lock held by a thread that was not copied.
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    raise AttrtagError(f"worker kind '{kind}' is not one of {', '.join(WORKER_KINDS)}")


def tag_paths(
    predictor: PredictorLike,
    paths: Iterable[str],
    *,
    layout: RecordLayout | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 2,
    worker_kind: str = "thread",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    prefetch: int = 2,
    normalize_in_workers: bool | None = None,
    postprocess: Postprocess | None = None,
) -> Iterator[list[Record]]:
    """Tag images in batches, decoding in parallel workers while the model runs.

    Args:
        predictor: an open model (:func:`attrtag.predictor.open_predictor`).
        paths: image paths, in the order the records should come out.
        layout: record layout (default: the predictor's schema, all values, no thresholds).
        batch_size: images per model call (and per yielded list).
        workers: decoding workers; 0 decodes in the calling thread (no overlap).
        worker_kind: ``"thread"`` or ``"process"``.
        max_pixels: larger images get a ``bomb`` error record.
        prefetch: batches decoded ahead of the one being predicted.
        normalize_in_workers: normalise in the workers (default: for threads, not processes).
        postprocess: optional per-batch hook, see :data:`Postprocess`.

    Yields:
        One list of records per batch (the last may be shorter), in input order; every path
        gives exactly one record.
    """
    if batch_size < 1:
        raise AttrtagError(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        raise AttrtagError(f"--workers must be 0 or more, got {workers}")
    layout = layout or RecordLayout(predictor.schema)
    prep = predictor.preprocessing
    if normalize_in_workers is None:
        normalize_in_workers = worker_kind == "thread"
    it = iter(paths)
    if workers == 0:
        while True:
            chunk = [decode_resized(p, prep, max_pixels) for _, p in zip(range(batch_size), it)]
            if not chunk:
                return
            yield predict_records(predictor, layout, chunk, postprocess=postprocess)

    pool = _make_pool(worker_kind, workers)
    pending: deque[Future[Decoded]] = deque()
    window = batch_size * (1 + max(0, prefetch))

    def fill() -> None:
        # Keep `window` images queued so workers decode the next batches during inference.
        for p in it:
            pending.append(pool.submit(decode_resized, p, prep, max_pixels, normalize_in_workers))
            if len(pending) >= window:
                break

    try:
        fill()
        while pending:
            try:
                chunk = [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
            except BrokenProcessPool:
                raise AttrtagError(
                    "a decoding process died (killed for memory, or a crash inside an image decoder); "
                    "rerun the same command to resume, or use --worker-kind thread"
                ) from None
            fill()
            yield predict_records(predictor, layout, chunk, postprocess=postprocess)
    finally:
        # Also runs when the consumer stops early (Ctrl-C, an error while writing): drop the
        # queued work instead of decoding it for nobody.
        pool.shutdown(wait=True, cancel_futures=True)


class TagWorker:
    """Tag a batch of paths with a model opened once: the unit of work for Ray Data actors.

    ``TagWorker(model_path, **opts)({"path": array_of_paths})`` returns flat column arrays (see
    :mod:`attrtag.tag_output`): ``object`` arrays for text columns (None where empty) and
    ``float64`` for ``<group>_prob`` (NaN for failed images).
    """

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "auto",
        threads: int | None = None,
        top_k: int | None = None,
        thresholds: Mapping[str, float] | None = None,
        workers: int = 4,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        batch_size: int | None = None,
        rules: str | None = None,
        class_top_k: int = 5,
    ) -> None:
        """Open the model.

        Args:
            model_path: ``.onnx`` file or training checkpoint.
            device: ``auto``, ``cpu`` or ``cuda`` (see :func:`attrtag.predictor.open_predictor`).
            threads: model runtime threads (None: the runtime's default).
            top_k: keep the ``k`` most probable values per group.
            thresholds: group -> minimum top probability (marks ``uncertain``).
            workers: decoding threads inside this worker (0: decode inline).
            max_pixels: decompression-bomb limit.
            batch_size: the batch size Ray will pass (lets TensorRT build its engine for it).
            rules: a rules YAML file, or ``"embedded"`` for the rules in the model's metadata,
                to add class fields (as ``attrtag tag --rules``); None: no class fields.
            class_top_k: classes kept per record when ``rules`` is set.
        """
        # Imported here: spawned decode workers import this module and must not pay for the
        # model runtime.
        from .predictor import open_predictor

        self.predictor = open_predictor(model_path, device=device, threads=threads, batch_size_hint=batch_size)
        self.layout = RecordLayout(
            self.predictor.schema, top_k=top_k, thresholds=dict(thresholds or {}),
            classes=self._classes(model_path, rules, class_top_k),
        )
        self.max_pixels = max_pixels
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attrtag-decode") if workers else None

    def _classes(self, model_path: str, rules: str | None, top_k: int) -> Any:
        if rules is None:
            return None
        from .rules import Rules
        from .zeroshot_tags import ClassTagging

        schema = self.predictor.schema
        if rules == "embedded":
            if not self.predictor.rules:
                raise AttrtagError(f"{model_path}: the model has no embedded rules; pass a rules file")
            loaded = Rules.from_dict(self.predictor.rules, schema, source=f"{model_path} metadata")
        else:
            loaded = Rules.load(rules, schema)
        return ClassTagging(loaded, top_k=top_k, source=str(rules))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tag ``batch["path"]``; returns ``{column: array}`` with one row per path, in order.

        Args:
            batch: ``{"path": array of str}`` (other keys are ignored).

        Returns:
            Flat column arrays, see the class docstring.
        """
        paths = [os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in batch["path"]]
        prep = self.predictor.preprocessing
        if self._pool is not None:
            decoded = list(self._pool.map(lambda p: decode_resized(p, prep, self.max_pixels, True), paths))
        else:
            decoded = [decode_resized(p, prep, self.max_pixels) for p in paths]
        records = predict_records(self.predictor, self.layout, decoded) if decoded else []
        return records_to_columns(self.layout, records)


def records_to_columns(layout: RecordLayout, records: Sequence[Record]) -> dict[str, np.ndarray]:
    """Records -> flat column arrays (``float64`` for ``<group>_prob``, ``object`` otherwise).

    Args:
        layout: the record layout.
        records: records made with ``layout``.

    Returns:
        ``{column: array of len(records)}`` for every column of ``layout``.
    """
    flat = [layout.to_flat(r) for r in records]
    out: dict[str, np.ndarray] = {}
    for col in layout.columns:
        values: list[Any] = [row[col] for row in flat]
        if col == "class_prob" or (col.endswith("_prob") and col[: -len("_prob")] in layout.schema):
            out[col] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            out[col] = np.array(values, dtype=object)
    return out
