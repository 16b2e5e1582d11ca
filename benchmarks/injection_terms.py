"""Where an injected stream's stars go: one case of benchmarks/injection.py fitted once.

One injection case is drawn into the real GD-1 field as ``injection.py`` draws it
(the file's own cuts, the case's seed), the joint config plus the ``injected``
component is fitted with one member (no ensemble, no cross-fitting), and the
script prints, per parallax-error bin and for the injected stars with and
without PS1 photometry, the mean probability of every component, then the
error-dependent logits the fitted mixture adds for stars without photometry:
the learned ones (``model.error_weights``) of the injected component and of
GD-1's stream, and the modelled ones (``model.error_density``) where present.

    python benchmarks/injection_terms.py pm1_a [--set model.error_density=true --set model.error_weights=0 --set model.photometry_share=false]
        [--draw-limit percentile]

The draws end as ``injection.py``'s do (``--draw-limit``; ``percentile`` as in sessions 8-22).

About 2 minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import injection  # noqa: E402

from streammix.config import Config  # noqa: E402
from streammix.data import read_table  # noqa: E402
from streammix.errors import InputError  # noqa: E402
from streammix.fit import fit, load_stars  # noqa: E402
from streammix.inject import InjectionSpec, inject_stream  # noqa: E402

EDGES = (0.0, 0.35, 0.6, 0.9, np.inf)
PROBE_ERRORS = (0.2, 0.5, 0.8, 1.0, 1.3, 1.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=[c[0] for c in injection.CASES])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting of the fitted config")
    parser.add_argument("--seed", type=int, default=0, help="added to the case's injection seed")
    parser.add_argument("--draw-limit", dest="draw_limit", choices=["fitted", "percentile"], default="fitted",
                        help="the draws' faint limit, as injection.py's --draw-limit")
    args = parser.parse_args()
    sets = []
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        try:
            sets.append((tuple(key.split(".")), yaml.safe_load(value)))
        except yaml.YAMLError:
            parser.error(f"--set {item!r}: the value is not valid YAML")
    catalog_path = injection.SHARED / "gd1_dr2" / "gd1_pm_box_dr2_ps1.fits"
    if not catalog_path.exists():
        parser.error(f"{catalog_path}: not found (set STREAMMIX_SHARED_DATA)")
    case = next(c for c in injection.CASES if c[0] == args.case)
    try:
        draws = Config.from_yaml(injection.CONFIGS["joint"]).model_dump(mode="json", exclude={"source"})
        draws["data"]["selection"] = injection.FILE_CUTS
        draws_config = Config.from_dict(draws, source="the draws' config")
        spec = InjectionSpec.from_dict({**injection.spec_of(case), **injection.draw_limit_settings(draws_config, args.draw_limit)})
        config = injection.config_with_injected(injection.CONFIGS["joint"], spec, sets)
    except InputError as error:
        parser.error(str(error))
    table = inject_stream(read_table(catalog_path), spec, draws_config, seed=1000 + injection.CASES.index(case) + args.seed)
    truth = np.asarray(table["injected"], bool)
    stars = load_stars(config, table)
    model = fit(config, stars)
    members = model.membership(stars, dropout_samples=0)
    g = np.asarray(table["g_mean_psf_mag"], float)
    no_ps1 = ~np.isfinite(g) | (g >= 1e10)
    error = np.asarray(table["parallax_error"], float)
    columns = [c for c in members.colnames if c.startswith("p_") and c.count("_") == 1]
    rows = []
    print("| injected stars | parallax error (mas) | n | " + " | ".join(columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for low, high in zip(EDGES[:-1], EDGES[1:]):
        for name, group in (("without PS1", truth & no_ps1), ("with PS1", truth & ~no_ps1)):
            chosen = group & (error >= low) & (error < high)
            shares = {c: float(np.mean(np.asarray(members[c])[chosen])) if chosen.any() else float("nan") for c in columns}
            rows.append({"stars": name, "low": low, "high": high, "n": int(chosen.sum()), **shares})
            print(f"| {name} | {low:g}-{high:g} | {int(chosen.sum())} | " + " | ".join(f"{shares[c]:.3f}" for c in columns) + " |")
    mixture = model.mixtures[0]
    names = [c.name for c in mixture.components]
    probe = torch.tensor(PROBE_ERRORS, dtype=torch.float64)
    logits = {}
    if mixture.error_weights is not None:
        learned = mixture.error_weights.logits(probe.float()).detach().double()
        logits["learned, injected"] = learned[:, names.index("injected")].tolist()
        logits["learned, stream"] = learned[:, names.index("stream")].tolist()
    if mixture.error_density is not None:
        distmod = torch.full_like(probe, float(case[5]))
        logits["modelled, at the injected distance modulus"] = mixture.error_density.log_ratio(distmod, probe).tolist()
    print(f"\nerror logits at parallax errors {list(PROBE_ERRORS)} mas")
    for name, values in logits.items():
        print(f"  {name}: " + ", ".join(f"{v:+.2f}" for v in values))
    print(json.dumps({"case": args.case, "sets": args.set, "shares": rows, "logits": logits}))


if __name__ == "__main__":
    main()
