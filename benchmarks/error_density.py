"""The GD-1 file's parallax errors against its PS1 magnitudes, and the error density they give.

Prints, for the stars of ``gd1_dr2/gd1_pm_box_dr2_ps1.fits`` with both PS1 bands, the
median residual of log10(parallax error) about the linear and the quadratic
error relation (:func:`streammix.error_relation.fit_error_relation`) in 1-mag
bins of g, with each relation's scatter; then the log-ratio of the stream's
density of the parallax error to the field's (:mod:`streammix.error_density`)
that the shipped joint config with ``model.error_density: true`` (and
``error_weights: 0``) builds, at
distance moduli 14.4 and 15.0; and the term of the stars with PS1 magnitudes,
the log of the share of the field's stars with them at each parallax error
over their share overall (:mod:`streammix.photometry_share`),
with the shares counted directly in bins of the error beside it, and the share of
the stars with PS1 by parallax error and by phi1.

    python benchmarks/error_density.py

A few seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, SHARED  # noqa: E402

from streammix.config import Config  # noqa: E402
from streammix.error_relation import fit_error_relation  # noqa: E402
from streammix.fit import build_mixture, load_stars  # noqa: E402

BINS = np.arange(14.0, 23.0, 1.0)
PROBE_ERRORS = (0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.2, 1.6, 2.5)


def main() -> None:
    if not (SHARED / "gd1_dr2").exists():
        sys.exit(f"{SHARED / 'gd1_dr2'}: not found (set STREAMMIX_SHARED_DATA)")
    shipped = Config.from_yaml(ROOT / "configs" / "gd1_dr2_photometry.yaml")
    data = shipped.model_dump(mode="json", exclude={"source"})
    data["model"]["error_density"] = True
    data["model"]["error_weights"] = 0  # the modelled density replaces the learned weights
    data["model"]["photometry_share"] = False  # and applies its own form of the share
    config = Config.from_dict(data, source="gd1_dr2_photometry.yaml + error_density")
    stars = load_stars(config)
    mags = np.stack([stars.mags[band] for band in config.model.bands], axis=1)
    err = np.where(stars.observed["parallax"], stars.parallax_err, np.nan)
    both = np.isfinite(mags).all(axis=1) & np.isfinite(err) & (err > 0)
    g = mags[both, 0]
    out: dict = {"relations": {}}
    print("| relation | scatter (dex) | " + " | ".join(f"g {b:.0f}-{b + 1:.0f}" for b in BINS) + " |")
    print("|---|---|" + "---|" * len(BINS))
    for degree in (1, 2):
        relation = fit_error_relation(err, mags, degree=degree)
        residual = np.log10(err[both]) - relation.mean(mags[both])
        medians = [float(np.median(residual[(g >= b) & (g < b + 1)])) for b in BINS]
        out["relations"][degree] = {"scatter": relation.scatter, "median_residual": medians}
        print(f"| degree {degree} | {relation.scatter:.3f} | " + " | ".join(f"{m:+.3f}" for m in medians) + " |")
    mixture = build_mixture(config, stars)
    density = mixture.error_density
    probe = torch.tensor(PROBE_ERRORS, dtype=torch.float64)
    out["log_ratio"] = {}
    print(f"\nlog-ratio of the stream's density of the parallax error to the field's, at {list(PROBE_ERRORS)} mas")
    for distmod in (14.4, 15.0):
        ratio = density.log_ratio(torch.full_like(probe, distmod), probe).tolist()
        out["log_ratio"][str(distmod)] = ratio
        print(f"  distance modulus {distmod}: " + ", ".join(f"{r:+.2f}" for r in ratio))
    presence = mixture.photometry_share.log_share(probe).tolist()
    out["log_share"] = presence
    print(f"\nlog of the share of the field's stars with PS1 at {list(PROBE_ERRORS)} mas over the share overall")
    print("  kernel regression (the model's term): " + ", ".join(f"{r:+.2f}" for r in presence))
    has = np.any([stars.observed[band] for band in config.model.bands], axis=0)
    edges = np.sqrt(np.array(PROBE_ERRORS[:-1]) * np.array(PROBE_ERRORS[1:]))
    which = np.digitize(err, edges)
    finite = np.isfinite(err)
    counted = [float(np.log(has[finite & (which == k)].mean() / has[finite].mean())) for k in range(len(PROBE_ERRORS))]
    out["log_share_counted"] = counted
    print("  counted (every star, bins between the errors above): " + ", ".join(f"{r:+.2f}" for r in counted))
    share_edges = (0.0, 0.2, 0.35, 0.6, 0.9, 1.3, np.inf)
    by_error = [float(has[finite & (err >= lo) & (err < hi)].mean()) for lo, hi in zip(share_edges[:-1], share_edges[1:])]
    out["share_by_error"] = {"edges": [e if np.isfinite(e) else None for e in share_edges], "share": by_error}
    print(f"  share with PS1, parallax error bins {list(share_edges)} mas: " + ", ".join(f"{v:.2f}" for v in by_error))
    phi1_edges = np.arange(-70.0, -19.0, 5.0)
    which_phi1 = np.digitize(stars.phi1, phi1_edges) - 1
    by_phi1 = [float(has[which_phi1 == k].mean()) for k in range(len(phi1_edges) - 1)]
    out["share_by_phi1"] = {"edges": phi1_edges.tolist(), "share": by_phi1}
    print("  share with PS1 by 5 deg of phi1 from -70: " + ", ".join(f"{v:.2f}" for v in by_phi1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
