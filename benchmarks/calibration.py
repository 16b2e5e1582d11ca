"""Calibration of the demo model on an independent mock several times its size.

Usage::

    python benchmarks/calibration.py [--model demo_output/model] [--scale 8] [--seed 101]

The demo's own field has only 50-100 stars in most bins of p between 0.1 and
0.9, so a perfectly calibrated model misses by more than 0.05 in some bin by
chance alone (the binomial spread is about 0.06 for 60 stars at p ~ 0.4).
Here the fitted model (by default ``demo_output/model``, else the demo config
is fitted on the default mock, one member) scores a fresh mock drawn from the
same generative model with ``scale`` times as many stream and background
stars (so the same stream fraction, which the fitted weights describe): the
bins then hold several hundred stars and a bias of 0.02 shows. The last line
is a JSON summary with, per bin, the mean p, the fraction of true members,
the spread counting alone would give, and z.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import ROOT, emit, machine, peak_rss_mb


def fitted_model(folder: Path | None):
    from streammix.data import StarTable
    from streammix.fit import fit, load
    from streammix.mock import MockConfig, generate_mock
    from streammix.pipeline import demo_config, mock_columns

    if folder is not None and (folder / "config.yaml").exists():
        return load(folder), str(folder)
    table, truth = generate_mock(MockConfig(), seed=0)
    config = demo_config(truth, ensemble=1)
    model = fit(config, StarTable.from_table(table, mock_columns()))
    return model, "fitted here (demo config, one member)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "demo_output" / "model")
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--seed", type=int, default=101)
    args = parser.parse_args()

    from streammix.data import StarTable
    from streammix.mock import MockConfig, generate_mock
    from streammix.pipeline import mock_columns, truth_metrics

    model, source = fitted_model(args.model)
    base = MockConfig()
    table, _ = generate_mock(
        base.model_copy(update={"n_stream": args.scale * base.n_stream, "n_background": args.scale * base.n_background}), seed=args.seed
    )
    stars = StarTable.from_table(table, mock_columns(["true_component"]))
    start = time.perf_counter()
    members = model.membership(stars, dropout_samples=0)
    seconds = time.perf_counter() - start
    truth = np.asarray(table["true_component"]) == "stream"
    metrics = truth_metrics(np.asarray(members["p_stream"]), truth)
    for b in metrics["calibration"]:
        print(
            f"p {b['p_low']:.1f}-{b['p_high']:.1f}: {b['n']:7d} stars, mean p {b['mean_p']:.3f}, "
            f"members {b['member_fraction']:.3f} (counting spread {b['member_fraction_sd']:.3f}, z {b['z']:+.1f})"
        )
    emit(
        {
            "benchmark": "calibration",
            "model": source,
            "n_stars": len(stars),
            "scale": args.scale,
            "seed": args.seed,
            "score_seconds": round(seconds, 1),
            "auc": metrics["auc"],
            "completeness": metrics["completeness"],
            "purity": metrics["purity"],
            "calibration_max_error": metrics["calibration_max_error"],
            "calibration_max_z": metrics["calibration_max_z"],
            "bins": [
                {k: round(b[k], 4) if isinstance(b[k], float) else b[k] for k in ("p_low", "p_high", "n", "mean_p", "member_fraction", "member_fraction_sd", "z")}
                for b in metrics["calibration"]
            ],
            "peak_rss_mb": round(peak_rss_mb()),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
