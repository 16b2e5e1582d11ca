"""Fit wall time, time per step, peak memory and accuracy against the truth.

Usage::

    python benchmarks/fit_scaling.py --n 10000 100000 [--models astrometry joint] [--gd1] [--device cpu] [--workers 2]

For each N and model, a mock of N field stars (2% in the stream) is generated
and fitted with the demo configuration (one ensemble member, so the time is
that of one fit): ``astrometry`` uses phi2, parallax and proper motions,
``joint`` adds the isochrone likelihood in Gaia G, BP, RP, with the demo's
background (one flow over parallax, proper motions and the three magnitudes).
``--workers`` processes (default: every core) train the background's flows at
once; the JSON gives the main process's peak RSS, the largest worker's, and the
peak of the fit's processes' summed RSS (sampled every 0.2 s; shared pages count
once per process).
The JSON also gives each flow's training time and stars (``flows_s``,
``flows_trained_on``). The accuracy reached (ROC AUC, completeness and purity
at p > 0.5, the calibration's bins, distance-modulus track RMS where the stream
is dense) is printed beside each time. ``--gd1`` also fits the real GD-1 field in
``$STREAMMIX_SHARED_DATA`` with ``configs/gd1_dr2.yaml`` (astrometry) and
``configs/gd1_dr2_photometry.yaml`` (joint). Each fit runs in its own process
so peak memory is per fit. The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from _common import ROOT, SHARED, TreeMemory, emit, machine, peak_rss_mb, run_child, scaling_mock


def one_mock(n: int, device: str, joint: bool, workers: int) -> dict:
    import numpy as np

    from streammix.data import StarTable
    from streammix.fit import fit
    from streammix.mock import generate_mock
    from streammix.pipeline import demo_config, mock_columns, purity_at_completeness, track_metrics, truth_metrics

    t0 = time.perf_counter()
    table, truth = generate_mock(scaling_mock(n), seed=0)
    stars = StarTable.from_table(table, mock_columns(["true_component"]))
    mock_seconds = time.perf_counter() - t0
    config = demo_config(truth, ensemble=1, photometry=joint)
    data = config.model_dump(mode="json", exclude={"source"})
    data["fit"].update({"device": device, "workers": workers, "dropout_samples": 0})
    config = type(config).from_dict(data)
    t0 = time.perf_counter()
    with TreeMemory() as memory:
        model = fit(config, stars)
    fit_seconds = time.perf_counter() - t0
    member = model.summary["members"][0]
    t0 = time.perf_counter()
    members = model.membership(stars)
    score_seconds = time.perf_counter() - t0
    metrics = truth_metrics(np.asarray(members["p_stream"]), np.asarray(table["true_component"]) == "stream")
    tracks = track_metrics(model, truth)
    truth_member = np.asarray(table["true_component"]) == "stream"
    at_equal = {f"purity_at_completeness_{c:.2f}": round(purity_at_completeness(members["p_stream"], truth_member, c)[0], 4)
                for c in (0.9, 0.95)}
    return {
        "n": n,
        "model": "joint" if joint else "astrometry",
        "mock_s": round(mock_seconds, 2),
        "fit_s": round(fit_seconds, 1),
        "background_s": round(model.summary["seconds"]["background"], 1),
        # each flow's own training time and how many stars it learnt from
        "flows_s": {name: round(s, 1) for name, s in model.summary["flows_seconds"].items()},
        "flows_trained_on": model.summary["flows_trained_on"],
        "mixture_s": round(member["seconds"], 1),
        "steps": member["steps"],
        "ms_per_step": round(1000 * member["seconds"] / max(member["steps"], 1), 1),
        "score_s": round(score_seconds, 2),
        "peak_rss_mb": round(peak_rss_mb()),
        # worker processes (the background's flows with workers > 1): the largest one's peak
        "peak_rss_mb_largest_worker": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        # the fit's processes together: the peak of their summed RSS, sampled every 0.2 s
        "peak_rss_mb_all_processes": round(memory.peak_mb),
        "workers": workers,
        "auc": round(metrics["auc"], 5),
        "completeness": round(metrics["completeness"], 4),
        "purity": round(metrics["purity"], 4),
        **at_equal,
        "calibration_max_error": round(metrics["calibration_max_error"], 3),
        "calibration_max_z": round(metrics["calibration_max_z"], 2),
        # each bin of p (streammix.pipeline.truth_metrics): stars, mean p, the members' fraction, z
        "calibration": [
            [round(b["p_low"], 1), b["n"], round(b["mean_p"], 3), round(b["member_fraction"], 3), round(b["z"], 2)]
            for b in metrics["calibration"]
        ],
        "distmod_rms": round(tracks["distmod_rms"], 3),
        "phi2_rms": round(tracks["phi2_rms"], 3),
    }


def one_gd1(device: str, joint: bool) -> dict:
    import os

    from streammix.config import Config
    from streammix.fit import fit

    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    config = Config.from_yaml(ROOT / "configs" / ("gd1_dr2_photometry.yaml" if joint else "gd1_dr2.yaml"))
    data = config.model_dump(mode="json", exclude={"source"})
    data["fit"].update({"device": device, "workers": 1})
    config = Config.from_dict(data)
    t0 = time.perf_counter()
    model = fit(config)
    return {
        "n": model.summary["n_stars"],
        "data": "gd1_dr2",
        "model": "joint" if joint else "astrometry",
        "ensemble": len(model.mixtures),
        "fit_s": round(time.perf_counter() - t0, 1),
        "background_s": round(model.summary["seconds"]["background"], 1),
        "mixture_s": [round(s, 1) for s in model.summary["seconds"]["mixtures"]],
        "peak_rss_mb": round(peak_rss_mb()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--models", nargs="*", choices=["astrometry", "joint"], default=["astrometry", "joint"])
    parser.add_argument("--gd1", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1,
        help="processes for a mock fit (one member: they train the background's flows at once; default: every core)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one fit, one JSON line
        what, model = args.one.split(":")
        joint = model == "joint"
        result = one_gd1(args.device, joint) if what == "gd1" else one_mock(int(what), args.device, joint, args.workers)
        print(json.dumps(result))
        return
    runs = []
    jobs = [f"{n}:{m}" for n in args.n for m in args.models] + ([f"gd1:{m}" for m in args.models] if args.gd1 else [])
    for job in jobs:
        runs.append(run_child(__file__, "--one", job, "--device", args.device, "--workers", str(args.workers)))
    emit({"benchmark": "fit_scaling", "machine": machine(), "runs": runs})


if __name__ == "__main__":
    main()
