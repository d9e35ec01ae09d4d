"""Progress display for the CLI layer (tqdm on a terminal, quiet log lines otherwise)."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable, Iterable, Iterator

#: Seconds between progress lines when stderr is not a terminal.
LOG_INTERVAL = 30.0


def tqdm_progress(iterable: Iterable[Any], desc: str, total: int | None) -> Iterable[Any]:
    """Wrap ``iterable`` in a progress bar on a terminal; in a log (stderr not a terminal) a plain
    :class:`LineProgress` line every :data:`LOG_INTERVAL` seconds instead, since even a rare tqdm
    bar leaves carriage returns and a "0%|" line in the log of every epoch."""
    if not sys.stderr.isatty():
        return iterable if not total else _logged(iterable, LineProgress(total, desc=desc, unit="batch", interval=LOG_INTERVAL))
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.5)


def _logged(iterable: Iterable[Any], progress: "LineProgress") -> Iterator[Any]:
    for item in iterable:
        yield item
        progress.update()


class LineProgress:
    """Progress of a counted job as a plain stderr line every ``interval`` seconds.

    For logs (``nohup``, a batch scheduler, CI): a tqdm bar there is either off or a stream of
    carriage returns, and a tagging run of hours would show nothing until its last line.
    Duck-types the part of tqdm the CLI uses (``update``, ``set_postfix_str``).
    """

    def __init__(
        self, total: int, *, desc: str, unit: str, interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.interval, self.clock = total, desc, unit, interval, clock
        self.n = 0
        self.postfix = ""
        self.start = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval and self.n < self.total:
            self.last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def set_postfix_str(self, s: str, refresh: bool = False) -> None:
        self.postfix = s

    def line(self, now: float) -> str:
        """``tagging: 1,200 of 5,000 img (24%), 17.6 img/s, failed 2, about 3.6 min left``"""
        rate = self.n / max(now - self.start, 1e-9)
        left = (self.total - self.n) / rate if rate > 0 else float("inf")
        eta = f"{left:.0f} s" if left < 120 else f"{left / 60:.1f} min" if left < 7200 else f"{left / 3600:.1f} h"
        return (f"{self.desc}: {self.n:,} of {self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%), "
                f"{rate:.1f} {self.unit}/s" + (f", {self.postfix}" if self.postfix else "") + f", about {eta} left")


class _NoProgress:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str, refresh: bool = False) -> None:
        pass


@contextlib.contextmanager
def count_progress(total: int, *, desc: str, unit: str = "img", disable: bool = False) -> Iterator[Any]:
    """Progress for ``total`` items: a tqdm bar on a terminal (log records printed above it),
    a :class:`LineProgress` line every :data:`LOG_INTERVAL` seconds otherwise, nothing when
    ``disable`` or ``total`` is 0.

    tqdm is imported only for the bar (0.05 s of a short run's start-up).
    """
    if disable or not total:
        yield _NoProgress()
    elif sys.stderr.isatty():
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        bar = tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, file=sys.stderr)
        with bar, logging_redirect_tqdm():
            yield bar
    else:
        yield LineProgress(total, desc=desc, unit=unit, interval=LOG_INTERVAL)


@contextlib.contextmanager
def progress_to(desc: str, *, unit: str = "img", disable: bool = False) -> Iterator[Callable[..., None]]:
    """A ``progress(done, total, failed=0)`` callback for the API's long jobs, shown as
    :func:`count_progress` shows it; the display starts at the first call (when the total is known)."""
    with contextlib.ExitStack() as stack:
        bar: list[Any] = []

        def update(done: int, total: int, failed: int = 0) -> None:
            if not bar:
                bar.append(stack.enter_context(count_progress(total, desc=desc, unit=unit, disable=disable)))
            if failed:
                bar[0].set_postfix_str(f"failed {failed}", refresh=False)
            bar[0].update(done - bar[0].n)

        yield update
