"""CUDA, cuDNN and TensorRT from pip packages: loaded before a GPU session, and named when missing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from contextlib import nullcontext
from pathlib import Path

import pytest

from attrtag.runtime import DeviceUnavailableError, gpu_libraries
from attrtag.runtime.onnx_backend import OnnxModel
from tests.helpers import make_checkpoint

CUBLAS = Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cu13" / "lib" / "libcublasLt.so.13"


class FakeOrt:
    """An ``onnxruntime`` module whose ``preload_dlls`` prints what the real one prints on failure."""

    def __init__(self, printed: str = "") -> None:
        self.printed, self.calls = printed, 0

    def preload_dlls(self) -> None:
        self.calls += 1
        print(self.printed, end="")


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that has not preloaded yet, with no CUDA build of torch imported."""
    monkeypatch.setattr(gpu_libraries, "_missing_cuda", None)
    monkeypatch.delitem(sys.modules, "torch", raising=False)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attrtag_onnx.export import export_onnx

    root = tmp_path_factory.mktemp("gpu-libraries")
    return export_onnx(make_checkpoint(root / "m.pt"), root / "m.onnx", exporter="torchscript").path


@pytest.mark.skipif(not CUBLAS.is_file(), reason="CUDA 13's pip packages (nvidia-cu13) are not installed")
def test_a_cuda_session_loads_cuda_from_the_pip_packages_without_torch(onnx_model: Path) -> None:
    # onnxruntime-gpu's CUDA provider names libcublasLt.so.13 by soname (RUNPATH $ORIGIN): without
    # preloading, loading it fails on that library; after, only on the driver's libcuda.so.1.
    code = textwrap.dedent(
        f"""
        import ctypes, json, os, sys
        sys.modules["torch"] = None
        import onnxruntime
        provider = os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime_providers_cuda.so")
        def load():
            try:
                ctypes.CDLL(provider)
                return "loaded"
            except OSError as err:
                return str(err)
        before = load()
        from attrtag.runtime import DeviceUnavailableError
        from attrtag.runtime.onnx_backend import OnnxModel
        try:
            placement = str(OnnxModel({str(onnx_model)!r}, device="cuda").placement)
        except DeviceUnavailableError as err:
            placement = str(err)
        maps = open("/proc/self/maps").read()
        print(json.dumps({{"before": before, "after": load(), "placement": placement,
                          "cublas_mapped": "libcublasLt.so.13" in maps}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    if "libcublasLt.so.13" not in seen["before"]:
        pytest.skip(f"CUDA's libraries are on this machine's library path ({seen['before']})")
    assert seen["cublas_mapped"], seen
    assert "libcublas" not in seen["after"], seen  # loads, or fails only on the driver (no GPU here)
    assert "CUDA libraries not found" not in seen["placement"], seen


def test_libraries_preloading_could_not_load_are_named_and_nothing_is_printed(fresh, capsys) -> None:
    ort = FakeOrt("Failed to load /site/nvidia/cu13/lib/libcublasLt.so.13: no such file\n"
                  "Failed to load libcublasLt.so.13: cannot open shared object file\n"
                  "Failed to load libcudnn.so.9: cannot open shared object file\n"
                  "Please follow https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA.\n")
    assert gpu_libraries.preload_cuda(ort) == ["libcublasLt.so.13", "libcudnn.so.9"]
    assert gpu_libraries.preload_cuda(ort) == ["libcublasLt.so.13", "libcudnn.so.9"]
    assert ort.calls == 1  # once per process
    assert capsys.readouterr().out == ""  # stdout may carry tag records
    assert gpu_libraries.missing_cuda_hint() == (
        ' (CUDA libraries not found: libcublasLt.so.13, libcudnn.so.9; pip install "attrtag[cuda]" installs them)')


def test_a_refused_cuda_session_names_the_missing_libraries(onnx_model: Path, monkeypatch) -> None:
    if gpu_libraries.cuda_device_count():
        pytest.skip("a GPU is usable here")
    monkeypatch.setattr(gpu_libraries, "_missing_cuda", ["libcublasLt.so.13"])
    with pytest.raises(DeviceUnavailableError, match=r"asked for cuda .*CUDA libraries not found: libcublasLt.so.13; "
                                                     r'pip install "attrtag\[cuda\]" installs them\); use device=cpu'):
        OnnxModel(onnx_model, device="cuda")


def test_preloading_is_left_to_torch_where_a_cuda_build_of_it_is_imported(fresh, monkeypatch) -> None:
    cuda_torch = type(sys)("torch")
    cuda_torch.version = type(sys)("torch.version")
    cuda_torch.version.cuda = "13.0"
    monkeypatch.setitem(sys.modules, "torch", cuda_torch)
    ort = FakeOrt("Failed to load libcublasLt.so.13: x\n")
    assert gpu_libraries.preload_cuda(ort) == []
    assert ort.calls == 0


def test_a_cpu_session_preloads_nothing(onnx_model: Path, fresh, monkeypatch) -> None:
    called = []
    monkeypatch.setattr("attrtag.runtime.onnx_backend.preload_cuda", lambda ort: called.append(ort) or [])
    OnnxModel(onnx_model, device="cpu")
    assert called == []
    with pytest.raises(DeviceUnavailableError) if not gpu_libraries.cuda_device_count() else nullcontext():
        OnnxModel(onnx_model, device="cuda")
    assert len(called) == 1


def test_tensorrt_is_loaded_from_its_pip_package_in_dependency_order(tmp_path, monkeypatch) -> None:
    package = tmp_path / "tensorrt_libs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in gpu_libraries.TENSORRT_LIBRARIES:
        (package / name).write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = []
    monkeypatch.setattr(gpu_libraries.ctypes, "CDLL", lambda path: loaded.append(path))
    assert gpu_libraries.tensorrt_loadable()
    assert loaded == [str(package / name) for name in gpu_libraries.TENSORRT_LIBRARIES]


def test_without_tensorrt_anywhere_it_is_not_loadable(monkeypatch) -> None:
    def missing(path: str) -> None:
        raise OSError(f"{path}: cannot open shared object file")

    monkeypatch.setattr(gpu_libraries, "_tensorrt_pip_folder", lambda: None)
    monkeypatch.setattr(gpu_libraries.ctypes, "CDLL", missing)
    assert not gpu_libraries.tensorrt_loadable()


def test_auto_falling_back_to_the_cpu_beside_a_gpu_says_so(onnx_model: Path, monkeypatch, caplog) -> None:
    if gpu_libraries.cuda_device_count():
        pytest.skip("a GPU is usable here")
    # The driver reports a GPU, but the CUDA provider cannot load (here: no libcuda.so.1).
    monkeypatch.setattr("attrtag.runtime.onnx_backend.cuda_device_count", lambda: 1)
    monkeypatch.setattr(gpu_libraries, "_missing_cuda", ["libcudnn.so.9"])
    with caplog.at_level("WARNING", logger="attrtag.runtime.onnx_backend"):
        model = OnnxModel(onnx_model, device="auto")
    assert model.providers == ["CPUExecutionProvider"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "a GPU is here but ONNX Runtime runs on the CPU: the CUDA provider did not load (CUDA libraries not found: "
        'libcudnn.so.9; pip install "attrtag[cuda]" installs them); `device=cuda` makes this an error']
    caplog.clear()
    monkeypatch.setattr("attrtag.runtime.onnx_backend.cuda_device_count", lambda: 0)
    OnnxModel(onnx_model, device="auto")  # no GPU: the CPU is the choice, nothing to warn about
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
