"""Residuals against the model: a structure the model lacks stands out at >= 3
sigma, and disappears once a component models it; p_member sums the stream's
components with percentiles over draws of the sum."""

import copy
import dataclasses
import warnings

import numpy as np
import pytest
from astropy.table import vstack
from scipy import stats

from streammix.config import Config
from streammix.data import StarTable
from streammix.errors import InputError
from streammix.fit import fit
from streammix.mock import MockConfig, generate_mock
from streammix.pipeline import demo_config, mock_columns
from streammix.residuals import position_residuals

SPUR_PHI1 = (-50.0, -30.0)
SPUR_OFFSET = 1.5  # deg above the stream


@pytest.fixture(scope="module")
def spurred():
    """A mock stream plus a 'spur': copies of its stars at -50 < phi1 < -30
    moved 1.5 deg up in phi2 (same proper motions and distances)."""
    table, truth = generate_mock(MockConfig(n_stream=600, n_background=5000), seed=8)
    stream = table[np.asarray(table["true_component"]) == "stream"]
    phi1 = np.asarray(getattr(stream["phi1"], "value", stream["phi1"]))
    spur = stream[(phi1 > SPUR_PHI1[0]) & (phi1 < SPUR_PHI1[1])]
    spur["phi2"] = spur["phi2"] + SPUR_OFFSET * getattr(spur["phi2"], "unit", 1)
    spur["source_id"] = spur["source_id"] + 10**9
    spur["true_component"] = "spur"
    both = vstack([table, spur])
    stars = StarTable.from_table(both, mock_columns(["true_component"]))
    return both, truth, stars, len(spur)


def config_for(truth, spur: bool) -> Config:
    cfg = demo_config(truth, ensemble=2, photometry=False)
    data = cfg.model_dump(mode="json", exclude={"source"})
    data["model"]["background"]["flow"].update({"epochs": 15, "hidden": 16, "transforms": 2})
    data["model"]["grid_size"] = 64
    data["fit"].update({"steps": 300, "warm_start_steps": 100, "patience": 100, "dropout_samples": 0, "workers": 1})
    if spur:
        stream = data["model"]["components"][0]
        points = [
            {**p, "value": p["value"] + (SPUR_OFFSET if p["parameter"] == "phi2" else 0.0)}
            for p in stream["control_points"]
        ]
        data["model"]["components"].append(
            {"name": "spur", "phi1_range": list(SPUR_PHI1), "control_points": points, "bounds": {"phi2": [-2.0, 4.0]}}
        )
    return Config.from_dict(data)


@pytest.fixture(scope="module")
def fits(spurred):
    _, truth, stars, _ = spurred
    return {spur: fit(config_for(truth, spur), stars) for spur in (False, True)}


def test_a_missing_spur_stands_out_and_a_modelled_one_does_not(spurred, fits):
    _, _, stars, n_spur = spurred
    region = (SPUR_PHI1, (SPUR_OFFSET - 0.5, SPUR_OFFSET + 0.5))
    without = position_residuals(fits[False], stars, phi1_step=5.0, phi2_step=0.25)
    with_spur = position_residuals(fits[True], stars, phi1_step=5.0, phi2_step=0.25)
    # without a spur component the spur's stars are selected by their kinematics but
    # expected on the stream's track: a large excess where the spur lies
    excess = without.region_significance(*region)
    assert excess > 8.0, excess
    assert without.significance.max() > 4.0
    # with one, the region is explained but for the spur's sharp ends, which the smooth
    # weights round off (3.1 sigma measured for this mock and seed), and no bin of the map
    # is off by 4 sigma or more
    assert abs(with_spur.region_significance(*region)) < min(3.5, excess / 3), excess
    assert np.abs(with_spur.significance).max() < 4.0
    assert without.observed.sum() == without.n_selected
    # the expected counts add up to the selected stars (every star's phi2 distribution sums to one)
    assert with_spur.expected.sum() == pytest.approx(with_spur.n_selected, rel=1e-4)


def test_p_member_is_the_sum_over_the_streams_components(spurred, fits, tmp_path):
    table, _, stars, _ = spurred
    model = fits[True]
    members = model.membership(stars)
    assert members.meta["member_components"] == ["stream", "spur"]
    np.testing.assert_allclose(members["p_member"], members["p_stream"] + members["p_spur"], atol=1e-6)
    # percentiles over draws of the sum: with two members the median is the mean of the two sums
    from streammix.membership import _with_member

    draws = []
    tensors = model.prepare(stars)
    for mixture in model.mixtures:
        draws.append(_with_member(mixture.membership(tensors).detach().numpy(), [0, 1])[:, -1])
    np.testing.assert_allclose(members["p_member_q50"], np.median(draws, axis=0), atol=1e-5)
    # the sum of two percentiles is not the percentile of the sum
    summed = np.asarray(members["p_stream_q95"]) + np.asarray(members["p_spur_q95"])
    assert np.all(np.asarray(members["p_member_q95"]) <= summed + 1e-6)
    # the figures count p_member, and the spur's tracks get a figure of their own
    from streammix.plot import save_figures

    written = save_figures(members, model.tracks(), tmp_path / "figures", other_components=["spur"])
    assert [p.name for p in written] == ["sky.png", "tracks.png", "probability.png", "tracks_spur.png"]
    truth = np.isin(np.asarray(table["true_component"]).astype(str), ["stream", "spur"])
    p = np.asarray(members["p_member"])
    assert np.mean(p[truth] > 0.5) > 0.8 and np.mean(truth[p > 0.5]) > 0.8


