"""The share of a component's stars that pass the catalogue's cuts (streammix.cut_fraction)."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from streammix.config import Config, ModelConfig
from streammix.cut_fraction import CutFraction
from streammix.data import StarTable
from streammix.error_relation import ErrorRelation
from streammix.errors import InputError
from streammix.isochrone import default_isochrone
from streammix.photometry import Kroupa, PhotometricLikelihood
from streammix.selection import SelectionCuts

BANDS = ["gaia_g", "gaia_rp"]
RELATION = ErrorRelation(-4.6, (0.15, 0.07), 0.1, quadratic=(0.01, 0.0, 0.0), centre=(19.0, 18.5))
LIMITS = (12.0, 21.0)
LIMIT_ERROR = 0.1
CUTS = SelectionCuts(parallax=(None, 0.5), pm_low=(-2.0, -1.5), pm_high=(2.0, 1.5))
RATIO = 1.7
ANGLE = 0.4


def _fraction():
    iso = default_isochrone(12.0, -1.5).select(["main_sequence"])
    like = PhotometricLikelihood(
        iso, BANDS, phases=["main_sequence"], magnitude_limits={"gaia_g": LIMITS}, limit_error=LIMIT_ERROR,
        n_nodes=400, dtype=torch.float64,
    )
    rotation = torch.tensor([[np.cos(ANGLE), -np.sin(ANGLE)], [np.sin(ANGLE), np.cos(ANGLE)]], dtype=torch.float64)
    grid = 65
    fraction = CutFraction(like, RELATION, CUTS, RATIO, -0.03, rotation.expand(grid, 2, 2), torch.full((grid, 2), 0.3))
    return iso, fraction


def test_the_fraction_is_the_share_of_a_monte_carlo_stream_that_passes_the_cuts():
    iso, fraction = _fraction()
    grid = 65  # 0.4 mas/yr and 0.2 mag between the computed points (every 8th)
    distmod = torch.linspace(14.0, 15.5, grid, dtype=torch.float64)
    pm1 = torch.linspace(-1.0, 2.5, grid, dtype=torch.float64)  # from inside the box to across its edge
    params = {
        "distmod": distmod, "distmod_width": torch.full((grid,), 0.05, dtype=torch.float64),
        "pm_phi1_cosphi2": pm1, "pm_phi2": torch.full((grid,), 0.2, dtype=torch.float64),
        "pm_phi1_cosphi2_width": torch.full((grid,), 0.3, dtype=torch.float64),
        "pm_phi2_width": torch.full((grid,), 0.2, dtype=torch.float64),
    }  # fmt: skip
    modelled = fraction.log_fraction(params).exp().numpy()
    rng = np.random.default_rng(0)
    masses = np.linspace(iso.initial_mass.min(), iso.initial_mass.max(), 100_001)
    cdf = np.cumsum(Kroupa().pdf(masses, (masses[0], masses[-1])))
    rotation = np.array([[np.cos(ANGLE), -np.sin(ANGLE)], [np.sin(ANGLE), np.cos(ANGLE)]])
    for g in (0, 4, 32, 44, 64):  # grid points computed directly (every 8th, and the last) and between
        n = 200_000
        mass = np.interp(rng.uniform(0, cdf[-1], n), cdf, masses)
        mags = iso.absolute_mags(mass, BANDS) + float(distmod[g])
        seen = mags[:, 0] + LIMIT_ERROR * rng.standard_normal(n)
        mags = mags[(seen > LIMITS[0]) & (seen < LIMITS[1])]
        m = len(mags)
        err = 10 ** (RELATION.mean(mags) + RELATION.scatter * rng.standard_normal(m))
        dm = float(distmod[g]) + 0.05 * rng.standard_normal(m)
        parallax = 10 ** ((10 - dm) / 5) - 0.03 + err * rng.standard_normal(m)
        pm = np.stack([float(pm1[g]) + 0.3 * rng.standard_normal(m), 0.2 + 0.2 * rng.standard_normal(m)], axis=1)
        pm = pm + RATIO * err[:, None] * rng.standard_normal((m, 2))
        icrs = pm @ rotation.T + 0.3
        passed = (parallax < 0.5) & np.all((icrs > [-2.0, -1.5]) & (icrs < [2.0, 1.5]), axis=1)
        print(g, round(float(modelled[g]), 4), round(float(passed.mean()), 4))
        tolerance = 0.006 if g % 8 == 0 else 0.012  # between the computed points: linear in log
        assert modelled[g] == pytest.approx(passed.mean(), abs=tolerance)
    assert modelled[0] > modelled[-1] + 0.2  # the box's edge mattered


def _twins(config, other, stars):
    """The mixtures of ``config`` and ``other`` with the same networks' state, and the stars' tensors
    (prepared as ``other``'s: the photometry and the per-star cuts are the same for both here)."""
    from streammix.fit import build_mixture, config_tensors

    torch.manual_seed(0)
    mixture = build_mixture(config, stars)
    torch.manual_seed(0)
    reference = build_mixture(other, stars)
    reference.load_state_dict(mixture.state_dict(), strict=False)
    return mixture, reference, config_tensors(other, stars, np.zeros(len(stars)), mixture=reference)


def test_configs_that_cannot_be_normalised_so_are_refused():
    with pytest.raises(ValidationError, match="luminosity_function: needs error_density: true"):
        ModelConfig(cut_normalisation="luminosity_function")
    with pytest.raises(ValidationError, match="luminosity_function: needs error_density: true"):
        ModelConfig(cut_normalisation="luminosity_function", error_weights=4)


def test_the_mixture_is_normalised_over_the_cuts_and_its_memberships_unchanged():
    from streammix.fit import build_mixture
    from streammix.mock import MockConfig, generate_mock
    from streammix.model_io import mixture_bounds
    from streammix.pipeline import demo_config, mock_columns

    stars_table, truth = generate_mock(MockConfig(n_stream=300, n_background=3000), seed=4)
    stars = StarTable.from_table(stars_table, mock_columns(["true_component"]))
    data = demo_config(truth, ensemble=1).model_dump(mode="json", exclude={"source"})
    plain = Config.from_dict(data)
    data["model"].update(error_density=True, cut_normalisation="luminosity_function")
    data["data"]["selection"] = {"parallax": [None, 0.3]}
    with pytest.raises(InputError, match="needs data.selection"):
        Config.from_dict({**data, "data": {**data["data"], "selection": None}})
    with pytest.raises(InputError, match="error_density: error_weights is 4; it must be 0"):
        Config.from_dict({**data, "model": {**data["model"], "error_weights": 4}})
    with pytest.raises(InputError, match="lack pm_phi1_cosphi2 and pm_phi2"):
        Config.from_dict({
            **data, "frame": "gd1", "data": {**data["data"], "selection": {"pmra": [-7.0, -2.0], "pmdec": [-15.0, -11.0]}},
            "model": {**data["model"], "coordinates": ["phi2", "parallax"],
                      "background": {**data["model"]["background"], "blocks": [["parallax", *data["model"]["bands"]]]}},
        })  # fmt: skip
    config = Config.from_dict(data)
    normalised, reference, tensors = _twins(config, plain, stars)
    with torch.no_grad():
        normaliser = normalised.log_normaliser(tensors)
        assert bool((normaliser < -1e-3).all()) and bool((normaliser <= 0).all())  # the cut loses stream stars
        table = normalised.parameter_table(normalised.grid)
        weights = torch.softmax(table[:, :2], dim=-1)
        share = normalised.cut_fraction.log_fraction(normalised._component_params(table, "stream")).exp()
        by_hand = torch.log(weights[:, 0] * share + weights[:, 1])
        i = tensors.grid_index
        torch.testing.assert_close(normaliser, torch.lerp(by_hand[i], by_hand[i + 1], tensors.grid_weight))
        torch.testing.assert_close(normalised.log_likelihood(tensors), reference.log_likelihood(tensors) - normaliser)
    # a saved model reads its relation and proper-motion ratio back
    loaded = build_mixture(config, bounds=mixture_bounds(normalised))
    loaded.load_state_dict(normalised.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_normaliser(tensors), normaliser)


def test_the_stars_with_photometry_are_divided_by_the_share_that_passes(mock_a_third_without_magnitudes):
    """``luminosity_function_with_photometry``: a component's density of a star whose magnitudes
    its isochrone models is divided by the share of its stars at that phi1 that pass the cuts; the
    other stars are divided star by star, as with ``stars_without_photometry``; no mixture normaliser."""
    from streammix.fit import build_mixture
    from streammix.model_io import mixture_bounds

    data, stars, has_magnitudes = mock_a_third_without_magnitudes
    without = ~has_magnitudes
    data["data"]["selection"] = {"parallax": [None, 0.3]}
    data["model"]["cut_normalisation"] = "stars_without_photometry"
    per_star = Config.from_dict(data)
    data["model"]["cut_normalisation"] = "luminosity_function_with_photometry"
    config = Config.from_dict(data)
    with pytest.raises(InputError, match="needs data.selection"):
        Config.from_dict({**data, "data": {**data["data"], "selection": None}})
    for change, message in (
        ({"isochrone": {**data["model"]["isochrone"], "magnitude_limits": {}}}, "needs isochrone.magnitude_limits"),
        ({"components": [{**c, "photometry": False} for c in data["model"]["components"]]}, "a component with photometry"),
        ({"error_density": True, "error_weights": 0}, "error_density: false"),
    ):
        with pytest.raises(InputError, match=message):
            Config.from_dict({**data, "model": {**data["model"], **change}})
    with pytest.raises(InputError, match="lack pm_phi1_cosphi2 and pm_phi2"):
        Config.from_dict({
            **data, "frame": "gd1", "data": {**data["data"], "selection": {"pmra": [-7.0, -2.0], "pmdec": [-15.0, -11.0]}},
            "model": {**data["model"], "coordinates": ["phi2", "parallax"],
                      "background": {**data["model"]["background"], "blocks": [["parallax", *data["model"]["bands"]]]}},
        })  # fmt: skip
    divided, reference, tensors = _twins(config, per_star, stars)
    with torch.no_grad():
        table = divided.parameter_table(divided.grid)
        difference = divided.log_joint(tensors, table) - reference.log_joint(tensors, table)
        share = divided.cut_fraction.log_fraction(divided._component_params(table, "stream"))
        i = tensors.grid_index
        at_star = torch.lerp(share[i], share[i + 1], tensors.grid_weight)
        has_mags = torch.as_tensor(~without)
        assert bool((at_star < -1e-3).all())  # the cut loses stream stars
        # where the isochrone term can matter (elsewhere each takes its bound: Mixture._add_photometry)
        reference_joint = reference.log_joint(tensors, table)
        matters = has_mags & (reference_joint[:, 0] - reference_joint[:, 1] > -10.0)
        assert int(matters.sum()) > 100
        torch.testing.assert_close(difference[matters, 0], -at_star[matters])
        assert bool((difference[~has_mags] == 0).all()) and bool((difference[:, 1] == 0).all())
        assert bool((divided.log_normaliser(tensors) == 0).all())
    # a saved model reads its cut fraction back
    loaded = build_mixture(config, bounds=mixture_bounds(divided))
    loaded.load_state_dict(divided.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_joint(tensors), divided.log_joint(tensors))
