"""Residuals of the data against a fitted model's prediction, in the sky and the CMD.

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

The same check in the colour-magnitude diagram (:func:`cmd_residuals`, joint
models with two bands): the stars whose astrometry favours the stream, and
where they lie in the CMD against the model's prediction given their phi1 and
astrometry (the isochrone for the stream-like components, the background
flows' density of the magnitudes given the astrometry for the background).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from astropy.table import Table

from .error_relation import ErrorRelation, fit_error_relation
from .errors import InputError
from .fit import config_tensors
from .membership import member_components
from .photometry import photometry_tensors

__all__ = ["Residuals", "cmd_residuals", "position_residuals"]

ERROR_STEP = 0.02
"""Relative step of the effective magnitude errors within which the CMD residuals
predict stars with one error. The isochrone term sees a star's error only through
sqrt(error^2 + colour_spread^2 / 2), so stars are grouped on that; a star's own is
at most 2 % off, far below what the counts can see (on the GD-1 joint model the
expected counts, up to ~10 per bin, moved by at most 0.027 against a prediction at
each star's own errors; ``benchmarks/residuals_time.py``, RESULTS.md session 18)."""

SHARE_FLOOR = 1e-9
"""Astrometric share of a component below which the CMD residuals leave its isochrone
term out of a star's prediction (the spur far from its phi1 range): a term of at most
this weight in the star's unnormalised density over the grid."""


@dataclass
class Residuals:
    """Observed and predicted counts of the selected stars on a 2-D grid.

    Arguments:
        x_name: The first axis, e.g. ``"phi1"`` or a colour ``"ps1_g - ps1_i"``.
        y_name: The second axis, e.g. ``"phi2"`` or a band.
        x_edges: Bin edges along x.
        y_edges: Bin edges along y.
        observed: Observed counts, shape ``(n_x, n_y)``.
        expected: The model's expected counts, same shape.
        threshold: The membership probability (from the other coordinates) above
            which stars were selected.
        n_selected: The number of selected stars.
        unit: The unit of both axes (``"deg"`` or ``"mag"``).
        error_relation: The relation of parallax errors to magnitudes the
            expected counts were conditioned on (CMD residuals), or None.

    Example:
        >>> import numpy as np
        >>> r = Residuals("phi1", "phi2", np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0]),
        ...               np.array([[4.0], [16.0]]), np.array([[4.0], [4.0]]), 0.5, 20)
        >>> r.significance[:, 0].tolist()
        [0.0, 6.0]
        >>> round(r.region_significance((1.0, 2.0), (0.0, 1.0)), 3)
        6.0
    """

    x_name: str
    y_name: str
    x_edges: np.ndarray
    y_edges: np.ndarray
    observed: np.ndarray
    expected: np.ndarray
    threshold: float
    n_selected: int
    unit: str = "deg"
    error_relation: ErrorRelation | None = None

    @property
    def significance(self) -> np.ndarray:
        """(observed - expected) / sqrt(expected) per bin (expected floored at 0.5
        star, so empty bins of the model do not divide by zero)."""
        return (self.observed - self.expected) / np.sqrt(np.maximum(self.expected, 0.5))

    def region_significance(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> float:
        """The excess of the bins whose centres lie in a region, in units of its
        counting error: (sum observed - sum expected) / sqrt(sum expected)."""
        c1 = 0.5 * (self.x_edges[1:] + self.x_edges[:-1])
        c2 = 0.5 * (self.y_edges[1:] + self.y_edges[:-1])
        inside = ((c1 >= x_range[0]) & (c1 <= x_range[1]))[:, None] & (
            (c2 >= y_range[0]) & (c2 <= y_range[1])
        )[None, :]
        if not inside.any():
            raise InputError(f"residual region {self.x_name} {x_range}, {self.y_name} {y_range}: no bin centre inside")
        o, e = self.observed[inside].sum(), self.expected[inside].sum()
        return float((o - e) / np.sqrt(max(e, 0.5)))

    def to_table(self) -> Table:
        """One row per bin: centres, observed, expected and significance."""
        c1 = 0.5 * (self.x_edges[1:] + self.x_edges[:-1])
        c2 = 0.5 * (self.y_edges[1:] + self.y_edges[:-1])
        g1, g2 = np.meshgrid(c1, c2, indexing="ij")
        table = Table(
            {
                self.x_name: g1.ravel(),
                self.y_name: g2.ravel(),
                "observed": self.observed.ravel(),
                "expected": self.expected.ravel(),
                "significance": self.significance.ravel(),
            }
        )
        table[self.x_name].unit = table[self.y_name].unit = self.unit
        table.meta.update(
            {
                "threshold": self.threshold,
                "n_selected": self.n_selected,
                "x_step": float(np.diff(self.x_edges)[0]),
                "y_step": float(np.diff(self.y_edges)[0]),
                "description": "the stars whose other coordinates give a membership probability above the "
                "threshold, observed and expected per bin; significance = (observed - expected) / sqrt(expected)",
            }
        )
        if self.error_relation is not None:
            relation = self.error_relation
            table.meta["error_relation"] = {
                "description": "expected counts given each star's parallax error: log10(parallax_err / mas) = "
                "intercept + slopes . magnitudes, Gaussian scatter (dex)",
                "intercept": relation.intercept,
                "slopes": list(relation.slopes),
                "scatter": relation.scatter,
            }
        return table


def position_residuals(
    model,
    stars,
    *,
    threshold: float = 0.5,
    phi1_step: float = 2.0,
    phi2_step: float = 0.25,
    components: list[str] | None = None,
) -> Residuals:
    """The (phi1, phi2) residuals of ``stars`` against a fitted model (its first
    member, also with ``fit.cross_fit``, where that member did not see one fold
    of the stars).

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
    config = model.config
    if "phi2" not in config.model.coordinates:
        raise InputError("residuals: the model does not use phi2, so it predicts no positions")
    group = _group(model, threshold, components)
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
    return Residuals("phi1", "phi2", phi1_edges, phi2_edges, observed, expected, threshold, int(len(index)))


def _group(model, threshold: float, components: list[str] | None) -> list[int]:
    """The indices of the selecting components, after checking the request."""
    if not 0.0 < threshold < 1.0:
        raise InputError(f"residuals: threshold {threshold} must lie between 0 and 1")
    names = model.component_names
    chosen = components if components is not None else member_components(model.config, names)
    unknown = [c for c in chosen if c not in names or c == "background"]
    if unknown:
        raise InputError(f"residuals: components {unknown} are not stream-like components of the model {names[:-1]}")
    return [names.index(c) for c in chosen]


def cmd_residuals(
    model,
    stars,
    *,
    threshold: float = 0.5,
    colour_step: float = 0.1,
    magnitude_step: float = 0.25,
    subsample: int = 2,
    components: list[str] | None = None,
    chunk_size: int = 25_000,
    errors_given: bool = True,
) -> Residuals:
    """The colour-magnitude residuals of ``stars`` against a joint model with two bands.

    The stars with both bands whose astrometry (phi2 included) gives a
    membership probability above ``threshold`` are binned in (b1 - b2, b1);
    each one's expected distribution over the bins is
    sum_k r_k p_k(b1, b2 | phi1, astrometry), with r_k its astrometric share of
    component k: the isochrone term at the component's distance modulus for the
    stream-like ones, the background flows' density of the magnitudes given the
    astrometry for the background. Each bin's density is averaged over
    ``subsample`` x ``subsample`` points, and each star's expected distribution
    is normalised over the grid (which spans the data). The isochrone term is
    the fast path's (:meth:`~streammix.photometry.PhotometricLikelihood.log_prob_prepared`,
    the likelihood the fit trains on; within 2.5e-3 in log density of the reference).

    **Given the errors.** The selection rests on the astrometry, whose errors
    are set by the magnitudes: a star selected for its small errors is a
    bright one. The model treats the errors as given, which leaves the
    memberships exact when the errors depend on the magnitudes alone (the
    relation cancels between the components), but each selected star's
    magnitudes must then be predicted given its error: with ``errors_given``
    (default) its distribution is sum_k r_k p_k(b1, b2) times
    q(parallax error | b1, b2), the catalogue's relation of errors to
    magnitudes fitted to every star with both bands
    (:func:`~streammix.error_relation.fit_error_relation`), normalised over
    the grid. Without it, the faint stars that astrometry cannot select are
    predicted as often as the isochrone's luminosity function makes them, and
    the bright ones too rarely (on GD-1, up to +12 σ at the turn-off and the
    faint main sequence missing). A field with fewer than
    :data:`~streammix.error_relation.MIN_STARS` stars with both bands and a
    parallax error is predicted without the errors (``error_relation`` None).

    Arguments:
        model: A fitted joint :class:`~streammix.fit.FittedModel` with two bands.
        stars: The stars (a :class:`~streammix.data.StarTable`).
        threshold: The astrometric membership probability above which stars are selected.
        colour_step: Bin width in colour (mag).
        magnitude_step: Bin width in magnitude (mag).
        subsample: Points per bin and axis at which the densities are evaluated.
        components: The components whose probabilities select (default: the member components).
        chunk_size: Grid evaluations per call of the flows and the isochrone term (the default
            was faster than 100,000 in every run on GD-1's joint model, ``benchmarks/residuals_time.py
            --chunk-size``; benchmarks/RESULTS.md, session 38).
        errors_given: Predict each star's magnitudes given its parallax error (above);
            a star without one is predicted without.
    """
    config = model.config
    bands = list(config.model.bands)
    if len(bands) != 2:
        raise InputError(f"CMD residuals: the model has bands {bands}; they need a joint model with exactly two")
    group = _group(model, threshold, components)
    mixture = model.mixtures[0].eval()
    outliers = mixture.outlier_fraction  # the field's magnitudes for that share of the isochrone components' stars
    astrometric_logp = model.background.log_prob(stars, exclude=bands) if model.background is not None else None
    tensors = config_tensors(config, stars, astrometric_logp, mixture=mixture, photometry=False)
    tensors = tensors.astrometry_only(tensors.background_logp)
    observed_both = stars.observed[bands[0]] & stars.observed[bands[1]]
    with torch.no_grad():
        share = torch.softmax(mixture.log_joint(tensors), dim=-1).double().numpy()
    selected = np.nonzero((share[:, group].sum(-1) > threshold) & observed_both)[0]
    b1_all, b2_all = stars.mags[bands[0]], stars.mags[bands[1]]
    both = observed_both
    colour_all, magnitude_all = b1_all[both] - b2_all[both], b1_all[both]
    c_lo, c_hi = np.percentile(colour_all, [0.5, 99.5])
    m_lo, m_hi = np.min(magnitude_all), np.max(magnitude_all)
    colour_edges = _edges(np.floor(c_lo / colour_step) * colour_step, np.ceil(c_hi / colour_step) * colour_step, colour_step)
    magnitude_edges = _edges(
        np.floor(m_lo / magnitude_step) * magnitude_step, np.ceil(m_hi / magnitude_step) * magnitude_step, magnitude_step
    )
    # evaluation points: subsample x subsample per bin, and the bin each belongs to
    fc = (np.arange(subsample) + 0.5) / subsample
    cx = (colour_edges[:-1, None] + np.diff(colour_edges)[:, None] * fc).ravel()
    my = (magnitude_edges[:-1, None] + np.diff(magnitude_edges)[:, None] * fc).ravel()
    grid_c, grid_m = np.meshgrid(cx, my, indexing="ij")
    grid_c, grid_m = grid_c.ravel(), grid_m.ravel()
    n_points = grid_c.size
    n_bins = (len(colour_edges) - 1, len(magnitude_edges) - 1)
    point_bin = (np.arange(n_points) // (len(my) * subsample)) * n_bins[1] + (np.arange(n_points) % len(my)) // subsample
    expected = np.zeros(n_bins[0] * n_bins[1])
    dtype = mixture.grid.dtype
    outputs = mixture.outputs_at(torch.as_tensor(stars.phi1[selected], dtype=dtype))
    photometric = [(k, comp) for k, comp in enumerate(mixture.components) if comp.photometry is not None]
    # The isochrone term at the grid points by the fast path (the likelihood the fit trained on,
    # PhotometricLikelihood.prepare / log_prob_prepared): what does not depend on the distance is
    # prepared once for the grid per distinct (errors, extinction) among the selected stars (one
    # group when the catalogue gives none), and each star only evaluates the segments its grid
    # points can reach; the reference path evaluated every segment at every point of every star.
    errors = np.stack([stars.mag_errs[b][selected] for b in bands], axis=1)
    extinction = np.stack([stars.extinction[b][selected] if b in stars.extinction else np.zeros(len(selected))
                           for b in bands], axis=1)  # fmt: skip
    # Effective errors (what each likelihood sees: error^2 + colour_spread^2 / 2) rounded into bins
    # of a factor 1 + ERROR_STEP in log (a group's within that factor of its first star's, which
    # stands for them): a catalogue with an error per star would otherwise prepare the grid once per
    # star. The selected stars have both bands, so finite errors.
    by_likelihood = {id(comp.photometry): comp.photometry for _, comp in photometric}
    squared = np.nan_to_num(errors, nan=0.0) ** 2
    effective = [np.sqrt(squared + 0.5 * like.colour_spread**2) for like in by_likelihood.values()] or [np.sqrt(squared)]
    error_key = np.round(np.log(np.maximum(np.concatenate(effective, axis=1), 1e-6)) / np.log1p(ERROR_STEP))
    _, group_of = np.unique(np.concatenate([error_key, np.nan_to_num(extinction, nan=-1.0)], axis=1), axis=0, return_inverse=True)
    group_of = group_of.reshape(-1)
    per_chunk = max(1, chunk_size // n_points)
    grid_mags = np.stack([grid_m, grid_m - grid_c], axis=1)
    relation = None
    if errors_given:
        try:
            relation = fit_error_relation(
                np.where(stars.observed["parallax"], stars.parallax_err, np.nan), np.stack([b1_all, b2_all], axis=1)
            )
        except InputError:  # too few stars with both bands and a parallax error: predicted without the errors
            relation = None
    if relation is not None:
        plx_err = stars.parallax_err[selected]
        has_err = stars.observed["parallax"][selected] & np.isfinite(plx_err) & (plx_err > 0)
        log_err = np.log10(np.where(has_err, plx_err, 1.0))
    for group in np.unique(group_of):
        positions = np.nonzero(group_of == group)[0]  # in ``selected``
        grid_stars = photometry_tensors(
            grid_mags, np.tile(errors[positions[0]], (n_points, 1)), np.tile(extinction[positions[0]], (n_points, 1)),
            dtype=dtype,
        )
        # components sharing one likelihood (the fit builds one for all of them) share its preparation
        prepared_once = {key: like.prepare(grid_stars, dtype=dtype) for key, like in by_likelihood.items()}
        prepared_grid = {k: prepared_once[id(comp.photometry)] for k, comp in photometric}
        for start in range(0, len(positions), per_chunk):
            at = positions[start : start + per_chunk]
            rows = selected[at]
            density = np.zeros((len(rows), n_points))
            field = None
            if model.background is not None:
                repeat = np.repeat(rows, n_points)
                fake = stars[repeat]
                b1 = np.tile(grid_m, len(rows))
                fake = replace(
                    fake,
                    mags={bands[0]: b1, bands[1]: b1 - np.tile(grid_c, len(rows))},
                    mag_errs={b: fake.mag_errs[b] for b in bands},
                    extinction={b: fake.extinction[b] for b in bands if b in fake.extinction},
                    source_id=np.arange(len(repeat)),
                )
                log_bg = model.background.conditional_log_prob(fake, bands)  # the astrometric blocks cancel
                field = np.exp(log_bg.reshape(len(rows), n_points))
                density += share[rows, -1, None] * field
            for k, comp in photometric:
                # a component with a negligible share of a star (the spur far from its phi1 range)
                # adds nothing that the counts could see to its prediction
                keep = np.nonzero(share[rows, k] > SHARE_FLOOR)[0]
                if len(keep) == 0:
                    continue
                index = torch.as_tensor(at[keep])
                tile = torch.arange(n_points).repeat(len(keep))
                distmod = outputs[comp.name]["distmod"].index_select(0, index).repeat_interleave(n_points)
                width = outputs[comp.name]["distmod_width"].index_select(0, index).repeat_interleave(n_points)
                with torch.no_grad():
                    logp = comp.photometry.log_prob_prepared(distmod, width, prepared_grid[k].subset(tile))
                magnitude_density = np.exp(logp.double().numpy().reshape(len(keep), n_points))
                if outliers > 0:  # the share of the component's stars with the field's magnitudes
                    magnitude_density = (1.0 - outliers) * magnitude_density + outliers * field[keep]
                density[keep] += share[rows[keep], k, None] * magnitude_density
            if relation is not None:  # q(e | magnitudes) at the grid points (its constant cancels below)
                log_q = relation.log_density(log_err[at, None], grid_mags)
                density *= np.where(has_err[at, None], np.exp(log_q - log_q.max(axis=1, keepdims=True)), 1.0)
            density /= np.maximum(density.sum(axis=1, keepdims=True), 1e-300)  # each star's distribution over the grid
            np.add.at(expected, point_bin, density.sum(axis=0))
    colour = b1_all[selected] - b2_all[selected]
    observed, _, _ = np.histogram2d(colour, b1_all[selected], bins=[colour_edges, magnitude_edges])
    return Residuals(
        f"{bands[0]} - {bands[1]}", bands[0], colour_edges, magnitude_edges, observed,
        expected.reshape(n_bins), threshold, int(len(selected)), unit="mag", error_relation=relation,
    )  # fmt: skip


def _edges(low: float, high: float, step: float) -> np.ndarray:
    """Bin edges from ``low`` to ``high`` of about ``step`` each (a whole number of bins)."""
    if not step > 0:
        raise InputError(f"residuals: bin width {step} must be positive")
    n = max(1, int(round((high - low) / step)))
    return np.linspace(low, high, n + 1)
