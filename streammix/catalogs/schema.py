"""Reading a catalog's own file into streammix's common schema.

Common schema (:func:`load`)
    ``source_id`` (int64, masked where unknown), ``ra`` and ``dec`` (deg, ICRS),
    ``p_member`` (float, NaN where the catalog has no probabilities),
    ``member_flag`` (bool: a member by the catalog's own cut), ``catalog``
    (name); every other column is kept, as ``orig_<name>`` where its name
    collides with the schema. A SkyCoord column (ECSV mixin) becomes its ICRS
    components ``<name>.ra``, ``<name>.dec``, ``<name>.distance``... A column
    with several values per star (e.g. 250 samples) becomes ``<name>_mean``,
    ``_q05``, ``_q50`` and ``_q95``, listed in ``meta["summarised"]``.
"""

from __future__ import annotations

import ast
import fnmatch
import operator
import os
import re
import warnings
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import (
    Angle,
    SkyCoord,
    UnitSphericalCosLatDifferential,
    UnitSphericalDifferential,
    UnitSphericalRepresentation,
)
from astropy.table import MaskedColumn, QTable, Table

from ..errors import InputError
from ..tracks import galstreams_track
from .download import fetch
from .registry import Catalog, get_catalog

__all__ = ["SCHEMA", "evaluate_expression", "load", "read_catalog_file", "to_schema"]

#: Columns every loaded catalog has, in this order.
SCHEMA = ("source_id", "ra", "dec", "p_member", "member_flag", "catalog")

_SKYCOORD_PARTS = ("ra", "dec", "distance", "pm_ra_cosdec", "pm_dec", "radial_velocity")


def read_catalog_file(path: str | os.PathLike, format: str | None = None) -> Table:
    """Read one catalog file (ECSV, FITS, VOTable, MRT...) with astropy, quietly.

    astropy's own warnings (unknown VizieR units, VOTable spec notes, FITS
    card fixes) are kept from the user's terminal; a file astropy cannot read
    is one :class:`~streammix.errors.InputError` naming it.

    Arguments:
        path: The file.
        format: astropy format (None: guessed; ``.vot`` files as VOTable).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.ecsv"
        >>> Table({"stream (50%)": [0.9]}).write(path)
        >>> read_catalog_file(path).colnames
        ['stream (50%)']
    """
    path = Path(path)
    fmt = format or ("votable" if path.suffix == ".vot" else None)
    options = {"format": fmt} if fmt else {}
    if fmt == "votable":
        options["use_names_over_ids"] = True  # VizieR's names ('[Fe/H]'), not its XML IDs ('__Fe_H_')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Table.read(path, **options)
    except Exception as error:  # noqa: BLE001 - any reader failure is one line naming the file
        message = " ".join(str(error).split())[:160] or type(error).__name__
        raise InputError(f"file '{path}': cannot be read as a table ({type(error).__name__}: {message})") from None


def _read_table(cat: Catalog, paths: list[Path]) -> tuple[Table, Path]:
    formats = {f.key: f.format for f in cat.files}
    if cat.table:
        chosen = [p for p in paths if fnmatch.fnmatchcase(p.name, cat.table)]  # a name or a pattern
        if not chosen:
            raise InputError(f"catalog '{cat.name}': table file '{cat.table}' not among the fetched files")
    else:
        chosen = paths
    errors = []
    for path in chosen:
        try:
            return read_catalog_file(path, formats.get(path.name)), path
        except InputError as error:
            errors.append(str(error))
    raise InputError(f"catalog '{cat.name}': no readable table among {', '.join(p.name for p in chosen)} ({'; '.join(errors)})")


# ----------------------------------------------------------------------------- columns


