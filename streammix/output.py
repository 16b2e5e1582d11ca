"""Atomic, non-clobbering writes of every file streammix produces.

A file is first written to a temporary sibling and then renamed into place, so
a crash never leaves a truncated catalog behind, and an existing file is only
replaced when the caller says ``overwrite=True``. Temporary siblings are named
``.<name>.<pid>-<token>.part<suffix>`` (files) and ``.<name>.<pid>-<token>.partial``
(folders); those left by a process that was killed are removed by the next write
of the same output. Files and folders get the usual permissions (the umask's).
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from .errors import InputError

__all__ = ["atomic_path", "check_writable", "partial_folder", "remove_stale_partials", "write_json", "write_table"]

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
    was; temporary files that killed processes left beside ``path`` are removed
    first.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text(), [p.name for p in target.parent.iterdir()]
        ('done', ['out.txt'])
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = path.parent / f".{path.name}.{_token()}.part{path.suffix}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def partial_folder(out: str | os.PathLike) -> Path:
    """A new, empty temporary folder beside ``out`` that will become ``out``
    (stale ones of killed processes are removed first).

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
        >>> tmp = partial_folder(out)
        >>> tmp.is_dir(), tmp.name.startswith(".run."), tmp.name.endswith(".partial")
        (True, True, True)
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.{_token()}.partial"
    tmp.mkdir(mode=0o777)  # the umask applies
    return tmp


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders of ``path`` whose writing process is gone.

    Returns the removed paths. Those of running processes (another write of the
    same output under way) are left alone.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".t.ecsv.999999999-0a1b.part.ecsv").write_text("cut")
        >>> [p.name for p in remove_stale_partials(folder / "t.ecsv")], list(folder.iterdir())
        (['.t.ecsv.999999999-0a1b.part.ecsv'], [])
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    name = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]+\.(part{re.escape(path.suffix)}|partial)")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*"):
        match = name.fullmatch(candidate.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # someone else's live process; an absurd pid is no process
    return True


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
        with warnings.catch_warnings():
            # long metadata keys become FITS HIERARCH cards, as they should: no need to say so
            warnings.filterwarnings("ignore", message="Keyword name .* HIERARCH card", category=Warning)
            table.write(tmp, **kwargs)
    return Path(path)


def write_json(data: dict[str, Any], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a JSON document atomically (indented, keys in insertion order).

    Strict JSON: a NaN or infinite number (e.g. a quantity not measured) is
    written as ``null``, which every JSON reader accepts.

    Example:
        >>> import json, tempfile
        >>> path = write_json({"a": float("nan"), "b": [1.5, np.float32("inf")]}, Path(tempfile.mkdtemp()) / "x.json")
        >>> json.loads(path.read_text())
        {'a': None, 'b': [1.5, None]}
    """
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(json.dumps(_finite_or_null(data), indent=2, default=_json_default, allow_nan=False) + "\n")
    return Path(path)


def _finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth) replaced by None."""
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    if isinstance(value, np.ndarray):
        return _finite_or_null(value.tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
