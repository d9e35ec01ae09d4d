"""The training loop: AdamW, warm-up + cosine, masked grouped loss, checkpoints, history, resume.

``train_step`` combines model and criterion (the model never computes its own loss, as in
timm's task API); :func:`train` runs epochs, validates, writes ``last.pt``/``best.pt``
atomically, ``history.json``/``history.csv`` and ``curves.png`` into the run folder.

Reproducibility: each epoch reseeds torch from ``(seed, epoch)``, data order comes from a
generator seeded the same way and augmentation is seeded per sample, so an epoch's result
depends only on the weights and optimizer state it starts from -- which is what ``last.pt``
stores. ``--resume`` therefore yields the run an uninterrupted run would have produced.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from .atomicfile import write_text
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import ImageDataset, make_loader
from .errors import AttrtagError
from .evaluate import Predictions, compute_metrics, predict
from .loss import MaskedGroupedCrossEntropy, MaskedSigmoidBCE, class_weights_from_counts, label_counts
from .manifest import Manifest, Record
from .metrics import GroupMetrics, summary_score
from .model import AttributeModel, build_model, check_input_size, resolve_preprocessing
from .preprocess import Preprocessing
from .schema import Schema

_logger = logging.getLogger(__name__)

Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]
EpochCallback = Callable[[dict[str, Any], list[GroupMetrics]], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AttrtagError(f"--device {name}: no CUDA GPU is available to PyTorch here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AttrtagError(f"--device {name}: not a device (use auto, cpu, cuda or cuda:N)") from None


def split_records(manifest: Manifest, val_fraction: float) -> tuple[list[Record], list[Record]]:
    """Train/val records: the manifest's ``split`` column, else a stable hash of the path.

    Without a split column, ``val_fraction`` of the images (chosen by CRC32 of the path, so the
    split does not move when rows are added or reordered) are held out for validation.
    """
    if manifest.has_splits:
        return manifest.split("train"), manifest.split("val")
    val, train = [], []
    for r in manifest.records:
        (val if zlib.crc32(r.path.encode("utf-8", "surrogateescape")) % 1000 < val_fraction * 1000 else train).append(r)
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


def val_loss(schema: Schema, preds: Predictions) -> float | None:
    """Masked grouped cross-entropy on validation predictions (sum over groups of the mean NLL)."""
    total, any_label = 0.0, False
    for j, g in enumerate(schema.groups):
        t = preds.targets[:, j]
        keep = t >= 0
        if keep.any():
            p = preds.probs[g.name][keep, t[keep]]
            total += float(-np.log(np.clip(p, 1e-12, 1.0)).mean())
            any_label = True
    return total if any_label else None


@dataclass
class TrainResult:
    """Where a run's outputs went and its final figures."""

    run_dir: Path
    last: Path
    best: Path
    history: list[dict[str, Any]]
    best_score: float
    failed_images: dict[str, str] = field(default_factory=dict)


def _write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    write_text(run_dir / "history.json", json.dumps(history, indent=1))
    write_text(run_dir / "history.csv", _history_csv(history))


