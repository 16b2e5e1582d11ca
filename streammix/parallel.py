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
from typing import Any

import torch
from rich.progress import Progress

__all__ = ["map_spawned", "torch_threads"]


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
