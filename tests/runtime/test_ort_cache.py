"""ONNX Runtime's optimised CPU graph, kept between runs: same outputs, a fresh entry when the
model changes, damaged entries rebuilt, and tagging unaffected when the cache cannot be used."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attrtag.card import ModelCard
from attrtag.data.preprocess import Preprocessing
from attrtag.model import build_model
from attrtag.runtime import ort_cache
from attrtag.runtime.onnx_backend import OnnxModel
from attrtag.schema import Schema
from attrtag_onnx.export import export_onnx

SCHEMA = Schema.from_dict({"tone": ["light", "mid", "dark"], "kind": [f"k{i}" for i in range(7)]})
PREP = Preprocessing((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    model = build_model(SCHEMA, "test_resnet", card=ModelCard(SCHEMA, PREP, "test_resnet")).eval()
    return export_onnx(model, tmp_path_factory.mktemp("m") / "model.onnx", exporter="torchscript").path


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(ort_cache.CACHE_ENV, str(folder))
    return folder


def entries(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)


def test_the_next_session_loads_the_saved_graph_and_gives_identical_outputs(
    onnx_model: Path, cache: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = OnnxModel(onnx_model, device="cpu")
    assert not first.graph_from_cache
    assert [p.suffix for p in entries(cache)] == [".onnx"]  # one graph, no temporary file left
    assert "Serializing optimized model" not in capfd.readouterr().err  # ONNX Runtime's warning kept quiet
    second = OnnxModel(onnx_model, device="cpu", threads=1)  # threads are not part of the graph
    assert second.graph_from_cache and second.output_names == first.output_names
    monkeypatch.setenv(ort_cache.CACHE_ENV, "off")
    plain = OnnxModel(onnx_model, device="cpu")
    assert not plain.graph_from_cache
    x = batch()
    expected = plain(x)
    for model in (first, second):
        out = model(x)
        assert all(np.array_equal(out[g], expected[g]) for g in SCHEMA.names)


def test_a_changed_or_other_model_gets_its_own_entry_and_the_least_recently_used_go(
    onnx_model: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort_cache, "KEEP", 2)
    copies = [shutil.copy(onnx_model, tmp_path / f"copy{i}.onnx") for i in range(3)]
    for i, path in enumerate(copies):
        assert not OnnxModel(path, device="cpu").graph_from_cache
        # Distinct ages, whatever the file system's clock resolution; pruning runs on each save.
        os.utime(next(cache.glob(f"copy{i}-*.onnx")), (1e9 + i, 1e9 + i))
    assert sorted(p.name.split("-")[0] for p in entries(cache)) == ["copy1", "copy2"]
    assert OnnxModel(copies[2], device="cpu").graph_from_cache
    stat = copies[2].stat()
    os.utime(copies[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten in place
    assert not OnnxModel(copies[2], device="cpu").graph_from_cache
    # ONNX Runtime's version and the CPU are part of the key too.
    assert ort_cache.lookup_graph(copies[2], "1.0.0").path != ort_cache.lookup_graph(copies[2], "1.0.1").path
    assert os.uname().machine in ort_cache.cpu_signature()


def test_a_damaged_entry_is_rebuilt(onnx_model: Path, cache: Path) -> None:
    OnnxModel(onnx_model, device="cpu")
    [entry] = entries(cache)
    size = entry.stat().st_size
    entry.write_bytes(entry.read_bytes()[:200])  # a truncated file
    model = OnnxModel(onnx_model, device="cpu")
    assert not model.graph_from_cache and model(batch())["tone"].shape == (3, 3)
    assert entries(cache) == [entry] and entry.stat().st_size == size
    assert OnnxModel(onnx_model, device="cpu").graph_from_cache


@pytest.mark.parametrize("setting", ["off", "not-a-folder/cache"])
def test_without_a_usable_cache_sessions_work_and_nothing_is_written(
    onnx_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    (tmp_path / "not-a-folder").write_text("a file where the cache folder would go")
    monkeypatch.setenv(ort_cache.CACHE_ENV, setting if setting == "off" else str(tmp_path / setting))
    before = sorted(tmp_path.rglob("*"))
    for _ in range(2):
        model = OnnxModel(onnx_model, device="cpu")
        assert not model.graph_from_cache and model(batch())["kind"].shape == (3, 7)
    assert sorted(tmp_path.rglob("*")) == before


def test_a_model_onnx_runtime_refuses_is_still_a_one_line_error(onnx_model: Path, tmp_path: Path, cache: Path) -> None:
    import onnx

    from attrtag.errors import CheckpointError

    broken = onnx.load(str(onnx_model))  # the card intact, the graph not runnable
    broken.graph.node[0].op_type = "NoSuchOperator"
    bad = tmp_path / "bad.onnx"
    onnx.save(broken, str(bad))
    with pytest.raises(CheckpointError, match=r"bad\.onnx: ONNX Runtime cannot load the model") as err:
        OnnxModel(bad, device="cpu")
    assert "\n" not in str(err.value)
    assert entries(cache) == []  # neither a graph nor a temporary file
