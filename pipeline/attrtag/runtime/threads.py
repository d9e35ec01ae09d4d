"""How a tagging run splits the CPUs between decode threads and model threads.

Decoding (Pillow, GIL released) and inference share the cores. On a GPU the model needs one
CPU thread to feed it and decoding is the bottleneck, so it gets the rest of the cores. On a
CPU the two compete, and the backends differ in how they wait:

* PyTorch's OpenMP threads meet at a barrier after every operator. With more runnable threads
  than cores (its default, one per core, plus the decode threads, plus anything else on the
  machine), each barrier waits for a descheduled thread: ``--threads 1`` used to be 2-6x
  faster under load. So PyTorch gets the cores the decode threads leave, never more (on the
  shared 2-core machine: 1.39x faster than the old default; figures in ``scripts/README.md``).
* ONNX Runtime's intra-op pool synchronises far less per image: with one decode thread beside
  it, two model threads on 2 busy cores were only 4% slower than one, and on a quiet machine
  the second core is what lets it reach model-only speed (``scripts/README.md``, end-to-end
  0.91). So it keeps every core.

Decode threads on a CPU: a quarter of the cores (at least 1, at most 8): a 224 px model costs
about 50 ms of CPU per image and a 12 MP JPEG decoded at reduced scale about 10-30 ms, so a
quarter of the cores keeps the model fed without taking more of its cores than needed. Beside
ONNX Runtime at least 2 (where there are 2 cores): its threads take every core, so a lone decode
thread gets a third of the CPU on 2 cores, and camera-like photos (30 ms each) then starve the
model. Two decode threads made the tagging loop 15% faster on camera-like photos and 8% on
smooth ones, and changed nothing on thumbnails (2 cores, ``scripts/README.md``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .api import Predictor
from .model_file import CHECKPOINT, model_kind

#: The decode threads a GPU run uses at most (Pillow's decoders scale to about this many cores).
MAX_GPU_DECODE_WORKERS = 32


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under ``taskset`` or a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    """Decode threads and model threads for one run.

    Attributes:
        decode_workers: threads decoding and resizing images.
        model_threads: the runtime's intra-op threads (``torch.set_num_threads`` or ONNX
            Runtime's ``intra_op_num_threads``).
    """

    decode_workers: int
    model_threads: int


def plan_threads(
    *, backend: str, on_gpu: bool, cpus: int | None = None, workers: int | None = None, threads: int | None = None
) -> ThreadPlan:
    """The split of ``cpus`` between decoding and the model; explicit values are kept as given.

    Args:
        backend: ``"onnx"`` or ``"torch"`` (see the module docstring for why they differ).
        on_gpu: the model runs on a GPU.
        cpus: CPUs to share (default: :func:`usable_cpus`).
        workers: ``--workers`` when given (0: decode in the model's thread).
        threads: ``--threads`` when given.

    Returns:
        The plan.
    """
    cpus = max(1, cpus or usable_cpus())
    if on_gpu:
        decode = workers if workers is not None else max(1, min(MAX_GPU_DECODE_WORKERS, cpus - 1))
        return ThreadPlan(decode, threads or 1)
    quarter = max(1, min(8, cpus // 4))
    if backend == "torch":
        decode = workers if workers is not None else quarter
        return ThreadPlan(decode, threads or max(1, cpus - decode))
    decode = workers if workers is not None else min(cpus, max(2, quarter))
    return ThreadPlan(decode, threads or cpus)


def open_with_thread_plan(
    model_path: str | os.PathLike[str], *, device: str = "auto", workers: int | None = None,
    threads: int | None = None, kind: str | None = None, **options: Any,
) -> tuple[Predictor, ThreadPlan]:
    """Open a model that will run beside decode threads, with the CPUs split between the two.

    The model threads are chosen for a CPU run (they must be fixed when the session is made);
    once the predictor says where it really runs, a GPU run gets its decode threads re-planned.

    Args:
        model_path: ``.onnx`` or checkpoint.
        device: as :func:`attrtag.runtime.open_predictor`.
        workers: explicit decode threads (None: planned).
        threads: explicit model threads (None: planned).
        kind: the file's :func:`.model_file.model_kind` when the caller has read it already.
        options: passed to :func:`attrtag.runtime.open_predictor` (``batch_size_hint``, ...).

    Returns:
        ``(predictor, plan)``.
    """
    from . import open_predictor  # the package imports this module's neighbours, not the reverse

    kind = kind or model_kind(model_path)  # one look at the file's first bytes per run
    backend = "torch" if kind == CHECKPOINT else "onnx"
    split = plan_threads(backend=backend, on_gpu=False, workers=workers, threads=threads)
    predictor = open_predictor(model_path, device=device, threads=split.model_threads, kind=kind, **options)
    if predictor.placement.on_gpu:
        split = plan_threads(backend=backend, on_gpu=True, workers=workers, threads=threads)
    return predictor, split