def _flatten(table: Table) -> tuple[Table, dict[str, str]]:
    """SkyCoord columns as their ICRS components; multi-valued columns summarised."""
    out = Table(meta=dict(table.meta))
    summarised: dict[str, str] = {}
    for name in table.colnames:
        col = table[name]
        if isinstance(col, SkyCoord):
            icrs = col.icrs
            motion = col.data.differentials.get("s")
            stored = {"ra", "dec"}
            if not isinstance(col.data, UnitSphericalRepresentation):
                stored.add("distance")
            if motion is not None:
                stored |= {"pm_ra_cosdec", "pm_dec"}
                if not isinstance(motion, (UnitSphericalCosLatDifferential, UnitSphericalDifferential)):
                    stored.add("radial_velocity")  # else astropy's value is a made-up 0
            for part in (p for p in _SKYCOORD_PARTS if p in stored):
                try:
                    value = getattr(icrs, part)
                except (AttributeError, TypeError, ValueError):
                    continue
                out[f"{name}.{part}"] = u.Quantity(value)
            continue
        shape = getattr(col, "shape", (len(table),))
        if len(shape) > 1 and int(np.prod(shape[1:])) > 1:
            values = np.ma.filled(np.ma.asarray(getattr(col, "value", col), dtype=float), np.nan)
            values = values.reshape(len(table), -1)
            unit = getattr(col, "unit", None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
                parts = {"mean": np.nanmean(values, axis=1)}
                for q in (5, 50, 95):
                    parts[f"q{q:02d}"] = np.nanpercentile(values, q, axis=1)
            for key, value in parts.items():
                out[f"{name}_{key}"] = value if unit is None else value * unit
            summarised[name] = f"{values.shape[1]} values per row -> {name}_mean, _q05, _q50, _q95"
            continue
        out[name] = col
    return out, summarised


def _pick(table: Table, cat: Catalog, key: str, required: bool, path: Path, names: tuple[str, ...] | None = None) -> str | None:
    names = cat.columns.get(key, ()) if names is None else names
    for n in names:
        if n in table.colnames:
            return n
    if required or (names and len(names) == 1):
        raise InputError(
            f"catalog '{cat.name}': file '{path.name}': column for {key} ({', '.join(names) or 'not mapped'}) not found; "
            f"columns are {', '.join(table.colnames[:30])}"
        )
    return None


def _values(col: Any, unit: u.UnitBase | None = None) -> np.ndarray:
    """A column as floats (NaN where masked), in ``unit`` when it has one."""
    col_unit = getattr(col, "unit", None)
    values = np.ma.filled(np.ma.asarray(getattr(col, "value", col), dtype=float), np.nan)
    if unit is not None and col_unit is not None and col_unit != u.dimensionless_unscaled:
        try:
            values = (values * u.Unit(col_unit)).to_value(unit)
        except (u.UnitsError, ValueError, TypeError):
            raise InputError(f"column '{getattr(col, 'name', '?')}': unit '{col_unit}' is not convertible to {unit}") from None
    return np.asarray(values, dtype=float)


def _degrees(col: Any, hours: bool = False) -> np.ndarray:
    """Angles in degrees from numbers (with or without a unit) or sexagesimal text."""
    data = np.ma.asarray(getattr(col, "value", col))
    if data.dtype.kind in "US":  # VizieR's default form: '15 16 05.3' (h:m:s) / '-00 06 41' (d:m:s)
        unit = str(getattr(col, "unit", "") or "")
        as_hours = "h" in unit or (hours and not unit)
        text = np.ma.filled(data, "").astype(str)
        out = np.full(len(text), np.nan)
        ok = np.char.str_len(np.char.strip(text)) > 0
        try:
            out[ok] = Angle(text[ok], unit=u.hourangle if as_hours else u.deg).deg
        except (ValueError, TypeError):
            raise InputError(f"column '{getattr(col, 'name', '?')}': cannot read its values as angles") from None
        return out
    return _values(col, u.deg)


def _source_ids(col: Any) -> MaskedColumn:
    data = np.ma.asarray(col)
    mask = np.ma.getmaskarray(data).copy()
    try:
        ids = np.ma.filled(data, 0).astype(np.int64)
    except (TypeError, ValueError):
        raise InputError(f"column '{getattr(col, 'name', 'source_id')}': not integer source ids") from None
    mask |= ids <= 0
    return MaskedColumn(np.where(mask, 0, ids), mask=mask, dtype=np.int64)


# ----------------------------------------------------------------------------- membership expressions


_COMPARE = {ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}


def evaluate_expression(expression: str, table: Table) -> np.ndarray:
    """A membership cut over a table's columns, as one bool per row.

    The language is small and safe (parsed, never executed): column names
    (in backticks where they have spaces or symbols), numbers, ``&``, ``|``,
    ``~`` (and ``and``, ``or``, ``not``), comparisons (in parentheses when
    joined by ``&``/``|``, which bind tighter), and ``mean(column)``,
    the mean over a column's values per row (e.g. 250 samples). Masked or
    NaN values count as False.

    Arguments:
        expression: E.g. ``"pm_mask & gi_cmd_mask"`` or ``"`stream (50%)` > 0.8"``.
        table: The catalog as read.

    Example:
        >>> t = Table({"pm_mask": [True, True, False], "gi_cmd_mask": [True, False, True],
        ...            "stream (50%)": [0.9, 0.85, 0.2]})
        >>> evaluate_expression("pm_mask & gi_cmd_mask", t).tolist()
        [True, False, False]
        >>> evaluate_expression("(`stream (50%)` > 0.8) & ~gi_cmd_mask", t).tolist()
        [False, True, False]
    """
    names: dict[str, str] = {}

    def quoted(match: re.Match) -> str:
        key = f"__column{len(names)}__"
        names[key] = match.group(1)
        return key

    code = re.sub(r"`([^`]*)`", quoted, expression)
    where = f"membership expression {expression!r}"
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except SyntaxError:
        raise InputError(f"{where}: not a valid expression") from None
    n = len(table)

    def column(name: str) -> np.ndarray:
        if name not in table.colnames:
            raise InputError(f"{where}: column '{name}' not found; columns are {', '.join(table.colnames[:30])}")
        col = table[name]
        data = np.ma.asarray(getattr(col, "value", col))
        if data.dtype.kind == "b":
            return np.ma.filled(data, False)
        return np.ma.filled(data.astype(float), np.nan)

    def truth(node: ast.AST) -> np.ndarray:
        value = np.asarray(ev(node))
        if value.dtype != bool:  # `a > 0.8 & b` parses as `a > (0.8 & b)`, as in Python and numpy
            raise InputError(f"{where}: '{ast.unparse(node)}' is not true/false; put comparisons joined by & | in parentheses")
        return value

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Name):
            return column(names.get(node.id, node.id))
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool)):
            return node.value
        if isinstance(node, ast.BoolOp):
            parts = [np.asarray(ev(v), dtype=bool) for v in node.values]
            return np.logical_and.reduce(parts) if isinstance(node.op, ast.And) else np.logical_or.reduce(parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            left, right = truth(node.left), truth(node.right)
            return left & right if isinstance(node.op, ast.BitAnd) else left | right
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Invert, ast.Not)):
            return ~truth(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Compare):
            result, left = np.ones(n, bool), ev(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                if type(op) not in _COMPARE:
                    raise InputError(f"{where}: comparison {type(op).__name__} not allowed")
                right = ev(right_node)
                with np.errstate(invalid="ignore"):
                    result &= np.asarray(_COMPARE[type(op)](left, right), dtype=bool)
                left = right
            return result
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "mean"
                and len(node.args) == 1 and not node.keywords):
            values = np.asarray(ev(node.args[0]), dtype=float)
            if values.ndim < 2:
                return values
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.nanmean(values.reshape(n, -1), axis=1)
        raise InputError(f"{where}: '{ast.unparse(node)}' is not allowed (columns, numbers, & | ~, comparisons, mean())")

    result = np.asarray(ev(tree))
    if result.shape != (n,) or result.dtype != bool:
        raise InputError(f"{where}: does not give one true/false value per row")
    return result


