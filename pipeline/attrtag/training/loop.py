"""The training loop: AdamW, warm-up + cosine, masked grouped loss, checkpoints, history, resume.

:func:`train_step` combines model and criterion (the model never computes its own loss, as in
timm's task API). :func:`train` prepares a :class:`TrainingRun` once, then per epoch runs
:func:`train_one_epoch`, :func:`validate` and :func:`save_epoch`, which write ``last.pt`` and
``best.pt`` atomically, ``history.json``/``history.csv`` and ``curves.png``.

Reproducibility: each epoch reseeds torch from ``(seed, epoch)``, data order comes from a
generator seeded the same way and augmentation is seeded per sample, so an epoch's result
depends only on the weights and optimizer state it starts from -- which is what ``last.pt``
stores. ``--resume`` therefore yields the run an uninterrupted run would have produced.

Several processes (``torchrun``, :mod:`.distributed`): ``cfg.batch_size`` is the global batch,
split across processes (:func:`~attrtag.data.loader.epoch_batches`); :func:`train_batch`
divides each group's loss by the label counts of the global batch, so N processes take the
same steps as one process with the whole batch. Only rank 0 prints and writes files.
"""
from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..data.loader import Batch, ImageDataset, epoch_batches, make_loader
from ..data.manifest import Manifest, Sample, label_counts
from ..errors import AttrtagError
from ..evaluation.evaluate import compute_metrics, predict, val_loss
from ..evaluation.metrics import GroupMetrics, summary_score
from ..model import AttributeModel, build_model, check_input_size, load_checkpoint, save_checkpoint
from ..runtime.torch_backend import TorchPredictor, torch_device
from ..schema import Schema
from .config import TrainConfig
from .distributed import (
    DistContext, describe_world_change, gather_predictions, init_distributed, launch_id, reduce_batchnorm_stats,
    restart_checkpoint, use_sync_batchnorm, val_shard, wrap_ddp,
)
from .history import write_history
from .recipe import criterion_for, make_optimizer, make_scheduler

_logger = logging.getLogger(__name__)

Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]
EpochCallback = Callable[[dict[str, Any], list[GroupMetrics]], None]


def split_samples(manifest: Manifest, val_fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Train/val samples: the manifest's ``split`` column, else a stable hash of the path.

    Without a split column, ``val_fraction`` of the images (chosen by CRC32 of the path, so the
    split does not move when rows are added or reordered) are held out for validation.
    """
    if manifest.has_splits:
        return manifest.split("train"), manifest.split("val")
    val, train = [], []
    for s in manifest.samples:
        (val if zlib.crc32(s.path.encode("utf-8", "surrogateescape")) % 1000 < val_fraction * 1000 else train).append(s)
    return train, val


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    amp: bool = False,
    denominators: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Forward + loss; returns ``{'loss', <group terms>, 'output'}`` (backward is the caller's).

    ``denominators``: each group's label count to divide by (default: this batch's own).
    """
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=amp):
        output = model(images)
    losses = criterion(output, targets, denominators)  # float32: the criterion upcasts logits
    return {**losses, "output": output}


@dataclass
class TrainResult:
    """Where a run's outputs went and its final figures."""

    run_dir: Path
    last: Path
    best: Path
    history: list[dict[str, Any]]
    best_score: float
    failed_images: dict[str, str] = field(default_factory=dict)


@dataclass
class TrainingRun:
    """Everything one run holds between epochs (built once by :func:`prepare_run`)."""

    cfg: TrainConfig
    schema: Schema
    run_dir: Path
    dist: DistContext
    model: AttributeModel
    net: nn.Module  # what the training step calls: DDP around ``model`` with several processes
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    train_set: ImageDataset
    train_samples: list[Sample]
    val_samples: list[Sample]
    steps_per_epoch: int
    amp: bool
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = -1.0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda" and self.cfg.channels_last


