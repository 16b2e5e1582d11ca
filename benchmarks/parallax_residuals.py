"""Each component's stars against the parallax its distance predicts, for fitted output folders.

Usage::

    python benchmarks/parallax_residuals.py OUTPUT_DIR [OUTPUT_DIR ...]

``streammix fit`` writes the same figures into ``summary.json`` (``parallax_residuals``);
this script computes them for folders written before it did, from their ``model/config.yaml``,
``members.ecsv`` and ``tracks.ecsv`` and the config's stars
(:func:`streammix.parallax_residuals.component_parallax_residuals`), and prints one JSON line
per folder: per component the sum of its probabilities, the membership- and
inverse-variance-weighted mean observed parallax, the same mean of what its distance track
predicts (with the catalogue's zero-point and parallax cut), their difference's standard error
and its significance; and, for each pair of components, the difference of their observed means
with its error (two components' stars at one distance give the same mean).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from _common import SHARED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    from astropy.table import Table

    from streammix.config import Config
    from streammix.fit import load_stars
    from streammix.parallax_residuals import component_parallax_residuals

    for folder in args.folders:
        config = Config.from_yaml(folder / "model" / "config.yaml")
        residuals = component_parallax_residuals(
            config, load_stars(config), Table.read(folder / "members.ecsv"), Table.read(folder / "tracks.ecsv")
        )
        names = list(residuals)
        pairs = {
            f"{a}-{b}": {
                "observed": residuals[a].observed - residuals[b].observed,
                "error": math.hypot(residuals[a].error, residuals[b].error),
            }
            for i, a in enumerate(names) for b in names[i + 1:]
        }  # fmt: skip
        print(json.dumps({
            "folder": str(folder),
            "components": {name: residual.to_dict() for name, residual in residuals.items()},
            "pairs": pairs,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
