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
def default_sigint() -> list[str]:
    """The start of a command line that runs python with SIGINT's default action, whatever this
    process's is (a job started in the background of a script ignores SIGINT, and a run that
    ignores it keeps ignoring it), followed by python's own arguments: for tests of Ctrl-C."""
    import sys

    return [
        sys.executable, "-c",
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data; tests that need it skip only when it is absent."""
    path = _shared_data()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent")
    return path


@pytest.fixture
def mock_a_third_without_magnitudes():
    """The demo's mock (300 stream and 3,000 field stars, seed 4) with every third star's
    magnitudes blanked: its demo config as a dict (one member), the stars, and which have magnitudes."""
    import numpy as np

    from streammix.data import StarTable
    from streammix.mock import MockConfig, generate_mock
    from streammix.pipeline import MOCK_BANDS, demo_config, mock_columns

    stars_table, truth = generate_mock(MockConfig(n_stream=300, n_background=3000), seed=4)
    without = np.arange(len(stars_table)) % 3 == 0
    for band in MOCK_BANDS:
        stars_table[band] = np.where(without, np.nan, stars_table[band])
    stars = StarTable.from_table(stars_table, mock_columns(["true_component"]))
    data = demo_config(truth, ensemble=1).model_dump(mode="json", exclude={"source"})
    return data, stars, ~without
