"""The catalogue's selection: box probabilities against Monte Carlo, a stream-like
component normalised over the cuts, the GD-1 file's cuts mapped exactly, and
bad selection settings."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from streammix.components import NetworkSettings, StreamComponent
from streammix.config import Config
from streammix.errors import InputError
from streammix.selection import (
    SERIES_TERMS,
    SelectionCuts,
    _quadrature_log_probability,
    _series_log_probability,
    _series_terms,
    box_log_probability,
    interval_log_probability,
    selection_transform,
)


@pytest.mark.parametrize("seed", range(5))
def test_box_log_probability_matches_monte_carlo(seed):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 1.5, 2)
    a = rng.normal(0, 1, (2, 2))
    cov = a @ a.T + 0.05 * np.eye(2)
    low = rng.uniform(-3, 0, 2)
    high = low + rng.uniform(0.5, 4, 2)
    draws = rng.multivariate_normal(mean, cov, 400_000)
    expected = np.mean(np.all((draws > low) & (draws < high), axis=1))
    ours = box_log_probability(
        torch.tensor(mean[None]), torch.tensor(cov[None]), torch.tensor(low), torch.tensor(high)
    ).exp().item()
    assert ours == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / 400_000) + 1e-4)


def test_open_box_sides_and_far_boxes():
    mean, cov = torch.zeros(1, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)[None]
    inf = float("inf")
    half = box_log_probability(mean, cov, torch.tensor([-inf, -inf], dtype=torch.float64), torch.tensor([0.0, inf], dtype=torch.float64))
    assert half.exp().item() == pytest.approx(0.5, abs=1e-6)
    # a box 9 sd away: its probability, in float32 too (the far side closed or open)
    for dtype in (torch.float64, torch.float32):
        for high in (30.0, inf):
            far = box_log_probability(mean.to(dtype), cov.to(dtype), torch.tensor([9.0, 0.0], dtype=dtype), torch.tensor([high, 1.0], dtype=dtype))
            assert far.item() == pytest.approx(norm.logsf(9.0) + np.log(norm.cdf(1.0) - 0.5), rel=1e-4)
    # 20 sd away: the floor, below which a divided density can only be lowered
    far = box_log_probability(mean, cov, torch.tensor([20.0, 0.0], dtype=torch.float64), torch.tensor([30.0, 1.0], dtype=torch.float64))
    assert far.item() == pytest.approx(np.log(1e-30))


@pytest.mark.parametrize("distance", [3.0, 6.0, 9.0, 11.0, 15.0, 40.0])
def test_far_boxes_in_float32_as_in_float64(distance):
    """The fit runs in float32: a component's mean far outside the catalogue's box must be
    divided by what passes of it there too, or by no more than the floor. A difference of
    ndtr was 0 beyond 5.5 sd (floored at 1e-30), which let a GD-1 member's stream leave the
    box for a density no data can give (benchmarks/RESULTS.md, session 26)."""
    rng = np.random.default_rng(int(distance))
    a = rng.normal(0, 1, (6, 2, 2))
    cov = a @ np.swapaxes(a, 1, 2) + 0.2 * np.eye(2)
    sd = np.sqrt(cov[:, 0, 0])
    mean = np.stack([-7.0 - distance * sd, np.full(6, -13.0)], axis=1)  # left of pmra's side, within pmdec's
    box = torch.tensor([-7.0, -15.0]), torch.tensor([-2.0, -11.0])
    f64 = box_log_probability(torch.tensor(mean), torch.tensor(cov), *(b.double() for b in box))
    f32 = box_log_probability(torch.tensor(mean, dtype=torch.float32), torch.tensor(cov, dtype=torch.float32), *box)
    # no more than the first coordinate's tail alone (or the floor)
    exact_at_most = max(norm.logsf(distance), np.log(1e-30))
    assert (f64 <= exact_at_most + 1e-6).all() and (f32.double() <= exact_at_most + 1e-4).all()
    assert (f64 >= np.log(1e-30) - 1e-9).all()
    torch.testing.assert_close(f32.double(), f64, rtol=2e-4, atol=2e-3)
    # and the 1-D interval (the parallax cut), in log space to any depth
    m = torch.tensor([1.0 + distance, 1.0 - distance])
    exact = torch.tensor([norm.logcdf(-distance), norm.logcdf(distance)])
    ours = interval_log_probability(m, torch.ones(2), None, 1.0)
    torch.testing.assert_close(ours.double(), exact.double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_far_boxes_at_the_reach_and_in_a_correlated_coordinate(dtype):
    """No step at the edge of the quadrature's reach (an 8-sd reach fell to the floor at 8 sd,
    35 nats under the truth), and a far box in a strongly correlated second coordinate, whose
    probability lies at the first coordinate's rho times its distance: exact to rho 0.95, within
    a nat at 0.99 (a step 0.14 sd wide that the quadrature's nodes do not resolve)."""
    zero, eye = torch.zeros(1, 2, dtype=dtype), torch.eye(2, dtype=dtype)[None]
    for k in (7.9, 7.999, 8.0, 8.001, 10.0, 11.0):
        ours = box_log_probability(zero, eye, torch.tensor([k, -50.0], dtype=dtype), torch.tensor([60.0, 50.0], dtype=dtype))
        assert ours.item() == pytest.approx(norm.logsf(k), rel=1e-4)
    for rho, k in ((0.5, 8.0), (0.9, 10.0), (0.95, 10.0), (0.99, 9.0), (0.99, 11.0)):
        cov = torch.tensor([[[1.0, rho], [rho, 1.0]]], dtype=dtype)
        ours = box_log_probability(zero, cov, torch.tensor([-50.0, k], dtype=dtype), torch.tensor([50.0, 60.0], dtype=dtype))
        assert abs(ours.item() - norm.logsf(k)) < (0.01 if rho <= 0.95 else 1.0)


def _rows(rng, n, rho_scale):
    """Means around and off a GD-1-like box, errors from precise to imprecise, correlations up to rho_scale."""
    sd = np.exp(rng.uniform(np.log(0.05), np.log(4.0), (n, 2)))
    rho = np.clip(rng.normal(0.0, rho_scale, n), -0.97, 0.97)
    cov = np.empty((n, 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = sd[:, 0] ** 2, sd[:, 1] ** 2
    cov[:, 0, 1] = cov[:, 1, 0] = rho * sd[:, 0] * sd[:, 1]
    mean = np.stack([rng.uniform(-9.0, 0.0, n), rng.uniform(-17.0, -9.0, n)], axis=1)
    return torch.tensor(mean), torch.tensor(cov)


@pytest.mark.parametrize("rho_scale, share32", [(0.02, 0.75), (0.2, 0.5), (0.6, 0.25)])
def test_the_series_agrees_with_the_quadrature_where_it_is_summed(rho_scale, share32):
    """The tetrachoric series is used only where its proven bound holds: there it agrees
    with the quadrature (itself within 2e-9 in float64: the reference) in value and gradient, in float64
    and in float32, and the rows it leaves go to the quadrature."""
    rng = np.random.default_rng(int(rho_scale * 100))
    mean, cov = _rows(rng, 4000, rho_scale)
    box = torch.tensor([-7.0, -15.0], dtype=torch.float64), torch.tensor([-2.0, -11.0], dtype=torch.float64)
    reference = _quadrature_log_probability(mean, cov, *box)
    for dtype, tolerance in ((torch.float64, 3e-9), (torch.float32, 3e-5)):
        m, c = mean.to(dtype).requires_grad_(True), cov.to(dtype).requires_grad_(True)
        series, summed = _series_log_probability(m, c, *(b.to(dtype) for b in box))
        if dtype == torch.float32:  # most rows (float64's tolerance, 2e-14, sums fewer)
            assert summed.float().mean() > share32
        assert (series[summed].double() - reference[summed]).abs().max() < tolerance
        strong = (c[:, 0, 1] / torch.sqrt(c[:, 0, 0] * c[:, 1, 1])).abs() > 0.7
        assert not (summed & strong & (reference > np.log(1e-30))).any()  # except at the floor
        combined = box_log_probability(m, c, *(b.to(dtype) for b in box))
        assert (combined.double() - reference).abs().max() < (3e-9 if dtype == torch.float64 else 3e-4)
        (grad_mean,) = torch.autograd.grad(combined.sum(), m)
        m_ref = mean.clone().requires_grad_(True)
        (grad_ref,) = torch.autograd.grad(_quadrature_log_probability(m_ref, cov, *box).sum(), m_ref)
        assert torch.isfinite(grad_mean).all()
        assert (grad_mean.double() - grad_ref).abs().max() < (1e-7 if dtype == torch.float64 else 2e-3) * grad_ref.abs().max()


@pytest.mark.parametrize(
    "low, high, rho_scale",
    [
        ([-7.0, -15.0], [-2.0, -11.0], 0.03),
        ([-7.0, -15.0], [-2.0, -11.0], 0.2),
        ([-np.inf, -15.0], [-2.0, np.inf], 0.03),
        ([1.0, -15.0], [6.0, -11.0], 0.03),
    ],
)
def test_the_series_closed_form_gradient_is_the_series_own(low, high, rho_scale):
    """The series' closed-form gradient (the one the fits use) is autograd's through the
    same arithmetic, in the means and in each entry of the covariances (each on its own
    scale), on every summed row above the floor, in float64 and float32 (a box around the
    rows, with small and larger correlations, one open on two sides, one far off most of
    them); 0 on every other row (left to the quadrature, or on the floor); and finite
    everywhere."""
    rng = np.random.default_rng(11)
    mean, cov = _rows(rng, 3000, rho_scale)
    for dtype, tolerance in ((torch.float64, 1e-13), (torch.float32, 1e-5)):
        box = torch.tensor(low, dtype=dtype), torch.tensor(high, dtype=dtype)
        weights = torch.rand(len(mean), dtype=dtype, generator=torch.Generator().manual_seed(0))
        m, c = mean.to(dtype).requires_grad_(True), cov.to(dtype).requires_grad_(True)
        value, summed = _series_log_probability(m, c, *box)
        grads = torch.autograd.grad((weights * value).sum(), (m, c))
        m_ref, c_ref = mean.to(dtype).requires_grad_(True), cov.to(dtype).requires_grad_(True)
        value_ref, _, _, _ = _series_terms(m_ref, c_ref, *box)
        live = summed & (value_ref > math.log(1e-30))
        assert live.sum() > 50 and (~summed).sum() > 30
        grads_ref = torch.autograd.grad((weights * value_ref * live).sum(), (m_ref, c_ref))
        assert torch.equal(value.detach(), value_ref.detach())
        grad_mean, grad_cov = grads
        mean_ref, cov_ref = grads_ref
        pieces = [(grad_mean, mean_ref)] + [(grad_cov[:, i, j], cov_ref[:, i, j]) for i, j in ((0, 0), (0, 1), (1, 1))]
        for grad, grad_ref in pieces:
            assert torch.isfinite(grad).all()
            scale = grad_ref[live].abs().max()
            assert (grad[live] - grad_ref[live]).abs().max() <= tolerance * scale
            assert (grad[~live] == 0).all()
        assert (grad_cov[:, 1, 0] == 0).all()


def test_the_series_gradient_is_zero_on_the_floor():
    """A row whose axes each hold more than the floor (1e-30) but whose box holds less is
    summed and gets the floor, and no gradient: a density divided by it is only lowered."""
    for dtype in (torch.float64, torch.float32):
        mean = torch.zeros(1, 2, dtype=dtype, requires_grad=True)
        cov = torch.eye(2, dtype=dtype)[None].requires_grad_(True)
        box = torch.tensor([8.0, 8.0], dtype=dtype), torch.tensor([10.0, 10.0], dtype=dtype)  # 6e-16 each
        value, summed = _series_log_probability(mean, cov, *box)
        assert bool(summed) and value.item() == pytest.approx(math.log(1e-30), rel=1e-6)
        grads = torch.autograd.grad(value.sum(), (mean, cov))
        assert all((grad == 0).all() for grad in grads)


def test_the_series_gradient_matches_finite_differences():
    """The closed-form gradient against central differences (``gradcheck``, float64) on
    rows the series sums."""
    rng = np.random.default_rng(3)
    mean, cov = _rows(rng, 1000, 0.03)
    box = torch.tensor([-7.0, -15.0], dtype=torch.float64), torch.tensor([-2.0, -11.0], dtype=torch.float64)
    value, summed = _series_log_probability(mean, cov, *box)
    rows = torch.nonzero(summed & (value > -20.0)).squeeze(-1)[:40]
    assert len(rows) == 40
    m, c = mean[rows].clone().requires_grad_(True), cov[rows].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m, c: _series_log_probability(m, c, *box)[0], (m, c), eps=1e-7, atol=1e-7, rtol=1e-5)


def _reference_probability(mean, cov, low, high):
    """P(x in the box) of one row in float64 by adaptive quadrature (scipy) of the first
    coordinate's density times the conditional second's interval, mirrored into its lower tail."""
    from scipy.integrate import quad
    from scipy.special import ndtr

    sd1, sd2 = np.sqrt(cov[0, 0]), np.sqrt(cov[1, 1])
    rho = cov[0, 1] / (sd1 * sd2)
    spread = np.sqrt(1.0 - rho * rho)
    a1, b1 = max((low[0] - mean[0]) / sd1, -40.0), min((high[0] - mean[0]) / sd1, 40.0)
    a2, b2 = (low[1] - mean[1]) / sd2, (high[1] - mean[1]) / sd2

    def integrand(x):
        lo, hi = (a2 - rho * x) / spread, (b2 - rho * x) / spread
        inner = ndtr(-lo) - ndtr(-hi) if lo + hi > 0 else ndtr(hi) - ndtr(lo)
        return norm.pdf(x) * inner

    value, _ = quad(integrand, a1, b1, epsabs=0.0, epsrel=2e-14, limit=400)
    return value


def test_the_series_meets_its_float64_bound():
    """Where the series is summed in float64 it is within 1e-13 of an adaptive quadrature
    (scipy, asked for 2e-14): its bound, 100 eps (2.2e-14), and the reference's tolerance. A
    remainder bound too small by rho^2 fails here, where the float64 quadrature (2e-9) as the
    reference would hide it."""
    rng = np.random.default_rng(7)
    mean, cov = _rows(rng, 6000, 0.05)
    box = torch.tensor([-7.0, -15.0], dtype=torch.float64), torch.tensor([-2.0, -11.0], dtype=torch.float64)
    series, summed = _series_log_probability(mean, cov, *box)
    rows = torch.nonzero(summed & (series > np.log(1e-8))).squeeze(-1)[:300]
    assert len(rows) >= 200
    reference = np.array([_reference_probability(mean[i].numpy(), cov[i].numpy(), box[0].numpy(), box[1].numpy()) for i in rows.tolist()])
    relative = np.abs(np.expm1(series[rows].numpy() - np.log(reference)))
    assert relative.max() < 1e-13, relative.max()


def test_narrow_boxes_and_extreme_variances_go_to_the_quadrature():
    """An interval narrower than half a standard deviation (its mass a difference of close
    CDFs) is the quadrature's; so are extreme variances, with finite gradients throughout."""
    mean = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    cov = torch.tensor([[[1.0, 3e-5], [3e-5, 1.0]], [[1e-30, 0.0], [0.0, 1.0]], [[1e20, 9e19], [9e19, 1e20]]], dtype=torch.float64)
    cov.requires_grad_(True)
    low, high = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([1.0 + 1e-5, math.inf], dtype=torch.float64)
    _, summed = _series_log_probability(mean.detach(), cov.detach(), low, high)
    assert not summed[0]
    value = box_log_probability(mean, cov, low, high)
    exact = np.log(_reference_probability(np.zeros(2), cov[0].detach().numpy(), low.numpy(), np.array([1.0 + 1e-5, 40.0])))
    assert value[0].item() == pytest.approx(exact, rel=1e-9)
    for dtype in (torch.float64, torch.float32):
        m, c = mean.detach().to(dtype).requires_grad_(True), cov.detach().to(dtype).requires_grad_(True)
        grads = torch.autograd.grad(box_log_probability(m, c, low.to(dtype), high.to(dtype)).sum(), (m, c))
        assert all(torch.isfinite(g).all() for g in grads)


def test_the_series_is_exact_without_correlation_and_far_in_the_tails():
    """With rho = 0 the series is the product of the axes' intervals, whatever their depth;
    at rho 0.2 it is within its terms' bound of scipy's probability, a bound that float64's
    tolerance does not accept (the quadrature's row)."""
    zero, eye = torch.zeros(1, 2), torch.eye(2)[None]
    for k in (3.0, 9.0, 11.0):
        value, summed = _series_log_probability(zero, eye, torch.tensor([k, -1.0]), torch.tensor([k + 2.0, 1.0]))
        assert bool(summed) and value.item() == pytest.approx(np.log(norm.sf(k) - norm.sf(k + 2.0)) + np.log(norm.cdf(1.0) - norm.cdf(-1.0)), rel=1e-5)
    rho = 0.2
    cov = torch.tensor([[[1.0, rho], [rho, 1.0]]], dtype=torch.float64)
    value, summed = _series_log_probability(torch.zeros(1, 2, dtype=torch.float64), cov, torch.tensor([-0.5, -3.0], dtype=torch.float64), torch.tensor([2.0, 0.3], dtype=torch.float64))
    from scipy.stats import multivariate_normal

    mvn = multivariate_normal([0.0, 0.0], cov[0].numpy())
    exact = mvn.cdf([2.0, 0.3]) - mvn.cdf([-0.5, 0.3]) - mvn.cdf([2.0, -3.0]) + mvn.cdf([-0.5, -3.0])
    bound = 0.7514 * rho ** (SERIES_TERMS + 1) / ((SERIES_TERMS + 1) * (1 - rho))
    assert abs(value.exp().item() - exact) < bound + 1e-7
    assert not bool(summed)  # 1e-6 of a bound is more than float64's tolerance: the quadrature's


@pytest.mark.parametrize(
    "low, high",
    [([-np.inf, -np.inf], [0.0, np.inf]), ([-1.0, -np.inf], [1.0, 2.0]), ([-1.0, -1.0], [np.inf, np.inf])],
)
def test_open_box_sides_have_finite_gradients(low, high):
    mean = torch.tensor([[0.2, -0.1]], requires_grad=True)
    cov = torch.tensor([[[1.0, 0.3], [0.3, 2.0]]], requires_grad=True)
    box_log_probability(mean, cov, torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(cov.grad).all()
    sd = torch.tensor([1.5], requires_grad=True)
    interval_log_probability(mean[:, 0], sd, -np.inf, 1.0).sum().backward()  # an infinite float is open too
    assert torch.isfinite(sd.grad).all()


def test_a_component_is_normalised_over_the_selection():
    """Integrated over the model's proper motions that pass the rotated, shifted
    box (and parallaxes below the cut), the component's density is 1."""
    from streammix.frames import get_frame

    frame = get_frame("gd1")
    matrix, offset = selection_transform(frame, np.array([-40.0]), np.array([0.5]), 8.0)
    cuts = SelectionCuts(parallax=(None, 1.0), pm_low=(-7.0, -15.0), pm_high=(-2.0, -11.0))
    comp = StreamComponent(
        "stream", ["parallax", "pm_phi1_cosphi2", "pm_phi2"],
        {"pm_phi1_cosphi2": (-20, 20), "pm_phi1_cosphi2_width": (0.01, 3), "pm_phi2": (-20, 20),
         "pm_phi2_width": (0.01, 3), "distmod": (10, 20), "distmod_width": (0.01, 1)},
        phi2_range=(-5, 5), settings=NetworkSettings(hidden=4), selection=cuts,
    )  # fmt: skip
    # a faint star: proper-motion errors of 1.5 mas/yr, parallax error 0.8 mas, at GD-1's proper motions
    g1, g2 = np.meshgrid(np.linspace(-16, 4, 401), np.linspace(-12, 8, 401), indexing="ij")
    pm = np.stack([g1.ravel(), g2.ravel()], 1)
    icrs = pm @ matrix[0].T + offset[0]
    inside = np.all((icrs > [-7.0, -15.0]) & (icrs < [-2.0, -11.0]), axis=1)
    pm = pm[inside]
    plx = np.linspace(-6.0, 1.0, 141)
    n = len(pm) * len(plx)
    stars = _tensors(np.repeat(pm, len(plx), 0), np.tile(plx, len(pm)), n, matrix[0], offset[0], pm_err=1.5, plx_err=0.8)
    params = {"pm_phi1_cosphi2": torch.full((n,), -7.9, dtype=torch.float64), "pm_phi2": torch.full((n,), -0.6, dtype=torch.float64),
              "pm_phi1_cosphi2_width": torch.full((n,), 0.1, dtype=torch.float64), "pm_phi2_width": torch.full((n,), 0.1, dtype=torch.float64),
              "distmod": torch.full((n,), 14.5, dtype=torch.float64), "distmod_width": torch.full((n,), 0.1, dtype=torch.float64)}  # fmt: skip
    density = comp.log_prob(params, stars).exp().numpy()
    pm_cell = (20 / 400) ** 2
    per_pm = np.trapezoid(density.reshape(len(pm), len(plx)), plx, axis=1)  # parallax integrated
    assert per_pm.sum() * pm_cell == pytest.approx(1.0, abs=0.01)
    # without the cuts much of it lies outside: the same star's density is lower
    bounds = {p.name: (p.low, p.high) for p in comp.parameter_specs}
    plain = StreamComponent("stream", ["parallax", "pm_phi1_cosphi2", "pm_phi2"], bounds, phi2_range=(-5, 5),
                            settings=NetworkSettings(hidden=4))  # fmt: skip
    assert np.all(plain.log_prob(params, stars).exp().numpy() < density)

    # cut_stars without_photometry: only the stars whose magnitudes the component's isochrone models are
    # left undivided
    comp.cut_stars = "without_photometry"
    has_mag = torch.zeros(n, 2, dtype=torch.bool)
    has_mag[::2, 0] = True  # every other star has a magnitude
    stars.has_mag, stars.use_photometry, stars.photometry = has_mag, True, object()
    # no isochrone: every star is divided
    np.testing.assert_allclose(comp.log_prob(params, stars).exp().numpy(), density, rtol=1e-12)
    comp.photometry = torch.nn.Identity()  # an isochrone (its term left out below: photometry=False)
    mixed = comp.log_prob(params, stars, photometry=False).exp().numpy()
    np.testing.assert_allclose(mixed[1::2], density[1::2], rtol=1e-12)
    np.testing.assert_allclose(mixed[::2], plain.log_prob(params, stars).exp().numpy()[::2], rtol=1e-12)
    stars.use_photometry = False  # magnitudes not used (an astrometric score): every star is divided
    np.testing.assert_allclose(comp.log_prob(params, stars, photometry=False).exp().numpy(), density, rtol=1e-12)
    with pytest.raises(ValueError, match="cut_stars 'some'"):
        StreamComponent("stream", ["parallax"], bounds, phi2_range=(-5, 5), cut_stars="some")


def _tensors(pm, plx, n, matrix, offset, *, pm_err, plx_err):
    from types import SimpleNamespace

    f = torch.float64
    return SimpleNamespace(
        phi1=torch.zeros(n, dtype=f), phi2=torch.zeros(n, dtype=f), phi2_err=torch.zeros(n, dtype=f),
        has_phi2=torch.zeros(n, dtype=torch.bool), parallax=torch.tensor(plx, dtype=f),
        parallax_err=torch.full((n,), plx_err, dtype=f), has_parallax=torch.ones(n, dtype=torch.bool),
        pm=torch.tensor(pm, dtype=f), pm_cov=torch.diag_embed(torch.full((n, 2), pm_err**2, dtype=f)),
        has_pm1=torch.ones(n, dtype=torch.bool), has_pm2=torch.ones(n, dtype=torch.bool),
        selection_matrix=torch.tensor(matrix, dtype=f).expand(n, 2, 2),
        selection_offset=torch.tensor(offset, dtype=f).expand(n, 2), has_selection=torch.ones(n, dtype=torch.bool),
    )  # fmt: skip


def test_the_gd1_files_cuts_map_onto_its_columns(shared_data):
    """The GD-1 file's stream-frame proper motions were reflex-corrected at 8 kpc:
    the selection transform takes them back to its own pmra, pmdec."""
    from astropy.table import Table

    from streammix.frames import get_frame

    table = Table.read(shared_data / "gd1_dr2" / "gd1_pm_box_dr2_ps1.fits")
    matrix, offset = selection_transform(get_frame("gd1"), np.asarray(table["phi1"]), np.asarray(table["phi2"]), 8.0)
    pm = np.stack([table["pm_phi1"], table["pm_phi2"]], 1)
    icrs = np.einsum("nij,nj->ni", matrix, pm) + offset
    np.testing.assert_allclose(icrs[:, 0], table["pmra"], atol=1e-6)
    np.testing.assert_allclose(icrs[:, 1], table["pmdec"], atol=1e-6)
    # the file's own cuts
    assert table["pmra"].min() > -7 and table["pmra"].max() < -2 and table["parallax"].max() < 1


@pytest.mark.parametrize(
    "selection, frame, message",
    [
        ({"pmra": [-7, -2]}, "gd1", "pmra and pmdec"),
        ({"pmra": [-2, -7], "pmdec": [-15, -11]}, "gd1", "pmra: lower limit"),
        ({"pmra": [-7, -2], "pmdec": [-15, -11]}, None, "need the config's frame"),
        ({"parallax": [None, 1.0], "reflex_distance": -1}, None, "reflex_distance"),
    ],
)
def test_bad_selection_settings_are_named(selection, frame, message):
    data = {"field": {"phi1": [-70, -20], "phi2": [-5, 5]}, "data": {"selection": selection}, "frame": frame}
    with pytest.raises(InputError, match=message):
        Config.from_dict(data)


def test_the_selection_prior_keeps_a_component_inside_the_box(shared_data):
    """An error-free star of a component inside the box passes the cut (prior ~0); one whose
    track sits 3 mas/yr outside does not (a large negative prior), and the fit config's
    mixture attaches the cut on its grid."""
    from streammix.fit import build_mixture, load_stars

    cuts = SelectionCuts(pm_low=(-7.0, -15.0), pm_high=(-2.0, -11.0))
    bounds = {"pm_phi1_cosphi2": (-20, 20), "pm_phi2": (-20, 20),
              "pm_phi1_cosphi2_width": (0.01, 2), "pm_phi2_width": (0.01, 2)}
    comp = StreamComponent("stream", ["pm_phi1_cosphi2", "pm_phi2"], bounds, phi2_range=(-5, 5),
                           settings=NetworkSettings(hidden=4), selection=cuts)
    grid = 5
    comp.attach_selection_grid(torch.eye(2).expand(grid, 2, 2).clone(), torch.zeros(grid, 2))

    def prior(pmra, pmdec, width=0.2):
        full = lambda v: torch.full((grid,), float(v))  # noqa: E731
        return comp.selection_log_prior({"pm_phi1_cosphi2": full(pmra), "pm_phi2": full(pmdec),
                                         "pm_phi1_cosphi2_width": full(width), "pm_phi2_width": full(width)}).item()

    assert prior(-4.5, -13.0) > -1e-6
    assert prior(-4.5, -11.0) == pytest.approx(grid * np.log(0.5), abs=1e-3)  # on an edge: half passes
    assert prior(-4.5, -8.0) < -100

    data = Config.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "gd1_dr2.yaml").model_dump(
        mode="json", exclude={"source"})
    data["data"]["selection"] = {"parallax": [None, 1.0], "pmra": [-7.0, -2.0], "pmdec": [-15.0, -11.0], "reflex_distance": 8.0}
    config = Config.from_dict(data)
    mixture = build_mixture(config, load_stars(config))
    assert all(c.selection_grid is not None and c.selection_matrix.shape == (data["model"]["grid_size"], 2, 2)
               and c.cut_stars == "all" for c in mixture.components)

    # cut_normalisation none: the flows alone see the cuts, the components are neither normalised nor held
    from streammix.background import background_view

    data["model"]["cut_normalisation"] = "none"
    config = Config.from_dict(data)
    mixture = build_mixture(config, load_stars(config))
    assert all(c.selection is None and c.selection_grid is None for c in mixture.components)
    view, limits = background_view(config)
    assert view is not None and limits["pm_phi1_cosphi2"] == (-7.0, -2.0) and limits["parallax"] == (None, 1.0)
    # the shipped joint config declares the file's cuts for the stars without magnitudes: its components
    # with an isochrone divide only those
    from types import SimpleNamespace

    config = Config.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "gd1_dr2_photometry.yaml")
    assert config.data.selection.model_dump(mode="json") == data["data"]["selection"]
    assert config.model.cut_normalisation == "stars_without_photometry"
    mixture = build_mixture(config, load_stars(config))
    assert [c.name for c in mixture.components] == ["stream", "spur", "cocoon"]
    assert all(c.selection is not None and c.cut_stars == "without_photometry" and c.photometry is not None
               for c in mixture.components)  # fmt: skip
    has_mag = torch.tensor([[True, False], [False, False], [False, True]])
    probe = SimpleNamespace(phi1=torch.zeros(3), has_mag=has_mag, use_photometry=True, photometry=object())
    assert all(c._divided(probe).tolist() == [False, True, False] for c in mixture.components)
    assert all(c.selection_grid is None for c in mixture.components)
    # the stars with magnitudes divided by their luminosity function's share instead: every component is
    # held inside the proper-motion cut by the selection prior, as with the form that divides every star
    lf_data = config.model_dump(mode="json", exclude={"source"})
    lf_data["model"]["cut_normalisation"] = "luminosity_function_with_photometry"
    mixture = build_mixture(Config.from_dict(lf_data), load_stars(config))
    assert all(c.selection_grid is not None and c.cut_stars == "without_photometry" for c in mixture.components)
    # stars_without_photometry needs bands (this config has none); none needs the cuts
    data["model"]["cut_normalisation"] = "stars_without_photometry"
    with pytest.raises(InputError, match="cut_normalisation stars_without_photometry: needs bands"):
        Config.from_dict(data)
    data["data"]["selection"] = None
    data["model"]["cut_normalisation"] = "none"
    with pytest.raises(InputError, match="model.cut_normalisation none: needs data.selection"):
        Config.from_dict(data)


def test_one_pass_objective_equals_its_terms(shared_data):
    """Mixture.log_posterior_terms (a training step's objective: the networks run once, on
    the grid and at every prior's phi1) gives log_likelihood and log_prior exactly, on the
    GD-1 field with every kind of prior present: control points, the selection prior, a
    velocity-dispersion prior and the error weights' prior."""
    from scipy import stats

    from streammix.fit import build_mixture, config_tensors, control_priors, load_stars

    data = Config.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "gd1_dr2.yaml").model_dump(
        mode="json", exclude={"source"})
    data["data"]["selection"] = {"parallax": [None, 1.0], "pmra": [-7.0, -2.0], "pmdec": [-15.0, -11.0], "reflex_distance": 8.0}
    data["model"]["components"][0]["velocity_dispersion"] = {"median": 3.0}
    data["fit"]["dtype"] = "float64"
    config = Config.from_dict(data)
    stars = load_stars(config)
    torch.manual_seed(0)
    mixture = build_mixture(config, stars).double()
    priors = control_priors(config)
    stream = mixture.components[0]
    assert stream.selection_grid is not None and stream.dispersion_prior is not None
    assert mixture.error_weights is not None and len(priors) > 10
    tensors = config_tensors(config, stars, np.zeros(len(stars)), mixture=mixture)
    with torch.no_grad():
        ll, log_prior = mixture.log_posterior_terms(tensors, priors)
        torch.testing.assert_close(ll, mixture.log_likelihood(tensors), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(log_prior, mixture.log_prior(priors), rtol=1e-12, atol=1e-12)
        # the control points' part: each prior's density at the networks evaluated at its own phi1
        control = 0.0
        for p in priors:
            value = mixture.outputs_at(torch.tensor([p.phi1], dtype=torch.float64))[p.component][p.parameter]
            control += stats.norm.logpdf(float(value), p.value, p.width)
        assert float(log_prior - mixture.log_prior([])) == pytest.approx(control, rel=1e-10)
