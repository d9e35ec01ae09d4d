"""Holding back what ONNX Runtime writes while a session opens, until we know whether to show it.

A session asked for a GPU provider that cannot load prints its reasons itself: C++ log lines
on file descriptor 2 (with colour codes) and, from its Python wrapper, an "EP Error ... Falling
back to [...] and retrying" block on stdout, which contradicts a refusal that follows. Where
attrtag then refuses (``device="cuda"`` on a CPU machine) or warns in its own line, that line
names what failed, and ONNX Runtime's text goes to the debug log (``attrtag -v``). Otherwise it
is shown as ONNX Runtime wrote it, only later: nothing is lost.

Torch-free, as the rest of the ONNX path.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from typing import Iterator


class HeldOutput:
    """What a :func:`hold_output` block wrote, to :meth:`release` once it is known what to do."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger, self.what, self.text = logger, what, ""

    def release(self, *, show: bool) -> None:
        """Write it on stderr as it would have been written (``show``), or else to the debug log:
        a message of attrtag's then says the same in one line."""
        if show and self.text:
            sys.stderr.write(self.text)
            sys.stderr.flush()
        elif not show and self.text.strip():
            self.logger.debug("%s said:\n%s", self.what, self.text.rstrip())


@contextlib.contextmanager
def hold_output(logger: logging.Logger, what: str) -> Iterator[HeldOutput]:
    """Hold back Python's stdout and file descriptor 2 (where C++ libraries log) for a block.

    Stdout is held too because it may carry a command's output (JSON lines): a library's
    ``print()`` must never land there. Where the block raises, what it wrote goes to ``logger``'s
    debug log (the error says what went wrong); otherwise the caller releases it. Where
    descriptor 2 cannot be duplicated (a daemon without one), only stdout is held.

    Args:
        logger: where it goes when it is not shown.
        what: who wrote it, for that log (``ONNX Runtime``).
    """
    held = HeldOutput(logger, what)
    printed = io.StringIO()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        saved = None
    with tempfile.TemporaryFile() as native:
        if saved is not None:
            os.dup2(native.fileno(), 2)
        try:
            with contextlib.redirect_stdout(printed):
                yield held
        except BaseException:
            _restore(saved, native, printed, held)
            held.release(show=False)
            raise
        _restore(saved, native, printed, held)


def _restore(saved: int | None, native: "tempfile._TemporaryFileWrapper[bytes]", printed: io.StringIO,
             held: HeldOutput) -> None:
    """Put descriptor 2 back and collect what was written meanwhile into ``held.text``."""
    sys.stderr.flush()
    if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)
    native.seek(0)
    held.text = native.read().decode("utf-8", "replace") + printed.getvalue()
