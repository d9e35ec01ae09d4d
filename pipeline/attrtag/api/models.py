"""Making and judging models from Python: train, evaluate, calibrate, export.

::

    run = attrtag.train("schema.yaml", "manifest.csv", "runs/exp1", backbone="resnet18", epochs=5)
    result = attrtag.evaluate(run.best, "manifest.csv", split="test", out="runs/exp1/eval")
    report = attrtag.export(run.best, "model.onnx", rules="rules.yaml")
    attrtag.calibrate("model.onnx", "manifest.csv", out="calibrated.onnx")

What ``attrtag train``, ``evaluate``, ``export`` and ``calibrate`` run; they only add printing.
Training and export need the ``train`` extra (torch, timm); evaluation and calibration of an
``.onnx`` file run on ONNX Runtime.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .._files import check_output
from ..data.manifest import Manifest, read_manifest
from ..errors import AttrtagError
from ..runtime import Predictor, model_kind, open_predictor
from ..schema import Schema
from ..zeroshot.rules import RulesSource
from ..zeroshot.scoring import ClassScoring, class_scoring
from .tagger import _log_warning

if TYPE_CHECKING:
    from attrtag_onnx.export import ExportReport

    from ..evaluation.calibrate import CalibrationResult, TemperatureRefit, ThresholdRefit
    from ..evaluation.evaluate import Evaluation
    from ..training.config import TrainConfig
    from ..training.loop import TrainResult

Warn = Callable[[str], Any]


def train_config(config: "str | os.PathLike | TrainConfig | None" = None, **options: Any) -> "TrainConfig":
    """The training configuration: a YAML file (or a config) with ``options`` overriding it.

    Raises:
        AttrtagError: an unknown option or a bad value, naming the file and the option.
    """
    from ..training.config import TrainConfig

    if isinstance(config, TrainConfig):
        return config if not options else TrainConfig.from_dict({**config.to_dict(), **options},
                                                                 source="the config with the options given")
    base = TrainConfig.read(config) if config else {}
    return TrainConfig.from_dict({**base, **options},
                                 source=f"{config} with the options given" if config else "the options given")


def train(
    schema: str | os.PathLike | Schema,
    manifest: str | os.PathLike | Manifest,
    out: str | os.PathLike,
    *,
    resume: bool | str | os.PathLike = False,
    overwrite: bool = False,
    config: "str | os.PathLike | TrainConfig | None" = None,
    progress: Any = None,
    on_start: Callable[[Manifest], Any] | None = None,
    on_epoch: Any = None,
    **options: Any,
) -> "TrainResult":
    """Train a model; ``options`` are fields of :class:`attrtag.training.config.TrainConfig`.

    Writes ``out/last.pt``, ``out/best.pt`` and the history, as ``attrtag train`` does; under
    ``torchrun`` every process calls it and they train one model (``batch_size`` is global).

    Args:
        schema: the schema (file or :class:`Schema`).
        manifest: the labelled images (file or :class:`Manifest`).
        out: the run folder; one that holds a run is refused unless ``resume`` or ``overwrite``.
        resume: continue from ``out/last.pt`` (True) or from this checkpoint. An option given
            (here or in ``config``) that differs from the run's is refused: resuming would ignore it.
        overwrite: start again in an ``out`` that holds a run; its files are replaced as the new
            run writes its own (after its first epoch).
        config: a YAML file of options (or a :func:`train_config`); ``options`` override it.
        progress: optional progress wrapper (``progress(iterable, desc, total)``).
        on_start: called with the manifest once it is read.
        on_epoch: called with each epoch's history row and validation metrics.
    """
    from ..training.config import TrainConfig
    from ..training.loop import start_refusal, train as _train

    schema = schema if isinstance(schema, Schema) else Schema.load(schema)
    cfg = train_config(config, **options)
    # What the caller set (a resumed run compares it with its own): the options, the file's keys,
    # or the fields of a config object that differ from the defaults.
    if isinstance(config, TrainConfig):
        given = {k for k, v in config.to_dict().items() if v != TrainConfig().to_dict()[k]} | set(options)
    else:
        given = set(TrainConfig.read(config) if config else ()) | set(options)
    start = None
    if resume is not False:
        start = Path(out) / "last.pt" if resume is True else Path(resume)
        if not start.is_file():
            raise AttrtagError(f"`resume`: checkpoint {start} not found")
    if (refusal := start_refusal(out, start, overwrite)) is not None:  # before the manifest is read
        raise AttrtagError(refusal)
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, schema, skip_bad=cfg.skip_bad_rows)
    if on_start is not None:
        on_start(manifest)
    return _train(cfg, schema, manifest, out, resume=start, overwrite=overwrite, given=given, progress=progress,
                  on_epoch=on_epoch)


def evaluate(
    model: str | os.PathLike | Predictor,
    manifest: str | os.PathLike | Manifest,
    *,
    split: str | None = None,
    rules: RulesSource | None = None,
    priors: bool = True,
    class_column: str = "class",
    unseen: list[str] | None = None,
    out: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 2,
    skip_bad_rows: bool = False,
    progress: Any = None,
    warn: Warn | None = None,
    overwrite: bool = False,
) -> "Evaluation":
    """Per-group metrics (and with ``rules`` the zero-shot figures) of a model on a manifest.

    Args:
        model: an ``.onnx`` file, a checkpoint or an open predictor.
        manifest: labelled images (file or :class:`Manifest`).
        split: ``test``, ``val``, ``train`` or ``all``; None: the held-out images (the test
            split when the manifest has one, else val; ``result.note`` says which).
        rules: class rules: also the zero-shot figures (needs ``class_column``).
        priors: divide class scores by the model's training label priors.
        class_column: the manifest column with each image's class.
        unseen: the unseen classes (default: those without train-split images).
        out: write ``metrics.json``, confusion matrices and reliability diagrams into this folder.
        device: where the model runs.
        batch_size: images per model call.
        workers: decoding threads.
        skip_bad_rows: skip manifest rows that cannot be read instead of failing.
        progress: optional progress wrapper.
        warn: called with each warning about the rules (default: logged).
        overwrite: replace the report in ``out`` when it holds one.
    """
    from ..evaluation.evaluate import evaluate as _evaluate, report_extra, write_report

    _check_counts(batch_size=batch_size, workers=workers)
    if out is not None:
        _check_new(Path(out) / "metrics.json", overwrite, what="out", folder=Path(out))

    # Raw probabilities out of the model: the report has the ECE of both (evaluation applies the card's temperatures).
    predictor = model if isinstance(model, Predictor) else open_predictor(model, device=device, calibrated=False)
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, predictor.schema, skip_bad=skip_bad_rows)
    classes = _classes(predictor.card, rules, priors=priors, name=_name(model), warn=warn)
    result = _evaluate(predictor, manifest, split=split, classes=classes, class_column=class_column, unseen=unseen,
                       batch_size=batch_size, workers=workers, progress=progress)
    if out is not None:
        extra = report_extra(result, model=_name(model, full=True), manifest=manifest, class_column=class_column,
                             rules=None if rules is None else str(rules) if isinstance(rules, (str, os.PathLike))
                             else "rules")
        result.report = write_report(out, predictor.schema, result.metrics, extra=extra, calibration=result.calibration)
    return result


def calibrate(
    model: str | os.PathLike,
    manifest: str | os.PathLike | Manifest,
    *,
    out: str | os.PathLike | None = None,
    in_place: bool = False,
    rules: RulesSource | None = None,
    priors: bool = True,
    class_column: str = "class", unseen: list[str] | None = None,
    device: str = "auto", batch_size: int = 64, workers: int = 2, skip_bad_rows: bool = False,
    progress: Any = None, warn: Warn | None = None, value_thresholds: bool = False, overwrite: bool = False,
    temperature: bool = False,
) -> "CalibrationResult | ThresholdRefit | TemperatureRefit":
    """Choose the zero-shot calibration of a model and store it, with the rules, in a model file, or
    (``value_thresholds``, ``temperature``) its multi-label thresholds or per-group temperatures.

    The model is not modified unless ``in_place``: the calibrated model is written to ``out``
    (atomically either way). Tagging then applies the calibration by default.

    Args:
        model: an ``.onnx`` file or a checkpoint.
        manifest: labelled images with a class column; gamma is chosen on the val split.
        out: the calibrated model to write (same suffix as ``model``).
        in_place: replace ``model`` itself instead.
        rules: class rules (default: the ones embedded in the model).
        priors: divide scores by the model's label priors (when it stores label counts).
        class_column, unseen, device, batch_size, workers, skip_bad_rows, progress, warn: as
            :func:`evaluate`'s.
        value_thresholds, temperature: instead of the zero-shot calibration (``rules`` unused),
            refit each multi-label value's threshold (best F1 on the val split), or each group's
            temperature (least NLL; the thresholds move with it, deciding as before).
        overwrite: replace ``out`` when it exists.

    Raises:
        AttrtagError: neither or both of ``out`` and ``in_place``, a suffix that differs, no
            rules, or what :func:`~attrtag.evaluation.calibrate.choose_calibration` refuses.
    """
    from ..evaluation.calibrate import choose_calibration

    src = Path(model)
    kind = model_kind(src)  # a missing file, or one that is no model, is named before the options are judged
    target = _calibration_target(src, manifest, out, in_place, overwrite, refits=(value_thresholds, temperature))
    _check_counts(batch_size=batch_size, workers=workers)
    predictor = open_predictor(src, device=device, kind=kind)
    if value_thresholds or temperature:
        return _refit(predictor, manifest, src, target, temperature=temperature, skip_bad_rows=skip_bad_rows,
                      batch_size=batch_size, workers=workers, progress=progress)
    if rules is None and predictor.rules is None:
        raise AttrtagError(f"{src}: the model embeds no rules; pass the rules to calibrate for (`rules=R`)")
    classes = class_scoring(predictor.card, rules, priors=priors, calibration=False, name=src.name,
                            warn=warn or _log_warning)
    assert classes is not None  # rules given or embedded
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, predictor.schema, skip_bad=skip_bad_rows)
    result = choose_calibration(predictor, manifest, classes, class_column=class_column, unseen=unseen,
                                batch_size=batch_size, workers=workers, progress=progress)
    card = predictor.card.replace(rules=classes.rules.to_dict(), calibration=result.calibration.to_dict())
    _restamp(src, card, target)
    return result


def _refit(predictor: Predictor, manifest: Any, src: Path, target: Path, *, temperature: bool, skip_bad_rows: bool,
           **run: Any) -> "ThresholdRefit | TemperatureRefit":
    """Refit the value thresholds or (``temperature``) the temperatures on ``manifest``; restamp the model."""
    from ..evaluation.calibrate import refit_temperatures, refit_thresholds

    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, predictor.schema, skip_bad=skip_bad_rows)
    if temperature:
        fit: Any = refit_temperatures(predictor, manifest, **run)
        card = predictor.card.replace(temperatures=fit.temperatures, value_thresholds=fit.value_thresholds)
        if card.calibration is not None:  # class scores move with the temperatures: its gamma was chosen on the old
            _log_warning(f"{src}: its zero-shot calibration (gamma {card.calibration.get('gamma', 0):.3g}) was chosen "
                         "at the old temperatures and is dropped; choose it again with 'attrtag calibrate' on the "
                         "new model")
            card = card.replace(calibration=None)
    else:
        fit = refit_thresholds(predictor, manifest, **run)
        card = predictor.card.replace(value_thresholds=fit.value_thresholds)
    _restamp(src, card, target)
    return fit


def export(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fp16: bool = False,
    int8: bool = False,
    calib_manifest: str | os.PathLike | None = None,
    calib_images: int | None = None,
    eval_images: int | None = None,
    rules: RulesSource | None = None,
    opset: int | None = None,
    batch_check: int = 5,
    progress: Any = None,
    warn: Warn | None = None,
    overwrite: bool = False,
) -> "ExportReport":
    """Export a checkpoint to an ONNX file that carries its card, checked against PyTorch.

    Args:
        checkpoint: the training checkpoint.
        out: the ``.onnx`` file (written atomically, only when every check passed).
        fp16: a float16 graph for GPUs (float32 input and outputs kept).
        int8: static int8 quantisation for CPUs (needs ``calib_manifest``).
        calib_manifest: labelled images to calibrate int8 ranges on and compare accuracy.
        calib_images: images to calibrate on (default 128).
        eval_images: images to compare float32 and int8 accuracy on (default all).
        rules: class rules to embed (for zero-shot tagging).
        opset: ONNX opset (default 18).
        batch_check: batch size of the ONNX Runtime vs PyTorch check, besides batch 1.
        progress: optional progress wrapper (int8 calibration).
        warn: called with each warning about the rules (default: logged).
        overwrite: replace ``out`` when it exists.
    """
    from attrtag_onnx.export import DEFAULT_OPSET, export_onnx
    from attrtag_onnx.quantize import DEFAULT_CALIB_IMAGES, export_int8

    from ..model import load_model

    _check_export(out, fp16=fp16, int8=int8, calib_manifest=calib_manifest, calib_images=calib_images,
                  eval_images=eval_images)
    _check_new(Path(out), overwrite)
    model = load_model(checkpoint)
    classes = _classes(model.card, rules, priors=True, name=Path(checkpoint).name, warn=warn)
    embedded = None if classes is None else classes.rules.to_dict()
    opset = opset or DEFAULT_OPSET
    if int8:
        return export_int8(model, out, calib_manifest, rules=embedded, opset=opset, batch_check=batch_check,
                           calib_images=DEFAULT_CALIB_IMAGES if calib_images is None else calib_images,
                           eval_images=eval_images, progress=progress)
    return export_onnx(model, out, opset=opset, fp16=fp16, rules=embedded, batch_check=batch_check)


def _classes(card: Any, rules: RulesSource | None, *, priors: bool, name: str,
             warn: Warn | None) -> ClassScoring | None:
    """Class scoring with the given rules only (a model's embedded rules are not implied here)."""
    if rules is None:
        return None
    return class_scoring(card, rules, priors=priors, name=name, warn=warn or _log_warning)


def _name(model: Any, *, full: bool = False) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model) if full else os.path.basename(model)
    return "model"


