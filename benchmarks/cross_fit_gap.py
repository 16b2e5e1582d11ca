"""Where a cross-fitted membership's gap between the members that trained on a star and the one that held it out sits.

Usage::

    python benchmarks/cross_fit_gap.py DIR/LABEL [DIR/LABEL ...] [--cases pm3_a ...] [--config joint]
        [--error-edges 0.3 0.6] [--held-out-p 0.1 0.9]

Reads the per-case tables ``benchmarks/injection.py`` writes with ``--set fit.cross_fit=true``
(``DIR/LABEL/<case>_<config>.ecsv``: each kept star's ``fold``, the member that held it out,
and every member's ``weight_log_ratio_<m>`` and ``density_log_ratio_<m>``, the log-ratio of
the injected component to the background split into the weights' part, ln f_inj - ln f_bkg,
and the densities', ln p_inj - ln p_bkg). For each star the gap of a part is the mean over
the members that trained on it less the held-out member's value: positive where training on
a star raised its own odds.

Prints, for the injected stars and for the real stars kept (those with some p_injected >
0.05; ``--held-out-p``: only those whose shipped p lies in a range), split by PS1 photometry
and parallax error: the mean gap of each part with its standard error over the stars; the
two parts of the difference between the log-ratio of the members' mean density
(``p_injected_ensemble``) and the held-out member's (the members' mean log-ratio less the
held-out one, three quarters of the total gap with four members, and what averaging the
densities rather than their logarithms adds); and the mean held-out log-ratios. Then, for
four scorings of each star (the held-out member; the members that trained on it, by their
mean log-ratio and by their mean density; every member's mean density) and each kind of
star, the constant shift of the log-odds that best calibrates it, pooled and per case.

The members differ by their fits as well as by their folds, so a part's gap is the own
stars' pull only on average over the stars of every fold (each member holds out one).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np


def gaps(table) -> dict[str, np.ndarray]:
    """Per star: the held-out member's weight and density log-ratios, and the gap of each
    (the in-sample members' mean less the held-out member's)."""
    members = sorted(int(m.group(1)) for name in table.colnames if (m := re.fullmatch(r"weight_log_ratio_(\d+)", name)))
    if not members:
        raise SystemExit("no weight_log_ratio_<m> columns: run benchmarks/injection.py with --set fit.cross_fit=true")
    fold = np.asarray(table["fold"], int)
    out = {}
    for part in ("weight", "density"):
        values = np.stack([np.asarray(table[f"{part}_log_ratio_{m}"], float) for m in members])  # (M, N)
        held_out = np.asarray([m % len(set(fold)) for m in members])[:, None] == fold[None, :]
        out[f"{part}_held_out"] = np.where(held_out, values, 0.0).sum(0) / held_out.sum(0)
        out[f"{part}_in_sample"] = np.where(~held_out, values, 0.0).sum(0) / (~held_out).sum(0)
        out[f"{part}_gap"] = out[f"{part}_in_sample"] - out[f"{part}_held_out"]
        out[f"{part}_all"] = values
    # the members' mean density (benchmarks/injection.py's p_injected_ensemble) against the held-out
    # member's: its log-ratio less the members' mean log-ratio is what averaging densities adds
    # (>= 0, Jensen; the background's density is the same flows' in every member, its weight nearly so)
    ratios = out.pop("weight_all") + out.pop("density_all")
    mean_ratio = ratios.mean(0)
    out["averaging"] = np.logaddexp.reduce(ratios, axis=0) - np.log(len(members)) - mean_ratio
    out["mean_minus_held_out"] = mean_ratio - (out["weight_held_out"] + out["density_held_out"])
    # the log-ratios four scorings give each star (the odds against the background alone)
    held_out = np.asarray([m % len(set(fold)) for m in members])[:, None] == fold[None, :]
    in_sample = np.where(~held_out, ratios, -np.inf)
    out["score_held_out"] = out["weight_held_out"] + out["density_held_out"]
    out["score_in_sample_logs"] = np.where(~held_out, ratios, 0.0).sum(0) / (~held_out).sum(0)
    out["score_in_sample_densities"] = np.logaddexp.reduce(in_sample, axis=0) - np.log((~held_out).sum(0))
    out["score_all_densities"] = np.logaddexp.reduce(ratios, axis=0) - np.log(len(members))
    return out


SCORINGS = {
    "score_held_out": "the member that held the star out (the shipped p)",
    "score_in_sample_logs": "the members that trained on it, their mean log-ratio",
    "score_in_sample_densities": "the members that trained on it, their mean density",
    "score_all_densities": "every member's mean density (p_injected_ensemble)",
}


def odds_shift(log_ratio: np.ndarray, truth: np.ndarray) -> float:
    """The maximum-likelihood constant shift of the log-odds that best calibrates
    sigmoid(``log_ratio``) against ``truth``, over the stars with p >= 0.05 (as
    ``injection_scorings.py --odds-shift``): positive where it is under-confident."""
    from scipy.optimize import minimize_scalar

    keep = log_ratio >= np.log(0.05 / 0.95)
    x, y = log_ratio[keep], truth[keep]

    def loss(shift: float) -> float:
        return float(np.sum(np.logaddexp(0.0, -(x + shift)) * y + np.logaddexp(0.0, x + shift) * (1 - y)))

    return float(minimize_scalar(loss, bounds=(-5.0, 5.0), method="bounded").x)


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

    rows: dict[str, list[np.ndarray]] = {}
    for run in args.runs:
        paths = sorted(run.glob(f"*_{args.config}.ecsv"))
        paths = [p for p in paths if not args.cases or p.name.removesuffix(f"_{args.config}.ecsv") in args.cases]
        if not paths:
            raise SystemExit(f"{run}: no *_{args.config}.ecsv tables")
        for path in paths:
            table = Table.read(path)
            values = gaps(table)
            g = np.ma.filled(np.ma.asarray(table["g_mean_psf_mag"], dtype=float), np.nan)
            values["ps1"] = np.isfinite(g) & (g < 1e19)
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
          "members' mean less held out | averaging the densities | held-out weight log-ratio | held-out density log-ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
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
                      f"{stat(data['density_gap'])} | {stat(total)} | {stat(data['mean_minus_held_out'])} | "
                      f"{stat(data['averaging'])} | {data['weight_held_out'][sel].mean():+.2f} | "
                      f"{data['density_held_out'][sel].mean():+.2f} |")  # fmt: skip
    sig = 1.0 / (1.0 + np.exp(-data["score_held_out"]))
    print(f"\nThe log-odds shift that best calibrates each scoring (over its stars with p >= 0.05; + under-confident),"
          f" from the log-ratios to the background alone (their p differs from the shipped p_injected by "
          f"{np.median(np.abs(sig - data['p'])):.4f} in the median):\n")  # fmt: skip
    cases = sorted(set(data["case"]))
    print("| scoring | PS1 | all cases | " + " | ".join(cases) + " |")
    print("|---|---|---|" + "---|" * len(cases))
    for key, what in SCORINGS.items():
        for phot, phot_mask in (("yes", data["ps1"]), ("no", ~data["ps1"])):
            shifts = [odds_shift(data[key][phot_mask], data["injected"][phot_mask])]
            for case in cases:
                sel = phot_mask & (data["case"] == case)
                shifts.append(odds_shift(data[key][sel], data["injected"][sel]))
            print(f"| {what} | {phot} | " + " | ".join(f"{x:+.2f}" for x in shifts) + " |")


if __name__ == "__main__":
    main()
