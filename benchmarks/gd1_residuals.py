"""Does the real GD-1 field need a spur? Residuals with and without one.

Usage::

    python benchmarks/gd1_residuals.py [--config configs/gd1_dr2.yaml] [--out DIR] [--ensemble 1]
        [--set KEY=VALUE ...] [--variants with_spur without_spur]

Fits the config as shipped (stream, spur, cocoon) and without its spur
component, each to all 13,976 stars, and writes for each the (phi1, phi2)
residuals of the stars whose proper motions and parallax (and photometry, for
the joint config) favour GD-1 (:func:`streammix.residuals.position_residuals`)
as a table and figure into ``DIR/<variant>/``. Reports the excess, in units of
its counting error, in the region where the literature puts the spur (about
1 deg above the track at phi1 -36..-25: Price-Whelan & Bonaca 2018), and the
largest excess anywhere; with the spur modelled, also its fitted track, width
and member count. For every component the summary gives its expected members
(the sum of its probabilities) in the spur's region and in the spur's phi1
range, and its phi2 track and width there: where a model without the spur puts
the spur's stars. ``--set`` changes the config as in ``injection.py``. The last
line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _common import ROOT, SHARED, apply_sets, emit, machine, parse_sets

SPUR_REGION = ((-36.0, -25.0), (0.5, 1.75))  # phi1, phi2 (deg): Price-Whelan & Bonaca 2018, Fig. 1
SPUR_PHI1 = np.arange(-36.0, -24.0, 2.0)  # where the tracks are reported (deg)


def _components_at_spur(model, stars, members, tracks) -> dict:
    """Each component's expected members in the spur's region and in its phi1 range,
    and its phi2 track and width at the spur's phi1 (``tracks``, on :data:`SPUR_PHI1`)."""
    (lo1, hi1), (lo2, hi2) = SPUR_REGION
    phi1, phi2 = np.asarray(stars.phi1), np.asarray(stars.phi2)
    in_range = (phi1 >= lo1) & (phi1 <= hi1)
    in_region = in_range & (phi2 >= lo2) & (phi2 <= hi2)
    out = {"phi1": SPUR_PHI1.tolist()}
    for name in model.component_names:
        p = np.asarray(members[f"p_{name}"], float)
        entry = {"expected_in_region": float(p[in_region].sum()), "expected_in_phi1_range": float(p[in_range].sum())}
        if f"{name}_phi2" in tracks.colnames:
            entry["phi2"] = tracks[f"{name}_phi2"].value.round(3).tolist()
            entry["phi2_width"] = tracks[f"{name}_phi2_width"].value.round(3).tolist()
        out[name] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "gd1_dr2.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "output" / "gd1_residuals")
    parser.add_argument("--ensemble", type=int, default=1)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a config setting (YAML value), e.g. model.cut_normalisation=stars_without_photometry; applied "
                        "after --ensemble (which turns fit.cross_fit off for one member)")
    parser.add_argument("--variants", nargs="+", choices=("with_spur", "without_spur"),
                        default=["with_spur", "without_spur"])
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))

    from streammix.config import Config
    from streammix.fit import fit, load_stars
    from streammix.output import write_table
    from streammix.plot import DPI, plot_residuals
    from streammix.residuals import cmd_residuals, position_residuals

    shipped = Config.from_yaml(args.config)
    data = shipped.model_dump(mode="json", exclude={"source"})
    data["fit"]["ensemble"] = args.ensemble
    if args.ensemble == 1:  # one member cannot be cross-fitted (the joint config's cross_fit)
        data["fit"]["cross_fit"] = False
    apply_sets(data, parse_sets(args.sets))
    without = json.loads(json.dumps(data))
    without["model"]["components"] = [c for c in data["model"]["components"] if c["name"] != "spur"]
    if without["model"].get("member_components"):  # the spur leaves p_member too
        without["model"]["member_components"] = [c for c in without["model"]["member_components"] if c != "spur"]
    stars = load_stars(Config.from_dict(data))  # --set data.* may change the stars
    summary = {"machine": machine(), "config": str(args.config), "sets": args.sets, "region": SPUR_REGION, "variants": {}}
    for name, settings in (("with_spur", data), ("without_spur", without)):
        if name not in args.variants:
            continue
        started = time.perf_counter()
        config = Config.from_dict(settings)
        model = fit(config, stars)
        residuals = position_residuals(model, stars)
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        write_table(residuals.to_table(), folder / "residuals.ecsv", overwrite=True)
        plot_residuals(residuals).savefig(folder / "residuals.png", dpi=DPI)
        z = residuals.significance
        i, j = np.unravel_index(np.argmax(z), z.shape)
        if len(config.model.bands) == 2:  # the joint model: the same check in the CMD
            cmd = cmd_residuals(model, stars)
            write_table(cmd.to_table(), folder / "residuals_cmd.ecsv", overwrite=True)
            plot_residuals(cmd).savefig(folder / "residuals_cmd.png", dpi=DPI)
            zc = cmd.significance
            k, m = np.unravel_index(np.argmax(np.abs(zc)), zc.shape)
            cmd_summary = {
                "n_selected": cmd.n_selected,
                "max_abs_bin_significance": float(np.abs(zc).max()),
                "at": [float(cmd.x_edges[k:k + 2].mean()), float(cmd.y_edges[m:m + 2].mean())],
                "bins_beyond_3_sigma": int(np.sum(np.abs(zc) > 3)),
                "bins": int(zc.size),
            }
        members = model.membership(stars)
        result = {
            "seconds": time.perf_counter() - started,
            "n_selected": residuals.n_selected,
            "spur_region_significance": residuals.region_significance(*SPUR_REGION),
            "max_bin_significance": float(z.max()),
            "max_bin_at": [float(residuals.x_edges[i:i + 2].mean()), float(residuals.y_edges[j:j + 2].mean())],
            "p_member": {t: int(np.sum(np.asarray(members["p_member"]) > t)) for t in (0.5, 0.8)},
        }
        if len(config.model.bands) == 2:
            result["cmd"] = cmd_summary
        tracks = model.tracks(SPUR_PHI1)
        result["components"] = _components_at_spur(model, stars, members, tracks)
        if "spur" in model.component_names:
            result["spur"] = {
                "phi1": SPUR_PHI1.tolist(),
                "phi2": tracks["spur_phi2"].value.round(3).tolist(),
                "phi2_width": tracks["spur_phi2_width"].value.round(3).tolist(),
                "stream_phi2": tracks["stream_phi2"].value.round(3).tolist(),
                "members_p_spur_0.5": int(np.sum(np.asarray(members["p_spur"]) > 0.5)),
                "expected_members": float(np.sum(members["p_spur"])),
            }
        print(name, json.dumps(result), flush=True)
        summary["variants"][name] = result
    emit(summary)


if __name__ == "__main__":
    main()
