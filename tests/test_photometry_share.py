"""The share of the field's stars with magnitudes at a star's parallax error (streammix.photometry_share)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from streammix.components import BackgroundComponent, NetworkSettings, StreamComponent
from streammix.data import StarTable
from streammix.isochrone import default_isochrone
from streammix.mixture import Mixture, prepare_stars
from streammix.photometry import PhotometricLikelihood
from streammix.photometry_share import ERROR_POINTS, PhotometryShare, photometry_share


def _field(n=40_000, seed=5):
    return 10 ** np.random.default_rng(seed).normal(-0.4, 0.3, n)


def _share(err):  # 0.08 at 0.1 mas, 0.82 at 1 mas
    return 1.0 / (1.0 + np.exp(-2.5 * (np.log10(err) + 0.4)))


def test_the_table_is_the_share_that_drew_the_flags_over_the_share_overall():
    err = _field()
    has = np.random.default_rng(6).uniform(size=err.size) < _share(err)
    share = photometry_share(np.r_[err, np.nan, -1.0], np.r_[has, True, True], dtype=torch.float64)
    assert share.log_ratio.numel() == ERROR_POINTS
    probe = np.array([0.08, 0.15, 0.4, 1.0, 2.0])
    got = share.log_share(torch.as_tensor(probe)).numpy()
    # within 0.08 nats: the kernel's smoothing bias, largest where the share is smallest (0.072 at 0.08 mas)
    np.testing.assert_allclose(got, np.log(_share(probe)) - np.log(has.mean()), atol=0.08)
    assert got[-1] - got[0] > 1.5


def test_interpolation_between_and_beyond_the_grid_and_refusals():
    share = PhotometryShare(torch.linspace(-2.0, 1.0, 31, dtype=torch.float64), torch.linspace(-3.0, 3.0, 31, dtype=torch.float64))
    got = share.log_share(torch.tensor([10**-0.55, 10**-3.0, 10**2.0], dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor([-0.1, -3.0, 3.0], dtype=torch.float64))  # linear: exact
    with pytest.raises(ValueError, match="1-D, of one length"):
        PhotometryShare(torch.zeros(3), torch.zeros(4))
    err = _field(200)
    with pytest.raises(ValueError, match="3 photometry flags for 200 field stars"):
        photometry_share(err, np.ones(3, bool))
    with pytest.raises(ValueError, match="no field star has the model's magnitudes"):
        photometry_share(err, np.zeros(200, bool))
    with pytest.raises(ValueError, match="the same parallax error"):
        photometry_share(np.full(50, 0.3), np.ones(50, bool))
    with pytest.raises(ValueError, match="1 field stars have a parallax error"):
        photometry_share(np.array([0.3, np.nan]), np.ones(2, bool))


def test_the_mixture_multiplies_only_the_stars_with_magnitudes_of_components_with_an_isochrone():
    iso = default_isochrone(12.0, -1.5).select(["main_sequence"])
    like = PhotometricLikelihood(iso, ["gaia_g", "gaia_rp"], phases=["main_sequence"], n_nodes=50, dtype=torch.float64)
    coords = ["phi2", "parallax"]
    bounds = {"phi2": (-5, 5), "phi2_width": (0.05, 1), "distmod": (14, 16), "distmod_width": (0.01, 0.3)}
    torch.manual_seed(0)
    with_iso = StreamComponent("stream", coords, bounds, (-5, 5), NetworkSettings(hidden=8), photometry=like)
    without = StreamComponent("other", coords, bounds, (-5, 5), NetworkSettings(hidden=8))
    err = _field()
    share = photometry_share(err, np.random.default_rng(7).uniform(size=err.size) < _share(err), dtype=torch.float64)
    # normalised (a made-up normaliser rising with the distance modulus): the term reads each component's own
    grid = torch.linspace(13.0, 17.0, 9, dtype=torch.float64)
    share = PhotometryShare(share.log_err, share.log_ratio, grid, 0.1 * (grid - 15.0))
    mixture = Mixture([with_iso, without], BackgroundComponent((-5, 5), "uniform"), phi1_range=(-90, 10), grid_size=64,
                      photometry_share=share).double()  # fmt: skip

    rng = np.random.default_rng(2)
    n = 100
    g = np.where(np.arange(n) < 50, rng.uniform(16, 20, n), np.nan)  # the first half has magnitudes
    parallax = np.where(np.arange(n) % 10 == 0, np.nan, rng.normal(0.1, 0.3, n))  # every tenth has no parallax
    table = StarTable(
        phi1=rng.uniform(-80, 0, n), phi2=rng.uniform(-4, 4, n), parallax=parallax,
        parallax_err=10 ** rng.uniform(-1.5, 0.3, n), mags={"gaia_g": g, "gaia_rp": g - 0.7},
        mag_errs={"gaia_g": np.full(n, 0.02), "gaia_rp": np.full(n, 0.02)},
    )
    stars = prepare_stars(table, phi1_range=(-90, 10), grid_size=64, coordinates=coords, dtype=torch.float64)
    has_mag = torch.as_tensor(np.isfinite(g))
    with_mags = replace(stars, has_mag=torch.stack([has_mag, has_mag], dim=-1), photometry=object(), use_photometry=True)
    distmod = torch.as_tensor(rng.uniform(14.0, 16.0, n))
    params_of = [{"distmod": distmod}, {"distmod": distmod}, {}]
    with torch.no_grad():
        terms = mixture._photometry_share_terms(with_mags, params_of)
        # with the magnitudes not used (an astrometric score of a joint model), no star takes the term
        unused = mixture._photometry_share_terms(replace(with_mags, use_photometry=False), params_of)
    expected = share.log_share(stars.parallax_err) - 0.1 * (distmod - 15.0)  # the normaliser is linear: exact
    takes = np.isfinite(g) & np.isfinite(parallax)
    torch.testing.assert_close(terms[takes, 0], expected[takes])
    assert float(terms[~takes].abs().max()) == 0.0
    assert float(terms[:, 1:].abs().max()) == 0.0  # no isochrone, and the background
    assert float(expected[takes].abs().max()) > 0.3
    assert float(unused.abs().max()) == 0.0


def test_a_saved_mixture_reads_its_table_back():
    from streammix.config import Config
    from streammix.fit import build_mixture
    from streammix.mock import MockConfig, generate_mock
    from streammix.pipeline import demo_config, mock_columns

    stars_table, truth = generate_mock(MockConfig(n_stream=300, n_background=3000), seed=4)
    stars = StarTable.from_table(stars_table, mock_columns(["true_component"]))
    data = demo_config(truth, ensemble=1).model_dump(mode="json", exclude={"source"})
    data["model"]["error_density"] = True  # which builds the share too
    config = Config.from_dict(data)
    built = build_mixture(config, stars)
    loaded = build_mixture(config)  # as a saved model is read: a placeholder, then the state
    assert not torch.equal(loaded.photometry_share.log_err, built.photometry_share.log_err)
    loaded.load_state_dict(built.state_dict())
    for name in ("log_err", "log_ratio"):
        torch.testing.assert_close(getattr(loaded.photometry_share, name), getattr(built.photometry_share, name))


def test_normalised_the_term_averages_to_one_over_the_streams_stars():
    """Beside the learned weights the term is c(sigma) / E_LF[c]: against a Monte Carlo of a
    stream's stars (masses from the mass function, magnitudes from the isochrone, the magnitude
    limit on a noisy magnitude, errors from the relation), its mean over them is 1; the
    unnormalised c / c-bar's is not."""
    from streammix.error_density import error_density
    from streammix.error_relation import ErrorRelation
    from streammix.photometry import Kroupa
    from streammix.photometry_share import normalised

    bands, limits, limit_error = ["gaia_g", "gaia_rp"], (12.0, 20.5), 0.1
    relation = ErrorRelation(-4.6, (0.15, 0.07), 0.1, quadratic=(0.01, 0.0, 0.0), centre=(19.0, 18.5))
    iso = default_isochrone(12.0, -1.5).select(["main_sequence"])
    like = PhotometricLikelihood(iso, bands, phases=["main_sequence"], magnitude_limits={"gaia_g": limits},
                                 limit_error=limit_error, n_nodes=400, dtype=torch.float64)  # fmt: skip
    err = _field()
    share = photometry_share(err, np.random.default_rng(6).uniform(size=err.size) < _share(err), dtype=torch.float64)
    density = error_density(like, relation, err, (14.0, 14.0 + 63 * 0.05), dtype=torch.float64)
    norm = normalised(share, density)

    rng = np.random.default_rng(1)
    masses = np.linspace(iso.initial_mass.min(), iso.initial_mass.max(), 200_001)
    cdf = np.cumsum(Kroupa().pdf(masses, (masses[0], masses[-1])))
    for distmod in (14.5, 16.0):
        mass = np.interp(rng.uniform(0, cdf[-1], 200_000), cdf, masses)
        mags = iso.absolute_mags(mass, bands) + distmod
        observed = mags[:, 0] + limit_error * rng.standard_normal(len(mass))
        kept = (observed > limits[0]) & (observed < limits[1])
        sigma = 10 ** (relation.mean(mags[kept]) + relation.scatter * rng.standard_normal(kept.sum()))
        at = torch.full((sigma.size,), distmod, dtype=torch.float64)
        term = norm.log_share(torch.as_tensor(sigma), at).exp().numpy()
        assert term.mean() == pytest.approx(1.0, abs=0.01)
        # the unnormalised ratio's mean is E_LF[c] / c-bar, here well away from 1
        unnormalised = share.log_share(torch.as_tensor(sigma)).exp().numpy().mean()
        assert abs(unnormalised - 1.0) > 0.06  # 1.09 at distance modulus 14.5
        assert float(norm.log_share(torch.tensor([1.0], dtype=torch.float64), at[:1])) == pytest.approx(
            float(share.log_share(torch.tensor([1.0], dtype=torch.float64))) - np.log(unnormalised), abs=0.01
        )
    with pytest.raises(ValueError, match="needs both its distance moduli and its values"):
        PhotometryShare(share.log_err, share.log_ratio, density.distmod)


