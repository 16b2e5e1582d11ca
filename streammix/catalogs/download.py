"""Downloading a catalog's files into the cache, treating every server as hostile.

A Zenodo record is resolved through Zenodo's REST API
(``<STREAMMIX_ZENODO_URL or https://zenodo.org>/api/records/<id>``), whose
JSON lists every file with its size and checksum. A VizieR table comes from
the VizieR VOTable service
(``<STREAMMIX_VIZIER_URL or https://vizier.cds.unistra.fr>/viz-bin/votable``),
which gives neither size nor checksum.

What a server sends is untrusted input:

* a file name must be a plain name (no path separator, no ``..``, no leading
  dot, no control character, not absolute, at most 255 characters), the
  destination must resolve to a file directly inside the catalog's cache
  folder, names must be unique, and existing symbolic links there are never
  followed (a download replaces the link, not what it points to);
* only ``http``/``https`` URLs, and redirects only to ``http``/``https``;
* a body longer than its declared size, or larger than ``max_size``
  (default 2 GiB), is refused while it streams, and so is a record whose
  files add up to more than ``max_size`` or that lists more than
  :data:`MAX_RECORD_FILES` files, before anything is downloaded;
* every file is streamed into a temporary file next to its final place and
  renamed only once its size and checksum match, so nothing partial, corrupt
  or oversized ever lands in the cache.

Timeouts, HTTP 5xx/429, dropped connections and short bodies are retried with
exponential backoff; HTTP 4xx, checksum mismatches and refused input are not.

The cache is ``<cache>/<catalog>/<file>`` plus a manifest of the files' MD5
hashes, where ``<cache>`` is the ``cache`` argument, else ``STREAMMIX_CACHE``,
else ``pooch.os_cache("streammix")/catalogs``. Once filled it is used offline.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import json
import os
import re
import socket
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pooch
from astropy.io.votable import parse_single_table
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from ..errors import InputError
from .registry import Catalog, check_file_name, get_catalog

__all__ = [
    "CACHE_ENV",
    "DEFAULT_MAX_SIZE",
    "MAX_RECORD_FILES",
    "VIZIER_URL_ENV",
    "ZENODO_URL_ENV",
    "cache_dir",
    "fetch",
    "format_size",
    "parse_size",
]

ZENODO_URL_ENV = "STREAMMIX_ZENODO_URL"
VIZIER_URL_ENV = "STREAMMIX_VIZIER_URL"
CACHE_ENV = "STREAMMIX_CACHE"
DEFAULT_ZENODO_URL = "https://zenodo.org"
DEFAULT_VIZIER_URL = "https://vizier.cds.unistra.fr"

#: Largest download (one file, or a record's files together) unless told otherwise: 2 GiB.
DEFAULT_MAX_SIZE = 2 * 1024**3
#: A record listing more files than this is refused (a real catalog has a handful).
MAX_RECORD_FILES = 1000
#: Largest record JSON read from a server.
MAX_JSON_BYTES = 32 * 1024**2

_MANIFEST = ".streammix-manifest.json"
_CHUNK = 1 << 16
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


# ----------------------------------------------------------------------------- sizes and names


def parse_size(text: str | int) -> int:
    """A size in bytes from ``"2GiB"``, ``"500 MB"``, ``"1e6"`` or an integer.

    Arguments:
        text: The size; units B, kB, MB, GB, TB (powers of 1000) or KiB, MiB,
            GiB, TiB (powers of 1024), case-insensitive.

    Example:
        >>> parse_size("2GiB"), parse_size("500 MB"), parse_size(1024)
        (2147483648, 500000000, 1024)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if match is None or match.group(2).lower() not in _SIZE_UNITS:
            raise InputError(f"--max-size: {text!r} is not a size (e.g. 2GiB, 500MB, 1000000)")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _SIZE_UNITS[unit])
    if size <= 0:
        raise InputError(f"--max-size: {text!r} must be more than 0 bytes")
    return size


def format_size(size: int | None) -> str:
    """Bytes in words.

    Example:
        >>> format_size(2 * 1024**3), format_size(1536), format_size(None)
        ('2.0 GiB', '1.5 KiB', 'unknown size')
    """
    if size is None:
        return "unknown size"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover


def _destination(folder: Path, name: str, where: str) -> Path:
    """The path of ``name`` in ``folder``, checked to lie directly inside it."""
    check_file_name(name, where)
    real = Path(os.path.realpath(folder))
    dest = real / name
    if Path(os.path.dirname(os.path.abspath(dest))) != real:  # pragma: no cover - guarded by the name check
        raise InputError(f"{where}: file name {name!r} refused (outside the cache folder {real})")
    return dest


def _check_url(url: Any, where: str) -> str:
    if not isinstance(url, str):
        raise InputError(f"{where}: URL {url!r} is not text")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise InputError(f"{where}: URL {url[:200]!r} refused (only http and https URLs)")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InputError(f"{where}: URL {url[:200]!r} refused (spaces or control characters)")
    return url


# ----------------------------------------------------------------------------- cache


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """Where catalogs are cached: ``cache``, else ``STREAMMIX_CACHE``, else the OS cache.

    Arguments:
        cache: Explicit folder (wins over everything).

    Example:
        >>> cache_dir("/tmp/x")
        PosixPath('/tmp/x')
    """
    if cache is not None:
        return Path(cache)
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path(pooch.os_cache("streammix")) / "catalogs"


def _catalog_folder(cache: str | os.PathLike | None, cat: Catalog) -> Path:
    check_file_name(cat.name, f"catalog '{cat.name}'")
    folder = cache_dir(cache) / cat.name
    if folder.is_symlink():
        raise InputError(f"cache folder '{folder}': a symbolic link; refused (remove it or choose another --cache-dir)")
    return folder


def _hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cached_files(folder: Path) -> list[Path] | None:
    """The cached files if the manifest is present and every file still matches it
    (a plain file, not a link, with the recorded MD5)."""
    try:
        if (folder / _MANIFEST).is_symlink():
            return None
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None
    paths = []
    for key, info in manifest["files"].items():
        try:
            path = _destination(folder, key, f"cache manifest '{folder / _MANIFEST}'")
            if not stat.S_ISREG(os.lstat(path).st_mode) or _hash_file(path, "md5") != info.get("md5"):
                return None
        except (InputError, OSError, AttributeError):
            return None
        paths.append(path)
    return paths


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- HTTP


class _Retry(Exception):
    """A transient failure worth another attempt."""


class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Follows at most 5 redirects, and only to http(s) URLs."""

    max_redirections = 5

    def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001, ANN201 - urllib's signature
        location = headers.get("location") or headers.get("uri")
        if location is not None:
            target = urllib.parse.urljoin(req.full_url, location)
            if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
                raise InputError(f"URL {req.full_url}: redirected to {target[:200]!r}; refused (only http and https)")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


_OPENER = urllib.request.build_opener(_HttpRedirects)


def _open(url: str, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "streammix-catalogs"})
    try:
        return _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code >= 500 or error.code == 429:
            raise _Retry(f"HTTP {error.code} {error.reason}") from None
        raise InputError(f"URL {url}: HTTP {error.code} {error.reason}") from None
    except (TimeoutError, socket.timeout):
        raise _Retry(f"timed out after {timeout:g} s") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, (TimeoutError, socket.timeout)):
            raise _Retry(f"timed out after {timeout:g} s") from None
        raise _Retry(f"cannot connect ({error.reason})") from None
    except (ConnectionError, http.client.HTTPException) as error:
        raise _Retry(f"connection failed ({error})") from None


def _with_retries(url: str, attempt: Callable[[], Any], retries: int, backoff: float) -> Any:
    last = ""
    for i in range(retries + 1):
        try:
            return attempt()
        except _Retry as error:
            last = str(error)
            if i < retries:
                time.sleep(backoff * 2**i)
    raise InputError(f"URL {url}: {last} ({retries + 1} attempts)")


def _get_json(url: str, timeout: float, retries: int, backoff: float) -> Any:
    def attempt() -> Any:
        with _open(url, timeout) as response:
            try:
                body = response.read(MAX_JSON_BYTES + 1)
            except (TimeoutError, socket.timeout):
                raise _Retry(f"timed out after {timeout:g} s") from None
            except (http.client.IncompleteRead, ConnectionError) as error:
                raise _Retry(f"truncated response ({error})") from None
        if len(body) > MAX_JSON_BYTES:
            raise InputError(f"URL {url}: record JSON larger than {format_size(MAX_JSON_BYTES)}; refused")
        try:
            return json.loads(body)
        except ValueError:
            raise InputError(f"URL {url}: response is not JSON") from None

    return _with_retries(url, attempt, retries, backoff)


def _progress_bar(enabled: bool, label: str, total: int | None):
    if not enabled:
        return None
    bar = Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   console=Console(stderr=True), transient=True)
    bar.start()
    bar.add_task(label, total=total)
    return bar


def _download(
    url: str,
    dest: Path,
    *,
    checksum: str | None,
    size: int | None,
    max_size: int,
    timeout: float,
    retries: int,
    backoff: float,
    progress: bool,
    validate: Callable[[Path], None] | None = None,
) -> str:
    """Stream ``url`` to ``dest`` through a temporary file; returns the MD5 hex digest.

    At most ``size`` bytes (when declared) and never more than ``max_size``
    are read; one byte more and the download is refused.
    """
    algorithm, expected = (checksum.split(":", 1) if checksum else (None, None))
    limit = max_size if size is None else min(size, max_size)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def too_long(n: int) -> InputError:
        if size is not None and n > size:
            return InputError(f"file '{dest.name}' from {url}: body longer than its declared size ({size} bytes); refused")
        return InputError(f"file '{dest.name}' from {url}: larger than --max-size {format_size(max_size)}; refused")

    def attempt() -> str:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".part-{dest.name[:40]}-")
        tmp = Path(tmp_name)
        try:
            md5 = hashlib.md5()  # noqa: S324 - integrity, not security
            other = hashlib.new(algorithm) if algorithm and algorithm != "md5" else None
            n = 0
            with os.fdopen(fd, "wb") as out, _open(url, timeout) as response:
                header = response.headers.get("Content-Length")
                announced = int(header) if header and header.strip().isdigit() else None
                if announced is not None and announced > limit:
                    raise too_long(announced)
                bar = _progress_bar(progress, dest.name, announced or size)
                try:
                    while True:
                        try:
                            block = response.read(min(_CHUNK, limit + 1 - n))
                        except (TimeoutError, socket.timeout):
                            raise _Retry(f"stalled: no data for {timeout:g} s") from None
                        except (http.client.IncompleteRead, ConnectionError) as error:
                            raise _Retry(f"truncated body ({error!r})") from None
                        if not block:
                            break
                        n += len(block)
                        if n > limit:
                            raise too_long(n)
                        out.write(block)
                        md5.update(block)
                        if other is not None:
                            other.update(block)
                        if bar is not None:
                            bar.update(bar.task_ids[0], completed=n)
                finally:
                    if bar is not None:
                        bar.stop()
            for what, value in (("Content-Length", announced), ("expected size", size)):
                if value is not None and n != value:
                    raise _Retry(f"truncated body: {n} bytes, {what} {value}")
            got = md5.hexdigest() if other is None else other.hexdigest()
            if expected is not None and got.lower() != expected.lower():
                raise InputError(
                    f"file '{dest.name}' from {url}: checksum mismatch, expected {algorithm}:{expected}, got {algorithm}:{got}"
                )
            if validate is not None:
                validate(tmp)
            os.replace(tmp, dest)  # replaces a link at dest, never what it points to
            return md5.hexdigest()
        finally:
            tmp.unlink(missing_ok=True)

    return _with_retries(url, attempt, retries, backoff)


# ----------------------------------------------------------------------------- services


def _record_entries(record: Any, record_url: str, where: str) -> list[dict]:
    entries = record.get("files") if isinstance(record, dict) else None
    if isinstance(entries, dict):  # InvenioRDM style: {"entries": {...} or [...]}
        entries = entries.get("entries", entries)
        entries = list(entries.values()) if isinstance(entries, dict) else entries
    if not isinstance(entries, list):
        raise InputError(f"URL {record_url}: record JSON has no 'files' list")
    if len(entries) > MAX_RECORD_FILES:
        raise InputError(f"{where}: lists {len(entries)} files, more than {MAX_RECORD_FILES}; refused")
    available: dict[str, dict] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise InputError(f"{where}: a file entry is not a JSON object")
        key = check_file_name(entry.get("key", entry.get("filename")), where)
        if key in available:
            raise InputError(f"{where}: file name {key!r} listed twice; refused")
        size = entry.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise InputError(f"{where}: file {key!r} has size {size!r}, not a number of bytes")
        links = entry.get("links") if isinstance(entry.get("links"), dict) else {}
        url = links.get("self") or links.get("content") or links.get("download")
        if not url:
            url = f"{record_url}/files/{urllib.parse.quote(key)}/content"
        checksum = entry.get("checksum")
        if checksum is not None and (not isinstance(checksum, str) or not re.fullmatch(r"(md5|sha256):[0-9a-fA-F]+", checksum)):
            raise InputError(f"{where}: file {key!r} has checksum {str(checksum)[:80]!r}, not md5:/sha256:<hex>")
        available[key] = {"key": key, "url": _check_url(url, f"{where}, file {key!r}"), "checksum": checksum, "size": size}
    return list(available.values())


def _zenodo_files(cat: Catalog, timeout: float, retries: int, backoff: float) -> list[dict]:
    if not cat.record:
        raise InputError(
            f"catalog '{cat.name}': no verified Zenodo record id (source.record is null in {cat.path}); "
            "fill it in once the record is known"
        )
    base = os.environ.get(ZENODO_URL_ENV, DEFAULT_ZENODO_URL).rstrip("/")
    record_url = _check_url(f"{base}/api/records/{urllib.parse.quote(cat.record, safe='')}", f"catalog '{cat.name}'")
    record = _get_json(record_url, timeout, retries, backoff)
    where = f"catalog '{cat.name}': Zenodo record {cat.record}"
    available = {e["key"]: e for e in _record_entries(record, record_url, where)}
    shown = ", ".join(sorted(available)[:20]) + (" ..." if len(available) > 20 else "")
    wanted: list[tuple[str, Any]] = []
    for f in cat.files:  # a key with * ? [ is a pattern (file names the registry could not verify)
        if any(c in f.key for c in "*?["):
            hits = sorted(k for k in available if fnmatch.fnmatchcase(k, f.key))
            if not hits:
                raise InputError(f"{where}: no file matches '{f.key}' (it has: {shown})")
            wanted += [(k, None) for k in hits if k not in dict(wanted)]
        elif f.key not in available:
            raise InputError(f"{where}: file '{f.key}' not in the record (it has: {shown})")
        else:
            wanted.append((f.key, f))
    if not cat.files:
        wanted = [(k, None) for k in sorted(available)]
    chosen = []
    for key, registry in wanted:
        info = dict(available[key])
        registry_sum, api_sum = (registry.checksum if registry else None), info["checksum"]
        if registry_sum and api_sum and registry_sum.split(":")[0] == api_sum.split(":")[0] and registry_sum.lower() != api_sum.lower():
            raise InputError(f"catalog '{cat.name}': file '{key}': registry checksum {registry_sum} differs from Zenodo's {api_sum}")
        if registry is not None and registry.size is not None and info["size"] is not None and registry.size != info["size"]:
            raise InputError(f"catalog '{cat.name}': file '{key}': registry size {registry.size} differs from Zenodo's {info['size']}")
        info["checksum"] = api_sum or registry_sum
        if info["checksum"] is None:
            raise InputError(f"{where}: file '{key}' has no checksum")
        chosen.append(info)
    return chosen


def _vizier_files(cat: Catalog) -> list[dict]:
    if not cat.record:
        raise InputError(f"catalog '{cat.name}': no VizieR table id in {cat.path}")
    base = os.environ.get(VIZIER_URL_ENV, DEFAULT_VIZIER_URL).rstrip("/")
    query = urllib.parse.urlencode(
        {"-source": cat.record, "-out.all": "", "-out.add": "_RAJ,_DEJ", "-out.max": "unlimited"}, safe="/,"
    )
    key = check_file_name(cat.record.replace("/", "_") + ".vot", f"catalog '{cat.name}'")
    url = _check_url(f"{base}/viz-bin/votable?{query}", f"catalog '{cat.name}'")
    return [{"key": key, "url": url, "checksum": None, "size": None}]


def _validate_votable(path: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = parse_single_table(str(path), verify="ignore").to_table()
    except Exception as error:  # noqa: BLE001 - anything unreadable is a bad download
        raise _Retry(f"response is not a readable VOTable ({type(error).__name__})") from None
    if len(table) == 0:
        raise InputError(f"file '{path.name}': the VizieR service returned an empty table")


def fetch(
    name: str,
    *,
    cache: str | os.PathLike | None = None,
    force: bool = False,
    registry: str | os.PathLike | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    progress: bool = False,
    max_size: int | str = DEFAULT_MAX_SIZE,
    report: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download a catalog's files into the cache (no network if they are already there).

    Arguments:
        name: Catalog name (see :func:`~streammix.catalogs.list_catalogs`).
        cache: Cache folder (see :func:`cache_dir`).
        force: Download again even if the cache is complete.
        registry: Registry folder.
        timeout: Seconds without a byte before an attempt fails.
        retries: Extra attempts after a transient failure.
        backoff: Seconds before the first retry; doubled each time.
        progress: Show a progress bar on standard error.
        max_size: Largest download in bytes (or ``"2GiB"``...), per file and in all.
        report: Called with one line (files, total size, limit) before downloading.

    Returns:
        The cached files (empty for a catalog installed as a package).

    Example:
        >>> fetch("galstreams")  # installed from PyPI: nothing to download
        []
    """
    cat = get_catalog(name, registry)
    if cat.service == "package":
        return []
    max_size = parse_size(max_size)
    folder = _catalog_folder(cache, cat)
    if not force:
        cached = _cached_files(folder)
        if cached is not None:
            return cached
    validate = None
    if cat.service == "zenodo":
        files = _zenodo_files(cat, timeout, retries, backoff)
    elif cat.service == "vizier":
        files, validate = _vizier_files(cat), _validate_votable
    else:
        files = []
        for f in cat.files:
            if not f.url or not f.checksum:
                raise InputError(f"catalog '{cat.name}': file '{f.key}' needs both url and checksum")
            files.append({"key": f.key, "url": _check_url(f.url, f"catalog '{cat.name}'"), "checksum": f.checksum, "size": f.size})
    sizes = [f["size"] for f in files]
    total = sum(s for s in sizes if s is not None)
    if report is not None:
        if all(s is not None for s in sizes):
            said = f"{format_size(total)} in all"
        else:
            said = f"{format_size(total)} declared, the rest of unknown size" if total else "size not declared by the service"
        report(f"{cat.name}: {len(files)} file(s), {said}; --max-size {format_size(max_size)}")
    if total > max_size:
        raise InputError(
            f"catalog '{cat.name}': {len(files)} file(s) of {format_size(total)} in all, more than --max-size "
            f"{format_size(max_size)}; refused (raise --max-size to download)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    destinations = [_destination(folder, f["key"], f"catalog '{cat.name}'") for f in files]
    (folder / _MANIFEST).unlink(missing_ok=True)  # incomplete until every file is in
    manifest = {"catalog": cat.name, "service": cat.service, "record": cat.record, "files": {}}
    for f, dest in zip(files, destinations):
        md5 = _download(
            f["url"], dest, checksum=f["checksum"], size=f["size"], max_size=max_size, timeout=timeout,
            retries=retries, backoff=backoff, progress=progress, validate=validate,
        )
        manifest["files"][f["key"]] = {"md5": md5, "url": f["url"], "checksum": f["checksum"], "size": f["size"]}
    manifest["fetched"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_json_atomic(folder / _MANIFEST, manifest)
    return destinations
