"""Training on several processes (torchrun, DistributedDataParallel): the plumbing the loop uses.

``torchrun --nproc_per_node N -m attrtag train ...`` starts N copies of the command with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; :func:`init_distributed` turns them into a
:class:`DistContext` (gloo on the CPU, NCCL on CUDA, one GPU per process). Without torchrun it
returns a single-process context whose collectives do nothing, so the loop has one code path.

What lives here and why (the loop only calls these):

- :meth:`DistContext.all_reduce_sum` sums the label counts of each step over processes, so the
  masked loss divides by the counts of the *global* batch (see :mod:`.loss`).
- :func:`wrap_ddp`: DDP with ``broadcast_buffers=False``: each process keeps its own batch-norm
  statistics during the epoch and :func:`reduce_batchnorm_stats` averages them before
  validation and checkpointing (timm's ``--dist-bn reduce``); ``--sync-bn`` needs CUDA.
- :func:`gather_predictions`: validation shards the val split without padding (process r
  scores images r, r+N, ...), so every image is scored exactly once, then gathers the shards.
- :func:`restart_checkpoint`: after torchrun restarts a failed group, the run resumes from the
  ``last.pt`` this launch wrote.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..data.manifest import Sample
from ..errors import AttrtagError
from ..evaluation.evaluate import Predictions
from ..runtime.torch_backend import torch_device

_logger = logging.getLogger(__name__)

#: Environment torchrun sets for every worker (torch.distributed.run documents them).
_RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"
_RUN_ID = "TORCHELASTIC_RUN_ID"


@dataclass(frozen=True)
class DistContext:
    """This process's place in a training run: rank, number of processes and its device."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # init_distributed started the process group, so close() ends it
    # Collectives, DDP and SyncBatchNorm go through a process group; None: when N > 1.
    grouped: bool | None = None

    def __post_init__(self) -> None:
        if self.grouped is None:
            object.__setattr__(self, "grouped", self.world_size > 1)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """The run is distributed (a process group, even of one process under torchrun)."""
        return bool(self.grouped)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over processes in place and return it (unchanged in one process)."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self, *, wait: bool = True) -> None:
        """End the process group if this context started it; ``wait``: after the others got here.

        The barrier keeps a process from leaving while rank 0 still writes the last checkpoint;
        after a failure it is skipped (the others may never arrive; torchrun stops them).
        """
        if self.owns_group and dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()


def env_rank() -> int:
    """This process's rank from torchrun's environment (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def init_distributed(device: str) -> DistContext:
    """The run's processes from torchrun's environment; starts the process group when N > 1.

    ``--device auto``/``cuda`` under torchrun gives each process the GPU of its ``LOCAL_RANK``
    and the NCCL backend; the CPU uses gloo. A process group the caller already started (a
    script of their own) is used as it is and left open.

    Raises:
        AttrtagError: ``--device cuda:N`` with several processes (each takes its LOCAL_RANK GPU).
    """
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(_process_device(device, local, world), rank, world, local, grouped=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not _launched(world):
        return DistContext(torch_device(device))
    rank, local = env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    dev = _process_device(device, local, world)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    store = _attempt_store(world)
    if store is None:
        dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
    else:
        dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                device_id=dev if dev.type == "cuda" else None)
    _logger.info("process %d of %d on %s (%s)", rank, world, dev, backend)
    if _RUN_ID in os.environ:
        watch_launcher(rank)
    return DistContext(dev, rank, world, local, owns_group=True, grouped=True)


def watch_launcher(rank: int, *, every: float = 1.0) -> threading.Thread:
    """Stop this process when the one that launched it (torchrun) is gone.

    torchrun killed with ``kill -9`` cannot stop its workers: they trained on, orphaned, to the
    last epoch, and held the run folder's lock, so ``--resume`` was refused. A worker whose
    parent changes (it was reparented: the launcher died) exits at once; its checkpoints are
    written atomically, so what it leaves is the last one, as after any kill.
    """
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(every)
        if rank == 0:
            print(f"attrtag: the launcher (pid {launcher}) is gone: stopping its processes; resume the run to go on",
                  file=sys.stderr, flush=True)
        os._exit(1)

    thread = threading.Thread(target=watch, name="attrtag-launcher-watch", daemon=True)
    thread.start()
    return thread


def _launched(world: int) -> bool:
    """Started by torchrun (or another ``env://`` launcher), even with one process.

    ``torchrun --nproc_per_node 1`` then runs what N processes run (process group, DDP,
    SyncBatchNorm, NCCL on a GPU), so one GPU is enough to check that path; plain
    ``attrtag train`` has neither ``WORLD_SIZE`` nor ``MASTER_ADDR`` and stays ungrouped.
    """
    return world > 1 or ("WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ)


def _attempt_store(world: int) -> dist.Store | None:
    """torchrun's shared store, in a namespace of this attempt's own; None: let env:// make one.

    torchrun (PyTorch 2.14) keeps one store for the whole launch and hands it to the workers
    of every attempt. After a restart, gloo then reads the addresses the failed processes
    published and cannot connect ("connectFullMesh failed ... Connection refused"; PyTorch
    issue 135712). Keys under a prefix per restart count are fresh each attempt. Every worker
    of one machine sees the same count; across machines torchrun may count differently, so
    multi-machine runs with restarts are safest with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``
    (then each attempt gets a new store and this returns None).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from datetime import timedelta

    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                           timeout=timedelta(minutes=30))
    return dist.PrefixStore(f"attrtag/attempt_{os.environ.get(_RESTART_COUNT, '0')}", client)


