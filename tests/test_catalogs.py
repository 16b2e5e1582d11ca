"""Published catalogs: registry, downloads against a real local HTTP server, schema, cross-match.

The server is a real ``http.server.ThreadingHTTPServer`` on 127.0.0.1 serving
Zenodo-API-shaped record JSON and files (and a VizieR-shaped VOTable); the
download code is pointed at it through STREAMMIX_ZENODO_URL / STREAMMIX_VIZIER_URL.
Expected numbers come from the fixtures as built (and gala's GD-1 frame), never
from streammix's own output.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import astropy.units as u
import numpy as np
import pytest
import yaml
from astropy.table import MaskedColumn, QTable, Table
from typer.testing import CliRunner

from streammix import catalogs
from streammix.catalogs import crossmatch, fetch, get_catalog, list_catalogs, load
from streammix.catalogs_cli import catalogs_app
from streammix.errors import InputError

PACKAGED = Path(catalogs.__file__).parent / "resources" / "catalogs"
FAST = {"timeout": 1.0, "retries": 1, "backoff": 0.01}


# ------------------------------------------------------------------ local server


class _Server:
    """Routes: path (with query) -> list of responses, served in turn (the last repeats)."""

    def __init__(self) -> None:
        self.routes: dict[str, list[dict]] = {}
        self.hits: dict[str, int] = {}
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                key = self.path
                server.hits[key] = server.hits.get(key, 0) + 1
                plan = server.routes.get(key)
                if plan is None:
                    self.send_error(404, "Not Found")
                    return
                step = plan[min(server.hits[key], len(plan)) - 1]
                body = step.get("body", b"")
                if step.get("status", 200) != 200:
                    self.send_error(step["status"])
                    return
                self.send_response(200)
                self.send_header("Content-Type", step.get("type", "application/octet-stream"))
                self.send_header("Content-Length", str(step.get("length", len(body))))
                self.end_headers()
                send = body[: step["cut"]] if "cut" in step else body
                self.wfile.write(send)
                self.wfile.flush()
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
               file_plans: dict[str, list[dict]] | None = None) -> None:
        """A Zenodo-shaped record: /api/records/<id> plus one URL per file."""
        entries = []
        for key, data in files.items():
            url = f"/files/{record}/{key}"
            md5 = (checksums or {}).get(key) or hashlib.md5(data).hexdigest()
            entries.append({"key": key, "size": len(data), "checksum": f"md5:{md5}", "links": {"self": self.url + url}})
            self.routes[url] = (file_plans or {}).get(key) or [{"body": data}]
        body = json.dumps({"id": int(record), "files": entries}).encode()
        self.routes[f"/api/records/{record}"] = [{"body": body, "type": "application/json"}]

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(monkeypatch):
    srv = _Server()
    monkeypatch.setenv("STREAMMIX_ZENODO_URL", srv.url)
    monkeypatch.setenv("STREAMMIX_VIZIER_URL", srv.url)
    yield srv
    srv.close()


# ------------------------------------------------------------------ fixtures: members and a catalog


def _gd1_to_icrs(phi1, phi2):
    """Independent transform: gala's Koposov et al. (2010) GD-1 frame."""
    import gala.coordinates as gc
    from astropy.coordinates import SkyCoord

    c = SkyCoord(phi1=phi1 * u.deg, phi2=phi2 * u.deg, frame=gc.GD1Koposov10()).icrs
    return c.ra.deg, c.dec.deg


