"""Tests of streammix.data: the validated star table and its readers."""

from __future__ import annotations

import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import MaskedColumn, QTable, Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streammix.data import ASTROMETRIC, ColumnMap, StarTable, read_stars, read_table
from streammix.errors import InputError

PS1 = ColumnMap(bands={"ps1_g": "g_mean_psf_mag", "ps1_i": "i_mean_psf_mag"}, sentinels=[1e20])
FLOATS = (
    "phi1",
    "phi2",
    "phi2_err",
    "parallax",
    "parallax_err",
    "pm_phi1_cosphi2",
    "pm_phi1_cosphi2_err",
    "pm_phi2",
    "pm_phi2_err",
    "pm_corr",
)
# Conversion factors written out by hand (not taken from astropy).
DEG_PER = {"deg": 1.0, "rad": 180.0 / np.pi, "arcmin": 1 / 60, "arcsec": 1 / 3600, "mas": 1 / 3.6e6}
MASYR_PER = {"mas / yr": 1.0, "deg / yr": 3.6e6, "arcsec / yr": 1e3, "uas / yr": 1e-3, "mas / d": 365.25}


def assert_same_stars(a: StarTable, b: StarTable) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.source_id, b.source_id)
    for name in FLOATS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0, err_msg=name)
    assert a.bands == b.bands
    for band in a.bands:
        np.testing.assert_allclose(a.mags[band], b.mags[band], rtol=1e-12, err_msg=band)
        np.testing.assert_allclose(a.mag_errs[band], b.mag_errs[band], rtol=1e-12, err_msg=band)
    assert sorted(a.extinction) == sorted(b.extinction)
    for band in a.extinction:
        np.testing.assert_allclose(a.extinction[band], b.extinction[band], rtol=1e-12)


def random_stars(n: int = 40, seed: int = 0) -> StarTable:
    """Stars with every kind of column, some values missing."""
    rng = np.random.default_rng(seed)

    def holes(x: np.ndarray, fraction: float = 0.2) -> np.ndarray:
        return np.where(rng.random(len(x)) < fraction, np.nan, x)

    return StarTable(
        phi1=rng.uniform(-60, -20, n),
        phi2=holes(rng.normal(0, 1, n)),
        phi2_err=rng.uniform(0, 0.01, n),
        parallax=holes(rng.normal(0.2, 0.3, n)),
        parallax_err=rng.uniform(0.05, 0.5, n),
        pm_phi1_cosphi2=holes(rng.normal(-10, 2, n)),
        pm_phi1_cosphi2_err=rng.uniform(0.05, 0.5, n),
        pm_phi2=holes(rng.normal(-3, 2, n)),
        pm_phi2_err=rng.uniform(0.05, 0.5, n),
        pm_corr=rng.uniform(-0.9, 0.9, n),
        mags={"g": holes(rng.uniform(15, 22, n)), "r": holes(rng.uniform(15, 22, n))},
        mag_errs={"g": rng.uniform(0, 0.1, n), "r": rng.uniform(0, 0.1, n)},
        extinction={"g": rng.uniform(0, 0.3, n)},
        source_id=rng.permutation(10**15 + np.arange(n)).astype(np.int64),
        extra=Table({"flag": rng.integers(0, 2, n)}),
    )


def gaia_like(n: int = 5) -> Table:
    return Table(
        {
            "source_id": np.arange(n) + 100,
            "phi1": np.linspace(-50, -40, n),
            "phi2": np.linspace(-1, 1, n),
            "parallax": np.full(n, 0.1),
            "parallax_error": np.full(n, 0.05),
            "pm_phi1": np.full(n, -10.0),
            "pm_phi2": np.full(n, -2.0),
        }
    )


# ------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def gd1_raw(shared_data: Path) -> tuple[Path, fits.FITS_rec]:
    path = shared_data / "gd1_dr2" / "gd1_pm_box_dr2_ps1.fits"
    with fits.open(path) as hdul:
        return path, hdul[1].data.copy()


@pytest.fixture(scope="module")
def gd1_stars(gd1_raw) -> StarTable:
    return read_stars(gd1_raw[0], PS1)


