"""ONNX export of a model with a multi-label group: one named sigmoid output per group, checked
against PyTorch in fp32, fp16 and int8; the card carries each group's kind and the value thresholds.

``test_resnet`` at 32 px, exclusive groups of 3, 7 and 2 values and ``marks`` (3 values, any number
at once); the card's thresholds (0.3, default, 0.7) differ per value, so a reader that decides at
0.5 everywhere cannot pass.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from attrtag.card import ModelCard
from attrtag.cli import main
from attrtag.commands.export import format_int8_table
from attrtag.data.images import load_rgb
from attrtag.data.manifest import read_manifest
from attrtag.evaluation.multilabel import multilabel_metrics
from attrtag.model import ProbabilityModel, build_model, save_checkpoint
from attrtag_onnx.export import export_onnx
from attrtag_onnx.fp16 import convert_to_fp16
from attrtag_onnx.metadata import read_metadata
from attrtag_onnx.quantize import export_int8
from tests.helpers import MULTI_SCHEMA, PREP, make_multilabel_dataset

THRESHOLDS = {"groups": {"marks": {"dot": 0.3, "ring": 0.7}}, "chosen_on": "a test"}
SIZES = (3, 7, 2, 3)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    card = ModelCard(MULTI_SCHEMA, PREP, "test_resnet", value_thresholds=THRESHOLDS)
    return build_model(MULTI_SCHEMA, "test_resnet", card=card).eval()


@pytest.fixture(scope="module")
def ckpt(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, model, config={})
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_multilabel_dataset(tmp_path_factory.mktemp("multi"), 60)


def run_onnx(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": x})))


def check_outputs(got: dict[str, np.ndarray], model: torch.nn.Module, x: np.ndarray, atol: float) -> None:
    """Softmax rows for the exclusive groups, the sigmoid of each logit for ``marks``, as PyTorch."""
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    assert list(got) == ["colour", "shape", "band", "marks"]
    for (name, g), n in zip(got.items(), SIZES):
        assert g.shape == (len(x), n) and g.dtype == np.float32
        if name == "marks":
            np.testing.assert_allclose(g, torch.sigmoid(logits[name]).numpy(), atol=atol)
            assert ((0 <= g) & (g <= 1)).all()
        else:
            np.testing.assert_allclose(g, torch.softmax(logits[name], 1).numpy(), atol=atol)
            np.testing.assert_allclose(g.sum(1), 1.0, atol=1e-5)
    # Three sigmoids that happened to sum to 1 on every image would mean a softmax after all.
    assert not np.allclose(got["marks"].sum(1), 1.0, atol=1e-3)


def test_fp32_export_has_a_sigmoid_output_checked_against_pytorch(model, tmp_path: Path) -> None:
    report = export_onnx(model, tmp_path / "m.onnx")
    assert report.groups == MULTI_SCHEMA.names and list(report.max_abs_diff) == list(MULTI_SCHEMA.names)
    assert all(0.0 <= d < 1e-4 for d in report.max_abs_diff.values())
    proto = onnx.load(str(report.path))
    producer = {o: n for n in proto.graph.node for o in n.output}
    assert [producer[o.name].op_type for o in proto.graph.output] == ["Softmax", "Softmax", "Softmax", "Sigmoid"]
    x = np.random.default_rng(3).standard_normal((5, 3, 32, 32), dtype=np.float32)
    check_outputs(run_onnx(report.path, x), model, x, atol=1e-4)


def test_the_card_read_back_has_each_kind_and_the_value_thresholds(model, tmp_path: Path) -> None:
    path = export_onnx(model, tmp_path / "m.onnx", check=False).path
    card = read_metadata(path)
    assert card.schema == MULTI_SCHEMA and [g.kind for g in card.schema] == ["exclusive"] * 3 + ["multi"]
    assert card.value_thresholds == THRESHOLDS and card.decision_thresholds == {"marks": (0.3, 0.5, 0.7)}
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["attrtag.format_version"]) == 3  # attrtag before multi-label groups refuses it
    assert json.loads(props["attrtag.schema"])["marks"] == {"kind": "multi", "values": ["dot", "bar", "ring"]}


def test_fp16_export_keeps_the_sigmoid_in_float32_and_checks_it(model, tmp_path: Path) -> None:
    report = export_onnx(model, tmp_path / "half.onnx", fp16=True)
    assert report.precision == "fp16" and read_metadata(report.path).value_thresholds == THRESHOLDS
    assert report.check_providers == ["CPUExecutionProvider"] and report.atol == pytest.approx(1e-2)
    assert "marks" in report.max_abs_diff and all(d < 1e-2 for d in report.max_abs_diff.values())
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(report.path)))
    producer = {o: n for n in proto.graph.node for o in n.output}
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.value_info}
    heads = [producer[producer[o.name].input[0]] for o in proto.graph.output]  # each output: head -> Cast
    assert [h.op_type for h in heads] == ["Softmax", "Softmax", "Softmax", "Sigmoid"]
    assert all(types[h.input[0]] == types[h.output[0]] == TensorProto.FLOAT for h in heads)  # not float16
    x = np.random.default_rng(4).standard_normal((5, 3, 32, 32), dtype=np.float32)
    check_outputs(run_onnx(report.path, x), model, x, atol=1e-2)


def test_fp16_keeps_only_output_sigmoids_in_float32() -> None:
    # A SiLU gate (Sigmoid, Mul) inside the network is float16's business; the output sigmoid is not.
    nodes = [helper.make_node("Sigmoid", ["x"], ["gate"], name="silu_gate"),
             helper.make_node("Mul", ["x", "gate"], ["h"], name="silu_mul"),
             helper.make_node("MatMul", ["h", "w"], ["logits"], name="head"),
             helper.make_node("Sigmoid", ["logits"], ["marks"])]  # unnamed, as some exporters leave it
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.linspace(-1, 1, 12).tolist())
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("marks", TensorProto.FLOAT, ["b", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    half = convert_to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(half).graph.value_info}
    sigmoids = {n.name: n for n in half.graph.node if n.op_type == "Sigmoid"}
    assert types[sigmoids["silu_gate"].output[0]] == TensorProto.FLOAT16
    (out,) = [n for name, n in sigmoids.items() if name != "silu_gate"]
    assert types[out.input[0]] == TensorProto.FLOAT and types[out.output[0]] == TensorProto.FLOAT
    assert not model.graph.node[3].name  # the caller's model is untouched


def test_int8_reports_map_and_f1_of_the_multi_label_group(
    model, ckpt: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "int8.onnx"
    q = export_int8(ckpt, out, data[1], calib_images=16, eval_images=40).quantization
    assert [g.group for g in q.groups] == ["colour", "shape", "band"]  # accuracy: exclusive groups only
    (m,) = q.multi_label
    assert m.group == "marks" and set(q.max_abs_diff) == set(MULTI_SCHEMA.names)
    assert [v.threshold for v in m.fp32_metrics.values] == [0.3, 0.5, 0.7]  # the card's, not 0.5

    # float32 figures recomputed independently with PyTorch on the same 40 images.
    samples = read_manifest(data[1], MULTI_SCHEMA).samples[:40]
    x = np.stack([PREP(load_rgb(s.path)) for s in samples])
    with torch.no_grad():
        probs = ProbabilityModel(model).eval()(torch.from_numpy(x))[3].numpy()
    labels = np.array([s.targets(MULTI_SCHEMA)[MULTI_SCHEMA.multi_slices["marks"]] for s in samples])
    want = multilabel_metrics(MULTI_SCHEMA["marks"], probs, labels, (0.3, 0.5, 0.7))
    assert m.labelled == want.labelled == int((labels >= 0).any(1).sum()) > 0
    assert m.fp32_map == pytest.approx(want.mean_ap, abs=1e-3) and m.fp32_map is not None
    assert m.fp32_f1 == pytest.approx(want.micro_f1, abs=0.05) and m.int8_f1 is not None
    assert m.delta_map_points == pytest.approx(100 * (m.int8_map - m.fp32_map))
    assert 0.0 < q.max_abs_diff["marks"] < 0.05

    # The sigmoid head stays float32: not dequantised from 1/255 steps.
    proto = onnx.load(str(out))
    producer = {o: n for n in proto.graph.node for o in n.output}
    assert producer["marks"].op_type == "Sigmoid"
    got = run_onnx(out, x[:8])["marks"]
    assert ((0 <= got) & (got <= 1)).all()

    table = format_int8_table(q)
    row = next(line for line in table.splitlines() if line.strip().startswith("marks"))
    assert f"{100 * m.fp32_map:.1f}%" in row and f"{100 * m.fp32_f1:.1f}%" in row
    assert "mAP fp32" in table and "colour" in table


def test_cli_int8_export_prints_the_multi_label_figures(
    ckpt: Path, data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.onnx"
    argv = ["export", "--checkpoint", str(ckpt), "--out", str(out), "--int8", "--calib-manifest", str(data[1]),
            "--calib-images", "8", "--eval-images", "16", "--batch-check", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "groups: colour (3), shape (7), band (2), marks (3, multi-label)" in printed
    assert any(line.strip().startswith("marks") and "max |onnx - torch|" in line for line in printed.splitlines())
    labelled = sum(max(s.multi.get("marks", (-1,))) >= 0 for s in read_manifest(data[1], MULTI_SCHEMA).samples[:16])
    rows = [line.split() for line in printed.splitlines() if line.strip().startswith("marks ")]
    assert len(rows) == 2 and rows[1][1] == str(labelled) and rows[1][2].endswith("%")  # parity, then int8
    assert "mAP fp32" in printed and "F1 fp32" in printed
    assert read_metadata(out).precision == "int8" and read_metadata(out).value_thresholds == THRESHOLDS
