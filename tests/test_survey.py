"""The survey table and its sky map (streammix.survey, streammix.sky_map) on synthetic fitted outputs.

The rows are built from numbers as the pipeline's ``numbers`` rule writes them,
and the tracks are fitted-track tables as ``streammix fit`` writes them, made
up here so that every value the table and the map should show is known.
"""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import QTable

from streammix.errors import InputError
from streammix.frames import get_frame
from streammix.sky_map import plot_survey_sky, sky_lines
from streammix.survey import SURVEY_COLUMNS, survey_row, survey_table, track_on_sky

COUNTS = {"n_stars": 5000, "n_p50": 310, "n_p80": 250, "fit_minutes": 12.5}


def test_rows_take_the_reference_the_stream_has(tmp_path) -> None:
    """A mock's RMS are against its truth; real data's against galstreams; without either, NaN."""
    mock = {**COUNTS, "phi2_rms_arcmin": 1.5, "pm_phi1_rms": 0.05, "pm_phi2_rms": 0.07, "completeness": 0.9,
            "purity": 0.8, "galstreams_phi2_rms_arcmin": 1.6, "galstreams_pm_phi1_rms": 9.0}  # fmt: skip
    real = {**COUNTS, "galstreams_phi2_rms_arcmin": 4.0, "galstreams_pm_phi1_rms": 0.3}
    rows = [
        survey_row("gd_1", mock, galstreams="GD-1", data="sky_mock"),
        survey_row("pal5", real, galstreams="Pal5", data="query"),
        survey_row("field", COUNTS, data="file"),
    ]
    assert [r["reference"] for r in rows] == ["truth", "galstreams", "-"]
    # the mock's proper-motion RMS is the truth's, not galstreams' (9.0)
    assert (rows[0]["phi2_rms"], rows[0]["pm_phi1_rms"], rows[0]["pm_phi2_rms"]) == (1.5, 0.05, 0.07)
    assert rows[0]["galstreams_phi2_rms"] == 1.6
    # a track without pm_phi2 leaves it NaN; real data have no completeness
    assert rows[1]["phi2_rms"] == 4.0 and rows[1]["pm_phi1_rms"] == 0.3 and math.isnan(rows[1]["pm_phi2_rms"])
    assert math.isnan(rows[1]["completeness"]) and math.isnan(rows[2]["phi2_rms"])

    table = survey_table(rows)
    assert table.colnames == [name for name, _, _ in SURVEY_COLUMNS]
    assert table["phi2_rms"].unit == u.arcmin and table["pm_phi1_rms"].unit == u.mas / u.yr
    assert table["fit_minutes"].unit == u.min and table["n_p50"].dtype.kind == "i"
    assert list(table["n_p50"]) == [310] * 3 and list(table["galstreams"]) == ["GD-1", "Pal5", "-"]
    # it survives ECSV, units and NaN included
    table.write(tmp_path / "survey.ecsv")
    back = QTable.read(tmp_path / "survey.ecsv")
    assert back["phi2_rms"][0] == 1.5 * u.arcmin and np.isnan(back["completeness"][1])
    assert back["stream"].info.description and list(back["data"]) == ["sky_mock", "query", "file"]
    assert list(back["reference"]) == ["truth", "galstreams", "-"] and not getattr(back["galstreams"], "mask", None)


def test_bad_numbers_are_one_line() -> None:
    with pytest.raises(InputError, match=r"^numbers of stream 'x': n_p50: missing$"):
        survey_row("x", {"n_stars": 1, "n_p80": 1, "fit_minutes": 1.0})
    with pytest.raises(InputError, match=r"^numbers: purity: 'high' is not a number$"):
        survey_row("x", {**COUNTS, "purity": "high"})
    with pytest.raises(InputError, match=r"^survey row 0: stream: missing$"):
        survey_table([{"n_stars": 1}])


def _fitted_tracks(phi1: np.ndarray, phi2: np.ndarray, density: np.ndarray, component: str = "stream") -> QTable:
    return QTable({"phi1": phi1 * u.deg, f"{component}_phi2": phi2 * u.deg,
                   f"{component}_linear_density": density / u.deg})  # fmt: skip


