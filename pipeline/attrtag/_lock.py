"""One run at a time per output: an advisory lock on ``FILE.lock`` beside the output (a run
folder's lock lives inside it: ``OUT/run.lock``).

Two runs appending to one output would each skip only what was there when they started and
record every image twice. So whatever writes an output (``attrtag tag``, the Ray engine's
driver, ``classify``) holds ``fcntl.flock`` on ``FILE.lock`` from before its first write (an
``overwrite`` included) to its end; a second run is refused at once, naming the holder, as git
and DVC refuse a second writer. The kernel drops a ``flock`` with the last descriptor of its
holder, so a run killed with ``kill -9`` leaves nothing held: the next run starts as usual.
A forked child (a data-loading worker, a decode process) would share that descriptor and hold
the lock after its parent's death until it noticed (5 s for PyTorch's DataLoader workers, which
refused a resume straight after ``kill -9``), so each child closes its copy as it starts.

The lock file is deleted on release. A run that opened it just before (and then waited for
nothing: the lock is never waited for) would lock a deleted file, so a lock counts only when
the file locked is still the one at the path. Within a process, a thread may take the lock
again (the CLI takes it before the model loads, the job once more for its own lifetime); another
thread of the same process is refused like another process. Where ``fcntl`` does not exist
(Windows) nothing is locked.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from .errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no flock; outputs are not locked there
    fcntl = None  # type: ignore[assignment]

_logger = logging.getLogger(__name__)

#: ``(lock file, thread id) -> [descriptor, holds]``: the locks this process holds.
_HELD: dict[tuple[str, int], list[int]] = {}
_FORK_HOOK: list[bool] = []  # registered (once, on the first lock): os.register_at_fork has no unregister


def _close_in_child() -> None:
    """After a fork, in the child: let go of the parent's locks (its descriptors, not the files)."""
    for fd, _ in _HELD.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


def lock_path(out: str | os.PathLike[str]) -> Path:
    """``FILE.lock``: the lock file of the output ``FILE``."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


class OutputLock:
    """Holds an output for one run: :meth:`acquire` (or ``with``) before writing, :meth:`release` after.

    Args:
        out: the output file (or folder); the lock file's folder must exist by :meth:`acquire`.
        param: the parameter that named ``out``, for the refusal (the CLI spells it as a flag).
        path: the lock file (default ``FILE.lock`` beside ``out``).
    """

    def __init__(self, out: str | os.PathLike[str], *, param: str = "out",
                 path: str | os.PathLike[str] | None = None) -> None:
        self.out, self.param = Path(out), param
        self.path = Path(path) if path is not None else lock_path(out)
        self._key: tuple[str, int] | None = None

    def acquire(self) -> "OutputLock":
        """Take the lock (again, in the thread that holds it).

        Raises:
            OutputError: another run (process or thread) holds the output.
        """
        if self._key is not None or fcntl is None:
            return self
        if not _FORK_HOOK and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_close_in_child)
            _FORK_HOOK.append(True)
        key = (os.path.realpath(self.path), threading.get_ident())
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
        else:
            _HELD[key] = [_lock(self.path, self.out, self.param), 1]
        self._key = key
        return self

    def release(self) -> None:
        """Let go of this hold; the last one in the thread unlocks and deletes the lock file."""
        key, self._key = self._key, None
        held = _HELD.get(key) if key is not None else None
        if held is None:  # not held, or a forked child's copy of its parent's lock
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            try:
                os.unlink(self.path)  # while still locked: see the module docstring
            except OSError:
                pass
            os.close(held[0])

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *_: Any) -> None:
        self.release()


def _lock(path: Path, out: Path, param: str) -> int:
    """A descriptor of ``path`` holding its flock (never waiting), the holder written into it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputError(
                f"`{param}={out}` is being written by another attrtag run ({holder}); wait for it to end, "
                f"or choose another `{param}`"
            ) from None
        except OSError as err:  # a filesystem without locks: say so, and go on unlocked
            _logger.warning("%s: cannot lock it (%s); make sure no other run writes %s", path, err.strerror, out)
            return fd
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # the file was deleted by the run that released it: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    return fd


def _holder(fd: int) -> str:
    """What the holder wrote into the lock file (``pid N on HOST``), or that it is not known yet."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "pid not known yet"
