r"""Fast log-densities of zuko neural spline flows, for training and scoring.

A star's background log-density is the flows' whole cost when new stars are
scored and most of a flow's training, and zuko evaluates a rational-quadratic
spline (Durkan et al. 2019, arXiv:1906.04032) the general way: every bin's
knots, heights and slopes are normalised and materialised for every star
before the star's bin is looked up. Only the bin a star falls in matters, so
:func:`nsf_log_prob` looks it up on the running sums of the unnormalised bin
widths, then normalises and transforms the two knots, two heights and two
slopes of that bin alone. The mathematics and the parameters are zuko's
(:class:`zuko.flows.NSF`, bound 5, its minimum slope); the result agrees with
``flow(context).log_prob(x)`` to float rounding (1e-9 in float64), and so do
its gradients, which flow through the looked-up bin alone. A 3-D flow of three
transforms took 1.6 instead of 2.9 microseconds per star on one thread
(``benchmarks/RESULTS.md``); for a training step see
``benchmarks/flow_step.py``.

:func:`supports` says whether a network has the structure this evaluation
knows (a zuko NSF of masked autoregressive or element-wise transforms with
context, on a diagonal normal base); anything else keeps zuko's own path.
"""

from __future__ import annotations

import functools
import math
from functools import partial

import torch
from torch import Tensor
from zuko.distributions import DiagNormal
from zuko.flows import ElementWiseTransform, MaskedAutoregressiveTransform
from zuko.lazy import Flow, UnconditionalDistribution
from zuko.transforms import MonotonicRQSTransform

__all__ = ["nsf_log_prob", "supports"]

_LOG_2PI = math.log(2 * math.pi)
_BOUND = 5.0  # zuko's MonotonicRQSTransform default, which NSF does not change


def _transforms(net: torch.nn.Module) -> list[torch.nn.Module] | None:
    """The lazy transforms of a zuko NSF with context, or None if it is not one."""
    if not isinstance(net, Flow):
        return None
    base = net.base
    if not (isinstance(base, UnconditionalDistribution) and getattr(base, "f", None) is DiagNormal):
        return None
    transforms = list(getattr(net.transform, "transforms", []))
    if not transforms:
        return None
    for t in transforms:
        if not isinstance(t, MaskedAutoregressiveTransform | ElementWiseTransform):
            return None
        univariate = t.univariate
        if not (isinstance(univariate, partial) and univariate.func is MonotonicRQSTransform):
            return None
        if set(univariate.keywords) - {"slope"} or univariate.args or not hasattr(t, "hyper"):
            return None
        if len(t.shapes) != 3 or t.shapes[0] != t.shapes[1] or t.shapes[2][0] != t.shapes[0][0] - 1:
            return None
        last = list(t.hyper)[-1] if isinstance(t.hyper, torch.nn.Sequential) else None
        if not (isinstance(last, torch.nn.Module) and getattr(last, "weight", None) is not None and last.weight.ndim == 2):
            return None
    return transforms


def supports(net: torch.nn.Module) -> bool:
    r"""Whether :func:`nsf_log_prob` can evaluate ``net``.

    Arguments:
        net: A torch module, normally a :class:`zuko.flows.NSF`.

    Example:
        >>> import zuko
        >>> supports(zuko.flows.NSF(2, context=1, transforms=2, hidden_features=[8]))
        True
        >>> supports(zuko.flows.MAF(2, context=1))
        False
    """
    return _transforms(net) is not None


class _SquashExp(torch.autograd.Function):
    """exp(x / (1 + |x| / scale)): zuko's bounding of spline parameters, then exp,
    with its derivative in closed form, y / (1 + |x| / scale)^2 (three operations in
    the backward pass where autograd's chain through abs, div and exp takes seven;
    written with differentiable operations, so second derivatives are right too)."""

    @staticmethod
    def forward(x: Tensor, scale: float) -> Tensor:
        return x.div(x.abs().div_(scale).add_(1.0)).exp_()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, scale = inputs
        ctx.save_for_backward(x, output)
        ctx.scale = scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        x, y = ctx.saved_tensors
        return grad * y / (x.abs() / ctx.scale + 1.0).square(), None


def _squash_exp(x: Tensor, scale: float) -> Tensor:
    """exp of zuko's bounded spline parameters, exp(x / (1 + |x| / scale))."""
    return _SquashExp.apply(x, scale)


@functools.cache
def _layout(features: int, bins: int) -> Tensor:
    """Output rows of zuko's conditioner, per feature (widths, heights,
    derivatives), reordered to all widths, all heights, all derivatives."""
    total = 3 * bins - 1
    start = torch.arange(features)[:, None] * total
    offsets = torch.arange(bins)
    return torch.cat(
        ((start + offsets).reshape(-1), (start + bins + offsets).reshape(-1), (start + 2 * bins + offsets[:-1]).reshape(-1))
    )


def _parameters(hyper: torch.nn.Sequential, inputs: Tensor, features: int, bins: int) -> Tensor:
    """The conditioner's output, shape (N, D (3 K - 1)), ordered as in :func:`_layout`."""
    layers = list(hyper)
    h = inputs
    for i, layer in enumerate(layers):
        if isinstance(layer, torch.nn.ReLU):
            h = torch.relu_(h)
        elif isinstance(layer, torch.nn.Linear) or i == len(layers) - 1:
            weight = layer.weight * layer.mask if hasattr(layer, "mask") else layer.weight
            bias = layer.bias
            if i == len(layers) - 1:
                rows = _layout(features, bins).to(weight.device)
                weight, bias = weight[rows], None if bias is None else bias[rows]
            # the bias added in place: addmm's broadcast copy of it was slower than the product
            h = h @ weight.t()
            if bias is not None:
                h = h.add_(bias)
        else:
            h = layer(h)
    return h