def test_gd1_fits(gd1_raw, gd1_stars: StarTable) -> None:
    _, raw = gd1_raw
    stars = gd1_stars
    assert len(stars) == 13976
    g, i = np.asarray(raw["g_mean_psf_mag"], float), np.asarray(raw["i_mean_psf_mag"], float)
    # README: Pan-STARRS photometry (a value, possibly the 1e20 sentinel) for 7,189 stars.
    assert np.count_nonzero(np.isfinite(g)) == 7189
    g_ok, i_ok = np.isfinite(g) & (g < 1e19), np.isfinite(i) & (i < 1e19)
    observed = stars.observed
    np.testing.assert_array_equal(observed["ps1_g"], g_ok)
    np.testing.assert_array_equal(observed["ps1_i"], i_ok)
    assert 7000 < observed["ps1_g"].sum() < 7189  # sentinels removed, not counted as photometry
    np.testing.assert_array_equal(stars.mags["ps1_g"][g_ok], g[g_ok])
    assert np.isnan(stars.mags["ps1_g"][~g_ok]).all()
    assert np.nanmax(stars.mags["ps1_i"]) < 30
    np.testing.assert_array_equal(stars.source_id, raw["source_id"])
    np.testing.assert_array_equal(stars.phi1, raw["phi1"])
    np.testing.assert_array_equal(stars.pm_phi1_cosphi2, raw["pm_phi1"])
    np.testing.assert_array_equal(stars.parallax_err, raw["parallax_error"])
    assert (stars.parallax_err > 0).all()
    assert (stars.pm_phi1_cosphi2_err == 0).all() and (stars.pm_phi2_err == 0).all()
    assert (stars.pm_cov() == 0).all()
    assert (stars.mag_errs["ps1_g"] == 0).all()
    for name in ASTROMETRIC:
        assert observed[name].all()
    assert stars.meta["source"].startswith("file '") and "ORIGIN" in stars.meta


def test_gd1_pandas_hdf5_matches_fits(shared_data: Path, gd1_stars: StarTable) -> None:
    from_hdf5 = read_stars(shared_data / "gd1_dr2" / "gd1_merged.hdf5", PS1)
    assert_same_stars(from_hdf5, gd1_stars)
    for key, value in from_hdf5.observed.items():
        np.testing.assert_array_equal(value, gd1_stars.observed[key])


def test_gaia_dr3_sample(shared_data: Path) -> None:
    path = shared_data / "gaia_schema" / "gaia_dr3_1000_random.fits"
    raw = read_table(path)
    stars = StarTable.from_gaia(raw, "GD-1", {"bands": {"G": "phot_g_mean_mag"}, "keep": ["ra", "dec"]})
    assert len(stars) == 1000
    np.testing.assert_array_equal(stars.source_id, raw["source_id"])
    cov = stars.pm_cov()
    assert cov.shape == (1000, 2, 2)
    np.testing.assert_array_equal(cov, np.swapaxes(cov, 1, 2))
    has_pm = stars.observed["pm_phi1_cosphi2"] & stars.observed["pm_phi2"]
    raw_has_pm = np.isfinite(np.ma.filled(raw["pmra"].astype(float), np.nan)) & np.isfinite(
        np.ma.filled(raw["pmdec"].astype(float), np.nan)
    )
    np.testing.assert_array_equal(has_pm, raw_has_pm)  # this sample: all 1000 (5- and 6-parameter solutions)
    assert (np.linalg.eigvalsh(cov[has_pm]) >= -1e-9).all()
    corr = stars.pm_corr[np.isfinite(stars.pm_corr)]
    assert (np.abs(corr) <= 1).all()
    # A rotation on the sky keeps the proper-motion size and the covariance's trace and determinant.
    pmra = np.ma.filled(raw["pmra"].astype(float), np.nan)[has_pm]
    pmdec = np.ma.filled(raw["pmdec"].astype(float), np.nan)[has_pm]
    sa = np.asarray(raw["pmra_error"], float)[has_pm]
    sd = np.asarray(raw["pmdec_error"], float)[has_pm]
    rho = np.asarray(raw["pmra_pmdec_corr"], float)[has_pm]
    np.testing.assert_allclose(
        np.hypot(stars.pm_phi1_cosphi2, stars.pm_phi2)[has_pm], np.hypot(pmra, pmdec), rtol=1e-6
    )
    np.testing.assert_allclose(np.trace(cov[has_pm], axis1=1, axis2=2), sa**2 + sd**2, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.det(cov[has_pm]), sa**2 * sd**2 * (1 - rho**2), rtol=1e-4)
    g = np.ma.filled(raw["phot_g_mean_mag"].astype(float), np.nan)
    np.testing.assert_array_equal(stars.observed["G"], np.isfinite(g))
    assert stars.extra.colnames == ["ra", "dec"]
    same = read_stars(path, {"bands": {"G": "phot_g_mean_mag"}}, gaia_frame="GD1")
    np.testing.assert_array_equal(same.pm_phi2, stars.pm_phi2)


# ---------------------------------------------------------------- round trips


