"""Model comparison by held-out likelihood: K-fold cross-validation of configs.

A mock drawn from the model's own family cannot show that a model is wrong for
a real field; the held-out log-likelihood can. :func:`compare` splits the
stars into the same ``K`` folds for every config (by source_id, whatever the
row order), fits each config on ``K - 1`` folds (background flows included)
and scores the held-out fold with the fitted mixture. Every star is held out
once, so each config gets one held-out log-likelihood per star, and two
configs are compared star by star: the paired difference has a far smaller
error than the difference of the two means.

The paired standard error holds the sampling of the stars, not the fit's own
randomness (initialisation, mini-batches): on the GD-1 field two single fits of
the joint config of session 17 with other seeds differed by about 100 nats in
total, and session 28's configs gave spreads of 12-24 nats with two fits per
fold (benchmarks/RESULTS.md); it depends on the config. With
``repeats`` R > 1 each config is fitted R times per fold with other fit seeds
(the same R seeds for configs sharing ``fit.seed`` and the ensemble's size);
the per-star log-likelihood is the mean over the repeats, and the spread of
the paired difference over the repeats adds its error of the mean to the
difference's error.

Configs that model different bands (an astrometric and a joint model) are
compared on what they share: a joint model is then scored on the astrometry
alone (its components without their isochrone terms, against the background
flows' astrometric marginal), i.e. on the same coordinates as the other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from astropy.table import QTable, Table

from .config import Config
from .errors import InputError
from .fit import config_tensors, fit, load_stars

__all__ = ["ComparisonResult", "compare", "fold_labels", "with_ensemble"]


def fold_labels(source_id: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0 .. ``folds`` - 1) of each star: a seeded shuffle of the stars
    ordered by ``source_id``, dealt round-robin, so the same stars land in the
    same folds whatever their row order or the config.

    Example:
        >>> import numpy as np
        >>> ids = np.arange(10, 0, -1)
        >>> a = fold_labels(ids, 3, seed=1)
        >>> b = fold_labels(ids[::-1], 3, seed=1)[::-1]
        >>> bool((a == b).all()), np.bincount(a).tolist()
        (True, [4, 3, 3])
    """
    if folds < 2:
        raise InputError(f"folds: {folds}; held-out comparison needs at least 2")
    source_id = np.asarray(source_id)
    if len(np.unique(source_id)) != len(source_id):
        raise InputError("column 'source_id': values repeat; folds are assigned by source_id")
    order = np.argsort(source_id, kind="stable")
    shuffled = np.random.default_rng(seed).permutation(len(source_id))
    labels = np.empty(len(source_id), dtype=np.int64)
    labels[order[shuffled]] = np.arange(len(source_id)) % folds
    return labels


