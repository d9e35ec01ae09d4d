"""The ONNX graph of a probability model: dynamo export (TorchScript as the fallback), interface checked.

The graph takes ``image`` float32 ``[batch, 3, H, W]`` with a symbolic batch axis and gives one
output per schema group, named after it; :func:`export_graph` refuses any other interface.
"""
from __future__ import annotations

import io
import logging
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from attrtag.data.preprocess import Preprocessing
from attrtag.errors import ExportError, first_line
from attrtag.schema import Schema

from .metadata import INPUT_NAME

if TYPE_CHECKING:
    import onnx

_logger = logging.getLogger(__name__)

#: torch.export specialises size-1 dimensions, so trace with 2 to keep the batch axis symbolic
#: (same reasoning as timm.utils.onnx).
TRACE_BATCH = 2
EXPORTERS = ("auto", "dynamo", "torchscript")
_PROTOBUF_LIMIT = 2**31 - 1  # one serialised ModelProto; larger models need external data


def export_graph(
    net: nn.Module, schema: Schema, prep: Preprocessing, *, opset: int, exporter: str
) -> tuple["onnx.ModelProto", str]:
    """The graph from the dynamo exporter, or TorchScript when dynamo fails (``auto``)."""
    h, w = prep.input_size
    x = torch.randn(TRACE_BATCH, 3, h, w, generator=torch.Generator().manual_seed(1234))
    tried: list[str] = []
    for name in ("dynamo", "torchscript") if exporter == "auto" else (exporter,):
        try:
            export = _export_dynamo if name == "dynamo" else _export_torchscript
            proto = export(net, x, schema, opset)
            _check_interface(proto, schema, h, w)
            return proto, name
        except Exception as err:  # noqa: BLE001 - the exporters raise many types; try the other
            tried.append(f"{name}: {first_line(err)}")
            if exporter == "auto" and name == "dynamo":
                _logger.warning("dynamo ONNX export failed (%s); trying the TorchScript exporter", first_line(err))
    raise ExportError(f"ONNX export failed ({'; '.join(tried)}); try another `opset`")


def default_opset(proto: "onnx.ModelProto") -> int:
    """The opset of the default (``ai.onnx``) domain; 0 when the graph imports none."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _export_dynamo(net: nn.Module, x: torch.Tensor, schema: Schema, opset: int) -> "onnx.ModelProto":
    # f=None: get the program in memory, so metadata and the fp16 conversion happen before the
    # single atomic write, and weights stay inside the ModelProto (no .onnx.data side file).
    program = torch.onnx.export(net, (x,), None, **_names(schema, opset), dynamo=True,
                                dynamic_shapes=({0: "batch"},), verbose=False)
    return program.model_proto


def _names(schema: Schema, opset: int) -> dict[str, Any]:
    """What both exporters are told: the input's and outputs' names, and the opset."""
    return {"input_names": [INPUT_NAME], "output_names": list(schema.names), "opset_version": opset}


def _export_torchscript(net: nn.Module, x: torch.Tensor, schema: Schema, opset: int) -> "onnx.ModelProto":
    import onnx

    buf = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in schema.names}}
    with warnings.catch_warnings():
        # torch >= 2.9 warns that the TorchScript exporter is deprecated; we chose it knowingly.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (x,), buf, **_names(schema, opset), dynamic_axes=axes, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _check_interface(proto: "onnx.ModelProto", schema: Schema, h: int, w: int) -> None:
    """One ``image`` input with a symbolic batch axis, outputs named and sized by the schema."""
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ExportError(f"expected one graph input '{INPUT_NAME}', got {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[0].dim_param or [d.dim_value for d in dims[1:]] != [3, h, w]:
        shape = [d.dim_param or d.dim_value for d in dims]
        raise ExportError(
            f"input '{INPUT_NAME}' has shape {shape}, expected [batch, 3, {h}, {w}] with a symbolic batch"
        )
    names = [o.name for o in proto.graph.output]
    if names != list(schema.names):
        raise ExportError(f"graph outputs are {names}, expected the schema groups {list(schema.names)}")
    for out, size in zip(proto.graph.output, schema.sizes):
        odims = out.type.tensor_type.shape.dim
        if len(odims) == 2 and odims[1].dim_value not in (0, size):
            raise ExportError(f"output '{out.name}' has {odims[1].dim_value} values, the schema has {size}")
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise ExportError("the model is larger than 2 GB, which one ONNX file cannot hold without external data")
