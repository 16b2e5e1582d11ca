"""A realistic mock field around a GD-1-like stream: the embedded default data set.

:func:`generate_mock` draws a Gaia-like catalog in the GD-1 frame of Koposov et
al. (2010): a thin, curved, gappy stream on top of a structured background of a
halo-like and a disc-like population, with Gaia DR3-like errors, missing
astrometry and photometry, and the truth kept in ``true_*`` columns.
:func:`true_tracks` gives the stream's true tracks on a phi1 grid and
:func:`write_mock` writes both tables.

The generative model, in full:

- **Stream** (GD-1-like; ``x = (phi1 + 40 deg) / 50 deg``). Track
  ``phi2 = 0.3 + 0.2 x - 1.0 x^2`` deg, width ``0.2 + 0.1 sin(pi x)`` deg
  (0.1-0.3), Gaussian across the track unless :attr:`MockConfig.stream_profile`
  names another profile (e.g. a Student-t for heavy wings). Proper motions ``pm_phi1_cosphi2 = -13.1 + 0.35 x + 5.5 x^2`` and
  ``pm_phi2 = -2.5 + 0.8 x - 0.2 x^2`` mas/yr (shapes of the Ibata et al. 2024
  GD-1 track in galstreams), intrinsic dispersions 0.25 and 0.2 mas/yr. Distance
  modulus ``14.45 - 0.35 x + 0.4 x^2`` (7.5-11 kpc) with a 0.05 mag spread per
  star. Intrinsic linear density ``(1 + 0.4 x)`` times one Gaussian dip per
  entry of :attr:`MockConfig.gaps`. Initial masses follow a Kroupa (2001) IMF
  on the isochrone; magnitudes are the isochrone's plus the star's distance
  modulus (no extinction: the catalog is taken as dereddened).
- **Halo-like background**: an old metal-poor isochrone, number density
  ``~ r^-3`` (heliocentric distance standing in for Galactocentric radius), i.e.
  uniform in distance modulus between :attr:`MockConfig.halo_distance_range`;
  isotropic 100 km/s velocity dispersion about zero Galactocentric mean, so
  proper motions are the solar reflex ``-v_sun / (4.74 d)`` plus scatter; sky
  density ``exp(-0.006 (phi1 + 40) + 0.03 phi2)``.
- **Spur** (optional, :attr:`MockConfig.n_spur` stars; none by default): a
  second stream-like component beside the stream, like GD-1's spur (Price-Whelan
  & Bonaca 2018): uniform in phi1 over :attr:`MockConfig.spur_phi1_range`,
  centred ``spur_phi2_offset`` deg above the stream's phi2 track with a Gaussian
  width ``spur_phi2_width``, and the stream's proper motions, distance and
  isochrone at the same phi1. Its stars have ``true_component`` and
  ``true_population`` ``"spur"``.
- **Disc-like background** (thick disc): a younger, metal-richer isochrone
  (redder), density ``~ exp(-|z| / 0.9 kpc)`` with ``z = d sin b`` the height
  above the plane, so it follows the field's Galactic latitude, between
  :attr:`MockConfig.disc_distance_range`; mean rotation 190 km/s (a 56 km/s lag
  behind the Sun) and dispersions (60, 45, 40) km/s in (U, V, W). Solar motion:
  astropy's Galactocentric defaults, (12.9, 245.6, 7.78) km/s.
- **Errors** (Gaia DR3 science performance, Gaia Collaboration, Vallenari et al.
  2023, A&A 674, A1; cosmos.esa.int/web/gaia/science-performance): the median
  error is interpolated log-linearly in G between anchors, flat brighter than
  the first and extrapolated fainter than the last:
  parallax 0.015/0.02/0.03/0.07/0.5/1.3 mas at G = 12/13/15/17/20/21;
  G 0.3/0.3/1/6/15 mmag at G = 12/13/17/20/21;
  BP 0.9/12/108/250 mmag and RP 0.6/6/52/120 mmag at G = 13/17/20/21.
  Each star's errors scatter by 0.1 dex about the median; its proper-motion
  errors are its parallax error times a factor uniform in [0.9, 1.3] per
  component (the DR3 median ratios are 1.05 and 0.95) and its pm correlation
  is uniform in [-0.3, 0.3]. Observed = true + Gaussian error, the proper
  motions drawn with the full 2x2 covariance, the parallax offset by
  ``parallax_zero_point`` (default 0) as a real catalogue's is. ``phi2_err`` is the positional
  error, 0.7 times the parallax error (a few 1e-7 deg: negligible).
- **Selection**: observed ``gaia_g < g_limit``, ``phi2`` inside the field and,
  like real stream searches (e.g. Price-Whelan & Bonaca 2018), the loose cut
  ``parallax < parallax_max + parallax_nsigma * parallax_err`` (the stream
  passes it). The counts ``n_stream`` and ``n_background`` are exact after
  these cuts (stars are drawn until enough pass).
- **Missing data**: exactly ``missing_astrometry_fraction`` of all stars get a
  2-parameter solution (NaN parallax, proper motions, their errors and
  correlation) and ``missing_photometry_fraction`` no BP/RP (NaN), chosen with
  weights ``10^(0.8 (G - g_limit))`` and ``10^(0.5 (G - g_limit))`` (mostly faint).

Example:
    >>> from streammix.mock import MockConfig, generate_mock
    >>> stars, tracks = generate_mock(MockConfig(n_stream=50, n_background=200), seed=1)
    >>> len(stars), sorted(set(stars["true_population"].tolist()))
    (250, ['disc', 'halo', 'stream'])
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import QTable
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from .errors import InputError
from .isochrone import default_isochrone
from .output import check_writable, write_table
from .components import draw_stream
from .profiles import PROFILES, Gaussian, shape_values
from .settings import Section, first_error

__all__ = ["MockConfig", "generate_mock", "true_tracks", "visible_mass_min", "write_mock"]

BANDS = ("gaia_g", "gaia_bp", "gaia_rp")
Stars = dict[str, np.ndarray]  # one array per quantity, one entry per star
K_KMS = 4.740470463533348  # km/s per (kpc mas/yr)

# ICRS -> GD-1 frame (Koposov et al. 2010, appendix; as in gala's GD1Koposov10).
_R_ICRS_TO_GD1 = np.array(
    [
        [-0.4776303088, -0.1738432154, 0.8611897727],
        [0.510844589, -0.8524449229, 0.111245042],
        [0.7147776536, 0.4930681392, 0.4959603976],
    ]
)
# ICRS -> Galactic (astropy).
_R_ICRS_TO_GAL = np.array(
    [
        [-0.0548756577, -0.8734370520, -0.4838350737],
        [0.4941094371, -0.4448297212, 0.7469821839],
        [-0.8676661375, -0.1980763372, 0.4559838136],
    ]
)
# Galactic (U, V, W) -> GD-1 frame Cartesian.
_R_GAL_TO_GD1 = _R_ICRS_TO_GD1 @ _R_ICRS_TO_GAL.T
V_SUN = np.array([12.9, 245.6, 7.78])  # km/s, astropy Galactocentric (v4.0) defaults

_KROUPA_BREAKS = (0.08, 0.5)
_KROUPA_SLOPES = (0.3, 1.3, 2.3)  # xi(m) ~ m^-slope (Kroupa 2001)

# Gaia DR3 median errors (see module docstring): G anchors and errors.
_PLX_ERR = ((12.0, 13.0, 15.0, 17.0, 20.0, 21.0), (0.015, 0.02, 0.03, 0.07, 0.5, 1.3))  # mas
_G_ERR = ((12.0, 13.0, 17.0, 20.0, 21.0), (3e-4, 3e-4, 1e-3, 6e-3, 1.5e-2))  # mag
_BP_ERR = ((13.0, 17.0, 20.0, 21.0), (9e-4, 1.2e-2, 0.108, 0.25))
_RP_ERR = ((13.0, 17.0, 20.0, 21.0), (6e-4, 6e-3, 0.052, 0.12))


class MockConfig(Section):
    """Settings of the mock field (counts are after all cuts); every field's
    meaning is its ``description`` (``MockConfig.model_fields``).

    A pydantic :class:`~streammix.settings.Section` (unknown keys are an error,
    values are frozen). A bad value raises a one-line :class:`InputError`
    naming the key; change settings with ``config.model_copy(update=...)``
    (not validated: give it values of the right type) or build a new one.

    Arguments:
        **settings: Any of the fields below; those left out keep their defaults.

    Example:
        >>> MockConfig(n_background=5000).n_background
        5000
        >>> MockConfig(g_limit=30.0)
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: mock config 'g_limit': 30.0 is outside [10, 22] mag
    """

    n_stream: int = Field(2000, description="number of stream stars in the catalog")
    n_background: int = Field(100_000, description="number of background (halo + disc) stars in the catalog")
    phi1_range: tuple[float, float] = Field((-90.0, 10.0), description="field extent along the stream (deg)")
    phi2_range: tuple[float, float] = Field((-5.0, 5.0), description="field extent across the stream (deg)")
    g_limit: float = Field(20.5, description="faint limit in observed Gaia G (mag), in [10, 22]")
    age: float = Field(12.0, description="stream isochrone age (Gyr)")
    feh: float = Field(-1.5, description="stream isochrone [Fe/H]")
    phases: tuple[str, ...] = Field(
        ("MS", "SGB", "RGB", "CHEB"), description="isochrone phases the stars are drawn from"
    )
    gaps: tuple[tuple[float, float, float], ...] = Field(
        ((-40.0, 1.5, 0.9), (-20.0, 1.5, 0.9)),
        description="one (phi1, sigma, depth) per gap (deg, deg, fraction removed at the centre) in the stream's "
        "linear density",
    )
    n_spur: int = Field(0, description="number of spur stars in the catalog (0: no spur)")
    spur_phi1_range: tuple[float, float] = Field(
        (-40.0, -25.0), validate_default=True, description="phi1 extent of the spur (deg), inside phi1_range"
    )
    spur_phi2_offset: float = Field(
        1.0, allow_inf_nan=False, description="offset of the spur from the stream's phi2 track (deg)"
    )
    spur_phi2_width: float = Field(
        0.15, gt=0, allow_inf_nan=False, description="Gaussian width of the spur in phi2 (deg)"
    )
    stream_profile: str = Field(
        "gaussian",
        description="the stream's cross-track profile, a name in streammix.profiles.PROFILES (gaussian, "
        "student_t...); its scale is the stream's phi2_width track",
    )
    stream_profile_parameters: dict[str, float] = Field(
        default_factory=dict,
        validate_default=True,
        description="the profile's shape parameters, constant along the stream, e.g. {phi2_dof: 2.5}; those left "
        "out take the profile's defaults (filled in on validation)",
    )
    halo_age: float = Field(12.0, description="isochrone age of the halo-like background (Gyr)")
    halo_feh: float = Field(-1.7, description="isochrone [Fe/H] of the halo-like background")
    halo_distance_range: tuple[float, float] = Field(
        (5.0, 40.0), description="heliocentric distances of halo stars (kpc)"
    )
    disc_age: float = Field(8.0, description="isochrone age of the disc-like background (Gyr)")
    disc_feh: float = Field(-0.5, description="isochrone [Fe/H] of the disc-like background")
    disc_distance_range: tuple[float, float] = Field(
        (0.5, 3.0), description="heliocentric distances of disc stars (kpc)"
    )
    disc_fraction: float = Field(0.4, description="fraction of the background that is disc-like, in [0, 1]")
    parallax_max: float | None = Field(
        1.0,
        description="loose selection parallax < parallax_max + parallax_nsigma * parallax_err (mas); None for no cut",
    )
    parallax_nsigma: float = Field(3.0, description="see parallax_max")
    parallax_zero_point: float = Field(
        0.0, ge=-0.2, le=0.2, description="added to every star's observed parallax (mas), as data.parallax_zero_point"
    )
    missing_astrometry_fraction: float = Field(
        0.03, description="fraction of stars with a 2-parameter solution (no parallax or proper motions), in [0, 1]"
    )
    missing_photometry_fraction: float = Field(0.02, description="fraction of stars without BP/RP, in [0, 1]")

    def __init__(self, **settings: Any) -> None:
        try:
            super().__init__(**settings)
        except ValidationError as error:
            if type(self) is not MockConfig:  # a subclass inside other settings: their reader names the key
                raise
            key, why = first_error(error, unknown="unknown key")
            raise InputError(f"mock config '{key}': {why}") from None

    @field_validator("n_stream", "n_background", "n_spur", mode="before")
    @classmethod
    def _count(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{value!r} is not a non-negative integer")
        return int(value)

    @field_validator("phi1_range", "phi2_range", "spur_phi1_range", "halo_distance_range", "disc_distance_range")
    @classmethod
    def _range(cls, value: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        lo, hi = value
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"{value!r} is not an increasing pair of finite numbers")
        if info.field_name.endswith("distance_range") and lo <= 0:
            raise ValueError(f"{value!r} must be positive")
        return value

    @field_validator("g_limit")
    @classmethod
    def _g_limit(cls, value: float) -> float:
        if not 10.0 <= value <= 22.0:
            raise ValueError(f"{value} is outside [10, 22] mag")
        return value

    @field_validator("disc_fraction", "missing_astrometry_fraction", "missing_photometry_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{value} is outside [0, 1]")
        return value

    @field_validator("gaps")
    @classmethod
    def _gaps(cls, value: tuple[tuple[float, float, float], ...]) -> tuple[tuple[float, float, float], ...]:
        for _, sigma, depth in value:
            if not (sigma > 0 and 0 <= depth <= 1):
                raise ValueError(f"sigma {sigma} must be > 0 and depth {depth} in [0, 1]")
        return value

    @field_validator("stream_profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"{value!r} is not one of {', '.join(sorted(PROFILES))}")
        return value

    @field_validator("spur_phi1_range")
    @classmethod
    def _spur_inside(cls, value: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        lo, hi = info.data.get("phi1_range", (-np.inf, np.inf))
        if info.data.get("n_spur") and not lo <= value[0] < value[1] <= hi:  # a mock without a spur may be any field
            raise ValueError(f"{value!r} is not inside phi1_range {(lo, hi)!r}")
        return value

    @field_validator("parallax_nsigma")
    @classmethod
    def _nsigma(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("parallax_max") is not None and value < 0:
            raise ValueError(f"{value} is negative")
        return value

    @field_validator("stream_profile_parameters")
    @classmethod
    def _shape(cls, value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        """The profile's shape parameters with its defaults filled in."""
        profile = info.data.get("stream_profile")
        if profile is None:  # the profile itself was rejected
            return value
        try:
            return shape_values(profile, value)
        except ValueError as error:
            raise ValueError(str(error)) from None

    def to_json(self) -> str:
        """The configuration as a one-line JSON object (stored in table meta).

        Example:
            >>> MockConfig.from_json(MockConfig(n_stream=7).to_json()).n_stream
            7
        """
        return json.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, text: str) -> MockConfig:
        """Rebuild a configuration from :meth:`to_json` output.

        Arguments:
            text: A JSON object of settings.

        Example:
            >>> MockConfig.from_json('{"g_limit": 19.0}').g_limit
            19.0
        """
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as error:
            raise InputError(f"mock config: not JSON ({error})") from None
        if not isinstance(data, dict):
            raise InputError("mock config: expected a JSON object")
        return cls(**data)


