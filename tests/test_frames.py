"""Stream frames and the Gaia-to-stream transform, checked against gala/astropy."""

from __future__ import annotations

import warnings

import astropy.coordinates as coord
import astropy.units as u
import numpy as np
import pytest
from astropy.table import QTable, Table

from streammix.errors import InputError
from streammix.frames import GD1, PAL5, StreamFrame, gaia_to_stream, get_frame, wrap_phi1

gala_coordinates = pytest.importorskip("gala.coordinates")


def random_sky(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.rad2deg(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    return ra, dec


def angle_difference(a, b) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


@pytest.mark.parametrize(
    ("frame", "gala_frame"),
    [(GD1, "GD1Koposov10"), (PAL5, "Pal5PriceWhelan18")],
)
def test_builtin_frames_match_gala(frame, gala_frame):
    rng = np.random.default_rng(1)
    ra, dec = random_sky(rng, 3000)
    icrs = coord.SkyCoord(ra=ra * u.deg, dec=dec * u.deg)
    expected = icrs.transform_to(getattr(gala_coordinates, gala_frame)())
    phi1, phi2 = frame.to_stream(ra, dec)
    assert np.all(angle_difference(phi1, expected.phi1.deg) < 1e-8)
    assert np.all(np.abs(phi2 - expected.phi2.deg) < 1e-8)
    assert np.all((phi1 > -180.0) & (phi1 <= 180.0))
    # And back, against gala's inverse.
    back = coord.SkyCoord(
        getattr(gala_coordinates, gala_frame)(phi1=phi1 * u.deg, phi2=phi2 * u.deg)
    ).icrs
    ra2, dec2 = frame.to_icrs(phi1, phi2)
    # gala inverts with the transpose of a matrix given to 8-10 digits (not
    # exactly orthogonal: up to 4e-7 deg off for Pal 5); to_icrs inverts exactly.
    assert np.all(angle_difference(ra2, back.ra.deg) * np.cos(np.radians(dec)) < 1e-6)
    assert np.all(np.abs(dec2 - back.dec.deg) < 1e-6)
    assert np.all(angle_difference(ra2, ra) * np.cos(np.radians(dec)) < 1e-10)
    assert np.all(np.abs(dec2 - dec) < 1e-10)


def test_get_frame_aliases_and_unknown():
    for name in ["gd1", "GD-1", "gd 1", "GD1"]:
        assert get_frame(name) is GD1
    for name in ["pal5", "Pal 5", "PAL-5", "pal_5"]:
        assert get_frame(name) is PAL5
    with pytest.raises(InputError, match="'orphan'"):
        get_frame("orphan")


def test_builtin_frames_are_immutable():
    with pytest.raises(ValueError):
        GD1.matrix[0, 0] = 1.0
    with pytest.raises(AttributeError):
        GD1.name = "x"  # type: ignore[misc]


def test_wrap_phi1():
    wrapped = wrap_phi1([-180.0, 180.0, 540.0, -190.0, 0.0])
    assert wrapped.tolist() == [180.0, 180.0, 180.0, 170.0, 0.0]


def test_from_pole_geometry_and_round_trip():
    rng = np.random.default_rng(2)
    pole = coord.SkyCoord(ra=73.0 * u.deg, dec=31.0 * u.deg)
    origin = coord.SkyCoord(ra=150.0 * u.deg, dec=-12.0 * u.deg)
    frame = StreamFrame.from_pole(pole, origin, name="test")
    ra, dec = random_sky(rng, 500)
    phi1, phi2 = frame.to_stream(ra, dec)
    # phi2 is 90 deg minus the angular distance to the pole (astropy separation).
    sep = coord.SkyCoord(ra=ra * u.deg, dec=dec * u.deg).separation(pole).deg
    assert np.allclose(phi2, 90.0 - sep, atol=1e-9)
    ra2, dec2 = frame.to_icrs(phi1, phi2)
    assert np.all(angle_difference(ra2, ra) < 1e-9)
    assert np.allclose(dec2, dec, atol=1e-9)
    # The origin is on phi1 = 0 (projected along its meridian from the pole).
    o_phi1, o_phi2 = frame.to_stream(origin.ra.deg, origin.dec.deg)
    assert abs(o_phi1) < 1e-9
    assert np.isclose(o_phi2, 90.0 - origin.separation(pole).deg, atol=1e-9)
    # The pole itself is at phi2 = +90.
    assert np.isclose(frame.to_stream(pole.ra.deg, pole.dec.deg)[1], 90.0, atol=1e-7)


def test_from_endpoints_puts_ends_on_the_equator_in_order():
    start = coord.SkyCoord(ra=140.0 * u.deg, dec=30.0 * u.deg)
    end = coord.SkyCoord(ra=220.0 * u.deg, dec=60.0 * u.deg)
    frame = StreamFrame.from_endpoints(start, end)
    half = 0.5 * start.separation(end).deg
    s_phi1, s_phi2 = frame.to_stream(start.ra.deg, start.dec.deg)
    e_phi1, e_phi2 = frame.to_stream(end.ra.deg, end.dec.deg)
    assert np.isclose(s_phi1, -half, atol=1e-9) and np.isclose(e_phi1, half, atol=1e-9)
    assert abs(s_phi2) < 1e-9 and abs(e_phi2) < 1e-9
    # Points along the great circle from start to end have increasing phi1.
    mid = frame.to_skycoord(np.linspace(-half, half, 7), np.zeros(7))
    along = start.separation(mid).deg
    assert np.all(np.diff(along) > 0)
    # Swapping the ends reverses the direction.
    reverse = StreamFrame.from_endpoints(end, start)
    assert np.isclose(reverse.to_stream(start.ra.deg, start.dec.deg)[0], half, atol=1e-9)
    with pytest.raises(InputError, match="start, end"):
        StreamFrame.from_endpoints(start, start)


def test_from_track_recovers_a_great_circle():
    rng = np.random.default_rng(3)
    truth = StreamFrame.from_pole(
        coord.SkyCoord(ra=34.6 * u.deg, dec=29.7 * u.deg),
        coord.SkyCoord(ra=200.0 * u.deg, dec=59.0 * u.deg),
    )
    phi1_true = np.linspace(-70.0, 30.0, 60)
    ra, dec = truth.to_icrs(phi1_true, rng.normal(0.0, 0.05, phi1_true.size))
    frame = StreamFrame.from_track(ra, dec)
    # Same pole (third row) to within the scatter; phi1 increases along the track.
    assert np.degrees(np.arccos(np.clip(frame.matrix[2] @ truth.matrix[2], -1, 1))) < 0.1
    phi1, phi2 = frame.to_stream(ra, dec)
    assert np.all(np.diff(phi1) > 0)
    assert np.isclose(0.5 * (phi1.min() + phi1.max()), 0.0, atol=1e-9)
    assert np.isclose(phi1.max() - phi1.min(), 100.0, atol=0.2)
    assert np.max(np.abs(phi2)) < 0.3
    reversed_frame = StreamFrame.from_track(ra[::-1], dec[::-1])
    assert np.all(np.diff(reversed_frame.to_stream(ra[::-1], dec[::-1])[0]) > 0)


@pytest.mark.parametrize(
    ("frame", "gala_frame"),
    [(GD1, "GD1Koposov10"), (PAL5, "Pal5PriceWhelan18")],
)
def test_proper_motions_match_astropy(frame, gala_frame):
    rng = np.random.default_rng(4)
    ra, dec = random_sky(rng, 1000)
    dec = np.clip(dec, -89.0, 89.0)
    pmra = rng.normal(0.0, 10.0, ra.size)
    pmdec = rng.normal(0.0, 10.0, ra.size)
    icrs = coord.SkyCoord(
        ra=ra * u.deg, dec=dec * u.deg,
        pm_ra_cosdec=pmra * u.mas / u.yr, pm_dec=pmdec * u.mas / u.yr,
    )
    expected = icrs.transform_to(getattr(gala_coordinates, gala_frame)())
    pm1, pm2, cov = frame.transform_pm(ra, dec, pmra, pmdec)
    assert cov is None
    # Stay clear of the frame's own poles, where phi1 is ill-defined.
    ok = np.abs(expected.phi2.deg) < 89.0
    assert np.allclose(pm1[ok], expected.pm_phi1_cosphi2.to_value(u.mas / u.yr)[ok], atol=1e-7)
    assert np.allclose(pm2[ok], expected.pm_phi2.to_value(u.mas / u.yr)[ok], atol=1e-7)


def test_pm_covariance_matches_monte_carlo_by_finite_differences():
    """Sample correlated proper motions, move the star on the sky with astropy,
    measure the motion in gala's GD-1 frame by central differences, and compare
    the sample covariance with the propagated one."""
    rng = np.random.default_rng(5)
    ra0, dec0 = 160.0, 45.0
    mean = np.array([-5.0, -12.0])
    cov = np.array([[0.5, -0.35], [-0.35, 0.9]])
    samples = rng.multivariate_normal(mean, cov, size=20000)
    dt = 100.0  # yr: displacements of ~1 arcsec
    pa = np.arctan2(samples[:, 0], samples[:, 1]) * u.rad
    step = np.hypot(samples[:, 0], samples[:, 1]) * dt * u.mas
    centre = coord.SkyCoord(ra=ra0 * u.deg, dec=dec0 * u.deg)
    gd1 = gala_coordinates.GD1Koposov10()
    ahead = centre.directional_offset_by(pa, step).transform_to(gd1)
    behind = centre.directional_offset_by(pa, -step).transform_to(gd1)
    here = centre.transform_to(gd1)
    dphi1 = ((ahead.phi1 - behind.phi1).wrap_at(180 * u.deg)).to_value(u.mas)
    dphi2 = (ahead.phi2 - behind.phi2).to_value(u.mas)
    pm_samples = np.stack([dphi1 * np.cos(here.phi2.rad), dphi2], -1) / (2 * dt)
    sample_cov = np.cov(pm_samples.T)

    pm1, pm2, cov_stream = GD1.transform_pm(ra0, dec0, mean[0], mean[1], cov)
    assert np.allclose([pm1, pm2], pm_samples.mean(0), atol=0.03)
    # 20000 samples: covariance entries to ~2% of the scale.
    assert np.allclose(cov_stream, sample_cov, atol=0.03)
    # The transform mixes the components: the correlation really changes.
    assert abs(cov_stream[0, 1] - cov[0, 1]) > 0.1


def test_pm_covariance_is_rotated_per_star():
    rng = np.random.default_rng(6)
    ra, dec = random_sky(rng, 50)
    a = rng.normal(size=(50, 2, 2))
    cov = a @ np.swapaxes(a, -1, -2)
    _, _, cov_stream = PAL5.transform_pm(ra, dec, np.zeros(50), np.zeros(50), cov)
    # Rotation invariants: trace and determinant are preserved.
    assert np.allclose(np.trace(cov_stream, axis1=-2, axis2=-1), np.trace(cov, axis1=-2, axis2=-1))
    assert np.allclose(np.linalg.det(cov_stream), np.linalg.det(cov))
    with pytest.raises(InputError, match="cov"):
        PAL5.transform_pm(ra, dec, 0.0, 0.0, np.ones((50, 3)))


def test_skycoord_edges():
    coords = GD1.to_skycoord(np.array([-40.0, 0.0, 10.0]) * u.deg, [1.0, -2.0, 0.5])
    gala_coords = coords.transform_to(gala_coordinates.GD1Koposov10())
    assert np.allclose(gala_coords.phi1.deg, [-40.0, 0.0, 10.0], atol=1e-8)
    phi1, phi2 = GD1.from_skycoord(coords.galactic)
    assert phi1.unit == u.deg and np.allclose(phi2.value, [1.0, -2.0, 0.5], atol=1e-8)


def read_gaia(shared_data) -> Table:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        return Table.read(shared_data / "gaia_schema" / "gaia_dr3_1000_random.fits")


def test_gaia_to_stream_on_real_gaia_rows(shared_data):
    gaia = read_gaia(shared_data)
    out = gaia_to_stream(gaia, PAL5)
    assert isinstance(out, QTable) and len(out) == len(gaia)
    assert np.array_equal(out["source_id"], gaia["source_id"])
    for name, unit in [
        ("phi1", u.deg), ("phi2", u.deg), ("phi2_err", u.deg), ("parallax", u.mas),
        ("parallax_err", u.mas), ("pm_phi1_cosphi2", u.mas / u.yr), ("pm_phi2", u.mas / u.yr),
        ("pm_phi1_cosphi2_err", u.mas / u.yr), ("pm_phi2_err", u.mas / u.yr),
    ]:
        assert out[name].unit == unit, name

    def value(name):
        return np.ma.filled(np.ma.asarray(gaia[name], dtype=float), np.nan)

    has_pm = np.isfinite(value("pmra")) & np.isfinite(value("pmdec"))
    assert has_pm.sum() > 500
    for name in ["phi1", "phi2", "phi2_err"]:
        assert np.all(np.isfinite(out[name]))
    for name in ["pm_phi1_cosphi2", "pm_phi2", "pm_phi1_cosphi2_err", "pm_phi2_err", "pm_corr"]:
        assert np.all(np.isfinite(out[name][has_pm])), name
    assert np.all(np.abs(out["pm_corr"][has_pm]) <= 1.0)

    # Positions and proper motions agree with gala's frame (via astropy).
    icrs = coord.SkyCoord(
        ra=value("ra")[has_pm] * u.deg, dec=value("dec")[has_pm] * u.deg,
        pm_ra_cosdec=value("pmra")[has_pm] * u.mas / u.yr,
        pm_dec=value("pmdec")[has_pm] * u.mas / u.yr,
    ).transform_to(gala_coordinates.Pal5PriceWhelan18())
    assert np.all(angle_difference(out["phi1"][has_pm].value, icrs.phi1.deg) < 1e-8)
    assert np.allclose(out["pm_phi2"][has_pm].value, icrs.pm_phi2.to_value(u.mas / u.yr), atol=1e-7)

    # Rotation invariants of the Gaia (pmra, pmdec) covariance with its correlation.
    e1, e2, rho = value("pmra_error"), value("pmdec_error"), value("pmra_pmdec_corr")
    s1, s2 = out["pm_phi1_cosphi2_err"].value, out["pm_phi2_err"].value
    r = out["pm_corr"].value
    assert np.allclose((s1**2 + s2**2)[has_pm], (e1**2 + e2**2)[has_pm])
    assert np.allclose(
        (s1**2 * s2**2 * (1 - r**2))[has_pm], (e1**2 * e2**2 * (1 - rho**2))[has_pm], rtol=1e-6
    )
    # phi2_err from ra/dec errors lies between the principal axes of their ellipse.
    a, d, c = value("ra_error"), value("dec_error"), value("ra_dec_corr")
    trace, det = a**2 + d**2, a**2 * d**2 * (1 - c**2)
    lam_max = 0.5 * (trace + np.sqrt(trace**2 - 4 * det))
    lam_min = det / lam_max
    phi2_err_mas = out["phi2_err"].to_value(u.mas)
    assert np.all(phi2_err_mas**2 <= lam_max * (1 + 1e-6))
    assert np.all(phi2_err_mas**2 >= lam_min * (1 - 1e-6))


def test_reflex_correction_matches_gala(shared_data):
    gaia = read_gaia(shared_data)
    stars = gaia[np.isfinite(gaia["pmra"]) & (gaia["parallax"] > 0.5)][:6]
    assert len(stars) >= 3
    gd1 = gala_coordinates.GD1Koposov10()

    def gala_reflex(distance):
        c = coord.SkyCoord(
            ra=stars["ra"], dec=stars["dec"], distance=distance,
            pm_ra_cosdec=stars["pmra"], pm_dec=stars["pmdec"], radial_velocity=0 * u.km / u.s,
        )
        try:
            return gala_coordinates.reflex_correct(c).transform_to(gd1)
        except IndexError:
            # gala's reflex_correct trips over astropy 8 (adding v_sun returns a
            # representation); the same steps, with the sum built explicitly.
            frame = coord.Galactocentric()
            observed = c.transform_to(frame)
            v_sun = frame.galcen_v_sun  # a representation in astropy 8
            v_sun = v_sun.xyz if hasattr(v_sun, "xyz") else v_sun.d_xyz
            velocity = observed.velocity.d_xyz + v_sun[:, None]
            rep = observed.cartesian.without_differentials().with_differentials(
                coord.CartesianDifferential(velocity)
            )
            return coord.SkyCoord(frame.realize_frame(rep).transform_to(c.frame)).transform_to(gd1)

    for reflex_distance, distance in [
        (7.5 * u.kpc, 7.5 * u.kpc),
        ("parallax", (1.0 / np.asarray(stars["parallax"])) * u.kpc),
        (np.linspace(2.0, 12.0, len(stars)) * u.kpc, np.linspace(2.0, 12.0, len(stars)) * u.kpc),
    ]:
        out = gaia_to_stream(stars, GD1, reflex_distance=reflex_distance)
        expected = gala_reflex(distance)
        assert np.allclose(
            out["pm_phi1_cosphi2"].value, expected.pm_phi1_cosphi2.to_value(u.mas / u.yr), atol=1e-6
        )
        assert np.allclose(out["pm_phi2"].value, expected.pm_phi2.to_value(u.mas / u.yr), atol=1e-6)
    # The correction is not negligible at these distances.
    observed = gaia_to_stream(stars, GD1)
    corrected = gaia_to_stream(stars, GD1, reflex_distance=7.5 * u.kpc)
    shift = np.hypot(
        observed["pm_phi2"].value - corrected["pm_phi2"].value,
        observed["pm_phi1_cosphi2"].value - corrected["pm_phi1_cosphi2"].value,
    )
    assert np.all(shift > 1)


def test_reflex_parallax_nonpositive_gives_nan():
    t = Table({"ra": [200.0, 200.0], "dec": [59.0, 59.0], "pmra": [-5.0, -5.0],
               "pmdec": [-10.0, -10.0], "parallax": [0.2, -0.1]})
    out = gaia_to_stream(t, GD1, reflex_distance="parallax")
    assert np.isfinite(out["pm_phi2"][0]) and np.isnan(out["pm_phi2"][1])
    with pytest.raises(InputError, match="reflex_distance"):
        gaia_to_stream(t, GD1, reflex_distance="far")
    with pytest.raises(InputError, match="reflex_distance"):
        gaia_to_stream(t, GD1, reflex_distance=[1.0, 2.0, 3.0] * u.kpc)


def test_gaia_to_stream_minimal_masked_and_bad_columns():
    t = Table({"ra": [10.0, 20.0], "dec": [5.0, -5.0]})
    out = gaia_to_stream(t, GD1)
    assert np.all(np.isnan(out["pm_phi2"])) and np.all(np.isnan(out["parallax"]))
    assert np.all(out["phi2_err"] == 0) and np.all(out["pm_corr"] == 0)
    assert "source_id" not in out.colnames
    with pytest.raises(InputError, match="'dec'"):
        gaia_to_stream(Table({"ra": [1.0]}), GD1)
    masked = Table({"ra": [10.0, 20.0], "dec": [5.0, -5.0]}, masked=True)
    masked["pmra"] = np.ma.MaskedArray([1.0, 2.0], mask=[False, True])
    masked["pmdec"] = np.ma.MaskedArray([1.0, 2.0], mask=[False, True])
    out = gaia_to_stream(masked, GD1)
    assert np.isfinite(out["pm_phi2"][0]) and np.isnan(out["pm_phi2"][1])
    # Units on columns are honoured: ra/dec in radians, pm in arcsec/yr.
    q = QTable({"ra": [np.pi] * u.rad, "dec": [0.5] * u.rad,
                "pmra": [0.001] * u.arcsec / u.yr, "pmdec": [0.0] * u.arcsec / u.yr})
    ref = gaia_to_stream(Table({"ra": [180.0], "dec": [np.degrees(0.5)], "pmra": [1.0],
                                "pmdec": [0.0]}), GD1)
    out = gaia_to_stream(q, GD1)
    assert np.isclose(out["phi1"][0], ref["phi1"][0])
    assert np.isclose(out["pm_phi2"][0], ref["pm_phi2"][0])
    bad = Table({"ra": [1.0] * u.km, "dec": [1.0]})
    with pytest.raises(InputError, match="'ra'"):
        gaia_to_stream(bad, GD1)


def test_gd1_phi_columns_in_real_catalog(shared_data):
    gd1 = Table.read(shared_data / "gd1_dr2" / "gd1_pm_box_dr2_ps1.fits")
    phi1, phi2 = GD1.to_stream(np.asarray(gd1["ra"]), np.asarray(gd1["dec"]))
    assert np.max(angle_difference(phi1, gd1["phi1"])) < 1e-7
    assert np.max(np.abs(phi2 - gd1["phi2"])) < 1e-7
    assert -70.5 < phi1.min() and phi1.max() < -19.5
