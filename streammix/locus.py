r"""Coordinates that let a background flow resolve the stellar locus of three bands.

In three bands (a magnitude and two others, e.g. Gaia G, BP and RP) the stars
of a field fill a *sheet*: for normal stars one colour is nearly a function
of another, so at fixed magnitude and colour the second colour spreads only
by the photometric errors, a few mmag for bright stars. A flow on the raw
magnitudes cannot follow a sheet that thin, and underestimates the density
on it exactly where stars lie. That biases the photometric likelihood ratio
of a stream (whose density is computed exactly, errors included) upwards;
on the default mock it made the stars given p > 0.9 by photometry members in
only 59 % of cases (benchmarks/RESULTS.md, sessions 5 and 6).

:class:`ColourLocus` maps ``(mag, blue, red)`` to

.. math::
    m,\qquad c = \mathrm{blue} - \mathrm{red},\qquad
    r = k \,\mathrm{asinh}\Bigl(\frac{(m - \mathrm{red}) - f(c)}{k\, s(m)}\Bigr),

where :math:`f` is the field's median colour-colour relation and :math:`s`
the robust spread of the residual at magnitude :math:`m`, both fitted once on
the training stars (monotone cubic interpolation between binned medians).
The sheet becomes a band of width ~1 in :math:`r` at every magnitude; the
asinh (:math:`k` = ``OUTLIER_SCALE`` = 5) leaves it linear and only
compresses stars far off the locus (bad colours, blends), so that a few
hundred-sigma outliers do not inflate the flow's standardisation. The map is
a bijection for any :math:`f` and :math:`s > 0`, with
:math:`|\partial(m, c, r)/\partial(m, \mathrm{blue}, \mathrm{red})| =
1 / (s(m) \sqrt{1 + (\rho/k)^2})`, :math:`\rho` the scaled residual, so
densities transform exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["ColourLocus"]

_MIN_STARS = 200  # stars with all three bands needed to fit the locus
_MIN_SCALE = 1e-4  # mag: floor of the residual's spread
OUTLIER_SCALE = 5.0
"""Scaled residual beyond which :class:`ColourLocus` compresses logarithmically."""


def _pchip(knots: np.ndarray, values: np.ndarray, x: np.ndarray, *, linear_ends: bool) -> np.ndarray:
    """Monotone cubic interpolation; beyond the knots linear (``linear_ends``) or constant."""
    x = np.asarray(x, dtype=float)
    if len(knots) == 1:
        return np.full_like(x, values[0])
    from scipy.interpolate import PchipInterpolator  # local import: scipy.interpolate takes ~0.6 s to load

    inside = PchipInterpolator(knots, values)(np.clip(x, knots[0], knots[-1]))
    if not linear_ends:
        return inside
    low = values[0] + (x - knots[0]) * (values[1] - values[0]) / (knots[1] - knots[0])
    high = values[-1] + (x - knots[-1]) * (values[-1] - values[-2]) / (knots[-1] - knots[-2])
    return np.where(x < knots[0], low, np.where(x > knots[-1], high, inside))


def _binned(x: np.ndarray, y: np.ndarray, bins: int, statistic) -> tuple[np.ndarray, np.ndarray]:
    """``statistic(y)`` in ``bins`` equal-count bins of x, at each bin's median x."""
    order = np.argsort(x)
    centres, stats = [], []
    for chunk in np.array_split(order, bins):
        if len(chunk) >= 10:
            centres.append(np.median(x[chunk]))
            stats.append(statistic(y[chunk]))
    centres, stats = np.asarray(centres), np.asarray(stats)
    keep = np.concatenate([[True], np.diff(centres) > 0])  # drop ties of discrete magnitudes
    return centres[keep], stats[keep]


