"""Deterministic evaluation preprocessing, shared by evaluation, PyTorch tagging and ONNX tagging.

Torch-free on purpose (PIL + numpy): the ONNX tagging path must produce exactly the tensors the
model was evaluated on without importing torch. The facts (size, mean, std, interpolation,
crop_pct) come from the backbone's timm pretrained config (see ``attrtag.model.resolve_preprocessing``)
and travel with checkpoints and ONNX files.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np
from PIL import Image

from .errors import CheckpointError

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
RESIZE_MODES = ("center_crop", "squash")


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input tensor at evaluation time.

    ``center_crop`` (timm's eval transform): scale the shorter side to ``size / crop_pct`` and
    cut the centre ``size``. ``squash``: resize straight to ``size``, ignoring aspect ratio and
    ``crop_pct`` (keeps objects near the border).
    """

    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    resize_mode: str = "center_crop"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise CheckpointError(
                f"interpolation '{self.interpolation}' is not one of {sorted(INTERPOLATIONS)}"
            )
        if self.resize_mode not in RESIZE_MODES:
            raise CheckpointError(f"resize_mode '{self.resize_mode}' is not one of {list(RESIZE_MODES)}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise CheckpointError(f"input_size must be (height, width), got {self.input_size}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise CheckpointError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (lists, not tuples) for checkpoints and ONNX metadata."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "preprocessing") -> "Preprocessing":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the key."""
        known = {f.name for f in fields(cls)}
        for k in d:
            if k not in known:
                raise CheckpointError(f"{source}: unknown preprocessing key '{k}' (known: {sorted(known)})")
        try:
            return cls(
                input_size=tuple(int(x) for x in d["input_size"]),  # type: ignore[arg-type]
                mean=tuple(float(x) for x in d["mean"]),  # type: ignore[arg-type]
                std=tuple(float(x) for x in d["std"]),  # type: ignore[arg-type]
                interpolation=str(d.get("interpolation", "bicubic")),
                crop_pct=float(d.get("crop_pct", 1.0)),
                resize_mode=str(d.get("resize_mode", "center_crop")),
            )
        except KeyError as err:
            raise CheckpointError(f"{source}: missing preprocessing key {err}") from None

    def resize(self, img: Image.Image) -> Image.Image:
        """Geometric part only: the RGB image at exactly ``input_size`` (uint8 stays uint8)."""
        h, w = self.input_size
        resample = INTERPOLATIONS[self.interpolation]
        if self.resize_mode == "squash":
            return img.resize((w, h), resample)
        # timm: scale_size = floor(size / crop_pct), shorter side to scale_size, centre crop.
        scale_h, scale_w = math.floor(h / self.crop_pct), math.floor(w / self.crop_pct)
        iw, ih = img.size
        if scale_h == scale_w:
            s = scale_h / min(iw, ih)
            nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
        else:
            nw, nh = scale_w, scale_h
        img = img.resize((nw, nh), resample)
        left, top = (nw - w) // 2, (nh - h) // 2
        return img.crop((left, top, left + w, top + h))

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` scaled to [0, 1] and standardised."""
        x = rgb.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image -> float32 ``[3, H, W]`` model input."""
        return self.normalize(np.asarray(self.resize(img.convert("RGB")), dtype=np.uint8))
