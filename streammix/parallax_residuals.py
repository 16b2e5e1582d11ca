"""Each component's stars against the parallax its distance track predicts.

A component's distance modulus is set mostly by the isochrone where stars have
photometry, and its parallax term is one term among many. Whether the stars a
component takes really lie at its distance is a check that needs no labels: the
membership-weighted mean of their observed parallaxes against the mean the
model predicts for the same stars,

.. math::

    \\bar\\varpi_\\mathrm{obs} = \\frac{\\sum_i w_i \\varpi_i}{\\sum_i w_i}, \\qquad
    \\bar\\varpi_\\mathrm{model} = \\frac{\\sum_i w_i\\, E_i}{\\sum_i w_i}, \\qquad
    w_i = \\frac{p_{ik}}{\\sigma_i^2},

where :math:`E_i` is the observed parallax the component predicts for star
:math:`i`: the true parallax of its distance modulus at the star's phi1, plus
the catalogue's zero-point, and, where the catalogue cut its parallaxes, the
mean of that normal truncated to the cut. The standard error of the difference
is :math:`\\sqrt{\\sum_i w_i^2 V_i} / \\sum_i w_i`, with :math:`V_i` the
(truncated) normal's variance. A difference of many standard errors means the
component's stars are not where its distance says (or that the zero-point or the
distance track is off).

A component whose distance is free takes the stars its distance favours, so its
own comparison can pass while its stars lie elsewhere than the stream's. Each
component's stars are therefore also compared with the parallaxes a *reference*
component (the first one, usually the stream) predicts for them: stars of another
distance taken for a part of the stream show there, and the comparison is made star
by star, so components whose stars are measured differently well (which a cut
biases differently) are compared fairly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.special import log_ndtr

from .components import LN10_5
from .errors import InputError

if TYPE_CHECKING:
    from astropy.table import Table

    from .config import Config
    from .data import StarTable

__all__ = [
    "ParallaxResidual",
    "ParallaxResiduals",
    "component_parallax_residuals",
    "parallax_residual",
    "truncated_normal_moments",
]

@dataclass(frozen=True)
class ParallaxResidual:
    """One component's membership-weighted mean parallax, observed and predicted.

    Arguments:
        stars: The sum of the component's membership probabilities over the stars
            with a parallax (its expected number of stars there).
        observed: The weighted mean of their observed parallaxes (mas).
        expected: The weighted mean of the observed parallaxes the component
            predicts for the same stars (mas).
        error: The standard error of ``observed - expected`` (mas).

    Example:
        >>> residual = ParallaxResidual(stars=700.0, observed=0.06, expected=0.11, error=0.008)
        >>> round(residual.significance, 2)
        -6.25
    """

    stars: float
    observed: float
    expected: float
    error: float

    @property
    def significance(self) -> float:
        """``(observed - expected) / error``: how many standard errors apart."""
        return (self.observed - self.expected) / self.error if self.error > 0 else math.nan

    def to_dict(self) -> dict[str, float]:
        """The fields and the significance, for a JSON summary."""
        return {**asdict(self), "significance": self.significance}


@dataclass(frozen=True)
class ParallaxResiduals:
    """Every component's stars against its own distance and against a reference component's.

    Arguments:
        reference: The component whose distance the others' stars are also compared with.
        own: Component name -> its stars against its own distance.
        at_reference: Component name (the reference's excepted) -> its stars against the
            reference's distance.

    Example:
        >>> one = ParallaxResidual(stars=10.0, observed=0.2, expected=0.1, error=0.05)
        >>> ParallaxResiduals("stream", {"stream": one}, {}).to_dict()["own_distance"]["stream"]["significance"]
        2.0
    """

    reference: str
    own: dict[str, ParallaxResidual]
    at_reference: dict[str, ParallaxResidual]

    def to_dict(self) -> dict:
        """For a JSON summary: ``reference``, ``own_distance`` and ``reference_distance``."""
        return {
            "reference": self.reference,
            "own_distance": {name: residual.to_dict() for name, residual in self.own.items()},
            "reference_distance": {name: residual.to_dict() for name, residual in self.at_reference.items()},
        }


def _log_phi(z: np.ndarray) -> np.ndarray:
    """log of the standard normal density."""
    return -0.5 * z * z - 0.5 * math.log(2 * math.pi)


def _log1mexp(d: np.ndarray) -> np.ndarray:
    """log(1 - exp(d)) for d <= 0, accurate at both ends (Maechler 2012)."""
    with np.errstate(divide="ignore"):
        return np.where(d > -math.log(2.0), np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def truncated_normal_moments(
    mean: np.ndarray, sd: np.ndarray, low: float | None = None, high: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The mean and variance of a normal truncated to ``[low, high]`` (None: open), in
    closed form and in log space, accurate far in either tail (:func:`scipy.stats.truncnorm`'s
    ``stats`` agrees, but takes seconds for a field's stars).

    Arguments:
        mean: The normal's means.
        sd: Its standard deviations (> 0).
        low: The lower cut, or None.
        high: The upper cut, or None.

    Returns:
        The truncated normal's means and variances.

    Example:
        >>> m, v = truncated_normal_moments(np.array([0.0]), np.array([1.0]), high=0.0)
        >>> round(float(m[0]), 4), round(float(v[0]), 4)  # -sqrt(2/pi), 1 - 2/pi
        (-0.7979, 0.3634)
    """
    mean = np.asarray(mean, dtype=float)
    sd = np.asarray(sd, dtype=float)
    a = np.full(mean.shape, -np.inf) if low is None else (low - mean) / sd
    b = np.full(mean.shape, np.inf) if high is None else (high - mean) / sd
    # the normal's mass between a and b and the densities at its ends, in log space (far tails)
    mirror = a > 0  # both ends above the mean: work in the mirrored lower tail
    lo, hi = np.where(mirror, -b, a), np.where(mirror, -a, b)
    log_mass = log_ndtr(hi) + _log1mexp(np.minimum(log_ndtr(lo) - log_ndtr(hi), 0.0))
    # phi at each end over the mass; an open end's is 0 (its exponent -inf before exp: no overflow)
    pdf_a = np.exp(np.where(np.isfinite(a), _log_phi(np.where(np.isfinite(a), a, 0.0)), -np.inf) - log_mass)
    pdf_b = np.exp(np.where(np.isfinite(b), _log_phi(np.where(np.isfinite(b), b, 0.0)), -np.inf) - log_mass)
    a_pdf_a = np.where(np.isfinite(a), a, 0.0) * pdf_a
    b_pdf_b = np.where(np.isfinite(b), b, 0.0) * pdf_b
    shift = pdf_a - pdf_b
    variance = sd * sd * (1.0 + a_pdf_a - b_pdf_b - shift * shift)
    return mean + sd * shift, variance


def parallax_residual(
    parallax: np.ndarray,
    parallax_err: np.ndarray,
    probability: np.ndarray,
    true_parallax: np.ndarray,
    *,
    true_parallax_sd: np.ndarray | float = 0.0,
    zero_point: float = 0.0,
    cut: tuple[float | None, float | None] | None = None,
) -> ParallaxResidual:
    """A component's membership-weighted mean parallax against its prediction.

    Arguments:
        parallax: The stars' observed parallaxes (mas; NaN: none).
        parallax_err: Their uncertainties (mas).
        probability: The component's membership probability of each star.
        true_parallax: The true parallax the component's distance gives at each star (mas).
        true_parallax_sd: Its spread from the component's distance spread (mas).
        zero_point: The catalogue's parallax zero-point (mas), added to the true parallax.
        cut: The catalogue's parallax cut ``(low, high)`` (mas, None: open), or None.

    Returns:
        The :class:`ParallaxResidual`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> err = rng.uniform(0.2, 1.0, 5000)
        >>> observed = 0.1 + err * rng.normal(size=5000)
        >>> kept = observed < 1.0  # a catalogue cut at 1 mas
        >>> at_model = parallax_residual(observed[kept], err[kept], np.ones(kept.sum()), np.full(kept.sum(), 0.1),
        ...                              cut=(None, 1.0))
        >>> abs(at_model.significance) < 3
        True
        >>> nearer = parallax_residual(observed[kept], err[kept], np.ones(kept.sum()), np.full(kept.sum(), 0.05),
        ...                            cut=(None, 1.0))
        >>> nearer.significance > 5  # the stars are nearer than a model at 20 kpc says
        True
    """
    parallax = np.asarray(parallax, dtype=float)
    parallax_err = np.asarray(parallax_err, dtype=float)
    probability = np.asarray(probability, dtype=float)
    true_parallax = np.asarray(true_parallax, dtype=float)
    spread = np.broadcast_to(np.asarray(true_parallax_sd, dtype=float), true_parallax.shape)
    ok = np.isfinite(parallax) & np.isfinite(parallax_err) & (parallax_err > 0) & np.isfinite(probability)
    ok &= np.isfinite(true_parallax)
    plx, err, p = parallax[ok], parallax_err[ok], probability[ok]
    sd = np.sqrt(err * err + spread[ok] ** 2)
    low, high = cut if cut is not None else (None, None)
    expected, variance = truncated_normal_moments(true_parallax[ok] + zero_point, sd, low, high)
    weight = p / (err * err)
    total = weight.sum()
    if not total > 0:
        return ParallaxResidual(float(p.sum()), math.nan, math.nan, math.nan)
    return ParallaxResidual(
        stars=float(p.sum()),
        observed=float((weight * plx).sum() / total),
        expected=float((weight * expected).sum() / total),
        error=float(np.sqrt((weight * weight * variance).sum()) / total),
    )


def component_parallax_residuals(
    config: Config,
    stars: StarTable,
    members: Table,
    tracks: Table,
    *,
    reference: str | None = None,
    cut: tuple[float | None, float | None] | None | Literal["config"] = "config",
) -> ParallaxResiduals | None:
    """:func:`parallax_residual` of every stream-like component with a distance, from a
    fit's membership table and tracks (the ensemble's median distance modulus and its
    spread, interpolated to each star's phi1), against its own distance and against the
    ``reference`` component's.

    Arguments:
        config: The fitted :class:`~streammix.config.Config` (its zero-point and parallax cut).
        stars: The fitted :class:`~streammix.data.StarTable`, in the order of ``members``.
        members: Its membership table (``p_<component>`` per star).
        tracks: Its tracks table (``<component>_distmod`` and ``<component>_distmod_width``
            on a phi1 grid).
        reference: The component whose distance the others' stars are also compared with
            (default: the first stream-like component).
        cut: The catalogue's parallax cut ``(low, high)`` (mas) where the config does not
            declare it in ``data.selection``; ``"config"``: the config's (or none).

    Returns:
        The :class:`ParallaxResiduals`, or None when the model has no parallax or no
        component a distance.

    The prediction is the ensemble's median track, while the probabilities may be
    cross-fitted (each star's from the member that did not train on it); the standard
    error holds the parallaxes' errors, not the track's uncertainty, nor a catalogue's
    spatially correlated parallax systematics.

    Example:
        >>> import numpy as np
        >>> from astropy.table import Table
        >>> from streammix.config import Config
        >>> from streammix.data import StarTable
        >>> cfg = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]}, "model": {
        ...     "coordinates": ["phi2", "parallax"], "background": {"blocks": [["parallax"]]},
        ...     "components": [{"name": "stream"}, {"name": "nearer"}]}})
        >>> rng = np.random.default_rng(1)
        >>> n = 4000
        >>> err = rng.uniform(0.1, 0.5, n)
        >>> near = np.arange(n) >= n // 2  # half the stars at 5 kpc, half at 10 kpc
        >>> plx = np.where(near, 0.2, 0.1) + err * rng.normal(size=n)
        >>> stars = StarTable(phi1=rng.uniform(-10, 10, n), phi2=np.zeros(n), parallax=plx, parallax_err=err)
        >>> members = Table({"p_stream": (~near).astype(float), "p_nearer": near.astype(float)})
        >>> tracks = Table({"phi1": [-10.0, 10.0], "stream_distmod": [15.0, 15.0], "nearer_distmod": [13.5, 13.5]})
        >>> residuals = component_parallax_residuals(cfg, stars, members, tracks)
        >>> residuals.reference, [abs(r.significance) < 3 for r in residuals.own.values()]  # each at its distance
        ('stream', [True, True])
        >>> bool(residuals.at_reference["nearer"].significance > 10)  # not at the stream's distance
        True
    """
    if "parallax" not in config.model.coordinates or stars.parallax is None:
        return None
    if cut == "config":
        selection = config.data.selection
        cut = tuple(selection.parallax) if selection is not None and selection.parallax is not None else None
    grid = np.asarray(tracks["phi1"], dtype=float)
    phi1 = np.asarray(stars.phi1, dtype=float)
    names = [c.name for c in config.model.components if f"{c.name}_distmod" in tracks.colnames]
    names = [name for name in names if f"p_{name}" in members.colnames]
    if not names:
        return None
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise InputError(f"parallax residuals: reference '{reference}' is not a component with a distance {names}")

    def predicted(name: str) -> tuple[np.ndarray, np.ndarray | float]:
        distmod = np.interp(phi1, grid, np.asarray(tracks[f"{name}_distmod"], dtype=float))
        true = 10.0 ** ((10.0 - distmod) / 5.0)
        column = f"{name}_distmod_width"
        width = np.interp(phi1, grid, np.asarray(tracks[column], dtype=float)) if column in tracks.colnames else 0.0
        return true, LN10_5 * true * width

    def residual(name: str, at: str) -> ParallaxResidual:
        true, spread = predicted(at)
        probability = np.asarray(members[f"p_{name}"], dtype=float)
        return parallax_residual(
            stars.parallax, stars.parallax_err, probability, true,
            true_parallax_sd=spread, zero_point=config.data.parallax_zero_point, cut=cut,
        )  # fmt: skip

    own = {name: residual(name, name) for name in names}
    at_reference = {name: residual(name, reference) for name in names if name != reference}
    return ParallaxResiduals(reference, own, at_reference)
