"""The tagging engine: a batch of image paths in, a batch of records out.

Two ways to drive it, sharing :func:`predict_records` (one batch):

* :func:`tag_paths`, the local pipeline of ``attrtag tag``: worker threads decode and resize
  images (:func:`attrtag.data.batches.decode_batches`) up to ``prefetch`` batches ahead while
  this thread runs the model, so decoding overlaps inference. Batches come out in input order,
  which is what makes resumed outputs identical to uninterrupted ones.
* :class:`TagWorker`, the same work as a callable class that opens the model once in its
  constructor: the shape Ray Data's actor pools call (``ds.map_batches(TagWorker, ...)``).

Every image yields exactly one record: decoding failures of any kind become error records
(:meth:`RecordLayout.batch`) and the run goes on. Only a failure of the model itself stops a
run. The records, class fields included, are made by :mod:`.records` in one call per batch.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from ..data.batches import Decoded, DecodedBatch, decode_batches, decode_one, stack_inputs
from ..data.images import DEFAULT_MAX_PIXELS, quiet_pillow_size_warning
from ..runtime import Predictor
from ..runtime.threads import open_with_thread_plan
from .records import RecordLayout, TagRecord

DEFAULT_BATCH_SIZE = 32

#: Hook run on every batch after records are made: ``postprocess(records, probs)`` where
#: ``probs[group]`` has one row per record without ``error``, in record order, with the full
#: distribution even under ``top_k``.
Postprocess = Callable[[list[TagRecord], Mapping[str, np.ndarray]], list[TagRecord]]


def predict_records(
    predictor: Predictor,
    layout: RecordLayout,
    decoded: Sequence[Decoded],
    *,
    postprocess: Postprocess | None = None,
) -> list[TagRecord]:
    """Run the model on the decoded images of one batch and make one record per image.

    Args:
        predictor: the model.
        layout: how probabilities become records (and which class rules apply).
        decoded: the batch, in output order; failed images become error records.
        postprocess: optional hook, see :data:`Postprocess`.

    Returns:
        Records in the order of ``decoded``.
    """
    inputs = decoded.inputs if isinstance(decoded, DecodedBatch) else stack_inputs(decoded, predictor.preprocessing)
    raw = predictor(inputs) if len(inputs) else {}
    records = layout.batch(decoded, raw)
    return postprocess(records, raw) if postprocess is not None else records


def tag_paths(
    predictor: Predictor,
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
) -> Iterator[list[TagRecord]]:
    """Tag images in batches, decoding in parallel workers while the model runs.

    Args:
        predictor: an open model (:func:`attrtag.runtime.open_predictor`).
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
    layout = layout or RecordLayout(predictor.schema)
    for chunk in decode_batches(
        paths, predictor.preprocessing, batch_size=batch_size, workers=workers, worker_kind=worker_kind,
        max_pixels=max_pixels, prefetch=prefetch, normalize_in_workers=normalize_in_workers,
    ):
        yield predict_records(predictor, layout, chunk, postprocess=postprocess)


class Engine(Protocol):
    """What makes the records of a run: this process (:class:`LocalEngine`) or a Ray cluster."""

    def batches(self, paths: Sequence[str], layout: RecordLayout, *, batch_size: int,
                max_pixels: int) -> Iterator[list[TagRecord]]:
        """The records of ``paths``, a batch at a time, in input order; every path exactly once."""
        ...

    def close(self) -> None:
        """Release what the engine holds."""
        ...


class LocalEngine:
    """Tagging in this process: decode threads (or processes) beside one open model.

    Args:
        predictor: the open model.
        workers: decode workers (0: decode in the model's thread).
        worker_kind: ``thread`` or ``process``.
    """

    def __init__(self, predictor: Predictor, *, workers: int, worker_kind: str = "thread") -> None:
        self.predictor, self.workers, self.worker_kind = predictor, workers, worker_kind

    def batches(self, paths: Iterable[str], layout: RecordLayout, *, batch_size: int,
                max_pixels: int) -> Iterator[list[TagRecord]]:
        """Records of ``paths`` in input order, a batch at a time (see :func:`tag_paths`)."""
        return tag_paths(self.predictor, paths, layout=layout, batch_size=batch_size, workers=self.workers,
                         worker_kind=self.worker_kind, max_pixels=max_pixels)

    def close(self) -> None:
        """Nothing to release: the model goes with the predictor."""


class TagWorker:
    """Tag a batch of paths with a model opened once: the unit of work for Ray Data actors.

    ``TagWorker(model_path, layout)({"path": array_of_paths})`` returns ``{"record": array}``:
    one JSON text per path, in order, each the record :class:`RecordLayout` made (what the
    output file holds). Records travel as text because their fields differ between tagged and
    failed images; the driver parses each once and hands it to the writer.
    """

    def __init__(
        self,
        model_path: str,
        layout: RecordLayout,
        *,
        device: str = "auto",
        threads: int | None = None,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        batch_size: int | None = None,
    ) -> None:
        """Open the model.

        Args:
            model_path: ``.onnx`` file or training checkpoint.
            layout: the run's record layout (class scoring included).
            device: ``auto``, ``cpu`` or ``cuda`` (see :func:`attrtag.runtime.open_predictor`).
            threads: model runtime threads (None: :func:`attrtag.runtime.threads.plan_threads`).
            workers: decoding threads inside this worker (0: decode inline; None: the plan's).
            max_pixels: decompression-bomb limit.
            batch_size: the batch size Ray will pass (lets TensorRT build its engine for it).

        Raises:
            AttrtagError: the model cannot be opened, or its schema is not ``layout``'s.
        """
        quiet_pillow_size_warning()  # an actor's process is attrtag's, as the CLI's is
        # Calibrated as the driver's layout says (its header records the temperatures applied).
        self.predictor, split = open_with_thread_plan(
            model_path, device=device, workers=workers, threads=threads, batch_size_hint=batch_size,
            calibrated=bool(layout.temperatures),
        )
        self.predictor.schema.check_same(layout.schema, what=f"{model_path} is not the model this run was set up for")
        self.layout, self.max_pixels = layout, max_pixels
        workers = split.decode_workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attrtag-decode") if workers else None

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tag ``batch["path"]``; returns ``{"record": JSON texts}``, one per path, in order."""
        paths = [os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in batch["path"]]
        prep = self.predictor.preprocessing
        if self._pool is not None:
            decoded = list(self._pool.map(lambda p: decode_one(p, prep, self.max_pixels, True), paths))
        else:
            decoded = [decode_one(p, prep, self.max_pixels) for p in paths]
        records = predict_records(self.predictor, self.layout, decoded) if decoded else []
        return {"record": np.array([json.dumps(r, ensure_ascii=False) for r in records], dtype=object)}
