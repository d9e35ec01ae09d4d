"""Tagging on Ray: the local engine's unit of work as a Ray Data ``map_batches`` over an actor pool.

Each actor holds one :class:`~.engine.TagWorker` (a batch of paths in, a batch of records out,
the model opened once per actor). The driver streams the records back in input order
(``preserve_order``), parsing each record's JSON text once, and :class:`~.job.TagJob` writes
them with the local engine's writers, so
the output is the same file, record for record, and a killed driver resumes the same way. Ray
restarts an actor that dies (Ray Data gives actor pools ``max_restarts=-1`` and
``max_task_retries=-1``) and re-runs its batch; only the driver writes, so every input still
gets exactly one record.

The actors open the image paths themselves: on a cluster every node must see the same files
at the same paths (a shared filesystem). ``ray[data]`` is an optional dependency, imported
only here.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from ..errors import AttrtagError, first_line
from ..runtime.threads import plan_threads
from .engine import TagWorker
from .records import RecordLayout, TagRecord

_logger = logging.getLogger(__name__)

RAY_PIP_HINT = 'pip install "attrtag[ray]"'
#: Seconds to wait for a TCP answer from ``--ray-address`` before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra lacks pandas/pyarrow)
    except ImportError as err:
        raise AttrtagError(f"`engine=ray` needs Ray Data ({err.name or err} is not installed): {RAY_PIP_HINT}") from None
    return ray


@dataclass(frozen=True)
class Ray:
    """Tag on a Ray cluster: ``attrtag.load(model, engine=Ray(...))`` (``engine="ray"`` is ``Ray()``).

    Attributes:
        address: head node ``host:port`` (``ray start --head``), ``ray://host:port`` (Ray
            Client) or ``auto``; None starts a local Ray instance.
        actors: actors, one model each (default: 1, or one per GPU with ``gpus_per_actor``).
        gpus_per_actor: GPUs per actor (0: the model runs on the CPU).
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        # Checked when made, so a bad value fails before Ray starts (a minute on a cluster).
        if self.actors is not None and (isinstance(self.actors, bool) or not isinstance(self.actors, int)
                                        or self.actors < 1):
            raise AttrtagError(f"`actors` must be at least 1, got {self.actors}")
        if not (isinstance(self.gpus_per_actor, (int, float)) and math.isfinite(self.gpus_per_actor)
                and self.gpus_per_actor >= 0):
            raise AttrtagError(f"`gpus_per_actor` must be 0 or more, got {self.gpus_per_actor}")


@dataclass(frozen=True)
class RayPlan:
    """What the run asks of the cluster.

    Attributes:
        actors: actors in the pool (one model each).
        cpus_per_actor: Ray CPUs reserved per actor; its decode and model threads share them.
        gpus_per_actor: Ray GPUs per actor (0: the model runs on the CPU).
        decode_workers: decode threads inside each actor.
        model_threads: model threads inside each actor.
        device: the device string each actor opens the model on.
    """

    actors: int
    cpus_per_actor: int
    gpus_per_actor: float
    decode_workers: int
    model_threads: int
    device: str


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address``, or start a local Ray instance (no dashboard).

    Args:
        address: ``host:port`` of a head node (``ray start --head``), ``ray://host:port``
            (Ray Client), ``auto``, or None for a local instance.
        num_cpus: CPUs of a local instance (default: all).

    Returns:
        True when this call started or joined Ray (the caller shuts it down), False when Ray
        was already initialised in this process (e.g. by a program using attrtag as a library).

    Raises:
        AttrtagError: Ray is missing, or nothing answers at ``address``.
    """
    ray = import_ray()
    if address and address != "auto":
        _check_reachable(address)
    started = False
    if not ray.is_initialized():
        try:
            ray.init(
                address=address or None, num_cpus=None if address else num_cpus, include_dashboard=False,
                logging_level=logging.WARNING, log_to_driver=True,
            )
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
            where = f"`address={address}`" if address else "a local Ray instance"
            raise AttrtagError(f"{where}: cannot connect ({first_line(err)}); start one with 'ray start --head'") from None
        except BaseException:  # Ctrl-C while Ray starts: what it started so far must not outlive this run
            ray.shutdown()
            raise
        started = True
    # Ray Data logs each run's start and end at INFO, and warns that its progress bars are off
    # (attrtag shows its own): neither belongs in attrtag's output.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # records in input order, like the local engine
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return started


def shutdown() -> None:
    """Stop the Ray instance :func:`connect` started (its local processes end with it)."""
    import_ray().shutdown()


def _check_reachable(address: str) -> None:
    """Fail fast on an address nobody answers at: ``ray.init`` would retry for a minute or more."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise AttrtagError(f"`address={address}`: expected HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise AttrtagError(
            f"`address={address}`: nothing answers at {host}:{port} ({why}); start the head node there with "
            "'ray start --head', or check the address"
        ) from None


