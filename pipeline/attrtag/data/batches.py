"""Images to model-input batches, decoded in parallel while the model runs on the previous batch.

The one decode pipeline of the project: tagging, evaluation and int8 calibration all iterate
:func:`decode_batches`. Each image goes through :meth:`Preprocessing.load` (decode, EXIF
orientation, resize) in a worker; failures never raise, they come back as a :class:`Decoded`
with an ``error`` code, so a caller can account for every input.

Threads, not processes, by default: nearly all decoding time is spent inside Pillow calls that
release the GIL, so threads run in parallel without pickling pixels between processes (the
measurements are in ``scripts/README.md``). ``worker_kind="process"`` stays available for
decoders that hold the GIL. Thread workers also normalise (float32 rows for the model), which
keeps that work off the thread that feeds the model; process workers return uint8 pixels (4x
smaller to pass back).
"""
from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import AttrtagError, ImageDecodeError
from .images import DEFAULT_MAX_PIXELS, display_path
from .preprocess import Preprocessing

_logger = logging.getLogger(__name__)

WORKER_KINDS = ("thread", "process")


@dataclass(frozen=True)
class Decoded:
    """One image after the worker: its model input, or why there is none.

    Attributes:
        path: the path as given (may carry surrogate escapes).
        pixels: on success either uint8 ``[H, W, 3]`` at the model's input size, or (when the
            worker also normalised) the float32 ``[3, H, W]`` model input; None on failure.
        error: reason code on failure (:data:`attrtag.data.images.REASONS`).
        message: one-line explanation on failure.
        display: the path as records and messages show it (:func:`~.images.display_path`;
            made in the worker when not given).
    """

    path: str
    pixels: np.ndarray | None = None
    error: str | None = None
    message: str | None = None
    display: str = ""

    def __post_init__(self) -> None:
        if not self.display:
            object.__setattr__(self, "display", display_path(self.path))


class DecodedBatch(list):  # list[Decoded]
    """A batch of :class:`Decoded` images, in input order, with the model input of those that
    decoded already stacked (``inputs``, float32 ``[n_ok, 3, H, W]``)."""

    def __init__(self, decoded: Iterable[Decoded], preprocessing: Preprocessing) -> None:
        super().__init__(decoded)
        self.inputs = stack_inputs(self, preprocessing)


def decode_one(
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
        pixels = preprocessing.load(path, max_pixels=max_pixels)
        return Decoded(path, pixels=preprocessing.normalize(pixels) if normalize else pixels)
    except ImageDecodeError as err:
        return Decoded(path, error=err.reason, message=str(err))
    except MemoryError:
        return Decoded(path, error="decode", message=f"{display_path(path)}: out of memory while decoding")
    except Exception as err:  # noqa: BLE001 - one file must never stop a run of thousands
        _logger.debug("unexpected error decoding %s", display_path(path), exc_info=True)
        return Decoded(path, error="decode", message=f"{display_path(path)}: {type(err).__name__}: {err}")


def stack_inputs(decoded: Sequence[Decoded], preprocessing: Preprocessing) -> np.ndarray:
    """The float32 ``[B, 3, H, W]`` model input of the decoded images that have pixels."""
    rows = [d.pixels if d.pixels.dtype == np.float32 else preprocessing.normalize(d.pixels)
            for d in decoded if d.pixels is not None]
    if not rows:
        h, w = preprocessing.input_size
        return np.zeros((0, 3, h, w), np.float32)
    return np.stack(rows)


def _make_pool(kind: str, workers: int) -> Executor:
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attrtag-decode")
    if kind == "process":
        # spawn, not fork: the parent holds model runtime threads, and forking a multi-threaded
        # process can deadlock the child on a lock held by a thread that was not copied.
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    raise AttrtagError(f"worker kind '{kind}' is not one of {', '.join(WORKER_KINDS)}")


def decode_batches(
    paths: Iterable[str],
    preprocessing: Preprocessing,
    *,
    batch_size: int,
    workers: int,
    worker_kind: str = "thread",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    prefetch: int = 2,
    normalize_in_workers: bool | None = None,
) -> Iterator[DecodedBatch]:
    """Decode images in parallel workers, ``prefetch`` batches ahead of the consumer.

    Args:
        paths: image paths, in the order the batches should come out.
        preprocessing: the model's preprocessing.
        batch_size: images per yielded list.
        workers: decoding workers; 0 decodes in the calling thread (no overlap).
        worker_kind: ``"thread"`` or ``"process"``.
        max_pixels: larger images come back with error ``bomb``.
        prefetch: batches decoded ahead of the one being consumed.
        normalize_in_workers: normalise in the workers (default: for threads, not processes).

    Yields:
        One :class:`DecodedBatch` per batch (the last may be shorter), in input order; every
        path comes back exactly once.
    """
    if batch_size < 1:
        raise AttrtagError(f"`batch_size` must be at least 1, got {batch_size}")
    if workers < 0:
        raise AttrtagError(f"`workers` must be 0 or more, got {workers}")
    if normalize_in_workers is None:
        normalize_in_workers = worker_kind == "thread"
    it = iter(paths)
    if workers == 0:
        while chunk := [decode_one(p, preprocessing, max_pixels) for _, p in zip(range(batch_size), it)]:
            yield DecodedBatch(chunk, preprocessing)
        return
    yield from _decode_in_pool(
        it, preprocessing, _make_pool(worker_kind, workers), batch_size=batch_size,
        window=batch_size * (1 + max(0, prefetch)), max_pixels=max_pixels, normalize=normalize_in_workers,
    )


def _decode_in_pool(
    it: Iterator[str], preprocessing: Preprocessing, pool: Executor, *, batch_size: int, window: int,
    max_pixels: int, normalize: bool,
) -> Iterator[DecodedBatch]:
    """Batches decoded by ``pool``, ``window`` images queued ahead; shuts the pool down at the end."""
    pending: deque[Future[Decoded]] = deque()

    def fill() -> None:
        # Keep `window` images queued so workers decode the next batches while the consumer works.
        for p in it:
            pending.append(pool.submit(decode_one, p, preprocessing, max_pixels, normalize))
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
                    "rerun the same command to resume, or use `worker_kind=thread`"
                ) from None
            fill()
            yield DecodedBatch(chunk, preprocessing)
    finally:
        # Also runs when the consumer stops early (Ctrl-C, an error while writing): drop the
        # queued work instead of decoding it for nobody.
        pool.shutdown(wait=True, cancel_futures=True)
