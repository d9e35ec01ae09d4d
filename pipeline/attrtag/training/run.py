"""A training run's state: build it once (model, EMA, loss, data, optimizer, schedule), restore it on resume.

:func:`prepare_run` builds a :class:`TrainingRun`; :func:`checkpoint_state` is what ``last.pt``
stores besides the card and the weights. Everything an epoch's result depends on is in there
(weights, EMA, optimizer, scheduler, scaler), which is what makes ``--resume`` reproduce an
uninterrupted run (see :mod:`.loop`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

import torch
from torch import nn

from ..data.loader import ImageDataset
from ..data.manifest import Manifest, Sample, coverage, label_counts, value_totals
from ..errors import AttrtagError
from ..model import AttributeModel, build_model, check_input_size, load_checkpoint
from ..model.checkpoint import load_if_checkpoint
from ..model.warm_start import warm_start
from ..runtime.torch_backend import torch_device
from ..schema import Schema
from .config import TrainConfig
from .distributed import DistContext, describe_world_change, launch_id, use_sync_batchnorm, wrap_ddp
from .ema import make_ema, output_model, restore
from .loss import MaskedGroupLoss
from .recipe import criterion_for, make_optimizer, make_scheduler

_logger = logging.getLogger(__name__)

#: The card's ``training["checkpoint"]`` of a run without val images: best.pt is its last epoch.
NOT_VALIDATED = "last epoch, nothing validated (no val images)"


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


@dataclass
class TrainingRun:
    """Everything one run holds between epochs (built once by :func:`prepare_run`)."""

    cfg: TrainConfig
    schema: Schema
    run_dir: Path
    dist: DistContext
    model: AttributeModel
    net: nn.Module  # what the training step calls: DDP around ``model`` with several processes
    criterion: MaskedGroupLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    train_set: ImageDataset
    train_samples: list[Sample]
    val_samples: list[Sample]
    steps_per_epoch: int
    amp: bool
    ema: Any = None  # timm.utils.ModelEmaV3 with --ema (see .ema)
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = float("-inf")  # the best val score so far (-inf: none yet, or no val images)
    predictor: Any = None  # validation's TorchPredictor, built once (it wraps the live weights)
    failed: dict[str, str] = field(default_factory=dict)
    filled_labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # this epoch's, per group
    data: dict[str, Any] = field(default_factory=dict)  # what it trains on (:func:`training_data`)

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def channels_last(self) -> bool:
        return self.cfg.channels_last

    @property
    def output(self) -> AttributeModel:
        """The model validated and saved as the run's weights: the EMA's with ``--ema``."""
        return output_model(self.model, self.ema)

    @property
    def steps_done(self) -> int:
        """Optimizer steps taken since the run began (the scheduler counts them, and resumes with them)."""
        return int(self.scheduler.last_epoch)


def prepare_run(
    cfg: TrainConfig, schema: Schema, manifest: Manifest, run_dir: Path, resume: str | Path | None,
    dist: DistContext | None = None, *, given: Collection[str] | None = None,
) -> TrainingRun:
    """Model, EMA, loss, data, optimizer and schedule of a run; on ``resume``, their saved state.

    ``dist``: this process's place among torchrun's (default: one process on ``cfg.device``).
    ``given``: the options the caller set; on ``resume`` each must equal the checkpoint's, except
    those of :data:`RUN_OPTIONS` (None: take the checkpoint's without comparing).
    """
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        cfg = _resumed_config(cfg, schema, ckpt, resume, given)
    _check_group_weights(cfg, schema)
    ctx = dist if dist is not None else DistContext(torch_device(cfg.device))
    device = ctx.device
    train_samples, val_samples = split_samples(manifest, cfg.val_fraction)
    _check_samples(cfg, manifest, train_samples, ctx)
    data = training_data(train_samples, val_samples)
    if ckpt is not None:
        _check_same_data(ckpt.get("data"), data, resume)

    model, ema = _model_and_ema(cfg, schema, train_samples, ctx, ckpt)
    if not val_samples:  # the card says so wherever the weights go (evaluate prints it)
        model.card = model.card.replace(training={**(model.card.training or {}), "checkpoint": NOT_VALIDATED})
    counts = model.card.label_counts or label_counts(schema, train_samples)  # the whole split's, on every process
    totals = model.card.label_totals or value_totals(schema, train_samples)
    criterion = criterion_for(cfg, schema, counts, totals).to(device)

    train_set = ImageDataset(train_samples, model.card.preprocessing, schema, seed=cfg.seed)
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
        val_samples=val_samples, steps_per_epoch=steps_per_epoch, amp=amp, ema=ema,
        filled_labels=torch.zeros(len(schema)), data=data,
    )
    if ckpt is not None:
        _restore_progress(run, ckpt, resume)
    return run


#: Options a resumed run may change: where and how it executes, and how long it runs (``epochs``
#: extends it). Every other option determines the result, so it stays the checkpoint's.
RUN_OPTIONS = frozenset({"epochs", "workers", "device", "sync_bn", "skip_bad_rows"})


def _resumed_config(
    cfg: TrainConfig, schema: Schema, ckpt: dict[str, Any], resume: str | Path, given: Collection[str] | None
) -> TrainConfig:
    """The checkpoint's configuration, with where and how the run executes taken from ``cfg``.

    An option ``given`` that differs from the checkpoint's is refused: resuming would ignore it.
    """
    if "optimizer" not in ckpt:
        raise AttrtagError(f"`resume={resume}` holds the weights only (a best.pt), not the state a run resumes "
                           "from: resume from the run's last.pt, or start a new run from it with "
                           f"`pretrained={resume}`")
    ckpt["card"].schema.check_same(schema, what=f"`resume` {resume}: checkpoint schema vs `schema`")
    stored = TrainConfig.from_dict(ckpt.get("config", {}), source=f"{resume} config")
    for k in sorted(set(given or ()) - RUN_OPTIONS):
        if getattr(cfg, k) != getattr(stored, k):
            raise AttrtagError(
                f"`resume`: the run in {resume} was trained with `{k}={_shown(getattr(stored, k))}`, not "
                f"`{k}={_shown(getattr(cfg, k))}`; resume without `{k}` (the run keeps its own), or start a new "
                f"run from its weights with `pretrained={resume}`"
            )
    here = {k: getattr(cfg, k) for k in RUN_OPTIONS if given is None or k in given}
    if given is None:  # the Python API without a record of what was given: the caller's, as before
        here.pop("skip_bad_rows")
    resumed = TrainConfig.from_dict({**stored.to_dict(), **here})
    done = int(ckpt["epoch"]) + 1
    if resumed.epochs < done:
        raise AttrtagError(f"`epochs={resumed.epochs}`: the run in {resume} has done {done} epochs already; "
                           f"resume with `epochs` above {done} to train it longer")
    if resumed.epochs == done:
        _logger.info("the run in %s has done all its %d epochs: nothing to train (resume with more epochs to "
                     "extend it)", resume, done)
    return resumed


def training_data(train: list[Sample], val: list[Sample]) -> dict[str, Any]:
    """What a run trains and validates on, as its checkpoints record it: the image counts and a
    SHA-256 over each image (its path below the folder all of them share, so that the images
    may move, or be named by absolute or relative paths), its split, and its labels."""
    places = [os.path.abspath(s.path) for s in (*train, *val)]
    try:
        root = os.path.commonpath(places) if len(places) > 1 else os.path.dirname(places[0]) if places else ""
    except ValueError:  # Windows: images on two drives share no folder
        root = ""
    h, at = hashlib.sha256(), iter(places)
    for split, samples in (("train", train), ("val", val)):
        for s in samples:
            where = os.path.relpath(next(at), root) if root else next(at)
            h.update(f"{split}\t{where}\t{s.labels}\t{sorted(s.multi.items())}\n".encode("utf-8", "surrogateescape"))
    return {"sha256": h.hexdigest(), "train": len(train), "val": len(val)}


def _check_same_data(stored: dict[str, Any] | None, data: dict[str, Any], resume: str | Path | None) -> None:
    """Refuse to resume on other images or labels: the result would be neither run's (a
    checkpoint from before they were recorded is not checked)."""
    if stored is None or stored.get("sha256") == data["sha256"]:
        return
    raise AttrtagError(
        f"`resume`: the run in {resume} was trained on other images or labels ({stored.get('train')} train and "
        f"{stored.get('val')} val images then, {data['train']} and {data['val']} in `manifest` now); resume with "
        f"the manifest it began with, or start a new run from its weights with `pretrained={resume}`"
    )


def _shown(value: Any) -> str:
    """An option's value as one word (a mapping as ``a:1,b:2``), so the CLI can spell it as a flag's."""
    if isinstance(value, dict):
        return ",".join(f"{k}:{v:g}" for k, v in value.items()) or "none"
    return str(value)


def _check_group_weights(cfg: TrainConfig, schema: Schema) -> None:
    unknown = [g for g in cfg.group_weights if g not in schema]
    if unknown:
        raise AttrtagError(f"`group_weights`: no group '{unknown[0]}' in the schema "
                           f"(groups: {', '.join(schema.names)})")


def _check_samples(cfg: TrainConfig, manifest: Manifest, train_samples: list[Sample], ctx: DistContext) -> None:
    """Refuse a run without training images, without a single label among them, or with fewer
    images per step than processes."""
    if not train_samples:
        raise AttrtagError(f"{manifest.source}: no training images (split column has no 'train' rows)")
    if not any(s.multi or any(i >= 0 for i in s.labels) for s in train_samples):
        raise AttrtagError(f"{manifest.source}: none of its {len(train_samples)} training images has a label in any "
                           f"group ({', '.join(manifest.schema.names)}); nothing to learn from")
    unlabelled = [c.group for c in coverage(manifest.schema, train_samples) if c.labelled == 0]
    if unlabelled and ctx.is_main:
        _logger.warning("%s: no training image has a label in group %s: %s head learns nothing, and its validation "
                        "figures measure an untrained head; label some training images, or drop %s from the schema",
                        manifest.source, ", ".join(repr(g) for g in unlabelled),
                        "its" if len(unlabelled) == 1 else "their", "it" if len(unlabelled) == 1 else "them")
    if min(cfg.batch_size, len(train_samples)) < ctx.world_size:
        raise AttrtagError(
            f"`batch_size={cfg.batch_size}` is the global batch, split over {ctx.world_size} processes "
            f"({len(train_samples)} training images): each process needs at least one image per step"
        )


def _model_and_ema(
    cfg: TrainConfig, schema: Schema, train_samples: list[Sample], ctx: DistContext, ckpt: dict[str, Any] | None
) -> tuple[AttributeModel, Any]:
    """The model on its device and its EMA (both restored from ``ckpt`` when resuming)."""
    torch.manual_seed(cfg.seed)
    start = _start_checkpoint(cfg) if ckpt is None else None
    prep = start["card"].preprocessing if start is not None else None  # a fine-tuned model keeps its input
    model = build_model(
        schema, cfg.backbone, pretrained=False if start is not None else _pretrained_arg(cfg), drop_rate=cfg.drop_rate,
        image_size=cfg.image_size or (prep.input_size[0] if prep and len(set(prep.input_size)) == 1 else None),
        crop_mode=cfg.crop_mode or (prep.crop_mode if prep else None), card=ckpt["card"] if ckpt is not None else None,
    )
    if start is not None:
        _logger.info("%s", warm_start(model, start, source=cfg.pretrained))
    if ckpt is None:
        # The card records what the model was taught: zero-shot priors and rule lint need it.
        model.card = model.card.replace(label_counts=label_counts(schema, train_samples),
                                        label_totals=value_totals(schema, train_samples) or None)
    model.card = model.card.replace(training=cfg.learning_options())
    check_input_size(model)
    if cfg.sync_bn:
        model = use_sync_batchnorm(model, ctx)
    model.to(ctx.device)
    if cfg.channels_last:  # the CPU too: 1.08-1.40x per training step on 2 cores (scripts/bench_cpu_finetune.py)
        model.to(memory_format=torch.channels_last)
    ema = make_ema(cfg, model)
    if ckpt is not None:
        restore(model, ema, ckpt)
    return model, ema


def _restore_progress(run: TrainingRun, ckpt: dict[str, Any], resume: str | Path | None) -> None:
    """Optimizer, schedule, scaler, epoch and history of a resumed run."""
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.start_epoch = int(ckpt["epoch"]) + 1
    run.history = list(ckpt.get("history", []))
    run.best_score = float(ckpt.get("best_score", float("-inf")))
    if not run.dist.is_main or run.start_epoch >= run.cfg.epochs:
        return
    _logger.info("resuming from %s at epoch %d/%d", resume, run.start_epoch + 1, run.cfg.epochs)
    before = int(ckpt.get("world_size", 1))
    if before != run.dist.world_size:
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in run.model.modules())
        _logger.info("%s", describe_world_change(before, run.dist.world_size, run.cfg.batch_size,
                                                  per_process_bn=has_bn and not run.cfg.sync_bn))


def checkpoint_state(run: TrainingRun, epoch: int, *, resumable: bool = True) -> dict[str, Any]:
    """What a checkpoint stores besides the card and the weights it is used with (``model``).

    ``resumable=False`` (``best.pt``): only what inference and a new run from it need, without
    the optimizer state (as large as the weights again, twice over for AdamW).
    """
    state = {
        "config": run.cfg.to_dict(),
        "epoch": epoch,
        "history": run.history,
        "best_score": run.best_score,
        "world_size": run.dist.world_size,
        "data": run.data,
    }
    if not resumable:
        return state
    state.update(optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(),
                 scaler=run.scaler.state_dict() if run.amp else None, torchrun_run_id=launch_id())
    if run.ema is not None:  # "model" holds the EMA; the optimizer's weights are for --resume only
        state["training_model"] = run.model.state_dict()
    return state


def _start_checkpoint(cfg: TrainConfig) -> dict[str, Any] | None:
    """The attrtag checkpoint ``cfg.pretrained`` names (a new run starts from its weights), else None."""
    if cfg.pretrained in ("", "timm") or not Path(cfg.pretrained).is_file():
        return None  # timm's weights, or a missing file build_model names
    return load_if_checkpoint(cfg.pretrained)


def _pretrained_arg(cfg: TrainConfig) -> bool | str:
    if not cfg.pretrained:
        return False
    return True if cfg.pretrained == "timm" else cfg.pretrained
