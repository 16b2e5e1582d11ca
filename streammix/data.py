"""Star tables: one validated, unit-normalised table of stars, and its readers.

Every star table that enters streammix becomes a :class:`StarTable`: plain
float64 numpy arrays in canonical units, with an explicit mask of which
observed coordinates each star has.

Canonical schema (units):

- ``source_id`` (int64);
- ``phi1``, ``phi2``, ``phi2_err`` [deg]; ``phi1`` is the independent coordinate
  and must be finite for every star;
- ``parallax``, ``parallax_err`` [mas];
- ``pm_phi1_cosphi2``, ``pm_phi2``, ``pm_phi1_cosphi2_err``, ``pm_phi2_err``
  [mas/yr] and ``pm_corr``, the correlation coefficient of the two proper
  motions;
- per photometric band ``<band>`` and ``<band>_err`` [mag], optionally the
  extinction ``A_<band>`` [mag].

Missing values are NaN. An uncertainty the catalog does not give at all is 0
(and ``pm_corr`` is 0). A coordinate counts as observed for a star when its
value is finite and its uncertainty finite and non-negative
(:attr:`StarTable.observed`).

User tables are mapped onto this schema by a :class:`ColumnMap` (the
``columns:`` section of the YAML configuration); raw Gaia archive tables are
first transformed into a stream frame with :func:`streammix.frames.gaia_to_stream`.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import astropy.units as u
import numpy as np
import tables
from astropy.table import QTable, Table
from astropy.table import meta as table_meta
from astropy.table import serialize as table_serialize
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .depth_errors import DepthErrors
from .errors import InputError
from .external_errors import ExternalErrors
from .frames import StreamFrame, gaia_to_stream, get_frame

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "ASTROMETRIC",
    "ColumnMap",
    "StarTable",
    "canonical_unit",
    "check_plausible",
    "read_stars",
    "read_table",
    "without_errors",
]

#: The observed astrometric coordinates, in the order used throughout streammix.
ASTROMETRIC: tuple[str, ...] = ("phi2", "parallax", "pm_phi1_cosphi2", "pm_phi2")

_ERROR_OF = {
    "phi2": "phi2_err",
    "parallax": "parallax_err",
    "pm_phi1_cosphi2": "pm_phi1_cosphi2_err",
    "pm_phi2": "pm_phi2_err",
}
#: The measured quantities whose errors matter to a membership (a position's are negligible):
#: one read without an error column or model is taken as exact, and ``meta["without_errors"]`` names it
_MEASURED = ("parallax", "pm_phi1_cosphi2", "pm_phi2")
#: Gaia's error columns (each pair rotated together) and the canonical columns made from them
_GAIA_ERROR_PAIRS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("ra_error", "dec_error"): ("phi2_err",),
    ("parallax_error",): ("parallax_err",),
    ("pmra_error", "pmdec_error"): ("pm_phi1_cosphi2_err", "pm_phi2_err", "pm_corr"),
}
_FLOAT_FIELDS = ("phi1", *(name for pair in _ERROR_OF.items() for name in pair), "pm_corr")
_MAG = u.mag
_UNITS: dict[str, u.UnitBase] = {
    "phi1": u.deg,
    "phi2": u.deg,
    "phi2_err": u.deg,
    "parallax": u.mas,
    "parallax_err": u.mas,
    "pm_phi1_cosphi2": u.mas / u.yr,
    "pm_phi1_cosphi2_err": u.mas / u.yr,
    "pm_phi2": u.mas / u.yr,
    "pm_phi2_err": u.mas / u.yr,
    "pm_corr": u.dimensionless_unscaled,
}
_SENTINEL_RTOL = 1e-6  # a float32 copy of 1e20 is 1.00000002e20


class ColumnMap(BaseModel):
    """How the columns of a user table map onto the canonical schema.

    Each astrometric key names the user column holding that canonical quantity.
    The rule for finding a column:

    - a key set explicitly to a name: that column must exist (else
      :class:`~streammix.errors.InputError`), and an observed coordinate must
      not be entirely missing;
    - a key set explicitly to ``None``: the quantity is not read (values NaN,
      uncertainties 0);
    - a key left at its default: the default name is used if the table has it,
      otherwise the canonical name (e.g. ``pm_phi1_cosphi2``, ``parallax_err``),
      otherwise the quantity is absent (values NaN, uncertainties 0). Only
      ``phi1`` is always required. A missing ``source_id`` becomes the row
      number.

    ``bands`` maps canonical band names to user columns (a list of names means
    each maps to itself). A band's error is ``band_errors[band]`` if given, else
    the column ``<band>_err`` if present, else 0; its extinction is
    ``extinction[band]`` if given, else ``A_<band>`` if present, else absent.
    ``units`` gives the unit of canonical quantities whose columns carry none
    (a column's own unit always wins); ``sentinels`` are values meaning
    "missing" in any mapped column; ``keep`` names extra columns carried along.

    Arguments:
        source_id: Column of unique integer identifiers.
        phi1: Column of the coordinate along the stream.
        phi2: Column of the coordinate across the stream.
        phi2_err: Column of the uncertainty of ``phi2``.
        parallax: Column of the parallax.
        parallax_err: Column of the parallax uncertainty.
        pm_phi1_cosphi2: Column of the proper motion along the stream.
        pm_phi1_cosphi2_err: Its uncertainty.
        pm_phi2: Column of the proper motion across the stream.
        pm_phi2_err: Its uncertainty.
        pm_corr: Correlation coefficient of the two proper motions.
        pm_err_per_parallax_err: For a catalogue without proper-motion errors:
            each component's error is this factor times the star's parallax
            error (mas/yr per mas; 0 where that is missing). Gaia DR2's
            median errors (Lindegren et al. 2018, A&A 616, A2) are
            0.04/0.1/0.7 mas in parallax and 0.05/0.2/1.2 mas/yr in proper
            motion at G < 14/17/20, i.e. 1.25-2.0. With
            ``parallax_err_external``, of the external parallax error.
        parallax_err_external: The catalogue's external parallax errors
            from its formal ones
            (:class:`~streammix.external_errors.ExternalErrors`; Gaia DR2:
            factor 1.08, floor 0.043 mas): the model, its training and its
            outputs use these in place of the column's. One floor for every
            star, in mas whatever the column's unit.
        bands: Canonical band name -> user magnitude column.
        band_errors: Canonical band name -> user magnitude-error column.
        band_error_model: For bands whose catalogue gives no errors:
            canonical band name -> the survey's depth
            (:class:`~streammix.depth_errors.DepthErrors`), from which each
            star's error follows from its magnitude (0 where the magnitude
            is missing).
        extinction: Canonical band name -> user extinction column.
        units: Canonical name -> unit string, for unitless columns.
        sentinels: Values that mean "missing".
        keep: Extra user columns to carry along.

    Example:
        >>> cmap = ColumnMap(bands={"ps1_g": "g_mean_psf_mag"}, sentinels=[1e20])
        >>> cmap.bands, cmap.parallax_err
        ({'ps1_g': 'g_mean_psf_mag'}, 'parallax_error')
        >>> try:
        ...     ColumnMap.from_dict({"phi_1": "x"}, source="data.columns")
        ... except InputError as error:
        ...     print(error)
        data.columns.phi_1: Extra inputs are not permitted
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_id: str | None = "source_id"
    phi1: str = "phi1"
    phi2: str | None = "phi2"
    phi2_err: str | None = None
    parallax: str | None = "parallax"
    parallax_err: str | None = "parallax_error"
    pm_phi1_cosphi2: str | None = "pm_phi1"
    pm_phi1_cosphi2_err: str | None = None
    pm_phi2: str | None = "pm_phi2"
    pm_phi2_err: str | None = None
    pm_corr: str | None = None
    pm_err_per_parallax_err: float | None = Field(None, gt=0)
    parallax_err_external: ExternalErrors | None = None
    bands: dict[str, str] = {}
    band_errors: dict[str, str] = {}
    band_error_model: dict[str, DepthErrors] = {}
    extinction: dict[str, str] = {}
    units: dict[str, str] = {}
    sentinels: list[float] = []
    keep: list[str] = []

    @field_validator("bands", mode="before")
    @classmethod
    def _bands_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return {str(name): str(name) for name in value}
        return value

    @field_validator("bands")
    @classmethod
    def _band_names(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = set(_UNITS) | {"source_id"}
        for band in value:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", band):
                raise ValueError(
                    f"band name '{band}' must be letters, digits and '_', starting with a letter"
                )
            if band in reserved or band.endswith("_err") or band.startswith("A_"):
                raise ValueError(f"band name '{band}' clashes with a canonical column name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ColumnMap:
        for key in ("band_errors", "band_error_model", "extinction"):
            unknown = [band for band in getattr(self, key) if band not in self.bands]
            if unknown:
                raise ValueError(f"{key}: {unknown} not among the bands {sorted(self.bands)}")
        both = sorted(set(self.band_errors) & set(self.band_error_model))
        if both:
            raise ValueError(f"band_error_model: {both} also have band_errors columns; use one or the other")
        for name, text in self.units.items():
            target = canonical_unit(name, self.bands)
            if target is None:
                raise ValueError(f"units.{name}: not a canonical column name")
            try:
                unit = u.Unit(text)
            except (ValueError, TypeError):
                raise ValueError(f"units.{name}: '{text}' is not a unit") from None
            if not _convertible(unit, target):
                raise ValueError(f"units.{name}: '{text}' is not convertible to {target}")
        return self

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any] | None, *, source: str = "columns") -> ColumnMap:
        """Validate a mapping (the YAML ``columns:`` section), raising InputError.

        Arguments:
            mapping: Keys and values as in the class signature (None: defaults).
            source: Prefix naming where the mapping comes from, for messages.

        Example:
            >>> ColumnMap.from_dict({"bands": ["g", "r"]}).bands
            {'g': 'g', 'r': 'r'}
        """
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise InputError(f"{source}: expected a mapping, got {type(mapping).__name__}")
        try:
            return cls(**{str(key): value for key, value in mapping.items()})
        except InputError as error:
            parts = str(error).split("; ")
            raise InputError("; ".join(source + p.removeprefix("columns") for p in parts)) from None

    def __init__(self, **data: Any) -> None:
        """Validate keyword arguments; bad ones raise InputError naming ``columns.<key>``."""
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise InputError(_one_line(error, "columns")) from None


