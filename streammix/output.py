"""Atomic, non-clobbering writes of every file streammix produces.

A file is first written to a temporary sibling and then renamed into place, so
a crash never leaves a truncated catalog behind, and an existing file is only
replaced when the caller says ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from astropy.table import Table

from .errors import InputError

__all__ = ["atomic_path", "check_writable", "write_json", "write_table"]

_TABLE_FORMATS = {
    ".ecsv": "ascii.ecsv",
    ".csv": "ascii.csv",
    ".fits": "fits",
    ".fit": "fits",
    ".parquet": "parquet",
    ".vot": "votable",
    ".xml": "votable",
    ".hdf5": "hdf5",
    ".h5": "hdf5",
}


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise :class:`InputError` if ``path`` exists and may not be replaced.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> check_writable(d / "new.ecsv").name
        'new.ecsv'
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"output '{path}' already exists; pass --overwrite to replace it")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    If the block raises, the temporary file is removed and ``path`` is left as it
    was.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def table_format(path: str | os.PathLike) -> str:
    """The astropy ``format`` name for a table file, from its suffix."""
    suffix = Path(path).suffix.lower()
    try:
        return _TABLE_FORMATS[suffix]
    except KeyError:
        known = ", ".join(sorted(_TABLE_FORMATS))
        raise InputError(f"file '{path}': unknown table format '{suffix}' (known: {known})") from None


def write_table(table: Table, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write an astropy table atomically, in the format its suffix names.

    Example:
        >>> import tempfile, pathlib
        >>> from astropy.table import Table
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "t.ecsv"
        >>> _ = write_table(Table({"a": [1, 2]}), target)
        >>> len(Table.read(target))
        2
    """
    fmt = table_format(path)
    with atomic_path(path, overwrite) as tmp:
        kwargs: dict[str, Any] = {"format": fmt, "overwrite": True}
        if fmt == "hdf5":
            kwargs.update(path="data", serialize_meta=True)
        elif fmt == "ascii.ecsv" or fmt == "fits":
            pass
        table.write(tmp, **kwargs)
    return Path(path)


def write_json(data: dict[str, Any], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a JSON document atomically (indented, keys in insertion order)."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return Path(path)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
