"""A learned logit of the stream-like components for the stars with magnitudes (model.photometry_logits)."""

import numpy as np
import pytest
import torch

from streammix.config import Config
from streammix.errors import InputError
from streammix.error_weights import LOGIT_SCALE
from streammix.mixture import ERROR_LOGIT_WIDTH


def _with(fixture, **model):
    """The fixture's config dict with these model settings, in float64."""
    data, stars, has_mags = fixture
    data["model"].update(model)
    data["fit"]["dtype"] = "float64"
    return data, stars, has_mags


def test_the_logit_moves_the_odds_of_the_stars_with_magnitudes_only(mock_a_third_without_magnitudes):
    """With the logit at c, each star with magnitudes has its stream-to-background odds
    multiplied by exp(c) exactly, every other star's are unchanged; the prior is N(0, 3^2)
    on c, and a saved model reads the logit back."""
    from streammix.fit import build_mixture, config_tensors
    from streammix.model_io import mixture_bounds

    data, stars, has_mags = _with(mock_a_third_without_magnitudes, photometry_logits=True)
    config = Config.from_dict(data)
    torch.manual_seed(0)
    mixture = build_mixture(config, stars).double()
    tensors = config_tensors(config, stars, np.zeros(len(stars)), mixture=mixture)
    assert mixture.component_names == ("stream", "background")

    def log_odds():
        with torch.no_grad():
            joint = mixture.log_joint(tensors)
        return joint[:, 0] - joint[:, 1]

    def log_prior():
        with torch.no_grad():
            return float(mixture.log_prior([]))

    before, prior_before = log_odds(), log_prior()
    shift = 0.8  # nats
    with torch.no_grad():
        mixture.photometry_logits.fill_(shift / LOGIT_SCALE)  # trained in units of 1 / LOGIT_SCALE
    torch.testing.assert_close(mixture.photometry_logit_values(), torch.full((1,), shift, dtype=torch.float64))
    after = log_odds()
    # where the isochrone term can matter (elsewhere each takes its bound: Mixture._add_photometry)
    mags = torch.as_tensor(has_mags) & (before > -10.0)
    assert int(mags.sum()) > 100
    torch.testing.assert_close(after[mags] - before[mags], torch.full_like(after[mags], shift))
    assert bool((after[~torch.as_tensor(has_mags)] == before[~torch.as_tensor(has_mags)]).all())
    assert log_prior() - prior_before == pytest.approx(-0.5 * shift**2 / ERROR_LOGIT_WIDTH**2, rel=1e-9)
    loaded = build_mixture(config, bounds=mixture_bounds(mixture)).double()
    loaded.load_state_dict(mixture.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_joint(tensors), mixture.log_joint(tensors))
    # off by default: no such parameter
    assert build_mixture(Config.from_dict({**data, "model": {**data["model"], "photometry_logits": False}}), stars
                         ).photometry_logits is None  # fmt: skip


def test_a_model_without_magnitudes_or_normalised_as_a_whole_is_refused(mock_a_third_without_magnitudes):
    data, _, _ = _with(mock_a_third_without_magnitudes, photometry_logits=True)
    with pytest.raises(InputError, match="photometry_logits: needs bands and a component with photometry"):
        Config.from_dict({**data, "model": {**data["model"], "components": [
            {**c, "photometry": False} for c in data["model"]["components"]]}})  # fmt: skip
    # the mixture's normaliser over the cuts has the weights of the stars without magnitudes only
    with pytest.raises(InputError, match="photometry_logits: cut_normalisation is luminosity_function"):
        Config.from_dict({**data, "data": {**data["data"], "selection": {"parallax": [None, 0.3]}}, "model": {
            **data["model"], "error_density": True, "cut_normalisation": "luminosity_function"}})  # fmt: skip
