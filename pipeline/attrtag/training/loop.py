"""The training loop: AdamW, warm-up + cosine, masked grouped loss, checkpoints, history, resume.

:func:`train_step` combines model and criterion (the model never computes its own loss, as in
timm's task API). :func:`train` prepares a :class:`TrainingRun` once, then per epoch runs
:func:`train_one_epoch`, :func:`validate` and :func:`save_epoch`, which write ``last.pt`` and
``best.pt`` atomically, ``history.json``/``history.csv`` and ``curves.png``.

Reproducibility: each epoch reseeds torch from ``(seed, epoch)``, data order comes from a
generator seeded the same way and augmentation is seeded per sample, so an epoch's result
depends only on the weights and optimizer state it starts from -- which is what ``last.pt``
stores. ``--resume`` therefore yields the run an uninterrupted run would have produced.
"""
from __future__ import annotations

import logging
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..data.loader import ImageDataset, make_loader
from ..data.manifest import Manifest, Sample, label_counts
from ..errors import AttrtagError
from ..evaluation.evaluate import compute_metrics, predict, val_loss
from ..evaluation.metrics import GroupMetrics, summary_score
from ..model import AttributeModel, build_model, check_input_size, load_checkpoint, save_checkpoint
from ..runtime.torch_backend import TorchPredictor, torch_device
from ..schema import Schema
from .config import TrainConfig
from .history import write_history
from .loss import MaskedGroupedCrossEntropy, MaskedSigmoidBCE, class_weights_from_counts

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
) -> dict[str, torch.Tensor]:
    """Forward + loss; returns ``{'loss', <group terms>, 'output'}`` (backward is the caller's)."""
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=amp):
        output = model(images)
    losses = criterion(output, targets)  # float32: the criterion upcasts logits
    return {**losses, "output": output}


def make_criterion(cfg: TrainConfig, schema: Schema, class_weights: dict[str, torch.Tensor] | None) -> nn.Module:
    """The loss named by ``cfg.loss``."""
    if cfg.loss == "grouped_softmax":
        return MaskedGroupedCrossEntropy(
            schema, group_weights=cfg.group_weights, class_weights=class_weights, label_smoothing=cfg.label_smoothing
        )
    if cfg.loss == "sigmoid_bce":
        return MaskedSigmoidBCE(schema)
    raise AttrtagError(f"loss '{cfg.loss}' is not one of grouped_softmax, sigmoid_bce")


def lr_lambda(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


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
    device: torch.device
    model: AttributeModel
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    train_set: ImageDataset
    train_samples: list[Sample]
    val_samples: list[Sample]
    steps_per_epoch: int
    drop_last: bool
    amp: bool
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = -1.0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda" and self.cfg.channels_last


def prepare_run(
    cfg: TrainConfig, schema: Schema, manifest: Manifest, run_dir: Path, resume: str | Path | None
) -> TrainingRun:
    """Model, loss, data, optimizer and schedule of a run; on ``resume``, their saved state."""
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        ckpt["card"].schema.check_same(schema, what=f"--resume {resume}: checkpoint schema vs --schema")
        stored = TrainConfig.from_dict(ckpt.get("config", {}), source=f"{resume} config")
        cfg = TrainConfig.from_dict({**stored.to_dict(), "epochs": cfg.epochs, "workers": cfg.workers, "device": cfg.device})
    device = torch_device(cfg.device)
    train_samples, val_samples = split_samples(manifest, cfg.val_fraction)
    if not train_samples:
        raise AttrtagError(f"{manifest.source}: no training images (split column has no 'train' rows)")

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
    model.to(device)
    if device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    class_weights = None
    if cfg.class_weights:
        counts = model.card.label_counts or label_counts(schema, train_samples)
        class_weights = {n: class_weights_from_counts(torch.tensor(counts[n])) for n in schema.names}
    criterion = make_criterion(cfg, schema, class_weights).to(device)

    train_set = ImageDataset(train_samples, model.card.preprocessing, seed=cfg.seed)
    drop_last = len(train_set) > cfg.batch_size  # a batch of 1 breaks BatchNorm
    steps_per_epoch = len(train_set) // cfg.batch_size if drop_last else 1
    if cfg.max_steps_per_epoch > 0:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))

    # No weight decay on norms and biases (the usual AdamW recipe, as in timm's param_groups_weight_decay).
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_lambda(s, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=cfg.min_lr_ratio),
    )
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    run = TrainingRun(
        cfg=cfg, schema=schema, run_dir=run_dir, device=device, model=model, criterion=criterion,
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, train_set=train_set, train_samples=train_samples,
        val_samples=val_samples, steps_per_epoch=steps_per_epoch, drop_last=drop_last, amp=amp,
    )
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        run.start_epoch = int(ckpt["epoch"]) + 1
        run.history = list(ckpt.get("history", []))
        run.best_score = float(ckpt.get("best_score", -1.0))
        _logger.info("resuming from %s at epoch %d/%d", resume, run.start_epoch + 1, cfg.epochs)
    return run


