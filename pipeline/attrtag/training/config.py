"""Typed training configuration, from CLI flags or a YAML file (unknown keys are errors)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from .._yaml import load_yaml
from ..card import DEFAULT_BACKBONE
from ..data.preprocess import CROP_MODES
from ..errors import AttrtagError

LOSSES = ("grouped_softmax", "sigmoid_bce")
COMPLETIONS = ("none", "hard", "soft")
GROUP_BALANCES = ("none", "log")
#: The range of every number a run takes, and how a user reads it; ``None`` (image_size, crop) is
#: always allowed. One table, so a flag, a YAML key and a Python option are judged alike.
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1 (images per optimizer step)"),
    # 4096: beyond it one dummy batch alone takes gigabytes (the input check runs one).
    "image_size": (lambda v: 1 <= v <= 4096, "between 1 and 4096 pixels (leave it out for the backbone's size)"),
    "lr": (lambda v: v > 0, "greater than 0 (e.g. 0.001)"),
    "weight_decay": (lambda v: v >= 0, "at least 0 (0 = none)"),
    "warmup_epochs": (lambda v: v >= 0, "at least 0 (0 = no warm-up)"),
    "min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "layer_decay": (lambda v: 0 < v <= 1, "in (0, 1] (1 = one learning rate for every layer; 0.75 is usual)"),
    "head_epochs": (lambda v: v >= 0, "at least 0 (0 = the backbone learns from the first step)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1) (0 = none, 0.1 is usual)"),
    "drop_rate": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "seed": (lambda v: 0 <= v < 2**32, "between 0 and 4294967295"),
    "workers": (lambda v: v >= 0, "at least 0 (0 = decode in the main process)"),
    "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1): the share held out when the manifest has no split column"),
    "max_steps_per_epoch": (lambda v: v >= 0, "at least 0 (0 = the whole epoch)"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1) (e.g. 0.999)"),
    "logit_adjust": (lambda v: v >= 0, "at least 0 (0 = off, 1 = balanced softmax)"),
    "complete_threshold": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "complete_start": (lambda v: v >= 0, "at least 0 (epochs before the first filled label)"),
    "complete_weight": (lambda v: v >= 0, "at least 0"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's result (plus a few that do not: workers, device)."""

    backbone: str = DEFAULT_BACKBONE
    pretrained: str = ""  # "" = random init, "timm" = timm's hub weights, else a local weights file
    image_size: int | None = None  # None = the backbone's pretrained config
    crop_mode: str | None = None  # None = the backbone's (timm: center, squash or border)
    epochs: int = 10
    batch_size: int = 32  # the global batch: images per optimizer step, over all torchrun processes
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    # Fine-tuning options (issue 20), off by default for pretrained runs too: fine-tuning
    # efficientnet_lite0 from ImageNet (93 steps, 3 seeds; scripts/README.md "Fine-tuning from
    # ImageNet weights"), layer decay 0.75 lost 0.6-6.9 points per group and one head-only epoch
    # 0.0-3.8 against one learning rate for every layer after the warm-up.
    layer_decay: float = 1.0  # timm's layer-wise lr decay: a layer's lr is lr * decay**(depth from the top)
    head_epochs: float = 0.0  # epochs at the start in which only the head learns (the backbone's lr is 0)
    loss: str = "grouped_softmax"  # or "sigmoid_bce": the independent-sigmoid baseline recipe
    label_smoothing: float = 0.0
    class_weights: bool = False  # sqrt-inverse-frequency, from the labelled training images only
    group_weights: Mapping[str, float] = field(default_factory=dict)
    drop_rate: float = 0.0
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    amp: bool = True  # CUDA only: float16 autocast + GradScaler
    channels_last: bool = True  # NHWC convolutions: faster on CUDA and on the CPU alike
    sync_bn: bool = False  # several CUDA processes: batch norm over the global batch (SyncBatchNorm)
    val_fraction: float = 0.1  # used only when the manifest has no split column
    skip_bad_rows: bool = False
    max_steps_per_epoch: int = 0  # 0 = whole epoch; >0 caps it (quick runs, benchmarks)
    # Learning from partial, unbalanced labels (issue 11; scripts/README.md has the measurements).
    ema: bool = False  # keep an EMA of the weights (timm ModelEmaV3); validated, saved and exported
    ema_decay: float = 0.999  # the EMA's decay, reached after timm's warm-up (short runs average faster)
    logit_adjust: float = 0.0  # tau: logits + tau*log(prior) in the loss (Menon et al. 2021); 1 = balanced softmax
    complete: str = "none"  # fill missing labels from the EMA teacher: none, hard or soft
    complete_threshold: float = 0.8  # teacher confidence a filled label needs at the end of the curriculum
    complete_start: float = 1.0  # epochs before the first filled label (the teacher learns first)
    complete_weight: float = 1.0  # a filled label's weight relative to a given one
    group_balance: str = "none"  # or "log": each group's term divided by log(its number of values)

    def __post_init__(self) -> None:
        choices = {"loss": LOSSES, "complete": COMPLETIONS, "group_balance": GROUP_BALANCES, "crop_mode": CROP_MODES}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise AttrtagError(f"`{name}={value}`: not one of {', '.join(allowed)}")
        _check_numbers(self)
        if self.complete != "none" and not self.ema:
            raise AttrtagError(f"`complete={self.complete}` needs `ema=True`: the EMA of the weights is the teacher "
                               "that fills missing labels")

    def learning_options(self) -> dict[str, Any]:
        """The options that change what the weights learn from partial, unbalanced labels.

        What a model card records as ``training`` and ``attrtag evaluate`` reports; options
        that are off are left out except the loss (an empty dict would hide which one ran).
        """
        out: dict[str, Any] = {"loss": self.loss}
        if self.ema:
            out["ema_decay"] = self.ema_decay
        if self.logit_adjust:
            out["logit_adjust"] = self.logit_adjust
        if self.complete != "none":
            out.update(complete=self.complete, complete_threshold=self.complete_threshold,
                       complete_start=self.complete_start, complete_weight=self.complete_weight)
        if self.group_balance != "none":
            out["group_balance"] = self.group_balance
        if self.class_weights:
            out["class_weights"] = True
        if self.layer_decay != 1.0:
            out["layer_decay"] = self.layer_decay
        if self.head_epochs:
            out["head_epochs"] = self.head_epochs
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["group_weights"] = dict(self.group_weights)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> "TrainConfig":
        """Build from a mapping; an unknown key is an error naming it and the known ones."""
        data = dict(data)
        if "resize_mode" in data:  # checkpoints written before crop_mode (timm's word) existed
            old = data.pop("resize_mode")
            data.setdefault("crop_mode", {"center_crop": "center", "squash": "squash"}.get(str(old), old))
        known = {f.name: f for f in fields(cls)}
        for k in data:
            if k not in known:
                raise AttrtagError(f"{source}: unknown config key '{k}' (known: {', '.join(sorted(known))})")
        values = {k: _coerce(known[k].type, v, f"{source}: {k}") for k, v in data.items()}
        try:
            return replace(cls(), **values)
        except AttrtagError as err:  # a value or a combination __post_init__ refuses
            raise AttrtagError(f"{source}: {err.text}") from None

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML config file (a flat mapping of the fields above)."""
        return cls.from_dict(cls.read(path), source=str(path))

    @classmethod
    def read(cls, path: str | Path) -> dict[str, Any]:
        """A config file's mapping, unknown keys refused with their line; checked as a whole by :meth:`from_dict`.

        Kept apart from :meth:`load` so that command-line flags can complete a file (``--ema``
        with a file that sets ``complete: hard``) before the combination is judged.
        """
        doc = load_yaml(path, raw_scalars=False)
        if doc.data is None:
            return {}
        if not isinstance(doc.data, dict):
            raise AttrtagError(f"{doc.where()}: a config file must be a mapping of option: value")
        for k in doc.data:
            if k not in {f.name for f in fields(cls)}:
                raise AttrtagError(f"{doc.where(k)}: unknown config key '{k}'")
        return dict(doc.data)


def _check_numbers(cfg: TrainConfig) -> None:
    """Every number finite and in its range (:data:`RANGES`), every group weight finite and >= 0."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise AttrtagError(f"`{f.name}={value}`: must be a finite number")
        if f.name in RANGES and value is not None and not RANGES[f.name][0](value):
            raise AttrtagError(f"`{f.name}={value}`: must be {RANGES[f.name][1]}")
    for group, weight in cfg.group_weights.items():
        if not (math.isfinite(weight) and weight >= 0):
            raise AttrtagError(f"`group_weights`: {group}={weight} must be a finite number >= 0 (1 = as the others)")


def _coerce(typ: Any, value: Any, where: str) -> Any:
    t = str(typ)
    try:
        if value is None:
            if "None" in t:
                return None
            raise ValueError("may not be empty")
        if t.startswith("Mapping"):
            if not isinstance(value, Mapping):
                raise ValueError("expected a mapping")
            return {str(k): float(v) for k, v in value.items()}
        if t.startswith("bool"):
            if str(value).lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"'{value}' is not a boolean")
            return str(value).lower() in ("true", "1", "yes")
        if isinstance(value, bool):  # YAML's `true` is no number
            raise ValueError("a boolean is not a number")
        if t.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{value} is not an integer")
            return int(value)
        if t.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise AttrtagError(f"{where}: bad value {value!r} ({err})") from None
