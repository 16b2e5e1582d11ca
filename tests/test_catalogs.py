"""Published catalogs: registry, downloads against a real local HTTP server (hostile ones
included), every entry's real file shape loaded into the common schema, cross-match.

The server (tests/catalog_server.py) is a real ``http.server.ThreadingHTTPServer`` on
127.0.0.1 serving Zenodo-API-shaped record JSON and files and VizieR-shaped VOTables;
the download code is pointed at it through STREAMMIX_ZENODO_URL / STREAMMIX_VIZIER_URL.
Expected numbers come from the fixtures as built (and gala's GD-1 frame, scipy's
Spearman), never from streammix's own output.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import yaml
from astropy.table import MaskedColumn, QTable, Table
from catalog_server import FIXTURES, CatalogServer, fixture, starkman_gd1_table
from scipy.stats import spearmanr

from streammix.catalogs import (
    SCHEMA,
    crossmatch,
    crossmatch_figure,
    evaluate_expression,
    fetch,
    get_catalog,
    list_catalogs,
    load,
)
from streammix.errors import InputError

PACKAGED = Path(__file__).resolve().parents[1] / "streammix" / "resources" / "catalogs"
FAST = {"timeout": 1.0, "retries": 1, "backoff": 0.01}


@pytest.fixture()
def server(monkeypatch):
    srv = CatalogServer()
    monkeypatch.setenv("STREAMMIX_ZENODO_URL", srv.url)
    monkeypatch.setenv("STREAMMIX_VIZIER_URL", srv.url)
    yield srv
    srv.close()


def _registry(tmp_path: Path, entries: dict[str, dict]) -> Path:
    folder = tmp_path / "registry"
    folder.mkdir(exist_ok=True)
    for name, entry in entries.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **entry}))
    return folder


def _zenodo_entry(record: str | None, files: list[dict] | None = None, **extra) -> dict:
    entry = {"kind": "members", "source": {"service": "zenodo", "record": record}, "files": files or [],
             "columns": {"ra": "ra", "dec": "dec", "source_id": "source_id"}}
    entry.update(extra)
    return entry


def _packaged(tmp_path: Path, name: str, record: str | None = None) -> Path:
    """The packaged registry entry ``name`` in a registry folder of its own (record optionally replaced)."""
    entry = yaml.safe_load((PACKAGED / f"{name}.yaml").read_text())
    if record is not None:
        entry["source"]["record"] = record
    folder = tmp_path / "registry"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(entry))
    return folder


def _files_outside(root: Path, cache: Path) -> set[Path]:
    return {p for p in root.rglob("*") if cache not in p.parents and p != cache}


# ------------------------------------------------------------------ registry


def test_registry_has_every_catalog_with_identifiers_cuts_and_status():
    cats = {c.name: c for c in list_catalogs(PACKAGED)}
    assert len(cats) >= 10
    for cat in cats.values():
        assert cat.verified in ("true", "partial", "false") and cat.notes, cat.name
        assert cat.service == "package" or cat.record, cat.name  # every downloadable entry names its record
        for f in cat.files:  # no checksum is invented: unknown ones are null
            assert f.checksum is None
    gd1 = cats["starkman2023_gd1"]
    assert gd1.record == "10211410" and gd1.paper["doi"] == "10.3847/1538-4357/ad94f2" and gd1.data_doi is None
    assert (gd1.membership.kind, gd1.membership.column[0], gd1.membership.threshold, gd1.membership.strict) == (
        "probability", "stream (50%)", 0.8, True)
    assert "10211409" in gd1.notes and "10903751" in gd1.notes  # the source's DOI discrepancy is recorded
    assert cats["starkman2023_pal5"].columns["source_id"][0] == "source id"
    pw18 = cats["pricewhelan2018_gd1"]
    assert [f.key for f in pw18.files] == ["gd1-with-masks.fits"]  # never the whole record unasked
    assert pw18.membership.expression == "pm_mask & gi_cmd_mask"
    assert pw18.membership.selections["main_track"] == "pm_mask & gi_cmd_mask & stream_track_mask"
    assert cats["ibata2021_streamfinder"].record == "J/ApJ/914/123/table1"
    assert cats["ibata2021_streamfinder"].paper["doi"] == "10.3847/1538-4357/abfcc2"
    assert "NOT verified" in cats["ibata2024_streamfinder"].notes and not cats["ibata2024_streamfinder"].record_verified
    assert all(c.record_verified for c in cats.values() if c.name != "ibata2024_streamfinder")
    assert cats["galstreams"].paper["doi"] == "10.1093/mnras/stad321" and cats["galstreams"].kind == "tracks"
    assert cats["ibata2017_pal5"].record == "J/ApJ/842/120"
    assert cats["pricewhelan2019_pal5_rrl"].record == "J/AJ/158/223/table2"
    assert cats["tavangar2025_gd1"].data_doi == "10.5281/zenodo.15428120"


def test_unknown_catalog_lists_the_known_ones():
    with pytest.raises(InputError, match=r"catalog 'nope': unknown; known catalogs: .*tavangar2025_gd1"):
        get_catalog("nope", PACKAGED)


def test_unverified_record_refuses_to_fetch(tmp_path):
    reg = _registry(tmp_path, {"unknown_record": _zenodo_entry(None)})
    with pytest.raises(InputError, match="unknown_record': no verified Zenodo record id"):
        fetch("unknown_record", cache=tmp_path / "cache", registry=reg)


# ------------------------------------------------------------------ downloads: every failure case


def test_good_record_is_fetched_verified_and_then_used_offline(server, tmp_path):
    data = (b"# %ECSV 1.0\n# ---\n# datatype:\n# - {name: source_id, datatype: int64}\n"
            b"# - {name: ra, datatype: float64}\n# - {name: dec, datatype: float64}\nsource_id ra dec\n7 1.0 2.0\n")
    server.record("100", {"t.ecsv": data})
    reg = _registry(tmp_path, {"good": _zenodo_entry("100")})
    lines = []
    paths = fetch("good", cache=tmp_path / "cache", registry=reg, report=lines.append, **FAST)
    assert [p.name for p in paths] == ["t.ecsv"] and paths[0].read_bytes() == data
    assert lines == [f"good: 1 file(s), {len(data)} B in all; --max-size 2.0 GiB"]  # said before downloading
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


# ------------------------------------------------------------------ hostile servers


HOSTILE_NAMES = {
    "../../x": "a path separator",
    "ABSOLUTE": "a path separator",  # replaced by an absolute path under tmp_path, outside the cache
    "sub/dir.ecsv": "a path separator",
    "..\\..\\x": "a path separator",
    "..": "a leading dot",
    ".bashrc": "a leading dot",
    "line\nbreak.ecsv": "control characters",
    "bell\x07.ecsv": "control characters",
    "": "empty or not text",
    "x" * 300: "longer than 255 characters",
}


@pytest.mark.parametrize("name", list(HOSTILE_NAMES), ids=[repr(n[:12]) for n in HOSTILE_NAMES])
def test_hostile_file_names_are_refused_and_nothing_lands_anywhere(server, tmp_path, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    key = str(victim) if name == "ABSOLUTE" else name
    url = f"{server.url}/files/666/evil"
    server.routes["/files/666/evil"] = [{"body": b"pwned"}]
    server.record_json("666", [{"key": key, "size": 5, "checksum": "md5:" + hashlib.md5(b"pwned").hexdigest(),
                                "links": {"self": url}}])
    reg = _registry(tmp_path, {"evil": _zenodo_entry("666")})
    cache = tmp_path / "deep" / "cache"
    before = _files_outside(tmp_path, cache)
    with pytest.raises(InputError, match=rf"catalog 'evil': Zenodo record 666: file name .* refused \({HOSTILE_NAMES[name]}\)"):
        fetch("evil", cache=cache, registry=reg, **FAST)
    assert victim.read_text() == "precious"
    assert _files_outside(tmp_path, cache) == before  # nothing written outside the cache
    assert not cache.exists() or not any(cache.rglob("*"))  # and nothing in it
    assert "/files/666/evil" not in server.hits  # refused before any download


def test_hostile_names_through_the_real_command_line(server, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    server.routes["/files/667/evil"] = [{"body": b"pwned"}]
    server.record_json("667", [{"key": str(victim), "size": 5, "checksum": "md5:" + hashlib.md5(b"pwned").hexdigest(),
                                "links": {"self": f"{server.url}/files/667/evil"}}])
    reg = _registry(tmp_path, {"evil": _zenodo_entry("667")})
    result = _cli("catalogs", "fetch", "evil", "--cache-dir", tmp_path / "cache", "--quiet", "--retries", "0",
                  env={"STREAMMIX_CATALOGS": str(reg), "STREAMMIX_ZENODO_URL": server.url})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: catalog 'evil': Zenodo record 667: file name {str(victim)[:80]!r} refused (a path separator); "
        "a file must land inside the catalog's cache folder"]
    assert victim.read_text() == "precious" and "/files/667/evil" not in server.hits


def test_duplicate_names_are_refused(server, tmp_path):
    entry = {"key": "t.ecsv", "size": 3, "checksum": "md5:" + hashlib.md5(b"abc").hexdigest(),
             "links": {"self": f"{server.url}/files/668/t.ecsv"}}
    server.record_json("668", [entry, dict(entry)])
    reg = _registry(tmp_path, {"dup": _zenodo_entry("668")})
    with pytest.raises(InputError, match="Zenodo record 668: file name 't.ecsv' listed twice; refused"):
        fetch("dup", cache=tmp_path / "cache", registry=reg, **FAST)


def test_an_existing_symlink_in_the_cache_is_replaced_not_followed(server, tmp_path):
    target = tmp_path / "outside.txt"
    target.write_text("precious")
    server.record("669", {"t.ecsv": b"fresh data"})
    reg = _registry(tmp_path, {"link": _zenodo_entry("669")})
    folder = tmp_path / "cache" / "link"
    folder.mkdir(parents=True)
    (folder / "t.ecsv").symlink_to(target)
    (path,) = fetch("link", cache=tmp_path / "cache", registry=reg, **FAST)
    assert target.read_text() == "precious"
    assert not path.is_symlink() and path.read_bytes() == b"fresh data"
    # a cache whose file was swapped for a link later is not trusted either
    path.unlink()
    path.symlink_to(target)
    fetch("link", cache=tmp_path / "cache", registry=reg, **FAST)
    assert server.hits["/files/669/t.ecsv"] == 2 and not path.is_symlink() and target.read_text() == "precious"


def test_a_symlinked_catalog_folder_is_refused(server, tmp_path):
    server.record("670", {"t.ecsv": b"abc"})
    reg = _registry(tmp_path, {"linked": _zenodo_entry("670")})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "linked").symlink_to(elsewhere)
    with pytest.raises(InputError, match=r"cache folder '.*linked': a symbolic link; refused"):
        fetch("linked", cache=tmp_path / "cache", registry=reg, **FAST)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/t.ecsv"])
def test_redirect_to_a_file_url_is_refused(server, tmp_path, target):
    server.record("671", {"t.ecsv": b"abc"}, file_plans={"t.ecsv": [{"location": target}]})
    reg = _registry(tmp_path, {"redir": _zenodo_entry("671")})
    with pytest.raises(InputError, match=rf"files/671/t\.ecsv: redirected to '{target}'; refused \(only http and https\)"):
        fetch("redir", cache=tmp_path / "cache", registry=reg, **FAST)
    assert list((tmp_path / "cache" / "redir").iterdir()) == []
    assert server.hits["/files/671/t.ecsv"] == 1  # refused, not retried


def test_redirect_to_http_is_followed(server, tmp_path):
    server.routes["/elsewhere/t.ecsv"] = [{"body": b"abc"}]
    server.record("672", {"t.ecsv": b"abc"}, file_plans={"t.ecsv": [{"location": "/elsewhere/t.ecsv", "status": 307}]})
    reg = _registry(tmp_path, {"moved": _zenodo_entry("672")})
    (path,) = fetch("moved", cache=tmp_path / "cache", registry=reg, **FAST)
    assert path.read_bytes() == b"abc" and server.hits["/elsewhere/t.ecsv"] == 1


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/t.ecsv", "javascript:alert(1)"])
def test_a_record_with_a_non_http_url_is_refused(server, tmp_path, url):
    server.record_json("673", [{"key": "t.ecsv", "size": 3, "checksum": "md5:" + "0" * 32, "links": {"self": url}}])
    reg = _registry(tmp_path, {"scheme": _zenodo_entry("673")})
    with pytest.raises(InputError, match=r"file 't\.ecsv': URL .* refused \(only http and https URLs\)"):
        fetch("scheme", cache=tmp_path / "cache", registry=reg, **FAST)


def test_a_body_that_never_ends_stops_at_its_declared_size(server, tmp_path):
    server.record("674", {"t.ecsv": b"z" * 1000}, file_plans={"t.ecsv": [{"endless": True}]})
    reg = _registry(tmp_path, {"endless": _zenodo_entry("674")})
    start = time.monotonic()
    with pytest.raises(InputError, match=r"file 't\.ecsv' from .*: body longer than its declared size \(1000 bytes\); refused"):
        fetch("endless", cache=tmp_path / "cache", registry=reg, **FAST)
    assert time.monotonic() - start < 5 and server.hits["/files/674/t.ecsv"] == 1  # not retried
    assert list((tmp_path / "cache" / "endless").iterdir()) == []


def test_a_body_that_never_ends_without_a_size_stops_at_max_size(server, tmp_path):
    server.vizier("J/Endless/1", b"", plan=[{"endless": True}])
    reg = _registry(tmp_path, {"viz": {"kind": "members", "source": {"service": "vizier", "table": "J/Endless/1"},
                                       "columns": {"ra": "ra", "dec": "dec"}}})
    with pytest.raises(InputError, match=r"J_Endless_1\.vot' from .*: larger than --max-size 1\.0 MiB; refused"):
        fetch("viz", cache=tmp_path / "cache", registry=reg, max_size="1MiB", **FAST)
    assert list((tmp_path / "cache" / "viz").iterdir()) == []


def test_a_body_longer_than_declared_is_refused(server, tmp_path):
    body = b"w" * 5000
    server.record("675", {"a.ecsv": body, "b.ecsv": body}, sizes={"a.ecsv": 100, "b.ecsv": 100},
                  file_plans={"b.ecsv": [{"body": body, "length": None}]})  # a announces 5000; b announces nothing
    for key in ("a.ecsv", "b.ecsv"):
        reg = _registry(tmp_path, {f"long_{key[0]}": _zenodo_entry("675", files=[{"key": key}])})
        with pytest.raises(InputError, match=rf"file '{key}' from .*: body longer than its declared size \(100 bytes\)"):
            fetch(f"long_{key[0]}", cache=tmp_path / "cache", registry=reg, **FAST)
        assert list((tmp_path / "cache" / f"long_{key[0]}").iterdir()) == []


def test_a_record_listing_10000_files_is_refused_before_any_download(server, tmp_path):
    entries = [{"key": f"f{i}.ecsv", "size": 10, "checksum": "md5:" + "0" * 32,
                "links": {"self": f"{server.url}/files/676/f{i}.ecsv"}} for i in range(10_000)]
    server.record_json("676", entries)
    reg = _registry(tmp_path, {"many": _zenodo_entry("676")})
    with pytest.raises(InputError, match="Zenodo record 676: lists 10000 files, more than 1000; refused"):
        fetch("many", cache=tmp_path / "cache", registry=reg, **FAST)
    assert not any(k.startswith("/files/") for k in server.hits)


def test_a_record_larger_than_max_size_is_refused_with_its_total_shown_first(server, tmp_path):
    server.record("677", {"a.ecsv": b"a" * 600, "b.ecsv": b"b" * 600})
    reg = _registry(tmp_path, {"big": _zenodo_entry("677")})
    lines = []
    with pytest.raises(InputError, match=r"'big': 2 file\(s\) of 1\.2 KiB in all, more than --max-size 1000 B; refused"):
        fetch("big", cache=tmp_path / "cache", registry=reg, max_size=1000, report=lines.append, **FAST)
    assert lines == ["big: 2 file(s), 1.2 KiB in all; --max-size 1000 B"]
    assert not any(k.startswith("/files/") for k in server.hits)


# ------------------------------------------------------------------ load: every entry's real shape


def _serve(server: CatalogServer, tmp_path: Path, name: str, seed: int = 0) -> tuple[Path, dict]:
    """Serve the fixture shaped like ``name``'s real file; returns its registry folder and the truth."""
    key, data, truth = fixture(name, np.random.default_rng(seed))
    cat = get_catalog(name, PACKAGED)
    if cat.service == "zenodo":
        server.record(cat.record, {key: data})
    else:
        server.vizier(cat.record, data)
    return _packaged(tmp_path, name), truth


