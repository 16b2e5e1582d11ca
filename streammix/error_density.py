r"""How likely a star's parallax error is under a stream with an isochrone, against the field.

For a star whose magnitudes the model does not use (a joint model's stars
without photometry), its parallax error still says how bright it is, and so
how likely it is to be a distant stream's star. :mod:`streammix.error_weights`
learns that from the fit; this module computes it from what the model already
knows. A stream-like component with an isochrone has a luminosity function:
the isochrone's magnitudes weighted by the mass function, shifted by its
distance modulus and cut by the catalogue's magnitude limits. The catalogue's
own stars give how the parallax error follows the magnitudes
(:class:`~streammix.error_relation.ErrorRelation`, quadratic). Together they
give the density of :math:`\log_{10}\sigma_\varpi` under the component,

.. math::

    p_k(\log_{10}\sigma \mid \mathrm{DM}) = \sum_j \hat w_j(\mathrm{DM})\,
        N\bigl(\log_{10}\sigma;\ \mu(\mathbf m_j + \mathrm{DM}),\ s^2\bigr),

with :math:`\hat w_j` the mass-function weight of isochrone point :math:`j`
times its probability of passing the magnitude limits, normalised. The
field's density :math:`p_\mathrm{bkg}(\log_{10}\sigma)` is a Gaussian kernel
density estimate of the off-stream stars' errors. The component's density of
the star is multiplied by :math:`p_k / p_\mathrm{bkg}` (a density term, as the
isochrone's is for a star with magnitudes, not a weight: the mixture is then a
density of the error and the astrometry together).

Why it is the right term, and why the stream's luminosity function is taken
*before* the catalogue's astrometric cuts: the catalogue keeps a star when its
observed proper motions and parallax pass its cuts. A stream-like component's
astrometric density is not normalised over those cuts, so at a star's error it
integrates over them to the probability that such a star passes. Multiplied by
the luminosity function before the cuts, that is the density of the stream's
stars *as selected*, up to one constant that the weights absorb; the field's
flows and its error density are fitted to selected stars already. A learned
error logit has to find this shape, several nats from the precise stars to the
imprecise ones, from the few stream stars without photometry: on streams
injected into the real GD-1 field it did not, and the imprecise stars without
photometry were given 0.41 of their number (benchmarks/RESULTS.md, session 20).
As a weight beside the learned ones (its first form) it changed nothing: they
undid it, and the shortfall is the cuts' (:mod:`streammix.cut_fraction`;
RESULTS, session 22). It now replaces them (``model.error_weights: 0``).

Approximations: the stars without photometry are assumed to lack it for
reasons of brightness alone (the same factor then multiplies both densities
and cancels; for the stars *with* photometry it does not, and
:mod:`streammix.photometry_share` supplies it, which ``model.error_density``
applies too); the error relation and the field's density do not vary along
the stream; the isochrone's colour spread and the component's distance
spread are left out of the luminosity function (each a few hundredths of a
magnitude against the relation's 0.1 dex scatter).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .error_relation import ErrorRelation

__all__ = ["ErrorDensity", "error_density", "error_grid", "error_grid_position"]

#: Distance moduli on the table's grid.
DISTMOD_POINTS = 64
#: log10 parallax errors on the table's grid.
ERROR_POINTS = 256
#: The error grid extends this far (dex) beyond the stars' errors.
ERROR_MARGIN = 0.3
#: Densities below this are floored, in either table (a star far from every isochrone point).
DENSITY_FLOOR = 1e-6


def error_grid(log_err: np.ndarray) -> np.ndarray:
    """The tables' grid of log10 parallax errors: ``ERROR_POINTS`` evenly spaced from
    ``ERROR_MARGIN`` dex below the smallest of ``log_err`` to as far above the largest.

    Example:
        >>> error_grid(np.array([-1.0, 0.0]))[[0, -1]].round(2).tolist()
        [-1.3, 0.3]
    """
    return np.linspace(log_err.min() - ERROR_MARGIN, log_err.max() + ERROR_MARGIN, ERROR_POINTS)


def error_grid_position(grid: Tensor, parallax_err: Tensor) -> tuple[Tensor, Tensor]:
    """Each error's column on an evenly spaced grid of log10 errors and its fraction
    of the way to the next, held at the grid's ends (for linear interpolation).

    Example:
        >>> col, frac = error_grid_position(torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([10 ** -0.5, 100.0]))
        >>> col.tolist(), frac.tolist()
        ([0, 1], [0.5, 1.0])
    """
    s = torch.log10(parallax_err.clamp_min(1e-12))
    step = (grid[-1] - grid[0]) / (grid.numel() - 1)
    u = ((s - grid[0]) / step).clamp(0.0, grid.numel() - 1.0)
    col = u.floor().long().clamp(max=grid.numel() - 2)
    return col, u - col


class ErrorDensity(nn.Module):
    r"""The log-ratio of the stream's and the field's densities of a star's log parallax error.

    The tables are buffers on fixed grids (a saved model loads them into a
    placeholder of the same shape). Between grid points the log-ratio is
    interpolated linearly in both the distance modulus and the log error, and
    held at the grid's ends beyond them.

    Arguments:
        distmod: The grid of distance moduli, increasing, shape ``(D,)``.
        log_err: The grid of :math:`\log_{10}` parallax errors (mas), increasing and evenly spaced, ``(S,)``.
        stream_log_density: :math:`\ln p_k(\log_{10}\sigma \mid \mathrm{DM})` on the grid, ``(D, S)``.
        field_log_density: :math:`\ln p_\mathrm{bkg}(\log_{10}\sigma)` on the grid, ``(S,)``.

    Example:
        >>> import torch
        >>> density = ErrorDensity(torch.tensor([14.0, 15.0]), torch.tensor([-1.0, 0.0]),
        ...                        torch.log(torch.tensor([[0.2, 1.0], [0.1, 2.0]])), torch.zeros(2))
        >>> density.log_ratio(torch.tensor([14.5]), torch.tensor([1.0])).exp().round(decimals=3).tolist()  # sqrt(1 * 2)
        [1.414]
    """

    distmod: Tensor
    log_err: Tensor
    stream_log_density: Tensor
    field_log_density: Tensor

    def __init__(self, distmod: Tensor, log_err: Tensor, stream_log_density: Tensor, field_log_density: Tensor):
        super().__init__()
        if stream_log_density.shape != (distmod.numel(), log_err.numel()) or field_log_density.shape != log_err.shape:
            raise ValueError("error density: the tables' shapes do not match the grids")
        self.register_buffer("distmod", distmod.clone())
        self.register_buffer("log_err", log_err.clone())
        self.register_buffer("stream_log_density", stream_log_density.clone())
        self.register_buffer("field_log_density", field_log_density.clone())

    @classmethod
    def placeholder(cls, dtype: torch.dtype = torch.float64) -> ErrorDensity:
        """Tables of the right shapes to load a saved model's into."""
        return cls(
            torch.linspace(0.0, 1.0, DISTMOD_POINTS, dtype=dtype),
            torch.linspace(0.0, 1.0, ERROR_POINTS, dtype=dtype),
            torch.zeros(DISTMOD_POINTS, ERROR_POINTS, dtype=dtype),
            torch.zeros(ERROR_POINTS, dtype=dtype),
        )

    def log_ratio(self, distmod: Tensor, parallax_err: Tensor) -> Tensor:
        r""":math:`\ln p_k(\log_{10}\sigma \mid \mathrm{DM}) - \ln p_\mathrm{bkg}(\log_{10}\sigma)` per star.

        Arguments:
            distmod: Each star's distance modulus under the component, ``(N,)``.
            parallax_err: Each star's parallax error (mas), positive, ``(N,)``.
        """
        dtype = distmod.dtype
        grid_d, grid_s = self.distmod.to(dtype), self.log_err.to(dtype)
        table = self.stream_log_density.to(dtype) - self.field_log_density.to(dtype).unsqueeze(0)
        col, t_s = error_grid_position(grid_s, parallax_err.to(dtype))
        t_s = t_s.unsqueeze(-1)
        d = distmod.clamp(grid_d[0], grid_d[-1])
        row = (torch.searchsorted(grid_d, d.detach().contiguous(), right=True) - 1).clamp(0, grid_d.numel() - 2)
        d0, d1 = grid_d.index_select(0, row), grid_d.index_select(0, row + 1)
        t_d = (d - d0) / (d1 - d0)
        # (N, 2): the two rows' values at the star's error, each interpolated along the error axis
        rows = torch.stack([table.index_select(0, row), table.index_select(0, row + 1)], dim=1)  # (N, 2, S)
        index = torch.stack([col, col + 1], dim=-1).unsqueeze(1).expand(-1, 2, -1)
        pair = rows.gather(-1, index)  # (N, 2, 2)
        at_err = torch.lerp(pair[..., 0], pair[..., 1], t_s)
        return torch.lerp(at_err[:, 0], at_err[:, 1], t_d)


