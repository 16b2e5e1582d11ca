"""Set-up shared by the tests (tests/) and the modules' doctests (streammix/)."""

from __future__ import annotations

import tempfile

import pytest


@pytest.fixture(autouse=True)
def _scratch_in_tmp_path(tmp_path, monkeypatch):
    """The examples make their scratch folders with ``tempfile.mkdtemp()``, as a
    reader would; put those in the test's own ``tmp_path``, which pytest cleans
    up, not in the system's temporary folder, where each run left about twenty."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
