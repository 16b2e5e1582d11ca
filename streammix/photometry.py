r"""The photometric (isochrone) likelihood of a stream-like component.

A member star of initial mass :math:`m` drawn from a mass function
:math:`\xi(m)` has, in each band :math:`b`, the apparent magnitude

.. math::
    m_b = M_b(m) + \mathrm{DM} + s\,z + A_b + \epsilon_b, \qquad
    z \sim N(0, 1), \quad \epsilon_b \sim N(0, \sigma_b^2 + \tfrac12\sigma_c^2),

with :math:`M_b(m)` the isochrone, DM the distance modulus at the star's phi1,
:math:`s` its intrinsic spread (one shift shared by every band), :math:`A_b`
the star's extinction, :math:`\sigma_b` its photometric error and
:math:`\sigma_c` the optional intrinsic colour spread (half its square per
band, so that the colour of any two bands spreads by :math:`\sigma_c`). The
observed magnitudes are then Gaussian with covariance
:math:`C = D + s^2\,\mathbf 1\mathbf 1^\top`, :math:`D` diagonal, whose inverse
(Sherman-Morrison) and log-determinant (matrix determinant lemma) are closed
form:

.. math::
    C^{-1} = D^{-1} - c\,D^{-1}\mathbf 1\mathbf 1^\top D^{-1},\quad
    c = \frac{s^2}{1 + s^2\sum_b 1/D_b},\qquad
    \log\det C = \sum_b \log D_b + \log\Bigl(1 + s^2\sum_b 1/D_b\Bigr).

A band a star lacks simply drops out of the sums (``1/D_b = 0``): that is
exactly the Gaussian's marginal over the bands it has.

**Quadrature in initial mass.** The isochrone of the selected phases is cut
into :math:`K` straight segments in magnitude space whose ends lie at equal
steps of a length that is arc length in magnitudes (plus ``log10`` mass) plus
a constant per tabulated isochrone point (a third of the total, since tables
are dense where tracks turn): short in mass where magnitudes change fast
(turn-off, giant branch, horizontal branch). Segment :math:`k` carries the mass-function
probability :math:`w_k` of its mass interval (the weights sum to one over the
selected phases) and, as an approximation, spreads it uniformly along the
segment. The Gaussian is integrated along each segment in closed form, so the
density has no ripple at node spacing even for very precise photometry:

.. math::
    p(\mathbf m) = \frac{1}{Z}\sum_k w_k \int_0^1
        N\bigl(\mathbf m \mid \mathbf a_k + t\,\mathbf d_k + \mathrm{DM} + \mathbf A, C\bigr)\,dt .

Magnitude jumps at (nearly) equal mass (PARSEC's tip of the red giant branch)
and gaps between non-adjacent selected phases are not bridged by a segment.

**Truncation.** With magnitude limits :math:`[l, u]` in one band :math:`j`
(``limit_band``), :math:`Z` is the probability that the *observed* magnitude
in that band falls inside the limits, given the star's DM, spread and
extinction and the error it has in that band (or ``limit_error`` if set):

.. math::
    Z = \sum_k w_k \int_0^1 \Bigl[\Phi\Bigl(\frac{u - \mu_{kj}(t)}{\sigma_j}\Bigr)
        - \Phi\Bigl(\frac{l - \mu_{kj}(t)}{\sigma_j}\Bigr)\Bigr] dt,\qquad
    \sigma_j^2 = \sigma_{\lim}^2 + \tfrac12\sigma_c^2 + s^2,

also in closed form along each segment. Using the star's own error is exact
when errors are treated as given (the density then integrates to one over the
limits, as the tests check); in reality errors grow towards the limit, so
``limit_error`` (a representative error at the limit) is an approximation,
as is ignoring limits in any other band. A star that lacks the limit band is
not normalised.

Stars with no band observed get log-likelihood 0 (they keep only their
astrometric likelihood).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .errors import InputError
from .isochrone import PHASES, Isochrone, _phase_names

__all__ = [
    "DEFAULT_PHASES",
    "Kroupa",
    "MassFunction",
    "PhotometricLikelihood",
    "PhotometryTensors",
    "PowerLaw",
    "Salpeter",
    "Tabulated",
    "photometry_tensors",
]

DEFAULT_PHASES: tuple[str, ...] = ("main_sequence", "giant_branch", "horizontal_branch")
"""Phase groups modelled unless told otherwise (see :data:`streammix.isochrone.PHASE_GROUPS`)."""

LOG_2PI = math.log(2.0 * math.pi)
_JUMP = 5e-12  # relative mass step below which two isochrone points are a jump (the readers' nudge is 1e-12)
_SUBDIVIDE = 16  # PCHIP evaluations between tabulated points when measuring arc length
_TABLE_SHARE = 0.5  # relative weight of the number of tabulated points in placing segment ends
_CHUNK = 2_000_000  # star x segment elements per chunk


# ----------------------------------------------------------------------------- mass functions


@dataclass(frozen=True)
class MassFunction:
    r"""Base class of initial mass functions :math:`\xi(m) = dN/dm`.

    A subclass defines :meth:`dn_dm` (any normalisation) and
    :meth:`antiderivative` (any constant). Probabilities are always
    normalised over a mass range.

    Example:
        >>> import numpy as np
        >>> Salpeter().probabilities(np.array([0.5, 1.0]), np.array([1.0, 2.0])).round(3).tolist()
        [0.718, 0.282]
    """

    def dn_dm(self, mass: np.ndarray) -> np.ndarray:
        """Unnormalised number density per unit mass at ``mass`` (Msun)."""
        raise NotImplementedError

    def antiderivative(self, mass: np.ndarray) -> np.ndarray:
        """An antiderivative of :meth:`dn_dm` (Msun), up to a constant."""
        raise NotImplementedError

    def probabilities(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        r"""Probability of each mass interval ``[low_i, high_i]``, normalised over all of them.

        Arguments:
            low: Lower interval ends (Msun), shape (K,).
            high: Upper interval ends (Msun), shape (K,), non-overlapping intervals.

        Returns:
            Probabilities summing to one, shape (K,).
        """
        low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
        counts = np.clip(self.antiderivative(high) - self.antiderivative(low), 0.0, None)
        total = counts.sum()
        if not np.isfinite(total) or total <= 0:
            raise InputError(f"mass function {self!r}: zero probability over masses {low.min():g}-{high.max():g} Msun")
        return counts / total

    def pdf(self, mass: np.ndarray, mass_range: tuple[float, float]) -> np.ndarray:
        r"""Probability density (1/Msun) normalised over ``mass_range``, zero outside.

        Arguments:
            mass: Masses (Msun).
            mass_range: ``(low, high)`` (Msun).

        Returns:
            The density at ``mass``.

        Example:
            >>> import numpy as np
            >>> from scipy.integrate import quad
            >>> round(quad(lambda m: Kroupa().pdf(m, (0.1, 0.8)), 0.1, 0.8, points=[0.5])[0], 6)
            1.0
        """
        low, high = map(float, mass_range)
        mass = np.asarray(mass, dtype=float)
        norm = float(self.antiderivative(np.array(high)) - self.antiderivative(np.array(low)))
        inside = (mass >= low) & (mass <= high)
        return np.where(inside, self.dn_dm(np.clip(mass, low, high)) / norm, 0.0)


def _power_antiderivative(mass: np.ndarray, alpha: float) -> np.ndarray:
    if abs(alpha - 1.0) < 1e-12:
        return np.log(mass)
    return mass ** (1.0 - alpha) / (1.0 - alpha)


@dataclass(frozen=True)
class PowerLaw(MassFunction):
    r"""A power law :math:`\xi(m) \propto m^{-\alpha}`.

    Arguments:
        alpha: The slope (Salpeter: 2.35).

    Example:
        >>> import numpy as np
        >>> PowerLaw(0.0).probabilities(np.array([0.1, 0.2]), np.array([0.2, 0.5])).round(3).tolist()
        [0.25, 0.75]
    """

    alpha: float = 2.35

    def dn_dm(self, mass: np.ndarray) -> np.ndarray:
        return np.asarray(mass, dtype=float) ** -self.alpha

    def antiderivative(self, mass: np.ndarray) -> np.ndarray:
        return _power_antiderivative(np.asarray(mass, dtype=float), self.alpha)


@dataclass(frozen=True)
class Salpeter(PowerLaw):
    r"""Salpeter (1955): :math:`\xi(m) \propto m^{-2.35}`.

    Example:
        >>> Salpeter().alpha
        2.35
    """

    alpha: float = 2.35


@dataclass(frozen=True)
class Kroupa(MassFunction):
    r"""Kroupa (2001) broken power law, continuous at the breaks.

    :math:`\xi \propto m^{-0.3}` below 0.08 Msun, :math:`m^{-1.3}` to 0.5 Msun,
    :math:`m^{-2.3}` above.

    Arguments:
        breaks: Break masses (Msun), increasing.
        slopes: The slopes :math:`\alpha_i`, one more than ``breaks``.

    Example:
        >>> import numpy as np
        >>> imf = Kroupa()
        >>> ratio = imf.dn_dm(np.array([0.5 - 1e-9, 0.5 + 1e-9]))
        >>> bool(abs(ratio[0] / ratio[1] - 1) < 1e-6)
        True
    """

    breaks: tuple[float, ...] = (0.08, 0.5)
    slopes: tuple[float, ...] = (0.3, 1.3, 2.3)

    def __post_init__(self) -> None:
        if len(self.slopes) != len(self.breaks) + 1 or np.any(np.diff(self.breaks) <= 0):
            raise InputError(f"Kroupa mass function: need increasing breaks and one more slope, got {self!r}")

    def _scales(self) -> np.ndarray:
        """Multipliers making each segment continuous with the previous one."""
        scales = [1.0]
        for i, m in enumerate(self.breaks):
            scales.append(scales[-1] * m ** (self.slopes[i + 1] - self.slopes[i]))
        return np.array(scales)

    def dn_dm(self, mass: np.ndarray) -> np.ndarray:
        mass = np.asarray(mass, dtype=float)
        piece = np.searchsorted(np.asarray(self.breaks), mass, side="right")
        slopes = np.asarray(self.slopes)[piece]
        return self._scales()[piece] * mass**-slopes

    def antiderivative(self, mass: np.ndarray) -> np.ndarray:
        mass = np.asarray(mass, dtype=float)
        edges = np.concatenate([[0.0], self.breaks])
        scales = self._scales()
        # cumulative value at each break (from the first break on, each piece's own antiderivative)
        offsets = [0.0]
        for i, m in enumerate(self.breaks):
            a, b = self.slopes[i], self.slopes[i + 1]
            end = scales[i] * _power_antiderivative(np.array(m), a) + offsets[-1]
            offsets.append(end - scales[i + 1] * _power_antiderivative(np.array(m), b))
        piece = np.searchsorted(edges[1:], mass, side="right")
        out = np.zeros_like(mass)
        for i, (a, scale, offset) in enumerate(zip(self.slopes, scales, offsets)):
            inside = piece == i
            out = np.where(inside, scale * _power_antiderivative(np.where(inside, mass, 1.0), a) + offset, out)
        return out


@dataclass(frozen=True)
class Tabulated(MassFunction):
    r"""A user-tabulated :math:`dN/dm`, linear between the points, zero outside.

    Arguments:
        mass: Masses (Msun), strictly increasing, at least 2.
        dn_dm_values: :math:`dN/dm` at ``mass`` (any normalisation), >= 0.

    Example:
        >>> import numpy as np
        >>> flat = Tabulated(np.array([0.1, 1.0]), np.array([1.0, 1.0]))
        >>> flat.probabilities(np.array([0.1, 0.4]), np.array([0.4, 1.0])).round(3).tolist()
        [0.333, 0.667]
    """

    mass: np.ndarray
    dn_dm_values: np.ndarray
    _cumulative: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        mass = np.asarray(self.mass, dtype=float)
        values = np.asarray(self.dn_dm_values, dtype=float)
        if mass.ndim != 1 or mass.size < 2 or values.shape != mass.shape:
            raise InputError("Tabulated mass function: mass and dn_dm_values must be 1-D, equal length, >= 2 points")
        if not (np.all(np.isfinite(mass)) and np.all(np.isfinite(values))):
            raise InputError("Tabulated mass function: mass and dn_dm_values must be finite")
        if np.any(np.diff(mass) <= 0) or mass[0] <= 0:
            raise InputError("Tabulated mass function: mass must be positive and strictly increasing")
        if np.any(values < 0):
            raise InputError("Tabulated mass function: dn_dm_values must be >= 0")
        cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (values[1:] + values[:-1]) * np.diff(mass))])
        object.__setattr__(self, "mass", mass)
        object.__setattr__(self, "dn_dm_values", values)
        object.__setattr__(self, "_cumulative", cumulative)

    def dn_dm(self, mass: np.ndarray) -> np.ndarray:
        return np.interp(mass, self.mass, self.dn_dm_values, left=0.0, right=0.0)

    def antiderivative(self, mass: np.ndarray) -> np.ndarray:
        m = np.clip(np.asarray(mass, dtype=float), self.mass[0], self.mass[-1])
        i = np.clip(np.searchsorted(self.mass, m, side="right") - 1, 0, self.mass.size - 2)
        x0, y0 = self.mass[i], self.dn_dm_values[i]
        slope = (self.dn_dm_values[i + 1] - y0) / (self.mass[i + 1] - x0)
        h = m - x0
        return self._cumulative[i] + y0 * h + 0.5 * slope * h * h


# ----------------------------------------------------------------------------- stars


@dataclass(frozen=True)
class PhotometryTensors:
    """Photometry of N stars in B bands as tensors (the fields of ``StarTensors`` the likelihood reads).

    Arguments:
        mags: Apparent magnitudes, (N, B), 0 where missing.
        mag_err: Their errors, (N, B), 0 where missing.
        extinction: Extinction per band, (N, B).
        has_mag: Observed mask, (N, B) bool.

    Example:
        >>> import numpy as np
        >>> stars = photometry_tensors(np.array([[18.0, np.nan]]), np.array([[0.02, 0.03]]))
        >>> stars.has_mag.tolist(), stars.mags.tolist()
        ([[True, False]], [[18.0, 0.0]])
    """

    mags: Tensor
    mag_err: Tensor
    extinction: Tensor
    has_mag: Tensor


def photometry_tensors(mags, mag_err, extinction=None, *, dtype: torch.dtype = torch.float64) -> PhotometryTensors:
    r"""Photometry arrays (or Quantities in mag) to :class:`PhotometryTensors`.

    A magnitude or error that is NaN marks the band missing for that star.

    Arguments:
        mags: Apparent magnitudes, (N, B), NaN where missing.
        mag_err: Errors, (N, B).
        extinction: Extinction, (N, B); zeros if None.
        dtype: The tensors' dtype.

    Returns:
        The tensors.

    Raises:
        InputError: Shapes differ or an observed error is not positive.

    Example:
        >>> import astropy.units as u, numpy as np
        >>> stars = photometry_tensors([[18.0, 17.5]] * u.mag, [[0.02, 0.03]] * u.mag)
        >>> tuple(stars.mags.shape), stars.mags.dtype
        ((1, 2), torch.float64)
    """

    def array(value, name):
        if hasattr(value, "unit"):
            try:
                value = value.to_value("mag")
            except Exception:
                raise InputError(f"{name}: unit {value.unit} is not a magnitude") from None
        return np.atleast_2d(np.asarray(value, dtype=float))

    mags = array(mags, "mags")
    mag_err = array(mag_err, "mag_err")
    extinction = np.zeros_like(mags) if extinction is None else array(extinction, "extinction")
    if mag_err.shape != mags.shape or extinction.shape != mags.shape:
        raise InputError(f"mag_err/extinction: shapes {mag_err.shape}/{extinction.shape} differ from mags {mags.shape}")
    has = np.isfinite(mags) & np.isfinite(mag_err)
    if np.any(has & ~(mag_err > 0)):
        raise InputError("mag_err: observed bands need errors > 0")

    def t(x):
        return torch.as_tensor(np.where(has, x, 0.0), dtype=dtype)

    return PhotometryTensors(t(mags), t(mag_err), torch.as_tensor(np.nan_to_num(extinction), dtype=dtype), torch.as_tensor(has))


# ----------------------------------------------------------------------------- quadrature


def _segments(iso: Isochrone, bands: Sequence[str], n_nodes: int) -> tuple[np.ndarray, ...]:
    """Segment ends in mass (K, 2), equal in arc length within each continuous run of the isochrone."""
    mass = iso.initial_mass
    breaks = np.flatnonzero(np.diff(mass) <= _JUMP * mass[1:]) + 1
    runs = [run for run in np.split(np.arange(mass.size), breaks) if run.size >= 2]
    fine_mass, steps = [], []
    for run in runs:
        m = mass[run]
        frac = np.linspace(0.0, 1.0, _SUBDIVIDE + 1)[:-1]
        fine = np.concatenate([(m[:-1, None] + frac * np.diff(m)[:, None]).ravel(), m[-1:]])
        coords = np.concatenate([iso.absolute_mags(fine, bands), np.log10(fine)[:, None]], axis=1)
        fine_mass.append(fine)
        steps.append(np.sqrt(np.sum(np.diff(coords, axis=0) ** 2, axis=1)))
    # plus a constant length per tabulated interval: isochrone tables are dense where tracks turn
    per_point = _TABLE_SHARE * sum(step.sum() for step in steps) / sum(step.size for step in steps)
    arcs = [np.concatenate([[0.0], np.cumsum(step + per_point)]) for step in steps]
    lengths = np.array([arc[-1] for arc in arcs])
    counts = np.maximum(1, np.round(n_nodes * lengths / lengths.sum()).astype(int))
    edges = []
    for fine, arc, count in zip(fine_mass, arcs, counts):
        ends = np.interp(np.linspace(0.0, arc[-1], count + 1), arc, fine)
        ends[0], ends[-1] = fine[0], fine[-1]
        edges.append(np.stack([ends[:-1], ends[1:]], axis=1))
    return np.concatenate(edges)


def _select(iso: Isochrone, phases) -> Isochrone:
    """The isochrone restricted to ``phases`` (None: :data:`DEFAULT_PHASES`, those present)."""
    if phases is None:
        present = {int(code) for code in np.unique(iso.phase)}
        names = [name for name in _phase_names(DEFAULT_PHASES) if PHASES[name] in present]
        return iso.select(names)
    return iso.select(phases)


# ----------------------------------------------------------------------------- likelihood


def _log_diff_ndtr(low: Tensor, high: Tensor) -> Tensor:
    """log(Phi(high) - Phi(low)) for high >= low, accurate in both tails."""
    flip = (low + high) > 0
    lo = torch.where(flip, -high, low)
    hi = torch.where(flip, -low, high)
    log_hi = torch.special.log_ndtr(hi)
    delta = (torch.special.log_ndtr(lo) - log_hi).clamp(max=-1e-30)
    return log_hi + torch.log(-torch.expm1(delta))


def _mean_ndtr(alpha: Tensor, beta: Tensor) -> Tensor:
    r"""Mean of Phi(alpha - beta t) over t in [0, 1], closed form (Simpson for tiny beta)."""
    flip = (alpha - 0.5 * beta) > 0  # evaluate the smaller tail, then 1 - ...
    a = torch.where(flip, -alpha, alpha)
    b = torch.where(flip, -beta, beta)
    small = b.abs() < 1e-2
    b_safe = torch.where(small, torch.ones_like(b), b)

    def antiderivative(z):  # of Phi: z Phi(z) + phi(z)
        return z * torch.special.ndtr(z) + torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    exact = (antiderivative(a) - antiderivative(a - b_safe)) / b_safe
    simpson = (torch.special.ndtr(a) + 4 * torch.special.ndtr(a - 0.5 * b) + torch.special.ndtr(a - b)) / 6
    value = torch.where(small, simpson, exact).clamp(0.0, 1.0)
    return torch.where(flip, 1.0 - value, value)


class PhotometricLikelihood(nn.Module):
    r"""Isochrone likelihood of a star's magnitudes given DM and its spread.

    See the module docstring for the model, the quadrature and the truncation.
    The segment ends, their magnitudes and log-weights are computed once and
    kept as buffers (``start`` (K, B), ``delta`` (K, B), ``log_weight`` (K,),
    ``node_mass`` (K,) the middle mass of each segment).

    Arguments:
        isochrone: The isochrone (absolute magnitudes vs initial mass).
        bands: Canonical band names, in the order of the stars' magnitude columns.
        mass_function: The initial mass function (Kroupa by default).
        phases: Phase names or groups to model (default: main sequence, giant
            branch and horizontal branch, those present).
        magnitude_limits: ``{band: (bright, faint)}`` apparent limits of the
            data (``-inf``/``inf`` for an open side), or None for no truncation.
        limit_band: The band whose limits normalise the likelihood (needed when
            ``magnitude_limits`` holds more than one band; the others are not modelled).
        limit_error: Photometric error assumed at the limit (mag); None: each
            star's own error in the limit band.
        colour_spread: Intrinsic colour spread (mag): each band gets an extra
            independent variance ``colour_spread**2 / 2``.
        n_nodes: Number of quadrature segments K.
        dtype: The buffers' dtype.

    Example:
        >>> import numpy as np, torch
        >>> from streammix.isochrone import default_isochrone
        >>> like = PhotometricLikelihood(default_isochrone(), ["gaia_g", "gaia_rp"], n_nodes=100,
        ...                              magnitude_limits={"gaia_g": (12.0, 20.5)}, dtype=torch.float64)
        >>> stars = photometry_tensors(np.array([[18.5, 17.7], [np.nan, np.nan]]), np.full((2, 2), 0.02))
        >>> logp = like.log_prob(torch.full((2,), 14.7, dtype=torch.float64), torch.full((2,), 0.1, dtype=torch.float64), stars)
        >>> bool(torch.isfinite(logp[0])), logp[1].item()
        (True, 0.0)
    """

    def __init__(
        self,
        isochrone: Isochrone,
        bands: Sequence[str],
        *,
        mass_function: MassFunction = Kroupa(),
        phases: Sequence[str] | None = None,
        magnitude_limits: dict[str, tuple[float, float]] | None = None,
        limit_band: str | None = None,
        limit_error: float | None = None,
        colour_spread: float = 0.0,
        n_nodes: int = 400,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        bands = tuple(bands)
        if not bands:
            raise InputError("bands: at least one band is needed")
        missing = [band for band in bands if band not in isochrone.mags]
        if missing:
            raise InputError(f"bands {missing}: not in isochrone {isochrone.source} (it has {list(isochrone.bands)})")
        if int(n_nodes) < 2:
            raise InputError(f"n_nodes: {n_nodes} is fewer than 2")
        if not colour_spread >= 0:
            raise InputError(f"colour_spread: {colour_spread} is not >= 0")
        if limit_error is not None and not limit_error >= 0:
            raise InputError(f"limit_error: {limit_error} is not >= 0")
        self.bands = bands
        self.mass_function = mass_function
        self.colour_spread = float(colour_spread)
        self.limit_error = None if limit_error is None else float(limit_error)
        self.limit_index, self.limits = self._limits(bands, magnitude_limits, limit_band)

        selected = _select(isochrone, phases)
        self.phases = tuple(sorted({int(code) for code in selected.phase}))
        ends = _segments(selected, bands, int(n_nodes))
        mags_low = selected.absolute_mags(ends[:, 0], bands)
        mags_high = selected.absolute_mags(ends[:, 1], bands)
        weight = mass_function.probabilities(ends[:, 0], ends[:, 1])
        keep = weight > 0
        with np.errstate(divide="ignore"):
            log_weight = np.log(weight[keep])
        self.register_buffer("start", torch.as_tensor(mags_low[keep], dtype=dtype))
        self.register_buffer("delta", torch.as_tensor((mags_high - mags_low)[keep], dtype=dtype))
        self.register_buffer("log_weight", torch.as_tensor(log_weight, dtype=dtype))
        self.register_buffer("node_mass", torch.as_tensor(ends[keep].mean(axis=1), dtype=dtype))
        self.register_buffer("mass_edges", torch.as_tensor(ends[keep], dtype=dtype))

    @staticmethod
    def _limits(bands, magnitude_limits, limit_band) -> tuple[int | None, tuple[float, float] | None]:
        if not magnitude_limits:
            if limit_band is not None:
                raise InputError(f"limit_band {limit_band!r}: given without magnitude_limits")
            return None, None
        unknown = [band for band in magnitude_limits if band not in bands]
        if unknown:
            raise InputError(f"magnitude_limits: bands {unknown} are not among the likelihood's bands {list(bands)}")
        if limit_band is None:
            if len(magnitude_limits) > 1:
                raise InputError(
                    f"limit_band: must name one of {list(magnitude_limits)} (only one band's limits are modelled)"
                )
            (limit_band,) = magnitude_limits
        if limit_band not in magnitude_limits:
            raise InputError(f"limit_band {limit_band!r}: has no entry in magnitude_limits")
        try:
            bright, faint = (float(v) for v in magnitude_limits[limit_band])
        except (TypeError, ValueError):
            raise InputError(f"magnitude_limits[{limit_band!r}]: not a (bright, faint) pair of numbers") from None
        if not bright < faint:
            raise InputError(f"magnitude_limits[{limit_band!r}]: bright limit {bright} is not < faint limit {faint}")
        return bands.index(limit_band), (bright, faint)

    @property
    def n_nodes(self) -> int:
        """The number of quadrature segments K."""
        return int(self.log_weight.shape[0])

    def log_prob(self, distmod: Tensor, distmod_width: Tensor, stars) -> Tensor:
        r"""Per-star log-density of the observed magnitudes.

        Arguments:
            distmod: Distance modulus at each star's phi1, (N,).
            distmod_width: Its intrinsic spread (mag), (N,).
            stars: Anything with ``mags``, ``mag_err``, ``extinction`` (N, B)
                and ``has_mag`` (N, B) bool, columns in the order of ``bands``
                (a :class:`~streammix.mixture.StarTensors` or :class:`PhotometryTensors`).

        Returns:
            log p (1/mag^n for n observed bands), (N,); 0 for stars with no band observed.

        Example:
            >>> import numpy as np, torch
            >>> from streammix.isochrone import default_isochrone
            >>> like = PhotometricLikelihood(default_isochrone(), ["gaia_g", "gaia_bp"], n_nodes=50)
            >>> stars = photometry_tensors(np.array([[19.0, 19.5]]), np.array([[0.05, 0.05]]), dtype=torch.float32)
            >>> like.log_prob(torch.tensor([14.7]), torch.tensor([0.1]), stars).shape
            torch.Size([1])
        """
        dtype = distmod.dtype
        has = stars.has_mag.to(torch.bool)
        if has.shape[-1] != len(self.bands):
            raise InputError(f"stars: {has.shape[-1]} magnitude columns, the likelihood has bands {list(self.bands)}")
        mags = stars.mags.to(dtype)
        err = stars.mag_err.to(dtype)
        ext = stars.extinction.to(dtype)
        n = has.shape[0]
        step = max(1, _CHUNK // max(1, self.n_nodes * len(self.bands)))
        grad = torch.is_grad_enabled() and (distmod.requires_grad or distmod_width.requires_grad)
        pieces = []
        for lo in range(0, n, step):
            args = (distmod[lo : lo + step], distmod_width[lo : lo + step], mags[lo : lo + step],
                    err[lo : lo + step], ext[lo : lo + step], has[lo : lo + step])  # fmt: skip
            if grad and n > step:
                pieces.append(checkpoint(self._log_prob, *args, use_reentrant=False))
            else:
                pieces.append(self._log_prob(*args))
        return torch.cat(pieces) if pieces else distmod.new_zeros(0)

    def _log_prob(self, distmod, width, mags, err, ext, has) -> Tensor:
        """log p for one chunk of stars (plain tensors)."""
        dtype = distmod.dtype
        start = self.start.to(dtype)
        delta = self.delta.to(dtype)
        log_weight = self.log_weight.to(dtype)
        var = torch.where(has, err * err + 0.5 * self.colour_spread**2, torch.ones_like(err))
        prec = torch.where(has, 1.0 / var, torch.zeros_like(err))  # (n, B), 0 for missing bands
        s2 = width * width
        total_prec = prec.sum(-1)
        c = s2 / (1.0 + s2 * total_prec)  # Sherman-Morrison factor
        n_obs = has.sum(-1).to(dtype)
        log_det = torch.where(has, torch.log(var), torch.zeros_like(var)).sum(-1) + torch.log1p(s2 * total_prec)
        x = torch.where(has, mags - ext - distmod[:, None], torch.zeros_like(mags))  # observed absolute mags

        r = x[:, None, :] - start[None, :, :]  # (n, K, B)
        wr = prec[:, None, :] * r
        wd = prec[:, None, :] * delta[None, :, :]
        sum_wr = wr.sum(-1)
        sum_wd = wd.sum(-1)
        r_pr = (wr * r).sum(-1) - c[:, None] * sum_wr**2
        d_pr = (wd * r).sum(-1) - c[:, None] * sum_wd * sum_wr
        d_pd = ((wd * delta[None]).sum(-1) - c[:, None] * sum_wd**2).clamp_min(0.0)

        short = d_pd < 1e-10
        q = torch.where(short, torch.ones_like(d_pd), d_pd)
        root = torch.sqrt(q)
        along = (
            -0.5 * (r_pr - d_pr * d_pr / q)
            + 0.5 * (LOG_2PI - torch.log(q))
            + _log_diff_ndtr(-d_pr / root, (q - d_pr) / root)
        )
        midpoint = -0.5 * (r_pr - d_pr + 0.25 * d_pd)
        quad = torch.where(short, midpoint, along)
        log_norm = -0.5 * (n_obs * LOG_2PI + log_det)
        logp = log_norm + torch.logsumexp(log_weight[None, :] + quad, dim=-1)

        if self.limit_index is not None:
            j = self.limit_index
            bright, faint = self.limits
            has_j = has[:, j]
            err_j = err[:, j] if self.limit_error is None else torch.full_like(err[:, j], self.limit_error)
            sigma = torch.sqrt(err_j**2 + 0.5 * self.colour_spread**2 + s2).clamp_min(1e-12)
            mu = start[None, :, j] + (distmod + ext[:, j])[:, None]  # (n, K) apparent segment starts
            beta = delta[None, :, j] / sigma[:, None]
            inside = torch.zeros_like(mu)
            if math.isfinite(faint):
                inside = inside + _mean_ndtr((faint - mu) / sigma[:, None], beta)
            else:
                inside = inside + 1.0
            if math.isfinite(bright):
                inside = inside - _mean_ndtr((bright - mu) / sigma[:, None], beta)
            z = (torch.exp(log_weight)[None, :] * inside.clamp_min(0.0)).sum(-1)
            logp = logp - torch.where(has_j, torch.log(z.clamp_min(1e-300 if dtype == torch.float64 else 1e-37)), 0.0)
        return torch.where(n_obs > 0, logp, torch.zeros_like(logp))