def error_density(
    likelihood,
    relation: ErrorRelation,
    field_parallax_err: np.ndarray,
    distmod_range: tuple[float, float],
    *,
    dtype: torch.dtype = torch.float32,
) -> ErrorDensity:
    r"""The :class:`ErrorDensity` of the components sharing an isochrone likelihood.

    Arguments:
        likelihood: The components' :class:`~streammix.photometry.PhotometricLikelihood`
            (its segments, mass-function weights and magnitude limits).
        relation: How the catalogue's parallax errors follow the magnitudes, in
            the likelihood's bands and order.
        field_parallax_err: The parallax errors (mas) of the field's stars (the
            off-stream stars the background is trained on); non-finite or
            non-positive ones are left out.
        distmod_range: The distance moduli the components can take.
        dtype: The tables' dtype.

    Returns:
        The tables.

    Example:
        >>> import numpy as np
        >>> from streammix.error_relation import ErrorRelation
        >>> from streammix.isochrone import default_isochrone
        >>> from streammix.photometry import PhotometricLikelihood
        >>> like = PhotometricLikelihood(default_isochrone(), ["gaia_g"], n_nodes=100,
        ...                              magnitude_limits={"gaia_g": (12.0, 21.0)}, limit_error=0.1)
        >>> relation = ErrorRelation(-4.6, (0.22,), 0.1)
        >>> field = 10 ** np.random.default_rng(0).normal(-0.5, 0.3, 5000)
        >>> density = error_density(like, relation, field, (13.0, 17.0))
        >>> import torch
        >>> ratio = density.log_ratio(torch.tensor([15.0, 15.0]), torch.tensor([0.05, 1.0]))
        >>> bool(ratio[1] > ratio[0] + 1.0)  # a distant stream's stars are faint: large errors favour it
        True
    """
    err = np.asarray(field_parallax_err, dtype=float)
    log_field = np.log10(err[np.isfinite(err) & (err > 0)])
    if log_field.size < 10:
        raise ValueError(f"error density: {log_field.size} field stars have a parallax error; at least 10 are needed")
    if np.ptp(log_field) == 0:
        raise ValueError(f"error density: every field star has the same parallax error ({10 ** log_field[0]:g} mas)")
    low, high = float(distmod_range[0]), float(distmod_range[1])
    if not low < high:
        raise ValueError(f"error density: distance modulus range ({low}, {high}) is empty")
    grid_d = np.linspace(low, high, DISTMOD_POINTS)
    grid_s = error_grid(log_field)

    from scipy.stats import gaussian_kde  # local import: scipy.stats takes ~0.6 s to load

    field = gaussian_kde(log_field)(grid_s)
    mids, log_weight = likelihood.luminosity_nodes()
    mids, weight = mids.double().cpu().numpy(), log_weight.double().exp().cpu().numpy()  # absolute mags (K, B)
    stream = np.empty((DISTMOD_POINTS, ERROR_POINTS))
    for row, distmod in enumerate(grid_d):
        mags = mids + distmod
        w = weight * likelihood.limit_log_pass(torch.as_tensor(mags)).exp().numpy()
        total = w.sum()
        if not total > 0:
            raise ValueError(f"error density: no isochrone point passes the magnitude limits at distance modulus {distmod:.2f}")
        z = (grid_s[None, :] - relation.mean(mags)[:, None]) / relation.scatter
        stream[row] = (w / total) @ np.exp(-0.5 * z * z) / (relation.scatter * math.sqrt(2.0 * math.pi))
    return ErrorDensity(
        torch.as_tensor(grid_d, dtype=dtype),
        torch.as_tensor(grid_s, dtype=dtype),
        torch.as_tensor(np.log(np.maximum(stream, DENSITY_FLOOR)), dtype=dtype),
        torch.as_tensor(np.log(np.maximum(field, DENSITY_FLOOR)), dtype=dtype),
    )
