"""Plain tensor densities of the mixture's terms: normal, truncated normal,
exponential, and the observed proper motions' 2-D normal; and the normal's
interval probabilities, accurate in both tails in float32 (the catalogue's cuts,
the isochrone's segments).

Each works elementwise on tensors that broadcast, in the hot path of the
likelihood; the components compose them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "exponential_logpdf",
    "hypot",
    "log_ndtr_difference",
    "ndtr_difference",
    "normal_logpdf",
    "proper_motion_logpdf",
    "truncated_normal_logpdf",
]

LOG_2PI = math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)

def hypot(a: Tensor, b: Tensor) -> Tensor:
    """sqrt(a² + b²), elementwise: a width and an error added in quadrature.

    Example:
        >>> import torch
        >>> hypot(torch.tensor(3.0), torch.tensor(4.0)).item()
        5.0
    """
    return torch.sqrt(a * a + b * b)


def _lower_tail(low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """The interval ``[low, high]`` mirrored into the lower tail where its middle is positive
    (the same standard-normal probability; infinite bounds allowed: ``-inf + inf`` is no flip)."""
    flip = (low + high) > 0
    return torch.where(flip, -high, low), torch.where(flip, -low, high)


def log_ndtr_difference(low: Tensor, high: Tensor) -> Tensor:
    """log(Phi(high) - Phi(low)) for ``high >= low`` (standard-normal bounds; ``±inf``
    for an open side, as constants: an infinite bound that depends on parameters has a
    NaN gradient), elementwise, accurate in both tails and in float32: the interval is
    mirrored into the lower tail and formed from :func:`torch.special.log_ndtr`.
    (A difference of :func:`torch.special.ndtr` itself is 0 in float32 beyond 5.5
    standard deviations.)

    Example:
        >>> import torch
        >>> from scipy.stats import norm
        >>> bool(abs(log_ndtr_difference(torch.tensor(6.0), torch.tensor(7.0)).item()
        ...          - math.log(norm.sf(6.0) - norm.sf(7.0))) < 1e-4)
        True
        >>> round(log_ndtr_difference(torch.tensor(-math.inf), torch.tensor(math.inf)).item(), 6)
        0.0
    """
    lo, hi = _lower_tail(low, high)
    log_hi = torch.special.log_ndtr(hi)
    delta = (torch.special.log_ndtr(lo) - log_hi).clamp(max=-1e-30)
    return log_hi + torch.log(-torch.expm1(delta))


def ndtr_difference(low: Tensor, high: Tensor) -> Tensor:
    """Phi(high) - Phi(low) for ``high >= low`` (standard-normal bounds, ``±inf`` for an
    open side as in :func:`log_ndtr_difference`), elementwise, with float32's relative
    accuracy in either tail down to its smallest numbers, unless the interval is so
    narrow that its two ends' tail probabilities agree to that accuracy: the interval is
    mirrored into the lower tail, where Phi(z) = erfc(-z / sqrt 2) / 2 has no
    cancellation. Cheaper than :func:`log_ndtr_difference` where the probability itself
    is wanted.

    Example:
        >>> import torch
        >>> from scipy.stats import norm
        >>> value = ndtr_difference(torch.tensor(6.0), torch.tensor(7.0)).item()  # float32
        >>> bool(abs(value / (norm.sf(6.0) - norm.sf(7.0)) - 1.0) < 1e-5)
        True
        >>> torch.special.ndtr(torch.tensor(-6.0)).item()  # torch's own: 0 in float32 beyond 5.5 sd
        0.0
    """
    lo, hi = _lower_tail(low, high)
    return 0.5 * (torch.special.erfc(-hi * _SQRT_HALF) - torch.special.erfc(-lo * _SQRT_HALF))


def normal_logpdf(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x | mean, var), elementwise.

    Example:
        >>> import torch
        >>> round(normal_logpdf(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0)).item(), 6)
        -0.918939
    """
    return -0.5 * (LOG_2PI + torch.log(var) + (x - mean) ** 2 / var)


def truncated_normal_logpdf(x: Tensor, mean: Tensor, sigma: Tensor, low: float, high: float) -> Tensor:
    """log of a normal density truncated to ``[low, high]``, elementwise.

    Example:
        >>> import torch
        >>> from scipy.stats import truncnorm
        >>> x, m, s = torch.tensor(0.3), torch.tensor(0.5), torch.tensor(0.4)
        >>> ours = truncated_normal_logpdf(x, m, s, -1.0, 1.0).item()
        >>> ref = truncnorm.logpdf(0.3, (-1 - 0.5) / 0.4, (1 - 0.5) / 0.4, 0.5, 0.4)
        >>> bool(abs(ours - ref) < 1e-6)
        True
    """
    # the normaliser in log space, accurate in float32 however far the field lies from the mean
    return normal_logpdf(x, mean, sigma * sigma) - log_ndtr_difference((low - mean) / sigma, (high - mean) / sigma)


def exponential_logpdf(x: Tensor, slope: Tensor, low: float, high: float) -> Tensor:
    """log of exp(slope·x) normalised on ``[low, high]`` (uniform as slope -> 0).

    Example:
        >>> import torch
        >>> import numpy as np
        >>> x = torch.linspace(-2, 3, 20001, dtype=torch.float64)
        >>> p = exponential_logpdf(x, torch.tensor(0.7, dtype=torch.float64), -2.0, 3.0).exp()
        >>> round(float(np.trapezoid(p.numpy(), x.numpy())), 6)
        1.0
    """
    width = high - low
    # log ∫ exp(s x) dx over [low, high] = s*low + log((exp(s*width) - 1)/s), stable near s=0
    sw = slope * width
    small = sw.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(sw), sw)
    log_ratio = torch.where(small, sw / 2, torch.log(torch.expm1(safe) / safe))
    log_norm = slope * low + math.log(width) + log_ratio
    return slope * x - log_norm


def proper_motion_logpdf(stars, mu1: Tensor, mu2: Tensor, width1: Tensor, width2: Tensor) -> Tensor:
    """2-D Gaussian of the observed proper motions with intrinsic + observed covariance.

    Stars with both proper motions use the 2-D density (closed-form 2x2 inverse,
    correlation included); stars with one use its 1-D marginal; stars with
    neither contribute 0.
    """
    c11 = width1**2 + stars.pm_cov[:, 0, 0]
    c22 = width2**2 + stars.pm_cov[:, 1, 1]
    c12 = stars.pm_cov[:, 0, 1]
    d1 = stars.pm[:, 0] - mu1
    d2 = stars.pm[:, 1] - mu2
    det = (c11 * c22 - c12 * c12).clamp_min(1e-30)
    maha = (c22 * d1 * d1 - 2 * c12 * d1 * d2 + c11 * d2 * d2) / det
    both = -0.5 * (2 * LOG_2PI + torch.log(det) + maha)
    only1 = normal_logpdf(stars.pm[:, 0], mu1, c11)
    only2 = normal_logpdf(stars.pm[:, 1], mu2, c22)
    h1, h2 = stars.has_pm1, stars.has_pm2
    return torch.where(h1 & h2, both, torch.where(h1, only1, torch.where(h2, only2, 0.0)))
