"""Training on two processes (torchrun, gloo, CPU): exact loss, restarts, rank-0 writes, validation once.

The torchrun runs go through ``tests/training/ddp_worker.py`` (``attrtag train`` plus probes that
record who writes files and kill a process mid-epoch) or ``python -m attrtag`` itself. test_vit
(LayerNorm: its forward does not depend on the batch) makes one process with the whole batch
and two processes with half each comparable to float rounding.
"""
from __future__ import annotations

import csv
import os
from typing import Any
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from attrtag.cli import main
from attrtag.data.loader import Batch, epoch_batches
from attrtag.data.manifest import label_counts, read_manifest
from attrtag.errors import AttrtagError
from attrtag.evaluation.evaluate import Predictions, evaluate, predict, val_loss
from attrtag.model import load_checkpoint, model_from_checkpoint
from attrtag.runtime.torch_backend import TorchPredictor
from attrtag.schema import Schema
from attrtag.training.config import TrainConfig
from attrtag.training.distributed import DistContext
from attrtag.training.loop import prepare_run, train, train_batch

from tests.helpers import make_dataset, make_multilabel_dataset

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="no gloo in this torch"
)

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
# test_vit at its own 160 px; 48 training images, so 6 global batches of 8 per epoch.
VIT = dict(backbone="test_vit", epochs=2, batch_size=8, lr=1e-3, warmup_epochs=0.5, workers=0)
STEPS = 48 // 8


