"""Tests of the mock stream field (streammix.mock)."""

from __future__ import annotations

import json
import warnings

import astropy.coordinates as coord
import astropy.units as u
import numpy as np
import pytest
from astropy.table import QTable, Table
from scipy import integrate, stats

from streammix.errors import InputError
from streammix.mock import (
    MockConfig,
    _kroupa_inverse_cdf,
    _proper_motions,
    generate_mock,
    true_tracks,
    write_mock,
)

SMALL = MockConfig(n_stream=600, n_background=5000)


@pytest.fixture(scope="module")
def default_mock():
    return generate_mock(seed=0)


@pytest.fixture(scope="module")
def small_mock():
    return generate_mock(SMALL, seed=1)


def _values(table, name):
    return np.asarray(getattr(table[name], "value", table[name]))


def _masks(stars):
    pop = np.asarray(stars["true_population"])
    return {p: pop == p for p in ("stream", "halo", "disc")}


def _interp_track(stars, tracks, name):
    return np.interp(_values(stars, "phi1"), _values(tracks, "phi1"), _values(tracks, name))


# ---------------------------------------------------------------- determinism, columns, counts


def test_same_seed_same_table_other_seed_differs(small_mock):
    again, tracks_again = generate_mock(SMALL, seed=1)
    stars, tracks = small_mock
    assert stars.colnames == again.colnames
    for name in stars.colnames:
        np.testing.assert_array_equal(_values(stars, name), _values(again, name), err_msg=name)
    np.testing.assert_array_equal(
        _values(tracks, "linear_density"), _values(tracks_again, "linear_density")
    )
    other, _ = generate_mock(SMALL, seed=2)
    assert not np.allclose(np.sort(_values(stars, "phi1")), np.sort(_values(other, "phi1")))


def test_parallax_zero_point_offsets_every_observed_parallax():
    """Without a parallax cut the same seed draws the same stars; the zero-point moves each
    observed parallax by exactly its value and nothing else."""
    plain = MockConfig(n_stream=200, n_background=1000, parallax_max=None)
    stars, _ = generate_mock(plain, seed=3)
    offset, _ = generate_mock(plain.model_copy(update={"parallax_zero_point": -0.1}), seed=3)
    before, after = _values(stars, "parallax"), _values(offset, "parallax")
    np.testing.assert_array_equal(np.isnan(after), np.isnan(before))  # the stars without astrometry
    has = np.isfinite(before)
    assert has.sum() > 1000
    np.testing.assert_allclose(after[has] - before[has], -0.1, atol=1e-12)
    np.testing.assert_array_equal(_values(offset, "pm_phi2"), _values(stars, "pm_phi2"))


def test_columns_units_and_truth(small_mock):
    stars, tracks = small_mock
    expected = {
        "phi1": u.deg, "phi2": u.deg, "phi2_err": u.deg, "parallax": u.mas, "parallax_err": u.mas,
        "pm_phi1_cosphi2": u.mas / u.yr, "pm_phi1_cosphi2_err": u.mas / u.yr,
        "pm_phi2": u.mas / u.yr, "pm_phi2_err": u.mas / u.yr,
        "gaia_g": u.mag, "gaia_g_err": u.mag, "gaia_bp": u.mag, "gaia_bp_err": u.mag,
        "gaia_rp": u.mag, "gaia_rp_err": u.mag, "true_distmod": u.mag, "true_mass": u.M_sun,
    }  # fmt: skip
    for name, unit in expected.items():
        assert stars[name].unit == unit, name
    assert stars["source_id"].dtype == np.int64
    assert len(np.unique(stars["source_id"])) == len(stars)
    assert set(stars["true_component"]) == {"stream", "background"}
    assert set(stars["true_population"]) == {"stream", "halo", "disc"}
    comp, pop = np.asarray(stars["true_component"]), np.asarray(stars["true_population"])
    assert np.all((comp == "stream") == (pop == "stream"))
    assert stars.meta["seed"] == 1
    assert MockConfig.from_json(stars.meta["config"]) == SMALL
    # rows are shuffled: the stream is not a contiguous block
    stream_rows = np.flatnonzero(pop == "stream")
    assert stream_rows.max() - stream_rows.min() > 2 * stream_rows.size
    assert set(tracks.colnames) >= {
        "phi1", "linear_density", "phi2", "phi2_width", "pm_phi1_cosphi2", "pm_phi2",
        "pm_phi1_cosphi2_width", "pm_phi2_width", "distmod", "distmod_width", "parallax",
    }  # fmt: skip
    dm = _values(tracks, "distmod")
    np.testing.assert_allclose(_values(tracks, "parallax"), 10 ** ((10 - dm) / 5))
    # GD-1-like ranges asked for: DM 14.3-15.2, widths 0.1-0.3 deg
    assert 14.3 <= dm.min() < 14.5 and 15.1 < dm.max() <= 15.25
    width = _values(tracks, "phi2_width")
    assert 0.09 < width.min() and width.max() < 0.31