def _one_line(error: ValidationError, source: str) -> str:
    parts = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["loc"]:
            parts.append(f"{'.'.join(str(x) for x in (source, *item['loc']))}: {message}")
        else:  # a whole-map check, whose message starts with the key
            parts.append(f"{source}.{message}")
    return "; ".join(parts)


def canonical_unit(name: str, bands: Mapping[str, str]) -> u.UnitBase | None:
    """The unit a canonical column ``name`` is stored in (magnitudes for the bands, their
    errors and extinctions), or None for a column without one."""
    if name in _UNITS:
        return _UNITS[name]
    for band in bands:
        if name in (band, f"{band}_err", f"A_{band}"):
            return _MAG
    return None


def _convertible(unit: Any, target: u.UnitBase) -> bool:
    if target is _MAG and isinstance(unit, u.MagUnit):
        return True
    try:
        unit.to(target)
    except (u.UnitsError, ValueError, TypeError):
        return False
    return True


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False, repr=False)
class StarTable:
    """A validated table of stars in canonical units (see the module docstring).

    Usually built with :meth:`from_table`, :meth:`from_gaia` or
    :func:`read_stars`. Built directly, any astrometric array left as None is
    absent (values NaN, uncertainties and ``pm_corr`` 0), ``source_id`` defaults
    to the row number, and a band without errors gets errors 0. The arrays are
    read-only.

    Arguments:
        phi1: Coordinate along the stream (deg).
        phi2: Coordinate across the stream (deg).
        phi2_err: Uncertainty of phi2 (deg).
        parallax: Parallax (mas).
        parallax_err: Its uncertainty (mas).
        pm_phi1_cosphi2: Proper motion along the stream (mas/yr).
        pm_phi1_cosphi2_err: Its uncertainty (mas/yr).
        pm_phi2: Proper motion across the stream (mas/yr).
        pm_phi2_err: Its uncertainty (mas/yr).
        pm_corr: Correlation coefficient of the two proper motions.
        mags: Band name -> magnitudes (mag).
        mag_errs: Band name -> magnitude uncertainties (mag).
        extinction: Band name -> extinction (mag), for the bands that have one.
        source_id: Unique int64 identifiers.
        extra: Extra columns carried along (same length).
        meta: Provenance (e.g. ``source``). Read from a table, also
            ``without_errors``: the parallax, proper motions and bands it gave
            values but neither errors nor an error model for (taken as exact;
            :func:`without_errors`), and with :func:`read_stars`'s optional
            bands, ``unobserved_bands``.

    Example:
        >>> import numpy as np
        >>> stars = StarTable(phi1=np.array([-50.0, -40.0]), phi2=np.array([0.1, np.nan]),
        ...                   mags={"g": np.array([18.0, 19.0])})
        >>> len(stars), stars.bands, stars.observed["phi2"].tolist()
        (2, ('g',), [True, False])
        >>> stars[np.array([False, True])].phi1.tolist()
        [-40.0]
    """

    phi1: np.ndarray
    phi2: np.ndarray = None  # type: ignore[assignment]
    phi2_err: np.ndarray = None  # type: ignore[assignment]
    parallax: np.ndarray = None  # type: ignore[assignment]
    parallax_err: np.ndarray = None  # type: ignore[assignment]
    pm_phi1_cosphi2: np.ndarray = None  # type: ignore[assignment]
    pm_phi1_cosphi2_err: np.ndarray = None  # type: ignore[assignment]
    pm_phi2: np.ndarray = None  # type: ignore[assignment]
    pm_phi2_err: np.ndarray = None  # type: ignore[assignment]
    pm_corr: np.ndarray = None  # type: ignore[assignment]
    mags: dict[str, np.ndarray] = field(default_factory=dict)
    mag_errs: dict[str, np.ndarray] = field(default_factory=dict)
    extinction: dict[str, np.ndarray] = field(default_factory=dict)
    source_id: np.ndarray = None  # type: ignore[assignment]
    extra: Table = None  # type: ignore[assignment]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        phi1 = np.array(self.phi1, dtype=np.float64, ndmin=1)
        if phi1.ndim != 1:
            raise InputError(f"phi1: expected a 1-D array, got shape {phi1.shape}")
        n = len(phi1)
        if not np.isfinite(phi1).all():
            raise InputError(f"phi1: {np.count_nonzero(~np.isfinite(phi1))} non-finite values of {n}")

        def vector(name: str, value: Any, fill: float) -> np.ndarray:
            if value is None:
                return _frozen(np.full(n, fill))
            array = np.array(value, dtype=np.float64, ndmin=1)
            if array.shape != (n,):
                raise InputError(f"{name}: expected {n} values, got shape {array.shape}")
            return _frozen(array)

        set_ = object.__setattr__
        set_(self, "phi1", _frozen(phi1))
        for value_name, error_name in _ERROR_OF.items():
            set_(self, value_name, vector(value_name, getattr(self, value_name), np.nan))
            set_(self, error_name, vector(error_name, getattr(self, error_name), 0.0))
        set_(self, "pm_corr", vector("pm_corr", self.pm_corr, 0.0))
        unknown = sorted((set(self.mag_errs) | set(self.extinction)) - set(self.mags))
        if unknown:
            raise InputError(f"mag_errs/extinction: bands {unknown} have no magnitudes")
        set_(self, "mags", {b: vector(f"mags[{b!r}]", v, np.nan) for b, v in self.mags.items()})
        errs = {b: vector(f"mag_errs[{b!r}]", self.mag_errs.get(b), 0.0) for b in self.mags}
        set_(self, "mag_errs", errs)
        ext = {b: vector(f"extinction[{b!r}]", v, 0.0) for b, v in self.extinction.items()}
        set_(self, "extinction", ext)
        if self.source_id is None:
            source_id = np.arange(n, dtype=np.int64)
        else:
            source_id = np.array(self.source_id, ndmin=1)
            if source_id.shape != (n,) or source_id.dtype.kind not in "iu":
                raise InputError(
                    f"source_id: expected {n} integers, got {source_id.dtype} of shape {source_id.shape}"
                )
            source_id = source_id.astype(np.int64)
        set_(self, "source_id", _frozen(source_id))
        extra = Table() if self.extra is None else Table(self.extra, copy=False)
        if len(extra.colnames) and len(extra) != n:
            raise InputError(f"extra: expected {n} rows, got {len(extra)}")
        if not len(extra.colnames):
            extra = Table()
        set_(self, "extra", extra)
        set_(self, "meta", dict(self.meta))

    def __len__(self) -> int:
        return len(self.phi1)

    def __repr__(self) -> str:
        bands = ", ".join(self.bands) or "none"
        extra = len(self.extra.colnames)
        return f"<StarTable: {len(self)} stars; bands: {bands}; extra: {extra} columns>"

    def __getitem__(self, index: slice | int | np.ndarray | Sequence[int] | Sequence[bool]) -> StarTable:
        """The stars selected by a slice, integer array or boolean mask (an int: one star)."""
        if isinstance(index, (int, np.integer)):
            index = np.array([index])
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype.kind not in "biu" and index.size:
                raise TypeError(f"StarTable index must be a slice, integers or booleans, not {index.dtype}")
            if index.dtype.kind == "b" and index.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {index.shape} for {len(self)} stars")
            if not index.size:
                index = index.astype(np.int64)
        take = {name: getattr(self, name)[index] for name in _FLOAT_FIELDS}
        extra = self.extra[index] if self.extra.colnames else None
        return StarTable(
            **take,
            mags={b: v[index] for b, v in self.mags.items()},
            mag_errs={b: v[index] for b, v in self.mag_errs.items()},
            extinction={b: v[index] for b, v in self.extinction.items()},
            source_id=self.source_id[index],
            extra=extra,
            meta=self.meta,
        )

    @property
    def bands(self) -> tuple[str, ...]:
        """Names of the photometric bands."""
        return tuple(self.mags)

    @functools.cached_property
    def observed(self) -> dict[str, np.ndarray]:
        """Coordinate name (the 4 astrometric, then each band) -> whether the star has it.

        A coordinate is observed when its value is finite and its uncertainty is
        finite and non-negative. Computed once (the table is immutable); the
        arrays are read-only.
        """
        pairs = [(getattr(self, name), getattr(self, _ERROR_OF[name])) for name in ASTROMETRIC]
        pairs += [(self.mags[b], self.mag_errs[b]) for b in self.bands]
        names = (*ASTROMETRIC, *self.bands)
        return {
            name: _frozen(np.isfinite(value) & np.isfinite(error) & (error >= 0))
            for name, (value, error) in zip(names, pairs, strict=True)
        }

    def pm_cov(self) -> np.ndarray:
        """The (N, 2, 2) observed proper-motion covariance (mas/yr)^2.

        Variances are the squared uncertainties, the off-diagonal term is
        ``pm_corr * err1 * err2``; a NaN ``pm_corr`` counts as 0.

        Example:
            >>> import numpy as np
            >>> s = StarTable(phi1=np.zeros(1), pm_phi1_cosphi2_err=np.array([2.0]),
            ...               pm_phi2_err=np.array([3.0]), pm_corr=np.array([0.5]))
            >>> s.pm_cov()[0].tolist()
            [[4.0, 3.0], [3.0, 9.0]]
        """
        s1, s2 = self.pm_phi1_cosphi2_err, self.pm_phi2_err
        off = np.nan_to_num(self.pm_corr, nan=0.0) * s1 * s2
        cov = np.empty((len(self), 2, 2))
        cov[:, 0, 0] = s1**2
        cov[:, 1, 1] = s2**2
        cov[:, 0, 1] = cov[:, 1, 0] = off
        return cov

    def to_table(self) -> QTable:
        """The canonical columns with units, then the extra columns, with ``meta``.

        Example:
            >>> import numpy as np
            >>> t = StarTable(phi1=np.array([1.0]), mags={"g": np.array([20.0])}).to_table()
            >>> t.colnames[:3], str(t["phi1"].unit), t.colnames[-2:]
            (['source_id', 'phi1', 'phi2'], 'deg', ['g', 'g_err'])
        """
        table = QTable(meta=dict(self.meta))
        table["source_id"] = self.source_id.copy()
        table["phi1"] = self.phi1 * u.deg
        for name in ASTROMETRIC:
            table[name] = getattr(self, name) * _UNITS[name]
            table[_ERROR_OF[name]] = getattr(self, _ERROR_OF[name]) * _UNITS[name]
        table["pm_corr"] = self.pm_corr.copy()
        for band in self.bands:
            table[band] = self.mags[band] * u.mag
            table[f"{band}_err"] = self.mag_errs[band] * u.mag
            if band in self.extinction:
                table[f"A_{band}"] = self.extinction[band] * u.mag
        for name in self.extra.colnames:
            if name in table.colnames:
                raise InputError(f"extra column '{name}' clashes with a canonical column")
            table[name] = self.extra[name]
        return table

    @classmethod
    def from_table(
        cls,
        table: Table | QTable | pandas.DataFrame,
        columns: ColumnMap | Mapping[str, Any] | None = None,
        *,
        name: str = "table",
    ) -> StarTable:
        """Validate a user table and map it onto the canonical schema.

        Arguments:
            table: An astropy Table/QTable or a pandas DataFrame (a named index
                becomes a column).
            columns: The column mapping (a mapping is validated as a ColumnMap).
            name: What the table is called in error messages, e.g. "file 'x.fits'".

        Raises:
            InputError: One line naming the offending column: missing, wrong unit,
                not numeric, entirely missing, non-finite phi1, negative errors,
                pm_corr outside [-1, 1], duplicated source_id, or no rows.

        Example:
            >>> from astropy.table import Table
            >>> t = Table({"phi1": [-50.0, -40.0], "phi2": [0.5, 1e20], "pm_phi1": [-10.0, -9.0]})
            >>> stars = StarTable.from_table(t, ColumnMap(sentinels=[1e20]))
            >>> stars.phi2.tolist(), stars.observed["pm_phi1_cosphi2"].tolist()
            ([0.5, nan], [True, True])
            >>> try:
            ...     StarTable.from_table(t, {"phi2": "b"})
            ... except InputError as error:
            ...     print(error)
            column 'b' (columns.phi2) not found in table; available: phi1, phi2, pm_phi1
        """
        cmap = columns if isinstance(columns, ColumnMap) else ColumnMap.from_dict(columns)
        return _build(_as_table(table, name), cmap, name=name, explicit=cmap.model_fields_set)

    @classmethod
    def from_gaia(
        cls,
        table: Table | QTable | pandas.DataFrame,
        frame: StreamFrame | str,
        columns: ColumnMap | Mapping[str, Any] | None = None,
        *,
        reflex_distance: Any = None,
        name: str = "table",
    ) -> StarTable:
        """Transform a raw Gaia archive table into a stream frame, then validate it.

        The astrometry (ra, dec, parallax, pmra, pmdec, their errors and
        correlation) goes through :func:`streammix.frames.gaia_to_stream`; from
        ``columns`` only ``source_id``, ``bands``, ``band_errors``,
        ``extinction``, ``units``, ``sentinels`` and ``keep`` apply, to the raw
        table's columns, and the error models ``parallax_err_external`` and
        ``pm_err_per_parallax_err``. An error the raw table does not give
        (``parallax_error``; ``pmra_error`` and ``pmdec_error``; ``ra_error`` and
        ``dec_error``) is absent, as in :meth:`from_table`: 0, or its error model's
        (the proper motions' correlation too, without their errors). One error of a
        pair without the other is refused.

        Arguments:
            table: Gaia archive rows (``gaia_source`` column names).
            frame: A :class:`~streammix.frames.StreamFrame` or a built-in frame name.
            columns: Photometry and extra columns to carry.
            reflex_distance: Passed on to ``gaia_to_stream`` (solar reflex removal).
            name: What the table is called in error messages.

        Example:
            >>> from astropy.table import Table
            >>> t = Table({"source_id": [1], "ra": [150.0], "dec": [40.0], "parallax": [0.1],
            ...            "parallax_error": [0.05], "pmra": [-6.0], "pmdec": [-5.0],
            ...            "pmra_error": [0.1], "pmdec_error": [0.1], "pmra_pmdec_corr": [0.2]})
            >>> stars = StarTable.from_gaia(t, "GD1")
            >>> bool(stars.observed["pm_phi2"][0]), stars.pm_cov().shape
            (True, (1, 2, 2))
        """
        cmap = columns if isinstance(columns, ColumnMap) else ColumnMap.from_dict(columns)
        raw = _as_table(table, name)
        _check_gaia_errors(raw, cmap, name)
        if isinstance(frame, str):
            frame = get_frame(frame)
        try:
            stream = QTable(gaia_to_stream(raw, frame, reflex_distance=reflex_distance))
        except InputError:
            raise
        except KeyError as error:
            raise InputError(f"{name}: Gaia column {error} not found") from None
        if len(stream) != len(raw):
            raise InputError(f"{name}: the Gaia transformation gave {len(stream)} of {len(raw)} rows")
        # the transformation gives 0 for an error the raw table lacks; such errors are left absent
        # instead, so that the canonical rule (0) or the columns' error model applies, as for any table
        for pair, transformed in _GAIA_ERROR_PAIRS.items():
            if not any(column in raw.colnames for column in pair):
                stream.remove_columns([column for column in transformed if column in stream.colnames])
        referenced = [
            cmap.source_id,
            *cmap.bands.values(),
            *cmap.band_errors.values(),
            *cmap.extinction.values(),
            *cmap.keep,
            *(f"{band}_err" for band in cmap.bands),
            *(f"A_{band}" for band in cmap.bands),
        ]
        for column in referenced:
            if column is not None and column in raw.colnames and column not in stream.colnames:
                stream[column] = raw[column]
        mapped = cmap.model_copy(update={key: key for key in _FLOAT_FIELDS})
        explicit = cmap.model_fields_set & {"source_id", "bands", "band_errors", "keep"}
        return _build(stream, mapped, name=name, explicit=explicit)


