"""How long the residual maps of a fitted model take (``streammix fit`` writes both).

Usage::

    python benchmarks/residuals_time.py MODEL_FOLDER [--workers N] [--save MAPS.npz] [--compare MAPS.npz]

``MODEL_FOLDER`` is the ``model`` folder of a ``streammix fit`` output (e.g. from
``benchmarks/everyday.py``); the stars are read through the saved config. Prints the
seconds of :func:`streammix.residuals.position_residuals` and, for two bands,
:func:`streammix.residuals.cmd_residuals`, then a JSON line. ``--save`` writes the
maps' observed and expected counts; ``--compare`` adds to the JSON line the largest
absolute difference of each map's expected counts from those of a saved file (e.g.
written with another commit's package on ``PYTHONPATH``). ``--workers N`` (N > 1) computes the
CMD map in a pool of N worker processes, as ``streammix fit`` does with ``fit.workers`` N; the
pool's start-up (spawned processes importing streammix) is timed apart, as ``pool_start``, since
a fit's pool is running already.
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
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the CMD map (default 1: none)")
    parser.add_argument("--save", type=Path, help="write the maps' counts to this .npz")
    parser.add_argument("--compare", type=Path, help="a .npz from --save to compare the expected counts with")
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    from streammix.fit import load, load_stars
    from streammix.fit import _ready_worker
    from streammix.parallel import map_spawned, worker_pool
    from streammix.residuals import cmd_residuals, position_residuals

    model = load(args.model)
    stars = load_stars(model.config)
    seconds, maps = {}, {}
    t0 = time.perf_counter()
    maps["position"] = position_residuals(model, stars)
    seconds["position"] = time.perf_counter() - t0
    if len(model.config.model.bands) == 2:
        with worker_pool(args.workers) as pool:
            if pool is not None:  # started and readied as a fit's pool is, before it is timed
                t0 = time.perf_counter()
                map_spawned(_ready_worker, [{}] * pool.workers, pool.workers, label="start", pool=pool)
                seconds["pool_start"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            maps["cmd"] = cmd_residuals(model, stars, pool=pool)
            seconds["cmd"] = time.perf_counter() - t0
    for name, value in seconds.items():
        print(f"{name} residuals: {value:.1f} s")
    summary = {"machine": machine(), "n_stars": len(stars), "workers": args.workers, "seconds": seconds}
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