def test_default_counts_and_selection(default_mock):
    stars, tracks = default_mock
    masks = _masks(stars)
    assert masks["stream"].sum() == 2000  # exact after cuts (documented)
    assert masks["halo"].sum() + masks["disc"].sum() == 100_000
    assert masks["disc"].sum() == 40_000
    config = MockConfig()
    assert np.all(_values(stars, "gaia_g") < config.g_limit)
    phi1, phi2 = _values(stars, "phi1"), _values(stars, "phi2")
    assert phi1.min() >= -90 and phi1.max() <= 10 and phi2.min() > -5 and phi2.max() < 5
    plx, err = _values(stars, "parallax"), _values(stars, "parallax_err")
    ok = np.isfinite(plx)
    assert np.all(plx[ok] < 1.0 + 3.0 * err[ok])
    # the expected count per degree integrates to the number of stream stars
    total = np.trapezoid(_values(tracks, "linear_density"), _values(tracks, "phi1"))
    assert total == pytest.approx(2000, rel=1e-3)


# ----------------------------------------------------------------------------- the stream


def test_stream_follows_track_with_its_width(default_mock):
    stars, tracks = default_mock
    s = _masks(stars)["stream"]
    resid = (_values(stars, "phi2")[s] - _interp_track(stars, tracks, "phi2")[s]) / _interp_track(
        stars, tracks, "phi2_width"
    )[s]
    assert np.sqrt(np.mean(resid**2)) == pytest.approx(1.0, abs=0.06)
    assert abs(np.mean(resid)) < 0.1
    assert np.abs(resid).max() < 5.5
    # the track curves by about a degree
    phi2 = _values(tracks, "phi2")
    assert 0.8 < phi2.max() - phi2.min() < 2.0


def test_stream_can_have_heavy_wings():
    """With a Student-t profile the stream's offsets from its track, in units of its width, are t-distributed."""
    config = MockConfig(n_stream=3000, n_background=100, stream_profile="student_t",
                        stream_profile_parameters={"phi2_dof": 2.0}, phi2_range=(-20.0, 20.0))
    stars, tracks = generate_mock(config, seed=4)
    s = _masks(stars)["stream"]
    resid = (_values(stars, "phi2")[s] - _interp_track(stars, tracks, "phi2")[s]) / _interp_track(
        stars, tracks, "phi2_width"
    )[s]
    assert stats.kstest(resid, stats.t(2.0).cdf).pvalue > 0.01
    assert stats.kstest(resid, stats.norm.cdf).pvalue < 1e-6
    assert json.loads(config.to_json())["stream_profile_parameters"] == {"phi2_dof": 2.0}


def test_linear_density_has_gaps_and_matches_counts(default_mock):
    stars, tracks = default_mock
    s = _masks(stars)["stream"]
    phi1 = _values(stars, "phi1")[s]
    for gap in (-40.0, -20.0):
        inside = np.sum(np.abs(phi1 - gap) < 1.5)
        left, right = np.sum(np.abs(phi1 - gap + 6.0) < 1.5), np.sum(np.abs(phi1 - gap - 6.0) < 1.5)
        neighbours = (left + right) / 2
        assert inside < 0.35 * neighbours, (gap, inside, neighbours)
    # histogram against the track's expected counts (computed by quadrature, not by sampling)
    edges = np.linspace(-90, 10, 21)
    counts, _ = np.histogram(phi1, edges)
    grid, density = _values(tracks, "phi1"), _values(tracks, "linear_density")
    expected = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        inside = (grid >= a) & (grid <= b)
        expected.append(np.trapezoid(density[inside], grid[inside]))
    expected = np.array(expected)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert stats.chi2.sf(chi2, len(counts) - 1) > 1e-3, chi2
    # a gradient: the near (phi1 > -30) half is denser than the far end
    assert counts[-6:].sum() > 1.5 * counts[:6].sum()