# ---------------------------------------------------------------- validation


def without_errors(stars: StarTable, used: Sequence[str]) -> list[str]:
    """The quantities among ``used`` (coordinates and bands) that ``stars`` were read with
    but without errors or an error model, so taken as exact: a membership that uses them
    is over-confident. From the table's ``meta`` (a :class:`StarTable` built directly
    records none).

    Example:
        >>> from astropy.table import Table
        >>> stars = StarTable.from_table(Table({"phi1": [1.0], "parallax": [0.2], "pm_phi2": [-1.0]}))
        >>> without_errors(stars, ["phi2", "parallax", "pm_phi2"]), without_errors(stars, ["phi2"])
        (['parallax', 'pm_phi2'], [])
    """
    return [name for name in stars.meta.get("without_errors", ()) if name in used]


def _check_gaia_errors(raw: Table, cmap: ColumnMap, name: str) -> None:
    """Refuse, naming the raw Gaia columns, a pair of errors with one missing and an error
    model that the table's own errors contradict or lack (the canonical checks would name
    the transformed columns instead, which the user never wrote)."""
    where = _where(name)
    for pair in _GAIA_ERROR_PAIRS:
        present = [column for column in pair if column in raw.colnames]
        if 0 < len(present) < len(pair):
            (missing,) = set(pair) - set(present)
            raise InputError(
                f"{name}: Gaia column '{missing}' not found, but '{present[0]}' is: the rotation into the "
                "stream frame needs both errors"
            )
    has_parallax_error = "parallax_error" in raw.colnames
    if cmap.parallax_err_external is not None and not has_parallax_error:
        raise InputError(f"columns.parallax_err_external{where}: needs parallax errors (column 'parallax_error')")
    if cmap.pm_err_per_parallax_err is not None:
        if "pmra_error" in raw.colnames:
            raise InputError(
                f"columns.pm_err_per_parallax_err{where}: the table already gives 'pmra_error' and 'pmdec_error'; "
                "use one or the other"
            )
        if not has_parallax_error:
            raise InputError(f"columns.pm_err_per_parallax_err{where}: needs parallax errors (column 'parallax_error')")


