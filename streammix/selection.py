r"""The catalogue's selection: cuts on observed parallax and proper motions.

A catalogue cut on *observed* quantities (the GD-1 field in ``../shared/data``
is every star with parallax < 1 mas and pmra, pmdec in a box) holds only the
part of each component's distribution that passed the cut. The background
flows are trained on the selected stars, so their density is already that of
the selected population; a stream-like component's Gaussian is not, and for a
faint star, whose errors spread its observed proper motions over mas/yr, much
of it lies outside the cut. Each stream-like component's density is therefore
divided by the probability that a star drawn from it, with this star's errors,
passes the cut:

.. math::

    p_k(x \mid \mathrm{sel}) = \frac{p_k(x)}{P_k(\mathrm{sel} \mid \phi_1, \sigma)}

Without it the stream's density of faint stars near a cut is too low, and
their membership too (measured on injections into the real GD-1 field,
``benchmarks/injection.py``).

Proper-motion cuts are in the equatorial proper motions the catalogue was
selected on (pmra cos dec, pmdec); the model's proper motions are in the
stream frame, perhaps corrected for the solar reflex at a fixed distance, so
for each star the cut is a rotated, shifted box in the model's coordinates:
``pm_icrs = M pm_model + offset`` with ``M`` the frame's local rotation (its
transpose) and ``offset`` the reflex motion at the star's position. The
probability of a 2-D Gaussian in a box is integrated by Gauss-Legendre
quadrature over one axis of the closed-form conditional over the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .densities import log_ndtr_difference, ndtr_difference
from .frames import get_frame, reflex_pm

__all__ = ["ObservedProperMotions", "SelectionCuts", "box_log_probability", "interval_log_probability", "selection_transform"]

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(40)  # a normal over the 24-sd reach to 1.4e-9
REACH = 12.0  # standard deviations of the first coordinate that box_log_probability integrates over
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_FLOOR = math.log(1e-30)  # the box probabilities' floor
_FAR = 1000.0  # standard deviations: a box's side beyond is at infinity (box_log_probability's series)
SERIES_TERMS = 6  # terms of the tetrachoric series (box_log_probability)
_CRAMER_TERM = 4.0 * 1.086435**2 / (2.0 * math.pi)  # |term n| <= this * |rho|^n / n (Cramér's inequality)


@dataclass(frozen=True)
class SelectionCuts:
    """The cuts a catalogue was selected on, as a stream-like component applies them.

    Arguments:
        parallax: Observed parallax range (mas), None for an open side; None: no cut.
        pm_low: Lower corner of the (pmra cos dec, pmdec) box (mas/yr); None: no box.
        pm_high: Its upper corner.

    Example:
        >>> import torch
        >>> cuts = SelectionCuts(parallax=(None, 1.0))
        >>> mean, sd = torch.tensor([0.1]), torch.tensor([1.0])
        >>> round(cuts.parallax_log_probability(mean, sd).exp().item(), 4)
        0.8159
    """

    parallax: tuple[float | None, float | None] | None = None
    pm_low: tuple[float, float] | None = None
    pm_high: tuple[float, float] | None = None

    def parallax_log_probability(self, mean: Tensor, sd: Tensor) -> Tensor:
        """log P(observed parallax passes the cut) for parallax ~ Normal(mean, sd²)."""
        if self.parallax is None:
            return torch.zeros_like(mean)
        return interval_log_probability(mean, sd, *self.parallax)

    def pm_log_probability(self, mean: Tensor, cov: Tensor, matrix: Tensor, offset: Tensor) -> Tensor:
        """log P(observed pmra, pmdec in the box) for model-frame proper motions ~
        Normal(mean (N, 2), cov (N, 2, 2)), mapped by ``pm_icrs = matrix @ pm + offset``."""
        if self.pm_low is None:
            return torch.zeros_like(mean[:, 0])
        icrs_mean = torch.einsum("nij,nj->ni", matrix, mean) + offset
        icrs_cov = matrix @ cov @ matrix.transpose(-1, -2)
        low = torch.tensor(self.pm_low, dtype=mean.dtype, device=mean.device)
        high = torch.tensor(self.pm_high, dtype=mean.dtype, device=mean.device)
        return box_log_probability(icrs_mean, icrs_cov, low, high)


@dataclass(frozen=True)
class ObservedProperMotions:
    """The stars as the background flows see them under a proper-motion cut: their
    proper motions (and their covariance) as the catalogue's observed
    (pmra cos dec, pmdec), in the ``pm_phi1_cosphi2`` and ``pm_phi2`` slots.

    Arguments:
        frame: The name of the model's stream frame (see :func:`streammix.frames.get_frame`).
        reflex_distance: The catalogue's reflex-correction distance (kpc), or None.

    Example:
        >>> import numpy as np
        >>> from streammix.data import StarTable
        >>> stars = StarTable(phi1=np.array([-40.0]), phi2=np.array([0.0]),
        ...                   pm_phi1_cosphi2=np.array([-7.9]), pm_phi2=np.array([-0.6]))
        >>> seen = ObservedProperMotions("gd1", 8.0).apply(stars)
        >>> [round(float(v), 2) for v in (seen.pm_phi1_cosphi2[0], seen.pm_phi2[0])]  # GD-1's pmra, pmdec: in the box
        [-5.59, -12.95]
    """

    frame: str
    reflex_distance: float | None = None

    def apply(self, stars):
        """The same stars with observed equatorial proper motions (where the transform is defined)."""
        matrix, offset = selection_transform(get_frame(self.frame), stars.phi1, stars.phi2, self.reflex_distance)
        usable = np.isfinite(matrix).all(axis=(1, 2)) & np.isfinite(offset).all(axis=1)
        matrix = np.where(usable[:, None, None], matrix, np.eye(2))
        offset = np.where(usable[:, None], offset, 0.0)
        pm = np.stack([stars.pm_phi1_cosphi2, stars.pm_phi2], axis=1)
        observed = np.einsum("nij,nj->ni", matrix, pm) + offset
        cov = matrix @ np.nan_to_num(stars.pm_cov()) @ np.swapaxes(matrix, -1, -2)
        err1, err2 = np.sqrt(cov[:, 0, 0]), np.sqrt(cov[:, 1, 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.where(err1 * err2 > 0, cov[:, 0, 1] / (err1 * err2), 0.0)
        return replace(
            stars,
            pm_phi1_cosphi2=observed[:, 0], pm_phi2=observed[:, 1],
            pm_phi1_cosphi2_err=np.where(np.isfinite(stars.pm_phi1_cosphi2_err), err1, np.nan),
            pm_phi2_err=np.where(np.isfinite(stars.pm_phi2_err), err2, np.nan),
            pm_corr=corr,
        )  # fmt: skip


def selection_transform(frame, phi1: np.ndarray, phi2: np.ndarray, reflex_distance: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-star ``(M, offset)`` with ``pm_icrs = M @ pm_model + offset``.

    Arguments:
        frame: The :class:`~streammix.frames.StreamFrame` of the model's coordinates.
        phi1: The stars' phi1 (deg).
        phi2: Their phi2 (deg); NaN gives a NaN transform (the star's cut is then ignored).
        reflex_distance: The distance (kpc) at which the catalogue's proper
            motions were corrected for the solar reflex, or None if they were not.

    Returns:
        ``M`` of shape ``(N, 2, 2)`` and ``offset`` of shape ``(N, 2)`` (mas/yr).

    Example:
        >>> import numpy as np
        >>> from streammix.frames import get_frame
        >>> m, offset = selection_transform(get_frame("gd1"), np.array([-40.0]), np.array([0.0]), None)
        >>> bool(np.allclose(m[0] @ m[0].T, np.eye(2))), offset.tolist()
        (True, [[0.0, 0.0]])
    """
    ra, dec = frame.to_icrs(np.asarray(phi1, dtype=float), np.asarray(phi2, dtype=float))
    ra, dec = np.atleast_1d(ra), np.atleast_1d(dec)
    matrix = np.swapaxes(frame.local_rotation(ra, dec), -1, -2)  # a rotation: its inverse is its transpose
    offset = np.zeros((len(ra), 2))
    if reflex_distance is not None:
        east, north = reflex_pm(ra, dec, np.full(len(ra), float(reflex_distance)))
        offset = np.stack([east, north], axis=1)
    return matrix, offset


