"""``attrtag tag --engine ray``: same records as the local engine, actors restarted, driver resumable.

Runs on a local Ray instance this module starts (2 CPUs, no dashboard); skipped where
``ray[data]`` is not installed (``pip install "attrtag[ray]"``; ``.ci/run`` installs it).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from attrtag.cli import main  # noqa: E402
from attrtag.tagging import read_output  # noqa: E402
from tests.helpers import MULTI_SCHEMA, PREP, make_checkpoint, write_images  # noqa: E402

N_IMAGES = 300  # batch size 2: enough batches to kill something half-way


@pytest.fixture(scope="module")
def local_ray():  # noqa: ANN201
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attrtag_onnx.export import export_onnx

    d = tmp_path_factory.mktemp("model")
    return export_onnx(make_checkpoint(d / "m.pt"), d / "m.onnx", batch_check=2).path


@pytest.fixture(scope="module")
def multi_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with a multi-label group ``marks`` whose card decides its values at 0.3, 0.5 and 0.7."""
    import torch

    from attrtag.card import ModelCard
    from attrtag.model import build_model
    from attrtag_onnx.export import export_onnx

    torch.manual_seed(0)
    thresholds = {"groups": {"marks": {"dot": 0.3, "ring": 0.7}}}
    card = ModelCard(MULTI_SCHEMA, PREP, "test_resnet", value_thresholds=thresholds)
    model = build_model(MULTI_SCHEMA, "test_resnet", card=card).eval()
    return export_onnx(model, tmp_path_factory.mktemp("multi") / "m.onnx", batch_check=2).path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("imgs")
    write_images(folder, N_IMAGES, size=48, fmt="jpg")
    (folder / "empty.jpg").write_bytes(b"")
    try:
        (folder / os.fsdecode(b"odd\xff.png")).write_bytes((folder / "img0001.jpg").read_bytes())
    except (OSError, UnicodeError):
        pass  # a filesystem that refuses non-UTF-8 names
    return folder


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Class rules and thresholds, so the test shows the run's whole layout reaches the actors."""
    rules = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules.write_text("classes:\n  redtop: {colour: red, band: top}\n  bluebottom: {colour: blue, band: bottom}\n")
    return ["--rules", str(rules), "--threshold", "band=0.9", "--unknown-threshold", "0.6", "--no-progress"]


@pytest.fixture(scope="module")
def local_records(
    model: Path, images: Path, options: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("local") / "tags.jsonl"
    assert main(["tag", str(model), str(images), "--out", str(out), "--workers", "1", *options]) == 0
    return out, read_output(out)[1]


def tag_argv(model: Path, images: Path, out: Path, *extra: str, options: Sequence[str] = ()) -> list[str]:
    return ["tag", str(model), str(images), "--out", str(out), "--engine", "ray", "--batch-size", "2", *options, *extra]


def descendants(pid: int) -> dict[int, str]:
    """``{pid: command line}`` of every process below ``pid`` (read from /proc)."""
    parent, cmd = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parent[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        for child, par in parent.items():
            if par == p and child not in found:
                found[child] = cmd.get(child, "")
                frontier.append(child)
    return found


def records_on_disk(out: Path) -> int:
    try:
        return out.read_bytes().count(b"\n")  # JSONL holds records only (the header is in FILE.meta.json)
    except FileNotFoundError:
        return 0


@pytest.mark.usefixtures("local_ray")
def test_ray_engine_writes_what_the_local_engine_writes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path, images: Path, options: list[str],
    local_records: tuple[Path, list],
) -> None:
    out = tmp_path / "ray.jsonl"
    assert main(tag_argv(model, images, out, "--actors", "2", options=options)) == 0
    tagged = len(local_records[1]) - 1
    assert f"tagged {tagged}, failed 1 (empty 1)" in capsys.readouterr().out
    assert out.read_bytes() == local_records[0].read_bytes()  # header and records, byte for byte
    assert {r["class"] for r in local_records[1] if "error" not in r} <= {"redtop", "bluebottom", "unknown"}


@pytest.mark.usefixtures("local_ray")
def test_ray_engine_writes_what_the_local_engine_writes_for_a_multi_label_model(
    tmp_path: Path, multi_model: Path, images: Path, options: list[str]
) -> None:
    inputs = [str(images / "img00[0-2]*.jpg"), str(images / "empty.jpg")]  # 30 images and a failure
    extra = [*options, "--threshold", "marks.bar=0.45"]  # the run's value thresholds reach the actors
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main(["tag", str(multi_model), *inputs, "--out", str(local), "--workers", "1", *extra]) == 0
    assert main(["tag", str(multi_model), *inputs, "--out", str(remote), "--engine", "ray", "--batch-size", "2",
                 "--actors", "2", *extra]) == 0
    assert remote.read_bytes() == local.read_bytes()
    meta, records = read_output(remote)
    assert meta.layout.value_thresholds == {"marks": (0.3, 0.45, 0.7)}
    tagged = [r for r in records if "error" not in r]
    assert len(tagged) == 30 and len(records) == 31
    cuts = {"dot": 0.3, "bar": 0.45, "ring": 0.7}
    assert all(r["marks"] == [v for v, p in r["marks_probs"].items() if p >= cuts[v]] for r in tagged)
    assert {len(r["marks"]) for r in tagged} != {0}  # some images have marks (a random model is near 0.5)


@pytest.mark.usefixtures("local_ray")
def test_an_actor_killed_mid_run_is_restarted_and_every_input_is_tagged_once(
    tmp_path: Path, model: Path, images: Path, options: list[str], local_records: tuple[Path, list]
) -> None:
    out = tmp_path / "ray.jsonl"
    killed: list[tuple[int, str]] = []

    def kill_an_actor() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            if records_on_disk(out) >= 20:
                actors = {p: c for p, c in descendants(os.getpid()).items() if c.startswith("ray::MapWorker")}
                if actors:
                    pid = min(actors)
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, actors[pid]))
                    return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_an_actor, daemon=True)
    watcher.start()
    assert main(tag_argv(model, images, out, "--actors", "2", options=options)) == 0
    watcher.join(timeout=5)
    assert killed, "no actor was killed (the run ended before 20 records, or no actor process was found)"
    assert records_on_disk(out) == len(local_records[1])
    records = read_output(out)[1]
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths))  # exactly once each
    assert records == local_records[1]  # and the same records, in the same order


