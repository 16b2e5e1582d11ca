r"""The share of a component's stars that pass the catalogue's cuts, over its luminosity function.

A catalogue cut on *observed* parallax and proper motions (the GD-1 field:
parallax < 1 mas and a box in pmra, pmdec) keeps a star of a stream with a
probability that depends on its errors, and so on its magnitude. The mixture
is then a density of the *selected* stars:

.. math::

    p(x \mid \phi_1, \mathrm{sel}) = \frac{\sum_k f_k\, p_k(x)}{\sum_k f_k\, \bar P_k(\phi_1)},

with :math:`p_k` each component's density before the cuts, evaluated at the
star, and :math:`\bar P_k` the probability that a star of component
:math:`k` at :math:`\phi_1` passes them. The background's flows are trained
on selected stars, so its :math:`\bar P` is 1. For a component with an
isochrone, :math:`\bar P_k` is averaged over its luminosity function (cut by
the magnitude limits), each magnitude with the parallax error the
catalogue's error relation gives it (and its scatter, by three-point
Gauss-Hermite quadrature) and proper-motion errors a fixed multiple of it:

.. math::

    \bar P_k(\phi_1) = \sum_j \hat w_j \int N(\ell; \mu_j, s^2)\,
        P_\varpi(\ell)\, P_\mu(\ell)\, d\ell .

The memberships keep the form :math:`f_k p_k / \sum_j f_j p_j` (the
normaliser is common to every component); what changes is the fit: weights
are those of the stars *before* the cuts, and a star's component densities,
not normalised over the cuts, carry its own probability of passing them.
That is consistent only if the magnitudes enter each star's densities as the
luminosity function before the cuts: through the isochrone for a star with
photometry, through :mod:`streammix.error_density` for one without (its
parallax error standing in for its magnitude). Learned error weights would
break it; so, by the same argument, would dividing each star by its own
probability of passing (likely why that over-counted the faint stars with
photometry, benchmarks/RESULTS.md, session 20; not measured). Unlike a component normalised on its own, none can become a
spike at a cut's edge: the normaliser is the mixture's.

The same :math:`\bar P_k` serves a second form (``model.cut_normalisation:
luminosity_function_with_photometry``, ``Mixture(cut_fraction_stars="with_photometry")``):
there each component's density of a star *with* photometry is divided by
:math:`\bar P_k` at the star's phi1, while a star without photometry is divided by its
own probability of passing (the component's ``cut_stars="without_photometry"``). Each
component is then a density over the cuts for both kinds of star (up to the
approximations: :math:`\bar P_k` is the whole luminosity function's, not that of
the stars with photometry only, and ignores extinction), and the weights are
those after the cuts. A component is normalised on its own there, so, as with the
form that divides every star, a prior holds it inside a proper-motion cut
(:meth:`~streammix.components.StreamComponent.selection_log_prior`; without it
GD-1's cocoon left GD-1, benchmarks/RESULTS.md, session 32).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .error_relation import ErrorRelation
from .photometry import limit_log_pass
from .selection import SelectionCuts, interval_log_probability

__all__ = ["CutFraction"]

#: Luminosity-function nodes the average runs over (the isochrone likelihood's segments merged).
NODES = 48
#: The fraction is computed at every STRIDE-th point of the phi1 grid (and its last), linear between.
STRIDE = 8
#: Gauss-Hermite nodes (in standard deviations) and weights over the error relation's scatter.
_HERMITE_Z = (-math.sqrt(3.0), 0.0, math.sqrt(3.0))
_HERMITE_W = (1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0)
LN10_5 = math.log(10.0) / 5.0


class CutFraction(nn.Module):
    r""":math:`\ln \bar P_k(\phi_1)` of components sharing an isochrone likelihood, on the mixture's phi1 grid.

    Arguments:
        likelihood: The components' :class:`~streammix.photometry.PhotometricLikelihood`
            (its segments' magnitudes and mass-function weights, its magnitude limits).
        relation: How the catalogue's parallax errors follow the magnitudes (the likelihood's bands, in order).
        cuts: The catalogue's cuts (:class:`~streammix.selection.SelectionCuts`).
        pm_err_per_parallax_err: Each proper-motion error as a multiple of the parallax error.
        parallax_zero_point: Added to a star's true parallax (mas).
        matrix: ``(G, 2, 2)``: the cut's ``pm_icrs = matrix @ pm_model + offset`` on the grid.
        offset: ``(G, 2)`` (mas/yr).

    Example:
        >>> import numpy as np, torch
        >>> from streammix.error_relation import ErrorRelation
        >>> from streammix.isochrone import default_isochrone
        >>> from streammix.photometry import PhotometricLikelihood
        >>> like = PhotometricLikelihood(default_isochrone(), ["gaia_g", "gaia_rp"], n_nodes=100,
        ...                              magnitude_limits={"gaia_g": (12.0, 21.0)}, limit_error=0.1)
        >>> cuts = SelectionCuts(parallax=(None, 1.0), pm_low=(-2.0, -2.0), pm_high=(2.0, 2.0))
        >>> fraction = CutFraction(like, ErrorRelation(-4.6, (0.22, 0.0), 0.1), cuts, 1.7, 0.0,
        ...                        torch.eye(2).expand(2, 2, 2), torch.zeros(2, 2))
        >>> params = {"distmod": torch.full((2,), 14.5), "distmod_width": torch.full((2,), 0.05),
        ...           "pm_phi1_cosphi2": torch.tensor([0.0, 2.0]), "pm_phi2": torch.zeros(2),
        ...           "pm_phi1_cosphi2_width": torch.full((2,), 0.2), "pm_phi2_width": torch.full((2,), 0.2)}
        >>> inside, at_edge = fraction.log_fraction(params).exp().tolist()
        >>> 0.5 < inside < 1.0, 0.3 < at_edge < 0.55
        (True, True)
    """

    def __init__(
        self,
        likelihood,
        relation: ErrorRelation,
        cuts: SelectionCuts,
        pm_err_per_parallax_err: float,
        parallax_zero_point: float,
        matrix: Tensor,
        offset: Tensor,
    ):
        super().__init__()
        mids, log_weight = likelihood.luminosity_nodes()
        mids, weight = mids.double().cpu().numpy(), log_weight.double().exp().cpu().numpy()
        groups = np.array_split(np.arange(len(weight)), min(NODES, len(weight)))
        node_weight = np.array([weight[g].sum() for g in groups])
        node_mags = np.stack([(weight[g, None] * mids[g]).sum(axis=0) / max(weight[g].sum(), 1e-300) for g in groups])
        keep = node_weight > 0
        self.register_buffer("node_mags", torch.as_tensor(node_mags[keep]))
        self.register_buffer("node_log_weight", torch.as_tensor(np.log(node_weight[keep])))
        n_bands = node_mags.shape[1]
        pairs = n_bands * (n_bands + 1) // 2
        self.register_buffer("relation_intercept", torch.tensor(float(relation.intercept), dtype=torch.float64))
        self.register_buffer("relation_slopes", torch.as_tensor(np.asarray(relation.slopes, dtype=float)))
        self.register_buffer(
            "relation_quadratic", torch.as_tensor(np.asarray(relation.quadratic or (0.0,) * pairs, dtype=float))
        )
        self.register_buffer(
            "relation_centre", torch.as_tensor(np.asarray(relation.centre or (0.0,) * n_bands, dtype=float))
        )
        self.register_buffer("relation_scatter", torch.tensor(float(relation.scatter), dtype=torch.float64))
        size = len(matrix)
        coarse = np.unique(np.r_[np.arange(0, size, STRIDE), size - 1])
        left = np.clip(np.searchsorted(coarse, np.arange(size), side="right") - 1, 0, max(len(coarse) - 2, 0))
        right = np.minimum(left + 1, len(coarse) - 1)
        span = np.maximum(coarse[right] - coarse[left], 1)
        self.register_buffer("coarse", torch.as_tensor(coarse), persistent=False)
        self.register_buffer("left", torch.as_tensor(left), persistent=False)
        self.register_buffer("right", torch.as_tensor(right), persistent=False)
        self.register_buffer("t", torch.as_tensor((np.arange(size) - coarse[left]) / span), persistent=False)
        matrix = torch.as_tensor(matrix, dtype=torch.float64)[self.coarse]
        offset = torch.as_tensor(offset, dtype=torch.float64)[self.coarse]
        self.register_buffer("matrix", matrix, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.cuts = cuts
        self.register_buffer("pm_ratio", torch.tensor(float(pm_err_per_parallax_err), dtype=torch.float64))
        self.parallax_zero_point = float(parallax_zero_point)
        self.limit_index, self.limits, self.limit_spread = likelihood.limit_index, likelihood.limits, likelihood.limit_spread

    def _log10_error(self, mags: Tensor) -> Tensor:
        """The relation's mean log10 parallax error at ``mags`` (..., B)."""
        dtype = mags.dtype
        out = self.relation_intercept.to(dtype) + mags @ self.relation_slopes.to(dtype)
        centred = mags - self.relation_centre.to(dtype)
        first, second = torch.triu_indices(mags.shape[-1], mags.shape[-1], device=mags.device)
        return out + (centred[..., first] * centred[..., second]) @ self.relation_quadratic.to(dtype)

    def log_fraction(self, params: dict[str, Tensor]) -> Tensor:
        r""":math:`\ln \bar P(\phi_1)` at the grid's points, shape ``(G,)``, from the
        component's parameters there (``distmod``, ``distmod_width``, and the proper
        motions' means and widths where the cut has a proper-motion box). It is
        computed at every ``STRIDE``-th grid point and interpolated linearly between."""
        at = self._log_fraction({name: value.index_select(0, self.coarse) for name, value in params.items()})
        return torch.lerp(at.index_select(0, self.left), at.index_select(0, self.right), self.t.to(at.dtype))

    def _log_fraction(self, params: dict[str, Tensor]) -> Tensor:
        """:meth:`log_fraction` at the coarse grid's points."""
        distmod = params["distmod"]
        dtype = distmod.dtype
        mags = self.node_mags.to(dtype).unsqueeze(0) + distmod[:, None, None]  # (G, J, B)
        log_w = self.node_log_weight.to(dtype).unsqueeze(0) + limit_log_pass(mags, self.limit_index, self.limits, self.limit_spread)
        log_w = log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)  # (G, J)
        z = torch.tensor(_HERMITE_Z, dtype=dtype, device=distmod.device)
        log_gh = torch.log(torch.tensor(_HERMITE_W, dtype=dtype, device=distmod.device))
        log10_err = self._log10_error(mags).unsqueeze(-1) + self.relation_scatter.to(dtype) * z  # (G, J, H)
        err = 10.0**log10_err
        log_pass = torch.zeros_like(err)
        if self.cuts.parallax is not None:
            plx = 10.0 ** ((10.0 - distmod) / 5.0)
            intrinsic = (LN10_5 * plx * params["distmod_width"]) ** 2
            sd = torch.sqrt(intrinsic[:, None, None] + err**2)
            log_pass = log_pass + interval_log_probability(
                (plx + self.parallax_zero_point)[:, None, None].expand_as(sd), sd, *self.cuts.parallax
            )
        if self.cuts.pm_low is not None:
            g, j, h = err.shape
            mean = torch.stack([params["pm_phi1_cosphi2"], params["pm_phi2"]], dim=-1)  # (G, 2)
            width2 = torch.stack([params["pm_phi1_cosphi2_width"] ** 2, params["pm_phi2_width"] ** 2], dim=-1)
            var = width2[:, None, None, :] + (self.pm_ratio.to(dtype) * err).unsqueeze(-1) ** 2  # (G, J, H, 2)
            rows = g * j * h
            log_pass = log_pass + self.cuts.pm_log_probability(
                mean[:, None, None, :].expand(g, j, h, 2).reshape(rows, 2),
                torch.diag_embed(var.reshape(rows, 2)),
                self.matrix.to(dtype)[:, None, None].expand(g, j, h, 2, 2).reshape(rows, 2, 2),
                self.offset.to(dtype)[:, None, None].expand(g, j, h, 2).reshape(rows, 2),
            ).reshape(g, j, h)
        return torch.logsumexp(log_w[..., None] + log_gh + log_pass, dim=(-2, -1))
