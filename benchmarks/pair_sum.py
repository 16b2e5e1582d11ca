"""The isochrone term's pair sum with and without the segments that cannot matter.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/pair_sum.py [CONFIG] [--repeats 3]

Prepares the stars of a joint config (default ``configs/gd1_dr2_photometry.yaml``)
that have a magnitude, as a fit does (``PhotometricLikelihood.prepare`` over distance
moduli 13-16.5), then evaluates ``log_prob_prepared`` and its gradient in the
distance modulus and its spread at three (distance modulus, spread) pairs, each
star's distance modulus drawn around the given one (0.2 mag scatter), in float64
and float32: once with every prepared pair (``photometry._relevant_pairs`` replaced
by one that keeps them all, so without the bounds' own cost: the sum as it was
before them) and once as shipped. Prints, for each case, the pairs prepared, the
best of ``--repeats`` times of the forward and backward passes, and the largest
differences of the values and gradients, then a JSON line.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _common import ROOT, SHARED, emit, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, nargs="?", default=ROOT / "configs" / "gd1_dr2_photometry.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give at least 1")
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    import torch

    from streammix import photometry
    from streammix.config import Config
    from streammix.errors import InputError
    from streammix.fit import build_mixture, load_stars

    try:
        config = Config.from_yaml(args.config)
        stars = load_stars(config)
    except InputError as error:
        parser.error(str(error))
    bands = list(config.model.bands)
    if not bands:
        parser.error(f"{args.config}: the config has no bands (model.bands), so no isochrone term")
    mixture = build_mixture(config, stars)
    like = next(c.photometry for c in mixture.components if getattr(c, "photometry", None) is not None)
    has = np.any([stars.observed[b] for b in bands], axis=0)
    mags = np.stack([np.where(stars.observed[b], stars.mags[b], np.nan)[has] for b in bands], axis=1)
    errors = np.stack([stars.mag_errs[b][has] for b in bands], axis=1)
    shipped = photometry._relevant_pairs

    def every_pair(*args):
        return None

    rows = []
    for dtype in (torch.float64, torch.float32):
        prepared = like.prepare(photometry.photometry_tensors(mags, errors, dtype=dtype), (13.0, 16.5))
        n = len(prepared)
        rng = np.random.default_rng(1)
        for distmod, width in ((14.4, 0.05), (13.0, 0.3), (15.5, 0.005)):
            dm = torch.tensor(distmod + 0.2 * rng.standard_normal(n), dtype=dtype, requires_grad=True)
            spread = torch.full((n,), width, dtype=dtype, requires_grad=True)
            out = {}
            for name, relevant in (("every pair", every_pair), ("shipped", shipped)):
                photometry._relevant_pairs = relevant
                try:
                    best = float("inf")
                    for _ in range(args.repeats):
                        dm.grad, spread.grad = None, None
                        started = time.perf_counter()
                        value = like.log_prob_prepared(dm, spread, prepared)
                        value.sum().backward()
                        best = min(best, time.perf_counter() - started)
                finally:
                    photometry._relevant_pairs = shipped
                out[name] = (value.detach(), dm.grad.clone(), spread.grad.clone(), best)
            every, kept = out["every pair"], out["shipped"]
            row = {
                "dtype": str(dtype).removeprefix("torch."),
                "distmod": distmod,
                "width": width,
                "stars": n,
                "pairs": prepared.n_elements,
                "seconds_every_pair": every[3],
                "seconds_shipped": kept[3],
                "max_abs_logp_difference": float((every[0] - kept[0]).abs().max()),
                "max_abs_grad_distmod_difference": float((every[1] - kept[1]).abs().max()),
                "max_abs_grad_width_difference": float((every[2] - kept[2]).abs().max()),
            }
            rows.append(row)
            print(f"{row['dtype']} DM {distmod} spread {width}: {n} stars, {row['pairs']} pairs; "
                  f"{1e3 * every[3]:.0f} -> {1e3 * kept[3]:.0f} ms; |d log p| {row['max_abs_logp_difference']:.1e}, "
                  f"|d grad| {row['max_abs_grad_distmod_difference']:.1e}, {row['max_abs_grad_width_difference']:.1e}")  # fmt: skip
    emit({"machine": machine(), "config": args.config.name, "rows": rows})


if __name__ == "__main__":
    main()