def _process_device(device: str, local_rank: int, world: int) -> torch.device:
    dev = torch_device(device)
    if dev.type != "cuda" or world <= 1:
        return dev
    if ":" in device:
        raise AttrtagError(
            f"`device={device}`: with {world} processes each one uses the GPU of its LOCAL_RANK; "
            "pass `device=cuda` (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", local_rank)


def use_sync_batchnorm(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Batch norm over the global batch (``--sync-bn``): CUDA only, as PyTorch's SyncBatchNorm.

    Raises:
        AttrtagError: on the CPU: under gloo, SyncBatchNorm's forward raises "SyncBatchNorm
            expected input tensor to be on GPU" (checked with PyTorch 2.14, 2 processes).
    """
    if ctx.device.type != "cuda":
        raise AttrtagError(
            "`sync_bn=True` needs CUDA GPUs: PyTorch's SyncBatchNorm does not run on the CPU (gloo); "
            "drop `sync_bn=True` (each process then normalises its own batch and running statistics are averaged "
            "across processes)"
        )
    if not ctx.active:
        return model
    from timm.layers import convert_sync_batchnorm  # also converts timm's fused BatchNormAct2d

    return convert_sync_batchnorm(model)


def wrap_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """The module the training step calls: DDP around ``model`` with several processes, else ``model``.

    No ``find_unused_parameters``: the masked loss keeps every group in the graph even when a
    process has no label for it. ``forward_sync_buffers=False`` (``broadcast_buffers`` in the
    PyTorch versions before that name, 2.11 among them: they get the old one): batch-norm running statistics stay
    per process and are averaged by :func:`reduce_batchnorm_stats`; otherwise rank 0's would
    overwrite every other process's at each forward. They are still copied from rank 0 once,
    when DDP wraps the model.
    """
    if not ctx.active:
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    known = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"
    return DistributedDataParallel(model, device_ids=ids, **{no_sync: False})


def reduce_batchnorm_stats(model: nn.Module, ctx: DistContext) -> None:
    """Average batch-norm running means and variances over processes (timm's ``distribute_bn``)."""
    if not ctx.active:
        return
    for name, buf in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(ctx.world_size)


def val_shard(samples: Sequence[Sample], ctx: DistContext) -> list[Sample]:
    """This process's share of the val split: every N-th image, no padding, so each is scored once."""
    return list(samples[ctx.rank :: ctx.world_size])


def gather_predictions(part: Predictions, samples: Sequence[Sample], ctx: DistContext) -> Predictions:
    """Every process's :func:`val_shard` predictions, merged back into the order of ``samples``."""
    if not ctx.active:
        return part
    where = {id(s): i for i, s in enumerate(samples)}
    mine = ([where[id(s)] for s in part.samples], part.probs, part.failed, part.targets)
    rows: list[int] = []
    probs: dict[str, list[np.ndarray]] = {g: [] for g in part.probs}
    targets: list[np.ndarray] = []
    failed: list[tuple[str, str]] = []
    for positions, p, f, t in ctx.all_gather(mine):
        rows += positions
        for g in probs:
            probs[g].append(p[g])
        targets.append(t)
        failed += f
    order = np.argsort(rows, kind="stable")
    return Predictions(
        probs={g: np.concatenate(v)[order] for g, v in probs.items()},
        targets=np.concatenate(targets)[order],
        samples=[samples[rows[i]] for i in order],
        failed=failed,
    )


def describe_world_change(before: int, now: int, batch_size: int, *, per_process_bn: bool) -> str:
    """What changes when a run resumes on another number of processes, and what does not."""
    share = f"{batch_size // now}" if batch_size % now == 0 else f"{batch_size // now} or {batch_size // now + 1}"
    text = (f"the checkpoint was trained by {before} process(es), this run has {now}: the global batch stays "
            f"{batch_size} images ({share} per process); data order, steps per epoch and learning-rate schedule "
            "are unchanged")
    if per_process_bn:
        text += f"; batch-norm batch statistics now come from {share} images per process"
    return text


def launch_id() -> str | None:
    """torchrun's run id (``--rdzv-id``, a fresh one per ``--standalone`` launch), else None."""
    return os.environ.get(_RUN_ID)


def restart_checkpoint(run_dir: Path) -> Path | None:
    """Under torchrun: ``run_dir/last.pt`` when this launch wrote it (so torchrun restarted us).

    The checkpoint records torchrun's run id; a ``last.pt`` of another launch is left alone
    (that run is resumed only with ``--resume``). ``--standalone`` makes a fresh run id per
    launch; several machines share the ``--rdzv-id`` they are given, so give each job its own.
    Without one (run id ``none``), a restart count above 0 is required as well. The restart
    count alone does not decide: torchrun may count restarts differently on each machine.
    """
    run_id = launch_id()
    last = run_dir / "last.pt"
    if run_id is None or not last.is_file():
        return None
    restarts = int(os.environ.get(_RESTART_COUNT, "0"))
    if run_id == "none" and restarts == 0:
        return None
    from ..model import load_checkpoint

    ckpt = load_checkpoint(last)
    if ckpt.get("torchrun_run_id") != run_id:
        return None
    _logger.info("torchrun restart %d: resuming from %s (epoch %d done)", restarts, last, int(ckpt["epoch"]) + 1)
    return last
