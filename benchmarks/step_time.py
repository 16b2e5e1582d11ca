"""The cost of one mixture training step, and whether a code change altered the arithmetic.

Usage::

    PYTHONPATH=<worktree of commit A> python benchmarks/step_time.py CONFIG [--steps 150] [--dtype float64] [--save A.npz]
    PYTHONPATH=<worktree of commit B> python benchmarks/step_time.py CONFIG [...] --compare A.npz
    python benchmarks/step_time.py JOINT_CONFIG --astrometry [...]

Builds the config's mixture (torch seed 0) on its stars with a constant background
density (the background flows are not trained: the step's cost barely depends on
their values), warm-starts it, then runs ``fit.train_mixture`` for ``--steps`` steps
on all stars but the last 1,000 (no early stop, no evaluation in between) and
prints the milliseconds per step. ``--save`` writes the parameters after the warm
start and after the steps; ``--stars N`` trains on N stars only (the step's
fixed cost, which does not grow with the stars, shows at a few hundred); ``--astrometry``
times a joint config's first stage instead (the fit's ``fit.astrometry_steps``: the stars without
their isochrone terms, against a constant astrometric background; ``--steps`` of it); ``--compare`` prints the largest absolute difference from
a saved file, e.g. another commit's run in float64 (rounding only: ~1e-15).
Run one job at a time; times are comparable only on the same machine.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
from _common import SHARED, emit, machine

BACKGROUND_LOGP = -8.0  # the constant background density of every star (nats)
ASTROMETRIC_LOGP = -6.0  # and its astrometric marginal (a joint config's first stage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--stars", type=int, help="train on this many stars only (the step's fixed cost shows at a few hundred)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--astrometry", action="store_true", help="a joint config's astrometric stage")
    parser.add_argument("--save", type=Path, help="write the parameters to this .npz")
    parser.add_argument("--compare", type=Path, help="a .npz from --save to compare the parameters with")
    args = parser.parse_args()
    os.environ.setdefault("STREAMMIX_SHARED_DATA", str(SHARED))
    import torch

    from streammix.config import Config
    from streammix.fit import build_mixture, config_tensors, control_priors, load_stars, train_mixture, warm_start

    data = Config.from_yaml(args.config).model_dump(mode="json", exclude={"source"})
    data["fit"].update(dtype=args.dtype, steps=args.steps, patience=10 * args.steps, eval_every=10 * args.steps)
    config = Config.from_dict(data)
    if args.astrometry and not (config.model.bands and any(c.photometry for c in config.model.components)):
        parser.error(f"--astrometry: {args.config} has no isochrone component, so it has no astrometric stage")
    stars = load_stars(config)
    priors = control_priors(config)
    torch.manual_seed(0)
    mixture = build_mixture(config, stars).to(dtype=getattr(torch, args.dtype))
    joint = bool(config.model.bands)
    tensors = config_tensors(config, stars, np.full(len(stars), BACKGROUND_LOGP), mixture=mixture,
                             background_logp_astrometry=np.full(len(stars), ASTROMETRIC_LOGP) if joint else None)  # fmt: skip
    warm_start(mixture, config, priors, config.fit.warm_start_steps)
    warm = torch.nn.utils.parameters_to_vector(mixture.parameters()).detach().double().numpy().copy()
    index = torch.arange(len(tensors))
    train, valid = tensors.subset(index[:-1000][: args.stars]), tensors.subset(index[-1000:])
    if args.astrometry:
        background = torch.full_like(tensors.background_logp, ASTROMETRIC_LOGP)
        train = train.astrometry_only(background[:-1000][: args.stars])
        valid = valid.astrometry_only(background[-1000:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        started = time.perf_counter()
        result = train_mixture(mixture, train, valid, priors, config, seed=0)
        seconds = time.perf_counter() - started
    final = torch.nn.utils.parameters_to_vector(mixture.parameters()).detach().double().numpy()
    summary = {"machine": machine(), "config": args.config.name, "dtype": args.dtype, "n_train": len(train),
               "stage": "joint" if joint and not args.astrometry else "astrometry",
               "steps": result.steps, "ms_per_step": 1e3 * seconds / result.steps}  # fmt: skip
    print(f"{args.config.name}: {result.steps} steps, {summary['ms_per_step']:.1f} ms per step")
    if args.save is not None:
        np.savez(args.save, warm=warm, final=final)
    if args.compare is not None:
        saved = np.load(args.compare)
        summary["max_abs_difference"] = {"warm_start": float(np.abs(warm - saved["warm"]).max()),
                                         "after_steps": float(np.abs(final - saved["final"]).max())}  # fmt: skip
    emit(summary)


if __name__ == "__main__":
    main()
