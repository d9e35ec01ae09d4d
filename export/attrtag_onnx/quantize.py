"""Static int8 quantisation of an exported attrtag model, for fast CPU inference.

ONNX Runtime's recipe (``onnxruntime.quantization``): pre-process the float32 model
(``quant_pre_process``: graph optimisation + shape inference, so more nodes get quantised),
calibrate activation ranges on real images fed through the model's own preprocessing, and
write a QDQ graph with per-channel int8 weights and unsigned int8 activations (U8S8, ONNX
Runtime's fast x86 path; see the comment at ``quantize_static``). The result is only as good as its
accuracy, so the same manifest is run through both models (:mod:`._accuracy`) and each group's
figures are reported for float32 and int8: accuracy for an exclusive group, mAP and F1 at the
card's decision thresholds for a multi-label group.

Torch-free except :func:`export_int8`, which exports first.
"""
from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from attrtag._files import write_bytes
from attrtag.card import ModelCard
from attrtag.data.manifest import Sample, read_manifest
from attrtag.data.preprocess import Preprocessing
from attrtag.errors import AttrtagError, first_line

from ._accuracy import GroupAccuracy, MultiLabelAccuracy, Progress, compare_models, labelled_batches
from .metadata import INPUT_NAME, read_metadata, write_metadata

if TYPE_CHECKING:
    from .export import ExportReport

_logger = logging.getLogger(__name__)

DEFAULT_CALIB_IMAGES = 128
_HEAD_OPS = ("Split", "Slice", "Gemm", "MatMul", "Add", "Reshape", "Flatten")
_PIP_HINT = "pip install onnxruntime-gpu==1.31.1  (or onnxruntime)"
#: An int8 model that loses more than this many points (accuracy, mAP) on a group is logged.
_WARN_POINTS = 2.0

__all__ = ["GroupAccuracy", "MultiLabelAccuracy", "QuantReport", "export_int8", "quantize_int8"]


@dataclass
class QuantReport:
    """What :func:`quantize_int8` wrote and what it cost in accuracy.

    Attributes:
        path: the int8 model.
        calib_images: images the activation ranges were calibrated on.
        eval_images: images both models were compared on (includes the calibration images).
        groups: accuracy of each exclusive group, float32 vs int8.
        max_abs_diff: per group, max abs difference of probabilities, int8 vs float32 ONNX.
        preprocessed: whether ``quant_pre_process`` ran (it is skipped, with a warning, when
            it fails on a graph).
        failed_images: manifest images that could not be decoded (skipped).
        seconds: wall time.
        multi_label: mAP and micro-F1 (at the card's decision thresholds) of each multi-label
            group, float32 vs int8.
    """

    path: Path
    calib_images: int
    eval_images: int
    groups: list[GroupAccuracy]
    max_abs_diff: dict[str, float]
    preprocessed: bool
    failed_images: list[str] = field(default_factory=list)
    seconds: float = 0.0
    multi_label: list[MultiLabelAccuracy] = field(default_factory=list)