@dataclass
class ComparisonResult:
    """Held-out log-likelihoods of several configs on the same stars.

    Arguments:
        names: The configs' names, in the order given.
        source_id: The stars.
        fold: Each star's fold.
        log_likelihood: ``(n_configs, n_stars)`` held-out log-likelihood per star (nats).
        scored_on: Per config, the coordinates and bands it was scored on.
        seconds: Per config, the time of its ``K`` fits and scoring (all repeats).
        repeat_totals: ``(n_configs, R)`` total held-out log-likelihood of each
            repeat (fit seed), whose mean over repeats ``log_likelihood`` holds
            star by star (None: one fit per fold, the fit's spread not measured).
    """

    names: list[str]
    source_id: np.ndarray
    fold: np.ndarray
    log_likelihood: np.ndarray
    scored_on: list[list[str]]
    seconds: list[float] = field(default_factory=list)
    repeat_totals: np.ndarray | None = None

    def summary(self, baseline: int = 0) -> QTable:
        """One row per config: the mean held-out log-likelihood per star and its
        standard error, the total, and the paired difference from config
        ``baseline`` (per star and in total) with its standard error.

        The difference's error is that of the stars' sampling
        (``delta_total_star_err``) and, with repeats, the error of the mean
        over the repeats of the paired total difference
        (``delta_total_fit_err``: its standard deviation over the R repeats
        over sqrt(R); NaN with one repeat), added in quadrature. The sum is
        a conservative error: a star's own noise from fit to fit is in both
        parts. With R of 2 or 3 the fits' part rests on one or two degrees
        of freedom and is itself uncertain.

        Example:
            >>> import numpy as np
            >>> r = ComparisonResult(["a", "b"], np.arange(4), np.array([0, 1, 0, 1]),
            ...                      np.array([[-1.0, -2.0, -1.0, -2.0], [-0.5, -2.0, -0.5, -1.5]]), [["phi2"]] * 2)
            >>> t = r.summary()
            >>> [round(float(x), 3) for x in t["delta_total"]]
            [0.0, 1.5]
            >>> r.repeat_totals = np.array([[-6.0, -6.0], [-5.0, -4.0]])  # two fit seeds each
            >>> round(float(t["delta_total_err"][1]), 3), round(float(r.summary()["delta_total_err"][1]), 3)
            (0.5, 0.707)
        """
        ll = self.log_likelihood
        n = ll.shape[1]
        totals = self.repeat_totals
        repeats = 1 if totals is None else int(totals.shape[1])
        rows = []
        for j, name in enumerate(self.names):
            d = ll[j] - ll[baseline]
            star_err = float(d.std(ddof=1) * math.sqrt(n)) if j != baseline else 0.0
            if j == baseline:
                fit_err = 0.0
            elif repeats > 1:
                fit_err = float(np.std(totals[j] - totals[baseline], ddof=1) / math.sqrt(repeats))
            else:
                fit_err = math.nan
            total_err = star_err if repeats == 1 else math.hypot(star_err, fit_err)
            rows.append(
                (
                    name,
                    n,
                    float(ll[j].mean()),
                    float(ll[j].std(ddof=1) / math.sqrt(n)),
                    float(ll[j].sum()),
                    float(d.mean()),
                    total_err / n,
                    float(d.sum()),
                    total_err,
                    star_err,
                    fit_err,
                    repeats,
                    " ".join(self.scored_on[j]),
                    self.seconds[j] if j < len(self.seconds) else math.nan,
                )
            )
        names = (
            "config", "n_stars", "mean_loglike", "mean_loglike_err", "total_loglike",
            "delta_mean", "delta_mean_err", "delta_total", "delta_total_err",
            "delta_total_star_err", "delta_total_fit_err", "repeats", "scored_on", "seconds",
        )  # fmt: skip
        table = QTable(rows=rows, names=names)
        table.meta["baseline"] = self.names[baseline]
        table.meta["folds"] = int(self.fold.max()) + 1
        table.meta["description"] = (
            "held-out log-likelihood per star (nats): each star scored by the fit that did not see it; "
            "delta: paired difference from the baseline config, star by star; its error holds the stars' sampling "
            "and, with repeats > 1, the spread of the fits over their seeds"
        )
        table.meta["repeats"] = repeats
        return table

    def per_star(self) -> Table:
        """One row per star: ``source_id``, ``fold`` and ``loglike_<config>``."""
        table = Table({"source_id": self.source_id, "fold": self.fold})
        for name, values in zip(self.names, self.log_likelihood):
            table[f"loglike_{name}"] = values
        return table


def _measurement_difference(first, second, bands: set[str]) -> str:
    """What differs between two star tables' identifiers and measured values (the
    shared ``bands``' magnitudes and extinctions included; errors may differ), or ""
    if nothing does."""
    if len(first) != len(second) or not np.array_equal(first.source_id, second.source_id):
        return "source_id"
    quantities = ["phi1", "phi2", "parallax", "pm_phi1_cosphi2", "pm_phi2"]
    for name in quantities:
        if not np.array_equal(getattr(first, name), getattr(second, name), equal_nan=True):
            return name
    for band in sorted(bands):
        if not np.array_equal(first.mags[band], second.mags[band], equal_nan=True):
            return band
        if (band in first.extinction) != (band in second.extinction) or (
            band in first.extinction and not np.array_equal(first.extinction[band], second.extinction[band], equal_nan=True)
        ):
            return f"A_{band}"
    return ""


def with_ensemble(config: Config, ensemble: int) -> Config:
    """``config`` fitted by ``ensemble`` members: one member cannot be cross-fitted (its
    training stars are the K - 1 folds already), and ``fit.cross_fit_folds`` above the
    members falls back to one fold per member.

    Example:
        >>> config = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]},
        ...                            "fit": {"ensemble": 8, "cross_fit": True, "cross_fit_folds": 4}})
        >>> fit = with_ensemble(config, 2).fit
        >>> fit.ensemble, fit.cross_fit, fit.folds
        (2, True, 2)
        >>> with_ensemble(config, 1).fit.cross_fit
        False
    """
    update: dict[str, Any] = {"ensemble": ensemble}
    if ensemble == 1:
        update.update(cross_fit=False, cross_fit_folds=None)
    elif (config.fit.cross_fit_folds or 0) > ensemble:
        update["cross_fit_folds"] = None
    return config.model_copy(update={"fit": config.fit.model_copy(update=update)})


