r"""Mixture weights that depend on a star's measurement error as well as phi1.

A stream's stars and the field's are not measured equally well: GD-1's stars
are mostly faint (it is 8 kpc away), the field's are brighter on average. A
star's parallax error is a proxy of its magnitude, so where the magnitudes
themselves are not modelled (an astrometric model, or a star without
photometry in a joint one) the error carries membership information that
weights depending on phi1 alone miss. Conditioning the mixture on the error
``e`` gives

.. math::

    p(k \mid \phi_1, e) \propto f_k(\phi_1)\, \frac{p(e \mid k)}{p(e \mid \mathrm{bkg})},

i.e. one extra logit per stream-like component, :math:`b_k(\ln e)`, here a
piecewise-linear function of the log parallax error on fixed knots (the
background's is 0). It is pinned to 0 at the middle knot, so the phi1 weights
stay those of a star of median error. On the injection into the real GD-1
field, weights of phi1 alone left bright, precise stars over-confident and
faint ones under-confident (benchmarks/RESULTS.md, issue 17).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["ErrorWeights", "error_knots"]

LOGIT_SCALE = 10.0  # nats per unit of the trained values: AdamW's steps of ~1e-3 then move a logit by ~1e-2


def error_knots(parallax_err: np.ndarray, knots: int) -> np.ndarray:
    """``knots`` knots of the log parallax error at evenly spaced quantiles
    (1 % to 99 %) of the finite, positive errors given.

    Example:
        >>> error_knots(np.array([0.1, 0.2, 0.4, 0.8, 1.6]), 3).round(3).tolist()
        [-2.274, -0.916, 0.442]
    """
    err = np.asarray(parallax_err, dtype=float)
    err = err[np.isfinite(err) & (err > 0)]
    if knots < 3:
        raise ValueError(f"error weights: need at least 3 knots, got {knots}")
    if err.size < knots:
        raise ValueError(f"error weights: need at least {knots} stars with a positive parallax error, got {err.size}")
    values = np.quantile(np.log(err), np.linspace(0.01, 0.99, knots))
    # strictly increasing (ties in a catalogue of rounded errors)
    return values + np.arange(knots) * 1e-6


class ErrorWeights(nn.Module):
    r"""Extra logits :math:`b_k(\ln e)` of the stream-like components, piecewise
    linear in the log parallax error, constant beyond the end knots and 0 at
    the middle knot.

    Arguments:
        knots: Increasing knots of ln(parallax error / mas), at least 3.
        components: Number of stream-like components.

    Example:
        >>> w = ErrorWeights([-2.0, -1.0, 0.0], components=2)
        >>> w.logits(torch.tensor([0.1, 1.0])).shape
        torch.Size([2, 2])
        >>> w.logits(torch.tensor([0.3])).abs().max().item()  # zero until trained
        0.0
    """

    knots: Tensor

    def __init__(self, knots: Sequence[float] | np.ndarray, components: int):
        super().__init__()
        knots = torch.as_tensor(np.asarray(knots, dtype=float), dtype=torch.float32)
        if knots.ndim != 1 or knots.numel() < 3 or not bool(torch.all(knots[1:] > knots[:-1])):
            raise ValueError("error weights: knots must be at least 3 increasing values")
        self.register_buffer("knots", knots)
        self.middle = int(knots.numel()) // 2
        self.values = nn.Parameter(torch.zeros(int(knots.numel()) - 1, int(components)))

    def _table(self) -> Tensor:
        values = self.values * LOGIT_SCALE
        zero = values.new_zeros(1, values.shape[1])
        return torch.cat([values[: self.middle], zero, values[self.middle :]], dim=0)

    def set_logits(self, logits: Tensor) -> None:
        """Set the logits at every knot but the middle one, shape ``(knots - 1, K)``."""
        with torch.no_grad():
            self.values.copy_(torch.as_tensor(logits, dtype=self.values.dtype) / LOGIT_SCALE)

    def logits(self, parallax_err: Tensor) -> Tensor:
        """The extra logit of each component for each star, shape ``(N, K)``.

        Arguments:
            parallax_err: Parallax errors (mas), positive, shape ``(N,)``.
        """
        knots = self.knots.to(parallax_err.dtype)
        x = torch.log(parallax_err.clamp_min(1e-12)).clamp(knots[0], knots[-1])
        left = (torch.searchsorted(knots, x.contiguous(), right=True) - 1).clamp(0, knots.numel() - 2)
        k0, k1 = knots.index_select(0, left), knots.index_select(0, left + 1)
        t = ((x - k0) / (k1 - k0)).unsqueeze(-1)
        table = self._table().to(parallax_err.dtype)
        return torch.lerp(table.index_select(0, left), table.index_select(0, left + 1), t)

    def reference_logits(self) -> Tensor:
        """The logits at the knots, shape ``(knots, K)``: the knots are quantiles
        of the training stars' errors, so an average over them approximates
        one over the field's stars."""
        return self._table()
