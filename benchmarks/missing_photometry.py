"""Do the GD-1 field's stars without PS1 photometry move like those with it, at the same place and error?

Usage::

    python benchmarks/missing_photometry.py [--min-phi2 1.5] [--min-stars 8]

Half of ``gd1_dr2/gd1_pm_box_dr2_ps1.fits`` has no PS1 magnitudes (NaN or the
sentinel 1e20), more often the bright, precise stars; the stars are read as the
joint config (``configs/gd1_dr2_photometry.yaml``) reads them, so "has photometry"
is its observed PS1 g. The background's
astrometric flows are conditioned on phi1, phi2 and the errors but not on
whether a star has photometry; if, at the same place and error, the stars without
it moved differently, the joint model would judge them against the wrong density.
This deals the off-stream stars (|phi2| > ``--min-phi2``) into cells of 5 deg in phi1,
2 deg in phi2 and six quantiles of the parallax error, takes in each cell holding
at least ``--min-stars`` stars of each kind the difference of the medians (with -
without) of pm_phi1, pm_phi2 and parallax, and prints their mean over the cells
with its standard error.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from _common import ROOT, SHARED, emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-phi2", type=float, default=1.5)
    parser.add_argument("--min-stars", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    from streammix.config import Config
    from streammix.fit import load_stars

    stars = load_stars(Config.from_yaml(ROOT / "configs" / "gd1_dr2_photometry.yaml"))
    has = stars.observed["ps1_g"]
    column = {"phi1": stars.phi1, "phi2": stars.phi2, "parallax_error": stars.parallax_err,
              "pm_phi1": stars.pm_phi1_cosphi2, "pm_phi2": stars.pm_phi2, "parallax": stars.parallax}
    off = np.abs(column["phi2"]) > args.min_phi2
    log_err = np.log(column["parallax_error"])
    cell = np.stack([
        np.digitize(column["phi1"], np.arange(-70.0, -15.0, 5.0)),
        np.digitize(column["phi2"], np.arange(-6.0, 7.0, 2.0)),
        np.digitize(log_err, np.quantile(log_err, np.linspace(0, 1, 7)[1:-1])),
    ], axis=1)  # fmt: skip
    keys, inverse = np.unique(cell[off], axis=0, return_inverse=True)
    inverse = inverse.ravel()
    diffs: dict[str, list[float]] = {"pm_phi1": [], "pm_phi2": [], "parallax": []}
    cells = 0
    for k in range(len(keys)):
        rows = np.flatnonzero(off)[inverse == k]
        with_, without = rows[has[rows]], rows[~has[rows]]
        if with_.size < args.min_stars or without.size < args.min_stars:
            continue
        for name in diffs:
            diffs[name].append(float(np.median(column[name][with_]) - np.median(column[name][without])))
        cells += 1
    if cells < 2:
        raise SystemExit(f"only {cells} cells hold >= {args.min_stars} stars of each kind")
    out = {"stars": int(len(stars)), "with_photometry": int(has.sum()), "cells": cells}
    print(f"{len(stars)} stars, {int(has.sum())} with PS1 g; {cells} cells with >= {args.min_stars} of each kind")
    print("| quantity | median with - without (mean over cells) | standard error |")
    print("|---|---|---|")
    for name, values in diffs.items():
        values = np.asarray(values)
        mean, err = float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))
        print(f"| {name} | {mean:+.3f} | {err:.3f} |")
        out[name] = {"mean": mean, "error": err}
    emit(out)


if __name__ == "__main__":
    main()