def _as_table(table: Any, name: str) -> Table:
    if isinstance(table, Table):
        return table
    # a DataFrame means pandas is loaded already; importing it only to ask would cost ~0.4 s
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(table, pd.DataFrame):
        frame = table
        if any(level is not None for level in frame.index.names):
            frame = frame.reset_index()
        frame = frame.copy()
        frame.columns = [str(c) for c in frame.columns]
        return Table.from_pandas(frame, index=False)
    raise InputError(
        f"{name}: expected an astropy Table or a pandas DataFrame, got {type(table).__name__}"
    )


_ALL_MISSING = "every value is missing (NaN, masked or sentinel)"


def _not_found(table: Table, wanted: str, name: str) -> str:
    return f"not found in {name}{_available(table, wanted)}"


def _available(table: Table, wanted: str) -> str:
    names = table.colnames
    by_lower = {name.lower(): name for name in reversed(names)}  # first of equal spellings wins
    close = [by_lower[c] for c in difflib.get_close_matches(wanted.lower(), list(by_lower), n=3)]
    if len(names) <= 20:
        return "; available: " + ", ".join(names)
    if close:
        return f"; did you mean {', '.join(close)}? ({len(names)} columns)"
    return f" ({len(names)} columns)"


def _where(name: str) -> str:
    return "" if name == "table" else f" of {name}"


