"""Export an attrtag model to ONNX, then prove the file computes what PyTorch computes.

The graph is :class:`attrtag.model.ProbabilityModel`: input ``image`` float32
``[batch, 3, H, W]`` (batch dynamic), one output per group, named after the group, in schema
order: a softmax for an exclusive group, one sigmoid per value for a multi-label group. The model
card (:mod:`attrtag_onnx.metadata`: each group's kind, the multi-label values' decision
thresholds, ...) travels in the file.

Like ``timm.utils.onnx.onnx_export``, every export is followed by ``onnx.checker`` and an
ONNX Runtime vs PyTorch comparison on fresh random inputs (batch 1 and ``batch_check``, which
also proves the batch axis is dynamic); a difference above tolerance is an error, and nothing
is written at ``out_path`` then.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Union

import numpy as np
import torch
from torch import nn

from attrtag._files import atomic_path
from attrtag.card import ModelCard
from attrtag.data.preprocess import Preprocessing
from attrtag.errors import ExportError, first_line
from attrtag.model import AttributeModel, ProbabilityModel, load_model
from attrtag.schema import Schema
from attrtag.zeroshot.calibration import rules_digest
from attrtag.zeroshot.rules import Rules

from ._graph import EXPORTERS, default_opset, export_graph
from ._graph import TRACE_BATCH  # noqa: F401 - still importable from here
from .fp16 import convert_to_fp16
from .metadata import write_metadata

if TYPE_CHECKING:
    import onnx

_logger = logging.getLogger(__name__)

#: 18 is parsed by every TensorRT 10.x and ONNX Runtime >= 1.14; a conv/linear/softmax model
#: gains nothing from newer opsets, and older ones make the dynamo exporter down-convert.
DEFAULT_OPSET = 18
#: The dynamo exporter writes no opset below 18 (it quietly writes 18 instead), so neither do we.
MIN_OPSET = 18
#: Max abs difference of probabilities allowed between ONNX Runtime and PyTorch (float32).
FP32_ATOL = 1e-4
#: float16 keeps ~3 significant digits; through a deep network probabilities move by ~1e-3.
FP16_ATOL = 1e-2

#: A checkpoint path, a model (which carries its card), or the attrtag 0.1 form
#: ``(model, schema, preprocessing, backbone)``.
ModelSource = Union[str, os.PathLike, AttributeModel, "tuple[AttributeModel, Schema, Preprocessing, str]"]


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how well it matches PyTorch.

    Attributes:
        path: the written model.
        size_bytes: its size.
        opset: the default-domain opset of the graph.
        exporter: ``dynamo`` or ``torchscript``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        groups: output names (= schema groups) in order.
        check_providers: ONNX Runtime providers that ran the parity check (read back from the
            session), empty when it did not run.
        max_abs_diff: per group, the max abs difference of probabilities vs PyTorch float32.
        atol: tolerance the differences were held to (``None``: reported, not enforced).
        check_batches: batch sizes the check ran.
        note: why the check did not run or is not enforced, when that is the case.
        seconds: wall time of export + checks.
        quantization: the int8 report, for ``--int8`` exports.
    """

    path: Path
    size_bytes: int
    opset: int
    exporter: str
    precision: str
    groups: tuple[str, ...]
    check_providers: list[str] = field(default_factory=list)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    atol: float | None = None
    check_batches: tuple[int, ...] = ()
    note: str | None = None
    seconds: float = 0.0
    quantization: Any = None  # an attrtag_onnx.quantize.QuantReport (quantize imports this module)


