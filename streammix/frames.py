"""Stream-aligned sky frames and the Gaia-to-stream transform.

A stream frame is a rotation of the ICRS sphere: ``phi1`` is the longitude
along the stream, wrapped to (-180, 180] deg, and ``phi2`` the latitude across
it. :class:`StreamFrame` holds the 3x3 rotation and transforms positions,
proper motions and their 2x2 covariances on plain numpy arrays (degrees,
mas/yr). :func:`gaia_to_stream` turns a raw Gaia archive table into the stream
coordinates, uncertainties and proper-motion correlation the model consumes,
optionally removing the solar reflex motion.

Built-in frames: :data:`GD1` (Koposov et al. 2010) and :data:`PAL5`
(Price-Whelan et al. 2019), identical to ``gala.coordinates.GD1Koposov10`` and
``gala.coordinates.Pal5PriceWhelan18``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import ICRS, CartesianDifferential, CartesianRepresentation
from astropy.coordinates import Galactocentric, SkyCoord
from astropy.table import QTable, Table

from .errors import InputError

__all__ = [
    "GD1",
    "PAL5",
    "StreamFrame",
    "gaia_to_stream",
    "get_frame",
    "great_circle_frame",
    "reflex_pm",
    "wrap_phi1",
]

_MAS_PER_DEG = 3.6e6
# 1 km/s at 1 kpc, in mas/yr.
_KMS_KPC_TO_MASYR = float((1 * u.km / u.s / u.kpc).to(u.mas / u.yr, u.dimensionless_angles()).value)


def _degrees(value: Any) -> np.ndarray:
    """Float array in degrees from a Quantity/Angle (converted) or plain numbers."""
    if isinstance(value, u.Quantity):
        return np.asarray(value.to_value(u.deg), dtype=float)
    return np.asarray(value, dtype=float)


def _scalar_or_array(x: np.ndarray) -> np.ndarray:
    return x[()] if x.ndim == 0 else x


def _unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(..., 3) unit vectors from longitude and latitude in degrees."""
    lon = np.deg2rad(lon)
    lat = np.deg2rad(lat)
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=-1)


