"""Do a fitted stream's likely members have the parallaxes its distance track predicts?

Usage::

    python benchmarks/parallax_offset.py FIT_DIR [--component stream] [--threshold 0.8]

``FIT_DIR`` is a folder written by ``streammix fit`` (``members.ecsv``,
``tracks.ecsv`` and ``model/``); the stars are its config's ``data.path``. For
the stars with ``p_<component>`` above the threshold it prints the
inverse-variance weighted mean of observed parallax minus the parallax the
component's distance-modulus track predicts at their phi1 plus the config's
``data.parallax_zero_point`` (0 if the model fits the data's parallaxes), with its
error and the mean squared pull, for all of them and for those with parallax
errors below 0.2 mas; and the track's distance modulus every 10 deg. The
threshold also selects by parallax (the field's stars are mostly nearer, with
larger parallaxes), which leans the offset negative even for a right model,
the more so the more the membership rests on the parallax (an astrometric model
more than a joint one). The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from _common import SHARED, emit, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fit_dir", type=Path)
    parser.add_argument("--component", default="stream")
    parser.add_argument("--threshold", type=float, default=0.8)
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))

    from astropy.table import Table

    from streammix.config import Config
    from streammix.fit import load_stars

    config = Config.from_yaml(args.fit_dir / "model" / "config.yaml")
    stars = load_stars(config)
    members = Table.read(args.fit_dir / "members.ecsv")
    tracks = Table.read(args.fit_dir / "tracks.ecsv")
    if not np.array_equal(np.asarray(members["source_id"]), np.asarray(stars.source_id)):
        raise SystemExit(f"{args.fit_dir}: members.ecsv is not in the order of the config's stars")
    p = np.asarray(members[f"p_{args.component}"])
    phi1 = np.asarray(tracks["phi1"].value if hasattr(tracks["phi1"], "value") else tracks["phi1"])
    column = tracks[f"{args.component}_parallax"]
    track = np.asarray(getattr(column, "value", column))
    predicted = np.interp(stars.phi1, phi1, track) + config.data.parallax_zero_point
    use = (p > args.threshold) & stars.observed["parallax"]
    summary = {"machine": machine(), "fit_dir": str(args.fit_dir), "component": args.component,
               "threshold": args.threshold, "zero_point": config.data.parallax_zero_point, "sets": {}}  # fmt: skip
    for label, keep in (("all", use), ("parallax_err < 0.2 mas", use & (stars.parallax_err < 0.2))):
        residual = (stars.parallax - predicted)[keep]
        err = stars.parallax_err[keep]
        weight = 1.0 / err**2
        row = {
            "n": int(keep.sum()),
            "offset": float(np.sum(weight * residual) / np.sum(weight)),
            "offset_err": float(1.0 / np.sqrt(np.sum(weight))),
            "mean_pull2": float(np.mean((residual / err) ** 2)),
        }
        summary["sets"][label] = row
        print(
            f"p_{args.component} > {args.threshold}, {label}: {row['n']} stars, observed - predicted parallax "
            f"{row['offset']:+.4f} +- {row['offset_err']:.4f} mas (zero-point {config.data.parallax_zero_point:+.3f} "
            f"included), mean squared pull {row['mean_pull2']:.2f}"
        )
    column = tracks[f"{args.component}_distmod"]
    distmod = np.asarray(getattr(column, "value", column))
    at = np.arange(np.ceil(phi1.min() / 10) * 10, phi1.max() + 1e-9, 10.0)
    summary["distmod"] = {f"{x:g}": float(np.interp(x, phi1, distmod)) for x in at}
    print("distance modulus track: " + ", ".join(f"phi1 {k}: {v:.2f}" for k, v in summary["distmod"].items()))
    emit(summary)


if __name__ == "__main__":
    main()
