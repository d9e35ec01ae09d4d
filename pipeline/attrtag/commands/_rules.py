"""Class rules on the command line, shared by ``tag``, ``classify``, ``evaluate`` and ``export``.

A rules file that cannot be used (bad YAML, unknown group or value, ...) raises
:class:`~attrtag.errors.AttrtagError` naming file and line: one line and exit status 2. Rules
that are legal but cannot work (:func:`attrtag.zeroshot.rules.lint`: identical classes, a class that
constrains nothing, a constraint accepting every value) are printed as ``attrtag: warning:``
lines on stderr and the command goes on; a class that constrains nothing cannot be scored and is
left out.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, Sequence

from ..errors import AttrtagError
from ..schema import Schema
from ..zeroshot.fields import DEFAULT_TOP_K, ClassTagging
from ..zeroshot.rules import Rules, resolve_rules


def add_class_options(p: argparse.ArgumentParser, *, defaults_from: str = "") -> None:
    """Add ``--class-top-k``, ``--unknown-threshold`` and ``--set`` to a parser.

    Args:
        p: the subcommand's parser.
        defaults_from: appended to the default descriptions (e.g. where else defaults come from).
    """
    p.add_argument(
        "--class-top-k", type=int, metavar="K",
        help=f"classes listed in 'classes' (default: {DEFAULT_TOP_K}{defaults_from})",
    )
    p.add_argument(
        "--unknown-threshold", type=float, metavar="P",
        help="write class 'unknown' when the best class's probability is below P; the probabilities "
        f"are a softmax over the classes of the rules, so choose P for a rule set (default: 0 = never{defaults_from})",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="GROUP=VALUE", dest="overrides",
        help="intervention: score classes as if GROUP had VALUE (the record's own GROUP fields keep the "
        "model's prediction); repeatable",
    )


def class_options_given(args: argparse.Namespace) -> list[str]:
    """The class options given on the command line (for "needs rules" errors)."""
    given = []
    if args.class_top_k is not None:
        given.append("--class-top-k")
    if args.unknown_threshold is not None:
        given.append("--unknown-threshold")
    if args.overrides:
        given.append("--set")
    return given


def parse_overrides(specs: Sequence[str]) -> dict[str, str]:
    """``["bill=duck", "tail=yes"]`` -> ``{"bill": "duck", "tail": "yes"}``.

    Groups and values are checked against the schema later (:meth:`ClassTagging.check`).

    Args:
        specs: the ``--set`` values.

    Returns:
        Group -> value, in the order given.

    Raises:
        AttrtagError: a spec without ``=``, or the same group twice.
    """
    out: dict[str, str] = {}
    for spec in specs:
        group, sep, value = spec.partition("=")
        group, value = group.strip(), value.strip()
        if not sep or not group or not value:
            raise AttrtagError(f"--set {spec}: expected GROUP=VALUE, e.g. --set bill=duck")
        if group in out:
            raise AttrtagError(f"--set {spec}: group '{group}' is already set to '{out[group]}'")
        out[group] = value
    return out


def add_scoring_options(p: argparse.ArgumentParser, *, source: str = "the model") -> None:
    """Add ``--no-priors`` and ``--no-calibration``: turn off what travels with the model."""
    p.add_argument("--no-priors", action="store_true",
                   help=f"do not divide class scores by the training label priors stored in {source}")
    p.add_argument("--no-calibration", action="store_true",
                   help=f"do not apply the calibration stored in {source} (attrtag calibrate)")


def warn(message: str) -> None:
    """A legal-but-useless rule (or option), printed as one ``attrtag: warning:`` line on stderr."""
    print(f"attrtag: warning: {message}", file=sys.stderr)


def note(message: str) -> None:
    """What a run does that changes its results (priors, calibration): one ``attrtag: note:`` line."""
    print(f"attrtag: note: {message}", file=sys.stderr)


def load_rules(path: str, schema: Schema, label_counts: Mapping[str, Sequence[int]] | None = None) -> Rules:
    """Read and check a rules file, printing its lint warnings.

    Args:
        path: the rules YAML.
        schema: the model's schema.
        label_counts: the model's training label counts: also warn about values no training
            image carries.

    Returns:
        The rules, without classes that constrain nothing.

    Raises:
        SchemaError: "file:line: ..." for anything that makes the rules unusable.
    """
    rules, warnings = resolve_rules(path, schema, label_counts=label_counts)
    for message in warnings:
        warn(message)
    return rules


def class_options(args: argparse.Namespace, inherit: ClassTagging | None = None) -> dict[str, Any]:
    """``top_k``, ``unknown_threshold`` and ``overrides`` from the options of :func:`add_class_options`.

    Args:
        args: parsed arguments.
        inherit: top-k and unknown threshold used where the options are not given (``classify``
            re-scoring a file that already had class fields). Overrides are never inherited.
    """
    top_k = args.class_top_k if args.class_top_k is not None else inherit.top_k if inherit else DEFAULT_TOP_K
    if args.unknown_threshold is not None:
        threshold = args.unknown_threshold
    else:
        threshold = inherit.unknown_threshold if inherit else 0.0
    return {"top_k": top_k, "unknown_threshold": threshold, "overrides": parse_overrides(args.overrides)}


def warn_unconstrained_overrides(tagging: ClassTagging) -> None:
    """Say so when ``--set`` names a group no class constrains (it changes nothing)."""
    constrained = {g for r in tagging.rules for g in r.groups}
    for group, value in tagging.overrides.items():
        if group not in constrained:
            warn(f"--set {group}={value}: no class of {tagging.source or 'the rules'} constrains '{group}', so it "
                 "changes nothing")


def class_tagging(
    rules: Rules, args: argparse.Namespace, schema: Schema, *, source: str, inherit: ClassTagging | None = None,
    **scoring: Any,
) -> ClassTagging:
    """The :class:`ClassTagging` of a run from rules already loaded and the class options.

    ``scoring`` (``label_counts``, ``calibration``) goes to :class:`ClassTagging` unchanged.

    Raises:
        AttrtagError: a bad option, or ``--set`` naming an unknown group or value.
    """
    tagging = ClassTagging(rules, source=source, **class_options(args, inherit), **scoring)
    tagging.check(schema)
    warn_unconstrained_overrides(tagging)
    return tagging
