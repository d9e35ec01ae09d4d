"""A float16 copy of an exported model for GPUs, float32 input and outputs kept."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from attrtag.errors import ExportError

if TYPE_CHECKING:
    import onnx


def convert_to_fp16(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """A float16 copy of ``model`` for GPUs, float32 input and outputs kept.

    Uses ONNX Runtime's converter (``onnxruntime.transformers.float16``). Softmax and the Sigmoid
    nodes of multi-label outputs stay float32 so probabilities are computed, and returned, at full
    precision, like PyTorch autocast does; the converter's float32->float16->float32 cast pairs at
    the outputs are then removed, and the node list re-sorted (the converter appends its Cast
    nodes at the end, which ONNX forbids).

    Args:
        model: a float32 model (not modified).

    Returns:
        The converted model.
    """
    try:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError:
        raise ExportError(
            "`fp16=True` needs ONNX Runtime's float16 converter: pip install onnxruntime-gpu==1.31.1"
        ) from None
    model = copy.deepcopy(model)
    half = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, "Softmax"],
        node_block_list=_output_sigmoids(model.graph),
    )
    _drop_cast_round_trips(half)
    _sort_topologically(half.graph)
    return half


def _output_sigmoids(graph: Any) -> list[str]:
    """Names of the Sigmoid nodes that give graph outputs (named here when unnamed).

    Only these: a float16 sigmoid near 1 moves in steps of 5e-4, enough to flip a value that sits
    on its decision threshold, while a backbone's SiLU gates (Sigmoid, Mul) are float16's usual
    business and would pay two casts each in float32.
    """
    outputs = {o.name for o in graph.output}
    names = []
    for i, node in enumerate(graph.node):
        if node.op_type == "Sigmoid" and outputs.intersection(node.output):
            node.name = node.name or f"attrtag_output_sigmoid_{i}"
            names.append(node.name)
    return names


def _drop_cast_round_trips(model: "onnx.ModelProto") -> None:
    """Rewire ``Cast(float32->float16) -> Cast(->float32)`` pairs to skip the float16 step.

    After ``keep_io_types`` with float32 Softmax and Sigmoid, each output is (say) Softmax(fp32) -> fp16 -> fp32,
    which only rounds the probabilities. The second Cast is kept (a float32->float32 Cast is a
    no-op) so graph output names do not change; the first is removed when nothing else reads it.
    """
    import onnx

    graph = model.graph
    dtypes = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    dtypes.update({t.name: t.data_type for t in graph.initializer})
    producer = {out: n for n in graph.node for out in n.output}

    def cast_to(node: Any) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    for node in graph.node:
        if cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        first = producer.get(node.input[0])
        if first is None or cast_to(first) != onnx.TensorProto.FLOAT16:
            continue
        if dtypes.get(first.input[0]) == onnx.TensorProto.FLOAT:
            node.input[0] = first.input[0]
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
    for n in dead:
        graph.node.remove(n)


def _sort_topologically(graph: Any) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (Kahn).

    Only top-level edges are followed; attrtag graphs (CNN/ViT backbones) have no subgraphs.
    """
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[Any] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError(f"float16 graph has a cycle or a dangling input at node '{rest[0].name}'")
        pending = rest
    copies = [copy.deepcopy(n) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)
