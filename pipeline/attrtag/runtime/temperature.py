"""Temperature scaling of probabilities: one temperature per group, as the model card stores it.

Guo et al. 2017 ("On Calibration of Modern Neural Networks"): dividing a model's logits by one
temperature T > 0 fitted on held-out images corrects over-confidence (T > 1) or under-confidence
(T < 1) and keeps the argmax, so accuracy does not move. Both backends output probabilities, so
the logits are recovered from them: ``log p`` for an exclusive group (``softmax(log p / T)`` equals
``softmax(z / T)``: the log-sum-exp constant cancels) and ``logit(p)`` for each value of a
multi-label group. Fitting lives in :mod:`attrtag.evaluation.temperature`; this is the part
every predictor runs, so numpy only (the ONNX path has no torch).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..schema import Schema

#: float32 softmax underflows to 0 for very unlikely values; log 0 would turn into NaN once scaled.
LOG_FLOOR = 1e-30
#: float32 sigmoid outputs reach exactly 0 and 1 (logit about +-17); clipped so the logit stays finite.
LOGIT_CLIP = 1e-7


def probs_to_logits(probs: np.ndarray, *, multi: bool) -> np.ndarray:
    """Logits (float64) that give back ``probs``: ``log p`` per row (exclusive) or ``logit(p)`` per value."""
    p = np.asarray(probs, dtype=np.float64)
    if multi:
        p = np.clip(p, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
        return np.log(p) - np.log1p(-p)
    return np.log(np.clip(p, LOG_FLOOR, 1.0))


def logits_to_probs(logits: np.ndarray, *, multi: bool) -> np.ndarray:
    """Softmax over the last axis (exclusive) or an element-wise sigmoid (multi-label), float64."""
    if multi:
        return 0.5 * (1.0 + np.tanh(0.5 * logits))  # the sigmoid without overflow warnings for large |z|
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def apply_temperature(probs: np.ndarray, temperature: float, *, multi: bool) -> np.ndarray:
    """``probs`` re-tempered: ``softmax(log p / T)`` (exclusive) or ``sigmoid(logit(p) / T)`` (multi-label).

    Args:
        probs: ``[N, n]`` probabilities of one group (rows sum to 1 for an exclusive group).
        temperature: T > 0; 1 returns ``probs`` itself, unchanged.
        multi: the group is multi-label (each value its own sigmoid).

    Returns:
        float32 ``[N, n]``; an exclusive group's rows sum to 1.
    """
    if temperature == 1.0:
        return probs
    scaled = probs_to_logits(probs, multi=multi) / float(temperature)
    return logits_to_probs(scaled, multi=multi).astype(np.float32)


def apply_temperatures(probs: Mapping[str, np.ndarray], schema: Schema,
                       temperatures: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Each group's probabilities at its temperature (groups without one pass through unchanged).

    Args:
        probs: ``{group: [N, n_group]}`` as a predictor returns them.
        schema: says which groups are multi-label.
        temperatures: ``{group: T}`` (:attr:`attrtag.card.ModelCard.group_temperatures`).
    """
    return {g: apply_temperature(p, temperatures.get(g, 1.0), multi=schema[g].multi) for g, p in probs.items()}