@pytest.fixture(scope="module")
def demo_like():
    """Members in the format the demo writes (source_id, phi1, phi2, p_stream; meta components),
    from a small default-style mock, and a 'published' catalog of its true stream stars."""
    from dataclasses import replace

    from streammix.mock import MockConfig, generate_mock

    stars, _ = generate_mock(replace(MockConfig(), n_stream=150, n_background=600), seed=3)
    rng = np.random.default_rng(0)
    truth = np.asarray(stars["true_component"]) == "stream"
    p_ours = np.where(truth, rng.uniform(0.6, 1.0, len(stars)), rng.uniform(0.0, 0.3, len(stars)))
    flip = rng.choice(len(stars), 20, replace=False)  # some disagreement
    p_ours[flip] = 1.0 - p_ours[flip]
    members = QTable({"source_id": stars["source_id"], "phi1": stars["phi1"], "phi2": stars["phi2"], "p_stream": p_ours,
                      "p_background": 1 - p_ours})
    members.meta["components"] = ["stream", "background"]

    in_cat = np.flatnonzero(truth)[:120]  # published: 120 of the true stream stars
    phi1 = np.asarray(members["phi1"].to_value(u.deg))[in_cat]
    phi2 = np.asarray(members["phi2"].to_value(u.deg))[in_cat]
    ra, dec = _gd1_to_icrs(phi1, phi2)
    p_cat = np.round(rng.uniform(0.3, 1.0, len(in_cat)), 4)
    no_id = np.zeros(len(in_cat), bool)
    no_id[1::4] = True  # (not row 0: astropy's MRT writer then mis-sizes the column) a quarter published without source_id -> positional fallback
    ids = np.asarray(members["source_id"], dtype=np.int64)[in_cat]
    cat = Table({"source_id": MaskedColumn(ids, mask=no_id), "ra": np.round(ra, 8) * u.deg,
                 "dec": np.round(dec, 8) * u.deg, "memb_prob": p_cat, "g0": np.round(rng.uniform(17, 21, len(in_cat)), 3)})
    buf = io.StringIO()
    cat.write(buf, format="ascii.mrt")
    return {"members": members, "in_cat": in_cat, "p_cat": p_cat, "p_ours": p_ours, "no_id": no_id,
            "ra": ra, "dec": dec, "mrt": buf.getvalue().encode()}


def _registry(tmp_path: Path, entries: dict[str, dict]) -> Path:
    folder = tmp_path / "registry"
    folder.mkdir(exist_ok=True)
    for name, entry in entries.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **entry}))
    return folder


def _zenodo_entry(record: str, files: list[dict] | None = None, **extra) -> dict:
    entry = {"kind": "members", "source": {"service": "zenodo", "record": record}, "files": files or [],
             "columns": {"ra": "ra", "dec": "dec", "source_id": "source_id"}}
    entry.update(extra)
    return entry


def _tavangar_like(tmp_path: Path, record: str) -> Path:
    """The real tavangar2025_gd1 entry, pointed at a local record id."""
    entry = yaml.safe_load((PACKAGED / "tavangar2025_gd1.yaml").read_text())
    entry["source"]["record"] = record
    folder = tmp_path / "registry"
    folder.mkdir(exist_ok=True)
    (folder / "tavangar2025_gd1.yaml").write_text(yaml.safe_dump(entry))
    return folder


# ------------------------------------------------------------------ registry


def test_registry_has_the_required_catalogs_and_unverified_ids_are_null():
    cats = {c.name: c for c in list_catalogs(PACKAGED)}
    for name in ["starkman2023_gd1", "starkman2023_pal5", "ibata2021_streamfinder", "ibata2024_streamfinder",
                 "pricewhelan2018_gd1", "tavangar2025_gd1", "galstreams"]:
        assert name in cats
    assert cats["ibata2021_streamfinder"].record == "J/ApJ/914/123/table1"
    assert cats["ibata2024_streamfinder"].paper["doi"] == "10.3847/1538-4357/ad382d"
    assert cats["tavangar2025_gd1"].data_doi == "10.5281/zenodo.15428120"
    assert cats["pricewhelan2018_gd1"].paper["bibcode"] == "2018ApJ...863L..20P"
    assert cats["galstreams"].kind == "tracks"
    for cat in cats.values():
        assert cat.verified in ("true", "partial", "false") and cat.notes
        for f in cat.files:  # no checksum is invented: unknown ones are null
            assert f.checksum is None
    assert cats["starkman2023_gd1"].record is None and cats["starkman2023_gd1"].verified == "false"


def test_unknown_catalog_lists_the_known_ones():
    with pytest.raises(InputError, match=r"catalog 'nope': unknown; known catalogs: .*tavangar2025_gd1"):
        get_catalog("nope", PACKAGED)


def test_unverified_record_refuses_to_fetch(tmp_path):
    with pytest.raises(InputError, match="starkman2023_gd1': no verified Zenodo record id"):
        fetch("starkman2023_gd1", cache=tmp_path, registry=PACKAGED)


# ------------------------------------------------------------------ downloads: every failure case


