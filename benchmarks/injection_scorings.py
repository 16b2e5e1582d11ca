"""Pooled calibration of every scoring an injection run kept, from its case files.

Usage::

    python benchmarks/injection_scorings.py injection_output/LABEL [LABEL2 ...] [--cases pm3_a pm2_a ...]
        [--config joint] [--columns p_injected p_injected_q50 p_injected_ensemble]
        [--split g_mean_psf_mag] [--error-edges 0.35 0.6 0.9]
        [--cuts '{parallax: [null, 1.0], pmra: [-7.0, -2.0], pmdec: [-15.0, -11.0], reflex_distance: 8.0}'
         [--frame gd1] [--pm-err-per-parallax-err 1.7] --parallax-zero-point -0.08]]

``benchmarks/injection.py`` writes ``<out>/<label>/<case>_<config>.ecsv``: the injected
stars and every real star that some scoring gave p > 0.05, with the scored column
``p_injected`` and (from 1d77aa2 on) every scoring beside it: ``p_injected_reference``
(the members table's ``p_injected``: member 0, or with ``fit.cross_fit`` the member
that held the star out, or the mean of those that did with ``fit.cross_fit_folds``),
``p_injected_q50`` (the members' median), ``p_injected_ensemble`` (the share of the members'
mean density) and, with ``fit.cross_fit_folds``, ``p_injected_one_per_fold`` (the first member
per fold alone). With several columns it also prints each one's rms distance from the first. This pools the chosen cases (default: those
>= 1 mas/yr from GD-1) and prints, for each column, the calibration in the bins of
p >= 0.1 holding >= 50 stars (the files do not hold every star below 0.05, so the
first bin is left out), its chi-square (sum of z^2, z from
:func:`streammix.pipeline.truth_metrics`: the scatter exact probabilities would
have), the bins off by more than 0.05, completeness and purity at p > 0.5 (with ``--split COLUMN``
also for the stars with and without that column, e.g. PS1 photometry). It also
prints the injected stars' observed-minus-true proper motions per case: the
catalogue's proper-motion box truncates the errors of a stream near its edge. With ``--cuts``
(``data.selection``'s mapping: the catalogue's cuts) and ``--error-edges``, each error bin also
gives, averaged over its injected stars (those the draw kept), the probability that a star at
its own true proper motions and parallax passes those cuts with its errors (proper-motion
errors ``--pm-err-per-parallax-err`` times the parallax error, the GD-1 configs' model; the
observed parallax centred on the true one plus ``--parallax-zero-point``), and the share of
them whose true values pass: how much of an injected star's error distribution the cuts
remove. (``inject_stream`` cuts a draw exactly only when the config declares
``data.selection``; otherwise it cuts it to the catalogue's own ranges per tenth of phi1, a
looser approximation of the same box, so stars whose true values lie outside the exact box
can be in such a draw.) With ``--odds-shift`` it also fits, for the first column (per
``--split`` subset and per case), the one constant shift of the log-odds that best calibrates it,
and gives the chi-square after it: whether a miscalibration is one factor in the odds (a
diagnostic of where a model's densities are off by a constant, not a recalibration to apply).
Several folders (runs of ``injection.py`` with other ``--seed``, so other draws of the
same cases) are pooled together: more injected stars per bin (the real stars are the same
catalogue's in every run, so the false members of the runs are not independent draws).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml
from _common import emit

FAR_CASES = ("pm3_a", "pm2_a", "pm2_b", "pm1_a", "pm1_b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="one or more injection runs' case folders, pooled: every case file of --cases each holds")
    parser.add_argument("--cases", nargs="*", default=list(FAR_CASES))
    parser.add_argument("--config", default="joint")
    parser.add_argument("--columns", nargs="*", default=["p_injected", "p_injected_reference", "p_injected_q50",
                                                         "p_injected_ensemble"])
    parser.add_argument("--split", default=None, metavar="COLUMN",
                        help="also print the first column's calibration separately for the stars with and without "
                        "COLUMN (e.g. g_mean_psf_mag: with and without PS1 photometry; masked, NaN or >= 1e10: without)")
    parser.add_argument("--error-edges", type=float, nargs="+", default=None, metavar="MAS",
                        help="also print, per bin of parallax_error between these edges (mas; and, with --split, for "
                        "the stars with and without that column), the injected stars against the sum of the first "
                        "column's p (the count the model expects) and the bin's calibration chi-square")
    parser.add_argument("--cuts", type=yaml.safe_load, default=None, metavar="YAML",
                        help="the catalogue's cuts (a data.selection mapping): with --error-edges, also the mean "
                        "probability that the bin's injected stars pass them (see above)")
    parser.add_argument("--frame", default="gd1", help="the stream frame of --cuts (default gd1)")
    parser.add_argument("--pm-err-per-parallax-err", type=float, default=1.7,
                        help="proper-motion error per parallax error of --cuts (the GD-1 configs' model: 1.7)")
    parser.add_argument("--parallax-zero-point", type=float, default=None,
                        help="mas, added to the true parallax for --cuts, as the injection run's config had it (needed "
                        "with --cuts: the GD-1 configs' -0.08 from session 29, -0.029 before)")
    parser.add_argument("--odds-shift", action="store_true",
                        help="also fit, for the first column (and with --split for the stars with and without that "
                        "column, and per case), the one log-odds shift that best calibrates it (maximum likelihood over the "
                        "stars with p >= 0.05, where the case files hold every star), with the chi-square after it: a "
                        "diagnostic of how much of a miscalibration is one constant factor in the odds")
    args = parser.parse_args()
    if args.cuts is not None and args.parallax_zero_point is None:
        parser.error("--cuts needs --parallax-zero-point (the injection run's data.parallax_zero_point: -0.08 for the "
                     "GD-1 configs from session 29, -0.029 for the runs before)")
    if args.cuts is not None and args.error_edges is None:
        parser.error("--cuts needs --error-edges (it adds columns to the table by parallax error)")
    cuts_config = None
    if args.cuts is not None:
        from streammix.config import Config
        from streammix.errors import InputError

        try:  # the field is a placeholder: only the frame and the cuts are used
            cuts_config = Config.from_dict({"frame": args.frame, "field": {"phi1": [-1.0, 1.0], "phi2": [-1.0, 1.0]},
                                            "data": {"selection": args.cuts}})
        except InputError as err:
            parser.error(f"--cuts: {err}")
    from astropy.table import Table, vstack

    from streammix.pipeline import truth_metrics

    tables, read = {}, []
    if len(set(map(Path.resolve, args.folders))) != len(args.folders):
        sys.exit("a folder is given twice: its stars would be pooled twice")
    for run, folder in enumerate(args.folders, 1):
        # a run of some of the cases (injection.py --cases) gives those; a folder with none of them is an error
        paths = [(case, folder / f"{case}_{args.config}.ecsv") for case in args.cases]
        found = [(case, path) for case, path in paths if path.is_file()]
        if not found:
            parser.error(f"{folder}: holds none of the case files {[path.name for _, path in paths]}")
        for case, path in found:
            read.append(case)
            table = Table.read(path)
            table["scoring_case"] = case
            tables[case if len(args.folders) == 1 else f"{case} (run {run})"] = table
    print("| case | injected | observed - true pm_phi1: 5/50/95 % (mean) | pm_phi2: 5/50/95 % (mean) |")
    print("|---|---|---|---|")
    for case, t in tables.items():
        injected = np.asarray(t["injected"], bool)
        cells = []
        for observed, true in (("pm_phi1", "true_pm_phi1_cosphi2"), ("pm_phi2", "true_pm_phi2")):
            d = np.asarray(t[observed], float)[injected] - np.asarray(t[true], float)[injected]
            d = d[np.isfinite(d)]
            cells.append(" / ".join(f"{v:+.2f}" for v in np.percentile(d, [5, 50, 95])) + f" ({d.mean():+.2f})")
        print(f"| {case} | {injected.sum()} | {cells[0]} | {cells[1]} |")
    pooled = vstack(list(tables.values()))
    truth = np.asarray(pooled["injected"], bool)
    summary = {}
    groups = [(column, None) for column in args.columns if column in pooled.colnames]
    if not groups:
        sys.exit(f"none of the columns {args.columns} is in the case files")
    if args.split is not None:
        if args.split not in pooled.colnames:
            sys.exit(f"--split {args.split}: not a column of the case files")
        values = np.ma.filled(np.ma.asarray(pooled[args.split], dtype=float), np.nan)  # masked entries are missing
        has = np.isfinite(values) & (np.abs(values) < 1e10)
        groups += [(groups[0][0], (f"with {args.split}", has)), (groups[0][0], (f"without {args.split}", ~has))]
    for column, subset in groups:
        keep = np.ones(truth.size, bool) if subset is None else subset[1]
        p = np.asarray(pooled[column], float)[keep]
        metrics = truth_metrics(p, truth[keep])
        shown = column
        if subset is not None:
            column = f"{column}, stars {subset[0]}"
            shown = f"{column} ({int(keep.sum())}, {int(truth[keep].sum())} injected)"
        bins, chi2 = calibration_chi2(metrics)
        off = [b for b in bins if abs(b["member_fraction"] - b["mean_p"]) > 0.05]
        print(f"\n{shown}: completeness {metrics['completeness']:.3f}, purity {metrics['purity']:.3f}, "
              f"{len(bins)} bins >= 0.1, chi-square {chi2:.1f}, {len(off)} off by more than 0.05")
        print("| p bin | stars | mean p | member fraction | difference | z |")
        print("|---|---|---|---|---|---|")
        for b in bins:
            print(f"| {b['p_low']:.1f}-{b['p_high']:.1f} | {b['n']} | {b['mean_p']:.3f} | {b['member_fraction']:.3f} | "
                  f"{b['member_fraction'] - b['mean_p']:+.3f} | {b['z']:+.1f} |")
        summary[column] = {"completeness": metrics["completeness"], "purity": metrics["purity"], "bins": len(bins),
                           "chi2": chi2, "off": len(off)}
    first = np.asarray(pooled[groups[0][0]], float)
    for column in [column for column, subset in groups[1:] if subset is None]:  # each further column against the first
        other = np.asarray(pooled[column], float)
        middle = (np.maximum(first, other) > 0.1) & (np.minimum(first, other) < 0.9)
        rms = float(np.sqrt(np.mean((other - first)[middle] ** 2))) if middle.any() else float("nan")
        print(f"\n{column} - {groups[0][0]}: rms {rms:.3f} over the {int(middle.sum())} stars with either in 0.1-0.9")
        summary[column]["rms_difference_from_first"] = rms
    if args.odds_shift:
        summary["odds_shift"] = odds_shifts(pooled, truth, groups, args.cases)
    if args.error_edges is not None:
        subsets = [subset for _, subset in groups if subset is not None]
        passing = None if cuts_config is None else pass_probability(pooled, truth, cuts_config, args)
        summary["by_error"] = by_error(pooled, truth, groups[0][0], args.error_edges, subsets, passing)
    emit({"folders": [str(folder) for folder in args.folders], "cases": sorted(set(read), key=args.cases.index), "scorings": summary})


def best_odds_shift(log_odds: np.ndarray, truth: np.ndarray) -> float:
    """The maximum-likelihood constant shift of ``log_odds`` (within +-5) against ``truth``:
    positive where the probabilities are under-confident (a diagnostic, not a recalibration)."""
    from scipy.optimize import minimize_scalar

    x, y = np.asarray(log_odds, float), np.asarray(truth, bool)

    def loss(shift: float) -> float:  # minus the log-likelihood of sigmoid(x + shift), stable in its tails
        return float(np.sum(np.where(y, np.logaddexp(0.0, -(x + shift)), np.logaddexp(0.0, x + shift))))

    return float(minimize_scalar(loss, bounds=(-5.0, 5.0), method="bounded").x)


def odds_shifts(pooled, truth, groups, cases) -> list[dict]:
    """For the first column, over all stars and each ``--split`` subset, pooled and per case: the
    maximum-likelihood constant shift of the log-odds (over the stars with p >= 0.05) and the
    calibration chi-square before and after it (a diagnostic, not a recalibration)."""
    from streammix.pipeline import truth_metrics

    column = groups[0][0]
    p_all = np.clip(np.asarray(pooled[column], float), 1e-9, 1 - 1e-9)
    case_of = np.asarray(pooled["scoring_case"]).astype(str)

    def shifted(p, shift):
        return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + shift)))

    rows = []
    print(f"\n{column}: the one log-odds shift that best calibrates it (fitted over p >= 0.05)")
    print("| stars | cases | stars fitted | shift | factor in the odds | chi-square before | after |")
    print("|---|---|---|---|---|---|---|")
    subsets = [("all", np.ones(truth.size, bool))] + [subset for _, subset in groups if subset is not None]
    for name, subset in subsets:
        for which in ["pooled", *[case for case in cases if case in set(case_of)]]:
            keep = subset & (p_all >= 0.05) & ((case_of == which) if which != "pooled" else True)
            if keep.sum() < 50 or truth[keep].all() or not truth[keep].any():
                continue
            shift = best_odds_shift(np.log(p_all[keep] / (1 - p_all[keep])), truth[keep])
            before = after = None  # the chi-square is the pooled calibration's
            if which == "pooled":
                before = calibration_chi2(truth_metrics(p_all[subset], truth[subset]))[1]
                moved = np.where(p_all >= 0.05, shifted(p_all, shift), p_all)
                after = calibration_chi2(truth_metrics(moved[subset], truth[subset]))[1]
            cells = " | ".join("-" if value is None else f"{value:.1f}" for value in (before, after))
            print(f"| {name} | {which} | {int(keep.sum())} | {shift:+.2f} | {np.exp(shift):.2f} | {cells} |")
            rows.append({"stars": name, "cases": which, "fitted": int(keep.sum()), "shift": shift,
                         "chi2_before": before, "chi2_after": after})
    return rows


def calibration_chi2(metrics: dict) -> tuple[list[dict], float]:
    """The calibration bins of p >= 0.1 of :func:`streammix.pipeline.truth_metrics`' result (the
    case files do not hold every star below 0.05) and the sum of their z^2."""
    bins = [b for b in metrics["calibration"] if b["p_low"] >= 0.1 - 1e-9]
    return bins, float(sum(b["z"] ** 2 for b in bins))


def pass_probability(pooled, truth, config, args) -> dict[str, np.ndarray]:
    """Per star (NaN for real ones): ``with_errors``, the probability that an injected star,
    at its own true proper motions and parallax, passes the cuts of ``config``
    (``data.selection``) with its errors (:class:`streammix.selection.SelectionCuts` at
    the star's position); and ``error_free``, whether its true values pass them (1 or 0)."""
    import torch

    from streammix.fit import selection_cuts
    from streammix.frames import get_frame
    from streammix.inject import passes_declared_cuts
    from streammix.selection import selection_transform

    out = {name: np.full(truth.size, np.nan) for name in ("with_errors", "error_free")}
    if not truth.any():
        return out
    column = lambda name: np.ma.filled(np.ma.asarray(pooled[name], dtype=float), np.nan)[truth]  # noqa: E731
    cuts, reflex = selection_cuts(config), config.data.selection.reflex_distance
    error = column("parallax_error")
    matrix, offset = selection_transform(get_frame(config.frame), column("phi1"), column("true_phi2"), reflex)
    true_pm = np.stack([column("true_pm_phi1_cosphi2"), column("true_pm_phi2")], axis=-1)
    plx = 10.0 ** ((10.0 - column("true_distmod")) / 5.0) + args.parallax_zero_point
    # with the errors
    var = torch.as_tensor((args.pm_err_per_parallax_err * error) ** 2)
    cov = torch.diag_embed(torch.stack([var, var], dim=-1))
    log_p = cuts.pm_log_probability(torch.as_tensor(true_pm), cov, torch.as_tensor(matrix), torch.as_tensor(offset))
    log_p = log_p + cuts.parallax_log_probability(torch.as_tensor(plx), torch.as_tensor(error))
    out["with_errors"][truth] = np.exp(log_p.numpy())
    # without them
    true_values = {"phi1": column("phi1"), "phi2": column("true_phi2"), "parallax": plx,
                   "pm_phi1_cosphi2": true_pm[:, 0], "pm_phi2": true_pm[:, 1]}  # fmt: skip
    out["error_free"][truth] = passes_declared_cuts(true_values, config.data.selection, config.frame).astype(float)
    return out


def by_error(pooled, truth, column: str, edges: list[float], subsets, passing=None) -> list[dict]:
    """Per bin of parallax error (and subset): injected stars, the sum of p over the bin's
    stars (what the model expects to be injected; the files keep every star with p > 0.05,
    so the sum misses at most 0.05 per real star left out), their ratio and the chi-square
    of the bin's calibration (bins of p >= 0.1); with ``passing`` (:func:`pass_probability`)
    the injected stars' mean probability of passing the cuts with their errors, and the
    share whose true values pass."""
    from streammix.pipeline import truth_metrics

    error = np.ma.filled(np.ma.asarray(pooled["parallax_error"], dtype=float), np.nan)
    p = np.asarray(pooled[column], float)
    bounds = [0.0, *edges, np.inf]
    rows = []
    print(f"\n{column} by parallax error: injected stars, the sum of p, their ratio, calibration chi-square")
    extra = " P(pass the cuts) | true values pass |" if passing is not None else ""
    print("| stars | parallax error (mas) | injected | sum of p | ratio | chi-square (bins) |" + extra)
    print("|---|---|---|---|---|---|" + ("---|---|" if passing is not None else ""))
    for name, keep in [("all", np.ones(truth.size, bool)), *subsets]:
        for low, high in zip(bounds[:-1], bounds[1:], strict=True):
            sel = keep & (error > low) & (error <= high)
            if not sel.any():
                continue
            bins, chi2 = calibration_chi2(truth_metrics(p[sel], truth[sel]))
            row = {"stars": name, "low": low, "high": high, "injected": int(truth[sel].sum()),
                   "sum_p": float(p[sel].sum()), "chi2": chi2, "bins": len(bins)}  # fmt: skip
            row["ratio"] = row["sum_p"] / max(row["injected"], 1)
            cells = ""
            if passing is not None:
                for key, values in passing.items():
                    row[f"pass_{key}"] = float(np.mean(values[sel & truth])) if (sel & truth).any() else float("nan")
                cells = f" {row['pass_with_errors']:.3f} | {row['pass_error_free']:.3f} |"
            rows.append(row)
            print(f"| {name} | {low:g}-{high:g} | {row['injected']} | {row['sum_p']:.1f} | {row['ratio']:.3f} | "
                  f"{chi2:.1f} ({len(bins)}) |" + cells)
    return rows


if __name__ == "__main__":
    main()
