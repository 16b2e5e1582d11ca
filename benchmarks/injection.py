"""Injection-recovery on the real GD-1 field: synthetic streams drawn into the Gaia DR2 catalog.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/injection.py [--quick] [--configs astrometry joint]
        [--set model.background.error_context=true] [--add-component YAML] [--out injection_output]
        [--label NAME]

Each case draws a thin synthetic stream (:func:`streammix.inject.inject_stream`)
into ``gd1_dr2/gd1_pm_box_dr2_ps1.fits``: phi2 tracks 2-4 deg away from GD-1
(phi2 ~ 0), proper motions 0.5-3 mas/yr from GD-1's (-7.9, -0.6 mas/yr in this
file), 100-1,000 stars, MIST PS1 isochrone (the joint config's) at distance
modulus 14-15. The same injected catalog is then fitted with each shipped
config (``configs/gd1_dr2.yaml``, astrometry only; ``configs/gd1_dr2_photometry.yaml``,
joint) plus one stream-like component ``injected`` with the stream's bounds and
loose control points at the injected tracks (phi2 +-0.5 deg, proper motions
+-1 mas/yr, distance modulus +-0.5 mag, every 10 deg), one ensemble member (not
cross-fitted) and one worker. ``p_injected`` is scored against the truth column with
:func:`streammix.pipeline.truth_metrics`: ROC AUC, completeness and purity at
p > 0.5, and calibration pooled over the injections at >= 1 mas/yr (and,
separately, those closer in) in bins of p holding >= 50 stars, each with the
binomial error of its member fraction. For the false members (real stars at
p > 0.5) it records their magnitude, parallax error, missing photometry and
proper-motion distance from the injected track, beside the same for the
recovered members and for all real stars.

Writes ``<out>/injection_<label>.json`` (every case, every config, the pooled
calibration) and ``<out>/<label>/<case>_<config>.ecsv`` (the stars with
p_injected > 0.05 or injected; with ``fit.cross_fit`` also each star's ``fold`` and every
member's ``weight_log_ratio_<m>`` and ``density_log_ratio_<m>``, which
``benchmarks/cross_fit_gap.py`` reads), and prints a markdown table. ``--set key=value``
changes every config (dotted key, YAML value), e.g. to compare a model change; ``data.*``
values (e.g. ``data.selection``) also apply to the draw, so the injected stars are cut as
the catalogue's were. ``--add-component`` adds a component (a YAML mapping, e.g. a wide
``field`` population) to every config, outside ``p_member``; ``--injected-dispersion``
gives the injected component a velocity-dispersion prior (:mod:`streammix.dispersion`), and
``--injected`` any further settings of it (a YAML mapping, e.g. ``'{profile: student_t}'``;
not its name, bounds, control points or velocity dispersion, which the benchmark and
``--injected-dispersion`` set). ``--spec`` gives every case's injection spec further settings
(e.g. ``'{error_draw: rejected}'``: the draws lose their imprecise stars to the cuts as the
catalogue's own stars were lost, :class:`streammix.inject.InjectionSpec`; not the tracks, extent
or size that each case sets). The draws are cut exactly by the file's own cuts (parallax
< 1 mas and its (pmra, pmdec) box, ``FILE_CUTS``), or by a ``--set data.selection``, as the
catalogue's stars were, whether or not the fitted config declares them (the joint config does, with
``model.cut_normalisation: stars_without_photometry``; ``--set data.selection=null`` fits without them
and then needs ``--set model.cut_normalisation=star``, the default); ``--draw-cuts YAML``
gives other cuts, ``--draw-cuts null`` only the catalogue's proper-motion ranges per tenth
of phi1, which are looser than the box (the shipped model's draws of sessions 8-19, which
held injected stars outside the box, where the file has no field stars:
benchmarks/RESULTS.md, session 20). The draws end where the file's stars of the stream's
colours do: donors matched in PS1 i, kept with the soft limit in i that
``benchmarks/magnitude_limit.py`` fits (``--draw-limit percentile``: donors matched in g, cut
hard at the file's 99th percentile in g, as in sessions 8-22, which let blue stars run about
1.2 mag fainter than any of the file's own).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import yaml
from _common import ROOT, SHARED, apply_sets, machine, parse_sets

GD1_PM = (-7.9, -0.6)  # mas/yr, GD-1's reflex-corrected proper motion in this file
# the cuts that made gd1_pm_box_dr2_ps1.fits (the joint config's data.selection): the draws are cut
# by them unless --draw-cuts says otherwise
FILE_CUTS = {"parallax": [None, 1.0], "pmra": [-7.0, -2.0], "pmdec": [-15.0, -11.0], "reflex_distance": 8.0}
CONFIGS = {"astrometry": ROOT / "configs" / "gd1_dr2.yaml", "joint": ROOT / "configs" / "gd1_dr2_photometry.yaml"}
ISOCHRONE = "mist_v1.2_ps1_feh-1.35_12gyr.iso.cmd"
BANDS = {"ps1_g": "g_mean_psf_mag", "ps1_i": "i_mean_psf_mag"}

# (name, pm offset mas/yr, pm direction (d pm_phi1, d pm_phi2), phi2 track, n_stars, distmod)
FLAT_UP = 3.0  # phi2 = +3 deg
SLOPED_DOWN = {"coefficients": [-3.0, 0.04], "phi1_ref": -45.0}  # -3.8 .. -2.2 deg
SLOPED_UP = {"coefficients": [2.5, 0.03], "phi1_ref": -45.0}  # 1.9 .. 3.1 deg
CASES = [  # six cases x two configs: about 25 minutes on one core (joint fits ~3 min, astrometric ~1 min)
    ("pm3_a", 3.0, (1.0, 0.0), FLAT_UP, 300, 14.5),
    ("pm2_a", 2.0, (1.0, 0.0), SLOPED_DOWN, 1000, 14.5),
    ("pm2_b", 2.0, (0.6, 0.8), SLOPED_UP, 100, 15.0),
    ("pm1_a", 1.0, (1.0, 0.0), FLAT_UP, 300, 14.5),
    ("pm1_b", 1.0, (0.0, -1.0), SLOPED_DOWN, 1000, 14.5),
    ("pm05_a", 0.5, (1.0, 0.0), FLAT_UP, 300, 14.5),
]
QUICK = ("pm1_a",)
TRACK_NAMES = ("phi2", "phi2_width", "pm_phi1_cosphi2", "pm_phi2", "pm_phi1_cosphi2_width", "pm_phi2_width",
               "distmod", "distmod_width")
PHI1_RANGE = (-65.0, -25.0)


def spec_of(case) -> dict:
    """The injection spec of a case, as a dict."""
    name, offset, (d1, d2), phi2, n, distmod = case
    norm = float(np.hypot(d1, d2))
    return {
        "phi1_range": list(PHI1_RANGE),
        "n_stars": n,
        "phi2": phi2,
        "phi2_width": 0.2,
        "pm_phi1_cosphi2": GD1_PM[0] + offset * d1 / norm,
        "pm_phi2": GD1_PM[1] + offset * d2 / norm,
        "pm_phi1_cosphi2_width": 0.2,
        "pm_phi2_width": 0.2,
        "distmod": distmod,
        "distmod_width": 0.05,
        "isochrone": {"path": str(SHARED / "isochrones" / ISOCHRONE), "age": 12.0, "feh": -1.35},
        "bands": BANDS,
    }


def draw_limit_settings(config, how: str) -> dict:
    """The injection-spec settings of the draws' faint limit (``--draw-limit``): for
    ``"fitted"``, donors matched in PS1 i and the soft limit in i fitted to the stars of
    ``config``'s catalogue with the stream's colours (``benchmarks/magnitude_limit.py``);
    for ``"percentile"``, none (the spec's defaults: donors in g, its 99th percentile)."""
    if how == "percentile":
        return {}
    from magnitude_limit import STREAM_COLOURS, limits

    from streammix.fit import load_stars

    fitted = limits(load_stars(config), STREAM_COLOURS)["ps1_i"]
    return {"donor_band": "ps1_i", "magnitude_limit": round(fitted.limit, 3), "magnitude_limit_width": round(fitted.width, 3)}


def yaml_value(text: str) -> object:
    """An option's YAML value; argparse reports invalid YAML as one usage error."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"not valid YAML: {text!r}") from None


# the settings of the injection spec that each case defines (spec_of), which --spec may not change
CASE_KEYS = ("phi1_range", "n_stars", "phi2", "pm_phi1_cosphi2", "pm_phi2", "distmod")


ORACLE_WIDTH = 0.02  # control-point width of --oracle (deg, mas/yr, mag)


ORACLE_PARAMETERS = ("phi2", "phi2_width", "pm_phi1_cosphi2", "pm_phi2", "pm_phi1_cosphi2_width", "pm_phi2_width",
                     "distmod")


def config_with_injected(
    path: Path, spec, sets, oracle: bool = False, extra: list[dict] = (), dispersion: dict | None = None,
    held: tuple[str, ...] = (), settings: dict | None = None,
) -> "object":
    """The shipped config plus the ``injected`` component, ensemble 1, one worker, ``--set`` applied.

    ``oracle``: the injected component is held at the injected tracks and
    widths by control points every 2 deg of width ``ORACLE_WIDTH``: what is
    left to the fit is its weight, the background and GD-1's components, so
    the memberships show what the data allow when the stream's model is right.
    ``held``: only these of its parameters (of ``ORACLE_PARAMETERS``) are held so,
    the others fitted from the loose control points as without ``oracle``.
    """
    from streammix.config import Config
    from streammix.inject import track_values

    base = Config.from_yaml(path)
    data = base.model_dump(mode="json", exclude={"source"})
    stream = next(c for c in data["model"]["components"] if c["name"] == "stream")
    points = []
    held = ORACLE_PARAMETERS if oracle else tuple(held)
    loose = [(name, width) for name, width in (("phi2", 0.5), ("pm_phi1_cosphi2", 1.0), ("pm_phi2", 1.0), ("distmod", 0.5))
             if name not in held]  # fmt: skip
    for every, chosen in ((10.0, loose), (2.0, [(name, ORACLE_WIDTH) for name in held])):
        for phi1 in np.arange(spec.phi1_range[0], spec.phi1_range[1] + 1e-9, every):
            for parameter, width in chosen:
                value = float(track_values(getattr(spec, parameter), np.array([phi1]))[0])
                points.append({"parameter": parameter, "phi1": float(phi1), "value": value, "width": width})
    if extra:  # components outside p_member, before the injected one
        data["model"]["member_components"] = data["model"].get("member_components") or [
            c["name"] for c in data["model"]["components"]
        ]
        data["model"]["components"].extend(copy.deepcopy(list(extra)))
    injected = {"name": "injected", "bounds": copy.deepcopy(stream["bounds"]), "control_points": points}
    if dispersion is not None:
        injected["velocity_dispersion"] = dict(dispersion)
    injected.update(copy.deepcopy(settings or {}))
    data["model"]["components"].append(injected)
    # one member cannot be cross-fitted: --set fit.ensemble=4 --set fit.cross_fit=true for the shipped joint fit
    data["fit"].update({"ensemble": 1, "workers": 1, "dropout_samples": 0, "cross_fit": False, "cross_fit_folds": None})
    apply_sets(data, sets)
    return Config.from_dict(data, source=f"{path.name} + injected")


def describe(mask: np.ndarray, table, p: np.ndarray, spec) -> dict:
    """Magnitude, parallax error, missing photometry, pm distance from the injected track of ``mask`` stars."""
    from streammix.inject import track_values

    if not mask.any():
        return {"n": 0}
    g = np.asarray(table["g_mean_psf_mag"].filled(np.nan), float)[mask]
    g[g > 1e19] = np.nan
    plx_err = np.asarray(table["parallax_error"].filled(np.nan), float)[mask]
    phi1 = np.asarray(table["phi1"].filled(np.nan), float)[mask]
    d1 = np.asarray(table["pm_phi1"].filled(np.nan), float)[mask] - track_values(spec.pm_phi1_cosphi2, phi1)
    d2 = np.asarray(table["pm_phi2"].filled(np.nan), float)[mask] - track_values(spec.pm_phi2, phi1)
    dpm = np.hypot(d1, d2)
    q = lambda x: [float(v) for v in np.nanpercentile(x, [16, 50, 84])] if np.isfinite(x).any() else None  # noqa: E731
    return {
        "n": int(mask.sum()),
        "mean_p": float(p[mask].mean()),
        "no_photometry_fraction": float(np.mean(~np.isfinite(g))),
        "g_16_50_84": q(g),
        "parallax_error_16_50_84": q(plx_err),
        "pm_distance_16_50_84": q(dpm),
        "pm_distance_over_error_16_50_84": q(dpm / (1.7 * plx_err)),
        "parallax_over_error_16_50_84": q(np.asarray(table["parallax"].filled(np.nan), float)[mask] / plx_err),
    }


def ensemble_shares(model, tensors, component: str = "injected") -> np.ndarray:
    """Each star's share of ``component`` in the members' mean density,
    sum_m f_k^m p_k^m / sum_m sum_j f_j^m p_j^m (the density ``streammix compare``
    scores held out), from the stars' ``model.prepare(stars, prune=False)``; a
    diagnostic beside the reference member's p_<component>."""
    import torch

    with torch.no_grad():
        # each member's density of the selected stars (less its normaliser over the cuts, where it has one)
        joints = torch.stack([
            (mixture.eval().log_joint(tensors) - mixture.log_normaliser(tensors).unsqueeze(-1)).double()
            for mixture in model.mixtures
        ])  # fmt: skip
    mean_joint = torch.logsumexp(joints, dim=0)
    shares = torch.exp(mean_joint - torch.logsumexp(mean_joint, dim=-1, keepdim=True))
    return shares[:, model.component_names.index(component)].numpy()


def member_log_ratios(model, tensors, component: str = "injected") -> tuple[np.ndarray, np.ndarray]:
    """Each member's log-ratio of ``component`` to the background at each star, split
    into the weights' part, ln f_k - ln f_bkg, and the densities', ln p_k - ln p_bkg
    (everything else of the log-joint: the astrometry, the isochrone, the error and
    photometry-share terms, the cuts' fraction), each shape (M, N): with
    ``fit.cross_fit`` the difference between the members that trained on a star and
    the one that held it out says which part carries their gap (``benchmarks/cross_fit_gap.py``);
    from the stars' ``model.prepare(stars, prune=False)``."""
    import torch

    k = model.component_names.index(component)
    weights, densities = [], []
    with torch.no_grad():
        for mixture in model.mixtures:
            mixture.eval()
            table = mixture.parameter_table(mixture.grid)
            log_w = mixture.log_weights(tensors, table).double()
            density = mixture.log_joint(tensors, table).double() - log_w
            weights.append((log_w[:, k] - log_w[:, -1]).numpy())
            densities.append((density[:, k] - density[:, -1]).numpy())
    return np.stack(weights), np.stack(densities)


def one_per_fold(model, stars, component: str = "injected") -> np.ndarray:
    """With ``fit.cross_fit_folds`` below the ensemble: each star's p_<component> from the
    first member per fold alone (members 0 .. folds - 1, the ensemble the same seeds would
    give with one member per fold), beside the mean over all the members holding it out."""
    import dataclasses

    from streammix.compare import with_ensemble

    folds = model.config.fit.folds
    alone = dataclasses.replace(model, mixtures=model.mixtures[:folds], config=with_ensemble(model.config, folds))
    return np.asarray(alone.membership(stars)[f"p_{component}"], float)


def fitted_tracks(model, spec) -> dict:
    """The fitted ``injected`` component's tracks against the spec, medians over nine phi1
    inside the injected range (a width fitted wider than the spec's means the component
    took in background stars, or the modelled errors are too small)."""
    from streammix.inject import track_values

    phi1 = np.linspace(spec.phi1_range[0] + 2.0, spec.phi1_range[1] - 2.0, 9)
    tracks = model.tracks(phi1)
    out = {}
    for name in tracks.colnames:
        parameter = name.removeprefix("injected_")
        if name == parameter or parameter.endswith(("_q05", "_q95")) or parameter not in TRACK_NAMES:
            continue
        fitted = np.asarray(getattr(tracks[name], "value", tracks[name]), float)
        truth = track_values(getattr(spec, parameter), phi1)
        out[parameter] = {"fitted_median": float(np.median(fitted)), "spec_median": float(np.median(truth)),
                          "median_abs_difference": float(np.median(np.abs(fitted - truth)))}  # fmt: skip
    return out


def pooled(results: list[dict], config: str, select) -> dict:
    from streammix.pipeline import truth_metrics

    p = [r["_p"][config] for r in results if select(r)]
    t = [r["_truth"] for r in results if select(r)]
    if not p:
        return {}
    m = truth_metrics(np.concatenate(p), np.concatenate(t), min_per_bin=50)
    for b in m["calibration"]:
        f = b["member_fraction"]
        b["binomial_error"] = float(np.sqrt(max(f * (1 - f), 1.0 / b["n"]) / b["n"]))
    m["cases"] = len(p)
    return m


def by_group(folder: Path, configs: list[str], cases: list[str], min_offset: float = 1.0) -> dict:
    """Sum of p_injected against the number of injected stars, among the stars with
    p_injected > 0.05 of every case at >= ``min_offset`` mas/yr, split by PS1 photometry
    (present or not) and parallax error: where the probabilities are over- or under-confident."""
    from astropy.table import Table

    offsets = {c[0]: c[1] for c in CASES}
    out: dict = {}
    for config in configs:
        rows = [Table.read(folder / f"{case}_{config}.ecsv") for case in cases
                if offsets.get(case, 0) >= min_offset and (folder / f"{case}_{config}.ecsv").exists()]  # fmt: skip
        if not rows:
            continue
        p = np.concatenate([np.asarray(r["p_injected"], float) for r in rows])
        truth = np.concatenate([np.asarray(r["injected"], bool) for r in rows])
        g = np.concatenate([np.asarray(np.ma.filled(np.ma.asarray(r["g_mean_psf_mag"], dtype=float), np.nan)) for r in rows])
        err = np.concatenate([np.asarray(r["parallax_error"], float) for r in rows])
        has = np.isfinite(g) & (g < 1e19)
        groups = {}
        for phot, phot_mask in (("ps1", has), ("no_ps1", ~has)):
            for lo, hi in ((0, 0.3), (0.3, 0.8), (0.8, np.inf)):
                for plo, phi in ((0.05, 0.5), (0.5, 1.01)):
                    sel = phot_mask & (err >= lo) & (err < hi) & (p > plo) & (p <= phi)
                    if sel.sum() == 0:
                        continue
                    expected = float(p[sel].sum())
                    groups[f"{phot} plx_err {lo}-{hi} p {plo}-{min(phi, 1.0)}"] = {
                        "n": int(sel.sum()), "sum_p": expected, "members": int(truth[sel].sum()),
                        "excess": float(truth[sel].sum() - expected),
                        "sd": float(np.sqrt(np.sum(p[sel] * (1 - p[sel])))),
                    }  # fmt: skip
        out[config] = groups
    return out


def print_groups(groups: dict) -> None:
    for config, rows in groups.items():
        print(f"\nwhere the probabilities miss, {config} (cases >= 1 mas/yr, stars with p > 0.05):\n")
        print("| PS1 | parallax error (mas) | p range | stars | sum p | injected members | members - sum p (sd) |")
        print("|---|---|---|---|---|---|---|")
        for key, r in rows.items():
            phot, _, err, _, prange = key.split(" ")
            print(f"| {phot} | {err} | {prange} | {r['n']} | {r['sum_p']:.1f} | {r['members']} | "
                  f"{r['excess']:+.1f} ({r['sd']:.1f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only cases {', '.join(QUICK)}")
    parser.add_argument("--cases", nargs="*", help="case names to run (default all)")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--add-component", dest="extra", action="append", default=[], metavar="YAML", type=yaml_value,
                        help="a further component (a YAML mapping) in every config, outside p_member")
    parser.add_argument("--injected", type=yaml_value, default=None, metavar="YAML",
                        help="further settings of the injected component, e.g. '{profile: student_t}'")
    parser.add_argument("--injected-dispersion", dest="dispersion", type=yaml_value, default=None, metavar="YAML",
                        help="the injected component's velocity-dispersion prior, e.g. '{median: 3.0, dex: 0.4}'")
    parser.add_argument("--score", choices=["", "_q50", "_ensemble"], default="",
                        help="the column scored: p_injected (the reference member; default), p_injected_q50 "
                        "(the median over the ensemble's members: with --set fit.ensemble=4) or p_injected_ensemble "
                        "(the share of the members' mean density)")
    parser.add_argument("--out", type=Path, default=ROOT / "injection_output")
    parser.add_argument("--label", default="default")
    parser.add_argument("--oracle", action="store_true",
                        help="hold the injected component at the injected tracks and widths (what the data allow)")
    parser.add_argument("--hold", nargs="+", default=[], choices=ORACLE_PARAMETERS, metavar="PARAMETER",
                        help="hold only these of the injected component's parameters at the injected values "
                        f"(of {', '.join(ORACLE_PARAMETERS)}), e.g. its proper-motion widths")
    parser.add_argument("--spec", type=yaml_value, default=None, metavar="YAML",
                        help="further settings of every case's injection spec (streammix.inject.InjectionSpec), "
                        "e.g. '{error_draw: rejected}'")
    parser.add_argument("--draw-cuts", dest="draw_cuts", type=yaml_value, default="file", metavar="YAML",
                        help="the cuts (a data.selection mapping) the draws are cut by, the fitted configs left as "
                        "they are; default: a --set data.selection, else the file's own cuts; null: only the "
                        "catalogue's proper-motion ranges per tenth of phi1 (the shipped model's draws of sessions 8-19)")
    parser.add_argument("--draw-limit", dest="draw_limit", choices=["fitted", "percentile"], default="fitted",
                        help="the draws' faint limit: 'fitted' (default), donors matched in PS1 i and the soft limit in "
                        "i fitted to the file's stars of the stream's colours (benchmarks/magnitude_limit.py); "
                        "'percentile', donors matched in g and a hard limit at the file's 99th percentile in g "
                        "(sessions 8-22), which lets blue injected stars run 1.2 mag fainter than the file's own")
    parser.add_argument("--seed", type=int, default=0, help="added to each case's injection seed")
    parser.add_argument("--summarise", action="store_true", help="only print the tables of an earlier run's JSON")
    args = parser.parse_args()
    try:
        sets = parse_sets(args.sets)
    except ValueError as error:
        parser.error(str(error))
    if not all(isinstance(item, dict) for item in args.extra):
        parser.error("--add-component: expected a YAML mapping of component settings")
    if args.injected is not None:
        if not isinstance(args.injected, dict):
            parser.error(f"--injected: expected a YAML mapping of component settings, got {args.injected!r}")
        fixed = sorted({"name", "bounds", "control_points", "velocity_dispersion"} & set(args.injected))
        if fixed:
            parser.error(f"--injected: {fixed} are set by the benchmark (the track priors, the stream's bounds) "
                         "or by --injected-dispersion")
    if args.spec is not None:
        if not isinstance(args.spec, dict):
            parser.error(f"--spec: expected a YAML mapping of injection-spec settings, got {args.spec!r}")
        fixed = sorted(set(CASE_KEYS) & set(args.spec))
        if fixed:
            parser.error(f"--spec: {fixed} are set by each case")
    if args.draw_cuts not in (None, "file") and not isinstance(args.draw_cuts, dict):
        parser.error(f"--draw-cuts: expected a YAML mapping (a data.selection), got {args.draw_cuts!r}")
    if args.summarise:
        summary = json.loads((args.out / f"injection_{args.label}.json").read_text())
        print_table(summary)
        print_groups(by_group(args.out / args.label, summary["configs"], [c["case"] for c in summary["cases"]]))
        return

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from astropy.table import Table

    from streammix.config import Config
    from streammix.data import read_table
    from streammix.errors import InputError
    from streammix.fit import fit, load_stars
    from streammix.inject import InjectionSpec, inject_stream
    from streammix.pipeline import truth_metrics

    catalog_path = SHARED / "gd1_dr2" / "gd1_pm_box_dr2_ps1.fits"
    if not catalog_path.exists():
        parser.error(f"{catalog_path}: not found (set STREAMMIX_SHARED_DATA)")
    catalog = read_table(catalog_path)
    cases = [c for c in CASES if (not args.quick or c[0] in QUICK) and (not args.cases or c[0] in args.cases)]
    # the joint config's column map (bands) draws the injections, with the --set values of the data
    # section (a declared selection then cuts the injected stars as the catalogue's were cut)
    joint = Config.from_yaml(CONFIGS["joint"]).model_dump(mode="json", exclude={"source"})
    joint = apply_sets(joint, [(k, v) for k, v in sets if k[0] == "data"])
    if args.draw_cuts == "file":
        args.draw_cuts = joint["data"].get("selection") or FILE_CUTS
    joint["data"]["selection"] = args.draw_cuts
    if args.draw_cuts is None:  # uncut draws: the fitted configs' form of the cuts does not apply to them
        joint["model"]["cut_normalisation"] = "star"
    # every setting is checked before anything is written: the draws' config, each case's spec and fitted configs
    prepared = []
    try:
        joint_config = Config.from_dict(joint, source="the draws' config (the joint config, --set data.*, --draw-cuts)")
        drawn_limit = draw_limit_settings(joint_config, args.draw_limit)
        for case in cases:
            settings = {**spec_of(case), **drawn_limit, **(args.spec or {})}
            spec = InjectionSpec.from_dict(settings, source=f"--spec, case {case[0]}")
            configs = {
                name: config_with_injected(CONFIGS[name], spec, sets, oracle=args.oracle, held=tuple(args.hold),
                                           extra=args.extra, dispersion=args.dispersion, settings=args.injected)
                for name in args.configs
            }  # fmt: skip
            prepared.append((case, spec, configs))
    except InputError as error:
        parser.error(str(error))
    folder = args.out / args.label
    folder.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"injection_{args.label}.json"

    results: list[dict] = []
    started = time.perf_counter()
    for case, spec, configs in prepared:
        name, offset, _, _, n_stars, distmod = case
        table = inject_stream(catalog, spec, joint_config, seed=1000 + CASES.index(case) + args.seed)
        truth = np.asarray(table["injected"], bool)
        result = {"case": name, "pm_offset": offset, "n_stars": n_stars, "distmod": distmod,
                  "spec": spec.model_dump(mode="json"), "configs": {}, "_p": {}, "_truth": truth}  # fmt: skip
        for config_name, config in configs.items():
            t0 = time.perf_counter()
            stars = load_stars(config, table)
            model = fit(config, stars)
            members = model.membership(stars)
            tensors = model.prepare(stars, prune=False)  # every member's densities of every star, for the diagnostics
            members["p_injected_ensemble"] = ensemble_shares(model, tensors)
            folds_below_members = model.config.fit.cross_fit and model.config.fit.folds < len(model.mixtures)
            if folds_below_members:
                members["p_injected_one_per_fold"] = one_per_fold(model, stars)
            seconds = time.perf_counter() - t0
            p = np.asarray(members[f"p_injected{args.score}"], float)
            metrics = truth_metrics(p, truth)
            real_members = (~truth) & (p > 0.5)
            metrics["false_members"] = describe(real_members, table, p, spec)
            metrics["recovered_members"] = describe(truth & (p > 0.5), table, p, spec)
            metrics["missed_members"] = describe(truth & (p <= 0.5), table, p, spec)
            metrics["real_stars"] = describe(~truth, table, p, spec)
            metrics["p_stream_of_injected_median"] = float(np.median(np.asarray(members["p_stream"])[truth]))
            metrics["fitted_tracks"] = fitted_tracks(model, spec)
            metrics["seconds"] = seconds
            metrics["converged"] = model.summary.get("converged")
            result["configs"][config_name] = metrics
            result["_p"][config_name] = p
            # every scoring is kept beside the scored one, so that one run compares them;
            # p_injected_reference is the members table's p_injected: member 0's, or with
            # fit.cross_fit that of the member that held the star out (the mean of those that
            # did with fit.cross_fit_folds; p_injected_one_per_fold is then the first of them)
            suffixes = ("", "_q50", "_ensemble", *(("_one_per_fold",) if folds_below_members else ()))
            scorings = {suffix or "_reference": np.asarray(members[f"p_injected{suffix}"], float) for suffix in suffixes}
            keep = truth | (np.max(np.stack(list(scorings.values())), axis=0) > 0.05)
            rows = table[keep]
            for suffix, values in scorings.items():
                rows[f"p_injected{suffix}"] = values[keep]
            rows["p_injected"] = p[keep]
            rows["p_stream"] = np.asarray(members["p_stream"], float)[keep]
            if model.config.fit.cross_fit:  # which member held each star out, and each member's log-ratios
                from streammix.folds import fold_of

                rows["fold"] = fold_of(np.asarray(stars.source_id), model.config.fit.folds, model.config.fit.seed)[keep]
                rows.meta["folds"] = model.config.fit.folds  # member m holds out fold m mod folds
                weights, densities = member_log_ratios(model, tensors)
                for m in range(len(weights)):
                    rows[f"weight_log_ratio_{m}"] = weights[m][keep]
                    rows[f"density_log_ratio_{m}"] = densities[m][keep]
            rows.write(folder / f"{name}_{config_name}.ecsv", overwrite=True)
            print(
                f"{name} {config_name}: AUC {metrics['auc']:.4f} completeness {metrics['completeness']:.3f} "
                f"purity {metrics['purity']:.3f} ({int(real_members.sum())} false) {seconds:.0f} s "
                f"[{time.perf_counter() - started:.0f} s so far]",
                flush=True,
            )
        results.append(result)
        write(json_path, results, args, sets, started, final=False)
    summary = write(json_path, results, args, sets, started, final=True)
    print_table(summary)
    print_groups(by_group(folder, args.configs, [c[0] for c in cases]))


