"""Mocks anywhere on the sky: a galstreams stream on its track, in a Galaxy-model background.

:func:`mock_for_stream` (``streammix mock --stream NAME``) writes nothing: it
builds the config :func:`streammix.new_stream.new_config` writes for the stream
and draws, with :func:`sky_mock`, a catalog that ``streammix fit`` on that config
reads (the columns and units of :func:`streammix.mock.generate_mock`, in the
config's stream frame), with the truth in ``true_*`` columns.

The stream (its galstreams track read in the config's frame):

- **Extent and density**: uniform in phi1 over the track's phi1 span (inside the
  field); ``n_stream`` stars after the cuts (default: 10 per degree of track,
  at least 100 and at most 3000; GD-1 has ~1500 Gaia members over ~100 deg,
  fainter streams a few hundred).
- **Track**: phi2, proper motions and distance linearly interpolated from the
  track's finite points (held at the end values beyond them). Cross-track
  width: a Gaussian sigma of half galstreams' ``width_phi2`` (floored at
  0.1 deg; 0.2 deg when galstreams gives none). Distance spread 0.05 mag in
  distance modulus; proper-motion dispersion 5 km/s at the star's distance.
  Without a distance in the track (or galstreams' 1 kpc placeholder) the stream
  is at 15 kpc; without proper motions it moves at 150 km/s (Galactocentric)
  along increasing phi1 and the observed proper motions follow from the Sun's
  motion (:func:`streammix.galaxy.proper_motions`).
- **Stars**: Kroupa (2001) IMF on the config's isochrone (the embedded PARSEC
  grid at its age and [Fe/H]), with the phases of :mod:`streammix.mock`.

The background is :func:`streammix.galaxy.draw_field_stars` over the config's
field: a Poisson number with the Galaxy model's expectation times
``background_scale`` (default), or exactly ``n_background`` stars drawn from the
same distribution.

Errors and selection: the Gaia DR3-like errors of :mod:`streammix.mock` (its
``observe``: the median errors of Gaia Collaboration, Vallenari et al. 2023,
against G), every observed parallax offset by the config's ``data.parallax_zero_point``
as a real catalogue's is; observed G below the config's query ``g_max``, phi2 inside the
field, and the query's cuts: ``parallax - 3 parallax_err < parallax_max`` and,
with ``pm_margin``, both proper motions within ``pm_margin`` of the track's at
the star's phi1 (a box in the stream frame, where the query's is in pmra/pmdec
at each chunk's middle). Stars without astrometry can not pass those cuts, so
the catalog has none when the query cuts on parallax or proper motion; 2% (the
faintest, mostly) lose BP/RP.

Example:
    >>> stars, tracks, text = mock_for_stream("Pal5", n_stream=50, n_background=200, seed=1)
    >>> len(stars), int((stars["true_component"] == "stream").sum())
    (250, 50)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import astropy.units as u
import numpy as np
import yaml
from astropy.table import QTable

from .config import Config
from .errors import InputError
from .frames import get_frame
from .galaxy import GalaxyModel, along_track_velocity, draw_field_stars, proper_motions
from .isochrone import default_isochrone
from .mock import BANDS, K_KMS, MockConfig, apply_missing, draw_until, kroupa_inverse_cdf, observe
from .mock import visible_fraction, visible_mass_min
from .new_stream import NewStreamOptions, new_config
from .tracks import StreamTrack, galstreams_track, galstreams_widths

__all__ = ["StreamModel", "mock_for_stream", "sky_mock", "stream_model"]

STREAM_PHASES = MockConfig().phases
DEFAULT_DISTANCE = 15.0  # kpc, a stream whose track has no distance
DEFAULT_SPEED = 150.0  # km/s along the track, a stream whose track has no proper motions
VELOCITY_DISPERSION = 5.0  # km/s
DISTMOD_WIDTH = 0.05  # mag
_BATCH = 400_000
_POPULATIONS = ("thin", "thick", "halo")


@dataclass(frozen=True, eq=False)
class StreamModel:
    """A mock stream read off a galstreams track, in a config's frame (module docstring).

    Arguments:
        track: The galstreams track in the frame.
        phi1_range: The stream's extent (deg).
        phi2_width: Gaussian sigma across the track (deg).
        has_distance, has_pm: Whether the track gives them (else the defaults).

    Example:
        >>> model = stream_model(Config.from_dict(yaml.safe_load(new_config("Pal5"))))
        >>> model.has_distance, model.has_pm
        (True, True)
    """

    track: StreamTrack
    phi1_range: tuple[float, float]
    phi2_width: float
    has_distance: bool
    has_pm: bool

    def at(self, phi1: np.ndarray) -> dict[str, np.ndarray]:
        """phi2 (deg), distance (kpc), distmod, pm1, pm2 (mas/yr) of the track at ``phi1``.

        Example:
            >>> model = stream_model(Config.from_dict(yaml.safe_load(new_config("Pal5"))))
            >>> bool(abs(model.at(np.array([0.0]))["distance"][0] - 21) < 3)
            True
        """
        phi1 = np.asarray(phi1, float)
        t = self.track
        out = {"phi2": _interp(phi1, t.phi1, t.phi2, 0.0)}
        out["distance"] = _interp(phi1, t.phi1, t.distance, DEFAULT_DISTANCE) if self.has_distance else np.full(
            phi1.shape, DEFAULT_DISTANCE
        )
        out["distmod"] = 5.0 * np.log10(out["distance"] * 100.0)
        if self.has_pm:
            out["pm1"] = _interp(phi1, t.phi1, t.pm_phi1_cosphi2, 0.0)
            out["pm2"] = _interp(phi1, t.phi1, t.pm_phi2, 0.0)
        else:
            v = along_track_velocity(t.frame, phi1.ravel(), out["phi2"].ravel(), DEFAULT_SPEED)
            pm1, pm2 = proper_motions(t.frame, phi1.ravel(), out["phi2"].ravel(), out["distance"].ravel(), v)
            out["pm1"], out["pm2"] = pm1.reshape(phi1.shape), pm2.reshape(phi1.shape)
        return out


def _interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray, default: float) -> np.ndarray:
    ok = np.isfinite(fp)
    if not ok.any():
        return np.full(np.shape(x), default)
    return np.interp(x, xp[ok], fp[ok])


def stream_model(config: Config) -> StreamModel:
    """The mock stream of a config whose first component has a ``galstreams`` prior (as ``new`` writes).

    Arguments:
        config: A config from :func:`streammix.new_stream.new_config`.

    Example:
        >>> model = stream_model(Config.from_dict(yaml.safe_load(new_config("Jhelum"))))
        >>> model.has_pm, round(model.phi2_width, 2)
        (True, 0.55)
    """
    prior = config.model.components[0].galstreams if config.model.components else None
    if prior is None or config.frame is None:
        raise InputError(f"{config.source or 'config'}: the mock needs a frame and a stream with a galstreams prior")
    track = galstreams_track(prior.name, prior.reference, get_frame(config.frame))
    lo, hi = (float(v) for v in config.field.phi1)
    lo1, hi1 = max(float(track.phi1.min()), lo), min(float(track.phi1.max()), hi)
    if not lo1 < hi1:
        raise InputError(f"stream '{prior.name}': its track is outside the field's phi1 {config.field.phi1}")
    finite = track.distance[np.isfinite(track.distance)]
    has_distance = bool(finite.size and finite.min() > 0 and not np.allclose(finite, 1.0, atol=1e-6))
    has_pm = bool(np.isfinite(track.pm_phi1_cosphi2).any() and np.isfinite(track.pm_phi2).any())
    stated = galstreams_widths(track.name, track.reference).get("phi2")
    width = max(0.5 * stated, 0.1) if stated else 0.2
    return StreamModel(track, (lo1, hi1), width, has_distance, has_pm)


def _observer(config: Config) -> tuple[MockConfig, float | None]:
    """The error model's settings for a config's selection, and the query's pm margin."""
    query = config.data.query
    g_limit = float(query.g_max) if query is not None else 20.5
    parallax_max = query.parallax_max if query is not None else None
    pm_margin = query.pm_margin if query is not None else None
    cut = parallax_max is not None or pm_margin is not None
    iso = config.model.isochrone
    settings = MockConfig(
        n_stream=0, n_background=0, phi1_range=tuple(config.field.phi1), phi2_range=tuple(config.field.phi2),
        g_limit=min(max(g_limit, 10.0), 22.0), age=float(iso.age), feh=float(iso.feh), gaps=(),
        parallax_max=parallax_max, parallax_nsigma=3.0, missing_astrometry_fraction=0.0 if cut else 0.03,
        parallax_zero_point=config.data.parallax_zero_point,
    )  # fmt: skip
    return settings, pm_margin


