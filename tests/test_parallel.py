"""Worker processes (streammix.parallel): one pool for several calls."""

from __future__ import annotations

import json
import os

import pytest

from streammix.parallel import WorkerPool, map_spawned


def test_a_pool_runs_every_call_in_its_own_processes():
    """Three calls through a pool of one process run in that one process (three calls without
    the pool would start three); outside its ``with`` block the pool has no processes."""
    with WorkerPool(1) as pool:
        pids = {pid for _ in range(3) for pid in map_spawned(os.getpid, [{}, {}], 1, label="pid", pool=pool)}
    assert len(pids) == 1 and os.getpid() not in pids
    with pytest.raises(RuntimeError, match="outside its 'with' block"):
        pool.executor
    with pytest.raises(ValueError, match="at least 1"):
        WorkerPool(0)


def test_an_error_in_a_call_reaches_the_caller_and_the_pool_still_works():
    """A call's exception is raised by map_spawned; the pool's processes go on serving calls."""
    with WorkerPool(1) as pool:
        with pytest.raises(json.JSONDecodeError, match="Expecting value"):
            map_spawned(json.loads, [{"s": "1"}, {"s": "one"}], 1, label="json", pool=pool)
        assert map_spawned(json.loads, [{"s": "[2]"}], 1, label="json", pool=pool) == [[2]]


def test_started_processes_run_before_the_first_call_and_serve_it():
    """``start`` spawns every process at once (they import while this one works); the calls then
    run in those processes, and none more start. A start that fails does not stop the pool."""
    import multiprocessing

    before = {child.pid for child in multiprocessing.active_children()}
    with WorkerPool(2) as pool:
        pool.start(json.loads, s="not json")
        started = {child.pid for child in multiprocessing.active_children()} - before
        assert len(started) == 2
        pids = set(map_spawned(os.getpid, [{}] * 6, 2, label="pid", pool=pool))
        assert pids <= started
        assert {child.pid for child in multiprocessing.active_children()} - before == started


def test_a_start_of_fewer_processes_starts_only_those():
    """``start(processes=1)`` on a pool of two starts one process; the second starts when a call needs it."""
    import multiprocessing

    before = {child.pid for child in multiprocessing.active_children()}
    with WorkerPool(2) as pool:
        pool.start(json.loads, processes=1, s="1")
        assert len({child.pid for child in multiprocessing.active_children()} - before) == 1
