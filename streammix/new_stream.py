"""A complete, commented stream config for any galstreams stream (``streammix new``).

:func:`new_config` reads a galstreams track (:func:`streammix.tracks.galstreams_track`)
and writes the YAML a fit needs: the stream frame (a built-in one for GD-1 and
Pal 5, else the track's best-fit great circle as ``frame: {pole, origin}``),
the field along the track with a margin, a stream component whose prior track
is read off galstreams (phi2, proper motions and distance where the track has
them, with the widths galstreams gives the track), the embedded isochrone at
the age and [Fe/H] asked for, background blocks, fit settings, and a data
section whose file ``streammix query`` makes from the Gaia DR3 archive.

Every config it writes is validated (:meth:`streammix.config.Config.from_dict`)
before it is returned.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np
import yaml

from .config import Config, GaiaQueryConfig
from .dispersion import KMS_PER_MASYR_KPC
from .errors import InputError
from .frames import StreamFrame, get_frame
from .tracks import (
    distance_to_distmod,
    galstreams_default_tracks,
    galstreams_track,
    galstreams_widths,
    list_galstreams_tracks,
    stream_key,
)

__all__ = [
    "GC_AGE",
    "GC_FEH",
    "NewStreamOptions",
    "closest_streams",
    "galstreams_name",
    "list_streams",
    "new_config",
    "stream_slug",
]

#: Default isochrone of a stream from a globular cluster: old and metal-poor
#: (the median Milky Way halo globular cluster, Harris 1996, 2010 edition: [Fe/H] ~ -1.5,
#: ages 11-13 Gyr, VandenBerg et al. 2013).
GC_AGE = 12.0
GC_FEH = -1.5

#: The largest intrinsic velocity dispersion a stream of ``new`` may take (km/s): above those of
#: globular-cluster streams (1-5 km/s, e.g. GD-1 2.3, Gialluca et al. 2021) and of most
#: dwarf-galaxy streams (Orphan-Chenab ~5-10 km/s, Koposov et al. 2023), so a stream's
#: proper-motion spread cannot grow into the field's. Its proper-motion dispersions are bounded
#: by it at the track's nearest distance (at least 0.1 and at most PM_WIDTH_MAX mas/yr).
VELOCITY_DISPERSION_MAX = 20.0
PM_WIDTH_MAX = 2.0  # mas/yr, and the bound of a track without a distance

# floors of the control-point widths (a track's stated width can be tiny or absent)
_WIDTH_FLOOR = {"phi2": 0.2, "pm_phi1_cosphi2": 0.5, "pm_phi2": 0.5}
_WIDTH_DEFAULT = {"phi2": 0.5, "pm_phi1_cosphi2": 1.0, "pm_phi2": 1.0, "distmod": 0.3}


@dataclass(frozen=True)
class NewStreamOptions:
    """What :func:`new_config` may change from its defaults.

    Arguments:
        reference: The galstreams track (None: the one galstreams switches on, else the newest).
        age: Isochrone age, Gyr (default :data:`GC_AGE`).
        feh: Isochrone [Fe/H] (default :data:`GC_FEH`).
        phi1_margin: deg added to each end of the track's phi1 span.
        phi2_margin: deg added either side of the track's phi2 span (at least
            four of the track's stated phi2 widths).
        g_max: Faint limit of the query and of the isochrone likelihood (Gaia G, mag;
            default :class:`~streammix.config.GaiaQueryConfig`'s).
        data_path: The stars' file (None: ``<name>_gaia_dr3.fits`` beside the config).

    Example:
        >>> NewStreamOptions().age, NewStreamOptions().feh
        (12.0, -1.5)
    """

    reference: str | None = None
    age: float = GC_AGE
    feh: float = GC_FEH
    phi1_margin: float = 2.0
    phi2_margin: float = 3.0
    g_max: float = GaiaQueryConfig.model_fields["g_max"].default
    data_path: str | None = None


def list_streams() -> list[tuple[str, str, bool]]:
    """Every galstreams track: (stream name, reference, whether galstreams switches it on).

    Example:
        >>> ("GD-1", "pricewhelan2018", False) in list_streams()
        True
    """
    on = galstreams_default_tracks()
    return [(name, ref, (name, ref) in on) for name, ref in list_galstreams_tracks()]


def closest_streams(name: str, n: int = 5) -> list[str]:
    """The galstreams stream names closest to ``name`` (case and punctuation ignored).

    Arguments:
        name: A stream name that may be misspelled.
        n: At most this many.

    Example:
        >>> closest_streams("GD 2")[0]
        'GD-1'
    """
    names = sorted({stream for stream, _ in list_galstreams_tracks()}, key=str.lower)
    by_key = {}
    for stream in names:
        by_key.setdefault(stream_key(stream), stream)
    keys = difflib.get_close_matches(stream_key(name), list(by_key), n=n, cutoff=0.0)
    return [by_key[k] for k in keys]


def galstreams_name(name: str) -> str:
    """A stream's name as galstreams spells it (case and punctuation ignored).

    Arguments:
        name: A stream name; an unknown one raises :class:`~streammix.errors.InputError`
            naming the closest.

    Example:
        >>> galstreams_name("gd1"), galstreams_name("PAL 5")
        ('GD-1', 'Pal5')
        >>> galstreams_name("GD 2")
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: stream 'GD 2': not in galstreams; closest: GD-1, ...
    """
    by_key: dict[str, str] = {}
    for stream, _ in list_galstreams_tracks():
        by_key.setdefault(stream_key(stream), stream)
    found = by_key.get(stream_key(name))
    if found is None:
        raise InputError(f"stream '{name}': not in galstreams; closest: {', '.join(closest_streams(name))}")
    return found


def stream_slug(name: str) -> str:
    """A stream name as a file name and Snakemake wildcard: lower case, runs of other
    characters than letters and digits as one ``_`` (the ``name`` ``new`` writes).

    Arguments:
        name: Any stream name (galstreams names have ``-``, ``.``; others may have
            spaces or brackets).

    Example:
        >>> stream_slug("GD-1"), stream_slug("20.0-1"), stream_slug("M2 (Grillmair 2022)")
        ('gd_1', '20_0_1', 'm2_grillmair_2022')
    """
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "stream"


def _frame_spec(name: str, frame: StreamFrame) -> str | dict:
    """The config's ``frame``: a built-in name, else pole and origin rounded to 1e-7 deg."""
    try:
        built_in = get_frame(name)
    except InputError:
        built_in = None
    if built_in is not None and built_in == frame:
        return stream_slug(name).replace("_", "")
    ra, dec = [], []
    for row in (frame.matrix[2], frame.matrix[0]):
        ra.append(float(np.degrees(np.arctan2(row[1], row[0])) % 360.0))
        dec.append(float(np.degrees(np.arcsin(np.clip(row[2], -1.0, 1.0)))))
    return {
        "name": name,
        "pole": [round(ra[0], 7), round(dec[0], 7)],
        "origin": [round(ra[1], 7), round(dec[1], 7)],
    }


def _flow(value: object) -> str:
    """One YAML flow-style value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _round_out(lo: float, hi: float, step: float = 0.1) -> tuple[float, float]:
    return round(float(np.floor(lo / step) * step), 1), round(float(np.ceil(hi / step) * step), 1)


def new_config(name: str, options: NewStreamOptions = NewStreamOptions()) -> str:
    """The YAML text of a complete, validated, commented config for a galstreams stream.

    Arguments:
        name: The stream's galstreams name (case and punctuation ignored); an
            unknown one raises :class:`~streammix.errors.InputError` naming the
            closest.
        options: Reference, isochrone, margins, faint limit, data file.

    Returns:
        The config as YAML, with comments that say where each value comes from.

    Example:
        >>> text = new_config("Pal5")
        >>> cfg = Config.from_dict(yaml.safe_load(text))
        >>> cfg.frame, cfg.model.components[0].galstreams.name, cfg.data.query.g_max
        ('pal5', 'Pal5', 20.5)
    """
    galstreams_name(name)
    track = galstreams_track(name, options.reference)
    # the fit reads the track in the frame rebuilt from these rounded numbers: the same
    # frame to ~1e-7 deg, so the limits below hold
    frame_spec = _frame_spec(track.name, track.frame)
    phi1, phi2 = np.asarray(track.phi1), np.asarray(track.phi2)
    lo1, hi1 = _round_out(max(phi1.min() - options.phi1_margin, -180.0), min(phi1.max() + options.phi1_margin, 180.0))
    stated = galstreams_widths(track.name, track.reference)
    # either side of the track: the margin asked for, or four of the track's stated widths if wider
    margin2 = max(options.phi2_margin, 4.0 * stated.get("phi2", 0.0))
    lo2, hi2 = _round_out(max(np.nanmin(phi2) - margin2, -89.0), min(np.nanmax(phi2) + margin2, 89.0))
    span = phi1.max() - phi1.min()
    spacing = float(min(10.0, max(1.0, round(span / 10.0))))  # about ten points, at most 10 deg apart

    has = {
        "phi2": bool(np.isfinite(phi2).any()),
        "pm_phi1_cosphi2": bool(np.isfinite(track.pm_phi1_cosphi2).any()),
        "pm_phi2": bool(np.isfinite(track.pm_phi2).any()),
        "distmod": bool(np.isfinite(track.distance).any() and np.nanmin(track.distance) > 0),
    }
    # some galstreams tracks tabulate a placeholder 1 kpc everywhere for an unknown distance
    placeholder = has["distmod"] and bool(np.allclose(track.distance[np.isfinite(track.distance)], 1.0, atol=1e-6))
    if placeholder:
        has["distmod"] = False
    widths = {}
    for key, present in has.items():
        if not present:
            continue
        if key in stated:
            widths[key] = round(max(stated[key], _WIDTH_FLOOR[key]), 3)
        else:
            widths[key] = _WIDTH_DEFAULT[key]
    parameters = [k for k in has if has[k]]

    bounds: dict[str, list[float]] = {
        "phi2_width": [0.03, round(max(1.0, 2.0 * stated.get("phi2", 0.5)), 2)],
        "pm_phi1_cosphi2_width": [0.02, PM_WIDTH_MAX],
        "pm_phi2_width": [0.02, PM_WIDTH_MAX],
    }
    parallax_max = 1.0  # without a distance: most streams lie beyond 5 kpc
    pm_width_note = f"proper-motion dispersions up to {PM_WIDTH_MAX} mas/yr (the track has no distance)"
    if has["distmod"]:
        distmod = np.asarray(distance_to_distmod(track.distance))
        bounds["distmod"] = [round(float(np.nanmin(distmod)) - 1.0, 1), round(float(np.nanmax(distmod)) + 1.0, 1)]
        nearest = float(np.nanmin(track.distance))
        # the stream's parallax at its nearest point, doubled, and at least 1 mas
        parallax_max = round(max(1.0, 2.0 / nearest), 2)
        pm_width = round(min(max(VELOCITY_DISPERSION_MAX / (KMS_PER_MASYR_KPC * nearest), 0.1), PM_WIDTH_MAX), 2)
        bounds["pm_phi1_cosphi2_width"][1] = bounds["pm_phi2_width"][1] = pm_width
        pm_width_note = (
            f"proper-motion dispersions up to {VELOCITY_DISPERSION_MAX:g} km/s at the track's nearest "
            f"({nearest:.1f} kpc): {pm_width} mas/yr"
        )
    pm_margin = 5.0 if has["pm_phi1_cosphi2"] and has["pm_phi2"] else None
    slug = stream_slug(track.name)
    data_path = options.data_path or f"{slug}_gaia_dr3.fits"
    track_id = f"{track.name}/{track.reference}"
    g_max = options.g_max

    if isinstance(frame_spec, str):
        frame_text = f"frame: {frame_spec}\n"
        frame_note = f"# the built-in {track.frame.name} frame\n"
    else:
        frame_text = (
            "frame:\n"
            f"  name: {_flow(frame_spec['name'])}\n"
            f"  pole: {_flow(frame_spec['pole'])}\n"
            f"  origin: {_flow(frame_spec['origin'])}\n"
        )
        frame_note = (
            "# the great circle that best fits the galstreams track: its pole (phi2 = +90) and the\n"
            "# middle of the track's phi1 span (phi1 = 0), ICRS deg\n"
        )
    missing = [k for k in has if not has[k]]
    missing_note = (
        f"      # the track has no {', '.join(missing)}"
        + (" (its distance is galstreams' 1 kpc placeholder)" if placeholder else "")
        + ": the data alone set them\n"
        if missing
        else ""
    )
    width_note = (
        "widths: galstreams' stated track widths (floored at 0.2 deg, 0.5 mas/yr)"
        if stated
        else "widths: defaults (galstreams states none for this track)"
    ) + ("\n      # and 0.3 mag in distmod (galstreams states no distance width)" if has["distmod"] else "")
    pm_note = (
        f"    # the proper motions within +-{pm_margin} mas/yr of the track's at each chunk's middle\n"
        if pm_margin
        else "    # no proper-motion cut: the track has no proper motions\n"
    )

    text = f"""\
# {track.name}: written by `streammix new {track.name} --track {track.reference}` from the
# galstreams track {track_id}. Check every value before fitting: they are read off the
# track, with margins, not tuned.
name: {_flow(slug)}
data:
  # made by `streammix query CONFIG` (Gaia DR3; needs network): the stars in the field,
  # transformed into the stream frame, with G, BP, RP (not dereddened)
  path: {_flow(data_path)}
  # Gaia DR3's parallax zero-point from quasars (Lindegren et al. 2021; it varies with magnitude,
  # colour and position by a few hundredths of a mas)
  parallax_zero_point: -0.017
  columns:
    phi2_err: phi2_err
    parallax_err: parallax_err
    pm_phi1_cosphi2: pm_phi1_cosphi2
    pm_phi1_cosphi2_err: pm_phi1_cosphi2_err
    pm_phi2_err: pm_phi2_err
    pm_corr: pm_corr
    bands: [gaia_g, gaia_bp, gaia_rp]
  query:
    chunk: {5.0 if span < 120 else 10.0}
    g_max: {g_max}
    # the stream's parallax at its nearest, doubled, at least 1 mas (1 mas without a distance)
    parallax_max: {_flow(parallax_max)}
{pm_note}    pm_margin: {_flow(pm_margin)}
    galstreams: {_flow(track_id)}
{frame_note}{frame_text}field:
  # the track's span plus {options.phi1_margin} deg at each end, and {margin2:.3g} deg either side
  phi1: {_flow([lo1, hi1])}
  phi2: {_flow([lo2, hi2])}
model:
  coordinates: [phi2, parallax, pm_phi1_cosphi2, pm_phi2]
  bands: [gaia_g, gaia_bp, gaia_rp]
  isochrone:
    # the embedded PARSEC grid; {GC_AGE} Gyr and [Fe/H] {GC_FEH} are the defaults for a
    # globular-cluster stream (`streammix new --age --feh` to change them)
    age: {options.age}
    feh: {options.feh}
    magnitude_limits: {{gaia_g: [0.0, {g_max}]}}
  components:
    - name: stream
      # {pm_width_note}
      bounds:
{"".join(f"        {k}: {_flow(v)}{chr(10)}" for k, v in bounds.items())}\
      # control points every {spacing:g} deg read off the galstreams track in this frame;
      # {width_note}
{missing_note}      galstreams:
        name: {_flow(track.name)}
        reference: {_flow(track.reference)}
        parameters: {_flow(parameters)}
        spacing: {spacing:g}
        widths: {_flow(widths)}
  background:
    phi2: exponential
    # one flow over the astrometry and the magnitudes (a field star's distance sets both),
    # ending at the query's G limit, in colour-locus coordinates
    blocks: [[parallax, pm_phi1_cosphi2, pm_phi2, gaia_g, gaia_bp, gaia_rp]]
    limits: {{gaia_g: [null, {g_max}]}}
    locus: [gaia_g, gaia_bp, gaia_rp]
    error_context: false
    offstream_phi2: {round(max(1.0, 2.0 * stated.get("phi2", 0.5)), 2)}
fit:
  ensemble: 4
  seed: 0
"""
    Config.from_dict(yaml.safe_load(text), source=f"new config of '{track.name}'")
    return text
