"""Behaviour kept across a refactor: one ensemble member of each GD-1 config, membership saved or compared.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=<worktree of commit A> python benchmarks/identity.py save A.npz
    OMP_NUM_THREADS=1 PYTHONPATH=<worktree of commit B> python benchmarks/identity.py save B.npz
    python benchmarks/identity.py compare A.npz B.npz

``save`` fits ``configs/gd1_dr2.yaml`` and ``configs/gd1_dr2_photometry.yaml``
(of this checkout) with ``ensemble: 1`` and one worker, scores every star with
``membership(dropout_samples=0)`` and writes each config's ``p_member`` (and
the stars' ``source_id``); ``compare`` prints, per config, the counts at
p > 0.5 and the largest absolute difference between the two files.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from _common import ROOT, SHARED

CONFIGS = ("gd1_dr2", "gd1_dr2_photometry")


def save(out: Path) -> None:
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    from streammix.config import Config
    from streammix.fit import fit, load_stars

    arrays = {}
    for name in CONFIGS:
        config = Config.from_yaml(ROOT / "configs" / f"{name}.yaml")
        data = config.model_dump(mode="json", exclude={"source"})
        data["fit"].update(ensemble=1, workers=1, cross_fit=False)
        config = Config.from_dict(data)
        stars = load_stars(config)
        members = fit(config, stars).membership(stars, dropout_samples=0)
        arrays[f"{name}_source_id"] = np.asarray(members["source_id"])
        arrays[name] = np.asarray(members["p_member"])
        print(name, int((arrays[name] > 0.5).sum()), flush=True)
    np.savez(out, **arrays)


def compare(a: Path, b: Path) -> None:
    first, second = np.load(a), np.load(b)
    for name in CONFIGS:
        if not np.array_equal(first[f"{name}_source_id"], second[f"{name}_source_id"]):
            raise SystemExit(f"{name}: the two files hold other stars")
        print(f"{name}: p > 0.5 {int((first[name] > 0.5).sum())} / {int((second[name] > 0.5).sum())}, "
              f"max |difference| {np.abs(first[name] - second[name]).max():.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("save").add_argument("out", type=Path)
    pair = sub.add_parser("compare")
    pair.add_argument("a", type=Path)
    pair.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "save":
        save(args.out)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
