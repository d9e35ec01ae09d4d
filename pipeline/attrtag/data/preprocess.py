"""Deterministic evaluation preprocessing: an image file or PIL image -> the model's input row.

Used by evaluation, tagging (both backends), int8 calibration and the benchmarks: the one place
that decodes and resizes an image for a model. Torch-free on purpose (PIL + numpy), so the ONNX
tagging path produces exactly the tensors the model was evaluated on without importing torch.

The facts (input size, mean, std, interpolation, ``crop_pct``, ``crop_mode``) are timm's data
config (``timm.data.resolve_data_config``, read in :mod:`attrtag.model`) and travel with
checkpoints and ONNX files in the model card. ``crop_mode`` has timm's meaning:

* ``center``: scale the shorter side to ``size / crop_pct`` and cut the centre ``size``
  (aspect ratio kept, borders lost);
* ``squash``: scale each side to ``size / crop_pct`` (aspect ratio not kept), cut the centre;
  with ``crop_pct = 1`` nothing is lost;
* ``border``: scale the longer side to ``size / crop_pct``, pad with the mean colour to a square,
  cut the centre; with ``crop_pct = 1`` nothing is lost and nothing is distorted.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any, Mapping

import numpy as np
from PIL import Image

from ..errors import CheckpointError
from .images import DEFAULT_MAX_PIXELS, PathArg, load_rgb

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
CROP_MODES = ("center", "squash", "border")

#: How much larger than the resize target a JPEG is decoded (see :meth:`Preprocessing.decode_size`).
#: 1.0, the smallest DCT scale that covers the target: on 600 labelled photos of 12 MP each
#: group's top-1 agreed with full decoding on 99.67-100% of them and no accuracy moved by more
#: than 0.17 points; 2.0 (the next scale up for 12 MP) agreed on 99.83-100% for a third more
#: decode time (``scripts/check_reduced_decode.py``, figures in ``scripts/README.md``).
DECODE_HEADROOM = 1.0

# attrtag before 0.2 called it resize_mode: "center_crop" is timm's "center", and its "squash"
# resized straight to the input size, which is timm's "squash" with crop_pct = 1.
_LEGACY_RESIZE_MODES = {"center_crop": "center", "squash": "squash"}


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input tensor at evaluation time (see the module docstring)."""

    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise CheckpointError(
                f"interpolation '{self.interpolation}' is not one of {sorted(INTERPOLATIONS)}"
            )
        if self.crop_mode not in CROP_MODES:
            raise CheckpointError(f"crop_mode '{self.crop_mode}' is not one of {list(CROP_MODES)}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise CheckpointError(f"input_size must be (height, width), got {self.input_size}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise CheckpointError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    @classmethod
    def from_data_config(
        cls,
        config: Mapping[str, Any],
        *,
        image_size: int | None = None,
        crop_mode: str | None = None,
    ) -> "Preprocessing":
        """From a timm data config (``timm.data.resolve_data_config``), with user overrides.

        Args:
            config: ``{"input_size": (3, H, W), "mean", "std", "interpolation", "crop_pct", "crop_mode"}``.
            image_size: square input size that replaces the config's.
            crop_mode: replaces the config's ``crop_mode``.

        Returns:
            The preprocessing.
        """
        size = (image_size, image_size) if image_size else tuple(config["input_size"][1:])
        return cls(
            input_size=(int(size[0]), int(size[1])),
            mean=tuple(float(m) for m in config["mean"]),  # type: ignore[arg-type]
            std=tuple(float(s) for s in config["std"]),  # type: ignore[arg-type]
            interpolation=str(config.get("interpolation") or "bicubic"),
            crop_pct=float(config.get("crop_pct") or 1.0),
            crop_mode=str(crop_mode or config.get("crop_mode") or "center"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (lists, not tuples) for checkpoints and ONNX metadata."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "preprocessing") -> "Preprocessing":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the key.

        Also reads the ``resize_mode`` key of models written before ``crop_mode`` existed.
        """
        d = dict(d)
        if "resize_mode" in d and "crop_mode" not in d:
            old = str(d.pop("resize_mode"))
            if old not in _LEGACY_RESIZE_MODES:
                raise CheckpointError(f"{source}: resize_mode '{old}' is not one of {list(_LEGACY_RESIZE_MODES)}")
            d["crop_mode"] = _LEGACY_RESIZE_MODES[old]
            if old == "squash":
                d["crop_pct"] = 1.0  # the old squash ignored crop_pct
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
                crop_mode=str(d.get("crop_mode", "center")),
            )
        except KeyError as err:
            raise CheckpointError(f"{source}: missing preprocessing key {err}") from None

    # -- the transform --------------------------------------------------------------------------
    def resize(self, img: Image.Image) -> Image.Image:
        """Geometric part only: the RGB image at exactly ``input_size`` (uint8 stays uint8).

        Mirrors ``timm.data.transforms_imagenet_eval`` step for step (torchvision's ``Resize``
        size rounding, timm's ``ResizeKeepRatio``, ``CenterCrop``/``CenterCropOrPad`` offsets),
        so a model sees the pixels timm would give it; ``tests/data/test_preprocess.py`` checks.
        """
        h, w = self.input_size
        iw, ih = img.size
        sh, sw = math.floor(h / self.crop_pct), math.floor(w / self.crop_pct)  # timm's scale_size
        if self.crop_mode == "squash":
            nh, nw = sh, sw
        elif self.crop_mode == "center" and sh == sw:
            # torchvision Resize(int): the shorter side to sh, the longer one truncated, not rounded.
            nh, nw = (int(sh * ih / iw), sh) if iw <= ih else (sh, int(sh * iw / ih))
        else:  # timm ResizeKeepRatio: the shorter side to fit ("center"), or the longer ("border")
            ratio = (max if self.crop_mode == "border" else min)(ih / sh, iw / sw)
            nh, nw = round(ih / ratio), round(iw / ratio)
        if (nw, nh) != (iw, ih):
            img = img.resize((nw, nh), INTERPOLATIONS[self.interpolation])
        if nw < w or nh < h:
            # CenterCrop pads with black, timm's CenterCropOrPad ("border") with the mean colour.
            fill = tuple(round(255 * m) for m in self.mean) if self.crop_mode == "border" else (0, 0, 0)
            canvas = Image.new("RGB", (max(w, nw), max(h, nh)), fill)  # type: ignore[arg-type]
            canvas.paste(img, ((w - nw) // 2 if w > nw else 0, (h - nh) // 2 if h > nh else 0))
            img, nw, nh = canvas, canvas.width, canvas.height
        top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
        return img.crop((left, top, left + w, top + h))

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` scaled to [0, 1] and standardised.

        torchvision's ``ToTensor`` + ``Normalize`` in float32, bit for bit. For uint8 input the
        256 possible results per channel are computed once and looked up: a 224 px thumbnail's
        decode, resize and normalisation went from 2.7 to 2.0 ms (the arithmetic took 1.2 ms).
        """
        if rgb.dtype != np.uint8:
            return self._standardize(rgb).transpose(2, 0, 1).copy()
        table = self._lookup_table
        out = np.empty((3, *rgb.shape[:2]), np.float32)
        for c in range(3):
            np.take(table[c], rgb[..., c], out=out[c])
        return out

    def _standardize(self, values: np.ndarray) -> np.ndarray:
        x = values.astype(np.float32) / 255.0
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    @cached_property
    def _lookup_table(self) -> np.ndarray:
        """float32 ``[3, 256]``: :meth:`normalize` of every uint8 value, per channel."""
        return np.ascontiguousarray(self._standardize(np.arange(256)[:, None]).T)

    def __call__(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image -> float32 ``[3, H, W]`` model input."""
        return self.normalize(self.pixels(img))

    def pixels(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image -> uint8 ``[H, W, 3]`` at the input size (before normalisation)."""
        return np.asarray(self.resize(img.convert("RGB")), dtype=np.uint8)

    def decode_size(self, headroom: float = DECODE_HEADROOM) -> tuple[int, int]:
        """``(width, height)`` a decoded image must cover for :meth:`resize` to lose nothing.

        :meth:`resize` first scales the image so that it covers timm's ``scale_size``
        (``input_size / crop_pct``) in both dimensions ("center", "squash"), or fits it
        ("border", where this is an upper bound), so any decode at least that large, times
        ``headroom``, gives the resize the pixels it needs.
        """
        h, w = self.input_size
        return (math.ceil(math.floor(w / self.crop_pct) * headroom), math.ceil(math.floor(h / self.crop_pct) * headroom))

    def load(self, path: PathArg, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Decode an image file and resize it: uint8 ``[H, W, 3]`` at the input size.

        The one decode + resize of the project (tagging, evaluation, int8 calibration). JPEGs
        are decoded at the smallest DCT scale that covers :meth:`decode_size` (a 12-megapixel
        photo for a 224 px model: 1/8 scale, about a tenth of the full decode's CPU time).

        Raises:
            ImageDecodeError: the file cannot be decoded; ``reason`` says why.
        """
        return self.pixels(load_rgb(path, max_pixels=max_pixels, min_size=self.decode_size()))
