r"""Which stars have photometry depends on how bright they are: the term that brings into the stream.

A joint model's background has a photometric flow trained on the stars that
*have* magnitudes, so its density of a star's magnitudes already carries the
probability :math:`c` that a star of those magnitudes has them; a stream-like
component's isochrone does not: its luminosity function is that of every
star. Where :math:`c` depends on brightness (in the GD-1 file, 35 % of the
stars with parallax errors below 0.2 mas have PS1 magnitudes, 94 % of those
above 1.3 mas: ``python benchmarks/error_density.py``), the stream's faint
stars with magnitudes are then under-weighted against its bright ones, and
against its stars without magnitudes, which share its weights. With the
parallax error :math:`\sigma` standing in for brightness, a star with
magnitudes has each stream-like density multiplied by

.. math::

    \frac{c(\sigma)}{\bar c} = \frac{p_\mathrm{bkg}(\log_{10}\sigma \mid \mathrm{photometry})}
        {p_\mathrm{bkg}(\log_{10}\sigma)},

:math:`c(\sigma)` the share of the field's stars with magnitudes at that error
(a Gaussian kernel regression, with the bandwidth of a kernel density
estimate of the field's errors) and :math:`\bar c` their share overall; the
background's is 1. For a star without magnitudes the probability of lacking
them, :math:`1 - c`, multiplies every component's density alike and cancels.
Derivation: the background's density of a star with magnitudes :math:`m` is
:math:`\bar c\, p_\mathrm{bkg}(m \mid \mathrm{photometry}) = c(m)\, p_\mathrm{bkg}(m)`;
the stream's is :math:`c(m)\, p_\mathrm{LF}(m)`; dividing both by
:math:`\bar c\, p_\mathrm{bkg}(m \mid \mathrm{photometry})` leaves the flow's
density for the background and the isochrone's times :math:`c / \bar c` for
the stream.

It is applied in one of two forms. With ``model.error_density`` it is
:math:`c / \bar c` as above: together they make the mixture a density of the
stars' data *and* of which of them have magnitudes, each star divided by a
constant that does not depend on the model. Beside the learned error weights
(``model.photometry_share``), which model the stars without magnitudes given
their pattern, each pattern's mixture must be a density of its own stars: the
stream's density of a star with magnitudes is then its luminosity function
among the stars that have them, :math:`p_\mathrm{LF}(m)\, c(m) /
E_\mathrm{LF}[c]`, so the term is

.. math::

    \frac{c(\sigma)}{E_\mathrm{LF}[c](\mathrm{DM})},

:math:`E_\mathrm{LF}[c]` the share's mean over the component's luminosity
function at its distance modulus, through the catalogue's error-magnitude
relation (the density of :mod:`streammix.error_density`; :func:`normalised`).
Without that mean, :math:`c / \bar c` (above 1 on average over GD-1's faint
stars) gave the mixture of the stars with magnitudes a mass above 1, which a
fit and a held-out likelihood both reward (benchmarks/RESULTS.md, session 23).

Approximations: whether a star has photometry depends on its brightness
alone, read off its parallax error (not on the component, nor on phi1); a
star with magnitudes but no parallax takes no term; "with magnitudes" is any
of the model's bands; the mean :math:`E_\mathrm{LF}[c]` is over the
luminosity function without the component's distance spread and the
isochrone's colour spread (as :mod:`streammix.error_density`'s), and the
share is read off the parallax error rather than the magnitudes, so the term
keeps the mass of the stream's stars with magnitudes at 1 on average over its
luminosity function, through the error relation's scatter.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .error_density import DISTMOD_POINTS, ERROR_POINTS, ErrorDensity, error_grid, error_grid_position

__all__ = ["PhotometryShare", "normalised", "photometry_share"]

#: The share of stars with magnitudes is floored at this (an error at which the field has almost none).
SHARE_FLOOR = 1e-3


class PhotometryShare(nn.Module):
    r""":math:`\ln c(\sigma) - \ln \bar c` on a grid of the log parallax error, less
    :math:`\ln E_\mathrm{LF}[c](\mathrm{DM}) - \ln \bar c` on a grid of the distance
    modulus where it is normalised (see the module).

    Buffers on fixed grids (a saved model loads them into a placeholder of the
    same shapes); interpolated linearly in the log error and the distance
    modulus and held beyond the grids.

    Arguments:
        log_err: The grid of :math:`\log_{10}` parallax errors (mas), increasing and evenly spaced, ``(S,)``.
        log_ratio: :math:`\ln c - \ln \bar c` on it, ``(S,)``.
        distmod: The grid of distance moduli, increasing, ``(D,)`` (None: not normalised,
            a table of zeros).
        log_norm: :math:`\ln E_\mathrm{LF}[c] - \ln \bar c` on it, ``(D,)``.

    Example:
        >>> import torch
        >>> share = PhotometryShare(torch.tensor([-1.0, 0.0]), torch.log(torch.tensor([0.5, 2.0])))
        >>> share.log_share(torch.tensor([10 ** -0.5, 10.0])).exp().round(decimals=3).tolist()  # between, beyond
        [1.0, 2.0]
        >>> norm = PhotometryShare(share.log_err, share.log_ratio, torch.tensor([14.0, 15.0]), torch.log(torch.tensor([1.0, 2.0])))
        >>> norm.log_share(torch.tensor([10.0]), distmod=torch.tensor([15.0])).exp().round(decimals=3).tolist()
        [1.0]
    """

    log_err: Tensor
    log_ratio: Tensor
    distmod: Tensor
    log_norm: Tensor

    def __init__(self, log_err: Tensor, log_ratio: Tensor, distmod: Tensor | None = None, log_norm: Tensor | None = None):
        super().__init__()
        if log_err.ndim != 1 or log_err.shape != log_ratio.shape or log_err.numel() < 2:
            raise ValueError("photometry share: the grid and the table must be 1-D, of one length, at least 2")
        if (distmod is None) != (log_norm is None):
            raise ValueError("photometry share: a normaliser needs both its distance moduli and its values")
        if distmod is None:
            distmod = torch.linspace(0.0, 1.0, DISTMOD_POINTS, dtype=log_ratio.dtype)
            log_norm = torch.zeros(DISTMOD_POINTS, dtype=log_ratio.dtype)
        if distmod.ndim != 1 or distmod.shape != log_norm.shape or distmod.numel() < 2:
            raise ValueError("photometry share: the normaliser's grid and values must be 1-D, of one length, at least 2")
        self.register_buffer("log_err", log_err.clone())
        self.register_buffer("log_ratio", log_ratio.clone())
        self.register_buffer("distmod", distmod.clone())
        self.register_buffer("log_norm", log_norm.clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a model saved before the normaliser (session 24) has none: a zero one, the c / c-bar it computed
        if prefix + "log_ratio" in state_dict and prefix + "log_norm" not in state_dict:
            dtype = state_dict[prefix + "log_ratio"].dtype
            state_dict[prefix + "distmod"] = torch.linspace(0.0, 1.0, DISTMOD_POINTS, dtype=dtype)
            state_dict[prefix + "log_norm"] = torch.zeros(DISTMOD_POINTS, dtype=dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def placeholder(cls, dtype: torch.dtype = torch.float64) -> PhotometryShare:
        """Tables of the right shapes to load a saved model's into."""
        return cls(torch.linspace(0.0, 1.0, ERROR_POINTS, dtype=dtype), torch.zeros(ERROR_POINTS, dtype=dtype))

    def log_share(self, parallax_err: Tensor, distmod: Tensor | None = None) -> Tensor:
        r""":math:`\ln c(\sigma) - \ln \bar c` per star, less the normaliser at the
        star's ``distmod`` where given, in ``parallax_err``'s dtype.

        Arguments:
            parallax_err: Each star's parallax error (mas), positive, ``(N,)``.
            distmod: Each star's distance modulus under the component, ``(N,)``, or None.
        """
        dtype = parallax_err.dtype
        table = self.log_ratio.to(dtype)
        # NaN errors (stars without a parallax, which the mixture masks) read the table at 1 mas
        col, frac = error_grid_position(self.log_err.to(dtype), torch.nan_to_num(parallax_err, nan=1.0))
        value = torch.lerp(table.index_select(0, col), table.index_select(0, col + 1), frac)
        if distmod is None:
            return value
        grid, norm = self.distmod.to(dtype), self.log_norm.to(dtype)
        d = distmod.to(dtype).clamp(grid[0], grid[-1])
        row = (torch.searchsorted(grid, d.detach().contiguous(), right=True) - 1).clamp(0, grid.numel() - 2)
        d0, d1 = grid.index_select(0, row), grid.index_select(0, row + 1)
        return value - torch.lerp(norm.index_select(0, row), norm.index_select(0, row + 1), (d - d0) / (d1 - d0))


