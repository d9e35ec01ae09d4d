"""One training that remembers what it saw: each training label's probabilities and margin, every epoch.

Training dynamics (area under the margin, Pleiss et al. 2020): a network fits the labels that
agree with the images first and a wrong label late, if at all, so the margin of a wrong label
(its logit minus the largest other logit) stays low, often negative, through training. The
record is free: the training step computes these logits anyway. Kept per image and group, in
the order of the samples given:

- ``probs``: the mean over epochs of each value's probability (softmax of an exclusive group,
  sigmoid of each multi-label value), what :mod:`.scores` reads;
- ``margins``: the mean logit margin of the given label (AUM; a multi-label value's margin is
  its logit when present, minus it when absent), kept for comparison in the benchmark.

The run is an ordinary ``attrtag train`` run (:func:`attrtag.training.run.prepare_run`, the same
optimizer, schedule, augmentation and :func:`~attrtag.training.loop.train_batch`) on one process,
without validation or checkpoints; the epoch loop is written out here because it must know
which images each batch held. After training, :func:`train_and_record` also predicts the images
held out of it (out-of-fold predictions, :mod:`.folds`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..data.loader import epoch_batches, make_loader
from ..data.manifest import Manifest, Sample
from ..evaluation.evaluate import predict
from ..runtime.torch_backend import TorchPredictor
from ..schema import Schema
from ..training.config import TrainConfig
from ..training.loop import train_batch
from ..training.run import TrainingRun, prepare_run

_logger = logging.getLogger(__name__)

Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]


@dataclass
class Record:
    """Sums over the epochs of one training's images (rows in the order of its samples)."""

    probs: dict[str, np.ndarray]  # group -> (N, n_g) summed probabilities
    margins: dict[str, np.ndarray]  # group -> (N,) exclusive, (N, n_g) multi-label; summed margins
    seen: np.ndarray  # (N,) epochs each image was trained in

    @classmethod
    def empty(cls, schema: Schema, n: int) -> "Record":
        return cls(probs={g.name: np.zeros((n, len(g))) for g in schema},
                   margins={g.name: np.zeros((n, len(g)) if g.multi else n) for g in schema},
                   seen=np.zeros(n))

    def add(self, schema: Schema, rows: np.ndarray, logits: dict[str, torch.Tensor], targets: np.ndarray) -> None:
        """One batch: ``rows`` its images' positions, ``logits`` the model's, ``targets`` their target rows."""
        self.seen[rows] += 1
        slices = schema.multi_slices
        for j, g in enumerate(schema):
            z = logits[g.name].detach().float().cpu().numpy().astype(np.float64)
            if g.multi:
                self.probs[g.name][rows] += 1.0 / (1.0 + np.exp(-z))
                state = targets[:, slices[g.name]]
                self.margins[g.name][rows] += np.where(state == 1, z, np.where(state == 0, -z, 0.0))
                continue
            e = np.exp(z - z.max(1, keepdims=True))
            self.probs[g.name][rows] += e / e.sum(1, keepdims=True)
            y = targets[:, j]
            known = y >= 0
            if known.any() and z.shape[1] > 1:
                zk, yk = z[known], y[known]
                own = zk[np.arange(len(yk)), yk]
                zk[np.arange(len(yk)), yk] = -np.inf
                self.margins[g.name][rows[known]] += own - zk.max(1)

    def means(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Mean probabilities and margins per epoch seen (NaN for an image never trained on)."""
        n = np.where(self.seen > 0, self.seen, np.nan)
        probs = {g: p / n[:, None] for g, p in self.probs.items()}
        margins = {g: m / (n[:, None] if m.ndim == 2 else n) for g, m in self.margins.items()}
        return probs, margins


class _Recorder(nn.Module):
    """The training step's network, keeping its last output (the logits of the batch just trained)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.last: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        self.last = {k: v.detach() for k, v in out.items()}
        return out


@dataclass
class Trained:
    """What :func:`train_and_record` returns."""

    record: Record
    held_out: Any  # evaluation Predictions of the held-out samples (None when none were given)
    failed: dict[str, str]  # training images that could not be decoded


def train_and_record(
    cfg: TrainConfig, schema: Schema, train: Sequence[Sample], held_out: Sequence[Sample] = (), *,
    source: str = "manifest", desc: str = "", progress: Progress | None = None,
) -> Trained:
    """Train on ``train`` as ``attrtag train`` would, recording each image's training dynamics,
    then predict ``held_out`` with the trained weights.

    Args:
        cfg: the training options (one process; ``cfg.device`` is where it runs).
        schema: the groups.
        train: the images to train on (their split is ignored: all are trained on, none validated).
        held_out: images to predict after training (not trained on).
        source: the manifest, named in errors.
        desc: the progress bar's prefix (e.g. ``fold 1/2``).
        progress: optional progress wrapper.
    """
    manifest = Manifest(source=source, schema=schema, samples=[replace(s, split="train") for s in train])
    run = prepare_run(cfg, schema, manifest, Path("."), None)  # writes nothing: no checkpoint is saved
    record = Record.empty(schema, len(train))
    recorder = _Recorder(run.net)
    run.net = recorder
    for epoch in range(cfg.epochs):
        _epoch(run, epoch, record, recorder, f"{desc} epoch {epoch + 1}/{cfg.epochs}".strip(), progress)
    preds = None
    if held_out:
        run.output.eval()
        predictor = TorchPredictor(run.output, device=str(run.device))
        preds = predict(predictor, list(held_out), batch_size=cfg.batch_size * 2, workers=cfg.workers,
                        progress=progress)
    return Trained(record=record, held_out=preds, failed=dict(run.failed))


def _epoch(run: TrainingRun, epoch: int, record: Record, recorder: _Recorder, desc: str,
           progress: Progress | None) -> None:
    """One epoch as :func:`attrtag.training.loop.train_one_epoch` runs it (same seeds, same batches)."""
    cfg = run.cfg
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)
    run.model.train()
    batches = epoch_batches(len(run.train_set), cfg.batch_size, steps=run.steps_per_epoch, seed=cfg.seed, epoch=epoch)
    loader = make_loader(run.train_set, batches=batches, workers=cfg.workers, epoch=epoch,
                         pin_memory=run.device.type == "cuda")
    it: Iterable[Any] = progress(loader, desc, len(batches)) if progress else loader
    for batch in it:
        for i, reason in batch.failed:
            if run.train_samples[i].path not in run.failed:
                run.failed[run.train_samples[i].path] = reason
                _logger.warning("skipping undecodable training image: %s", reason)
        recorder.last = None
        if len(batch.targets) == 0 or train_batch(run, batch) is None or recorder.last is None:
            continue
        record.add(run.schema, batch.indices.numpy(), recorder.last, batch.targets.numpy())
