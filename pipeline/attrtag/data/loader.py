"""The training dataset: decoded images, albumentations augmentation, masked targets.

Training augments with albumentations (random resized crop, horizontal flip, colour jitter
without hue shift). Evaluation does not come through here: it uses the deterministic
:class:`attrtag.data.preprocess.Preprocessing` through :mod:`attrtag.data.batches`, the same code
tagging runs, so validation numbers describe what users get.

Augmentation is seeded per (run seed, epoch, sample index), never by worker state: the same
epoch yields the same tensors whatever ``--workers`` is, which is what makes ``--resume``
reproduce an uninterrupted run.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ImageDecodeError
from .images import load_rgb
from .manifest import Sample
from .preprocess import Preprocessing
from ..schema import Schema

_logger = logging.getLogger(__name__)

_CV2_INTERP = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "box": cv2.INTER_AREA,
    "hamming": cv2.INTER_LINEAR,
}


def train_transform(prep: Preprocessing, *, scale: tuple[float, float] = (0.5, 1.0)) -> A.Compose:
    """Training augmentation ending in normalisation (HWC float32 out).

    ``hue=0``: colour is itself a label in many schemas (e.g. baseColour), and a hue shift
    would silently turn red into green while the label stays "red".
    """
    return A.Compose(
        [
            A.RandomResizedCrop(size=prep.input_size, scale=scale, interpolation=_CV2_INTERP[prep.interpolation]),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0, p=0.8),
            A.Normalize(mean=prep.mean, std=prep.std, max_pixel_value=255.0),
        ]
    )


def train_decode_size(prep: Preprocessing, *, scale: tuple[float, float] = (0.5, 1.0)) -> tuple[int, int]:
    """``(width, height)`` a training image is decoded at, at least (JPEGs at a reduced DCT scale).

    The smallest crop :func:`train_transform` takes is ``scale[0]`` of the area at aspect 3/4,
    whose short side is ``sqrt(scale[0] * 3/4)`` (0.61) of the image's: decoding the image to
    ``input_size / 0.61`` keeps even that crop at full resolution, so training sees the pixels
    a full decode would give it while a 12-megapixel photo still decodes at 1/8 scale.
    """
    side = math.sqrt(scale[0] * 3 / 4)
    h, w = prep.input_size
    return math.ceil(w / side), math.ceil(h / side)


class ImageDataset(Dataset):
    """Samples -> ``(augmented image [3,H,W] float32, targets [W] int64, index)``.

    ``targets`` is the sample's target row (:meth:`attrtag.data.manifest.Sample.targets`): one
    label index per group, then the multi-label groups' values.

    An image that cannot be decoded yields ``(None, None, index, reason)`` instead of raising;
    :func:`collate` drops it and reports it, so one corrupt file does not stop training.
    """

    def __init__(self, samples: Sequence[Sample], prep: Preprocessing, schema: Schema, *, seed: int = 0) -> None:
        self.samples = list(samples)
        self.schema = schema
        self.prep = prep
        self.seed = int(seed)
        self.epoch = 0
        self.aug = train_transform(prep)
        self.decode_size = train_decode_size(prep)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before building the loader's iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        sample = self.samples[i]
        try:
            img = load_rgb(sample.path, min_size=self.decode_size)
        except ImageDecodeError as err:
            return None, None, i, str(err)
        # Seeded per sample, not per worker, so results do not depend on --workers.
        self.aug.set_random_seed(hash((self.seed, self.epoch, i)) & 0x7FFFFFFF)
        x = self.aug(image=np.asarray(img, dtype=np.uint8))["image"].transpose(2, 0, 1)
        x = np.ascontiguousarray(x, dtype=np.float32)
        return torch.from_numpy(x), torch.tensor(sample.targets(self.schema), dtype=torch.long), i, None


@dataclass
class Batch:
    """A collated batch; ``failed`` lists ``(index, reason)`` of samples that could not be decoded."""

    images: torch.Tensor  # (B, 3, H, W)
    targets: torch.Tensor  # (B, W) target rows (Schema.multi_slices), -1 = no label
    indices: torch.Tensor  # (B,) positions in the dataset
    failed: list[tuple[int, str]]


def collate(samples: list[tuple[Any, ...]]) -> Batch:
    """Stack the decodable samples; keep the failures for reporting."""
    ok = [s for s in samples if s[0] is not None]
    failed = [(s[2], s[3]) for s in samples if s[0] is None]
    if not ok:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), failed)
    return Batch(
        images=torch.stack([s[0] for s in ok]),
        targets=torch.stack([s[1] for s in ok]),
        indices=torch.tensor([s[2] for s in ok]),
        failed=failed,
    )


def epoch_batches(
    n: int, batch_size: int, *, steps: int, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This process's part of each global batch of one epoch (dataset indices).

    The epoch's order is one permutation of ``range(n)`` seeded by ``(seed, epoch)``; global
    batch ``t`` is ``perm[t*B:(t+1)*B]`` and process ``rank`` of ``world_size`` takes a
    contiguous slice of it (sizes differ by at most one). The union over processes of step
    ``t`` is the batch one process would train on: ``batch_size`` is the global batch, and the
    data order does not depend on the number of processes (DistributedSampler's idea, with the
    global batch held fixed instead of the per-process one).

    Args:
        n: dataset size.
        batch_size: the global batch.
        steps: global batches in the epoch (the last one may be short).
        seed, epoch: the order's seed.
        rank, world_size: this process and the number of processes.
    """
    gen = torch.Generator()
    gen.manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    out = []
    for t in range(steps):
        batch = perm[t * batch_size : (t + 1) * batch_size]
        lo, hi = len(batch) * rank // world_size, len(batch) * (rank + 1) // world_size
        out.append(batch[lo:hi])
    return out


def make_loader(
    dataset: ImageDataset, *, batches: Sequence[list[int]], workers: int, epoch: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader over ``batches`` (see :func:`epoch_batches`) with ``epoch``'s augmentation."""
    gen = torch.Generator()  # seeds the workers' base seed without drawing from the global RNG
    gen.manual_seed(epoch)
    dataset.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_sampler=list(batches),
        num_workers=workers,
        collate_fn=collate,
        generator=gen,
        pin_memory=pin_memory,
        persistent_workers=False,  # workers must see set_epoch; they are re-created each epoch
    )
