"""The CMD residuals of a fitted joint model, predicted with and without each star's parallax error.

Usage::

    python benchmarks/cmd_residuals.py FIT_DIR [--data STARS]

``FIT_DIR`` is a folder written by ``streammix fit`` (its ``model/``); the stars
are the config's ``data.path`` unless ``--data`` gives others. The stars whose
astrometry favours the stream are binned in the CMD twice
(:func:`streammix.residuals.cmd_residuals`): with ``errors_given`` (the default:
each star's magnitudes predicted given its parallax error) and without. For
each: chi-square of the bins expected to hold more than one star, the number of
bins beyond 3 sigma, the largest excess and deficit, and observed against
expected counts in ranges of the first band. The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _common import SHARED, emit, machine

RANGES = ((10.0, 18.0), (18.0, 19.0), (19.0, 20.0), (20.0, 21.0), (21.0, 30.0))  # first band (mag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fit_dir", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))

    from streammix.fit import load, load_stars
    from streammix.residuals import cmd_residuals

    model = load(args.fit_dir / "model")
    stars = load_stars(model.config, None if args.data is None else str(args.data))
    summary = {"machine": machine(), "fit_dir": str(args.fit_dir), "maps": {}}
    for given in (True, False):
        started = time.perf_counter()
        maps = cmd_residuals(model, stars, errors_given=given)
        z, observed, expected = maps.significance, maps.observed, maps.expected
        filled = expected > 1.0
        band = 0.5 * (maps.y_edges[1:] + maps.y_edges[:-1])
        counts = []
        for low, high in RANGES:
            inside = (band >= low) & (band < high)
            counts.append([low, high, float(observed[:, inside].sum()), float(expected[:, inside].sum())])
        row = {
            "n_selected": maps.n_selected,
            "chi2": float((((observed - expected) ** 2 / expected)[filled]).sum()),
            "bins": int(filled.sum()),
            "beyond_3_sigma": int((np.abs(z) > 3).sum()),
            "max_significance": float(z.max()),
            "min_significance": float(z.min()),
            "counts": counts,
            "relation": None if maps.error_relation is None else {
                "intercept": maps.error_relation.intercept, "slopes": list(maps.error_relation.slopes),
                "scatter": maps.error_relation.scatter,
            },
            "seconds": time.perf_counter() - started,
        }  # fmt: skip
        summary["maps"]["errors_given" if given else "errors_ignored"] = row
        print(
            f"{'given the errors' if given else 'ignoring them':>17}: {row['n_selected']} stars, chi-square "
            f"{row['chi2']:.0f} over {row['bins']} bins (expected > 1), {row['beyond_3_sigma']} bins beyond 3 sigma, "
            f"z {row['min_significance']:+.1f} .. {row['max_significance']:+.1f}",
            flush=True,
        )
        for low, high, o, e in counts:
            print(f"{'':>19}{maps.y_name} {low:g}-{high:g}: observed {o:.0f}, expected {e:.1f}")
    emit(summary)


if __name__ == "__main__":
    main()