def test_track_on_sky_keeps_the_dense_part_in_the_frame() -> None:
    phi1 = np.linspace(-80.0, 0.0, 81)
    phi2 = 0.02 * phi1
    density = np.exp(-0.5 * ((phi1 + 40.0) / 10.0) ** 2)  # above 10 % of the peak within 21.5 deg of -40
    sky = track_on_sky(_fitted_tracks(phi1[::-1], phi2[::-1], density[::-1]), "gd1")  # any order in, phi1 order out
    dense = density > 0.1
    ra, dec = get_frame("gd1").to_icrs(phi1[dense], phi2[dense])
    assert len(sky) == dense.sum() == 43
    assert np.allclose(sky.ra.deg, ra) and np.allclose(sky.dec.deg, dec)
    # back in the frame, the points are the track's
    back1, back2 = get_frame("gd1").to_stream(sky.ra.deg, sky.dec.deg)
    assert np.allclose(back1, phi1[dense], atol=1e-8) and np.allclose(back2, phi2[dense], atol=1e-8)
    # a great-circle frame as the config writes it, another component
    frame = {"name": "toy", "pole": [10.0, 80.0], "origin": [30.0, 0.0]}
    toy = track_on_sky(_fitted_tracks(phi1, phi2, density, "spur"), frame, "spur", dense_fraction=0.5)
    assert len(toy) == int((density > 0.5).sum())
    # no density, no track
    assert len(track_on_sky(_fitted_tracks(phi1, phi2, np.zeros_like(phi1)), "gd1")) == 0
    with pytest.raises(InputError, match=r"^tracks: stream_linear_density: missing \(component 'stream'\)$"):
        track_on_sky(QTable({"phi1": phi1 * u.deg, "stream_phi2": phi2 * u.deg}), "gd1")


def test_sky_map_draws_every_track_and_breaks_at_the_edge() -> None:
    # a track across the map's edge (galactic l = 180) and one near the centre
    across = SkyCoord(l=np.linspace(170, 190, 21) * u.deg, b=np.full(21, 30.0) * u.deg, frame="galactic")
    centre = SkyCoord(l=np.linspace(-10, 10, 11) * u.deg, b=np.full(11, -20.0) * u.deg, frame="galactic")
    empty = SkyCoord([] * u.deg, [] * u.deg)
    pieces = sky_lines(across, "galactic")
    assert [x.size for x, _ in pieces] == [10, 11]  # l < 180 on the left (x < 0), l >= 180 on the right
    assert np.all(np.degrees(pieces[0][0]) < -169) and np.all(np.degrees(pieces[1][0]) > 169)
    assert np.allclose(np.degrees(pieces[0][1]), 30.0)
    x, _ = sky_lines(centre, "galactic")[0]
    assert np.allclose(np.degrees(x), -np.linspace(-10, 10, 11))  # longitude increases to the left

    fig = plot_survey_sky({"Across": across, "Centre": centre, "Nowhere": empty})
    ax = fig.axes[0]
    assert ax.name == "mollweide"
    assert [line.get_label() for line in ax.get_lines()] == ["Across", "Across", "Centre"]
    assert sorted(t.get_text() for t in ax.texts) == ["Across", "Centre"]
    assert ax.get_title() == "2 of 3 streams"
    # the same tracks in ICRS: the same points, other coordinates
    icrs = plot_survey_sky({"Centre": centre}, frame="icrs", labels=False)
    x, y = icrs.axes[0].get_lines()[0].get_data()
    ra = centre.icrs.ra.wrap_at(180 * u.deg).radian
    assert np.allclose(x, -ra) and np.allclose(y, centre.icrs.dec.radian) and not icrs.axes[0].texts
    with pytest.raises(InputError, match=r"^frame 'ecliptic': the sky map is drawn in galactic or icrs$"):
        plot_survey_sky({}, frame="ecliptic")
