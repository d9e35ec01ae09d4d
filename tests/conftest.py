"""Shared fixtures (helpers in :mod:`tests.helpers`)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

from tests.helpers import make_dataset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(schema.yaml, manifest.csv) of 120 small images, 30% of labels missing."""
    return make_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session", autouse=True)
def _ort_graph_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> object:
    """ONNX Runtime's graph cache (:mod:`attrtag.runtime.ort_cache`) goes to a temporary folder,
    never the user's ~/.cache (subprocesses inherit it)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("ATTRTAG_ORT_CACHE", str(tmp_path_factory.mktemp("ort-cache")))
    yield
    patch.undo()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Parquet is an extra (pyarrow): without it, tests that need it skip instead of failing."""
    if importlib.util.find_spec("pyarrow") is not None:
        return
    skip = pytest.mark.skip(reason="Parquet needs pyarrow: pip install 'attrtag[parquet]'")
    for item in items:
        if "parquet" in item.name or item.get_closest_marker("parquet") is not None:
            item.add_marker(skip)