def export_onnx(
    source: ModelSource,
    out_path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    rules: dict[str, Any] | None = None,
    check: bool = True,
    atol: float | None = None,
    batch_check: int = 5,
    exporter: str = "auto",
    seed: int = 0,
    what: str | None = None,
) -> ExportReport:
    """Export a checkpoint (or a model) to an attrtag ONNX file and check it.

    Args:
        source: a checkpoint path or an :class:`~attrtag.model.AttributeModel` (its card is
            written into the file; a copy is exported, ``model`` is untouched).
        out_path: the ``.onnx`` file; written atomically, and only when every check passed.
        opset: ONNX opset of the default domain.
        fp16: store a float16 graph for GPUs (float32 input and outputs are kept).
        rules: class rules (``{"classes": {...}}``) to embed as ``attrtag.rules`` (default:
            the card's own).
        check: run ``onnx.checker`` and the ONNX Runtime vs PyTorch comparison.
        atol: max allowed abs difference of probabilities (default 1e-4 fp32, 1e-2 fp16).
        batch_check: second batch size of the comparison (batch 1 always runs).
        exporter: ``auto`` (dynamo, falling back to TorchScript), ``dynamo`` or ``torchscript``.
        seed, what: the comparison inputs' seed; what the log line calls the file (default: its path).

    Returns:
        The :class:`ExportReport`.

    Raises:
        CheckpointError: unreadable checkpoint.
        ExportError: export failure, checker failure or a parity difference above ``atol``.
    """
    _require("onnx", "pip install onnx==1.23.2 onnxscript==0.7.2")
    _require("onnxruntime", "pip install onnxruntime-gpu==1.31.1  (or onnxruntime)")
    t0 = time.perf_counter()
    _check_options(exporter=exporter, batch_check=batch_check, opset=opset)
    model = _resolve_source(source)
    precision = "fp16" if fp16 else "fp32"
    card = _card_to_embed(model.card, precision=precision, rules=rules)
    net = ProbabilityModel(copy.deepcopy(model).float().cpu()).eval()
    proto, used = _onnx_graph(net, card, opset=opset, exporter=exporter, fp16=fp16, check=check)

    out = Path(out_path)
    report = ExportReport(
        path=out, size_bytes=0, opset=default_opset(proto), exporter=used, precision=precision, groups=card.schema.names
    )
    tol = atol if atol is not None else (FP16_ATOL if fp16 else FP32_ATOL)
    _write_checked(proto, net, card.preprocessing, report, check=check, atol=tol, batches=(1, batch_check), seed=seed)
    report.seconds = time.perf_counter() - t0
    _logger.info(
        "exported %s (%s, %s exporter, opset %d) in %.1fs; max |onnx - torch| %s",
        what or out, precision, used, report.opset, report.seconds,
        f"{max(report.max_abs_diff.values()):.2g}" if report.max_abs_diff else "not checked",
    )
    return report


def check_against_torch(
    onnx_model: str | os.PathLike[str] | bytes,
    net: nn.Module,
    preprocessing: Preprocessing,
    *,
    batches: tuple[int, ...] = (1, 5),
    seed: int = 0,
) -> tuple[list[str], dict[str, float]]:
    """Run ONNX Runtime (CPU) and PyTorch on the same random batches; max abs diff per output.

    Args:
        onnx_model: the model file or its bytes.
        net: the PyTorch module returning one probability tensor per output, in output order.
        preprocessing: gives the input size.
        batches: batch sizes to run (each a fresh random input).
        seed: seed of the inputs.

    Returns:
        (providers the session really used, ``{output name: max abs difference}``).

    Raises:
        ExportError: ONNX Runtime cannot load or run the model (e.g. a batch size the graph
            fixed at export time).
    """
    import onnxruntime as ort

    src = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    try:
        session = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises Fail/InvalidGraph/NotImplemented...
        raise ExportError(f"ONNX Runtime cannot load the exported model: {first_line(err)}") from None
    names = [o.name for o in session.get_outputs()]
    h, w = preprocessing.input_size
    rng = np.random.default_rng(seed)
    diffs = dict.fromkeys(names, 0.0)
    for b in batches:
        x = rng.standard_normal((b, 3, h, w), dtype=np.float32)
        try:
            got = session.run(names, {session.get_inputs()[0].name: x})
        except Exception as err:  # noqa: BLE001
            raise ExportError(
                f"ONNX Runtime cannot run the exported model on a batch of {b}: {first_line(err)} "
                "(is the batch axis dynamic?)"
            ) from None
        with torch.inference_mode():
            want = net(torch.from_numpy(x))
        for name, g, r in zip(names, got, want):
            if g.shape != tuple(r.shape):
                raise ExportError(f"output '{name}': ONNX Runtime gives shape {list(g.shape)}, PyTorch {list(r.shape)}")
            diffs[name] = max(diffs[name], float(np.max(np.abs(g.astype(np.float64) - r.double().numpy()))))
    return list(session.get_providers()), diffs


# -- internals ----------------------------------------------------------------------------------
def _check_options(*, exporter: str, batch_check: int, opset: int) -> None:
    import onnx

    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ExportError(f"`opset` {opset} is not one the exporter writes: choose between {MIN_OPSET} and "
                          f"{onnx.defs.onnx_opset_version()} (default {DEFAULT_OPSET})")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter '{exporter}' is not one of {', '.join(EXPORTERS)}")
    if batch_check < 1:
        raise ExportError(f"`batch_check` must be at least 1, got {batch_check}")


def _card_to_embed(card: ModelCard, *, precision: str, rules: dict[str, Any] | None) -> ModelCard:
    """The card the file carries: this precision, these rules, and a calibration only if it fits them."""
    card = card.replace(precision=precision, rules=rules if rules is not None else card.rules)
    if rules is not None and card.calibration is not None and not _calibrated_for(card, rules):
        _logger.warning("the checkpoint's calibration was chosen for other class rules than these; it is left out "
                        "(run 'attrtag calibrate' on the exported model)")
        card = card.replace(calibration=None)
    return card