def train_one_epoch(run: TrainingRun, epoch: int, progress: Progress | None = None) -> dict[str, Any]:
    """One pass over the training data; returns the epoch's history row (train figures only)."""
    cfg, model = run.cfg, run.model
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)
    model.train()
    loader = make_loader(
        run.train_set, batch_size=cfg.batch_size, workers=cfg.workers, shuffle=True, seed=cfg.seed, epoch=epoch,
        drop_last=run.drop_last, pin_memory=run.device.type == "cuda",
    )
    t0, seen, loss_sum, steps = time.perf_counter(), 0, 0.0, 0
    it: Iterable[Any] = progress(loader, f"epoch {epoch + 1}/{cfg.epochs}", run.steps_per_epoch) if progress else loader
    for batch in it:
        for i, reason in batch.failed:
            path = run.train_samples[i].path
            if path not in run.failed:
                run.failed[path] = reason
                _logger.warning("skipping undecodable training image: %s", reason)
        if batch.images.numel() == 0:
            continue
        x = batch.images.to(run.device, non_blocking=True)
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch.targets.to(run.device, non_blocking=True)
        out = train_step(model, run.criterion, x, y, amp=run.amp)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(out["loss"]).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        loss_sum += float(out["loss"].detach()) * len(x)
        seen += len(x)
        steps += 1
        if hasattr(it, "set_postfix"):
            it.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
        if steps >= run.steps_per_epoch:
            break
    train_time = time.perf_counter() - t0
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / max(1, seen),
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_images": seen,
        "train_images_per_s": seen / max(train_time, 1e-9),
        "skipped_images": len(run.failed),
    }


def validate(run: TrainingRun, row: dict[str, Any]) -> list[GroupMetrics]:
    """Score the val split with the model as it is now; adds ``val_*`` figures to ``row``."""
    if not run.val_samples:
        return []
    predictor = TorchPredictor(run.model, device=str(run.device))
    preds = predict(predictor, run.val_samples, batch_size=run.cfg.batch_size * 2, workers=run.cfg.workers)
    metrics = compute_metrics(run.schema, preds)
    row["val_loss"] = val_loss(run.schema, preds)
    for m in metrics:
        row[f"val_acc/{m.group}"] = m.accuracy
        row[f"val_f1/{m.group}"] = m.macro_f1
        row[f"val_n/{m.group}"] = m.labelled
    row["val_score"] = summary_score(metrics)
    return metrics


def save_epoch(run: TrainingRun, epoch: int, row: dict[str, Any]) -> None:
    """Append ``row`` to the history; write ``last.pt`` (and ``best.pt`` when it is the best so far)."""
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
    }
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
            ``epochs``, ``workers`` and ``device`` are taken from ``cfg``).
        schema: label schema; on resume it must equal the checkpoint's.
        manifest: samples with a split column, or all samples (then ``cfg.val_fraction`` is held out).
        run_dir: output folder.
        resume: a checkpoint to continue from (normally ``run_dir/last.pt``).
        progress: wraps an iterable for progress display, ``progress(iterable, desc, total)``.
        on_epoch: called after each epoch with the history row and the validation metrics.

    Returns:
        The paths of the checkpoints and the history.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = prepare_run(cfg, schema, manifest, run_dir, resume)
    for epoch in range(run.start_epoch, run.cfg.epochs):
        row = train_one_epoch(run, epoch, progress)
        metrics = validate(run, row)
        save_epoch(run, epoch, row)
        if on_epoch is not None:
            on_epoch(row, metrics)
    if run.failed:
        _logger.warning("%d training image(s) could not be decoded and were skipped", len(run.failed))
    return TrainResult(
        run_dir=run_dir, last=run_dir / "last.pt", best=run_dir / "best.pt", history=run.history,
        best_score=run.best_score, failed_images=run.failed,
    )


def _pretrained_arg(cfg: TrainConfig) -> bool | str:
    if not cfg.pretrained:
        return False
    return True if cfg.pretrained == "timm" else cfg.pretrained