@pytest.mark.parametrize("name", FIXTURES)
def test_every_entry_loads_its_fixture_into_the_common_schema(server, tmp_path, name):
    reg, truth = _serve(server, tmp_path, name)
    table = load(name, cache=tmp_path / "cache", registry=reg, **FAST)
    assert table.colnames[:6] == list(SCHEMA)
    n = len(truth["ra"])
    assert len(table) == n and set(table["catalog"]) == {name}
    assert table["ra"].unit == u.deg and table["source_id"].dtype == np.int64
    if truth["source_id"] is not None:
        np.testing.assert_array_equal(table["source_id"], truth["source_id"])
    assert set(truth.get("columns", ())) <= set(table.colnames)  # VizieR's own names kept ('[Fe/H]')
    np.testing.assert_allclose(table["ra"].to_value(u.deg), truth["ra"], atol=2e-6)  # sexagesimal: 0.001 s of time
    np.testing.assert_allclose(table["dec"].to_value(u.deg), truth["dec"], atol=1e-5)
    np.testing.assert_allclose(table["p_member"], truth["p"], atol=1e-12)
    np.testing.assert_array_equal(table["member_flag"], truth["member"])


def test_starkman_shape_spaces_skycoord_and_samples_summarised_not_dropped(server, tmp_path):
    reg, truth = _serve(server, tmp_path, "starkman2023_gd1", seed=3)
    table = load("starkman2023_gd1", cache=tmp_path / "cache", registry=reg, **FAST)
    for column in ("coord.distance", "coord.pm_ra_cosdec", "coord.pm_dec", "stream (MLE)", "spur (95%)", "allstream (5%)",
                   "stream.ln-weight_mean", "stream.ln-weight_q05", "stream.ln-weight_q95", "spur.ln-weight_q50"):
        assert column in table.colnames, column
    assert "coord.radial_velocity" not in table.colnames  # not in the file: not made up
    np.testing.assert_allclose(table["stream.ln-weight_mean"], truth["ln_weight_mean"], rtol=1e-12)
    assert set(table.meta["summarised"]) == {"stream.ln-weight", "spur.ln-weight"}
    assert "250 values per row" in table.meta["summarised"]["stream.ln-weight"]
    assert table.meta["membership"] == "`stream (50%)` > 0.8"
    # the paper's count adds the mean ln-weight: a named selection of the same file
    counted = load("starkman2023_gd1", cache=tmp_path / "cache", registry=reg, selection="nstream_count")
    np.testing.assert_array_equal(counted["member_flag"], (truth["p"] > 0.8) & (truth["ln_weight_mean"] > -6))
    with pytest.raises(InputError, match="selection 'nope' unknown \\(known: nstream_count, table_select\\)"):
        load("starkman2023_gd1", cache=tmp_path / "cache", registry=reg, selection="nope")


