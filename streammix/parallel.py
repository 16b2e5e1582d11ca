"""Independent work in spawned worker processes (the ensemble members, a block's flows, a
fit's figures), torch's thread count for a block of work, and the return of freed memory.

Spawned rather than forked, so torch's threads and state start clean in each
worker; a script that calls a fit with ``workers > 1`` needs the
``if __name__ == "__main__":`` guard. A spawned worker imports streammix and
torch before its first call (seconds), so a fit whose stages each run in
workers (the flows, then the members, then ``streammix fit``'s figures) runs them in
one :class:`WorkerPool`; each process hands the memory its call freed back when the
call ends, since it may wait a while for the next.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from types import FrameType
from typing import Any

import torch
from rich.progress import Progress

__all__ = ["WorkerPool", "map_spawned", "release_freed_memory", "torch_threads", "worker_pool"]


class WorkerPool:
    """Spawned worker processes kept for several calls (:func:`map_spawned`, :meth:`submit`;
    a context manager).

    Arguments:
        workers: Number of processes.

    Example:
        >>> import textwrap
        >>> with WorkerPool(2) as pool:
        ...     first = map_spawned(textwrap.shorten, [{"text": "a stellar stream", "width": 10}], 2,
        ...                         label="shorten", pool=pool)
        ...     second = map_spawned(textwrap.dedent, [{"text": "  GD-1"}], 2, label="dedent", pool=pool)
        >>> first, second
        (['a [...]'], ['GD-1'])
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"WorkerPool: {workers} workers; a pool needs at least 1")
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    def __enter__(self) -> WorkerPool:
        if self._closed:
            raise RuntimeError("WorkerPool: entered after close()")
        if self._executor is not None:
            raise RuntimeError("WorkerPool: entered twice")
        self._executor = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
        )
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self._executor is not None:
            # on an error, the calls not started yet are dropped rather than run to no purpose
            self._executor.shutdown(wait=True, cancel_futures=exc_type is not None)
            self._executor = None

    def close(self) -> None:
        """End the processes now, before the ``with`` block does, once the rest of the block
        will not use them (their memory goes back at once); this waits for the calls submitted
        already. The pool cannot be used again.

        Example:
            >>> import textwrap
            >>> with WorkerPool(1) as pool:
            ...     pool.submit(textwrap.dedent, text="  GD-1").result()
            ...     pool.close()
            ...     pool.closed
            'GD-1'
            True
        """
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ended the processes."""
        return self._closed

    def start(self, function: Callable[..., Any], /, processes: int | None = None, **kwargs: Any) -> None:
        """Start processes now, without waiting for them, by submitting one call of
        ``function(**kwargs)`` for each: their start-up (a spawned process imports torch and
        streammix, seconds, and ``function``'s module with it) then overlaps with the work this
        process does before its first :func:`map_spawned` call. A process that is idle when the
        next readying call arrives may take it too, so each is readied at least once only as far as
        the calls outrun the start-ups (the usual case). What ``function`` returns or raises is
        dropped: a failure shows, if at all, in the calls that follow. An interrupt (Ctrl-C) does
        not stop these calls, whose imports it would leave half done: it stops the next one.

        Arguments:
            function: A module-level (picklable) function that readies a process for the calls to
                come (imports what they will import).
            processes: How many to start (at most ``workers``; None: all of them).
            kwargs: ``function``'s keyword arguments.

        Example:
            >>> import json
            >>> with WorkerPool(2) as pool:
            ...     pool.start(json.dumps, obj=None)
            ...     map_spawned(json.loads, [{"s": "[1]"}, {"s": "2"}], 2, label="json", pool=pool)
            [[1], 2]
        """
        count = self.workers if processes is None else min(processes, self.workers)
        # each submission that finds no idle process spawns one (up to `workers`)
        for _ in range(count):
            with _interrupts_held():  # and kept held through the call: an interrupted import would stay half done
                self.executor.submit(_call_and_release, function, kwargs, False)

    def submit(self, function: Callable[..., Any], /, **kwargs: Any) -> Future:
        """Run ``function(**kwargs)`` in one of the processes, without waiting for it: this
        process goes on with other work meanwhile.

        Arguments:
            function: A module-level (picklable) function.
            kwargs: Its keyword arguments (pickled to the process).

        Returns:
            The call's future: ``result()`` waits for what it returns, or raises what it raised.

        Example:
            >>> import textwrap
            >>> with WorkerPool(1) as pool:
            ...     future = pool.submit(textwrap.shorten, text="a stellar stream", width=10)
            ...     future.result()
            'a [...]'
        """
        with _interrupts_held():  # a process spawned here starts with interrupts held (_start_worker)
            return self.executor.submit(_call_and_release, function, kwargs)

    @property
    def executor(self) -> ProcessPoolExecutor:
        """The processes' executor (only inside the ``with`` block)."""
        if self._executor is None:
            where = "after close()" if self._closed else "outside its 'with' block"
            raise RuntimeError(f"WorkerPool: used {where}")
        return self._executor


def _call_and_release(function: Callable[..., Any], kwargs: dict[str, Any], interrupts: bool = True) -> Any:
    """``function(**kwargs)`` in a pool's process, whose freed memory is then handed back: the
    process waits for further calls (a fit's pool lives on after its flows and members, while
    the main process prepares the stars and writes the outputs) without holding what the last
    one freed. With ``interrupts`` (:func:`_start_worker`), an interrupt reaches the call as
    ``KeyboardInterrupt``, which goes back to the main process as its result; one that came
    while the process waited for the call or received it is raised as the call begins. Without
    (:meth:`WorkerPool.start`'s imports), it stays held for the next call."""
    interruptible = interrupts and signal.getsignal(signal.SIGINT) is _on_interrupt
    try:
        try:
            if interruptible:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a held interrupt is raised here
            return function(**kwargs)
        finally:
            if interruptible:  # one that comes during this is held (the handler runs with the mask changed)
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    finally:
        kwargs.clear()  # the executor's own reference to the arguments: they are freed before the trim
        release_freed_memory()


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT in this thread inside the block. A process spawned here inherits the held
    signal, so an interrupt while it starts (seconds of imports) waits for its first call
    (:func:`_start_worker`) instead of killing it with a traceback."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    """A worker's SIGINT handler (Python runs it in the main thread): during a call, where the
    main thread takes SIGINT, ``KeyboardInterrupt``; otherwise (the process waits for a call or
    receives one, and the interrupt reached one of its other threads, e.g. torch's) it is held,
    pending in the main thread, for the next call. (``raise_signal`` signals this thread only.)"""
    if signum not in signal.pthread_sigmask(signal.SIG_BLOCK, ()):
        raise KeyboardInterrupt
    signal.raise_signal(signum)


def _start_worker() -> None:
    """Each worker's initializer.

    Interrupts: Ctrl-C reaches every process of a terminal's group; the main process, which
    gets it too, stops and ends the pool. A worker holds SIGINT while it starts, waits for a call
    and receives one (:func:`_interrupts_held`, :func:`_on_interrupt`), and takes it only during
    a call (:func:`_call_and_release`): an interrupt then stops the call in progress, or the next
    one as it begins, and a worker never dies of one with a ``KeyboardInterrupt`` traceback, nor
    loses one while it receives a call. One interrupt stops one call per process: calls queued
    behind it still run, and the main process waits for them as it ends the pool. A held
    interrupt stays until the next call, even if the main process goes on after its own. A run
    that ignores interrupts (SIGINT ignored when it started) leaves them ignored in its workers.

    A daemon thread waits for the parent process to end and then ends the worker at once. A
    parent that exits normally has shut its workers down first; one killed outright (SIGKILL)
    cannot, and its workers would otherwise compute their current call to the end and then wait
    for calls forever. (The parent's sentinel is a pipe that only the parent holds open, as with
    the spawn start method; forked siblings would hold it too.)"""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # held already if spawned by WorkerPool
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        else:
            signal.signal(signal.SIGINT, _on_interrupt)
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="streammix-parent-watch", daemon=True).start()


def worker_pool(
    workers: int, device: str | torch.device = "cpu", pool: WorkerPool | None = None
) -> contextlib.AbstractContextManager[WorkerPool | None]:
    """The worker processes of a stage of work, as a context manager: ``pool`` if one is open
    already, else a new :class:`WorkerPool` of ``workers`` processes for work on the CPU with
    ``workers`` > 1, else None (the work runs in this process).

    Arguments:
        workers: Processes wanted.
        device: Where the work runs (processes only on the CPU).
        pool: A pool open already, used as it is.

    Example:
        >>> with worker_pool(1) as pool:
        ...     pool is None
        True
        >>> with worker_pool(2, "cuda") as pool:
        ...     pool is None
        True
    """
    if pool is not None:
        return contextlib.nullcontext(pool)
    if workers > 1 and torch.device(device).type == "cpu":
        return WorkerPool(workers)
    return contextlib.nullcontext()


def map_spawned(
    function: Callable[..., Any],
    calls: Sequence[dict[str, Any]],
    workers: int,
    *,
    label: str,
    progress: bool = False,
    pool: WorkerPool | None = None,
) -> list[Any]:
    r"""``[function(**call) for call in calls]``, run in ``workers`` spawned processes.

    Arguments:
        function: A module-level (picklable) function.
        calls: Keyword arguments of each call, submitted in this order (put the
            longest first).
        workers: Number of processes.
        label: Description of the progress bar.
        progress: Show a rich progress bar of the calls completed.
        pool: Processes started already (their number in place of ``workers``),
            or None: ``workers`` new ones, shut down on return.

    Returns:
        The results, in the order of ``calls``. An exception in a call is raised here.

    Example:
        >>> import textwrap
        >>> map_spawned(textwrap.shorten, [{"text": "a stellar stream", "width": 10}, {"text": "GD-1", "width": 9}], 2,
        ...             label="shorten")
        ['a [...]', 'GD-1']
    """
    if pool is None:
        with WorkerPool(workers) as own:
            return map_spawned(function, calls, workers, label=label, progress=progress, pool=own)
    futures: list[Future] = []
    try:
        for call in calls:
            futures.append(pool.submit(function, **call))
        if progress:
            with Progress(transient=True) as bar:
                task = bar.add_task(f"{label} ({min(pool.workers, len(calls))} processes)", total=len(futures))
                for future in as_completed(futures):
                    future.result()
                    bar.advance(task)
        return [future.result() for future in futures]
    except BaseException:
        for future in futures:  # a shared pool outlives this call: drop the calls not started yet
            future.cancel()
        raise


def release_freed_memory() -> None:
    """Hand freed heap pages back to the operating system (glibc's ``malloc_trim``; a no-op
    elsewhere).

    Freed blocks below glibc's mmap threshold (a few MB, which that threshold
    grows to as large tensors are freed) otherwise stay resident: a process that
    copies pieces into one tensor would keep both copies, and a
    :class:`WorkerPool`'s process that has fitted members would hold their
    stars' tensors while it waits for the next call.

    Example:
        >>> release_freed_memory()
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Let torch use ``count`` CPU threads inside the block (0: leave as is).

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    previous = torch.get_num_threads()
    if count > 0 and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
