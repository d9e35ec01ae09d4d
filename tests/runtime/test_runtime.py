"""ONNX runtime and predictor: torch-free inference, provider reporting, device refusal, dispatch."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from attrtag.model import save_checkpoint
from attrtag.errors import AttrtagError
from attrtag.model import ProbabilityModel, build_model
from attrtag.card import ModelCard
from attrtag.runtime import DeviceUnavailableError, Placement, Predictor, open_predictor
from attrtag.runtime.torch_backend import TorchPredictor
from attrtag.data.preprocess import Preprocessing
from attrtag.schema import Schema
from attrtag_onnx.export import export_onnx
from attrtag.runtime.held_output import hold_output
from attrtag.runtime.onnx_backend import OnnxModel

from tests.helpers import cuda_usable

SCHEMA = Schema.from_dict(
    {"tone": ["light", "mid", "dark"], "kind": [f"k{i}" for i in range(7)], "flag": ["no", "yes"]}
)
PREP = Preprocessing((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
RULES = {"classes": {"dark_flag": {"tone": "dark", "flag": "yes"}}}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model(SCHEMA, "test_resnet", card=ModelCard(SCHEMA, PREP, "test_resnet")).eval()


@pytest.fixture(scope="module")
def files(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model.onnx, best.pt) of the same weights; TorchScript exporter: fastest, same contract."""
    root = tmp_path_factory.mktemp("runtime")
    ckpt = save_checkpoint(root / "best.pt", model, config={})
    onnx_path = export_onnx(model, root / "model.onnx", rules=RULES, exporter="torchscript").path
    return onnx_path, ckpt


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((5, 3, 32, 32), dtype=np.float32)


def test_onnx_model_outputs_match_pytorch(files, model, batch: np.ndarray) -> None:
    m = OnnxModel(files[0], device="cpu", threads=1)
    assert isinstance(m, Predictor)
    assert m.schema == SCHEMA and m.preprocessing == PREP and m.rules == RULES and m.input_name == "image"
    assert m.card.backbone == "test_resnet" and m.card.precision == "fp32" and m.card.rules == RULES
    out = m(batch)
    assert list(out) == ["tone", "kind", "flag"]
    with torch.no_grad():
        want = ProbabilityModel(model)(torch.from_numpy(batch))
    for (name, got), ref, n in zip(out.items(), want, (3, 7, 2)):
        assert got.shape == (5, n) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-4, err_msg=name)
    assert {k: v.shape for k, v in m(batch[:0]).items()} == {"tone": (0, 3), "kind": (0, 7), "flag": (0, 2)}


def test_providers_are_read_back_from_the_session(files) -> None:
    cpu = OnnxModel(files[0], device="cpu", threads=1)
    assert cpu.providers == ["CPUExecutionProvider"] == cpu.session.get_providers()
    assert cpu.placement == Placement("onnxruntime", "cpu") and not cpu.placement.on_gpu
    auto = OnnxModel(files[0], threads=1)
    assert auto.providers == auto.session.get_providers()
    if not cuda_usable(str(files[0])):
        assert auto.providers == ["CPUExecutionProvider"] and auto.placement.device == "cpu"


