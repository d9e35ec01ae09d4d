"""The model stage: grouped head, timm backbone wiring, checkpoints (imports torch and timm)."""
from .checkpoint import load_checkpoint, load_model, model_from_checkpoint, save_checkpoint
from .head import GroupedHead
from .model import (
    DEFAULT_BACKBONE,
    AttributeModel,
    ProbabilityModel,
    build_model,
    check_input_size,
    create_backbone,
    resolve_preprocessing,
)

__all__ = [
    "DEFAULT_BACKBONE", "AttributeModel", "GroupedHead", "ProbabilityModel", "build_model", "check_input_size",
    "create_backbone", "load_checkpoint", "load_model", "model_from_checkpoint", "resolve_preprocessing",
    "save_checkpoint",
]
