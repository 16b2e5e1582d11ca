"""The velocity-dispersion prior: a proper density of the widths given the distance,
in the units it says, and wired into the mixture's prior and the config."""

import numpy as np
import pytest
import torch

from streammix.config import Config
from streammix.dispersion import KMS_PER_MASYR_KPC, VelocityDispersionConfig, VelocityDispersionPrior
from streammix.errors import InputError
from streammix.fit import build_mixture


def test_the_prior_is_a_normalised_density_of_the_width_given_the_distance():
    prior = VelocityDispersionPrior(2.5, 0.3, (0.0,))
    width = torch.logspace(-5, 2, 200_001, dtype=torch.float64)
    for distmod in (12.0, 14.5, 17.0):
        logp = torch.stack([
            prior.log_prob({"distmod": torch.tensor([distmod], dtype=torch.float64), "pm_phi2_width": w.reshape(1)})
            for w in width[::1000]
        ])  # fmt: skip
        # integrate on the coarse log grid: dw = w dln w
        w = width[::1000]
        total = torch.trapezoid(torch.exp(logp) * w, torch.log(w))
        assert abs(float(total) - 1.0) < 1e-3, (distmod, float(total))


def test_the_median_is_in_km_per_s_at_the_components_distance():
    prior = VelocityDispersionPrior(2.5, 0.3, (0.0,))
    distmod = torch.tensor([14.5], dtype=torch.float64)  # 7.94 kpc
    distance = 10 ** (14.5 / 5 - 2)
    # the density of ln sigma peaks at ln 2.5: the width of 2.5 km/s
    width = torch.linspace(0.01, 0.2, 20_000, dtype=torch.float64)
    logp = torch.stack([prior.log_prob({"distmod": distmod, "pm_phi2_width": w.reshape(1)}) for w in width[::10]])
    ln_sigma_density = logp + torch.log(width[::10])  # the density of ln w (the Jacobian taken back)
    best = float(width[::10][int(torch.argmax(ln_sigma_density))])
    assert best * KMS_PER_MASYR_KPC * distance == pytest.approx(2.5, rel=2e-3)


def test_points_cover_the_range():
    prior = VelocityDispersionConfig(median=3.0, spacing=5.0).prior((-70.0, -20.0))
    assert prior.phi1[0] == -70.0 and prior.phi1[-1] == -20.0 and len(prior.phi1) == 11


def _config(**component):
    return Config.from_dict({
        "field": {"phi1": [-60.0, -20.0], "phi2": [-4.0, 4.0]},
        "model": {"coordinates": ["phi2", "parallax", "pm_phi1_cosphi2", "pm_phi2"], "background": {"blocks": []},
                  "components": [{"name": "stream", **component}]},
    })  # fmt: skip


def test_the_mixture_prior_adds_it_at_its_points():
    with_prior = build_mixture(_config(velocity_dispersion={"median": 3.0}))
    without = build_mixture(_config())
    without.load_state_dict(with_prior.state_dict())
    prior = with_prior.components[0].dispersion_prior
    assert prior is not None and without.components[0].dispersion_prior is None
    with torch.no_grad():
        difference = float(with_prior.log_prior([]) - without.log_prior([]))
        at = with_prior.outputs_at(torch.tensor(prior.phi1), masked=False)["stream"]
        expected = float(prior.log_prob(at))
    assert np.isfinite(expected) and difference == pytest.approx(expected, rel=1e-5)


def test_it_needs_a_distance():
    with pytest.raises(InputError, match=r"config: model: components.0.velocity_dispersion: stream needs proper motions and a "
                       r"distance \(parallax among the coordinates, or bands with photometry\)$"):
        Config.from_dict({
            "field": {"phi1": [-60.0, -20.0], "phi2": [-4.0, 4.0]},
            "model": {"coordinates": ["phi2", "pm_phi1_cosphi2", "pm_phi2"], "background": {"blocks": []},
                      "components": [{"name": "stream", "velocity_dispersion": {"median": 3.0}}]},
        })  # fmt: skip


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="median"):
        _config(velocity_dispersion={"median": -1.0})
