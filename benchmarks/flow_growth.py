"""The background flows trained with other settings (a growing subsample, ``grow_from``...) on the same stars.

Usage::

    python benchmarks/flow_growth.py [--config demo|PATH.yaml] [--grow-from none 16384 ...] [--test 0.1] [--seed 0]
    python benchmarks/flow_growth.py [--config ...] --variant "" --variant "rare_pattern_stars=16384" ...
    python benchmarks/flow_growth.py --config demo --stars 1000000 --variant "" --save BEFORE.npz   # one commit
    python benchmarks/flow_growth.py --config demo --stars 1000000 --variant "" --against BEFORE.npz  # another

The config's background flows are trained as :func:`streammix.fit.fit` trains
them (its off-stream stars, its blocks and settings, ``fit.workers``
processes), once per ``--grow-from`` value (``none``: every training star, the
behaviour before ``grow_from``) or, with ``--variant``, once per variant: a
space-separated list of ``KEY=VALUE`` settings of ``model.background.flow``
(``""``: the config's own), on the off-stream stars less a test set: a
``--test`` fraction of them drawn once (``--seed``), which no variant trains
or validates on. Each variant's flows then score the test stars: the mean
background log-density per star (all the background's coordinates, and for a
joint model the astrometric marginal the mixtures also use), and its paired
difference from the first variant (or, with ``--against``, from the scores
another run saved with ``--save``) with the standard error (and the largest
difference of one star: 0 when the flows are the same), over all the test
stars and over those of each pattern of observed coordinates (a flow of a rare
pattern serves only its own stars). ``--config demo``
is the ``make demo`` job's field: the default mock (102,000 stars; ``--stars N``: N) with
:func:`streammix.pipeline.demo_config`. Prints a markdown table and, last, a
JSON summary.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import emit, machine, peak_rss_mb, scaling_mock


def field(config: str, stars: int | None = None):
    """The config and its stars (``demo``: the default mock with the demo's config, or one of
    ``stars`` stars, 2 % in the stream as in fit_scaling.py)."""
    from streammix.config import Config
    from streammix.data import StarTable
    from streammix.fit import load_stars
    from streammix.mock import MockConfig, generate_mock
    from streammix.pipeline import demo_config, mock_columns

    if config == "demo":
        table, truth = generate_mock(MockConfig() if stars is None else scaling_mock(stars), seed=0)
        return demo_config(truth), StarTable.from_table(table, mock_columns())
    loaded = Config.from_yaml(Path(config))
    return loaded, load_stars(loaded)


def with_flow_settings(config, settings: str):
    """``config`` with the space-separated ``KEY=VALUE`` settings of ``model.background.flow`` written in."""
    from streammix.config import Config
    from streammix.overrides import apply_overrides, parse_overrides

    data = config.model_dump(mode="json", exclude={"source"})
    overrides = parse_overrides([f"model.background.flow.{item}" for item in settings.split()])
    return Config.from_dict(apply_overrides(data, overrides), source=f"{config.source} ({settings or 'as given'})")


def patterns(stars) -> np.ndarray:
    """Each star's pattern of observed coordinates, as the names joined by spaces."""
    observed = stars.observed
    names = np.array(list(observed))
    mask = np.stack(list(observed.values()), axis=1)
    return np.array([" ".join(names[row]) for row in mask])


