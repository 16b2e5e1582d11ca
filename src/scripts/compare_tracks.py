"""Tracks (rule ``tracks``): the fitted tracks and how they compare with the truth or galstreams.

Writes ``--tracks`` (the fit's tracks on its phi1 grid, medians and 5/95 %),
``--reference`` (the track compared with: a mock's true tracks, else the
galstreams track of ``compare.galstreams``, else an empty table) and
``--metrics`` (JSON): over the dense part of the stream (fitted linear density
above 10 % of its peak) the median phi2 width and proper motions; for a mock
the RMS of fitted minus true tracks (:func:`streammix.pipeline.track_metrics`);
with galstreams the RMS of fitted minus galstreams phi2 (and proper motions,
where the track has them) at the galstreams points inside the field and the
dense part. The tracks' header records the stream frame and the component
(what :func:`streammix.survey.track_on_sky` needs).

Usage: ``python src/scripts/compare_tracks.py STREAM_YAML FIT_DIR --tracks T --reference R --metrics M [--truth TRUTH]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import QTable

from streammix.fit import load
from streammix.frames import get_frame
from streammix.output import write_table
from streammix.pipeline import track_metrics
from streammix.tracks import galstreams_track
from scriptrun import run_script
from streamcfg import read_stream

DENSE_FRACTION = 0.1
ARCMIN_PER_DEG = 60.0


def dense_range(tracks: QTable, component: str) -> np.ndarray:
    """Where the fitted linear density exceeds ``DENSE_FRACTION`` of its peak (bool per grid point)."""
    density = np.asarray(getattr(tracks[f"{component}_linear_density"], "value", tracks[f"{component}_linear_density"]))
    return density > DENSE_FRACTION * np.nanmax(density)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stream")
    parser.add_argument("fit_dir")
    parser.add_argument("--truth")
    parser.add_argument("--tracks", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--metrics", required=True)
    args = parser.parse_args()
    spec = read_stream(args.stream)
    fit_dir = Path(args.fit_dir)
    model = load(fit_dir / "model")
    component = model.component_names[0]
    tracks = QTable.read(fit_dir / "tracks.ecsv")
    phi1 = tracks["phi1"].to_value(u.deg)
    dense = dense_range(tracks, component)
    metrics: dict[str, float] = {
        "phi1_dense_min": float(phi1[dense].min()),
        "phi1_dense_max": float(phi1[dense].max()),
        "phi2_width_median_arcmin": float(np.median(tracks[f"{component}_phi2_width"].to_value(u.deg)[dense]) * ARCMIN_PER_DEG),
    }
    for name in ("pm_phi1_cosphi2", "pm_phi2"):
        key = f"{component}_{name}"
        if key in tracks.colnames:
            metrics[f"{name}_median"] = float(np.median(tracks[key].to_value(u.mas / u.yr)[dense]))
    reference = QTable({"phi1": np.zeros(0) * u.deg})
    if args.truth:
        truth = QTable.read(args.truth)
        metrics["truth"] = track_metrics(model, truth, component)
        reference = truth
    if spec.galstreams is not None:
        frame = get_frame(model.config.frame) if model.config.frame else None
        track = galstreams_track(spec.galstreams["name"], spec.galstreams.get("reference"), frame)
        lo, hi = metrics["phi1_dense_min"], metrics["phi1_dense_max"]
        inside = (track.phi1 >= lo) & (track.phi1 <= hi) & np.isfinite(track.phi2)
        fitted = model.tracks(track.phi1[inside], dropout_samples=0)
        diff = fitted[f"{component}_phi2"].to_value(u.deg) - track.phi2[inside]
        metrics["galstreams"] = {
            "name": track.name,
            "reference": track.reference,
            "n_points": int(inside.sum()),
            "phi1_min": float(track.phi1[inside].min()) if inside.any() else float("nan"),
            "phi1_max": float(track.phi1[inside].max()) if inside.any() else float("nan"),
            "phi2_rms_arcmin": float(np.sqrt(np.mean(diff**2)) * ARCMIN_PER_DEG) if inside.any() else float("nan"),
        }
        # the proper motions too, at the galstreams points that have them
        for name in ("pm_phi1_cosphi2", "pm_phi2"):
            key = f"{component}_{name}"
            values = np.asarray(getattr(track, name), float)[inside]
            has = np.isfinite(values)
            if key in fitted.colnames and has.any():
                diff = fitted[key].to_value(u.mas / u.yr)[has] - values[has]
                metrics["galstreams"][f"{name}_rms"] = float(np.sqrt(np.mean(diff**2)))
        if not args.truth:
            reference = track.to_table()
    tracks.meta["stream"] = spec.name
    # what the survey's sky map needs to put the track on the sky (streammix.survey.track_on_sky)
    tracks.meta["component"] = component
    frame = model.config.frame
    tracks.meta["frame"] = frame if isinstance(frame, str) or frame is None else frame.model_dump(mode="json")
    write_table(tracks, args.tracks, overwrite=True)
    write_table(reference, args.reference, overwrite=True)
    Path(args.metrics).write_text(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    run_script(main)