def test_region_catalog_members_come_from_its_masks(server, tmp_path):
    reg, truth = _serve(server, tmp_path, "pricewhelan2018_gd1", seed=4)
    main = load("pricewhelan2018_gd1", cache=tmp_path / "cache", registry=reg, selection="main_track")
    np.testing.assert_array_equal(main["member_flag"], truth["main_track"])
    assert 0 < main["member_flag"].sum() < (truth["member"]).sum() < len(main)  # the masks really cut


def test_membership_expressions_are_parsed_never_executed():
    t = Table({"a": [1.0, 2.0, np.nan], "b": [True, False, True], "s (50%)": [[0.1, 0.9], [0.5, 0.7], [0.9, 0.9]]})
    assert evaluate_expression("(a > 1.5) | ~b", t).tolist() == [False, True, False]  # NaN compares False
    assert evaluate_expression("mean(`s (50%)`) >= 0.6", t).tolist() == [False, True, True]
    for bad, message in (("__import__('os').system('true')", "is not allowed"), ("a.__class__", "is not allowed"),
                         ("nope > 1", "column 'nope' not found"), ("a >", "not a valid expression"), ("a + 1", "not allowed"),
                         ("a > 1.5 & b", "not true/false; put comparisons joined by & | in parentheses")):
        with pytest.raises(InputError, match=message):
            evaluate_expression(bad, t)