def prepare_run(
    cfg: TrainConfig, schema: Schema, manifest: Manifest, run_dir: Path, resume: str | Path | None,
    dist: DistContext | None = None,
) -> TrainingRun:
    """Model, loss, data, optimizer and schedule of a run; on ``resume``, their saved state.

    ``dist``: this process's place among torchrun's (default: one process on ``cfg.device``).
    """
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        ckpt["card"].schema.check_same(schema, what=f"--resume {resume}: checkpoint schema vs --schema")
        stored = TrainConfig.from_dict(ckpt.get("config", {}), source=f"{resume} config")
        # Where and how the run executes comes from this command; what it learns, from the checkpoint.
        here = {k: getattr(cfg, k) for k in ("epochs", "workers", "device", "sync_bn")}
        cfg = TrainConfig.from_dict({**stored.to_dict(), **here})
    ctx = dist if dist is not None else DistContext(torch_device(cfg.device))
    device = ctx.device
    train_samples, val_samples = split_samples(manifest, cfg.val_fraction)
    if not train_samples:
        raise AttrtagError(f"{manifest.source}: no training images (split column has no 'train' rows)")
    if min(cfg.batch_size, len(train_samples)) < ctx.world_size:
        raise AttrtagError(
            f"--batch-size {cfg.batch_size} is the global batch, split over {ctx.world_size} processes "
            f"({len(train_samples)} training images): each process needs at least one image per step"
        )

    torch.manual_seed(cfg.seed)
    model = build_model(
        schema, cfg.backbone, pretrained=_pretrained_arg(cfg), drop_rate=cfg.drop_rate, image_size=cfg.image_size,
        crop_mode=cfg.crop_mode, card=ckpt["card"] if ckpt is not None else None,
    )
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    else:
        # The card records what the model was taught: zero-shot priors and rule lint need it.
        model.card = model.card.replace(label_counts=label_counts(schema, train_samples))
    check_input_size(model)
    if cfg.sync_bn:
        model = use_sync_batchnorm(model, ctx)
    model.to(device)
    if device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    counts = model.card.label_counts or label_counts(schema, train_samples)  # the whole split's, on every process
    criterion = criterion_for(cfg, schema, counts).to(device)

    train_set = ImageDataset(train_samples, model.card.preprocessing, seed=cfg.seed)
    drop_last = len(train_set) > cfg.batch_size  # a batch of 1 breaks BatchNorm
    steps_per_epoch = len(train_set) // cfg.batch_size if drop_last else 1
    if cfg.max_steps_per_epoch > 0:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    run = TrainingRun(
        cfg=cfg, schema=schema, run_dir=run_dir, dist=ctx, model=model, net=wrap_ddp(model, ctx), criterion=criterion,
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, train_set=train_set, train_samples=train_samples,
        val_samples=val_samples, steps_per_epoch=steps_per_epoch, amp=amp,
    )
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        run.start_epoch = int(ckpt["epoch"]) + 1
        run.history = list(ckpt.get("history", []))
        run.best_score = float(ckpt.get("best_score", -1.0))
        if ctx.is_main:
            _logger.info("resuming from %s at epoch %d/%d", resume, run.start_epoch + 1, cfg.epochs)
            before = int(ckpt.get("world_size", 1))
            if before != ctx.world_size:
                has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
                _logger.info("%s", describe_world_change(before, ctx.world_size, cfg.batch_size,
                                                          per_process_bn=has_bn and not cfg.sync_bn))
    return run


def train_one_epoch(run: TrainingRun, epoch: int, progress: Progress | None = None) -> dict[str, Any]:
    """One pass over the training data; returns the epoch's history row (train figures only)."""
    cfg, ctx, model = run.cfg, run.dist, run.model
    # Random layers (dropout, drop-path) draw a stream of their own in each process, reproducible
    # from (seed, epoch, rank); rank 0's is the one-process stream.
    torch.manual_seed(cfg.seed * 1_000_003 + epoch + 1_000_000_007 * ctx.rank)
    model.train()
    batches = epoch_batches(
        len(run.train_set), cfg.batch_size, steps=run.steps_per_epoch, seed=cfg.seed, epoch=epoch,
        rank=ctx.rank, world_size=ctx.world_size,
    )
    loader = make_loader(run.train_set, batches=batches, workers=cfg.workers, epoch=epoch,
                         pin_memory=run.device.type == "cuda")
    t0, seen, loss_sum = time.perf_counter(), 0, 0.0
    it: Iterable[Any] = progress(loader, f"epoch {epoch + 1}/{cfg.epochs}", len(batches)) if progress else loader
    for batch in it:
        for i, reason in batch.failed:
            path = run.train_samples[i].path
            if path not in run.failed:
                run.failed[path] = reason
                _logger.warning("skipping undecodable training image: %s", reason)
        step = train_batch(run, batch)
        if step is None:
            continue
        loss, n = step
        loss_sum += loss * n
        seen += n
        if hasattr(it, "set_postfix"):
            it.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
    train_time = time.perf_counter() - t0
    for failed in ctx.all_gather(dict(run.failed)):  # each process saw its own part of the images
        run.failed.update(failed)
    if not cfg.sync_bn:
        reduce_batchnorm_stats(model, ctx)  # before validation and checkpoints see them
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / max(1, seen),
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_images": seen,
        "train_images_per_s": seen / max(train_time, 1e-9),
        "skipped_images": len(run.failed),
        "processes": ctx.world_size,
    }


