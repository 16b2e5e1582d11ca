"""Stopping rules of the mixtures' fits: replayed on a recorded demo fit, then compared in real fits.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/stopping_rule.py record [--out stopping_output]
    python benchmarks/stopping_rule.py replay [--out stopping_output] [--patience 300]
    OMP_NUM_THREADS=1 python benchmarks/stopping_rule.py demo --rule plain --rule members2 [--out stopping_output]
    OMP_NUM_THREADS=1 STREAMMIX_SHARED_DATA=/work/shared/data python benchmarks/stopping_rule.py gd1 --rule plain --rule members2
    python benchmarks/stopping_rule.py flows --flow epochs=30 [--reference FILE.npy]

``record`` fits the demo (the default mock, seed 0, one ensemble member) with
a patience too long to stop, and at every held-out evaluation of each mixture
stage keeps the per-star held-out losses and membership weights (the
:class:`streammix.training.Evaluation`) and that state's accuracy against the
mock's truth: the rms of the fitted minus true tracks where the stream is
dense, and AUC, completeness, purity and calibration of the member's
membership of all the demo's stars. The learning-rate schedule does not
depend on when a fit stops, so ``replay`` can run any rule of
:class:`streammix.training.EarlyStopping` (:data:`RULES`) over the records
and read off where it stops and the accuracy of the state it keeps (exact for
the last stage; the astrometry stage is replayed too, but the joint stage's
records start from the astrometry stage's full length).

``demo`` trains the demo's background flows once, then fits the demo config
(4 members) with each rule on those flows and scores each fit against the
mock's truth (:func:`streammix.pipeline.truth_metrics`, track rms) and on the
independent 8-times-larger mock of benchmarks/calibration.py. ``gd1`` fits
configs/gd1_dr2.yaml with each rule (same flows) and gives the counts at p >
0.5 and 0.8 and the rms of each rule's phi2 track from the first rule's.
``flows`` trains only the demo's background flows, with the settings given by
``--flow`` (``demo`` takes them too), and scores them by the mean log-density
of the independent mock's background stars, saved per star so that another
run's file (``--reference``) gives the paired difference and its error.
Each prints one JSON line last; times are wall seconds on whatever machine,
shared or not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import time
from pathlib import Path

import numpy as np
from _common import ROOT, SHARED, machine

#: The rules compared: (k, weighted, cooldown steps[, patience]), with the tolerance (and patience) from the config.
RULES: dict[str, tuple[float, bool, int] | tuple[float, bool, int, int]] = {
    "plain": (0.0, False, 0),  # the default: any fall of the mean by more than 1e-6
    "all1": (1.0, False, 0),
    "all2": (2.0, False, 0),  # branch h3-train's rule
    "members0": (0.0, True, 0),
    "members1": (1.0, True, 0),
    "members2": (2.0, True, 0),
    "members3": (3.0, True, 0),
    "all2_cool250": (2.0, False, 250),
    "members2_cool250": (2.0, True, 250),
    "plain_cool250": (0.0, False, 250),
    "members2_cool100": (2.0, True, 100),
    "all1_cool100": (1.0, False, 100),
    "members2_cool100_p150": (2.0, True, 100, 150),  # and a patience of 150 steps
    "full": (0.0, False, 0),  # patience longer than the fit: every step (the "full-length fit")
}
TRACKS = ("phi2", "phi2_width", "pm_phi1_cosphi2", "pm_phi2", "distmod")


def _demo(seed: int = 0, small: bool = False):
    from streammix.data import StarTable
    from streammix.mock import generate_mock
    from streammix.pipeline import demo_config, mock_columns, mock_config

    table, truth = generate_mock(mock_config(200, 3000) if small else mock_config(None, None), seed=seed)
    keep = [c for c in table.colnames if c.startswith("true_")]
    stars = StarTable.from_table(table, mock_columns(keep))
    is_member = np.asarray(table["true_component"]) == "stream"
    return stars, truth, is_member, demo_config(truth, seed=seed)


def _with_fit(config, **update):
    return config.model_copy(update={"fit": config.fit.model_copy(update=update)})


def _with_flow(config, **update):
    background = config.model.background
    flow = background.flow.model_copy(update=update)
    return config.model_copy(update={"model": config.model.model_copy(update={"background": background.model_copy(update={"flow": flow})})})


def _small(config):
    """A smoke test's settings: few steps and flow epochs."""
    config = _with_fit(config, steps=100, astrometry_steps=50, patience=25)
    flow = config.model.background.flow.model_copy(update={"epochs": 2})
    background = config.model.background.model_copy(update={"flow": flow})
    return config.model_copy(update={"model": config.model.model_copy(update={"background": background})})