def _write_astropy_hdf5(table: Table, path: Path) -> None:
    """Write ``table`` in astropy's HDF5 layout: with astropy when h5py exists, else by hand
    (a compound dataset plus its ``<name>.__table_column_meta__`` YAML header)."""
    try:
        import h5py  # noqa: F401
    except ImportError:
        import tables
        from astropy.table import meta

        plain = Table(table)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tables.NaturalNameWarning)
            with tables.open_file(str(path), "w") as h5:
                h5.create_table("/", "data", obj=plain.as_array())
                header = [line.encode() for line in meta.get_yaml_from_table(plain)]
                h5.create_array("/", "data.__table_column_meta__", obj=np.array(header))
    else:  # pragma: no cover - h5py is not a dependency
        table.write(path, format="hdf5", path="data", serialize_meta=True)


@pytest.mark.parametrize("suffix", ["fits", "ecsv", "csv", "parquet", "vot", "astropy.hdf5", "pandas.h5"])
def test_round_trip_through_files(tmp_path: Path, suffix: str) -> None:
    stars = random_stars()
    table = stars.to_table()
    path = tmp_path / f"stars.{suffix}"
    if suffix == "astropy.hdf5":
        _write_astropy_hdf5(table, path)
    elif suffix == "pandas.h5":
        table.to_pandas().to_hdf(path, key="stars")
    elif suffix == "vot":
        table.write(path, format="votable")
    else:
        table.write(path)
    back = read_stars(path, ColumnMap(bands=["g", "r"], keep=["flag"]))
    assert_same_stars(back, stars)
    np.testing.assert_array_equal(back.extra["flag"], stars.extra["flag"])
    for key, value in back.observed.items():
        np.testing.assert_array_equal(value, stars.observed[key])


def test_round_trip_pandas_and_qtable_units() -> None:
    stars = random_stars(seed=3)
    frame = stars.to_table().to_pandas()
    frame["phi2"] = frame["phi2"].astype("Float64")  # nullable: NaN becomes pd.NA
    frame.loc[0, "phi2"] = pd.NA
    frame = frame.set_index("source_id")
    back = StarTable.from_table(frame, {"bands": ["g", "r"]})
    np.testing.assert_array_equal(back.source_id, stars.source_id)
    assert np.isnan(back.phi2[0]) and not back.observed["phi2"][0]
    np.testing.assert_allclose(back.phi2[1:], stars.phi2[1:])
    np.testing.assert_allclose(back.pm_corr, stars.pm_corr)

    q = QTable(
        {
            "phi1": stars.phi1 * np.pi / 180 * u.rad,
            "phi2": stars.phi2 * 60 * u.arcmin,
            "parallax": stars.parallax / 1000 * u.arcsec,
            "pm_phi1": stars.pm_phi1_cosphi2 / 3.6e6 * u.deg / u.yr,
        }
    )
    back = StarTable.from_table(q)
    np.testing.assert_allclose(back.phi1, stars.phi1, rtol=1e-13)
    np.testing.assert_allclose(back.phi2, stars.phi2, rtol=1e-13)
    np.testing.assert_allclose(back.parallax, stars.parallax, rtol=1e-13)
    np.testing.assert_allclose(back.pm_phi1_cosphi2, stars.pm_phi1_cosphi2, rtol=1e-13)
    assert back.to_table()["phi1"].unit == u.deg


# ------------------------------------------------------------------ behaviour


def test_getitem_keeps_everything_aligned() -> None:
    stars = random_stars(n=30, seed=5)
    order = {sid: k for k, sid in enumerate(stars.source_id)}
    rng = np.random.default_rng(0)
    for index in (rng.random(30) < 0.5, rng.permutation(30)[:11], slice(3, 20, 4), 7):
        sub = stars[index]
        rows = np.array([order[sid] for sid in sub.source_id])
        for name in FLOATS:
            np.testing.assert_array_equal(getattr(sub, name), getattr(stars, name)[rows])
        for band in stars.bands:
            np.testing.assert_array_equal(sub.mags[band], stars.mags[band][rows])
            np.testing.assert_array_equal(sub.mag_errs[band], stars.mag_errs[band][rows])
        np.testing.assert_array_equal(sub.extinction["g"], stars.extinction["g"][rows])
        np.testing.assert_array_equal(sub.extra["flag"], stars.extra["flag"][rows])
        np.testing.assert_array_equal(sub.pm_cov(), stars.pm_cov()[rows])
    assert len(stars[np.zeros(30, bool)]) == 0
    with pytest.raises(IndexError):
        stars[np.ones(29, bool)]


