"""Where a cross-fitted membership's gap between the members that trained on a star and the one that held it out sits.

Usage::

    python benchmarks/cross_fit_gap.py DIR/LABEL [DIR/LABEL ...] [--cases pm3_a ...] [--config joint]
        [--error-edges 0.3 0.6] [--held-out-p 0.1 0.9]

Reads the per-case tables ``benchmarks/injection.py`` writes with ``--set fit.cross_fit=true``
(``DIR/LABEL/<case>_<config>.ecsv``: each kept star's ``fold``, every member's
``weight_log_ratio_<m>`` and ``density_log_ratio_<m>``, the log-ratio of the injected
component to the background split into the weights' part, ln f_inj - ln f_bkg, and the
densities', ln p_inj - ln p_bkg, and the number of folds in ``meta["folds"]``; member m holds
out fold m mod folds). For each star the gap of a part is the mean over the members that
trained on it less the mean over those that held it out: positive where training on a star
raised its own odds.

Prints two tables. The first, for the injected stars and for the real stars kept (those with
some p_injected > 0.05; ``--held-out-p``: only those whose shipped p lies in a range), split by
PS1 photometry and parallax error: the mean gap of each part with its standard error over the
stars and the total gap's median (a few real stars far in a member's tail, down to -400 nats,
dominate the means; below about -15 nats a member uses the isochrone term's upper bound, so
such values are not exact); what the members' mean density adds to the held-out log-ratio, in
two parts (the members' mean log-ratio less the held-out one, and what averaging the densities
rather than their logarithms adds); and the mean held-out log-ratios. The second, for each
kind of star, pooled and per case: the constant shift of the log-odds that best calibrates each
of :data:`SCORINGS` (the held-out member; one member that trained on the star, so that its
difference from the held-out one is the own stars' pull at the same number of members; the
members that trained on it, by their mean log-ratio and by their mean density; every member's
mean density, close to ``injection.py``'s ``p_injected_ensemble``). Those scorings are odds
against the background alone, so they are fitted on the stars where the held-out one gives
the shipped p to 0.01 (the others share with GD-1's stream, spur or cocoon), and the first row
is the shipped ``p_injected`` on every kept star.

The members differ by their fits as well as by their folds, so a gap is the own stars' pull
only on average over the stars of every fold. ``injection.py`` keeps the real stars with p >
0.05 in its shipped scorings, so the in-sample scorings may lack a few real stars just above
0.05 in them, which would make their shifts slightly more positive.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from injection_scorings import best_odds_shift


def gaps(table) -> dict[str, np.ndarray]:
    """Per star: the held-out member's weight and density log-ratios, the gap of each
    (the in-sample members' mean less the held-out member's), and the log-ratios of
    :data:`SCORINGS`. The folds are the table's ``meta["folds"]`` (``fit.folds``, which
    ``injection.py`` writes), else one per member; member m holds out fold m mod folds."""
    members = sorted(int(m.group(1)) for name in table.colnames if (m := re.fullmatch(r"weight_log_ratio_(\d+)", name)))
    if not members:
        raise ValueError("no weight_log_ratio_<m> columns: run benchmarks/injection.py with --set fit.cross_fit=true")
    if members != list(range(len(members))):
        raise ValueError(f"members {members}: expected 0 .. {len(members) - 1}")
    missing = [c for c in ("fold", "injected", "p_injected", "parallax_error", "g_mean_psf_mag",
                           *(f"density_log_ratio_{m}" for m in members)) if c not in table.colnames]  # fmt: skip
    if missing:
        raise ValueError(f"no column {missing[0]!r}")
    folds = int(table.meta.get("folds", len(members)))
    fold = np.asarray(table["fold"], int)
    if fold.min() < 0 or fold.max() >= folds:
        raise ValueError(f"fold values {fold.min()} .. {fold.max()}: not among the {folds} folds")
    held_out = (np.arange(len(members)) % folds)[:, None] == fold[None, :]  # (M, N)
    n_held, n_in = held_out.sum(0), (~held_out).sum(0)
    out = {}
    parts = {}
    for part in ("weight", "density"):
        parts[part] = values = np.stack([np.asarray(table[f"{part}_log_ratio_{m}"], float) for m in members])
        out[f"{part}_held_out"] = np.where(held_out, values, 0.0).sum(0) / n_held
        out[f"{part}_in_sample"] = np.where(~held_out, values, 0.0).sum(0) / n_in
        out[f"{part}_gap"] = out[f"{part}_in_sample"] - out[f"{part}_held_out"]
    # the members' mean density against the held-out member's: its log-ratio less the members' mean
    # log-ratio is what averaging densities adds (>= 0, Jensen; the background's density is the same
    # flows' in every member, its weight nearly so)
    ratios = parts["weight"] + parts["density"]
    mean_ratio = ratios.mean(0)
    out["averaging"] = np.logaddexp.reduce(ratios, axis=0) - np.log(len(members)) - mean_ratio
    out["score_held_out"] = out["weight_held_out"] + out["density_held_out"]
    out["mean_minus_held_out"] = mean_ratio - out["score_held_out"]
    # one member that trained on the star (the next after the first that held it out): the held-out
    # member's count, so that its difference from the held-out scoring is the own stars' pull alone
    first_held, stars = np.argmax(held_out, axis=0), np.arange(fold.size)
    one_in = np.full(fold.size, -1)
    for step in range(len(members) - 1, 0, -1):  # the nearest in-sample member after the held-out one wins
        candidate = (first_held + step) % len(members)
        one_in = np.where(~held_out[candidate, stars], candidate, one_in)
    out["score_one_in_sample"] = ratios[one_in, stars]
    out["score_in_sample_logs"] = np.where(~held_out, ratios, 0.0).sum(0) / n_in
    out["score_in_sample_densities"] = np.logaddexp.reduce(np.where(~held_out, ratios, -np.inf), axis=0) - np.log(n_in)
    out["score_all_densities"] = np.logaddexp.reduce(ratios, axis=0) - np.log(len(members))
    return out


SCORINGS = {
    "score_held_out": "the member(s) that held the star out, their mean log-ratio",
    "score_one_in_sample": "one member that trained on it",
    "score_in_sample_logs": "the members that trained on it, their mean log-ratio",
    "score_in_sample_densities": "the members that trained on it, their mean density",
    "score_all_densities": "every member's mean density",
}
#: Fewer stars, or stars of one class only, give no shift.
MIN_STARS = 50


def odds_shift(log_odds: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    """:func:`injection_scorings.best_odds_shift` over the stars with p >= 0.05 (as
    ``injection_scorings.py --odds-shift``), NaN for fewer than :data:`MIN_STARS` stars
    or one class only; and the number of stars it is fitted on."""
    keep = log_odds >= np.log(0.05 / 0.95)
    x, y = log_odds[keep], truth[keep]
    if x.size < MIN_STARS or y.all() or not y.any():
        return float("nan"), int(x.size)
    return best_odds_shift(x, y), int(x.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="DIR/LABEL folders written by benchmarks/injection.py")
    parser.add_argument("--cases", nargs="*", help="case names (default: every table in each folder)")
    parser.add_argument("--config", default="joint")
    parser.add_argument("--error-edges", nargs="*", type=float, default=[0.3, 0.6],
                        help="parallax-error edges (mas) of the groups")  # fmt: skip
    parser.add_argument("--held-out-p", nargs=2, type=float, default=[0.0, 1.0], metavar=("LOW", "HIGH"),
                        help="the first table's stars: those whose shipped p_injected lies between these")  # fmt: skip
    args = parser.parse_args()
    from astropy.table import Table

    if len({run.resolve() for run in args.runs}) < len(args.runs):
        parser.error("a folder is given twice")
    rows: dict[str, list[np.ndarray]] = {}
    for run in args.runs:
        paths = sorted(run.glob(f"*_{args.config}.ecsv"))
        paths = [p for p in paths if not args.cases or p.name.removesuffix(f"_{args.config}.ecsv") in args.cases]
        if not paths:
            parser.error(f"{run}: no *_{args.config}.ecsv tables")
        for path in paths:
            table = Table.read(path)
            try:
                values = gaps(table)
            except ValueError as error:
                parser.error(f"{path}: {error}")
            g = np.ma.filled(np.ma.asarray(table["g_mean_psf_mag"], dtype=float), np.nan)
            values["ps1"] = np.isfinite(g) & (g < 1e10)  # PS1's sentinel is 1e20, as injection_scorings.py
            values["injected"] = np.asarray(table["injected"], bool)
            values["parallax_error"] = np.asarray(table["parallax_error"], float)
            values["p"] = np.asarray(table["p_injected"], float)
            values["case"] = np.full(len(table), f"{run.name}/{path.name.removesuffix(f'_{args.config}.ecsv')}")
            for key, value in values.items():
                rows.setdefault(key, []).append(value)
    data = {key: np.concatenate(value) for key, value in rows.items()}
    edges = [0.0, *args.error_edges, np.inf]
    print(f"{len(args.runs)} run(s), config {args.config}: gap = in-sample members' mean - held-out member's, "
          "mean over the stars +- its standard error (nats)\n")  # fmt: skip
    print("| stars | PS1 | parallax error (mas) | n | mean p (held out) | weight gap | density gap | total gap | "
          "total gap, median | members' mean less held out | averaging the densities | held-out weight log-ratio | "
          "held-out density log-ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, kind_mask in (("injected", data["injected"]), ("real, kept", ~data["injected"])):
        for phot, phot_mask in (("yes", data["ps1"]), ("no", ~data["ps1"])):
            for lo, hi in zip(edges[:-1], edges[1:]):
                sel = kind_mask & phot_mask & (data["parallax_error"] >= lo) & (data["parallax_error"] < hi)
                sel &= (data["p"] >= args.held_out_p[0]) & (data["p"] <= args.held_out_p[1])
                n = int(sel.sum())
                if n < 2:
                    continue

                def stat(x: np.ndarray) -> str:
                    return f"{x[sel].mean():+.3f} ± {x[sel].std(ddof=1) / np.sqrt(n):.3f}"

                total = data["weight_gap"] + data["density_gap"]
                print(f"| {kind} | {phot} | {lo:g}-{hi:g} | {n} | {data['p'][sel].mean():.3f} | {stat(data['weight_gap'])} | "
                      f"{stat(data['density_gap'])} | {stat(total)} | {np.median(total[sel]):+.3f} | {stat(data['mean_minus_held_out'])} | "
                      f"{stat(data['averaging'])} | {data['weight_held_out'][sel].mean():+.2f} | "
                      f"{data['density_held_out'][sel].mean():+.2f} |")  # fmt: skip
    # the scorings below are the odds against the background alone: stars that another component
    # (GD-1's stream, spur, cocoon) takes a share of are left out, where that is not the shipped p
    alone = np.abs(1.0 / (1.0 + np.exp(-data["score_held_out"])) - data["p"]) < 0.01
    print(f"\nThe log-odds shift that best calibrates each scoring (over its stars with p >= 0.05, their number "
          f"in brackets; + under-confident), from the log-ratios to the background alone, on the {alone.sum()} of "
          f"{alone.size} stars where the held-out scoring gives the shipped p_injected to 0.01 (the others share "
          f"with GD-1's components); the first row is the shipped p_injected on every kept star:\n")  # fmt: skip
    data["shipped"] = np.log(np.clip(data["p"], 1e-12, 1.0)) - np.log(np.clip(1.0 - data["p"], 1e-12, 1.0))
    cases = sorted(set(data["case"]))
    print("| scoring | PS1 | all cases | " + " | ".join(cases) + " |")
    print("|---|---|---|" + "---|" * len(cases))
    for key, what in {"shipped": "p_injected, every kept star", **SCORINGS}.items():
        for phot, phot_mask in (("yes", data["ps1"]), ("no", ~data["ps1"])):
            phot_mask = phot_mask if key == "shipped" else phot_mask & alone
            cells = [odds_shift(data[key][phot_mask], data["injected"][phot_mask])]
            for case in cases:
                sel = phot_mask & (data["case"] == case)
                cells.append(odds_shift(data[key][sel], data["injected"][sel]))
            print(f"| {what} | {phot} | " + " | ".join(f"{x:+.2f} ({n})" for x, n in cells) + " |")


if __name__ == "__main__":
    main()