def _column(table, name) -> np.ndarray:
    return np.asarray(getattr(table[name], "value", table[name]), dtype=float)


def record(out: Path, seed: int, small: bool = False) -> None:
    """Fit the demo's first member to the end, recording each mixture evaluation."""
    import torch

    import importlib

    fit_module = importlib.import_module("streammix.fit")  # the module (the package exports a function of that name)
    from streammix import training
    from streammix.pipeline import truth_metrics

    stars, truth, is_member, config = _demo(seed, small)
    config = _with_fit(config, ensemble=1, workers=1, patience=1_000_000)
    if small:
        config = _small(config)
    n = len(stars)
    order = np.random.default_rng(config.fit.seed).permutation(n)  # the split of fit._fit_member, member 0
    n_valid = max(1, int(round(config.fit.validation_fraction * n)))
    truth_order = np.concatenate([is_member[order[:n_valid]], is_member[order[n_valid:]]])
    phi1 = _column(truth, "phi1")
    density = _column(truth, "linear_density")
    dense = density > 0.1 * density.max()
    records: list[dict] = []
    current: dict = {}
    train_mixture, update = fit_module.train_mixture, training.EarlyStopping.update

    def recording_train(mixture, train, valid, *args, **kwargs):
        current.update(mixture=mixture, train=train, valid=valid, stage=current.get("stage", -1) + 1)
        return train_mixture(mixture, train, valid, *args, **kwargs)

    def recording_update(self, evaluation, at):
        if self.unit == "steps" and "mixture" in current:
            mixture = current["mixture"]
            was_training = mixture.training
            mixture.eval()
            with torch.no_grad():
                outputs = mixture.outputs_at(torch.as_tensor(phi1, dtype=mixture.grid.dtype, device=mixture.grid.device))
                p = torch.cat([mixture.membership(current["valid"]), mixture.membership(current["train"])])[:, :-1].sum(-1)
            mixture.train(was_training)
            stream = outputs[mixture.component_names[0]]
            tracks = {
                f"{name}_rms": float(np.sqrt(np.mean((stream[name].cpu().numpy() - _column(truth, name))[dense] ** 2)))
                for name in TRACKS if name in stream and name in truth.colnames
            }
            metrics = truth_metrics(p.cpu().numpy(), truth_order)
            metrics.pop("calibration")
            records.append({"stage": current["stage"], "at": at, "evaluation": evaluation, **tracks, **metrics})
            print(f"stage {current['stage']} step {at}: held-out {evaluation.value:.5f} phi2 rms "
                  f"{tracks.get('phi2_rms', math.nan):.4f} cal {metrics['calibration_max_error']:.3f}", flush=True)
        return update(self, evaluation, at)

    fit_module.train_mixture, training.EarlyStopping.update = recording_train, recording_update
    try:
        start = time.perf_counter()
        fit_module.fit(config, stars)
        seconds = time.perf_counter() - start
    finally:
        fit_module.train_mixture, training.EarlyStopping.update = train_mixture, update
    (out / "records.pkl").write_bytes(pickle.dumps({"records": records, "seconds": seconds, "config": config.fit.model_dump()}))
    print(json.dumps({"machine": machine(), "evaluations": len(records), "seconds": seconds}))


