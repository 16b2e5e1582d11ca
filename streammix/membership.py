"""Membership probabilities and track tables from a fitted model.

A star's probability of belonging to component k is its share of the mixture,
from likelihoods only (no priors):

.. math:: P_k = \\frac{f_k p_k}{\\sum_j f_j p_j}

The table reports it under the reference fit (ensemble member 0, fitted to
all stars); its uncertainty comes from the other members (other seeds,
bootstrap resamples of the stars) and, where the networks have dropout (off
by default), from MC dropout (each dropout mask is one draw of the networks
as functions of phi1): the 5th, 50th and 95th
percentiles over all draws. (Averaging the members instead would pull every
probability towards the middle and spoil the calibration.) With
``fit.cross_fit`` there is no reference fit: member m was fitted without the
stars of fold m (:func:`~streammix.folds.fold_of`), and each star's P_k is that
of the member that held it out (with ``fit.cross_fit_folds`` fewer than the
members, member m holds out fold m mod folds and P_k is the mean over the
members that held the star's fold out), so a star's own position, motion and
photometry never pulled the tracks it is scored against (its fold did choose
that member's stopping step); the percentiles are still over every draw, three
quarters of them in-sample with four members, so ``p_<component>`` often lies
below ``_q05``.

A stream is often several components (stream, spur, cocoon, progenitor):
``p_member`` is the probability of belonging to any of the model's member
components (``model.member_components``; default every stream-like one), the
sum of their P_k, and its percentiles are taken over the draws of that sum
(not sums of the components' percentiles).
"""

from __future__ import annotations

from collections.abc import Iterator

import astropy.units as u
import numpy as np
import torch
from astropy.table import QTable
from torch import nn

from .components import FunctionDropout
from .data import StarTable
from .folds import fold_of
from .parallel import torch_threads

__all__ = ["QUANTILES", "member_components", "membership_table", "mc_dropout", "summarise_members", "tracks_table"]

QUANTILES = (0.05, 0.50, 0.95)
UNITS = {
    "phi2": u.deg,
    "phi2_width": u.deg,
    "pm_phi1_cosphi2": u.mas / u.yr,
    "pm_phi1_cosphi2_width": u.mas / u.yr,
    "pm_phi2": u.mas / u.yr,
    "pm_phi2_width": u.mas / u.yr,
    "distmod": u.mag,
    "distmod_width": u.mag,
    "parallax": u.mas,
    "phi2_slope": 1 / u.deg,
    "linear_density": 1 / u.deg,
}


