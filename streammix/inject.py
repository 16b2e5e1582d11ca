"""Injection of a synthetic stream into a real catalog (injection-recovery tests).

:func:`inject_stream` draws the stars of a stream-like component described by an
:class:`InjectionSpec` and appends them to a real catalog, so that a fit can be
scored against a known truth on a real background. Everything the stream's stars
share with the real ones (errors, missing data, selection) is taken from the
catalog itself:

- **Stars.** phi1 uniform in ``spec.phi1_range``; phi2, proper motions
  (``pm_phi1_cosphi2``, ``pm_phi2``) and distance modulus Gaussian about their
  tracks with the spec's intrinsic widths (each track a constant, control points
  ``[[phi1, value], ...]`` joined linearly and held constant beyond the ends, or
  a polynomial in ``phi1 - phi1_ref``); true parallax ``10^((10 - distmod) / 5)``
  mas (observed about it plus ``data.parallax_zero_point``). Initial masses from
  the isochrone section's mass function (the model's
  :class:`~streammix.photometry.MassFunction`) on the isochrone's modelled phases
  (the likelihood's default phases unless ``phases`` is set), absolute
  magnitudes from the isochrone, apparent = absolute + distmod (no extinction:
  the catalog is taken as dereddened).
- **Errors from donors.** Each injected star takes a *donor*: a real star drawn
  at random from the 20 whose magnitude in ``donor_band`` is nearest the
  injected star's true magnitude. A real star without that band (half of the
  GD-1 file has no PS1 photometry) is given the median magnitude of the stars
  that have it at its parallax error (binned in log parallax error), so stars
  without photometry donate too, at the magnitudes where they occur. From its
  donor the injected star copies: its parallax error; its proper-motion errors
  and correlation where the catalog has them, else each proper-motion error is
  ``data.columns.pm_err_per_parallax_err`` times the parallax error (0 if that
  is not set either; the external parallax error where
  ``data.columns.parallax_err_external`` is set, as the model reads it); its phi2 error where mapped; which of the bands, the
  parallax and the proper motions are missing (NaN in the output); its band
  errors where mapped. Where they are not, a band the config models errors for
  (``data.columns.band_error_model``) gets that model's error at the injected
  star's magnitude, and any other band ``spec.photometric_error`` (default: the
  config's ``isochrone.colour_spread / sqrt 2``, the scatter the model assumes).
  Observed = true + Gaussian error (the proper motions with their correlation;
  the parallax's with the external error where the config gives one, while the
  output keeps the donor's catalogue error, which the fit inflates again).
  How the errors meet the catalog's parallax and proper-motion ranges is
  ``spec.error_draw``:

  - ``"conditioned"`` (default): the donor's error is one that passed those
    cuts, so a star whose true parallax (proper motion) lies inside the
    catalog's range (per tenth of phi1, see below) has its error drawn
    conditioned on the observed value staying inside that range (a truncated
    Gaussian). Its errors are the real ones at its magnitude, but such a star
    is lost only where a declared box (``data.selection``) is tighter than the
    range, so the stream keeps more of its imprecise stars than a real one,
    which loses many (in the GD-1 file's proper-motion box, a star of a stream
    1 mas/yr from GD-1 with a parallax error above 0.9 mas passes with
    probability 0.38: ``benchmarks/injection_scorings.py --cuts``,
    benchmarks/RESULTS.md, session 19). One whose true value lies outside is
    drawn freely and kept only if it falls inside.
  - ``"rejected"``: every star's error is drawn freely and the star kept only
    if its observed values pass the selection below, which with the
    catalog's cuts declared (``data.selection``) is how the catalog's own
    stars were kept, so the stream loses its imprecise stars as a real one
    does. The donors' errors have passed the cuts once already, so the kept
    stars' errors come out somewhat smaller than the real ones at the same
    magnitude (about 11 % at g = 21-22 in the GD-1 file, commit 6da7fac).
- **Selection** (what the catalog itself shows, applied to the observed values,
  missing ones passing): phi1 and phi2 inside both the config's field and the
  catalog's own range; the observed ``donor_band`` magnitude (whether or not it
  is then blanked) at most ``spec.magnitude_limit`` (default: the catalog's
  99th percentile in that band; with ``spec.magnitude_limit_width``, kept with
  a soft limit's probability instead) and at least the catalog's brightest; parallax
  within the catalog's range; and each proper motion within the range the
  catalog covers in the star's tenth of the catalog's phi1 range (a proper-motion
  box is a slanted region in the stream frame, so a global range is too loose);
  and, when the config declares them (``data.selection``), the catalog's own cuts
  exactly: observed parallax range and the (pmra cos dec, pmdec) box mapped into
  the stream frame (:func:`streammix.selection.selection_transform`).
  Stars are drawn until ``spec.n_stars`` pass: the count is after selection.

Output: the catalog's rows, then the injected ones, with a boolean ``injected``
column; injected rows get negative ``source_id`` s (below any in the catalog,
so they cannot collide with Gaia ids), the columns the config maps (phi1, phi2,
parallax and its error, the proper motions and errors if mapped, the bands and
their errors if mapped), ``ra`` / ``dec`` from the config's stream frame when
the catalog has them, and the truth ``true_phi2``, ``true_pm_phi1_cosphi2``,
``true_pm_phi2``, ``true_distmod``, ``true_mass`` (masked for real stars).
Every other column is masked for injected rows.

Example:
    >>> import numpy as np
    >>> from astropy.table import Table
    >>> from streammix.config import Config
    >>> rng = np.random.default_rng(0)
    >>> n = 3000
    >>> g = rng.uniform(16, 21, n)
    >>> catalog = Table({"source_id": np.arange(1, n + 1), "phi1": rng.uniform(-60, -20, n),
    ...     "phi2": rng.uniform(-4, 4, n), "parallax": rng.normal(0.2, 0.5, n),
    ...     "parallax_error": 0.02 * 10 ** (0.2 * (g - 15)), "pm_phi1": rng.normal(-5, 3, n),
    ...     "pm_phi2": rng.normal(0, 3, n), "g": g, "i": g - 0.5})
    >>> config = Config.from_dict({"field": {"phi1": [-60, -20], "phi2": [-4, 4]},
    ...     "data": {"columns": {"pm_err_per_parallax_err": 1.5, "bands": {"gaia_g": "g", "gaia_rp": "i"}}},
    ...     "model": {"bands": ["gaia_g", "gaia_rp"],
    ...               "background": {"blocks": [["parallax", "pm_phi1_cosphi2", "pm_phi2"], ["gaia_g", "gaia_rp"]]}}})
    >>> spec = InjectionSpec(phi1_range=(-55, -25), phi2=[[-55, 2.0], [-25, 3.0]], phi2_width=0.2,
    ...     pm_phi1_cosphi2=-4.0, pm_phi2=1.0, distmod=14.5, n_stars=200)
    >>> out = inject_stream(catalog, spec, config, seed=1)
    >>> len(out) - len(catalog), int(out["injected"].sum()), bool((out["source_id"][out["injected"]] < 0).all())
    (200, 200, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import astropy.units as u
import numpy as np
import yaml
from astropy.table import MaskedColumn, Table, vstack
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.special import ndtr

from .components import draw_stream
from .config import Config, IsochroneConfig, resolve_data_path
from .data import canonical_unit
from .errors import InputError
from .frames import get_frame
from .mock import visible_mass_min
from .photometry import isochrone_at, isochrone_source, mass_function_from_config, select_phases
from .profiles import PROFILES, shape_values
from .selection import selection_transform
from .settings import first_error

__all__ = ["InjectionSpec", "PolynomialTrack", "Track", "inject_stream", "passes_declared_cuts", "track_values"]

_DONOR_NEIGHBOURS = 20  # donors are drawn among this many real stars nearest in magnitude
_PM_BINS = 10  # the catalog's proper-motion ranges are taken in this many phi1 slices


def _without_union_tags(loc: tuple) -> list[str]:
    """An error's location without the union members pydantic names (a Track is a union).

    Example:
        >>> _without_union_tags(("track", "PolynomialTrack", "phi2"))
        ['track', 'phi2']
    """
    return [str(k) for k in loc if not str(k).startswith(("float", "list[", "PolynomialTrack"))]


class PolynomialTrack(BaseModel):
    """A track ``sum_k coefficients[k] (phi1 - phi1_ref)^k``.

    Arguments:
        coefficients: Constant term first.
        phi1_ref: The phi1 (deg) the polynomial is centred on.

    Example:
        >>> track_values(PolynomialTrack(coefficients=[1.0, 0.1], phi1_ref=-40.0), np.array([-40.0, -30.0]))
        array([1., 2.])
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    coefficients: list[float] = Field(min_length=1, max_length=6)
    phi1_ref: float = 0.0


