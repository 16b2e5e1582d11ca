"""Published stream tracks (from galstreams) in a stream frame, and control points.

:func:`galstreams_track` reads the ECSV track files that the galstreams package
ships (``galstreams/tracks/track.<type>.<Name>.<reference>.ecsv``) directly
with astropy (``galstreams.MWStreams`` is not used: it fails with current
astropy/pandas) and transforms them with :mod:`streammix.frames`. A
:class:`StreamTrack` interpolates the track in phi1 and turns it into
:class:`ControlPoint` priors ("the track passes within ``width`` of ``value``
at ``phi1``").

Track proper motions are the observed (heliocentric, not reflex-corrected)
ones that galstreams tabulates.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import QTable, Table

from .errors import InputError
from .frames import StreamFrame, get_frame

__all__ = [
    "ControlPoint",
    "StreamTrack",
    "distance_to_distmod",
    "galstreams_default_tracks",
    "galstreams_track",
    "galstreams_widths",
    "list_galstreams_tracks",
    "stream_key",
]

CONTROL_PARAMETERS = ("phi2", "pm_phi1_cosphi2", "pm_phi2", "distmod")
_TRACK_COLUMNS = ("phi1", "phi2", "pm_phi1_cosphi2", "pm_phi2", "distance")


def distance_to_distmod(distance_kpc: Any) -> np.ndarray:
    """Distance modulus 5 log10(d / 10 pc) of distances in kpc (NaN where d <= 0).

    Example:
        >>> float(distance_to_distmod(10.0))
        15.0
    """
    distance = np.asarray(distance_kpc, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        distmod = np.where(distance > 0, 5.0 * np.log10(distance * 100.0), np.nan)
    return distmod[()] if distmod.ndim == 0 else distmod


@dataclass(frozen=True)
class ControlPoint:
    """A prior that a parameter's track passes within ``width`` of ``value`` at ``phi1``.

    Arguments:
        parameter: "phi2" [deg], "pm_phi1_cosphi2", "pm_phi2" [mas/yr] or
            "distmod" [mag].
        phi1: Where along the stream, deg.
        value: The track's value there, in the parameter's unit.
        width: Tolerance (a standard deviation), same unit; positive.

    Example:
        >>> ControlPoint("phi2", -40.0, 0.1, 0.5)
        ControlPoint(parameter='phi2', phi1=-40.0, value=0.1, width=0.5)
    """

    parameter: str
    phi1: float
    value: float
    width: float

    def __post_init__(self) -> None:
        if self.parameter not in CONTROL_PARAMETERS:
            raise InputError(
                f"control point parameter '{self.parameter}': unknown; "
                f"use one of {', '.join(CONTROL_PARAMETERS)}"
            )
        for field in ("phi1", "value", "width"):
            object.__setattr__(self, field, float(getattr(self, field)))
        if not (np.isfinite(self.phi1) and np.isfinite(self.value)):
            raise InputError(f"control point '{self.parameter}': phi1 and value must be finite")
        if not (np.isfinite(self.width) and self.width > 0):
            raise InputError(
                f"control point '{self.parameter}': width must be positive, got {self.width}"
            )


@dataclass(frozen=True, eq=False)
class StreamTrack:
    r"""A stream's track in a stream frame, sorted by phi1.

    Arguments:
        name: Stream name (e.g. "GD-1").
        reference: Where the track comes from (e.g. "pricewhelan2018").
        phi1: Longitude along the stream, deg.
        phi2: Track latitude, deg.
        pm_phi1_cosphi2: Proper motion along the stream, mas/yr (NaN if unknown).
        pm_phi2: Proper motion across the stream, mas/yr (NaN if unknown).
        distance: Heliocentric distance, kpc (NaN if unknown).
        frame: The stream frame of phi1 and phi2.

    Arrays are stored as read-only float copies, reordered by increasing phi1.

    Example:
        >>> from streammix.frames import GD1
        >>> track = StreamTrack("toy", "test", phi1=[-10.0, 10.0], phi2=[0.0, 2.0],
        ...                     pm_phi1_cosphi2=[5.0, 7.0], pm_phi2=[0.0, 0.0],
        ...                     distance=[10.0, 10.0], frame=GD1)
        >>> {k: float(v) for k, v in track.interpolate(0.0).items()}
        {'phi2': 1.0, 'pm_phi1_cosphi2': 6.0, 'pm_phi2': 0.0, 'distance': 10.0, 'distmod': 15.0}
    """

    name: str
    reference: str
    phi1: np.ndarray
    phi2: np.ndarray
    pm_phi1_cosphi2: np.ndarray
    pm_phi2: np.ndarray
    distance: np.ndarray
    frame: StreamFrame

    def __post_init__(self) -> None:
        arrays = {}
        for field in _TRACK_COLUMNS:
            value = getattr(self, field)
            unit = {"phi1": u.deg, "phi2": u.deg, "distance": u.kpc}.get(field, u.mas / u.yr)
            if isinstance(value, u.Quantity):
                value = value.to_value(unit)
            arrays[field] = np.array(value, dtype=float).ravel()
        n = len(arrays["phi1"])
        for field, values in arrays.items():
            if len(values) != n:
                raise InputError(
                    f"track '{self.name}': {field} has {len(values)} values, phi1 has {n}"
                )
        if n < 2 or not np.all(np.isfinite(arrays["phi1"])):
            raise InputError(f"track '{self.name}': needs at least two points with finite phi1")
        if not isinstance(self.frame, StreamFrame):
            raise InputError(f"track '{self.name}': frame must be a StreamFrame")
        order = np.argsort(arrays["phi1"], kind="stable")
        for field, values in arrays.items():
            values = values[order]
            values.setflags(write=False)
            object.__setattr__(self, field, values)

    def interpolate(self, phi1: Any) -> dict[str, np.ndarray]:
        """Linear interpolation of the track at ``phi1`` (deg); NaN outside its span.

        Arguments:
            phi1: Where to evaluate, deg (array_like or Quantity).

        Returns:
            Dict with "phi2" [deg], "pm_phi1_cosphi2", "pm_phi2" [mas/yr],
            "distance" [kpc] and "distmod" [mag], arrays shaped like ``phi1``.

        Example:
            >>> from streammix.frames import GD1
            >>> track = StreamTrack("toy", "test", [0.0, 1.0], [0.0, 1.0], [0.0, 0.0],
            ...                     [0.0, 0.0], [np.nan, np.nan], GD1)
            >>> track.interpolate([0.25, 2.0])["phi2"].tolist()
            [0.25, nan]
        """
        x = phi1.to_value(u.deg) if isinstance(phi1, u.Quantity) else phi1
        x = np.asarray(x, dtype=float)
        out = {}
        for field in _TRACK_COLUMNS[1:]:
            out[field] = np.interp(x, self.phi1, getattr(self, field), left=np.nan, right=np.nan)
        out["distmod"] = np.asarray(distance_to_distmod(out["distance"]))
        return {key: value[()] if value.ndim == 0 else value for key, value in out.items()}

    def to_table(self) -> QTable:
        """The track as a QTable with units (and ``distmod``); name, reference, frame in meta.

        Example:
            >>> from streammix.frames import GD1
            >>> track = StreamTrack("toy", "test", [0.0, 1.0], [0.0, 1.0], [0.0, 0.0],
            ...                     [0.0, 0.0], [5.0, 5.0], GD1)
            >>> t = track.to_table()
            >>> t.colnames
            ['phi1', 'phi2', 'pm_phi1_cosphi2', 'pm_phi2', 'distance', 'distmod']
            >>> str(t["pm_phi2"].unit), t.meta["frame"]
            ('mas / yr', 'GD-1')
        """
        table = QTable()
        table["phi1"] = self.phi1 * u.deg
        table["phi2"] = self.phi2 * u.deg
        table["pm_phi1_cosphi2"] = self.pm_phi1_cosphi2 * u.mas / u.yr
        table["pm_phi2"] = self.pm_phi2 * u.mas / u.yr
        table["distance"] = self.distance * u.kpc
        table["distmod"] = np.asarray(distance_to_distmod(self.distance)) * u.mag
        table.meta.update(
            name=self.name,
            reference=self.reference,
            frame=self.frame.name,
            frame_matrix=self.frame.matrix.tolist(),
        )
        return table

    def control_points(self, parameter: str, phi1: Any, width: float) -> list[ControlPoint]:
        """Control points for one parameter at the given phi1, from this track.

        Points where the track has no value (outside its phi1 span, or a
        quantity the source does not give) are left out.

        Arguments:
            parameter: "phi2", "pm_phi1_cosphi2", "pm_phi2" or "distmod".
            phi1: Where to place the points, deg.
            width: The tolerance of every point, in the parameter's unit.

        Example:
            >>> from streammix.frames import GD1
            >>> track = StreamTrack("toy", "test", [0.0, 10.0], [0.0, 1.0], [0.0, 0.0],
            ...                     [0.0, 0.0], [10.0, 10.0], GD1)
            >>> [(p.phi1, p.value) for p in track.control_points("distmod", [5.0, 20.0], 0.2)]
            [(5.0, 15.0)]
        """
        if parameter not in CONTROL_PARAMETERS:
            raise InputError(
                f"control point parameter '{parameter}': unknown; "
                f"use one of {', '.join(CONTROL_PARAMETERS)}"
            )
        x = phi1.to_value(u.deg) if isinstance(phi1, u.Quantity) else phi1
        x = np.atleast_1d(np.asarray(x, dtype=float))
        values = np.atleast_1d(self.interpolate(x)[parameter])
        return [
            ControlPoint(parameter, float(p), float(v), width)
            for p, v in zip(x, values, strict=True)
            if np.isfinite(p) and np.isfinite(v)
        ]


# ---------------------------------------------------------------------- galstreams
def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _galstreams_dir() -> Path:
    spec = importlib.util.find_spec("galstreams")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("galstreams is not installed (pip install galstreams)")
    return Path(list(spec.submodule_search_locations)[0])


def _track_files() -> dict[tuple[str, str], Path]:
    """(Name, reference) -> track file, from the file names."""
    files = {}
    for path in sorted((_galstreams_dir() / "tracks").glob("track.*.ecsv")):
        if path.name.endswith(".summary.ecsv"):
            continue
        stem = path.name[len("track.") : -len(".ecsv")]
        parts = stem.split(".", 1)
        if len(parts) != 2 or "." not in parts[1]:
            continue
        name, reference = parts[1].rsplit(".", 1)
        files[(name, reference)] = path
    return files


def _switched_on() -> set[tuple[str, str]]:
    """(Name, reference) pairs that galstreams' master log marks "On" (its defaults)."""
    path = _galstreams_dir() / "lib" / "master_log.txt"
    try:
        log = Table.read(path, format="ascii.commented_header")
        return {
            (str(row["Name"]), str(row["TrackRefs"])) for row in log if int(row["On"]) == 1
        }
    except Exception:  # noqa: BLE001 - the log only refines the default
        return set()