def cli_flags(options: dict) -> list[str]:
    return [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def torchrun(args: list[str], logs: Path, *, max_restarts: int = 0, module: bool = False,
             env: dict | None = None, nproc: int = 2) -> dict[tuple[int, int], tuple[str, str]]:
    """Run ``nproc`` processes; returns ``{(attempt, rank): (stdout, stderr)}`` of the workers."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--max-restarts={max_restarts}", "--log-dir", str(logs), "--redirects", "3"]
    cmd += ["-m", "attrtag"] if module else [str(WORKER)]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "pipeline"), str(ROOT / "export")]),
                "OMP_NUM_THREADS": "1", **(env or {})}  # one thread per process: 2 processes, 2 cores
    proc = subprocess.run(cmd + args, env=full_env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    out = {}
    for f in sorted(logs.glob("*/attempt_*/*/stdout.log")):
        attempt, rank = int(f.parent.parent.name.split("_")[1]), int(f.parent.name)
        out[(attempt, rank)] = (f.read_text(), f.with_name("stderr.log").read_text())
    assert proc.returncode == 0, proc.stderr[-2000:] + "".join(e[-3000:] for _, e in out.values())
    return out


def weights_diff(a: Path, b: Path) -> float:
    """Largest difference between two checkpoints' parameters, attention key biases left out.

    The key bias has a gradient that is zero in exact arithmetic (softmax ignores a shift shared
    by all keys), so it only ever receives float noise, which AdamW scales up to steps of about
    ``lr``: two one-process runs with 1 and 2 threads differ there by 3e-4 as well. It changes
    no output, which :func:`outputs_diff` checks.
    """
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    diffs = []
    for k in wa:
        d = (wa[k].double() - wb[k].double()).abs()
        if k.endswith("attn.qkv.bias"):  # (q, k, v) biases, each of the embedding size
            n = d.numel() // 3
            d = torch.cat([d[:n], d[2 * n:]])
        diffs.append(d.max().item())
    return max(diffs)


def outputs_diff(a: Path, b: Path) -> float:
    """Largest difference between two checkpoints' logits on the same random batch."""
    x = torch.randn(4, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        la, lb = (model_from_checkpoint(load_checkpoint(p)).eval()(x) for p in (a, b))
    return max((la[g] - lb[g]).abs().max().item() for g in la)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """61 images (48 train, 13 val: odd, so padding would show); 'band' labelled on 4 training images only."""
    schema, manifest = make_dataset(tmp_path_factory.mktemp("ddp"), n=61, missing=0.2, seed=5)
    rows = list(csv.DictReader(open(manifest)))
    train_rows = [r for r in rows if r["split"] == "train"]
    for i, r in enumerate(train_rows):
        r["band"] = r["band"] if i in (2, 11, 29, 40) else ""
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return schema, manifest


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory) -> tuple[Path, Path]:
    """A one-process run (this process) with the global batch: its last.pt and its epoch-1 last.pt."""
    out = tmp_path_factory.mktemp("one")
    schema = Schema.load(data[0])

    def keep_epoch_1(row, metrics):
        if row["epoch"] == 1:
            shutil.copytree(out / "run", out / "epoch1")

    train(TrainConfig.from_dict(VIT), schema, read_manifest(data[1], schema), out / "run", on_epoch=keep_epoch_1)
    return out / "run" / "last.pt", out / "epoch1" / "last.pt"


@pytest.fixture(scope="module")
def two_processes(data, tmp_path_factory) -> tuple[Path, dict, list[str]]:
    """The same run on two processes: run folder, worker logs, and the writes each process made."""
    tmp = tmp_path_factory.mktemp("two")
    writes = tmp / "writes.txt"
    logs = torchrun(["train", "--schema", str(data[0]), "--manifest", str(data[1]), "--out", str(tmp / "run"),
                     *cli_flags(VIT)], tmp / "logs", env={"ATTRTAG_TEST_WRITES": str(writes)})
    return tmp / "run", logs, writes.read_text().splitlines()


def test_the_data_exercises_a_process_without_labels_for_a_group(data):
    # The equality below means something only if some step gives one process no 'band' label
    # while the other has some, and some global batch has none at all (count 0 -> term 0).
    schema = Schema.load(data[0])
    train_samples = read_manifest(data[1], schema).split("train")
    band = schema.group_index("band")
    one_sided = global_zero = 0
    for epoch in range(VIT["epochs"]):
        halves = [epoch_batches(48, 8, steps=STEPS, seed=0, epoch=epoch, rank=r, world_size=2) for r in (0, 1)]
        for h0, h1 in zip(*halves):
            n0, n1 = (sum(train_samples[i].labels[band] >= 0 for i in h) for h in (h0, h1))
            one_sided += (n0 == 0) != (n1 == 0)
            global_zero += n0 == n1 == 0
    assert one_sided >= 2 and global_zero >= 2


def test_two_processes_take_the_steps_of_one_process_with_the_whole_batch(data, one_process, two_processes):
    run, _, _ = two_processes
    assert weights_diff(one_process[0], run / "last.pt") < 1e-5
    assert outputs_diff(one_process[0], run / "last.pt") < 1e-5
    a, b = load_checkpoint(one_process[0]), load_checkpoint(run / "last.pt")
    assert [h["train_loss"] for h in b["history"]] == pytest.approx([h["train_loss"] for h in a["history"]], rel=1e-5)
    assert [h["processes"] for h in b["history"]] == [2, 2] and b["world_size"] == 2
    assert [h["train_images"] for h in b["history"]] == [48, 48]  # global images, not one process's
    schema = Schema.load(data[0])
    # The card's label counts are those of the whole training split, not of one process's shard.
    assert b["card"].label_counts == label_counts(schema, read_manifest(data[1], schema).split("train"))


def test_only_rank_0_prints_and_writes(two_processes):
    _, logs, writes = two_processes
    assert set(logs) == {(0, 0), (0, 1)}
    assert {w.split()[0] for w in writes} == {"0"}
    assert {w.split()[1] for w in writes} == {"save_checkpoint", "write_history"}
    out0, err0 = logs[(0, 0)]
    out1, err1 = logs[(0, 1)]
    assert "epoch 2/2: train loss" in out0 and "on 2 processes" in out0 and "label coverage" in out0
    assert out1 == ""
    # Progress in a log is a plain line every 30 s (none in a run this short), never a bar; rank 1 shows none.
    assert "\r" not in err0 and "epoch" not in err1
    assert "INFO" not in err1


def test_validation_scores_every_val_image_once_as_one_process_would(data, two_processes):
    run, _, _ = two_processes
    schema = Schema.load(data[0])
    manifest = read_manifest(data[1], schema)
    val = manifest.split("val")
    last = load_checkpoint(run / "last.pt")["history"][-1]
    single = evaluate(TorchPredictor.from_checkpoint(run / "last.pt", device="cpu"), manifest, split="val", workers=0)
    assert len(single.predictions.samples) == len(val) == 13
    for j, m in enumerate(single.metrics):
        assert last[f"val_n/{m.group}"] == m.labelled == sum(s.labels[j] >= 0 for s in val)  # none twice
        assert last[f"val_acc/{m.group}"] == m.accuracy and last[f"val_f1/{m.group}"] == m.macro_f1
    # The history's val_loss is the model's own, before the temperatures fitted after it: raw probabilities.
    raw = predict(TorchPredictor.from_checkpoint(run / "last.pt", device="cpu", calibrated=False), val, workers=0)
    assert last["val_loss"] == pytest.approx(val_loss(schema, raw), rel=1e-5)


def test_a_process_killed_mid_epoch_is_restarted_and_the_run_ends_as_if_uninterrupted(data, two_processes, tmp_path):
    reference, _, _ = two_processes
    kill = f"1:{STEPS + 3}"  # process 1, third step of epoch 2, on torchrun's first attempt
    logs = torchrun(["train", "--schema", str(data[0]), "--manifest", str(data[1]), "--out", str(tmp_path / "run"),
                     *cli_flags(VIT)], tmp_path / "logs", max_restarts=1, env={"ATTRTAG_TEST_KILL": kill})
    assert (1, 0) in logs, "torchrun did not restart the group"
    assert "epoch 2/2" not in logs[(0, 0)][0]  # the first attempt died during epoch 2
    assert "torchrun restart 1: resuming from" in logs[(1, 0)][1] and "epoch 1 done" in logs[(1, 0)][1]
    assert weights_diff(reference / "last.pt", tmp_path / "run" / "last.pt") < 1e-6
    assert [h["epoch"] for h in load_checkpoint(tmp_path / "run" / "last.pt")["history"]] == [1, 2]


def test_torchrun_with_one_process_runs_the_distributed_path_and_the_same_steps(data, one_process, tmp_path):
    # One GPU is enough to check DDP, NCCL and SyncBatchNorm (scripts/gpu_check.py): torchrun
    # with one process starts a process group like N processes do, and changes no step.
    logs = torchrun(["train", "--schema", str(data[0]), "--manifest", str(data[1]), "--out", str(tmp_path / "run"),
                     *cli_flags(VIT)], tmp_path / "logs", module=True, nproc=1)
    assert "process 0 of 1 on cpu (gloo)" in logs[(0, 0)][1]
    assert weights_diff(one_process[0], tmp_path / "run" / "last.pt") < 1e-6
    assert [h["processes"] for h in load_checkpoint(tmp_path / "run" / "last.pt")["history"]] == [1, 1]


def test_plain_train_starts_no_process_group(monkeypatch):
    from attrtag.training.distributed import init_distributed

    for name in ("WORLD_SIZE", "MASTER_ADDR", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert not ctx.active and not torch.distributed.is_initialized()


@pytest.mark.parametrize("name", ["forward_sync_buffers", "broadcast_buffers"])
def test_ddp_keeps_buffers_per_process_under_either_name_of_the_switch(monkeypatch, name):
    # PyTorch renamed broadcast_buffers to forward_sync_buffers; 2.11 (the lent GPU machine's)
    # knows only the old name and refused the new one, so torchrun training failed there.
    from attrtag.training.distributed import wrap_ddp

    seen = {}

    def init(self, module, device_ids=None, **switch):  # DDP's signature, with one of the two names
        seen.update(switch)

    fake = type("DistributedDataParallel", (), {})
    fake.__init__ = _with_keyword(init, name)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", fake)
    wrapped = wrap_ddp(torch.nn.Linear(2, 2), DistContext(torch.device("cpu"), world_size=2))
    assert isinstance(wrapped, fake) and seen == {name: False}


def _with_keyword(init, name):
    """``init`` with a signature whose only switch is ``name`` (what the real DDP's inspection sees)."""
    import inspect

    def wrapper(self, module, device_ids=None, **switch):
        return init(self, module, device_ids, **switch)

    params = list(inspect.signature(init).parameters.values())[:3]
    wrapper.__signature__ = inspect.Signature(params + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY)])
    return wrapper