Track = float | list[tuple[float, float]] | PolynomialTrack
"""A track in phi1: a constant, control points ``[[phi1, value], ...]`` (linear between
them, constant beyond the ends) or a :class:`PolynomialTrack`."""


def track_values(track: Track, phi1: np.ndarray) -> np.ndarray:
    """A :data:`Track` evaluated at ``phi1`` (deg).

    Arguments:
        track: The track.
        phi1: Where to evaluate it.

    Returns:
        Its values, same shape as ``phi1``.

    Example:
        >>> track_values([(-50.0, 1.0), (-30.0, 3.0)], np.array([-60.0, -40.0, -20.0]))
        array([1., 2., 3.])
        >>> track_values(0.5, np.array([-40.0, -30.0]))
        array([0.5, 0.5])
    """
    phi1 = np.asarray(phi1, dtype=float)
    if isinstance(track, PolynomialTrack):
        x = phi1 - track.phi1_ref
        return sum(c * x**k for k, c in enumerate(track.coefficients)) + np.zeros_like(phi1)
    if isinstance(track, list):
        points = np.asarray(track, dtype=float)
        order = np.argsort(points[:, 0])
        return np.interp(phi1, points[order, 0], points[order, 1])
    return np.full_like(phi1, float(track))


class InjectionSpec(BaseModel):
    """The synthetic stream to inject (see the module docstring for how it is drawn).

    Arguments:
        phi1_range: The stream's extent (deg); phi1 is uniform inside it.
        n_stars: Number of injected stars *after* the catalog's selection.
        phi2: Track of phi2 (deg).
        phi2_width: Intrinsic width in phi2 (deg): the scale of ``profile``.
        profile: The cross-track profile, a name in :data:`streammix.profiles.PROFILES`
            (default ``"gaussian"``; e.g. ``"student_t"`` for heavy wings).
        profile_parameters: Its shape parameters, constant along the stream
            (e.g. ``{"phi2_dof": 2.5}``); those left out take the profile's defaults.
        pm_phi1_cosphi2: Track of the proper motion along the stream (mas/yr),
            in the catalog's convention (e.g. reflex-corrected if its columns are).
        pm_phi2: Track of the proper motion across it (mas/yr).
        pm_phi1_cosphi2_width: Intrinsic dispersion (mas/yr).
        pm_phi2_width: Intrinsic dispersion (mas/yr).
        distmod: Track of the distance modulus (mag).
        distmod_width: Intrinsic spread of the distance modulus (mag).
        isochrone: Isochrone and mass function (None: the config's ``model.isochrone``).
        bands: Isochrone band -> catalog column of the magnitudes written (None:
            the config's ``data.columns.bands``).
        donor_band: The band donors are matched in (None: the first of ``bands``).
        magnitude_limit: Faintest observed ``donor_band`` magnitude kept (None:
            the catalog's 99th percentile in that band).
        magnitude_limit_width: With a width > 0 the faint limit is soft, as a
            catalogue's usually is: a star of observed ``donor_band`` magnitude
            ``m`` is kept with probability ``Phi((magnitude_limit - m) / width)``
            (:func:`streammix.magnitude_limit.fit_magnitude_limit` fits both to
            a catalogue's counts).
        colour_spread: The stream's intrinsic spread about the isochrone (mag):
            each band's true magnitude scatters by ``colour_spread / sqrt 2``,
            Gaussian and independent per band, as the model's
            ``isochrone.colour_spread`` assumes (0: on the isochrone; a real
            stream's binaries, metallicity spread and the isochrone's mismatch
            put its stars off it). Where the catalogue has no band errors and
            the config models none, ``photometric_error`` defaults to the
            same ``colour_spread / sqrt 2`` of the model: both together give
            each band twice the variance the model assumes.
        photometric_error: Gaussian error (mag) per band where the catalog has
            no band errors and the config models none (None:
            ``isochrone.colour_spread / sqrt 2``).
        error_draw: ``"conditioned"`` (the default: errors drawn so that a
            star inside the catalog's parallax and proper-motion ranges stays
            inside them) or ``"rejected"`` (drawn freely, the star kept only if
            it passes, so that with ``data.selection`` declared the stream loses
            its imprecise stars to the cuts as a real one does).

    Example:
        >>> spec = InjectionSpec(phi1_range=(-60, -30), phi2=2.0, pm_phi1_cosphi2=-6.0,
        ...                      pm_phi2=0.5, distmod=14.5, n_stars=300)
        >>> spec.phi2_width, spec.distmod_width
        (0.2, 0.05)
        >>> try:
        ...     InjectionSpec.from_dict({"phi1_range": [-60, -30], "n_stars": 3, "phi2": 1, "pm_phi1_cosphi2": -5,
        ...                              "pm_phi2": 0, "distmod": 15, "phi2_widht": 0.1}, source="spec")
        ... except InputError as error:
        ...     print(error)
        spec: phi2_widht: Extra inputs are not permitted
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    phi1_range: tuple[float, float]
    n_stars: int = Field(gt=0, le=10_000_000)
    phi2: Track
    phi2_width: Track = 0.2
    profile: str = "gaussian"
    profile_parameters: dict[str, float] = {}
    pm_phi1_cosphi2: Track
    pm_phi2: Track
    pm_phi1_cosphi2_width: Track = 0.2
    pm_phi2_width: Track = 0.2
    distmod: Track
    distmod_width: Track = 0.05
    isochrone: IsochroneConfig | None = None
    bands: dict[str, str] | None = None
    donor_band: str | None = None
    magnitude_limit: float | None = None
    magnitude_limit_width: float = Field(0.0, ge=0)
    colour_spread: float = Field(0.0, ge=0)
    photometric_error: float | None = Field(None, ge=0)
    error_draw: Literal["conditioned", "rejected"] = "conditioned"

    @model_validator(mode="after")
    def _check(self) -> InjectionSpec:
        lo, hi = self.phi1_range
        if not hi > lo:
            raise ValueError(f"phi1_range: upper limit {hi} must exceed lower limit {lo}")
        grid = np.linspace(lo, hi, 201)
        for name in ("phi2_width", "pm_phi1_cosphi2_width", "pm_phi2_width", "distmod_width"):
            if np.any(track_values(getattr(self, name), grid) < 0):
                raise ValueError(f"{name}: must not be negative over phi1_range")
        if self.profile not in PROFILES:
            raise ValueError(f"profile: {self.profile!r} is not one of {', '.join(sorted(PROFILES))}")
        try:
            shape_values(self.profile, self.profile_parameters)
        except ValueError as error:
            raise ValueError(f"profile_parameters: {error}") from None
        if self.magnitude_limit_width > 0 and self.magnitude_limit is None:
            raise ValueError("magnitude_limit_width: a soft limit needs its magnitude_limit")
        if self.bands is not None and self.donor_band is not None and self.donor_band not in self.bands:
            raise ValueError(f"donor_band: '{self.donor_band}' is not among the bands {sorted(self.bands)}")
        return self

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "injection spec") -> InjectionSpec:
        """Validate a mapping (e.g. a YAML file's content); errors become one-line
        :class:`InputError` s naming the key.

        Example:
            >>> InjectionSpec.from_dict({"phi1_range": [-50, -30], "n_stars": 10, "phi2": 1,
            ...     "pm_phi1_cosphi2": -5, "pm_phi2": 0, "distmod": 15}).n_stars
            10
        """
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as error:
            # a Track is a union: name the key, not the union member that failed last
            key, why = first_error(error, _without_union_tags)
            where = f"{key}: " if key else ""  # whole-spec checks name their key in the message
            raise InputError(f"{source}: {where}{why}") from None

    @classmethod
    def from_yaml(cls, path: Any) -> InjectionSpec:
        """Read and validate a YAML file (a relative isochrone path is taken from its folder).

        Example:
            >>> import tempfile, pathlib
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "spec.yaml"
            >>> _ = p.write_text("phi1_range: [-50, -30]\\nn_stars: 5\\nphi2: 1\\npm_phi1_cosphi2: -5\\n"
            ...                  "pm_phi2: 0\\ndistmod: 15\\n")
            >>> InjectionSpec.from_yaml(p).distmod
            15.0
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"injection spec '{path}': no such file")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            raise InputError(f"injection spec '{path}': not valid YAML") from None
        spec = cls.from_dict(data if data is not None else {}, source=f"injection spec '{path}'")
        if spec.isochrone is not None and spec.isochrone.path is not None:
            resolved = resolve_data_path(spec.isochrone.path, path.parent)
            spec = spec.model_copy(update={"isochrone": spec.isochrone.model_copy(update={"path": str(resolved)})})
        return spec