def quantize_int8(
    fp32_model: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    *,
    calib_images: int = DEFAULT_CALIB_IMAGES,
    eval_images: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: Progress | None = None,
) -> QuantReport:
    """Quantise an attrtag float32 ONNX model to int8 (QDQ, per-channel) and measure the cost.

    Args:
        fp32_model: a float32 model written by :func:`~attrtag_onnx.export.export_onnx`.
        out_path: the int8 model (written atomically; metadata precision ``int8``).
        manifest: labelled images (CSV/JSONL, see :func:`attrtag.data.manifest.read_manifest`).
        calib_images: how many manifest images (a seeded random sample) calibrate the ranges.
        eval_images: how many images (manifest order) to compare accuracy on; all by default.
        batch_size: images per ONNX Runtime call.
        seed: seed of the calibration sample.
        progress: optional progress wrapper for the CLI.

    Returns:
        The :class:`QuantReport`.

    Raises:
        AttrtagError: not a float32 attrtag model, unreadable manifest, no decodable images.
    """
    quant = _import_quantization()
    t0 = time.perf_counter()
    src = Path(fp32_model)
    meta = read_metadata(src)
    if meta.precision != "fp32":
        raise AttrtagError(f"{src}: int8 quantisation needs a float32 model, this one is {meta.precision}")
    if calib_images < 1:
        raise AttrtagError(f"`calib_images` must be at least 1, got {calib_images}")
    records = read_manifest(manifest, meta.schema).samples
    calib = random.Random(seed).sample(records, min(calib_images, len(records)))
    evaluated = records if eval_images is None else records[: max(1, eval_images)]
    failed: list[str] = []

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    used, preprocessed = _quantize(
        quant, src, out, meta, calib, manifest=manifest, batch_size=batch_size, failed=failed, progress=progress
    )
    c = compare_models(src, out, meta, evaluated, batch_size=batch_size, failed=failed, progress=progress)
    report = QuantReport(
        path=out, calib_images=used, eval_images=c.images, groups=c.groups, max_abs_diff=c.max_abs_diff,
        preprocessed=preprocessed, failed_images=sorted(set(failed)), seconds=time.perf_counter() - t0,
        multi_label=c.multi_label,
    )
    losses = [(g.delta_points, "accuracy", g.group) for g in c.groups]
    losses += [(g.delta_map_points, "mAP", g.group) for g in c.multi_label]
    for delta, what, group in losses:
        if delta is not None and delta < -_WARN_POINTS:
            _logger.warning("int8 loses %.1f %s points on group '%s'", -delta, what, group)
    return report


def export_int8(
    source: Any,
    out_path: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    *,
    calib_images: int = DEFAULT_CALIB_IMAGES,
    eval_images: int | None = None,
    rules: dict[str, Any] | None = None,
    opset: int | None = None,
    batch_check: int = 5,
    progress: Progress | None = None,
) -> "ExportReport":
    """Export a float32 model (checked against PyTorch), then quantise it to ``out_path``.

    The float32 file is temporary. The returned report's parity fields are the float32
    export's (enforced); int8 vs float32 differences and accuracies are in ``.quantization``.

    Args:
        source: a checkpoint path or ``(model, schema, preprocessing, backbone)``.
        out_path: the int8 model.
        manifest: calibration and evaluation images.
        calib_images: calibration sample size.
        eval_images: accuracy comparison size (all manifest images by default).
        rules: class rules to embed.
        opset: ONNX opset (default: the exporter's :data:`~attrtag_onnx.export.DEFAULT_OPSET`).
        batch_check: second batch size of the float32 parity check.
        progress: optional progress wrapper for the CLI.

    Returns:
        The :class:`~attrtag_onnx.export.ExportReport` with ``precision="int8"``.
    """
    from .export import DEFAULT_OPSET, export_onnx

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".attrtag-fp32-", dir=out.parent) as tmp:
        report = export_onnx(
            source, Path(tmp) / "fp32.onnx", opset=opset or DEFAULT_OPSET, rules=rules, batch_check=batch_check,
            what="the float32 graph to quantise",  # a temporary file: not a result to look for
        )
        report.quantization = quantize_int8(
            report.path, out, manifest, calib_images=calib_images, eval_images=eval_images, progress=progress
        )
    report.path, report.precision = out, "int8"
    report.size_bytes = out.stat().st_size
    report.seconds = time.perf_counter() - t0
    return report


# -- internals ----------------------------------------------------------------------------------
def _import_quantization() -> Any:
    try:
        import onnxruntime.quantization as quant
        import onnxruntime.quantization.shape_inference  # noqa: F401 - quant_pre_process
    except ImportError:
        raise AttrtagError(f"int8 quantisation needs ONNX Runtime's quantisation tools: {_PIP_HINT}") from None
    return quant


def _quantize(
    quant: Any, src: Path, out: Path, meta: ModelCard, calib: Sequence[Sample], *, manifest: str | os.PathLike[str],
    batch_size: int, failed: list[str], progress: Progress | None,
) -> tuple[int, bool]:
    """Quantise ``src`` into ``out`` (int8 metadata, checked, written atomically).

    Returns:
        ``(calibration images used, whether quant_pre_process ran)``.
    """
    with tempfile.TemporaryDirectory(prefix=".attrtag-int8-", dir=out.parent) as tmp:
        model_in, preprocessed = _pre_process(quant, src, Path(tmp) / "pre.onnx")
        excluded = _head_nodes(model_in)
        reader = _CalibrationReader(calib, meta.preprocessing, batch_size, failed, progress)
        q_path = Path(tmp) / "int8.onnx"
        none_decoded = AttrtagError(f"{manifest}: none of the {len(calib)} calibration images could be decoded")
        try:
            _quantize_static(quant, model_in, q_path, reader, excluded)
        except Exception:
            if reader.used == 0:  # the calibrator fails on empty data with a less helpful message
                raise none_decoded from None
            raise
        if reader.used == 0:
            raise none_decoded
        _restamp(q_path, out, meta)
    return reader.used, preprocessed