def paired(base: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Mean of ``other - base`` per star and its standard error."""
    d = other - base
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help="demo, or a config file")
    parser.add_argument("--grow-from", nargs="+", default=["none", "16384"], help="grow_from values (none: every star)")
    parser.add_argument(
        "--variant",
        action="append",
        help="space-separated KEY=VALUE settings of model.background.flow, once per variant (an empty string: the "
        "config's own); replaces --grow-from",
    )
    parser.add_argument("--test", type=float, default=0.1, help="fraction of the off-stream stars kept as test stars")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test stars")
    parser.add_argument("--stars", type=int, help="--config demo: a mock of this many stars (default: the demo's)")
    parser.add_argument("--save", type=Path, help="write the first variant's test-star scores to this .npz file")
    parser.add_argument(
        "--against", type=Path,
        help="an .npz file of --save (another run, e.g. another commit's package on PYTHONPATH, same stars): "
        "every variant's differences are paired with its scores",
    )
    args = parser.parse_args()
    if args.stars is not None and args.config != "demo":
        parser.error("--stars: only with --config demo")
    if args.stars is not None and args.stars <= 100:
        parser.error(f"--stars: {args.stars} is too few (more than 100: 2 % of them, at least 50, are the stream's)")

    from streammix.errors import InputError
    from streammix.fit import _train_background, control_priors, needs_background_bands, offstream_stars

    config, stars = field(args.config, args.stars)
    offstream = offstream_stars(config, control_priors(config), stars)
    rng = np.random.default_rng(args.seed)
    test = offstream & (rng.random(len(stars)) < args.test)
    train = offstream & ~test
    joint = bool(config.model.bands) and (
        any(c.photometry for c in config.model.components) or needs_background_bands(config)
    )
    rows = []
    base: dict[str, np.ndarray] = {}
    test_ids = np.asarray(stars.source_id[test])
    if args.against is not None:
        try:
            with np.load(args.against) as saved:
                base = {name: saved[name] for name in saved.files}
        except (OSError, ValueError) as error:
            parser.error(f"--against {args.against}: {error}")
        if not np.array_equal(base.pop("source_id", None), test_ids):
            parser.error(f"--against {args.against}: not the scores of these test stars (another field, --test or --seed)")
    variants = args.variant if args.variant is not None else [
        f"grow_from={'null' if text.lower() in ('none', 'null') else int(text)}" for text in args.grow_from
    ]
    try:  # every variant checked before any training
        configs = [with_flow_settings(config, settings) for settings in variants]
    except InputError as error:
        parser.error(str(error))
    test_patterns = patterns(stars[test])
    kinds, counts = np.unique(test_patterns, return_counts=True)
    for settings, variant in zip(variants, configs):
        start = time.perf_counter()
        background = _train_background(variant, stars, train, progress=False)
        seconds = time.perf_counter() - start
        scores = {"all": background.log_prob(stars[test])}
        if joint:
            scores["astrometry"] = background.log_prob(stars[test], exclude=config.model.bands)
        for kind in kinds:
            scores[f"pattern {kind}"] = scores["all"][test_patterns == kind]
        row = {"variant": settings, "seconds": round(seconds, 1)}
        for name, logp in scores.items():
            row[f"logp_{name}"] = round(float(logp.mean()), 4)
            if base and name in base:
                gain, se = paired(base[name], logp)
                row[f"dlogp_{name}"], row[f"dlogp_{name}_se"] = round(gain, 4), round(se, 4)
                row[f"max_abs_dlogp_{name}"] = float(np.max(np.abs(logp - base[name])))
        if args.save is not None and not rows:
            np.savez(args.save, source_id=test_ids, **scores)
        if not base:
            base = scores
        row["flows"] = {
            " ".join(pattern): {"trained_on": flow.trained_on, "stopped_because": flow.stopped_because,
                                "seconds": round(flow.seconds, 1)}
            for block in background.blocks
            for pattern, flow in getattr(block, "flows", {}).items()
        }  # fmt: skip
        rows.append(row)
        print(row, flush=True)

    names = ["all", "astrometry"] if joint else ["all"]
    print(f"\n{args.config}: {int(train.sum()):,} training and {int(test.sum()):,} test stars (off-stream)\n")
    against = "vs --against" if args.against is not None else "vs first"
    columns = " | ".join(f"ln p {n} / star ({against})" for n in names)
    print(f"| variant | flows s | {columns} | each flow: training stars, seconds, why it stopped |")
    print("|---" * (3 + len(names)) + "|")

    def cell(row: dict, name: str) -> str:
        text = f"{row[f'logp_{name}']:.4f}"
        if f"dlogp_{name}" in row:
            text += f" ({row[f'dlogp_{name}']:+.4f} ± {row[f'dlogp_{name}_se']:.4f})"
        return text

    for row in rows:
        learnt = "; ".join(
            f"{p}: {f['trained_on']:,}, {f['seconds']} s, {f['stopped_because']}" for p, f in row["flows"].items()
        )
        label = row["variant"] or "as given"
        print(f"| {label} | {row['seconds']} | " + " | ".join(cell(row, n) for n in names) + f" | {learnt} |")
    print(f"\nThe test stars of each pattern of observed coordinates, ln p / star ({against}):\n")
    print("| pattern | test stars | " + " | ".join(row["variant"] or "as given" for row in rows) + " |")
    print("|---" * (2 + len(rows)) + "|")
    for kind, count in zip(kinds, counts):
        print(f"| {kind} | {count:,} | " + " | ".join(cell(row, f"pattern {kind}") for row in rows) + " |")
    emit(
        {
            "benchmark": "flow_growth",
            "config": args.config,
            "stars": len(stars),
            "against": None if args.against is None else str(args.against),
            "n_train": int(train.sum()),
            "n_test": int(test.sum()),
            "test_fraction": args.test,
            "seed": args.seed,
            "variants": rows,
            "peak_rss_mb": round(peak_rss_mb()),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
