"""Stars per second for scoring new stars with a fitted model, and peak memory.

Usage::

    python benchmarks/score_throughput.py --n 100000 1000000 [--chunk N] [--models astrometry joint]

For each model (``astrometry``: phi2, parallax, proper motions; ``joint``:
with the isochrone likelihood in Gaia G, BP, RP), a model is fitted once on a
small default-like mock (one member, no MC dropout), then mock fields of N
stars are scored in chunks (background flows and, for ``joint``, the
per-star photometric preparation included), after a first call on 10,000 of
them (timed apart: it starts torch's threads and builds lookup tables). Each N
runs in its own process so peak memory is per N. The last line is a JSON
summary.
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
import time
from pathlib import Path

from _common import emit, machine, peak_rss_mb, run_child


def fit_small(folder: Path, joint: bool) -> None:
    from streammix.data import StarTable
    from streammix.fit import fit
    from streammix.mock import MockConfig, generate_mock
    from streammix.pipeline import demo_config, mock_columns

    table, truth = generate_mock(MockConfig(n_stream=500, n_background=20_000), seed=0)
    config = demo_config(truth, ensemble=1, photometry=joint)
    data = config.model_dump(mode="json", exclude={"source"})
    data["fit"].update({"workers": 1, "dropout_samples": 0, "steps": 300})
    config = type(config).from_dict(data)
    fit(config, StarTable.from_table(table, mock_columns())).save(folder)


def score(folder: Path, n: int, chunk: int) -> dict:
    from streammix.data import StarTable
    from streammix.fit import load
    from streammix.mock import MockConfig, generate_mock
    from streammix.pipeline import mock_columns

    model = load(folder)
    table, _ = generate_mock(MockConfig(n_stream=max(50, n // 50), n_background=n - max(50, n // 50)), seed=1)
    stars = StarTable.from_table(table, mock_columns())
    del table
    if chunk is None:  # the library's default
        chunk = inspect.signature(model.membership).parameters["chunk_size"].default
    # the first call starts torch's threads and builds lookup tables: timed apart
    t0 = time.perf_counter()
    model.membership(stars[:10_000], dropout_samples=0, chunk_size=chunk)
    warm_up = time.perf_counter() - t0
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    out = model.membership(stars, dropout_samples=0, chunk_size=chunk)
    seconds = time.perf_counter() - t0
    return {"n": n, "model": "joint" if model.config.model.bands else "astrometry", "chunk": chunk, "seconds": round(seconds, 2), "stars_per_s": round(n / seconds),
            "warm_up_s_10000_stars": round(warm_up, 3), "rows": len(out), "peak_rss_mb_before_scoring": round(rss_before), "peak_rss_mb": round(peak_rss_mb())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--chunk", type=int, default=None, help="stars scored at once (default: the library's, FittedModel.membership)")
    parser.add_argument("--models", nargs="*", choices=["astrometry", "joint"], default=["astrometry", "joint"])
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(score(Path(args.model), args.one, args.chunk)))
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models:
            folder = Path(tmp) / kind
            fit_small(folder, kind == "joint")
            for n in args.n:
                chunk = [] if args.chunk is None else ["--chunk", str(args.chunk)]
                runs.append(run_child(__file__, "--model", str(folder), "--one", str(n), *chunk))
    emit({"benchmark": "score_throughput", "machine": machine(), "runs": runs})


if __name__ == "__main__":
    main()
