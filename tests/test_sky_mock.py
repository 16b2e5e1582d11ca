"""Mocks anywhere: the Galaxy model's background (streammix.galaxy) and any galstreams stream
on its track (streammix.sky_mock, `streammix mock --stream`)."""

from __future__ import annotations

import subprocess
import sys

import astropy.units as u
import numpy as np
import pytest
import yaml
from astropy.coordinates import Galactocentric, SkyCoord, galactocentric_frame_defaults
from typer.testing import CliRunner

from streammix.cli import app
from streammix.config import Config
from streammix.frames import StreamFrame
from streammix.galaxy import draw_field_stars, sky_density
from streammix.new_stream import NewStreamOptions, new_config
from streammix.sky_mock import mock_for_stream, sky_mock, stream_model


def _frame_at(l_deg: float, b_deg: float) -> StreamFrame:
    """A frame whose (phi1, phi2) = (0, 0) is Galactic (l, b), phi1 along l."""
    centre = SkyCoord(l=l_deg * u.deg, b=b_deg * u.deg, frame="galactic")
    ahead = SkyCoord(l=(l_deg + 1.0) * u.deg, b=b_deg * u.deg, frame="galactic")
    return StreamFrame.from_endpoints(centre.directional_offset_by(ahead.position_angle(centre), 1 * u.deg), ahead)


def test_counts_against_the_gaia_dr3_random_sample(shared_data):
    """The model's stars per deg^2 with G < 20 against Gaia DR3 itself: 1000 random
    gaia_source rows (random_index, so a uniform subsample of the 1,811,709,771 sources of
    Gaia Collaboration, Vallenari et al. 2023) give the sky density in |b| bins as
    N_bin / 1000 x 1.81e9 / area. The model is averaged over l and both hemispheres in each
    bin. Tolerance: each bin holds 10-64 sample stars, so the data's own Poisson error is
    13-32%; we ask for agreement within 3 Poisson sigma of the sample count. |b| < 20 deg is
    left out (no dust, bulge or bar in the model)."""
    from astropy.table import Table

    sample = Table.read(shared_data / "gaia_schema" / "gaia_dr3_1000_random.fits")
    b = np.abs(np.asarray(sample["b"], float))
    g = np.asarray(sample["phot_g_mean_mag"], float)
    n_gaia = 1_811_709_771
    for lo, hi in ((20, 30), (30, 45), (45, 60), (60, 90)):
        observed = int(((g < 20) & (b >= lo) & (b < hi)).sum())
        area = 2 * 2 * np.pi * (np.sin(np.radians(hi)) - np.sin(np.radians(lo))) * (180 / np.pi) ** 2
        lats, lons = np.linspace(lo, hi, 5), np.linspace(0.0, 360.0, 9)[:-1]
        weights = np.cos(np.radians(lats))
        model = np.mean([
            np.average([sum(sky_density(l, s * bb, 20.0).values()) for bb in lats], weights=weights)
            for l in lons for s in (1, -1)
        ])  # fmt: skip
        expected = model * area / n_gaia * 1000
        assert abs(expected - observed) < 3 * np.sqrt(observed), (lo, hi, expected, observed)


