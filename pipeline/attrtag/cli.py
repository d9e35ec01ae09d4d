"""The ``attrtag`` command line: a parser built from an argv list, one module per subcommand.

Each module in :mod:`attrtag.commands` exposes ``register(subparsers)``, which adds its parser
and sets ``func``. :func:`main` turns :class:`AttrtagError` (bad input) into one line on stderr
and exit status 2; a KeyboardInterrupt exits 130. Other exceptions are bugs and keep their traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from . import __version__
from .errors import AttrtagError

# Imported lazily by name: ``attrtag tag model.onnx`` must not pay for (or need) torch.
COMMANDS = ("demo", "train", "evaluate", "export", "calibrate", "tag", "classify", "rules", "convert", "report")
#: Old names that still work: name -> the module that registers them.
ALIASES = {"infer": "classify"}


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The full parser; tests call ``build_parser().parse_args([...])`` directly."""
    parser = argparse.ArgumentParser(
        prog="attrtag", description="Grouped-softmax attribute tagging: train, evaluate, export, calibrate, tag, classify."
    )
    parser.add_argument("--version", action="version", version=f"attrtag {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in commands:
        try:
            module = importlib.import_module(f"attrtag.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("attrtag.commands"):
                continue  # command not built yet
            raise
        module.register(sub)  # a module may register aliases too (classify registers infer)
    return parser


def _command_from_argv(argv: Sequence[str]) -> list[str]:
    # Build only the parser of the command being run, so its imports (torch for training,
    # onnxruntime for tagging) are the only ones paid for.
    for a in argv:
        if a in COMMANDS:
            return [a]
        if a in ALIASES:
            return [ALIASES[a]]
    return list(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attrtag`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_from_argv(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except AttrtagError as err:
        print(f"attrtag: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attrtag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
