"""Run a config's Gaia DR3 query (``streammix query``; needs network).

The config's field is cut into chunks of ``data.query.chunk`` deg along phi1.
Each chunk is one synchronous ADQL query (pyvo's TAP client) of the Gaia
archive inside a sky polygon around the chunk, with the query's magnitude,
parallax and proper-motion cuts. The rows of a chunk are checked (columns,
row count, sky positions), transformed into the stream frame with their
proper-motion covariances (:func:`streammix.frames.gaia_to_stream`), cut to the
chunk's part of the field and written atomically into a folder beside the
data file. A rerun skips the chunks already written whose ADQL has not
changed, so an interrupted query resumes. When every chunk is in, they are
joined into the file ``data.path`` names, beside which the ADQL text
(``<file>.adql``) and its SHA-256 (``<file>.query.json``) are kept.

Everything the service sends is untrusted: a failed or truncated response, a
missing column, too many rows or bytes, or positions off the sky end the run
with one line (:class:`~streammix.errors.InputError`) naming the chunk.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import QTable, Table, vstack
from rich.progress import Progress

from .config import Config
from .errors import InputError
from .frames import StreamFrame, gaia_to_stream, get_frame
from .output import atomic_path, write_json, write_table
from .tracks import galstreams_track

__all__ = ["GAIA_COLUMNS", "QueryChunk", "chunk_folder", "plan_query", "query_summary", "run_query", "stream_table"]

#: The gaia_source columns every chunk asks for (astrometry with errors and
#: correlations, G/BP/RP with their flux signal-to-noise).
GAIA_COLUMNS = (
    "source_id", "ra", "dec", "ra_error", "dec_error", "ra_dec_corr",
    "parallax", "parallax_error", "pmra", "pmra_error", "pmdec", "pmdec_error",
    "pmra_pmdec_corr", "parallax_pmra_corr", "parallax_pmdec_corr",
    "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag",
    "phot_g_mean_flux_over_error", "phot_bp_mean_flux_over_error", "phot_rp_mean_flux_over_error",
)  # fmt: skip
_BANDS = {"gaia_g": "phot_g", "gaia_bp": "phot_bp", "gaia_rp": "phot_rp"}
_MAG_PER_FLUX_SNR = 2.5 / math.log(10.0)
_VERTEX_STEP = 1.0  # deg between the polygon's vertices along phi1
#: Bytes one chunk's response may have (a Gaia DR3 row is about 2 kB of VOTable).
MAX_BYTES_PER_ROW = 4096


@dataclass(frozen=True)
class QueryChunk:
    """One chunk of a query: its phi1 range and its ADQL text.

    Arguments:
        index: Position among the chunks (0, 1, ...).
        phi1: [low, high) along the stream, deg (the last chunk includes high).
        adql: The query text.

    Example:
        >>> chunk = QueryChunk(0, (-10.0, -5.0), "SELECT 1")
        >>> len(chunk.sha256), chunk.label
        (64, 'chunk 1 (phi1 -10 to -5 deg)')
    """

    index: int
    phi1: tuple[float, float]
    adql: str

    @property
    def sha256(self) -> str:
        """SHA-256 of the ADQL text (which names the service's table and every cut)."""
        return hashlib.sha256(self.adql.encode()).hexdigest()

    @property
    def label(self) -> str:
        """How errors name the chunk."""
        return f"chunk {self.index + 1} (phi1 {self.phi1[0]:g} to {self.phi1[1]:g} deg)"


def _query_settings(config: Config) -> Any:
    query = config.data.query
    if query is None:
        raise InputError(f"{config.source or 'config'}: data.query: missing; nothing to query (see streammix new)")
    if config.data.path is None:
        raise InputError(f"{config.source or 'config'}: data.path: missing; the query's output needs a file")
    if config.frame is None:
        raise InputError(f"{config.source or 'config'}: frame: missing; the query needs the stream frame")
    return query


def _pm_centre(config: Config, frame: StreamFrame, phi1: float, phi2: float) -> tuple[float, float] | None:
    """The track's (pmra cos dec, pmdec) at phi1 (clamped to its span), or None without a cut."""
    query = config.data.query
    if query.pm_margin is None:
        return None
    if query.galstreams is None:
        raise InputError("data.query.pm_margin: needs data.query.galstreams (the track that centres the boxes)")
    name, _, reference = query.galstreams.partition("/")
    track = galstreams_track(name, reference or None, frame)
    x = float(np.clip(phi1, track.phi1.min(), track.phi1.max()))
    at = track.interpolate(x)
    pm = np.array([at["pm_phi1_cosphi2"], at["pm_phi2"]], dtype=float)
    if not np.all(np.isfinite(pm)):
        raise InputError(f"data.query.pm_margin: the track {query.galstreams} has no proper motions at phi1 {x:g}")
    ra, dec = frame.to_icrs(x, float(at["phi2"]) if np.isfinite(at["phi2"]) else phi2)
    rotation = frame.local_rotation(ra, dec)
    pmra, pmdec = rotation.T @ pm
    return float(pmra), float(pmdec)


def plan_query(config: Config) -> list[QueryChunk]:
    """The chunks of a config's query, in order along phi1.

    Arguments:
        config: A config with ``frame``, ``data.path`` and ``data.query``.

    Example:
        >>> cfg = Config.from_dict({"frame": "gd1", "field": {"phi1": [-20, -8], "phi2": [-2, 2]},
        ...                         "data": {"path": "x.fits", "query": {"chunk": 5}}})
        >>> [c.phi1 for c in plan_query(cfg)]
        [(-20.0, -15.0), (-15.0, -10.0), (-10.0, -8.0)]
        >>> "FROM gaiadr3.gaia_source" in plan_query(cfg)[0].adql
        True
    """
    query = _query_settings(config)
    frame = get_frame(config.frame)
    lo, hi = (float(v) for v in config.field.phi1)
    lo2, hi2 = (float(v) for v in config.field.phi2)
    n = max(1, math.ceil((hi - lo) / query.chunk - 1e-9))
    edges = [min(lo + i * query.chunk, hi) for i in range(n + 1)]
    chunks = []
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        a0, b0 = a - query.margin, b + query.margin
        steps = max(2, math.ceil((b0 - a0) / _VERTEX_STEP) + 1)
        along = np.linspace(a0, b0, steps)
        low = np.full(steps, max(lo2 - query.margin, -89.9))
        high = np.full(steps, min(hi2 + query.margin, 89.9))
        ra, dec = frame.to_icrs(np.concatenate([along, along[::-1]]), np.concatenate([low, high]))
        polygon = ", ".join(f"{r:.6f}, {d:.6f}" for r, d in zip(np.atleast_1d(ra), np.atleast_1d(dec)))
        cuts = [
            f"1 = CONTAINS(POINT('ICRS', ra, dec), POLYGON('ICRS', {polygon}))",
            f"phot_g_mean_mag < {query.g_max!r}",
        ]
        if query.parallax_max is not None:
            cuts.append(f"parallax - 3 * parallax_error < {query.parallax_max!r}")
        centre = _pm_centre(config, frame, 0.5 * (a + b), 0.5 * (lo2 + hi2))
        if centre is not None:
            m = query.pm_margin
            cuts.append(f"pmra BETWEEN {centre[0] - m:.4f} AND {centre[0] + m:.4f}")
            cuts.append(f"pmdec BETWEEN {centre[1] - m:.4f} AND {centre[1] + m:.4f}")
        adql = (
            f"SELECT {', '.join(GAIA_COLUMNS)}\nFROM {query.table}\nWHERE " + "\n  AND ".join(cuts)
            + "\nORDER BY source_id"
        )
        chunks.append(QueryChunk(i, (round(a, 6), round(b, 6)), adql))
    return chunks


def chunk_folder(config: Config) -> Path:
    """Where the finished chunks of a config's query are kept: ``<data file>.chunks/``.

    Example:
        >>> cfg = Config.from_dict({"frame": "gd1", "field": {"phi1": [0, 1], "phi2": [0, 1]},
        ...                         "data": {"path": "/d/x.fits", "query": {}}})
        >>> chunk_folder(cfg).as_posix()
        '/d/x.fits.chunks'
    """
    _query_settings(config)
    path = Path(config.data.path)
    return path.with_name(path.name + ".chunks")


def _checked(table: Table, chunk: QueryChunk, maxrec: int) -> Table:
    """The service's rows, or an InputError saying what is wrong with them."""
    missing = [c for c in GAIA_COLUMNS if c not in table.colnames]
    if missing:
        raise InputError(f"query {chunk.label}: the service's table lacks columns {', '.join(missing)}")
    if len(table) >= maxrec:
        raise InputError(
            f"query {chunk.label}: {len(table)} rows reach data.query.maxrec ({maxrec}), so it may be cut short; "
            "use a smaller data.query.chunk"
        )
    for name in GAIA_COLUMNS:
        if table[name].dtype.kind not in "iuf":
            raise InputError(f"query {chunk.label}: column {name} is not numeric ({table[name].dtype})")
    ra = np.asarray(np.ma.filled(table["ra"], np.nan), dtype=float)
    dec = np.asarray(np.ma.filled(table["dec"], np.nan), dtype=float)
    if not (np.all(np.isfinite(ra)) and np.all((ra >= 0) & (ra <= 360)) and np.all(np.abs(dec) <= 90)):
        raise InputError(f"query {chunk.label}: ra or dec missing or off the sky")
    ids = np.asarray(np.ma.filled(table["source_id"], -1))
    if table["source_id"].dtype.kind not in "iu" or np.any(ids < 0) or len(np.unique(ids)) != len(ids):
        raise InputError(f"query {chunk.label}: source_id missing, not integer or repeated")
    return table


def stream_table(table: Table, frame: StreamFrame) -> QTable:
    """Gaia archive rows in the stream frame: :func:`~streammix.frames.gaia_to_stream`'s columns,
    with ``ra``, ``dec`` and ``gaia_g``, ``gaia_bp``, ``gaia_rp`` and their errors (mag, from the
    flux signal-to-noise: 1.0857 / (flux / error)).

    Arguments:
        table: Rows with the :data:`GAIA_COLUMNS`.
        frame: The stream frame.

    Example:
        >>> from streammix.frames import GD1
        >>> row = {c: [1.0] for c in GAIA_COLUMNS}
        >>> row.update(source_id=[7], ra=[200.0], dec=[59.0], phot_g_mean_flux_over_error=[100.0])
        >>> out = stream_table(Table(row), GD1)
        >>> round(float(out["gaia_g_err"][0].value), 4), int(out["source_id"][0])
        (0.0109, 7)
    """
    out = gaia_to_stream(table, frame)
    out["ra"] = np.asarray(np.ma.filled(table["ra"], np.nan), dtype=float) * u.deg
    out["dec"] = np.asarray(np.ma.filled(table["dec"], np.nan), dtype=float) * u.deg
    for band, prefix in _BANDS.items():
        mag = np.asarray(np.ma.filled(table[f"{prefix}_mean_mag"].astype(float), np.nan), dtype=float)
        snr = np.asarray(np.ma.filled(table[f"{prefix}_mean_flux_over_error"].astype(float), np.nan), dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.where(snr > 0, _MAG_PER_FLUX_SNR / snr, np.nan)
        out[band] = mag * u.mag
        out[f"{band}_err"] = np.where(np.isfinite(mag), err, np.nan) * u.mag
    out["source_id"] = np.asarray(table["source_id"], dtype=np.int64)
    return out


def _session(timeout: float, max_bytes: int) -> Any:
    """A requests session with a timeout on every request and a cap on the bytes read."""
    import requests  # with pyvo, only when a query runs (the command line need not load them)

    class Session(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            response = super().request(*args, **kwargs)
            raw_read = response.raw.read
            count = [0]

            def read(*a: Any, **k: Any) -> bytes:
                data = raw_read(*a, **k)
                count[0] += len(data or b"")
                if count[0] > max_bytes:
                    raise InputError(f"the response exceeds {max_bytes} bytes")
                return data

            response.raw.read = read
            return response

    return Session()


def _fetch(url: str, chunk: QueryChunk, maxrec: int, timeout: float) -> Table:
    import pyvo  # only when a query runs: the command line need not load it

    session = _session(timeout, MAX_BYTES_PER_ROW * maxrec + 1_000_000)
    try:
        service = pyvo.dal.TAPService(url, session=session)
        result = service.run_sync(chunk.adql, maxrec=maxrec)
        return result.to_table()
    finally:
        session.close()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


def run_query(
    config: Config,
    *,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Run the config's Gaia query, chunk by chunk, and write ``data.path``.

    Chunks already written with the same ADQL are skipped (an interrupted run
    resumes); a chunk that fails after ``data.query.retries`` more attempts ends
    the run with an :class:`~streammix.errors.InputError`, the finished ones kept.

    Arguments:
        config: A config read with :meth:`~streammix.config.Config.from_yaml`
            (``data.path`` resolved), with ``frame`` and ``data.query``.
        progress: Show a progress bar (rich, on standard error).
        report: Called with one line per chunk fetched or skipped.
        overwrite: Replace an existing data file.

    Returns:
        The data file.

    Example:
        >>> cfg = Config.from_dict({"frame": "gd1", "field": {"phi1": [0, 1], "phi2": [0, 1]}})
        >>> try:
        ...     run_query(cfg)
        ... except InputError as error:
        ...     print(error)
        config: data.query: missing; nothing to query (see streammix new)
    """
    query = _query_settings(config)
    target = Path(config.data.path)
    if target.exists() and not overwrite:
        raise InputError(f"output '{target}' already exists; pass --overwrite to replace it")
    frame = get_frame(config.frame)
    chunks = plan_query(config)
    folder = chunk_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    field_lo2, field_hi2 = config.field.phi2
    say = report or (lambda line: None)

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("Gaia query", total=len(chunks))
        for chunk in chunks:
            path = folder / f"chunk{chunk.index:04d}.fits"
            if path.exists():
                try:
                    done = Table.read(path).meta.get("ADQLHASH") == chunk.sha256
                except Exception:  # noqa: BLE001 - a damaged file is fetched again
                    done = False
                if done:
                    say(f"{chunk.label}: already written, skipped")
                    bar.advance(task)
                    continue
            error: BaseException | None = None
            for _ in range(query.retries + 1):
                try:
                    rows = _checked(_fetch(query.url, chunk, query.maxrec, query.timeout), chunk, query.maxrec)
                    error = None
                    break
                except InputError as failure:
                    error = failure
                    if "rows reach" in str(failure) or "lacks columns" in str(failure):
                        break
                except Exception as failure:  # noqa: BLE001 - anything the network or service does
                    error = failure
            if error is not None:
                message = str(error) if isinstance(error, InputError) and str(error).startswith("query ") else (
                    f"query {chunk.label}: failed: {_one_line(error)}"
                )
                raise InputError(f"{message}; rerun to resume ({chunk.index} of {len(chunks)} chunks kept)")
            stars = stream_table(rows, frame)
            phi1 = np.asarray(stars["phi1"].to_value(u.deg))
            phi2 = np.asarray(stars["phi2"].to_value(u.deg))
            last = chunk.index == len(chunks) - 1
            inside = (phi1 >= chunk.phi1[0]) & ((phi1 <= chunk.phi1[1]) if last else (phi1 < chunk.phi1[1]))
            inside &= (phi2 >= field_lo2) & (phi2 <= field_hi2)
            stars = stars[inside]
            stars.meta = {"ADQLHASH": chunk.sha256, "CHUNK": chunk.index}
            write_table(stars, path, overwrite=True)
            say(f"{chunk.label}: {len(stars)} stars of {len(rows)} rows")
            bar.advance(task)

    parts = [QTable.read(folder / f"chunk{c.index:04d}.fits") for c in chunks]
    stars = vstack(parts, metadata_conflicts="silent") if parts else QTable()
    _, first = np.unique(np.asarray(stars["source_id"]), return_index=True)
    stars = stars[np.sort(first)]
    stars.meta = {"FRAME": frame.name, "QUERYURL": query.url, "TABLE": query.table}
    adql = "\n\n".join(f"-- {c.label}\n{c.adql};" for c in chunks) + "\n"
    digest = hashlib.sha256(adql.encode()).hexdigest()
    with atomic_path(target.with_name(target.name + ".adql"), overwrite=True) as tmp:
        tmp.write_text(adql)
    write_json(
        {"url": query.url, "table": query.table, "adql_sha256": digest, "chunks": len(chunks),
         "chunk_sha256": [c.sha256 for c in chunks], "stars": len(stars), "frame": frame.name},
        target.with_name(target.name + ".query.json"),
        overwrite=True,
    )  # fmt: skip
    write_table(stars, target, overwrite=overwrite)
    return target


def query_summary(path: str | Path) -> dict[str, Any]:
    """The ``<file>.query.json`` written beside a queried data file.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.fits.query.json"
        >>> _ = p.write_text('{"stars": 3}')
        >>> query_summary(p.with_name("x.fits"))["stars"]
        3
    """
    path = Path(path)
    return json.loads(path.with_name(path.name + ".query.json").read_text())