def test_counts_colours_and_distances_vary_with_latitude():
    """The documented sense, at l = 90 deg: towards the plane (b = 20 deg) more than three
    times the stars of b = 70 deg, more of them thin disc; towards the pole the halo's share
    grows, and with it the share of distant (> 5 kpc, i.e. parallax < 0.2 mas) stars; the
    halo's stars are bluer than the thin disc's (older, metal-poorer isochrone)."""
    high, low = sky_density(90.0, 70.0, 20.0), sky_density(90.0, 20.0, 20.0)
    assert sum(low.values()) > 3 * sum(high.values())
    assert low["thin"] / sum(low.values()) > high["thin"] / sum(high.values())
    assert high["halo"] / sum(high.values()) > low["halo"] / sum(low.values())
    stars = {}
    for b in (70.0, 20.0):
        s = draw_field_stars(_frame_at(90.0, b), (-2.0, 2.0), (-2.0, 2.0), 20.0, np.random.default_rng(1), n=4000)
        assert abs(np.median(s["b"]) - b) < 1.0
        stars[b] = s
    halo = {b: np.mean(s["population"] == "halo") for b, s in stars.items()}
    far = {b: np.mean(s["distance"] > 5.0) for b, s in stars.items()}
    # 4000 stars each: a fraction's standard error is <= 0.008
    assert halo[70.0] > halo[20.0] + 0.1 and far[70.0] > far[20.0] + 0.02
    s = stars[70.0]
    colour = {p: np.median((s["abs_bp"] - s["abs_rp"])[s["population"] == p]) for p in ("thin", "halo")}
    assert colour["halo"] < colour["thin"] - 0.2
    # the exact count follows the model's expectation over the field (Poisson)
    s = draw_field_stars(_frame_at(0.0, 60.0), (-1.0, 1.0), (-1.0, 1.0), 18.0, np.random.default_rng(2), scale=0.2)
    expected = 0.2 * float(s["expected"])
    assert abs(s["phi1"].size - expected) < 4 * np.sqrt(expected)


def test_mean_proper_motion_of_distant_halo_stars_is_astropys():
    """The numpy conversion against astropy: halo stars 20-40 kpc away have the mean velocity
    of their population (18 km/s rotation: 238 - 220 lag), so their mean proper motion is
    what astropy gives for such a star, the Sun's reflex dominating. Tolerance: 5 sigma of
    the mean (dispersions 90-160 km/s at ~30 kpc, ~1 mas/yr per star) plus 0.05 mas/yr for
    the spread of distances and positions within the 4x4 deg field."""
    frame = _frame_at(120.0, 50.0)
    stars = draw_field_stars(frame, (-2.0, 2.0), (-2.0, 2.0), 21.0, np.random.default_rng(3), n=60000)
    far = (stars["population"] == "halo") & (stars["distance"] > 20) & (stars["distance"] < 40)
    assert far.sum() > 2000
    d = np.median(stars["distance"][far])
    params = galactocentric_frame_defaults.get_from_registry("v4.0")["parameters"]
    gc_frame = Galactocentric(**params)
    ra, dec = frame.to_icrs(0.0, 0.0)
    point = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, distance=d * u.kpc).transform_to(gc_frame)
    x, y = point.x.to_value(u.kpc), point.y.to_value(u.kpc)
    r = np.hypot(x, y)
    v = 18.0 * np.array([y / r, -x / r, 0.0])
    moving = SkyCoord(x=x * u.kpc, y=y * u.kpc, z=point.z, v_x=v[0] * u.km / u.s, v_y=v[1] * u.km / u.s,
                      v_z=v[2] * u.km / u.s, frame=gc_frame).icrs  # fmt: skip
    pm1, pm2, _ = frame.transform_pm(moving.ra.deg, moving.dec.deg, moving.pm_ra_cosdec.value, moving.pm_dec.value)
    n = far.sum()
    for got, want in ((stars["pm1"][far], pm1), (stars["pm2"][far], pm2)):
        tol = 5 * np.std(got) / np.sqrt(n) + 0.05
        assert abs(np.mean(got) - float(want)) < tol, (np.mean(got), float(want), tol)