def train_batch(run: TrainingRun, batch: Batch) -> tuple[float, int] | None:
    """One optimizer step on a global batch (this process holds its part of it).

    Returns:
        The global batch's loss and number of images; None when some process has no decodable
        image in its part: every process then skips the step together (a process missing a
        collective would leave the others waiting).
    """
    ctx = run.dist
    n = len(batch.targets)
    x = batch.images.to(run.device, non_blocking=True)
    if run.channels_last and n:
        x = x.contiguous(memory_format=torch.channels_last)
    y = batch.targets.to(run.device, non_blocking=True)
    # One small all-reduce per step: each group's label count, the images, the empty parts.
    counts = torch.zeros(len(run.schema) + 2, device=run.device)
    if n:
        counts[:-2] = run.criterion.denominators(y)
    counts[-2], counts[-1] = n, float(n == 0)
    ctx.all_reduce_sum(counts)
    if counts[-1] > 0:
        return None
    out = train_step(run.net, run.criterion, x, y, amp=run.amp, denominators=counts[:-2])
    run.optimizer.zero_grad(set_to_none=True)
    # out["loss"] is this process's share of the global batch's loss (its sums over the global
    # label counts). DDP averages gradients over the N processes; scaling by N makes that
    # average the sum of the shares' gradients: the gradient one process would get from the
    # whole batch. (A per-process mean would weight the images of label-poor processes more.)
    run.scaler.scale(out["loss"] * ctx.world_size).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    loss = ctx.all_reduce_sum(out["loss"].detach().clone())
    return float(loss), int(counts[-2])


def validate(run: TrainingRun, row: dict[str, Any]) -> list[GroupMetrics]:
    """Score the val split with the model as it is now; adds ``val_*`` figures to ``row``."""
    if not run.val_samples:
        return []
    predictor = TorchPredictor(run.model, device=str(run.device))
    part = predict(predictor, val_shard(run.val_samples, run.dist), batch_size=run.cfg.batch_size * 2,
                   workers=run.cfg.workers)
    preds = gather_predictions(part, run.val_samples, run.dist)  # every val image once, in order
    metrics = compute_metrics(run.schema, preds)
    row["val_loss"] = val_loss(run.schema, preds)
    for m in metrics:
        row[f"val_acc/{m.group}"] = m.accuracy
        row[f"val_f1/{m.group}"] = m.macro_f1
        row[f"val_n/{m.group}"] = m.labelled
    row["val_score"] = summary_score(metrics)
    return metrics


def save_epoch(run: TrainingRun, epoch: int, row: dict[str, Any]) -> None:
    """Append ``row`` to the history; rank 0 writes ``last.pt`` (and ``best.pt`` when it is the best so far)."""
    score = row.get("val_score", -row["train_loss"])
    run.history.append(row)
    is_best = score > run.best_score
    run.best_score = max(run.best_score, score)
    state = {
        "config": run.cfg.to_dict(),
        "epoch": epoch,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.amp else None,
        "history": run.history,
        "best_score": run.best_score,
        "world_size": run.dist.world_size,
        "torchrun_run_id": launch_id(),
    }
    if not run.dist.is_main:
        return
    save_checkpoint(run.run_dir / "last.pt", run.model, **state)
    if is_best:
        save_checkpoint(run.run_dir / "best.pt", run.model, **state)
    write_history(run.run_dir, run.history, run.schema.names)


def train(
    cfg: TrainConfig,
    schema: Schema,
    manifest: Manifest,
    run_dir: str | Path,
    *,
    resume: str | Path | None = None,
    progress: Progress | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train an :class:`AttributeModel` on ``manifest`` and write the run folder.

    Args:
        cfg: the configuration (on resume, the checkpoint's configuration is used and only
            ``epochs``, ``workers``, ``device`` and ``sync_bn`` are taken from ``cfg``).
            ``batch_size`` is the global batch when torchrun starts several processes.
        schema: label schema; on resume it must equal the checkpoint's.
        manifest: samples with a split column, or all samples (then ``cfg.val_fraction`` is held out).
        run_dir: output folder.
        resume: a checkpoint to continue from (normally ``run_dir/last.pt``). After torchrun
            restarts a failed group, the ``run_dir/last.pt`` this launch wrote wins.
        progress: wraps an iterable for progress display, ``progress(iterable, desc, total)``
            (rank 0 only).
        on_epoch: called after each epoch with the history row and the validation metrics
            (rank 0 only).

    Returns:
        The paths of the checkpoints and the history.
    """
    run_dir = Path(run_dir)
    ctx = init_distributed(cfg.device)
    finished = False
    try:
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        # Rank 0 decides, so every process resumes from the same file (or none).
        resume = ctx.broadcast((restart_checkpoint(run_dir) or resume) if ctx.is_main else None)
        run = prepare_run(cfg, schema, manifest, run_dir, resume, ctx)
        if not ctx.is_main:
            progress = on_epoch = None
        for epoch in range(run.start_epoch, run.cfg.epochs):
            row = train_one_epoch(run, epoch, progress)
            metrics = validate(run, row)
            save_epoch(run, epoch, row)
            if on_epoch is not None:
                on_epoch(row, metrics)
        finished = True
    finally:
        ctx.close(wait=finished)  # after a failure, waiting for the other processes could hang
    if run.failed and ctx.is_main:
        _logger.warning("%d training image(s) could not be decoded and were skipped", len(run.failed))
    return TrainResult(
        run_dir=run_dir, last=run_dir / "last.pt", best=run_dir / "best.pt", history=run.history,
        best_score=run.best_score, failed_images=run.failed,
    )


def _pretrained_arg(cfg: TrainConfig) -> bool | str:
    if not cfg.pretrained:
        return False
    return True if cfg.pretrained == "timm" else cfg.pretrained