def stream_key(name: str) -> str:
    """How galstreams names are compared: lower case, letters and digits only.

    Example:
        >>> stream_key("GD-1") == stream_key("gd 1")
        True
    """
    return _key(name)


def galstreams_default_tracks() -> set[tuple[str, str]]:
    """The (stream name, reference) pairs galstreams' master log switches on (its defaults).

    Example:
        >>> ("GD-1", "ibata2021") in galstreams_default_tracks()
        True
    """
    return _switched_on()


def _year(reference: str) -> int:
    years = re.findall(r"(\d{4})", reference)
    return int(years[-1]) if years else 0


def list_galstreams_tracks() -> list[tuple[str, str]]:
    """All (stream name, reference) pairs with a track file in galstreams.

    Example:
        >>> ("GD-1", "pricewhelan2018") in list_galstreams_tracks()
        True
    """
    return sorted(_track_files())


def galstreams_track(
    name: str, reference: str | None = None, frame: StreamFrame | None = None
) -> StreamTrack:
    """A galstreams track, transformed into a stream frame.

    Arguments:
        name: Stream name; case and punctuation are ignored ("gd1" finds "GD-1").
        reference: Which track (e.g. "pricewhelan2018"). By default the one
            galstreams' master log switches "On" (e.g. GD-1: ibata2021,
            Pal5: pricewhelan2019), else the most recent.
        frame: Target frame. By default the built-in frame for GD-1 and Pal 5,
            and for other streams the best-fit great circle of the track
            (:meth:`StreamFrame.from_track`, phi1 increasing along the file's
            order).

    Returns:
        The track; distance and proper motions are NaN where the galstreams
        summary flags them as unavailable.

    Example:
        >>> track = galstreams_track("gd1", "pricewhelan2018")
        >>> track.frame.name, bool(np.nanmax(np.abs(track.phi2)) < 5)
        ('GD-1', True)
    """
    files = _track_files()
    by_key: dict[str, list[tuple[str, str]]] = {}
    for stream, ref in files:
        by_key.setdefault(_key(stream), []).append((stream, ref))
    choices = by_key.get(_key(name))
    if not choices:
        known = ", ".join(sorted({stream for stream, _ in files}, key=str.lower))
        raise InputError(f"stream '{name}': not in galstreams; known streams: {known}")
    if reference is None:
        on = _switched_on()
        preferred = [c for c in choices if c in on] or choices
        chosen = max(preferred, key=lambda c: (_year(c[1]), c[1]))
    else:
        matches = [c for c in choices if _key(c[1]) == _key(reference)]
        if not matches:
            refs = ", ".join(sorted(ref for _, ref in choices))
            raise InputError(
                f"reference '{reference}': no galstreams track of {choices[0][0]}; "
                f"available: {refs}"
            )
        chosen = matches[0]
    stream, ref = chosen
    path = files[chosen]
    data = Table.read(path, format="ascii.ecsv")
    flags = "1111"
    summary = path.with_name(path.name[: -len(".ecsv")] + ".summary.ecsv")
    if summary.exists():
        flags = str(Table.read(summary, format="ascii.ecsv")["InfoFlags"][0]).strip()

    def column(col: str, unit: u.UnitBase) -> np.ndarray:
        if col not in data.colnames:
            return np.full(len(data), np.nan)
        values = data[col]
        if getattr(values, "unit", None) is not None:
            return u.Quantity(np.asarray(values, dtype=float), values.unit).to_value(unit)
        return np.asarray(values, dtype=float)

    ra, dec = column("ra", u.deg), column("dec", u.deg)
    distance = column("distance", u.kpc)
    pmra = column("pm_ra_cosdec", u.mas / u.yr)
    pmdec = column("pm_dec", u.mas / u.yr)
    if len(flags) > 1 and flags[1] == "0":
        distance = np.full_like(distance, np.nan)
    if len(flags) > 2 and flags[2] == "0":
        pmra = np.full_like(pmra, np.nan)
        pmdec = np.full_like(pmdec, np.nan)

    if frame is None:
        try:
            frame = get_frame(stream)
        except InputError:
            frame = StreamFrame.from_track(ra, dec, name=stream)
    elif not isinstance(frame, StreamFrame):
        raise InputError(f"frame: expected a StreamFrame, got {type(frame).__name__}")
    phi1, phi2 = frame.to_stream(ra, dec)
    pm_phi1_cosphi2, pm_phi2, _ = frame.transform_pm(ra, dec, pmra, pmdec)
    return StreamTrack(
        name=stream,
        reference=ref,
        phi1=phi1,
        phi2=phi2,
        pm_phi1_cosphi2=pm_phi1_cosphi2,
        pm_phi2=pm_phi2,
        distance=distance,
        frame=frame,
    )