def test_stream_parallax_and_distance_match_track(default_mock):
    stars, tracks = default_mock
    s = _masks(stars)["stream"] & np.isfinite(_values(stars, "parallax"))
    dm_track = _interp_track(stars, tracks, "distmod")[s]
    dm_true = _values(stars, "true_distmod")[s]
    assert np.std(dm_true - dm_track) == pytest.approx(0.05, rel=0.1)
    plx, err = _values(stars, "parallax")[s], _values(stars, "parallax_err")[s]
    expected = 10 ** ((10 - dm_track) / 5)  # independent: from the DM track
    w = 1 / err**2
    mean_resid = np.sum(w * (plx - expected)) / np.sum(w)
    assert abs(mean_resid) < 4 / np.sqrt(np.sum(w))
    pull = (plx - 10 ** ((10 - dm_true) / 5)) / err
    assert np.std(pull) == pytest.approx(1.0, abs=0.07)


def test_stream_proper_motions_with_full_covariance(default_mock):
    stars, tracks = default_mock
    s = _masks(stars)["stream"] & np.isfinite(_values(stars, "pm_phi2"))
    r1 = _values(stars, "pm_phi1_cosphi2")[s] - _interp_track(stars, tracks, "pm_phi1_cosphi2")[s]
    r2 = _values(stars, "pm_phi2")[s] - _interp_track(stars, tracks, "pm_phi2")[s]
    e1, e2, rho = (_values(stars, k)[s] for k in ("pm_phi1_cosphi2_err", "pm_phi2_err", "pm_corr"))
    w1 = _interp_track(stars, tracks, "pm_phi1_cosphi2_width")[s]
    w2 = _interp_track(stars, tracks, "pm_phi2_width")[s]
    c11, c22, c12 = w1**2 + e1**2, w2**2 + e2**2, rho * e1 * e2
    det = c11 * c22 - c12**2
    chi2 = (c22 * r1**2 - 2 * c12 * r1 * r2 + c11 * r2**2) / det
    assert np.mean(chi2) == pytest.approx(2.0, abs=0.15)
    # the correlation is really drawn: faint stars with large positive vs negative pm_corr
    faint = e1 > 0.3
    pos, neg = faint & (rho > 0.15), faint & (rho < -0.15)
    assert np.corrcoef(r1[pos], r2[pos])[0, 1] > 0.05 > -0.05 > np.corrcoef(r1[neg], r2[neg])[0, 1]
    assert np.all((_values(stars, "pm_corr")[s] >= -0.3) & (_values(stars, "pm_corr")[s] <= 0.3))


def test_kroupa_sampler_matches_quadrature():
    def xi(m):
        return np.where(m < 0.5, (m / 0.5) ** -1.3, (m / 0.5) ** -2.3)

    lo, hi = 0.1, 0.85
    total = integrate.quad(xi, lo, hi, points=[0.5])[0]
    for mass in (0.2, 0.5, 0.7):
        q = integrate.quad(xi, lo, mass)[0] / total
        assert _kroupa_inverse_cdf(np.array([q]), lo, hi)[0] == pytest.approx(mass, rel=1e-6)


def test_stream_masses_follow_imf_and_isochrone(default_mock):
    from streammix.isochrone import default_isochrone

    stars, _ = default_mock
    s = _masks(stars)["stream"]
    mass = _values(stars, "true_mass")[s]
    iso = default_isochrone(12.0, -1.5).select(("MS", "SGB", "RGB", "CHEB"))
    assert iso.mass_min <= mass.min() and mass.max() <= iso.mass_max
    # magnitudes are the isochrone's shifted by the true distance modulus (errors are mmag)
    abs_g = iso.absolute_mags(mass, ["gaia_g"])[:, 0]
    resid = _values(stars, "gaia_g")[s] - _values(stars, "true_distmod")[s] - abs_g
    assert np.median(np.abs(resid)) < 0.01
    # above the mass that is visible at every distance of the stream, the masses
    # follow the Kroupa IMF, xi ~ m^-2.3 (m > 0.5 Msun), truncated at the isochrone's end
    grid = np.linspace(0.5, iso.mass_max, 4000)
    always = grid[iso.absolute_mags(grid, ["gaia_g"])[:, 0] < 20.5 - 15.2 - 0.3][0]
    upper = mass[mass > always]
    assert upper.size > 300

    def cdf(m):
        return (m**-1.3 - always**-1.3) / (iso.mass_max**-1.3 - always**-1.3)

    assert stats.kstest(upper, cdf).pvalue > 1e-3


