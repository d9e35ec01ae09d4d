"""Shared fixtures (helpers in :mod:`tests.helpers`)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

from tests.helpers import make_dataset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(schema.yaml, manifest.csv) of 120 small images, 30% of labels missing."""
    return make_dataset(tmp_path_factory.mktemp("tiny"))
