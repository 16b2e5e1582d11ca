"""The survey's sky map: every stream's fitted track on one all-sky Mollweide map.

:func:`plot_survey_sky` takes the tracks as :class:`~astropy.coordinates.SkyCoord`
(e.g. from :func:`streammix.survey.track_on_sky`) and draws them in Galactic or
ICRS coordinates, longitude increasing to the left as on the sky, each track
broken where it crosses the map's edge. Like :mod:`streammix.plot`, it builds a
:class:`matplotlib.figure.Figure` without ``pyplot``.
"""

from __future__ import annotations

from collections.abc import Mapping

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from matplotlib.figure import Figure

from .errors import InputError

__all__ = ["SKY_FRAMES", "plot_survey_sky", "sky_lines"]

#: The frames the map can be drawn in, and their axis names.
SKY_FRAMES = {"galactic": ("$l$", "$b$"), "icrs": (r"$\alpha$", r"$\delta$")}


def sky_lines(coord: SkyCoord, frame: str = "galactic") -> list[tuple[np.ndarray, np.ndarray]]:
    """A track as Mollweide (x, y) in radians, longitude increasing to the left,
    split into pieces where it crosses the map's edge (longitude 180 deg).

    Arguments:
        coord: The track's points, in order along it.
        frame: ``galactic`` or ``icrs``.

    Example:
        >>> import astropy.units as u
        >>> track = SkyCoord([170, 179, 181, 190] * u.deg, [0, 0, 0, 0] * u.deg, frame="icrs")
        >>> [np.degrees(x).round(1).tolist() for x, _ in sky_lines(track, "icrs")]
        [[-170.0, -179.0], [179.0, 170.0]]
    """
    if frame not in SKY_FRAMES:
        raise InputError(f"frame '{frame}': the sky map is drawn in {' or '.join(SKY_FRAMES)}")
    if len(coord) == 0:
        return []
    sky = coord.transform_to(frame)
    lon = sky.spherical.lon.wrap_at(180 * u.deg).radian
    lat = sky.spherical.lat.radian
    x = -np.atleast_1d(lon)
    y = np.atleast_1d(lat)
    breaks = np.flatnonzero(np.abs(np.diff(x)) > np.pi) + 1
    return [(xs, ys) for xs, ys in zip(np.split(x, breaks), np.split(y, breaks)) if xs.size]


def plot_survey_sky(
    tracks: Mapping[str, SkyCoord], *, frame: str = "galactic", labels: bool = True, title: str | None = None
) -> Figure:
    """Every stream's fitted track on one Mollweide map.

    Arguments:
        tracks: Stream name -> its track's points in order (an empty track is listed, not drawn).
        frame: ``galactic`` (default) or ``icrs``.
        labels: Write each stream's name at the middle of its track.
        title: The map's title (default: how many streams are drawn).

    Returns:
        The figure; one line per drawn piece of a track (a track crossing the
        map's edge is drawn as two), the name of each stream in its lines' label.

    Example:
        >>> import astropy.units as u
        >>> tracks = {"a": SkyCoord([10, 20] * u.deg, [5, 6] * u.deg), "b": SkyCoord([] * u.deg, [] * u.deg)}
        >>> fig = plot_survey_sky(tracks, frame="icrs")
        >>> [line.get_label() for line in fig.axes[0].get_lines()], fig.axes[0].get_title()
        (['a'], '1 of 2 streams')
    """
    if frame not in SKY_FRAMES:
        raise InputError(f"frame '{frame}': the sky map is drawn in {' or '.join(SKY_FRAMES)}")
    fig = Figure(figsize=(10.0, 5.6), layout="constrained")
    ax = fig.add_subplot(projection="mollweide")
    colours = [f"C{i}" for i in range(10)]
    drawn = 0
    for i, (name, coord) in enumerate(tracks.items()):
        pieces = sky_lines(coord, frame)
        if not pieces:
            continue
        drawn += 1
        colour = colours[i % len(colours)]
        for x, y in pieces:
            ax.plot(x, y, "-", color=colour, lw=1.5, label=name, solid_capstyle="round")
        if labels:
            x, y = max(pieces, key=lambda piece: piece[0].size)
            middle = x.size // 2
            ax.annotate(name, (x[middle], y[middle]), xytext=(2, 2), textcoords="offset points", fontsize=6,
                        color=colour)  # fmt: skip
    ticks = np.radians(np.arange(-150, 180, 30))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{(-t) % 360:.0f}°" for t in np.degrees(ticks)], fontsize=7)
    ax.grid(True, color="0.8", lw=0.5)
    lon_name, lat_name = SKY_FRAMES[frame]
    ax.set_xlabel(lon_name)
    ax.set_ylabel(lat_name)
    ax.set_title(title if title is not None else f"{drawn} of {len(tracks)} streams")
    return fig
