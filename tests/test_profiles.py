"""Every cross-track profile against its own density: normalised on the field,
its CDF the integral of its density, its draws distributed as its density,
differentiable in every parameter. A new profile is one entry in CASES."""

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from streammix.config import ComponentConfig
from streammix.densities import truncated_normal_logpdf
from streammix.profiles import PROFILES, CoreWings, Gaussian, StudentT, get_profile

# (profile, its shape parameters): one entry per profile, shapes far from the Gaussian
CASES = [
    (Gaussian(), {}),
    (StudentT(), {"phi2_dof": 2.0}),
    (CoreWings(), {"phi2_wing_fraction": 0.3, "phi2_wing_ratio": 5.0}),
]
PHI2_RANGE = (-2.0, 3.0)


def _params(shape, center=-1.6, width=0.3):
    """A track near the field's low edge, so the truncation matters."""
    values = {"phi2": center, "phi2_width": width, **shape}
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}


def test_every_registered_profile_is_tested():
    assert sorted(type(p).name for p, _ in CASES) == sorted(PROFILES)


@pytest.mark.parametrize("profile, shape", CASES, ids=lambda c: getattr(c, "name", ""))
def test_density_integrates_to_one_on_the_field(profile, shape):
    params, err = _params(shape), torch.tensor(0.05, dtype=torch.float64)

    def density(x):
        return profile.log_prob(torch.tensor(x, dtype=torch.float64), err, params, PHI2_RANGE).exp().item()

    total, _ = integrate.quad(density, *PHI2_RANGE, points=[-1.6], limit=200)
    assert total == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("profile, shape", CASES, ids=lambda c: getattr(c, "name", ""))
def test_cdf_is_the_integral_of_the_density(profile, shape):
    params, err = _params(shape), torch.tensor(0.05, dtype=torch.float64)
    x = torch.tensor([-2.5, -2.0, -1.7, -1.6, -1.0, 0.5, 3.0, 4.0], dtype=torch.float64)
    cdf = profile.cdf(x, err, params, PHI2_RANGE).numpy()

    def density(v):
        return profile.log_prob(torch.tensor(v, dtype=torch.float64), err, params, PHI2_RANGE).exp().item()

    expected = [integrate.quad(density, PHI2_RANGE[0], min(max(v, PHI2_RANGE[0]), PHI2_RANGE[1]),
                               points=[-1.6] if v > -1.6 else None, limit=200)[0] for v in x.tolist()]
    np.testing.assert_allclose(cdf, expected, atol=1e-7)
    assert cdf[1] == 0.0 and cdf[-2] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("profile, shape", CASES, ids=lambda c: getattr(c, "name", ""))
def test_draws_follow_the_density(profile, shape):
    """Draws at zero error in a wide field, against the CDF (Kolmogorov-Smirnov)."""
    rng = np.random.default_rng(5)
    width, field = 0.3, (-60.0, 60.0)
    draws = width * profile.standard_draws(rng.standard_normal(20_000), {k: np.float64(v) for k, v in shape.items()}, rng)
    draws = draws[(draws > field[0]) & (draws < field[1])]
    params, zero = _params(shape, center=0.0, width=width), torch.tensor(0.0, dtype=torch.float64)

    def cdf(x):
        return profile.cdf(torch.as_tensor(x, dtype=torch.float64), zero, params, field).numpy()

    assert stats.kstest(draws, cdf).pvalue > 0.01


@pytest.mark.parametrize("profile, shape", CASES, ids=lambda c: getattr(c, "name", ""))
def test_log_prob_is_differentiable_in_every_parameter(profile, shape):
    params = {k: v.clone().requires_grad_(True) for k, v in _params(shape).items()}
    x = torch.linspace(-1.9, 2.9, 7, dtype=torch.float64)
    profile.log_prob(x, torch.full_like(x, 0.01), params, PHI2_RANGE).sum().backward()
    for name, value in params.items():
        assert value.grad is not None and torch.isfinite(value.grad).all() and value.grad.abs() > 0, name


