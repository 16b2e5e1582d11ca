"""How long the residual maps of a fitted model take (``streammix fit`` writes both).

Usage::

    python benchmarks/residuals_time.py MODEL_FOLDER [--chunk-size N ...] [--save MAPS.npz] [--compare MAPS.npz]

``MODEL_FOLDER`` is the ``model`` folder of a ``streammix fit`` output (e.g. from
``benchmarks/everyday.py``); the stars are read through the saved config. Prints the
seconds of :func:`streammix.residuals.position_residuals` and, for two bands,
:func:`streammix.residuals.cmd_residuals`, then a JSON line. ``--save`` writes the
maps' observed and expected counts; ``--compare`` adds to the JSON line the largest
absolute difference of each map's expected counts from those of a saved file (e.g.
written with another commit's package on ``PYTHONPATH``). ``--chunk-size`` times the CMD map at each
of several ``chunk_size`` values (grid evaluations per call), one after the other, in the JSON as
``cmd_chunk_<N>``; ``--save``/``--compare`` use the first.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _common import SHARED, emit, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--chunk-size", type=int, nargs="+", help="the CMD map's chunk_size values to time (default: its default)")
    parser.add_argument("--save", type=Path, help="write the maps' counts to this .npz")
    parser.add_argument("--compare", type=Path, help="a .npz from --save to compare the expected counts with")
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    from streammix.fit import load, load_stars
    from streammix.residuals import cmd_residuals, position_residuals

    model = load(args.model)
    stars = load_stars(model.config)
    seconds, maps = {}, {}
    t0 = time.perf_counter()
    maps["position"] = position_residuals(model, stars)
    seconds["position"] = time.perf_counter() - t0
    if len(model.config.model.bands) == 2:
        for i, chunk_size in enumerate(args.chunk_size or [None]):
            options = {} if chunk_size is None else {"chunk_size": chunk_size}
            t0 = time.perf_counter()
            cmd = cmd_residuals(model, stars, **options)
            key = "cmd" if chunk_size is None else f"cmd_chunk_{chunk_size}"
            key += f"_{i}" if key in seconds else ""  # a value repeated (to see the noise) keeps both times
            seconds[key] = time.perf_counter() - t0
            if i == 0:
                maps["cmd"] = cmd
    for name, value in seconds.items():
        print(f"{name} residuals: {value:.1f} s")
    summary = {"machine": machine(), "n_stars": len(stars), "seconds": seconds}
    if args.save is not None:
        np.savez(args.save, **{f"{name}_{what}": getattr(r, what) for name, r in maps.items() for what in ("observed", "expected")})
    if args.compare is not None:
        saved = np.load(args.compare)
        summary["max_abs_expected_difference"] = {
            name: float(np.abs(r.expected - saved[f"{name}_expected"]).max()) for name, r in maps.items()
        }
        summary["observed_equal"] = all(np.array_equal(r.observed, saved[f"{name}_observed"]) for name, r in maps.items())
    emit(summary)


if __name__ == "__main__":
    main()
