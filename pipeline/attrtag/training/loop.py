"""The training loop: AdamW, warm-up + cosine, masked grouped loss, checkpoints, history, resume.

:func:`train_step` combines model and criterion (the model never computes its own loss, as in
timm's task API). :func:`train` prepares a :class:`~.run.TrainingRun` once (:mod:`.run`), then
per epoch runs :func:`train_one_epoch`, :func:`validate` and :func:`save_epoch`, which write
``last.pt`` and ``best.pt`` atomically, ``history.json``/``history.csv`` and ``curves.png``.
Each step may also update the EMA of the weights (:mod:`.ema`) and let it fill missing labels
(:mod:`.completion`).

Reproducibility: each epoch reseeds torch from ``(seed, epoch)``, data order comes from a
generator seeded the same way and augmentation is seeded per sample, so an epoch's result
depends only on the weights, EMA and optimizer state it starts from -- which is what ``last.pt``
stores. ``--resume`` therefore yields the run an uninterrupted run would have produced.

Several processes (``torchrun``, :mod:`.distributed`): ``cfg.batch_size`` is the global batch,
split across processes (:func:`~attrtag.data.loader.epoch_batches`); :func:`train_batch`
divides each group's loss by the label counts of the global batch (filled labels included), so
N processes take the same steps as one process with the whole batch. Only rank 0 prints and
writes files.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

import torch
from torch import nn

from .._files import check_output, remove_stale_temps
from .._lock import OutputLock
from ..data.loader import Batch, epoch_batches, make_loader
from ..data.manifest import Manifest
from ..evaluation.evaluate import compute_metrics, predict, val_loss
from ..evaluation.metrics import GroupMetrics, summary_score
from ..errors import AttrtagError
from ..evaluation.multilabel import MultiLabelMetrics, choose_thresholds
from ..evaluation.temperature import fit_temperatures, group_eces
from ..model import save_checkpoint
from ..runtime.temperature import apply_temperatures
from ..runtime.torch_backend import TorchPredictor
from ..schema import Schema
from .completion import curriculum_threshold, fill_labels
from .config import TrainConfig
from .distributed import gather_predictions, init_distributed, reduce_batchnorm_stats, restart_checkpoint, val_shard
from .ema import teacher_logits
from .history import write_history
from .loss import Filled
from .recipe import hold_idle_backbone
from .run import TrainingRun, checkpoint_state, prepare_run, split_samples

__all__ = ["TrainResult", "TrainingRun", "prepare_run", "split_samples", "train", "train_batch", "train_one_epoch",
           "train_step", "validate", "save_epoch"]

_logger = logging.getLogger(__name__)

Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]
EpochCallback = Callable[[dict[str, Any], list[GroupMetrics]], None]

#: The files that make a folder a run's: another run is not started over them without ``overwrite``.
RUN_FILES = ("last.pt", "best.pt", "history.json")
#: Every file a run writes (atomically) into its folder.
WRITTEN_FILES = (*RUN_FILES, "history.csv", "curves.png")


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    amp: bool = False,
    denominators: torch.Tensor | None = None,
    filled: Filled | None = None,
) -> dict[str, torch.Tensor]:
    """Forward + loss; returns ``{'loss', <group terms>, 'output'}`` (backward is the caller's).

    ``denominators``: each group's label count to divide by (default: this batch's own).
    ``filled``: labels a teacher filled in (:func:`~.completion.fill_labels`).
    """
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=amp):
        output = model(images)
    losses = criterion(output, targets, denominators, filled)  # float32: the criterion upcasts logits
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
    validated: bool = True  # False: no val images, so best.pt is the last epoch's weights


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
    run.filled_labels = torch.zeros(len(run.schema))
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
        if run.ema is not None:  # an average of per-process statistics, so averaged the same way
            reduce_batchnorm_stats(run.ema.module, ctx)
    filled = {f"filled/{g}": int(c) for g, c in zip(run.schema.names, run.filled_labels.tolist())}
    return {
        "epoch": epoch + 1,
        "epochs": cfg.epochs,
        "train_loss": loss_sum / max(1, seen),
        "lr": max(g["lr"] for g in run.optimizer.param_groups),  # the head's (layer decay lowers the rest)
        "train_images": seen,
        "train_images_per_s": seen / max(train_time, 1e-9),
        "skipped_images": len(run.failed),
        "processes": ctx.world_size,
        **(filled if cfg.complete != "none" else {}),
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
    filled = _fill(run, x, y) if n else None
    # One small all-reduce per step: each group's label count (filled labels included), the
    # labels filled, the images, the empty parts.
    g = len(run.schema)
    counts = torch.zeros(2 * g + 2, device=run.device)
    if n:
        counts[:g] = run.criterion.denominators(y, filled)
        if filled is not None:
            counts[g:2 * g] = torch.stack([(w > 0).sum() for _, w in filled.values()]).float()
    counts[-2], counts[-1] = n, float(n == 0)
    ctx.all_reduce_sum(counts)
    if counts[-1] > 0:
        return None
    run.filled_labels += counts[g:2 * g].cpu()
    if run.cfg.head_epochs:
        hold_idle_backbone(run.optimizer, distributed=ctx.active)
    out = train_step(run.net, run.criterion, x, y, amp=run.amp, denominators=counts[:g], filled=filled)
    run.optimizer.zero_grad(set_to_none=True)
    # out["loss"] is this process's share of the global batch's loss (its sums over the global
    # label counts). DDP averages gradients over the N processes; scaling by N makes that
    # average the sum of the shares' gradients: the gradient one process would get from the
    # whole batch. (A per-process mean would weight the images of label-poor processes more.)
    run.scaler.scale(out["loss"] * ctx.world_size).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:  # every process holds the same weights after the step: same average
        run.ema.update(run.model, step=run.steps_done)
    loss = ctx.all_reduce_sum(out["loss"].detach().clone())
    return float(loss), int(counts[-2])


def _fill(run: TrainingRun, x: torch.Tensor, y: torch.Tensor) -> Filled | None:
    """The labels the EMA teacher fills in this batch (None: completion off, or not started yet)."""
    threshold = curriculum_threshold(run.cfg, run.steps_done / run.steps_per_epoch)
    if run.ema is None or threshold > 1.0:
        return None
    logits = teacher_logits(run.ema, x, amp=run.amp)
    return fill_labels(run.criterion, logits, y, mode=run.cfg.complete, threshold=threshold,
                       weight=run.cfg.complete_weight)


def validate(run: TrainingRun, row: dict[str, Any]) -> list[Any]:
    """Score the val split with the model as it is now (its EMA with ``--ema``); adds ``val_*`` figures to ``row``.

    Each group's temperature is fitted on these images' raw probabilities
    (:func:`attrtag.evaluation.temperature.fit_temperatures`) and stored in the model card, then a
    schema with multi-label groups gets each value's threshold chosen on the calibrated
    probabilities (:func:`attrtag.evaluation.multilabel.choose_thresholds`), so the checkpoint of
    this epoch carries the temperatures and thresholds of its own weights. ``val_ece/<group>`` is
    the calibration error after temperature; accuracy and F1 do not depend on it (T keeps the argmax).
    """
    row["val_images"] = len(run.val_samples)
    if not run.val_samples:
        return []
    if run.predictor is None:  # once: it wraps the live weights (and says where it runs once, not per epoch)
        # Raw probabilities: the card's temperatures are last epoch's, and these images refit them.
        run.predictor = TorchPredictor(run.output, device=str(run.device), calibrated=False)
    run.output.eval()  # training switched it back to train mode
    part = predict(run.predictor, val_shard(run.val_samples, run.dist), batch_size=run.cfg.batch_size * 2,
                   workers=run.cfg.workers)
    preds = gather_predictions(part, run.val_samples, run.dist)  # every val image once, in order
    where = f"the val split, {len(preds.samples)} images, epoch {row['epoch']}"
    row["val_loss"] = val_loss(run.schema, preds)  # the model's own loss, as train_loss is: before temperature
    run.model.card = run.model.card.replace(
        temperatures=fit_temperatures(run.schema, preds.probs, preds.targets, fitted_on=where))
    preds = replace(preds, probs=apply_temperatures(preds.probs, run.schema, run.model.card.group_temperatures))
    if run.schema.multi:  # thresholds apply to calibrated probabilities, so they are chosen on them
        chosen = choose_thresholds(run.schema, preds.probs, preds.targets, chosen_on=where)
        run.model.card = run.model.card.replace(value_thresholds=chosen)
    metrics = compute_metrics(run.schema, preds, run.model.card.decision_thresholds)
    for m in metrics:
        if isinstance(m, MultiLabelMetrics):
            row[f"val_map/{m.group}"] = m.mean_ap
            row[f"val_acc/{m.group}"] = m.mean_accuracy
        else:
            row[f"val_acc/{m.group}"] = m.accuracy
        row[f"val_f1/{m.group}"] = m.macro_f1
        row[f"val_n/{m.group}"] = m.labelled
    for group, ece in group_eces(run.schema, preds.probs, preds.targets).items():
        if ece is not None:
            row[f"val_ece/{group}"] = ece
    row["val_score"] = summary_score(metrics)
    return metrics


def save_epoch(run: TrainingRun, epoch: int, row: dict[str, Any]) -> None:
    """Append ``row`` to the history; rank 0 writes ``last.pt`` (and ``best.pt`` when it is the best so far).

    Without val images nothing tells epochs apart, so ``best.pt`` is the last epoch's weights
    (the card's ``training`` says so). ``best.pt`` holds what inference and a new run from it
    need; the optimizer state for ``resume`` is in ``last.pt`` only.
    """
    run.history.append(row)
    score = row.get("val_score")
    # The first epoch of a run is its best so far even when its score is NaN: a best.pt always exists.
    is_best = score is None or score > run.best_score or run.best_score == float("-inf")
    if score is not None and score > run.best_score:
        run.best_score = score
    if not run.dist.is_main:
        return
    save_checkpoint(run.run_dir / "last.pt", run.output, **checkpoint_state(run, epoch))
    if is_best:
        save_checkpoint(run.run_dir / "best.pt", run.output, **checkpoint_state(run, epoch, resumable=False))
    write_history(run.run_dir, run.history, run.schema.names)


def train(
    cfg: TrainConfig,
    schema: Schema,
    manifest: Manifest,
    run_dir: str | Path,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    given: Collection[str] | None = None,
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
        run_dir: output folder; one that holds a run (:data:`RUN_FILES`) needs ``resume`` or ``overwrite``.
        resume: a checkpoint to continue from (normally ``run_dir/last.pt``). After torchrun
            restarts a failed group, the ``run_dir/last.pt`` this launch wrote wins.
        overwrite: start a new run in a folder that holds one; its files are replaced as the new
            run writes its own (after its first epoch), so a run that fails before leaves them.
        given: the options the caller set: on resume, one that differs from the checkpoint's
            is refused (see :func:`~.run.prepare_run`).
        progress: wraps an iterable for progress display, ``progress(iterable, desc, total)`` (rank 0).
        on_epoch: called after each epoch with the history row and the validation metrics (rank 0).

    Returns:
        The paths of the checkpoints and the history.
    """
    run_dir = Path(run_dir)
    ctx = init_distributed(cfg.device)
    lock = OutputLock(run_dir, path=run_dir / RUN_LOCK)  # rank 0's: one run at a time per folder
    finished = False
    try:
        # Rank 0 decides, so every process resumes from the same file (or none), or all refuse.
        resume, refusal = ctx.broadcast(_start(run_dir, resume, overwrite, lock) if ctx.is_main else None)
        if refusal is not None:
            raise AttrtagError(refusal)
        run = prepare_run(cfg, schema, manifest, run_dir, resume, ctx, given=given)
        if ctx.is_main:  # only now: a refused run leaves no folder behind
            run_dir.mkdir(parents=True, exist_ok=True)
            with lock:  # a new folder's lock (two new runs at once): the second is refused here
                _epochs(run, progress, on_epoch)
        else:
            _epochs(run, None, None)
        finished = True
    finally:
        lock.release()
        ctx.close(wait=finished)  # after a failure, waiting for the other processes could hang
    if run.failed and ctx.is_main:
        _logger.warning("%d training image(s) could not be decoded and were skipped", len(run.failed))
    return TrainResult(
        run_dir=run_dir, last=run_dir / "last.pt", best=run_dir / "best.pt", history=run.history,
        best_score=run.best_score, failed_images=run.failed, validated=bool(run.val_samples),
    )


#: The lock file inside a run folder while a run writes it (see :mod:`attrtag._lock`).
RUN_LOCK = "run.lock"


def _epochs(run: TrainingRun, progress: Progress | None, on_epoch: EpochCallback | None) -> None:
    """The epochs still to run: train, validate, save, report."""
    for epoch in range(run.start_epoch, run.cfg.epochs):
        row = train_one_epoch(run, epoch, progress)
        metrics = validate(run, row)
        save_epoch(run, epoch, row)
        if on_epoch is not None:
            on_epoch(row, metrics)


def start_refusal(run_dir: str | Path, resume: str | Path | None, overwrite: bool) -> str | None:
    """Why a run may not start in ``run_dir`` (the error's text), or None: :func:`train`'s own
    check, for callers that want it before they read a manifest. Takes no lock."""
    return _start(Path(run_dir), resume, overwrite, None)[1]


def _start(run_dir: Path, resume: str | Path | None, overwrite: bool,
           lock: OutputLock | None) -> tuple[Path | str | None, str | None]:
    """Rank 0's decision: the checkpoint to resume from, or why the run may not start (the error's text).

    Checked before any work: an ``out`` that cannot be a folder, and a folder that holds another
    run, unless this run continues it (``resume`` of a file in it, or torchrun's restart) or
    ``overwrite``.
    """
    try:
        check_output(run_dir, what="out", folder=True)
        if lock is not None and run_dir.is_dir():  # held until the run ends: another run is refused
            lock.acquire()
        restart = restart_checkpoint(run_dir)
    except AttrtagError as err:
        return None, err.text
    if restart is not None:
        return restart, None
    held = [n for n in RUN_FILES if (run_dir / n).exists()]
    continues = resume is not None and Path(resume).resolve().parent == run_dir.resolve()
    if held and not overwrite and not continues:
        other = "" if resume is None else f" (not the run of `resume={resume}`)"
        return None, (f"`out={run_dir}` already holds a run{other} ({held[0]}): continue it with `resume=True`, "
                      "or start again with `overwrite=True` (its files are replaced as the new run writes its own)")
    if lock is not None and run_dir.is_dir():  # what a killed run left mid-write (held: no one writes now)
        remove_stale_temps(run_dir, WRITTEN_FILES)
    return resume, None
