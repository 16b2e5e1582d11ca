"""Every number the article quotes for one stream (rule ``numbers``).

Writes ``<outdir>/<stream>_<key>.txt`` (one formatted number, no newline
issues for ``\\input``) for each key of :func:`streamcfg.number_keys` and
``--json`` with the unformatted values: member counts at p > 0.5 and 0.8, the
fit's wall time, the median width and proper motions of the dense part; for a
mock the ROC AUC, completeness, purity and worst calibration error against the
truth (:func:`streammix.pipeline.truth_metrics`) and the track RMS; with
galstreams the phi2 RMS against its track (and, in the JSON only, the proper
motions' where the track has them).

Usage: ``python src/scripts/write_numbers.py STREAM_YAML --summary S --members M --track-metrics T --outdir D --json J``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from astropy.table import QTable

from streammix.pipeline import truth_metrics
from scriptrun import run_script
from streamcfg import format_number, number_keys, read_stream

ARCMIN_PER_DEG = 60.0


def stream_numbers(spec, summary: dict, members: QTable, tracks: dict) -> dict[str, float]:
    """The raw values of every number key of ``spec``."""
    component = summary["components"][0]
    p = np.asarray(members[f"p_{component}"], dtype=float)
    values = {
        "n_stars": len(members),
        "n_p50": int(np.sum(p > 0.5)),
        "n_p80": int(np.sum(p > 0.8)),
        "ensemble": summary["ensemble"],
        "fit_minutes": summary["seconds"]["total"] / 60.0,
        "phi2_width_median_arcmin": tracks["phi2_width_median_arcmin"],
        "pm_phi1_median": tracks.get("pm_phi1_cosphi2_median", float("nan")),
        "pm_phi2_median": tracks.get("pm_phi2_median", float("nan")),
    }
    if spec.is_mock:
        is_member = np.asarray(members["true_component"]).astype(str) == "stream"
        truth = truth_metrics(p, is_member)
        rms = tracks["truth"]
        values.update(
            n_true_members=int(is_member.sum()),
            auc=truth["auc"],
            completeness=truth["completeness"],
            purity=truth["purity"],
            calibration_max_error=truth["calibration_max_error"],
            phi2_rms_arcmin=rms["phi2_rms"] * ARCMIN_PER_DEG,
            phi2_width_rms_arcmin=rms["phi2_width_rms"] * ARCMIN_PER_DEG,
            pm_phi1_rms=rms["pm_phi1_cosphi2_rms"],
            pm_phi2_rms=rms["pm_phi2_rms"],
        )
        values["calibration"] = truth["calibration"]
    if spec.galstreams is not None:
        g = tracks["galstreams"]
        values.update(
            galstreams_phi2_rms_arcmin=g["phi2_rms_arcmin"],
            galstreams_n_points=g["n_points"],
            galstreams_phi1_min=g["phi1_min"],
            galstreams_phi1_max=g["phi1_max"],
        )
        # in the JSON only (the survey table's), where the track has proper motions
        for name, key in (("pm_phi1_cosphi2_rms", "galstreams_pm_phi1_rms"), ("pm_phi2_rms", "galstreams_pm_phi2_rms")):
            if name in g:
                values[key] = g[name]
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stream")
    parser.add_argument("--summary", required=True)
    parser.add_argument("--members", required=True)
    parser.add_argument("--track-metrics", required=True)
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    spec = read_stream(args.stream)
    summary = json.loads(Path(args.summary).read_text())
    values = stream_numbers(spec, summary, QTable.read(args.members), json.loads(Path(args.track_metrics).read_text()))
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    for key in number_keys(spec):
        (out / f"{spec.name}_{key}.txt").write_text(format_number(key, values[key]) + "\n")
    Path(args.json).write_text(json.dumps(values, indent=1))


if __name__ == "__main__":
    run_script(main)
