"""The tagging session: :func:`load` opens a model once; its :class:`Tagger` tags, streams, writes.

::

    with attrtag.load("model.onnx", rules="rules.yaml") as tagger:
        records = tagger.tag(["photos/", "extra.jpg"])      # a list, as `attrtag tag` writes them
        for record in tagger.stream("photos/"):             # one at a time, bounded memory
            ...
        summary = tagger.tag_to("tags.jsonl", "photos/")    # the resumable file job of `attrtag tag`

Everything a record needs is assembled here once (thread plan, class scoring, record layout);
the engine (this process, or a Ray cluster) only runs it.
"""
from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
from PIL import Image

from .._files import check_output
from ..data.batches import Decoded, decode_batches, stack_inputs
from ..data.images import DEFAULT_MAX_PIXELS, orient, to_rgb
from ..errors import AttrtagError, spell
from ..runtime import Placement, Predictor, model_kind, read_card
from ..runtime.model_file import CHECKPOINT
from ..runtime.threads import open_with_thread_plan
from ..schema import Schema
from ..tagging.engine import DEFAULT_BATCH_SIZE, LocalEngine, predict_records
from ..tagging.header import model_fingerprint
from ..tagging.inputs import ImagePaths, expand_inputs
from ..tagging.job import TagSummary, run_job
from ..tagging.records import RecordLayout, TagRecord
from ..tagging.thresholds import Thresholds, split_thresholds
from ..zeroshot.classifier import ZeroShotResult
from ..zeroshot.rules import RulesSource
from ..zeroshot.scoring import class_scoring

if TYPE_CHECKING:
    from ..card import ModelCard
    from ..tagging.ray_engine import Ray

_logger = logging.getLogger(__name__)


_LOGGED: set[str] = set()


