"""A real HTTP server on 127.0.0.1 that plays Zenodo and VizieR, and fixtures shaped like each catalog.

Used by tests/test_catalogs.py (imported as ``catalog_server``), and runnable to
serve a Starkman et al.-shaped catalog made from a members table, for trying
``streammix catalogs crossmatch`` by hand::

    python tests/catalog_server.py --starkman-from run/members.ecsv --stars stars.fits

prints ``export STREAMMIX_ZENODO_URL=...`` and serves until interrupted.

Routes are exact paths (``/api/records/<id>``, ``/files/<id>/<name>``) or, for
VizieR, ``vizier:<-source>``. Each route is a list of responses served in turn
(the last repeats). A response is a dict: ``body``, ``status``, ``type``,
``length`` (a Content-Length to announce, or None for none), ``cut`` (send only
so many bytes, then close), ``stall`` (then wait), ``location`` (a redirect),
``endless`` (bytes without end, no Content-Length).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import astropy.units as u
import numpy as np
from astropy.coordinates import Distance, SkyCoord
from astropy.table import QTable, Table

__all__ = ["CatalogServer", "FIXTURES", "fixture", "starkman_gd1_table"]


class CatalogServer:
    """Zenodo- and VizieR-shaped routes on a thread; ``url`` is its base address."""

    def __init__(self) -> None:
        self.routes: dict[str, list[dict]] = {}
        self.hits: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                parsed = urlparse(self.path)
                key = self.path
                if parsed.path == "/viz-bin/votable":
                    key = "vizier:" + parse_qs(parsed.query, keep_blank_values=True).get("-source", [""])[0]
                server.hits[key] = server.hits.get(key, 0) + 1
                plan = server.routes.get(key)
                if plan is None:
                    self.send_error(404, "Not Found")
                    return
                step = plan[min(server.hits[key], len(plan)) - 1]
                if "location" in step:
                    self.send_response(step.get("status", 302))
                    self.send_header("Location", step["location"])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if step.get("status", 200) != 200:
                    self.send_error(step["status"])
                    return
                body = step.get("body", b"")
                self.send_response(200)
                self.send_header("Content-Type", step.get("type", "application/octet-stream"))
                length = step.get("length", len(body))
                if length is not None and not step.get("endless"):
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                try:
                    if step.get("endless"):  # bytes until the client hangs up
                        block = b"x" * 65536
                        while not server.release.is_set():
                            self.wfile.write(block)
                            server.sent[key] = server.sent.get(key, 0) + len(block)
                        return
                    send = body[: step["cut"]] if "cut" in step else body
                    self.wfile.write(send)
                    self.wfile.flush()
                    server.sent[key] = server.sent.get(key, 0) + len(send)
                except (BrokenPipeError, ConnectionResetError):
                    return
                if step.get("stall"):
                    server.release.wait(10)  # stall past the client's timeout
                    return
                if "cut" in step:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def record(self, record: str, files: dict[str, bytes], *, checksums: dict[str, str] | None = None,
               sizes: dict[str, int] | None = None, file_plans: dict[str, list[dict]] | None = None) -> None:
        """A Zenodo-shaped record: /api/records/<id> plus one URL per file."""
        entries = []
        for key, data in files.items():
            url = f"/files/{record}/{key}"
            md5 = (checksums or {}).get(key) or hashlib.md5(data).hexdigest()
            entries.append({"key": key, "size": (sizes or {}).get(key, len(data)), "checksum": f"md5:{md5}",
                            "links": {"self": self.url + url}})
            self.routes[url] = (file_plans or {}).get(key) or [{"body": data}]
        self.record_json(record, entries)

    def record_json(self, record: str, entries: list[dict]) -> None:
        """A record whose JSON lists exactly ``entries`` (hostile ones included)."""
        body = json.dumps({"id": record, "files": entries}).encode()
        self.routes[f"/api/records/{record}"] = [{"body": body, "type": "application/json"}]

    def vizier(self, source: str, votable: bytes, plan: list[dict] | None = None) -> None:
        """The VizieR VOTable service's answer for ``-source=<source>``."""
        self.routes["vizier:" + source] = plan or [{"body": votable, "type": "application/x-votable+xml"}]

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# ----------------------------------------------------------------------------- fixtures

