"""The tagging engine: a batch of image paths in, a batch of records out.

Two ways to drive it, sharing :func:`predict_records` (one batch):

* :func:`tag_paths`, the local pipeline of ``attrtag tag``: worker threads decode and resize
  images (:func:`attrtag.data.batches.decode_batches`) up to ``prefetch`` batches ahead while
  this thread runs the model, so decoding overlaps inference. Batches come out in input order,
  which is what makes resumed outputs identical to uninterrupted ones.
* :class:`TagWorker`, the same work as a callable class that opens the model once in its
  constructor: the shape Ray Data's actor pools call (``ds.map_batches(TagWorker, ...)``).

Every image yields exactly one record: decoding failures of any kind become error records
(:meth:`RecordLayout.error_record`) and the run goes on. Only a failure of the model itself
stops a run. Class fields (zero-shot rules) are added here, from the rounded distributions the
records hold, with the rules compiled once per run.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..data.batches import Decoded, decode_batches, decode_one, stack_inputs
from ..data.images import DEFAULT_MAX_PIXELS, display_path
from ..runtime import Predictor
from ..runtime.threads import open_with_thread_plan
from ..schema import Schema
from ..zeroshot.fields import CLASS_FIELDS, ClassTagging, class_tagging_for
from .records import RecordLayout, TagRecord, round_probs

_logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32

#: Hook run on every batch after records are made: ``postprocess(records, probs)`` where
#: ``probs[group]`` has one row per record without ``error``, in record order, with the full
#: distribution even under ``top_k``.
Postprocess = Callable[[list[TagRecord], Mapping[str, np.ndarray]], list[TagRecord]]


def add_class_fields(
    records: Sequence[TagRecord], probs: Mapping[str, np.ndarray], classes: ClassTagging, schema: Schema
) -> None:
    """Add the class fields of ``classes`` to the tagged records, in place.

    Args:
        records: records in batch order; those with ``error`` are left alone.
        probs: group -> distributions of the tagged records, in order (rounded as the records
            hold them, so re-scoring a finished output reproduces the fields exactly).
        classes: the run's rules and class options.
        schema: the model's schema.
    """
    tagged = [r for r in records if "error" not in r]
    if tagged:
        for rec, fields in zip(tagged, classes.fields(probs, schema)):
            rec.update(fields)


def rescore(records: Sequence[TagRecord], source: RecordLayout, target: RecordLayout) -> list[TagRecord]:
    """Records of ``source`` with the class fields of ``target.classes`` (``attrtag classify``).

    Args:
        records: records written with layout ``source`` (which must hold full distributions).
        source: the layout of the file the records come from.
        target: the layout to write; its ``classes`` are scored (None: class fields removed).

    Returns:
        New records: failed images unchanged; tagged ones without any old class fields, plus
        the new ones.
    """
    out = [r if "error" in r else {k: v for k, v in r.items() if k not in CLASS_FIELDS} for r in records]
    tagged = [r for r in out if "error" not in r]
    if target.classes is not None and tagged:
        add_class_fields(out, source.probabilities(tagged), target.classes, target.schema)
    return out


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
    ok = [d for d in decoded if d.pixels is not None]
    raw: dict[str, np.ndarray] = {}
    probs: dict[str, np.ndarray] = {}
    tagged: list[TagRecord] = []
    if ok:
        raw = predictor(stack_inputs(ok, predictor.preprocessing))
        probs = round_probs(raw)  # what the records hold, and what class fields are scored on
        tagged = layout.prediction_records([display_path(d.path) for d in ok], probs)
    next_tagged = iter(tagged)
    records = [
        next(next_tagged)
        if d.pixels is not None
        else layout.error_record(display_path(d.path), d.error or "decode", d.message or "")
        for d in decoded
    ]
    if layout.classes is not None and tagged:
        add_class_fields(records, probs, layout.classes, layout.schema)
    if postprocess is not None:
        records = postprocess(records, raw)
    return records


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


class TagWorker:
    """Tag a batch of paths with a model opened once: the unit of work for Ray Data actors.

    ``TagWorker(model_path, **opts)({"path": array_of_paths})`` returns flat column arrays (see
    ``datasets/OUTPUT.md``): ``object`` arrays for text columns (None where empty) and
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
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        batch_size: int | None = None,
        rules: str | None = None,
        class_top_k: int = 5,
        layout: RecordLayout | None = None,
    ) -> None:
        """Open the model.

        Args:
            model_path: ``.onnx`` file or training checkpoint.
            device: ``auto``, ``cpu`` or ``cuda`` (see :func:`attrtag.runtime.open_predictor`).
            threads: model runtime threads (None: :func:`attrtag.runtime.threads.plan_threads`).
            top_k: keep the ``k`` most probable values per group.
            thresholds: group -> minimum top probability (marks ``uncertain``).
            workers: decoding threads inside this worker (0: decode inline; None: the plan's).
            max_pixels: decompression-bomb limit.
            batch_size: the batch size Ray will pass (lets TensorRT build its engine for it).
            rules: a rules YAML file, or ``"embedded"`` for the rules in the model's card, to
                add class fields (as ``attrtag tag --rules``); None: no class fields.
            class_top_k: classes kept per record when ``rules`` is set.
            layout: the exact record layout to use (the Ray engine passes its run's, class
                options included); ``top_k``, ``thresholds``, ``rules`` and ``class_top_k``
                are then ignored.

        Raises:
            AttrtagError: the model cannot be opened, or its schema is not ``layout``'s.
        """
        self.predictor, split = open_with_thread_plan(
            model_path, device=device, workers=workers, threads=threads, batch_size_hint=batch_size
        )
        if layout is not None:
            self.predictor.schema.check_same(layout.schema, what=f"{model_path} is not the model this run was set up for")
            self.layout = layout
        else:
            self.layout = RecordLayout(
                self.predictor.schema, top_k=top_k, thresholds=dict(thresholds or {}),
                classes=class_tagging_for(
                    self.predictor.schema, self.predictor.rules,
                    False if rules is None else True if rules == "embedded" else rules,
                    model_name=os.path.basename(model_path), top_k=class_top_k, warn=_logger.warning,
                ),
            )
        self.max_pixels = max_pixels
        workers = split.decode_workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attrtag-decode") if workers else None

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tag ``batch["path"]``; returns ``{column: array}`` with one row per path, in order."""
        paths = [os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in batch["path"]]
        prep = self.predictor.preprocessing
        if self._pool is not None:
            decoded = list(self._pool.map(lambda p: decode_one(p, prep, self.max_pixels, True), paths))
        else:
            decoded = [decode_one(p, prep, self.max_pixels) for p in paths]
        records = predict_records(self.predictor, self.layout, decoded) if decoded else []
        return records_to_columns(self.layout, records)


def records_to_columns(layout: RecordLayout, records: Sequence[TagRecord]) -> dict[str, np.ndarray]:
    """Records -> flat column arrays (``float64`` for probabilities, ``object`` otherwise).

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