def _history_csv(history: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    return buf.getvalue()


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
        manifest: records with a split column, or all records (then ``cfg.val_fraction`` is held out).
        run_dir: output folder.
        resume: a checkpoint to continue from (normally ``run_dir/last.pt``).
        progress: wraps an iterable for progress display, ``progress(iterable, desc, total)``.
        on_epoch: called after each epoch with the history row and the validation metrics.

    Returns:
        The paths of the checkpoints and the history.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        Schema.from_dict(ckpt["schema"], source=str(resume)).check_same(
            schema, what=f"--resume {resume}: checkpoint schema vs --schema"
        )
        stored = TrainConfig.from_dict(ckpt.get("config", {}), source=f"{resume} config")
        cfg = TrainConfig.from_dict({**stored.to_dict(), "epochs": cfg.epochs, "workers": cfg.workers, "device": cfg.device})
    device = resolve_device(cfg.device)
    on_cuda = device.type == "cuda"
    train_recs, val_recs = split_records(manifest, cfg.val_fraction)
    if not train_recs:
        raise AttrtagError(f"{manifest.source}: no training images (split column has no 'train' rows)")

    torch.manual_seed(cfg.seed)
    model: AttributeModel = build_model(schema, cfg.backbone, pretrained=_pretrained_arg(cfg), drop_rate=cfg.drop_rate)
    if ckpt is not None:
        prep = Preprocessing.from_dict(ckpt["preprocessing"])
        model.load_state_dict(ckpt["model"])
    else:
        prep = resolve_preprocessing(model.backbone, image_size=cfg.image_size, resize_mode=cfg.resize_mode)
    check_input_size(model, prep)
    model.to(device)
    if on_cuda and cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    targets_all = torch.tensor([r.labels for r in train_recs], dtype=torch.long)
    class_weights = None
    if cfg.class_weights:
        class_weights = {
            n: class_weights_from_counts(c) for n, c in zip(schema.names, label_counts(targets_all, schema.sizes))
        }
    criterion = make_criterion(cfg, schema, class_weights).to(device)

    train_ds = ImageDataset(train_recs, prep, train=True, seed=cfg.seed)
    drop_last = len(train_ds) > cfg.batch_size  # a batch of 1 breaks BatchNorm
    steps_per_epoch = len(train_ds) // cfg.batch_size if drop_last else 1
    if cfg.max_steps_per_epoch > 0:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))

    # No weight decay on norms and biases (the usual AdamW recipe, as in timm's param_groups_weight_decay).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_lambda(s, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=cfg.min_lr_ratio),
    )
    amp = cfg.amp and on_cuda
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start_epoch, history, best_score = 0, [], -1.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = int(ckpt["epoch"]) + 1
        history = list(ckpt.get("history", []))
        best_score = float(ckpt.get("best_score", -1.0))
        _logger.info("resuming from %s at epoch %d/%d", resume, start_epoch + 1, cfg.epochs)

    failed: dict[str, str] = {}
    last, best = run_dir / "last.pt", run_dir / "best.pt"
    base_state = {
        "schema": schema.to_dict(),
        "preprocessing": prep.to_dict(),
        "backbone": cfg.backbone,
        "config": cfg.to_dict(),
    }
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        model.train()
        loader = make_loader(
            train_ds, batch_size=cfg.batch_size, workers=cfg.workers, shuffle=True, seed=cfg.seed, epoch=epoch,
            drop_last=drop_last, pin_memory=on_cuda,
        )
        t0, seen, loss_sum, steps = time.perf_counter(), 0, 0.0, 0
        it: Iterable[Any] = progress(loader, f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch) if progress else loader
        for batch in it:
            for i, reason in batch.failed:
                path = train_recs[i].path
                if path not in failed:
                    failed[path] = reason
                    _logger.warning("skipping undecodable training image: %s", reason)
            if batch.images.numel() == 0:
                continue
            x = batch.images.to(device, non_blocking=True)
            if on_cuda and cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch.targets.to(device, non_blocking=True)
            out = train_step(model, criterion, x, y, amp=amp)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += float(out["loss"].detach()) * len(x)
            seen += len(x)
            steps += 1
            if hasattr(it, "set_postfix"):
                it.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
            if steps >= steps_per_epoch:
                break
        train_time = time.perf_counter() - t0
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, seen),
            "lr": optimizer.param_groups[0]["lr"],
            "train_images": seen,
            "train_images_per_s": seen / max(train_time, 1e-9),
            "skipped_images": len(failed),
        }
        metrics: list[GroupMetrics] = []
        if val_recs:
            preds = predict(model, val_recs, prep, device=device, batch_size=cfg.batch_size * 2, workers=cfg.workers, amp=amp)
            metrics = compute_metrics(schema, preds)
            row["val_loss"] = val_loss(schema, preds)
            for m in metrics:
                row[f"val_acc/{m.group}"] = m.accuracy
                row[f"val_f1/{m.group}"] = m.macro_f1
                row[f"val_n/{m.group}"] = m.labelled
            row["val_score"] = summary_score(metrics)
        score = row.get("val_score", -row["train_loss"])
        history.append(row)
        is_best = score > best_score
        best_score = max(best_score, score)
        state = {
            **base_state,
            "model": model.state_dict(),
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if amp else None,
            "history": history,
            "best_score": best_score,
        }
        save_checkpoint(last, state)
        if is_best:
            save_checkpoint(best, state)
        _write_history(run_dir, history)
        try:
            from .plots import plot_history

            plot_history(history, schema.names, run_dir / "curves.png")
        except Exception as err:  # a plotting failure must not end a training run
            _logger.warning("could not draw training curves: %s", err)
        if on_epoch is not None:
            on_epoch(row, metrics)
    if failed:
        _logger.warning("%d training image(s) could not be decoded and were skipped", len(failed))
    return TrainResult(run_dir=run_dir, last=last, best=best, history=history, best_score=best_score, failed_images=failed)


def _pretrained_arg(cfg: TrainConfig) -> bool | str:
    if not cfg.pretrained:
        return False
    return True if cfg.pretrained == "timm" else cfg.pretrained