def _build(table: Table, cmap: ColumnMap, *, name: str, explicit: Set[str]) -> StarTable:
    n = len(table)
    if n == 0:
        raise InputError(f"{name}: the table has no rows")
    where = _where(name)

    def resolve(key: str, canonical: str, mapped: str | None, required: bool) -> str | None:
        if mapped is not None and mapped in table.colnames:
            return mapped
        if key in explicit or required:
            if mapped is None:
                return None
            raise InputError(f"column '{mapped}' (columns.{key}) {_not_found(table, mapped, name)}")
        if canonical in table.colnames:
            return canonical
        return None

    def label(column: str, canonical: str) -> str:
        return f"column '{column}'" if column == canonical else f"column '{column}' ({canonical})"

    def read(column: str, canonical: str) -> np.ndarray:
        target = canonical_unit(canonical, cmap.bands)
        assert target is not None
        values = _numeric(table[column], label(column, canonical) + where)
        unit = _column_unit(table[column])
        if unit is None and canonical in cmap.units:
            unit = u.Unit(cmap.units[canonical])
        if unit is not None:
            if not _convertible(unit, target):
                raise InputError(
                    f"{label(column, canonical)}{where}: unit '{unit}' is not convertible to '{target}'"
                )
            if not isinstance(unit, u.MagUnit):
                factor = unit.to(target)
                if factor != 1.0:
                    values = values * factor
        if cmap.sentinels:
            sentinels = np.asarray(cmap.sentinels, dtype=np.float64)
            close = np.isclose(values[:, None], sentinels[None, :], rtol=_SENTINEL_RTOL, atol=0.0)
            hit = close.any(axis=1)
            if hit.any():
                values = np.where(hit, np.nan, values)
        return values

    def check_error(values: np.ndarray, column: str, canonical: str) -> None:
        negative = np.count_nonzero(values < 0)
        if negative:
            raise InputError(
                f"{label(column, canonical)}{where}: {negative} negative uncertainties"
                f" (min {np.nanmin(values):g})"
            )

    def check_observed(values: np.ndarray, column: str, canonical: str, key: str) -> None:
        if key in explicit and not np.isfinite(values).any():
            raise InputError(f"{label(column, canonical)}{where}: {_ALL_MISSING}")

    arrays: dict[str, np.ndarray | None] = {}
    phi1_column = resolve("phi1", "phi1", cmap.phi1, True)
    assert phi1_column is not None
    phi1 = read(phi1_column, "phi1")
    bad = np.count_nonzero(~np.isfinite(phi1))
    if bad:
        raise InputError(f"{label(phi1_column, 'phi1')}{where}: {bad} non-finite values of {n}")
    arrays["phi1"] = phi1
    for value_name, error_name in _ERROR_OF.items():
        column = resolve(value_name, value_name, getattr(cmap, value_name), False)
        arrays[value_name] = None
        if column is not None:
            arrays[value_name] = read(column, value_name)
            check_observed(arrays[value_name], column, value_name, value_name)
        column = resolve(error_name, error_name, getattr(cmap, error_name), False)
        arrays[error_name] = None
        if column is not None:
            arrays[error_name] = read(column, error_name)
            check_error(arrays[error_name], column, error_name)
    column = resolve("pm_corr", "pm_corr", cmap.pm_corr, False)
    arrays["pm_corr"] = None
    if column is not None:
        corr = read(column, "pm_corr")
        outside = np.count_nonzero(np.abs(corr) > 1.0)
        if outside:
            raise InputError(f"{label(column, 'pm_corr')}{where}: {outside} values outside [-1, 1]")
        arrays["pm_corr"] = corr
    if cmap.parallax_err_external is not None:
        if arrays["parallax_err"] is None:
            raise InputError(f"columns.parallax_err_external{where}: needs parallax errors (columns.parallax_err)")
        arrays["parallax_err"] = cmap.parallax_err_external.error(arrays["parallax_err"])
    if cmap.pm_err_per_parallax_err is not None:
        given = [key for key in ("pm_phi1_cosphi2_err", "pm_phi2_err") if arrays[key] is not None]
        if given:
            raise InputError(
                f"columns.pm_err_per_parallax_err{where}: the table already gives {given}; use one or the other"
            )
        if arrays["parallax_err"] is None:
            raise InputError(f"columns.pm_err_per_parallax_err{where}: needs parallax errors (columns.parallax_err)")
        modelled = cmap.pm_err_per_parallax_err * np.where(np.isfinite(arrays["parallax_err"]), arrays["parallax_err"], 0.0)
        arrays["pm_phi1_cosphi2_err"], arrays["pm_phi2_err"] = modelled, modelled.copy()

    mags: dict[str, np.ndarray] = {}
    mag_errs: dict[str, np.ndarray] = {}
    extinction: dict[str, np.ndarray] = {}
    for band, column in cmap.bands.items():
        if column not in table.colnames:
            raise InputError(f"column '{column}' (columns.bands.{band}) {_not_found(table, column, name)}")
        mags[band] = read(column, band)
        if not np.isfinite(mags[band]).any():
            raise InputError(f"{label(column, band)}{where}: {_ALL_MISSING}")
        for key, canonical, out in (
            ("band_errors", f"{band}_err", mag_errs),
            ("extinction", f"A_{band}", extinction),
        ):
            mapped = getattr(cmap, key).get(band)
            if mapped is not None and mapped not in table.colnames:
                raise InputError(
                    f"column '{mapped}' (columns.{key}.{band}) {_not_found(table, mapped, name)}"
                )
            column_b = mapped if mapped is not None or canonical not in table.colnames else canonical
            if key == "band_errors" and band in cmap.band_error_model:
                if column_b is not None:
                    raise InputError(
                        f"columns.band_error_model.{band}{where}: the table already gives its errors "
                        f"('{column_b}'); use one or the other"
                    )
                modelled = cmap.band_error_model[band].error(mags[band])
                out[band] = np.where(np.isfinite(modelled), modelled, 0.0)
                continue
            if column_b is not None:
                out[band] = read(column_b, canonical)
                if key == "band_errors":
                    check_error(out[band], column_b, canonical)

    source_id = None
    column = resolve("source_id", "source_id", cmap.source_id, False)
    if column is not None:
        source_id = _integers(table[column], label(column, "source_id") + where)
        unique, counts = np.unique(source_id, return_counts=True)
        if len(unique) != n:
            duplicated = unique[counts > 1]
            raise InputError(
                f"{label(column, 'source_id')}{where}: {len(duplicated)} duplicated values"
                f" (e.g. {duplicated[0]})"
            )

    extra = Table()
    for column in cmap.keep:
        if column not in table.colnames:
            raise InputError(f"column '{column}' (columns.keep) {_not_found(table, column, name)}")
        extra[column] = table[column]

    meta = _provenance(table.meta)
    meta["source"] = name
    meta.pop("without_errors", None)  # the file's own, if any, is not ours
    exact = [
        key for key in _MEASURED
        if arrays[key] is not None and np.isfinite(arrays[key]).any() and arrays[_ERROR_OF[key]] is None
    ]  # fmt: skip
    exact += [band for band in mags if band not in mag_errs]
    if exact:
        meta["without_errors"] = exact
    return StarTable(
        **arrays,  # type: ignore[arg-type]
        mags=mags,
        mag_errs=mag_errs,
        extinction=extinction,
        source_id=source_id,
        extra=extra,
        meta=meta,
    )


