"""Mock recovery across the sky: new -> mock --stream -> fit -> score, for ten galstreams streams.

The ten span distance (5-40 kpc), length (10-100 deg), latitude (three at |b| < 30 deg:
NGC2298, Gaia-11, Jet) and proper-motion contrast. For each: ``streammix new`` writes the
config, :func:`streammix.sky_mock.sky_mock` draws the stream on its track in the Galaxy
model's background (at most ``--max-background`` field stars proposed before the query's
cuts: ``scale`` says what fraction of the model's stars that is, so the stream's contrast
is 1/scale times the real sky's), ``fit`` fits it, and the truth scores it: ROC AUC,
completeness and purity at p > 0.5, the RMS of the fitted phi2 and proper-motion tracks
against the true ones over the stream's phi1 span, and the wall time.

``--quick`` shrinks every fit to seconds (one ensemble member, 20 steps, 2 flow epochs: the
fits do not converge; a smoke run of the whole chain, not recovery figures).

Run: ``OMP_NUM_THREADS=1 python benchmarks/survey.py [--quick] [--only Pal5 ...]``; prints a
table and a JSON line last.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import yaml

from _common import emit, machine
from streammix.config import Config
from streammix.fit import fit, load_stars
from streammix.frames import get_frame
from streammix.galaxy import draw_field_stars
from streammix.new_stream import new_config
from streammix.pipeline import truth_metrics
from streammix.sky_mock import sky_mock

# name: (median |b| deg, distance kpc, length deg) from the galstreams tracks new picks
STREAMS = {
    "NGC2298": (17, 12.4, 11.6),
    "Gaia-11": (24, 12.5, 21.7),
    "Jet": (18, 30.7, 30.2),
    "M92": (33, 9.1, 20.2),
    "Pal5": (45, 21.3, 21.0),
    "Kshir": (47, 10.7, 17.4),
    "GD-1": (51, 8.3, 102.2),
    "NGC1261": (52, 19.9, 17.2),
    "AAU-AliqaUma": (69, 28.0, 9.7),
    "Cetus-Palca": (62, 34.3, 101.1),
}


def tiny(raw: dict) -> dict:
    raw["fit"].update(ensemble=1, steps=20, warm_start_steps=10, astrometry_steps=10, eval_every=10,
                      dropout_samples=0)  # fmt: skip
    raw["model"]["background"]["flow"] = {"epochs": 2, "hidden": 8, "transforms": 1}
    raw["model"]["isochrone"]["nodes"] = 20
    raw["model"]["grid_size"] = 32
    return raw


def run_one(name: str, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    raw = yaml.safe_load(new_config(name))
    if args.quick:
        raw = tiny(raw)
    config = Config.from_dict(raw, source=name)
    g_max = float(config.data.query.g_max)
    expected = float(draw_field_stars(get_frame(config.frame), tuple(config.field.phi1), tuple(config.field.phi2),
                                      g_max + 0.1, np.random.default_rng(0), n=0)["expected"])  # fmt: skip
    scale = min(1.0, args.max_background / max(expected, 1.0))
    stars, tracks = sky_mock(config, background_scale=scale, seed=args.seed)
    t_mock = time.perf_counter() - t0
    loaded = load_stars(config, stars)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model = fit(config, loaded)
    members = model.membership(loaded)
    is_stream = dict(zip(np.asarray(stars["source_id"]).tolist(), (stars["true_component"] == "stream").tolist()))
    truth = np.array([is_stream[i] for i in np.asarray(members["source_id"]).tolist()], bool)
    metrics = truth_metrics(np.asarray(members["p_stream"], float), truth)
    lo, hi = tracks.meta["phi1_range"]
    phi1 = np.linspace(lo, hi, 25)
    fitted = model.tracks(phi1)
    rms = {}
    for key in ("phi2", "pm_phi1_cosphi2", "pm_phi2"):
        true = np.interp(phi1, tracks["phi1"].value, np.asarray(getattr(tracks[key], "value", tracks[key])))
        got = np.asarray(getattr(fitted[f"stream_{key}"], "value", fitted[f"stream_{key}"]), float)
        rms[key] = float(np.sqrt(np.nanmean((got - true) ** 2)))
    b, distance, length = STREAMS.get(name, (np.nan, np.nan, np.nan))
    return {
        "stream": name, "abs_b": b, "distance": distance, "length": length, "stars": len(stars),
        "members": int(truth.sum()), "expected_field": expected, "scale": scale,
        "auc": metrics["auc"], "completeness": metrics["completeness"], "purity": metrics["purity"],
        "rms_phi2": rms["phi2"], "rms_pm1": rms["pm_phi1_cosphi2"], "rms_pm2": rms["pm_phi2"],
        "mock_s": t_mock, "total_s": time.perf_counter() - t0,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny fits (seconds; not converged)")
    parser.add_argument("--only", nargs="*", default=None, help="these streams only")
    parser.add_argument("--max-background", type=float, default=200_000, help="field stars proposed, at most")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for name in args.only or list(STREAMS):
        row = run_one(name, args)
        rows.append(row)
        print(f"{row['stream']:>13} |b| {row['abs_b']:>4} d {row['distance']:>5} L {row['length']:>6} "
              f"N {row['stars']:>7} members {row['members']:>5} scale {row['scale']:.3g} | AUC {row['auc']:.3f} "
              f"C {row['completeness']:.3f} P {row['purity']:.3f} | RMS phi2 {row['rms_phi2']:.3f} deg "
              f"pm1 {row['rms_pm1']:.3f} pm2 {row['rms_pm2']:.3f} mas/yr | {row['total_s']:.0f} s", flush=True)  # fmt: skip
    emit({"benchmark": "survey", "quick": args.quick, "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
