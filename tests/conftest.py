"""Shared fixtures. Real shared data is read from MEDSEG_SHARED_DATA (default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; skipped with a reason when absent (but required under CI=true)."""
    root = shared_data_dir()
    if not root.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"shared data folder {root} is missing under CI")
        pytest.skip(f"shared data folder {root} not found (set MEDSEG_SHARED_DATA)")
    return root


@pytest.fixture(autouse=True)
def _torch_threads():
    """Keep each test process to one thread: the suite runs two processes on two cores."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield
