"""Published membership catalogs: a registry, verified downloads, one schema, cross-matching.

The registry is one YAML file per catalog in ``streammix/resources/catalogs/``
(or the folder named by ``STREAMMIX_CATALOGS``); see ``catalogs/README.md``.

Downloads
    A Zenodo record is resolved through Zenodo's REST API
    (``<STREAMMIX_ZENODO_URL or https://zenodo.org>/api/records/<id>``), whose
    JSON lists every file with its size and checksum; each file is verified
    against that checksum (and against the registry's, when it has one).
    A VizieR table comes from the VizieR VOTable service
    (``<STREAMMIX_VIZIER_URL or https://vizier.cds.unistra.fr>/viz-bin/votable``),
    which gives no checksum, so the body must be complete and parse as a VOTable.
    Every file is streamed into a hidden temporary file next to its final place
    and renamed only once its size and checksum match, so a partial or corrupt
    download never lands in the cache. Timeouts, HTTP 5xx/429, dropped
    connections and truncated bodies are retried with exponential backoff;
    HTTP 4xx and checksum mismatches are not.

Cache
    ``<cache>/<catalog>/<file>`` plus a manifest of the files' MD5 hashes,
    where ``<cache>`` is the ``cache_dir`` argument, else ``STREAMMIX_CACHE``,
    else ``pooch.os_cache("streammix")/catalogs``. Once filled it is used offline.

Common schema (:func:`load`)
    ``source_id`` (int64, masked where unknown), ``ra`` and ``dec`` (deg),
    ``p_member`` (float, NaN where the catalog has no probabilities),
    ``member_flag`` (bool), ``catalog`` (name); every other column is kept
    as-is, or as ``orig_<name>`` where its name collides with the schema.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import yaml
from astropy.coordinates import SkyCoord, match_coordinates_sky
from astropy.table import MaskedColumn, QTable, Table

from .errors import InputError

__all__ = [
    "Catalog",
    "CatalogFile",
    "cache_dir",
    "compare_with_catalog",
    "crossmatch",
    "fetch",
    "get_catalog",
    "list_catalogs",
    "load",
    "to_schema",
    "SCHEMA",
]

ZENODO_URL_ENV = "STREAMMIX_ZENODO_URL"
VIZIER_URL_ENV = "STREAMMIX_VIZIER_URL"
CACHE_ENV = "STREAMMIX_CACHE"
REGISTRY_ENV = "STREAMMIX_CATALOGS"
DEFAULT_ZENODO_URL = "https://zenodo.org"
DEFAULT_VIZIER_URL = "https://vizier.cds.unistra.fr"

#: Columns every loaded catalog has, in this order.
SCHEMA = ("source_id", "ra", "dec", "p_member", "member_flag", "catalog")

_MANIFEST = ".streammix-manifest.json"
_SERVICES = ("zenodo", "vizier", "url", "package")
_CHUNK = 1 << 16


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class CatalogFile:
    """One file of a catalog.

    Arguments:
        key: File name (the Zenodo file key; the cache file name).
        checksum: ``"md5:<hex>"`` or ``"sha256:<hex>"``, or None where unknown
            (a Zenodo record supplies it at fetch time).
        format: astropy ``Table.read`` format, or None to let astropy guess.
        url: Direct URL (service ``url`` only).

    Example:
        >>> CatalogFile("members.ecsv", "md5:0123", "ascii.ecsv").key
        'members.ecsv'
    """

    key: str
    checksum: str | None = None
    format: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Catalog:
    """A registry entry: where a published catalog lives and how to read it.

    Arguments:
        name: Registry name (the YAML file's stem).
        title: One-line description.
        stream: Stream(s) it covers.
        kind: ``"members"`` (stars) or ``"tracks"``.
        service: ``"zenodo"``, ``"vizier"``, ``"url"`` or ``"package"``.
        record: Zenodo record id, VizieR table (or catalogue) id, or package name;
            None where it could not be verified.
        files: Files to fetch (empty: all files of a Zenodo record / the VizieR table).
        table: Which file holds the table (None: the first readable one).
        columns: streammix name -> catalog column name or candidate names.
        paper: Authors, year, title, bibcode, arxiv, doi.
        data_doi: DOI of the data set, if any.
        licence: Licence, if known.
        member_threshold: p_member at or above which a star counts as a member.
        verified: ``"true"``, ``"partial"`` or ``"false"``.
        notes: What was and was not verified.
        path: The YAML file.

    Example:
        >>> cat = get_catalog("tavangar2025_gd1")
        >>> cat.service, cat.record, cat.paper["arxiv"]
        ('zenodo', '15428120', '2502.13236')
    """

    name: str
    title: str
    stream: str
    kind: str
    service: str
    record: str | None
    files: tuple[CatalogFile, ...]
    table: str | None
    columns: Mapping[str, tuple[str, ...]]
    paper: Mapping[str, Any] = field(default_factory=dict)
    data_doi: str | None = None
    licence: str | None = None
    member_threshold: float = 0.5
    verified: str = "false"
    notes: str = ""
    path: Path | None = None

    @property
    def doi(self) -> str | None:
        """The data DOI, else the paper's DOI (None where neither is known)."""
        return self.data_doi or self.paper.get("doi")


def _registry_dir(registry: str | os.PathLike | None) -> Path:
    if registry is not None:
        return Path(registry)
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env)
    return Path(str(resources.files("streammix") / "resources" / "catalogs"))


def _candidates(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InputError(f"{where}: expected a column name or a list of names, got {value!r}")


def _parse_catalog(path: Path) -> Catalog:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"catalog file '{path}': cannot read ({error})") from None
    if not isinstance(raw, dict):
        raise InputError(f"catalog file '{path}': not a YAML mapping")
    for key in ("name", "kind", "source"):
        if key not in raw:
            raise InputError(f"catalog file '{path}': key '{key}' missing")
    source = raw["source"] or {}
    service = source.get("service")
    if service not in _SERVICES:
        raise InputError(f"catalog file '{path}': source.service is {service!r}; expected one of {', '.join(_SERVICES)}")
    record = {
        "zenodo": source.get("record"),
        "vizier": source.get("table") or source.get("catalogue"),
        "package": source.get("package"),
        "url": None,
    }[service]
    files = []
    for i, entry in enumerate(raw.get("files") or []):
        if not isinstance(entry, dict) or "key" not in entry:
            raise InputError(f"catalog file '{path}': files[{i}] needs a 'key'")
        checksum = entry.get("checksum")
        if checksum is not None and str(checksum).split(":", 1)[0] not in ("md5", "sha256"):
            raise InputError(f"catalog file '{path}': files[{i}].checksum must start with md5: or sha256:")
        files.append(CatalogFile(str(entry["key"]), checksum, entry.get("format"), entry.get("url")))
    columns = {
        str(k): _candidates(v, f"catalog file '{path}': columns.{k}") for k, v in (raw.get("columns") or {}).items()
    }
    verified = raw.get("verified", False)
    verified = {True: "true", False: "false"}.get(verified, str(verified))
    return Catalog(
        name=str(raw["name"]),
        title=str(raw.get("title", "")),
        stream=str(raw.get("stream", "")),
        kind=str(raw["kind"]),
        service=service,
        record=None if record is None else str(record),
        files=tuple(files),
        table=raw.get("table"),
        columns=columns,
        paper=dict(raw.get("paper") or {}),
        data_doi=raw.get("data_doi"),
        licence=raw.get("licence"),
        member_threshold=float(raw.get("member_threshold", 0.5)),
        verified=verified,
        notes=" ".join(str(raw.get("notes", "")).split()),
        path=path,
    )


def list_catalogs(registry: str | os.PathLike | None = None) -> list[Catalog]:
    """Every catalog of the registry, sorted by name.

    Arguments:
        registry: Folder of YAML files (default: ``STREAMMIX_CATALOGS`` or the
            packaged registry).

    Example:
        >>> names = [c.name for c in list_catalogs()]
        >>> "ibata2021_streamfinder" in names and "galstreams" in names
        True
    """
    folder = _registry_dir(registry)
    if not folder.is_dir():
        raise InputError(f"catalog registry '{folder}': not a folder")
    return sorted((_parse_catalog(p) for p in sorted(folder.glob("*.yaml"))), key=lambda c: c.name)


def get_catalog(name: str, registry: str | os.PathLike | None = None) -> Catalog:
    """The registry entry called ``name``.

    Arguments:
        name: Catalog name, e.g. ``"tavangar2025_gd1"``.
        registry: Folder of YAML files (see :func:`list_catalogs`).

    Example:
        >>> get_catalog("galstreams").kind
        'tracks'
    """
    catalogs = list_catalogs(registry)
    for cat in catalogs:
        if cat.name == name:
            return cat
    known = ", ".join(c.name for c in catalogs)
    raise InputError(f"catalog '{name}': unknown; known catalogs: {known}")


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
    import pooch

    return Path(pooch.os_cache("streammix")) / "catalogs"


def _hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def _cached_files(folder: Path) -> list[Path] | None:
    """The cached files if the manifest is present and every file still matches it."""
    manifest = _read_manifest(folder)
    if manifest is None:
        return None
    paths = []
    for key, info in manifest["files"].items():
        path = folder / key
        if not path.is_file() or _hash_file(path, "md5") != info.get("md5"):
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


def _open(url: str, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "streammix-catalogs"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) URLs from the registry
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
                body = response.read()
            except (TimeoutError, socket.timeout):
                raise _Retry(f"timed out after {timeout:g} s") from None
            except (http.client.IncompleteRead, ConnectionError) as error:
                raise _Retry(f"truncated response ({error})") from None
        try:
            return json.loads(body)
        except ValueError:
            raise InputError(f"URL {url}: response is not JSON") from None

    return _with_retries(url, attempt, retries, backoff)


def _progress_bar(enabled: bool, label: str, total: int | None):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

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
    timeout: float,
    retries: int,
    backoff: float,
    progress: bool,
    validate: Callable[[Path], None] | None = None,
) -> str:
    """Stream ``url`` to ``dest`` through a temporary file; returns the MD5 hex digest."""
    algorithm, expected = (checksum.split(":", 1) if checksum else (None, None))
    dest.parent.mkdir(parents=True, exist_ok=True)

    def attempt() -> str:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".part-{dest.name}-")
        tmp = Path(tmp_name)
        try:
            md5 = hashlib.md5()  # noqa: S324 - integrity, not security
            other = hashlib.new(algorithm) if algorithm and algorithm != "md5" else None
            n = 0
            with os.fdopen(fd, "wb") as out, _open(url, timeout) as response:
                header = response.headers.get("Content-Length")
                promised = int(header) if header and header.isdigit() else size
                bar = _progress_bar(progress, dest.name, promised)
                try:
                    while True:
                        try:
                            block = response.read(_CHUNK)
                        except (TimeoutError, socket.timeout):
                            raise _Retry(f"stalled: no data for {timeout:g} s") from None
                        except (http.client.IncompleteRead, ConnectionError) as error:
                            raise _Retry(f"truncated body ({error!r})") from None
                        if not block:
                            break
                        out.write(block)
                        md5.update(block)
                        if other is not None:
                            other.update(block)
                        n += len(block)
                        if bar is not None:
                            bar.update(bar.task_ids[0], completed=n)
                finally:
                    if bar is not None:
                        bar.stop()
            for what, value in (("Content-Length", header), ("expected size", size)):
                if value is not None and str(value).isdigit() and n != int(value):
                    raise _Retry(f"truncated body: {n} bytes, {what} {value}")
            got = md5.hexdigest() if other is None else other.hexdigest()
            if expected is not None and got.lower() != expected.lower():
                raise InputError(
                    f"file '{dest.name}' from {url}: checksum mismatch, expected {algorithm}:{expected}, got {algorithm}:{got}"
                )
            if validate is not None:
                validate(tmp)
            os.replace(tmp, dest)
            return md5.hexdigest()
        finally:
            tmp.unlink(missing_ok=True)

    return _with_retries(url, attempt, retries, backoff)


# ----------------------------------------------------------------------------- fetch


def _zenodo_files(cat: Catalog, timeout: float, retries: int, backoff: float) -> list[dict]:
    if not cat.record:
        raise InputError(
            f"catalog '{cat.name}': no verified Zenodo record id (source.record is null in {cat.path}); "
            "fill it in once the record is known"
        )
    base = os.environ.get(ZENODO_URL_ENV, DEFAULT_ZENODO_URL).rstrip("/")
    record_url = f"{base}/api/records/{urllib.parse.quote(cat.record)}"
    record = _get_json(record_url, timeout, retries, backoff)
    entries = record.get("files") if isinstance(record, dict) else None
    if isinstance(entries, dict):  # InvenioRDM style: {"entries": {...} or [...]}
        entries = entries.get("entries", entries)
        entries = list(entries.values()) if isinstance(entries, dict) else entries
    if not isinstance(entries, list):
        raise InputError(f"URL {record_url}: record JSON has no 'files' list")
    available = {}
    for entry in entries:
        key = entry.get("key") or entry.get("filename")
        links = entry.get("links") or {}
        url = links.get("self") or links.get("content") or links.get("download")
        if not url:
            url = f"{record_url}/files/{urllib.parse.quote(str(key))}/content"
        available[key] = {"key": key, "url": url, "checksum": entry.get("checksum"), "size": entry.get("size")}
    wanted = [f.key for f in cat.files] or sorted(available)
    chosen = []
    for key in wanted:
        if key not in available:
            raise InputError(
                f"catalog '{cat.name}': file '{key}' not in Zenodo record {cat.record} (it has: {', '.join(sorted(available))})"
            )
        info = available[key]
        registry_sum = next((f.checksum for f in cat.files if f.key == key), None)
        api_sum = info["checksum"]
        if registry_sum and api_sum and registry_sum.split(":")[0] == api_sum.split(":")[0] and registry_sum.lower() != api_sum.lower():
            raise InputError(
                f"catalog '{cat.name}': file '{key}': registry checksum {registry_sum} differs from Zenodo's {api_sum}"
            )
        info["checksum"] = api_sum or registry_sum
        if info["checksum"] is None:
            raise InputError(f"catalog '{cat.name}': file '{key}': Zenodo record {cat.record} gives no checksum")
        chosen.append(info)
    return chosen


def _vizier_files(cat: Catalog) -> list[dict]:
    if not cat.record:
        raise InputError(f"catalog '{cat.name}': no VizieR table id in {cat.path}")
    base = os.environ.get(VIZIER_URL_ENV, DEFAULT_VIZIER_URL).rstrip("/")
    query = urllib.parse.urlencode({"-source": cat.record, "-out.all": "", "-out.max": "unlimited"}, safe="/")
    key = cat.record.replace("/", "_") + ".vot"
    return [{"key": key, "url": f"{base}/viz-bin/votable?{query}", "checksum": None, "size": None}]