# ----------------------------------------------------------------------------- catalog access


def _floats(table: Table, name: str, sentinels: list[float]) -> np.ndarray:
    """A column as floats with masked entries and sentinels as NaN."""
    column = table[name]
    values = np.ma.filled(np.ma.asarray(column, dtype=float), np.nan) if getattr(column, "mask", None) is not None \
        else np.asarray(column, dtype=float)
    values = np.array(values, dtype=float)
    for sentinel in sentinels:
        values[np.isclose(values, sentinel, rtol=1e-6, atol=0.0)] = np.nan
    return values


def _column_of(table: Table, mapped: str | None, canonical: str, *, required: bool, key: str) -> str | None:
    """The catalog column holding ``canonical`` (the mapped name, else the canonical one)."""
    for name in (mapped, canonical):
        if name is not None and name in table.colnames:
            return name
    if required:
        raise InputError(f"catalog: column '{mapped or canonical}' ({key}) not found")
    return None


def _isochrone_mags(iso_config: IsochroneConfig, bands: list[str]):
    """The isochrone (modelled phases), its mass function, as the likelihood would use them."""
    iso = select_phases(isochrone_at(isochrone_source(iso_config), iso_config.age, iso_config.feh), iso_config.phases)
    missing = [b for b in bands if b not in iso.bands]
    if missing:
        raise InputError(f"injection spec: bands {missing} are not in the isochrone (it has {list(iso.bands)})")
    return iso, mass_function_from_config(iso_config)