def replay(out: Path, patience: int, eval_every: int = 25) -> None:
    """Where each rule stops each recorded stage and the accuracy of the state it keeps."""
    from streammix.fit import STOPPING_TOLERANCE
    from streammix.training import EarlyStopping

    saved = pickle.loads((out / "records.pkl").read_bytes())
    records = saved["records"]
    result: dict = {"machine": machine(), "patience": patience, "stages": []}
    for stage in sorted({r["stage"] for r in records}):
        rows = [r for r in records if r["stage"] == stage]
        full = {"steps": rows[-1]["at"], **_accuracy(min(rows, key=lambda r: r["evaluation"].value))}
        replays = {"full length (lowest held-out loss)": full}
        for name, (k, weighted, cooldown, *rest) in RULES.items():
            if cooldown or rest or name == "full":
                continue  # a cooldown changes the trajectory: real fits only
            rule = EarlyStopping(patience, "steps", k=k, tolerance=STOPPING_TOLERANCE, weighted=weighted)
            kept, stop = rows[0], rows[-1]["at"]
            for r in rows:
                if rule.update(r["evaluation"], r["at"]):
                    kept = r
                if rule.exhausted(r["at"]):
                    stop = r["at"]
                    break
            replays[name] = {"steps": stop, "kept": kept["at"], **_accuracy(kept)}
        result["stages"].append({"stage": stage, "evaluations": len(rows), "rules": replays})
        print(f"stage {stage} ({rows[-1]['at']} steps), patience {patience}:")
        for name, row in replays.items():
            print(f"  {name:36s} steps {row['steps']:5d} kept {row.get('kept', '-')!s:>5} phi2 rms {row['phi2_rms']:.4f} "
                  f"width rms {row['phi2_width_rms']:.4f} pm1 {row['pm_phi1_cosphi2_rms']:.4f} dm {row['distmod_rms']:.4f} "
                  f"AUC {row['auc']:.5f} compl {row['completeness']:.4f} pur {row['purity']:.4f} "
                  f"cal {row['calibration_max_error']:.3f} (z {row['calibration_max_z']:.1f})")
    print(json.dumps(result))


def _accuracy(row: dict) -> dict:
    keys = [f"{t}_rms" for t in TRACKS] + ["auc", "completeness", "purity", "calibration_max_error", "calibration_max_z"]
    return {k: row[k] for k in keys if k in row} | {"held_out": row["evaluation"].value}


def _rule_config(config, rule: str):
    k, weighted, cooldown, *rest = RULES[rule]
    patience = 1_000_000 if rule == "full" else rest[0] if rest else config.fit.patience
    return _with_fit(config, stopping_k=k, stopping_weighted=weighted, cooldown_steps=cooldown, patience=patience)


def _members(model) -> list[dict]:
    return [{k: m[k] for k in ("steps", "astrometry_steps", "stopped_because", "astrometry_stopped_because", "seconds")}
            for m in model.summary["members"]]


