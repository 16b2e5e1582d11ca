"""The Student-t cross-track profile: a core with power-law tails."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..densities import hypot
from .base import CrossTrackProfile, ProfileParameter

__all__ = ["StudentT"]

# Gauss-Legendre nodes of the truncation integral (see StudentT): with 48 the log
# density is within 1e-7 of scipy's over the default dof bounds, worst at dof < 2
# (the integrand's derivative is infinite at +-pi/2 there; tests/test_profiles.py)
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(48)


class StudentT(CrossTrackProfile):
    r"""A Student-t density across the track, with fitted degrees of freedom.

    Real streams have wings that a Gaussian misses: stars stripped earlier,
    or a cocoon. With ``phi2_dof`` :math:`\nu` (a smooth function of phi1,
    like the track) the density falls as :math:`|\phi_2|^{-(\nu+1)}`; as
    :math:`\nu` grows it becomes the Gaussian.

    .. math::

        p(\phi_2) \propto \Big(1 + \frac{u^2}{\nu}\Big)^{-(\nu+1)/2},\quad
        u = \frac{\phi_2 - \mathrm{phi2}}{s},\quad s^2 = \mathrm{phi2\_width}^2 + \sigma_{\phi_2}^2

    on the field's phi2 range. Adding the phi2 error to the scale in quadrature
    is exact for the Gaussian and an approximation here; Gaia's phi2 errors
    (below 1e-6 deg) make it immaterial. The truncation's normaliser is the
    integral over :math:`\theta = \arctan(u / \sqrt\nu)`, whose integrand
    :math:`\sqrt\nu \cos^{\nu-1}\theta` is smooth and bounded, by Gauss-Legendre
    quadrature: differentiable in every parameter.

    Example:
        >>> import torch
        >>> from scipy import stats
        >>> f64 = dict(dtype=torch.float64)
        >>> params = {"phi2": torch.tensor(0.2, **f64), "phi2_width": torch.tensor(0.3, **f64),
        ...           "phi2_dof": torch.tensor(3.0, **f64)}
        >>> x, err = torch.tensor(1.0, **f64), torch.tensor(0.0, **f64)
        >>> ours = StudentT().log_prob(x, err, params, (-5.0, 5.0)).exp().item()
        >>> t = stats.t(3.0, loc=0.2, scale=0.3)
        >>> bool(abs(ours - t.pdf(1.0) / (t.cdf(5.0) - t.cdf(-5.0))) < 1e-8)
        True
    """

    name: ClassVar[str] = "student_t"
    parameters: ClassVar[tuple[ProfileParameter, ...]] = (ProfileParameter("phi2_dof", 1.0, 30.0, 4.0),)

    @staticmethod
    def _angle(x: Tensor, params: Mapping[str, Tensor], scale: Tensor) -> Tensor:
        return torch.atan((x - params["phi2"]) / (scale * torch.sqrt(params["phi2_dof"])))

    @staticmethod
    def _integral(lower: Tensor, upper: Tensor, dof: Tensor) -> Tensor:
        """∫ cos^(dof - 1) θ dθ from ``lower`` to ``upper`` (both in (-π/2, π/2))."""
        nodes = torch.as_tensor(_NODES, dtype=lower.dtype, device=lower.device)
        weights = torch.as_tensor(_WEIGHTS, dtype=lower.dtype, device=lower.device)
        half = 0.5 * (upper - lower)
        theta = (0.5 * (upper + lower)).unsqueeze(-1) + half.unsqueeze(-1) * nodes
        log_cos = torch.log(torch.cos(theta).clamp_min(1e-300))
        values = torch.exp((dof.unsqueeze(-1) - 1.0) * log_cos)
        return half * (values * weights).sum(-1)

    def _broadcast(self, phi2: Tensor, phi2_err: Tensor, params: Mapping[str, Tensor]):
        scale = hypot(params["phi2_width"], phi2_err)
        phi2, scale, dof = torch.broadcast_tensors(phi2, scale, params["phi2_dof"])
        return phi2, scale, dof

    def log_prob(
        self, phi2: Tensor, phi2_err: Tensor, params: Mapping[str, Tensor], phi2_range: tuple[float, float]
    ) -> Tensor:
        phi2, scale, dof = self._broadcast(phi2, phi2_err, params)
        low, high = (torch.full_like(phi2, v) for v in phi2_range)
        mass = self._integral(self._angle(low, params, scale), self._angle(high, params, scale), dof)
        u = (phi2 - params["phi2"]) / scale
        return (
            -0.5 * (dof + 1.0) * torch.log1p(u * u / dof)
            - torch.log(scale)
            - 0.5 * torch.log(dof)
            - torch.log(mass.clamp_min(1e-300))
        )

    def cdf(
        self, phi2: Tensor, phi2_err: Tensor, params: Mapping[str, Tensor], phi2_range: tuple[float, float]
    ) -> Tensor:
        phi2, scale, dof = self._broadcast(phi2, phi2_err, params)
        low, high = (torch.full_like(phi2, v) for v in phi2_range)
        lower = self._angle(low, params, scale)
        below = self._integral(lower, self._angle(phi2.clamp(*phi2_range), params, scale), dof)
        total = self._integral(lower, self._angle(high, params, scale), dof)
        return below / total.clamp_min(1e-300)

    def standard_draws(
        self, normal: np.ndarray, params: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        dof = np.broadcast_to(np.asarray(params["phi2_dof"], dtype=float), np.shape(normal))
        return normal / np.sqrt(rng.chisquare(dof) / dof)
