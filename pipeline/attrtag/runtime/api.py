"""The predictor contract every backend fulfils, and the parsing shared by all of them.

A predictor is a loaded model: preprocessed float32 batches in, per-group probabilities out.
Backends (:mod:`.onnx_backend`, :mod:`.torch_backend`) and their users (tagging, evaluation,
the public API) meet here, in a module that imports neither torch nor onnxruntime.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..card import ModelCard
from ..data.preprocess import Preprocessing
from ..errors import AttrtagError
from ..schema import Schema

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
RUNTIMES = ("onnxruntime", "torch")


@dataclass(frozen=True)
class Placement:
    """Where a predictor really runs, read back after it was opened (not what was asked for).

    Attributes:
        runtime: ``onnxruntime`` or ``torch``.
        device: ``cpu``, ``cuda`` or ``tensorrt`` (ONNX Runtime's TensorRT provider).
        index: the GPU's index (0 on the CPU).
    """

    runtime: str
    device: str
    index: int = 0

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES or self.device not in DEVICES[1:]:
            raise ValueError(f"no such placement: {self.runtime} on {self.device}")

    @property
    def on_gpu(self) -> bool:
        """The model runs on a GPU (decoding then has the CPUs to itself)."""
        return self.device != "cpu"

    def __str__(self) -> str:
        return f"{self.runtime} on {self.device}" + (f":{self.index}" if self.on_gpu else "")


@runtime_checkable
class Predictor(Protocol):
    """A loaded model: preprocessed float32 batches in, per-group probabilities out.

    Attributes:
        card: the model card (schema, preprocessing, backbone, precision, rules, ...).
        schema: ``card.schema``; output dict keys are ``schema.names`` in order.
        preprocessing: ``card.preprocessing``: how to turn an RGB image into one row.
        placement: where it really runs (runtime, device), as a type to test.
        providers: what really runs it, best first, in the runtime's words, for people: ONNX
            Runtime provider names (``["CUDAExecutionProvider", "CPUExecutionProvider"]``) or
            ``["torch:cuda:0"]``.
        rules: ``card.rules``: class rules embedded in the model, or ``None``.
        temperatures: ``{group: T}`` the outputs are calibrated with (the card's, unless opened
            with ``calibrated=False``; empty: raw probabilities).
    """

    card: ModelCard
    schema: Schema
    preprocessing: Preprocessing
    placement: Placement
    providers: list[str]
    rules: Any
    temperatures: dict[str, float]

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, 3, H, W]`` float32 -> ``{group: [B, n_group] float32}``."""
        ...


def parse_device(device: str) -> tuple[str, int]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``"auto"`` -> ``("auto", 0)``: the one device syntax.

    Raises:
        AttrtagError: not one of auto, cpu, cuda[:N], tensorrt[:N].
    """
    base, _, index = str(device).partition(":")
    indexed = base in ("cuda", "tensorrt")
    if base not in DEVICES or (index and not (indexed and index.isdigit())):
        # A value with blanks is quoted, so that they show (and the name is still spelled as a flag).
        given = f"`device={device}`" if str(device).strip() and not any(c.isspace() for c in str(device)) \
            else f"`device` {str(device)!r}"
        raise AttrtagError(f"{given}: not a device (use auto, cpu, cuda, cuda:N, tensorrt or tensorrt:N)")
    return base, int(index or 0)


def check_batch(batch: Any, preprocessing: Preprocessing) -> np.ndarray:
    """The batch as a C-contiguous float32 ``[B, 3, H, W]`` array, or an error saying what is wrong.

    Args:
        batch: the array passed to a predictor.
        preprocessing: gives the expected ``(H, W)``.

    Returns:
        ``batch`` itself when it already fits, else a float32 copy.

    Raises:
        AttrtagError: not an array, wrong rank, channels or size.
    """
    if not isinstance(batch, np.ndarray):
        raise AttrtagError(f"expected a numpy array [B, 3, H, W], got {type(batch).__name__}")
    h, w = preprocessing.input_size
    if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, h, w):
        raise AttrtagError(
            f"expected a batch of shape [B, 3, {h}, {w}] (the model's preprocessing), got {list(batch.shape)}; "
            "build rows with the predictor's .preprocessing"
        )
    if not np.issubdtype(batch.dtype, np.floating):
        raise AttrtagError(f"expected float32 input (normalised by .preprocessing), got dtype {batch.dtype}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def empty_output(schema: Schema) -> dict[str, np.ndarray]:
    """The output of a predictor for a batch of 0 images."""
    return {g.name: np.zeros((0, len(g)), np.float32) for g in schema}
