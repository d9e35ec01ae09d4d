"""A tagging job: every input path into one output file, resumable: what ``attrtag tag`` runs.

:class:`TagJob` opens the output (checking an existing one was made by the same model and
settings, see :mod:`.header`), skips the paths already recorded, and writes each batch of
records an engine makes durably before yielding it, so the caller can show progress and a
``kill -9`` loses at most the batch in flight. The job holds the output's lock (:mod:`.lock`)
from before it opens the output to its end: a second run on the same output is refused.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ..data.images import display_path
from .engine import Engine
from .files import TagWriter, check_out, open_output
from .header import OutputMeta, model_fingerprint
from .inputs import ImagePaths
from .._lock import OutputLock
from .recorded import as_recorded_here, recorded_as, working_folder
from .records import RecordLayout, TagRecord
from .retry import drop_failed

_logger = logging.getLogger(__name__)


#: Batches a run needs before its second half shows the steady pace. The start-up (a GPU's kernel
#: search, the first decodes) slows the first batch while the decode workers fill their prefetch
#: of 2 batches; those are consumed faster than decoding keeps up, so a pace measured from the
#: first batch's end overstated it (129% of the decode ceiling in a 2-batch CPU run).
MIN_PACE_BATCHES = 6


def second_half(marks: Sequence[tuple[int, float]]) -> tuple[int, float]:
    """(images, seconds) from the batch that completes half the images to the end.

    Args:
        marks: (images done, seconds since the start) after each batch.

    Returns:
        ``(0, 0.0)`` for fewer than :data:`MIN_PACE_BATCHES` batches.
    """
    if len(marks) < MIN_PACE_BATCHES:
        return (0, 0.0)
    total, end = marks[-1]
    done, at = next(m for m in marks if 2 * m[0] >= total)
    return (total - done, end - at)


@dataclass(frozen=True)
class TagSummary:
    """What :meth:`Tagger.tag_to` did.

    Attributes:
        out: the output file.
        inputs: image paths the inputs expanded to.
        counts: ``ok`` and each error code, over the records this run wrote.
        skipped: images the output already held (a resumed run).
        retried: error records removed to be tagged again (``retry_failed``).
        seconds: the tagging loop's time (model loading excluded).
        second_half: (images, seconds) of the loop's second half, from the batch that completes
            half the images to the end; (0, 0.0) in runs too short for it (:data:`MIN_PACE_BATCHES`).
    """

    out: str
    inputs: int
    counts: Mapping[str, int] = field(default_factory=dict)
    skipped: int = 0
    retried: int = 0
    seconds: float = 0.0
    second_half: tuple[int, float] = (0, 0.0)

    @property
    def tagged(self) -> int:
        return self.counts.get("ok", 0)

    @property
    def failed(self) -> int:
        return sum(self.counts.values()) - self.tagged

    @property
    def rate(self) -> float:
        """Images per second of the tagging loop."""
        return sum(self.counts.values()) / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float | None:
        """Images per second over the loop's second half (None: too short): the pace a longer run keeps."""
        images, seconds = self.second_half
        return images / seconds if images > 0 and seconds > 0 else None


