"""How every pipeline script ends on bad input: as ``streammix`` does.

A rule's script given a missing file, a bad key or a value its data cannot meet
stops with one line on standard error, ``<script>: <message>`` (no traceback),
and exit code 2; Snakemake then reports the rule as failed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from streammix.errors import InputError

__all__ = ["run_script"]


def run_script(main: Callable[[], None]) -> None:
    """Run a pipeline script's ``main``; bad input ends it with one line and exit code 2.

    Bad input is an :class:`~streammix.errors.InputError` or a missing input file
    (:class:`FileNotFoundError`, named by its path).

    Arguments:
        main: The script's entry point.

    Example:
        >>> def main():
        ...     raise InputError("stream config 'x.yaml': no such file")
        >>> run_script(main)
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    try:
        main()
    except InputError as error:
        message = str(error)
    except FileNotFoundError as error:
        message = f"file '{error.filename}' does not exist"
    else:
        return
    print(f"{Path(sys.argv[0]).stem}: {message}", file=sys.stderr)
    raise SystemExit(2)