def galstreams_widths(name: str, reference: str) -> dict[str, float]:
    """The widths galstreams' summary gives a track: its phi2 width (deg) and proper-motion
    widths (mas/yr), where finite and positive.

    Arguments:
        name: Stream name as galstreams spells it (e.g. a :class:`StreamTrack`'s).
        reference: The track's reference.

    Returns:
        ``{"phi2": ..., "pm_phi1_cosphi2": ..., "pm_phi2": ...}``, leaving out what
        the summary lacks (empty when there is no summary).

    Example:
        >>> widths = galstreams_widths("GD-1", "pricewhelan2018")
        >>> sorted(widths), round(widths["phi2"], 2)
        (['phi2', 'pm_phi1_cosphi2', 'pm_phi2'], 0.67)
    """
    path = _track_files().get((name, reference))
    if path is None:
        raise InputError(f"stream '{name}', reference '{reference}': no galstreams track")
    summary = path.with_name(path.name[: -len(".ecsv")] + ".summary.ecsv")
    if not summary.exists():
        return {}
    # its columns are plain numbers: read as CSV, skipping the ECSV header (twice as fast)
    row = Table.read(summary, format="ascii.csv", comment="#")[0]
    out = {}
    for key in ("phi2", "pm_phi1_cosphi2", "pm_phi2"):
        column = f"width_{key}"
        if column in row.colnames:
            try:
                value = float(row[column])
            except (TypeError, ValueError):
                continue
            if np.isfinite(value) and value > 0:
                out[key] = value
    return out
