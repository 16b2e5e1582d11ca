"""Each ensemble member of a fitted model, side by side: its components' weights and
parameters along phi1, which sit at a bound, and its mean log-likelihood per star.

Usage::

    python benchmarks/member_parameters.py MODEL_DIR [--phi1 -65 -55 -45 -35 -25]

``MODEL_DIR`` is a fit's ``model`` folder (``streammix fit`` writes it). The members
of a cross-fitted ensemble each hold out a fold, so a member whose components took
another population (a stream at another proper motion or distance) sets the
memberships of a quarter of the stars on its own; the memberships' median hides
it. Without labels this shows it: the member's parameters against its siblings',
parameters at their bounds (``*``: within 1 % of the bounds' span), and its mean
log-likelihood per star over every star, those with and without the model's bands
(a member far above its siblings has found a density the others did not, which
may be a flaw of the likelihood: session 26 of ``benchmarks/RESULTS.md``), and, with
``model.photometry_logits``, its learned logit of each component for the stars with the
model's bands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from streammix.components import modelled_magnitudes
from streammix.fit import load, load_stars

SHOWN = ("phi2", "phi2_width", "pm_phi1_cosphi2", "pm_phi1_cosphi2_width", "pm_phi2", "pm_phi2_width", "distmod")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a fitted model's folder")
    parser.add_argument("--phi1", type=float, nargs="+", default=[-65.0, -55.0, -45.0, -35.0, -25.0])
    args = parser.parse_args()
    model = load(args.model)
    config = model.config
    stars = load_stars(config)
    tensors = model.prepare(stars)  # as the fitted model scores them (the background's density included)
    with_bands = modelled_magnitudes(tensors).numpy()
    phi1 = torch.tensor(args.phi1, dtype=model.mixtures[0].grid.dtype)
    print(f"{config.name}: {len(stars)} stars ({int(with_bands.sum())} with the model's bands); phi1 = {args.phi1}")
    for k, mixture in enumerate(model.mixtures):
        mixture.eval()
        with torch.no_grad():
            outputs = mixture.outputs_at(phi1)
            log_like = mixture.log_likelihood(tensors).double().numpy()
        means = [log_like.mean()] + ([log_like[with_bands].mean(), log_like[~with_bands].mean()] if with_bands.any() else [])
        print(f"\nmember {k}: mean log-likelihood per star {' / '.join(f'{m:.3f}' for m in means)}"
              + (" (all / with bands / without)" if len(means) > 1 else ""))  # fmt: skip
        names = [c.name for c in mixture.all_components]
        weights = outputs["weights"].numpy()
        print("  weights: " + ", ".join(f"{n} {np.array2string(weights[:, j], precision=3)}" for j, n in enumerate(names)))
        if mixture.photometry_logits is not None:  # model.photometry_logits: the stars with the bands' logits
            logits = mixture.photometry_logit_values().detach().numpy()
            print("  logits of the stars with the bands (nats): "
                  + ", ".join(f"{c.name} {v:+.2f}" for c, v in zip(mixture.components, logits)))  # fmt: skip
        for component in mixture.components:
            specs = {p.name: p for p in component.parameter_specs}
            cells = []
            for name in SHOWN:
                if name not in outputs[component.name]:
                    continue
                values = outputs[component.name][name].numpy()
                spec = specs[name]
                margin = 0.01 * (spec.high - spec.low)
                marks = ["*" if (v - spec.low < margin or spec.high - v < margin) else "" for v in values]
                cells.append(f"{name} " + " ".join(f"{v:.2f}{m}" for v, m in zip(values, marks)))
            print(f"  {component.name}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
