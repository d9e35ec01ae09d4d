"""``attrtag train`` as a torchrun worker, with two test probes (run by test_distributed.py).

    python -m torch.distributed.run --nproc_per_node 2 tests/training/ddp_worker.py train --schema ...

Probes, set by environment variables:

- ``ATTRTAG_TEST_WRITES=FILE``: every call of the loop's checkpoint and history writers appends
  ``<rank> <writer>`` to FILE, so the test can see which processes wrote.
- ``ATTRTAG_TEST_KILL=RANK:STEP``: on torchrun's first attempt, process RANK sends itself
  SIGKILL when it starts its STEP-th training step (1-based, counted over the whole run).
"""
from __future__ import annotations

import os
import signal
import sys

import attrtag.training.loop as loop
from attrtag.cli import main

RANK = os.environ.get("RANK", "0")


def _recording(name, fn):
    path = os.environ["ATTRTAG_TEST_WRITES"]

    def wrapper(*args, **kwargs):
        with open(path, "a") as f:
            f.write(f"{RANK} {name}\n")
        return fn(*args, **kwargs)

    return wrapper


def _killing(rank: str, step: int, fn):
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if RANK == rank and calls == step and os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0":
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)

    return wrapper


if os.environ.get("ATTRTAG_TEST_WRITES"):
    loop.save_checkpoint = _recording("save_checkpoint", loop.save_checkpoint)
    loop.write_history = _recording("write_history", loop.write_history)
if os.environ.get("ATTRTAG_TEST_KILL"):
    rank, _, step = os.environ["ATTRTAG_TEST_KILL"].partition(":")
    loop.train_step = _killing(rank, int(step), loop.train_step)

sys.exit(main(sys.argv[1:]))