def _onnx_graph(
    net: nn.Module, card: ModelCard, *, opset: int, exporter: str, fp16: bool, check: bool
) -> tuple["onnx.ModelProto", str]:
    """The graph in its final precision with the card in its metadata, and the exporter used."""
    with _quiet_exporter_logs():
        proto, used = export_graph(net, card.schema, card.preprocessing, opset=opset, exporter=exporter)
    if default_opset(proto) != opset:  # an exporter that cannot convert keeps its own opset, with a warning only
        raise ExportError(f"`opset={opset}` was asked, but the {used} exporter wrote opset {default_opset(proto)}; "
                          f"nothing was written (try `opset={DEFAULT_OPSET}`)")
    if fp16:
        proto = convert_to_fp16(proto)
    write_metadata(proto, card)
    if check:
        _run_checker(proto)
    return proto, used


def _write_checked(
    proto: "onnx.ModelProto", net: nn.Module, prep: Preprocessing, report: ExportReport, *, check: bool,
    atol: float, batches: tuple[int, ...], seed: int,
) -> None:
    """Write ``report.path`` atomically, after the parity check passed (when ``check``)."""
    out = report.path
    out.parent.mkdir(parents=True, exist_ok=True)
    # The parity check runs on the temporary file: a model that fails it never replaces `out`.
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        if check:
            _check_against_torch(tmp, net, prep, report, batches=batches, atol=atol, seed=seed)
    report.size_bytes = out.stat().st_size


def _calibrated_for(card: ModelCard, rules: dict[str, Any]) -> bool:
    """Whether the card's calibration was chosen for ``rules`` (a gamma holds for one rule set)."""
    digest = rules_digest(Rules.from_dict(rules, card.schema).scorable())
    return (card.calibration or {}).get("rules_sha256") == digest


def _resolve_source(source: ModelSource) -> AttributeModel:
    if isinstance(source, AttributeModel):
        return source
    if isinstance(source, tuple):  # attrtag 0.1: (model, schema, preprocessing, backbone)
        if len(source) != 4:
            raise TypeError("export_onnx source must be a checkpoint path or a model")
        model, schema, prep, backbone = source
        model.schema.check_same(schema, what="export_onnx: model vs schema")
        model = copy.copy(model)  # a shallow copy: the caller's model keeps its own card
        model.card = ModelCard(schema, prep, str(backbone), rules=model.card.rules, label_counts=model.card.label_counts)
        return model
    return load_model(source)


def _run_checker(proto: "onnx.ModelProto") -> None:
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"onnx.checker rejects the exported graph: {first_line(err)}") from None


def _check_against_torch(
    path: Path,
    net: nn.Module,
    prep: Preprocessing,
    report: ExportReport,
    *,
    batches: tuple[int, ...],
    atol: float,
    seed: int,
) -> None:
    """Fill the report's parity fields; raise when a group differs by more than ``atol``."""
    try:
        providers, diffs = check_against_torch(path, net, prep, batches=batches, seed=seed + 1)
    except ExportError as err:
        if report.precision != "fp16":
            raise
        # float16 kernels are a GPU feature; a CPU-only ONNX Runtime may lack some of them.
        report.note = f"parity not checked: ONNX Runtime on this CPU cannot run the float16 graph ({err})"
        _logger.warning("%s", report.note)
        return
    report.check_providers, report.max_abs_diff = providers, diffs
    report.atol, report.check_batches = atol, tuple(batches)
    if report.precision == "fp16" and providers == ["CPUExecutionProvider"]:
        report.note = "float16 graph checked on the CPU provider; GPU float16 kernels may round differently"
    worst = {g: d for g, d in diffs.items() if not d <= atol}  # `not <=` also catches NaN
    for g, d in diffs.items():
        _logger.debug("parity %-20s max |onnx - torch| = %.3g", g, d)
    if worst:
        listed = ", ".join(f"{g}: {d:.3g}" for g, d in worst.items())
        raise ExportError(
            f"ONNX Runtime ({', '.join(providers)}) and PyTorch disagree above tolerance {atol:g} "
            f"({listed}); the exported graph is wrong, nothing was written to {report.path}. "
            "Try `opset` with another value, or export with exporter='torchscript'"
        )


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """Hold onnxscript/onnx_ir INFO chatter (one line per optimiser pass) unless we are debugging.

    The CLI logs at INFO; those lines describe the exporter's internals, not the user's model.
    """
    if _logger.isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _require(module: str, pip_line: str) -> None:
    """Fail up front, with the install line, when an optional dependency of export is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ExportError(f"ONNX export needs the '{module}' package: {pip_line}") from None
