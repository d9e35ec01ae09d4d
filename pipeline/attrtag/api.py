"""The Python API: load a model in one call, tag images, score classes, train and evaluate.

::

    import attrtag

    tagger = attrtag.load("model.onnx")              # or a training checkpoint (best.pt)
    records = tagger.tag(["photos/", "extra.jpg"])   # the records `attrtag tag` writes
    records = tagger.tag(pil_image)                  # PIL images and RGB uint8 arrays too
    probs = tagger.predict(images)                   # {group: (N, n_values)} probabilities

    tagger = attrtag.load("model.onnx", rules="rules.yaml")   # adds class fields
    result = attrtag.evaluate("best.pt", "manifest.csv", split="test")
    run = attrtag.train("schema.yaml", "manifest.csv", "runs/exp1", backbone="resnet18", epochs=5)

Records are dicts in the layout of ``datasets/OUTPUT.md``. The commands of the CLI are thin
layers over these functions and the modules they call.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np
from PIL import Image

from .data.batches import Decoded, decode_batches, stack_inputs
from .data.images import to_rgb
from .data.manifest import Manifest, read_manifest
from .errors import AttrtagError
from .runtime import Predictor, model_kind, open_predictor
from .runtime.threads import open_with_thread_plan, plan_threads
from .schema import Schema
from .tagging.engine import DEFAULT_BATCH_SIZE, predict_records
from .tagging.inputs import expand_inputs
from .tagging.records import RecordLayout, TagRecord
from .zeroshot.calibration import priors_from_counts, resolve_calibration
from .zeroshot.classifier import ClassScorer, ZeroShotResult
from .zeroshot.fields import DEFAULT_TOP_K, class_tagging_for
from .zeroshot.rules import Rules, RulesSource, resolve_rules

if TYPE_CHECKING:
    from .card import ModelCard
    from .evaluation.calibrate import CalibrationResult
    from .evaluation.evaluate import Evaluation
    from .training.loop import TrainResult

_logger = logging.getLogger(__name__)

#: What :meth:`Tagger.tag` and :meth:`Tagger.predict` take: a path (file, folder, glob,
#: ``@list.txt``), a PIL image, an RGB ``uint8`` array ``(H, W, 3)`` (or grey ``(H, W)``), or a
#: sequence of either paths or images.
Images = Union[str, os.PathLike, Image.Image, np.ndarray, Sequence[Union[str, os.PathLike, Image.Image, np.ndarray]]]


class Tagger:
    """A loaded model with its record layout: :func:`load` builds one.

    Attributes:
        predictor: the backend (:class:`~attrtag.runtime.onnx_backend.OnnxModel` or
            :class:`~attrtag.runtime.torch_backend.TorchPredictor`).
        layout: how records are made (top-k, thresholds, class rules).
    """

    def __init__(self, predictor: Predictor, layout: RecordLayout, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 workers: int | None = None) -> None:
        self.predictor = predictor
        self.layout = layout
        self.batch_size = batch_size
        if workers is None:
            backend = "torch" if predictor.placement.runtime == "torch" else "onnx"
            workers = plan_threads(backend=backend, on_gpu=predictor.placement.on_gpu).decode_workers
        self.workers = workers

    @property
    def card(self) -> "ModelCard":
        """The model card: schema, preprocessing, backbone, precision, rules."""
        return self.predictor.card

    @property
    def schema(self) -> Schema:
        return self.predictor.schema

    @property
    def providers(self) -> list[str]:
        """What really runs the model (ONNX Runtime providers, or ``torch:<device>``)."""
        return self.predictor.providers

    def tag(self, images: Images) -> list[TagRecord]:
        """One record per image, exactly as ``attrtag tag`` writes them.

        Paths are expanded as the CLI's INPUTs are (folders recursively, globs, ``@list.txt``);
        a file that cannot be read gets an error record. In-memory images are named
        ``image0``, ``image1``, ... in their records' ``path``.
        """
        out: list[TagRecord] = []
        for chunk in self._decoded(images):
            out += predict_records(self.predictor, self.layout, chunk)
        return out

    def predict(self, images: Images) -> dict[str, np.ndarray]:
        """Per-group probabilities ``{group: (N, n_values)}`` of the images that decode, in order.

        Raises:
            AttrtagError: an image cannot be decoded (``tag`` records the failure instead).
        """
        parts: list[dict[str, np.ndarray]] = []
        for chunk in self._decoded(images):
            bad = next((d for d in chunk if d.pixels is None), None)
            if bad is not None:
                raise AttrtagError(bad.message or f"{bad.path}: cannot decode")
            parts.append(self.predictor(stack_inputs(chunk, self.predictor.preprocessing)))
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
        if rules is None:
            if classes is None:
                raise AttrtagError("no class rules: pass rules=..., or load the tagger with rules")
            return classes.scorer(self.schema)(probs, **options)
        loaded = _rules(rules, self.schema)
        counts = classes.label_counts if classes is not None else None
        cal, _ = resolve_calibration(classes.calibration if classes else None, loaded, priors=counts is not None,
                                     source="tagger")
        return ClassScorer(loaded, self.schema, priors=None if counts is None else priors_from_counts(counts),
                           gamma=cal.gamma if cal else 0.0, seen=cal.seen if cal else ())(probs, **options)

    def _decoded(self, images: Images) -> Iterable[list[Decoded]]:
        items = [images] if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)) else list(images)
        prep = self.predictor.preprocessing
        paths = [os.fspath(i) for i in items if isinstance(i, (str, os.PathLike))]
        if paths:
            if len(paths) != len(items):
                raise AttrtagError("pass either paths or in-memory images to one call, not both")
            paths = expand_inputs(paths, must_exist=False)  # a missing file is a 'missing' record here
            yield from decode_batches(paths, prep, batch_size=self.batch_size, workers=self.workers)
            return
        for start in range(0, len(items), self.batch_size):
            yield [
                Decoded(f"image{start + i}", pixels=prep.pixels(_as_image(img)))
                for i, img in enumerate(items[start : start + self.batch_size])
            ]

    def __repr__(self) -> str:
        return f"Tagger({self.card.backbone!r}, groups={list(self.schema.names)}, providers={self.providers})"


def load(
    model: str | os.PathLike,
    *,
    device: str = "auto",
    rules: RulesSource | bool | None = None,
    top_k: int | None = None,
    thresholds: Mapping[str, float] | None = None,
    class_top_k: int = DEFAULT_TOP_K,
    unknown_threshold: float = 0.0,
    priors: bool = True,
    calibration: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    threads: int | None = None,
) -> Tagger:
    """Load an ``.onnx`` model or a training checkpoint, ready to tag.

    Args:
        model: the model file.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``tensorrt`` (ONNX only); an explicit GPU
            that cannot be used is an error.
        rules: class rules (a file, a :class:`Rules`, their dict form); ``True`` or None uses
            the rules embedded in the model when there are any; ``False`` none.
        top_k: keep only the ``k`` most probable values in ``<group>_probs``.
        thresholds: group -> minimum top probability (marks ``uncertain``).
        class_top_k: classes listed per record.
        unknown_threshold: class ``unknown`` below this normalised probability.
        priors: divide class scores by the training label priors stored in the model.
        calibration: apply the calibration stored in the model (``attrtag calibrate``), when
            it was chosen for these rules and this scoring (else a warning is logged).
        batch_size: images per model call.
        workers: decoding threads (default: :func:`attrtag.runtime.threads.plan_threads`).
        threads: model runtime threads (default: the same plan).

    Returns:
        A :class:`Tagger`.
    """
    predictor, split = open_with_thread_plan(model, device=device, workers=workers, threads=threads,
                                             batch_size_hint=batch_size)
    workers = split.decode_workers
    classes = class_tagging_for(
        predictor.schema, predictor.rules, rules, model_name=os.path.basename(model), top_k=class_top_k,
        unknown_threshold=unknown_threshold, warn=_logger.warning,
        label_counts=predictor.card.label_counts if priors else None,
        calibration=predictor.card.calibration if calibration else None,
    )
    layout = RecordLayout(predictor.schema, top_k=top_k, thresholds=dict(thresholds or {}), classes=classes)
    return Tagger(predictor, layout, batch_size=batch_size, workers=workers)


def evaluate(
    model: str | os.PathLike | Predictor,
    manifest: str | os.PathLike | Manifest,
    *,
    split: str | None = None,
    rules: RulesSource | None = None,
    device: str = "auto",
    **options: Any,
) -> "Evaluation":
    """Per-group metrics (and with ``rules`` the zero-shot figures) of a model on a manifest.

    ``split``: ``test``, ``val``, ``train`` or ``all``; None scores the held-out images: the test
    split when the manifest has one, else val (``result.note`` says which, and
    ``result.includes_training`` whether training images were among them).

    ``options`` go to :func:`attrtag.evaluation.evaluate.evaluate` (``class_column``,
    ``unseen``, ``batch_size``, ``workers``).
    """
    from .evaluation.evaluate import evaluate as _evaluate

    predictor = model if isinstance(model, Predictor) else open_predictor(model, device=device)
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, predictor.schema)
    loaded = None if rules is None else _rules(rules, predictor.schema)
    return _evaluate(predictor, manifest, split=split, rules=loaded, **options)


def calibrate(
    model: str | os.PathLike,
    manifest: str | os.PathLike | Manifest,
    *,
    out: str | os.PathLike | None = None,
    in_place: bool = False,
    rules: RulesSource | None = None,
    priors: bool = True,
    device: str = "auto",
    skip_bad_rows: bool = False,
    warn: Callable[[str], Any] | None = None,
    **options: Any,
) -> "CalibrationResult":
    """Choose the zero-shot calibration of a model and store it, with the rules, in a model file.

    The model is not modified unless ``in_place``: the calibrated model is written to ``out``
    (atomically either way). ``attrtag tag`` and ``classify`` then apply the calibration by default.

    Args:
        model: an ``.onnx`` file or a checkpoint.
        manifest: labelled images with a class column (see
            :func:`attrtag.evaluation.calibrate.choose_calibration`).
        out: the calibrated model to write (same suffix as ``model``).
        in_place: replace ``model`` itself instead.
        rules: class rules (default: the ones embedded in the model).
        priors: divide scores by the model's label priors (when it stores label counts).
        device: where the model runs.
        skip_bad_rows: skip manifest rows that cannot be read instead of failing.
        warn: called with each lint warning of the rules (default: logged).
        options: ``class_column``, ``unseen``, ``batch_size``, ``workers``, ``progress``.

    Returns:
        The calibration and the figures before and after it.

    Raises:
        AttrtagError: neither or both of ``out`` and ``in_place``, a suffix that differs, no
            rules, or what :func:`~attrtag.evaluation.calibrate.choose_calibration` refuses.
    """
    from .evaluation.calibrate import choose_calibration

    src = Path(model)
    model_kind(src)  # a missing file, or one that is no model, is named before the options are judged
    if not isinstance(manifest, Manifest) and not Path(manifest).is_file():
        raise AttrtagError(f"{manifest}: manifest not found")
    if (out is None) == (not in_place):
        raise AttrtagError("calibrate: give --out FILE (a new model file) or --in-place (replace MODEL), one of them")
    target = src if out is None else Path(out)
    if out is not None and (target.suffix.lower() != src.suffix.lower() or target.resolve() == src.resolve()):
        raise AttrtagError(f"--out {target}: must be another file with {src.name}'s suffix '{src.suffix}' "
                           "(or pass --in-place to replace the model)")
    predictor = open_predictor(src, device=device)
    counts = predictor.card.label_counts if priors else None
    if rules is None and predictor.rules is None:
        raise AttrtagError(f"{src}: the model embeds no rules; pass the rules to calibrate for (--rules R)")
    loaded, warnings = resolve_rules(predictor.rules if rules is None else rules, predictor.schema,
                                     source=f"{src.name} metadata", label_counts=counts)
    for message in warnings:
        (warn or _logger.warning)(message)
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, predictor.schema, skip_bad=skip_bad_rows)
    result = choose_calibration(predictor, manifest, loaded, priors=priors, **options)
    card = predictor.card.replace(rules=loaded.to_dict(), calibration=result.calibration.to_dict())
    if src.suffix.lower() == ".onnx":
        from attrtag_onnx.metadata import restamp

        restamp(src, card, out=target)
    else:
        from .model.checkpoint import replace_card

        replace_card(src, card, out=target)
    return result


def train(
    schema: str | os.PathLike | Schema,
    manifest: str | os.PathLike | Manifest,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    **config: Any,
) -> "TrainResult":
    """Train a model; ``config`` is any field of :class:`attrtag.training.config.TrainConfig`.

    Writes ``out/last.pt``, ``out/best.pt`` and the history, as ``attrtag train`` does; under
    ``torchrun`` every process calls it and they train one model (``batch_size`` is global).
    """
    from .training.config import TrainConfig
    from .training.loop import train as _train

    schema = schema if isinstance(schema, Schema) else Schema.load(schema)
    cfg = TrainConfig.from_dict(config, source="attrtag.train()")
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, schema, skip_bad=cfg.skip_bad_rows)
    return _train(cfg, schema, manifest, out, resume=Path(out) / "last.pt" if resume else None)


def _rules(rules: RulesSource, schema: Schema) -> Rules:
    loaded, warnings = resolve_rules(rules, schema)
    for message in warnings:
        _logger.warning("%s", message)
    return loaded


def _as_image(img: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a PIL image of any mode or an RGB / grey ``uint8`` array."""
    if isinstance(img, Image.Image):
        return to_rgb(img)
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise AttrtagError(
            f"in-memory images must be uint8 arrays of shape (H, W), (H, W, 3) RGB or (H, W, 4) RGBA; "
            f"got {arr.dtype} {arr.shape}"
        )
    return to_rgb(Image.fromarray(arr))