def test_pm_cov_matches_errors_and_correlation() -> None:
    stars = random_stars(n=50, seed=2)
    d = np.stack([stars.pm_phi1_cosphi2_err, stars.pm_phi2_err], axis=1)
    r = np.ones((50, 2, 2))
    r[:, 0, 1] = r[:, 1, 0] = stars.pm_corr
    expected = d[:, :, None] * r * d[:, None, :]
    np.testing.assert_allclose(stars.pm_cov(), expected, rtol=1e-14)
    # the correlation is recovered from the covariance
    cov = stars.pm_cov()
    np.testing.assert_allclose(cov[:, 0, 1] / np.sqrt(cov[:, 0, 0] * cov[:, 1, 1]), stars.pm_corr)


def test_pm_errors_modelled_from_parallax_errors() -> None:
    """A catalogue without proper-motion errors (the GD-1 DR2 file): each
    component's error is the factor times the parallax error, in mas/yr even
    when the parallax error comes in another unit; giving both is an error."""
    table = Table({"phi1": [0.0, 1.0, 2.0], "parallax": [0.1, 0.2, 0.3], "parallax_error": [100.0, 500.0, np.nan],
                   "pm_phi1": [-7.0, -7.1, -7.2], "pm_phi2": [-1.0, -1.1, -1.2]})
    table["parallax"].unit, table["parallax_error"].unit = u.mas, u.uas
    stars = StarTable.from_table(table, ColumnMap(pm_err_per_parallax_err=1.7))
    np.testing.assert_allclose(stars.pm_phi1_cosphi2_err, [0.17, 0.85, 0.0])
    np.testing.assert_allclose(stars.pm_phi2_err, [0.17, 0.85, 0.0])
    assert stars.observed["pm_phi2"].tolist() == [True, True, True]
    table["pm_phi2_err"] = [0.1, 0.1, 0.1]
    with pytest.raises(InputError, match=r"columns.pm_err_per_parallax_err.*already gives \['pm_phi2_err'\]"):
        StarTable.from_table(table, ColumnMap(pm_err_per_parallax_err=1.7))
    del table["pm_phi2_err"], table["parallax_error"]
    with pytest.raises(InputError, match="columns.pm_err_per_parallax_err.*needs parallax errors"):
        StarTable.from_table(table, ColumnMap(pm_err_per_parallax_err=1.7))
    with pytest.raises(InputError, match="pm_err_per_parallax_err"):
        ColumnMap.from_dict({"pm_err_per_parallax_err": -1.0}, source="data.columns")


def test_external_parallax_errors() -> None:
    """Gaia DR2's external parallax errors from the formal ones (1.08 and 0.043 mas in
    quadrature), in the column's unit; the modelled proper-motion errors follow the
    external parallax error; NaN stays NaN; without parallax errors it is an error."""
    table = Table({"phi1": [0.0, 1.0, 2.0], "parallax": [0.1, 0.2, 0.3], "parallax_error": [50.0, 500.0, np.nan],
                   "pm_phi1": [-7.0, -7.1, -7.2], "pm_phi2": [-1.0, -1.1, -1.2]})
    table["parallax"].unit, table["parallax_error"].unit = u.mas, u.uas
    external = {"factor": 1.08, "floor": 0.043}
    cmap = ColumnMap.from_dict({"parallax_err_external": external, "pm_err_per_parallax_err": 1.7})
    stars = StarTable.from_table(table, cmap)
    expected = [np.hypot(1.08 * 0.05, 0.043), np.hypot(1.08 * 0.5, 0.043)]
    np.testing.assert_allclose(stars.parallax_err[:2], expected)
    assert np.isnan(stars.parallax_err[2])
    np.testing.assert_allclose(stars.pm_phi2_err, [1.7 * e for e in expected] + [0.0])
    formal = StarTable.from_table(table, ColumnMap())
    np.testing.assert_allclose(formal.parallax_err[:2], [0.05, 0.5])
    del table["parallax_error"]
    with pytest.raises(InputError, match="columns.parallax_err_external.*needs parallax errors"):
        StarTable.from_table(table, ColumnMap.from_dict({"parallax_err_external": external}))
    gaia = Table({"ra": [200.0], "dec": [59.0], "parallax": [0.1], "pmra": [-8.0], "pmdec": [-4.0]})
    with pytest.raises(InputError, match="columns.parallax_err_external.*needs parallax errors"):
        StarTable.from_gaia(gaia, "GD-1", {"parallax_err_external": external})  # no parallax_error: not floored silently
    gaia["parallax_error"] = [0.05]
    np.testing.assert_allclose(StarTable.from_gaia(gaia, "GD-1", {"parallax_err_external": external}).parallax_err,
                               [np.hypot(1.08 * 0.05, 0.043)])
    for bad in ({"factor": 0.0}, {"floor": -0.01}, {"scale": 1.1}):
        with pytest.raises(InputError, match="data.columns.parallax_err_external"):
            ColumnMap.from_dict({"parallax_err_external": bad}, source="data.columns")