def test_resuming_on_another_number_of_processes_continues_the_same_run(data, one_process, tmp_path):
    final, epoch1 = one_process
    logs = torchrun(["train", "--schema", str(data[0]), "--manifest", str(data[1]), "--out", str(tmp_path / "run"),
                     "--resume", str(epoch1), *cli_flags(VIT)], tmp_path / "logs", module=True)
    said = logs[(0, 0)][1]
    assert "trained by 1 process(es), this run has 2: the global batch stays 8 images (4 per process)" in said
    assert weights_diff(final, tmp_path / "run" / "last.pt") < 1e-5
    assert outputs_diff(final, tmp_path / "run" / "last.pt") < 1e-5


def test_global_batches_are_split_across_processes_unchanged():
    whole = epoch_batches(50, 7, steps=7, seed=3, epoch=2)
    parts = [epoch_batches(50, 7, steps=7, seed=3, epoch=2, rank=r, world_size=3) for r in range(3)]
    for t, batch in enumerate(whole):
        assert sum((p[t] for p in parts), []) == batch and sorted(len(p[t]) for p in parts) == [2, 2, 3]
    assert len({i for b in whole for i in b}) == 49  # one permutation: no index twice
    assert epoch_batches(50, 7, steps=7, seed=3, epoch=3) != whole  # reshuffled per epoch


