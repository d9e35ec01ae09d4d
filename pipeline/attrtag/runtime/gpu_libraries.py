"""The GPU libraries ONNX Runtime's CUDA and TensorRT providers need: found and loaded, torch-free.

onnxruntime-gpu's provider libraries name CUDA, cuDNN and TensorRT by soname only (their
RUNPATH is ``$ORIGIN``). Where those come from pip packages (``nvidia-cu13``, ``nvidia-cudnn-cu13``,
``tensorrt-cu13-libs``: what ``pip install "attrtag[cuda]"`` and PyTorch's wheels bring) rather
than the system's library path, a GPU session cannot find them and ONNX Runtime falls back to
the CPU. Loading them first by full path makes the later load by soname find them (ONNX Runtime's
own ``preload_dlls``, its install docs). ``import torch`` loads the CUDA ones too, which is why
this only shows where torch is not imported: ``attrtag tag model.onnx`` on a GPU server.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import re
import sys
from pathlib import Path
from typing import Any

from .held_output import hold_output

_logger = logging.getLogger(__name__)

#: What fixes a missing CUDA/cuDNN library: ONNX Runtime's own extras, through ours.
CUDA_PIP_HINT = 'pip install "attrtag[cuda]"'
#: TensorRT 10's libraries, in the order they depend on each other (plugin and parser need nvinfer).
TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10")
_FAILED = re.compile(r"Failed to load (\S+?):")

_missing_cuda: list[str] | None = None  # what preloading could not load, once per process


def cuda_device_count() -> int:
    """GPUs the NVIDIA driver reports (0 without a driver), via the driver API alone.

    Cheap and torch-free; used only to decide whether trying the GPU providers makes sense.
    """
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def preload_cuda(ort: Any) -> list[str]:
    """Load CUDA and cuDNN from the nvidia pip packages before a GPU session; once per process.

    Skipped where a CUDA build of torch is already imported: it loaded its own copies, and a
    second copy from another folder would clash (ONNX Runtime's ``preload_dlls`` docs).

    Returns:
        The libraries that could not be loaded (``libcublasLt.so.13``, ...); empty when all were.
    """
    global _missing_cuda
    if _missing_cuda is None:
        torch = sys.modules.get("torch")
        if not hasattr(ort, "preload_dlls") or getattr(getattr(torch, "version", None), "cuda", None):
            _missing_cuda = []
        else:
            # preload_dlls print()s its failures; stdout may carry tag output. Read, then logged.
            held = None
            try:
                with hold_output(_logger, "onnxruntime.preload_dlls") as held:
                    ort.preload_dlls()
            except Exception as err:  # noqa: BLE001 - a failed preload leaves ONNX Runtime's own search
                _logger.debug("onnxruntime.preload_dlls failed: %s", err)
            else:
                held.release(show=False)
            names = [Path(m).name for m in _FAILED.findall(held.text if held is not None else "")]
            _missing_cuda = list(dict.fromkeys(names))
            if _missing_cuda:
                _logger.debug("CUDA libraries not loaded: %s", ", ".join(_missing_cuda))
    return list(_missing_cuda)


def missing_cuda_hint() -> str:
    """`` (CUDA libraries not found: ...; pip install ...)`` after a refused GPU session, or ``""``."""
    if not _missing_cuda:
        return ""
    return f" (CUDA libraries not found: {', '.join(_missing_cuda)}; {CUDA_PIP_HINT} installs them)"


def tensorrt_loadable() -> bool:
    """Whether TensorRT's runtime can be loaded: from the ``tensorrt_libs`` pip package, else the library path."""
    folder = _tensorrt_pip_folder()
    if folder is not None:
        try:
            for name in TENSORRT_LIBRARIES:
                ctypes.CDLL(str(folder / name))
            return True
        except OSError as err:
            _logger.debug("TensorRT libraries in %s not loadable: %s", folder, err)
    for name in ("libnvinfer.so.10", "libnvinfer.so", "nvinfer_10.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    _logger.debug("TensorRT libraries (libnvinfer) not found: skipping TensorrtExecutionProvider")
    return False


def _tensorrt_pip_folder() -> Path | None:
    """The folder of ``tensorrt-cu1x-libs`` (the ``tensorrt_libs`` package), if installed."""
    try:
        spec = importlib.util.find_spec("tensorrt_libs")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / TENSORRT_LIBRARIES[0]).is_file() else None
