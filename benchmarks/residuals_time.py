"""How long the residual maps of a fitted model take (``streammix fit`` writes both).

Usage::

    python benchmarks/residuals_time.py MODEL_FOLDER

``MODEL_FOLDER`` is the ``model`` folder of a ``streammix fit`` output (e.g. from
``benchmarks/everyday.py``); the stars are read through the saved config. Prints the
seconds of :func:`streammix.residuals.position_residuals` and, for two bands,
:func:`streammix.residuals.cmd_residuals`, then a JSON line.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import SHARED, emit, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    from streammix.fit import load, load_stars
    from streammix.residuals import cmd_residuals, position_residuals

    model = load(args.model)
    stars = load_stars(model.config)
    seconds = {}
    t0 = time.perf_counter()
    position_residuals(model, stars)
    seconds["position"] = time.perf_counter() - t0
    if len(model.config.model.bands) == 2:
        t0 = time.perf_counter()
        cmd_residuals(model, stars)
        seconds["cmd"] = time.perf_counter() - t0
    for name, value in seconds.items():
        print(f"{name} residuals: {value:.1f} s")
    emit({"machine": machine(), "n_stars": len(stars), "seconds": seconds})


if __name__ == "__main__":
    main()