# ----------------------------------------------------------------------------- the schema


def to_schema(table: Table, cat: Catalog, path: Path | None = None, *, selection: str | None = None) -> QTable:
    """Map a catalog's own table into the common schema (see the module docstring).

    Membership follows the registry: a probability column cut at the
    paper's threshold, a flag column, an expression over columns (e.g. the
    boolean masks of a region catalog), or every row.

    Arguments:
        table: The table as read from the catalog's file.
        cat: Its registry entry (column mapping, membership).
        path: The file it came from (for messages).
        selection: One of ``cat.membership.selections`` instead of the default cut.

    Example:
        >>> from astropy.table import Table
        >>> cat = get_catalog("tavangar2025_gd1")
        >>> raw = Table({"source_id": [5, 0], "ra": [150.0, 151.0], "dec": [30.0, 31.0], "memb_prob": [0.9, 0.2]})
        >>> out = to_schema(raw, cat)
        >>> out.colnames[:6], out["member_flag"].tolist(), bool(out["source_id"].mask[1])
        (['source_id', 'ra', 'dec', 'p_member', 'member_flag', 'catalog'], [True, False], True)
    """
    path = path or Path(cat.name)
    membership = cat.membership
    if selection is not None and selection not in membership.selections:
        known = ", ".join(membership.selections) or "none"
        raise InputError(f"catalog '{cat.name}': selection '{selection}' unknown (known: {known})")
    flat, summarised = _flatten(table)
    n = len(flat)
    id_name = _pick(flat, cat, "source_id", False, path)
    ra_name = _pick(flat, cat, "ra", id_name is None, path)  # without positions, source_id must match
    dec_name = _pick(flat, cat, "dec", id_name is None, path)
    p_names = membership.column if membership.kind == "probability" else cat.columns.get("p_member", ())
    p_name = _pick(flat, cat, "p_member", membership.kind == "probability", path, names=p_names)
    out = QTable()
    out["source_id"] = _source_ids(flat[id_name]) if id_name else MaskedColumn(np.zeros(n, np.int64), mask=np.ones(n, bool))
    positions = ra_name is not None and dec_name is not None
    out["ra"] = (_degrees(flat[ra_name], hours=True) if positions else np.full(n, np.nan)) * u.deg
    out["dec"] = (_degrees(flat[dec_name]) if positions else np.full(n, np.nan)) * u.deg
    p = _values(flat[p_name]) if p_name else np.full(n, np.nan)
    if p_name and np.nanmax(np.abs(np.nan_to_num(p)), initial=0.0) > 1.0 + 1e-9:
        raise InputError(f"catalog '{cat.name}': column '{p_name}' has values outside [0, 1]; not a probability")
    out["p_member"] = p
    if selection is not None:
        flag = evaluate_expression(membership.selections[selection], table if _has(table, membership.selections[selection]) else flat)
    elif membership.kind == "probability":
        with np.errstate(invalid="ignore"):
            flag = (p > membership.threshold) if membership.strict else (p >= membership.threshold)
    elif membership.kind == "flag":
        flag_name = _pick(flat, cat, "member_flag", True, path, names=membership.column)
        flag = np.asarray(np.ma.filled(np.ma.asarray(flat[flag_name]), False)).astype(bool)
    elif membership.kind == "expression":
        flag = evaluate_expression(str(membership.expression), table if _has(table, str(membership.expression)) else flat)
    elif membership.kind == "unknown":
        flag = np.zeros(n, bool)
    else:
        flag = np.ones(n, bool)
    out["member_flag"] = np.asarray(flag, dtype=bool)
    out["catalog"] = np.full(n, cat.name)
    for name in flat.colnames:
        if name in (ra_name, dec_name, id_name, p_name):
            continue
        out["orig_" + name if name in SCHEMA else name] = flat[name]
    out.meta.update({
        "catalog": cat.name, "title": cat.title, "doi": cat.doi, "file": path.name,
        "membership": membership.describe(selection), "selection": selection or "default",
        "summarised": summarised, "positions": "from the file" if positions else "none in the file (NaN)",
    })
    return out