class mc_dropout:
    """Context manager: switch a module's dropout on (everything else stays in eval mode).

    Example:
        >>> from streammix.components import ParameterNet, Parameter, NetworkSettings
        >>> net = ParameterNet([Parameter("a", 0, 1)], NetworkSettings(hidden=4, dropout=0.5)).eval()
        >>> with mc_dropout(net):
        ...     any(m.training for m in net.modules())
        True
        >>> any(m.training for m in net.modules())
        False
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> nn.Module:
        self.module.eval()
        for m in self.module.modules():
            if isinstance(m, FunctionDropout):
                m.train()
        return self.module

    def __exit__(self, *exc) -> None:
        self.module.eval()


def _draws(model, dropout_samples: int | None) -> Iterator[tuple[int, bool]]:
    """(member index, with dropout) for every draw of the ensemble; no dropout
    draws for networks without dropout (they would repeat the member)."""
    samples = model.config.fit.dropout_samples if dropout_samples is None else dropout_samples
    if not any(isinstance(m, FunctionDropout) for mixture in model.mixtures for m in mixture.modules()):
        samples = 0
    for i in range(len(model.mixtures)):
        yield i, False
        for _ in range(samples):
            yield i, True


def _as_stars(model, stars):
    if isinstance(stars, StarTable):
        return stars
    columns = model.config.data.column_map()
    return StarTable.from_table(stars, columns)


def member_components(config, names) -> list[str]:
    """The components whose probabilities add up to ``p_member``: the config's
    ``model.member_components``, else every one of ``names`` but the background
    and the components whose kind is not a member kind (``kind: field``).

    Example:
        >>> from streammix.config import Config
        >>> cfg = Config.from_dict({"field": {"phi1": [0, 1], "phi2": [0, 1]}})
        >>> member_components(cfg, ("stream", "spur", "background"))
        ['stream', 'spur']
        >>> cfg = Config.from_dict({"field": {"phi1": [0, 1], "phi2": [0, 1]}, "model": {"components": [
        ...     {"name": "stream"}, {"kind": "field", "name": "halo"}]}})
        >>> member_components(cfg, ("stream", "halo", "background"))
        ['stream']
    """
    chosen = config.model.member_components
    if chosen is not None:
        return list(chosen)
    outside = {c.name for c in config.model.components if not c.member}
    return [n for n in names if n != "background" and n not in outside]


PHOTOMETRIC_CHUNK = 50_000  # stars per chunk when the isochrone terms are scored


def membership_table(
    model, stars, *, dropout_samples: int | None = None, chunk_size: int = 250_000, threads: int | None = None
) -> QTable:
    """One row per star: ``source_id``, ``phi1``, ``phi2``, ``p_<component>`` and its
    ``_q05``/``_q50``/``_q95`` percentiles, plus the stars' kept columns.

    Stars are scored ``chunk_size`` at a time, at most ``PHOTOMETRIC_CHUNK`` for a
    joint model (each star's prepared isochrone terms take ~3 kB), so memory
    does not grow with the number of stars. ``threads`` CPU threads score
    them, background flows included (default: torch's setting); two threads
    score the flows 1.9 times as fast as one."""
    stars = _as_stars(model, stars)
    if model.config.model.bands:
        chunk_size = min(chunk_size, PHOTOMETRIC_CHUNK)
    names = model.component_names
    group = [names.index(c) for c in member_components(model.config, names)]
    n = len(stars)
    # the components' probabilities, then p_member (the sum over the group) in the last column
    reference = np.zeros((n, len(names) + 1))
    quant = np.zeros((len(QUANTILES), n, len(names) + 1))
    generator_state = torch.get_rng_state()
    torch.manual_seed(model.config.fit.seed)
    plan = list(_draws(model, dropout_samples))
    prune = not any(dropout for _, dropout in plan)  # see FittedModel.prepare
    threads = torch.get_num_threads() if threads is None else threads
    # cross-fitted only as fitted: every member (a model cut to fewer members scores as before)
    folds = model.config.fit.folds
    cross_fit = model.config.fit.cross_fit and len(model.mixtures) == model.config.fit.ensemble
    try:
        for start in range(0, n, chunk_size):
            chunk = stars[start : start + chunk_size]
            draws, point = [], {}
            with torch.no_grad(), torch_threads(threads):
                tensors = model.prepare(chunk, prune=prune, threads=threads)
                for i, dropout in plan:
                    mixture = model.mixtures[i]
                    if dropout:
                        with mc_dropout(mixture):
                            draws.append(_with_member(mixture.membership(tensors).cpu().numpy(), group))
                    else:
                        mixture.eval()
                        p = _with_member(mixture.membership(tensors).cpu().numpy(), group)
                        point[i] = p
                        draws.append(p)
            stop = start + len(chunk)
            if cross_fit:  # each star from the members that held it out (member i holds out fold i mod folds)
                held_by = fold_of(chunk.source_id, folds, model.config.fit.seed)
                by_member = np.stack([point[i] for i in range(len(model.mixtures))])
                holds = np.arange(len(model.mixtures))[:, None] % folds == held_by  # (members, stars)
                reference[start:stop] = np.where(holds[..., None], by_member, 0.0).sum(0) / holds.sum(0)[:, None]
            else:
                reference[start:stop] = point[0]
            # one draw (one fit, no dropout) is its own percentiles
            quant[:, start:stop] = draws[0] if len(draws) == 1 else np.quantile(np.stack(draws), QUANTILES, axis=0)
    finally:
        torch.set_rng_state(generator_state)
    table = QTable()
    table["source_id"] = stars.source_id
    table["phi1"] = stars.phi1 * u.deg
    table["phi2"] = stars.phi2 * u.deg
    for k, name in enumerate((*names, "member")):
        table[f"p_{name}"] = reference[:, k]
        for j, q in enumerate(QUANTILES):
            table[f"p_{name}_q{round(q * 100):02d}"] = quant[j, :, k]
    for col in stars.extra.colnames:
        if col not in table.colnames:
            table[col] = stars.extra[col]
    table.meta.update(
        {
            "components": list(names),
            "member_components": [names[k] for k in group],
            "ensemble": len(model.mixtures),
            "dropout_samples": model.config.fit.dropout_samples if dropout_samples is None else dropout_samples,
            "cross_fit": bool(cross_fit),
            "description": "p_k = f_k p_k / sum_j f_j p_j ("
            + ("the mean of the members that held the star's fold out" if cross_fit else "reference fit")
            + "); p_member: sum of p_k over member_components; "
            "_qNN: percentiles over the draws (ensemble and MC dropout) of each",
        }
    )
    return table


def _with_member(p: np.ndarray, group: list[int]) -> np.ndarray:
    """The (N, K) probabilities with their sum over ``group`` appended as column K."""
    return np.concatenate([p, p[:, group].sum(axis=1, keepdims=True).clip(0.0, 1.0)], axis=1)


def tracks_table(model, phi1=None, *, dropout_samples: int | None = None) -> QTable:
    """Weights, linear densities and parameters of every component on ``phi1``.

    Each quantity has a median column and ``_q05``/``_q95`` columns over the
    ensemble and its MC-dropout draws. Linear density (stars per degree) is the
    weight times the data's smoothed phi1 density. Parallax follows from the
    distance modulus: 10^((10 - DM)/5) mas, the true parallax (the catalogue's
    observed ones scatter about it plus ``data.parallax_zero_point``).
    """
    mixture0 = model.mixtures[0]
    grid = mixture0.grid.detach().cpu().numpy()
    if phi1 is None:
        phi1 = grid
    phi1 = np.asarray(u.Quantity(phi1, u.deg).value if hasattr(phi1, "unit") else phi1, dtype=np.float64)
    density = np.interp(phi1, grid, model.phi1_density)
    x = torch.as_tensor(phi1, dtype=mixture0.grid.dtype, device=mixture0.grid.device)
    samples: dict[str, list[np.ndarray]] = {}
    generator_state = torch.get_rng_state()
    torch.manual_seed(model.config.fit.seed)
    try:
        with torch.no_grad():
            for i, dropout in _draws(model, dropout_samples):
                mixture = model.mixtures[i]
                if dropout:
                    with mc_dropout(mixture):
                        out = mixture.outputs_at(x)
                else:
                    mixture.eval()
                    out = mixture.outputs_at(x)
                for k, name in enumerate(mixture.component_names):
                    w = out["weights"][:, k].cpu().numpy()
                    samples.setdefault(f"{name}_weight", []).append(w)
                    samples.setdefault(f"{name}_linear_density", []).append(w * density)
                    for pname, value in out[name].items():
                        samples.setdefault(f"{name}_{pname}", []).append(value.cpu().numpy())
                        if pname == "distmod":
                            plx = 10.0 ** ((10.0 - value.cpu().numpy()) / 5.0)
                            samples.setdefault(f"{name}_parallax", []).append(plx)
    finally:
        torch.set_rng_state(generator_state)
    declared = {  # the units the parameters declare (a profile's shape parameters among them)
        f"{comp.name}_{spec.name}": u.Unit(spec.unit) for comp in mixture0.components for spec in comp.parameter_specs
    }
    table = QTable()
    table["phi1"] = phi1 * u.deg
    for key, values in samples.items():
        q05, q50, q95 = np.quantile(np.stack(values), QUANTILES, axis=0)
        unit = declared.get(key) or _unit_of(key)
        table[key] = q50 * unit
        table[f"{key}_q05"] = q05 * unit
        table[f"{key}_q95"] = q95 * unit
    table.meta["description"] = "medians and 5th/95th percentiles over the ensemble and MC-dropout draws"
    return table


def _unit_of(key: str):
    for suffix in sorted(UNITS, key=len, reverse=True):
        if key.endswith("_" + suffix):
            return UNITS[suffix]
    return u.dimensionless_unscaled


def summarise_members(table: QTable, component: str = "member", thresholds=(0.5, 0.8)) -> dict[str, int]:
    """Number of stars with ``p_<component>`` above each threshold (default
    ``p_member``, the stream's components together).

    Example:
        >>> from astropy.table import QTable
        >>> summarise_members(QTable({"p_member": [0.1, 0.6, 0.9]}))
        {'p>0.5': 2, 'p>0.8': 1}
    """
    p = np.asarray(table[f"p_{component}"])
    return {f"p>{t}": int(np.sum(p > t)) for t in thresholds}
