"""The CPU split between decoding and the model, and telling a model file from anything else."""
from __future__ import annotations

from pathlib import Path

import pytest

from attrtag.errors import CheckpointError
from attrtag.runtime.model_file import CHECKPOINT, ONNX, model_kind
from attrtag.runtime import Placement
from attrtag.runtime.threads import plan_threads


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 7, 16, 64])
def test_pytorch_never_gets_more_threads_than_decoding_leaves(cpus: int) -> None:
    plan = plan_threads(backend="torch", on_gpu=False, cpus=cpus)
    assert plan.decode_workers >= 1 and plan.model_threads >= 1
    assert plan.decode_workers + plan.model_threads <= max(2, cpus)  # 1 core: one of each, no more
    assert plan.decode_workers == max(1, min(8, cpus // 4))


def test_onnx_runtime_keeps_every_core_and_a_gpu_run_gives_them_to_decoding() -> None:
    assert (plan_threads(backend="onnx", on_gpu=False, cpus=16).decode_workers,
            plan_threads(backend="onnx", on_gpu=False, cpus=16).model_threads) == (4, 16)
    # Beside ONNX Runtime's every-core pool a lone decode thread starves on small machines.
    assert [plan_threads(backend="onnx", on_gpu=False, cpus=c).decode_workers for c in (1, 2, 4, 8, 12, 64)] == [
        1, 2, 2, 2, 3, 8]
    for backend in ("onnx", "torch"):
        gpu = plan_threads(backend=backend, on_gpu=True, cpus=16)
        assert (gpu.decode_workers, gpu.model_threads) == (15, 1)
    assert plan_threads(backend="onnx", on_gpu=True, cpus=1).decode_workers == 1
    assert plan_threads(backend="onnx", on_gpu=True, cpus=96).decode_workers == 32


def test_explicit_workers_and_threads_are_kept() -> None:
    plan = plan_threads(backend="torch", on_gpu=False, cpus=8, workers=0, threads=5)
    assert (plan.decode_workers, plan.model_threads) == (0, 5)
    assert plan_threads(backend="torch", on_gpu=False, cpus=8, workers=3).model_threads == 5


def test_a_placement_says_where_a_model_runs_as_a_type() -> None:
    assert Placement("onnxruntime", "tensorrt", 1).on_gpu and Placement("torch", "cuda").on_gpu
    assert not Placement("onnxruntime", "cpu").on_gpu and not Placement("torch", "cpu").on_gpu
    assert str(Placement("torch", "cuda", 1)) == "torch on cuda:1" and str(Placement("torch", "cpu")) == "torch on cpu"
    for bad in (("torch:cuda", "cuda"), ("onnxruntime", "auto"), ("torch", "gpu")):
        with pytest.raises(ValueError, match="no such placement"):
            Placement(*bad)


@pytest.mark.parametrize(
    ("data", "kind"),
    [(b"PK\x03\x04rest of a zip", CHECKPOINT), (b"\x80\x02\x8a\nlegacy pickle", CHECKPOINT), (b"\x08\x08\x12\x07pytorch", ONNX)],
)
def test_model_kind_from_the_first_bytes(tmp_path: Path, data: bytes, kind: str) -> None:
    path = tmp_path / "model.bin"  # the name says nothing; the bytes decide
    path.write_bytes(data)
    assert model_kind(path) == kind


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n....", "it is a PNG image"),
        ("groups:\n  colour: [röd, grün]\n".encode(), "it is a text file starting with 'groups:'"),
        (b"\x00\x01\x02\x03binary", "it starts with bytes"),
    ],
)
def test_a_file_that_is_not_a_model_is_described(tmp_path: Path, data: bytes, what: str) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="not an ONNX model or an attrtag checkpoint") as info:
        model_kind(path)
    assert what in str(info.value) and "attrtag export" in str(info.value)
    with pytest.raises(CheckpointError, match="model file not found"):
        model_kind(tmp_path / "absent.onnx")
    with pytest.raises(CheckpointError, match="is a folder"):
        model_kind(tmp_path)


def test_a_torch_predictor_runs_with_its_threads_and_gives_the_callers_back(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from attrtag.runtime.torch_backend import TorchPredictor
    from tests.helpers import PREP, make_checkpoint

    before = torch.get_num_threads()
    own = 1 if before != 1 else 2
    predictor = TorchPredictor.from_checkpoint(make_checkpoint(tmp_path / "m.pt"), device="cpu", threads=own)
    assert torch.get_num_threads() == before
    seen = []
    predictor._net.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    h, w = PREP.input_size
    predictor(np.zeros((2, 3, h, w), np.float32))
    assert seen == [own]
    assert torch.get_num_threads() == before  # an API caller's own setting is not changed for good