def test_quantities_read_without_errors_are_recorded() -> None:
    """A parallax, proper motion or band read with values but neither errors nor an error
    model is taken as exact, and named in ``meta["without_errors"]``; one with errors, an
    error model, or no values (absent, skipped or all missing) is not; ``without_errors``
    keeps those a model uses."""
    from streammix.data import without_errors

    table = Table({
        "phi1": [1.0, 2.0], "phi2": [0.1, 0.2], "parallax": [0.2, 0.3], "parallax_err": [0.1, 0.1],
        "pm_phi1_cosphi2": [-5.0, -6.0], "pm_phi2": [-1.0, -2.0], "g": [19.0, 20.0], "i": [18.0, 19.5],
        "i_err": [0.02, 0.03], "r": [np.nan, np.nan],
    })  # fmt: skip
    stars = StarTable.from_table(table, {"bands": ["g", "i"]})
    assert stars.meta["without_errors"] == ["pm_phi1_cosphi2", "pm_phi2", "g"]
    assert without_errors(stars, ["phi2", "pm_phi2", "i"]) == ["pm_phi2"]
    assert without_errors(stars, ["phi2", "parallax"]) == []
    depth = {"g": {"depth": 22.0, "epochs": 12}}
    modelled = StarTable.from_table(table, {"bands": ["g", "i"], "pm_err_per_parallax_err": 1.7, "band_error_model": depth})
    assert "without_errors" not in modelled.meta
    skipped = StarTable.from_table(table, {"pm_phi1_cosphi2": None, "pm_phi2": None})  # not read: not exact
    assert "without_errors" not in skipped.meta
    missing = table.copy()
    missing["pm_phi1_cosphi2"] = missing["pm_phi2"] = [np.nan, np.nan]  # no values: unobserved, not exact
    assert "without_errors" not in StarTable.from_table(missing).meta
    stale = table.copy()
    stale.meta["without_errors"] = "parallax"  # a file's own key is not taken for ours
    assert StarTable.from_table(stale, {"pm_err_per_parallax_err": 1.7}).meta.get("without_errors") is None


def test_from_gaia_leaves_errors_the_archive_table_lacks_to_the_error_model(shared_data) -> None:
    """A Gaia DR2 extraction without proper-motion errors (the real GD-1 file's columns): its
    proper-motion errors come from ``pm_err_per_parallax_err`` (refused before: the transformed
    table seemed to give them, as 0), are 0 without it, as ``from_table`` makes them; one error
    of a pair without the other is refused with one message."""
    raw = Table.read(shared_data / "gd1_dr2" / "gd1_pm_box_dr2_ps1.fits")
    gaia = Table({k: raw[k] for k in ("source_id", "ra", "dec", "pmra", "pmdec", "parallax", "parallax_error")})[:500]
    modelled = StarTable.from_gaia(gaia, "GD-1", {"pm_err_per_parallax_err": 1.1})
    np.testing.assert_allclose(modelled.pm_phi1_cosphi2_err, 1.1 * np.asarray(gaia["parallax_error"]), rtol=1e-12)
    np.testing.assert_allclose(modelled.pm_phi2_err, 1.1 * np.asarray(gaia["parallax_error"]), rtol=1e-12)
    np.testing.assert_array_equal(modelled.pm_corr, 0.0)
    plain = StarTable.from_gaia(gaia, "GD-1")
    assert (plain.pm_phi2_err == 0).all() and (plain.phi2_err == 0).all()
    assert plain.meta["without_errors"] == ["pm_phi1_cosphi2", "pm_phi2"]  # taken as exact: recorded
    assert "without_errors" not in modelled.meta
    gaia["ps1_g"] = raw["g_mean_psf_mag"][:500]  # a band without an error column or model: exact too
    assert StarTable.from_gaia(gaia, "GD-1", {"bands": ["ps1_g"]}).meta["without_errors"] == ["pm_phi1_cosphi2", "pm_phi2", "ps1_g"]
    np.testing.assert_allclose(plain.parallax_err, np.asarray(gaia["parallax_error"]))
    gaia["pmra_error"] = 0.1
    with pytest.raises(InputError, match="table: Gaia column 'pmdec_error' not found, but 'pmra_error' is"):
        StarTable.from_gaia(gaia, "GD-1")
    gaia["pmdec_error"] = 0.2
    with pytest.raises(InputError, match="pm_err_per_parallax_err: the table already gives 'pmra_error' and 'pmdec_error'"):
        StarTable.from_gaia(gaia, "GD-1", {"pm_err_per_parallax_err": 1.1})
    del gaia["pmra_error"], gaia["pmdec_error"], gaia["parallax_error"]
    with pytest.raises(InputError, match="pm_err_per_parallax_err: needs parallax errors \\(column 'parallax_error'\\)"):
        StarTable.from_gaia(gaia, "GD-1", {"pm_err_per_parallax_err": 1.1})


def test_band_errors_modelled_from_the_survey_depth() -> None:
    """A catalogue without magnitude errors (PS1 in the GD-1 DR2 file): each
    star's error follows from its magnitude and the band's depth, 0 where the
    magnitude is missing; a band with error columns too is an error."""
    table = Table({"phi1": [0.0, 1.0, 2.0], "g": [18.0, 22.0, 1e20], "i": [17.5, 21.5, 21.0]})
    depths = {"ps1_g": {"depth": 22.0, "epochs": 4, "floor": 0.01}}
    cmap = ColumnMap.from_dict({"bands": {"ps1_g": "g", "ps1_i": "i"}, "band_error_model": depths, "sentinels": [1e20]})
    stars = StarTable.from_table(table, cmap)
    # at the depth: 0.2171 / sqrt(4) in quadrature with 0.01; 4 mag brighter: 10^-1.6 of that
    np.testing.assert_allclose(stars.mag_errs["ps1_g"], [np.hypot(0.01, 0.10857 * 10**-1.6), np.hypot(0.01, 0.10857), 0.0],
                               rtol=1e-4)  # fmt: skip
    np.testing.assert_array_equal(stars.mag_errs["ps1_i"], [0.0, 0.0, 0.0])  # no model, no column
    table["ps1_g_err"] = [0.02, 0.02, 0.02]
    with pytest.raises(InputError, match=r"columns.band_error_model.ps1_g.*already gives its errors \('ps1_g_err'\)"):
        StarTable.from_table(table, cmap)
    with pytest.raises(InputError, match=r"band_error_model: \['ps1_g'\] also have band_errors"):
        ColumnMap.from_dict({"bands": {"ps1_g": "g"}, "band_errors": {"ps1_g": "e"}, "band_error_model": depths})
    with pytest.raises(InputError, match=r"band_error_model: \['ps1_r'\] not among the bands"):
        ColumnMap.from_dict({"bands": {"ps1_g": "g"}, "band_error_model": {"ps1_r": {"depth": 21.8}}})
    with pytest.raises(InputError, match="epochs"):
        ColumnMap.from_dict({"bands": {"ps1_g": "g"}, "band_error_model": {"ps1_g": {"depth": 22.0, "epochs": 0}}})
    with pytest.raises(InputError, match="band_error_model.ps1_g.depth"):
        ColumnMap.from_dict({"bands": {"ps1_g": "g"}, "band_error_model": {"ps1_g": {"depth": float("nan")}}})


def test_arrays_are_read_only_and_defaults() -> None:
    stars = StarTable(phi1=np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        stars.phi1[0] = 5.0
    assert np.isnan(stars.parallax).all() and (stars.parallax_err == 0).all()
    assert stars.source_id.tolist() == [0, 1] and stars.source_id.dtype == np.int64
    assert not any(v.any() for v in stars.observed.values())
    with pytest.raises(InputError, match="phi1: 1 non-finite"):
        StarTable(phi1=np.array([1.0, np.nan]))
    with pytest.raises(InputError, match="parallax: expected 2 values"):
        StarTable(phi1=np.array([1.0, 2.0]), parallax=np.zeros(3))


def test_canonical_names_are_found_when_defaults_are_absent() -> None:
    t = Table(
        {
            "phi1": [1.0, 2.0],
            "pm_phi1_cosphi2": [-10.0, -11.0],
            "parallax_err": [0.1, 0.2],
            "pm_phi2_err": [0.3, 0.4],
        }
    )
    stars = StarTable.from_table(t)
    assert stars.pm_phi1_cosphi2.tolist() == [-10.0, -11.0]
    assert stars.parallax_err.tolist() == [0.1, 0.2] and stars.pm_phi2_err.tolist() == [0.3, 0.4]
    assert np.isnan(stars.phi2).all() and not stars.observed["phi2"].any()


def test_sentinels_masked_and_units_map() -> None:
    g = np.array([18.5, 1e20, 19.0, np.nan], dtype=np.float32)
    t = Table({"phi1": [1.0, 2.0, 3.0, 4.0], "gmag": g, "ang": [0.0, 0.1, 0.2, 0.3]})
    t["gmag"] = MaskedColumn(t["gmag"], mask=[False, False, True, False])
    stars = StarTable.from_table(t, {"bands": {"g": "gmag"}, "sentinels": [1e20], "phi2": "ang", "units": {"phi2": "rad"}})
    assert stars.observed["g"].tolist() == [True, False, False, False]
    np.testing.assert_allclose(stars.mags["g"][0], 18.5)
    np.testing.assert_allclose(stars.phi2, np.array([0.0, 0.1, 0.2, 0.3]) * 180 / np.pi, rtol=1e-13)
    ps1 = Table({"phi1": [1.0, 2.0], "g": np.array([1e20, np.nan], dtype=np.float32)})
    with pytest.raises(InputError, match="'g'"):  # every value missing once the sentinel is applied
        StarTable.from_table(ps1, {"bands": ["g"], "sentinels": [1e20], "phi2": None})


# ------------------------------------------------------------------ bad input


def bad(table, columns=None, match: str = ""):
    with pytest.raises(InputError, match=match) as info:
        StarTable.from_table(table, columns)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_columns() -> None:
    t = gaia_like()
    del t["phi1"]
    message = bad(t, match="'phi1'")
    assert "available: source_id, phi2" in message
    bad(gaia_like(), {"parallax": "plx"}, match=r"'plx' \(columns.parallax\)")
    bad(gaia_like(), {"bands": {"g": "gmag"}}, match=r"'gmag' \(columns.bands.g\)")
    bad(gaia_like(), {"keep": ["truth"]}, match="'truth'")
    wide = Table({f"c{k}": [1.0] for k in range(40)} | {"phi1": [0.0], "phi_2": [1.0]})
    message = bad(wide, {"phi2": "phi2"}, match="'phi2'")
    assert "did you mean phi_2" in message and "c39" not in message
    # defaults that are absent are not required
    assert len(StarTable.from_table(Table({"phi1": [1.0]}))) == 1


def test_wrong_and_convertible_units() -> None:
    t = gaia_like()
    t["phi1"].unit = "mas/yr"
    message = bad(t, match="'phi1'")
    assert "mas / yr" in message and "deg" in message
    t = gaia_like()
    t["pm_phi2"].unit = "mas"
    bad(t, match=r"'pm_phi2'.*not convertible")
    t = gaia_like()
    t["parallax"].unit = "foo_unknown"  # an unrecognized unit string
    t["parallax"].unit = u.Unit("foo_unknown", parse_strict="silent")
    bad(t, match="'parallax'")
    with pytest.raises(InputError, match=r"^columns.units.phi1: 'km/s' is not convertible to deg$"):
        ColumnMap.from_dict({"units": {"phi1": "km/s"}})
    with pytest.raises(InputError, match="^columns.units.zzz: not a canonical"):
        ColumnMap.from_dict({"units": {"zzz": "deg"}})


def test_non_numeric_all_missing_and_empty() -> None:
    t = gaia_like()
    t["phi2"] = ["a", "b", "c", "d", "e"]
    bad(t, match="'phi2'.*expected numbers, got text")
    frame = gaia_like().to_pandas()
    frame["parallax"] = ["1.0", None, 2.0, "x", 3.0]
    bad(frame, match="'parallax'.*expected numbers")
    t = gaia_like()
    t["pm_phi2"] = np.nan
    bad(t, {"pm_phi2": "pm_phi2"}, match="'pm_phi2'.*every value is missing")
    assert not StarTable.from_table(t).observed["pm_phi2"].any()  # not mapped explicitly: fine
    bad(gaia_like()[:0], match="no rows")


def test_bad_values() -> None:
    t = gaia_like()
    t["phi1"][[1, 3]] = [np.nan, np.inf]
    bad(t, match="'phi1'.*2 non-finite values of 5")
    t = gaia_like()
    t["parallax_error"][2] = -0.1
    bad(t, match=r"'parallax_error' \(parallax_err\).*1 negative")
    t = gaia_like()
    t["rho"] = [0.0, 0.5, -1.0, 1.2, np.nan]
    bad(t, {"pm_corr": "rho"}, match=r"'rho' \(pm_corr\).*1 values outside \[-1, 1\]")
    t = gaia_like()
    t["source_id"][3] = t["source_id"][0]
    bad(t, match="'source_id'.*1 duplicated")
    t = gaia_like()
    t["ge"] = [0.1, -0.2, 0.1, 0.1, 0.1]
    t["g"] = 20.0
    bad(t, {"bands": ["g"], "band_errors": {"g": "ge"}}, match=r"'ge' \(g_err\).*negative")
    with pytest.raises(InputError, match="band_errors.*not among the bands"):
        ColumnMap.from_dict({"bands": ["g"], "band_errors": {"r": "re"}})
    with pytest.raises(InputError, match=r"^columns.sentinels.0: Input should be a valid number"):
        ColumnMap(sentinels=["none"])
    with pytest.raises(InputError, match="data.columns.phi_1: Extra inputs"):
        ColumnMap.from_dict({"phi_1": "x"}, source="data.columns")
    with pytest.raises(InputError, match="expected an astropy Table"):
        StarTable.from_table({"phi1": [1.0]})


def test_read_table_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_table(tmp_path / "nope.fits")
    with pytest.raises(InputError, match="folder"):
        read_table(tmp_path)
    (tmp_path / "stars.txt").write_text("a b\n1 2\n")
    with pytest.raises(InputError, match="unknown table format '.txt'"):
        read_table(tmp_path / "stars.txt")
    (tmp_path / "empty.fits").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_table(tmp_path / "empty.fits")
    table = random_stars(n=300).to_table()
    table.write(tmp_path / "full.fits")
    table.write(tmp_path / "full.csv")
    table.write(tmp_path / "full.parquet")
    table.write(tmp_path / "full.vot", format="votable")
    table.to_pandas().to_hdf(tmp_path / "full.h5", key="stars")
    for name in ("full.fits", "full.csv", "full.parquet", "full.vot", "full.h5"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: int(len(data) * 0.7)])
        with pytest.raises(InputError, match=f"file '{cut}'") as info:
            read_stars(cut, {"bands": ["g", "r"]})
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------ hypothesis

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    n=st.integers(1, 25),
    seed=st.integers(0, 2**32 - 1),
    p_value=st.floats(0, 1),
    p_error=st.floats(0, 1),
)
def test_observed_is_finite_value_and_error(n: int, seed: int, p_value: float, p_error: float) -> None:
    rng = np.random.default_rng(seed)
    t = Table({"phi1": rng.uniform(-10, 10, n)})
    for name in ("phi2", "parallax", "pm_phi1", "pm_phi2", "g"):
        t[name] = np.where(rng.random(n) < p_value, np.nan, rng.normal(size=n))
    for name in ("phi2_err", "parallax_error", "pm_phi1_cosphi2_err", "pm_phi2_err", "g_err"):
        t[name] = np.where(rng.random(n) < p_error, np.nan, rng.uniform(0, 1, n))
    if not np.isfinite(np.asarray(t["g"])).any():  # an explicitly mapped band must have some values
        with pytest.raises(InputError, match="'g'"):
            StarTable.from_table(t, {"bands": ["g"]})
        t["g"][0] = 20.0
    stars = StarTable.from_table(t, {"bands": ["g"]})
    pairs = {
        "phi2": ("phi2", "phi2_err"),
        "parallax": ("parallax", "parallax_error"),
        "pm_phi1_cosphi2": ("pm_phi1", "pm_phi1_cosphi2_err"),
        "pm_phi2": ("pm_phi2", "pm_phi2_err"),
        "g": ("g", "g_err"),
    }
    assert list(stars.observed) == [*ASTROMETRIC, "g"]
    for key, (value, error) in pairs.items():
        expected = np.isfinite(np.asarray(t[value])) & np.isfinite(np.asarray(t[error]))
        np.testing.assert_array_equal(stars.observed[key], expected, err_msg=key)


@FAST
@given(
    angle=st.sampled_from(sorted(DEG_PER)),
    pm=st.sampled_from(sorted(MASYR_PER)),
    values=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=8),
    as_quantity=st.booleans(),
)
def test_units_are_converted(angle: str, pm: str, values: list[float], as_quantity: bool) -> None:
    x = np.array(values)
    columns = {"phi1": x * u.Unit(angle), "phi2": x * u.Unit(angle), "pm_phi2": x * u.Unit(pm)}
    table = QTable(columns) if as_quantity else Table(columns)
    stars = StarTable.from_table(table)
    np.testing.assert_allclose(stars.phi1, x * DEG_PER[angle], rtol=1e-12)
    np.testing.assert_allclose(stars.phi2, x * DEG_PER[angle], rtol=1e-12)
    np.testing.assert_allclose(stars.pm_phi2, x * MASYR_PER[pm], rtol=1e-12)
    # and a quantity of the wrong kind is refused, naming the column
    wrong = Table({"phi1": x * u.Unit(pm)})
    with pytest.raises(InputError, match="'phi1'"):
        StarTable.from_table(wrong)


@FAST
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30))
def test_getitem_by_random_mask(seed: int, n: int) -> None:
    stars = random_stars(n=n, seed=seed % 1000)
    mask = np.random.default_rng(seed).random(n) < 0.5
    sub = stars[mask]
    assert len(sub) == mask.sum()
    for key in stars.observed:
        np.testing.assert_array_equal(sub.observed[key], stars.observed[key][mask])
    np.testing.assert_array_equal(sub.source_id, stars.source_id[mask])