# ---------------------------------------------------------------- errors and missing data


def test_errors_grow_with_magnitude(default_mock):
    stars, _ = default_mock
    g = _values(stars, "gaia_g")
    edges = np.arange(14.0, 20.6, 1.0)
    names = ("parallax_err", "pm_phi1_cosphi2_err", "pm_phi2_err",
             "gaia_g_err", "gaia_bp_err", "gaia_rp_err")  # fmt: skip
    for name in names:
        values = _values(stars, name)
        medians = [np.nanmedian(values[(g >= a) & (g < b)]) for a, b in zip(edges[:-1], edges[1:])]
        assert np.all(np.diff(medians) > 0), (name, medians)
    faint = (g > 19.9) & np.isfinite(_values(stars, "parallax_err"))
    assert 0.3 < np.median(_values(stars, "parallax_err")[faint]) < 0.8  # DR3: ~0.5 mas at G = 20


def test_errors_match_real_gaia_dr3(default_mock, shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)  # non-FITS units in the Gaia schema
        gaia = Table.read(shared_data / "gaia_schema" / "gaia_dr3_1000_random.fits")
    g_real = np.asarray(gaia["phot_g_mean_mag"], float)
    real = {
        "parallax_err": np.asarray(gaia["parallax_error"], float),
        "pm_phi1_cosphi2_err": np.asarray(gaia["pmra_error"], float),
        "gaia_g_err": 1.0857 / np.asarray(gaia["phot_g_mean_flux_over_error"], float),
        "gaia_bp_err": 1.0857 / np.asarray(gaia["phot_bp_mean_flux_over_error"], float),
        "gaia_rp_err": 1.0857 / np.asarray(gaia["phot_rp_mean_flux_over_error"], float),
    }
    stars, _ = default_mock
    g = _values(stars, "gaia_g")
    for lo in (16.0, 17.0, 18.0, 19.0):
        sel_real, sel = (g_real >= lo) & (g_real < lo + 1), (g >= lo) & (g < lo + 1)
        for name, values in real.items():
            ratio = np.nanmedian(_values(stars, name)[sel]) / np.nanmedian(values[sel_real])
            assert 1 / 1.6 < ratio < 1.6, (name, lo, ratio)


def test_missing_data_fractions(default_mock):
    stars, _ = default_mock
    n = len(stars)
    astrometry = ["parallax", "parallax_err", "pm_phi1_cosphi2", "pm_phi1_cosphi2_err",
                  "pm_phi2", "pm_phi2_err", "pm_corr"]  # fmt: skip
    no_ast = np.isnan(_values(stars, "parallax"))
    assert no_ast.sum() == round(0.03 * n)
    for name in astrometry:
        np.testing.assert_array_equal(np.isnan(_values(stars, name)), no_ast, err_msg=name)
    no_phot = np.isnan(_values(stars, "gaia_bp"))
    assert no_phot.sum() == round(0.02 * n)
    for name in ("gaia_bp_err", "gaia_rp", "gaia_rp_err"):
        np.testing.assert_array_equal(np.isnan(_values(stars, name)), no_phot, err_msg=name)
    for name in ("phi1", "phi2", "gaia_g", "gaia_g_err", "true_distmod", "true_mass"):
        assert np.all(np.isfinite(_values(stars, name))), name
    g = _values(stars, "gaia_g")
    bright, faint = g < 19.0, g > 20.0  # mostly faint, like Gaia's 2-parameter solutions
    assert no_ast[faint].mean() > 10 * no_ast[bright].mean()
    assert no_phot[faint].mean() > 3 * no_phot[bright].mean()


def test_no_missing_data_when_fractions_are_zero():
    stars, _ = generate_mock(
        MockConfig(
            n_stream=50,
            n_background=300,
            missing_astrometry_fraction=0,
            missing_photometry_fraction=0,
        )
    )
    assert np.all(np.isfinite(_values(stars, "parallax")))
    assert np.all(np.isfinite(_values(stars, "gaia_bp")))


# ----------------------------------------------------------------------------- the background