def _pm_cut(stars: dict, model: StreamModel, margin: float | None) -> dict:
    if margin is None or not model.has_pm or not stars["phi1"].size:
        return stars
    t = model.track
    x = np.clip(stars["phi1"], t.phi1.min(), t.phi1.max())
    at = model.at(x)
    keep = (np.abs(stars["pm_phi1_cosphi2"] - at["pm1"]) < margin) & (np.abs(stars["pm_phi2"] - at["pm2"]) < margin)
    return {k: v[keep] for k, v in stars.items()}


def _stream_stars(rng: np.random.Generator, model: StreamModel, settings: MockConfig, margin: float | None, n: int) -> dict:
    iso = default_isochrone(age=settings.age, feh=settings.feh).select(STREAM_PHASES)
    grid = np.linspace(*model.phi1_range, 2001)
    m_lo = visible_mass_min(iso, settings.g_limit + 0.1 - (model.at(grid)["distmod"].min() - 5 * DISTMOD_WIDTH))
    if not np.isfinite(m_lo):
        raise InputError(f"g_max {settings.g_limit}: no star of the stream is visible")

    def propose(size: int) -> dict:
        phi1 = rng.uniform(*model.phi1_range, size)
        t = model.at(phi1)
        distmod = t["distmod"] + DISTMOD_WIDTH * rng.standard_normal(size)
        sigma_pm = VELOCITY_DISPERSION / (K_KMS * t["distance"])
        mass = kroupa_inverse_cdf(rng.uniform(size=size), m_lo, iso.mass_max)
        mags = iso.absolute_mags(mass, BANDS)
        stars = {
            "phi1": phi1, "phi2": t["phi2"] + model.phi2_width * rng.standard_normal(size),
            "pm1": t["pm1"] + sigma_pm * rng.standard_normal(size),
            "pm2": t["pm2"] + sigma_pm * rng.standard_normal(size),
            "distmod": distmod, "mass": mass, "abs_g": mags[:, 0], "abs_bp": mags[:, 1], "abs_rp": mags[:, 2],
        }  # fmt: skip
        return _pm_cut(observe(rng, stars, settings), model, margin)

    return draw_until(n, propose, "stream")