def test_the_stream_follows_its_galstreams_track():
    config = Config.from_dict(yaml.safe_load(new_config("Pal5")))
    model = stream_model(config)
    stars, tracks = sky_mock(config, n_stream=400, n_background=100, seed=4)
    stream = stars[stars["true_component"] == "stream"]
    assert len(stream) == 400 and len(stars) == 500
    at = model.at(stream["phi1"].to_value(u.deg))
    assert abs(np.median(stream["phi2"].to_value(u.deg) - at["phi2"])) < 0.05
    pm_ok = np.isfinite(stream["pm_phi1_cosphi2"])
    assert abs(np.median(stream["pm_phi1_cosphi2"][pm_ok].value - at["pm1"][pm_ok])) < 0.1
    assert abs(np.median(stream["true_distmod"].value - at["distmod"])) < 0.02
    track = model.track
    assert model.phi1_range == (float(track.phi1.min()), float(track.phi1.max()))
    assert tracks["linear_density"].value.max() > 0 and tracks["phi2"].unit == u.deg
    # the same seed, the same catalog
    again, _ = sky_mock(config, n_stream=400, n_background=100, seed=4)
    assert np.array_equal(np.asarray(again["phi2"]), np.asarray(stars["phi2"]), equal_nan=True)


@pytest.mark.parametrize("name", ["Pal5", "Jhelum", "NGC2298"])
def test_a_stream_mock_fits_with_the_new_config(name, tmp_path):
    """Three streams (NGC2298's track runs at |b| ~ 17 deg): the catalog that `mock --stream`
    writes is read and fitted by `streammix new`'s config, shrunk to seconds."""
    from streammix.fit import fit

    stars, tracks, text = mock_for_stream(
        name, options=NewStreamOptions(data_path="stars.fits"), n_stream=150, n_background=1500, seed=0
    )
    from streammix.mock import write_mock

    write_mock(stars, tracks, tmp_path / "stars.fits")
    raw = yaml.safe_load(text)
    raw["fit"].update(ensemble=1, steps=20, warm_start_steps=10, astrometry_steps=10, eval_every=10,
                      dropout_samples=0)  # fmt: skip
    raw["model"]["background"]["flow"] = {"epochs": 2, "hidden": 8, "transforms": 1}
    raw["model"]["isochrone"]["nodes"] = 20
    raw["model"]["grid_size"] = 32
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    config = Config.from_yaml(tmp_path / "c.yaml")
    with pytest.warns(RuntimeWarning, match="did not converge"):
        model = fit(config)
    assert model.component_names[0] == "stream"


def test_cli_mock_stream_writes_and_a_bad_name_is_one_line_exit_2(tmp_path):
    out = tmp_path / "m.fits"
    result = CliRunner().invoke(
        app, ["mock", "--stream", "Pal5", "--out", str(out), "--n-stream", "40", "--n-background", "80"]
    )
    assert result.exit_code == 0, result.output
    from astropy.table import QTable

    table = QTable.read(out, character_as_bytes=False)
    assert len(table) == 120 and (tmp_path / "m_tracks.ecsv").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "streammix", "mock", "--stream", "Pal55", "--out", str(tmp_path / "x.fits")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "closest: Pal5" in lines[0], bad.stderr
    assert not (tmp_path / "x.fits").exists()


def test_poisson_background_varies_with_the_field():
    """Without n_background the background is a Poisson draw of the model's expectation
    (times background_scale) before the query's cuts: NGC2298's field (|b| ~ 17 deg) holds
    several times the stars per deg^2 of AAU-AliqaUma's (|b| ~ 69 deg), and the cuts keep a
    part of the drawn stars."""
    density = {}
    for name in ("NGC2298", "AAU-AliqaUma"):
        config = Config.from_dict(yaml.safe_load(new_config(name)))
        stars, _ = sky_mock(config, n_stream=0, background_scale=0.002, seed=5)
        (lo1, hi1), (lo2, hi2) = config.field.phi1, config.field.phi2
        area = np.degrees(np.radians(hi1 - lo1)) * np.degrees(np.sin(np.radians(hi2)) - np.sin(np.radians(lo2)))
        expected = stars.meta["expected_background"]
        assert 0 < len(stars) < 0.002 * expected + 4 * np.sqrt(0.002 * expected)
        assert set(stars["true_population"]) == {"thin", "thick", "halo"}
        density[name] = expected / area
    assert density["NGC2298"] > 3 * density["AAU-AliqaUma"]