def _has(table: Table, expression: str) -> bool:
    """Whether every name in ``expression`` is a column of ``table`` as read (2-D columns unsummarised)."""
    quoted = re.findall(r"`([^`]*)`", expression)
    bare = re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", re.sub(r"`[^`]*`", " ", expression))
    words = [w for w in bare if w not in ("and", "or", "not", "mean", "True", "False")]
    return all(name in table.colnames for name in [*quoted, *words])


def load(
    name: str,
    *,
    cache: str | os.PathLike | None = None,
    registry: str | os.PathLike | None = None,
    track: str | None = None,
    reference: str | None = None,
    selection: str | None = None,
    **fetch_options: Any,
) -> QTable:
    """A published catalog in the common schema, fetched first if not cached.

    Arguments:
        name: Catalog name (see :func:`~streammix.catalogs.list_catalogs`).
        cache: Cache folder (see :func:`~streammix.catalogs.cache_dir`).
        registry: Registry folder.
        track: For ``kind: tracks`` (galstreams): the stream, e.g. ``"GD-1"``.
        reference: For galstreams: which track of that stream (default as galstreams).
        selection: A named cut of the registry entry instead of its default.
        **fetch_options: Passed to :func:`~streammix.catalogs.fetch` (timeout,
            retries, backoff, progress, max_size, report).

    Returns:
        One row per star (``source_id``, ``ra``, ``dec``, ``p_member``,
        ``member_flag``, ``catalog``, then the catalog's own columns), or for a
        track library one row per track point (``p_member`` NaN).

    Example:
        >>> t = load("galstreams", track="GD-1", reference="pricewhelan2018")
        >>> t.colnames[:6], t["ra"].unit
        (['source_id', 'ra', 'dec', 'p_member', 'member_flag', 'catalog'], Unit("deg"))
    """
    cat = get_catalog(name, registry)
    if cat.kind == "tracks":
        return _load_tracks(cat, track, reference)
    paths = fetch(name, cache=cache, registry=registry, **fetch_options)
    table, path = _read_table(cat, paths)
    return to_schema(table, cat, path, selection=selection)


def _load_tracks(cat: Catalog, track: str | None, reference: str | None) -> QTable:
    if not track:
        raise InputError(f"catalog '{cat.name}': holds stream tracks, not members; name one with track= (e.g. 'GD-1')")
    found = galstreams_track(track, reference)
    points = found.to_table()
    ra, dec = found.frame.to_icrs(np.asarray(found.phi1), np.asarray(found.phi2))
    n = len(points)
    out = QTable()
    out["source_id"] = MaskedColumn(np.zeros(n, np.int64), mask=np.ones(n, bool))
    out["ra"] = np.atleast_1d(ra) * u.deg
    out["dec"] = np.atleast_1d(dec) * u.deg
    out["p_member"] = np.full(n, np.nan)
    out["member_flag"] = np.zeros(n, bool)
    out["catalog"] = np.full(n, cat.name)
    for col in points.colnames:
        out[col] = points[col]
    out.meta.update({"catalog": cat.name, "track": found.name, "kind": "tracks", "membership": "none (tracks)"})
    return out
