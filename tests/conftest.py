"""Shared fixtures: the real data in ../shared/data (or $STREAMMIX_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

# pytest-xdist runs one worker per core: one thread each (and in the CLI
# subprocesses they start), or torch's thread pools oversubscribe the cores
# and spin against each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("STREAMMIX_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data; tests that need it skip only when it is absent."""
    path = _shared_data()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent")
    return path