def _calibration_target(src: Path, manifest: Any, out: Any, in_place: bool, overwrite: bool, *,
                        refits: tuple[bool, bool] = (False, False)) -> Path:
    """Where the calibrated model goes, once the options are known to make sense (``refits``:
    ``value_thresholds`` and ``temperature``, which exclude each other)."""
    if all(refits):
        raise AttrtagError("`value_thresholds=True` and `temperature=True` exclude each other: refit the temperatures "
                           "first, then the thresholds (they are chosen on the calibrated probabilities)")
    if not isinstance(manifest, Manifest) and not Path(manifest).is_file():
        raise AttrtagError(f"{manifest}: manifest not found")
    if (out is None) == (not in_place):
        raise AttrtagError("calibrate: give `out=FILE` (a new model file) or `in_place=True` (replace the model), "
                           "one of them")
    target = src if out is None else Path(out)
    if out is not None and (target.suffix.lower() != src.suffix.lower() or target.resolve() == src.resolve()):
        raise AttrtagError(f"`out={target}`: must be another file with {src.name}'s suffix '{src.suffix}' "
                           "(or pass `in_place=True` to replace the model)")
    if out is not None:
        _check_new(target, overwrite)
    return target


def _restamp(src: Path, card: Any, target: Path) -> None:
    """Write ``card`` into a copy of the model file (weights unchanged), atomically."""
    if src.suffix.lower() == ".onnx":
        from attrtag_onnx.metadata import restamp

        restamp(src, card, out=target)
    else:
        from ..model.checkpoint import replace_card

        replace_card(src, card, out=target)


def _check_counts(*, batch_size: int, workers: int) -> None:
    if batch_size < 1:
        raise AttrtagError(f"`batch_size` must be at least 1, got {batch_size}")
    if workers < 0:
        raise AttrtagError(f"`workers` must be 0 or more, got {workers}")


def _check_new(path: Path, overwrite: bool, *, what: str = "out", folder: Path | None = None) -> None:
    """The one overwrite policy: an output that exists is replaced only with ``overwrite=True``;
    one that cannot be written (a folder, under a file, no permission) is refused before any work."""
    check_output(folder or path, what=what, folder=folder is not None)
    if path.exists() and not overwrite:
        raise AttrtagError(f"`{what}={folder or path}` {'holds ' + path.name if folder else 'exists'}; pass "
                           "`overwrite=True` to replace it, or choose another path")


def _check_export(out: Any, *, fp16: bool, int8: bool, calib_manifest: Any, calib_images: Any,
                  eval_images: Any) -> None:
    if fp16 and int8:
        raise AttrtagError("`fp16=True` and `int8=True` exclude each other; pass one")
    if int8 and not calib_manifest:
        raise AttrtagError(
            "`int8=True` needs `calib_manifest=M`: a labelled manifest to calibrate on and check accuracy with"
        )
    for name, n in (("calib_images", calib_images), ("eval_images", eval_images)):
        if n is not None and n < 1:
            raise AttrtagError(f"`{name}` must be at least 1, got {n}")
    if not int8 and (calib_manifest or calib_images is not None or eval_images is not None):
        raise AttrtagError("`calib_manifest`, `calib_images` and `eval_images` only apply with `int8=True`")
    if Path(out).suffix.lower() != ".onnx":
        raise AttrtagError(f"`out={out}`: name the file with a .onnx suffix (tagging picks the backend by it)")

