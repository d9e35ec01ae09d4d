"""What a tag file's classes are scored again with: its header's priors, or its model's card.

``attrtag tag MODEL --rules R`` divides class scores by the model's label priors and applies
its calibration. A tag file written without rules has no class scoring in its header, so it
carries neither (nor does a header from before priors travelled); re-scoring it with the header
alone would name other classes than ``tag MODEL --rules R`` does, silently. So the priors and
the calibration come from the card of the model that made the file: the one given, or the one
the header names, found beside the tag file or in the current folder. A model counts as that
model only when its SHA-256 is the header's. When none is found, the caller is told so once
and the classes are scored without them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import AttrtagError
from ..schema import Schema
from ..tagging.header import OutputMeta, model_fingerprint


@dataclass(frozen=True)
class TagCarrier:
    """A :class:`~attrtag.zeroshot.scoring.Carrier` for re-scoring a tag file.

    Attributes:
        schema, rules: the header's (the rules the file was scored with, or None).
        label_counts, label_totals, calibration: the header's, or the model card's.
        name: the file they came from, for messages (as ``tag`` names its model).
        origin: a note saying that they came from a model's card; "" when from the header or none.
        warning: why they are missing though wanted ("" when not): the caller warns once the
            scoring is built (an error in the rules is then the only line).
    """

    schema: Schema
    rules: Any
    label_counts: Mapping[str, tuple[int, ...]] | None
    label_totals: Mapping[str, tuple[int, ...]] | None
    calibration: Any
    name: str
    origin: str = ""
    warning: str = ""


def tag_carrier(found: OutputMeta, tags: Path, *, model: str | os.PathLike | None, wanted: bool) -> TagCarrier:
    """Where the re-scoring of ``tags`` (whose header is ``found``) takes priors and calibration.

    Args:
        found: the tag file's header.
        tags: the tag file.
        model: the model that tagged it (checked by SHA-256), or None to use the header's and,
            when it has none, to look for the model it names.
        wanted: priors or calibration are on (else nothing is looked for).

    Raises:
        AttrtagError: ``model`` is not the model that made ``tags``, or cannot be read.
    """
    header = found.layout.classes
    if model is not None:
        path = Path(model)
        return _from_card(found, path, _card(path, found, tags), f"{path} (`model_file`)")
    if not wanted or (header is not None and header.label_counts_known):
        return _from_header(found, tags)
    for path in _beside(found.model, tags):
        if model_fingerprint(path) != found.model_sha256:
            continue  # another model of that name: not the one that tagged the file
        try:
            return _from_card(found, path, _read_card(path), f"{path}, the model that tagged {tags.name}")
        except (AttrtagError, ImportError) as err:
            return _from_header(found, tags, f"{tags}: the model that tagged it is {path}, but its card cannot be "
                                f"read ({_first_line(err)}); classes scored without its label priors or calibration")
    why = ("was tagged without class rules, so its header holds" if header is None
           else "has a header from an older attrtag, which does not record")
    return _from_header(found, tags, f"{tags} {why} no label priors or calibration, and the model that tagged it "
                        f"('{found.model}', sha256 {found.model_sha256[:12]}) is not beside it; classes scored without "
                        "them (pass `model_file=M` to apply that model's)")


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def _from_header(found: OutputMeta, tags: Path, warning: str = "") -> TagCarrier:
    return TagCarrier(found.schema, found.rules, found.label_counts, found.label_totals, found.calibration,
                      name=f"{tags} header", warning=warning)


def _from_card(found: OutputMeta, path: Path, card: Any, origin: str) -> TagCarrier:
    what = " and ".join(w for w, has in (("label priors", card.label_counts), ("calibration", card.calibration)) if has)
    return TagCarrier(found.schema, found.rules, card.label_counts, card.label_totals, card.calibration,
                      name=path.name, origin=f"{what} from {origin}" if what else f"{origin} has no label priors "
                      "or calibration")


def _beside(name: str, tags: Path) -> list[Path]:
    """The header's model name beside the tag file and in the current folder (existing files)."""
    out: list[Path] = []
    for path in (tags.parent / name, Path(name)):
        if path.is_file() and not any(os.path.samefile(path, p) for p in out):
            out.append(path)
    return out


def _card(path: Path, found: OutputMeta, tags: Path) -> Any:
    """The card of ``path`` when it is the model that made ``tags``: hashed first, read only then."""
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise AttrtagError(f"`model_file={path}`: {what}; pass the model that tagged {tags}")
    sha = model_fingerprint(path)
    if sha != found.model_sha256:
        raise AttrtagError(
            f"`model_file={path}` is not the model that tagged {tags}: its sha256 {sha[:12]} is not the header's "
            f"{found.model_sha256[:12]} ('{found.model}'); pass that model"
        )
    return _read_card(path)


def _read_card(path: Path) -> Any:
    from ..runtime import read_card  # lazy: only a file without priors in its header needs it

    return read_card(path)
