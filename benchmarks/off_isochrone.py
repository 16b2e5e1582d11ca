"""The stars an astrometric fit calls members, against a joint fit's isochrone: who sits off it, and what the joint fit gives them.

Usage::

    python benchmarks/off_isochrone.py ASTROMETRIC_DIR JOINT_DIR [JOINT_DIR ...] [--threshold 0.8] [--brightest 16]

A label-free check of the joint model's photometry. The astrometric fit (no magnitudes) picks its
members (``p_member`` above ``--threshold``); for those with both of the joint config's two bands,
each joint fit's output folder gives the star's absolute magnitude at that fit's distance-modulus
track of its first component at the star's phi1 (``tracks.ecsv``), the colour of the isochrone
(the joint config's ``model.isochrone``, age and [Fe/H] as configured) at that magnitude on each
of its branches (phases), and the joint fit's ``p_member``. Printed: per magnitude range the
astrometric members and how many of them each joint fit keeps at ``p_member > 0.5``, with the
median colour offset from the nearest branch; then the ``--brightest`` of them, star by star (a
star far off every branch with a low joint ``p_member`` is one the isochrone alone rejects however
strong its astrometry). Both folders must hold the same stars in the same order (fits of the same
file). One JSON line at the end holds the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from _common import SHARED

MAGNITUDE_EDGES = (10.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0)


def branch_colours(isochrone, bands, absolute):
    """Per star, the colour (first band minus second) of each phase's branch at the star's
    absolute magnitude in the second band (NaN where a branch does not reach it), and the phases."""
    import numpy as np

    from streammix.isochrone import PHASES

    names = {code: name for name, code in PHASES.items()}
    first, second = (np.asarray(isochrone.mags[band]) for band in bands)
    out = {}
    for code in np.unique(isochrone.phase):
        on = isochrone.phase == code
        if on.sum() < 2:
            continue
        mag, colour = second[on], (first - second)[on]
        nearest = np.abs(mag[None, :] - absolute[:, None]).argmin(axis=1)
        reaches = np.abs(mag[nearest] - absolute) < 0.2
        out[names[int(code)]] = np.where(reaches, colour[nearest], np.nan)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("astrometric", type=Path)
    parser.add_argument("joint", type=Path, nargs="+")
    parser.add_argument("--threshold", type=float, default=0.8, help="the astrometric fit's p_member of a member")
    parser.add_argument("--brightest", type=int, default=16, help="members listed star by star, brightest first")
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    import numpy as np
    from astropy.table import Table

    from streammix.config import Config
    from streammix.fit import load_stars
    from streammix.photometry import isochrone_at, isochrone_source

    astrometric = Table.read(args.astrometric / "members.ecsv")
    config = Config.from_yaml(args.joint[0] / "model" / "config.yaml")
    bands = list(config.model.bands)
    if len(bands) != 2:
        sys.exit(f"{args.joint[0]}: the joint config has bands {bands}; this check needs two")
    stars = load_stars(config)
    if len(astrometric) != len(stars) or not np.array_equal(np.asarray(astrometric["source_id"]), stars.source_id):
        sys.exit(f"{args.astrometric}: members.ecsv is not the joint config's stars in order")
    first_mag, second_mag = (stars.mags[b] for b in bands)
    has_both = stars.observed[bands[0]] & stars.observed[bands[1]]
    chosen = np.flatnonzero((np.asarray(astrometric["p_member"]) > args.threshold) & has_both)
    colour = (first_mag - second_mag)[chosen]
    settings = config.model.isochrone
    isochrone = isochrone_at(isochrone_source(settings), settings.age, settings.feh)
    component = config.model.components[0].name
    runs = []
    for folder in args.joint:
        members = Table.read(folder / "members.ecsv")
        if not np.array_equal(np.asarray(members["source_id"]), stars.source_id):
            sys.exit(f"{folder}: members.ecsv is not the joint config's stars in order")
        tracks = Table.read(folder / "tracks.ecsv")
        distmod = np.interp(stars.phi1[chosen], np.asarray(tracks["phi1"]), np.asarray(tracks[f"{component}_distmod"]))
        absolute = second_mag[chosen] - distmod
        branches = branch_colours(isochrone, bands, absolute)
        offsets = np.stack([colour - c for c in branches.values()], axis=1)  # NaN: the branch does not reach
        distance = np.where(np.isnan(offsets), np.inf, np.abs(offsets))
        nearest = offsets[np.arange(len(chosen)), distance.argmin(axis=1)]  # signed; NaN where no branch reaches
        runs.append({"folder": str(folder), "p": np.asarray(members["p_member"])[chosen], "absolute": absolute,
                     "signed": nearest})  # fmt: skip
    print(f"{len(chosen)} stars with p_member > {args.threshold} in {args.astrometric} and both of {bands}")
    header = "| " + bands[1] + " | members | " + " | ".join(f"kept by {r['folder']}; median offset" for r in runs) + " |"
    print(header)
    print("|" + "---|" * (2 + len(runs)))
    counts = []
    mag = second_mag[chosen]
    for lo, hi in zip(MAGNITUDE_EDGES[:-1], MAGNITUDE_EDGES[1:]):
        inside = (mag >= lo) & (mag < hi)
        if not inside.any():
            continue
        cells = []
        for r in runs:
            kept = int((r["p"][inside] > 0.5).sum())
            finite = np.isfinite(r["signed"][inside])
            median = float(np.median(r["signed"][inside][finite])) if finite.any() else float("nan")
            cells.append(f"{kept}; {median:+.3f}")
            counts.append({"folder": r["folder"], "range": [lo, hi], "members": int(inside.sum()), "kept": kept})
        print(f"| {lo:g}–{hi:g} | {int(inside.sum())} | " + " | ".join(cells) + " |")
    order = np.argsort(mag)[: args.brightest]
    print(f"\nthe {len(order)} brightest: {bands[1]}, {bands[0]} - {bands[1]}, phi1, astrometric p_member; per joint fit: "
          "absolute magnitude, colour offset from the nearest branch, p_member")  # fmt: skip
    for i in order:
        cells = [f"M {r['absolute'][i]:+.2f}, {r['signed'][i]:+.3f}, p {r['p'][i]:.3g}" for r in runs]
        print(f"{mag[i]:.2f} {colour[i]:+.3f} {stars.phi1[chosen][i]:+.1f} {astrometric['p_member'][chosen][i]:.3f} | "
              + " | ".join(cells))  # fmt: skip
    kept_total = {r["folder"]: int((r["p"] > 0.5).sum()) for r in runs}
    print(json.dumps({"members": int(len(chosen)), "kept": kept_total, "by_range": counts}))


if __name__ == "__main__":
    main()