def _draw_masses(rng: np.random.Generator, mass_function: Any, low: float, high: float, n: int) -> np.ndarray:
    """Initial masses from ``mass_function`` truncated to [low, high] (inverse CDF via its antiderivative)."""
    grid = np.geomspace(low, high, 4001)
    cdf = mass_function.antiderivative(grid) - mass_function.antiderivative(np.array(low))
    cdf = np.maximum.accumulate(cdf / cdf[-1])
    return np.interp(rng.uniform(size=n), cdf, grid)


def _magnitude_proxy(mag: np.ndarray, plx_err: np.ndarray) -> np.ndarray:
    """``mag`` where observed; else the median magnitude of the stars that have one,
    at the star's parallax error (30 bins in log parallax error); NaN if neither."""
    out = mag.copy()
    both = np.isfinite(mag) & np.isfinite(plx_err) & (plx_err > 0)
    need = ~np.isfinite(mag) & np.isfinite(plx_err) & (plx_err > 0)
    if both.sum() < 30 or not need.any():
        return out
    log_err = np.log10(plx_err[both])
    edges = np.unique(np.quantile(log_err, np.linspace(0, 1, 31)))
    which = np.clip(np.searchsorted(edges, log_err, side="right") - 1, 0, edges.size - 2)
    centres, medians = [], []
    for k in range(edges.size - 1):
        inside = which == k
        if inside.any():
            centres.append(np.median(log_err[inside]))
            medians.append(np.median(mag[both][inside]))
    out[need] = np.interp(np.log10(plx_err[need]), centres, medians)
    return out


def _conditioned_normal(
    rng: np.random.Generator,
    centre: np.ndarray,
    scale: np.ndarray,
    limits: np.ndarray | None,
    inside_of: np.ndarray | None = None,
) -> np.ndarray:
    """Standard normal draws ``u``, conditioned on ``centre + scale u`` lying within
    ``limits`` (N, 2) for the stars whose ``inside_of`` (default ``centre``) does;
    unconditioned for the others (the selection then decides) and where ``scale`` is 0."""
    from scipy.stats import truncnorm  # local import: scipy.stats takes ~0.6 s to load

    u = rng.standard_normal(centre.size)
    if limits is None:
        return u
    low, high = limits[:, 0], limits[:, 1]
    ref = centre if inside_of is None else inside_of
    cond = (ref >= low) & (ref <= high) & (scale > 0)
    if cond.any():
        a = (low[cond] - centre[cond]) / scale[cond]
        b = (high[cond] - centre[cond]) / scale[cond]
        u[cond] = truncnorm.rvs(a, b, random_state=rng)
    return u


def passes_declared_cuts(values: Mapping[str, np.ndarray], selection: Any, frame: str | None) -> np.ndarray:
    """Which stars pass the cuts a config declares in ``data.selection`` (its
    :class:`~streammix.config.SelectionConfig`): the parallax range, and the (pmra cos
    dec, pmdec) box through the frame's local rotation and the reflex correction.
    ``values`` maps ``phi1``, ``phi2`` (deg) and, where present, ``parallax`` (mas),
    ``pm_phi1_cosphi2``, ``pm_phi2`` (mas/yr) to arrays; missing values pass.

    Example:
        >>> from streammix.config import SelectionConfig
        >>> cuts = SelectionConfig(parallax=(None, 1.0))
        >>> passes_declared_cuts({"phi1": np.zeros(3), "parallax": np.array([0.5, 1.5, np.nan])}, cuts, None)
        array([ True, False,  True])
    """
    keep = np.ones(values["phi1"].size, bool)
    if selection.parallax is not None and "parallax" in values:
        low = -np.inf if selection.parallax[0] is None else selection.parallax[0]
        high = np.inf if selection.parallax[1] is None else selection.parallax[1]
        v = values["parallax"]
        keep &= ~np.isfinite(v) | ((v >= low) & (v <= high))
    if selection.pmra is not None and frame is not None and "pm_phi1_cosphi2" in values and "pm_phi2" in values:
        matrix, offset = selection_transform(get_frame(frame), values["phi1"], values["phi2"], selection.reflex_distance)
        pm = np.stack([values["pm_phi1_cosphi2"], values["pm_phi2"]], axis=1)
        pmra, pmdec = (np.einsum("nij,nj->ni", matrix, pm) + offset).T
        inside = (pmra >= selection.pmra[0]) & (pmra <= selection.pmra[1])
        inside &= (pmdec >= selection.pmdec[0]) & (pmdec <= selection.pmdec[1])
        keep &= ~np.isfinite(pmra) | ~np.isfinite(pmdec) | inside
    return keep


# ----------------------------------------------------------------------------- injection