def interval_log_probability(mean: Tensor, sd: Tensor, low: float | None, high: float | None) -> Tensor:
    """log P(low < x < high) for x ~ Normal(mean, sd²), elementwise (None or infinite: open),
    accurate far in either tail (:func:`~streammix.densities.log_ndtr_difference`).

    Example:
        >>> import torch
        >>> round(interval_log_probability(torch.tensor(0.0), torch.tensor(1.0), None, 0.0).exp().item(), 6)
        0.5
    """
    open_low = low is None or math.isinf(low)
    open_high = high is None or math.isinf(high)
    z_low = torch.full_like(mean, -math.inf) if open_low else (low - mean) / sd
    z_high = torch.full_like(mean, math.inf) if open_high else (high - mean) / sd
    return log_ndtr_difference(z_low, z_high)


def box_log_probability(mean: Tensor, cov: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """log P(x in [low, high]) for a 2-D Normal(mean, cov), per row, accurate in float32
    however far the box lies from the mean, down to a floor of log(1e-30).

    Each row is summed by the tetrachoric series in the correlation rho
    (:func:`_series_log_probability`) where the bound on its truncation and
    rounding is below ``100 eps`` of the probability (float32: 1.2e-5) and each
    interval is at least half a standard deviation wide: the rows of a catalogue
    whose proper-motion errors, isotropic, dominate the correlation (on GD-1,
    median |rho| 0.006, 96 % of the rows). The others are integrated by quadrature
    (:func:`_quadrature_log_probability`: large correlations, narrow intervals,
    boxes far in the tails). The series costs a few operations per row where the
    quadrature costs 40 nodes' (``benchmarks/RESULTS.md``, session 28). A row with either
    coordinate's interval below the floor gets the floor: its probability is
    smaller still.

    Arguments:
        mean: ``(N, 2)`` means.
        cov: ``(N, 2, 2)`` covariances.
        low: ``(2,)`` lower corner (``-inf`` for an open side).
        high: ``(2,)`` upper corner (``inf`` for an open side).

    Example:
        >>> import torch
        >>> from scipy.stats import multivariate_normal, norm
        >>> mean, cov = torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor([[[1.0, 0.6], [0.6, 2.0]]], dtype=torch.float64)
        >>> low, high = torch.tensor([-1.0, -1.5], dtype=torch.float64), torch.tensor([0.5, 1.0], dtype=torch.float64)
        >>> ours = box_log_probability(mean, cov, low, high).exp().item()
        >>> mvn = multivariate_normal([0.3, -0.2], [[1.0, 0.6], [0.6, 2.0]])
        >>> ref = mvn.cdf([0.5, 1.0]) - mvn.cdf([-1.0, 1.0]) - mvn.cdf([0.5, -1.5]) + mvn.cdf([-1.0, -1.5])
        >>> bool(abs(ours - ref) < 1e-5)
        True
        >>> far = box_log_probability(torch.zeros(1, 2), torch.eye(2)[None], torch.tensor([9.0, 0.0]), torch.tensor([11.0, 1.0]))
        >>> exact = math.log((norm.sf(9.0) - norm.sf(11.0)) * (norm.cdf(1.0) - 0.5))
        >>> bool(abs(far.item() - exact) < 1e-3 * abs(exact))
        True
    """
    series, summed = _series_log_probability(mean, cov, low, high)
    rest = torch.nonzero(~summed).squeeze(-1)
    if rest.numel() == 0:
        return series
    quadrature = _quadrature_log_probability(mean.index_select(0, rest), cov.index_select(0, rest), low, high)
    return torch.where(summed, series, torch.zeros_like(series).index_put((rest,), quadrature))


def _series_log_probability(mean: Tensor, cov: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    r"""log P(x in the box) by the tetrachoric series, and where it is within its tolerance.

    For the standardised coordinates with correlation :math:`\rho` (Mehler's expansion
    of the bivariate normal density, integrated over the box),

    .. math::

        P = \Delta\Phi_1 \Delta\Phi_2 + \sum_{n \ge 1} \frac{\rho^n}{n!}
            [\varphi\,\mathrm{He}_{n-1}]_{a_1}^{b_1}\, [\varphi\,\mathrm{He}_{n-1}]_{a_2}^{b_2}

    (probabilists' Hermite polynomials), summed to ``SERIES_TERMS`` terms relative to
    the leading product, whose log is that of the axes' masses (the difference of ``erfc``
    mirrored into the lower tail, :func:`~streammix.densities.ndtr_difference`: accurate in the
    tails down to the floor); each side's density is divided by its interval's mass in
    log space, and a side beyond 16 standard deviations (or open) contributes 0. By
    Cramér's inequality, :math:`|\varphi\,\mathrm{He}_{n}| \le 0.4334 \sqrt{n!}`, so term n
    is at most :math:`0.7514\,|\rho|^n / n`: the remainder after ``SERIES_TERMS`` terms,
    and the rounding of the sum (4 eps times the terms' bound), are bounded. A row is
    summed where both bounds together are below ``100 eps`` of its probability and each
    interval is at least half a standard deviation wide (a narrower one's mass, a
    difference of two close CDFs, is the error then, not the series; the quadrature
    integrates it), or where either interval's mass is below the floor (then the floor:
    its probability is smaller). Rows with a zero, infinite or NaN variance or mean are
    left to the quadrature.

    Its gradient is the series' own, in closed form (:class:`_SeriesGradient`, from
    :func:`_series_terms`): one pass that autograd would otherwise record and replay
    op by op. On the rows it does not sum the gradient is 0 (:func:`box_log_probability`
    takes theirs from the quadrature).
    """
    if torch.is_grad_enabled() and (mean.requires_grad or cov.requires_grad):
        return _SeriesGradient.apply(mean, cov, low, high)
    log_p, summed, _, _ = _series_terms(mean, cov, low, high)
    return log_p, summed


class _SeriesGradient(torch.autograd.Function):
    """The tetrachoric series (:func:`_series_terms`) with its closed-form gradient: first
    derivatives only (``once_differentiable``)."""

    @staticmethod
    def forward(ctx, mean: Tensor, cov: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        log_p, summed, grad_mean, grad_cov = _series_terms(mean, cov, low, high, gradient=True)
        ctx.mark_non_differentiable(summed)
        ctx.save_for_backward(grad_mean, grad_cov)
        return log_p, summed

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_log_p: Tensor, _grad_summed: Tensor) -> tuple[Tensor, Tensor, None, None]:
        grad_mean, grad_cov = ctx.saved_tensors
        return grad_log_p.unsqueeze(-1) * grad_mean, grad_log_p[:, None, None] * grad_cov, None, None


def _series_terms(
    mean: Tensor, cov: Tensor, low: Tensor, high: Tensor, *, gradient: bool = False
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    r"""The arithmetic of :func:`_series_log_probability`: ``(log_p, summed)`` and, with
    ``gradient``, the gradient of each row's ``log_p`` in ``mean`` ``(N, 2)`` and ``cov``
    ``(N, 2, 2)`` (the off-diagonal in ``cov[:, 0, 1]``, which the series reads; 0 on
    the rows it does not sum, on the floor and on degenerate rows), else None twice.

    With the sides :math:`z` in standard deviations, each side's signed ratio
    :math:`r = \pm\varphi(z)/\Delta\Phi` (the derivative of its axis' log-mass),
    :math:`E_{i,k} = [\varphi\,\mathrm{He}_{k-1}]_{a_i}^{b_i} / \Delta\Phi_i` the terms'
    factors, :math:`T = \sum_k \rho^k E_{1,k} E_{2,k} / k!` and
    :math:`\partial(\varphi\,\mathrm{He}_{k-1})/\partial z = -\varphi\,\mathrm{He}_k`:

    .. math::

        \frac{\partial \ln P}{\partial z_{s,i}} = r_{s,i}\Big(1 - \frac{1}{1+T}
            \sum_k \frac{\rho^k}{k!} E_{\bar\imath,k}\,(\mathrm{He}_k(z_{s,i}) + E_{i,k})\Big),
        \qquad
        \frac{\partial \ln P}{\partial \rho} = \frac{1}{1+T}
            \sum_k \frac{\rho^{k-1}}{(k-1)!} E_{1,k} E_{2,k},

    carried to the means and variances through :math:`z = (\text{side} - \mu)/\sigma` and
    :math:`\rho = \Sigma_{12}/(\sigma_1\sigma_2)`. Run with autograd on, ``log_p`` is
    differentiable by autograd too (``tests/test_selection.py`` compares the two).
    """
    eps = torch.finfo(mean.dtype).eps
    variance = torch.stack([cov[:, 0, 0], cov[:, 1, 1]])  # (2 axes, N)
    # degenerate rows (a zero, infinite or NaN variance or mean) go to the quadrature, and the
    # series runs on a harmless stand-in for them, so that no NaN reaches a gradient
    usable = torch.isfinite(mean).all(-1) & torch.isfinite(cov).all((-2, -1)) & (variance > 0).all(0)
    mean = torch.where(usable.unsqueeze(-1), mean, 0.0)
    cov = torch.where(usable[:, None, None], cov, torch.eye(2, dtype=cov.dtype, device=cov.device))
    variance = torch.where(usable, variance, 1.0)
    sd = torch.sqrt(variance)
    rho = cov[:, 0, 1] / (sd[0] * sd[1])
    # the sides in standard deviations, (2 axes, N), held within 1000 (no probability changes);
    # an open side a constant (a side at infinity has no finite derivative)
    sides = []
    for bound, open_value in ((low, -_FAR), (high, _FAR)):
        columns = [
            torch.full_like(rho, open_value) if math.isinf(bound[axis]) else (bound[axis] - mean[:, axis]) / sd[axis]
            for axis in range(2)
        ]
        sides.append(torch.stack(columns).clamp(-_FAR, _FAR))
    lo, hi = sides
    # (2, N): the log of erfc's difference (ndtr_difference), as accurate as log_ndtr_difference's
    # on the intervals the series sums (half a standard deviation or wider) wherever the mass is
    # above the floor, and 6 times cheaper; below the floor, only being below matters
    log_mass = torch.log(ndtr_difference(lo, hi)).clamp_min(2.0 * _LOG_FLOOR)
    z = torch.stack([hi, lo])  # (2 sides, 2 axes, N)
    near = z.abs() < 16.0
    z = torch.where(near, z, 0.0)
    # each side's density over its interval's mass, the lower side negative
    ratio = torch.exp((-0.5 * z * z - _LOG_SQRT_2PI - log_mass).clamp(max=10.0))  # the clamp: unsummed rows only
    ratio = torch.where(near, ratio, 0.0) * torch.tensor([1.0, -1.0], dtype=z.dtype, device=z.device).reshape(2, 1, 1)
    # [phi He_{n-1}] over each axis' interval relative to its mass, times rho^n / n!, summed
    previous, current = torch.zeros_like(z), torch.ones_like(z)
    coefficient, total = torch.ones_like(rho), torch.zeros_like(rho)
    # for the gradient: the sums over k of rho^k / k! E_other,k (He_k(z) + E_k) and of rho^(k-1) / (k-1)! E_1,k E_2,k
    side_sum, rho_sum = torch.zeros_like(z), torch.zeros_like(rho)
    for n in range(SERIES_TERMS):
        edges = (ratio * current).sum(0)
        product = edges.prod(0)
        if gradient:
            rho_sum = rho_sum + coefficient * product
        coefficient = coefficient * rho / (n + 1)
        total = total + coefficient * product
        previous, current = current, z * current - n * previous
        if gradient:
            side_sum = side_sum + coefficient * edges.flip(0) * (current + edges)
    log_p = log_mass.sum(0) + torch.log1p(total.clamp_min(-1.0 + 1e-6))
    with torch.no_grad():
        r = rho.abs().clamp(max=0.999)
        remainder = _CRAMER_TERM * r ** (SERIES_TERMS + 1) / ((SERIES_TERMS + 1) * (1.0 - r))
        rounding = 4.0 * eps * _CRAMER_TERM * r / (1.0 - r)
        below_floor = usable & (log_mass.min(0).values < _LOG_FLOOR)
        # an interval narrower than half a standard deviation loses digits in its own mass
        # (a difference of two close CDFs) and its sides' ratios grow as 1 / width
        wide = ((hi - lo) >= 0.5).all(0)
        bounded = remainder + rounding <= 100.0 * eps * torch.exp(log_p.clamp(max=0.0))
        summed = below_floor | (usable & wide & bounded)
    log_p = torch.where(below_floor, torch.full_like(log_p, _LOG_FLOOR), log_p.clamp_min(_LOG_FLOOR))
    if not gradient:
        return log_p, summed, None, None
    # where log1p's argument was clamped, the series' part has no gradient
    series_slope = torch.where(total > -1.0 + 1e-6, 1.0 / (1.0 + total), 0.0)
    side_grad = ratio * (1.0 - series_slope * side_sum)  # d log_p / d z, (2 sides, 2 axes, N)
    rho_grad = series_slope * rho_sum
    # z = (side - mean) / sd, rho = cov_01 / (sd_0 sd_1); only the summed rows above the floor
    live = summed & ~below_floor & (log_p > _LOG_FLOOR)
    grad_mean = torch.where(live, -side_grad.sum(0) / sd, 0.0)
    grad_sd = torch.where(live, -((side_grad * z).sum(0) + rho_grad * rho) / sd, 0.0)
    grad_cov = torch.zeros_like(cov)
    grad_cov[:, 0, 0] = grad_sd[0] / (2.0 * sd[0])
    grad_cov[:, 1, 1] = grad_sd[1] / (2.0 * sd[1])
    grad_cov[:, 0, 1] = torch.where(live, rho_grad / (sd[0] * sd[1]), 0.0)
    return log_p, summed, grad_mean.transpose(0, 1), grad_cov


def _quadrature_log_probability(mean: Tensor, cov: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """log P(x in [low, high]) for a 2-D Normal(mean, cov), per row, by quadrature, accurate in
    float32 however far the box lies from the mean, down to a floor of log(1e-30).

    The first axis is integrated by 40-point Gauss-Legendre quadrature of the
    closed-form probability of the conditional second coordinate, over the
    part of the box within ``REACH`` (12) standard deviations of the mean
    or, where the whole box lies farther, over the strip at its nearest side
    within which the density falls by e^-32. A normal's tail beyond 11.6
    standard deviations is below the floor, so the reach holds every part of
    the box whose probability the floor does not hide, a far box in a strongly
    correlated second coordinate included (its probability lies at the first
    coordinate's rho times its own distance: exact to rho 0.95, within a nat at
    0.99, where that step is narrower than the nodes' spacing). The conditional probability is a
    difference of ``erfc`` mirrored into the lower tail
    (:func:`~streammix.densities.ndtr_difference`); an open side of the second
    coordinate is put 50 standard deviations out, so that its gradient stays
    finite. Where the true probability is below the floor, the floor is
    larger than it: a density divided by it is only ever lowered. (A
    difference of :func:`torch.special.ndtr`, 0 in float32 beyond 5.5 standard
    deviations, and an 8-sd reach left the floor where the probability was far
    above it: ``benchmarks/RESULTS.md``, session 26.)

    Arguments:
        mean: ``(N, 2)`` means.
        cov: ``(N, 2, 2)`` covariances.
        low: ``(2,)`` lower corner (``-inf`` for an open side).
        high: ``(2,)`` upper corner (``inf`` for an open side).
    """
    m1, m2 = mean[:, 0], mean[:, 1]
    s11, s12, s22 = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    sd1 = torch.sqrt(s11)
    low0, high0 = low[0].expand_as(m1), high[0].expand_as(m1)
    a = torch.maximum(low0, m1 - REACH * sd1)
    b = torch.minimum(high0, m1 + REACH * sd1)
    # where the box lies beyond the reach: the strip at its nearest side over which the
    # density falls by e^-32 (its log slope there is the distance over the variance)
    above = m1 - REACH * sd1 > high0
    below = m1 + REACH * sd1 < low0
    strip_above = torch.maximum(low0, high0 - 32.0 * s11 / (m1 - high0).clamp_min(sd1))
    strip_below = torch.minimum(high0, low0 + 32.0 * s11 / (low0 - m1).clamp_min(sd1))
    a = torch.where(above, strip_above, torch.where(below, low0, a))
    b = torch.where(below, strip_below, torch.where(above, high0, b))
    half_width = 0.5 * (b - a).clamp_min(0.0)
    nodes = torch.as_tensor(_NODES, dtype=mean.dtype, device=mean.device)
    weights = torch.as_tensor(_WEIGHTS, dtype=mean.dtype, device=mean.device)
    x = a.unsqueeze(-1) + (nodes + 1.0).unsqueeze(0) * half_width.unsqueeze(-1)  # (N, Q)
    density = torch.exp(-0.5 * ((x - m1.unsqueeze(-1)) / sd1.unsqueeze(-1)) ** 2) / (sd1.unsqueeze(-1) * _SQRT_2PI)
    slope = (s12 / s11).unsqueeze(-1)
    sd2 = torch.sqrt((s22 - s12 * s12 / s11).clamp_min(1e-12)).unsqueeze(-1)
    centre = m2.unsqueeze(-1) + slope * (x - m1.unsqueeze(-1))
    # an open side 50 sd out: the same probability, and a finite gradient (inf / sd2 has none)
    low1 = torch.maximum(low[1].expand_as(centre), centre - 50.0 * sd2)
    high1 = torch.minimum(high[1].expand_as(centre), centre + 50.0 * sd2)
    inner = ndtr_difference((low1 - centre) / sd2, (high1 - centre) / sd2)
    return torch.log((half_width * (density * inner * weights).sum(-1)).clamp_min(1e-30))