# ----------------------------------------------------------------------------- stream model


def _stream_shape(phi1: np.ndarray, config: MockConfig) -> Stars:
    """Every stream track at ``phi1`` (deg), plain arrays; density unnormalised."""
    phi1 = np.asarray(phi1, float)
    x = (phi1 + 40.0) / 50.0
    density = 1.0 + 0.4 * x
    for centre, sigma, depth in config.gaps:
        density = density * (1.0 - depth * np.exp(-0.5 * ((phi1 - centre) / sigma) ** 2))
    distmod = 14.45 - 0.35 * x + 0.4 * x**2
    ones = np.ones_like(phi1)
    return {
        "density": density,
        "phi2": 0.3 + 0.2 * x - 1.0 * x**2,
        "phi2_width": 0.2 + 0.1 * np.sin(np.pi * x),
        "pm_phi1_cosphi2": -13.1 + 0.35 * x + 5.5 * x**2,
        "pm_phi2": -2.5 + 0.8 * x - 0.2 * x**2,
        "pm_phi1_cosphi2_width": 0.25 * ones,
        "pm_phi2_width": 0.2 * ones,
        "distmod": distmod,
        "distmod_width": 0.05 * ones,
    }


# ----------------------------------------------------------------------------- sampling helpers


def _kroupa_segments(m_lo: float, m_hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges, slopes and (unnormalised) numbers of the Kroupa IMF pieces in [m_lo, m_hi]."""
    edges = np.array([m_lo, *[b for b in _KROUPA_BREAKS if m_lo < b < m_hi], m_hi])
    slopes, numbers = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        mid = 0.5 * (a + b)
        j = int(np.searchsorted(_KROUPA_BREAKS, mid))
        slope = _KROUPA_SLOPES[j]
        # continuity: xi(m) = c_j m^-slope with c_j matching at the breaks
        c = 1.0
        for k in range(j):
            c *= _KROUPA_BREAKS[k] ** (_KROUPA_SLOPES[k + 1] - _KROUPA_SLOPES[k])
        p = 1.0 - slope
        numbers.append(c * (b**p - a**p) / p)
        slopes.append(slope)
    return edges, np.array(slopes), np.array(numbers)


def _kroupa_inverse_cdf(q: np.ndarray, m_lo: float, m_hi: float) -> np.ndarray:
    """Initial masses at quantiles ``q`` of the Kroupa IMF truncated to [m_lo, m_hi]."""
    edges, slopes, numbers = _kroupa_segments(m_lo, m_hi)
    cum = np.concatenate([[0.0], np.cumsum(numbers)]) / numbers.sum()
    j = np.clip(np.searchsorted(cum, q, side="right") - 1, 0, len(numbers) - 1)
    v = np.clip((q - cum[j]) / (cum[j + 1] - cum[j]), 0.0, 1.0)
    p = 1.0 - slopes[j]
    a, b = edges[j] ** p, edges[j + 1] ** p
    return np.clip((a + v * (b - a)) ** (1.0 / p), m_lo, m_hi)


def _inverse_cdf_sampler(grid: np.ndarray, density: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Draws at quantiles ``q`` of a density tabulated on a fine grid (linear pieces)."""
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    return np.interp(q * cdf[-1], cdf, grid)


def visible_mass_min(iso: Any, bright_limit: float, band: str = "gaia_g") -> float:
    """Largest mass below which no star is brighter than absolute magnitude
    ``bright_limit`` in ``band`` (shared with :mod:`streammix.inject`)."""
    fine = np.geomspace(iso.mass_min, iso.mass_max, 2000)
    masses = np.unique(np.concatenate([iso.initial_mass, fine]))
    masses = masses[(masses >= iso.mass_min) & (masses <= iso.mass_max)]
    g = iso.absolute_mags(masses, (band,))[:, 0]
    visible = np.flatnonzero(g < bright_limit)
    if visible.size == 0:
        return float("nan")
    return float(masses[max(visible[0] - 1, 0)])


def _gaia_error(g: np.ndarray, anchors: tuple[tuple[float, ...], tuple[float, ...]]) -> np.ndarray:
    """Median Gaia DR3 error at magnitude ``g``: log-linear in G between anchors."""
    mags, errs = np.asarray(anchors[0]), np.log10(anchors[1])
    log_err = np.interp(g, mags, errs)
    slope = (errs[-1] - errs[-2]) / (mags[-1] - mags[-2])
    log_err = np.where(g > mags[-1], errs[-1] + slope * (g - mags[-1]), log_err)
    return 10.0**log_err


def _frame_vectors(phi1: np.ndarray, phi2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (N, 3) in Galactic (U, V, W) axes: line of sight, phi1 and phi2 directions."""
    p1, p2 = np.deg2rad(phi1), np.deg2rad(phi2)
    c1, s1, c2, s2 = np.cos(p1), np.sin(p1), np.cos(p2), np.sin(p2)
    los = np.stack([c1 * c2, s1 * c2, s2], -1)
    e1 = np.stack([-s1, c1, np.zeros_like(p1)], -1)
    e2 = np.stack([-c1 * s2, -s1 * s2, c2], -1)
    to_gal = _R_GAL_TO_GD1.T
    return los @ to_gal.T, e1 @ to_gal.T, e2 @ to_gal.T


def _proper_motions(
    phi1: np.ndarray, phi2: np.ndarray, distance: np.ndarray, v_helio: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """pm_phi1_cosphi2, pm_phi2 (mas/yr) of stars at ``distance`` (kpc) moving at
    heliocentric Galactic velocity ``v_helio`` (N, 3) km/s."""
    _, e1, e2 = _frame_vectors(phi1, phi2)
    scale = K_KMS * distance
    return np.sum(v_helio * e1, -1) / scale, np.sum(v_helio * e2, -1) / scale


def _draw_until(n: int, propose: Callable[[int], Stars], what: str) -> Stars:
    """Call ``propose(batch)`` (which returns only accepted stars) until ``n`` are kept."""
    chunks: list[Stars] = []
    kept, batch = 0, max(256, 2 * n)
    for _ in range(60):
        if kept >= n:
            break
        out = propose(batch)
        got = len(next(iter(out.values())))
        chunks.append(out)
        kept += got
        rate = max(got / batch, 1e-3)
        batch = int(min(max(1.3 * (n - kept) / rate + 256, 256), 5_000_000))
    if kept < n:
        raise InputError(f"mock config: too few {what} stars pass the cuts (g_limit, parallax_max)")
    return {k: np.concatenate([c[k] for c in chunks])[:n] for k in chunks[0]} if chunks else {}


# ----------------------------------------------------------------------------- populations


def _observe(
    rng: np.random.Generator, stars: Stars, config: MockConfig
) -> Stars:
    """Add Gaia-like errors to true values; return the stars passing the selection."""
    n = len(stars["phi1"])
    g_true = stars["abs_g"] + stars["distmod"]
    scatter = lambda: 10.0 ** (0.1 * rng.standard_normal(n))  # noqa: E731
    plx_err = _gaia_error(g_true, _PLX_ERR) * scatter()
    pm1_err = plx_err * rng.uniform(0.9, 1.3, n)
    pm2_err = plx_err * rng.uniform(0.9, 1.3, n)
    corr = rng.uniform(-0.3, 0.3, n)
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    phi2_err = 0.7 * plx_err / 3.6e6  # mas -> deg
    out = {
        "phi1": stars["phi1"],
        "phi2": stars["phi2"] + phi2_err * rng.standard_normal(n),
        "phi2_err": phi2_err,
        "parallax": (
            10.0 ** ((10.0 - stars["distmod"]) / 5.0) + config.parallax_zero_point + plx_err * rng.standard_normal(n)
        ),
        "parallax_err": plx_err,
        "pm_phi1_cosphi2": stars["pm1"] + pm1_err * z1,
        "pm_phi1_cosphi2_err": pm1_err,
        "pm_phi2": stars["pm2"] + pm2_err * (corr * z1 + np.sqrt(1.0 - corr**2) * z2),
        "pm_phi2_err": pm2_err,
        "pm_corr": corr,
        "true_distmod": stars["distmod"],
        "true_mass": stars["mass"],
    }
    bands = (
        ("gaia_g", _G_ERR, "abs_g"),
        ("gaia_bp", _BP_ERR, "abs_bp"),
        ("gaia_rp", _RP_ERR, "abs_rp"),
    )
    for band, anchors, key in bands:
        err = _gaia_error(g_true, anchors) * scatter()
        out[band] = stars[key] + stars["distmod"] + err * rng.standard_normal(n)
        out[band + "_err"] = err
    lo, hi = config.phi2_range
    keep = (out["gaia_g"] < config.g_limit) & (out["phi2"] > lo) & (out["phi2"] < hi)
    if config.parallax_max is not None:
        keep &= out["parallax"] < config.parallax_max + config.parallax_nsigma * plx_err
    return {k: v[keep] for k, v in out.items()}


def _absolute(iso: Any, mass: np.ndarray) -> Stars:
    mags = iso.absolute_mags(mass, BANDS)
    return {"abs_g": mags[:, 0], "abs_bp": mags[:, 1], "abs_rp": mags[:, 2]}


def _stream_population(rng: np.random.Generator, iso: Any, config: MockConfig, spur: bool = False) -> Stars:
    """The stream's stars, or with ``spur`` the spur's (see the module docstring)."""
    grid = np.linspace(*(config.spur_phi1_range if spur else config.phi1_range), 20001)
    shape = _stream_shape(grid, config)
    profile = PROFILES[config.stream_profile]()
    density = np.ones_like(grid) if spur else shape["density"]
    m_lo = visible_mass_min(iso, config.g_limit + 0.1 - (shape["distmod"].min() - 5 * 0.05))
    if not np.isfinite(m_lo):
        raise InputError(f"mock config 'g_limit': {config.g_limit} leaves no visible stream star")

    def propose(n: int) -> Stars:
        phi1 = _inverse_cdf_sampler(grid, density, rng.uniform(size=n))
        t = _stream_shape(phi1, config)
        if spur:
            t["phi2"] = t["phi2"] + config.spur_phi2_offset
            t["phi2_width"] = np.full_like(phi1, config.spur_phi2_width)
        mass = _kroupa_inverse_cdf(rng.uniform(size=n), m_lo, iso.mass_max)
        # the stream-like component's own draw (the spur's profile is Gaussian)
        shape = {} if spur else dict(config.stream_profile_parameters)
        true = draw_stream(Gaussian() if spur else profile, {**t, **shape}, rng)
        stars = {
            "phi1": phi1,
            "phi2": true["phi2"],
            "pm1": true["pm_phi1_cosphi2"],
            "pm2": true["pm_phi2"],
            "distmod": true["distmod"],
            "mass": mass,
            **_absolute(iso, mass),
        }
        return _observe(rng, stars, config)

    return _draw_until(config.n_spur if spur else config.n_stream, propose, "spur" if spur else "stream")


def _halo_population(rng: np.random.Generator, iso: Any, n: int, config: MockConfig) -> Stars:
    dm_lo, dm_hi = (5.0 * np.log10(d * 100.0) for d in config.halo_distance_range)
    m_lo = visible_mass_min(iso, config.g_limit + 0.1 - dm_lo)
    if not np.isfinite(m_lo):
        raise InputError(f"mock config 'g_limit': {config.g_limit} leaves no visible halo star")
    grid1 = np.linspace(*config.phi1_range, 2001)
    grid2 = np.linspace(*config.phi2_range, 201)

    def propose(size: int) -> Stars:
        phi1 = _inverse_cdf_sampler(grid1, np.exp(-0.006 * (grid1 + 40.0)), rng.uniform(size=size))
        phi2 = _inverse_cdf_sampler(grid2, np.exp(0.03 * grid2), rng.uniform(size=size))
        distmod = rng.uniform(dm_lo, dm_hi, size)
        distance = 10.0 ** (distmod / 5.0 - 2.0)
        v = -V_SUN + 100.0 * rng.standard_normal((size, 3))
        pm1, pm2 = _proper_motions(phi1, phi2, distance, v)
        mass = _kroupa_inverse_cdf(rng.uniform(size=size), m_lo, iso.mass_max)
        stars = dict(phi1=phi1, phi2=phi2, pm1=pm1, pm2=pm2, distmod=distmod, mass=mass)
        return _observe(rng, stars | _absolute(iso, mass), config)

    return _draw_until(n, propose, "halo")


def _disc_population(rng: np.random.Generator, iso: Any, n: int, config: MockConfig) -> Stars:
    scale_height = 0.9  # kpc, thick disc
    d_lo, d_hi = config.disc_distance_range
    m_lo = visible_mass_min(iso, config.g_limit + 0.1 - 5.0 * np.log10(d_lo * 100.0))
    if not np.isfinite(m_lo):
        raise InputError(f"mock config 'g_limit': {config.g_limit} leaves no visible disc star")
    p1, p2 = np.meshgrid(np.linspace(*config.phi1_range, 201), np.linspace(*config.phi2_range, 41))
    sin_b_min = np.abs(_frame_vectors(p1.ravel(), p2.ravel())[0][:, 2]).min()
    d_grid = np.linspace(d_lo, d_hi, 2001)
    d_density = d_grid**2 * np.exp(-d_grid * sin_b_min / scale_height)
    v_mean = np.array([0.0, 190.0, 0.0]) - V_SUN
    v_disp = np.array([60.0, 45.0, 40.0])

    def propose(size: int) -> Stars:
        phi1 = rng.uniform(*config.phi1_range, size)
        phi2 = np.rad2deg(np.arcsin(rng.uniform(*np.sin(np.deg2rad(config.phi2_range)), size)))
        distance = _inverse_cdf_sampler(d_grid, d_density, rng.uniform(size=size))
        sin_b = np.abs(_frame_vectors(phi1, phi2)[0][:, 2])
        accept = rng.uniform(size=size) < np.exp(-distance * (sin_b - sin_b_min) / scale_height)
        phi1, phi2, distance = phi1[accept], phi2[accept], distance[accept]
        m = len(phi1)
        v = v_mean + v_disp * rng.standard_normal((m, 3))
        pm1, pm2 = _proper_motions(phi1, phi2, distance, v)
        mass = _kroupa_inverse_cdf(rng.uniform(size=m), m_lo, iso.mass_max)
        distmod = 5.0 * np.log10(distance * 100.0)
        stars = dict(phi1=phi1, phi2=phi2, pm1=pm1, pm2=pm2, distmod=distmod, mass=mass)
        return _observe(rng, stars | _absolute(iso, mass), config)

    return _draw_until(n, propose, "disc")


def _isochrone(age: float, feh: float, phases: tuple[str, ...]) -> Any:
    return default_isochrone(age=age, feh=feh).select(phases)


# ----------------------------------------------------------------------------- public API


def true_tracks(config: MockConfig = MockConfig(), phi1: u.Quantity | None = None) -> QTable:
    """The mock stream's true tracks on a phi1 grid.

    ``linear_density`` is the expected number of stream stars per degree in the
    catalog (brighter than ``g_limit``; it integrates to ``n_stream`` over the
    field). It is computed by quadrature over the Kroupa IMF on the isochrone
    and the distance-modulus spread, independently of the random draws.

    Arguments:
        config: The mock's settings.
        phi1: Where to evaluate (deg); default every 0.1 deg across the field.

    Returns:
        QTable with phi1, linear_density, phi2, phi2_width, pm_phi1_cosphi2,
        pm_phi2, pm_phi1_cosphi2_width, pm_phi2_width, distmod, distmod_width,
        parallax.

    Example:
        >>> import astropy.units as u
        >>> tracks = true_tracks(phi1=[-50.0, 0.0] * u.deg)
        >>> tracks["parallax"].round(3)
        <Quantity [0.124, 0.13 ] mas>
    """
    lo, hi = config.phi1_range
    if phi1 is None:
        grid = np.linspace(lo, hi, int(round((hi - lo) / 0.1)) + 1)
    else:
        try:
            grid = np.atleast_1d(u.Quantity(phi1, u.deg).value).astype(float)
        except (u.UnitsError, TypeError, ValueError):
            raise InputError(f"true_tracks 'phi1': {phi1!r} is not an angle") from None
    fine = np.linspace(lo, hi, 20001)
    shape = _stream_shape(np.concatenate([grid, fine]), config)
    visible = _visible_fraction(config, shape["distmod"], shape["distmod_width"])
    rate = shape["density"] * visible
    inside = (grid >= lo) & (grid <= hi)
    norm = np.trapezoid(rate[grid.size :], fine)
    density = np.where(inside, config.n_stream * rate[: grid.size] / norm, 0.0)
    t = {k: v[: grid.size] for k, v in shape.items()}
    deg, masyr = u.deg, u.mas / u.yr
    return QTable(
        {
            "phi1": grid * deg,
            "linear_density": density / deg,
            "phi2": t["phi2"] * deg,
            "phi2_width": t["phi2_width"] * deg,
            "pm_phi1_cosphi2": t["pm_phi1_cosphi2"] * masyr,
            "pm_phi2": t["pm_phi2"] * masyr,
            "pm_phi1_cosphi2_width": t["pm_phi1_cosphi2_width"] * masyr,
            "pm_phi2_width": t["pm_phi2_width"] * masyr,
            "distmod": t["distmod"] * u.mag,
            "distmod_width": t["distmod_width"] * u.mag,
            "parallax": 10.0 ** ((10.0 - t["distmod"]) / 5.0) * u.mas,
        },
        meta={"creator": "streammix.mock", "config": config.to_json()},
    )


def _visible_fraction(config: MockConfig, distmod: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Fraction of stream stars (Kroupa IMF on the isochrone) with G < g_limit at a
    distance modulus ~ Normal(distmod, width): midpoint quadrature in IMF quantiles
    and Gauss-Hermite in the distance-modulus spread (G errors neglected)."""
    iso = _isochrone(config.age, config.feh, config.phases)
    q = (np.arange(40000) + 0.5) / 40000
    mass = _kroupa_inverse_cdf(q, iso.mass_min, iso.mass_max)
    abs_g = np.sort(iso.absolute_mags(mass, ("gaia_g",))[:, 0])
    nodes, weights = np.polynomial.hermite_e.hermegauss(24)
    weights = weights / weights.sum()
    threshold = config.g_limit - (distmod[:, None] + width[:, None] * nodes[None, :])
    fraction = np.searchsorted(abs_g, threshold) / abs_g.size
    return fraction @ weights


def generate_mock(config: MockConfig = MockConfig(), *, seed: int = 0) -> tuple[QTable, QTable]:
    """Draw the mock catalog and its true stream tracks.

    Arguments:
        config: The mock's settings (defaults: the project's embedded data set).
        seed: Seed of the numpy Generator; the same seed gives the same tables.

    Returns:
        ``(stars, tracks)``: one row per star in random order, with observed
        columns (phi1, phi2, parallax, proper motions, Gaia G/BP/RP, each with
        its error, and pm_corr), a unique ``source_id`` and the truth
        (true_component, true_population, true_distmod, true_mass); and the
        true tracks from :func:`true_tracks`.

    Example:
        >>> stars, tracks = generate_mock(MockConfig(n_stream=30, n_background=100), seed=3)
        >>> int((stars["true_component"] == "stream").sum()), stars["parallax"].unit
        (30, Unit("mas"))
    """
    if not isinstance(config, MockConfig):
        got = type(config).__name__
        raise InputError(f"generate_mock 'config': expected a MockConfig, got {got}")
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"generate_mock 'seed': {seed!r} is not an integer") from None
    rng_stream, rng_halo, rng_disc, rng_missing, rng_order = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    n_disc = int(round(config.disc_fraction * config.n_background))
    n_halo = config.n_background - n_disc
    stream_iso = _isochrone(config.age, config.feh, config.phases)
    halo_iso = _isochrone(config.halo_age, config.halo_feh, config.phases)
    disc_iso = _isochrone(config.disc_age, config.disc_feh, config.phases)
    # the spur draws from a sixth stream of the same SeedSequence: the first five,
    # and so a mock without a spur, are what they were before the spur existed
    rng_spur = np.random.default_rng(np.random.SeedSequence(seed).spawn(6)[5])
    parts = {
        "stream": _stream_population(rng_stream, stream_iso, config),
        "spur": _stream_population(rng_spur, stream_iso, config, spur=True),
        "halo": _halo_population(rng_halo, halo_iso, n_halo, config),
        "disc": _disc_population(rng_disc, disc_iso, n_disc, config),
    }
    parts = {name: part for name, part in parts.items() if part}
    columns: Stars = {}
    population = np.array([], dtype="U6")
    if parts:
        first = next(iter(parts.values()))
        columns = {k: np.concatenate([part[k] for part in parts.values()]) for k in first}
        population = np.concatenate([np.full(len(p["phi1"]), name) for name, p in parts.items()])
    n = population.size
    if n:
        _apply_missing(rng_missing, columns, config)
        order = rng_order.permutation(n)
        columns = {k: v[order] for k, v in columns.items()}
        population = population[order]

    deg, mas, masyr = u.deg, u.mas, u.mas / u.yr
    units = {"phi1": deg, "phi2": deg, "phi2_err": deg, "parallax": mas, "parallax_err": mas,
             "pm_phi1_cosphi2": masyr, "pm_phi1_cosphi2_err": masyr, "pm_phi2": masyr,
             "pm_phi2_err": masyr, "pm_corr": u.dimensionless_unscaled}  # fmt: skip
    names = ["phi1", "phi2", "phi2_err", "parallax", "parallax_err", "pm_phi1_cosphi2",
             "pm_phi1_cosphi2_err", "pm_phi2", "pm_phi2_err", "pm_corr"]  # fmt: skip
    stars = QTable(meta={"creator": "streammix.mock", "seed": seed, "config": config.to_json()})
    stars["source_id"] = np.int64(4_000_000_000_000_000_000) + np.arange(n, dtype=np.int64) * 7919
    for name in names:
        stars[name] = np.asarray(columns.get(name, np.zeros(0)), float) * units[name]
    for band in BANDS:
        stars[band] = np.asarray(columns.get(band, np.zeros(0)), float) * u.mag
        stars[band + "_err"] = np.asarray(columns.get(band + "_err", np.zeros(0)), float) * u.mag
    stream_like = (population == "stream") | (population == "spur")
    stars["true_component"] = np.where(stream_like, population, "background").astype("U10")
    stars["true_population"] = population.astype("U6")
    stars["true_distmod"] = np.asarray(columns.get("true_distmod", np.zeros(0)), float) * u.mag
    stars["true_mass"] = np.asarray(columns.get("true_mass", np.zeros(0)), float) * u.M_sun
    tracks = true_tracks(config)
    tracks.meta["seed"] = seed
    return stars, tracks


def _apply_missing(rng: np.random.Generator, columns: Stars, config: MockConfig) -> None:
    """Blank the astrometry / BP-RP of exact fractions of (mostly faint) stars, in place."""
    g = columns["gaia_g"]
    for fraction, steepness, keys in (
        (config.missing_astrometry_fraction, 0.8,
         ("parallax", "parallax_err", "pm_phi1_cosphi2", "pm_phi1_cosphi2_err",
          "pm_phi2", "pm_phi2_err", "pm_corr")),
        (config.missing_photometry_fraction, 0.5,
         ("gaia_bp", "gaia_bp_err", "gaia_rp", "gaia_rp_err")),
    ):  # fmt: skip
        k = int(round(fraction * g.size))
        if k == 0:
            continue
        # weighted sampling without replacement (Gumbel top-k) with weights 10^(s (G - g_limit))
        keys_ = steepness * np.log(10.0) * (g - config.g_limit) + rng.gumbel(size=g.size)
        chosen = np.argpartition(-keys_, k - 1)[:k]
        for key in keys:
            columns[key][chosen] = np.nan


def write_mock(
    stars: QTable, tracks: QTable, path: str | os.PathLike, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write the catalog to ``path`` and the tracks beside it as ``<stem>_tracks.ecsv``.

    The format follows the suffix of ``path`` (``.fits`` when it has none). Both
    writes are atomic, and neither file is written when either exists and
    ``overwrite`` is False. The configuration and seed are kept in the header /
    metadata (``CONFIG`` as JSON, ``SEED``). astropy reads FITS string columns
    as bytes unless ``QTable.read(path, character_as_bytes=False)``.

    Arguments:
        stars: The catalog from :func:`generate_mock`.
        tracks: The true tracks from :func:`generate_mock`.
        path: Where the catalog goes.
        overwrite: Replace existing files.

    Returns:
        The paths of the catalog and of the tracks.

    Example:
        >>> import tempfile, pathlib
        >>> stars, tracks = generate_mock(MockConfig(n_stream=20, n_background=50))
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "mock"
        >>> [p.name for p in write_mock(stars, tracks, out)]
        ['mock.fits', 'mock_tracks.ecsv']
    """
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".fits")
    tracks_path = path.with_name(f"{path.stem}_tracks.ecsv")
    check_writable(path, overwrite)
    check_writable(tracks_path, overwrite)
    write_table(stars, path, overwrite=overwrite)
    write_table(tracks, tracks_path, overwrite=overwrite)
    return path, tracks_path


# The error model, the selection and the samplers above under public names, for
# streammix.sky_mock (mocks of any galstreams stream); the same objects, not copies.
observe = _observe
apply_missing = _apply_missing
draw_until = _draw_until
kroupa_inverse_cdf = _kroupa_inverse_cdf
visible_fraction = _visible_fraction
