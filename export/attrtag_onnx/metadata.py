"""What an exported attrtag ONNX file says about itself, stored in its ``metadata_props``.

Every value is JSON text under an ``attrtag.`` key, so any ONNX tool can show it and a loader
can check it without torch:

``attrtag.format_version``  ``1`` (an int): bumped when the layout of these keys changes
``attrtag.schema``          ``{group: [values...]}``, group and value order = output layout
``attrtag.preprocessing``   ``{input_size, mean, std, interpolation, crop_pct, resize_mode}``
``attrtag.backbone``        the timm model name (a JSON string)
``attrtag.precision``       ``"fp32"``, ``"fp16"`` or ``"int8"``
``attrtag.rules``           optional class rules (``{"classes": {...}}``), when embedded

Torch-free: the tagging path reads this with ONNX Runtime alone.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from attrtag.errors import CheckpointError
from attrtag.preprocess import Preprocessing
from attrtag.schema import Schema

if TYPE_CHECKING:  # only for annotations: neither is needed to import this module
    import onnx
    import onnxruntime

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: The graph input of every attrtag export: float32 ``[batch, 3, H, W]``.
INPUT_NAME = "image"
PRECISIONS = ("fp32", "fp16", "int8")

KEY_FORMAT = "attrtag.format_version"
KEY_SCHEMA = "attrtag.schema"
KEY_PREPROCESSING = "attrtag.preprocessing"
KEY_BACKBONE = "attrtag.backbone"
KEY_PRECISION = "attrtag.precision"
KEY_RULES = "attrtag.rules"
KEYS = (KEY_FORMAT, KEY_SCHEMA, KEY_PREPROCESSING, KEY_BACKBONE, KEY_PRECISION, KEY_RULES)


@dataclass(frozen=True)
class ModelMetadata:
    """The facts an attrtag ONNX file carries besides its graph.

    Attributes:
        schema: groups and values; the model has one output per group, named after it, in order.
        preprocessing: how an RGB image becomes the ``image`` input.
        backbone: timm model name the weights were trained with.
        format_version: layout version of the ``attrtag.*`` keys (:data:`FORMAT_VERSION`).
        precision: ``fp32``, ``fp16`` or ``int8``: what the graph computes in (inputs and
            outputs are float32 in all three).
        rules: embedded class rules (``{"classes": {...}}``) or ``None``.
    """

    schema: Schema
    preprocessing: Preprocessing
    backbone: str
    format_version: int = FORMAT_VERSION
    precision: str = "fp32"
    rules: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise CheckpointError(f"precision '{self.precision}' is not one of {', '.join(PRECISIONS)}")

    def to_props(self) -> dict[str, str]:
        """``{key: JSON text}`` for ``ModelProto.metadata_props`` (rules only when present)."""
        props = {
            KEY_FORMAT: json.dumps(self.format_version),
            KEY_SCHEMA: json.dumps(self.schema.to_dict()),
            KEY_PREPROCESSING: json.dumps(self.preprocessing.to_dict()),
            KEY_BACKBONE: json.dumps(self.backbone),
            KEY_PRECISION: json.dumps(self.precision),
        }
        if self.rules is not None:
            try:
                props[KEY_RULES] = json.dumps(self.rules)
            except (TypeError, ValueError) as err:
                raise CheckpointError(
                    f"rules cannot be stored as JSON ({err}); pass plain dicts, lists, strings and numbers"
                ) from None
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, source: str = "model") -> "ModelMetadata":
        """Parse the ``attrtag.*`` entries of a metadata map (other keys are ignored).

        Args:
            props: key -> JSON text, as in ``metadata_props`` or ONNX Runtime's
                ``custom_metadata_map``.
            source: names the file in messages.

        Returns:
            The metadata.

        Raises:
            CheckpointError: "not an attrtag model: missing metadata 'attrtag.schema'", invalid
                JSON, or a format version newer than this attrtag understands.
        """

        def get(key: str, *, required: bool = True) -> Any:
            if key not in props:
                if required:
                    raise CheckpointError(
                        f"{source}: not an attrtag model: missing metadata '{key}' "
                        "(export it with 'attrtag export --checkpoint ... --out model.onnx')"
                    )
                return None
            try:
                return json.loads(props[key])
            except json.JSONDecodeError as err:
                raise CheckpointError(f"{source}: metadata '{key}' is not valid JSON ({err.msg})") from None

        schema_d = get(KEY_SCHEMA)  # first: its absence is the "not an attrtag model" case
        version = get(KEY_FORMAT)
        if not isinstance(version, int) or version < 1:
            raise CheckpointError(f"{source}: metadata '{KEY_FORMAT}' must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: attrtag ONNX format version {version} is newer than this attrtag understands "
                f"({FORMAT_VERSION}); upgrade attrtag"
            )
        prep_d = get(KEY_PREPROCESSING)
        if not isinstance(prep_d, Mapping):
            raise CheckpointError(f"{source}: metadata '{KEY_PREPROCESSING}' must be a JSON object")
        backbone = get(KEY_BACKBONE)
        if not isinstance(backbone, str):
            raise CheckpointError(f"{source}: metadata '{KEY_BACKBONE}' must be a JSON string, got {backbone!r}")
        precision = get(KEY_PRECISION, required=False) or "fp32"
        rules = get(KEY_RULES, required=False)
        if rules is not None and not isinstance(rules, dict):
            raise CheckpointError(f"{source}: metadata '{KEY_RULES}' must be a JSON object, got {type(rules).__name__}")
        return cls(
            schema=Schema.from_dict(schema_d, source=f"{source} metadata '{KEY_SCHEMA}'"),
            preprocessing=Preprocessing.from_dict(prep_d, source=f"{source} metadata '{KEY_PREPROCESSING}'"),
            backbone=backbone,
            format_version=version,
            precision=str(precision),
            rules=rules,
        )


def write_metadata(model: "onnx.ModelProto", meta: ModelMetadata) -> None:
    """Set the ``attrtag.*`` entries of ``model.metadata_props`` in place.

    Other entries (e.g. the ones ONNX Runtime's quantizer adds) are kept; old ``attrtag.*``
    entries are replaced, so re-stamping a converted model leaves no stale precision or rules.

    Args:
        model: the ONNX model to stamp.
        meta: what to write.
    """
    check_output_names(meta.schema, [o.name for o in model.graph.output], source="exported graph")
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in KEYS]
    del model.metadata_props[:]
    for key, value in keep + list(meta.to_props().items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def check_output_names(schema: Schema, names: Sequence[str], *, source: str) -> None:
    """Raise unless the graph outputs are exactly the schema's groups, in schema order.

    Raises:
        CheckpointError: "expected outputs [...], got [...]".
    """
    if tuple(names) != schema.names:
        raise CheckpointError(
            f"{source}: output names do not match the schema: expected {list(schema.names)}, got {list(names)}; "
            "re-export the model with 'attrtag export'"
        )


def read_metadata(source: "str | os.PathLike[str] | onnxruntime.InferenceSession | onnx.ModelProto") -> ModelMetadata:
    """Read and check the attrtag metadata of an ONNX model.

    Args:
        source: a ``.onnx`` path, an ONNX Runtime session or an ``onnx.ModelProto``.

    Returns:
        The metadata; its schema's groups are checked against the graph's output names.

    Raises:
        CheckpointError: missing file, a file that is not ONNX, missing ``attrtag.*`` metadata
            ("not an attrtag model: missing metadata 'attrtag.schema'") or outputs that do not
            match the schema.
    """
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        props, outputs = _read_file(Path(source))
    elif hasattr(source, "get_modelmeta"):  # an onnxruntime.InferenceSession
        name = "model"
        props = dict(source.get_modelmeta().custom_metadata_map)
        outputs = [o.name for o in source.get_outputs()]
    elif hasattr(source, "metadata_props") and hasattr(source, "graph"):  # an onnx.ModelProto
        name = "model"
        props = {p.key: p.value for p in source.metadata_props}
        outputs = [o.name for o in source.graph.output]
    else:
        raise TypeError(
            f"read_metadata expects a path, an onnxruntime session or an onnx.ModelProto, got {type(source).__name__}"
        )
    meta = ModelMetadata.from_props(props, source=name)
    check_output_names(meta.schema, outputs, source=name)
    return meta


def _read_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """Metadata map and output names of an ONNX file, with ``onnx`` when installed.

    ``onnx`` parses the file without building a session (no graph optimisation, no provider
    start-up); ONNX Runtime alone is the fallback, so the runtime install needs only it.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX model not found")
    try:
        import onnx
    except ImportError:
        onnx = None  # type: ignore[assignment]
    if onnx is not None:
        try:
            # External weights are not needed for metadata and may sit elsewhere.
            model = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # protobuf raises DecodeError and friends on foreign files
            raise CheckpointError(f"{path}: not a readable ONNX file ({type(err).__name__}: {err})") from None
        return {p.key: p.value for p in model.metadata_props}, [o.name for o in model.graph.output]
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise CheckpointError(f"{path}: not a readable ONNX file ({err})") from None
    return dict(session.get_modelmeta().custom_metadata_map), [o.name for o in session.get_outputs()]
