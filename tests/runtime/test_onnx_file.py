"""Reading an ONNX file's metadata and outputs from its protobuf bytes, without ``onnx``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from attrtag.errors import CheckpointError
from attrtag.runtime.onnx_backend import read_onnx_card
from attrtag.runtime.onnx_file import OnnxFormatError, read_metadata_and_outputs


def _model(props: dict[str, str], outputs: list[str]) -> onnx.ModelProto:
    """A small graph whose weights sit between the nodes and the outputs, as exporters write them."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    nodes = [helper.make_node("Mul", ["image", "w"], [name]) for name in outputs]
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4]) for name in outputs]
    graph = helper.make_graph(nodes, "g", [x], outs, initializer=[w], doc_string="d" * 5000)
    model = helper.make_model(graph, producer_name="test")
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def test_reads_what_onnx_reads(tmp_path: Path) -> None:
    # Unicode, empty values and a long (multi-byte length varint) value; outputs in graph order.
    props = {"attrtag.schema": '{"größe": ["S", "M"]}', "empty": "", "long": "x" * 70000}
    outputs = ["zeta", "alpha", "größe"]
    path = tmp_path / "m.onnx"
    onnx.save_model(_model(props, outputs), str(path))
    loaded = onnx.load(str(path))
    assert read_metadata_and_outputs(path) == (
        {p.key: p.value for p in loaded.metadata_props}, [o.name for o in loaded.graph.output])
    assert read_metadata_and_outputs(path) == (props, outputs)


def test_model_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(_model({}, ["a"]), str(path))
    assert read_metadata_and_outputs(path) == ({}, ["a"])


@pytest.mark.parametrize("cut", [1, 7, 200, -3])
def test_truncated_file_is_a_format_error(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "m.onnx"
    raw = _model({"k": "v" * 300}, ["out"]).SerializeToString()
    path.write_bytes(raw[:cut])
    with pytest.raises(OnnxFormatError):
        read_metadata_and_outputs(path)
    with pytest.raises(CheckpointError, match=r"m\.onnx: not a readable ONNX file"):
        read_onnx_card(path)


def test_foreign_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("groups:\n  tone: [light, dark]\n")
    with pytest.raises(CheckpointError, match=r"notes\.onnx: not a readable ONNX file"):
        read_onnx_card(path)


def test_corrupted_bytes_give_a_format_error_or_a_result_never_a_crash(tmp_path: Path) -> None:
    raw = bytearray(_model({"attrtag.schema": "{}", "k": "v"}, ["a", "b"]).SerializeToString())
    rng = np.random.default_rng(0)
    path = tmp_path / "m.onnx"
    outcomes = set()
    for _ in range(300):
        bad = bytearray(raw)
        for i in rng.integers(0, len(bad), size=3):
            bad[i] = int(rng.integers(0, 256))
        path.write_bytes(bytes(bad))
        try:
            props, outputs = read_metadata_and_outputs(path)
        except OnnxFormatError:
            outcomes.add("error")
        else:
            assert isinstance(props, dict) and all(isinstance(o, str) for o in outputs)
            outcomes.add("read")
    assert outcomes == {"error", "read"}  # both kinds of corruption were exercised