def test_good_record_is_fetched_verified_and_then_used_offline(server, tmp_path):
    data = (b"# %ECSV 1.0\n# ---\n# datatype:\n# - {name: source_id, datatype: int64}\n"
            b"# - {name: ra, datatype: float64}\n# - {name: dec, datatype: float64}\nsource_id ra dec\n7 1.0 2.0\n")
    server.record("100", {"t.ecsv": data})
    reg = _registry(tmp_path, {"good": _zenodo_entry("100")})
    paths = fetch("good", cache=tmp_path / "cache", registry=reg, **FAST)
    assert [p.name for p in paths] == ["t.ecsv"] and paths[0].read_bytes() == data
    assert server.hits["/files/100/t.ecsv"] == 1
    server.close()  # offline from here on
    again = fetch("good", cache=tmp_path / "cache", registry=reg, **FAST)
    assert again == paths
    assert len(load("good", cache=tmp_path / "cache", registry=reg)) == 1
    assert not list((tmp_path / "cache" / "good").glob(".part-*"))


def test_wrong_checksum_names_file_and_both_hashes_and_leaves_nothing(server, tmp_path):
    data = b"some bytes"
    server.record("101", {"t.ecsv": data}, checksums={"t.ecsv": "0" * 32})
    reg = _registry(tmp_path, {"bad": _zenodo_entry("101")})
    good = hashlib.md5(data).hexdigest()
    with pytest.raises(InputError, match=rf"file 't.ecsv' from .*: checksum mismatch, expected md5:0{{32}}, got md5:{good}"):
        fetch("bad", cache=tmp_path / "cache", registry=reg, **FAST)
    assert list((tmp_path / "cache" / "bad").iterdir()) == []  # no file, no part, no manifest


def test_truncated_body_is_retried_then_reported_and_never_cached(server, tmp_path):
    data = b"x" * 5000
    server.record("102", {"t.ecsv": data}, file_plans={"t.ecsv": [{"body": data, "cut": 1000}]})
    reg = _registry(tmp_path, {"cut": _zenodo_entry("102")})
    with pytest.raises(InputError, match=r"URL http://127\.0\.0\.1:\d+/files/102/t\.ecsv: truncated body.*\(2 attempts\)"):
        fetch("cut", cache=tmp_path / "cache", registry=reg, **FAST)
    assert server.hits["/files/102/t.ecsv"] == 2
    assert list((tmp_path / "cache" / "cut").iterdir()) == []


def test_missing_record_is_a_404_naming_the_url(server, tmp_path):
    reg = _registry(tmp_path, {"gone": _zenodo_entry("103")})
    with pytest.raises(InputError, match=r"URL http://127\.0\.0\.1:\d+/api/records/103: HTTP 404"):
        fetch("gone", cache=tmp_path / "cache", registry=reg, **FAST)
    assert server.hits["/api/records/103"] == 1  # a 404 is not retried


def test_server_error_then_success(server, tmp_path):
    data = b"payload"
    server.record("104", {"t.ecsv": data}, file_plans={"t.ecsv": [{"status": 500}, {"body": data}]})
    reg = _registry(tmp_path, {"flaky": _zenodo_entry("104")})
    (path,) = fetch("flaky", cache=tmp_path / "cache", registry=reg, **FAST)
    assert path.read_bytes() == data and server.hits["/files/104/t.ecsv"] == 2


def test_stalled_server_times_out_quickly(server, tmp_path):
    data = b"y" * 10000
    server.record("105", {"t.ecsv": data}, file_plans={"t.ecsv": [{"body": data, "cut": 100, "stall": True}]})
    reg = _registry(tmp_path, {"slow": _zenodo_entry("105")})
    start = time.monotonic()
    with pytest.raises(InputError, match=r"files/105/t\.ecsv: stalled: no data for 0\.3 s \(1 attempts\)"):
        fetch("slow", cache=tmp_path / "cache", registry=reg, timeout=0.3, retries=0)
    assert time.monotonic() - start < 5
    assert list((tmp_path / "cache" / "slow").iterdir()) == []


def test_registry_checksum_must_agree_with_zenodo(server, tmp_path):
    server.record("106", {"t.ecsv": b"abc"})
    reg = _registry(tmp_path, {"pinned": _zenodo_entry("106", files=[{"key": "t.ecsv", "checksum": "md5:" + "1" * 32}])})
    with pytest.raises(InputError, match="registry checksum md5:1{32} differs from Zenodo's md5:"):
        fetch("pinned", cache=tmp_path / "cache", registry=reg, **FAST)


def test_corrupted_cache_is_detected_and_fetched_again(server, tmp_path):
    data = b"a,b\n1,2\n"
    server.record("107", {"t.csv": data})
    reg = _registry(tmp_path, {"c": _zenodo_entry("107")})
    (path,) = fetch("c", cache=tmp_path, registry=reg, **FAST)
    path.write_bytes(b"tampered")
    (path,) = fetch("c", cache=tmp_path, registry=reg, **FAST)
    assert path.read_bytes() == data and server.hits["/files/107/t.csv"] == 2