def test_background_has_structure(default_mock):
    stars, _ = default_mock
    m = _masks(stars)
    plx = _values(stars, "parallax")
    colour = _values(stars, "gaia_bp") - _values(stars, "gaia_rp")
    assert np.nanmean(plx[m["disc"]]) > np.nanmean(plx[m["halo"]]) + 0.2
    assert np.nanmedian(colour[m["disc"]]) > np.nanmedian(colour[m["halo"]]) + 0.3
    back = m["halo"] | m["disc"]
    phi1, phi2 = _values(stars, "phi1")[back], _values(stars, "phi2")[back]
    # not uniform in phi1 or phi2
    counts1, _ = np.histogram(phi1, np.linspace(-90, 10, 11))
    assert stats.chisquare(counts1).pvalue < 1e-6
    counts2, _ = np.histogram(phi2, np.linspace(-5, 5, 11))
    assert stats.chisquare(counts2).pvalue < 1e-6
    assert counts2.max() < 2 * counts2.min()  # gentle
    # proper motions vary with phi1 (the solar reflex changes across the field)
    pm = _values(stars, "pm_phi1_cosphi2")[back]
    medians = [np.nanmedian(pm[(phi1 >= a) & (phi1 < a + 20)]) for a in range(-90, 10, 20)]
    assert np.ptp(medians) > 1.0, medians
    # and with magnitude / parallax (nearby disc stars move faster on the sky)
    g = _values(stars, "gaia_g")[back]
    pm_total = np.hypot(_values(stars, "pm_phi1_cosphi2"), _values(stars, "pm_phi2"))[back]
    ok = np.isfinite(pm_total)
    assert stats.spearmanr(g[ok], pm_total[ok]).statistic < -0.05
    # halo distances span 5-40 kpc; disc 0.5-3 kpc
    dm = _values(stars, "true_distmod")
    assert 13.4 < dm[m["halo"]].min() and dm[m["halo"]].max() < 18.1
    assert 8.4 < dm[m["disc"]].min() and dm[m["disc"]].max() < 12.4


def test_proper_motions_of_solar_reflex_match_astropy_and_gala():
    gala_coordinates = pytest.importorskip("gala.coordinates")
    rng = np.random.default_rng(5)
    phi1, phi2 = rng.uniform(-90, 10, 20), rng.uniform(-5, 5, 20)
    distance = rng.uniform(0.5, 30, 20)
    v_helio = rng.normal(0, 150, (20, 3))  # Galactic U, V, W (km/s) relative to the Sun
    pm1, pm2 = _proper_motions(phi1, phi2, distance, v_helio)
    frame = gala_coordinates.GD1Koposov10
    where = frame(phi1=phi1 * u.deg, phi2=phi2 * u.deg, distance=distance * u.kpc)
    xyz = where.transform_to(coord.Galactic()).cartesian.without_differentials()
    moving = coord.Galactic(
        xyz.with_differentials(coord.CartesianDifferential(*(v_helio.T * u.km / u.s))),
        representation_type="cartesian",
    ).transform_to(frame())
    np.testing.assert_allclose(pm1, moving.pm_phi1_cosphi2.to_value(u.mas / u.yr), atol=1e-4)
    np.testing.assert_allclose(pm2, moving.pm_phi2.to_value(u.mas / u.yr), atol=1e-4)


# ---------------------------------------------------------------- config, tracks, writing


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"n_stream": -1}, "n_stream"),
        ({"phi1_range": (10.0, -90.0)}, "phi1_range"),
        ({"disc_fraction": 1.5}, "disc_fraction"),
        ({"gaps": ((-40.0, 0.0, 0.5),)}, "gaps"),
        ({"halo_distance_range": (0.0, 40.0)}, "halo_distance_range"),
        ({"stream_profile": "plummer"}, "stream_profile"),
        ({"stream_profile": "student_t", "stream_profile_parameters": {"phi2_dof": 0.5}}, "stream_profile_parameters"),
        ({"stream_profile_parameters": {"phi2_dof": 3.0}}, "stream_profile_parameters"),
    ],
)
def test_bad_config_raises_one_line(kwargs, key):
    with pytest.raises(InputError, match=key) as info:
        MockConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_arguments():
    with pytest.raises(InputError, match="unknown key"):
        MockConfig.from_json('{"n_stars": 3}')
    with pytest.raises(InputError, match="config"):
        generate_mock({"n_stream": 3})
    with pytest.raises(InputError, match="phi1"):
        true_tracks(phi1=[1, 2] * u.mas / u.yr)


def test_subfield_tracks_are_the_same_stream():
    narrow = MockConfig(n_stream=100, phi1_range=(-60.0, -30.0))
    a = true_tracks(narrow, phi1=[-50.0, -35.0] * u.deg)
    b = true_tracks(MockConfig(), phi1=[-50.0, -35.0] * u.deg)
    for name in ("phi2", "pm_phi1_cosphi2", "distmod"):
        np.testing.assert_allclose(_values(a, name), _values(b, name))