def _background_stars(
    rng: np.random.Generator, config: Config, model: StreamModel, settings: MockConfig, margin: float | None,
    n: int | None, scale: float, galaxy: GalaxyModel,
) -> tuple[dict, float]:  # fmt: skip
    frame = get_frame(config.frame)
    field = (tuple(config.field.phi1), tuple(config.field.phi2))

    def draw(size: int | None, thin: float = 1.0) -> tuple[dict, float]:
        raw = draw_field_stars(frame, *field, settings.g_limit + 0.1, rng, n=size, model=galaxy, scale=thin)
        expected = float(raw.pop("expected"))
        population = raw.pop("population")
        parts = []
        for code, name in enumerate(_POPULATIONS):
            sel = population == name
            part = _pm_cut(observe(rng, {k: v[sel] for k, v in raw.items()}, settings), model, margin)
            parts.append(part | {"code": np.full(part["phi1"].size, float(code))})
        kept = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return kept, expected

    chunks: list[dict] = []
    _, expected = draw(0)
    if n is None:
        total = int(rng.poisson(expected * scale))
        for start in range(0, total, _BATCH):
            chunks.append(draw(min(_BATCH, total - start))[0])
    else:
        kept, batch = 0, max(256, 2 * n)
        for _ in range(60):
            if kept >= n:
                break
            out = draw(batch)[0]
            chunks.append(out)
            got = out["phi1"].size
            kept += got
            batch = int(min(max(1.3 * (n - kept) / max(got / batch, 1e-4) + 256, 256), _BATCH))
        if kept < n:
            raise InputError("too few background stars pass the cuts (g_max, parallax_max, pm_margin)")
    if not chunks:
        return {}, expected
    stars = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    if n is not None:
        stars = {k: v[:n] for k, v in stars.items()}
    return stars, expected


