r"""Where a catalogue's stars run out: a soft magnitude limit fitted to the counts.

A catalogue selected on something that fades with brightness (Gaia DR2's
BP/RP photometry, which the GD-1 file required, is missing for most stars
fainter than G ~ 20.5) ends in a soft limit, not at a sharp magnitude, and in
a band that need not be the one a model's magnitude limit is written in: the
GD-1 file's PS1 counts end at i ~ 20.3 for every colour, while g runs out
anywhere from 20.9 (blue) to 22 (red). The faint end of the counts is
modelled as a rising exponential times an error function,

.. math::

    n(m) \propto e^{b (m - m_0)}\, \Phi\!\left(\frac{m_\mathrm{lim} - m}{w}\right), \qquad m > m_0,

and :math:`(b, m_\mathrm{lim}, w)` fitted by maximum likelihood to the stars
fainter than :math:`m_0`. :math:`m_\mathrm{lim}` and :math:`w` are what
``model.isochrone.magnitude_limits`` (the faint end) and ``limit_error`` say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_ndtr

__all__ = ["MagnitudeLimit", "fit_magnitude_limit"]

#: The counts are fitted from this quantile of the magnitudes faintwards, unless told otherwise.
DEFAULT_QUANTILE = 0.5


@dataclass(frozen=True)
class MagnitudeLimit:
    """A soft faint limit: stars of magnitude ``m`` are kept with probability ``Phi((limit - m) / width)``.

    Arguments:
        limit: The magnitude where half the stars are kept.
        width: The limit's Gaussian width (mag).
        slope: The counts' exponential rise (per mag) brightwards of the limit.
        brightest: The magnitude the fit starts from.
        stars: How many stars it used.

    Example:
        >>> limit = MagnitudeLimit(20.3, 0.15, 0.6, 19.0, 5000)
        >>> round(limit.kept(20.3), 2), round(limit.kept(20.0), 2)
        (0.5, 0.98)
    """

    limit: float
    width: float
    slope: float
    brightest: float
    stars: int

    def kept(self, mag: float) -> float:
        """The share of the stars of magnitude ``mag`` that the limit keeps."""
        return float(np.exp(log_ndtr((self.limit - mag) / self.width)))


def fit_magnitude_limit(mags: np.ndarray, *, brightest: float | None = None) -> MagnitudeLimit:
    """Fit :class:`MagnitudeLimit` to the faint end of a catalogue's magnitudes (see the module).

    Arguments:
        mags: The stars' magnitudes in one band; non-finite ones are left out.
        brightest: The fit uses the stars fainter than this (default: the median).

    Raises:
        ValueError: No finite magnitude, fewer than 50 stars to fit, all of one
            magnitude, or a fit that does not converge.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> m = 16.0 + rng.exponential(1 / 0.6, 200_000)
        >>> m = m[rng.uniform(size=m.size) < np.exp(log_ndtr((20.3 - m) / 0.15))]
        >>> fit = fit_magnitude_limit(m)
        >>> round(fit.limit, 2), round(fit.width, 2)
        (20.3, 0.15)
    """
    values = np.asarray(mags, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("magnitude limit: no finite magnitude")
    low = float(np.quantile(values, DEFAULT_QUANTILE)) if brightest is None else float(brightest)
    faint = values[values > low]
    if faint.size < 50:
        raise ValueError(f"magnitude limit: {faint.size} stars fainter than {low}; at least 50 are needed")
    if np.ptp(faint) == 0:
        raise ValueError("magnitude limit: every star has the same magnitude")
    top = float(faint.max()) + 3.0
    grid = np.linspace(low, top, 4001)
    step = grid[1] - grid[0]

    def negative_log_likelihood(p: np.ndarray) -> float:
        slope, limit, log_width = p
        width = max(math.exp(log_width), step)  # a hard cut: no narrower than the normalising grid resolves
        log_n = lambda m: slope * (m - low) + log_ndtr((limit - m) / width)  # noqa: E731
        on_grid = log_n(grid)
        peak = on_grid.max()
        log_norm = peak + math.log(np.exp(on_grid - peak).sum() * step)
        return -float((log_n(faint) - log_norm).sum())

    start = np.array([0.5, float(np.quantile(faint, 0.9)), math.log(0.2)])
    options = {"xatol": 1e-6, "fatol": 1e-7, "maxiter": 5000}
    result = minimize(negative_log_likelihood, start, method="Nelder-Mead", options=options)
    if not result.success:
        raise ValueError(f"magnitude limit: the fit did not converge ({result.message})")
    slope, limit, log_width = result.x
    return MagnitudeLimit(float(limit), max(float(math.exp(log_width)), step), float(slope), low, int(faint.size))