def _pre_process(quant: Any, src: Path, pre: Path) -> tuple[Path, bool]:
    """``quant_pre_process`` into ``pre``; on failure the model as exported (the step is optional)."""
    try:
        quant.shape_inference.quant_pre_process(str(src), str(pre))
        return pre, True
    except Exception as err:  # noqa: BLE001 - optional step; quantising without it still works
        _logger.warning("quant_pre_process failed (%s); quantising the model as exported", first_line(err))
        return src, False


def _quantize_static(
    quant: Any, model_in: Path, q_path: Path, reader: _CalibrationReader, excluded: list[str]
) -> None:
    quant.quantize_static(
        str(model_in),
        str(q_path),
        reader,
        quant_format=quant.QuantFormat.QDQ,
        per_channel=True,
        # U8S8 (unsigned activations, signed weights) is ONNX Runtime's fast x86 path:
        # on this project's CPU (AVX512-VNNI) a resnet18 ran 3.6x faster than fp32 with
        # U8S8 and 1.0x with S8S8 (same QDQ graph otherwise; scripts/bench_tagging.py int8).
        activation_type=quant.QuantType.QUInt8,
        weight_type=quant.QuantType.QInt8,
        calibrate_method=quant.CalibrationMethod.MinMax,
        nodes_to_exclude=excluded,
    )


class _CalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader``: yields ``{"image": batch}`` until done.

    Duck-typed (``get_next``) rather than subclassed so this module imports without ORT.
    """

    def __init__(
        self,
        records: Sequence[Sample],
        prep: Preprocessing,
        batch_size: int,
        failed: list[str],
        progress: Progress | None,
    ) -> None:
        self.used = 0
        n_batches = (len(records) + batch_size - 1) // batch_size
        batches: Iterable[Any] = labelled_batches(records, prep, batch_size, failed)
        if progress is not None:
            batches = progress(batches, "calibrating", n_batches)
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._it, None)
        if item is None:
            return None
        batch, kept = item
        self.used += len(kept)
        return {INPUT_NAME: batch}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while (item := self.get_next()) is not None:
            yield item


def _head_nodes(path: Path) -> list[str]:
    """Names of the grouped head's nodes: the Softmax and output Sigmoid nodes and everything back
    to the matmul.

    They stay float32. Quantising them would round every probability to steps of ~1/255 (sums
    off 1 by up to 0.4%, multi-label values flipped at their thresholds) and the logits to int8;
    the head is one small matmul, so keeping it float costs nothing measurable while the
    backbone's convolutions carry the speed-up. A backbone's own Sigmoids (SiLU gates) are
    quantised as usual: only those that give a graph output belong to the head.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: n for n in graph.node for out in n.output}
    outputs = {o.name for o in graph.output}
    names: list[str] = []
    stack = [n for n in graph.node
             if n.op_type == "Softmax" or (n.op_type == "Sigmoid" and outputs.intersection(n.output))]
    while stack:
        node = stack.pop()
        if node.name in names:
            continue
        names.append(node.name)
        if node.op_type in ("Gemm", "MatMul"):
            continue  # the head's linear layer: the walk stops here
        for i in node.input[:1]:  # data input only (Split sizes, Add bias are constants)
            if i in producer and producer[i].op_type in _HEAD_OPS:
                stack.append(producer[i])
    return names


def _restamp(q_path: Path, out: Path, meta: ModelCard) -> None:
    """Stamp int8 metadata on the quantiser's output, check it, write ``out`` atomically."""
    import onnx

    model = onnx.load(str(q_path))
    write_metadata(model, meta.replace(precision="int8"))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise AttrtagError(f"onnx.checker rejects the int8 graph: {first_line(err)}") from None
    write_bytes(out, model.SerializeToString())
