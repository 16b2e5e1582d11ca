"""Residuals of the data against a fitted model's prediction, in the sky.

A structure the model lacks (a spur, a second stream) shows up as stars where
the model predicts none. The check is a posterior-predictive one in
(phi1, phi2): take the stars whose *other* coordinates — proper motions,
parallax, photometry — favour the stream-like components (their probability of
membership computed without phi2 exceeds a threshold), and compare where they
are in phi2 with where the model says they should be given their phi1 and
those other coordinates:

.. math::

    E[n_{bin}] = \\sum_{i \\in \\mathrm{selected}, \\phi_{1,i} \\in bin}
    \\sum_k r_{ik} P_k(\\phi_2 \\in bin \\mid \\phi_{1,i}),
    \\qquad r_{ik} \\propto f_k p_k(x_i^{\\setminus \\phi_2})

The selection uses no phi2, so the prediction is exact for the selected stars
under the model; the residual of a bin in units of its counting error is
``(observed - expected) / sqrt(expected)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from astropy.table import Table

from .errors import InputError

__all__ = ["PositionResiduals", "position_residuals"]


@dataclass
class PositionResiduals:
    """Observed and predicted counts of the selected stars on a (phi1, phi2) grid.

    Arguments:
        phi1_edges: Bin edges in phi1 (deg).
        phi2_edges: Bin edges in phi2 (deg).
        observed: Observed counts, shape ``(n_phi1, n_phi2)``.
        expected: The model's expected counts, same shape.
        threshold: The membership probability (without phi2) above which stars were selected.
        n_selected: The number of selected stars.

    Example:
        >>> import numpy as np
        >>> r = PositionResiduals(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0]),
        ...                       np.array([[4.0], [16.0]]), np.array([[4.0], [4.0]]), 0.5, 20)
        >>> r.significance[:, 0].tolist()
        [0.0, 6.0]
        >>> round(r.region_significance((1.0, 2.0), (0.0, 1.0)), 3)
        6.0
    """

    phi1_edges: np.ndarray
    phi2_edges: np.ndarray
    observed: np.ndarray
    expected: np.ndarray
    threshold: float
    n_selected: int

    @property
    def significance(self) -> np.ndarray:
        """(observed - expected) / sqrt(expected) per bin (expected floored at 0.5
        star, so empty bins of the model do not divide by zero)."""
        return (self.observed - self.expected) / np.sqrt(np.maximum(self.expected, 0.5))

    def region_significance(self, phi1_range: tuple[float, float], phi2_range: tuple[float, float]) -> float:
        """The excess of the bins whose centres lie in a region, in units of its
        counting error: (sum observed - sum expected) / sqrt(sum expected)."""
        c1 = 0.5 * (self.phi1_edges[1:] + self.phi1_edges[:-1])
        c2 = 0.5 * (self.phi2_edges[1:] + self.phi2_edges[:-1])
        inside = ((c1 >= phi1_range[0]) & (c1 <= phi1_range[1]))[:, None] & (
            (c2 >= phi2_range[0]) & (c2 <= phi2_range[1])
        )[None, :]
        if not inside.any():
            raise InputError(f"residual region phi1 {phi1_range}, phi2 {phi2_range}: no bin centre inside")
        o, e = self.observed[inside].sum(), self.expected[inside].sum()
        return float((o - e) / np.sqrt(max(e, 0.5)))

    def to_table(self) -> Table:
        """One row per bin: centres, observed, expected and significance."""
        c1 = 0.5 * (self.phi1_edges[1:] + self.phi1_edges[:-1])
        c2 = 0.5 * (self.phi2_edges[1:] + self.phi2_edges[:-1])
        g1, g2 = np.meshgrid(c1, c2, indexing="ij")
        table = Table(
            {
                "phi1": g1.ravel(),
                "phi2": g2.ravel(),
                "observed": self.observed.ravel(),
                "expected": self.expected.ravel(),
                "significance": self.significance.ravel(),
            }
        )
        table["phi1"].unit = table["phi2"].unit = "deg"
        table.meta.update(
            {
                "threshold": self.threshold,
                "n_selected": self.n_selected,
                "phi1_step": float(np.diff(self.phi1_edges)[0]),
                "phi2_step": float(np.diff(self.phi2_edges)[0]),
                "description": "stars whose membership probability without phi2 exceeds the threshold, "
                "observed and expected per (phi1, phi2) bin; significance = (observed - expected) / sqrt(expected)",
            }
        )
        return table


def position_residuals(
    model,
    stars,
    *,
    threshold: float = 0.5,
    phi1_step: float = 2.0,
    phi2_step: float = 0.25,
    components: list[str] | None = None,
) -> PositionResiduals:
    """The (phi1, phi2) residuals of ``stars`` against a fitted model (its reference fit).

    Arguments:
        model: A :class:`~streammix.fit.FittedModel` whose coordinates include phi2.
        stars: The stars (a :class:`~streammix.data.StarTable`), usually those it was fitted to.
        threshold: Stars whose membership probability computed without phi2
            exceeds this are selected.
        phi1_step: Bin width in phi1 (deg).
        phi2_step: Bin width in phi2 (deg).
        components: The components whose probabilities select (default: the
            member components, see :func:`streammix.membership.member_components`).

    Returns:
        The observed and expected counts.
    """
    from .membership import member_components

    config = model.config
    if "phi2" not in config.model.coordinates:
        raise InputError("residuals: the model does not use phi2, so it predicts no positions")
    if not 0.0 < threshold < 1.0:
        raise InputError(f"residuals: threshold {threshold} must lie between 0 and 1")
    names = model.component_names
    chosen = components if components is not None else member_components(config, names)
    unknown = [c for c in chosen if c not in names or c == "background"]
    if unknown:
        raise InputError(f"residuals: components {unknown} are not stream-like components of the model {names[:-1]}")
    group = [names.index(c) for c in chosen]
    mixture = model.mixtures[0].eval()
    tensors = model.prepare(stars)
    without_phi2 = replace(tensors, has_phi2=torch.zeros_like(tensors.has_phi2))
    with torch.no_grad():
        joint = mixture.log_joint(without_phi2)
        share = torch.softmax(joint, dim=-1)
        selected = (share[:, group].sum(-1) > threshold) & tensors.has_phi2
        index = torch.nonzero(selected).squeeze(-1)
        phi1 = tensors.phi1.index_select(0, index)
        phi2_err = tensors.phi2_err.index_select(0, index)
        share = share.index_select(0, index)
        outputs = mixture.outputs_at(phi1)
        lo2, hi2 = config.field.phi2
        phi2_edges = _edges(lo2, hi2, phi2_step)
        edges = torch.as_tensor(phi2_edges, dtype=phi1.dtype)
        # (stars, edges) CDF of each component, weighted by the star's share
        cdf = torch.zeros(len(index), len(phi2_edges), dtype=torch.float64)
        for k, comp in enumerate(mixture.all_components):
            params = {p: v.unsqueeze(-1) for p, v in outputs[comp.name].items()}
            value = comp.phi2_cdf(edges.unsqueeze(0), params, phi2_err.unsqueeze(-1))
            cdf += share[:, k : k + 1].double() * value.double()
    per_star = np.diff(cdf.numpy(), axis=1)
    lo1, hi1 = config.field.phi1
    phi1_edges = _edges(lo1, hi1, phi1_step)
    phi1_np = phi1.double().numpy()
    row = np.clip(np.searchsorted(phi1_edges, phi1_np, side="right") - 1, 0, len(phi1_edges) - 2)
    expected = np.zeros((len(phi1_edges) - 1, len(phi2_edges) - 1))
    np.add.at(expected, row, per_star)
    phi2_np = tensors.phi2.index_select(0, index).double().numpy()
    observed, _, _ = np.histogram2d(phi1_np, phi2_np, bins=[phi1_edges, phi2_edges])
    return PositionResiduals(phi1_edges, phi2_edges, observed, expected, threshold, int(len(index)))


def _edges(low: float, high: float, step: float) -> np.ndarray:
    """Bin edges from ``low`` to ``high`` of about ``step`` each (a whole number of bins)."""
    if not step > 0:
        raise InputError(f"residuals: bin width {step} must be positive")
    n = max(1, int(round((high - low) / step)))
    return np.linspace(low, high, n + 1)