def test_galstreams_tracks_load_without_download():
    table = load("galstreams", track="GD-1", reference="pricewhelan2018", registry=PACKAGED)
    assert table.meta["kind"] == "tracks" and len(table) > 10
    assert table["source_id"].mask.all() and np.isnan(table["p_member"]).all()
    # GD-1 spans roughly ra 130-220 deg, dec 20-65 deg
    assert 100 < np.median(table["ra"].to_value(u.deg)) < 230 and 15 < np.median(table["dec"].to_value(u.deg)) < 70


# ------------------------------------------------------------------ cross-match


def _gd1_to_icrs(phi1, phi2):
    """Independent transform: gala's Koposov et al. (2010) GD-1 frame."""
    import gala.coordinates as gc
    from astropy.coordinates import SkyCoord

    c = SkyCoord(phi1=phi1 * u.deg, phi2=phi2 * u.deg, frame=gc.GD1Koposov10()).icrs
    return c.ra.deg, c.dec.deg


@pytest.fixture(scope="module")
def gd1_fit_like():
    """A GD-1 members table as `streammix fit` writes it (source_id, phi1, phi2, p_member),
    and a Starkman-shaped 'published' catalog covering part of it, with probabilities that
    straddle both cuts (ours 0.5, the paper's stream (50%) > 0.8)."""
    rng = np.random.default_rng(11)
    n = 400
    phi1, phi2 = rng.uniform(-70, -20, n), rng.normal(0, 1.5, n)
    p_ours = np.clip(rng.beta(0.4, 0.6, n), 0, 1)
    members = QTable({"source_id": np.arange(10**17, 10**17 + n, dtype=np.int64), "phi1": phi1 * u.deg,
                      "phi2": phi2 * u.deg, "p_member": p_ours})
    in_cat = np.sort(rng.choice(n, 300, replace=False))
    ra, dec = _gd1_to_icrs(phi1[in_cat], phi2[in_cat])
    p_pub = np.clip(p_ours[in_cat] + rng.normal(0, 0.15, len(in_cat)), 0.001, 0.999)
    p_pub[:3] = [0.7, 0.79, 0.81]  # between the cuts: members at 0.5, not at the paper's 0.8 (except 0.81)
    table = starkman_gd1_table(np.asarray(members["source_id"])[in_cat], ra, dec, p_pub, rng, n_samples=20)
    buf = io.StringIO()
    table.write(buf, format="ascii.ecsv")
    return {"members": members, "in_cat": in_cat, "p_ours": p_ours, "ecsv": buf.getvalue().encode(),
            "p_cat": np.asarray(table["stream (50%)"])}


