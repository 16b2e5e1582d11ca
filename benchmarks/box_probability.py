"""The proper-motion cut's box probability on a fitted model's stars: the tetrachoric
series against the quadrature, in accuracy and time.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/box_probability.py MODEL_DIR [--member 0] [--repeats 15]

``MODEL_DIR`` is the ``model`` folder of a fit whose config declares a proper-motion cut
(``data.selection``; the GD-1 joint config does). For each stream-like component, on the
rows its cut divides (:meth:`streammix.components.StreamComponent._pm_selection`) at the
member's parameters, it prints: the rows, |rho| (median, 90th percentile, largest), the
share of rows the series sums in float32, the largest error of
:func:`streammix.selection.box_log_probability` in float32 and float64 and of the
quadrature alone in float32 against the float64 quadrature (the reference: within 2e-9
of the truth except far in the tails, where its own error reaches 1e-5 and the float64
figures show it), the largest error of their gradients in the component's parameters
relative to the largest gradient, and the median time of a forward and backward pass of
each in float32, the inputs built beforehand (one thread; times are comparable only on
the same machine, one job at a time).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _common import emit, machine

from streammix.fit import config_tensors, load, load_stars
from streammix.selection import _quadrature_log_probability, _series_log_probability, box_log_probability


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a fitted model's folder")
    parser.add_argument("--member", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load(args.model)
    config = model.config
    stars = load_stars(config)
    mixture = model.mixtures[args.member]
    tensors = config_tensors(config, stars, model.background.log_prob(stars), mixture=mixture)
    with torch.no_grad():
        outputs = mixture.outputs_at(tensors.phi1)
    results = {}
    for comp in mixture.components:
        if getattr(comp, "selection", None) is None or comp.selection.pm_low is None:
            continue
        rows = torch.nonzero(
            tensors.has_pm1 & tensors.has_pm2 & tensors.has_selection & comp._divided(tensors)
        ).squeeze(-1)
        params = {k: v.detach().index_select(0, rows) for k, v in outputs[comp.name].items()}
        low64, high64 = (torch.tensor(b, dtype=torch.float64) for b in (comp.selection.pm_low, comp.selection.pm_high))

        def inputs(dtype, params=params, rows=rows):
            leaves = {k: v.to(dtype).clone().requires_grad_(True) for k, v in params.items() if "pm_" in k}
            mean = torch.stack([leaves["pm_phi1_cosphi2"], leaves["pm_phi2"]], -1)
            widths = torch.stack([leaves["pm_phi1_cosphi2_width"] ** 2, leaves["pm_phi2_width"] ** 2], -1)
            cov = tensors.pm_cov.index_select(0, rows).to(dtype) + torch.diag_embed(widths)
            matrix = tensors.selection_matrix.index_select(0, rows).to(dtype)
            offset = tensors.selection_offset.index_select(0, rows).to(dtype)
            return leaves, torch.einsum("nij,nj->ni", matrix, mean) + offset, matrix @ cov @ matrix.transpose(-1, -2)

        def evaluate(function, dtype, low64=low64, high64=high64, inputs=inputs):
            leaves, mean, cov = inputs(dtype)
            value = function(mean, cov, low64.to(dtype), high64.to(dtype))
            value.sum().backward()
            return value.detach().double(), {k: v.grad.double() for k, v in leaves.items()}

        def timed(function, low32=low64.float(), high32=high64.float(), inputs=inputs):
            _, mean, cov = inputs(torch.float32)
            mean, cov = mean.detach().requires_grad_(True), cov.detach().requires_grad_(True)
            start = time.perf_counter()
            function(mean, cov, low32, high32).sum().backward()
            return time.perf_counter() - start

        reference, reference_grad = evaluate(_quadrature_log_probability, torch.float64)
        scale = max(float(g.abs().max()) for g in reference_grad.values())
        _, mean, cov = inputs(torch.float32)
        with torch.no_grad():
            _, summed = _series_log_probability(mean, cov, low64.float(), high64.float())
            rho = (cov[:, 0, 1] / torch.sqrt(cov[:, 0, 0] * cov[:, 1, 1])).abs().numpy()
        entry = {
            "rows": len(rows),
            "abs_rho_q50_q90_max": [round(float(q), 4) for q in np.quantile(rho, [0.5, 0.9, 1.0])],
            "summed_float32": round(float(summed.float().mean()), 4),
        }
        for label, function, dtype in (
            ("box_float64", box_log_probability, torch.float64),
            ("box_float32", box_log_probability, torch.float32),
            ("quadrature_float32", _quadrature_log_probability, torch.float32),
        ):
            value, grad = evaluate(function, dtype)
            entry[f"{label}_max_error"] = float(f"{float((value - reference).abs().max()):.3g}")
            entry[f"{label}_max_grad_error"] = float(
                f"{max(float((grad[k] - reference_grad[k]).abs().max()) for k in grad) / scale:.3g}"
            )
        times = {"box": [], "quadrature": []}
        for _ in range(args.repeats):  # interleaved
            for label, function in (("box", box_log_probability), ("quadrature", _quadrature_log_probability)):
                times[label].append(timed(function))
        entry["ms_forward_backward"] = {k: round(1000.0 * float(np.median(v)), 2) for k, v in times.items()}
        results[comp.name] = entry
        print(comp.name, entry)
    emit({"machine": machine(), "model": str(args.model), "member": args.member, "components": results})


if __name__ == "__main__":
    main()
