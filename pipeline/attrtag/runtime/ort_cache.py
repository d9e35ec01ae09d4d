"""ONNX Runtime's optimised CPU graph, kept between runs: a CPU session starts in a third of the time.

Creating a CPU session optimises the graph (fusions, then the NCHWc layout for this CPU's vector
width): for resnetv2_50 that is 0.2 of the session's 0.32 s, a sixth of a one-image ``attrtag
tag``. ONNX Runtime can save the optimised graph (``SessionOptions.optimized_model_filepath``)
and load it later with optimisations off. What it saves is specific to its version and to the
CPU (it warns so), so the key holds both, with the model file's identity (path, size,
modification time, inode: what Python's own bytecode cache trusts).

Only CPU-only sessions are cached: GPU providers partition the graph differently, and TensorRT
has its own engine cache. ``ATTRTAG_ORT_CACHE`` names another folder, or ``off`` turns the cache
off. The :data:`KEEP` most recently used graphs are kept (each is about the model's size).
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

_logger = logging.getLogger(__name__)

CACHE_ENV = "ATTRTAG_ORT_CACHE"
#: Graphs kept; the least recently used beyond this are deleted.
KEEP = 4
#: Larger models are not cached: ONNX Runtime would save their weights as external data.
MAX_MODEL_BYTES = 1 << 30
_OFF = {"0", "off", "false", "no", "none"}
_STALE_TMP_SECONDS = 3600.0


def cache_dir() -> Path | None:
    """The cache folder (``$ATTRTAG_ORT_CACHE``, else ``$XDG_CACHE_HOME/attrtag/ort`` or
    ``~/.cache/attrtag/ort``); None when turned off."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() in _OFF:
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "attrtag" / "ort"


def cpu_signature() -> str:
    """What the optimised graph depends on besides ONNX Runtime: architecture, CPU model and
    instruction-set flags (Linux), or the processor string elsewhere."""
    parts = [platform.machine()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            seen: set[str] = set()
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part") and key not in seen:
                    seen.add(key)
                    parts.append(line.strip())
                if not line.strip() and seen:
                    break  # the first processor's block is enough
    except OSError:
        parts.append(platform.processor())  # runs `uname -p` on some systems: only without /proc
    return "\n".join(parts)


@dataclass(frozen=True)
class CachedGraph:
    """Where a model's optimised graph lives in the cache.

    Attributes:
        path: the cached graph (it exists when :attr:`hit`).
        hit: whether a graph was there to load.
    """

    path: Path
    hit: bool

    def writing_path(self) -> Path:
        """Where ONNX Runtime should save a new graph: a name of this process's own, renamed
        into place by :meth:`commit`, so concurrent runs never see half a file."""
        return self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp")

    def commit(self) -> None:
        """Move the graph just saved into place and drop the least recently used ones."""
        tmp = self.writing_path()
        try:
            os.replace(tmp, self.path)
        except OSError as err:
            _logger.debug("ONNX Runtime graph cache: could not store %s (%s)", self.path, err)
            _unlink(tmp)
            return
        prune(self.path.parent)

    def touch(self) -> None:
        """Mark a hit as recently used (pruning keeps the newest modification times)."""
        try:
            os.utime(self.path)
        except OSError:
            pass

    def discard(self) -> None:
        """Remove a graph ONNX Runtime could not load (truncated, or from another build)."""
        _unlink(self.path)
        _unlink(self.writing_path())


def lookup_graph(model: Path, ort_version: str) -> CachedGraph | None:
    """The cache entry of ``model`` for this ONNX Runtime and CPU; None when the cache is off,
    its folder cannot be made, or the model is too large."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        st = model.stat()
        if st.st_size > MAX_MODEL_BYTES:
            return None
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _logger.debug("ONNX Runtime graph cache off for this run: %s", err)
        return None
    identity = "\0".join(
        map(str, (model.resolve(), st.st_size, st.st_mtime_ns, st.st_ino, ort_version, cpu_signature()))
    )
    path = folder / f"{model.stem[:40]}-{hashlib.sha256(identity.encode()).hexdigest()[:24]}.onnx"
    return CachedGraph(path, path.is_file())


def prune(folder: Path, keep: int | None = None) -> None:
    """Keep the ``keep`` (default :data:`KEEP`) most recently used graphs in ``folder``, and
    remove temporary files that a killed run left behind."""
    keep = KEEP if keep is None else keep
    try:
        graphs = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in graphs[keep:]:
            _unlink(old)
        now = time.time()
        for tmp in folder.glob(".*.tmp"):
            if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                _unlink(tmp)
    except OSError as err:  # another run pruning at the same time
        _logger.debug("ONNX Runtime graph cache: pruning %s: %s", folder, err)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