def _lon_lat(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in [-180, 180] and latitude in degrees of (..., 3) vectors."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return np.rad2deg(np.arctan2(y, x)), np.rad2deg(np.arctan2(z, np.hypot(x, y)))


def _tangent_basis(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) unit vectors towards increasing longitude and latitude."""
    lon = np.deg2rad(lon)
    lat = np.deg2rad(lat)
    zero = np.zeros(np.broadcast(lon, lat).shape)
    east = np.stack([-np.sin(lon) + zero, np.cos(lon) + zero, zero], axis=-1)
    north = np.stack(
        [-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat) + zero], axis=-1
    )
    return east, north


def wrap_phi1(phi1: Any) -> np.ndarray:
    """Wrap longitudes in degrees to the interval (-180, 180].

    Arguments:
        phi1: Longitudes in degrees (any real values, array_like).

    Returns:
        The same angles, wrapped to (-180, 180].

    Example:
        >>> wrap_phi1([-180.0, 190.0, 360.0, -90.0]).tolist()
        [180.0, -170.0, 0.0, -90.0]
    """
    phi1 = np.asarray(phi1, dtype=float)
    wrapped = np.where((phi1 > -180.0) & (phi1 <= 180.0), phi1, 180.0 - np.mod(180.0 - phi1, 360.0))
    return _scalar_or_array(wrapped)


def _unit_vector_of(coord: SkyCoord, what: str) -> np.ndarray:
    if not isinstance(coord, SkyCoord):
        raise InputError(f"{what}: expected an astropy SkyCoord, got {type(coord).__name__}")
    if not coord.isscalar:
        raise InputError(f"{what}: expected a single (scalar) SkyCoord, got shape {coord.shape}")
    icrs = coord.icrs
    return _unit_vectors(icrs.ra.deg, icrs.dec.deg)


@dataclass(frozen=True, eq=False)
class StreamFrame:
    r"""A sky frame aligned with a stream: a rotation of ICRS.

    ``phi1`` (longitude, along the stream) is wrapped to (-180, 180] deg and
    ``phi2`` (latitude) lies in [-90, 90] deg. Two frames are equal when they
    have the same name and the same matrix.

    Arguments:
        name: Name of the frame (e.g. the stream's).
        matrix: 3x3 rotation taking ICRS unit vectors to stream-frame unit
            vectors (rows: the stream frame's x, y, z axes in ICRS). Stored as
            a read-only copy.

    Example:
        >>> frame = StreamFrame.from_endpoints(
        ...     SkyCoord(ra=10, dec=0, unit="deg"), SkyCoord(ra=50, dec=0, unit="deg"))
        >>> phi1, phi2 = frame.to_stream([10.0, 30.0, 50.0], [0.0, 5.0, 0.0])
        >>> phi1.round(6), phi2.round(6)
        (array([-20.,   0.,  20.]), array([0., 5., 0.]))
    """

    name: str
    matrix: np.ndarray

    def __post_init__(self) -> None:
        matrix = np.array(self.matrix, dtype=float)
        if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
            raise InputError(f"frame '{self.name}': matrix must be a finite 3x3 array")
        if np.max(np.abs(matrix @ matrix.T - np.eye(3))) > 1e-6 or np.linalg.det(matrix) < 0:
            raise InputError(f"frame '{self.name}': matrix is not a proper rotation")
        matrix.setflags(write=False)
        object.__setattr__(self, "matrix", matrix)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamFrame):
            return NotImplemented
        return self.name == other.name and bool(np.array_equal(self.matrix, other.matrix))

    def __hash__(self) -> int:
        return hash((self.name, self.matrix.tobytes()))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_pole(cls, pole: SkyCoord, origin: SkyCoord, name: str = "") -> StreamFrame:
        """Frame whose equator is the great circle with this pole.

        Arguments:
            pole: Pole of the stream's great circle (phi2 = +90 deg).
            origin: Where phi1 = 0; projected onto the great circle.
            name: Name of the frame.

        Example:
            >>> frame = StreamFrame.from_pole(
            ...     SkyCoord(ra=0, dec=90, unit="deg"), SkyCoord(ra=30, dec=10, unit="deg"))
            >>> [round(float(v), 6) for v in frame.to_stream(40.0, 20.0)]
            [10.0, 20.0]
        """
        z = _unit_vector_of(pole, "pole")
        o = _unit_vector_of(origin, "origin")
        x = o - np.dot(o, z) * z
        norm = np.linalg.norm(x)
        if norm < 1e-8:
            raise InputError("origin: lies at the pole, so it cannot fix phi1 = 0")
        x = x / norm
        y = np.cross(z, x)
        return cls(name=name, matrix=np.stack([x, y, z]))

    @classmethod
    def from_endpoints(cls, start: SkyCoord, end: SkyCoord, name: str = "") -> StreamFrame:
        """Frame through two points, phi1 increasing from ``start`` to ``end``.

        The origin (phi1 = 0) is the midpoint of the shorter great-circle arc
        between the two points, which both land on phi2 = 0.

        Arguments:
            start: One end of the stream (negative phi1).
            end: The other end (positive phi1).
            name: Name of the frame.

        Example:
            >>> frame = StreamFrame.from_endpoints(
            ...     SkyCoord(ra=0, dec=-10, unit="deg"), SkyCoord(ra=0, dec=30, unit="deg"))
            >>> [round(float(v), 6) for v in frame.to_stream(0.0, -10.0)]
            [-20.0, 0.0]
        """
        a = _unit_vector_of(start, "start")
        b = _unit_vector_of(end, "end")
        pole = np.cross(a, b)
        norm = np.linalg.norm(pole)
        if norm < 1e-8:
            raise InputError("start, end: identical or antipodal points do not fix a great circle")
        z = pole / norm
        x = (a + b) / np.linalg.norm(a + b)
        y = np.cross(z, x)
        return cls(name=name, matrix=np.stack([x, y, z]))

    @classmethod
    def from_track(cls, ra: Any, dec: Any, name: str = "") -> StreamFrame:
        """Frame of the best-fitting great circle through ordered track points.

        The pole is the right singular vector of the points' unit vectors with
        the smallest singular value (least-squares plane through the Sun),
        signed so that phi1 increases along the track's order; the origin
        (phi1 = 0) is the middle of the track's phi1 span.

        Arguments:
            ra: Right ascensions of the track points, deg (or an Angle).
            dec: Declinations of the track points, deg (or an Angle).
            name: Name of the frame.

        Example:
            >>> ra = np.linspace(100.0, 160.0, 13)
            >>> frame = StreamFrame.from_track(ra, np.zeros_like(ra))
            >>> phi1, phi2 = frame.to_stream(ra, 0.0 * ra)
            >>> float(phi1[0]), float(phi1[-1]), float(np.abs(phi2).max()) < 1e-9
            (-30.0, 30.0, True)
        """
        ra = _degrees(ra).ravel()
        dec = _degrees(dec).ravel()
        if ra.shape != dec.shape:
            raise InputError("ra, dec: track coordinates have different lengths")
        good = np.isfinite(ra) & np.isfinite(dec)
        xyz = _unit_vectors(ra[good], dec[good])
        if len(xyz) < 2:
            raise InputError("ra, dec: a track needs at least two finite points")
        _, singular, vt = np.linalg.svd(xyz, full_matrices=False)
        z = vt[-1]
        if singular[1] < 1e-10:
            raise InputError("ra, dec: track points coincide and do not fix a great circle")
        # Sign: phi1 increases along the track order.
        steps = np.cross(xyz[:-1], xyz[1:]).sum(axis=0)
        if np.dot(steps, z) < 0:
            z = -z
        # Provisional origin at the first point, then recentre on the span.
        x0 = xyz[0] - np.dot(xyz[0], z) * z
        x0 /= np.linalg.norm(x0)
        y0 = np.cross(z, x0)
        angle = np.unwrap(np.arctan2(xyz @ y0, xyz @ x0))
        middle = 0.5 * (angle.min() + angle.max())
        x = np.cos(middle) * x0 + np.sin(middle) * y0
        y = np.cross(z, x)
        return cls(name=name, matrix=np.stack([x, y, z]))

    # ------------------------------------------------------------------ positions
    def to_stream(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        """ICRS (ra, dec) in degrees to stream (phi1, phi2) in degrees.

        Arguments:
            ra: Right ascension, deg (array_like or Angle); broadcast with dec.
            dec: Declination, deg.

        Returns:
            ``(phi1, phi2)`` in degrees, phi1 wrapped to (-180, 180].

        Example:
            >>> phi1, phi2 = GD1.to_stream(157.60715566, 43.64512711)
            >>> round(float(phi1), 4), round(float(phi2), 4)
            (-30.0, 0.0)
        """
        xyz = _unit_vectors(_degrees(ra), _degrees(dec)) @ self.matrix.T
        phi1, phi2 = _lon_lat(xyz)
        return wrap_phi1(phi1), _scalar_or_array(phi2)

    def to_icrs(self, phi1: Any, phi2: Any) -> tuple[np.ndarray, np.ndarray]:
        """Stream (phi1, phi2) in degrees to ICRS (ra, dec) in degrees.

        Arguments:
            phi1: Longitude along the stream, deg; broadcast with phi2.
            phi2: Latitude across the stream, deg.

        Returns:
            ``(ra, dec)`` in degrees, ra in [0, 360).

        Example:
            >>> ra, dec = GD1.to_icrs(*GD1.to_stream(200.0, 59.0))
            >>> round(float(ra), 9), round(float(dec), 9)
            (200.0, 59.0)
        """
        # The exact inverse: published matrices are orthogonal only to ~1e-8.
        xyz = _unit_vectors(_degrees(phi1), _degrees(phi2)) @ np.linalg.inv(self.matrix).T
        ra, dec = _lon_lat(xyz)
        return _scalar_or_array(np.mod(ra, 360.0)), _scalar_or_array(dec)

    def local_rotation(self, ra: Any, dec: Any) -> np.ndarray:
        """Per-star 2x2 matrices taking ICRS tangent vectors to stream ones.

        A tangent-plane vector (east, north) = (a cos(dec), d) at (ra, dec) maps
        to (phi1 cos(phi2), phi2) components by ``R @ v``; ``R`` is a rotation.

        Arguments:
            ra: Right ascension, deg; broadcast with dec.
            dec: Declination, deg.

        Returns:
            Array of shape ``broadcast(ra, dec).shape + (2, 2)``.

        Example:
            >>> R = GD1.local_rotation(200.0, 59.0)
            >>> np.allclose(R @ R.T, np.eye(2))
            True
        """
        ra = _degrees(ra)
        dec = _degrees(dec)
        east, north = _tangent_basis(ra, dec)
        phi1, phi2 = _lon_lat(_unit_vectors(ra, dec) @ self.matrix.T)
        e_phi1, e_phi2 = _tangent_basis(phi1, phi2)
        # Stream basis expressed in ICRS axes: M^T e.
        e_phi1 = e_phi1 @ self.matrix
        e_phi2 = e_phi2 @ self.matrix
        rows = [
            [np.sum(e_phi1 * east, -1), np.sum(e_phi1 * north, -1)],
            [np.sum(e_phi2 * east, -1), np.sum(e_phi2 * north, -1)],
        ]
        return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)

    def transform_pm(
        self,
        ra: Any,
        dec: Any,
        pmra_cosdec: Any,
        pmdec: Any,
        cov: Any | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Proper motions (and their covariance) from ICRS to the stream frame.

        The transform is a per-star 2x2 rotation ``R`` (:meth:`local_rotation`),
        so the covariance propagates exactly as ``C' = R C R^T``.

        Arguments:
            ra: Right ascension, deg.
            dec: Declination, deg.
            pmra_cosdec: Proper motion in ra (times cos dec), mas/yr.
            pmdec: Proper motion in dec, mas/yr.
            cov: Optional ``(..., 2, 2)`` covariance of (pmra_cosdec, pmdec),
                (mas/yr)^2.

        Returns:
            ``(pm_phi1_cosphi2, pm_phi2, cov_stream)``; ``cov_stream`` is None
            when ``cov`` is None.

        Example:
            >>> pm1, pm2, c = GD1.transform_pm(200.0, 59.0, -8.0, -4.0, np.diag([1.0, 4.0]))
            >>> round(float(np.hypot(pm1, pm2)), 9) == round(float(np.hypot(8.0, 4.0)), 9)
            True
            >>> round(float(np.trace(c)), 9)
            5.0
        """
        R = self.local_rotation(ra, dec)
        pm = np.stack(np.broadcast_arrays(_masyr(pmra_cosdec), _masyr(pmdec)), axis=-1)
        pm_stream = np.einsum("...ij,...j->...i", R, pm)
        cov_stream = None
        if cov is not None:
            cov = np.asarray(cov, dtype=float)
            if cov.shape[-2:] != (2, 2):
                raise InputError(f"cov: expected shape (..., 2, 2), got {cov.shape}")
            cov_stream = R @ cov @ np.swapaxes(R, -1, -2)
        return (
            _scalar_or_array(pm_stream[..., 0]),
            _scalar_or_array(pm_stream[..., 1]),
            cov_stream,
        )

    # ------------------------------------------------------------------ astropy edges
    def to_skycoord(self, phi1: Any, phi2: Any) -> SkyCoord:
        """ICRS SkyCoord of stream coordinates (deg or Angle/Quantity).

        Example:
            >>> c = GD1.to_skycoord(0.0, 0.0)
            >>> round(float(c.ra.deg), 3), round(float(c.dec.deg), 3)
            (200.0, 59.45)
        """
        ra, dec = self.to_icrs(phi1, phi2)
        return SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")

    def from_skycoord(self, coord: SkyCoord) -> tuple[u.Quantity, u.Quantity]:
        """Stream coordinates ``(phi1, phi2)`` (Quantity, deg) of any SkyCoord.

        Example:
            >>> phi1, phi2 = GD1.from_skycoord(GD1.to_skycoord(-30.0, 1.0))
            >>> phi1.round(9), phi2.round(9)
            (<Quantity -30. deg>, <Quantity 1. deg>)
        """
        if not isinstance(coord, SkyCoord):
            raise InputError(f"coord: expected an astropy SkyCoord, got {type(coord).__name__}")
        icrs = coord.icrs
        phi1, phi2 = self.to_stream(icrs.ra.deg, icrs.dec.deg)
        return phi1 * u.deg, phi2 * u.deg


def _masyr(value: Any) -> np.ndarray:
    if isinstance(value, u.Quantity):
        return np.asarray(value.to_value(u.mas / u.yr), dtype=float)
    return np.asarray(value, dtype=float)


#: GD-1 frame of Koposov et al. (2010), as ``gala.coordinates.GD1Koposov10``.
GD1 = StreamFrame(
    name="GD-1",
    matrix=np.array(
        [
            [-0.4776303088, -0.1738432154, 0.8611897727],
            [0.510844589, -0.8524449229, 0.111245042],
            [0.7147776536, 0.4930681392, 0.4959603976],
        ]
    ),
)

#: Pal 5 frame of Price-Whelan et al. (2019), as ``gala.coordinates.Pal5PriceWhelan18``.
PAL5 = StreamFrame(
    name="Pal 5",
    matrix=np.array(
        [
            [9.99938314e-01, 1.57847502e-03, -1.09943927e-02],
            [-1.57837962e-03, 9.99998754e-01, 1.73543959e-05],
            [1.09944064e-02, 0.00000000e00, 9.99939560e-01],
        ]
    )
    @ np.array(
        [
            [-0.65019243, -0.75969758, -0.01045969],
            [-0.62969142, 0.54652698, -0.55208422],
            [0.42513354, -0.3523746, -0.83372274],
        ]
    ),
)

_BUILT_IN = {"gd1": GD1, "pal5": PAL5}


def _frame_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _pair(spec: Any, key: str) -> Any:
    if isinstance(spec, Mapping):
        return spec.get(key)
    return getattr(spec, key, None)


def great_circle_frame(pole: Any, origin: Any, name: str = "") -> StreamFrame:
    """The frame of a great circle given by its pole and the point where phi1 = 0.

    The frame a config's ``frame: {pole: [ra, dec], origin: [ra, dec]}`` names
    (as ``gala.coordinates.GreatCircleICRSFrame.from_pole_ra0``-style frames
    are given): phi2 = +90 deg at ``pole``, phi1 = 0 at ``origin`` projected
    onto the circle.

    Arguments:
        pole: (ra, dec) of the pole, deg.
        origin: (ra, dec) of the point that fixes phi1 = 0, deg.
        name: Name of the frame.

    Example:
        >>> frame = great_circle_frame([0.0, 90.0], [30.0, 10.0], "toy")
        >>> [round(float(v), 6) for v in frame.to_stream(40.0, 20.0)]
        [10.0, 20.0]
    """
    values = []
    for what, pair in (("pole", pole), ("origin", origin)):
        try:
            ra, dec = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise InputError(f"frame {what}: expected [ra, dec] in deg, got {pair!r}") from None
        if not (np.isfinite(ra) and np.isfinite(dec) and -90.0 <= dec <= 90.0):
            raise InputError(f"frame {what}: [ra, dec] = [{ra}, {dec}] is not a sky position")
        values.append(SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs"))
    return StreamFrame.from_pole(values[0], values[1], name=name)


def get_frame(name: Any) -> StreamFrame:
    """Built-in stream frame by name (case and punctuation ignored), or a great-circle frame.

    Arguments:
        name: "GD-1" (Koposov et al. 2010) or "Pal 5" (Price-Whelan et al. 2019),
            in any spelling such as "gd1" or "pal5"; or a great circle, anything
            with ``pole`` and ``origin`` ([ra, dec] in deg) as keys or attributes
            (a config's ``frame: {name: ..., pole: ..., origin: ...}``, see
            :func:`great_circle_frame`).

    Example:
        >>> get_frame("gd1") is GD1, get_frame("Pal 5") is PAL5
        (True, True)
        >>> get_frame({"name": "toy", "pole": [0, 90], "origin": [30, 0]}).name
        'toy'
    """
    if isinstance(name, StreamFrame):
        return name
    if not isinstance(name, str) and _pair(name, "pole") is not None:
        label = _pair(name, "name")
        return great_circle_frame(_pair(name, "pole"), _pair(name, "origin"), str(label or "great circle"))
    frame = _BUILT_IN.get(_frame_key(str(name)))
    if frame is None:
        known = ", ".join(f.name for f in _BUILT_IN.values())
        raise InputError(
            f"frame '{name}': unknown; built-in frames are {known} (or give a great circle: "
            "{pole: [ra, dec], origin: [ra, dec]})"
        )
    return frame


# ---------------------------------------------------------------------- Gaia tables
def _column(table: Table, name: str, unit: u.UnitBase | None, default: float | None) -> np.ndarray:
    """Float array of a column in ``unit`` (masked -> NaN); ``default`` if absent."""
    if name not in table.colnames:
        if default is None:
            raise InputError(f"column '{name}': required but missing")
        return np.full(len(table), default, dtype=float)
    col = table[name]
    col_unit = getattr(col, "unit", None)
    try:
        if isinstance(col, u.Quantity):
            values = col.to_value(unit if unit is not None else u.dimensionless_unscaled)
        elif col_unit is not None and unit is not None:
            raw = np.asarray(np.ma.getdata(col), dtype=float)
            values = u.Quantity(raw, col_unit).to_value(unit)
        else:
            values = np.asarray(np.ma.getdata(col), dtype=float)
    except (u.UnitsError, ValueError, TypeError) as error:
        raise InputError(f"column '{name}': cannot be read in {unit}: {error}") from None
    if hasattr(values, "unmasked"):  # astropy Masked quantities
        values = values.unmasked
    values = np.array(values, dtype=float)
    mask = getattr(col, "mask", None)
    if mask is not None and np.shape(mask) == values.shape:
        values[np.asarray(mask, dtype=bool)] = np.nan
    return values


def reflex_pm(
    ra: np.ndarray, dec: np.ndarray, distance_kpc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Proper motion (mas/yr) that the solar motion imprints on a star at rest.

    A star at rest in astropy's default Galactocentric frame has, in ICRS axes,
    the velocity -v_sun; its apparent proper motion is that velocity projected
    on the sky and divided by the distance.
    """
    galcen = Galactocentric()
    at_rest = galcen.realize_frame(
        CartesianRepresentation(
            [0.0, 0.0, 0.0] * u.kpc,
            differentials=CartesianDifferential([0.0, 0.0, 0.0] * u.km / u.s),
        )
    ).transform_to(ICRS())
    velocity = at_rest.cartesian.differentials["s"].d_xyz.to_value(u.km / u.s)
    east, north = _tangent_basis(ra, dec)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = _KMS_KPC_TO_MASYR / distance_kpc
        return east @ velocity * scale, north @ velocity * scale


def _reflex_distance_kpc(reflex_distance: Any, parallax: np.ndarray) -> np.ndarray:
    n = len(parallax)
    if isinstance(reflex_distance, str):
        if reflex_distance != "parallax":
            raise InputError(
                f"reflex_distance: '{reflex_distance}' is not understood; "
                "use None, a distance Quantity or 'parallax'"
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(parallax > 0, 1.0 / parallax, np.nan)  # mas -> kpc
    if not isinstance(reflex_distance, u.Quantity) or not reflex_distance.unit.is_equivalent(u.kpc):
        raise InputError("reflex_distance: expected a distance Quantity (e.g. 8 * u.kpc), "
                         "'parallax' or None")
    distance = np.asarray(reflex_distance.to_value(u.kpc), dtype=float)
    if distance.ndim > 0 and distance.shape != (n,):
        raise InputError(f"reflex_distance: expected a scalar or {n} values, got shape "
                         f"{distance.shape}")
    distance = np.broadcast_to(distance, (n,)).astype(float)
    return np.where(distance > 0, distance, np.nan)


def gaia_to_stream(
    table: Table,
    frame: StreamFrame,
    *,
    reflex_distance: u.Quantity | str | None = None,
) -> QTable:
    """Transform raw Gaia archive astrometry into a stream frame.

    Only ``ra`` and ``dec`` [deg] are required. Optional columns: ``pmra``,
    ``pmdec`` [mas/yr], ``parallax`` [mas] (missing -> NaN); ``ra_error``,
    ``dec_error`` [mas], ``pmra_error``, ``pmdec_error`` [mas/yr],
    ``parallax_error`` [mas], ``ra_dec_corr``, ``pmra_pmdec_corr`` (missing ->
    zero); ``source_id`` is carried over. Columns with units are converted;
    columns without units are taken in the units above. Masked entries become
    NaN.

    The proper-motion covariance, including its correlation term, and the
    position covariance are rotated exactly into the frame. Correlations
    between parallax and proper motions (``parallax_pmra_corr`` ...) are not
    carried: the model treats parallax and proper motions as independent given
    the 2x2 proper-motion covariance.

    Arguments:
        table: Gaia table (astropy Table or QTable).
        frame: Target stream frame.
        reflex_distance: None (observed proper motions), a distance Quantity
            (scalar or one per star) or "parallax" (1/parallax where parallax
            > 0, NaN elsewhere): remove the solar reflex motion for a star at
            that distance, using astropy's default ``Galactocentric`` frame
            (same as ``gala.coordinates.reflex_correct`` with zero radial
            velocity). The distance is taken as exact: the covariance is not
            changed.

    Returns:
        QTable with ``phi1``, ``phi2``, ``phi2_err`` [deg], ``parallax``,
        ``parallax_err`` [mas], ``pm_phi1_cosphi2``, ``pm_phi2``,
        ``pm_phi1_cosphi2_err``, ``pm_phi2_err`` [mas/yr], ``pm_corr``
        (correlation of the two proper motions; 0 where an error is 0) and
        ``source_id`` when present.

    Example:
        >>> t = Table({"ra": [200.0], "dec": [59.0], "pmra": [-8.0], "pmdec": [-4.0],
        ...            "pmra_error": [0.1], "pmdec_error": [0.2], "pmra_pmdec_corr": [0.3]})
        >>> out = gaia_to_stream(t, GD1)
        >>> round(float(out["phi1"][0].value), 4), out["pm_phi2_err"].unit
        (-0.0986, Unit("mas / yr"))
    """
    if not isinstance(table, Table):
        try:
            is_pandas = hasattr(table, "columns") and hasattr(table, "to_numpy")
            table = Table.from_pandas(table) if is_pandas else Table(table)
        except Exception as error:  # noqa: BLE001 - any failure is bad input
            raise InputError(f"table: cannot be read as an astropy Table: {error}") from None
    if not isinstance(frame, StreamFrame):
        raise InputError(f"frame: expected a StreamFrame, got {type(frame).__name__}")
    mas, masyr = u.mas, u.mas / u.yr
    ra = _column(table, "ra", u.deg, None)
    dec = _column(table, "dec", u.deg, None)
    pmra = _column(table, "pmra", masyr, np.nan)
    pmdec = _column(table, "pmdec", masyr, np.nan)
    parallax = _column(table, "parallax", mas, np.nan)
    parallax_err = _column(table, "parallax_error", mas, 0.0)

    def covariance(err1: np.ndarray, err2: np.ndarray, corr: np.ndarray) -> np.ndarray:
        off = corr * err1 * err2
        return np.stack([np.stack([err1**2, off], -1), np.stack([off, err2**2], -1)], -2)

    pos_cov = covariance(
        _column(table, "ra_error", mas, 0.0),
        _column(table, "dec_error", mas, 0.0),
        _column(table, "ra_dec_corr", None, 0.0),
    )
    pm_cov = covariance(
        _column(table, "pmra_error", masyr, 0.0),
        _column(table, "pmdec_error", masyr, 0.0),
        _column(table, "pmra_pmdec_corr", None, 0.0),
    )

    if reflex_distance is not None:
        distance = _reflex_distance_kpc(reflex_distance, parallax)
        reflex_ra, reflex_dec = reflex_pm(ra, dec, distance)
        pmra = pmra - reflex_ra
        pmdec = pmdec - reflex_dec

    phi1, phi2 = frame.to_stream(ra, dec)
    R = frame.local_rotation(ra, dec)
    RT = np.swapaxes(R, -1, -2)
    pos_cov = R @ pos_cov @ RT
    pm_cov = R @ pm_cov @ RT
    pm_stream = np.einsum("...ij,...j->...i", R, np.stack([pmra, pmdec], -1))

    pm1_err = np.sqrt(pm_cov[..., 0, 0])
    pm2_err = np.sqrt(pm_cov[..., 1, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = pm1_err * pm2_err
        pm_corr = np.where(denom > 0, pm_cov[..., 0, 1] / np.where(denom > 0, denom, 1.0), 0.0)

    out = QTable()
    if "source_id" in table.colnames:
        out["source_id"] = table["source_id"]
    out["phi1"] = np.atleast_1d(phi1) * u.deg
    out["phi2"] = np.atleast_1d(phi2) * u.deg
    out["phi2_err"] = np.sqrt(pos_cov[..., 1, 1]) / _MAS_PER_DEG * u.deg
    out["parallax"] = parallax * mas
    out["parallax_err"] = parallax_err * mas
    out["pm_phi1_cosphi2"] = pm_stream[..., 0] * masyr
    out["pm_phi2"] = pm_stream[..., 1] * masyr
    out["pm_phi1_cosphi2_err"] = pm1_err * masyr
    out["pm_phi2_err"] = pm2_err * masyr
    out["pm_corr"] = pm_corr * u.dimensionless_unscaled
    out.meta["frame"] = frame.name
    out.meta["reflex_corrected"] = reflex_distance is not None
    return out
