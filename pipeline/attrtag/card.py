"""The model card: one object that describes a model, wherever its weights travel.

Like torchvision's ``Weights.meta`` and timm's ``pretrained_cfg``, the card says what a model
predicts and how to feed it, so that nothing is typed in by hand at inference time:

* ``schema``: groups and values, in the model's output order;
* ``preprocessing``: input size, mean, std, interpolation, crop (timm's data config);
* ``backbone``: the timm model name;
* ``precision``: what the weights compute in (``fp32``, ``fp16``, ``int8``);
* ``rules``: zero-shot class rules embedded at export time (optional);
* ``label_counts``: training label counts per group and value (optional; zero-shot priors); for
  a multi-label group, the images each value is present in, and ``label_totals`` the images
  it is known in (present or absent);
* ``value_thresholds``: each multi-label value's decision threshold, chosen on the val split
  (:mod:`attrtag.evaluation.thresholds`);
* ``temperatures``: each group's temperature, fitted on the val split (optional;
  :mod:`attrtag.runtime.temperature`): every predictor applies them, so probabilities are calibrated;
* ``calibration``: a zero-shot calibration chosen on labelled data (optional);
* ``training``: the options the weights were learnt with (optional; ``TrainConfig.learning_options``:
  loss, EMA, logit adjustment, label completion, group balance), so an exported file says too.

The same two functions serialise it for every container: :meth:`ModelCard.to_dict` /
:meth:`ModelCard.from_dict`. A checkpoint stores that dict under ``"card"``; an ONNX file
stores each entry as JSON text under an ``attrtag.<key>`` metadata property
(:meth:`to_metadata` / :meth:`from_metadata`), so any ONNX tool can show it. Files written
before the card existed (top-level checkpoint keys, format version 1) still load.

Torch-free: the ONNX tagging path reads cards without torch.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .data.preprocess import Preprocessing
from .errors import CheckpointError
from .schema import Schema

#: 2: ``crop_mode`` replaced ``resize_mode``; optional ``label_counts``, ``calibration``, ``training``.
#: 3: multi-label groups (written only by models that have one: attrtag versions before them
#: refuse such a model with "upgrade attrtag" instead of misreading its schema).
#: 4: per-group ``temperatures`` (written only by models that have them: attrtag versions before
#: them would ignore the entry and give raw probabilities, against multi-label thresholds chosen
#: on calibrated ones; they refuse with "upgrade attrtag" instead).
FORMAT_VERSION = 4
PRECISIONS = ("fp32", "fp16", "int8")
#: The backbone a new model gets unless told otherwise (timm name).
DEFAULT_BACKBONE = "resnetv2_50"
#: A multi-label value is present when its probability reaches this, unless the card says otherwise.
DEFAULT_THRESHOLD = 0.5
#: Prefix of the card's entries in ONNX ``metadata_props``.
METADATA_PREFIX = "attrtag."
_REQUIRED = ("schema", "preprocessing", "backbone")
_OPTIONAL = ("precision", "rules", "label_counts", "label_totals", "value_thresholds", "temperatures", "calibration",
             "training")


@dataclass(frozen=True)
class ModelCard:
    """What a model predicts, how to feed it, and what travels with it (see the module docstring).

    Attributes:
        schema: groups and values; logits and ONNX outputs follow this order.
        preprocessing: how an RGB image becomes one input row.
        backbone: timm model name.
        precision: ``fp32``, ``fp16`` or ``int8``.
        rules: class rules in their dict form (``{"classes": {...}}``), or None.
        label_counts: ``{group: [count per value]}`` of the training labels, or None.
        calibration: ``{"gamma": float, ...}`` for zero-shot scoring, or None.
        training: ``{option: value}`` the weights were learnt with (``ema_decay`` present: they
            are the exponential moving average), or None.
        label_totals: ``{multi-label group: [images each value is known in]}``, or None.
        value_thresholds: ``{"groups": {group: {value: threshold}}, ...}`` of the multi-label
            groups (and how they were chosen), or None (every value decided at 0.5).
        temperatures: ``{"groups": {group: T}, "fitted_on": ...}``: each group's temperature
            (T > 0), or None (every group at T = 1: raw probabilities). Thresholds of a
            multi-label group apply to its probabilities at this temperature.
    """

    schema: Schema
    preprocessing: Preprocessing
    backbone: str
    precision: str = "fp32"
    rules: Mapping[str, Any] | None = None
    label_counts: Mapping[str, tuple[int, ...]] | None = None
    calibration: Mapping[str, Any] | None = field(default=None)
    training: Mapping[str, Any] | None = None
    label_totals: Mapping[str, tuple[int, ...]] | None = None
    value_thresholds: Mapping[str, Any] | None = None
    temperatures: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise CheckpointError(f"precision '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.label_counts is not None:
            for g in self.schema:
                counts = self.label_counts.get(g.name)
                if counts is None or len(counts) != len(g) or any(int(c) < 0 for c in counts):
                    raise CheckpointError(
                        f"label_counts of group '{g.name}' must list {len(g)} counts >= 0, got {counts!r}"
                    )
        if self.value_thresholds is not None:
            self._check_value_thresholds()
        if self.temperatures is not None:
            self._check_temperatures()

    @property
    def decision_thresholds(self) -> dict[str, tuple[float, ...]]:
        """Each multi-label group's per-value thresholds, in value order (:data:`DEFAULT_THRESHOLD`
        where the card has none)."""
        chosen = (self.value_thresholds or {}).get("groups", {})
        return {g.name: tuple(float(chosen.get(g.name, {}).get(v, DEFAULT_THRESHOLD)) for v in g.values)
                for g in self.schema.multi}

    @property
    def group_temperatures(self) -> dict[str, float]:
        """``{group: T}`` of the groups the card has a temperature for (the others are at T = 1)."""
        return {str(g): float(t) for g, t in (self.temperatures or {}).get("groups", {}).items()}

    def _check_temperatures(self) -> None:
        chosen = (self.temperatures or {}).get("groups")
        if not isinstance(chosen, Mapping):
            raise CheckpointError("temperatures: 'groups' must map each group to its temperature T > 0")
        for group, t in chosen.items():
            if group not in self.schema:
                raise CheckpointError(f"temperatures: '{group}' is not a group of the schema "
                                      f"({', '.join(self.schema.names)})")
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
                raise CheckpointError(f"temperatures of '{group}': {t!r} is not a temperature (a finite number > 0)")

    def _check_value_thresholds(self) -> None:
        chosen = (self.value_thresholds or {}).get("groups", {})
        if not isinstance(chosen, Mapping):
            raise CheckpointError("value_thresholds: 'groups' must map each multi-label group to {value: threshold}")
        for group, per_value in chosen.items():
            if group not in self.schema or not self.schema[group].multi or not isinstance(per_value, Mapping):
                raise CheckpointError(f"value_thresholds: '{group}' is not a multi-label group of the schema")
            for value, t in per_value.items():
                if value not in self.schema[group].values or not isinstance(t, (int, float)) or not 0 <= t <= 1:
                    raise CheckpointError(f"value_thresholds of '{group}': {value!r}: {t!r} is not a value's "
                                          "threshold between 0 and 1")

    def replace(self, **changes: Any) -> "ModelCard":
        """A copy with ``changes`` applied (the card is immutable)."""
        return replace(self, **changes)

    # -- one serialisation for every container -----------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form; optional entries only when set."""
        d: dict[str, Any] = {
            # The oldest format that holds everything set: older attrtag versions still read the rest.
            "format_version": 4 if self.temperatures else 3 if self.schema.multi else 2,
            "schema": self.schema.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "backbone": self.backbone,
            "precision": self.precision,
        }
        if self.rules is not None:
            d["rules"] = _plain(self.rules)
        if self.label_counts is not None:
            d["label_counts"] = {g: [int(c) for c in v] for g, v in self.label_counts.items()}
        if self.label_totals is not None:
            d["label_totals"] = {g: [int(c) for c in v] for g, v in self.label_totals.items()}
        if self.value_thresholds is not None:
            d["value_thresholds"] = _plain(self.value_thresholds)
        if self.temperatures is not None:
            d["temperatures"] = _plain(self.temperatures)
        if self.calibration is not None:
            d["calibration"] = _plain(self.calibration)
        if self.training is not None:
            d["training"] = _plain(self.training)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "model") -> "ModelCard":
        """Inverse of :meth:`to_dict`; also reads version-1 dicts (no ``format_version``).

        Raises:
            CheckpointError: a missing entry, a newer format, or an entry of the wrong type;
                the message names ``source`` and the entry.
        """
        version = d.get("format_version", 1)
        if not isinstance(version, int) or version < 1:
            raise CheckpointError(f"{source}: format_version must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: attrtag model format version {version} is newer than this attrtag understands "
                f"({FORMAT_VERSION}); upgrade attrtag"
            )
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise CheckpointError(f"{source}: not an attrtag model: missing {', '.join(missing)}")
        prep, backbone = d["preprocessing"], d["backbone"]
        if not isinstance(prep, Mapping):
            raise CheckpointError(f"{source}: 'preprocessing' must be a mapping, got {type(prep).__name__}")
        if not isinstance(backbone, str):
            raise CheckpointError(f"{source}: 'backbone' must be a string, got {backbone!r}")
        for key in ("rules", "label_counts", "label_totals", "value_thresholds", "temperatures", "calibration",
                    "training"):
            if d.get(key) is not None and not isinstance(d[key], Mapping):
                raise CheckpointError(f"{source}: '{key}' must be a mapping, got {type(d[key]).__name__}")
        counts, totals = d.get("label_counts"), d.get("label_totals")
        return cls(
            schema=Schema.from_dict(d["schema"], source=f"{source} schema"),
            preprocessing=Preprocessing.from_dict(prep, source=f"{source} preprocessing"),
            backbone=backbone,
            precision=str(d.get("precision") or "fp32"),
            rules=d.get("rules"),
            label_counts=None if counts is None else {str(g): tuple(int(c) for c in v) for g, v in counts.items()},
            calibration=d.get("calibration"),
            training=d.get("training"),
            label_totals=None if totals is None else {str(g): tuple(int(c) for c in v) for g, v in totals.items()},
            value_thresholds=d.get("value_thresholds"),
            temperatures=d.get("temperatures"),
        )

    def to_metadata(self) -> dict[str, str]:
        """``{"attrtag.<key>": JSON text}`` for ONNX ``metadata_props``."""
        return {METADATA_PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], *, source: str = "model") -> "ModelCard":
        """Read the ``attrtag.*`` entries of ONNX metadata (other keys are ignored).

        Raises:
            CheckpointError: "not an attrtag model: missing metadata 'attrtag.schema'", or an
                entry that is not valid JSON.
        """
        for key in _REQUIRED:
            if METADATA_PREFIX + key not in props:
                raise CheckpointError(
                    f"{source}: not an attrtag model: missing metadata '{METADATA_PREFIX}{key}' "
                    "(export it with 'attrtag export --checkpoint ... --out model.onnx')"
                )
        d: dict[str, Any] = {}
        for key, text in props.items():
            if not key.startswith(METADATA_PREFIX):
                continue
            try:
                d[key[len(METADATA_PREFIX):]] = json.loads(text)
            except json.JSONDecodeError as err:
                raise CheckpointError(f"{source}: metadata '{key}' is not valid JSON ({err.msg})") from None
        known = {"format_version", *_REQUIRED, *_OPTIONAL}
        return cls.from_dict({k: v for k, v in d.items() if k in known}, source=source)


def _plain(value: Any) -> Any:
    """A JSON round trip: plain dicts/lists, and a clear error for anything JSON cannot hold."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"model card entry cannot be stored as JSON ({err})") from None
