"""Tests of streammix.nsf: the fast spline evaluation against zuko's own.

The reference is zuko's ``flow(context).log_prob(x)`` in float64, where both
computations are exact to rounding, and a numerical derivative of the spline.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zuko

from streammix.config import FlowConfig
from streammix.flows import ConditionalFlow
from streammix.nsf import _parameters, _spline, _transforms, nsf_log_prob, supports


def _random_nsf(features: int, context: int, bins: int, transforms: int, seed: int, gain: float) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = zuko.flows.NSF(features, context=context, bins=bins, transforms=transforms, hidden_features=[16, 16])
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.mul_(gain)  # sharper splines than at initialisation
    return net.double()


@pytest.mark.parametrize(
    ("features", "context", "bins"), [(1, 1, 8), (2, 3, 4), (3, 1, 8), (3, 4, 12), (5, 2, 6)]
)
def test_matches_zuko_in_float64(features, context, bins):
    net = _random_nsf(features, context, bins, transforms=3, seed=features * 10 + bins, gain=3.0)
    generator = torch.Generator().manual_seed(1)
    x = 3.0 * torch.randn(4000, features, generator=generator, dtype=torch.float64)
    x[:20] = 7.0  # beyond the spline's bound: identity there
    x[20:40] = -5.0  # on the bound
    c = torch.randn(4000, context, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        reference = net(c).log_prob(x)
        fast = nsf_log_prob(net, x, c)
    assert fast.shape == (4000,)
    np.testing.assert_allclose(fast.numpy(), reference.numpy(), rtol=0, atol=1e-9)


def test_float32_agrees_with_float64_as_closely_as_zuko():
    net = _random_nsf(3, 2, 8, transforms=3, seed=3, gain=1.0)
    x = 2.0 * torch.randn(20000, 3, dtype=torch.float64)
    c = torch.randn(20000, 2, dtype=torch.float64)
    with torch.no_grad():
        exact = net(c).log_prob(x).numpy()
        net.float()
        zuko32 = net(c.float()).log_prob(x.float()).double().numpy()
        fast32 = nsf_log_prob(net, x.float(), c.float()).double().numpy()
    zuko_error = np.quantile(np.abs(zuko32 - exact), 0.999)
    assert np.quantile(np.abs(fast32 - exact), 0.999) <= max(2 * zuko_error, 1e-5)


def test_spline_is_monotonic_with_the_derivative_it_reports():
    net = _random_nsf(2, 1, 8, transforms=1, seed=5, gain=3.0)
    (t,) = _transforms(net)
    c = torch.full((3001, 1), 0.3, dtype=torch.float64)

    def spline(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The first feature's parameters depend on the context only: one context, one spline.
        x = x[:, None].expand(-1, 2).contiguous()
        with torch.no_grad():
            y, ladj = _spline(x, _parameters(t.hyper, torch.cat((x, c), dim=-1), 2, 8), 8, 1e-3)
        return y[:, 0], ladj[:, 0]

    x = torch.linspace(-6.0, 6.0, 3001, dtype=torch.float64)
    y, ladj = spline(x)
    assert torch.all(torch.diff(y) > 0)
    h = 1e-6
    numerical = (spline(x + h)[0] - spline(x - h)[0]) / (2 * h)
    inner = x.abs() < 5.0 - 2 * h
    np.testing.assert_allclose(ladj[inner].exp().numpy(), numerical[inner].numpy(), rtol=1e-5)
    outside = x.abs() > 5.0
    assert torch.equal(y[outside], x[outside]) and torch.all(ladj[outside] == 0)
    assert abs(float(y[x.abs() <= 5.0].min()) + 5.0) < 0.01 and abs(float(y[x.abs() <= 5.0].max()) - 5.0) < 0.01


def test_supports_only_what_it_evaluates():
    assert supports(zuko.flows.NSF(3, context=1, transforms=2))
    assert supports(zuko.flows.NSF(1, context=2, transforms=2))
    assert not supports(zuko.flows.MAF(3, context=1))
    assert not supports(zuko.flows.NSF(1, context=0, transforms=2))  # parameters without a network
    assert not supports(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="not a zuko NSF"):
        nsf_log_prob(zuko.flows.MAF(2, context=1), torch.zeros(1, 2), torch.zeros(1, 1))


@pytest.mark.parametrize(("features", "context", "bins"), [(1, 1, 8), (3, 2, 6), (6, 1, 8)])
def test_gradients_match_zuko_in_float64(features, context, bins):
    net = _random_nsf(features, context, bins, transforms=3, seed=7 + features, gain=2.0)
    generator = torch.Generator().manual_seed(2)
    x = 3.0 * torch.randn(3000, features, generator=generator, dtype=torch.float64)
    x[:10] = 6.0  # beyond the bound: identity, no gradient through its spline
    c = torch.randn(3000, context, generator=generator, dtype=torch.float64)
    x.requires_grad_(True)
    c.requires_grad_(True)
    parameters = [x, c, *net.parameters()]
    reference = torch.autograd.grad(net(c).log_prob(x).sum(), parameters)
    fast = torch.autograd.grad(nsf_log_prob(net, x, c).sum(), parameters)
    for got, expected in zip(fast, reference, strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-9, atol=1e-9)
    assert max(float(g.abs().max()) for g in reference[2:]) > 1.0  # the comparison is not of zeros
    assert float(reference[1].abs().max()) > 0.1  # nor of the context's


def test_conditional_flow_trains_and_scores_through_it(monkeypatch):
    import streammix.flows

    calls = []
    fast = streammix.flows.nsf_log_prob
    monkeypatch.setattr(streammix.flows, "nsf_log_prob", lambda *a: calls.append(torch.is_grad_enabled()) or fast(*a))
    flow = ConditionalFlow(3, FlowConfig(transforms=2, hidden=16, bins=6), x_scale=[0.5, 2.0, 1.0], context_low=[-1.0], context_high=[1.0])
    x, phi1, extra = torch.randn(500, 3), torch.randn(500), torch.rand(500, 1)
    with_grad = flow.log_prob(x, phi1, extra)
    assert with_grad.requires_grad
    gradients = torch.autograd.grad(with_grad.sum(), list(flow.parameters()))
    with torch.no_grad():
        without = flow.log_prob(x, phi1, extra)
    assert calls == [True, False]  # training and scoring both went through streammix.nsf
    z = (x - flow.x_loc) / flow.x_scale
    reference = flow.net(flow._context(phi1, extra)).log_prob(z) - torch.log(flow.x_scale).sum()
    expected = torch.autograd.grad(reference.sum(), list(flow.parameters()))
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(without, reference.detach(), rtol=0, atol=1e-4)
    for got, wanted in zip(gradients, expected, strict=True):
        torch.testing.assert_close(got, wanted, rtol=1e-4, atol=1e-4)


def test_second_derivatives_match_zuko_in_float64():
    net = _random_nsf(2, 1, 8, transforms=2, seed=11, gain=2.0)
    generator = torch.Generator().manual_seed(4)
    x = 2.0 * torch.randn(200, 2, generator=generator, dtype=torch.float64)
    c = torch.randn(200, 1, generator=generator, dtype=torch.float64)
    parameters = list(net.parameters())

    def curvature(log_prob):
        gradients = torch.autograd.grad(log_prob().sum(), parameters, create_graph=True)
        return torch.autograd.grad(sum(g.square().sum() for g in gradients), parameters)

    fast, reference = curvature(lambda: nsf_log_prob(net, x, c)), curvature(lambda: net(c).log_prob(x))
    for got, expected in zip(fast, reference, strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-8, atol=1e-8)
