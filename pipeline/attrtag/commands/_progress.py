"""Progress display for the CLI layer (tqdm on a terminal, quiet log lines otherwise)."""
from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm import tqdm


def tqdm_progress(iterable: Iterable[Any], desc: str, total: int | None) -> Iterable[Any]:
    """Wrap ``iterable`` in a progress bar; on a non-terminal stderr, update rarely (CI logs)."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
    )
