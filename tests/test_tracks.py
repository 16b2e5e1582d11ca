"""galstreams tracks in stream frames, interpolation and control points."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import Distance
from astropy.table import QTable, Table

from streammix.errors import InputError
from streammix.frames import GD1, PAL5, StreamFrame
from streammix.tracks import (
    ControlPoint,
    StreamTrack,
    _galstreams_dir,
    galstreams_track,
    list_galstreams_tracks,
)


@pytest.fixture(scope="module")
def gd1_track() -> StreamTrack:
    return galstreams_track("GD-1", "pricewhelan2018")


@pytest.fixture(scope="module")
def pal5_track() -> StreamTrack:
    return galstreams_track("Pal 5", "pricewhelan2019")


def test_gd1_track_lies_along_the_koposov_equator(gd1_track):
    assert gd1_track.frame is GD1
    assert gd1_track.phi1.min() < -85 and gd1_track.phi1.max() > 5
    # Koposov et al. (2010) fitted the frame to the stream over about -70..0
    # deg, where the track stays within 1.5 deg of phi2 = 0 (Price-Whelan &
    # Bonaca 2018, Fig. 1); beyond, it bends down to about -3 deg at phi1 = -90.
    core = (gd1_track.phi1 > -70) & (gd1_track.phi1 < 0)
    assert np.max(np.abs(gd1_track.phi2[core])) < 1.5
    assert np.max(np.abs(gd1_track.phi2)) < 4.0
    # Proper motions along the stream: about -13 mas/yr near phi1 = -50 (observed).
    mid = gd1_track.interpolate(-50.0)
    assert -14.5 < mid["pm_phi1_cosphi2"] < -11.5 and -4.5 < mid["pm_phi2"] < -2.0
    assert 7.0 < mid["distance"] < 9.0


def test_gd1_track_matches_the_stream_in_real_gaia_data(gd1_track, shared_data):
    """The overdensity of stars moving like the track sits on the track."""
    data = Table.read(shared_data / "gd1_dr2" / "gd1_pm_box_dr2_ps1.fits")
    ra, dec = np.asarray(data["ra"]), np.asarray(data["dec"])
    phi1, phi2 = GD1.to_stream(ra, dec)
    pm1, pm2, _ = GD1.transform_pm(ra, dec, np.asarray(data["pmra"]), np.asarray(data["pmdec"]))
    bins = np.arange(-5.5, 5.51, 0.25)
    for lo in (-70.0, -60.0, -50.0, -40.0):
        track = gd1_track.interpolate(lo + 5.0)
        moving = (
            (phi1 > lo) & (phi1 < lo + 10)
            & (np.abs(pm1 - track["pm_phi1_cosphi2"]) < 1.5)
            & (np.abs(pm2 - track["pm_phi2"]) < 1.5)
        )
        counts, edges = np.histogram(phi2[moving], bins=bins)
        peak = edges[np.argmax(counts)] + 0.125
        assert counts.max() > 1.5 * np.median(counts)
        assert abs(peak - track["phi2"]) < 0.4, lo
        on_track = moving & (np.abs(phi2 - track["phi2"]) < 0.3)
        assert abs(np.median(pm1[on_track]) - track["pm_phi1_cosphi2"]) < 1.0
        assert abs(np.median(pm2[on_track]) - track["pm_phi2"]) < 1.0


def test_pal5_track_passes_through_the_cluster(pal5_track):
    assert pal5_track.frame is PAL5
    assert pal5_track.phi1.min() < -10 and pal5_track.phi1.max() > 5
    # Pal 5's frame puts the cluster at (0, 0).
    assert np.min(np.hypot(pal5_track.phi1, pal5_track.phi2)) < 0.2
    assert abs(pal5_track.interpolate(0.0)["phi2"]) < 0.2
    # Harris (2010): Pal 5 at 23.2 kpc; the track's distance there is ~20-23 kpc.
    assert 19.0 < pal5_track.interpolate(0.0)["distance"] < 24.0


def test_name_and_reference_matching():
    for name in ["gd1", "GD 1", "gd-1"]:
        assert galstreams_track(name, "PriceWhelan2018").name == "GD-1"
    names = {name for name, _ in list_galstreams_tracks()}
    assert {"GD-1", "Pal5", "Orphan-Chenab"} <= names
    assert ("Pal5", "pricewhelan2019") in list_galstreams_tracks()


def test_default_reference_is_the_one_galstreams_switches_on():
    log = Table.read(_galstreams_dir() / "lib" / "master_log.txt", format="ascii.commented_header")
    for name in ["GD-1", "Pal5"]:
        on = [str(r["TrackRefs"]) for r in log if r["Name"] == name and int(r["On"]) == 1]
        assert len(on) == 1
        assert galstreams_track(name).reference == on[0]


def test_unknown_stream_lists_names_on_one_line():
    with pytest.raises(InputError) as error:
        galstreams_track("Not-A-Stream")
    message = str(error.value)
    assert "'Not-A-Stream'" in message and "GD-1" in message and "Pal5" in message
    assert "\n" not in message
    with pytest.raises(InputError, match="pricewhelan2018"):
        galstreams_track("gd1", "nobody1999")


def test_other_streams_get_a_great_circle_frame_in_file_order():
    track = galstreams_track("Orphan-Chenab", "koposov2019")
    assert track.frame not in (GD1, PAL5)
    path = _galstreams_dir() / "tracks" / "track.st.Orphan-Chenab.koposov2019.ecsv"
    raw = Table.read(path)
    first = track.frame.to_stream(raw["ra"][0], raw["dec"][0])[0]
    last = track.frame.to_stream(raw["ra"][-1], raw["dec"][-1])[0]
    assert first < last
    assert np.isclose(0.5 * (track.phi1.min() + track.phi1.max()), 0.0, atol=1e-6)
    # The Orphan stream is long (>150 deg) and close to a great circle.
    assert track.phi1.max() - track.phi1.min() > 150
    assert np.max(np.abs(track.phi2)) < 10
    # An explicit frame is honoured.
    assert galstreams_track("Orphan-Chenab", "koposov2019", frame=GD1).frame is GD1


def test_missing_quantities_are_nan():
    # Acheron (Grillmair 2009) has neither distance nor proper motions in galstreams.
    track = galstreams_track("acheron")
    assert np.all(np.isnan(track.distance)) and np.all(np.isnan(track.pm_phi2))
    assert np.all(np.isfinite(track.phi2))
    assert track.control_points("pm_phi2", [0.0], 1.0) == []


def test_interpolation_outside_span_is_nan(gd1_track):
    lo, hi = gd1_track.phi1.min(), gd1_track.phi1.max()
    out = gd1_track.interpolate(np.array([lo - 1.0, 0.5 * (lo + hi), hi + 1.0]) * u.deg)
    for key in ["phi2", "pm_phi1_cosphi2", "pm_phi2", "distance", "distmod"]:
        assert np.isnan(out[key][0]) and np.isnan(out[key][2]) and np.isfinite(out[key][1]), key


def test_control_points_carry_interpolated_values(gd1_track):
    # At a node the value is the node's; half-way between nodes, their mean.
    i = len(gd1_track.phi1) // 2
    nodes = gd1_track.phi1[[i, i + 1]]
    grid = [nodes[0], 0.5 * (nodes[0] + nodes[1]), 50.0]
    points = gd1_track.control_points("phi2", grid, 0.3)
    assert len(points) == 2  # phi1 = 50 is outside the track
    assert all(isinstance(p, ControlPoint) for p in points)
    assert all(p.parameter == "phi2" and p.width == 0.3 for p in points)
    assert points[0].phi1 == nodes[0] and points[0].value == gd1_track.phi2[i]
    assert np.isclose(points[1].value, 0.5 * (gd1_track.phi2[i] + gd1_track.phi2[i + 1]))
    dm = gd1_track.control_points("distmod", [nodes[0]], 0.1)[0]
    assert np.isclose(dm.value, Distance(gd1_track.distance[i] * u.kpc).distmod.value)
    pm = gd1_track.control_points("pm_phi1_cosphi2", [nodes[0]], 0.5)[0]
    assert pm.value == gd1_track.pm_phi1_cosphi2[i]
    with pytest.raises(InputError, match="'width'|width"):
        gd1_track.control_points("phi2", [0.0], 0.0)
    with pytest.raises(InputError, match="'velocity'"):
        gd1_track.control_points("velocity", [0.0], 1.0)


def test_stream_track_sorts_and_validates():
    track = StreamTrack("toy", "test", [3.0, 1.0, 2.0], [30.0, 10.0, 20.0], [0, 0, 0],
                        [0, 0, 0], [1, 1, 1], GD1)
    assert track.phi1.tolist() == [1.0, 2.0, 3.0] and track.phi2.tolist() == [10.0, 20.0, 30.0]
    with pytest.raises(ValueError):
        track.phi2[0] = 5.0
    with pytest.raises(InputError, match="phi2"):
        StreamTrack("toy", "test", [1.0, 2.0], [0.0], [0, 0], [0, 0], [1, 1], GD1)
    table = track.to_table()
    assert isinstance(table, QTable) and table["phi1"].unit == u.deg
    assert table["distance"].unit == u.kpc and table.meta["reference"] == "test"
    assert isinstance(track.frame, StreamFrame)