def test_write_round_trip_and_refuse_overwrite(small_mock, tmp_path):
    stars, tracks = small_mock
    path, tracks_path = write_mock(stars, tracks, tmp_path / "field.fits")
    assert tracks_path == tmp_path / "field_tracks.ecsv"
    back, back_tracks = QTable.read(path), QTable.read(tracks_path)
    assert back.colnames == stars.colnames
    for name in stars.colnames:
        values = _values(back, name)
        if values.dtype.kind == "S":  # FITS strings come back as bytes by default
            values = np.char.decode(values)
        np.testing.assert_array_equal(values, _values(stars, name), err_msg=name)
        assert getattr(back[name], "unit", None) == getattr(stars[name], "unit", None), name
    np.testing.assert_allclose(_values(back_tracks, "phi2"), _values(tracks, "phi2"))
    assert back_tracks["pm_phi2"].unit == u.mas / u.yr
    meta = {k.lower(): v for k, v in back.meta.items()}
    assert MockConfig.from_json(meta["config"]) == SMALL and meta["seed"] == 1
    with pytest.raises(InputError, match="exists"):
        write_mock(stars, tracks, path)
    # tracks file alone existing also blocks, and nothing is written
    (tmp_path / "other_tracks.ecsv").write_text("x")
    with pytest.raises(InputError, match="other_tracks"):
        write_mock(stars, tracks, tmp_path / "other.fits")
    assert not (tmp_path / "other.fits").exists()
    write_mock(stars, tracks, path, overwrite=True)
    assert len(QTable.read(path)) == len(stars)


def test_write_other_formats(small_mock, tmp_path):
    stars, tracks = small_mock
    path, _ = write_mock(stars, tracks, tmp_path / "field.ecsv")
    back = QTable.read(path)
    np.testing.assert_array_equal(_values(back, "parallax"), _values(stars, "parallax"))
    assert list(back["true_population"]) == list(stars["true_population"])
    assert write_mock(stars, tracks, tmp_path / "plain")[0].suffix == ".fits"


def test_a_spur_beside_the_stream():
    """With ``n_spur`` the mock draws a second stream-like component: exactly
    ``n_spur`` stars, uniform over ``spur_phi1_range``, ``spur_phi2_offset`` above
    the stream's phi2 track with width ``spur_phi2_width`` and the stream's proper
    motions; the stream's own stars are those of the same mock without a spur."""
    config = MockConfig(n_stream=300, n_background=2000, n_spur=400)
    stars, tracks = generate_mock(config, seed=5)
    population = np.asarray(stars["true_population"])
    spur = stars[population == "spur"]
    assert len(spur) == 400 and set(spur["true_component"]) == {"spur"}
    assert set(stars["true_component"]) == {"stream", "spur", "background"}
    phi1 = _values(spur, "phi1")
    lo, hi = config.spur_phi1_range
    assert stats.kstest((phi1 - lo) / (hi - lo), "uniform").pvalue > 1e-3
    across = _values(spur, "phi2") - _interp_track(spur, tracks, "phi2") - config.spur_phi2_offset
    # mean and spread within 4 of their standard errors (0.15 / sqrt(400), 0.15 / sqrt(800))
    assert abs(across.mean()) < 4 * 0.15 / 20 and abs(across.std() - 0.15) < 4 * 0.15 / np.sqrt(800)
    for name in ("pm_phi1_cosphi2", "pm_phi2"):
        residual = _values(spur, name) - _interp_track(spur, tracks, name)
        residual = residual[np.isfinite(residual)]
        assert abs(np.median(residual)) < 0.15, name  # the halo's are several mas/yr off
    plain, _ = generate_mock(config.model_copy(update={"n_spur": 0}), seed=5)
    assert "spur" not in set(plain["true_population"])
    for name in ("phi1", "phi2", "gaia_g", "true_mass"):  # (which stars miss astrometry depends on all of them)
        np.testing.assert_array_equal(
            np.sort(_values(plain, name)[np.asarray(plain["true_population"]) == "stream"]),
            np.sort(_values(stars, name)[population == "stream"]),
        )
    with pytest.raises(InputError, match="spur_phi1_range") as info:
        MockConfig(n_spur=10, spur_phi1_range=(-100.0, -25.0))
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="spur_phi2_width"):
        MockConfig(spur_phi2_width=0.0)
