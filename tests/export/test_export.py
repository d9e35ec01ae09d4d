"""ONNX export: parity with PyTorch, dynamic batch, named outputs, metadata, fp16, int8 and the CLI.

Tiny ``test_resnet`` at 32 px with groups of 3, 7 and 2 values (the shared ``tiny_data`` schema),
so a hard-coded group size or order cannot pass.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from attrtag.card import ModelCard
from attrtag.cli import main
from attrtag.errors import CheckpointError
from attrtag.data.images import load_rgb
from attrtag.data.manifest import read_manifest
from attrtag.model import ProbabilityModel, build_model, save_checkpoint
from attrtag.data.preprocess import Preprocessing
from attrtag.zeroshot.rules import Rules
from attrtag.schema import Schema
from attrtag_onnx.metadata import read_metadata
from attrtag_onnx.export import ExportError, export_onnx
from attrtag_onnx.quantize import export_int8

PREP = Preprocessing((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=0.875)
RULES_YAML = (
    "classes:\n"
    "  small_red:\n    colour: red\n    shape: [s0, s1]\n"
    "  striped_top:\n    band: {top: 2, bottom: 1}\n"
)


@pytest.fixture(scope="module")
def schema(tiny_data: tuple[Path, Path]) -> Schema:
    return Schema.load(tiny_data[0])


@pytest.fixture(scope="module")
def model(schema: Schema) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(schema, "test_resnet", card=ModelCard(schema, PREP, "test_resnet")).eval()


@pytest.fixture(scope="module")
def ckpt(model: torch.nn.Module, schema: Schema, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, model, config={})
    return path


@pytest.fixture(scope="module")
def rules(schema: Schema, tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(RULES_YAML)
    return Rules.load(path, schema).to_dict()


@pytest.fixture(scope="module")
def exported(ckpt: Path, rules: dict, tmp_path_factory: pytest.TempPathFactory):
    return export_onnx(ckpt, tmp_path_factory.mktemp("onnx") / "model.onnx", rules=rules)


def torch_probs(model: torch.nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [p.numpy() for p in ProbabilityModel(model).eval()(torch.from_numpy(x))]


def test_export_report_parity_within_tolerance(exported, schema: Schema) -> None:
    assert exported.path.is_file() and exported.size_bytes == exported.path.stat().st_size
    assert exported.exporter == "dynamo" and exported.precision == "fp32" and exported.opset == 18
    assert exported.groups == ("colour", "shape", "band")
    assert exported.check_providers == ["CPUExecutionProvider"]
    assert exported.check_batches == (1, 5) and exported.atol == pytest.approx(1e-4)
    assert list(exported.max_abs_diff) == list(schema.names)
    assert all(0.0 <= d < 1e-4 for d in exported.max_abs_diff.values())
    assert not list(exported.path.parent.glob(".*.tmp")), "temporary file left behind"


def test_outputs_named_in_schema_order_with_dynamic_batch(exported, model: torch.nn.Module) -> None:
    proto = onnx.load(str(exported.path))
    (inp,) = proto.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [3, 32, 32]
    assert [o.name for o in proto.graph.output] == ["colour", "shape", "band"]
    assert [o.type.tensor_type.shape.dim[1].dim_value for o in proto.graph.output] == [3, 7, 2]

    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(42)
    for batch in (1, 5):
        x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
        got = session.run(None, {"image": x})
        want = torch_probs(model, x)
        for g, w, n in zip(got, want, (3, 7, 2)):
            assert g.shape == (batch, n)
            np.testing.assert_allclose(g, w, atol=1e-4)
            np.testing.assert_allclose(g.sum(1), 1.0, atol=1e-5)  # softmax is in the graph


def test_metadata_round_trip(exported, schema: Schema, rules: dict) -> None:
    meta = read_metadata(exported.path)
    assert meta.schema == schema and meta.preprocessing == PREP
    assert meta.backbone == "test_resnet" and meta.precision == "fp32"
    assert meta.rules == rules and Rules.from_dict(meta.rules, schema) == Rules.from_dict(rules, schema)
    props = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    assert json.loads(props["attrtag.format_version"]) == 2  # no multi-label group: what attrtag before them reads
    assert list(json.loads(props["attrtag.schema"])) == ["colour", "shape", "band"]
    assert json.loads(props["attrtag.preprocessing"])["crop_pct"] == 0.875
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    assert read_metadata(session) == meta


def test_read_metadata_rejects_foreign_onnx(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(CheckpointError, match=r"plain\.onnx: not an attrtag model: missing metadata 'attrtag\.schema'"):
        read_metadata(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_metadata(tmp_path / "absent.onnx")


def test_read_metadata_checks_output_names(exported, tmp_path: Path) -> None:
    proto = onnx.load(str(exported.path))
    proto.graph.output[1].name = "renamed"  # graph now inconsistent, but metadata is read first
    path = tmp_path / "renamed.onnx"
    onnx.save(proto, str(path))
    expected = r"expected \['colour', 'shape', 'band'\], got \['colour', 'renamed', 'band'\]"
    with pytest.raises(CheckpointError, match=expected):
        read_metadata(path)


def test_parity_failure_raises_and_writes_nothing(model, schema: Schema, tmp_path: Path) -> None:
    out = tmp_path / "bad.onnx"
    # A negative tolerance no real difference can meet: the check must refuse the file.
    with pytest.raises(ExportError, match="disagree above tolerance"):
        export_onnx(model, out, atol=-1.0, exporter="torchscript")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_torchscript_exporter_also_dynamic(model, schema: Schema, tmp_path: Path) -> None:
    was_training = model.training
    report = export_onnx(model, tmp_path / "ts.onnx", exporter="torchscript", batch_check=3)
    assert report.exporter == "torchscript" and report.check_batches == (1, 3)
    assert all(d < 1e-4 for d in report.max_abs_diff.values())
    assert model.training == was_training  # a copy was exported


def test_fp16_export_keeps_float32_io(ckpt: Path, tmp_path: Path) -> None:
    report = export_onnx(ckpt, tmp_path / "half.onnx", fp16=True)
    proto = onnx.load(str(report.path))
    assert report.precision == "fp16" and read_metadata(report.path).precision == "fp16"
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {o.type.tensor_type.elem_type for o in proto.graph.output} == {TensorProto.FLOAT}
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    assert {t.data_type for t in proto.graph.initializer if t.name in conv_weights} == {TensorProto.FLOAT16}
    # Softmax runs in float32 and feeds the outputs directly (no fp16 rounding of probabilities).
    softmax_out = {o for n in proto.graph.node if n.op_type == "Softmax" for o in n.output}
    producer = {o: n for n in proto.graph.node for o in n.output}
    assert all(producer[o.name].input[0] in softmax_out for o in proto.graph.output)
    # ONNX Runtime 1.31 runs this graph on the CPU, so parity was checked, at the fp16 tolerance.
    assert report.check_providers == ["CPUExecutionProvider"] and report.atol == pytest.approx(1e-2)
    assert all(d < 1e-2 for d in report.max_abs_diff.values())


def test_int8_export_reports_accuracy_per_group(
    ckpt: Path, model: torch.nn.Module, tiny_data: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schema_path, manifest = tiny_data
    schema = Schema.load(schema_path)
    out = tmp_path / "int8.onnx"
    with caplog.at_level(logging.INFO, logger="attrtag_onnx"):
        report = export_int8(ckpt, out, manifest, calib_images=16, eval_images=40)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("exported ")]
    assert said and said[0].startswith("exported the float32 graph to quantise (fp32")  # not its temporary path
    q = report.quantization
    assert report.precision == "int8" and report.path == out and read_metadata(out).precision == "int8"
    assert all(d < 1e-4 for d in report.max_abs_diff.values())  # the float32 model it came from
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["colour", "shape", "band"]
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert q.calib_images == 16 and q.eval_images == 40 and q.preprocessed
    assert [g.group for g in q.groups] == list(schema.names)

    # Recompute float32 accuracy independently with PyTorch on the same 40 images.
    records = read_manifest(manifest, schema).samples[:40]
    x = np.stack([PREP(load_rgb(r.path)) for r in records])
    probs = torch_probs(model, x)
    for j, g in enumerate(q.groups):
        labels = np.array([r.labels[j] for r in records])
        mask = labels >= 0
        assert g.labelled == int(mask.sum()) > 0
        want = float((probs[j].argmax(1)[mask] == labels[mask]).mean())
        assert g.fp32 == pytest.approx(want, abs=1.01 / g.labelled)  # allow one near-tie flip
        assert g.delta_points == pytest.approx(100 * (g.int8 - g.fp32))
        assert 0.0 < q.max_abs_diff[g.group] < 0.05  # int8 differs, but not wildly

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for p in session.run(None, {"image": x[:4]}):
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)  # the head stays float32


def test_cli_export_end_to_end(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES_YAML)
    out = tmp_path / "cli.onnx"
    argv = ["export", "--checkpoint", str(ckpt), "--out", str(out), "--rules", str(rules_path), "--batch-check", "3"]
    code = main(argv)
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert f"wrote {out}" in printed and "opset 18" in printed
    assert "groups: colour (3), shape (7), band (2)" in printed
    assert "on CPUExecutionProvider" in printed and "batches 1, 3" in printed
    for group in ("colour", "shape", "band"):
        assert any(line.strip().startswith(group) and "max |onnx - torch|" in line for line in printed.splitlines())
    assert set(read_metadata(out).rules["classes"]) == {"small_red", "striped_top"}


def test_cli_bad_checkpoint_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.pt"
    code = main(["export", "--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("attrtag: error:") and str(missing) in err


def test_cli_int8_needs_calibration_manifest(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "q.onnx"), "--int8"])
    assert code == 2 and "--calib-manifest" in capsys.readouterr().err


def test_old_module_names_still_import_with_a_deprecation_warning() -> None:
    import importlib
    import sys

    from attrtag.runtime.onnx_backend import OnnxModel

    for name in ("attrtag_onnx.runtime", "attrtag_onnx.onnx_export"):
        sys.modules.pop(name, None)
        with pytest.warns(DeprecationWarning, match="attrtag_onnx"):
            module = importlib.import_module(name)
        assert hasattr(module, "OnnxModel" if name.endswith("runtime") else "export_onnx")
    assert importlib.import_module("attrtag_onnx.runtime").OnnxModel is OnnxModel
