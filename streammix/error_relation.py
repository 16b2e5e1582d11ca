r"""How a catalogue's parallax errors follow its stars' magnitudes.

A star's astrometric errors are set by its brightness: in Gaia, photon noise
makes :math:`\log_{10}\sigma_\varpi` grow about linearly with magnitude
(Lindegren et al. 2018, 2021), with a scatter from the scanning law and the
star's colour. The relation

.. math::
    \log_{10}\sigma_\varpi = \alpha + \sum_b \beta_b\, m_b
    + \sum_{a \le b} \gamma_{ab} (m_a - c_a)(m_b - c_b) + \epsilon,
    \qquad \epsilon \sim N(0, s^2),

over the model's bands :math:`m_b` (the quadratic terms, about the bands'
mean magnitudes :math:`c_b`, only with ``degree=2``: Gaia's errors flatten at
the bright end; on the GD-1 file's PS1 stars the linear relation's median
residual is +0.21 dex at g = 14-15 and +0.09 at g = 22-23, the quadratic's at
most 0.04 in any 1-mag bin, ``benchmarks/error_density.py``) is fitted to the field's own stars (least
squares, clipped at 3 s until no star moves: it is a property of the
catalogue, not of any component). The model itself does not need it: when the
errors depend on the magnitudes alone, the relation is the same factor for
every component and cancels from the memberships. A prediction for stars
*selected by their astrometry* does need it, since that selection favours
small errors and so bright stars (:func:`streammix.residuals.cmd_residuals`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["ErrorRelation", "fit_error_relation"]

#: Fewest stars with every band and a parallax error to fit the relation from.
MIN_STARS = 50


@dataclass(frozen=True)
class ErrorRelation:
    r"""A linear relation of :math:`\log_{10}` parallax error on magnitudes, with Gaussian scatter.

    Arguments:
        intercept: :math:`\alpha`.
        slopes: :math:`\beta_b`, one per band (dex per mag).
        scatter: :math:`s` (dex).
        quadratic: :math:`\gamma_{ab}` for each pair ``a <= b`` of bands in
            order (dex per mag²); empty for a linear relation.
        centre: :math:`c_b`, the magnitudes the quadratic terms are taken about.

    Example:
        >>> import numpy as np
        >>> relation = ErrorRelation(-5.4, (0.27, 0.0), 0.12)
        >>> round(float(relation.mean(np.array([[20.0, 19.5]]))[0]), 2)
        0.0
        >>> round(float(relation.log_density(np.array([0.0]), np.array([[20.0, 19.5]]))[0]), 3)
        1.201
    """

    intercept: float
    slopes: tuple[float, ...]
    scatter: float
    quadratic: tuple[float, ...] = ()
    centre: tuple[float, ...] = ()

    def mean(self, mags: np.ndarray) -> np.ndarray:
        r"""The expected :math:`\log_{10}\sigma_\varpi` of stars with magnitudes ``mags`` (N, B)."""
        mags = np.asarray(mags, dtype=float)
        out = self.intercept + mags @ np.asarray(self.slopes, dtype=float)
        if self.quadratic:
            out = out + _products(mags - np.asarray(self.centre, dtype=float)) @ np.asarray(self.quadratic, dtype=float)
        return out

    def log_density(self, log_err: np.ndarray, mags: np.ndarray) -> np.ndarray:
        r"""ln of the density of :math:`\log_{10}\sigma_\varpi` = ``log_err`` given ``mags`` (N, B)."""
        z = (np.asarray(log_err, dtype=float) - self.mean(mags)) / self.scatter
        return -0.5 * z * z - math.log(self.scatter) - 0.5 * math.log(2.0 * math.pi)


def _products(centred: np.ndarray) -> np.ndarray:
    """The products ``m_a m_b`` (a <= b) of each row of ``centred`` (N, B): shape (N, B (B + 1) / 2)."""
    first, second = np.triu_indices(centred.shape[-1])
    return centred[..., first] * centred[..., second]


def fit_error_relation(
    parallax_err: np.ndarray, mags: np.ndarray, *, clip: float = 3.0, degree: int = 1
) -> ErrorRelation:
    r"""Fit :class:`ErrorRelation` to the stars that have every band and a positive parallax error.

    Least squares of :math:`\log_{10}\sigma_\varpi` on ``[1, mags]`` (and with
    ``degree=2`` the products of the magnitudes about their means); stars more
    than ``clip`` scatters off are left out and the fit repeated until the set
    of kept stars stops changing (at most 20 times).

    Arguments:
        parallax_err: Parallax errors (mas), (N,); NaN or <= 0: not used.
        mags: Magnitudes (N, B); NaN where missing.
        clip: The clipping threshold, in scatters.
        degree: 1 (linear in the magnitudes) or 2 (quadratic).

    Returns:
        The relation.

    Raises:
        InputError: Fewer than :data:`MIN_STARS` stars have every band and an error.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> g = rng.uniform(15, 21, 2000)
        >>> err = 10 ** (-5.0 + 0.25 * g + 0.1 * rng.standard_normal(2000))
        >>> relation = fit_error_relation(err, g[:, None])
        >>> round(relation.slopes[0], 2), round(relation.scatter, 2)
        (0.25, 0.1)
        >>> curved = 10 ** (-1.0 + 0.25 * (g - 18) + 0.03 * (g - 18) ** 2 + 0.1 * rng.standard_normal(2000))
        >>> relation = fit_error_relation(curved, g[:, None], degree=2)
        >>> round(float(relation.mean(np.array([[21.0]]))[0]), 1), round(relation.scatter, 2)  # truth 0.02
        (0.0, 0.1)
    """
    if degree not in (1, 2):
        raise ValueError(f"error relation: degree {degree} is not 1 or 2")
    err = np.asarray(parallax_err, dtype=float)
    mags = np.atleast_2d(np.asarray(mags, dtype=float))
    use = np.isfinite(err) & (err > 0) & np.isfinite(mags).all(axis=1)
    if use.sum() < MIN_STARS:
        raise InputError(
            f"error relation: {int(use.sum())} stars have every band and a parallax error; fitting how the "
            f"errors follow the magnitudes needs at least {MIN_STARS}"
        )
    centre = mags[use].mean(axis=0)
    design = np.column_stack([np.ones(use.sum()), mags[use]])
    if degree == 2:
        design = np.column_stack([design, _products(mags[use] - centre)])
    target = np.log10(err[use])
    keep = np.ones(target.size, dtype=bool)
    for _ in range(20):
        coef, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)
        residual = target - design @ coef
        scatter = float(np.std(residual[keep]))
        again = np.abs(residual) < clip * scatter
        if np.array_equal(again, keep):
            break
        keep = again
    n_bands = mags.shape[1]
    slopes = tuple(float(c) for c in coef[1 : 1 + n_bands])
    if degree == 1:
        return ErrorRelation(float(coef[0]), slopes, scatter)
    return ErrorRelation(
        float(coef[0]), slopes, scatter, tuple(float(c) for c in coef[1 + n_bands :]), tuple(float(c) for c in centre)
    )