def photometry_share(
    field_parallax_err: np.ndarray, field_has_magnitudes: np.ndarray, *, dtype: torch.dtype = torch.float32
) -> PhotometryShare:
    r"""The :class:`PhotometryShare` of a field's stars.

    Arguments:
        field_parallax_err: The parallax errors (mas) of the field's stars (the
            off-stream stars the background is trained on); non-finite or
            non-positive ones are left out.
        field_has_magnitudes: Which of them have the model's magnitudes (bool, the same shape).
        dtype: The table's dtype.

    Returns:
        The table, on a grid from 0.3 dex below the smallest error to 0.3 dex above the largest.

    Example:
        >>> import numpy as np, torch
        >>> rng = np.random.default_rng(0)
        >>> err = 10 ** rng.normal(-0.4, 0.3, 20_000)
        >>> has = rng.uniform(size=err.size) < np.clip(np.log10(err) + 0.9, 0.05, 0.95)  # the faint have them
        >>> share = photometry_share(err, has)
        >>> bool(share.log_share(torch.tensor([1.0])) > share.log_share(torch.tensor([0.1])) + 1.5)
        True
    """
    err = np.asarray(field_parallax_err, dtype=float)
    has = np.asarray(field_has_magnitudes, dtype=bool)
    if has.shape != err.shape:
        raise ValueError(f"photometry share: {has.size} photometry flags for {err.size} field stars")
    usable = np.isfinite(err) & (err > 0)
    log_err, has = np.log10(err[usable]), has[usable]
    if log_err.size < 10:
        raise ValueError(f"photometry share: {log_err.size} field stars have a parallax error; at least 10 are needed")
    if np.ptp(log_err) == 0:
        raise ValueError(f"photometry share: every field star has the same parallax error ({10 ** log_err[0]:g} mas)")
    if not has.any():
        raise ValueError("photometry share: no field star has the model's magnitudes")

    from scipy.stats import gaussian_kde  # local import: scipy.stats takes ~0.6 s to load

    bandwidth = float(np.sqrt(gaussian_kde(log_err).covariance[0, 0]))
    grid = error_grid(log_err)  # the error density's grid
    # the stars binned finely first (bins 1/20 of the bandwidth), so that the cost does not grow with the field
    edges = np.linspace(log_err.min(), log_err.max() + 1e-9, max(2, int(np.ptp(log_err) / (0.05 * bandwidth)) + 2))
    every, _ = np.histogram(log_err, edges)
    with_mags, _ = np.histogram(log_err[has], edges)
    z = (grid[:, None] - 0.5 * (edges[1:] + edges[:-1])[None, :]) / bandwidth
    kernel = np.exp(-0.5 * z * z)
    share = (kernel @ with_mags) / np.maximum(kernel @ every, 1e-300)
    ratio = np.log(np.clip(share, SHARE_FLOOR, 1.0)) - math.log(has.mean())
    return PhotometryShare(torch.as_tensor(grid, dtype=dtype), torch.as_tensor(ratio, dtype=dtype))