def _spline(x: Tensor, phi: Tensor, bins: int, slope: float) -> tuple[Tensor, Tensor]:
    """One monotonic rational-quadratic spline on [-B, B], identity outside.

    ``x`` has shape (N, D); ``phi`` (N, D (3 K - 1)) holds zuko's unconstrained
    widths (N, D, K), heights (N, D, K) and interior derivatives (N, D, K - 1),
    one after the other. Returns y and ln |dy/dx|, each (N, D), differentiable
    in ``x`` and ``phi`` (the bin a star falls in is looked up without gradients:
    it is piecewise constant).
    """
    n, features = x.shape
    log_slope = -math.log(slope)
    # Widths and heights: exp of the squashed values, (N, 2, D, K), and their running sums.
    wh = _squash_exp(phi[:, : 2 * features * bins], log_slope / 2).view(n, 2, features, bins)
    widths, heights = wh.unbind(1)
    sum_w, sum_h = widths.cumsum(dim=-1), heights.cumsum(dim=-1)
    with torch.no_grad():
        # Bin: the number of right knots below x, counted on the unnormalised width sums
        # (a comparison summed in uint8 was faster here than torch.searchsorted).
        u = (x / _BOUND + 1.0).mul_(0.5).unsqueeze(-1).mul_(sum_w[..., -1:])
        count = torch.uint8 if bins < 256 else torch.int64
        k = (sum_w < u).sum(dim=-1, keepdim=True, dtype=count).long()  # (N, D, 1); K where x > B
        inside = (x > -_BOUND) & (k.squeeze(-1) < bins)
        k = k.clamp_(max=bins - 1)
    scale_w = (2 * _BOUND) / sum_w[..., -1:]
    scale_h = (2 * _BOUND) / sum_h[..., -1:]
    width = (widths.gather(-1, k) * scale_w).squeeze(-1)
    height = (heights.gather(-1, k) * scale_h).squeeze(-1)
    x0 = (sum_w.gather(-1, k) * scale_w).squeeze(-1) - _BOUND - width
    y0 = (sum_h.gather(-1, k) * scale_h).squeeze(-1) - _BOUND - height
    # Slopes at the two knots of the bin; the boundary slopes are exp(0) = 1.
    raw = phi[:, 2 * features * bins :].view(n, features, bins - 1)
    raw = torch.nn.functional.pad(raw, (1, 1)).gather(-1, torch.cat((k, k + 1), dim=-1))
    d = _squash_exp(raw, log_slope)
    d0, d1 = d[..., 0], d[..., 1]
    s = height / width
    z = ((x - x0) / width).clamp(0.0, 1.0)
    zz = z * (1 - z)
    denominator = torch.addcmul(s, d0 + d1 - 2.0 * s, zz)
    y = y0 + height * torch.addcmul(s * z * z, d0, zz) / denominator
    # ln of s^2 (d1 z^2 + 2 s zz + d0 (1 - z)^2) / denominator^2, in one log
    numerator = torch.addcmul(torch.addcmul(d0 * (1 - z).square(), d1, z * z), s, zz, value=2.0)
    ladj = torch.log(numerator * (s * s) / denominator.square())
    return torch.where(inside, y, x), torch.where(inside, ladj, 0.0)


def nsf_log_prob(net: torch.nn.Module, x: Tensor, context: Tensor) -> Tensor:
    r"""ln p(x | context) of a zuko NSF, differentiable in ``x``, ``context`` and the flow's parameters.

    Arguments:
        net: A :class:`zuko.flows.NSF` with context (see :func:`supports`).
        x: Points, shape (N, D).
        context: Context, shape (N, C).

    Returns:
        ln p(x | context), shape (N,); equal to ``net(context).log_prob(x)``
        to float rounding, and so are its gradients.

    Example:
        >>> import zuko
        >>> _ = torch.manual_seed(0)
        >>> net = zuko.flows.NSF(3, context=1, transforms=2, hidden_features=[16])
        >>> x, c = torch.randn(100, 3) * 2, torch.randn(100, 1)
        >>> with torch.no_grad():
        ...     reference = net(c).log_prob(x)
        >>> bool(torch.allclose(nsf_log_prob(net, x, c), reference, atol=1e-4))
        True
    """
    transforms = _transforms(net)
    if transforms is None:
        raise TypeError("nsf_log_prob: not a zuko NSF with context and a diagonal normal base")
    features = x.shape[-1]
    total = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    for t in transforms:
        bins = t.shapes[0][0]
        inputs = context if not hasattr(t, "order") else torch.cat((x, context), dim=-1)
        phi = _parameters(t.hyper, inputs, features, bins)
        x, ladj = _spline(x, phi, bins, t.univariate.keywords.get("slope", 1e-3))
        total = total + ladj.sum(dim=-1)
    base = net.base().base_dist  # DiagNormal: an Independent Normal
    standard = (x - base.loc) / base.scale
    log_base = standard.square().sum(dim=-1) * -0.5 - (torch.log(base.scale).sum() + 0.5 * features * _LOG_2PI)
    return log_base + total