def inject_stream(catalog: Table, spec: InjectionSpec, config: Config, seed: int = 0) -> Table:
    """The real ``catalog`` with the stream ``spec`` describes drawn into it.

    Arguments:
        catalog: The real stars (columns as ``config.data.columns`` maps them).
        spec: The synthetic stream.
        config: The stream description: its column map, field, frame and
            (unless the spec has its own) isochrone and bands.
        seed: Seed of the numpy Generator (same seed, same injection).

    Returns:
        A new table: the catalog's rows with ``injected`` False, then
        ``spec.n_stars`` injected rows (see the module docstring).

    Raises:
        InputError: A column is missing, the spec's bands are not in the
            isochrone or the catalog, or too few drawn stars pass the selection.

    Example:
        >>> from astropy.table import Table
        >>> from streammix.config import Config
        >>> catalog = Table({"phi1": [-50.0], "phi2": [0.0], "g": [19.0]})
        >>> config = Config.from_dict({"field": {"phi1": [-60, -20], "phi2": [-4, 4]}})
        >>> spec = InjectionSpec(phi1_range=(-55, -25), phi2=2.0, pm_phi1_cosphi2=-4.0,
        ...                      pm_phi2=1.0, distmod=14.5, n_stars=10)
        >>> inject_stream(catalog, spec, config)
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: injection spec: no magnitude band to match donors in (set the spec's bands or data.columns.bands)
    """
    if not isinstance(catalog, Table):
        raise InputError(f"inject_stream 'catalog': expected an astropy Table, got {type(catalog).__name__}")
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"inject_stream 'seed': {seed!r} is not an integer") from None
    rng = np.random.default_rng(seed)
    cmap = config.data.column_map()
    sentinels = list(cmap.sentinels)

    bands = dict(spec.bands if spec.bands is not None else cmap.bands)
    if not bands:
        raise InputError("injection spec: no magnitude band to match donors in (set the spec's bands or data.columns.bands)")
    donor_band = spec.donor_band or next(iter(bands))
    if donor_band not in bands:
        raise InputError(f"injection spec: donor_band '{donor_band}' is not among the bands {sorted(bands)}")
    for band, column in bands.items():
        if column not in catalog.colnames:
            raise InputError(f"catalog: column '{column}' (band {band}) not found")
    iso_config = spec.isochrone if spec.isochrone is not None else config.model.isochrone
    iso, mass_function = _isochrone_mags(iso_config, list(bands))

    # the catalog's columns
    col = {
        key: _column_of(catalog, getattr(cmap, key), key, key=f"data.columns.{key}",
                        required=key in ("phi1", "phi2") or (key in cmap.model_fields_set and getattr(cmap, key) is not None))
        for key in ("phi1", "phi2", "phi2_err", "parallax", "parallax_err", "pm_phi1_cosphi2",
                    "pm_phi1_cosphi2_err", "pm_phi2", "pm_phi2_err", "pm_corr")
    }  # fmt: skip
    # a key set explicitly to None is not read (as in streammix.data)
    for key in col:
        if key in cmap.model_fields_set and getattr(cmap, key) is None:
            col[key] = None
    band_err_col = {b: cmap.band_errors.get(b, f"{b}_err") for b in bands}
    band_err_col = {b: c for b, c in band_err_col.items() if c in catalog.colnames}
    real = {key: _floats(catalog, name, sentinels) for key, name in col.items() if name is not None}
    real_mags = {b: _floats(catalog, c, sentinels) for b, c in bands.items()}
    real_band_err = {b: _floats(catalog, c, sentinels) for b, c in band_err_col.items()}
    if not np.isfinite(real_mags[donor_band]).any():
        raise InputError(f"catalog: column '{bands[donor_band]}' (band {donor_band}) has no finite magnitude")

    # donors: real stars ordered by (proxy) magnitude
    plx_err_real = real.get("parallax_err", np.full(len(catalog), np.nan))
    proxy = _magnitude_proxy(real_mags[donor_band], plx_err_real)
    donors = np.flatnonzero(np.isfinite(proxy))
    donors = donors[np.argsort(proxy[donors], kind="stable")]
    donor_mag = proxy[donors]

    # the catalog's selection
    observed_mag = real_mags[donor_band][np.isfinite(real_mags[donor_band])]
    mag_hi = float(np.percentile(observed_mag, 99.0)) if spec.magnitude_limit is None else spec.magnitude_limit
    mag_lo = float(observed_mag.min())
    phi1_lo = max(config.field.phi1[0], float(np.nanmin(real["phi1"])))
    phi1_hi = min(config.field.phi1[1], float(np.nanmax(real["phi1"])))
    phi2_lo = max(config.field.phi2[0], float(np.nanmin(real["phi2"])))
    phi2_hi = min(config.field.phi2[1], float(np.nanmax(real["phi2"])))
    pm_edges = np.linspace(phi1_lo, phi1_hi, _PM_BINS + 1)
    ranges: dict[str, np.ndarray] = {}
    for key in ("pm_phi1_cosphi2", "pm_phi2", "parallax"):
        if key not in real:
            continue
        values = real[key]
        slices = 1 if key == "parallax" else _PM_BINS
        which = np.clip(np.searchsorted(pm_edges, real["phi1"], side="right") - 1, 0, _PM_BINS - 1) * slices // _PM_BINS
        out = np.full((slices, 2), [-np.inf, np.inf])
        for k in range(slices):
            v = values[(which == k) & np.isfinite(values)]
            if v.size:
                out[k] = v.min(), v.max()
        ranges[key] = out

    if spec.photometric_error is not None:
        default_mag_err = spec.photometric_error
    else:
        default_mag_err = iso_config.colour_spread / math.sqrt(2.0)
    pm_factor = cmap.pm_err_per_parallax_err or 0.0
    selection = getattr(config.data, "selection", None)

    # masses that can be seen at all
    lo1, hi1 = spec.phi1_range
    grid = np.linspace(lo1, hi1, 401)
    dm_min = float(np.min(track_values(spec.distmod, grid) - 5.0 * track_values(spec.distmod_width, grid)))
    # a soft limit keeps a few stars beyond it; the colour spread scatters some fainter masses brighter
    faintest = mag_hi + 0.5 + 5.0 * spec.magnitude_limit_width + 5.0 * spec.colour_spread / math.sqrt(2.0)
    m_lo = visible_mass_min(iso, faintest - dm_min, band=donor_band)
    if not np.isfinite(m_lo):
        raise InputError(f"injection spec: no star of the isochrone is brighter than {mag_hi:.2f} in {donor_band} at distmod {dm_min:.2f}")
    m_lo = max(m_lo, iso.mass_min)

    profile = PROFILES[spec.profile]()
    shape = shape_values(spec.profile, spec.profile_parameters)

    def propose(n: int) -> dict[str, np.ndarray]:
        phi1 = rng.uniform(lo1, hi1, n)
        # the stream-like component's own draw (streammix.components.draw_stream)
        tracks = {
            name: track_values(getattr(spec, name), phi1)
            for name in ("phi2", "phi2_width", "pm_phi1_cosphi2", "pm_phi1_cosphi2_width", "pm_phi2",
                         "pm_phi2_width", "distmod", "distmod_width")
        }  # fmt: skip
        true = draw_stream(profile, {**tracks, **shape}, rng)
        true_phi2, pm1, pm2, distmod = (true[k] for k in ("phi2", "pm_phi1_cosphi2", "pm_phi2", "distmod"))
        mass = _draw_masses(rng, mass_function, m_lo, iso.mass_max, n)
        mags = iso.absolute_mags(mass, list(bands)) + distmod[:, None]
        if spec.colour_spread > 0:  # off the isochrone by the stream's intrinsic spread (none drawn at 0)
            mags = mags + rng.normal(0.0, spec.colour_spread / math.sqrt(2.0), mags.shape)
        # donors among the nearest in magnitude
        at = np.searchsorted(donor_mag, mags[:, list(bands).index(donor_band)])
        start = np.clip(at - _DONOR_NEIGHBOURS // 2, 0, max(donors.size - _DONOR_NEIGHBOURS, 0))
        pick = np.minimum(start + rng.integers(0, min(_DONOR_NEIGHBOURS, donors.size), n), donors.size - 1)
        donor = donors[pick]
        out: dict[str, np.ndarray] = {
            "phi1": phi1, "true_phi2": true_phi2, "true_pm_phi1_cosphi2": pm1, "true_pm_phi2": pm2,
            "true_distmod": distmod, "true_mass": mass, "donor": donor,
        }  # fmt: skip
        phi2_err = real["phi2_err"][donor] if "phi2_err" in real else np.zeros(n)
        out["phi2"] = true_phi2 + np.nan_to_num(phi2_err) * rng.standard_normal(n)
        if "phi2_err" in real:
            out["phi2_err"] = phi2_err
        plx_err = plx_err_real[donor]  # the catalogue's (formal) error, written as it is
        # the noise has the external error where the config gives one (data.columns.parallax_err_external)
        noise_err = plx_err if cmap.parallax_err_external is None else cmap.parallax_err_external.error(plx_err)
        # the observed parallax is centred on the true one plus the catalogue's zero-point
        mean_plx = 10.0 ** ((10.0 - distmod) / 5.0) + config.data.parallax_zero_point
        # the donor's error passed the catalog's cuts already: errors are drawn conditioned on them
        # (spec.error_draw "conditioned"), or freely and the selection below decides ("rejected")
        which = np.clip(np.searchsorted(pm_edges, phi1, side="right") - 1, 0, _PM_BINS - 1)
        limits = {key: value[which * value.shape[0] // _PM_BINS] for key, value in ranges.items()}
        conditioned = limits if spec.error_draw == "conditioned" else {}
        if "parallax" in real:
            has_plx = np.isfinite(real["parallax"][donor])
            scale = np.nan_to_num(noise_err)
            u = _conditioned_normal(rng, mean_plx, scale, conditioned.get("parallax"))
            out["parallax"] = np.where(has_plx, mean_plx + scale * u, np.nan)
        if "parallax_err" in real:
            out["parallax_err"] = plx_err
        err1 = real["pm_phi1_cosphi2_err"][donor] if "pm_phi1_cosphi2_err" in real else pm_factor * noise_err
        err2 = real["pm_phi2_err"][donor] if "pm_phi2_err" in real else pm_factor * noise_err
        corr = np.clip(np.nan_to_num(real["pm_corr"][donor]), -0.999, 0.999) if "pm_corr" in real else np.zeros(n)
        scale1, scale2 = np.nan_to_num(err1), np.nan_to_num(err2) * np.sqrt(1.0 - corr**2)
        u1 = _conditioned_normal(rng, pm1, scale1, conditioned.get("pm_phi1_cosphi2"))
        shift2 = np.nan_to_num(err2) * corr * u1
        u2 = _conditioned_normal(rng, pm2 + shift2, scale2, conditioned.get("pm_phi2"), inside_of=pm2)
        noise1, noise2 = scale1 * u1, shift2 + scale2 * u2
        for key, true, noise, err in (("pm_phi1_cosphi2", pm1, noise1, err1), ("pm_phi2", pm2, noise2, err2)):
            if key in real:
                out[key] = np.where(np.isfinite(real[key][donor]), true + noise, np.nan)
                if f"{key}_err" in real:
                    out[f"{key}_err"] = err
        if "pm_corr" in real:
            out["pm_corr"] = real["pm_corr"][donor]
        for j, band in enumerate(bands):
            if band in real_band_err:
                err = real_band_err[band][donor]
            elif band in cmap.band_error_model:  # the survey's error at the injected star's magnitude
                err = cmap.band_error_model[band].error(mags[:, j])
            else:
                err = np.full(n, default_mag_err)
            observed = mags[:, j] + np.nan_to_num(err) * rng.standard_normal(n)
            out[f"observed_{band}"] = observed
            out[band] = np.where(np.isfinite(real_mags[band][donor]), observed, np.nan)
            if band in real_band_err:
                out[f"{band}_err"] = np.where(np.isfinite(real_mags[band][donor]), err, np.nan)
        # the catalog's selection
        keep = (phi1 >= phi1_lo) & (phi1 <= phi1_hi) & (out["phi2"] >= phi2_lo) & (out["phi2"] <= phi2_hi)
        observed_limit_mag = out[f"observed_{donor_band}"]
        keep &= observed_limit_mag >= mag_lo
        if spec.magnitude_limit_width > 0:
            keep &= rng.uniform(size=n) < ndtr((mag_hi - observed_limit_mag) / spec.magnitude_limit_width)
        else:
            keep &= observed_limit_mag <= mag_hi
        for key, (low, high) in ((k, v.T) for k, v in limits.items()):
            v = out[key]
            keep &= ~np.isfinite(v) | ((v >= low) & (v <= high))
        if selection is not None:
            keep &= passes_declared_cuts(out, selection, config.frame)
        return {key: value[keep] for key, value in out.items()}

    # draw until n_stars pass; give up once 5 x 10^4 draws keep none or the acceptance seen so
    # far would need more than 2 x 10^7 draws
    chunks, kept, total, batch = [], 0, 0, max(256, 2 * spec.n_stars)
    while kept < spec.n_stars:
        drawn = propose(batch)
        chunks.append(drawn)
        kept, total = kept + drawn["phi1"].size, total + batch
        rate = kept / total
        if (kept == 0 and total >= 50_000) or (rate > 0 and spec.n_stars / rate > 20_000_000):
            break
        grown = 1.3 * (spec.n_stars - kept) / rate + 256 if rate > 0 else 4 * batch
        batch = int(min(max(grown, 256), 2_000_000))
    if kept < spec.n_stars:
        raise InputError(
            f"injection spec: only {kept} of {spec.n_stars} injected stars pass the catalog's selection "
            f"(field, {donor_band} <= {mag_hi:.2f}, proper-motion and parallax ranges)"
        )
    stars = {key: np.concatenate([c[key] for c in chunks])[: spec.n_stars] for key in chunks[0]}
    return _append(catalog, stars, col, bands, band_err_col, config)


def _append(
    catalog: Table,
    stars: dict[str, np.ndarray],
    col: dict[str, str | None],
    bands: dict[str, str],
    band_err_col: dict[str, str],
    config: Config,
) -> Table:
    """The catalog with the injected ``stars`` appended (columns in the catalog's units)."""
    n = stars["phi1"].size
    injected = Table()
    written = {name: key for key, name in col.items() if name is not None and key in stars}
    written |= {column: band for band, column in bands.items()}
    written |= {column: f"{band}_err" for band, column in band_err_col.items()}
    for name, key in written.items():
        values = stars[key]
        unit = getattr(catalog[name], "unit", None)
        canonical = canonical_unit(key, bands) if key not in bands else u.mag
        if unit is not None and canonical is not None and key != "pm_corr":
            values = (values * canonical).to_value(unit)
        injected[name] = MaskedColumn(values.astype(catalog[name].dtype if catalog[name].dtype.kind == "f" else float),
                                      mask=np.zeros(n, bool), unit=unit)
    id_col = _column_of(catalog, config.data.column_map().source_id, "source_id", required=False, key="source_id")
    if id_col is not None:
        ids = np.asarray(catalog[id_col])
        top = min(0, int(ids.min())) if ids.size and ids.dtype.kind in "iu" else 0
        injected[id_col] = (top - 1 - np.arange(n)).astype(np.int64)
    if config.frame is not None and "ra" in catalog.colnames and "dec" in catalog.colnames:
        ra, dec = get_frame(config.frame).to_icrs(stars["phi1"], stars["phi2"])
        for name, values in (("ra", ra), ("dec", dec)):
            unit = getattr(catalog[name], "unit", None)
            injected[name] = values if unit is None else (values * u.deg).to_value(unit)
    out = Table(catalog, masked=True, copy=True)
    truth = ("true_phi2", "true_pm_phi1_cosphi2", "true_pm_phi2", "true_distmod", "true_mass")
    for key in truth:
        injected[key] = stars[key]
        out[key] = MaskedColumn(np.full(len(out), np.nan), mask=np.ones(len(out), bool))
    injected["injected"] = np.ones(n, bool)
    out["injected"] = np.zeros(len(out), bool)
    units = {"true_phi2": u.deg, "true_pm_phi1_cosphi2": u.mas / u.yr, "true_pm_phi2": u.mas / u.yr,
             "true_distmod": u.mag, "true_mass": u.M_sun}  # fmt: skip
    for key, unit in units.items():
        out[key].unit = unit
        injected[key].unit = unit
    for name in out.colnames:  # columns not written stay masked (the join would otherwise fill them)
        if name not in injected.colnames:
            injected[name] = MaskedColumn(np.zeros(n, dtype=out[name].dtype), mask=np.ones(n, bool), unit=out[name].unit)
    result = vstack([out, injected[out.colnames]], join_type="exact", metadata_conflicts="silent")
    result.meta = dict(catalog.meta)
    return result