class TagJob:
    """Write the records of ``paths`` into ``out``, resuming it; use as a context manager.

    Args:
        paths: image paths in output order (see :func:`attrtag.tagging.inputs.expand_inputs`).
        out: the output file (``.jsonl``, ``.csv`` or ``.parquet``).
        layout: record layout (schema, top-k, thresholds, class rules).
        model_path: the model file (its name and SHA-256 identify the model in the header).
        fmt: output format override (default: from ``out``'s extension).
        overwrite: start ``out`` again instead of resuming it.
        model_sha256: the model file's SHA-256 when already known (default: computed here).
        retry_failed: remove the error records of ``paths`` from the output first
            (:func:`.retry.drop_failed`), so those images are tagged again.

    Attributes:
        todo: the paths not yet in the output, in order.
        skipped: how many paths the output already had.
        retried: how many error records were removed to be tried again.
        counts: ``ok`` and each error code, over the records written by this job.
    """

    def __init__(
        self,
        paths: Sequence[str],
        out: str | os.PathLike[str],
        *,
        layout: RecordLayout,
        model_path: str | os.PathLike[str],
        fmt: str | None = None,
        overwrite: bool = False,
        retry_failed: bool = False,
        model_sha256: str | None = None,
    ) -> None:
        self.layout, self.out = layout, Path(out)
        meta = OutputMeta(layout, model=os.path.basename(model_path),
                          model_sha256=model_sha256 or model_fingerprint(model_path),
                          relative_to=working_folder())
        check_out(out, fmt)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        # Held for the whole job, across the writer reopened below: no other run slips in between.
        self._lock = OutputLock(out).acquire()
        shown = paths.display if isinstance(paths, ImagePaths) else [display_path(p) for p in paths]
        try:
            self.writer = self._open(paths, shown, meta, fmt=fmt, overwrite=overwrite, retry_failed=retry_failed)
        except BaseException:
            self._lock.release()
            raise
        base = self.writer.meta.relative_to
        recorded = recorded_as(paths, shown, self.writer.done, base)
        self.todo = as_recorded_here([p for p, r in zip(paths, recorded) if r is None], base)
        self.skipped = len(paths) - len(self.todo)
        respelled = sum(r is not None and r != d for r, d in zip(recorded, shown))
        if respelled:
            _logger.info("%d of these images are in %s under another spelling of their path: not tagged again",
                         respelled, out)
        self.counts: Counter[str] = Counter()
        self.seconds = 0.0
        #: (images, seconds) of the loop's second half (see :func:`second_half`).
        self.second_half: tuple[int, float] = (0, 0.0)
        if self.retried:
            _logger.info("retrying %d images that failed before", self.retried)
        if self.skipped:
            _logger.info("resuming %s: %d of %d images already there", out, self.skipped, len(paths))

    def _open(self, paths: Sequence[str], shown: Sequence[str], meta: OutputMeta, *, fmt: str | None,
              overwrite: bool, retry_failed: bool) -> TagWriter:
        """The output's writer; with ``retry_failed``, after removing the error records of ``paths``."""
        self.retried = 0
        writer = open_output(self.out, meta, fmt=fmt, overwrite=overwrite)
        if not (retry_failed and writer.done):
            return writer
        # The output was accepted (same model and settings, torn tail repaired): rewrite it
        # without this run's failed records, then resume as usual, which tags them again.
        mine = {r for r in recorded_as(paths, shown, writer.done, writer.meta.relative_to) if r is not None}
        writer.close(complete=False)
        self.retried = drop_failed(self.out, mine, columns=self.layout.columns, fmt=fmt)
        return open_output(self.out, meta, fmt=fmt)

    def run(self, engine: Engine, *, batch_size: int, max_pixels: int,
            progress: Callable[[int, int, int], Any] | None = None) -> None:
        """Tag :attr:`todo` with ``engine``, writing each batch durably before the next.

        Args:
            engine: what makes the records (:class:`~.engine.LocalEngine`, :class:`~.ray_engine.RayEngine`).
            batch_size: images per model call.
            max_pixels: decompression-bomb limit.
            progress: called after every batch as ``progress(done, total, failed)``.
        """
        batches = engine.batches(self.todo, self.layout, batch_size=batch_size, max_pixels=max_pixels)
        for _ in self.record(batches):
            if progress is not None:
                progress(sum(self.counts.values()), len(self.todo), self.failed)

    def record(self, batches: Iterable[list[TagRecord]]) -> Iterator[list[TagRecord]]:
        """Write each batch of records (of :attr:`todo`, in order) durably, then yield it."""
        start, marks = time.perf_counter(), []
        try:
            for records in batches:
                self.writer.write(records)
                self.counts.update(r.get("error") or "ok" for r in records)
                marks.append((sum(self.counts.values()), time.perf_counter() - start))
                yield records
        finally:
            self.seconds = time.perf_counter() - start
            self.second_half = second_half(marks)

    @property
    def tagged(self) -> int:
        return self.counts["ok"]

    @property
    def failed(self) -> int:
        return sum(self.counts.values()) - self.counts["ok"]

    def summary(self, inputs: int) -> TagSummary:
        """What this job did, ``inputs`` being the images its inputs expanded to."""
        return TagSummary(os.fspath(self.out), inputs, dict(self.counts), self.skipped, self.retried, self.seconds,
                          self.second_half)

    def close(self, *, complete: bool = True) -> None:
        """Release the output and its lock; ``complete=False`` after an error (Parquet keeps its sidecar)."""
        try:
            self.writer.close(complete=complete)
        finally:
            self._lock.release()

    def __enter__(self) -> "TagJob":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(complete=exc_type is None)


def run_job(paths: Sequence[str], out: str | os.PathLike[str], engine: Engine, *, batch_size: int, max_pixels: int,
            progress: Callable[[int, int, int], Any] | None = None, **options: Any) -> TagJob:
    """Open the job (``options`` as :class:`TagJob`'s), run it with ``engine``, close it; returns it."""
    with TagJob(paths, out, **options) as job:
        job.run(engine, batch_size=batch_size, max_pixels=max_pixels, progress=progress)
    return job