def test_crossmatch_of_a_gd1_fit_against_starkman_at_the_papers_threshold(server, tmp_path, gd1_fit_like):
    server.record("10211410", {"gd1_membership_likelhoods.ecsv": gd1_fit_like["ecsv"]})
    catalog = load("starkman2023_gd1", cache=tmp_path / "cache", registry=_packaged(tmp_path, "starkman2023_gd1"), **FAST)
    matched, summary = crossmatch(catalog, gd1_fit_like["members"], frame="GD-1")
    in_cat, p_ours, p_cat = gd1_fit_like["in_cat"], gd1_fit_like["p_ours"], gd1_fit_like["p_cat"]
    assert summary["n_matched"] == len(in_cat) == summary["n_matched_by_source_id"]
    order = np.argsort(matched["catalog_index"])
    np.testing.assert_array_equal(np.asarray(matched["member_index"])[order], in_cat)
    ours, theirs = p_ours[in_cat] >= 0.5, p_cat > 0.8  # each side's own cut
    assert (p_cat[:3] > 0.5).all() and theirs[:3].tolist() == [False, False, True]
    assert summary["confusion"] == {"both": int((ours & theirs).sum()), "ours_only": int((ours & ~theirs).sum()),
                                    "catalog_only": int((~ours & theirs).sum()), "neither": int((~ours & ~theirs).sum())}
    assert summary["n_catalog_members"] == int(theirs.sum()) and summary["catalog_cut"] == "`stream (50%)` > 0.8"
    assert summary["overlap_of_catalog"] == 1.0
    assert summary["rank_correlation"] == pytest.approx(spearmanr(p_ours[in_cat], p_cat).statistic, abs=1e-12)
    assert np.nanmax(matched["separation"].to_value(u.arcsec)) < 0.01  # gala and streammix frames agree
    figure = crossmatch_figure(matched, summary, tmp_path / "agreement.png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


# ------------------------------------------------------------------ the real command line


def _cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "streammix", *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=300)


