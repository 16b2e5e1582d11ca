"""Each component's stars against the parallax its distance predicts, for fitted output folders.

Usage::

    python benchmarks/parallax_residuals.py OUTPUT_DIR [OUTPUT_DIR ...] [--parallax-cut LOW HIGH]

``streammix fit`` writes the same figures into ``summary.json`` (``parallax_residuals``);
this script computes them for folders written before it did, from their ``model/config.yaml``,
``members.ecsv`` and ``tracks.ecsv`` and the config's stars
(:func:`streammix.parallax_residuals.component_parallax_residuals`), and prints one JSON line
per folder: per component the sum of its probabilities, the membership- and
inverse-variance-weighted mean observed parallax, the same mean of what its distance track
predicts (with the catalogue's zero-point and parallax cut), their difference's standard error
and its significance (``own_distance``), and the same against the first component's distance
(``reference_distance``: are its stars at the stream's distance?). ``--parallax-cut`` gives the
catalogue's parallax cut where the config does not declare it (``null`` for an open side), e.g.
``null 1.0`` for the GD-1 file, whose astrometric config leaves ``data.selection`` out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from _common import SHARED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--parallax-cut", nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="the catalogue's parallax cut (mas; null: open) where the config declares none")
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    import numpy as np
    from astropy.table import Table

    from streammix.config import Config
    from streammix.fit import load_stars
    from streammix.parallax_residuals import component_parallax_residuals

    cut = "config"
    if args.parallax_cut is not None:
        cut = tuple(None if value == "null" else float(value) for value in args.parallax_cut)
    for folder in args.folders:
        config = Config.from_yaml(folder / "model" / "config.yaml")
        stars = load_stars(config)
        members = Table.read(folder / "members.ecsv")
        if "source_id" not in members.colnames or len(members) != len(stars) or not np.array_equal(
            np.asarray(members["source_id"]), stars.source_id
        ):
            sys.exit(f"{folder}: members.ecsv is not the config's stars in order (fitted from other stars?)")
        residuals = component_parallax_residuals(config, stars, members, Table.read(folder / "tracks.ecsv"), cut=cut)
        shown = residuals.to_dict() if residuals is not None else {}
        print(json.dumps({"folder": str(folder), "cut": None if cut == "config" else cut, **shown}))


if __name__ == "__main__":
    main()