def _validate_votable(path: Path) -> None:
    from astropy.io.votable import parse_single_table

    try:
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
) -> list[Path]:
    """Download a catalog's files into the cache (no network if they are already there).

    Arguments:
        name: Catalog name (see :func:`list_catalogs`).
        cache: Cache folder (see :func:`cache_dir`).
        force: Download again even if the cache is complete.
        registry: Registry folder (see :func:`list_catalogs`).
        timeout: Seconds without a byte before an attempt fails.
        retries: Extra attempts after a transient failure.
        backoff: Seconds before the first retry; doubled each time.
        progress: Show a progress bar on standard error.

    Returns:
        The cached files (empty for a catalog installed as a package).

    Example:
        >>> fetch("galstreams")  # installed from PyPI: nothing to download
        []
    """
    cat = get_catalog(name, registry)
    if cat.service == "package":
        return []
    folder = cache_dir(cache) / cat.name
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
        files = [{"key": f.key, "url": f.url, "checksum": f.checksum, "size": None} for f in cat.files]
        for f in files:
            if not f["url"] or not f["checksum"]:
                raise InputError(f"catalog '{cat.name}': file '{f['key']}' needs both url and checksum")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _MANIFEST).unlink(missing_ok=True)  # incomplete until every file is in
    manifest = {"catalog": cat.name, "service": cat.service, "record": cat.record, "files": {}}
    paths = []
    for f in files:
        dest = folder / f["key"]
        md5 = _download(
            f["url"], dest, checksum=f["checksum"], size=f["size"], timeout=timeout,
            retries=retries, backoff=backoff, progress=progress, validate=validate,
        )
        manifest["files"][f["key"]] = {"md5": md5, "url": f["url"], "checksum": f["checksum"]}
        paths.append(dest)
    manifest["fetched"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_json_atomic(folder / _MANIFEST, manifest)
    return paths


# ----------------------------------------------------------------------------- load


def _read_table(cat: Catalog, paths: list[Path]) -> tuple[Table, Path]:
    formats = {f.key: f.format for f in cat.files}
    if cat.table:
        chosen = [p for p in paths if p.name == cat.table]
        if not chosen:
            raise InputError(f"catalog '{cat.name}': table file '{cat.table}' not among the fetched files")
    else:
        chosen = paths
    errors = []
    for path in chosen:
        fmt = formats.get(path.name) or ("votable" if path.suffix == ".vot" else None)
        try:
            kwargs = {"format": fmt} if fmt else {}
            return Table.read(path, **kwargs), path
        except Exception as error:  # noqa: BLE001 - try the next file
            errors.append(f"{path.name}: {type(error).__name__}")
    raise InputError(f"catalog '{cat.name}': no readable table among {', '.join(p.name for p in chosen)} ({'; '.join(errors)})")


def _pick(table: Table, cat: Catalog, key: str, required: bool, path: Path) -> str | None:
    names = cat.columns.get(key, ())
    for n in names:
        if n in table.colnames:
            return n
    if required or (names and len(names) == 1):
        raise InputError(
            f"catalog '{cat.name}': file '{path.name}': column for {key} ({', '.join(names) or 'not mapped'}) not found; "
            f"columns are {', '.join(table.colnames[:30])}"
        )
    return None


def _degrees(col: Any) -> np.ndarray:
    unit = getattr(col, "unit", None)
    values = np.ma.filled(np.ma.asarray(getattr(col, "value", col), dtype=float), np.nan)
    if unit is not None and unit != u.dimensionless_unscaled:
        values = (values * u.Unit(unit)).to_value(u.deg)
    return np.asarray(values, dtype=float)


def _source_ids(col: Any) -> MaskedColumn:
    data = np.ma.asarray(col)
    mask = np.ma.getmaskarray(data).copy()
    try:
        ids = np.ma.filled(data, 0).astype(np.int64)
    except (TypeError, ValueError):
        raise InputError(f"column '{getattr(col, 'name', 'source_id')}': not integer source ids") from None
    mask |= ids <= 0
    return MaskedColumn(np.where(mask, 0, ids), mask=mask, dtype=np.int64)


def to_schema(table: Table, cat: Catalog, path: Path | None = None) -> QTable:
    """Map a catalog's own table into the common schema (see the module docstring).

    Arguments:
        table: The table as read from the catalog's file.
        cat: Its registry entry (column mapping, threshold).
        path: The file it came from (for messages).

    Example:
        >>> from astropy.table import Table
        >>> cat = get_catalog("tavangar2025_gd1")
        >>> raw = Table({"source_id": [5, 0], "ra": [150.0, 151.0], "dec": [30.0, 31.0], "memb_prob": [0.9, 0.2]})
        >>> out = to_schema(raw, cat)
        >>> out.colnames[:6], out["member_flag"].tolist(), bool(out["source_id"].mask[1])
        (['source_id', 'ra', 'dec', 'p_member', 'member_flag', 'catalog'], [True, False], True)
    """
    path = path or Path(cat.name)
    n = len(table)
    ra_name = _pick(table, cat, "ra", True, path)
    dec_name = _pick(table, cat, "dec", True, path)
    id_name = _pick(table, cat, "source_id", False, path)
    p_name = _pick(table, cat, "p_member", False, path)
    flag_name = _pick(table, cat, "member_flag", False, path)
    out = QTable()
    out["source_id"] = _source_ids(table[id_name]) if id_name else MaskedColumn(np.zeros(n, np.int64), mask=np.ones(n, bool))
    out["ra"] = _degrees(table[ra_name]) * u.deg
    out["dec"] = _degrees(table[dec_name]) * u.deg
    p = _degrees(table[p_name]) if p_name else np.full(n, np.nan)
    if p_name and np.nanmax(np.abs(np.nan_to_num(p)), initial=0.0) > 1.0 + 1e-9:
        raise InputError(f"catalog '{cat.name}': column '{p_name}' has values outside [0, 1]; not a probability")
    out["p_member"] = p
    if flag_name:
        out["member_flag"] = np.asarray(np.ma.filled(np.ma.asarray(table[flag_name]), 0)).astype(bool)
    elif p_name:
        out["member_flag"] = np.nan_to_num(p, nan=-1.0) >= cat.member_threshold
    else:
        out["member_flag"] = np.ones(n, bool)
    out["catalog"] = np.full(n, cat.name)
    for name in table.colnames:
        if name in (ra_name, dec_name, id_name, p_name, flag_name):
            continue
        out["orig_" + name if name in SCHEMA else name] = table[name]
    out.meta.update({"catalog": cat.name, "title": cat.title, "doi": cat.doi, "file": path.name})
    return out


def load(
    name: str,
    *,
    cache: str | os.PathLike | None = None,
    registry: str | os.PathLike | None = None,
    track: str | None = None,
    reference: str | None = None,
    **fetch_options: Any,
) -> QTable:
    """A published catalog in the common schema, fetched first if not cached.

    Arguments:
        name: Catalog name (see :func:`list_catalogs`).
        cache: Cache folder (see :func:`cache_dir`).
        registry: Registry folder (see :func:`list_catalogs`).
        track: For ``kind: tracks`` (galstreams): the stream, e.g. ``"GD-1"``.
        reference: For galstreams: which track of that stream (default as galstreams).
        **fetch_options: Passed to :func:`fetch` (timeout, retries, backoff, progress).

    Returns:
        One row per star (``source_id``, ``ra``, ``dec``, ``p_member``,
        ``member_flag``, ``catalog``, then the catalog's own columns), or for a
        track library one row per track point (``p_member`` NaN).

    Example:
        >>> t = load("galstreams", track="GD-1", reference="pricewhelan2018")
        >>> t.colnames[:6], t["ra"].unit
        (['source_id', 'ra', 'dec', 'p_member', 'member_flag', 'catalog'], Unit("deg"))
    """
    cat = get_catalog(name, registry)
    if cat.kind == "tracks":
        return _load_tracks(cat, track, reference)
    paths = fetch(name, cache=cache, registry=registry, **fetch_options)
    table, path = _read_table(cat, paths)
    return to_schema(table, cat, path)


def _load_tracks(cat: Catalog, track: str | None, reference: str | None) -> QTable:
    from .tracks import galstreams_track

    if not track:
        raise InputError(f"catalog '{cat.name}': holds stream tracks, not members; name one with track= (e.g. 'GD-1')")
    found = galstreams_track(track, reference)
    points = found.to_table()
    ra, dec = found.frame.to_icrs(np.asarray(found.phi1), np.asarray(found.phi2))
    n = len(points)
    out = QTable()
    out["source_id"] = MaskedColumn(np.zeros(n, np.int64), mask=np.ones(n, bool))
    out["ra"] = np.atleast_1d(ra) * u.deg
    out["dec"] = np.atleast_1d(dec) * u.deg
    out["p_member"] = np.full(n, np.nan)
    out["member_flag"] = np.zeros(n, bool)
    out["catalog"] = np.full(n, cat.name)
    for col in points.colnames:
        out[col] = points[col]
    out.meta.update({"catalog": cat.name, "track": found.name, "kind": "tracks"})
    return out


# ----------------------------------------------------------------------------- cross-match


def _member_probability(members: Table, probability: str | None) -> tuple[str, np.ndarray]:
    if probability is None:
        components = members.meta.get("components") or []
        for candidate in ["p_member", *(f"p_{c}" for c in components[:1]), "p_stream"]:
            if candidate in members.colnames:
                probability = candidate
                break
        else:
            raise InputError("members table: no probability column (p_member, p_stream...); pass probability=")
    if probability not in members.colnames:
        raise InputError(f"members table: column '{probability}' not found")
    return probability, np.asarray(_degrees(members[probability]), dtype=float)


def _member_coords(members: Table, frame: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if "ra" in members.colnames and "dec" in members.colnames:
        return _degrees(members["ra"]), _degrees(members["dec"])
    if "phi1" in members.colnames and "phi2" in members.colnames:
        if frame is None:
            raise InputError("members table: no ra/dec columns; pass frame= (e.g. 'GD-1') to convert phi1/phi2")
        from .frames import StreamFrame, get_frame

        stream_frame = frame if isinstance(frame, StreamFrame) else get_frame(str(frame))
        ra, dec = stream_frame.to_icrs(_degrees(members["phi1"]), _degrees(members["phi2"]))
        return np.atleast_1d(ra), np.atleast_1d(dec)
    return None


def _usable_ids(table: Table) -> tuple[np.ndarray, np.ndarray]:
    n = len(table)
    if "source_id" not in table.colnames:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    col = _source_ids(table["source_id"])
    return np.asarray(col.data, dtype=np.int64), ~np.ma.getmaskarray(col)


def _none_if_nan(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def crossmatch(
    catalog: Table,
    members: Table | str | os.PathLike,
    *,
    radius: u.Quantity = 1.0 * u.arcsec,
    frame: Any = None,
    probability: str | None = None,
    threshold: float = 0.5,
) -> tuple[QTable, dict[str, Any]]:
    """Match a fit's members with a published catalog: by source_id, then by sky position.

    A member row is matched by ``source_id`` when both sides have one; the rest
    are matched to the nearest remaining catalog star within ``radius`` (one to
    one, nearest first), unless both have source_ids that differ.

    Arguments:
        catalog: A table in the common schema (:func:`load`).
        members: streammix members (``source_id``, ``ra``/``dec`` or
            ``phi1``/``phi2``, a probability column), or a path to one.
        radius: Largest separation for a positional match.
        frame: Stream frame (or its name) converting phi1/phi2 to ra/dec when
            the members have no ra/dec.
        probability: Our probability column (default ``p_member``, else
            ``p_<first component>``, else ``p_stream``).
        threshold: Probability at or above which a star counts as a member.

    Returns:
        ``(matched, summary)``: one row per matched pair (``member_index``,
        ``catalog_index``, ``match_by``, ``separation``, ``source_id``, ``ra``,
        ``dec``, ``p_ours``, ``p_catalog``, ``catalog_member``), and a dict with
        the counts, overlap and agreement (JSON-ready; None where undefined).

    Example:
        >>> from astropy.table import QTable
        >>> cat = QTable({"source_id": [1, 2, 3], "ra": [10.0, 20.0, 30.0] * u.deg,
        ...               "dec": [0.0, 0.0, 0.0] * u.deg, "p_member": [0.9, 0.8, 0.1],
        ...               "member_flag": [True, True, False]})
        >>> ours = QTable({"source_id": [2, 3, 0], "ra": [20.0, 30.0, 10.0001] * u.deg,
        ...                "dec": [0.0, 0.0, 0.0] * u.deg, "p_stream": [0.7, 0.2, 0.95]})
        >>> matched, summary = crossmatch(cat, ours)
        >>> matched["match_by"].tolist(), summary["n_both_members"], summary["classification_agreement"]
        (['source_id', 'source_id', 'position'], 2, 1.0)
    """
    if not isinstance(members, Table):
        path = Path(members)
        if not path.is_file():
            raise InputError(f"file '{path}': not found")
        members = QTable.read(path)
    for col in ("ra", "dec"):
        if col not in catalog.colnames:
            raise InputError(f"catalog table: column '{col}' missing (use streammix.catalogs.load)")
    radius = u.Quantity(radius, u.arcsec)
    p_column, p_ours = _member_probability(members, probability)
    n_mem, n_cat = len(members), len(catalog)
    mem_ids, mem_ok = _usable_ids(members)
    cat_ids, cat_ok = _usable_ids(catalog)

    cat_index = np.full(n_mem, -1, np.int64)
    # 1. by source_id (first catalog row of each id)
    if cat_ok.any() and mem_ok.any():
        rows = np.flatnonzero(cat_ok)
        order = np.argsort(cat_ids[rows], kind="stable")
        sorted_ids, sorted_rows = cat_ids[rows][order], rows[order]
        pos = np.clip(np.searchsorted(sorted_ids, mem_ids), 0, len(sorted_ids) - 1)
        hit = mem_ok & (sorted_ids[pos] == mem_ids)
        cat_index[hit] = sorted_rows[pos[hit]]
    by_id = cat_index >= 0

    # 2. by position, for what is left
    cat_ra, cat_dec = _degrees(catalog["ra"]), _degrees(catalog["dec"])
    coords = _member_coords(members, frame)
    separation = np.full(n_mem, np.nan)
    if coords is not None:
        mem_ra, mem_dec = coords
        ok_mem = np.isfinite(mem_ra) & np.isfinite(mem_dec)
        both = by_id & ok_mem
        if both.any():
            a = SkyCoord(mem_ra[both] * u.deg, mem_dec[both] * u.deg)
            b = SkyCoord(cat_ra[cat_index[both]] * u.deg, cat_dec[cat_index[both]] * u.deg)
            separation[both] = a.separation(b).to_value(u.arcsec)
        taken = np.zeros(n_cat, bool)
        taken[cat_index[by_id]] = True
        left = np.flatnonzero(~by_id & ok_mem)
        free = np.flatnonzero(~taken & np.isfinite(cat_ra) & np.isfinite(cat_dec))
        if len(left) and len(free):
            idx, sep, _ = match_coordinates_sky(
                SkyCoord(mem_ra[left] * u.deg, mem_dec[left] * u.deg),
                SkyCoord(cat_ra[free] * u.deg, cat_dec[free] * u.deg),
            )
            target = free[np.atleast_1d(idx)]
            sep = np.atleast_1d(sep.to_value(u.arcsec))
            good = sep <= radius.to_value(u.arcsec)
            good &= ~(mem_ok[left] & cat_ok[target] & (mem_ids[left] != cat_ids[target]))
            cand, target, sep = left[good], target[good], sep[good]
            order = np.argsort(sep, kind="stable")  # one to one: nearest wins
            _, first = np.unique(target[order], return_index=True)
            keep = order[first]
            cat_index[cand[keep]] = target[keep]
            separation[cand[keep]] = sep[keep]
    matched_rows = np.flatnonzero(cat_index >= 0)
    ci = cat_index[matched_rows]

    p_cat_all = np.asarray(_degrees(catalog["p_member"])) if "p_member" in catalog.colnames else np.full(n_cat, np.nan)
    if "member_flag" in catalog.colnames:
        flag_all = np.asarray(catalog["member_flag"], dtype=bool)
    else:
        flag_all = np.nan_to_num(p_cat_all, nan=-1.0) >= threshold
    ids_out = np.where(mem_ok[matched_rows], mem_ids[matched_rows], cat_ids[ci])
    ids_mask = ~(mem_ok[matched_rows] | cat_ok[ci])
    matched = QTable()
    matched["member_index"] = matched_rows
    matched["catalog_index"] = ci
    matched["match_by"] = np.where(by_id[matched_rows], "source_id", "position").astype("U9")
    matched["separation"] = separation[matched_rows] * u.arcsec
    matched["source_id"] = MaskedColumn(ids_out, mask=ids_mask, dtype=np.int64)
    matched["ra"] = cat_ra[ci] * u.deg
    matched["dec"] = cat_dec[ci] * u.deg
    matched["p_ours"] = p_ours[matched_rows]
    matched["p_catalog"] = p_cat_all[ci]
    matched["catalog_member"] = flag_all[ci]

    ours_member = np.nan_to_num(p_ours, nan=-1.0) >= threshold
    pair_ours = ours_member[matched_rows]
    pair_cat = flag_all[ci]
    n_both = int((pair_ours & pair_cat).sum())
    n_ours, n_catm = int(ours_member.sum()), int(flag_all.sum())
    finite = np.isfinite(matched["p_ours"]) & np.isfinite(matched["p_catalog"])
    corr = np.nan
    if finite.sum() >= 3 and np.std(matched["p_ours"][finite]) > 0 and np.std(matched["p_catalog"][finite]) > 0:
        corr = float(np.corrcoef(matched["p_ours"][finite], matched["p_catalog"][finite])[0, 1])
    mad = float(np.median(np.abs(matched["p_ours"][finite] - matched["p_catalog"][finite]))) if finite.any() else np.nan
    summary = {
        "catalog": str(catalog.meta.get("catalog", "")),
        "probability_column": p_column,
        "threshold": float(threshold),
        "radius_arcsec": float(radius.to_value(u.arcsec)),
        "n_members_table": n_mem,
        "n_catalog": n_cat,
        "n_matched": int(len(matched_rows)),
        "n_matched_by_source_id": int(by_id.sum()),
        "n_matched_by_position": int(len(matched_rows) - by_id.sum()),
        "n_ours_members": n_ours,
        "n_catalog_members": n_catm,
        "n_both_members": n_both,
        "fraction_catalog_recovered": _none_if_nan(n_both / n_catm if n_catm else np.nan),
        "fraction_ours_in_catalog": _none_if_nan(n_both / n_ours if n_ours else np.nan),
        "classification_agreement": _none_if_nan(float(np.mean(pair_ours == pair_cat)) if len(ci) else np.nan),
        "correlation": _none_if_nan(corr),
        "median_abs_difference": _none_if_nan(mad),
    }
    return matched, summary


def compare_with_catalog(
    members: Table | str | os.PathLike,
    name: str,
    *,
    cache: str | os.PathLike | None = None,
    registry: str | os.PathLike | None = None,
    frame: Any = None,
    radius: u.Quantity = 1.0 * u.arcsec,
    threshold: float = 0.5,
    **fetch_options: Any,
) -> dict[str, Any]:
    """Load a published catalog and return :func:`crossmatch`'s summary against ``members``.

    This is what the pipeline calls to compare a fit's members with the published ones.

    Arguments:
        members: A fit's members table (or its path).
        name: Catalog name.
        cache: Cache folder.
        registry: Registry folder.
        frame: Stream frame for members without ra/dec.
        radius: Positional match radius.
        threshold: Membership threshold.
        **fetch_options: Passed to :func:`fetch`.

    Example:
        >>> compare_with_catalog  # doctest: +ELLIPSIS
        <function compare_with_catalog at ...>
    """
    table = load(name, cache=cache, registry=registry, **fetch_options)
    return crossmatch(table, members, radius=radius, frame=frame, threshold=threshold)[1]