# ------------------------------------------------------------------ load and cross-match


def test_load_of_the_tavangar_entry_served_locally_gives_the_common_schema(server, tmp_path, demo_like):
    server.record("900", {"gd1_tbl_with_memb_prob.mrt": demo_like["mrt"]})
    reg = _tavangar_like(tmp_path, "900")
    table = load("tavangar2025_gd1", cache=tmp_path / "cache", registry=reg, **FAST)
    assert table.colnames[:6] == list(catalogs.SCHEMA) and "g0" in table.colnames
    n = len(demo_like["in_cat"])
    assert len(table) == n and table["source_id"].dtype == np.int64 and table["ra"].unit == u.deg
    np.testing.assert_array_equal(table["source_id"].mask, demo_like["no_id"])
    np.testing.assert_allclose(table["p_member"], demo_like["p_cat"])
    np.testing.assert_allclose(table["ra"].to_value(u.deg), demo_like["ra"], atol=1e-7)
    np.testing.assert_array_equal(table["member_flag"], demo_like["p_cat"] >= 0.5)
    assert set(table["catalog"]) == {"tavangar2025_gd1"}


def test_crossmatch_of_demo_members_against_a_locally_served_catalog(server, tmp_path, demo_like):
    server.record("901", {"gd1_tbl_with_memb_prob.mrt": demo_like["mrt"]})
    reg = _tavangar_like(tmp_path, "901")
    table = load("tavangar2025_gd1", cache=tmp_path / "cache", registry=reg, **FAST)
    members_path = tmp_path / "members.ecsv"
    demo_like["members"].write(members_path)
    matched, summary = crossmatch(table, members_path, frame="GD-1")

    in_cat, p_cat, p_ours, no_id = demo_like["in_cat"], demo_like["p_cat"], demo_like["p_ours"], demo_like["no_id"]
    order = np.argsort(matched["catalog_index"])
    np.testing.assert_array_equal(np.asarray(matched["member_index"])[order], in_cat)
    assert summary["n_matched"] == len(in_cat)
    assert summary["n_matched_by_position"] == int(no_id.sum())
    assert summary["n_matched_by_source_id"] == int((~no_id).sum())
    assert summary["n_members_table"] == len(p_ours) and summary["n_catalog"] == len(in_cat)
    both = int(((p_ours[in_cat] >= 0.5) & (p_cat >= 0.5)).sum())
    assert summary["n_both_members"] == both
    assert summary["n_ours_members"] == int((p_ours >= 0.5).sum())
    assert summary["fraction_catalog_recovered"] == pytest.approx(both / int((p_cat >= 0.5).sum()))
    assert summary["classification_agreement"] == pytest.approx(np.mean((p_ours[in_cat] >= 0.5) == (p_cat >= 0.5)))
    assert summary["correlation"] == pytest.approx(np.corrcoef(p_ours[in_cat], p_cat)[0, 1], abs=1e-9)
    assert np.nanmax(matched["separation"].to_value(u.arcsec)) < 0.01  # gala and streammix frames agree


def test_crossmatch_position_fallback_respects_radius_conflicting_ids_and_one_to_one():
    cat = QTable({"source_id": MaskedColumn([11, 12, 0, 0], mask=[False, False, True, True]),
                  "ra": [10.0, 20.0, 30.0, 40.0] * u.deg, "dec": [0.0] * 4 * u.deg,
                  "p_member": [0.9, 0.9, 0.9, 0.9], "member_flag": [True] * 4})
    arcsec = 1 / 3600
    ours = QTable({"source_id": [99, 0, 0, 0, 0],
                   "ra": [10.0 + 0.1 * arcsec, 30.0 + 0.2 * arcsec, 30.0 + 0.5 * arcsec, 40.0 + 3 * arcsec, 20.0] * u.deg,
                   "dec": [0.0] * 5 * u.deg, "p_member": [0.8, 0.8, 0.8, 0.8, 0.8]})
    matched, summary = crossmatch(cat, ours, radius=1 * u.arcsec)
    # row 0: different Gaia ids -> no match despite 0.1"; rows 1,2 compete for cat row 2 -> nearest (row 1);
    # row 3 is 3" away -> no match; row 4 has no id but sits on cat row 1 -> position match
    assert sorted(zip(matched["member_index"].tolist(), matched["catalog_index"].tolist())) == [(1, 2), (4, 1)]
    assert summary["n_matched_by_position"] == 2 and summary["correlation"] is None