#: The largest absolute value a star can have, per canonical quantity (canonical
#: units): the sky's limits, the nearest star's parallax (768 mas) and the fastest
#: proper motion (Barnard's star, 10.4 arcsec/yr), with room to spare.
PLAUSIBLE: dict[str, float] = {
    "phi1": 360.0,
    "phi2": 90.0,
    "phi2_err": 90.0,
    "parallax": 1e3,
    "parallax_err": 1e3,
    "pm_phi1_cosphi2": 1e5,
    "pm_phi1_cosphi2_err": 1e5,
    "pm_phi2": 1e5,
    "pm_phi2_err": 1e5,
}
_PLAUSIBLE_MAG = 50.0  # mag, for magnitudes, their errors and extinctions


def check_plausible(stars: StarTable, coordinates: Sequence[str] | None = None) -> StarTable:
    """Raise :class:`~streammix.errors.InputError` for values no star can have.

    Such values (a proper motion of 1e30 mas/yr, a magnitude of 99.99) are
    usually undeclared "missing" markers; they would overflow the model's
    float32 arithmetic. Checked: ``phi1``, and for each of ``coordinates``
    (default: the four astrometric ones and every band) its values and
    uncertainties; NaN (missing) is fine. Limits: :data:`PLAUSIBLE`, and
    50 mag for photometry.

    Arguments:
        stars: The stars.
        coordinates: The coordinates to check (those a model uses).

    Returns:
        ``stars``, unchanged.

    Example:
        >>> import numpy as np
        >>> stars = StarTable(phi1=np.array([-50.0, -40.0]), pm_phi2=np.array([-3.0, 1e30]))
        >>> try:
        ...     check_plausible(stars)
        ... except InputError as error:
        ...     print(error)
        column 'pm_phi2': 1 values beyond +-100000 mas / yr (e.g. 1e+30), not a star's (declare such markers in columns.sentinels)
    """
    names = [*ASTROMETRIC, *stars.bands] if coordinates is None else list(coordinates)
    checks: list[tuple[str, np.ndarray, float, str]] = [("phi1", stars.phi1, PLAUSIBLE["phi1"], "deg")]
    for name in names:
        if name in _ERROR_OF:
            error = _ERROR_OF[name]
            for key in (name, error):
                checks.append((key, getattr(stars, key), PLAUSIBLE[key], str(_UNITS[key])))
        elif name in stars.mags:
            checks.append((name, stars.mags[name], _PLAUSIBLE_MAG, "mag"))
            checks.append((f"{name}_err", stars.mag_errs[name], _PLAUSIBLE_MAG, "mag"))
            if name in stars.extinction:
                checks.append((f"A_{name}", stars.extinction[name], _PLAUSIBLE_MAG, "mag"))
    for key, values, limit, unit in checks:
        with np.errstate(invalid="ignore"):
            absurd = np.abs(values) > limit
        if absurd.any():
            example = values[np.flatnonzero(absurd)[0]]
            raise InputError(
                f"column '{key}': {int(absurd.sum())} values beyond +-{limit:g} {unit} (e.g. {example:g}),"
                " not a star's (declare such markers in columns.sentinels)"
            )
    return stars


