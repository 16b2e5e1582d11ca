"""A prior on a stream-like component's velocity dispersion, in km/s.

The intrinsic proper-motion widths of a thin stream are a few hundredths of a
mas/yr, far below the errors of most of its stars. Fitted by maximum
likelihood they are then set by a few bright stars and, for a sparse stream,
run to their lower bound. (On the real GD-1 field, synthetic streams injected
with widths of 0.2 mas/yr were fitted at 0.02-0.03 whenever they were sparse;
``benchmarks/injection.py``, ``benchmarks/RESULTS.md``. Held at the injected
widths by this prior, their memberships were no better calibrated: the
widths are not what makes them over-confident.)

A stream's dispersion is a physical quantity with a known range: tidal streams
of globular clusters have velocity dispersions of a few km/s (GD-1:
2.3 +- 0.3 km/s from 43 spectroscopic members, Gialluca et al. 2021; thin
component 2.49 +- 0.28 km/s, cocoon 6.1 +- 0.8 km/s, from 608 DESI members,
arXiv:2604.20958), those of dwarf galaxies ten or more. The prior
:class:`VelocityDispersionPrior` says so: a log-normal density of
sigma_v = 4.74047 * width * d (km/s from mas/yr and kpc), with d the
component's own distance (its distance-modulus track), at phi1 points
``spacing`` deg apart, for each of its proper-motion widths. It is a proper
conditional prior on the widths given the distance (the Jacobian 1/width is
included), so the data can overrule it where they constrain the widths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor

from .densities import normal_logpdf
from .settings import Section

__all__ = ["KMS_PER_MASYR_KPC", "VelocityDispersionConfig", "VelocityDispersionPrior"]

KMS_PER_MASYR_KPC = 4.740470463533348  # km/s of 1 mas/yr at 1 kpc
PM_WIDTHS = ("pm_phi1_cosphi2_width", "pm_phi2_width")


class VelocityDispersionConfig(Section):
    """Settings of a component's velocity-dispersion prior (``velocity_dispersion:`` in its config)."""

    median: float = Field(gt=0, description="the prior's median velocity dispersion (km/s)")
    dex: float = Field(0.3, gt=0, description="its log-normal scatter, in dex (0.3: a factor of 2 either way at 1 sigma)")
    spacing: float = Field(5.0, gt=0, description="deg between the phi1 points where it applies")

    def prior(self, phi1_range: tuple[float, float]) -> VelocityDispersionPrior:
        """The prior at points ``spacing`` apart over ``phi1_range`` (both ends included)."""
        low, high = phi1_range
        count = max(2, int(round((high - low) / self.spacing)) + 1)
        phi1 = tuple(float(x) for x in torch.linspace(low, high, count))
        return VelocityDispersionPrior(self.median, self.dex, phi1)


class VelocityDispersionPrior:
    """A log-normal prior on a component's velocity dispersion, applied to its
    proper-motion widths through its distance.

    Arguments:
        median: Median velocity dispersion (km/s).
        dex: Log-normal scatter (dex).
        phi1: Where it applies (deg).

    Example:
        >>> prior = VelocityDispersionPrior(2.5, 0.3, (-40.0,))
        >>> distmod = torch.tensor([14.5])  # 7.9 kpc: 2.5 km/s is 0.066 mas/yr
        >>> at = lambda w: prior.log_prob({"distmod": distmod, "pm_phi2_width": torch.tensor([w])})
        >>> bool(at(0.066) > at(0.02)) and bool(at(0.066) > at(0.3))
        True
    """

    def __init__(self, median: float, dex: float, phi1: tuple[float, ...]):
        self.median = float(median)
        self.dex = float(dex)
        self.phi1 = tuple(phi1)

    def log_prob(self, params: Mapping[str, Tensor]) -> Tensor:
        """The log-prior of the widths in ``params`` (each given at :attr:`phi1`), summed."""
        distance_kpc = 10.0 ** (params["distmod"] / 5.0 - 2.0)
        scale = torch.tensor(self.dex * math.log(10.0), dtype=distance_kpc.dtype, device=distance_kpc.device)
        centre = torch.full_like(distance_kpc, math.log(self.median))
        total = distance_kpc.new_zeros(())
        for name in PM_WIDTHS:
            if name in params:
                width = params[name]
                ln_sigma = torch.log(KMS_PER_MASYR_KPC * width * distance_kpc)
                total = total + (normal_logpdf(ln_sigma, centre, scale**2) - torch.log(width)).sum()
        return total

    def __repr__(self) -> str:
        return f"VelocityDispersionPrior(median={self.median}, dex={self.dex}, points={len(self.phi1)})"
