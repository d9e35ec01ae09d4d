"""Progress of long CLI jobs: a bar on a terminal, plain lines in logs, nothing when turned off."""
from __future__ import annotations

import pytest

from attrtag.commands import _progress
from attrtag.commands._progress import LineProgress, count_progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_line_progress_prints_counts_rate_and_time_left_once_per_interval(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    bar = LineProgress(10_000, desc="tagging", unit="img", interval=30.0, clock=clock)
    clock.now += 10
    bar.update(500)
    assert capsys.readouterr().err == ""  # not yet 30 s
    clock.now += 30
    bar.set_postfix_str("failed 3")
    bar.update(1500)  # 2,000 in 40 s: 50 img/s, 8,000 left: 160 s
    assert capsys.readouterr().err == "tagging: 2,000 of 10,000 img (20%), 50.0 img/s, failed 3, about 2.7 min left\n"
    clock.now += 5
    bar.update(100)
    assert capsys.readouterr().err == ""  # 5 s after the last line
    clock.now += 600
    bar.update(7900)
    assert capsys.readouterr().err == ""  # done: the command's own summary line follows


def test_count_progress_without_a_terminal_logs_lines_and_nothing_when_disabled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)
    with count_progress(3, desc="thumbnails") as bar:  # pytest's captured stderr is not a terminal
        assert isinstance(bar, LineProgress)
        bar.update(1)
        bar.update(2)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("thumbnails: 1 of 3 img (33%), ")
    for disable, total in ((True, 3), (False, 0)):
        with count_progress(total, desc="x", disable=disable) as bar:
            bar.update(3)
            bar.set_postfix_str("failed 1")
        assert capsys.readouterr().err == ""


def test_a_redirected_log_gets_no_progress_bar_only_plain_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # tqdm, even at a 30 s interval, wrote "epoch 1/2:   0%|" and carriage returns into logs
    assert list(_progress.tqdm_progress(range(4), "epoch 1/2", 4)) == [0, 1, 2, 3]
    assert capsys.readouterr().err == ""  # a short loop: nothing at all
    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)
    assert list(_progress.tqdm_progress(iter(range(3)), "eval", 3)) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "\r" not in err and "|" not in err and err.splitlines()[0].startswith("eval: 1 of 3 batch (33%)")
    assert list(_progress.tqdm_progress(iter("ab"), "eval", None)) == ["a", "b"]  # no total: passed through