def _log_warning(message: str) -> None:
    """The default ``warn``: a warning in the log, parameters in Python's words; each message once
    per process, as :func:`warnings.warn` does (``Tagger.classify(probs, rules=R)`` in a loop)."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        _logger.warning("%s", spell(message))

#: What :meth:`Tagger.tag` and :meth:`Tagger.predict` take: a path (file, folder, glob,
#: ``@list.txt``), a PIL image, an RGB ``uint8`` array ``(H, W, 3)`` (or grey ``(H, W)``), or a
#: sequence of either paths or images.
Images = Union[str, os.PathLike, Image.Image, np.ndarray, Sequence[Union[str, os.PathLike, Image.Image, np.ndarray]]]
#: Called after every batch :meth:`Tagger.tag_to` writes: ``progress(done, total, failed)``.
Progress = Callable[[int, int, int], Any]


class Tagger:
    """A model opened for tagging, with its record layout: :func:`load` builds one.

    Attributes:
        card: the model card (schema, preprocessing, backbone, precision, rules).
        layout: how records are made (top-k, thresholds, class scoring).
        engine: what runs the model: a :class:`~attrtag.tagging.engine.LocalEngine` or a
            :class:`~attrtag.tagging.ray_engine.RayEngine`.
    """

    def __init__(self, model: str | os.PathLike, card: "ModelCard", layout: RecordLayout, engine: Any, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS,
                 scoring: Mapping[str, bool] | None = None, sha256: Future[str] | None = None) -> None:
        self.model, self.card, self.layout, self.engine = os.fspath(model), card, layout, engine
        self.batch_size, self.max_pixels = batch_size, max_pixels
        self._scoring = dict(scoring or {})  # priors / calibration on or off, for classify(rules=...)
        self._sha256 = sha256

    @property
    def schema(self) -> Schema:
        return self.card.schema

    @property
    def predictor(self) -> Predictor:
        """The model, opened in this process (the local engine only)."""
        if not isinstance(self.engine, LocalEngine):
            raise AttrtagError("in-memory images and predict() need the local engine; load without `engine=ray`")
        return self.engine.predictor

    @property
    def placement(self) -> Placement | None:
        """Where the model runs in this process (None under Ray: the actors open it)."""
        return self.engine.predictor.placement if isinstance(self.engine, LocalEngine) else None

    @property
    def providers(self) -> list[str]:
        """What really runs the model, in the runtime's words (empty under Ray)."""
        return list(self.engine.predictor.providers) if isinstance(self.engine, LocalEngine) else []

    def stream(self, inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[TagRecord]:
        """Records of the images ``inputs`` expand to, one at a time, in output order.

        Inputs are expanded as the CLI's INPUTs are (folders recursively, globs, ``@list.txt``);
        a file that cannot be read gets an error record. Memory stays bounded by a few batches.
        """
        # Expanded already (the CLI checks its INPUTs before the model loads), or here, where a
        # missing file gets a 'missing' record.
        paths = inputs if isinstance(inputs, ImagePaths) else expand_inputs(_paths(inputs), must_exist=False)
        for batch in self.engine.batches(paths, self.layout, batch_size=self.batch_size, max_pixels=self.max_pixels):
            yield from batch

    def tag(self, images: Images) -> list[TagRecord]:
        """One record per image, exactly as ``attrtag tag`` writes them.

        In-memory images are named ``image0``, ``image1``, ... in their records' ``path``; a PIL
        image is turned upright by its EXIF orientation first, as a file is.
        """
        items = _items(images)
        if all(isinstance(i, (str, os.PathLike)) for i in items):
            return list(self.stream(items))
        out: list[TagRecord] = []
        for chunk in self._in_memory(items):
            out += predict_records(self.predictor, self.layout, chunk)
        return out

    def predict(self, images: Images) -> dict[str, np.ndarray]:
        """Per-group probabilities ``{group: (N, n_values)}`` of the images, in order.

        Row ``i`` is ``images[i]``, repeats included; a folder, glob or ``@list.txt`` among them
        gives its images in its place, in ``tag``'s order.

        Raises:
            AttrtagError: an image cannot be decoded (``tag`` records the failure instead).
        """
        items, predictor = _items(images), self.predictor
        paths = [os.fspath(i) for i in items if isinstance(i, (str, os.PathLike))]
        # Rows are unnamed, so they keep the caller's order and repeats: each argument is expanded
        # on its own (a folder or glob in place, sorted), not sorted and merged as `tag` does.
        in_order = [p for arg in paths for p in expand_inputs([arg], must_exist=False)]
        chunks = (decode_batches(in_order, predictor.preprocessing, batch_size=self.batch_size,
                                 workers=self.engine.workers)
                  if len(paths) == len(items) else self._in_memory(items))
        parts: list[dict[str, np.ndarray]] = []
        for chunk in chunks:
            bad = next((d for d in chunk if d.pixels is None), None)
            if bad is not None:
                raise AttrtagError(bad.message or f"{bad.path}: cannot decode")
            parts.append(predictor(stack_inputs(chunk, predictor.preprocessing)))
        if not parts:
            return {g.name: np.zeros((0, len(g)), np.float32) for g in self.schema}
        return {g: np.concatenate([p[g] for p in parts]) for g in self.schema.names}

    def classify(self, probs: Mapping[str, np.ndarray], rules: RulesSource | None = None,
                 **options: Any) -> ZeroShotResult:
        """Score classes from probabilities (of :meth:`predict`) with ``rules`` (default: the tagger's).

        Scored as :meth:`tag` scores them: with the tagger's priors, and with its calibration
        when ``rules`` are the ones it was chosen for. ``options`` go to
        :class:`~attrtag.zeroshot.classifier.ClassScorer`'s call (``overrides``,
        ``unknown_threshold``, ``top_k``, ``temperature``).
        """
        classes = self.layout.classes
        if rules is not None:
            classes = class_scoring(self.card, rules, name="tagger", warn=_log_warning, **self._scoring)
        if classes is None:
            raise AttrtagError("no class rules: pass `rules=R`, or load the tagger with rules")
        return classes.scorer(probs, **options)

    def tag_to(self, out: str | os.PathLike, inputs: str | os.PathLike | Sequence[str | os.PathLike], *,
               fmt: str | None = None, overwrite: bool = False, retry_failed: bool = False,
               progress: Progress | None = None) -> TagSummary:
        """Tag ``inputs`` into the file ``out``: every input exactly once, resumable.

        Rerunning after a crash or ``kill -9`` skips the images ``out`` holds and appends the
        rest; ``out`` made by another model or settings is refused (``datasets/OUTPUT.md``).

        Args:
            out: ``.jsonl``, ``.csv`` or ``.parquet`` (other names need ``fmt``).
            inputs: files, folders, globs, ``@list.txt`` (a path that does not exist is an error).
            fmt: ``jsonl``, ``csv`` or ``parquet`` (default: from ``out``'s extension).
            overwrite: start ``out`` again instead of resuming it.
            retry_failed: tag again the inputs ``out`` holds error records for.
            progress: called after every batch as ``progress(done, total, failed)``.

        Returns:
            The :class:`TagSummary`.
        """
        paths = inputs if isinstance(inputs, ImagePaths) else expand_inputs(_paths(inputs))
        sha256 = self._sha256.result() if self._sha256 is not None else None
        job = run_job(paths, out, self.engine, batch_size=self.batch_size, max_pixels=self.max_pixels,
                      progress=progress, layout=self.layout, model_path=self.model, fmt=fmt, overwrite=overwrite,
                      retry_failed=retry_failed, model_sha256=sha256)
        return job.summary(len(paths))

    def close(self) -> None:
        """Release the engine (a Ray instance this tagger started stops)."""
        self.engine.close()

    def __enter__(self) -> "Tagger":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _in_memory(self, items: Sequence[Any]) -> Iterable[list[Decoded]]:
        prep = self.predictor.preprocessing
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            yield [Decoded(f"image{start + i}", pixels=prep.pixels(_as_image(img))) for i, img in enumerate(chunk)]

    def __repr__(self) -> str:
        where = self.placement or "Ray"
        return f"Tagger({self.card.backbone!r}, groups={list(self.schema.names)}, on {where})"


def load(
    model: str | os.PathLike,
    *,
    device: str = "auto",
    rules: RulesSource | bool | None = None,
    priors: bool = True,
    calibration: bool = True,
    top_k: int | None = None,
    thresholds: Thresholds | None = None,
    class_top_k: int | None = None,
    unknown_threshold: float | None = None,
    overrides: Mapping[str, str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    worker_kind: str = "thread",
    threads: int | None = None,
    max_pixels: int | None = None,
    trt_cache_dir: str | os.PathLike | None = None,
    engine: str | Ray = "local",
    warn: Callable[[str], Any] | None = None,
) -> Tagger:
    """Open an ``.onnx`` model or a training checkpoint for tagging.

    Args:
        model: the model file (``.onnx`` runs on ONNX Runtime without torch).
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``tensorrt`` (ONNX); a GPU that cannot be
            used is an error, never a silent CPU run.
        rules: class rules (file, :class:`~attrtag.zeroshot.rules.Rules`, dict); None: the
            model's own if any; False: none. With rules, records get class fields.
        priors, calibration: apply the training label priors / the calibration the model stores:
            each group's temperature, and the zero-shot constant (for the rules it was chosen for).
        top_k: keep only the ``k`` most probable values in ``<group>_probs``.
        thresholds: when an exclusive group is ``uncertain``, when a multi-label value is
            present (overriding the model's): :mod:`attrtag.tagging.thresholds`.
        class_top_k, unknown_threshold, overrides: classes listed per record (default 5);
            ``unknown`` below this normalised probability; score as if a group had a value.
        batch_size, workers, worker_kind, threads: images per model call; decode workers (``thread``
            or ``process``) and model threads (default: :func:`attrtag.runtime.threads.plan_threads`).
        max_pixels, trt_cache_dir: the decompression-bomb limit; the TensorRT engine cache folder.
        engine: ``local`` (this process), ``ray`` or :class:`~attrtag.tagging.ray_engine.Ray`.
        warn: called with each warning about the rules and options (default: logged).
    """
    options = _checked(batch_size=batch_size, workers=workers, worker_kind=worker_kind, engine=engine, threads=threads,
                       max_pixels=max_pixels, top_k=top_k, trt_cache_dir=trt_cache_dir)
    kind, sha256 = model_kind(model), _hash_in_background(model)  # a file that is no model fails here, saying so

    layout_of = functools.partial(_layout, model=model, rules=rules, thresholds=thresholds, top_k=top_k, warn=warn,
                                  calibration=calibration, scoring={"priors": priors, "top_k": class_top_k,
                                  "unknown_threshold": unknown_threshold, "overrides": overrides})
    card = read_card(model, kind=kind) if options is not None or kind != CHECKPOINT else None  # .onnx: metadata
    layout = card and layout_of(card)
    local = None if options is not None else _open_local(
        model, kind, device=device, workers=workers, worker_kind=worker_kind, threads=threads,
        batch_size=batch_size, trt_cache_dir=trt_cache_dir, calibrated=calibration)
    card = card or local.predictor.card
    layout = layout or layout_of(card)
    runner = local or _ray_engine(model, options, backend="torch" if kind == CHECKPOINT else "onnx", device=device,
                                  workers=workers, threads=threads)
    return Tagger(model, card, layout, runner, batch_size=batch_size, max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
                  scoring={"priors": priors, "calibration": calibration}, sha256=sha256)


def _layout(card: "ModelCard", *, model: Any, rules: Any, thresholds: Any, top_k: int | None, warn: Any,
            calibration: bool, scoring: Mapping[str, Any]) -> RecordLayout:
    """How records of ``card``'s model are made: class scoring (``scoring``: priors, top_k, ...), thresholds.

    Built from an .onnx file's metadata (1-10 ms) before its session, so that bad rules or
    options fail before a TensorRT engine build (minutes); a checkpoint's card costs a full load.
    """
    classes = class_scoring(card, rules, calibration=calibration, name=os.path.basename(model),
                            warn=warn or _log_warning, **scoring)
    uncertain, decide = split_thresholds(thresholds, card.schema, card.decision_thresholds)
    return RecordLayout(card.schema, top_k=top_k, thresholds=uncertain, classes=classes, value_thresholds=decide,
                        temperatures=card.group_temperatures if calibration else {})  # as the predictor applies


def _hash_in_background(model: str | os.PathLike) -> Future[str]:
    """The model file's SHA-256, which output headers name it by, computed in a thread: 0.13 s
    for a ResNet-50 with the GIL released, while the model loads (most of a short run's start-up)."""
    hashing = ThreadPoolExecutor(1, thread_name_prefix="attrtag-hash")
    sha256 = hashing.submit(model_fingerprint, model)
    hashing.shutdown(wait=False)
    return sha256


def _open_local(model: str | os.PathLike, kind: str, *, device: str, workers: int | None, worker_kind: str,
                threads: int | None, batch_size: int, trt_cache_dir: Any, calibrated: bool) -> LocalEngine:
    """The model opened in this process, beside its decode workers (the CPUs split between them)."""
    predictor, split = open_with_thread_plan(model, device=device, workers=workers, threads=threads, kind=kind,
                                             batch_size_hint=batch_size, trt_cache_dir=trt_cache_dir,
                                             calibrated=calibrated)
    n, m = split.decode_workers, split.model_threads
    _logger.info("%d decode thread%s, %d model thread%s", n, "s" * (n != 1), m, "s" * (m != 1))
    return LocalEngine(predictor, workers=split.decode_workers, worker_kind=worker_kind)


def _checked(*, batch_size: int, workers: int | None, worker_kind: str, engine: str | Ray, threads: int | None,
             max_pixels: int | None, top_k: int | None, trt_cache_dir: Any) -> Ray | None:
    """The Ray options (None: the local engine), once every option is known to be usable (before the model loads)."""
    for name, value in (("batch_size", batch_size), ("threads", threads), ("max_pixels", max_pixels), ("top_k", top_k)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise AttrtagError(f"`{name}` must be at least 1, got {value}")
    if trt_cache_dir is not None:
        check_output(trt_cache_dir, what="trt_cache_dir", folder=True)  # TensorRT writes its engines there
    if workers is not None and workers < 0:
        raise AttrtagError(f"`workers` must be 0 or more, got {workers}")
    if worker_kind not in ("thread", "process"):
        raise AttrtagError(f"`worker_kind={worker_kind}`: not thread or process")
    if engine == "local":
        return None
    from ..tagging.ray_engine import Ray  # only a Ray run pays for the Ray engine's imports

    options = Ray() if engine == "ray" else engine
    if not isinstance(options, Ray):
        raise AttrtagError(f"`engine={engine}`: not local, ray or attrtag.Ray(...)")
    if worker_kind != "thread":
        raise AttrtagError("`worker_kind=process` is for the local engine; Ray actors decode in threads")
    return options


def _ray_engine(model: str | os.PathLike, options: "Ray", **settings: Any) -> Any:
    """The Ray engine (joins or starts the cluster) for ``model``."""
    from ..tagging.ray_engine import RayEngine

    return RayEngine(model, options, **settings)


def _items(images: Images) -> list[Any]:
    items = [images] if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)) else list(images)
    paths = sum(isinstance(i, (str, os.PathLike)) for i in items)
    if 0 < paths < len(items):
        raise AttrtagError("pass either paths or in-memory images to one call, not both")
    return items


def _paths(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    one = isinstance(inputs, (str, os.PathLike, np.ndarray)) or not isinstance(inputs, Iterable)
    items = [inputs] if one else list(inputs)
    other = next((i for i in items if not isinstance(i, (str, os.PathLike))), None)
    if other is not None:
        raise AttrtagError(f"`inputs` are paths (files, folders, globs, @list.txt), got a {type(other).__module__.partition('.')[0]}.{type(other).__name__}; "
                           "tag() and predict() take in-memory images")
    return [os.fspath(i) for i in items]


def _as_image(img: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a PIL image of any mode or an RGB / grey ``uint8`` array."""
    if isinstance(img, Image.Image):
        # A photo opened with PIL still holds its EXIF orientation, which files get when decoded:
        # the same photo must get the same tags either way. The caller's image stays as it was.
        return to_rgb(orient(img, "in-memory image", in_place=False))
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise AttrtagError(
            f"in-memory images must be uint8 arrays of shape (H, W), (H, W, 3) RGB or (H, W, 4) RGBA; "
            f"got {arr.dtype} {arr.shape}"
        )
    return to_rgb(Image.fromarray(arr))