# A stretch of GD-1 in ICRS (Koposov et al. 2010 frame, phi1 -60..-20 deg maps near here).
_RA, _DEC = (140.0, 180.0), (25.0, 55.0)


def _positions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(*_RA, n), rng.uniform(*_DEC, n)


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.arange(10**15, 10**15 + 10**7), n, replace=False).astype(np.int64)


def _ecsv(table: Table) -> bytes:
    buf = io.StringIO()
    table.write(buf, format="ascii.ecsv")
    return buf.getvalue().encode()


def _votable(table: Table) -> bytes:
    """VizieR's own units ('h:m:s') and names ('[Fe/H]') make astropy's writer warn: quietly."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table.write(buf, format="votable")
    return buf.getvalue()


def _percentiles(samples: np.ndarray) -> dict[str, np.ndarray]:
    return {q: np.percentile(samples, float(q[:-1]), axis=1) for q in ("5%", "50%", "95%")}


def starkman_gd1_table(source_id: np.ndarray, ra: np.ndarray, dec: np.ndarray, p_stream: np.ndarray,
                       rng: np.random.Generator, n_samples: int = 250, spur: np.ndarray | None = None) -> QTable:
    """A table with the columns of Starkman et al.'s GD-1 ``membership_likelhoods.ecsv``.

    Columns as its script writes them (src/scripts/gd1/models/5-likelihoods.py):
    ``"source id"``, ``coord`` (a SkyCoord with distance and proper motions),
    ``"bkg|stream|spur|allstream (MLE|5%|50%|95%)"`` and the 2-D
    ``stream.ln-weight`` and ``spur.ln-weight`` (``n_samples`` draws). The
    draws scatter each star's probability by 0.05 in logit around ``p_stream``.
    """
    n = len(source_id)
    spur = np.zeros(n) if spur is None else spur

    def draws(p: np.ndarray) -> np.ndarray:
        logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
        return 1 / (1 + np.exp(-(logit[:, None] + rng.normal(0, 0.05 * (1 + np.abs(logit[:, None])), (n, n_samples)))))

    stream_draws, spur_draws = draws(p_stream), draws(spur) * (1 - p_stream[:, None])
    bkg_draws = np.clip(1 - stream_draws - spur_draws, 0, 1)
    table = QTable()
    table["source id"] = source_id
    table["coord"] = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, distance=Distance(parallax=rng.uniform(0.05, 0.3, n) * u.mas),
                              pm_ra_cosdec=rng.normal(-6, 1, n) * u.mas / u.yr, pm_dec=rng.normal(-4, 1, n) * u.mas / u.yr)
    for name, samples, mle in (("bkg", bkg_draws, 1 - p_stream - spur * (1 - p_stream)),
                               ("stream", stream_draws, p_stream), ("spur", spur_draws, spur * (1 - p_stream)),
                               ("allstream", stream_draws + spur_draws, p_stream + spur * (1 - p_stream))):
        if name == "stream":
            table["stream.ln-weight"] = rng.normal(-3, 0.5, (n, n_samples))
        if name == "spur":
            table["spur.ln-weight"] = rng.normal(-8, 0.5, (n, n_samples))
        table[f"{name} (MLE)"] = mle
        for q, values in _percentiles(samples).items():
            table[f"{name} ({q})"] = values
    return table


def _starkman_gd1(rng: np.random.Generator, n: int = 40) -> tuple[bytes, dict]:
    ra, dec = _positions(rng, n)
    p = rng.uniform(0, 1, n)
    table = starkman_gd1_table(_ids(rng, n), ra, dec, p, rng, n_samples=250, spur=rng.uniform(0, 0.3, n))
    truth = {"source_id": np.asarray(table["source id"]), "ra": ra, "dec": dec,
             "p": np.asarray(table["stream (50%)"]), "member": np.asarray(table["stream (50%)"]) > 0.8,
             "ln_weight_mean": np.asarray(table["stream.ln-weight"]).mean(axis=1)}
    return _ecsv(table), truth


def _starkman_pal5(rng: np.random.Generator, n: int = 30) -> tuple[bytes, dict]:
    """Columns of src/scripts/pal5/models/4-likelihoods.py: no coordinates at all."""
    ids, p = _ids(rng, n), rng.uniform(0, 1, n)
    samples = np.clip(p[:, None] + rng.normal(0, 0.03, (n, 250)), 0, 1)
    table = QTable()
    table["source id"] = ids
    table["bkg (MLE)"] = 1 - p
    for q, values in _percentiles(1 - samples).items():
        table[f"bkg ({q})"] = values
    table["stream.ln-weight"] = rng.normal(-4, 0.5, (n, 250))
    table["stream (MLE)"] = p
    for q, values in _percentiles(samples).items():
        table[f"stream ({q})"] = values
    truth = {"source_id": ids, "ra": np.full(n, np.nan), "dec": np.full(n, np.nan),
             "p": np.asarray(table["stream (50%)"]), "member": np.asarray(table["stream (50%)"]) > 0.8}
    return _ecsv(table), truth


def _pricewhelan2018(rng: np.random.Generator, n: int = 60) -> tuple[bytes, dict]:
    """A region catalog as FITS with the boolean masks (and no probabilities)."""
    ra, dec = _positions(rng, n)
    pm, cmd, track = (rng.uniform(0, 1, n) < f for f in (0.4, 0.5, 0.6))
    table = Table({"source_id": _ids(rng, n), "ra": ra * u.deg, "dec": dec * u.deg,
                   "pmra": rng.normal(-6, 2, n) * u.mas / u.yr, "pm_mask": pm, "gi_cmd_mask": cmd,
                   "stream_track_mask": track})
    buf = io.BytesIO()
    table.write(buf, format="fits")
    truth = {"source_id": np.asarray(table["source_id"]), "ra": ra, "dec": dec, "p": np.full(n, np.nan),
             "member": pm & cmd, "main_track": pm & cmd & track}
    return buf.getvalue(), truth


def _tavangar(rng: np.random.Generator, n: int = 30) -> tuple[bytes, dict]:
    ra, dec = _positions(rng, n)
    p = np.round(rng.uniform(0, 1, n), 4)
    table = Table({"source_id": _ids(rng, n), "ra": np.round(ra, 8) * u.deg, "dec": np.round(dec, 8) * u.deg,
                   "memb_prob": p})
    buf = io.StringIO()
    table.write(buf, format="ascii.mrt")
    return buf.getvalue().encode(), {"source_id": np.asarray(table["source_id"]), "ra": np.round(ra, 8),
                                     "dec": np.round(dec, 8), "p": p, "member": p >= 0.5}


def _sexagesimal(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = SkyCoord(ra * u.deg, dec * u.deg)
    return (c.ra.to_string(unit=u.hourangle, sep=" ", precision=3, pad=True),
            c.dec.to_string(unit=u.deg, sep=" ", precision=2, alwayssign=True, pad=True))


def _vizier(columns: dict, n: int, rng: np.random.Generator, *, decimal: bool = True, p: bool = False,
            member: str = "listed") -> tuple[bytes, dict]:
    """A VizieR-style VOTable: _RAJ2000/_DEJ2000 in degrees (what -out.add=_RAJ,_DEJ adds)
    or only sexagesimal RAJ2000/DEJ2000 text (VizieR's default form), VizieR names and units."""
    ra, dec = _positions(rng, n)
    table = Table()
    if decimal:
        table["_RAJ2000"] = np.round(ra, 7) * u.deg
        table["_DEJ2000"] = np.round(dec, 7) * u.deg
    else:
        text_ra, text_dec = _sexagesimal(ra, dec)
        table["RAJ2000"] = text_ra
        table["DEJ2000"] = text_dec
        table["RAJ2000"].unit, table["DEJ2000"].unit = "h:m:s", "d:m:s"
    ids = _ids(rng, n)
    for name, make in columns.items():
        table[name] = ids if make == "id" else make(n)
    probability = np.round(rng.uniform(0, 1, n), 3) if p else None
    if p:
        table["Prob"] = probability
    truth = {"source_id": ids if "id" in columns.values() else None, "ra": ra, "dec": dec,
             "columns": [name for name, make in columns.items() if make != "id"],
             "p": probability if p else np.full(n, np.nan),
             "member": np.ones(n, bool) if member == "listed" else np.zeros(n, bool)}
    return _votable(table), truth


def fixture(name: str, rng: np.random.Generator) -> tuple[str, bytes, dict]:
    """``(file key, bytes, truth)`` shaped like the registry entry ``name``'s real file."""
    km_s = lambda n: rng.normal(-50, 20, n) * u.km / u.s  # noqa: E731
    if name == "starkman2023_gd1":
        return "gd1_membership_likelhoods.ecsv", *_starkman_gd1(rng)
    if name == "starkman2023_pal5":
        return "pal5_membership_likelhoods.ecsv", *_starkman_pal5(rng)
    if name == "pricewhelan2018_gd1":
        return "gd1-with-masks.fits", *_pricewhelan2018(rng)
    if name == "tavangar2025_gd1":
        return "gd1_tbl_with_memb_prob.mrt", *_tavangar(rng)
    if name == "ibata2021_streamfinder":
        return "vizier", *_vizier({"Gaia": "id", "plx": lambda n: rng.uniform(0, 1, n) * u.mas, "HRV": km_s,
                                   "Stream": lambda n: rng.integers(1, 33, n)}, 25, rng)
    if name == "ibata2024_streamfinder":
        return "vizier", *_vizier({"GaiaDR3": "id", "VHel": km_s, "Stream": lambda n: rng.integers(1, 88, n)}, 25, rng)
    if name == "ibata2017_pal5":
        return "vizier", *_vizier({"HRV": km_s}, 20, rng, decimal=False, member="unknown")
    if name == "pricewhelan2019_pal5_rrl":
        return "vizier", *_vizier({"Gaia": "id", "Dist": lambda n: rng.normal(20.6, 0.5, n) * u.kpc}, 27, rng, p=True)
    if name == "li2018_gd1":
        return "vizier", *_vizier({"HRV": km_s, "[Fe/H]": lambda n: rng.normal(-2.2, 0.1, n)}, 30, rng, decimal=False)
    if name == "ishigaki2016_pal5":
        return "vizier", *_vizier({"Vlos": km_s}, 19, rng, member="unknown")
    raise KeyError(name)


#: Every registry entry with a fixture (galstreams is a package: nothing to serve).
FIXTURES = ("ibata2017_pal5", "ibata2021_streamfinder", "ibata2024_streamfinder", "ishigaki2016_pal5", "li2018_gd1",
            "pricewhelan2018_gd1", "pricewhelan2019_pal5_rrl", "starkman2023_gd1", "starkman2023_pal5",
            "tavangar2025_gd1")


def _main() -> None:  # pragma: no cover - by hand
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Serve a Starkman et al.-shaped GD-1 catalog made from a members table.")
    parser.add_argument("--starkman-from", required=True, help="members table with source_id and a probability column")
    parser.add_argument("--stars", required=True, help="the fitted stars' table with source_id, ra, dec")
    parser.add_argument("--probability", default="p_member")
    parser.add_argument("--record", default="10211410")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    members, stars = Table.read(args.starkman_from), Table.read(args.stars)
    position = {int(s): (r, d) for s, r, d in zip(stars["source_id"], stars["ra"], stars["dec"])}
    ids = np.asarray(members["source_id"], dtype=np.int64)
    ra = np.array([position[int(i)][0] for i in ids])
    dec = np.array([position[int(i)][1] for i in ids])
    p_ours = np.asarray(members[args.probability], dtype=float)
    # a 'published' probability: ours, moved by 0.3 in logit, for a field that covers 90% of our stars
    keep = rng.uniform(0, 1, len(ids)) < 0.9
    logit = np.log(np.clip(p_ours, 1e-6, 1 - 1e-6) / np.clip(1 - p_ours, 1e-6, 1)) + rng.normal(0, 0.3, len(ids))
    table = starkman_gd1_table(ids[keep], ra[keep], dec[keep], 1 / (1 + np.exp(-logit[keep])), rng, n_samples=16)
    server = CatalogServer()
    server.record(args.record, {"gd1_membership_likelhoods.ecsv": _ecsv(table)})
    print(f"export STREAMMIX_ZENODO_URL={server.url}  # record {args.record}: {len(table)} stars", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":  # pragma: no cover
    _main()