def test_cuda_request_without_gpu_is_refused(files, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    if cuda_usable(str(files[0])):
        pytest.skip("a CUDA GPU is usable here")
    capfd.readouterr()  # what the probe above let ONNX Runtime print
    refusal = "asked for cuda but ONNX Runtime runs on CPUExecutionProvider only.*use device=cpu"
    with pytest.raises(DeviceUnavailableError, match=refusal):
        OnnxModel(files[0], device="cuda")
    with pytest.raises(DeviceUnavailableError, match="asked for tensorrt"):
        open_predictor(files[0], device="tensorrt", trt_cache_dir=tmp_path / "trt")
    # The refusal is the whole story: not ONNX Runtime's C++ log lines, nor its "EP Error ...
    # Falling back to [...] and retrying" block, which says the opposite.
    assert capfd.readouterr() == ("", "")


def test_held_output_is_shown_later_or_logged_instead(capfd: pytest.CaptureFixture[str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    log, said = logging.getLogger("attrtag.test"), "[E:onnxruntime] native line\nEP Error ... Falling back\n"

    def write() -> None:
        os.write(2, b"[E:onnxruntime] native line\n")  # where C++ logs go
        print("EP Error ... Falling back")  # the Python wrapper's print()

    with hold_output(log, "ONNX Runtime") as held:
        write()
    assert capfd.readouterr() == ("", "")
    held.release(show=True)
    assert capfd.readouterr() == ("", said)
    with caplog.at_level(logging.DEBUG, logger="attrtag.test"):
        held.release(show=False)
        with pytest.raises(ZeroDivisionError), hold_output(log, "ONNX Runtime"):
            write()
            1 / 0
    assert caplog.messages == ["ONNX Runtime said:\n" + said.rstrip()] * 2
    assert capfd.readouterr() == ("", "")


@pytest.mark.gpu
def test_cuda_runs_with_io_binding(files, batch: np.ndarray) -> None:
    if not cuda_usable(str(files[0])):
        pytest.skip("CUDAExecutionProvider is not usable here")
    gpu = OnnxModel(files[0], device="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider" and gpu._use_io_binding
    assert gpu.placement == Placement("onnxruntime", "cuda", 0)
    ref = OnnxModel(files[0], device="cpu")(batch)
    for name, got in gpu(batch).items():
        np.testing.assert_allclose(got, ref[name], atol=1e-3)
    assert gpu._use_io_binding, "I/O binding failed and fell back to session.run"


def test_bad_input_is_a_clear_error(files, batch: np.ndarray) -> None:
    m = OnnxModel(files[0], device="cpu", threads=1)
    with pytest.raises(AttrtagError, match=r"expected a batch of shape \[B, 3, 32, 32\].*got \[5, 3, 16, 32\]"):
        m(batch[:, :, :16])
    with pytest.raises(AttrtagError, match="dtype uint8"):
        m(np.zeros((1, 3, 32, 32), np.uint8))
    with pytest.raises(AttrtagError, match="not a device"):
        OnnxModel(files[0], device="gpu")


def test_open_predictor_dispatches_on_suffix(files, batch: np.ndarray) -> None:
    onnx_p = open_predictor(files[0], device="cpu", threads=1)
    torch_p = open_predictor(files[1], device="cpu")
    assert isinstance(onnx_p, OnnxModel) and isinstance(torch_p, TorchPredictor)
    assert torch_p.placement == Placement("torch", "cpu")
    assert torch_p.providers == ["torch:cpu"] and torch_p.rules is None and torch_p.schema == SCHEMA
    a, b = onnx_p(batch), torch_p(batch)
    assert list(a) == list(b) == list(SCHEMA.names)
    for name in SCHEMA.names:
        np.testing.assert_allclose(a[name], b[name], atol=1e-4)
    with pytest.raises(AttrtagError, match="model file not found"):
        open_predictor(files[0].parent / "absent.onnx")


def test_torch_cuda_request_without_gpu_is_refused(files) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is usable here")
    with pytest.raises(DeviceUnavailableError, match="asked for cuda but PyTorch sees no usable CUDA GPU"):
        open_predictor(files[1], device="cuda")


def test_onnx_path_runs_without_torch_or_onnx(files) -> None:
    # sys.modules['torch'] = None makes any `import torch` (direct or via timm) raise ImportError.
    # `onnx` is blocked too: importing it costs ~0.7 s of every tag run's start-up.
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["torch"] = None
        sys.modules["onnx"] = None
        import numpy as np
        from attrtag.runtime import open_predictor
        p = open_predictor({str(files[0])!r}, device="cpu", threads=1)
        out = p(np.zeros((2, 3, 32, 32), np.float32))
        assert sys.modules["torch"] is None
        print(json.dumps({{"providers": p.providers, "shapes": {{k: list(v.shape) for k, v in out.items()}},
                          "heavy": sorted(m for m in ("timm", "torchvision", "onnxscript") if m in sys.modules)}}))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["providers"] == ["CPUExecutionProvider"]
    assert result["shapes"] == {"tone": [2, 3], "kind": [2, 7], "flag": [2, 2]}
    assert result["heavy"] == []
