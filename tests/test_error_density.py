"""The stream's density of the parallax error against the field's (streammix.error_density)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from streammix.components import BackgroundComponent, NetworkSettings, StreamComponent
from streammix.config import ModelConfig
from streammix.data import StarTable
from streammix.error_density import ERROR_POINTS, ErrorDensity, error_density
from streammix.error_relation import ErrorRelation, fit_error_relation
from streammix.isochrone import default_isochrone
from streammix.mixture import Mixture, prepare_stars
from streammix.photometry import Kroupa, PhotometricLikelihood

BANDS = ["gaia_g", "gaia_rp"]
RELATION = ErrorRelation(-4.6, (0.15, 0.07), 0.1, quadratic=(0.01, 0.0, 0.0), centre=(19.0, 18.5))
LIMITS = (12.0, 20.5)
LIMIT_ERROR = 0.1


@pytest.fixture(scope="module")
def likelihood():
    iso = default_isochrone(12.0, -1.5).select(["main_sequence"])
    like = PhotometricLikelihood(
        iso, BANDS, phases=["main_sequence"], magnitude_limits={"gaia_g": LIMITS}, limit_error=LIMIT_ERROR,
        n_nodes=400, dtype=torch.float64,
    )
    return iso, like


def _field(n=20_000, seed=0):
    return 10 ** np.random.default_rng(seed).normal(-0.4, 0.3, n)


def test_the_stream_table_is_its_luminosity_function_through_the_error_relation(likelihood):
    """Against a Monte Carlo of the generative process: masses from the mass function,
    magnitudes from the isochrone, the magnitude limit applied to a noisy magnitude, and
    the error drawn from the relation."""
    iso, like = likelihood
    distmod = 15.0
    density = error_density(like, RELATION, _field(), (14.0, 14.0 + 63 * 0.05), dtype=torch.float64)
    row = int(np.argmin(np.abs(density.distmod.numpy() - distmod)))
    assert abs(float(density.distmod[row]) - distmod) < 1e-9
    grid = density.log_err.numpy()
    table = np.exp(density.stream_log_density[row].numpy())
    step = grid[1] - grid[0]
    assert table.sum() * step == pytest.approx(1.0, abs=2e-3)  # a density in log10 error

    rng = np.random.default_rng(1)
    masses = np.linspace(iso.initial_mass.min(), iso.initial_mass.max(), 200_001)
    cdf = np.cumsum(Kroupa().pdf(masses, (masses[0], masses[-1])))
    mass = np.interp(rng.uniform(0, cdf[-1], 400_000), cdf, masses)
    mags = iso.absolute_mags(mass, BANDS) + distmod
    observed = mags[:, 0] + LIMIT_ERROR * rng.standard_normal(len(mass))
    kept = (observed > LIMITS[0]) & (observed < LIMITS[1])
    log_err = RELATION.mean(mags[kept]) + RELATION.scatter * rng.standard_normal(kept.sum())
    empirical = np.searchsorted(np.sort(log_err), grid) / kept.sum()
    modelled = np.cumsum(table) * step
    assert np.max(np.abs(empirical - modelled)) < 0.02
    assert 0.02 < kept.mean() < 0.9  # the limit mattered (the faint low-mass stars are cut)


def test_the_field_table_is_a_kernel_density_of_the_field_errors(likelihood):
    _, like = likelihood
    density = error_density(like, RELATION, np.r_[_field(), np.nan, -1.0], (14.0, 16.0), dtype=torch.float64)
    grid = density.log_err.numpy()
    gaussian = np.exp(-0.5 * ((grid + 0.4) / 0.3) ** 2) / (0.3 * np.sqrt(2 * np.pi))
    inside = np.abs(grid + 0.4) < 0.6
    np.testing.assert_allclose(np.exp(density.field_log_density.numpy())[inside], gaussian[inside], rtol=0.05)
    assert density.log_err.numel() == ERROR_POINTS


def test_log_ratio_interpolates_in_both_axes_holds_at_the_ends_and_passes_gradients():
    distmod = torch.tensor([14.0, 15.0, 16.0], dtype=torch.float64)
    log_err = torch.linspace(-2.0, 1.0, 31, dtype=torch.float64)
    stream = distmod[:, None] * 0.5 + log_err[None, :] * 2.0  # linear in both: interpolation is exact
    density = ErrorDensity(distmod, log_err, stream, torch.zeros(31, dtype=torch.float64))
    dm = torch.tensor([14.25, 15.5, 13.0, 17.0], dtype=torch.float64, requires_grad=True)
    err = torch.tensor([10**-0.55, 10**0.33, 10**-3.0, 10**2.0], dtype=torch.float64)
    got = density.log_ratio(dm, err)
    expected = torch.tensor([14.25 * 0.5 - 1.1, 15.5 * 0.5 + 0.66, 14.0 * 0.5 - 4.0, 16.0 * 0.5 + 2.0], dtype=torch.float64)
    torch.testing.assert_close(got, expected)
    got[:2].sum().backward()
    torch.testing.assert_close(dm.grad, torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64))


def test_shapes_and_empty_inputs_are_refused(likelihood):
    _, like = likelihood
    with pytest.raises(ValueError, match="shapes"):
        ErrorDensity(torch.zeros(3), torch.zeros(4), torch.zeros(3, 5), torch.zeros(4))
    with pytest.raises(ValueError, match="1 field stars have a parallax error"):
        error_density(like, RELATION, np.array([0.3, np.nan]), (14.0, 16.0))
    with pytest.raises(ValueError, match="the same parallax error"):
        error_density(like, RELATION, np.full(50, 0.3), (14.0, 16.0))
    with pytest.raises(ValueError, match="range"):
        error_density(like, RELATION, _field(), (16.0, 14.0))
    with pytest.raises(ValidationError, match="error_density: needs parallax among the coordinates, bands"):
        ModelConfig(error_density=True)



def test_the_mixture_multiplies_the_density_by_the_ratio_only_for_the_stars_without_magnitudes(likelihood):
    _, like = likelihood
    coords = ["phi2", "parallax"]
    bounds = {"phi2": (-5, 5), "phi2_width": (0.05, 1), "distmod": (14, 16), "distmod_width": (0.01, 0.3)}
    torch.manual_seed(0)
    with_iso = StreamComponent("stream", coords, bounds, (-5, 5), NetworkSettings(hidden=8), photometry=like)
    without = StreamComponent("other", coords, bounds, (-5, 5), NetworkSettings(hidden=8))
    density = error_density(like, RELATION, _field(), (14.0, 16.0), dtype=torch.float64)
    args = dict(phi1_range=(-90, 10), grid_size=64)
    plain = Mixture([with_iso, without], BackgroundComponent((-5, 5), "uniform"), **args).double()
    modelled = Mixture([with_iso, without], BackgroundComponent((-5, 5), "uniform"), **args, error_density=density).double()
    modelled.load_state_dict(plain.state_dict(), strict=False)

    rng = np.random.default_rng(2)
    n = 100
    g = np.where(np.arange(n) < 50, rng.uniform(16, 20, n), np.nan)  # the first half has magnitudes
    table = StarTable(
        phi1=rng.uniform(-80, 0, n), phi2=rng.uniform(-4, 4, n), parallax=rng.normal(0.1, 0.3, n),
        parallax_err=10 ** rng.uniform(-1.5, 0.3, n), mags={"gaia_g": g, "gaia_rp": g - 0.7},
        mag_errs={"gaia_g": np.full(n, 0.02), "gaia_rp": np.full(n, 0.02)},
    )
    stars = prepare_stars(table, phi1_range=(-90, 10), grid_size=64, coordinates=coords, dtype=torch.float64)
    # through log_joint, with magnitudes not used: every star gets the term of the component with an
    # isochrone at its own distance modulus there, as a density term (the weights are untouched)
    astrometric = replace(stars, use_photometry=False)
    with torch.no_grad():
        difference = modelled.log_joint(astrometric) - plain.log_joint(astrometric)
        table_grid = modelled.parameter_table(modelled.grid)
        distmod_grid = modelled._component_params(table_grid, "stream")["distmod"]
        i = astrometric.grid_index
        distmod = torch.lerp(distmod_grid[i], distmod_grid[i + 1], astrometric.grid_weight)
        expected = density.log_ratio(distmod, astrometric.parallax_err)
    torch.testing.assert_close(difference[:, 0], expected)
    assert float(difference[:, 1:].abs().max()) == 0.0  # no isochrone, and the background: no term
    assert float(expected.abs().max()) > 0.5
    # with magnitudes used, the stars that have them take no term (their brightness is modelled)
    has_mag = torch.as_tensor(np.isfinite(g))
    with_mags = replace(stars, has_mag=torch.stack([has_mag, has_mag], dim=-1), photometry=object(), use_photometry=True)
    params = [{"distmod": torch.full((n,), 15.0, dtype=torch.float64)}, {}, {}]
    with torch.no_grad():
        terms = modelled._error_density_terms(with_mags, params)
    assert float(terms[:50].abs().max()) == 0.0
    torch.testing.assert_close(terms[50:, 0], density.log_ratio(params[0]["distmod"], stars.parallax_err)[50:])


def test_the_quadratic_relation_recovers_a_curved_one_the_linear_cannot():
    rng = np.random.default_rng(3)
    g = rng.uniform(14, 22, 5000)
    i = g - rng.uniform(0.2, 1.2, 5000)
    truth = -1.0 + 0.2 * (g - 18) + 0.02 * (g - 18) ** 2 - 0.05 * (g - i)
    err = 10 ** (truth + 0.1 * rng.standard_normal(5000))
    mags = np.stack([g, i], axis=1)
    linear, quadratic = fit_error_relation(err, mags), fit_error_relation(err, mags, degree=2)
    probe = np.array([[14.5, 14.0], [21.5, 21.0]])
    expected = -1.0 + 0.2 * (probe[:, 0] - 18) + 0.02 * (probe[:, 0] - 18) ** 2 - 0.05 * 0.5
    np.testing.assert_allclose(quadratic.mean(probe), expected, atol=0.02)
    assert np.max(np.abs(linear.mean(probe) - expected)) > 0.1
    assert quadratic.scatter == pytest.approx(0.1, abs=0.005)
    with pytest.raises(ValueError, match="degree 3"):
        fit_error_relation(err, mags, degree=3)


def test_a_saved_mixture_reads_its_tables_back():
    from streammix.config import Config
    from streammix.fit import build_mixture
    from streammix.mock import MockConfig, generate_mock
    from streammix.pipeline import demo_config, mock_columns

    stars_table, truth = generate_mock(MockConfig(n_stream=300, n_background=3000), seed=4)
    stars = StarTable.from_table(stars_table, mock_columns(["true_component"]))
    data = demo_config(truth, ensemble=1).model_dump(mode="json", exclude={"source"})
    data["model"]["error_density"] = True
    config = Config.from_dict(data)
    built = build_mixture(config, stars)
    assert float(built.error_density.stream_log_density.std()) > 0.1
    loaded = build_mixture(config)  # as a saved model is read: placeholders, then the state
    assert not torch.equal(loaded.error_density.stream_log_density, built.error_density.stream_log_density)
    loaded.load_state_dict(built.state_dict())
    for name in ("distmod", "log_err", "stream_log_density", "field_log_density"):
        torch.testing.assert_close(getattr(loaded.error_density, name), getattr(built.error_density, name))