def normalised(share: PhotometryShare, density: ErrorDensity) -> PhotometryShare:
    r"""``share`` with its normaliser: :math:`\ln E_\mathrm{LF}[c](\mathrm{DM}) - \ln \bar c`,
    the share's mean over the density of the log parallax error under a component
    with an isochrone (``density``'s luminosity function through the error
    relation) at each of ``density``'s distance moduli.

    Arguments:
        share: The field's share (:func:`photometry_share`).
        density: The components' :class:`~streammix.error_density.ErrorDensity`.

    Example:
        >>> import torch
        >>> from streammix.error_density import ErrorDensity
        >>> grid = torch.linspace(-1.0, 0.0, 11, dtype=torch.float64)
        >>> share = PhotometryShare(grid, torch.log(torch.where(grid < -0.5, 0.5, 1.5)))
        >>> lf = torch.log(torch.stack([torch.where(grid < -0.5, 1.0, 1e-9), torch.where(grid < -0.5, 1e-9, 1.0)]))
        >>> density = ErrorDensity(torch.tensor([14.0, 15.0], dtype=torch.float64), grid, lf, torch.zeros(11, dtype=torch.float64))
        >>> normalised(share, density).log_norm.exp().round(decimals=3).tolist()  # all bright, all faint
        [0.5, 1.5]
    """
    grid = density.log_err.to(share.log_ratio.dtype)
    ratio = share.log_share(10.0**grid)
    stream = density.stream_log_density.to(ratio.dtype)  # (D, S), each row a density on the even grid
    log_norm = torch.logsumexp(stream + ratio.unsqueeze(0), dim=-1) - torch.logsumexp(stream, dim=-1)
    return PhotometryShare(share.log_err, share.log_ratio, density.distmod.to(ratio.dtype), log_norm)