def test_the_setting_builds_the_normalised_table_and_is_refused_where_it_cannot_apply():
    from streammix.config import Config
    from streammix.errors import InputError
    from streammix.fit import build_mixture
    from streammix.mock import MockConfig, generate_mock
    from streammix.pipeline import demo_config, mock_columns

    stars_table, truth = generate_mock(MockConfig(n_stream=300, n_background=3000), seed=4)
    # the brighter stars lose their magnitudes more often, as in the GD-1 file: the share depends on the error
    rng = np.random.default_rng(8)
    lose = rng.uniform(size=len(stars_table)) < 0.8 * (stars_table["parallax_err"] < np.nanmedian(stars_table["parallax_err"]))
    for band in ("gaia_g", "gaia_bp", "gaia_rp"):
        stars_table[band] = np.where(lose, np.nan, stars_table[band])
    stars = StarTable.from_table(stars_table, mock_columns(["true_component"]))
    data = demo_config(truth, ensemble=1).model_dump(mode="json", exclude={"source"})
    data["model"]["error_weights"] = 5
    data["model"]["photometry_share"] = True
    config = Config.from_dict(data)
    built = build_mixture(config, stars)
    assert built.error_density is None and built.error_weights is not None
    from streammix.fit import _error_density, _error_relation, _field_errors, _photometry_share, control_priors
    from streammix.photometry_share import normalised

    field = _field_errors(config, stars, control_priors(config))
    expected = normalised(_photometry_share(config, field),
                          _error_density(config, built.components, field, _error_relation(config, stars)))  # fmt: skip
    torch.testing.assert_close(built.photometry_share.log_norm, expected.log_norm)
    torch.testing.assert_close(built.photometry_share.distmod, expected.distmod)
    assert float(expected.log_norm.abs().max()) > 0.05
    loaded = build_mixture(config)
    loaded.load_state_dict(built.state_dict())
    torch.testing.assert_close(loaded.photometry_share.log_norm, built.photometry_share.log_norm)
    # a model saved before the normaliser existed loads with none: the c / c-bar it computed
    old = {k: v for k, v in built.state_dict().items() if not k.startswith("photometry_share.") or k.endswith(("log_err", "log_ratio"))}
    loaded.load_state_dict(old)
    assert float(loaded.photometry_share.log_norm.abs().max()) == 0.0
    torch.testing.assert_close(loaded.photometry_share.log_ratio, built.photometry_share.log_ratio)

    data["model"]["error_weights"] = 0
    with pytest.raises(InputError, match="model: photometry_share: needs error_weights"):
        Config.from_dict(data)
    data["model"].update(error_weights=0, error_density=True)
    with pytest.raises(InputError, match="photometry_share: error_density is true"):
        Config.from_dict(data)
    data["model"].update(error_weights=5, error_density=False)
    data["model"]["isochrone"]["magnitude_limits"] = {}
    with pytest.raises(InputError, match=r"photometry_share: needs isochrone.magnitude_limits \(the luminosity"):
        Config.from_dict(data)
