"""A simple published Milky Way star-count and kinematic model, for mocks anywhere on the sky.

:class:`GalaxyModel` holds three populations (thin disc, thick disc, stellar halo)
and :func:`draw_field_stars` draws their stars along the lines of sight through
a field (a box in a stream frame) down to a G limit, with true positions,
distances, proper motions in the stream frame and absolute Gaia magnitudes, so
that star counts, colours, parallaxes and proper motions follow the field's
Galactic longitude and latitude. :func:`sky_density` gives the expected number
of stars per deg^2 brighter than a G limit towards a direction. Observational
errors and the selection are applied elsewhere (:mod:`streammix.sky_mock`).

The model, in full (every number is a field of :class:`GalaxyModel` or
:class:`Population`):

- **Number densities**: Juric et al. (2008, ApJ 673, 864), their bias-corrected
  best fit (Table 10): thin disc ``exp(-(R - R0)/L1 - |z|/H1)`` with
  H1 = 0.300 kpc, L1 = 2.6 kpc; thick disc the same with H2 = 0.9 kpc,
  L2 = 3.6 kpc and 0.12 times the thin disc's density at (R0, z = 0); halo
  ``0.0051 (R0 / sqrt(R^2 + (z/q)^2 + rc^2))^n`` with q = 0.64, n = 2.77 (and a
  0.5 kpc core rc, ours, which only matters towards the Galactic centre).
  ``R`` and ``z`` are Galactocentric cylindrical coordinates; R0 is the
  Galactocentric frame's. No bulge, bar, warp, flare or dust: towards the inner
  Galaxy at low latitude the model undercounts, and magnitudes are dereddened.
- **Normalisation**: about 0.1 living stars (main sequence and giants, not white
  or brown dwarfs) per pc^3 at the Sun, all populations together, as in the 10 pc
  census of Reyle et al. (2021, A&A 650, A201), split in Juric's ratios.
- **Stars**: each population's initial masses follow a Kroupa (2001) IMF on an
  isochrone of the embedded PARSEC grid (:func:`streammix.isochrone.default_isochrone`)
  at the population's age and [Fe/H], from its lowest mass to the end of the AGB
  (no white dwarfs): thin disc 7 Gyr, [Fe/H] -0.45 (the grid's metal-rich edge:
  the real thin disc is younger and near solar, so the model's thin disc is a
  little bluer and fainter at the turn-off than the real one), thick disc 10 Gyr,
  [Fe/H] -0.6, halo 12 Gyr, [Fe/H] -1.5. This is the luminosity function and the
  colour distribution of each population.
- **Kinematics**: Gaussian velocity ellipsoids aligned with Galactocentric
  cylindrical (R, phi, z) axes and an asymmetric drift behind a flat circular
  speed of 238 km/s (Bland-Hawthorn & Gerhard 2016, ARA&A 54, 529), with the
  dispersions (sigma_U, sigma_V, sigma_W) and lags of Bensby, Feltzing &
  Lundstrom (2003, A&A 410, 527, Table 1): thin disc (35, 20, 16) km/s, lag
  15 km/s; thick disc (67, 38, 35) km/s, lag 46 km/s; halo (160, 90, 90) km/s,
  lag 220 km/s. The Sun's position and velocity are astropy's Galactocentric
  ``v4.0`` defaults (R0 = 8.122 kpc, z_sun = 20.8 pc, v_sun = (12.9, 245.6,
  7.78) km/s), as in :mod:`streammix.mock`; astropy gives the frame once (at
  the edges), and everything else is plain numpy.

Example:
    >>> import numpy as np
    >>> from streammix.frames import get_frame
    >>> rng = np.random.default_rng(0)
    >>> stars = draw_field_stars(get_frame("gd1"), (-40.0, -38.0), (-1.0, 1.0), 18.0, rng, n=300)
    >>> len(stars["phi1"]), sorted(set(stars["population"].tolist()))
    (300, ['halo', 'thick', 'thin'])
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import ICRS, CartesianRepresentation, Galactic, Galactocentric, galactocentric_frame_defaults

from .errors import InputError
from .frames import StreamFrame
from .isochrone import default_isochrone

__all__ = [
    "GalaxyModel",
    "Population",
    "along_track_velocity",
    "draw_field_stars",
    "galactic_to_galactocentric",
    "proper_motions",
    "sky_density",
]

K_KMS = 4.740470463533348  # km/s per (kpc mas/yr)
PHASES = ("MS", "SGB", "RGB", "CHEB", "EAGB")
_KROUPA_BREAKS = (0.08, 0.5)
_KROUPA_SLOPES = (0.3, 1.3, 2.3)  # xi(m) ~ m^-slope (Kroupa 2001)
Stars = dict[str, np.ndarray]


@dataclass(frozen=True)
class Population:
    """One stellar population of the Galaxy model.

    Arguments:
        name: "thin", "thick" or "halo" (any label; it becomes ``true_population``).
        age: Isochrone age, Gyr (the embedded grid's 6.9-15.8).
        feh: Isochrone [Fe/H] (the embedded grid's -2.19 to -0.45).
        sigma: Velocity dispersions along Galactocentric (R, phi, z), km/s.
        lag: Asymmetric drift behind the circular speed, km/s.

    Example:
        >>> Population("thin", 7.0, -0.45, (35.0, 20.0, 16.0), 15.0).sigma
        (35.0, 20.0, 16.0)
    """

    name: str
    age: float
    feh: float
    sigma: tuple[float, float, float]
    lag: float


@dataclass(frozen=True)
class GalaxyModel:
    """Juric et al. (2008) densities, Bensby et al. (2003) velocity ellipsoids (module docstring).

    Arguments:
        thin_scale_height, thin_scale_length: H1, L1 (kpc).
        thick_scale_height, thick_scale_length: H2, L2 (kpc).
        thick_fraction: Thick-disc density over the thin disc's at (R0, z = 0).
        halo_fraction: Halo density over the thin disc's at (R0, z = 0).
        halo_flattening: q of the halo.
        halo_slope: n of the halo's power law.
        halo_core: Core radius of the halo (kpc), ours.
        local_density: Living stars per pc^3 at the Sun, all populations.
        circular_speed: Flat rotation curve (km/s).
        thin, thick, halo: The populations' isochrones and kinematics.
        distance_range: Heliocentric distances drawn (kpc).

    Example:
        >>> GalaxyModel().halo.sigma
        (160.0, 90.0, 90.0)
    """

    thin_scale_height: float = 0.300
    thin_scale_length: float = 2.6
    thick_scale_height: float = 0.9
    thick_scale_length: float = 3.6
    thick_fraction: float = 0.12
    halo_fraction: float = 0.0051
    halo_flattening: float = 0.64
    halo_slope: float = 2.77
    halo_core: float = 0.5
    local_density: float = 0.1
    circular_speed: float = 238.0
    thin: Population = field(default_factory=lambda: Population("thin", 7.0, -0.45, (35.0, 20.0, 16.0), 15.0))
    thick: Population = field(default_factory=lambda: Population("thick", 10.0, -0.6, (67.0, 38.0, 35.0), 46.0))
    halo: Population = field(default_factory=lambda: Population("halo", 12.0, -1.5, (160.0, 90.0, 90.0), 220.0))
    distance_range: tuple[float, float] = (0.01, 120.0)

    @property
    def populations(self) -> tuple[Population, Population, Population]:
        """(thin, thick, halo)."""
        return (self.thin, self.thick, self.halo)

    def density(self, population: str, xyz: np.ndarray) -> np.ndarray:
        """Living stars per kpc^3 of one population at Galactocentric Cartesian ``xyz`` (..., 3) kpc.

        Example:
            >>> model = GalaxyModel()
            >>> sun = galactic_to_galactocentric(np.zeros(3))
            >>> total = sum(model.density(p, sun) for p in ("thin", "thick", "halo"))
            >>> round(float(total) / 1e9, 3)  # per pc^3
            0.094
        """
        xyz = np.asarray(xyz, float)
        r_cyl = np.hypot(xyz[..., 0], xyz[..., 1])
        z = np.abs(xyz[..., 2])
        r0 = _SUN_R
        thin0 = self.local_density * 1e9 / (1.0 + self.thick_fraction + self.halo_fraction)
        if population == "thin":
            return thin0 * np.exp(-(r_cyl - r0) / self.thin_scale_length - z / self.thin_scale_height)
        if population == "thick":
            return thin0 * self.thick_fraction * np.exp(
                -(r_cyl - r0) / self.thick_scale_length - z / self.thick_scale_height
            )
        if population == "halo":
            r = np.sqrt(r_cyl**2 + (z / self.halo_flattening) ** 2 + self.halo_core**2)
            return thin0 * self.halo_fraction * (r0 / r) ** self.halo_slope
        raise InputError(f"population '{population}': not one of thin, thick, halo")


# ----------------------------------------------------------------------------- frames (astropy at the edge)


@functools.lru_cache(maxsize=1)
def _galactic_affine() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(A, offset, v_sun, G): Galactocentric = A @ heliocentric Galactic + offset (kpc);
    the Sun's Galactocentric velocity (km/s); G takes ICRS unit vectors to Galactic ones."""
    parameters = galactocentric_frame_defaults.get_from_registry("v4.0")["parameters"]
    frame = Galactocentric(**parameters)
    points = np.vstack([np.zeros(3), np.eye(3)]).T  # origin and the three unit vectors
    gal = Galactic(CartesianRepresentation(points * u.kpc))
    gc = gal.transform_to(frame).cartesian.xyz.to_value(u.kpc)
    offset = gc[:, 0]
    matrix = gc[:, 1:] - offset[:, None]
    v_sun = parameters["galcen_v_sun"].xyz.to_value(u.km / u.s)
    icrs = ICRS(CartesianRepresentation(np.eye(3) * u.one)).transform_to(Galactic())
    to_gal = icrs.cartesian.xyz.value  # column j: ICRS axis j in Galactic
    for a in (matrix, offset, v_sun, to_gal):
        a.setflags(write=False)
    return matrix, offset, v_sun, to_gal


_SUN_R = 8.122  # kpc, the v4.0 galcen_distance (the Sun's Galactocentric R, to 1e-5)


def galactic_to_galactocentric(xyz: Any) -> np.ndarray:
    """Galactocentric Cartesian (kpc, astropy's ``v4.0`` frame) of heliocentric Galactic Cartesian ``xyz`` (..., 3).

    Example:
        >>> galactic_to_galactocentric([0.0, 0.0, 0.0]).round(3)
        array([-8.122,  0.   ,  0.021])
    """
    matrix, offset, _, _ = _galactic_affine()
    return np.asarray(xyz, float) @ matrix.T + offset


def _stream_basis(frame: StreamFrame, phi1: np.ndarray, phi2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Line of sight and the phi1, phi2 unit vectors (N, 3), in heliocentric Galactic axes."""
    p1, p2 = np.deg2rad(phi1), np.deg2rad(phi2)
    c1, s1, c2, s2 = np.cos(p1), np.sin(p1), np.cos(p2), np.sin(p2)
    los = np.stack([c1 * c2, s1 * c2, s2], -1)
    e1 = np.stack([-s1, c1, np.zeros_like(p1)], -1)
    e2 = np.stack([-c1 * s2, -s1 * s2, c2], -1)
    to_gal = _galactic_affine()[3] @ frame.matrix.T  # stream Cartesian -> Galactic Cartesian
    return los @ to_gal.T, e1 @ to_gal.T, e2 @ to_gal.T


def proper_motions(
    frame: StreamFrame, phi1: Any, phi2: Any, distance: Any, v_galactocentric: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Observed (heliocentric) pm_phi1_cosphi2, pm_phi2 (mas/yr) of stars moving at a Galactocentric velocity.

    Arguments:
        frame: The stream frame of phi1, phi2.
        phi1, phi2: Positions (deg).
        distance: Heliocentric distances (kpc).
        v_galactocentric: Velocities (N, 3) in astropy's ``v4.0`` Galactocentric axes (km/s).

    Example:
        >>> from streammix.frames import get_frame
        >>> v_sun = _galactic_affine()[2]
        >>> pm = proper_motions(get_frame("gd1"), [0.0], [0.0], [10.0], [v_sun])  # moving with the Sun
        >>> np.abs(np.concatenate(pm)).max() < 1e-12
        np.True_
    """
    phi1, phi2 = np.atleast_1d(np.asarray(phi1, float)), np.atleast_1d(np.asarray(phi2, float))
    matrix, _, v_sun, _ = _galactic_affine()
    _, u1, u2 = _stream_basis(frame, phi1, phi2)
    v_helio = (np.atleast_2d(np.asarray(v_galactocentric, float)) - v_sun) @ matrix
    scale = K_KMS * np.asarray(distance, float)
    return np.sum(v_helio * u1, -1) / scale, np.sum(v_helio * u2, -1) / scale


def along_track_velocity(frame: StreamFrame, phi1: Any, phi2: Any, speed: float) -> np.ndarray:
    """Galactocentric velocities (N, 3) km/s of ``speed`` along increasing phi1 on the sky.

    Example:
        >>> from streammix.frames import get_frame
        >>> v = along_track_velocity(get_frame("gd1"), [0.0, 10.0], [0.0, 0.0], 150.0)
        >>> np.linalg.norm(v, axis=1).round(6).tolist()
        [150.0, 150.0]
    """
    _, u1, _ = _stream_basis(frame, np.atleast_1d(np.asarray(phi1, float)), np.atleast_1d(np.asarray(phi2, float)))
    return speed * u1 @ _galactic_affine()[0].T


# ----------------------------------------------------------------------------- stars of a population


@dataclass(frozen=True, eq=False)
class _Luminosity:
    """A population's IMF on its isochrone: the lightest visible mass at each absolute-G threshold."""

    iso: Any
    mass: np.ndarray  # fine grid, increasing
    cdf: np.ndarray  # Kroupa CDF on it, 0 .. 1
    brightest: np.ndarray  # running minimum of absolute G from the low-mass end

    def mass_min(self, threshold: np.ndarray) -> np.ndarray:
        """The lightest mass with absolute G < threshold (NaN: none)."""
        i = np.searchsorted(-self.brightest, -np.asarray(threshold, float), side="right")
        return np.where(i < self.mass.size, self.mass[np.minimum(i, self.mass.size - 1)], np.nan)

    def fraction(self, threshold: np.ndarray) -> np.ndarray:
        """Fraction of the population's living stars with absolute G < threshold (masses above mass_min)."""
        m = self.mass_min(threshold)
        return np.where(np.isfinite(m), 1.0 - np.interp(np.nan_to_num(m), self.mass, self.cdf), 0.0)

    def draw(self, threshold: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One mass per threshold from the IMF above that threshold's lightest visible mass."""
        q_lo = 1.0 - self.fraction(threshold)
        q = q_lo + rng.uniform(size=q_lo.size) * (1.0 - q_lo)
        return np.interp(q, self.cdf, self.mass)


def _kroupa_pdf(m: np.ndarray) -> np.ndarray:
    out = np.empty_like(m)
    c = 1.0
    lo = 0.0
    for j, slope in enumerate(_KROUPA_SLOPES):
        hi = _KROUPA_BREAKS[j] if j < len(_KROUPA_BREAKS) else np.inf
        sel = (m >= lo) & (m < hi)
        out[sel] = c * m[sel] ** -slope
        if j < len(_KROUPA_BREAKS):
            c *= _KROUPA_BREAKS[j] ** (_KROUPA_SLOPES[j + 1] - slope)
        lo = hi
    return out


@functools.lru_cache(maxsize=8)
def _luminosity(age: float, feh: float) -> _Luminosity:
    iso = default_isochrone(age=age, feh=feh).select(PHASES)
    mass = np.unique(np.concatenate([iso.initial_mass, np.geomspace(iso.mass_min, iso.mass_max, 6000)]))
    mass = mass[(mass >= iso.mass_min) & (mass <= iso.mass_max)]
    pdf = _kroupa_pdf(mass)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(mass))])
    cdf /= cdf[-1]
    abs_g = iso.absolute_mags(mass, ("gaia_g",))[:, 0]
    brightest = np.minimum.accumulate(abs_g)
    for a in (mass, cdf, brightest):
        a.setflags(write=False)
    return _Luminosity(iso, mass, cdf, brightest)


def _velocities(model: GalaxyModel, population: Population, gc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Galactocentric velocities (N, 3) km/s at Galactocentric positions ``gc`` (N, 3)."""
    r_cyl = np.maximum(np.hypot(gc[:, 0], gc[:, 1]), 1e-6)
    e_r = np.stack([gc[:, 0] / r_cyl, gc[:, 1] / r_cyl, np.zeros(len(gc))], -1)
    e_phi = np.stack([gc[:, 1] / r_cyl, -gc[:, 0] / r_cyl, np.zeros(len(gc))], -1)  # the sense of rotation
    z = rng.standard_normal((len(gc), 3)) * np.asarray(population.sigma)
    v_phi = model.circular_speed - population.lag + z[:, 1]
    return e_r * z[:, :1] + e_phi * v_phi[:, None] + np.array([0.0, 0.0, 1.0]) * z[:, 2:]


# ----------------------------------------------------------------------------- public API


def sky_density(l: float, b: float, g_limit: float, model: GalaxyModel = GalaxyModel()) -> dict[str, float]:
    """Expected stars per deg^2 with true G < ``g_limit`` towards Galactic (l, b), per population.

    Arguments:
        l, b: Galactic longitude and latitude, deg.
        g_limit: Faint limit in Gaia G (mag; no extinction).
        model: The Galaxy model.

    Returns:
        ``{"thin": ..., "thick": ..., "halo": ...}`` in stars per deg^2.

    Example:
        >>> counts = sky_density(0.0, 90.0, 20.0)
        >>> bool(counts["thin"] < counts["thick"]), bool(sky_density(0.0, 30.0, 20.0)["thin"] > counts["thin"])
        (True, True)
    """
    lr, br = np.deg2rad(l), np.deg2rad(b)
    los = np.array([np.cos(br) * np.cos(lr), np.cos(br) * np.sin(lr), np.sin(br)])
    d = np.geomspace(*model.distance_range, 4000)
    gc = galactic_to_galactocentric(d[:, None] * los)
    distmod = 5.0 * np.log10(d * 100.0)
    per_sr_to_deg2 = (np.pi / 180.0) ** 2
    out = {}
    for pop in model.populations:
        lum = _luminosity(pop.age, pop.feh)
        integrand = model.density(pop.name, gc) * d**2 * lum.fraction(g_limit - distmod)
        out[pop.name] = float(np.trapezoid(integrand, d) * per_sr_to_deg2)
    return out


def draw_field_stars(
    frame: StreamFrame,
    phi1_range: tuple[float, float],
    phi2_range: tuple[float, float],
    g_limit: float,
    rng: np.random.Generator,
    *,
    n: int | None = None,
    model: GalaxyModel = GalaxyModel(),
    scale: float = 1.0,
) -> Stars:
    """True stars of the Galaxy model in a box of a stream frame, brighter than about ``g_limit``.

    The field is split into cells (about 1 deg by 0.5 deg; at most 120 by 40 cells,
    so larger where the field is longer than 120 deg or wider than 20 deg) and each line of sight
    into 500 logarithmic distance bins; a star lands in a cell, a distance and a
    population with probability proportional to the expected number of visible
    stars there (density x volume x the fraction of the population's IMF brighter
    than ``g_limit`` at that distance), is placed uniformly in its cell
    (uniform in phi1 and sin phi2) and its bin, and gets a mass from the IMF
    above the lightest visible one, then a velocity from its population's
    ellipsoid.

    Arguments:
        frame: The stream frame of the box.
        phi1_range, phi2_range: The box (deg).
        g_limit: True G limit (mag); pass the observed limit plus a margin for errors.
        rng: Random numbers.
        n: How many stars (None: a Poisson number with the model's expectation times ``scale``).
        model: The Galaxy model.
        scale: With ``n=None``, the fraction of the model's stars drawn (thinning
            keeps every distribution and the variation across the field).

    Returns:
        Arrays per star: phi1, phi2 (deg), distance (kpc), distmod, pm1, pm2
        (pm_phi1_cosphi2, pm_phi2, mas/yr; heliocentric, observed-like), mass,
        abs_g, abs_bp, abs_rp, l, b (deg), population (str). The expected number
        (before ``scale``) is in ``expected``, a 0-d array.
    """
    (lo1, hi1), (lo2, hi2) = (tuple(float(v) for v in r) for r in (phi1_range, phi2_range))
    if not (lo1 < hi1 and lo2 < hi2):
        raise InputError(f"field: {phi1_range!r}, {phi2_range!r} are not increasing ranges")
    n1 = int(np.clip(np.ceil(hi1 - lo1), 4, 120))
    n2 = int(np.clip(np.ceil(2.0 * (hi2 - lo2)), 4, 40))
    e1 = np.linspace(lo1, hi1, n1 + 1)
    s2 = np.linspace(*np.sin(np.deg2rad([lo2, hi2])), n2 + 1)
    c1, cs2 = 0.5 * (e1[1:] + e1[:-1]), 0.5 * (s2[1:] + s2[:-1])
    p1, p2 = np.meshgrid(c1, np.rad2deg(np.arcsin(cs2)), indexing="ij")
    omega = np.deg2rad(np.diff(e1))[:, None] * np.diff(s2)[None, :]  # sr per cell
    los = _stream_basis(frame, p1.ravel(), p2.ravel())[0]
    d_edges = np.geomspace(*model.distance_range, 501)
    d = np.sqrt(d_edges[1:] * d_edges[:-1])
    gc = galactic_to_galactocentric(d[None, :, None] * los[:, None, :])  # (cells, d, 3)
    distmod = 5.0 * np.log10(d * 100.0)
    weights = []
    for pop in model.populations:
        lum = _luminosity(pop.age, pop.feh)
        w = model.density(pop.name, gc) * (d**2 * np.diff(d_edges))[None, :] * lum.fraction(g_limit - distmod)[None, :]
        weights.append(w * omega.ravel()[:, None])
    weights = np.stack(weights)  # (population, cell, distance)
    expected = float(weights.sum())
    if n is None:
        n = int(rng.poisson(expected * scale))
    cdf = np.cumsum(weights.ravel())
    pick = np.minimum(np.searchsorted(cdf, rng.uniform(0.0, cdf[-1], n), side="right"), cdf.size - 1)
    ip, ic, idist = np.unravel_index(pick, weights.shape)
    i1, i2 = np.unravel_index(ic, p1.shape)
    phi1 = rng.uniform(e1[i1], e1[i1 + 1])
    phi2 = np.rad2deg(np.arcsin(rng.uniform(s2[i2], s2[i2 + 1])))
    distance = rng.uniform(d_edges[idist], d_edges[idist + 1])
    out: Stars = {k: np.empty(n) for k in ("mass", "abs_g", "abs_bp", "abs_rp", "pm1", "pm2")}
    population = np.empty(n, dtype="U6")
    los, u1, u2 = _stream_basis(frame, phi1, phi2)
    gc_star = galactic_to_galactocentric(distance[:, None] * los)
    matrix, _, v_sun, _ = _galactic_affine()
    distmod_star = 5.0 * np.log10(distance * 100.0)
    for j, pop in enumerate(model.populations):
        sel = np.flatnonzero(ip == j)
        population[sel] = pop.name
        lum = _luminosity(pop.age, pop.feh)
        mass = lum.draw(g_limit - distmod_star[sel], rng)
        mags = lum.iso.absolute_mags(mass, ("gaia_g", "gaia_bp", "gaia_rp"))
        out["mass"][sel] = mass
        out["abs_g"][sel], out["abs_bp"][sel], out["abs_rp"][sel] = mags.T
        v_helio = (_velocities(model, pop, gc_star[sel], rng) - v_sun) @ matrix  # Galactic axes
        scale_pm = K_KMS * distance[sel]
        out["pm1"][sel] = np.sum(v_helio * u1[sel], -1) / scale_pm
        out["pm2"][sel] = np.sum(v_helio * u2[sel], -1) / scale_pm
    l_deg = np.rad2deg(np.arctan2(los[:, 1], los[:, 0])) % 360.0
    b_deg = np.rad2deg(np.arcsin(np.clip(los[:, 2], -1.0, 1.0)))
    return {
        "phi1": phi1, "phi2": phi2, "distance": distance, "distmod": distmod_star, **out,
        "l": l_deg, "b": b_deg, "population": population, "expected": np.array(expected),
    }  # fmt: skip