def test_gaussian_is_the_truncated_normal_the_model_always_had():
    x = torch.linspace(-2, 3, 11, dtype=torch.float64)
    params, err = _params({}), torch.full_like(x, 0.1)
    expected = truncated_normal_logpdf(x, params["phi2"], torch.hypot(params["phi2_width"], err), *PHI2_RANGE)
    assert torch.equal(Gaussian().log_prob(x, err, params, PHI2_RANGE), expected)


@pytest.mark.parametrize("dof", [1.0, 1.5, 4.0, 30.0])
def test_student_t_matches_scipy_across_its_dof_bounds(dof):
    params = {"phi2": torch.tensor(2.7, dtype=torch.float64), "phi2_width": torch.tensor(0.02, dtype=torch.float64),
              "phi2_dof": torch.tensor(dof, dtype=torch.float64)}
    x = torch.tensor([-1.0, 2.6, 2.7, 2.95], dtype=torch.float64)
    ours = StudentT().log_prob(x, torch.zeros_like(x), params, PHI2_RANGE).numpy()
    t = stats.t(dof, loc=2.7, scale=0.02)
    np.testing.assert_allclose(ours, t.logpdf(x.numpy()) - np.log(t.cdf(3.0) - t.cdf(-2.0)), rtol=0, atol=1e-7)


def test_a_config_chooses_a_profile_by_name_and_refuses_unknown_ones():
    assert ComponentConfig(name="stream", profile="student_t").profile == "student_t"
    with pytest.raises(ValueError, match="unknown cross-track profile 'plummer'; choose from core_wings, gaussian"):
        ComponentConfig(name="stream", profile="plummer")
    with pytest.raises(ValueError, match="unknown cross-track profile"):
        get_profile("plummer")


def test_inverted_bounds_and_ranges_are_named():
    with pytest.raises(ValueError, match="phi2_dof: lower bound 5.0 must be below upper bound 2.0"):
        ComponentConfig(name="stream", profile="student_t", bounds={"phi2_dof": (5.0, 2.0)})
    with pytest.raises(ValueError, match="lower limit -20.0 must be below upper limit -30.0"):
        ComponentConfig(name="stream", phi1_range=(-20.0, -30.0))


@pytest.mark.parametrize("profile", [Gaussian(), CoreWings()])
def test_float32_field_far_from_the_track(profile):
    """The field 8-16 widths from the track: torch's float32 ndtr is 0 there, and a
    difference of it fell to the 1e-30 floor (a density tens of nats too high). Float32
    agrees with float64 (whose ndtr reaches 37 sd), and the Gaussian with scipy."""
    shape = {"phi2_wing_fraction": 0.01, "phi2_wing_ratio": 1.5} if isinstance(profile, CoreWings) else {}
    values = {"phi2": 0.0, "phi2_width": 0.125, **shape}
    field = (1.0, 2.0)
    results = {}
    for dtype in (torch.float32, torch.float64):
        params = {k: torch.tensor(v, dtype=dtype) for k, v in values.items()}
        phi2 = torch.tensor([1.05, 1.5, 1.95], dtype=dtype)
        results[dtype] = (
            profile.log_prob(phi2, torch.zeros(3, dtype=dtype), params, field).double(),
            profile.cdf(phi2, torch.zeros(3, dtype=dtype), params, field).double(),
        )
    (log32, cdf32), (log64, cdf64) = results[torch.float32], results[torch.float64]
    assert torch.allclose(log32, log64, rtol=1e-4) and torch.allclose(cdf32, cdf64, atol=1e-5)
    if isinstance(profile, Gaussian):
        a, b = field[0] / 0.125, field[1] / 0.125
        want = torch.tensor([stats.truncnorm.logpdf(x, a, b, 0.0, 0.125) for x in (1.05, 1.5, 1.95)], dtype=torch.float64)
        assert torch.allclose(log64, want, rtol=1e-6)