def sky_mock(
    config: Config,
    *,
    n_stream: int | None = None,
    n_background: int | None = None,
    background_scale: float = 1.0,
    seed: int = 0,
    galaxy: GalaxyModel = GalaxyModel(),
) -> tuple[QTable, QTable]:
    """Draw a config's stream on its galstreams track in the Galaxy model's background.

    Arguments:
        config: A config from ``streammix new`` (frame, field, a galstreams stream prior, query cuts).
        n_stream: Stream stars in the catalog (None: 10 per deg of track, 100-3000).
        n_background: Background stars (None: Poisson with the Galaxy model's
            expectation in the field times ``background_scale``).
        background_scale: See ``n_background`` (0 < scale <= 1 thins the model's stars).
        seed: Seed of the numpy Generator (same seed, same tables).
        galaxy: The Galaxy model.

    Returns:
        ``(stars, tracks)`` like :func:`streammix.mock.generate_mock`'s;
        ``true_population`` is stream, thin, thick or halo, and the background's
        expected number before the cuts is ``stars.meta["expected_background"]``.

    Example:
        >>> cfg = Config.from_dict(yaml.safe_load(new_config("Jhelum")))
        >>> stars, tracks = sky_mock(cfg, n_stream=30, n_background=60, seed=2)
        >>> sorted(set(stars["true_population"].tolist()))[-1], tracks["phi2"].unit
        ('thin', Unit("deg"))
    """
    if not 0.0 < background_scale <= 1.0:
        raise InputError(f"background_scale: {background_scale} is not in (0, 1]")
    model = stream_model(config)
    settings, margin = _observer(config)
    length = model.phi1_range[1] - model.phi1_range[0]
    if n_stream is None:
        n_stream = int(np.clip(round(10.0 * length), 100, 3000))
    for key, value in (("n_stream", n_stream), ("n_background", n_background)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
            raise InputError(f"{key}: {value!r} is not a non-negative integer")
    rng_stream, rng_background, rng_missing, rng_order = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    stream = _stream_stars(rng_stream, model, settings, margin, int(n_stream)) if n_stream else {}
    background, expected = _background_stars(
        rng_background, config, model, settings, margin, n_background, background_scale, galaxy
    )
    parts = [(stream, "stream")] if stream else []
    if background:
        codes = background.pop("code").astype(int)
        parts.append((background, np.array(_POPULATIONS)[codes]))
    keys = list(parts[0][0]) if parts else []
    columns = {k: np.concatenate([p[k] for p, _ in parts]) for k in keys}
    population = np.concatenate([np.broadcast_to(np.asarray(pop, "U6"), p["phi1"].shape) for p, pop in parts]) if parts else np.array([], "U6")
    if population.size:
        apply_missing(rng_missing, columns, settings)
        order = rng_order.permutation(population.size)
        columns = {k: v[order] for k, v in columns.items()}
        population = population[order]
    stars = _table(columns, population, seed)
    stars.meta.update(
        creator="streammix.sky_mock", stream=model.track.name, reference=model.track.reference,
        expected_background=round(expected, 1), background_scale=background_scale,
    )  # fmt: skip
    return stars, _tracks(config, model, settings, int(n_stream))


def _table(columns: dict, population: np.ndarray, seed: int) -> QTable:
    n = population.size
    deg, mas, masyr = u.deg, u.mas, u.mas / u.yr
    units = {"phi1": deg, "phi2": deg, "phi2_err": deg, "parallax": mas, "parallax_err": mas,
             "pm_phi1_cosphi2": masyr, "pm_phi1_cosphi2_err": masyr, "pm_phi2": masyr,
             "pm_phi2_err": masyr, "pm_corr": u.dimensionless_unscaled}  # fmt: skip
    stars = QTable(meta={"seed": seed})
    stars["source_id"] = np.int64(5_000_000_000_000_000_000) + np.arange(n, dtype=np.int64) * 7919
    for name, unit in units.items():
        stars[name] = np.asarray(columns.get(name, np.zeros(0)), float) * unit
    for band in BANDS:
        stars[band] = np.asarray(columns.get(band, np.zeros(0)), float) * u.mag
        stars[band + "_err"] = np.asarray(columns.get(band + "_err", np.zeros(0)), float) * u.mag
    stars["true_component"] = np.where(population == "stream", "stream", "background").astype("U10")
    stars["true_population"] = population.astype("U6")
    stars["true_distmod"] = np.asarray(columns.get("true_distmod", np.zeros(0)), float) * u.mag
    stars["true_mass"] = np.asarray(columns.get("true_mass", np.zeros(0)), float) * u.M_sun
    return stars


def _tracks(config: Config, model: StreamModel, settings: MockConfig, n_stream: int) -> QTable:
    lo, hi = (float(v) for v in config.field.phi1)
    grid = np.linspace(lo, hi, int(round((hi - lo) / 0.1)) + 1)
    t = model.at(grid)
    inside = (grid >= model.phi1_range[0]) & (grid <= model.phi1_range[1])
    width = np.full(grid.shape, DISTMOD_WIDTH)
    rate = inside * visible_fraction(settings, t["distmod"], width)
    norm = np.trapezoid(rate, grid)
    density = n_stream * rate / norm if norm > 0 else np.zeros_like(grid)
    sigma_pm = VELOCITY_DISPERSION / (K_KMS * t["distance"])
    deg, masyr = u.deg, u.mas / u.yr
    return QTable(
        {
            "phi1": grid * deg, "linear_density": density / deg, "phi2": t["phi2"] * deg,
            "phi2_width": np.full(grid.shape, model.phi2_width) * deg,
            "pm_phi1_cosphi2": t["pm1"] * masyr, "pm_phi2": t["pm2"] * masyr,
            "pm_phi1_cosphi2_width": sigma_pm * masyr, "pm_phi2_width": sigma_pm * masyr,
            "distmod": t["distmod"] * u.mag, "distmod_width": width * u.mag,
            "parallax": 10.0 ** ((10.0 - t["distmod"]) / 5.0) * u.mas,
        },  # fmt: skip
        meta={"creator": "streammix.sky_mock", "stream": model.track.name, "reference": model.track.reference,
              "phi1_range": list(model.phi1_range)},  # fmt: skip
    )


def mock_for_stream(
    name: str,
    *,
    reference: str | None = None,
    options: NewStreamOptions | None = None,
    n_stream: int | None = None,
    n_background: int | None = None,
    background_scale: float = 1.0,
    seed: int = 0,
    galaxy: GalaxyModel = GalaxyModel(),
) -> tuple[QTable, QTable, str]:
    """A mock of any galstreams stream, and the ``streammix new`` config that fits it.

    Arguments:
        name: The stream's galstreams name (an unknown one names the closest).
        reference: Its galstreams track (None: the one ``new`` picks).
        options: The rest of ``new``'s options (age, [Fe/H], margins, g_max, data path).
        n_stream, n_background, background_scale, seed, galaxy: As :func:`sky_mock`.

    Returns:
        ``(stars, tracks, config_text)``: the catalog, its true tracks and the
        config's YAML (its ``data.path`` as ``options`` says).

    Example:
        >>> stars, tracks, text = mock_for_stream("Jhelum", n_stream=20, n_background=40)
        >>> "galstreams:" in text, len(stars)
        (True, 60)
    """
    options = options or NewStreamOptions()
    if reference is not None:
        options = dataclasses.replace(options, reference=reference)
    text = new_config(name, options)
    config = Config.from_dict(yaml.safe_load(text), source=f"new config of '{name}'")
    stars, tracks = sky_mock(
        config, n_stream=n_stream, n_background=n_background, background_scale=background_scale, seed=seed,
        galaxy=galaxy,
    )  # fmt: skip
    return stars, tracks, text
