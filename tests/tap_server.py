"""A TAP-shaped HTTP server on 127.0.0.1: a synchronous endpoint (``POST /sync``) answering VOTables.

Used by tests/test_query.py (imported as ``tap_server``), in the style of
``catalog_server.py``. Each request takes the next step of ``plan`` (the last
repeats); a step is a dict: ``body`` (bytes; default: ``votable``),
``status`` (an HTTP error instead), ``cut`` (send only so many bytes of a body
announced whole, then close). The ADQL of every request is kept in ``queries``.
"""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import numpy as np
from astropy.io.votable import from_table, writeto
from astropy.table import Table

__all__ = ["TapServer", "gaia_rows", "votable_bytes"]


def votable_bytes(table: Table) -> bytes:
    """A table as VOTable XML."""
    buffer = io.BytesIO()
    writeto(from_table(table), buffer)
    return buffer.getvalue()


def gaia_rows(frame, phi1_range, phi2_range, n: int, seed: int = 0) -> Table:
    """``n`` gaia_source-shaped rows spread over a stream-frame box (stars in and around it)."""
    from streammix.query import GAIA_COLUMNS

    rng = np.random.default_rng(seed)
    phi1 = rng.uniform(*phi1_range, n)
    phi2 = rng.uniform(*phi2_range, n)
    ra, dec = frame.to_icrs(phi1, phi2)
    g = rng.uniform(14.0, 20.4, n)
    columns = {
        "source_id": np.arange(1, n + 1, dtype=np.int64) * 1000 + 7,
        "ra": ra, "dec": dec, "ra_error": rng.uniform(0.01, 0.3, n), "dec_error": rng.uniform(0.01, 0.3, n),
        "ra_dec_corr": rng.uniform(-0.3, 0.3, n), "parallax": rng.normal(0.1, 0.3, n),
        "parallax_error": rng.uniform(0.02, 0.5, n), "pmra": rng.normal(-3.0, 2.0, n),
        "pmra_error": rng.uniform(0.02, 0.6, n), "pmdec": rng.normal(-3.0, 2.0, n),
        "pmdec_error": rng.uniform(0.02, 0.6, n), "pmra_pmdec_corr": rng.uniform(-0.5, 0.5, n),
        "parallax_pmra_corr": rng.uniform(-0.2, 0.2, n), "parallax_pmdec_corr": rng.uniform(-0.2, 0.2, n),
        "phot_g_mean_mag": g, "phot_bp_mean_mag": g + 0.4, "phot_rp_mean_mag": g - 0.6,
        "phot_g_mean_flux_over_error": rng.uniform(50, 2000, n),
        "phot_bp_mean_flux_over_error": rng.uniform(10, 500, n),
        "phot_rp_mean_flux_over_error": rng.uniform(10, 500, n),
    }  # fmt: skip
    return Table({name: columns[name] for name in GAIA_COLUMNS})


class TapServer:
    """``POST /sync`` on a thread; ``url`` is the service's base address."""

    def __init__(self, votable: bytes) -> None:
        self.votable = votable
        self.plan: list[dict] = [{}]
        self.queries: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - capabilities and the like: none here
                self.send_error(404, "Not Found")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                if self.path.rstrip("/") != "/tap/sync" or form.get("REQUEST", [""])[0] != "doQuery":
                    self.send_error(404, "Not Found")
                    return
                server.queries.append(form.get("QUERY", [""])[0])
                step = server.plan[min(len(server.queries), len(server.plan)) - 1]
                if step.get("status", 200) != 200:
                    self.send_error(step["status"])
                    return
                body = step.get("body", server.votable)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-votable+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body[: step["cut"]] if "cut" in step else body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                if "cut" in step:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tap"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