def demo(
    out: Path,
    rules: list[str],
    seed: int,
    scale: int,
    ensemble: int | None,
    small: bool = False,
    fit_seed: int | None = None,
    flow: dict | None = None,
) -> None:
    """Each rule's demo fit (shared flows) against the truth and the independent mock."""
    from streammix.data import StarTable
    from streammix.fit import fit, fit_background
    from streammix.pipeline import mock_columns, track_metrics, truth_metrics

    stars, truth, is_member, config = _demo(seed, small)
    if small:
        config = _small(config)
    if ensemble is not None:
        config = _with_fit(config, ensemble=ensemble)
    if fit_seed is not None:  # another fit of the same mock: how much the figures vary from fit to fit
        config = _with_fit(config, seed=fit_seed)
    if flow:  # the flows' settings (their stopping rule, epochs)
        config = _with_flow(config, **flow)
    start = time.perf_counter()
    background = fit_background(config, stars)
    flow_seconds = time.perf_counter() - start
    big = _independent_mock(scale)
    big_stars = StarTable.from_table(big, mock_columns(["true_component"]))
    big_member = np.asarray(big["true_component"]) == "stream"
    # the flows' own accuracy: mean log-density of the independent mock's background stars
    flow_logp = background.log_prob(big_stars)[~big_member]
    result: dict = {
        "machine": machine(),
        "ensemble": config.fit.ensemble,
        "fit_seed": config.fit.seed,
        "flow": config.model.background.flow.model_dump(),
        "flow_seconds": flow_seconds,
        "flows_stopped_because": background.per_flow("stopped_because"),
        "flows_seconds": background.per_flow("seconds"),
        "flow_logp_independent": {"mean": float(flow_logp.mean()), "se": float(flow_logp.std() / np.sqrt(flow_logp.size))},
        "rules": {},
    }
    print("flows", json.dumps({k: result[k] for k in ("flow_seconds", "flows_seconds", "flows_stopped_because", "flow_logp_independent")}), flush=True)
    for rule in rules:
        start = time.perf_counter()
        model = fit(_rule_config(config, rule), stars, background=background)
        seconds = time.perf_counter() - start
        p = _p_member(model, stars)
        own = truth_metrics(p, is_member)
        big_table = model.membership(big_stars)
        big_p = np.asarray(big_table["p_member"], dtype=float)
        independent = truth_metrics(big_p, big_member)
        # how much the members disagree where membership is uncertain: the ensemble's 5-95 %
        # range of p_member, averaged over the independent stars with 0.1 < p_member < 0.9
        uncertain = (big_p > 0.1) & (big_p < 0.9)
        spread = np.asarray(big_table["p_member_q95"], dtype=float) - np.asarray(big_table["p_member_q05"], dtype=float)
        row = {
            "mixture_seconds": seconds,
            "members": _members(model),
            "tracks": track_metrics(model, truth),
            "demo": {k: own[k] for k in ("auc", "completeness", "purity", "calibration_max_error", "calibration_max_z")},
            "independent": {k: independent[k] for k in ("auc", "completeness", "purity", "calibration_max_error", "calibration_max_z")},
            "independent_member_spread": {"mean": float(spread[uncertain].mean()), "stars": int(uncertain.sum())},
            "independent_bins": [
                {k: round(b[k], 4) for k in ("mean_p", "member_fraction", "n", "z")} for b in independent["calibration"]
            ],
            "p_member": {"above_0.5": int((p > 0.5).sum()), "above_0.8": int((p > 0.8).sum())},
        }
        result["rules"][rule] = row
        np.save(out / f"demo_p_{rule}_seed{config.fit.seed}.npy", p)
        print(rule, json.dumps(row), flush=True)
    print(json.dumps(result))


def _independent_mock(scale: int):
    """The independent mock of benchmarks/calibration.py: ``scale`` times the demo's stars, seed 101."""
    from streammix.mock import MockConfig, generate_mock

    base = MockConfig()
    update = {"n_stream": scale * base.n_stream, "n_background": scale * base.n_background}
    return generate_mock(base.model_copy(update=update), seed=101)[0]