def test_crossmatch_needs_a_frame_for_phi_only_members():
    cat = QTable({"source_id": [1], "ra": [1.0] * u.deg, "dec": [1.0] * u.deg, "p_member": [1.0], "member_flag": [True]})
    ours = QTable({"phi1": [1.0] * u.deg, "phi2": [0.0] * u.deg, "p_stream": [0.9]})
    with pytest.raises(InputError, match="no ra/dec columns; pass frame="):
        crossmatch(cat, ours)


def test_vizier_votable_served_locally_loads_with_member_flags(server, tmp_path):
    rows = Table({"Gaia": np.array([5, 6, 7], dtype=np.int64), "RAJ2000": [150.0, 151.0, 152.0] * u.deg,
                  "DEJ2000": [10.0, 11.0, 12.0] * u.deg, "Stream": [8, 8, 3]})
    buf = io.BytesIO()
    rows.write(buf, format="votable")
    path = "/viz-bin/votable?-source=J/ApJ/914/123/table1&-out.all=&-out.max=unlimited"
    server.routes[path] = [{"status": 503}, {"body": buf.getvalue()}]
    entry = yaml.safe_load((PACKAGED / "ibata2021_streamfinder.yaml").read_text())
    reg = _registry(tmp_path, {"ibata2021_streamfinder": entry})
    table = load("ibata2021_streamfinder", cache=tmp_path / "cache", registry=reg, **FAST)
    assert table["source_id"].tolist() == [5, 6, 7] and table["member_flag"].all()
    assert np.isnan(table["p_member"]).all() and table["Stream"].tolist() == [8, 8, 3]
    assert server.hits[path] == 2
    assert parse_qs(urlparse(path).query)["-source"] == ["J/ApJ/914/123/table1"]


def test_galstreams_tracks_load_without_download():
    table = load("galstreams", track="GD-1", reference="pricewhelan2018", registry=PACKAGED)
    assert table.meta["kind"] == "tracks" and len(table) > 10
    assert table["source_id"].mask.all() and np.isnan(table["p_member"]).all()
    # GD-1 spans roughly ra 130-220 deg, dec 20-65 deg
    assert 100 < np.median(table["ra"].to_value(u.deg)) < 230 and 15 < np.median(table["dec"].to_value(u.deg)) < 70


# ------------------------------------------------------------------ CLI (mounted here as the lead will)


def _cli():
    import typer

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    app.add_typer(catalogs_app, name="catalogs")
    return app


def test_cli_list_shows_every_entry_with_its_doi():
    result = CliRunner().invoke(_cli(), ["catalogs", "list"])
    assert result.exit_code == 0, result.output
    for cat in list_catalogs(PACKAGED):
        line = next(line for line in result.output.splitlines() if line.startswith(cat.name + " "))
        assert (cat.doi or "-") in line and (cat.paper.get("arxiv") or "-") in line


def test_cli_fetch_load_crossmatch_against_local_server(server, tmp_path, demo_like, monkeypatch):
    server.record("902", {"gd1_tbl_with_memb_prob.mrt": demo_like["mrt"]})
    monkeypatch.setenv("STREAMMIX_CATALOGS", str(_tavangar_like(tmp_path, "902")))
    cache = str(tmp_path / "cache")
    runner = CliRunner()
    fetched = runner.invoke(_cli(), ["catalogs", "fetch", "tavangar2025_gd1", "--cache-dir", cache, "--quiet"])
    assert fetched.exit_code == 0, fetched.output
    assert fetched.output.strip().endswith("gd1_tbl_with_memb_prob.mrt")
    members_path = tmp_path / "members.ecsv"
    demo_like["members"].write(members_path)
    out = runner.invoke(_cli(), ["catalogs", "crossmatch", "tavangar2025_gd1", str(members_path), "--frame", "GD-1",
                                 "--cache-dir", cache, "--quiet", "--json", str(tmp_path / "s.json")])
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["n_matched"] == len(demo_like["in_cat"]) and f"n_matched: {summary['n_matched']}" in out.output
    unknown = runner.invoke(_cli(), ["catalogs", "info", "nope"])
    assert isinstance(unknown.exception, InputError)


def test_packaged_registry_is_the_one_used_by_default(monkeypatch):
    monkeypatch.delenv("STREAMMIX_CATALOGS", raising=False)
    assert {c.name for c in list_catalogs()} == {c.name for c in list_catalogs(PACKAGED)}