def compare(
    configs: Sequence[Config],
    stars=None,
    *,
    folds: int = 3,
    seed: int = 0,
    ensemble: int | None = 1,
    repeats: int = 1,
    names: Sequence[str] | None = None,
    progress: bool = False,
) -> ComparisonResult:
    """Fit each config on ``folds - 1`` folds of the same stars and score the held-out fold.

    Arguments:
        configs: The configs to compare (same stars, same coordinates).
        stars: The stars: a table, which each config reads with its own
            ``data.columns`` (so its own modelled errors), or a
            :class:`~streammix.data.StarTable` (default: each config's
            ``data.path``). Every config must find the same identifiers and
            measured values; the errors may differ.
        folds: The number of folds K.
        seed: The seed of the fold assignment.
        ensemble: Ensemble members per fit (None: each config's own); the
            held-out likelihood of an ensemble is that of its mean density.
            A config's ``fit.cross_fit`` is switched off for an ensemble of one,
            and its ``fit.cross_fit_folds`` dropped (one fold per member) where
            it exceeds the ensemble.
        repeats: Fits of each config per fold, repeat r with ``fit.seed`` raised
            by r times the ensemble's size (the same seeds for configs sharing
            ``fit.seed`` and the ensemble's size):
            the per-star log-likelihood is their mean, and the spread of the
            paired difference over the repeats enters its error (see
            :meth:`ComparisonResult.summary`).
        names: Names for the configs (default: their ``name``).
        progress: Show progress bars.

    Returns:
        The held-out log-likelihood of every star under every config.
    """
    if not configs:
        raise InputError("compare: no configs given")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise InputError(f"compare: repeats {repeats!r}; needs a whole number >= 1 (fits of each config per fold)")
    names = list(names) if names is not None else [c.name for c in configs]
    if len(set(names)) != len(names):
        raise InputError(f"compare: config names {names} repeat; give each config its own name")
    coordinates = [sorted(c.model.coordinates) for c in configs]
    if any(c != coordinates[0] for c in coordinates):
        raise InputError(
            f"compare: the configs model different coordinates {coordinates}; held-out likelihoods "
            "are comparable only over the same ones"
        )
    shared_bands = set(configs[0].model.bands)
    for c in configs[1:]:
        shared_bands &= set(c.model.bands)
    # Each config reads the stars its own way (a config may model errors the catalogue lacks,
    # data.columns.band_error_model), once per distinct data and field section; the
    # measurements themselves must be the same.
    read: dict[tuple[str, str], object] = {}
    loaded = []
    for c in configs:
        key = (c.data.model_dump_json(), c.field.model_dump_json())
        if key not in read:
            read[key] = load_stars(c, stars)
        loaded.append(read[key])
    for other, name in zip(loaded[1:], names[1:]):
        difference = "" if other is loaded[0] else _measurement_difference(loaded[0], other, shared_bands)
        if difference:
            raise InputError(
                f"compare: config {name!r} reads other stars than {names[0]!r} ({difference}); "
                "held-out likelihoods are comparable only on the same stars"
            )
    stars = loaded[0]
    labels = fold_labels(stars.source_id, folds, seed)
    log_likelihood = np.zeros((repeats, len(configs), len(stars)))
    scored_on, seconds = [], []
    for j, config in enumerate(configs):
        started = time.perf_counter()
        if ensemble is not None:
            config = with_ensemble(config, ensemble)
        photometry = bool(config.model.bands) and set(config.model.bands) <= shared_bands
        scored_on.append([*config.model.coordinates, *(config.model.bands if photometry else [])])
        for r in range(repeats):
            # members use seed + k, k < ensemble: each repeat takes the next ensemble's worth of seeds
            seeded = config.model_copy(
                update={"fit": config.fit.model_copy(update={"seed": config.fit.seed + r * config.fit.ensemble})}
            )
            for k in range(folds):
                held = labels == k
                model = fit(seeded, loaded[j][~held], progress=progress)
                log_likelihood[r, j, held] = held_out_log_likelihood(model, loaded[j][held], photometry=photometry)
        seconds.append(time.perf_counter() - started)
    return ComparisonResult(
        names, np.asarray(stars.source_id), labels, log_likelihood.mean(axis=0), scored_on, seconds,
        repeat_totals=log_likelihood.sum(axis=2).T if repeats > 1 else None,
    )


def held_out_log_likelihood(model, stars, *, photometry: bool = True) -> np.ndarray:
    """Per-star log-likelihood of ``stars`` under a fitted model: the log of the
    ensemble's mean density, log (1/M) sum_m sum_k f_k p_k. Without
    ``photometry``, a joint model is scored on the astrometry alone (its
    components without their isochrone terms, against the background's
    astrometric marginal)."""
    config = model.config
    joint = bool(config.model.bands)
    if joint and not photometry:
        background_logp = model.background.log_prob(stars, exclude=config.model.bands) if model.background else None
        tensors = config_tensors(config, stars, background_logp, mixture=model.mixtures[0], photometry=False)
        tensors = tensors.astrometry_only(tensors.background_logp)
    else:
        tensors = model.prepare(stars)
    with torch.no_grad():
        members = []
        for mixture in model.mixtures:
            mixture.eval()
            members.append(mixture.log_likelihood(tensors).double())
        stacked = torch.stack(members)
        value = torch.logsumexp(stacked, dim=0) - math.log(len(members))
    return value.cpu().numpy()
