"""What zero-shot scoring returns: class scores, probabilities, ranking and each term's contribution.

Built by :class:`~attrtag.zeroshot.classifier.ClassScorer`; read by tagging (a record's class
fields), evaluation and calibration. Pure numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ZeroShotResult:
    """Zero-shot scores for ``N`` images and ``C`` classes.

    Attributes:
        class_names: class names, in rule order (the column order of every array).
        term_names: what each term is, in schema order (the last axis of ``terms``): a
            constrained exclusive group by its name, a multi-label value by ``g=v`` (listed
            present) or ``g!=v`` (listed absent).
        scores: ``(N, C)`` mean log match over each class's terms, plus ``offsets``.
        probs: ``(N, C)`` ``softmax(scores / temperature)``.
        ranking: ``(N, C)`` class indices, best first.
        terms: ``(N, C, T)`` log match per term (minus the log prior when priors are given),
            NaN where the class does not have the term.
        unknown: ``(N,)`` True where the best normalised probability is below the threshold.
        k: how many classes :attr:`top_k` keeps.
        offsets: ``(C,)`` added to each class's score: ``-gamma`` for seen classes under
            calibrated stacking, 0 otherwise.
    """

    class_names: tuple[str, ...]
    term_names: tuple[str, ...]
    scores: np.ndarray
    probs: np.ndarray
    ranking: np.ndarray
    terms: np.ndarray
    unknown: np.ndarray
    k: int
    offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def group_names(self) -> tuple[str, ...]:
        """The name :attr:`term_names` had before multi-label groups (the same tuple without them)."""
        return self.term_names

    @property
    def top1(self) -> np.ndarray:
        """``(N,)`` index of the best class (also where ``unknown`` is set)."""
        return self.ranking[:, 0]

    @property
    def top_k(self) -> np.ndarray:
        """``(N, k)`` indices of the ``k`` best classes, best first."""
        return self.ranking[:, : self.k]

    @property
    def top_k_probs(self) -> np.ndarray:
        """``(N, k)`` normalised probabilities of :attr:`top_k`."""
        return np.take_along_axis(self.probs, self.top_k, axis=1)

    @property
    def predicted(self) -> tuple[str | None, ...]:
        """Best class name per image, ``None`` where the image is ``unknown``."""
        return tuple(None if u else self.class_names[c] for c, u in zip(self.top1, self.unknown))

    def ranked_names(self, i: int) -> tuple[str, ...]:
        """All class names for image ``i``, best first."""
        return tuple(self.class_names[c] for c in self.ranking[i])

    def top_k_names(self, i: int) -> list[tuple[str, float]]:
        """``[(class, probability), ...]`` of the ``k`` best classes for image ``i``."""
        return [(self.class_names[c], float(self.probs[i, c])) for c in self.top_k[i]]

    def explain(self, i: int, class_index: int | None = None) -> dict[str, float]:
        """Each term's contribution to one class's score for image ``i``.

        Args:
            i: image index.
            class_index: the class (default: the best one for this image).

        Returns:
            ``{term: term / n_terms}`` in schema order (a term: an exclusive group, or ``g=v`` /
            ``g!=v`` for a value a class lists present / absent in multi-label group ``g``); the
            values add up to ``scores[i, class_index]`` minus the class's calibration offset.
            The most negative entry is the attribute that argues most against the class.
        """
        c = int(self.ranking[i, 0]) if class_index is None else class_index
        row = self.terms[i, c]
        n = int(np.count_nonzero(~np.isnan(row)))
        return {g: float(t) / n for g, t in zip(self.term_names, row) if not np.isnan(t)}

    @property
    def explanations(self) -> tuple[dict[str, float], ...]:
        """:meth:`explain` of the best class, for every image."""
        return tuple(self.explain(i) for i in range(len(self)))