def write(path: Path, results: list[dict], args, sets, started: float, final: bool) -> dict:
    from streammix.output import write_json

    summary = {
        "label": args.label,
        "sets": [f"{'.'.join(k)}={v}" for k, v in sets],
        "configs": args.configs,
        "added_components": args.extra,
        "injected_dispersion": args.dispersion,
        "spec_settings": args.spec,
        "draw_cuts": args.draw_cuts,
        "injected_settings": args.injected,
        "held": list(ORACLE_PARAMETERS) if args.oracle else args.hold,
        "scored": f"p_injected{args.score}",
        "complete": final,
        "seconds": time.perf_counter() - started,
        "machine": machine(),
        "git": os.popen(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null").read().strip(),
        "cases": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
        "pooled": {
            config: {
                "pm_offset_ge_1": pooled(results, config, lambda r: r["pm_offset"] >= 1.0),
                "pm_offset_lt_1": pooled(results, config, lambda r: r["pm_offset"] < 1.0),
            }
            for config in args.configs
        },
    }
    write_json(summary, path, overwrite=True)
    return summary


def print_table(summary: dict) -> None:
    print(f"\n### injection-recovery, {summary['label']} {' '.join(summary['sets'])}\n")
    print("| case | pm offset (mas/yr) | stars | distmod | config | AUC | completeness | purity | false members "
          "| fitted widths phi2, pm1, pm2 (spec 0.2) | fitted - injected pm1, pm2 | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in summary["cases"]:
        for config, m in case["configs"].items():
            tracks = m.get("fitted_tracks", {})
            widths = ", ".join(f"{tracks[k]['fitted_median']:.2f}" if k in tracks else "-"
                               for k in ("phi2_width", "pm_phi1_cosphi2_width", "pm_phi2_width"))  # fmt: skip
            # the proper-motion tracks' offsets: a component across the catalogue's box can slide out of it
            offsets = ", ".join(f"{tracks[k]['fitted_median'] - tracks[k]['spec_median']:+.2f}" if k in tracks else "-"
                                for k in ("pm_phi1_cosphi2", "pm_phi2"))  # fmt: skip
            print(
                f"| {case['case']} | {case['pm_offset']} | {case['n_stars']} | {case['distmod']} | {config} | "
                f"{m['auc']:.4f} | {m['completeness']:.3f} | {m['purity']:.3f} | {m['false_members']['n']} | "
                f"{widths} | {offsets} | {m['seconds']:.0f} |"
            )
    for config, groups in summary["pooled"].items():
        for group, m in groups.items():
            if not m:
                continue
            print(f"\npooled calibration, {config}, {group} ({m['cases']} injections): AUC {m['auc']:.4f}, "
                  f"completeness {m['completeness']:.3f}, purity {m['purity']:.3f}\n")
            print("| p bin | stars | mean p | member fraction | binomial error | difference |")
            print("|---|---|---|---|---|---|")
            for b in m["calibration"]:
                print(f"| {b['p_low']:.1f}-{b['p_high']:.1f} | {b['n']} | {b['mean_p']:.3f} | "
                      f"{b['member_fraction']:.3f} | {b['binomial_error']:.3f} | "
                      f"{b['member_fraction'] - b['mean_p']:+.3f} |")
    print(json.dumps({"label": summary["label"], "seconds": round(summary["seconds"])}))


if __name__ == "__main__":
    main()
