"""A run's history: one row per epoch, written as JSON, CSV and a plot after every epoch."""
from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from .._files import write_text

_logger = logging.getLogger(__name__)


def write_history(run_dir: Path, history: Sequence[dict[str, Any]], groups: Sequence[str]) -> None:
    """``history.json``, ``history.csv`` and ``curves.png`` in ``run_dir`` (each written atomically)."""
    write_text(run_dir / "history.json", json.dumps(list(history), indent=1))
    write_text(run_dir / "history.csv", history_csv(history))
    try:
        from ..evaluation.plots import plot_history  # matplotlib only when a run writes its curves

        plot_history(history, groups, run_dir / "curves.png")
    except Exception as err:  # a plotting failure must not end a training run
        _logger.warning("could not draw training curves: %s", err)


def history_csv(history: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV text; columns are the union of the rows' keys, in first-seen order."""
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    return buf.getvalue()
