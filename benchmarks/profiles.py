"""Cross-track profiles on a mock whose stream has heavy wings: held-out likelihood and membership.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/profiles.py [--dof 2.0] [--folds 3] [--out profiles_output]

Draws the default mock's stream with a Student-t cross-track profile of
``--dof`` degrees of freedom (scale: the mock's phi2_width track, 0.1-0.3 deg)
in a smaller field population (``--n-stream``, ``--n-background``), then fits
the demo's astrometric config (control points read off the true tracks) with
each profile of :data:`streammix.profiles.PROFILES` and

- compares them by held-out log-likelihood (:func:`streammix.compare.compare`,
  ``--folds`` folds, one ensemble member): per star, and paired against the
  Gaussian;
- fits each once on all the stars and scores ``p_member`` against the truth
  (:func:`streammix.pipeline.truth_metrics`: AUC, completeness, purity,
  calibration), and reports the fitted shape parameters (median over phi1
  where the stream is).

Writes ``<out>/profiles.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import machine

from streammix.compare import compare
from streammix.config import Config
from streammix.fit import fit
from streammix.mock import MockConfig, generate_mock
from streammix.pipeline import demo_config, truth_metrics
from streammix.profiles import PROFILES


def profile_config(truth, profile: str, seed: int) -> Config:
    """The demo's astrometric config with ``profile`` across the track, one member, one worker."""
    data = demo_config(truth, seed=seed, ensemble=1, photometry=False).model_dump(mode="json")
    data["name"] = profile
    data["fit"]["workers"] = 1
    data["model"]["components"][0]["profile"] = profile
    return Config.from_dict(data, source=f"profile {profile}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dof", type=float, default=2.0, help="the mock stream's Student-t degrees of freedom")
    parser.add_argument("--n-stream", type=int, default=2000)
    parser.add_argument("--n-background", type=int, default=20000)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("profiles_output"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    mock = MockConfig(n_stream=args.n_stream, n_background=args.n_background, stream_profile="student_t",
                      stream_profile_parameters={"phi2_dof": args.dof})
    stars, truth = generate_mock(mock, seed=args.seed)
    configs = [profile_config(truth, name, args.seed) for name in ("gaussian", *sorted(set(PROFILES) - {"gaussian"}))]
    started = time.perf_counter()
    result = compare(configs, stars, folds=args.folds, seed=args.seed)
    compare_seconds = time.perf_counter() - started
    summary = result.summary()

    is_member = np.asarray(stars["true_component"]) == "stream"
    rows = []
    for config, row in zip(configs, summary):
        started = time.perf_counter()
        model = fit(config, stars)
        members = model.membership(stars)
        metrics = truth_metrics(np.asarray(members["p_member"]), is_member)
        tracks = model.tracks()
        shape = {p.name: float(np.median(np.asarray(tracks[f"stream_{p.name}"])))
                 for p in PROFILES[config.name].parameters}
        rows.append({"profile": config.name, **{k: row[k] for k in row.colnames if k not in ("config", "scored_on")},
                     "shape": shape, "fit_seconds": time.perf_counter() - started,
                     **{k: metrics[k] for k in ("auc", "completeness", "purity", "calibration_max_error",
                                                "calibration_max_z")}})
    record = {"machine": machine(), "mock": json.loads(mock.to_json()), "folds": args.folds,
              "stars": len(stars), "stream_stars": int(is_member.sum()), "compare_seconds": compare_seconds,
              "rows": rows}
    (args.out / "profiles.json").write_text(json.dumps(record, indent=1, default=float))
    print(f"mock: {len(stars)} stars, {int(is_member.sum())} in the stream, Student-t dof {args.dof}; "
          f"{args.folds} folds, {compare_seconds:.0f} s")
    print("| profile | held-out log L per star | difference from gaussian (paired) | fitted shape | AUC | "
          "completeness | purity | calibration max error (z) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        shape = ", ".join(f"{k} {v:.2f}" for k, v in r["shape"].items()) or "-"
        print(f"| {r['profile']} | {r['mean_loglike']:.4f} ± {r['mean_loglike_err']:.4f} | "
              f"{r['delta_total']:+.1f} ± {r['delta_total_err']:.1f} | {shape} | {r['auc']:.4f} | {r['completeness']:.3f} | "
              f"{r['purity']:.3f} | {r['calibration_max_error']:.3f} ({r['calibration_max_z']:.1f}) |")


if __name__ == "__main__":
    main()
