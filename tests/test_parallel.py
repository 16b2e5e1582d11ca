"""Worker processes (streammix.parallel): one pool for several calls."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    with WorkerPool(1) as pool:
        pool.close()
        with pytest.raises(RuntimeError, match=r"used after close\(\)"):
            pool.submit(os.getpid)
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


_KILLED_PARENT = """
import os, sys, time
from pathlib import Path
from streammix.parallel import WorkerPool, map_spawned

def nap(marker, seconds):
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    with WorkerPool(2) as pool:
        map_spawned(nap, [{"marker": str(folder / f"call{i}"), "seconds": 300.0} for i in range(2)], 2,
                    label="nap", pool=pool)
"""


def _workers(pid: int) -> set[int]:
    """The living (not zombie) spawned workers whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in command:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    """A parent killed outright (SIGKILL) while its two workers are in a 300 s call: the workers
    end within seconds instead of computing on as orphans."""
    script = tmp_path / "parent.py"
    script.write_text(_KILLED_PARENT)
    markers = [tmp_path / f"call{i}" for i in range(2)]
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120.0
        while not all(marker.exists() and marker.read_text() for marker in markers) and time.monotonic() < deadline:
            assert parent.poll() is None, "the parent ended before its calls began"
            time.sleep(0.2)
        workers = {int(marker.read_text()) for marker in markers}  # the calls have begun, in two processes
        assert len(workers) == 2 and workers <= _workers(parent.pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20.0
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
    finally:  # nothing left behind, whatever failed
        parent.kill()
        parent.wait(timeout=10)
        for pid in workers:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


_INTERRUPTED_PARENT = """
import os, signal, sys, time
from pathlib import Path
from streammix.parallel import WorkerPool, map_spawned

def nap(marker, seconds):
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)

def meet(folder, name):  # returns once two processes have called it: both started, then idle
    Path(folder, name + str(os.getpid())).write_text("")
    deadline = time.monotonic() + 120
    while len(list(Path(folder).glob(name + "*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)

if __name__ == "__main__":
    folder, when = Path(sys.argv[1]), sys.argv[2]
    if sys.argv[-1] == "ignore":  # a run started with SIGINT ignored (its workers inherit that)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with WorkerPool(2) as pool:
            if when == "start":  # interrupted while the processes start (import torch and streammix)
                pool.start(nap, marker=str(folder / "started"), seconds=0.0)
                (folder / "call").write_text("start")
                time.sleep(300)
            map_spawned(meet, [{"folder": str(folder), "name": "met"}] * 2, 2, label="meet", pool=pool)
            map_spawned(nap, [{"marker": str(folder / "call"), "seconds": float(sys.argv[3])}], 2, label="nap",
                        pool=pool)
            print("done")
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        sys.exit(130)
"""


def _interrupt(tmp_path, default_sigint, *args, ignored: bool = False) -> tuple[int, str, str, float]:
    """Run the parent script with ``args``, send SIGINT to its whole process group (as Ctrl-C
    does) once its call has begun, and return its exit code, stdout, stderr and the seconds it
    took to end after the interrupt."""
    script = tmp_path / "parent.py"
    script.write_text(_INTERRUPTED_PARENT)
    parent = subprocess.Popen(
        [*default_sigint, str(script), str(tmp_path), *args, *(["ignore"] if ignored else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's job
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120.0
        while not ((tmp_path / "call").exists() and (tmp_path / "call").read_text()) and time.monotonic() < deadline:
            assert parent.poll() is None, parent.communicate()
            time.sleep(0.05)
        assert (tmp_path / "call").exists(), "the call did not begin in 120 s"
        os.killpg(parent.pid, signal.SIGINT)
        started = time.monotonic()
        stdout, stderr = parent.communicate(timeout=120)
        return parent.returncode, stdout, stderr, time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)


def test_ctrl_c_stops_a_call_and_the_idle_workers_print_nothing(tmp_path, default_sigint):
    """Ctrl-C (SIGINT to the whole process group) while one worker is in a 300 s call and the
    other waits for calls: the call is interrupted and the parent ends at once with its own
    message only; the idle worker, which would have died printing a traceback, holds the
    interrupt and is shut down by its parent."""
    code, _, stderr, seconds = _interrupt(tmp_path, default_sigint, "call", "300")
    assert (code, stderr) == (130, "aborted\n") and seconds < 60  # not the call's 300 s


def test_ctrl_c_while_the_workers_start_prints_nothing_either(tmp_path, default_sigint):
    """Ctrl-C while the pool's processes are still starting (importing torch): they hold it
    until their first call (not dying with a traceback in their imports), which it stops."""
    code, _, stderr, _ = _interrupt(tmp_path, default_sigint, "start")
    assert (code, stderr) == (130, "aborted\n")


def test_a_run_that_ignores_interrupts_keeps_ignoring_them_in_its_workers(tmp_path, default_sigint):
    """A run started with SIGINT ignored (a background job of a script) is not stopped by one,
    in its workers either: the call goes on to its end."""
    code, stdout, stderr, _ = _interrupt(tmp_path, default_sigint, "call", "3", ignored=True)
    assert (code, stdout, stderr) == (0, "done\n", "")


_HELD_INTERRUPTS = """
import os, signal, threading, time
from streammix import parallel

ran = []

def count():
    ran.append(1)

def start_a_thread():  # as torch starts its threads during a call: this one takes SIGINT
    thread = threading.Thread(target=threading.Event().wait, daemon=True)
    thread.start()
    return thread.ident

def held():
    return signal.SIGINT in signal.sigpending()

parallel._start_worker()  # no parent process: no watch thread
assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, ())
os.kill(os.getpid(), signal.SIGINT)  # while the worker waits for a call
assert held()
parallel._call_and_release(count, {}, False)  # a warm-up call runs, the interrupt stays held
assert ran == [1] and held()
try:
    parallel._call_and_release(count, {})
except KeyboardInterrupt:
    pass
assert ran == [1] and not held()  # raised as the call began, before it ran
thread = parallel._call_and_release(start_a_thread, {})
signal.pthread_kill(thread, signal.SIGINT)  # reaches that thread while the worker waits
deadline = time.monotonic() + 60
while not held() and time.monotonic() < deadline:
    time.sleep(0.01)  # the main thread runs the handler between its bytecodes: held, not raised
assert held()
try:
    parallel._call_and_release(count, {})
except KeyboardInterrupt:
    pass
assert ran == [1] and not held()
assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, ())
print("ok")
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_a_worker_holds_an_interrupt_until_its_next_call_begins(default_sigint):
    """Without timing: a worker's SIGINT that comes while it waits, or that reaches another of
    its threads (one started during a call, as torch's are), is held, not raised (no traceback
    while idle); a warm-up call keeps it held; the next call raises it as it begins, before its
    function runs; the worker then holds SIGINT again."""
    done = subprocess.run([*default_sigint, "-c", _HELD_INTERRUPTS], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