def _provenance(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The input table's metadata, without per-column FITS keywords or serialisation keys."""
    return {
        key: value
        for key, value in meta.items()
        if isinstance(key, str)
        and not key.startswith("__")
        and not re.fullmatch(r"T[A-Z]+\d+", key)
        and isinstance(value, (str, int, float, bool))
    }


def _column_unit(column: Any) -> Any:
    unit = getattr(column, "unit", None)
    if unit is None or unit == u.dimensionless_unscaled:
        return None
    return unit


def _numeric(column: Any, label: str) -> np.ndarray:
    """A column as float64 with masked entries as NaN; InputError if not numeric."""
    mask = None
    if getattr(column, "mask", None) is not None:
        mask = np.broadcast_to(np.asarray(column.mask, dtype=bool), np.shape(column))
        data = getattr(column, "unmasked", None)
        data = np.asarray(column.data if data is None else data)
    else:
        data = np.asarray(column.value if isinstance(column, u.Quantity) else column)
    if isinstance(data, u.Quantity):
        data = data.value
    if data.ndim != 1:
        raise InputError(f"{label}: expected one value per row, got shape {data.shape}")
    kind = data.dtype.kind
    if kind in "iuf":
        values = data.astype(np.float64)
    elif kind == "O":
        try:
            values = np.array([np.nan if v is None else v for v in data], dtype=np.float64)
        except (TypeError, ValueError):
            example = next((v for v in data if not _is_number(v)), data[0])
            got = type(example).__name__
            raise InputError(f"{label}: expected numbers, got {got} (e.g. {example!r})") from None
    else:
        what = {"U": "text", "S": "bytes", "b": "booleans", "M": "dates", "m": "times", "c": "complex"}
        example = data[0] if len(data) else ""
        example = example.item() if isinstance(example, np.generic) else example
        got = what.get(kind, data.dtype)
        raise InputError(f"{label}: expected numbers, got {got} (e.g. {example!r})")
    if mask is not None and mask.any():
        values = np.where(mask, np.nan, values)
    return values


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _integers(column: Any, label: str) -> np.ndarray:
    masked = getattr(column, "mask", None)
    data = np.asarray(getattr(column, "data", column))
    if masked is not None and np.any(masked):
        raise InputError(f"{label}: {int(np.count_nonzero(masked))} missing identifiers")
    if data.ndim != 1:
        raise InputError(f"{label}: expected one value per row, got shape {data.shape}")
    if data.dtype.kind in "iu":
        return data.astype(np.int64)
    values = _numeric(column, label)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        raise InputError(f"{label}: {int(np.count_nonzero(bad))} values are not integers")
    if np.abs(values).max() >= 2**53:
        raise InputError(f"{label}: stored as floating point, too large to be exact identifiers")
    return values.astype(np.int64)


# ------------------------------------------------------------------- readers

_SUFFIXES = {
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".fits.gz": "fits",
    ".fit.gz": "fits",
    ".ecsv": "ascii.ecsv",
    ".csv": "ascii.csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".vot": "votable",
    ".votable": "votable",
    ".xml": "votable",
    ".hdf5": "hdf5",
    ".h5": "hdf5",
    ".hdf": "hdf5",
}
_FORMATS = (
    "fits", "ascii.ecsv", "ascii.csv", "parquet", "votable", "hdf5", "pandas.hdf5", "astropy.hdf5"
)


def read_table(path: str | os.PathLike, *, format: str | None = None) -> Table:
    """Read a table file: FITS, ECSV, CSV, Parquet, VOTable or HDF5.

    The format comes from the suffix unless given (one of ``fits``,
    ``ascii.ecsv``, ``ascii.csv``, ``parquet``, ``votable``, ``hdf5``,
    ``pandas.hdf5``, ``astropy.hdf5``). An HDF5 file written by pandas
    (``DataFrame.to_hdf``) is read with ``pandas.read_hdf`` (its first key); one
    written by astropy (``Table.write(..., format="hdf5")``) is read with
    PyTables, keeping units and metadata, so h5py is not needed. A ``.csv`` file
    with an ECSV header is read as ECSV. Masked values stay masked.

    Arguments:
        path: The file.
        format: Its format, if the suffix does not tell.

    Raises:
        InputError: Naming the file: missing, a folder, unknown format,
            unreadable or truncated.

    Example:
        >>> import tempfile, pathlib
        >>> from astropy.table import Table
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "stars.csv"
        >>> Table({"phi1": [1.5, 2.5]}).write(path)
        >>> read_table(path)["phi1"].tolist()
        [1.5, 2.5]
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"file '{path}' does not exist")
    if path.is_dir():
        raise InputError(f"file '{path}' is a folder, not a table")
    if format is None:
        name = path.name.lower()
        longest_first = sorted(_SUFFIXES, key=len, reverse=True)
        suffix = next((s for s in longest_first if name.endswith(s)), None)
        if suffix is None:
            known = ", ".join(sorted(_SUFFIXES))
            raise InputError(
                f"file '{path}': unknown table format '{path.suffix}' (known: {known}; or pass format=)"
            )
        format = _SUFFIXES[suffix]
    if format not in _FORMATS:
        raise InputError(f"file '{path}': unknown format '{format}' (known: {', '.join(_FORMATS)})")
    if path.stat().st_size == 0:
        raise InputError(f"file '{path}' is empty")
    try:
        with warnings.catch_warnings():
            # a library's warnings (astropy's VerifyWarning on a cut header, unit notes) never
            # reach the user's terminal as extra lines; a truncation warning is our error
            warnings.simplefilter("ignore")
            warnings.filterwarnings("error", message=".*[Tt]runcat")
            if format == "ascii.csv" and _starts_with(path, b"# %ECSV"):
                format = "ascii.ecsv"
            if format in ("hdf5", "pandas.hdf5", "astropy.hdf5"):
                table = _read_hdf5(path, format)
            elif format == "ascii.csv":
                _check_csv_complete(path)
                table = Table.read(path, format=format)
            elif format == "fits":
                table = Table.read(path, format="fits", memmap=False)
            else:
                table = Table.read(path, format=format)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - any reader failure becomes one line naming the file
        message = " ".join(str(error).split())[:200] or type(error).__name__
        kind = type(error).__name__
        raise InputError(f"file '{path}': cannot be read as {format} ({kind}: {message})") from None
    if not isinstance(table, Table):  # pragma: no cover - defensive
        raise InputError(f"file '{path}': did not contain a table")
    return table


def _starts_with(path: Path, prefix: bytes) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(prefix)) == prefix


def _check_csv_complete(path: Path) -> None:
    """InputError if a CSV file's last row has fewer fields than its header (a cut-off file)."""
    with open(path, "rb") as handle:
        head = handle.read(65536)
        handle.seek(max(0, path.stat().st_size - 65536))
        tail = handle.read()
    lines = [x for x in head.decode("utf-8", "replace").splitlines() if x.strip() and x[0] != "#"]
    last = [x for x in tail.decode("utf-8", "replace").splitlines() if x.strip()]
    if len(lines) < 2 or not last:
        return
    rows = list(csv.reader([lines[0], last[-1]]))
    if len(rows[1]) < len(rows[0]):
        raise InputError(
            f"file '{path}': the last row has {len(rows[-1])} of {len(rows[0])} fields;"
            " the file looks truncated"
        )


def _read_hdf5(path: Path, format: str) -> Table:
    with tables.open_file(str(path), mode="r") as h5:
        is_pandas = any("pandas_type" in group._v_attrs for group in h5.walk_groups())
        if format == "pandas.hdf5" or (format == "hdf5" and is_pandas):
            pandas_keys = [g._v_pathname for g in h5.walk_groups() if "pandas_type" in g._v_attrs]
        else:
            pandas_keys = []
            datasets = [
                node
                for node in h5.walk_nodes("/", classname="Table")
                if not node._v_name.endswith(".__table_column_meta__")
            ]
            if not datasets:
                raise InputError(f"file '{path}': no table found in the HDF5 file")
            node = datasets[0]
            table = Table(node.read())
            meta_name = node._v_name + ".__table_column_meta__"
            if meta_name in node._v_parent._v_children:
                lines = node._v_parent._v_children[meta_name].read()
                header = [line.decode("utf-8") for line in np.asarray(lines).ravel()]
                _apply_serialized_meta(table, header)
            else:
                attrs = node._v_attrs
                table.meta.update(
                    {
                        key: attrs[key].item() if isinstance(attrs[key], np.generic) else attrs[key]
                        for key in attrs._f_list("user")
                        if not key.startswith("FIELD_")
                    }
                )
            table.convert_bytestring_to_unicode()
            return table
    import pandas as pd  # local import: pandas takes ~0.4 s to load, and only its HDF5 tables need it

    if not pandas_keys:
        raise InputError(f"file '{path}': no pandas table found in the HDF5 file")
    frame = pd.read_hdf(path, key=pandas_keys[0])
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    return _as_table(frame, f"file '{path}'")


def _apply_serialized_meta(table: Table, lines: list[str]) -> None:
    """Apply astropy's serialized HDF5 header (units, descriptions, meta) to ``table``."""
    header = table_meta.get_header_from_yaml(lines)
    if "meta" in header:
        table.meta = header["meta"]
    columns = {item["name"]: item for item in header.get("datatype", [])}
    for column in table.columns.values():
        for attr in ("description", "format", "unit", "meta"):
            if attr in columns.get(column.name, {}):
                setattr(column, attr, columns[column.name][attr])
    if "__serialized_columns__" in table.meta:
        constructed = table_serialize._construct_mixins_from_columns(table)
        table.__dict__.update(constructed.__dict__)


def read_stars(
    path: str | os.PathLike,
    columns: ColumnMap | Mapping[str, Any] | None = None,
    *,
    gaia_frame: StreamFrame | str | None = None,
    reflex_distance: Any = None,
    format: str | None = None,
    optional_bands: Sequence[str] = (),
) -> StarTable:
    """Read a table file and validate it as stars (:func:`read_table`, then :meth:`StarTable.from_table`).

    Arguments:
        path: The file.
        columns: The column mapping.
        gaia_frame: If given, the file is a raw Gaia archive table, transformed
            into this stream frame (:meth:`StarTable.from_gaia`).
        reflex_distance: Passed on to the Gaia transformation.
        format: The file's format, if its suffix does not tell.
        optional_bands: Bands that may be absent from the file: a band whose
            column is missing is unobserved (NaN) for every star, and listed in
            ``meta["unobserved_bands"]`` (scoring then uses the other coordinates).

    Example:
        >>> import tempfile, pathlib
        >>> from astropy.table import Table
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "stars.ecsv"
        >>> Table({"phi1": [-50.0], "phi2": [0.2], "g": [19.5]}).write(path)
        >>> stars = read_stars(path, {"bands": ["g"]})
        >>> stars.bands, stars.mags["g"].tolist(), stars.meta["source"] == f"file '{path}'"
        (('g',), [19.5], True)
    """
    table = read_table(path, format=format)
    name = f"file '{path}'"
    absent: list[str] = []
    if optional_bands:
        cmap = columns if isinstance(columns, ColumnMap) else ColumnMap.from_dict(dict(columns) if columns else None)
        absent = [b for b in optional_bands if b in cmap.bands and cmap.bands[b] not in table.colnames]
        if absent:
            def keep(mapping: Mapping[str, str]) -> dict[str, str]:
                return {k: v for k, v in mapping.items() if k not in absent}

            columns = cmap.model_copy(
                update={"bands": keep(cmap.bands), "band_errors": keep(cmap.band_errors), "extinction": keep(cmap.extinction)}
            )
    if gaia_frame is not None:
        stars = StarTable.from_gaia(
            table, gaia_frame, columns, reflex_distance=reflex_distance, name=name
        )
    else:
        stars = StarTable.from_table(table, columns, name=name)
    if absent:
        unobserved = {band: np.full(len(stars), np.nan) for band in absent}
        stars = dataclasses.replace(
            stars, mags={**stars.mags, **unobserved}, meta={**stars.meta, "unobserved_bands": absent}
        )
    return stars
