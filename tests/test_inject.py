"""Injection of a synthetic stream into the real GD-1 field (streammix.inject, `streammix inject`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from streammix.config import Config
from streammix.depth_errors import DepthErrors
from streammix.errors import InputError
from streammix.inject import InjectionSpec, _magnitude_proxy, inject_stream, track_values

ROOT = Path(__file__).resolve().parents[1]

N = 2000
SPEC = {
    "phi1_range": [-65.0, -25.0],
    "n_stars": N,
    "phi2": {"coefficients": [-3.0, 0.04], "phi1_ref": -45.0},
    "phi2_width": 0.2,
    "pm_phi1_cosphi2": [[-65.0, -7.4], [-25.0, -6.4]],
    "pm_phi2": -0.6,
    "pm_phi1_cosphi2_width": 0.25,
    "pm_phi2_width": 0.15,
    "distmod": 14.5,
    "distmod_width": 0.05,
}


@pytest.fixture(scope="module")
def gd1(shared_data):
    from streammix.data import read_table

    config = Config.from_yaml(ROOT / "configs" / "gd1_dr2_photometry.yaml")
    # the file's cuts, which the injection applies (the shipped config declares them too; set here so
    # that these tests do not depend on it)
    data = config.model_dump(mode="json")
    data["data"]["selection"] = {"parallax": [None, 1.0], "pmra": [-7.0, -2.0], "pmdec": [-15.0, -11.0], "reflex_distance": 8.0}
    config = Config.from_dict(data)
    path = shared_data / "gd1_dr2" / "gd1_pm_box_dr2_ps1.fits"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return read_table(path), config


@pytest.fixture(scope="module")
def injected(gd1):
    catalog, config = gd1
    return inject_stream(catalog, InjectionSpec.from_dict(SPEC), config, seed=7)


def floats(column) -> np.ndarray:
    values = np.asarray(np.ma.filled(np.ma.asarray(column, dtype=float), np.nan), dtype=float)
    values[values > 1e19] = np.nan  # the GD-1 file's sentinel
    return values


def test_count_truth_column_and_ids(gd1, injected):
    catalog, _ = gd1
    truth = np.asarray(injected["injected"], bool)
    assert len(injected) == len(catalog) + N and truth.sum() == N and not truth[: len(catalog)].any()
    # the real rows are the catalog's, unchanged
    assert np.array_equal(np.asarray(injected["source_id"][: len(catalog)]), np.asarray(catalog["source_id"]))
    assert np.array_equal(floats(injected["pm_phi1"][: len(catalog)]), floats(catalog["pm_phi1"]))
    ids = np.asarray(injected["source_id"][truth])
    assert (ids < 0).all() and np.unique(ids).size == N
    # truth is masked for real stars; unmapped columns are masked for injected ones
    assert injected["true_distmod"].mask[: len(catalog)].all() and not injected["true_distmod"].mask[truth].any()
    assert injected["radial_velocity"].mask[truth].all() and injected["pmra"].mask[truth].all()
    # ra/dec come from the GD-1 frame
    from streammix.frames import get_frame

    phi1, phi2 = get_frame("gd1").to_stream(floats(injected["ra"])[truth], floats(injected["dec"])[truth])
    assert np.allclose(phi1, floats(injected["phi1"])[truth], atol=1e-8)
    assert np.allclose(phi2, floats(injected["phi2"])[truth], atol=1e-8)


def test_same_seed_same_stars(gd1, injected):
    catalog, config = gd1
    again = inject_stream(catalog, InjectionSpec.from_dict(SPEC), config, seed=7)
    other = inject_stream(catalog, InjectionSpec.from_dict(SPEC), config, seed=8)
    assert np.array_equal(floats(again["phi2"]), floats(injected["phi2"]))
    assert not np.array_equal(floats(other["phi2"]), floats(injected["phi2"]))


def _zscore(values: np.ndarray, expected: float, sd: float) -> float:
    return abs(values.mean() - expected) / (sd / np.sqrt(values.size))


def test_tracks_widths_and_errors_match_the_spec(gd1, injected):
    """The drawn stars follow the spec: mean offsets within 4 counting sigma of zero, spreads
    within 4 sigma of the spec's widths (sd of a sample sd: width / sqrt(2n))."""
    gd1_catalog, config = gd1
    inj = injected[np.asarray(injected["injected"], bool)]
    phi1 = floats(inj["phi1"])
    n = phi1.size
    assert phi1.min() >= -65.0 and phi1.max() <= -25.0
    for column, key, width in (
        ("true_phi2", "phi2", 0.2),
        ("true_pm_phi1_cosphi2", "pm_phi1_cosphi2", 0.25),
        ("true_pm_phi2", "pm_phi2", 0.15),
    ):
        residual = floats(inj[column]) - track_values(InjectionSpec.from_dict(SPEC).__getattribute__(key), phi1)
        assert _zscore(residual, 0.0, width) < 4, column
        assert abs(residual.std() - width) < 4 * width / np.sqrt(2 * n), column
    # observed phi2 = true phi2 (the file has no positional errors)
    assert np.array_equal(floats(inj["phi2"]), floats(inj["true_phi2"]))
    # distance modulus: brighter stars pass the magnitude cut more often, which pulls the mean
    # down by ~ width^2 dlnN/dm ~ 0.003 mag; allow 5 sigma (0.0056)
    distmod = floats(inj["true_distmod"])
    assert _zscore(distmod, 14.5, 0.05) < 5
    assert abs(distmod.std() - 0.05) < 4 * 0.05 / np.sqrt(2 * n)
    # observed = true + Gaussian errors: parallax with the donor's error, proper motions with
    # 1.7 x that (the config's pm_err_per_parallax_err; the file has no proper-motion errors)
    # (the donor's error passed the file's cut parallax < 1 mas, so the error is drawn conditioned
    # on passing it: a truncated Gaussian, whose probability integral transform is uniform)
    from scipy.stats import norm

    plx_err = floats(inj["parallax_error"])
    # the observed parallaxes scatter about 1/d plus the catalogue's zero-point (the config's)
    true_plx = 10 ** ((10 - distmod) / 5) + config.data.parallax_zero_point
    low, high = (np.nanmin(floats(gd1_catalog["parallax"])), np.nanmax(floats(gd1_catalog["parallax"])))
    cdf_low, cdf_high = norm.cdf((low - true_plx) / plx_err), norm.cdf((high - true_plx) / plx_err)
    pit = (norm.cdf((floats(inj["parallax"]) - true_plx) / plx_err) - cdf_low) / (cdf_high - cdf_low)
    assert abs(pit.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n) and abs(pit.std() - np.sqrt(1 / 12)) < 4 * 0.075 / np.sqrt(n)
    assert (cdf_high < 0.9).sum() > 200  # the truncation matters for many of them
    # (the file's proper-motion box truncates them too: checked where the error is < 0.5 mas/yr,
    # the box's edges then lie > 4 sigma from the injected track)
    precise = 1.7 * plx_err < 0.5
    assert precise.sum() > 100
    for observed, true in (("pm_phi1", "true_pm_phi1_cosphi2"), ("pm_phi2", "true_pm_phi2")):
        pull = ((floats(inj[observed]) - floats(inj[true])) / (1.7 * plx_err))[precise]
        assert _zscore(pull, 0.0, 1.0) < 4 and abs(pull.std() - 1) < 4 / np.sqrt(2 * pull.size), observed


