"""Everyday runs, timed one after the other on this machine, with their accuracy beside each time.

Usage::

    python benchmarks/everyday.py [--runs demo gd1 gd1_joint] [--out DIR] [--write]

Runs each job as a user types it, in its own process and in one sequence (so the
three times come from the same machine in the same state):

- ``demo``: ``streammix demo`` (the job of ``make demo`` after the install);
  accuracy on the mock's truth: ROC AUC, completeness and purity of ``p_member``
  at 0.5, calibration's largest error (and its z), the stream's phi2 track RMS;
- ``gd1``: ``streammix fit configs/gd1_dr2.yaml`` on the real field (13,976 stars);
- ``gd1_joint``: ``streammix fit configs/gd1_dr2_photometry.yaml``.

For GD-1 there is no truth: beside the time it reports the ``p_member`` counts at
0.5 and 0.8 (and each component's at 0.5) and the RMS of the fitted stream's phi2 track against the published
one (Price-Whelan & Bonaca 2018, through galstreams) over phi1 -60..-25 deg, where
the stream is dense: a stopping rule or a speed-up that changes the answer
shows there. ``--code DIR`` runs the package of a git worktree of another commit (the
configs stay this checkout's): run it, then without ``--code``, for a same-machine ratio.
Each time is split into the fit's stages (background flows, the
ensemble's members, scoring) from the run's ``summary.json``.

Prints a markdown table and a JSON line; ``--write`` also puts the table, the
machine and the commit at the top of ``benchmarks/RESULTS.md``. Timings stay out
of the tests. Nothing else should run on the machine meanwhile: the times are
only comparable between runs of this script on an idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT, SHARED, emit, machine

RUNS = {
    "demo": ["demo"],
    "gd1": ["fit", str(ROOT / "configs" / "gd1_dr2.yaml")],
    "gd1_joint": ["fit", str(ROOT / "configs" / "gd1_dr2_photometry.yaml")],
}
LABELS = {"demo": "`make demo` job (after install)", "gd1": "GD-1 astrometry", "gd1_joint": "GD-1 joint"}
TRACK_PHI1 = (-60.0, -25.0)


def run(name: str, out: Path, code: Path | None = None) -> dict:
    """Run one job with the installed CLI (on the package in ``code``, a git worktree of
    another commit, when given); its wall time and summary."""
    cli = Path(sys.executable).with_name("streammix")
    command = [str(cli) if cli.exists() else "streammix", *RUNS[name], "--out", str(out / name), "--overwrite"]
    env = {**os.environ, "STREAMMIX_SHARED_DATA": str(SHARED)}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name}: {' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    summary = json.loads((out / name / "summary.json").read_text())
    return {"wall": wall, "summary": summary, "accuracy": accuracy(name, out / name, summary)}


def accuracy(name: str, folder: Path, summary: dict) -> dict:
    """The figures that show whether the answer changed."""
    seconds = summary["seconds"]
    out = {
        "p_member>0.5": summary["members"]["p>0.5"],
        "p_member>0.8": summary["members"]["p>0.8"],
        "background_s": seconds["background"],
        "members_s": seconds["mixtures"],
        "scoring_s": seconds["membership_and_tracks"],
        "steps": [m["steps"] for m in summary["fit"]["members"]],
    }
    if "truth" in summary:
        truth = summary["truth"]
        out.update({
            "auc": truth["auc"], "completeness": truth["completeness"], "purity": truth["purity"],
            "calibration_max_error": truth["calibration_max_error"], "calibration_max_z": truth["calibration_max_z"],
            "phi2_track_rms": truth["tracks"]["phi2_rms"],
        })  # fmt: skip
    else:
        out["phi2_rms_vs_published"] = published_track_rms(folder)
        # which components hold the members (the fit's own summary.json)
        out["by_component>0.5"] = {name: counts["p>0.5"] for name, counts in summary["members_by_component"].items()}
    return out


def published_track_rms(folder: Path) -> float:
    """RMS (deg) of the fitted stream's phi2 against Price-Whelan & Bonaca's track."""
    from astropy.table import QTable

    from streammix.frames import get_frame
    from streammix.tracks import galstreams_track

    tracks = QTable.read(folder / "tracks.ecsv")
    phi1 = np.asarray(tracks["phi1"].value)
    inside = (phi1 >= TRACK_PHI1[0]) & (phi1 <= TRACK_PHI1[1])
    published = galstreams_track("GD-1", "pricewhelan2018", get_frame("gd1"))
    order = np.argsort(published.phi1)
    reference = np.interp(phi1[inside], np.asarray(published.phi1)[order], np.asarray(published.phi2)[order])
    return float(np.sqrt(np.mean((np.asarray(tracks["stream_phi2"].value)[inside] - reference) ** 2)))


def table(results: dict) -> str:
    """The markdown table."""
    lines = [
        "| run | wall | flows | members (each) | scoring | steps | accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        a = r["accuracy"]
        members = ", ".join(f"{s:.0f}" for s in a["members_s"])
        if "auc" in a:
            acc = (f"AUC {a['auc']:.4f}, completeness {a['completeness']:.3f}, purity {a['purity']:.3f}, "
                   f"calibration max {a['calibration_max_error']:.3f} (z {a['calibration_max_z']:.1f}), "
                   f"phi2 track rms {a['phi2_track_rms']:.3f} deg")  # fmt: skip
        else:
            by = ", ".join(f"{k} {v}" for k, v in a.get("by_component>0.5", {}).items())
            acc = (f"p_member > 0.5 / 0.8: {a['p_member>0.5']} / {a['p_member>0.8']} ({by} at 0.5); phi2 track rms vs "
                   f"Price-Whelan & Bonaca 2018 {a['phi2_rms_vs_published']:.3f} deg")  # fmt: skip
        lines.append(
            f"| {LABELS[name]} | {r['wall']:.0f} s | {a['background_s']:.0f} s | {members} s | {a['scoring_s']:.1f} s "
            f"| {', '.join(str(s) for s in a['steps'])} | {acc} |"
        )
    return "\n".join(lines)


def write_results(text: str, info: dict) -> None:
    """Put ``text`` as a dated section at the top of RESULTS.md (below its header)."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text()
    cut = old.index("\n## ")
    section = (
        f"\n## {datetime.date.today().isoformat()} — everyday runs (`python benchmarks/everyday.py --write`, "
        f"at {info['git']})\n\nMachine: {info['machine']['cpu']}, {info['machine']['cores']} cores, "
        f"torch {info['machine']['torch']}; one job at a time.\n\n{text}\n"
    )
    path.write_text(old[:cut] + "\n" + section + old[cut:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--out", type=Path, default=ROOT / "everyday_output")
    parser.add_argument("--write", action="store_true", help="put the table at the top of benchmarks/RESULTS.md")
    parser.add_argument("--code", type=Path, default=None,
                        help="run the package in this folder (a git worktree of another commit) instead of the "
                        "installed one: two runs, old and new, one after the other give a same-machine ratio")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.runs:
        results[name] = run(name, args.out, args.code)
        print(f"{name}: {results[name]['wall']:.0f} s", flush=True)
    text = table(results)
    print(text)
    where = args.code if args.code is not None else ROOT
    git = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    info = {"machine": machine(), "git": git.stdout.strip()}
    if args.write:
        write_results(text, info)
    emit({**info, "runs": {k: {"wall": v["wall"], **v["accuracy"]} for k, v in results.items()}})


if __name__ == "__main__":
    main()
