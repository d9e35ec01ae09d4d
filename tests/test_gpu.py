"""What only a GPU shows: ONNX Runtime's CUDA and TensorRT providers, fp16, PyTorch on CUDA, AMP.

Every test here is marked ``gpu`` and skips where its GPU runtime is missing (CI has no GPU).
``scripts/gpu_check.py`` runs them (``pytest -m gpu``) first thing on a GPU machine, beside
the timed checks. A skip says which runtime is missing; on a machine whose driver sees a GPU,
a runtime that then fails to use it is a failure, not a skip.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attrtag.runtime import Placement
from attrtag.runtime.gpu_libraries import cuda_device_count, tensorrt_loadable
from attrtag.runtime.onnx_backend import OnnxModel
from attrtag.runtime.torch_backend import TorchPredictor
from attrtag_onnx.export import export_onnx

from tests.helpers import PREP, make_checkpoint, make_dataset, write_images

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[1]


def _ort_cuda_listed() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


# Decided before any fixture runs, so a machine without a GPU spends nothing on these tests.
ORT_GPU = pytest.mark.skipif(not (cuda_device_count() and _ort_cuda_listed()),
                             reason="no GPU for ONNX Runtime (no NVIDIA driver, or onnxruntime without CUDA)")
TENSORRT = pytest.mark.skipif(not (cuda_device_count() and tensorrt_loadable()),
                              reason="no TensorRT libraries (libnvinfer) or no GPU")
TORCH_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA GPU")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random test_resnet checkpoint, its fp32 and fp16 ONNX files, and images to tag."""
    root = tmp_path_factory.mktemp("gpu")
    ckpt = make_checkpoint(root / "best.pt", seed=3)
    return {
        "ckpt": ckpt,
        "fp32": export_onnx(ckpt, root / "model.onnx", exporter="torchscript").path,
        "fp16": export_onnx(ckpt, root / "model16.onnx", fp16=True, exporter="torchscript").path,
        "images": write_images(root / "images", 12)[0].parent,
    }


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    h, w = PREP.input_size
    return np.random.default_rng(0).normal(0, 1, (9, 3, h, w)).astype(np.float32)  # 9: not a power of two


def _assert_close(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], atol: float) -> None:
    assert got.keys() == ref.keys()
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], atol=atol, err_msg=name)


@ORT_GPU
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_cuda_provider_runs_fp32_and_fp16_as_the_cpu_does(files, batch, precision, atol) -> None:
    gpu = OnnxModel(files[precision], device="cuda")
    assert gpu.placement == Placement("onnxruntime", "cuda", 0)
    _assert_close(gpu(batch), OnnxModel(files["fp32"], device="cpu")(batch), atol)


@ORT_GPU
def test_auto_puts_an_onnx_model_on_the_gpu(files) -> None:
    assert OnnxModel(files["fp32"]).placement.on_gpu


@TENSORRT
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_tensorrt_runs_and_caches_its_engine(files, batch, precision, atol, tmp_path) -> None:
    cache = tmp_path / "trt"
    trt = OnnxModel(files[precision], device="tensorrt", trt_cache_dir=cache, batch_size_hint=4)
    assert trt.placement.device == "tensorrt"
    _assert_close(trt(batch), OnnxModel(files["fp32"], device="cpu")(batch), atol)  # 9 rows: chunks of 4
    built = sorted(p.name for p in cache.iterdir())
    assert any(name.endswith(".engine") for name in built), built
    again = OnnxModel(files[precision], device="tensorrt", trt_cache_dir=cache, batch_size_hint=4)
    _assert_close(again(batch), OnnxModel(files["fp32"], device="cpu")(batch), atol)


@TORCH_GPU
def test_torch_predictor_runs_channels_last_fp16_as_the_cpu_does(files, batch) -> None:
    gpu = TorchPredictor.from_checkpoint(files["ckpt"], device="cuda")
    assert gpu.placement == Placement("torch", "cuda", 0)
    conv = next(m for m in gpu._net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    _assert_close(gpu(batch), TorchPredictor.from_checkpoint(files["ckpt"], device="cpu")(batch), 1e-2)


def _tag(model: Path, images: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "pipeline"), str(ROOT / "export")])}
    return subprocess.run([sys.executable, "-m", "attrtag", "tag", str(model), str(images), "--out", str(out),
                           "--no-progress", *flags], capture_output=True, text=True, env=env, timeout=300)


@ORT_GPU
def test_tag_device_cuda_runs_on_the_gpu_and_says_so(files, tmp_path) -> None:
    done = _tag(files["fp16"], files["images"], tmp_path / "t.jsonl", "--device", "cuda")
    assert done.returncode == 0, done.stderr
    assert "on CUDAExecutionProvider (precision fp16)" in done.stderr
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(records) == 12 and not any(r.get("error") for r in records)


@TORCH_GPU
def test_tag_a_checkpoint_with_device_cuda_runs_pytorch_on_the_gpu(files, tmp_path) -> None:
    done = _tag(files["ckpt"], files["images"], tmp_path / "t.jsonl", "--device", "cuda")
    assert done.returncode == 0, done.stderr
    assert "PyTorch runs the model on cuda" in done.stderr


@TORCH_GPU
def test_training_on_cuda_uses_amp_and_channels_last(tmp_path) -> None:
    from attrtag.data.manifest import read_manifest
    from attrtag.schema import Schema
    from attrtag.training.config import TrainConfig
    from attrtag.training.loop import train
    from attrtag.training.run import prepare_run

    schema_path, manifest_path = make_dataset(tmp_path / "data", n=48)
    schema = Schema.load(schema_path)
    manifest = read_manifest(manifest_path, schema)
    cfg = TrainConfig.from_dict({"backbone": "test_resnet", "image_size": 32, "batch_size": 8, "epochs": 1,
                                 "workers": 0, "device": "cuda", "max_steps_per_epoch": 3})
    run = prepare_run(cfg, schema, manifest, tmp_path / "probe", None)
    assert run.amp and run.scaler.is_enabled() and run.channels_last
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    train(cfg, schema, manifest, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert np.isfinite(history[-1]["train_loss"]) and history[-1]["train_images"] == 24
