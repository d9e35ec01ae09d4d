"""Typed training configuration, from CLI flags or a YAML file (unknown keys are errors)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .._yaml import load_yaml
from ..errors import AttrtagError
from ..card import DEFAULT_BACKBONE

LOSSES = ("grouped_softmax", "sigmoid_bce")
COMPLETIONS = ("none", "hard", "soft")
GROUP_BALANCES = ("none", "log")


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
    loss: str = "grouped_softmax"  # or "sigmoid_bce": the independent-sigmoid baseline recipe
    label_smoothing: float = 0.0
    class_weights: bool = False  # sqrt-inverse-frequency, from the labelled training images only
    group_weights: Mapping[str, float] = field(default_factory=dict)
    drop_rate: float = 0.0
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    amp: bool = True  # CUDA only: float16 autocast + GradScaler
    channels_last: bool = True  # CUDA only
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
        choices = {"loss": LOSSES, "complete": COMPLETIONS, "group_balance": GROUP_BALANCES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise AttrtagError(f"{name} '{getattr(self, name)}' is not one of {', '.join(allowed)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise AttrtagError(f"ema_decay {self.ema_decay} must be in [0, 1) (e.g. 0.999)")
        if self.logit_adjust < 0:
            raise AttrtagError(f"logit_adjust {self.logit_adjust} must be >= 0 (0 = off, 1 = balanced softmax)")
        if not 0.0 < self.complete_threshold <= 1.0 or self.complete_weight < 0 or self.complete_start < 0:
            raise AttrtagError(
                f"complete_threshold {self.complete_threshold} must be in (0, 1], complete_weight "
                f"{self.complete_weight} and complete_start {self.complete_start} >= 0"
            )
        if self.complete != "none" and not self.ema:
            raise AttrtagError(f"complete '{self.complete}' needs ema: the EMA of the weights is the teacher "
                               "that fills missing labels (add `ema=True`)")

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
            raise AttrtagError(f"{source}: {err}") from None

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
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(f"'{value}' is not a boolean")
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if t.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{value} is not an integer")
            return int(value)
        if t.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as err:
        raise AttrtagError(f"{where}: bad value {value!r} ({err})") from None
