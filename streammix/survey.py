"""A survey of many fitted streams: one row per stream, and each fitted track on the sky.

The pipeline (``Snakefile``, rule ``survey``) fits every stream of a run, e.g.
every galstreams stream (``--config streams="galstreams:*"``), and writes for
each the numbers of its ``numbers`` rule (``results/<stream>/numbers.json``) and
its fitted tracks (``results/<stream>/tracks.ecsv``, with the stream frame and
the component in their header). :func:`survey_row` reads one stream's numbers
into a row and :func:`survey_table` stacks the rows; :func:`track_on_sky` puts
a fitted track on the sky, where the fitted stream is dense, for the sky map of
:func:`streammix.sky_map.plot_survey_sky`.

The track's quality is measured against a reference: a mock's truth (the
tracks it was drawn on), else the galstreams track. A row's ``phi2_rms``,
``pm_phi1_rms`` and ``pm_phi2_rms`` are the RMS of fitted minus reference
where the stream is dense, and ``reference`` says which; ``galstreams_phi2_rms``
is always against the galstreams track (for a mock on a galstreams track the
two references nearly agree). A value that does not apply (no truth, a track
without proper motions) is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import QTable, Table

from .errors import InputError
from .frames import get_frame

__all__ = ["DENSE_FRACTION", "NONE", "SURVEY_COLUMNS", "survey_row", "survey_table", "track_on_sky"]

#: A text cell that does not apply (an empty one would read back from ECSV as masked).
NONE = "-"

#: Where a fitted stream counts as dense: linear density above this fraction of its peak
#: (as the pipeline's track comparison, ``src/scripts/compare_tracks.py``).
DENSE_FRACTION = 0.1

#: The survey table's columns: name, unit (None: none), description.
SURVEY_COLUMNS: tuple[tuple[str, Any, str], ...] = (
    ("stream", None, "the stream's name in the run (results/<stream>/)"),
    ("galstreams", None, "its galstreams name (- for a stream file of config/streams/ without one)"),
    ("data", None, "where the stars came from: mock, sky_mock, file, gaia_query or query"),
    ("n_stars", None, "stars fitted"),
    ("n_p50", None, "stars with membership probability > 0.5"),
    ("n_p80", None, "stars with membership probability > 0.8"),
    ("reference", None, "what the track RMS are against: truth (a mock), galstreams, or - (neither)"),
    ("phi2_rms", u.arcmin, "RMS of fitted minus reference phi2 where the stream is dense"),
    ("pm_phi1_rms", u.mas / u.yr, "RMS of fitted minus reference pm_phi1_cosphi2 where the stream is dense"),
    ("pm_phi2_rms", u.mas / u.yr, "RMS of fitted minus reference pm_phi2 where the stream is dense"),
    ("galstreams_phi2_rms", u.arcmin, "RMS of fitted minus galstreams phi2 at the track's points where dense"),
    ("completeness", None, "a mock: fraction of its true members at p > 0.5"),
    ("purity", None, "a mock: fraction of the stars at p > 0.5 that are true members"),
    ("fit_minutes", u.min, "wall time of the fit (flows excluded: streammix fit --background)"),
)

_TRUTH = {"phi2_rms": "phi2_rms_arcmin", "pm_phi1_rms": "pm_phi1_rms", "pm_phi2_rms": "pm_phi2_rms"}
_GALSTREAMS = {
    "phi2_rms": "galstreams_phi2_rms_arcmin",
    "pm_phi1_rms": "galstreams_pm_phi1_rms",
    "pm_phi2_rms": "galstreams_pm_phi2_rms",
}


def _number(numbers: Mapping[str, Any], key: str) -> float:
    value = numbers.get(key)
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        raise InputError(f"numbers: {key}: {value!r} is not a number") from None


def survey_row(
    stream: str, numbers: Mapping[str, Any], *, galstreams: str | None = None, data: str = ""
) -> dict[str, Any]:
    """One stream's row of the survey table, from its pipeline numbers.

    Arguments:
        stream: The stream's name in the run.
        numbers: What the pipeline's ``numbers`` rule wrote (``numbers.json``):
            ``n_stars``, ``n_p50``, ``n_p80`` and ``fit_minutes``; a mock's
            ``phi2_rms_arcmin``, ``pm_phi1_rms``, ``pm_phi2_rms``,
            ``completeness``, ``purity``; with a galstreams track
            ``galstreams_phi2_rms_arcmin`` (and ``galstreams_pm_phi1_rms``,
            ``galstreams_pm_phi2_rms`` when the track has proper motions).
        galstreams: The stream's galstreams name, if any.
        data: Where its stars came from (the stream file's data kind).

    Returns:
        The values of :data:`SURVEY_COLUMNS`, without units (arcmin, mas/yr, min).

    Example:
        >>> row = survey_row("pal5", {"n_stars": 900, "n_p50": 120, "n_p80": 90, "fit_minutes": 3.5,
        ...                           "galstreams_phi2_rms_arcmin": 4.2}, galstreams="Pal5", data="query")
        >>> row["reference"], row["phi2_rms"], row["n_p50"], math.isnan(row["purity"])
        ('galstreams', 4.2, 120, True)
    """
    for key in ("n_stars", "n_p50", "n_p80", "fit_minutes"):
        if key not in numbers:
            raise InputError(f"numbers of stream '{stream}': {key}: missing")
    if "phi2_rms_arcmin" in numbers:
        reference, keys = "truth", _TRUTH
    elif "galstreams_phi2_rms_arcmin" in numbers:
        reference, keys = "galstreams", _GALSTREAMS
    else:
        reference, keys = NONE, {}
    row: dict[str, Any] = {
        "stream": stream,
        "galstreams": galstreams or NONE,
        "data": data,
        "n_stars": int(numbers["n_stars"]),
        "n_p50": int(numbers["n_p50"]),
        "n_p80": int(numbers["n_p80"]),
        "reference": reference,
    }
    for column in ("phi2_rms", "pm_phi1_rms", "pm_phi2_rms"):
        row[column] = _number(numbers, keys[column]) if column in keys else math.nan
    row["galstreams_phi2_rms"] = _number(numbers, "galstreams_phi2_rms_arcmin")
    row["completeness"] = _number(numbers, "completeness")
    row["purity"] = _number(numbers, "purity")
    row["fit_minutes"] = _number(numbers, "fit_minutes")
    return row


def survey_table(rows: Sequence[Mapping[str, Any]]) -> QTable:
    """The survey table: one row per stream (:func:`survey_row`), with units and descriptions.

    Arguments:
        rows: One mapping per stream with every column of :data:`SURVEY_COLUMNS`.

    Example:
        >>> rows = [survey_row("a", {"n_stars": 10, "n_p50": 2, "n_p80": 1, "fit_minutes": 1.0,
        ...                          "phi2_rms_arcmin": 3.0, "pm_phi1_rms": 0.1, "pm_phi2_rms": 0.2})]
        >>> table = survey_table(rows)
        >>> table["phi2_rms"][0], str(table["reference"][0]), len(table)
        (<Quantity 3. arcmin>, 'truth', 1)
    """
    table = QTable()
    for name, unit, description in SURVEY_COLUMNS:
        missing = [i for i, row in enumerate(rows) if name not in row]
        if missing:
            raise InputError(f"survey row {missing[0]}: {name}: missing")
        values = [row[name] for row in rows]
        if unit is None and name in ("stream", "galstreams", "data", "reference"):
            column = np.array(values, dtype=str) if values else np.zeros(0, dtype=str)
        elif name.startswith("n_"):
            column = np.array(values, dtype=np.int64)
        else:
            column = np.array(values, dtype=float)
        table[name] = column * unit if unit is not None else column
        table[name].info.description = description
    table.meta["description"] = "one row per fitted stream (streammix.survey)"
    return table


def track_on_sky(
    tracks: Table, frame: Any, component: str = "stream", *, dense_fraction: float = DENSE_FRACTION
) -> SkyCoord:
    """A fitted track on the sky (ICRS), where the fitted stream is dense.

    Arguments:
        tracks: A fitted tracks table (``phi1`` and ``<component>_phi2`` in deg,
            ``<component>_linear_density``), e.g. ``tracks.ecsv`` of ``streammix fit``.
        frame: Its stream frame: a built-in name or ``{pole, origin}``
            (:func:`streammix.frames.get_frame`).
        component: The component whose track it is.
        dense_fraction: Only where the linear density exceeds this fraction of its peak.

    Returns:
        The track's points in phi1 order (none when the table has no density).

    Example:
        >>> import astropy.units as u
        >>> tracks = QTable({"phi1": [-10.0, 0.0, 10.0] * u.deg, "stream_phi2": [0.0, 0.0, 0.0] * u.deg,
        ...                  "stream_linear_density": [0.0, 5.0, 4.0] / u.deg})
        >>> sky = track_on_sky(tracks, {"pole": [0, 90], "origin": [30, 0]})
        >>> sky.ra.deg.round(6).tolist(), sky.dec.deg.round(6).tolist()
        ([30.0, 40.0], [0.0, 0.0])
    """
    columns = {"phi1": "phi1", "phi2": f"{component}_phi2", "density": f"{component}_linear_density"}
    for column in columns.values():
        if column not in tracks.colnames:
            raise InputError(f"tracks: {column}: missing (component '{component}')")
    phi1 = np.asarray(u.Quantity(tracks["phi1"], u.deg).value, float)
    phi2 = np.asarray(u.Quantity(tracks[columns["phi2"]], u.deg).value, float)
    density = np.asarray(getattr(tracks[columns["density"]], "value", tracks[columns["density"]]), float)
    finite = np.isfinite(phi1) & np.isfinite(phi2) & np.isfinite(density)
    peak = float(np.max(density[finite])) if finite.any() else 0.0
    keep = finite & (density > dense_fraction * peak) if peak > 0 else np.zeros(phi1.shape, bool)
    order = np.argsort(phi1[keep])
    ra, dec = get_frame(frame).to_icrs(phi1[keep][order], phi2[keep][order])
    return SkyCoord(np.atleast_1d(ra) * u.deg, np.atleast_1d(dec) * u.deg, frame="icrs")