@pytest.mark.usefixtures("local_ray")
def test_a_killed_driver_resumes_to_the_same_output(
    tmp_path: Path, model: Path, images: Path, options: list[str], local_records: tuple[Path, list]
) -> None:
    out = tmp_path / "ray.jsonl"
    cmd = [sys.executable, "-m", "attrtag", *tag_argv(model, images, out, "--actors", "1", options=options)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # its own local Ray
    children: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline and records_on_disk(out) < 20:
            time.sleep(0.01)
        children = descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        _reap(children)
    assert proc.returncode == -signal.SIGKILL and 20 <= records_on_disk(out) < len(local_records[1])
    assert main(tag_argv(model, images, out, options=options)) == 0  # resumed on this module's Ray
    assert out.read_bytes() == local_records[0].read_bytes()


def _reap(children: dict[int, str], grace_s: float = 10.0) -> None:
    """Wait for the killed driver's Ray processes to go; SIGKILL what is left (it is ours)."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in children):
        time.sleep(0.2)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--gpus-per-actor", "1"], "--gpus-per-actor 1.0: the Ray cluster has no GPUs"),
        (["--actors", "3"], "--actors 3: the Ray cluster has 2 CPUs"),
        (["--device", "cuda"], "--device cuda under --engine ray needs --gpus-per-actor"),
        (["--ray-address", "127.0.0.1:1"], "--ray-address 127.0.0.1:1: nothing answers at 127.0.0.1:1"),
        (["--ray-address", "nohost"], "expected HOST:PORT"),
        (["--threshold", "size=0.5"], "the model has no group 'size'"),  # refused as the local engine does
        (["--worker-kind", "process"], "--worker-kind process is for the local engine"),
    ],
)
def test_bad_ray_options_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path, images: Path, extra: list[str], match: str
) -> None:
    out = tmp_path / "o.jsonl"
    start = time.monotonic()
    rc = main(tag_argv(model, images / "img0001.jpg", out, "--no-progress", *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and match in err[-1], err
    assert not [line for line in err if "Traceback" in line]
    assert time.monotonic() - start < 30  # an error, not a hang
    assert not out.exists()


def test_ray_options_need_the_ray_engine(capsys: pytest.CaptureFixture[str], tmp_path: Path, model: Path, images: Path) -> None:
    rc = main(["tag", str(model), str(images / "img0001.jpg"), "--out", str(tmp_path / "o.jsonl"), "--actors", "2"])
    assert rc == 2 and "--actors needs --engine ray" in capsys.readouterr().err


def test_ctrl_c_while_ray_starts_stops_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    from attrtag.tagging import ray_engine

    stopped: list[bool] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **_: (_ for _ in ()).throw(KeyboardInterrupt()))
    monkeypatch.setattr(ray, "shutdown", lambda: stopped.append(True))
    with pytest.raises(KeyboardInterrupt):
        ray_engine.connect(None)
    assert stopped == [True]