def test_cli_list_shows_every_entry_with_identifiers_and_status():
    result = _cli("catalogs", "list", env={"STREAMMIX_CATALOGS": str(PACKAGED)})
    assert result.returncode == 0, result.stderr
    cats = list_catalogs(PACKAGED)
    assert len(cats) >= 10
    for cat in cats:
        line = next(line for line in result.stdout.splitlines() if line.startswith(cat.name + " "))
        cut = "none (tracks)" if cat.kind == "tracks" else cat.membership.describe()
        for value in (cat.record or "-", cat.doi or "-", cat.paper.get("arxiv") or "-", cat.verified, cut):
            assert value in line, (cat.name, value)
        assert ("(unverified)" in line) == (not cat.record_verified)


def test_cli_fetch_load_crossmatch_against_local_server(server, tmp_path, gd1_fit_like):
    server.record("10211410", {"gd1_membership_likelhoods.ecsv": gd1_fit_like["ecsv"]})
    env = {"STREAMMIX_CATALOGS": str(_packaged(tmp_path, "starkman2023_gd1")), "STREAMMIX_ZENODO_URL": server.url}
    cache = tmp_path / "cache"
    fetched = _cli("catalogs", "fetch", "starkman2023_gd1", "--cache-dir", cache, "--quiet", env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.splitlines()[0].startswith("starkman2023_gd1: 1 file(s), ")  # the size, before downloading
    assert fetched.stdout.strip().endswith("gd1_membership_likelhoods.ecsv") and fetched.stderr == ""
    members_path = tmp_path / "members.ecsv"
    gd1_fit_like["members"].write(members_path)
    out = _cli("catalogs", "crossmatch", "starkman2023_gd1", members_path, "--frame", "GD-1", "--cache-dir", cache,
               "--quiet", "--json", tmp_path / "s.json", "--figure", tmp_path / "agreement.png", env=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["n_matched"] == len(gd1_fit_like["in_cat"]) and f"n_matched: {summary['n_matched']}" in out.stdout
    assert summary["catalog_cut"] == "`stream (50%)` > 0.8" and (tmp_path / "agreement.png").stat().st_size > 1000
    for bad, message in ((("catalogs", "info", "nope"), "catalog 'nope': unknown"),
                         (("catalogs", "fetch", "starkman2023_gd1", "--max-size", "lots"), "--max-size: 'lots' is not a size")):
        result = _cli(*bad, env=env)
        assert result.returncode == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_packaged_registry_is_the_one_used_by_default(monkeypatch):
    monkeypatch.delenv("STREAMMIX_CATALOGS", raising=False)
    assert {c.name for c in list_catalogs()} == {c.name for c in list_catalogs(PACKAGED)}