def test_a_global_batch_smaller_than_the_processes_is_refused(data, tmp_path):
    schema = Schema.load(data[0])
    cfg = TrainConfig.from_dict({**VIT, "batch_size": 3})
    four = DistContext(torch.device("cpu"), rank=0, world_size=4)
    with pytest.raises(AttrtagError, match="batch_size=3 is the global batch, split over 4 processes"):
        prepare_run(cfg, schema, read_manifest(data[1], schema), tmp_path, None, four)


def test_sync_bn_on_the_cpu_is_refused_in_one_line(data, tmp_path, capsys):
    code = main(["train", "--schema", str(data[0]), "--manifest", str(data[1]), "--out", str(tmp_path / "r"),
                 "--backbone", "test_resnet", "--image-size", "32", "--sync-bn", "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--sync-bn needs CUDA GPUs" in err
    assert not (tmp_path / "r" / "last.pt").exists()


def _batch(rows: slice) -> Batch:
    """Rows of one fixed global batch of 8: 'band' labelled on rows 0-3 only, 'shape' on none."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 32, 32, generator=g)
    colour, band = torch.randint(0, 3, (8,), generator=g), torch.randint(0, 2, (8,), generator=g)
    y = torch.stack([colour, torch.full((8,), -1), band], 1)
    y[4:, 2] = -1  # process 1's half has no 'band' label; 'shape' has none in the whole batch
    y[5, 0] = -1
    return Batch(x[rows], y[rows], torch.arange(8)[rows], [])


#: Every option that changes the loss: filled labels (the EMA teacher fills 'shape', which has no
#: label in the batch, and the missing 'band' and 'colour' labels), logit offsets, group and class weights.
LEARN = dict(ema=True, complete="soft", complete_start=0.0, logit_adjust=1.0, group_balance="log", class_weights=True)


def _multi_batch(rows: slice) -> Batch:
    """:func:`_batch` with a multi-label group 'marks' (3 values): known on process 0's half only, partly."""
    whole = _batch(slice(0, 8))
    marks = torch.randint(0, 2, (8, 3), generator=torch.Generator().manual_seed(1))
    marks[4:] = -1
    marks[1, 0] = marks[2, 2] = -1
    y = torch.cat([whole.targets, torch.full((8, 1), -1), marks], 1)  # the row: colour, shape, band, marks, values
    return Batch(whole.images[rows], y[rows], torch.arange(8)[rows], [])


def _one_step(rank: int, world: int, data: tuple[Path, Path], tmp: Path, options: dict | None = None,
              batch: Any = _batch) -> dict:
    """One training step of this process's half (or the whole batch in one process); its gradients."""
    import attrtag.training.loop as loop

    schema = Schema.load(data[0])
    ctx = DistContext(torch.device("cpu"), rank=rank, world_size=world)
    cfg = TrainConfig.from_dict({"backbone": "test_resnet", "image_size": 32, "batch_size": 8, "workers": 0,
                                 **(options or {})})
    run = prepare_run(cfg, schema, read_manifest(data[1], schema), tmp, None, ctx)
    run.model.eval()  # batch norm on running statistics: the forward no longer depends on the batch
    threshold = loop.curriculum_threshold
    loop.curriculum_threshold = lambda cfg, epochs: 0.0  # a random teacher: let it fill every missing label now
    try:
        loss, n = train_batch(run, batch(slice(rank * 8 // world, (rank + 1) * 8 // world)))
    finally:
        loop.curriculum_threshold = threshold
    return {"loss": loss, "n": n, "grads": {k: p.grad for k, p in run.model.named_parameters()},
            "filled": run.filled_labels.tolist()}


def _two_process_checks(rank: int, init_file: str, data: tuple[Path, Path], tmp: Path) -> None:
    """One of two spawned gloo processes: the collectives the loop uses, and one training step."""
    import torch.distributed as dist

    from attrtag.data.manifest import Sample
    from attrtag.training.distributed import gather_predictions, init_distributed, reduce_batchnorm_stats, val_shard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ctx = init_distributed("cpu")  # a group the caller started is used as it is
    assert (ctx.rank, ctx.world_size, ctx.owns_group) == (rank, 2, False)
    assert ctx.all_reduce_sum(torch.tensor([1.0, rank])).tolist() == [2.0, 1.0]
    assert ctx.broadcast(f"from {rank}") == "from 0" and ctx.all_gather(rank) == [0, 1]

    bn = torch.nn.BatchNorm2d(3)
    bn.running_mean.fill_(2.0 * rank)
    bn.running_var.fill_(1.0 + 4 * rank)
    reduce_batchnorm_stats(bn, ctx)  # timm's --dist-bn reduce: the mean over processes
    assert bn.running_mean.tolist() == [1.0] * 3 and bn.running_var.tolist() == [3.0] * 3

    samples = [Sample(f"{i}.png", (i % 3, -1)) for i in range(7)]  # 7: one process has one more
    mine = val_shard(samples, ctx)
    failed = [s for s in mine if s.path == "3.png"]  # an undecodable image stays a failure, once
    kept = [s for s in mine if s not in failed]
    part = Predictions(
        probs={"g": np.array([[float(s.path[0]), 0.0] for s in kept], np.float32)},
        targets=np.array([s.labels for s in kept], np.int64).reshape(len(kept), 2),
        samples=kept, failed=[(s.path, "truncated") for s in failed],
    )
    merged = gather_predictions(part, samples, ctx)
    assert [s.path for s in merged.samples] == [f"{i}.png" for i in (0, 1, 2, 4, 5, 6)]
    assert merged.probs["g"][:, 0].tolist() == [0, 1, 2, 4, 5, 6]
    assert merged.targets[:, 0].tolist() == [0, 1, 2, 1, 2, 0] and merged.failed == [("3.png", "truncated")]

    torch.save(_one_step(rank, 2, data, tmp / f"run{rank}"), tmp / f"step{rank}.pt")
    torch.save(_one_step(rank, 2, data, tmp / f"learn{rank}", LEARN), tmp / f"learn{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_agree_and_their_step_has_the_gradient_of_the_whole_batch(data, tmp_path):
    mp.spawn(_two_process_checks, args=(str(tmp_path / "init"), data, tmp_path), nprocs=2, join=True)
    whole = _one_step(0, 1, data, tmp_path / "one")
    for rank in (0, 1):
        half = torch.load(tmp_path / f"step{rank}.pt")
        assert half["n"] == whole["n"] == 8 and half["loss"] == pytest.approx(whole["loss"], rel=1e-6)
        for k, g in whole["grads"].items():
            # DDP averages over processes; the loss's x2 and the global label counts undo that exactly.
            torch.testing.assert_close(half["grads"][k], g, rtol=1e-4, atol=1e-7, msg=k)
    assert torch.count_nonzero(whole["grads"]["head.fc.weight"][3:10]) == 0  # 'shape': no label, zero, not NaN
    # The same with every learning option on: labels the teacher filled count in the global
    # label counts, so the two halves still take the step of the whole batch.
    whole = _one_step(0, 1, data, tmp_path / "learn", LEARN)
    assert whole["filled"] == [1, 8, 4]  # every missing label of _batch, none of the given ones
    for rank in (0, 1):
        half = torch.load(tmp_path / f"learn{rank}.pt")
        assert half["filled"] == whole["filled"] and half["loss"] == pytest.approx(whole["loss"], rel=1e-6)
        for k, g in whole["grads"].items():
            torch.testing.assert_close(half["grads"][k], g, rtol=1e-4, atol=1e-7, msg=k)
    assert torch.count_nonzero(whole["grads"]["head.fc.weight"][3:10]) > 0  # 'shape' learns from filled labels


def _two_process_multi(rank: int, init_file: str, data: tuple[Path, Path], tmp: Path) -> None:
    """One of two gloo processes: one step on a multi-label batch, every learning option on."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.save(_one_step(rank, 2, data, tmp / f"m{rank}", LEARN, batch=_multi_batch), tmp / f"multi{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_take_the_step_of_the_whole_batch_with_a_multi_label_group(tmp_path):
    # Values known on one process only, filled values, positive weights, logit offsets: the
    # global count of known (image, value) pairs makes the two halves one step.
    data = make_multilabel_dataset(tmp_path / "data", 40, seed=3)
    mp.spawn(_two_process_multi, args=(str(tmp_path / "init"), data, tmp_path), nprocs=2, join=True)
    whole = _one_step(0, 1, data, tmp_path / "whole", LEARN, batch=_multi_batch)
    assert whole["filled"][3] > 0  # the teacher filled unknown values of 'marks'
    for rank in (0, 1):
        half = torch.load(tmp_path / f"multi{rank}.pt")
        assert half["filled"] == whole["filled"] and half["loss"] == pytest.approx(whole["loss"], rel=1e-6)
        for k, g in whole["grads"].items():
            torch.testing.assert_close(half["grads"][k], g, rtol=1e-4, atol=1e-7, msg=k)


@pytest.mark.parametrize("rank, said", [("0", True), ("1", False)])
def test_a_mistake_is_said_once_by_rank_0(tmp_path, capsys, monkeypatch, rank, said):
    # Every torchrun process checks the same options and files: two processes printed the same
    # refusal twice (once run together on one line). The others exit with the same status.
    from tests.helpers import run_cli

    monkeypatch.setenv("RANK", rank)
    code, out, err = run_cli(capsys, "classify", tmp_path / "none.jsonl", "--out", tmp_path / "c.jsonl")
    assert code == 2 and out == ""
    assert (err == f"attrtag: error: {tmp_path / 'none.jsonl'}: tag output not found\n") if said else err == ""


# A process that starts a worker watching it (as torchrun's workers are watched), then waits to be killed.
LAUNCHER = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time\\n"
            "from attrtag.training.distributed import watch_launcher\\n"
            "watch_launcher(0, every=0.1)\\nprint(\"watching\", flush=True)\\ntime.sleep(120)'], stdout=subprocess.PIPE,"
            " text=True)\n"
            "assert child.stdout.readline() == 'watching\\n'\n"
            "print(child.pid, flush=True)\ntime.sleep(120)\n")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_workers_stop_when_their_launcher_is_killed():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "pipeline")})
    worker = int(launcher.stdout.readline())
    try:
        assert _alive(worker)
        launcher.kill()  # kill -9 of torchrun
        launcher.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived its launcher"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
