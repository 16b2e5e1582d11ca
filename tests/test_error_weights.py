"""Mixture weights that depend on the parallax error (streammix.error_weights)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from streammix.components import BackgroundComponent, NetworkSettings, StreamComponent
from pydantic import ValidationError

from streammix.config import Config, ModelConfig
from streammix.data import StarTable
from streammix.error_weights import ErrorWeights, error_knots
from streammix.fit import fit
from streammix.mixture import Mixture, prepare_stars
from streammix.mock import MockConfig, generate_mock
from streammix.pipeline import demo_config, mock_columns

COORDS = ["phi2", "parallax", "pm_phi1_cosphi2", "pm_phi2"]
BOUNDS = {
    "phi2": (-5, 5), "phi2_width": (0.05, 1), "distmod": (13, 17), "distmod_width": (0.01, 0.3),
    "pm_phi1_cosphi2": (-15, 5), "pm_phi1_cosphi2_width": (0.05, 3), "pm_phi2": (-10, 10), "pm_phi2_width": (0.05, 3),
}


def test_logits_are_piecewise_linear_zero_at_the_middle_knot_and_flat_beyond():
    w = ErrorWeights([-2.0, -1.0, 0.0, 1.0], components=1)
    w.set_logits(torch.tensor([[4.0], [2.0], [-2.0]]))  # knots -2, -1, (0 pinned at 0), 1
    err = torch.exp(torch.tensor([-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]))
    got = w.logits(err)[:, 0]
    expected = torch.tensor([4.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -2.0])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert w.reference_logits()[:, 0].tolist() == [4.0, 2.0, 0.0, -2.0]


def test_knots_are_refused_when_too_few_or_not_increasing():
    with pytest.raises(ValueError, match="at least 3 increasing"):
        ErrorWeights([0.0, 1.0], components=1)
    with pytest.raises(ValueError, match="at least 3 increasing"):
        ErrorWeights([0.0, 0.0, 1.0], components=1)
    with pytest.raises(ValueError, match="positive parallax error"):
        error_knots(np.array([0.1, np.nan, -1.0]), 3)
    knots = error_knots(np.full(100, 0.3), 5)  # a catalogue of rounded errors: still increasing
    assert np.all(np.diff(knots) > 0)


def test_config_refuses_too_few_knots_or_no_parallax():
    with pytest.raises(ValidationError, match="error_weights 2"):
        ModelConfig(error_weights=2)
    with pytest.raises(ValidationError, match="parallax among the coordinates"):
        ModelConfig(error_weights=4, coordinates=["phi2", "pm_phi1_cosphi2", "pm_phi2"],
                    background={"blocks": [["pm_phi1_cosphi2", "pm_phi2"]]})
    assert ModelConfig(error_weights=4).error_weights == 4


def _mixture(error_weights):
    torch.manual_seed(0)
    comp = StreamComponent("stream", COORDS, BOUNDS, (-5, 5), NetworkSettings(hidden=8))
    return Mixture([comp], BackgroundComponent((-5, 5), "uniform"), (-90, 10), grid_size=64,
                   error_weights=error_weights).double()


def _stars(n=200, seed=1):
    rng = np.random.default_rng(seed)
    table = StarTable(
        phi1=rng.uniform(-80, 0, n), phi2=rng.uniform(-4, 4, n), parallax=rng.normal(0.2, 0.3, n),
        parallax_err=np.exp(rng.uniform(-3, 0.5, n)), pm_phi1_cosphi2=rng.normal(-5, 3, n),
        pm_phi2=rng.normal(0, 3, n), pm_phi1_cosphi2_err=np.full(n, 0.3), pm_phi2_err=np.full(n, 0.3),
    )
    return table, prepare_stars(table, phi1_range=(-90, 10), grid_size=64, coordinates=COORDS, dtype=torch.float64)


def test_untrained_error_weights_change_nothing_and_a_trained_term_moves_only_its_stars():
    table, stars = _stars()
    plain = _mixture(None).eval()
    weighted = _mixture(ErrorWeights(error_knots(table.parallax_err, 5), 1)).double().eval()
    torch.testing.assert_close(plain.log_likelihood(stars), weighted.log_likelihood(stars))
    weighted.error_weights.set_logits(torch.tensor([[-3.0], [-1.0], [1.0], [2.0]]))
    log_w = weighted.log_joint(stars) - plain.log_joint(stars)  # the components' own terms cancel
    bright = stars.parallax_err < torch.exp(weighted.error_weights.knots[0]).item()
    assert bright.any() and bool((log_w[bright, 0] < -2.5).all())  # a precise star: stream weight e^-3 smaller
    # stars whose magnitudes a joint model uses take no error term (their brightness is modelled)
    with_mags = replace(stars, has_mag=torch.ones(len(stars), 2, dtype=torch.bool), photometry=object())
    with torch.no_grad():
        assert float(weighted._error_logits(with_mags).abs().max()) == 0.0
        assert float(weighted._error_logits(stars)[:, 0].abs().max()) > 2.9
    # the grid's weights are the average over the training errors, still summing to one
    weights = weighted.grid_outputs()["weights"]
    torch.testing.assert_close(weights.sum(-1), torch.ones(64, dtype=torch.float64))


def test_log_weights_are_the_weights_of_the_log_joint_and_the_densities_do_not_depend_on_them():
    table, stars = _stars()
    weighted = _mixture(ErrorWeights(error_knots(table.parallax_err, 5), 1)).double().eval()
    with torch.no_grad():
        before_w, before_joint = weighted.log_weights(stars), weighted.log_joint(stars)
        torch.testing.assert_close(torch.logsumexp(before_w, -1), torch.zeros(len(stars), dtype=torch.float64))
        weighted.error_weights.set_logits(torch.tensor([[-3.0], [-1.0], [1.0], [2.0]]))
        after_w, after_joint = weighted.log_weights(stars), weighted.log_joint(stars)
    assert float((after_w - before_w).abs().max()) > 2.0  # the weights moved ...
    torch.testing.assert_close(after_joint - after_w, before_joint - before_w)  # ... and only the weights


@pytest.fixture(scope="module")
def fitted_with_error_weights():
    stars_table, truth = generate_mock(MockConfig(n_stream=800, n_background=12_000), seed=3)
    stars = StarTable.from_table(stars_table, mock_columns(["true_component"]))
    data = demo_config(truth, ensemble=1, photometry=False).model_dump(mode="json", exclude={"source"})
    data["model"]["background"]["flow"].update({"epochs": 25, "hidden": 24, "transforms": 2})
    data["model"]["grid_size"] = 128
    data["model"]["error_weights"] = 5
    data["fit"].update({"steps": 500, "dropout_samples": 0})
    return stars_table, stars, fit(Config.from_dict(data), stars)


def test_a_fit_learns_that_the_mock_stream_has_few_precise_stars_and_saves_it(tmp_path, fitted_with_error_weights):
    import streammix

    stars_table, stars, model = fitted_with_error_weights
    component = np.asarray(stars_table["true_component"])
    # the mock's stream is distant: 10 % of its stars have errors < 0.14 mas, of the field's < 0.067
    assert np.nanquantile(stars.parallax_err[component == "stream"], 0.1) > 1.5 * np.nanquantile(stars.parallax_err[component == "background"], 0.1)
    table = model.mixtures[0].error_weights.reference_logits().detach()[:, 0]
    print("error logits at the knots", table.tolist())
    assert float(table[0]) < float(table[-1]) - 0.5
    model.save(tmp_path / "model")
    again = streammix.load(tmp_path / "model")
    torch.testing.assert_close(again.mixtures[0].error_weights.knots, model.mixtures[0].error_weights.knots)
    a = model.membership(stars[:300], dropout_samples=0)
    b = again.membership(stars[:300], dropout_samples=0)
    np.testing.assert_allclose(a["p_stream"], b["p_stream"], atol=1e-6)


def test_initial_fractions_that_leave_the_background_nothing_are_refused():
    components = [{"name": name} for name in ("stream", "spur", "cocoon")]
    with pytest.raises(ValidationError, match="initial_fraction 0.4: the 3 stream-like components"):
        ModelConfig(initial_fraction=0.4, components=components)
    assert ModelConfig(initial_fraction=0.3, components=components).initial_fraction == 0.3