def test_bad_residual_requests(spurred, fits):
    _, _, stars, _ = spurred
    with pytest.raises(InputError, match="threshold"):
        position_residuals(fits[False], stars, threshold=1.5)
    with pytest.raises(InputError, match="components"):
        position_residuals(fits[False], stars, components=["spur"])


def test_cmd_residuals_equal_a_direct_sum_over_the_stars():
    """The CMD map's expected counts (the isochrone term by the fast path, prepared once for
    the grid per shared likelihood and group of effective errors, a component skipped where
    its share is negligible) equal a direct sum over the selected stars of each one's
    distribution over the grid points, with the reference isochrone likelihood at the star's
    own errors for every component and the background flows' density of the magnitudes,
    times (by default) the catalogue's relation of parallax errors to magnitudes at the
    star's error; observed and expected both count the selected stars. Two stream-like
    components share the likelihood, one limited to part of the field, and the isochrone
    has a colour spread, so the effective errors differ from the catalogue's."""
    import torch

    from streammix.fit import config_tensors
    from streammix.photometry import photometry_tensors
    from streammix.residuals import cmd_residuals

    table, truth = generate_mock(MockConfig(n_stream=300, n_background=3000), seed=3)
    bands = ["gaia_g", "gaia_rp"]
    stars = StarTable.from_table(table, mock_columns(bands))
    data = demo_config(truth, ensemble=1, photometry=True).model_dump(mode="json", exclude={"source"})
    data["model"]["bands"] = bands
    data["model"]["isochrone"]["nodes"] = 80
    data["model"]["background"] = {"blocks": [["parallax", "pm_phi1_cosphi2", "pm_phi2"], bands],
                                   "flow": {"epochs": 5, "hidden": 8, "transforms": 1}}  # fmt: skip
    data["model"]["grid_size"] = 64
    data["model"]["isochrone"]["colour_spread"] = 0.04
    # a second stream-like component 1 mag further away, so that its isochrone term differs from the stream's
    second = {**copy.deepcopy(data["model"]["components"][0]), "name": "second", "phi1_range": [-60.0, -30.0]}
    for point in second["control_points"]:
        if point["parameter"] == "distmod":
            point.update(value=point["value"] + 1.0, width=0.1)
    data["model"]["components"].append(second)
    data["fit"].update({"steps": 150, "astrometry_steps": 100, "warm_start_steps": 50, "dropout_samples": 0, "workers": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a short fit may not converge: the sums are what is tested
        model = fit(Config.from_dict(data), stars)
    maps = cmd_residuals(model, stars, threshold=0.5, colour_step=0.2, magnitude_step=0.5, subsample=1)
    plain = cmd_residuals(model, stars, threshold=0.5, colour_step=0.2, magnitude_step=0.5, subsample=1, errors_given=False)
    assert maps.n_selected > 50 and maps.observed.sum() == maps.n_selected
    assert maps.expected.sum() == pytest.approx(maps.n_selected, rel=1e-9)
    assert plain.error_relation is None and maps.error_relation is not None
    # the mock's parallax errors follow G (mock.py's Gaia DR3 medians): a tight relation
    assert 0.15 < maps.error_relation.slopes[0] + maps.error_relation.slopes[1] < 0.4
    assert maps.error_relation.scatter < 0.15
    assert maps.to_table().meta["error_relation"]["scatter"] == maps.error_relation.scatter

    # the direct sum: every selected star, every grid point (bin centres), the reference likelihood
    mixture = model.mixtures[0].eval()
    astrometric = model.background.log_prob(stars, exclude=bands)
    tensors = config_tensors(model.config, stars, astrometric, mixture=mixture, photometry=False)
    with torch.no_grad():
        share = torch.softmax(mixture.log_joint(tensors.astrometry_only(tensors.background_logp)), dim=-1).double().numpy()
    both = stars.observed[bands[0]] & stars.observed[bands[1]]
    selected = np.nonzero((share[:, :-1].sum(-1) > 0.5) & both)[0]
    assert len(selected) == maps.n_selected
    colour = 0.5 * (maps.x_edges[:-1] + maps.x_edges[1:])
    magnitude = 0.5 * (maps.y_edges[:-1] + maps.y_edges[1:])
    grid_c, grid_m = (a.ravel() for a in np.meshgrid(colour, magnitude, indexing="ij"))
    relation = maps.error_relation
    log_err_mean = relation.intercept + relation.slopes[0] * grid_m + relation.slopes[1] * (grid_m - grid_c)
    outputs = mixture.outputs_at(torch.as_tensor(stars.phi1[selected], dtype=mixture.grid.dtype))

    def direct_sum(outliers: float) -> tuple[np.ndarray, np.ndarray]:
        """The expected counts with and without the error relation, a share ``outliers`` of
        each stream-like component's stars with the field's magnitudes."""
        expected = np.zeros(grid_c.size)
        expected_plain = np.zeros(grid_c.size)
        for j, row in enumerate(selected):
            fake = stars[np.full(grid_c.size, row)]
            fake = dataclasses.replace(fake, mags={bands[0]: grid_m, bands[1]: grid_m - grid_c},
                                       mag_errs={b: fake.mag_errs[b] for b in bands}, source_id=np.arange(grid_c.size))  # fmt: skip
            field = np.exp(model.background.conditional_log_prob(fake, bands))
            density = share[row, -1] * field
            photometric = photometry_tensors(np.stack([fake.mags[b] for b in bands], 1), np.stack([fake.mag_errs[b] for b in bands], 1),
                                             np.stack([fake.extinction.get(b, np.zeros(grid_c.size)) for b in bands], 1),
                                             dtype=mixture.grid.dtype)  # fmt: skip
            for k, name in enumerate(("stream", "second")):
                like = mixture.components[k].photometry
                dm = outputs[name]["distmod"][j].expand(grid_c.size)
                width = outputs[name]["distmod_width"][j].expand(grid_c.size)
                with torch.no_grad():
                    on_isochrone = np.exp(like.log_prob(dm, width, photometric).double().numpy())
                density = density + share[row, k] * ((1 - outliers) * on_isochrone + outliers * field)
            expected_plain += density / density.sum()
            err = stars.parallax_err[row]
            has_err = bool(stars.observed["parallax"][row]) and np.isfinite(err) and err > 0  # else not reweighted
            given = density * (stats.norm.pdf(np.log10(err), log_err_mean, relation.scatter) if has_err else 1.0)
            expected += given / given.sum()
        return expected, expected_plain

    expected, expected_plain = direct_sum(0.0)
    assert mixture.components[0].photometry is mixture.components[1].photometry  # one likelihood, prepared once
    outside = ~((stars.phi1[selected] >= -60.0) & (stars.phi1[selected] <= -30.0))
    assert outside.any() and (share[selected[outside], 1] < 1e-9).all()  # the second component is skipped there
    np.testing.assert_allclose(maps.expected.ravel(), expected, atol=2e-3 * expected.max(), rtol=0)
    np.testing.assert_allclose(plain.expected.ravel(), expected_plain, atol=2e-3 * expected_plain.max(), rtol=0)
    # the errors move the prediction (a bright star is predicted bright)
    assert np.abs(expected - expected_plain).max() > 0.1 * expected.max()
    # a share of the stream-like components' stars off the isochrone (model.isochrone.outlier_fraction),
    # with the field's magnitudes: the same sum, with the selection the astrometry made unchanged
    mixture.outlier_fraction = 0.2
    spread = cmd_residuals(model, stars, threshold=0.5, colour_step=0.2, magnitude_step=0.5, subsample=1)
    assert spread.n_selected == maps.n_selected
    expected_spread, _ = direct_sum(0.2)
    np.testing.assert_allclose(spread.expected.ravel(), expected_spread, atol=2e-3 * expected_spread.max(), rtol=0)
    # and it moves counts off the isochrone (12 of 314 here)
    assert 0.5 * np.abs(expected_spread - expected).sum() > 0.02 * maps.n_selected


def test_the_error_relation_is_fitted_through_outliers_and_refuses_too_few_stars():
    """Two bands, known coefficients, 5 % of the errors wildly off (e.g. a bad
    astrometric solution): the clipped fit recovers the relation; 49 usable stars
    are too few, and the message names the setting."""
    from streammix.error_relation import fit_error_relation

    rng = np.random.default_rng(4)
    n = 4000
    g = rng.uniform(15.0, 21.5, n)
    i = g - rng.uniform(0.2, 1.5, n)
    log_err = -5.4 + 0.3 * g - 0.1 * (g - i) + 0.1 * rng.standard_normal(n)
    log_err[:200] += rng.uniform(1.0, 2.0, 200)
    err = 10**log_err
    err[200:260] = np.nan  # no parallax
    relation = fit_error_relation(err, np.stack([g, i], 1))
    # slopes on (g, i): 0.3 - 0.1 = 0.2 and 0.1
    assert relation.slopes == pytest.approx((0.2, 0.1), abs=0.01)
    assert relation.intercept == pytest.approx(-5.4, abs=0.1)
    assert relation.scatter == pytest.approx(0.1, abs=0.01)
    with pytest.raises(InputError, match=r"^error relation: 49 stars .* at least 50$"):
        fit_error_relation(err[300:349], np.stack([g, i], 1)[300:349])
