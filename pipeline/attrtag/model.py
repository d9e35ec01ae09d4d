"""The grouped attribute model: a timm backbone feeding one linear layer split into groups.

Wiring follows timm: ``forward_features`` -> ``forward_head`` -> ``forward``. The head is its own
module and returns ``{group: logits [B, n_group]}``; it knows nothing of losses, thresholds or
label names beyond the group sizes. The loss lives in :mod:`attrtag.loss`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import timm
import torch
from torch import nn

from .errors import AttrtagError, CheckpointError
from .preprocess import Preprocessing
from .schema import Schema

_logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "resnetv2_50"


class GroupedHead(nn.Module):
    """One ``Linear(in_features, sum(sizes))`` whose outputs are split into named groups.

    A single matmul instead of one layer per group: the cost of G heads is that of one.
    """

    def __init__(self, in_features: int, groups: Mapping[str, int], *, drop_rate: float = 0.0) -> None:
        super().__init__()
        if not groups:
            raise ValueError("GroupedHead needs at least one group")
        self.names = tuple(groups)
        self.sizes = tuple(int(n) for n in groups.values())
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, sum(self.sizes))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.fc(self.drop(features))  # (B, sum(sizes))
        return dict(zip(self.names, torch.split(logits, self.sizes, dim=1)))


class AttributeModel(nn.Module):
    """timm backbone (``num_classes=0``: pooled features) + :class:`GroupedHead`."""

    def __init__(self, backbone: nn.Module, schema: Schema, *, backbone_name: str, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone_name = backbone_name
        self.schema = schema
        self.head = GroupedHead(backbone.num_features, dict(zip(schema.names, schema.sizes)), drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)  # (B, F): pooled, since the backbone has num_classes=0

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(x))


class ProbabilityModel(nn.Module):
    """Wraps :class:`AttributeModel` to return each group's softmax as a tuple in schema order.

    This is the form that is exported to ONNX (one named output per group) and used for tagging.
    """

    def __init__(self, model: AttributeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(x)
        return tuple(torch.softmax(logits[name].float(), dim=1) for name in self.model.schema.names)


def create_backbone(name: str, *, pretrained: bool | str | Path = False, drop_rate: float = 0.0) -> nn.Module:
    """``timm.create_model(name, num_classes=0)`` with the three ways of getting weights.

    Args:
        name: any timm model name (``timm.list_models()``).
        pretrained: ``False`` for random initialisation; ``True`` for timm's own weights (the
            hub; needs network access or a populated cache); a path for a local weights file
            (``.safetensors``/``.pth``, timm's ``pretrained_cfg_overlay(file=...)`` mechanism).
        drop_rate: classifier dropout passed to timm (unused with num_classes=0 by most models).

    Returns:
        The backbone, returning pooled features of size ``model.num_features``.
    """
    if name not in timm.list_models(name):
        hint = ", ".join(timm.list_models(f"*{name}*")[:5]) or "see timm.list_models()"
        raise AttrtagError(f"unknown timm backbone '{name}' (similar: {hint})")
    kwargs: dict[str, Any] = {"num_classes": 0}
    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        path = Path(pretrained)
        if not path.is_file():
            raise AttrtagError(f"--pretrained {path}: weights file not found")
        # timm loads a local file through the pretrained_cfg overlay, and still adapts the
        # classifier/first conv exactly as for hub weights.
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        pretrained = True
    try:
        return timm.create_model(name, pretrained=bool(pretrained), **kwargs)
    except (OSError, RuntimeError) as err:
        if pretrained:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise AttrtagError(
                f"could not load pretrained weights for '{name}' ({first}); without network access pass a "
                "local weights file with --pretrained PATH, or train from scratch without --pretrained"
            ) from None
        raise


def resolve_preprocessing(
    backbone: nn.Module,
    *,
    image_size: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    interpolation: str | None = None,
    crop_pct: float | None = None,
    resize_mode: str = "center_crop",
) -> Preprocessing:
    """Preprocessing from the backbone's timm pretrained config, with user overrides.

    Reads ``timm.data.resolve_data_config`` so mean/std/interpolation/crop are never typed in
    by hand; an explicit argument wins over the config.
    """
    cfg = timm.data.resolve_data_config({}, model=backbone)
    size = (image_size, image_size) if image_size else tuple(cfg["input_size"][1:])
    return Preprocessing(
        input_size=(int(size[0]), int(size[1])),
        mean=tuple(float(m) for m in (mean or cfg["mean"])),  # type: ignore[arg-type]
        std=tuple(float(s) for s in (std or cfg["std"])),  # type: ignore[arg-type]
        interpolation=interpolation or cfg.get("interpolation", "bicubic"),
        crop_pct=float(crop_pct if crop_pct is not None else cfg.get("crop_pct", 1.0)),
        resize_mode=resize_mode,
    )


def check_input_size(model: nn.Module, preprocessing: Preprocessing) -> None:
    """Run one dummy batch so an ``--image-size`` the backbone cannot take fails up front.

    Raises:
        AttrtagError: naming the size and the backbone, with the error's first line.
    """
    h, w = preprocessing.input_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, h, w))
    except (RuntimeError, ValueError, AssertionError) as err:
        name = getattr(model, "backbone_name", type(model).__name__)
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise AttrtagError(f"--image-size {h}x{w} does not work with backbone '{name}': {first}") from None
    finally:
        model.train(was_training)


def build_model(
    schema: Schema,
    backbone: str = DEFAULT_BACKBONE,
    *,
    pretrained: bool | str | Path = False,
    drop_rate: float = 0.0,
) -> AttributeModel:
    """Backbone + grouped head for ``schema``."""
    return AttributeModel(create_backbone(backbone, pretrained=pretrained), schema, backbone_name=backbone, drop_rate=drop_rate)


def model_from_checkpoint(ckpt: Mapping[str, Any], *, source: str = "checkpoint") -> tuple[AttributeModel, Preprocessing]:
    """Rebuild the model described by a checkpoint dict and load its weights (strict)."""
    try:
        schema = Schema.from_dict(ckpt["schema"], source=source)
        prep = Preprocessing.from_dict(ckpt["preprocessing"], source=source)
        name = ckpt["backbone"]
        state = ckpt["model"]
    except KeyError as err:
        raise CheckpointError(f"{source}: not an attrtag checkpoint (missing {err})") from None
    model = build_model(schema, name, drop_rate=float(ckpt.get("config", {}).get("drop_rate", 0.0)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit backbone '{name}' with this schema "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    return model, prep
