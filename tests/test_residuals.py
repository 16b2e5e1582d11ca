"""Residuals against the model: a structure the model lacks stands out at >= 3
sigma, and disappears once a component models it; p_member sums the stream's
components with percentiles over draws of the sum."""

import numpy as np
import pytest
from astropy.table import vstack

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