def plan(
    options: Ray, *, backend: str, device: str, workers: int | None = None, threads: int | None = None,
) -> RayPlan:
    """Check what the run asks for against the connected cluster and size the actors.

    Args:
        options: actors and GPUs asked for.
        backend: ``onnx`` or ``torch`` (see :func:`attrtag.runtime.threads.plan_threads`).
        device: the run's device.
        workers: decode threads per actor (None: planned).
        threads: model threads per actor (None: planned).

    Raises:
        AttrtagError: more GPUs or CPUs than the cluster has (Ray would wait for them forever),
            or ``device`` contradicting ``gpus_per_actor``.
    """
    ray = import_ray()
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    base = _check_gpus(options.gpus_per_actor, device, gpus)
    actors = _actors(options, cpus, gpus)
    largest_node = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=cpus)
    cpus_per_actor = max(1, min(largest_node, cpus // actors))
    gpus_per_actor = options.gpus_per_actor
    split = plan_threads(backend=backend, on_gpu=bool(gpus_per_actor), cpus=cpus_per_actor, workers=workers,
                         threads=threads)
    actor_device = device if base != "auto" else ("cuda" if gpus_per_actor else "cpu")
    return RayPlan(actors, cpus_per_actor, gpus_per_actor, split.decode_workers, split.model_threads, actor_device)


def _check_gpus(gpus_per_actor: float, device: str, gpus: float) -> str:
    """The device's base name, once ``gpus_per_actor`` and ``device`` agree with each other and the cluster."""
    if gpus_per_actor < 0:
        raise AttrtagError(f"`gpus_per_actor` must be 0 or more, got {gpus_per_actor}")
    base = device.partition(":")[0]
    if gpus_per_actor and base == "cpu":
        raise AttrtagError(f"`gpus_per_actor={gpus_per_actor}` with `device=cpu`: drop one of them")
    if not gpus_per_actor and base in ("cuda", "tensorrt"):
        raise AttrtagError(f"`device={device}` under `engine=ray` needs `gpus_per_actor` "
                           "(Ray gives GPUs only to actors that ask)")
    if gpus_per_actor and not gpus:
        raise AttrtagError(f"`gpus_per_actor={gpus_per_actor}`: the Ray cluster has no GPUs; drop the option to "
                           "run on CPUs")
    return base


def _actors(options: Ray, cpus: int, gpus: float) -> int:
    """How many actors: as asked, else one per GPU share (or 1); refused beyond the cluster."""
    actors, per = options.actors, options.gpus_per_actor
    if per:
        most = int(gpus // per)
        actors = actors or max(1, most)
        if actors * per > gpus:
            raise AttrtagError(
                f"`actors={actors}` x `gpus_per_actor={per}` needs {actors * per:g} GPUs; "
                f"the Ray cluster has {gpus:g} (use `actors={max(1, most)}` or fewer)"
            )
    actors = actors or 1
    if actors < 1:
        raise AttrtagError(f"`actors` must be at least 1, got {actors}")
    if actors > cpus:
        raise AttrtagError(f"`actors={actors}`: the Ray cluster has {cpus} CPUs, one per actor at least; "
                           f"use `actors={cpus}` or fewer")
    return actors


class RayEngine:
    """Tagging on a Ray cluster: joins (or starts) Ray when made, leaves it on :meth:`close`.

    The driver never opens the model; every actor does (:class:`~.engine.TagWorker`).

    Args:
        model_path: the model file (the same path on every node).
        options: the cluster and the actors asked for.
        backend: ``onnx`` or ``torch`` (how the actors' CPUs are split).
        device: the run's device.
        workers: decode threads per actor (None: planned).
        threads: model threads per actor (None: planned).
    """

    def __init__(self, model_path: str | os.PathLike[str], options: Ray, *, backend: str, device: str,
                 workers: int | None = None, threads: int | None = None) -> None:
        self.model_path = os.fspath(model_path)
        self._started = connect(options.address)
        try:
            self.plan = plan(options, backend=backend, device=device, workers=workers, threads=threads)
        except BaseException:
            self.close()
            raise
        p = self.plan
        _logger.info("Ray: %d actors, %d CPUs and %g GPUs each, %d decode and %d model threads each",
                     p.actors, p.cpus_per_actor, p.gpus_per_actor, p.decode_workers, p.model_threads)

    def batches(self, paths: Sequence[str], layout: RecordLayout, *, batch_size: int,
                max_pixels: int) -> Iterator[list[TagRecord]]:
        """Records of ``paths`` in input order, a batch at a time (see :func:`tag_with_ray`)."""
        return tag_with_ray(self.model_path, paths, layout, self.plan, batch_size=batch_size, max_pixels=max_pixels)

    def close(self) -> None:
        """Stop the Ray instance this engine started (a cluster it joined keeps running)."""
        if self._started:
            self._started = False
            shutdown()


def tag_with_ray(
    model_path: str,
    paths: Sequence[str],
    layout: RecordLayout,
    ray_plan: RayPlan,
    *,
    batch_size: int,
    max_pixels: int,
) -> Iterator[list[TagRecord]]:
    """Tag ``paths`` on the connected cluster; yields lists of records in input order.

    Args:
        model_path: the model file, opened by every actor (same path on every node).
        paths: the images, in output order.
        layout: the run's record layout (the actors make records with this exact layout).
        ray_plan: actors and their resources (:func:`plan`).
        batch_size: images per actor call.
        max_pixels: decompression-bomb limit.

    Yields:
        Records, one per path, in order, a batch at a time.

    Raises:
        AttrtagError: an actor could not open the model (its own one-line message), or the
            Ray run failed in a way Ray could not recover from.
    """
    ray = import_ray()
    if not paths:
        return
    # Bytes, not str: a file name that is not UTF-8 (surrogate escapes) cannot become Arrow text.
    ds = ray.data.from_items([{"path": os.fsencode(p)} for p in paths],
                             override_num_blocks=max(1, min(len(paths) // batch_size, 1000)))
    ds = ds.map_batches(
        TagWorker,
        fn_constructor_args=(os.path.abspath(model_path), layout),
        fn_constructor_kwargs={
            "device": ray_plan.device, "threads": ray_plan.model_threads, "workers": ray_plan.decode_workers,
            "max_pixels": max_pixels, "batch_size": batch_size,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=ray_plan.actors),
        num_cpus=ray_plan.cpus_per_actor,
        num_gpus=ray_plan.gpus_per_actor or None,
    )
    try:
        pending: list[TagRecord] = []
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            pending.extend(json.loads(text) for text in block.column("record").to_pylist())
            while len(pending) >= batch_size:
                yield pending[:batch_size]
                pending = pending[batch_size:]
        if pending:
            yield pending
    except Exception as err:  # noqa: BLE001 - Ray wraps worker errors in its own types
        raise _one_line(err) from None


def _one_line(err: BaseException) -> AttrtagError:
    """The AttrtagError an actor raised (Ray wraps it, often twice), or the Ray failure in one line."""
    seen: BaseException | None = err
    while seen is not None:
        cause = getattr(seen, "cause", None)
        if isinstance(seen, AttrtagError) and not hasattr(seen, "cause"):
            return seen
        if isinstance(cause, AttrtagError):
            return AttrtagError(cause.text)
        seen = cause if isinstance(cause, BaseException) else seen.__cause__ or seen.__context__
    return AttrtagError(f"the Ray run failed ({type(err).__name__}: {first_line(err)}); rerun the command to resume")

