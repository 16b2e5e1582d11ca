"""Independent fits in spawned worker processes (the ensemble members, a block's flows),
and torch's thread count for a block of work.

Spawned rather than forked, so torch's threads and state start clean in each
worker; a script that calls a fit with ``workers > 1`` needs the
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from queue import Empty
from typing import Any

import torch
from rich.progress import Progress

__all__ = ["map_spawned", "map_spawned_setup", "torch_threads"]


def map_spawned(
    function: Callable[..., Any], calls: Sequence[dict[str, Any]], workers: int, *, label: str, progress: bool = False
) -> list[Any]:
    r"""``[function(**call) for call in calls]``, run in ``workers`` spawned processes.

    Arguments:
        function: A module-level (picklable) function.
        calls: Keyword arguments of each call, submitted in this order (put the
            longest first).
        workers: Number of processes.
        label: Description of the progress bar.
        progress: Show a rich progress bar of the calls completed.

    Returns:
        The results, in the order of ``calls``. An exception in a call is raised here.

    Example:
        >>> import textwrap
        >>> map_spawned(textwrap.shorten, [{"text": "a stellar stream", "width": 10}, {"text": "GD-1", "width": 9}], 2,
        ...             label="shorten")
        ['a [...]', 'GD-1']
    """
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(function, **call) for call in calls]
        if progress:
            with Progress(transient=True) as bar:
                task = bar.add_task(f"{label} ({workers} processes)", total=len(futures))
                for future in as_completed(futures):
                    future.result()
                    bar.advance(task)
        return [future.result() for future in futures]


def map_spawned_setup(
    function: Callable[[Any, Any], Any],
    items: Sequence[Any],
    workers: int,
    *,
    setup: Callable[..., Any],
    setup_kwargs: dict[str, Any],
    label: str,
    progress: bool = False,
) -> list[Any]:
    r"""``[function(setup(**setup_kwargs), item) for item in items]``, in ``workers`` spawned
    processes that each call ``setup`` once.

    The items are dealt to the workers as they come free (a shared queue), in this
    order, so a worker whose first item took long takes fewer; ``setup`` runs in a
    worker before its first item, and what it returns serves every item that
    worker takes (e.g. tensors that take seconds to prepare).

    Arguments:
        function: A module-level function of (what ``setup`` returned, an item).
        items: The items, picklable.
        workers: Number of processes.
        setup: A module-level function, called with ``setup_kwargs`` once per worker.
        setup_kwargs: Its keyword arguments, picklable.
        label: Description of the progress bar.
        progress: Show a rich progress bar of the workers done.

    Returns:
        The results, in the order of ``items``. An exception in a call is raised here.

    Example:
        >>> import operator
        >>> map_spawned_setup(operator.getitem, ["b", "a", "b"], 2, setup=dict, setup_kwargs={"a": 1, "b": 2},
        ...                   label="look up")
        [2, 1, 2]
    """
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        queue = manager.Queue()
        for index in range(len(items)):
            queue.put(index)
        call = dict(function=function, items=items, queue=queue, setup=setup, setup_kwargs=setup_kwargs)
        done = map_spawned(_drain, [call] * max(1, min(workers, len(items))), workers, label=label, progress=progress)
    results: list[Any] = [None] * len(items)
    for pairs in done:
        for index, result in pairs:
            results[index] = result
    return results


def _drain(function, items, queue, setup, setup_kwargs) -> list[tuple[int, Any]]:
    """A worker of :func:`map_spawned_setup`: takes item indices from ``queue`` until it is
    empty, calling ``setup`` before the first."""
    prepared, done = None, []
    while True:
        try:
            index = queue.get_nowait()
        except Empty:
            return done
        if prepared is None:
            prepared = setup(**setup_kwargs)
        done.append((index, function(prepared, items[index])))


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
