"""Worker processes: results in order, and a worker's setup done once for all it takes."""

from __future__ import annotations

import os
import uuid

import pytest

from streammix.parallel import map_spawned_setup


def _token(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex}"


def _tagged(token: str, item: int) -> tuple[str, int]:
    return token, item * item


def _fail_on_three(token: str, item: int) -> int:
    if item == 3:
        raise ValueError(f"item {item}")
    return item


def test_setup_runs_once_per_worker_and_results_keep_the_items_order():
    results = map_spawned_setup(_tagged, list(range(7)), 2, setup=_token, setup_kwargs={"prefix": "w"}, label="square")
    assert [square for _, square in results] == [i * i for i in range(7)]
    tokens = {token for token, _ in results}
    assert 1 <= len(tokens) <= 2  # one setup per worker, not one per item
    assert all(token.startswith("w-") and token.split("-")[1] != str(os.getpid()) for token in tokens)


def test_an_error_in_a_worker_reaches_the_caller():
    with pytest.raises(ValueError, match="item 3"):
        map_spawned_setup(_fail_on_three, [1, 2, 3, 4], 2, setup=_token, setup_kwargs={"prefix": "w"}, label="fail")

