"""The core-and-wings cross-track profile: two Gaussians about one track."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..densities import hypot, ndtr_difference, truncated_normal_logpdf
from .base import CrossTrackProfile, ProfileParameter

__all__ = ["CoreWings"]


class CoreWings(CrossTrackProfile):
    r"""A thin core and wider wings, both Gaussian and centred on the track.

    The wings hold a fraction ``phi2_wing_fraction`` :math:`f` of the stars and
    are ``phi2_wing_ratio`` :math:`r` times wider than the core (both smooth
    functions of phi1), the shape of a stream's dynamically hotter envelope
    without a component of its own. Each part is convolved with the star's
    phi2 error exactly and truncated to the field:

    .. math::

        p(\phi_2) = \frac{(1 - f)\,\mathcal{N}(\phi_2 \mid \mu, w^2 + \sigma^2)
        + f\,\mathcal{N}(\phi_2 \mid \mu, r^2 w^2 + \sigma^2)}
        {(1 - f)\,P_\mathrm{core} + f\,P_\mathrm{wings}}

    with :math:`P` each part's mass inside the field.

    Example:
        >>> import torch
        >>> from scipy import stats
        >>> params = {"phi2": torch.tensor(0.0), "phi2_width": torch.tensor(0.2),
        ...           "phi2_wing_fraction": torch.tensor(0.25), "phi2_wing_ratio": torch.tensor(4.0)}
        >>> ours = CoreWings().log_prob(torch.tensor(0.5), torch.tensor(0.0), params, (-50.0, 50.0)).exp().item()
        >>> ref = 0.75 * stats.norm.pdf(0.5, 0, 0.2) + 0.25 * stats.norm.pdf(0.5, 0, 0.8)
        >>> bool(abs(ours - ref) < 1e-6)
        True
    """

    name: ClassVar[str] = "core_wings"
    parameters: ClassVar[tuple[ProfileParameter, ...]] = (
        ProfileParameter("phi2_wing_fraction", 0.0, 0.5, 0.1),
        ProfileParameter("phi2_wing_ratio", 1.5, 10.0, 3.0),
    )

    @staticmethod
    def _parts(phi2_err: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        fraction = params["phi2_wing_fraction"]
        core = hypot(params["phi2_width"], phi2_err)
        wings = hypot(params["phi2_width"] * params["phi2_wing_ratio"], phi2_err)
        return fraction, core, wings

    @staticmethod
    def _mass(mean: Tensor, sigma: Tensor, low: float, high: float) -> Tensor:
        return ndtr_difference((low - mean) / sigma, (high - mean) / sigma)

    def log_prob(
        self, phi2: Tensor, phi2_err: Tensor, params: Mapping[str, Tensor], phi2_range: tuple[float, float]
    ) -> Tensor:
        fraction, core, wings = self._parts(phi2_err, params)
        mean = params["phi2"]
        # each part truncated, then weighted by its share of the truncated mixture
        mass_core = self._mass(mean, core, *phi2_range)
        mass_wings = self._mass(mean, wings, *phi2_range)
        total = ((1.0 - fraction) * mass_core + fraction * mass_wings).clamp_min(1e-30)
        log_core = truncated_normal_logpdf(phi2, mean, core, *phi2_range) + torch.log(
            (1.0 - fraction) * mass_core.clamp_min(1e-30) / total
        )
        log_wings = truncated_normal_logpdf(phi2, mean, wings, *phi2_range) + torch.log(
            (fraction * mass_wings).clamp_min(1e-300) / total
        )
        return torch.logaddexp(log_core, log_wings)

    def cdf(
        self, phi2: Tensor, phi2_err: Tensor, params: Mapping[str, Tensor], phi2_range: tuple[float, float]
    ) -> Tensor:
        low, high = phi2_range
        fraction, core, wings = self._parts(phi2_err, params)
        mean = params["phi2"]
        x = phi2.clamp(low, high)
        below = (1.0 - fraction) * self._mass(mean, core, low, x) + fraction * self._mass(mean, wings, low, x)
        total = (1.0 - fraction) * self._mass(mean, core, low, high) + fraction * self._mass(mean, wings, low, high)
        return below / total.clamp_min(1e-30)

    def standard_draws(
        self, normal: np.ndarray, params: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        in_wings = rng.uniform(size=np.shape(normal)) < params["phi2_wing_fraction"]
        return np.where(in_wings, normal * params["phi2_wing_ratio"], normal)
