"""How a fit's members agree with a published catalog: matching, agreement, a figure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, match_coordinates_sky
from astropy.table import MaskedColumn, QTable, Table

from ..errors import InputError
from ..frames import StreamFrame, get_frame
from ..output import atomic_path
from .schema import _degrees, _source_ids, _values, load, read_catalog_file

__all__ = ["compare_with_catalog", "crossmatch", "crossmatch_figure"]


def _member_probability(members: Table, probability: str | None) -> tuple[str, np.ndarray]:
    if probability is None:
        components = members.meta.get("components") or []
        for candidate in ["p_member", *(f"p_{c}" for c in components[:1]), "p_stream"]:
            if candidate in members.colnames:
                probability = candidate
                break
        else:
            raise InputError("members table: no probability column (p_member, p_stream...); pass probability=")
    if probability not in members.colnames:
        raise InputError(f"members table: column '{probability}' not found")
    return probability, np.asarray(_values(members[probability]), dtype=float)


def _member_coords(members: Table, frame: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if "ra" in members.colnames and "dec" in members.colnames:
        return _degrees(members["ra"]), _degrees(members["dec"])
    if "phi1" in members.colnames and "phi2" in members.colnames:
        if frame is None:
            raise InputError("members table: no ra/dec columns; pass frame= (e.g. 'GD-1') to convert phi1/phi2")
        stream_frame = frame if isinstance(frame, StreamFrame) else get_frame(str(frame))
        ra, dec = stream_frame.to_icrs(_degrees(members["phi1"]), _degrees(members["phi2"]))
        return np.atleast_1d(ra), np.atleast_1d(dec)
    return None


def _usable_ids(table: Table) -> tuple[np.ndarray, np.ndarray]:
    n = len(table)
    if "source_id" not in table.colnames:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    col = _source_ids(table["source_id"])
    return np.asarray(col.data, dtype=np.int64), ~np.ma.getmaskarray(col)


def _none_if_nan(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr  # local import: scipy.stats takes ~0.6 s to load

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan
    return float(spearmanr(a, b).statistic)


def crossmatch(
    catalog: Table,
    members: Table | str | os.PathLike,
    *,
    radius: u.Quantity = 1.0 * u.arcsec,
    frame: Any = None,
    probability: str | None = None,
    threshold: float = 0.5,
) -> tuple[QTable, dict[str, Any]]:
    """Match a fit's members with a published catalog: by source_id, then by sky position.

    A member row is matched by ``source_id`` when both sides have one; the rest
    are matched to the nearest remaining catalog star within ``radius`` (one to
    one, nearest first), unless both have source_ids that differ. Each side
    counts as a member by its own cut: ours ``p >= threshold``, the catalog's
    its ``member_flag`` (the paper's own threshold or mask, see
    :func:`~streammix.catalogs.load`).

    Arguments:
        catalog: A table in the common schema (:func:`~streammix.catalogs.load`).
        members: streammix members (``source_id``, ``ra``/``dec`` or
            ``phi1``/``phi2``, a probability column), or a path to one.
        radius: Largest separation for a positional match.
        frame: Stream frame (or its name) converting phi1/phi2 to ra/dec when
            the members have no ra/dec.
        probability: Our probability column (default ``p_member``, else
            ``p_<first component>``, else ``p_stream``).
        threshold: Our probability at or above which a star counts as a member.

    Returns:
        ``(matched, summary)``: one row per matched pair (``member_index``,
        ``catalog_index``, ``match_by``, ``separation``, ``source_id``, ``ra``,
        ``dec``, ``p_ours``, ``p_catalog``, ``catalog_member``), and a dict
        (JSON-ready; None where undefined) with the counts, the overlap, the
        confusion table of the matched stars at both cuts (``confusion``:
        ``both``, ``ours_only``, ``catalog_only``, ``neither``), the
        agreement, and the Pearson and Spearman (rank) correlations of the
        two probabilities.

    Example:
        >>> from astropy.table import QTable
        >>> cat = QTable({"source_id": [1, 2, 3], "ra": [10.0, 20.0, 30.0] * u.deg,
        ...               "dec": [0.0, 0.0, 0.0] * u.deg, "p_member": [0.9, 0.8, 0.1],
        ...               "member_flag": [True, True, False]})
        >>> ours = QTable({"source_id": [2, 3, 0], "ra": [20.0, 30.0, 10.0001] * u.deg,
        ...                "dec": [0.0, 0.0, 0.0] * u.deg, "p_stream": [0.7, 0.2, 0.95]})
        >>> matched, summary = crossmatch(cat, ours)
        >>> matched["match_by"].tolist(), summary["n_both_members"], summary["classification_agreement"]
        (['source_id', 'source_id', 'position'], 2, 1.0)
        >>> summary["confusion"]
        {'both': 2, 'ours_only': 0, 'catalog_only': 0, 'neither': 1}
    """
    if not isinstance(members, Table):
        path = Path(members)
        if not path.is_file():
            raise InputError(f"file '{path}': not found")
        members = QTable(read_catalog_file(path))
    for col in ("ra", "dec"):
        if col not in catalog.colnames:
            raise InputError(f"catalog table: column '{col}' missing (use streammix.catalogs.load)")
    radius = u.Quantity(radius, u.arcsec)
    p_column, p_ours = _member_probability(members, probability)
    n_mem, n_cat = len(members), len(catalog)
    mem_ids, mem_ok = _usable_ids(members)
    cat_ids, cat_ok = _usable_ids(catalog)

    cat_index = np.full(n_mem, -1, np.int64)
    # 1. by source_id (first catalog row of each id)
    if cat_ok.any() and mem_ok.any():
        rows = np.flatnonzero(cat_ok)
        order = np.argsort(cat_ids[rows], kind="stable")
        sorted_ids, sorted_rows = cat_ids[rows][order], rows[order]
        pos = np.clip(np.searchsorted(sorted_ids, mem_ids), 0, len(sorted_ids) - 1)
        hit = mem_ok & (sorted_ids[pos] == mem_ids)
        cat_index[hit] = sorted_rows[pos[hit]]
    by_id = cat_index >= 0

    # 2. by position, for what is left
    cat_ra, cat_dec = _degrees(catalog["ra"]), _degrees(catalog["dec"])
    coords = _member_coords(members, frame)
    separation = np.full(n_mem, np.nan)
    if coords is not None:
        mem_ra, mem_dec = coords
        ok_mem = np.isfinite(mem_ra) & np.isfinite(mem_dec)
        both = by_id & ok_mem
        if both.any():
            a = SkyCoord(mem_ra[both] * u.deg, mem_dec[both] * u.deg)
            b = SkyCoord(cat_ra[cat_index[both]] * u.deg, cat_dec[cat_index[both]] * u.deg)
            separation[both] = a.separation(b).to_value(u.arcsec)
        taken = np.zeros(n_cat, bool)
        taken[cat_index[by_id]] = True
        left = np.flatnonzero(~by_id & ok_mem)
        free = np.flatnonzero(~taken & np.isfinite(cat_ra) & np.isfinite(cat_dec))
        if len(left) and len(free):
            idx, sep, _ = match_coordinates_sky(
                SkyCoord(mem_ra[left] * u.deg, mem_dec[left] * u.deg),
                SkyCoord(cat_ra[free] * u.deg, cat_dec[free] * u.deg),
            )
            target = free[np.atleast_1d(idx)]
            sep = np.atleast_1d(sep.to_value(u.arcsec))
            good = sep <= radius.to_value(u.arcsec)
            good &= ~(mem_ok[left] & cat_ok[target] & (mem_ids[left] != cat_ids[target]))
            cand, target, sep = left[good], target[good], sep[good]
            order = np.argsort(sep, kind="stable")  # one to one: nearest wins
            _, first = np.unique(target[order], return_index=True)
            keep = order[first]
            cat_index[cand[keep]] = target[keep]
            separation[cand[keep]] = sep[keep]
    matched_rows = np.flatnonzero(cat_index >= 0)
    ci = cat_index[matched_rows]

    p_cat_all = np.asarray(_values(catalog["p_member"])) if "p_member" in catalog.colnames else np.full(n_cat, np.nan)
    if "member_flag" in catalog.colnames:
        flag_all = np.asarray(catalog["member_flag"], dtype=bool)
    else:
        flag_all = np.nan_to_num(p_cat_all, nan=-1.0) >= threshold
    ids_out = np.where(mem_ok[matched_rows], mem_ids[matched_rows], cat_ids[ci])
    ids_mask = ~(mem_ok[matched_rows] | cat_ok[ci])
    matched = QTable()
    matched["member_index"] = matched_rows
    matched["catalog_index"] = ci
    matched["match_by"] = np.where(by_id[matched_rows], "source_id", "position").astype("U9")
    matched["separation"] = separation[matched_rows] * u.arcsec
    matched["source_id"] = MaskedColumn(ids_out, mask=ids_mask, dtype=np.int64)
    matched["ra"] = cat_ra[ci] * u.deg
    matched["dec"] = cat_dec[ci] * u.deg
    matched["p_ours"] = p_ours[matched_rows]
    matched["p_catalog"] = p_cat_all[ci]
    matched["catalog_member"] = flag_all[ci]

    ours_member = np.nan_to_num(p_ours, nan=-1.0) >= threshold
    pair_ours = ours_member[matched_rows]
    pair_cat = flag_all[ci]
    n_both = int((pair_ours & pair_cat).sum())
    n_ours, n_catm = int(ours_member.sum()), int(flag_all.sum())
    p_pair_ours, p_pair_cat = np.asarray(matched["p_ours"]), np.asarray(matched["p_catalog"])
    finite = np.isfinite(p_pair_ours) & np.isfinite(p_pair_cat)
    corr = np.nan
    if finite.sum() >= 3 and np.std(p_pair_ours[finite]) > 0 and np.std(p_pair_cat[finite]) > 0:
        corr = float(np.corrcoef(p_pair_ours[finite], p_pair_cat[finite])[0, 1])
    rank = _spearman(p_pair_ours[finite], p_pair_cat[finite])
    mad = float(np.median(np.abs(p_pair_ours[finite] - p_pair_cat[finite]))) if finite.any() else np.nan
    summary = {
        "catalog": str(catalog.meta.get("catalog", "")),
        "probability_column": p_column,
        "threshold": float(threshold),
        "catalog_cut": str(catalog.meta.get("membership", "member_flag")),
        "radius_arcsec": float(radius.to_value(u.arcsec)),
        "n_members_table": n_mem,
        "n_catalog": n_cat,
        "n_matched": int(len(matched_rows)),
        "n_matched_by_source_id": int(by_id.sum()),
        "n_matched_by_position": int(len(matched_rows) - by_id.sum()),
        "overlap_of_catalog": _none_if_nan(len(matched_rows) / n_cat if n_cat else np.nan),
        "n_ours_members": n_ours,
        "n_catalog_members": n_catm,
        "n_both_members": n_both,
        "n_catalog_members_matched": int(pair_cat.sum()),
        "confusion": {
            "both": n_both,
            "ours_only": int((pair_ours & ~pair_cat).sum()),
            "catalog_only": int((~pair_ours & pair_cat).sum()),
            "neither": int((~pair_ours & ~pair_cat).sum()),
        },
        "fraction_catalog_recovered": _none_if_nan(n_both / n_catm if n_catm else np.nan),
        "fraction_ours_in_catalog": _none_if_nan(n_both / n_ours if n_ours else np.nan),
        "classification_agreement": _none_if_nan(float(np.mean(pair_ours == pair_cat)) if len(ci) else np.nan),
        "correlation": _none_if_nan(corr),
        "rank_correlation": _none_if_nan(rank),
        "median_abs_difference": _none_if_nan(mad),
    }
    return matched, summary


def crossmatch_figure(matched: Table, summary: dict[str, Any], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Draw the agreement of a cross-match: our probability against the catalog's
    (or, for a catalog without probabilities, ours for its members and the rest),
    with both cuts and the confusion counts.

    Arguments:
        matched: The first result of :func:`crossmatch`.
        summary: Its second result.
        path: Image file to write (.png, .pdf...), atomically.
        overwrite: Replace an existing file.

    Example:
        >>> import tempfile, pathlib
        >>> cat = QTable({"source_id": [1, 2, 3], "ra": [1.0, 2.0, 3.0] * u.deg, "dec": [0.0] * 3 * u.deg,
        ...               "p_member": [0.9, 0.5, 0.1], "member_flag": [True, False, False]})
        >>> matched, summary = crossmatch(cat, QTable({"source_id": [1, 2, 3], "p_stream": [0.8, 0.6, 0.2]}))
        >>> crossmatch_figure(matched, summary, pathlib.Path(tempfile.mkdtemp()) / "x.png").suffix
        '.png'
    """
    from matplotlib.figure import Figure  # local import: matplotlib takes ~0.7 s to load

    path = Path(path)
    p_ours = np.asarray(matched["p_ours"], dtype=float)
    p_cat = np.asarray(matched["p_catalog"], dtype=float)
    flag = np.asarray(matched["catalog_member"], dtype=bool)
    fig = Figure(figsize=(4.2, 3.8), layout="constrained")
    ax = fig.subplots()
    confusion = summary["confusion"]
    counts = (f"both {confusion['both']}, ours only {confusion['ours_only']}, "
              f"catalog only {confusion['catalog_only']}, neither {confusion['neither']}")
    if np.isfinite(p_cat).any():
        ax.scatter(p_cat, p_ours, s=4, c=np.where(flag, "C3", "C0"), alpha=0.6, rasterized=True)
        ax.axhline(summary["threshold"], color="0.4", lw=0.8, ls="--")  # our cut; red points pass the catalog's
        ax.set_xlabel(f"catalog probability ({summary['catalog']})")
        ax.set_ylabel(f"our {summary['probability_column']}")
        ax.set_xlim(-0.02, 1.02)
        rank = summary["rank_correlation"]
        counts += f"; rank corr. {rank:.3f}" if rank is not None else ""
    else:
        bins = np.linspace(0, 1, 21)
        ax.hist([p_ours[flag], p_ours[~flag]], bins=bins, stacked=True, label=["its members", "others matched"])
        ax.set_xlabel(f"our {summary['probability_column']} of matched stars")
        ax.set_ylabel("stars")
        ax.axvline(summary["threshold"], color="0.4", lw=0.8, ls="--")
        ax.legend(fontsize="small")
    ax.set_title(f"{summary['n_matched']} matched; catalog cut {summary['catalog_cut']}\n{counts}", fontsize="x-small")
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path


def compare_with_catalog(
    members: Table | str | os.PathLike,
    name: str,
    *,
    cache: str | os.PathLike | None = None,
    registry: str | os.PathLike | None = None,
    frame: Any = None,
    radius: u.Quantity = 1.0 * u.arcsec,
    threshold: float = 0.5,
    **fetch_options: Any,
) -> dict[str, Any]:
    """Load a published catalog and return :func:`crossmatch`'s summary against ``members``.

    This is what the pipeline calls to compare a fit's members with the published ones.

    Arguments:
        members: A fit's members table (or its path).
        name: Catalog name.
        cache: Cache folder.
        registry: Registry folder.
        frame: Stream frame for members without ra/dec.
        radius: Positional match radius.
        threshold: Our membership threshold (the catalog keeps its own).
        **fetch_options: Passed to :func:`~streammix.catalogs.fetch`.

    Example:
        >>> compare_with_catalog  # doctest: +ELLIPSIS
        <function compare_with_catalog at ...>
    """
    table = load(name, cache=cache, registry=registry, **fetch_options)
    return crossmatch(table, members, radius=radius, frame=frame, threshold=threshold)[1]