def _flow_settings(pairs: list[str], parser: argparse.ArgumentParser) -> dict:
    """``KEY=VALUE`` pairs as flow settings (the values read as YAML), checked: a bad
    pair or value is one usage error (exit 2)."""
    import yaml
    from pydantic import ValidationError

    from streammix.settings import FlowConfig, first_error

    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            parser.error(f"--flow {pair!r}: expected KEY=VALUE")
        try:
            settings[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            parser.error(f"--flow {pair!r}: the value is not valid YAML")
    try:
        FlowConfig(**settings)
    except ValidationError as error:
        key, reason = first_error(error)
        parser.error(f"--flow {key}: {reason}")
    return settings


def flows(out: Path, settings: dict, seed: int, scale: int, reference: Path | None, fit_seed: int | None) -> None:
    """The demo's background flows with ``settings``: time, why each stopped, and the mean log-density of
    the independent mock's background stars (saved per star; paired with ``reference`` if given)."""
    from streammix.data import StarTable
    from streammix.fit import fit_background
    from streammix.pipeline import mock_columns

    stars, _, _, config = _demo(seed)
    if fit_seed is not None:
        config = _with_fit(config, seed=fit_seed)
    config = _with_flow(config, **settings)
    start = time.perf_counter()
    background = fit_background(config, stars)
    seconds = time.perf_counter() - start
    big = _independent_mock(scale)
    field = np.asarray(big["true_component"]) != "stream"
    logp = background.log_prob(StarTable.from_table(big, mock_columns(["true_component"])))[field]
    tag = "_".join(f"{k}{v}" for k, v in sorted(settings.items())) or "default"
    np.save(out / f"flow_logp_{tag}_seed{config.fit.seed}.npy", logp)
    row = {
        "machine": machine(),
        "settings": settings,
        "fit_seed": config.fit.seed,
        "seconds": seconds,
        "flows_stopped_because": background.per_flow("stopped_because"),
        "flows_seconds": background.per_flow("seconds"),
        "independent_background_logp": {"mean": float(logp.mean()), "se": float(logp.std() / np.sqrt(logp.size)), "n": int(logp.size)},
    }
    if reference is not None:
        other = np.load(reference)
        if other.shape != logp.shape:
            raise SystemExit(f"--reference {reference}: {other.shape[0] if other.ndim else 0} values, not this run's {logp.size}")
        d = logp - other
        row["minus_reference"] = {"mean": float(d.mean()), "se": float(d.std() / np.sqrt(d.size)), "reference": str(reference)}
    print(json.dumps(row))


def _p_member(model, stars) -> np.ndarray:
    table = model.membership(stars)
    return np.asarray(table["p_member"], dtype=float)


def gd1(out: Path, rules: list[str]) -> None:
    """Each rule's GD-1 astrometry fit (configs/gd1_dr2.yaml, 4 members, shared flows)."""
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    from streammix.config import Config
    from streammix.fit import fit, fit_background, load_stars

    config = Config.from_yaml(ROOT / "configs" / "gd1_dr2.yaml")
    stars = load_stars(config)
    start = time.perf_counter()
    background = fit_background(config, stars)
    result: dict = {"machine": machine(), "flow_seconds": time.perf_counter() - start, "rules": {}}
    reference = None
    for rule in rules:
        start = time.perf_counter()
        model = fit(_rule_config(config, rule), stars, background=background)
        seconds = time.perf_counter() - start
        p = _p_member(model, stars)
        phi1 = np.linspace(*config.field.phi1, 200)
        tracks = model.tracks(phi1, dropout_samples=0)
        name = f"{model.component_names[0]}_phi2"
        track = np.asarray(getattr(tracks[name], "value", tracks[name]))
        if reference is None:
            reference = (track, p)
        row = {
            "mixture_seconds": seconds,
            "members": _members(model),
            "p_member": {"above_0.5": int((p > 0.5).sum()), "above_0.8": int((p > 0.8).sum())},
            "phi2_track_rms_vs_first_rule_deg": float(np.sqrt(np.mean((track - reference[0]) ** 2))),
            "max_abs_dp_vs_first_rule": float(np.max(np.abs(p - reference[1]))),
        }
        result["rules"][rule] = row
        print(rule, json.dumps(row), flush=True)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["record", "replay", "demo", "gd1", "flows"])
    parser.add_argument("--out", type=Path, default=Path("stopping_output"))
    parser.add_argument("--patience", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-seed", type=int, default=None, help="demo: the fits' seed (default: the mock's)")
    parser.add_argument("--ensemble", type=int, default=None, help="demo: members (default: the demo's)")
    parser.add_argument("--scale", type=int, default=8, help="the independent mock's size over the demo's")
    parser.add_argument("--small", action="store_true", help="record, demo: a small mock and few steps (a smoke test)")
    parser.add_argument("--flow", action="append", default=[], metavar="KEY=VALUE",
                        help="demo, flows: a setting of the flows (e.g. stopping_k=1, epochs=30)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="flows: a .npy of another run's per-star log-densities, for the paired difference")
    parser.add_argument("--rule", action="append", choices=sorted(RULES), help="rules to fit with (demo, gd1)")
    args = parser.parse_args()
    flow = _flow_settings(args.flow, parser)  # checked before anything is written
    if args.reference is not None and not args.reference.is_file():
        parser.error(f"--reference {args.reference}: no such file")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "record":
        record(args.out, args.seed, args.small)
    elif args.what == "replay":
        replay(args.out, args.patience)
    elif args.what == "demo":
        demo(args.out, args.rule or ["plain", "members2"], args.seed, 1 if args.small else args.scale, args.ensemble, args.small, args.fit_seed,
             flow)
    elif args.what == "flows":
        flows(args.out, flow, args.seed, args.scale, args.reference, args.fit_seed)
    else:
        gd1(args.out, args.rule or ["plain", "members2"])

if __name__ == "__main__":
    main()