def test_parallax_zero_point_is_in_the_observed_parallaxes(gd1):
    """With ``data.parallax_zero_point`` z, observed parallaxes scatter about 1/d + z: the pull of
    the precise ones (error < 0.15 mas, far from the file's cut) about it is N(0, 1), and about
    1/d alone it is off by many sigma."""
    catalog, config = gd1
    data = config.model_dump(mode="json")
    data["data"]["parallax_zero_point"] = -0.1
    inj = inject_stream(catalog, InjectionSpec.from_dict(SPEC), Config.from_dict(data), seed=7)
    inj = inj[np.asarray(inj["injected"], bool)]
    plx, plx_err = floats(inj["parallax"]), floats(inj["parallax_error"])
    true_plx = 10 ** ((10 - floats(inj["true_distmod"])) / 5)
    precise = np.isfinite(plx) & (plx_err < 0.15)
    assert precise.sum() > 50
    pull = ((plx - true_plx + 0.1) / plx_err)[precise]
    assert _zscore(pull, 0.0, 1.0) < 4 and abs(pull.std() - 1) < 4 / np.sqrt(2 * pull.size)
    assert _zscore(((plx - true_plx) / plx_err)[precise], 0.0, 1.0) > 8


def test_parallax_noise_has_the_external_error(gd1):
    """With ``data.columns.parallax_err_external``, the injected parallaxes scatter with the external
    error while the output keeps the donor's catalogue (formal) error: for the precise stars (formal
    error < 0.3 mas, 3 standard errors from the file's cut) the pull on the external error is N(0, 1) and on the formal one wider; the
    modelled proper-motion errors are 1.7 x the external error."""
    catalog, config = gd1
    data = config.model_dump(mode="json")
    data["data"]["columns"]["parallax_err_external"] = {"factor": 1.08, "floor": 0.043}
    inj = inject_stream(catalog, InjectionSpec.from_dict(SPEC), Config.from_dict(data), seed=7)
    inj = inj[np.asarray(inj["injected"], bool)]
    plx, formal = floats(inj["parallax"]), floats(inj["parallax_error"])
    assert set(formal[np.isfinite(formal)]) <= set(floats(catalog["parallax_error"]))  # written as the donors'
    external = np.hypot(1.08 * formal, 0.043)
    residual = plx - 10 ** ((10 - floats(inj["true_distmod"])) / 5) - config.data.parallax_zero_point
    precise = np.isfinite(plx) & (formal < 0.3)
    assert precise.sum() > 200
    # a sample sd's sd is 1 / sqrt(2n): 0.037 here, where the two hypotheses differ by about 0.15
    pull = (residual / external)[precise]
    assert _zscore(pull, 0.0, 1.0) < 4 and abs(pull.std() - 1) < 3 / np.sqrt(2 * pull.size)
    wide = (residual / formal)[precise]
    assert wide.std() - 1 > 3 / np.sqrt(2 * pull.size)
    pm_residual = (floats(inj["pm_phi2"]) - floats(inj["true_pm_phi2"]))[precise]
    assert abs((pm_residual / (1.7 * external[precise])).std() - 1) < 3 / np.sqrt(2 * pull.size)
    assert (pm_residual / (1.7 * formal[precise])).std() - 1 > 3 / np.sqrt(2 * pull.size)


def test_photometry_follows_the_isochrone(gd1, injected):
    """Observed g and i = isochrone at the true mass + true distmod + N(0, sigma(true magnitude)),
    sigma the config's PS1 error model (the file has no magnitude errors); without the model,
    N(0, colour_spread / sqrt 2); with the spec's ``colour_spread``, that spread in quadrature."""
    from streammix.inject import _isochrone_mags

    catalog, config = gd1
    bands = ["ps1_g", "ps1_i"]
    depths = config.data.columns["band_error_model"]
    assert set(depths) == set(bands)
    iso, _ = _isochrone_mags(config.model.isochrone, bands)

    def pulls(injected, sigma_of):
        inj = injected[np.asarray(injected["injected"], bool)]
        model = iso.absolute_mags(floats(inj["true_mass"]), bands) + floats(inj["true_distmod"])[:, None]
        for j, column in enumerate(("g_mean_psf_mag", "i_mean_psf_mag")):
            pull = (floats(inj[column]) - model[:, j]) / sigma_of(bands[j], model[:, j])
            pull = pull[np.isfinite(pull)]
            assert pull.size > 500
            assert _zscore(pull, 0.0, 1.0) < 4 and abs(pull.std() - 1) < 4 / np.sqrt(2 * pull.size)

    pulls(injected, lambda band, mag: DepthErrors(**depths[band]).error(mag))
    data = config.model_dump(mode="json")
    data["data"]["columns"]["band_error_model"] = {}
    plain = inject_stream(catalog, InjectionSpec.from_dict(SPEC), Config.from_dict(data), seed=7)
    pulls(plain, lambda band, mag: config.model.isochrone.colour_spread / np.sqrt(2))
    # with the stream's intrinsic spread about the isochrone, each band's spread is its error and
    # colour_spread / sqrt 2 in quadrature; without it in the expected sigma the pulls are too wide
    spread = 0.1
    off = inject_stream(catalog, InjectionSpec.from_dict({**SPEC, "colour_spread": spread}), config, seed=7)
    pulls(off, lambda band, mag: np.hypot(DepthErrors(**depths[band]).error(mag), spread / np.sqrt(2)))
    inj = off[np.asarray(off["injected"], bool)]
    model = iso.absolute_mags(floats(inj["true_mass"]), bands) + floats(inj["true_distmod"])[:, None]
    narrow = (floats(inj["g_mean_psf_mag"]) - model[:, 0]) / DepthErrors(**depths["ps1_g"]).error(model[:, 0])
    narrow = narrow[np.isfinite(narrow)]
    assert narrow.std() - 1 > 4 / np.sqrt(2 * narrow.size)  # the errors alone: too narrow a sigma


def test_errors_and_missing_photometry_follow_the_real_catalog(gd1, injected):
    catalog, config = gd1
    truth = np.asarray(injected["injected"], bool)
    g_real, g_inj = floats(catalog["g_mean_psf_mag"]), floats(injected["g_mean_psf_mag"])[truth]
    i_inj = floats(injected["i_mean_psf_mag"])[truth]
    err_real, err_inj = floats(catalog["parallax_error"]), floats(injected["parallax_error"])[truth]
    # the missing pattern is the donor's, not drawn band by band: stars lacking exactly one band
    # are as rare as in the file (125 of 13,976; half would be, were the bands blanked independently)
    i_real = floats(catalog["i_mean_psf_mag"])
    one_real = np.mean(np.isnan(g_real) != np.isnan(i_real))
    one_inj = np.mean(np.isnan(g_inj) != np.isnan(i_inj))
    assert one_inj < one_real + 4 * np.sqrt(one_real * (1 - one_real) / g_inj.size), (one_inj, one_real)
    # the fraction without photometry is the real one at the injected stars' magnitudes
    # (real stars without g placed at the median g of their parallax error)
    from streammix.inject import _isochrone_mags

    iso, _ = _isochrone_mags(config.model.isochrone, ["ps1_g"])
    inj = injected[truth]
    true_g = iso.absolute_mags(floats(inj["true_mass"]), ["ps1_g"])[:, 0] + floats(inj["true_distmod"])
    proxy = _magnitude_proxy(g_real, err_real)
    edges = np.arange(12.0, 23.01, 0.5)
    which_real = np.digitize(proxy, edges)
    missing_real = np.array([np.mean(np.isnan(g_real[which_real == k])) if (which_real == k).any() else 0.0
                             for k in range(edges.size + 1)])  # fmt: skip
    expected = missing_real[np.digitize(true_g, edges)]
    observed = np.isnan(g_inj)
    sd = np.sqrt(np.sum(expected * (1 - expected))) / observed.size
    assert 0.1 < observed.mean() < 0.9
    assert abs(observed.mean() - expected.mean()) < 4 * sd, (observed.mean(), expected.mean(), sd)
    # parallax errors against magnitude: each injected star's error over the real stars' median
    # error at its observed g (0.25-mag bins), in 1-mag bins: the median log ratio is 0 within
    # 4 times its counting error (1.25 x the log spread / sqrt n)
    has = np.isfinite(g_real)
    fine = np.arange(12.0, 23.01, 0.25)
    centres = 0.5 * (fine[1:] + fine[:-1])
    which = np.digitize(g_real[has], fine) - 1
    medians = np.array([np.median(err_real[has][which == k]) if (which == k).sum() >= 5 else np.nan
                        for k in range(centres.size)])  # fmt: skip
    ok = np.isfinite(medians)
    checked = 0
    for lo in np.arange(17.0, 22.0, 1.0):
        sel = (g_inj >= lo) & (g_inj < lo + 1)
        if sel.sum() < 50:
            continue
        log_ratio = np.log10(err_inj[sel]) - np.interp(g_inj[sel], centres[ok], np.log10(medians[ok]))
        noise = 1.25 * log_ratio.std() / np.sqrt(sel.sum())
        assert abs(np.median(log_ratio)) < 4 * noise, (lo, np.median(log_ratio), noise)
        checked += 1
    assert checked >= 3


def test_selection_of_the_catalog_applies(gd1, injected):
    catalog, _ = gd1
    truth = np.asarray(injected["injected"], bool)
    g_real = floats(catalog["g_mean_psf_mag"])
    observed_g = floats(injected["g_mean_psf_mag"])[truth]
    assert np.nanmax(observed_g) <= np.nanpercentile(g_real, 99.0)
    assert np.nanmax(floats(injected["parallax"])[truth]) <= np.nanmax(floats(catalog["parallax"]))
    assert np.all(np.abs(floats(injected["phi2"])[truth]) <= 5.6)
    for column in ("pm_phi1", "pm_phi2"):
        real = floats(catalog[column])
        assert real.min() <= floats(injected[column])[truth].min() and floats(injected[column])[truth].max() <= real.max()
    # the file's own cuts, which the config declares (data.selection): every injected star is in
    # the (pmra, pmdec) box, as every real star is
    from streammix.inject import passes_declared_cuts

    _, config = gd1
    assert config.data.selection is not None and config.data.selection.pmra is not None

    def values(table):
        keys = {"phi1": "phi1", "phi2": "phi2", "parallax": "parallax", "pm_phi1_cosphi2": "pm_phi1", "pm_phi2": "pm_phi2"}
        return {key: floats(table[column]) for key, column in keys.items()}

    assert passes_declared_cuts(values(catalog), config.data.selection, config.frame).all()
    assert passes_declared_cuts(values(injected[truth]), config.data.selection, config.frame).all()
    # the box is tighter than the catalog's ranges: without it many injected stars would fall outside
    loose = config.model_copy(update={"data": config.data.model_copy(update={"selection": None})})
    unboxed = inject_stream(catalog, InjectionSpec.from_dict({**SPEC, "n_stars": 500}), loose, seed=7)
    outside = ~passes_declared_cuts(values(unboxed[np.asarray(unboxed["injected"], bool)]), config.data.selection, config.frame)
    assert outside.mean() > 0.17  # measured 0.25 of 500 (binomial sd 0.019)


def test_rejected_errors_lose_the_imprecise_stars_as_the_catalog_did(gd1, injected, monkeypatch):
    """``error_draw: rejected`` draws every error freely (no draw is conditioned on the
    catalog's ranges) and keeps a star only if it passes, so a star is kept with its
    probability of passing the cuts, as a real one was: the imprecise stars thin out
    (parallax error > 0.9 mas: 33 % of the conditioned draw, 22 % of the rejected one;
    binomial sd 0.01 each), and a kept star's observed parallax about its true one is
    still the Gaussian truncated at the cut."""
    from scipy.stats import norm

    import streammix.inject

    catalog, config = gd1
    spec = InjectionSpec.from_dict({**SPEC, "error_draw": "rejected"})
    assert InjectionSpec.from_dict(SPEC).error_draw == "conditioned"
    limits_seen = []
    draw = streammix.inject._conditioned_normal

    def spy(rng, centre, scale, limits, inside_of=None):
        limits_seen.append(limits)
        return draw(rng, centre, scale, limits, inside_of)

    monkeypatch.setattr(streammix.inject, "_conditioned_normal", spy)
    rejected = inject_stream(catalog, spec, config, seed=7)
    assert len(limits_seen) >= 3 and all(limits is None for limits in limits_seen)  # parallax, both proper motions
    rejected = rejected[np.asarray(rejected["injected"], bool)]
    conditioned = injected[np.asarray(injected["injected"], bool)]
    assert len(rejected) == N
    share = {name: float((floats(t["parallax_error"]) > 0.9).mean()) for name, t in (("c", conditioned), ("r", rejected))}
    assert share["c"] - share["r"] > 0.06, share
    # (the observed parallax is centred on the true one plus the config's zero-point; the upper
    # limit is the declared cut, 1 mas, which the catalog's largest parallax, 0.9998 mas, all but
    # equals; the stars with errors < 1 mas, whose lower limit, the catalog's most negative
    # parallax, -16 mas, lies many errors below)
    plx_err = floats(rejected["parallax_error"])
    keep = plx_err < 1.0
    n = int(keep.sum())
    assert n > 1000
    centre = 10 ** ((10 - floats(rejected["true_distmod"])) / 5) + config.data.parallax_zero_point
    high = config.data.selection.parallax[1]
    pit = norm.cdf((floats(rejected["parallax"]) - centre) / plx_err) / norm.cdf((high - centre) / plx_err)
    assert abs(pit[keep].mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
    assert abs(pit[keep].std() - np.sqrt(1 / 12)) < 4 * 0.075 / np.sqrt(n)
    with pytest.raises(InputError, match="error_draw"):
        InjectionSpec.from_dict({**SPEC, "error_draw": "clipped"})


def test_a_heavy_tailed_profile_is_drawn_with_its_own_wings(gd1):
    """A Student-t (dof 2) injection: its phi2 offsets follow the profile's CDF, not the Gaussian's."""
    from scipy import stats

    catalog, config = gd1
    spec = InjectionSpec.from_dict({**SPEC, "profile": "student_t", "profile_parameters": {"phi2_dof": 2.0}})
    inj = inject_stream(catalog, spec, config, seed=3)
    inj = inj[np.asarray(inj["injected"], bool)]
    offsets = (floats(inj["true_phi2"]) - track_values(spec.phi2, floats(inj["phi1"]))) / 0.2
    assert stats.kstest(offsets, stats.t(2.0).cdf).pvalue > 0.01
    assert stats.kstest(offsets, stats.norm.cdf).pvalue < 1e-6


def test_bad_inputs_name_the_problem(gd1):
    catalog, config = gd1
    spec = InjectionSpec.from_dict(SPEC)
    with pytest.raises(InputError, match="column 'g_mean_psf_mag' \\(band ps1_g\\) not found"):
        inject_stream(catalog[["source_id", "phi1", "phi2", "parallax", "parallax_error"]], spec, config)
    with pytest.raises(InputError, match="column 'phi2' \\(data.columns.phi2\\) not found"):
        inject_stream(Table(catalog)[["source_id", "phi1", "g_mean_psf_mag", "i_mean_psf_mag"]], spec, config)
    far = InjectionSpec.from_dict({**SPEC, "pm_phi2": 30.0})  # far outside the file's proper-motion box
    with pytest.raises(InputError, match="only 0 of 2000 injected stars pass the catalog's selection"):
        inject_stream(catalog, far, config)
    with pytest.raises(InputError, match="injection spec: phi2_width: must not be negative over phi1_range"):
        InjectionSpec.from_dict({**SPEC, "phi2_width": [[-65, 0.1], [-25, -0.1]]})
    with pytest.raises(InputError, match="injection spec: pm_phi2: "):
        InjectionSpec.from_dict({**SPEC, "pm_phi2": "fast"})
    with pytest.raises(InputError, match="injection spec: profile: 'plummer' is not one of core_wings, gaussian"):
        InjectionSpec.from_dict({**SPEC, "profile": "plummer"})
    with pytest.raises(InputError, match="profile_parameters: 'phi2_dof' is not a parameter of the gaussian profile"):
        InjectionSpec.from_dict({**SPEC, "profile_parameters": {"phi2_dof": 3.0}})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "streammix", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cli_inject(gd1, shared_data, tmp_path):
    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "n_stars": 150}))
    catalog = shared_data / "gd1_dr2" / "gd1_pm_box_dr2_ps1.fits"
    config = ROOT / "configs" / "gd1_dr2_photometry.yaml"
    out = tmp_path / "injected.fits"
    done = _cli("inject", catalog, "--config", config, "--spec", spec, "--out", out, "--seed", 3)
    assert done.returncode == 0, done.stderr
    table = Table.read(out)
    assert int(np.sum(table["injected"])) == 150 and len(table) == len(gd1[0]) + 150
    assert sorted(p.name for p in tmp_path.iterdir()) == ["injected.fits", "spec.yaml"]
    # a bad spec key: one line, exit 2, nothing written
    spec.write_text(yaml.safe_dump({**SPEC, "n_starz": 150}))
    bad = _cli("inject", catalog, "--config", config, "--spec", spec, "--out", tmp_path / "bad.fits")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [f"error: injection spec '{spec}': n_starz: Extra inputs are not permitted"]
    assert not (tmp_path / "bad.fits").exists()


def test_a_soft_magnitude_limit_is_recovered_from_the_injected_counts(gd1):
    """Donors matched in PS1 i, kept with probability Phi((20.3 - i) / 0.15): the faint end of the
    injected stars' observed i gives back that limit (streammix.magnitude_limit)."""
    from streammix.magnitude_limit import fit_magnitude_limit

    catalog, config = gd1
    spec = {**SPEC, "n_stars": 3000, "donor_band": "ps1_i", "magnitude_limit": 20.3, "magnitude_limit_width": 0.15}
    out = inject_stream(catalog, InjectionSpec.from_dict(spec), config, seed=11)
    i = floats(out["i_mean_psf_mag"])[np.asarray(out["injected"], bool)]
    i = i[np.isfinite(i)]  # the stars whose donors have PS1 (1,970 of 3,000)
    assert np.mean(i > 20.3) > 0.03  # soft: a hard limit keeps none beyond it (measured 0.050)
    fit = fit_magnitude_limit(i, brightest=19.0)
    assert fit.limit == pytest.approx(20.3, abs=0.05)  # measured 20.275
    assert fit.width == pytest.approx(0.15, abs=0.05)  # measured 0.156
