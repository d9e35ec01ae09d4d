"""The grouped head: one linear layer whose outputs are split into named attribute groups."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


class GroupedHead(nn.Module):
    """``Linear(in_features, sum(sizes))`` split into ``{group: logits [B, n_group]}``.

    One matmul instead of one layer per group: the cost of G heads is that of one. The head
    knows nothing of losses, thresholds or label names beyond the group sizes.
    """

    def __init__(self, in_features: int, groups: Mapping[str, int], *, drop_rate: float = 0.0) -> None:
        super().__init__()
        if not groups:
            raise ValueError("GroupedHead needs at least one group")
        self.names = tuple(groups)
        self.sizes = tuple(int(n) for n in groups.values())
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, sum(self.sizes))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.fc(self.drop(features))  # (B, sum(sizes))
        return dict(zip(self.names, torch.split(logits, self.sizes, dim=1)))
