"""The Gaussian cross-track profile (the default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from torch import Tensor

from ..densities import hypot, ndtr_difference, truncated_normal_logpdf
from .base import CrossTrackProfile, ProfileParameter

__all__ = ["Gaussian"]


class Gaussian(CrossTrackProfile):
    r"""A normal density across the track, convolved with each star's phi2 error.

    .. math::

        p(\phi_2) \propto \mathcal{N}(\phi_2 \mid \mathrm{phi2},\ \mathrm{phi2\_width}^2 + \sigma_{\phi_2}^2)
        \quad \text{on the field's } [\phi_{2,\min}, \phi_{2,\max}]

    Example:
        >>> import torch
        >>> profile = Gaussian()
        >>> params = {"phi2": torch.tensor(0.0), "phi2_width": torch.tensor(1.0)}
        >>> round(profile.cdf(torch.tensor(0.0), torch.tensor(0.0), params, (-5.0, 5.0)).item(), 6)
        0.5
    """

    name: ClassVar[str] = "gaussian"
    parameters: ClassVar[tuple[ProfileParameter, ...]] = ()

    def log_prob(
        self, phi2: Tensor, phi2_err: Tensor, params: Mapping[str, Tensor], phi2_range: tuple[float, float]
    ) -> Tensor:
        return truncated_normal_logpdf(phi2, params["phi2"], hypot(params["phi2_width"], phi2_err), *phi2_range)

    def cdf(
        self, phi2: Tensor, phi2_err: Tensor, params: Mapping[str, Tensor], phi2_range: tuple[float, float]
    ) -> Tensor:
        low, high = phi2_range
        sigma = hypot(params["phi2_width"], phi2_err)
        z_lo = (low - params["phi2"]) / sigma
        z_hi = (high - params["phi2"]) / sigma
        z = (phi2.clamp(low, high) - params["phi2"]) / sigma
        return ndtr_difference(z_lo, z) / ndtr_difference(z_lo, z_hi).clamp_min(1e-30)

    def standard_draws(
        self, normal: np.ndarray, params: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        return normal
