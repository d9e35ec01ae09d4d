"""Durable file writes: atomic replacement and fsynced appends, the one implementation.

Atomic: write a temporary file beside the target, fsync it, ``os.replace`` it onto the target,
then fsync the folder so the rename itself survives a power cut. A reader (or a run killed
mid-write) sees either the old file or the complete new one, never a truncated one. The
temporary file lives in the target's folder so ``os.replace`` is a rename on one filesystem.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .errors import AttrtagError


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    ``suffix`` matters to writers that pick a format from the name (e.g. ``.png``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result is an ordinary file
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_stale_temps(folder: str | os.PathLike[str], names: Iterable[str]) -> int:
    """Delete what :func:`atomic_path` left for ``names`` in ``folder`` when its process was killed
    mid-write (``.last.pt.k2j4x9_q.tmp``); only call it while holding the folder's lock.

    Returns:
        How many files were deleted.
    """
    gone = 0
    for name in names:
        shape = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.[a-z0-9]+")  # mkstemp's 8 random characters
        for p in Path(folder).glob(f".{glob.escape(name)}.*"):
            if shape.fullmatch(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                gone += 1
    return gone


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success its files are fsynced and it replaces ``path``.

    On an exception the temporary folder is removed and ``path`` is left as it was. An existing
    ``path`` is renamed aside, the new folder renamed in, then the old one deleted: a reader sees
    the old folder or the complete new one (or, between two renames, none), never a half-written
    one. The caller decides whether replacing an existing ``path`` is allowed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        for folder, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(folder, name), "rb") as f:
                    os.fsync(f.fileno())
            fsync_dir(folder)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_output(path: str | os.PathLike[str], *, what: str = "out", folder: bool = False) -> Path:
    """Refuse, before any work, an output that cannot be written: a folder where a file is wanted
    (or the reverse), a path under an existing file, a folder that is not writable.

    Raises :class:`AttrtagError` naming the parameter ``what`` (the CLI spells it as its flag);
    whether an existing output may be replaced is the caller's policy. Returns ``path``.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise AttrtagError(f"`{what}={path}` is a file; name a folder (new or existing)")
    if not folder and path.is_dir():
        raise AttrtagError(f"`{what}={path}` is a folder; name a file in it")
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise AttrtagError(f"`{what}={path}`: {parent} is a file, not a folder; choose another path")
    try:  # a real write: os.access says yes to root, and knows nothing of read-only mounts
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise AttrtagError(f"`{what}={path}`: cannot write in {parent} ({err.strerror}); choose another path") from None
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines as given); returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def append_durably(f: BinaryIO, data: bytes) -> None:
    """Append ``data`` to an open binary file and make it durable (flush + fsync) before returning."""
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a created or renamed directory entry durable.

    A no-op where directories cannot be opened (Windows).
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows.

    ``os.umask`` can only be read by setting it, which races with other threads creating
    files (decode workers, writers); Linux shows it in ``/proc/self/status``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask
