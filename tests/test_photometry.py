"""Tests of the photometric (isochrone) likelihood against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.polynomial.legendre import leggauss
from scipy import integrate, stats
from scipy.special import logsumexp

from streammix import photometry
from streammix.errors import InputError
from streammix.isochrone import PHASES, default_isochrone, read_mist
from streammix.photometry import (
    Kroupa,
    PhotometricLikelihood,
    PowerLaw,
    Salpeter,
    Tabulated,
    photometry_tensors,
)

F64 = torch.float64
BANDS = ["gaia_g", "gaia_rp"]


@pytest.fixture(scope="module")
def iso():
    return default_isochrone(12.0, -1.5)


def t64(x):
    return torch.as_tensor(np.asarray(x, dtype=float), dtype=F64)


def log_prob(like, mags, err, distmod, width, extinction=None):
    stars = photometry_tensors(mags, err, extinction)
    n = stars.mags.shape[0]
    return like.log_prob(t64(np.full(n, distmod)), t64(np.full(n, width)), stars).numpy()


def kroupa_pdf(m):
    """Kroupa (2001) above 0.08 Msun, written out independently (continuous at 0.5)."""
    return np.where(m < 0.5, m**-1.3, 0.5 * m**-2.3)


def draw_masses(rng, n, low, high):
    """Inverse-CDF draws from the Kroupa IMF on a fine log-mass grid over [low, high]."""
    grid = np.exp(np.linspace(np.log(low), np.log(high), 400_001))
    pdf = kroupa_pdf(grid)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    return np.interp(rng.uniform(0, cdf[-1], n), cdf, grid)


def modelled_mass_range(iso):
    selected = iso.select(["main_sequence", "giant_branch", "horizontal_branch"])
    return selected.mass_min, selected.mass_max


def fine_masses(iso, per_interval=200):
    """Every tabulated mass interval (MS to the end of CHEB) cut in 200, with trapezoid Kroupa weights."""
    low, high = modelled_mass_range(iso)
    table = iso.initial_mass[(iso.initial_mass >= low) & (iso.initial_mass <= high)]
    frac = np.arange(per_interval) / per_interval
    mass = np.concatenate([(table[:-1, None] + frac * np.diff(table)[:, None]).ravel(), table[-1:]])
    step = np.diff(mass)
    weight = np.zeros_like(mass)
    weight[:-1] += 0.5 * step * kroupa_pdf(mass[:-1])
    weight[1:] += 0.5 * step * kroupa_pdf(mass[1:])
    return mass, weight / weight.sum()


# ----------------------------------------------------------------------------- mass functions


def test_mass_functions_match_direct_integrals():
    low, high = np.array([0.1, 0.3, 0.5, 0.7]), np.array([0.3, 0.5, 0.7, 0.8])
    direct = np.array([integrate.quad(kroupa_pdf, a, b)[0] for a, b in zip(low, high)])
    np.testing.assert_allclose(Kroupa().probabilities(low, high), direct / direct.sum(), rtol=1e-10)
    # a break inside an interval, and the very-low-mass piece
    direct = np.array([integrate.quad(lambda m: (m / 0.08) ** -0.3 if m < 0.08 else (m / 0.08) ** -1.3, a, b,
                                      points=[0.08])[0] for a, b in [(0.05, 0.1), (0.1, 0.2)]])  # fmt: skip
    np.testing.assert_allclose(Kroupa().probabilities(np.array([0.05, 0.1]), np.array([0.1, 0.2])),
                               direct / direct.sum(), rtol=1e-10)  # fmt: skip
    salp = np.array([integrate.quad(lambda m: m**-2.35, a, b)[0] for a, b in zip(low, high)])
    np.testing.assert_allclose(Salpeter().probabilities(low, high), salp / salp.sum(), rtol=1e-10)
    flat = PowerLaw(1.0).probabilities(low, high)  # alpha = 1: logarithmic
    np.testing.assert_allclose(flat, np.log(high / low) / np.log(0.8 / 0.1), rtol=1e-12)
    grid = np.linspace(0.1, 0.8, 2001)
    tab = Tabulated(grid, kroupa_pdf(grid))
    np.testing.assert_allclose(tab.probabilities(low, high), Kroupa().probabilities(low, high), rtol=1e-5)
    for bad in [(np.array([0.2, 0.1]), np.array([1.0, 1.0])), (np.array([0.1, 0.2]), np.array([1.0, -1.0]))]:
        with pytest.raises(InputError, match="Tabulated"):
            Tabulated(*bad)


# ----------------------------------------------------------------------------- normalisation


def test_integrates_to_one_within_the_limits(iso):
    """Over (G, G - RP) inside 12 < G < 20.5 (which cuts the main sequence and the giant branch tip)."""
    like = PhotometricLikelihood(iso, BANDS, magnitude_limits={"gaia_g": (12.0, 20.5)}, colour_spread=0.02,
                                 n_nodes=100, dtype=F64)  # fmt: skip
    g = np.linspace(12.0, 20.5, 241)
    colour = np.linspace(-0.8, 2.2, 121)
    gg, cc = np.meshgrid(g, colour, indexing="ij")
    mags = np.stack([gg.ravel(), (gg - cc).ravel()], axis=1)
    err = np.full_like(mags, 0.06)
    density = np.exp(log_prob(like, mags, err, 14.5, 0.1)).reshape(gg.shape)
    total = integrate.trapezoid(integrate.trapezoid(density, colour, axis=1), g)
    assert abs(total - 1.0) < 5e-3
    # without the normalisation the same integral is the fraction observed, clearly below one
    open_like = PhotometricLikelihood(iso, BANDS, colour_spread=0.02, n_nodes=100, dtype=F64)
    open_density = np.exp(log_prob(open_like, mags, err, 14.5, 0.1)).reshape(gg.shape)
    assert integrate.trapezoid(integrate.trapezoid(open_density, colour, axis=1), g) < 0.9


def test_matches_monte_carlo_of_the_generative_process(iso):
    rng = np.random.default_rng(42)
    distmod, width, err, faint = 14.5, 0.15, 0.05, 20.5
    n = 300_000
    mass = draw_masses(rng, n, *modelled_mass_range(iso))
    absolute = iso.absolute_mags(mass, BANDS)
    mags = absolute + distmod + width * rng.normal(size=(n, 1)) + err * rng.normal(size=(n, 2))
    mags = mags[(mags[:, 0] > 12.0) & (mags[:, 0] < faint)]
    colour = mags[:, 0] - mags[:, 1]

    like = PhotometricLikelihood(iso, BANDS, magnitude_limits={"gaia_g": (12.0, faint)}, n_nodes=250, dtype=F64)
    g_edges = np.linspace(12.0, faint, 35)
    c_edges = np.linspace(-0.5, 2.0, 26)
    counts, _, _ = np.histogram2d(mags[:, 0], colour, bins=[g_edges, c_edges])
    # expected counts: the density integrated over each bin on a 4 x 4 midpoint sub-grid
    sub = 4
    g_mid = g_edges[:-1, None] + (np.arange(sub) + 0.5) / sub * np.diff(g_edges)[:, None]
    c_mid = c_edges[:-1, None] + (np.arange(sub) + 0.5) / sub * np.diff(c_edges)[:, None]
    gg, cc = np.meshgrid(g_mid.ravel(), c_mid.ravel(), indexing="ij")
    points = np.stack([gg.ravel(), (gg - cc).ravel()], axis=1)
    density = np.exp(log_prob(like, points, np.full_like(points, err), distmod, width)).reshape(gg.shape)
    cell = np.diff(g_edges)[0] * np.diff(c_edges)[0] / sub**2
    expected = len(mags) * density.reshape(len(g_edges) - 1, sub, len(c_edges) - 1, sub).sum(axis=(1, 3)) * cell
    big = expected > 20
    assert big.sum() > 40
    # the bins cover almost all stars, and the density agrees bin by bin
    assert abs(expected.sum() / len(mags) - counts.sum() / len(mags)) < 5e-3
    chi2 = np.sum((counts[big] - expected[big]) ** 2 / expected[big])
    p_value = stats.chi2.sf(chi2, big.sum())
    assert p_value > 1e-3, (chi2, big.sum())


# ----------------------------------------------------------------------------- closed form vs dense


def dense_log_prob(like, mags, err, ext, has, distmod, width, colour_spread, limits=None, limit_index=0):
    """Brute force: explicit covariance, scipy densities, Gauss-Legendre along each segment."""
    t, w = leggauss(96)
    t, w = 0.5 * (t + 1.0), 0.5 * w
    start, delta, log_weight = like.start.numpy(), like.delta.numpy(), like.log_weight.numpy()
    out = []
    for i in range(len(mags)):
        obs = np.flatnonzero(has[i])
        if obs.size == 0:
            out.append(0.0)
            continue
        cov = np.diag(err[i, obs] ** 2 + 0.5 * colour_spread**2) + width[i] ** 2 * np.ones((obs.size, obs.size))
        points = start[:, None, obs] + t[None, :, None] * delta[:, None, obs] + distmod[i] + ext[i, obs]
        logn = stats.multivariate_normal(np.zeros(obs.size), cov).logpdf((mags[i, obs] - points).reshape(-1, obs.size))
        per_segment = logsumexp(logn.reshape(len(start), len(t)) + np.log(w), axis=1)
        value = logsumexp(log_weight + per_segment)
        if limits is not None and has[i, limit_index]:
            j = limit_index
            sigma = np.sqrt(err[i, j] ** 2 + 0.5 * colour_spread**2 + width[i] ** 2)
            mu = start[:, None, j] + t[None, :] * delta[:, None, j] + distmod[i] + ext[i, j]
            inside = stats.norm.cdf((limits[1] - mu) / sigma) - stats.norm.cdf((limits[0] - mu) / sigma)
            value -= np.log(np.sum(np.exp(log_weight) * (inside @ w)))
        out.append(value)
    return np.array(out)


def test_rank_one_closed_form_matches_dense_covariance(iso):
    bands = ["gaia_g", "gaia_bp", "gaia_rp"]
    like = PhotometricLikelihood(iso, bands, magnitude_limits={"gaia_g": (14.0, 20.0)}, colour_spread=0.03,
                                 n_nodes=120, dtype=F64)  # fmt: skip
    rng = np.random.default_rng(3)
    n = 12
    pick = rng.integers(0, like.n_nodes, n)
    distmod = rng.uniform(14.0, 15.5, n)
    width = rng.uniform(0.01, 0.4, n)
    ext = rng.uniform(0.0, 0.3, (n, 3))
    err = rng.uniform(0.005, 0.1, (n, 3))
    mags = like.start.numpy()[pick] + distmod[:, None] + ext + rng.normal(0, 0.1, (n, 3))
    has = rng.uniform(size=(n, 3)) > 0.3
    has[0] = [True, True, True]
    has[1] = [False, True, True]  # lacks the limit band: not normalised
    has[2] = [True, False, False]
    has[3] = [False, False, False]
    stars = photometry_tensors(np.where(has, mags, np.nan), err, ext)
    ours = like.log_prob(t64(distmod), t64(width), stars).numpy()
    ref = dense_log_prob(like, mags, err, ext, has, distmod, width, 0.03, limits=(14.0, 20.0))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)
    assert ours[3] == 0.0


def test_quadrature_matches_brute_force_mass_integral(iso):
    """The segment quadrature against a direct sum over 300,000 masses (independent weights)."""
    like = PhotometricLikelihood(iso, BANDS, dtype=F64)
    mass, weight = fine_masses(iso)
    absolute = iso.absolute_mags(mass, BANDS)
    # stars on the lower main sequence, turn-off, subgiant and giant branches, horizontal branch
    probe = iso.absolute_mags(np.array([0.4, 0.7, 0.79, 0.802, 0.806, 0.809, 0.8105]), BANDS) + 14.5
    probe = probe + np.array([0.03, -0.02])
    err, width = 0.02, 0.05
    cov = np.diag([err**2, err**2]) + width**2
    ref = [logsumexp(np.log(weight) + stats.multivariate_normal(m - 14.5, cov).logpdf(absolute)) for m in probe]
    ours = log_prob(like, probe, np.full_like(probe, err), 14.5, width)
    np.testing.assert_allclose(ours, ref, atol=0.02)


# ----------------------------------------------------------------------------- missing data, phases, grads


def test_missing_bands_use_the_marginal(iso):
    bands = ["gaia_g", "gaia_bp", "gaia_rp"]
    like = PhotometricLikelihood(iso, bands, dtype=F64)
    only_g_rp = PhotometricLikelihood(iso, ["gaia_g", "gaia_rp"], dtype=F64)
    only_g = PhotometricLikelihood(iso, ["gaia_g"], dtype=F64)
    true = iso.absolute_mags(np.array([0.6, 0.75, 0.806]), bands) + 14.6
    err = np.full_like(true, 0.03)
    with_bp_missing = log_prob(like, np.where([False, True, False], np.nan, true), err, 14.6, 0.1)
    np.testing.assert_allclose(with_bp_missing, log_prob(only_g_rp, true[:, [0, 2]], err[:, :2], 14.6, 0.1), atol=0.02)
    g_only = log_prob(like, np.where([False, True, True], np.nan, true), err, 14.6, 0.1)
    # one band: a 1-D mixture of normals, checked against scipy on a fine mass grid
    mass, weight = fine_masses(iso)
    g_abs = iso.absolute_mags(mass, ["gaia_g"])[:, 0]
    ref = [np.log(np.sum(weight * stats.norm.pdf(m, g_abs + 14.6, np.hypot(0.03, 0.1)))) for m in true[:, 0]]
    np.testing.assert_allclose(g_only, ref, atol=0.02)
    np.testing.assert_allclose(g_only, log_prob(only_g, true[:, :1], err[:, :1], 14.6, 0.1), atol=0.02)
    assert log_prob(like, np.full((2, 3), np.nan), err[:2], 14.6, 0.1).tolist() == [0.0, 0.0]


def test_gradients_are_finite_and_chunking_is_invisible(iso, monkeypatch):
    like = PhotometricLikelihood(iso, ["gaia_g", "gaia_bp", "gaia_rp"], magnitude_limits={"gaia_g": (12, 20.5)},
                                 n_nodes=60, dtype=F64)  # fmt: skip
    rng = np.random.default_rng(5)
    mags = like.start.numpy()[rng.integers(0, 60, 40)] + 14.5 + rng.normal(0, 0.05, (40, 3))
    mags[::7, 1] = np.nan
    mags[::11] = np.nan
    stars = photometry_tensors(mags, np.full((40, 3), 0.02))
    dm = t64(np.full(40, 14.4)).requires_grad_()
    s = t64(np.full(40, 0.08)).requires_grad_()
    whole = like.log_prob(dm, s, stars)
    grad_dm, grad_s = torch.autograd.grad(whole.sum(), (dm, s))
    assert torch.isfinite(grad_dm).all() and torch.isfinite(grad_s).all()
    assert torch.all(grad_dm[::11] == 0)
    # central differences in DM, star by star
    eps = 1e-5
    with torch.no_grad():
        numeric = (like.log_prob(dm + eps, s, stars) - like.log_prob(dm - eps, s, stars)) / (2 * eps)
    np.testing.assert_allclose(grad_dm.numpy(), numeric.numpy(), atol=1e-5)
    monkeypatch.setattr(photometry, "_CHUNK", 7 * 60 * 3)  # 7 stars per chunk, checkpointed
    chunked = like.log_prob(dm, s, stars)
    grad_chunked = torch.autograd.grad(chunked.sum(), dm)[0]
    np.testing.assert_allclose(chunked.detach().numpy(), whole.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad_chunked.numpy(), grad_dm.numpy(), rtol=0, atol=1e-12)


def test_phase_selection(iso):
    ms = PhotometricLikelihood(iso, BANDS, phases=["main_sequence"], dtype=F64)
    giants = PhotometricLikelihood(iso, BANDS, phases=["giant_branch"], dtype=F64)
    default = PhotometricLikelihood(iso, BANDS, dtype=F64)
    ms_mass = iso.initial_mass[iso.phase == PHASES["MS"]]
    assert ms.node_mass.max() <= ms_mass.max() and ms.phases == (PHASES["MS"],)
    assert giants.node_mass.min() > ms_mass.max()
    assert default.phases == tuple(PHASES[p] for p in ("MS", "SGB", "RGB", "CHEB"))
    # segments are dense where magnitudes change fast: giants (a tiny mass range) get many
    assert (default.node_mass.numpy() > ms_mass.max()).sum() > 0.3 * default.n_nodes
    giant = iso.absolute_mags(np.array([0.807]), BANDS) + 14.5
    assert log_prob(ms, giant, np.full((1, 2), 0.02), 14.5, 0.05)[0] < log_prob(default, giant, np.full((1, 2), 0.02), 14.5, 0.05)[0] - 20
    with pytest.raises(InputError, match="phase"):
        PhotometricLikelihood(iso, BANDS, phases=["red_clump"])


def test_bad_input_is_named(iso):
    with pytest.raises(InputError, match="bands"):
        PhotometricLikelihood(iso, ["ps1_g"])
    with pytest.raises(InputError, match="limit_band"):
        PhotometricLikelihood(iso, BANDS, magnitude_limits={"gaia_g": (12, 20), "gaia_rp": (11, 19)})
    with pytest.raises(InputError, match="bright limit"):
        PhotometricLikelihood(iso, BANDS, magnitude_limits={"gaia_g": (21, 20)})
    with pytest.raises(InputError, match="mag_err"):
        photometry_tensors(np.array([[18.0, 17.0]]), np.array([[-0.1, 0.1]]))


# ----------------------------------------------------------------------------- real isochrone and stars


def test_mist_ps1_isochrone_with_gd1_stars(shared_data):
    from astropy.table import Table

    mist = read_mist(shared_data / "isochrones" / "mist_v1.2_ps1_feh-1.35_12gyr.iso.cmd")
    like = PhotometricLikelihood(mist, ["ps1_g", "ps1_i"], magnitude_limits={"ps1_g": (-np.inf, 21.0)},
                                 n_nodes=120, dtype=F64)  # fmt: skip
    # normalised over g < 21 (open bright side): integrate over (g, g - i)
    g = np.linspace(12.0, 21.0, 181)
    colour = np.linspace(-1.0, 2.5, 71)
    gg, cc = np.meshgrid(g, colour, indexing="ij")
    mags = np.stack([gg.ravel(), (gg - cc).ravel()], axis=1)
    density = np.exp(log_prob(like, mags, np.full_like(mags, 0.08), 14.8, 0.1)).reshape(gg.shape)
    assert abs(integrate.trapezoid(integrate.trapezoid(density, colour, axis=1), g) - 1.0) < 1e-2

    # real GD-1 field stars (phi1 -55..-45, GD-1's densest stretch): the stream's log-likelihood
    # profile in DM, estimated as on-track minus off-track stars scaled by the phi2 area, peaks near
    # GD-1's distance (about 8 kpc, DM ~ 14.5); the on-track sum alone is pulled by foreground dwarfs.
    table = Table.read(shared_data / "gd1_dr2" / "gd1_pm_box_dr2_ps1.fits")
    gmag = np.asarray(table["g_mean_psf_mag"], dtype=float)
    imag = np.asarray(table["i_mean_psf_mag"], dtype=float)
    phi1, phi2 = np.asarray(table["phi1"], dtype=float), np.asarray(table["phi2"], dtype=float)
    good = (gmag < 21.0) & (imag < 30) & np.isfinite(gmag) & np.isfinite(imag) & (phi1 > -55) & (phi1 < -45)
    near = good & (np.abs(phi2) < 0.25)
    far = good & (np.abs(phi2) > 1.5)  # the field spans |phi2| < 5.5 deg
    assert near.sum() > 100 and far.sum() > 500
    mags = np.stack([gmag, imag], axis=1)
    grid = np.arange(13.5, 15.51, 0.2)

    def total(sel, dm):
        return log_prob(like, mags[sel], np.full((sel.sum(), 2), 0.03), dm, 0.1).sum()

    stream = [total(near, dm) - 0.5 / 8.0 * total(far, dm) for dm in grid]
    best = grid[int(np.argmax(stream))]
    assert 14.0 <= best <= 15.0, best
    assert 13.6 <= grid[int(np.argmax([total(near, dm) for dm in grid]))] < best


# ----------------------------------------------------------------------------- the prepared (fast) path


@pytest.fixture(scope="module")
def mock_photometry():
    from streammix.mock import MockConfig, generate_mock

    table, _ = generate_mock(MockConfig(n_stream=400, n_background=600), seed=5)
    bands = ["gaia_g", "gaia_bp", "gaia_rp"]
    mags = np.stack([np.asarray(table[b].value, dtype=float) for b in bands], axis=1)
    err = np.stack([np.asarray(table[f"{b}_err"].value, dtype=float) for b in bands], axis=1)
    mags[:20, 1:] = np.nan  # single-band stars
    mags[20:25] = np.nan  # no photometry at all
    return bands, mags, err


FAST_PATH_CASES = {
    "open": {},
    "faint": {"magnitude_limits": {"gaia_g": (0.0, 20.5)}},
    "both, limit_error, colour spread": {"magnitude_limits": {"gaia_g": (15.0, 20.0)}, "limit_error": 0.05,
                                          "colour_spread": 0.03},
    "rp, bright side open": {"magnitude_limits": {"gaia_rp": (-np.inf, 19.5)}},
}  # fmt: skip


@pytest.mark.parametrize("case", FAST_PATH_CASES)
@pytest.mark.parametrize("extinction", [False, True])
def test_fast_path_matches_the_reference(iso, mock_photometry, case, extinction):
    """log_prob_prepared against log_prob (the reference) on a grid of DM and spread,
    for one-, two- and three-band stars and stars with none. Measured (150 segments,
    these 1000 stars): without limits the dropped segments change log p by < 1e-8
    (9e-9) and its DM derivative by 3e-8; the truncation table adds up to 2.1e-3 in
    log p and 0.05 in its DM derivative (both with a faint limit and extinction)."""
    bands, mags, err = mock_photometry
    mags = mags.copy()
    mags[25:40, 0] = np.nan  # stars without the limit band (gaia_g): not normalised
    ext = np.random.default_rng(1).uniform(0.0, 0.3, mags.shape) if extinction else None
    like = PhotometricLikelihood(iso, bands, n_nodes=150, dtype=F64, **FAST_PATH_CASES[case])
    stars = photometry_tensors(mags, err, ext)
    prepared = like.prepare(stars, (13.0, 16.5))
    assert prepared.n_elements < 0.9 * len(mags) * like.n_nodes  # it does drop segments
    limited = like.limit_index is not None
    tol_logp, tol_grad = (2.5e-3, 0.1) if limited else (1e-7, 1e-6)
    n = len(mags)
    floor = torch.tensor(-3.0, dtype=F64)  # the dropped segments' error is absolute: compare log(e^-3 + L)
    for distmod in (13.2, 14.5, 16.3):
        for width in (0.01, 0.1, 0.3):
            dm, s = t64(np.full(n, distmod)).requires_grad_(), t64(np.full(n, width)).requires_grad_()
            reference = like.log_prob(dm, s, stars)
            fast = like.log_prob_prepared(dm, s, prepared)
            assert torch.all(fast[20:25] == 0) and torch.all(reference[20:25] == 0)
            diff = (torch.logaddexp(reference, floor) - torch.logaddexp(fast, floor)).abs().max()
            assert diff < tol_logp, (distmod, width, float(diff))
            likely = reference.detach() > -3.0
            grad_reference = torch.autograd.grad(reference.sum(), dm)[0]
            grad_fast = torch.autograd.grad(fast.sum(), dm)[0]
            grad_diff = (grad_reference - grad_fast)[likely].abs().max()
            assert grad_diff < tol_grad, (distmod, width, float(grad_diff))


def test_prepared_subset_with_repeats_equals_preparing_the_repeats(iso, mock_photometry):
    bands, mags, err = mock_photometry
    like = PhotometricLikelihood(iso, bands, n_nodes=100, dtype=F64)
    index = np.array([3, 3, 500, 21, 999, 3])
    whole = like.prepare(photometry_tensors(mags, err), (13.0, 16.5)).subset(torch.as_tensor(index))
    direct = like.prepare(photometry_tensors(mags[index], err[index]), (13.0, 16.5))
    dm, s = t64(np.full(index.size, 14.6)), t64(np.full(index.size, 0.05))
    np.testing.assert_allclose(like.log_prob_prepared(dm, s, whole), like.log_prob_prepared(dm, s, direct), rtol=1e-12)
    assert whole.n_elements == direct.n_elements


def test_truncation_matches_direct_integration(iso):
    """Z of the reference (summed over the segments) against a direct quadrature of the
    Kroupa-weighted luminosity function (measured: within 2e-5)."""
    like = PhotometricLikelihood(iso, BANDS, n_nodes=300, magnitude_limits={"gaia_g": (12.0, 20.5)}, dtype=F64)
    mass, weight = fine_masses(iso)
    g = iso.absolute_mags(mass, ["gaia_g"])[:, 0]
    for distmod, sigma in [(14.5, 0.05), (16.0, 0.3), (13.0, 0.01), (10.0, 0.2), (18.0, 0.002), (14.5, 1.0)]:
        direct = np.sum(weight * (stats.norm.cdf((20.5 - distmod - g) / sigma) - stats.norm.cdf((12.0 - distmod - g) / sigma)))
        reference = like.log_truncation(t64([distmod]), t64([sigma]), exact=True).exp().item()
        assert abs(reference - direct) < 1e-4, (distmod, sigma, reference, direct)


@pytest.mark.parametrize(
    "limits", [{"gaia_g": (12.0, 20.5)}, {"gaia_rp": (-np.inf, 19.0)}, {"gaia_g": (15.0, np.inf)}]
)
def test_truncation_table_matches_the_reference(iso, limits):
    """The fast path's table of Z against the sum over the segments, on a grid finer than
    the table's over the errors it covers (measured: within 5.1e-4 for these limits,
    7.4e-4 for PS1 g with the MIST isochrone; largest at errors near 1 mag or 1 mmag)."""
    like = PhotometricLikelihood(iso, BANDS, n_nodes=150, magnitude_limits=limits, dtype=F64)
    shift, sigma = torch.meshgrid(torch.arange(0.0, 25.0, 0.0137, dtype=F64),
                                  torch.logspace(-3.0, 0.0, 47, dtype=F64), indexing="ij")  # fmt: skip
    shift, sigma = shift.reshape(-1), sigma.reshape(-1)
    table = like.log_truncation(shift, sigma).exp()
    reference = like.log_truncation(shift, sigma, exact=True).exp()
    assert (table - reference).abs().max() < 1e-3


def test_mixture_skips_only_photometric_terms_that_cannot_matter(monkeypatch):
    """The mixture computes the isochrone term only where it can change a star's total
    (SKIP_MARGIN); computing it everywhere gives the same log-likelihood and memberships."""
    from streammix import mixture as mixture_module
    from streammix.fit import build_mixture, config_tensors, control_priors, warm_start
    from streammix.mock import MockConfig, generate_mock
    from streammix.data import StarTable
    from streammix.pipeline import demo_config, mock_columns

    table, truth = generate_mock(MockConfig(n_stream=300, n_background=3000), seed=7)
    stars = StarTable.from_table(table, mock_columns())
    config = demo_config(truth, ensemble=1)
    torch.manual_seed(0)
    mix = build_mixture(config, stars).double()
    warm_start(mix, config, control_priors(config), 200)
    mix.eval()
    background = np.random.default_rng(0).normal(-8.0, 1.0, len(stars))  # a plausible flow log-density
    tensors = config_tensors(config, stars, background, mixture=mix)
    tensors = type(tensors)(**{**tensors.__dict__, **{k: v.double() for k, v in tensors.__dict__.items()
                                                       if isinstance(v, torch.Tensor) and v.is_floating_point()}})
    with torch.no_grad():
        skipped = mix.log_joint(tensors)
        monkeypatch.setattr(mixture_module, "SKIP_MARGIN", float("inf"))
        full = mix.log_joint(tensors)
    total_skipped, total_full = torch.logsumexp(skipped, -1), torch.logsumexp(full, -1)
    assert torch.max(torch.abs(total_skipped - total_full)) < 1e-5
    np.testing.assert_allclose(torch.softmax(skipped, -1)[:, 0], torch.softmax(full, -1)[:, 0], atol=1e-5)
    # and it did skip: some stars' stream terms differ (they hold the bound, not the value)
    assert bool((skipped[:, 0] != full[:, 0]).any())


def test_closed_form_gradient_matches_autograd(iso, mock_photometry):
    """The fused pair sum's gradient (closed form) against autograd through the plain
    expressions, and torch.autograd.gradcheck, in float64."""
    from streammix.photometry import _PairSum, _segment_integral

    bands, mags, err = mock_photometry
    rows = np.r_[10:20, 25:75]  # single-band and three-band stars, all with some kept segment
    mags, err = mags[rows], err[rows]
    like = PhotometricLikelihood(iso, bands, n_nodes=80, dtype=torch.float64)
    prep = like.prepare(photometry_tensors(mags, err), (13.0, 16.5))
    n = len(prep)
    gen = torch.Generator().manual_seed(0)
    dm = (14.0 + 1.5 * torch.rand(n, generator=gen, dtype=torch.float64)).requires_grad_()
    s = (0.01 + 0.3 * torch.rand(n, generator=gen, dtype=torch.float64)).requires_grad_()

    def reference(dm, s):
        a0, b0, c0, h = prep.coef.unbind(-1)
        p = prep.precision
        shrink = 1.0 / (1.0 + s * s * p)
        w = dm[prep.star] - prep.distmod
        r = a0 + (p * shrink)[prep.star] * w * w
        d = b0 - shrink[prep.star] * h * w
        q = (c0 + (shrink / p)[prep.star] * h * h).clamp_min(0.0)
        v = _segment_integral(r, d, q)  # A0 includes -2 ln w_k
        out = torch.full((n,), -torch.inf, dtype=v.dtype)
        return torch.stack([torch.logsumexp(v[prep.star == i], 0) for i in range(n)]) if n else out

    def fused(dm, s):
        return _PairSum.apply(dm, s, prep.star, prep.distmod, prep.coef, prep.precision, n)

    weights = torch.rand(n, generator=gen, dtype=torch.float64)
    expected = reference(dm, s)
    got = fused(dm, s)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    g_expected = torch.autograd.grad((weights * expected).sum(), (dm, s))
    g_got = torch.autograd.grad((weights * got).sum(), (dm, s))
    for a, b in zip(g_got, g_expected):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    few = prep.subset(torch.arange(8))

    def fused_few(dm, s):
        return _PairSum.apply(dm, s, few.star, few.distmod, few.coef, few.precision, 8)

    inputs = (dm[:8].detach().clone().requires_grad_(), s[:8].detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(fused_few, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_zero_errors_are_allowed_only_with_a_colour_spread(iso):
    """A catalogue without magnitude errors (the GD-1 PS1 file): a colour spread c
    stands in for them, i.e. the same as errors of c / sqrt(2) and no spread."""
    mags = np.array([[19.2, 18.6], [20.1, 19.4]])
    dm, s = torch.full((2,), 14.6, dtype=torch.float64), torch.full((2,), 0.05, dtype=torch.float64)
    spread = PhotometricLikelihood(iso, BANDS, n_nodes=80, colour_spread=0.07, dtype=torch.float64)
    plain = PhotometricLikelihood(iso, BANDS, n_nodes=80, dtype=torch.float64)
    a = spread.log_prob(dm, s, photometry_tensors(mags, np.zeros_like(mags)))
    b = plain.log_prob(dm, s, photometry_tensors(mags, np.full_like(mags, 0.07 / np.sqrt(2))))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    with pytest.raises(InputError, match="gaia_g"):
        plain.log_prob(dm, s, photometry_tensors(mags, np.zeros_like(mags)))
    with pytest.raises(InputError, match="mag_err"):
        photometry_tensors(mags, -np.ones_like(mags))


# ----------------------------------------------------------------------------- the curve for plots


def test_curve_is_the_segment_ends_split_where_the_mass_jumps():
    """A hand-made isochrone with a magnitude jump at (nearly) equal mass: the curve's rows
    are each segment's start plus each run's last end (a plain loop over the segments),
    in two runs, shifted by DM and the extinction."""
    from streammix.isochrone import Isochrone

    mass = np.array([0.5, 0.6, 0.7, 0.7 * (1 + 1e-12), 0.75, 0.8])
    mags = {"gaia_g": np.array([8.0, 6.0, 5.0, 1.0, 0.8, 0.5]),
            "gaia_rp": np.array([7.0, 5.3, 4.4, 0.2, 0.1, -0.1])}  # fmt: skip
    jump = Isochrone(initial_mass=mass, phase=np.zeros(6, dtype=int), mags=mags, age=12.0, feh=-1.5,
                     source="jump")  # fmt: skip
    like = PhotometricLikelihood(jump, BANDS, n_nodes=12, dtype=F64)
    curve = like.curve(14.5, {"gaia_rp": 0.2})
    start, delta, edges = like.start.numpy(), like.delta.numpy(), like.mass_edges.numpy()
    rows, row_mass, run, current = [], [], [], 0
    for k in range(like.n_nodes):
        rows.append(start[k])
        row_mass.append(edges[k, 0])
        run.append(current)
        if k == like.n_nodes - 1 or edges[k + 1, 0] != edges[k, 1]:
            rows.append(start[k] + delta[k])
            row_mass.append(edges[k, 1])
            run.append(current)
            current += 1
    expected = np.array(rows) + 14.5 + np.array([0.0, 0.2])
    got = np.stack([curve[b].to_value("mag") for b in BANDS], axis=1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve["initial_mass"].to_value("Msun"), row_mass, rtol=0, atol=0)
    assert curve["run"].tolist() == run and current == 2
    assert len(curve) == like.n_nodes + 2
    jump_row = int(np.argmax(np.asarray(curve["run"]) == 1))
    assert curve["gaia_g"][jump_row - 1].value - curve["gaia_g"][jump_row].value == pytest.approx(4.0)
    assert curve.meta == {"distmod": 14.5, "extinction": {"gaia_rp": 0.2}}
    with pytest.raises(InputError, match="ps1_g"):
        like.curve(14.5, {"ps1_g": 0.1})


def test_segment_bounds_enclose_the_segment_term():
    """_segment_bounds against the closed form (float64) over forms of every kind: the
    least of Q inside the segment or at either end, long and short segments, near and far."""
    from streammix.photometry import _segment_bounds, _segment_integral

    gen = torch.Generator().manual_seed(3)
    n = 200_000
    q = torch.cat([10.0 ** (-12.0 + 16.0 * torch.rand(n // 2, generator=gen, dtype=F64)),
                   10.0 ** (-3.0 + 7.0 * torch.rand(n // 2, generator=gen, dtype=F64))])  # fmt: skip
    t_star = -3.0 + 7.0 * torch.rand(n, generator=gen, dtype=F64)  # the unconstrained least, often off [0, 1]
    d = q * t_star
    m = 10.0 ** (-2.0 + 5.0 * torch.rand(n, generator=gen, dtype=F64))
    r = m + d * d / q  # r - d^2/q >= 0, as the forms are (Cauchy-Schwarz)
    value = _segment_integral(r, d, q)
    upper, lower = _segment_bounds(r, d, q)
    assert bool(torch.isfinite(value).all())
    slack = 1e-9 * value.abs().clamp_min(1.0)
    assert bool((value <= upper + slack).all())
    assert bool((value >= lower - slack).all())
    # and they are close enough to prune with: within a few nats for most forms
    assert float((upper - lower).median()) < 6.0


def test_pair_sum_drops_only_pairs_that_cannot_matter(iso, mock_photometry, monkeypatch):
    """The fused pair sum with the pairs that cannot matter dropped (PAIR_MARGIN) against
    the sum over every prepared pair, value and gradient, in float64; and it drops most."""
    from streammix import photometry as photometry_module
    from streammix.photometry import _PairSum

    bands, mags, err = mock_photometry
    like = PhotometricLikelihood(iso, bands, n_nodes=150, dtype=F64)
    prep = like.prepare(photometry_tensors(mags, err), (13.0, 16.5))
    n = len(prep)
    gen = torch.Generator().manual_seed(1)
    for width in (0.005, 0.1, 0.3):
        dm = (13.0 + 3.5 * torch.rand(n, generator=gen, dtype=F64)).requires_grad_()
        s = torch.full((n,), width, dtype=F64, requires_grad=True)
        weights = torch.rand(n, generator=gen, dtype=F64)
        results, kept = {}, []
        relevant = photometry_module._relevant_pairs

        def counted(*args):  # the pairs kept, as the sum sees them
            keep = relevant(*args)
            kept.append(prep.n_elements if keep is None else keep.numel())
            return keep

        monkeypatch.setattr(photometry_module, "_relevant_pairs", counted)
        for margin in (photometry_module.PAIR_MARGIN, float("inf")):
            monkeypatch.setattr(photometry_module, "PAIR_MARGIN", margin)
            value = _PairSum.apply(dm, s, prep.star, prep.distmod, prep.coef, prep.precision, n)
            results[margin] = (value, *torch.autograd.grad((weights * value).sum(), (dm, s)))
        monkeypatch.undo()
        pruned, full = results[photometry_module.PAIR_MARGIN], results[float("inf")]
        torch.testing.assert_close(pruned[0], full[0], rtol=0, atol=1e-11)
        for a, b in zip(pruned[1:], full[1:]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
        # most pairs are left out at every spread; none without a margin
        assert kept[0] < 0.6 * prep.n_elements and kept[1] == prep.n_elements, (width, kept)


def test_pair_sum_keeps_a_nan_or_infinite_distance_modulus_nan(iso):
    """Leaving pairs out must not turn a non-finite input into a finite value (the fits
    skip a step whose loss or gradient is not finite)."""
    like = PhotometricLikelihood(iso, BANDS, n_nodes=80, dtype=F64)
    mags = iso.absolute_mags(np.array([0.6, 0.75, 0.7]), like.bands) + 14.7
    prepared = like.prepare(photometry_tensors(mags, np.full(mags.shape, 0.02)), (13.0, 16.5))
    dm = torch.tensor([np.nan, 14.7, np.inf], dtype=F64, requires_grad=True)
    value = like.log_prob_prepared(dm, torch.full((3,), 0.05, dtype=F64), prepared)
    assert bool(torch.isnan(value[0])) and bool(torch.isfinite(value[1])) and not bool(torch.isfinite(value[2]))
    (grad,) = torch.autograd.grad(value[1], dm)
    assert bool(torch.isfinite(grad[1]))
