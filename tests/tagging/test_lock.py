"""One run at a time per output: a second writer is refused at once, a killed one blocks nothing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from attrtag.errors import OutputError
from attrtag.tagging import OutputMeta, RecordLayout, open_output, read_output
from attrtag._lock import OutputLock, lock_path
from tests.helpers import SCHEMA, make_checkpoint, run_cli, write_images

LAYOUT = RecordLayout(SCHEMA)
META = OutputMeta(LAYOUT, model="m.pt", model_sha256="a" * 64)
# A process that holds the lock of argv[1] until it is killed.
HOLDER = ("import sys, time\nfrom attrtag._lock import OutputLock\n"
          "OutputLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n")


def _records(start: int, n: int) -> list[dict]:
    probs = {g.name: np.full((n, len(g)), 1 / len(g)) for g in SCHEMA}
    return LAYOUT.records([f"{i}.jpg" for i in range(start, start + n)], probs)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """Another process holding ``tmp_path/tags.jsonl``; killed (SIGKILL) at the end if still alive."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "tags.jsonl")], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _in_another_thread(fn: object) -> BaseException | None:
    """What ``fn()`` raised when run in a thread of its own (None: nothing)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            raised.append(err)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return raised[0] if raised else None


def test_a_second_writer_is_refused_naming_the_holder_and_the_output_stays_whole(
    tmp_path: Path, holder: subprocess.Popen
) -> None:
    out = tmp_path / "tags.jsonl"
    for overwrite in (False, True):  # overwrite must not delete an output another run holds either
        with pytest.raises(OutputError) as err:
            open_output(out, META, overwrite=overwrite)
        text = str(err.value)
        assert f"out={out} is being written by another attrtag run (pid {holder.pid} on " in text, text
        assert "\n" not in text
    assert not out.exists() and not (tmp_path / "tags.jsonl.meta.json").exists()


def test_overwrite_leaves_an_output_held_by_another_thread_alone(tmp_path: Path) -> None:
    out = tmp_path / "tags.csv"
    with open_output(out, META) as w:
        w.write(_records(0, 3))
        err = _in_another_thread(lambda: open_output(out, META, overwrite=True))
        assert isinstance(err, OutputError) and "being written by another attrtag run" in str(err)
        w.write(_records(3, 2))
    assert [r["path"] for r in read_output(out)[1]] == [f"{i}.jpg" for i in range(5)]
    assert not lock_path(out).exists()  # released: nothing is left beside the output


def test_the_holding_thread_may_take_the_lock_again(tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    with OutputLock(out):
        with open_output(out, META) as w:  # what the CLI (outer) and the job (inner) do
            w.write(_records(0, 2))
        assert lock_path(out).exists()  # the outer hold still stands
        assert isinstance(_in_another_thread(lambda: OutputLock(out).acquire()), OutputError)
    assert not lock_path(out).exists()
    assert _in_another_thread(lambda: OutputLock(out).acquire().release()) is None


def test_a_killed_holder_blocks_nothing(tmp_path: Path, holder: subprocess.Popen) -> None:
    out = tmp_path / "tags.jsonl"
    with pytest.raises(OutputError, match="being written by another attrtag run"):
        open_output(out, META)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(out).exists()  # kill -9 leaves the file, not the lock
    with open_output(out, META) as w:
        w.write(_records(0, 2))
    assert len(read_output(out)[1]) == 2 and not lock_path(out).exists()


# A run that forks a worker (as PyTorch's DataLoader does) and is then killed; the worker lives on.
FORKING = ("import multiprocessing as mp, sys, time\nfrom attrtag._lock import OutputLock\n"
           "lock = OutputLock(sys.argv[1]).acquire()\n"
           "worker = mp.get_context('fork').Process(target=time.sleep, args=(600,))\nworker.start()\n"
           "print(worker.pid, flush=True)\ntime.sleep(600)\n")


def test_a_killed_holders_forked_worker_blocks_nothing(tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    run = subprocess.Popen([sys.executable, "-c", FORKING, str(out)], stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    worker = int(run.stdout.readline())
    try:
        with pytest.raises(OutputError, match="being written by another attrtag run"):
            open_output(out, META)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        os.kill(worker, 0)  # the worker is still alive: its copy of the descriptor must not hold the lock
        with open_output(out, META) as w:
            w.write(_records(0, 1))
    finally:
        for pid in (run.pid, worker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert len(read_output(out)[1]) == 1


def test_two_runs_on_one_output_record_every_image_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The first run is stopped inside its tagging loop; the second (the CLI) is refused meanwhile."""
    import attrtag

    model = make_checkpoint(tmp_path / "m.pt")
    write_images(tmp_path / "img", 6, size=32)
    out = tmp_path / "tags.jsonl"
    inside, go_on = threading.Event(), threading.Event()

    def progress(done: int, total: int, failed: int) -> None:
        inside.set()
        assert go_on.wait(60)

    def first() -> None:
        with attrtag.load(model, device="cpu", batch_size=2, workers=0) as tagger:
            tagger.tag_to(out, tmp_path / "img", progress=progress)

    run = threading.Thread(target=first)
    run.start()
    try:
        assert inside.wait(120)
        rc, stdout, err = run_cli(capsys, "tag", model, tmp_path / "img", "--out", out, "--workers", "0")
    finally:
        go_on.set()
        run.join()
    assert rc == 2 and stdout == "" and err.count("\n") == 1, err
    assert f"--out {out} is being written by another attrtag run (pid {os.getpid()} on " in err
    paths = [r["path"] for r in read_output(out)[1]]
    assert len(paths) == len(set(paths)) == 6
    rc, stdout, _ = run_cli(capsys, "tag", model, tmp_path / "img", "--out", out, "--workers", "0")
    assert rc == 0 and "tagged 0, failed 0, 6 already in" in stdout


def test_a_held_output_is_refused_before_ray_starts(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                     holder: subprocess.Popen) -> None:
    model = make_checkpoint(tmp_path / "m.pt")
    write_images(tmp_path / "img", 1, size=32)
    rc, _, err = run_cli(capsys, "tag", model, tmp_path / "img", "--out", tmp_path / "tags.jsonl", "--engine", "ray")
    assert rc == 2 and err.count("\n") == 1 and f"pid {holder.pid}" in err, err
