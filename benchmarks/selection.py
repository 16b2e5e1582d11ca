"""The catalogue's cuts on the real GD-1 field: held-out likelihood per fold, and membership.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/selection.py [--folds 3] [--only NAME ...] [--no-members] [--out FILE.json]

Compares, on the same folds of the 13,976 stars of ``gd1_dr2/gd1_pm_box_dr2_ps1.fits``
(:func:`streammix.compare.compare`, one ensemble member per fit):

- ``shipped``: ``configs/gd1_dr2.yaml`` as shipped (the cuts off);
- ``cuts``: the same with the file's cuts declared (``data.selection``: parallax < 1 mas
  and the (pmra, pmdec) box, reflex-corrected at 8 kpc), so the components are
  normalised over them, the flows end at them, and the selection prior keeps every
  component inside the box;
- ``cuts_field``: ``cuts`` plus a wide ``field`` component that is not a member
  (``member_components`` the other three).

For each it prints the held-out log-likelihood per star (mean, standard error,
per fold, the largest single star's: a degenerate density shows there), the
paired difference from ``shipped``, and, from one fit on all the stars, the
``p_<component>`` and ``p_member`` counts at 0.5 and 0.8 (``--no-members``: not).
``--only`` keeps the named configs. Run with ``PYTHONPATH`` on a git worktree of
an older commit to measure its code (e.g. before the selection prior).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
from _common import ROOT, SHARED, emit, machine

CUTS = {"parallax": [None, 1.0], "pmra": [-7.0, -2.0], "pmdec": [-15.0, -11.0], "reflex_distance": 8.0}
FIELD = {
    "name": "field",
    "photometry": False,
    "bounds": {"phi2_width": [2.0, 20.0], "pm_phi1_cosphi2_width": [0.02, 3.0], "pm_phi2_width": [0.02, 3.0],
               "distmod": [11.0, 17.0]},
}


def variants(base: dict) -> dict[str, dict]:
    """The shipped config, with the cuts, and with the cuts and a field component."""
    cuts = copy.deepcopy(base)
    cuts["data"]["selection"] = CUTS
    cuts["model"]["cut_normalisation"] = "star"  # every star divided, with the selection prior
    field = copy.deepcopy(cuts)
    field["model"]["member_components"] = field["model"].get("member_components") or [
        c["name"] for c in field["model"]["components"]
    ]
    field["model"]["components"].append(FIELD)
    return {"shipped": base, "cuts": cuts, "cuts_field": field}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=["shipped", "cuts", "cuts_field"], default=None)
    parser.add_argument("--no-members", action="store_true", help="skip the fits on all the stars")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import os

    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    from streammix.compare import compare
    from streammix.config import Config
    from streammix.fit import fit, load_stars

    base = Config.from_yaml(ROOT / "configs" / "gd1_dr2.yaml").model_dump(mode="json", exclude={"source"})
    configs = {name: Config.from_dict(data) for name, data in variants(base).items()
               if args.only is None or name in args.only}
    result = compare(list(configs.values()), folds=args.folds, names=list(configs))
    summary = {"machine": machine(), "folds": args.folds, "configs": {}}
    print("| config | held-out log L per star | difference from the first config (paired) | per fold | largest star |")
    print("|---|---|---|---|---|")
    for j, row in enumerate(result.summary()):
        ll = result.log_likelihood[j]
        folds = [float(ll[result.fold == k].mean()) for k in range(args.folds)]
        summary["configs"][row["config"]] = {
            "mean": float(row["mean_loglike"]), "error": float(row["mean_loglike_err"]),
            "difference": float(row["delta_total"]), "difference_error": float(row["delta_total_err"]),
            "folds": folds, "largest": float(ll.max()),
        }
        print(f"| {row['config']} | {row['mean_loglike']:.4f} ± {row['mean_loglike_err']:.4f} | "
              f"{row['delta_total']:+.1f} ± {row['delta_total_err']:.1f} | "
              f"{', '.join(f'{v:.3f}' for v in folds)} | {ll.max():+.2f} |", flush=True)
    for name, config in ({} if args.no_members else configs).items():
        one = Config.from_dict({**config.model_dump(mode="json", exclude={"source"}),
                                "fit": {**config.fit.model_dump(mode="json"), "ensemble": 1}})
        stars = load_stars(one)
        members = fit(one, stars).membership(stars, dropout_samples=0)
        counts = {c: [int((np.asarray(members[c]) > t).sum()) for t in (0.5, 0.8)]
                  for c in members.colnames if c.startswith("p_") and c[-4:] not in ("_q05", "_q50", "_q95")}
        summary["configs"][name]["counts"] = counts
        print(name, ", ".join(f"{c} {a}/{b}" for c, (a, b) in counts.items()), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=1))
    emit(summary)


if __name__ == "__main__":
    main()