def _robust_sd(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


@dataclass(frozen=True)
class ColourLocus:
    r"""The map ``(mag, blue, red) -> (mag, colour, scaled residual)`` and its inverse.

    Arguments:
        names: The ``(mag, blue, red)`` coordinate names (e.g. ``("gaia_g",
            "gaia_bp", "gaia_rp")``).
        colour_knots: Colours ``blue - red`` at which :math:`f` is tabulated (increasing).
        offset_knots: :math:`f`, the median ``mag - red`` at those colours.
        mag_knots: Magnitudes at which :math:`\ln s` is tabulated (increasing).
        log_scale_knots: :math:`\ln s`, the log robust spread of the residual.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> g = rng.uniform(14, 20, 5000)
        >>> colour = rng.uniform(0.5, 1.5, 5000)
        >>> error = 0.001 * 10 ** (0.2 * (g - 14))
        >>> rp = g - 0.4 * colour - 0.05 * colour**2 + error * rng.normal(size=5000)
        >>> locus = ColourLocus.fit(("g", "bp", "rp"), g, rp + colour, rp)
        >>> m, c, r, log_jacobian = locus.transform(g, rp + colour, rp)
        >>> round(float(np.std(r[g < 15])), 1), round(float(np.std(r[g > 19])), 1)  # width ~1 at every G
        (1.0, 1.0)
        >>> back = locus.inverse(m, c, r)
        >>> bool(np.allclose(back[1], rp + colour) and np.allclose(back[2], rp))
        True
    """

    names: tuple[str, str, str]
    colour_knots: np.ndarray
    offset_knots: np.ndarray
    mag_knots: np.ndarray
    log_scale_knots: np.ndarray

    def __post_init__(self) -> None:
        names = tuple(str(name) for name in self.names)
        if len(names) != 3 or len(set(names)) != 3:
            raise InputError(f"locus: {list(self.names)} must be three distinct names (magnitude, blue, red)")
        object.__setattr__(self, "names", names)
        for key in ("colour_knots", "offset_knots", "mag_knots", "log_scale_knots"):
            value = np.asarray(getattr(self, key), dtype=float).ravel()
            if value.size == 0 or not np.all(np.isfinite(value)):
                raise InputError(f"locus {key}: must be a non-empty array of finite numbers")
            object.__setattr__(self, key, value)
        for knots, values in (("colour_knots", "offset_knots"), ("mag_knots", "log_scale_knots")):
            x, y = getattr(self, knots), getattr(self, values)
            if x.size != y.size or np.any(np.diff(x) <= 0):
                raise InputError(f"locus {knots}: must increase strictly and match {values} in length")

    @classmethod
    def fit(cls, names, mag: np.ndarray, blue: np.ndarray, red: np.ndarray, *, bins: int = 40) -> ColourLocus:
        """Fit :math:`f` and :math:`s` on stars with all three values finite.

        Arguments:
            names: The ``(mag, blue, red)`` coordinate names.
            mag, blue, red: The stars' values (NaN where missing).
            bins: Equal-count bins in colour (for :math:`f`) and in magnitude
                (for :math:`s`).
        """
        mag, blue, red = (np.asarray(v, dtype=float) for v in (mag, blue, red))
        full = np.isfinite(mag) & np.isfinite(blue) & np.isfinite(red)
        if full.sum() < _MIN_STARS:
            raise InputError(
                f"locus {list(names)}: only {int(full.sum())} stars have all three values ({_MIN_STARS} needed)"
            )
        mag, colour, offset = mag[full], blue[full] - red[full], mag[full] - red[full]
        colour_knots, offset_knots = _binned(colour, offset, bins, np.median)
        if len(colour_knots) < 2:
            raise InputError(f"locus {list(names)}: the colours {names[1]} - {names[2]} do not vary")
        residual = offset - _pchip(colour_knots, offset_knots, colour, linear_ends=True)
        mag_knots, scales = _binned(mag, residual, bins, _robust_sd)
        return cls(tuple(names), colour_knots, offset_knots, mag_knots, np.log(np.maximum(scales, _MIN_SCALE)))

    def log_scale(self, mag: np.ndarray) -> np.ndarray:
        r""":math:`\ln s(m)`, constant beyond the tabulated magnitudes."""
        return _pchip(self.mag_knots, self.log_scale_knots, mag, linear_ends=False)

    def transform(self, mag, blue, red) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(mag, colour, residual, ln|Jacobian|)``."""
        mag, blue, red = (np.asarray(v, dtype=float) for v in (mag, blue, red))
        colour = blue - red
        log_scale = self.log_scale(mag)
        scaled = (mag - red - _pchip(self.colour_knots, self.offset_knots, colour, linear_ends=True)) * np.exp(-log_scale)
        residual = OUTLIER_SCALE * np.arcsinh(scaled / OUTLIER_SCALE)
        return mag, colour, residual, -log_scale - 0.5 * np.log1p((scaled / OUTLIER_SCALE) ** 2)

    def inverse(self, mag, colour, residual) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mag, blue, red)`` from the transformed coordinates."""
        mag, colour, residual = (np.asarray(v, dtype=float) for v in (mag, colour, residual))
        offset = _pchip(self.colour_knots, self.offset_knots, colour, linear_ends=True)
        scaled = OUTLIER_SCALE * np.sinh(residual / OUTLIER_SCALE)
        red = mag - offset - scaled * np.exp(self.log_scale(mag))
        return mag, colour + red, red

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the names and the knots."""
        return {
            "names": list(self.names),
            **{key: getattr(self, key).tolist() for key in ("colour_knots", "offset_knots", "mag_knots", "log_scale_knots")},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ColourLocus:
        """Rebuild from :meth:`state_dict`."""
        try:
            return cls(
                tuple(state["names"]), *(np.asarray(state[key], dtype=float)
                                         for key in ("colour_knots", "offset_knots", "mag_knots", "log_scale_knots"))
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"locus state: malformed ({error})") from None
