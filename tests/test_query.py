"""`streammix query` against a TAP-shaped server on 127.0.0.1: chunks, failures, truncation, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import tap_server
from streammix.config import Config
from streammix.data import read_stars
from streammix.errors import InputError
from streammix.frames import get_frame
from streammix.new_stream import NewStreamOptions, new_config
from streammix.query import GAIA_COLUMNS, chunk_folder, plan_query, run_query


@pytest.fixture
def field(tmp_path):
    """A `streammix new` config of Jhelum (a great-circle frame) pointed at a local TAP server."""
    raw = yaml.safe_load(new_config("Jhelum", NewStreamOptions(data_path="stars.fits")))
    frame = get_frame(raw["frame"])
    lo, hi = raw["field"]["phi1"]
    lo2, hi2 = raw["field"]["phi2"]
    rows = tap_server.gaia_rows(frame, (lo - 3, hi + 3), (lo2 - 1, hi2 + 1), 600)
    server = tap_server.TapServer(tap_server.votable_bytes(rows))
    raw["data"]["query"].update(url=server.url, chunk=20.0, retries=0, timeout=20)
    path = tmp_path / "jhelum.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    phi1, phi2 = frame.to_stream(rows["ra"], rows["dec"])
    inside = (phi1 >= lo) & (phi1 <= hi) & (phi2 >= lo2) & (phi2 <= hi2)
    yield path, server, rows, int(inside.sum())
    server.close()


def test_query_writes_the_field_in_the_stream_frame(field, tmp_path):
    path, server, rows, n_inside = field
    config = Config.from_yaml(path)
    chunks = plan_query(config)
    out = run_query(config)
    assert len(server.queries) == len(chunks) == 5
    assert server.queries == [c.adql for c in chunks]
    assert "pmra BETWEEN" in chunks[0].adql and "parallax - 3 * parallax_error < 1.0" in chunks[0].adql
    stars = read_stars(out, config.data.column_map())
    assert len(stars) == n_inside and len(np.unique(stars.source_id)) == n_inside
    assert stars.bands == ("gaia_g", "gaia_bp", "gaia_rp")
    # the proper motions were rotated into the frame with their covariance
    assert np.all(np.abs(stars.pm_cov()[:, 0, 1]) > 0)
    assert (tmp_path / "stars.fits.adql").read_text().count("SELECT") == 5
    summary = json.loads((tmp_path / "stars.fits.query.json").read_text())
    assert summary["stars"] == n_inside and len(summary["adql_sha256"]) == 64
    with pytest.raises(InputError, match="already exists"):
        run_query(config)


def test_a_failed_chunk_keeps_the_others_and_a_rerun_resumes(field, tmp_path):
    path, server, rows, n_inside = field
    config = Config.from_yaml(path)
    server.plan = [{}, {}, {"status": 500}]
    with pytest.raises(InputError, match=r"^query chunk 3 \(phi1 .*\): failed: .*500.*; rerun to resume \(2 of 5"):
        run_query(config)
    assert sorted(p.name for p in chunk_folder(config).iterdir()) == ["chunk0000.fits", "chunk0001.fits"]
    assert not (tmp_path / "stars.fits").exists()
    server.plan = [{}]
    server.queries.clear()
    run_query(config)
    assert len(server.queries) == 3  # chunks 3-5 only
    assert len(read_stars(tmp_path / "stars.fits", config.data.column_map())) == n_inside


def test_a_truncated_response_is_one_clear_line(field, tmp_path):
    path, server, rows, _ = field
    config = Config.from_yaml(path)
    server.plan = [{"cut": len(server.votable) // 2}]
    with pytest.raises(InputError) as error:
        run_query(config)
    message = str(error.value)
    assert message.startswith("query chunk 1 (phi1 ") and "\n" not in message and message.endswith("(0 of 5 chunks kept)")
    assert not (tmp_path / "stars.fits").exists()


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda t: t.remove_column("pmra"), "lacks columns pmra"),
        (lambda t: t.__setitem__("dec", t["dec"] + 200.0), "off the sky"),
        (lambda t: t.__setitem__("source_id", np.ones(len(t), dtype=np.int64)), "source_id"),
        (lambda t: t.replace_column("pmra", [str(v) for v in t["pmra"]]), "not numeric"),
    ],
)
def test_what_the_service_sends_is_checked(field, damage, match):
    path, server, rows, _ = field
    bad = rows.copy()
    damage(bad)
    server.votable = tap_server.votable_bytes(bad)
    with pytest.raises(InputError, match=match):
        run_query(Config.from_yaml(path))


def test_too_many_rows_and_a_changed_query(field, tmp_path):
    path, server, rows, _ = field
    raw = yaml.safe_load(path.read_text())
    raw["data"]["query"]["maxrec"] = 100
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="reach data.query.maxrec"):
        run_query(Config.from_yaml(path))
    # a finished chunk of another query (here another G limit) is fetched again
    raw["data"]["query"]["maxrec"] = 10_000
    path.write_text(yaml.safe_dump(raw))
    run_query(Config.from_yaml(path))
    raw["data"]["query"]["g_max"] = 20.0
    path.write_text(yaml.safe_dump(raw))
    server.queries.clear()
    run_query(Config.from_yaml(path), overwrite=True)
    assert len(server.queries) == 5 and all("phot_g_mean_mag < 20.0" in q for q in server.queries)


def test_cli_query(field, tmp_path):
    import subprocess
    import sys

    path, server, rows, n_inside = field
    result = subprocess.run([sys.executable, "-m", "streammix", "query", str(path), "-q"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"wrote {n_inside} stars" in result.stderr
    assert set(GAIA_COLUMNS) - {"source_id"}  # the columns asked for
