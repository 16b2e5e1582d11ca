"""Fitting: background flows first, then an ensemble of mixtures.

:func:`fit` pre-trains the background flows on off-stream stars
(:func:`fit_background`), or takes flows trained already, freezes them, and
fits ``config.fit.ensemble`` mixtures (different seeds and, optionally,
bootstrap resamples of the stars) with AdamW (or L-BFGS), early stopping on
held-out stars, deterministic seeds and checkpoints that a killed run resumes
from. The result is a :class:`FittedModel`, saved in the folder format of
:mod:`streammix.model_io`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import astropy.units as u
from astropy.table import QTable

from .background import BackgroundFlows, background_view, check_background, offstream_mask
from .components import BackgroundComponent, NetworkSettings
from .config import Config
from .data import StarTable, check_plausible, read_stars
from .cut_fraction import CutFraction
from .error_density import ErrorDensity, error_density
from .error_relation import ErrorRelation, fit_error_relation
from .error_weights import ErrorWeights, error_knots
from .errors import InputError
from .folds import fold_of
from .frames import get_frame
from .membership import membership_table, tracks_table
from .mixture import ControlPrior, Mixture, StarTensors, check_priors, photometry_needed, prepare_stars
from .model_io import SavedModel, mixture_bounds, read_model, write_model
from .parallel import WorkerPool, map_spawned, torch_threads, worker_pool
from .photometry import likelihood_from_config
from .photometry_share import PhotometryShare, normalised, photometry_share
from .provenance import __version__
from .selection import SelectionCuts, selection_transform
from .tracks import galstreams_track
from .training import EarlyStopping, Evaluation, TrainingState
from .training import train as run_training

__all__ = ["FitResult", "FittedModel", "build_mixture", "control_priors", "fit", "fit_background", "load", "load_stars"]

MAX_CONSECUTIVE_ROLLBACKS = 8
#: The least fall of a mixture's mean held-out loss (nats per star) that counts as an improvement.
STOPPING_TOLERANCE = 1e-6


# --- data ---------------------------------------------------------------------


def load_stars(config: Config, stars=None):
    """The stars a config describes (read from ``config.data.path`` unless given),
    checked against the field.

    Stars outside the field raise :class:`InputError` unless
    ``config.data.cut_to_field`` is set, in which case they are dropped.
    """
    if stars is None:
        if config.data.path is None:
            raise InputError(f"{config.source or 'config'}: data.path: no data file given")
        columns = config.data.column_map()
        stars = read_stars(
            config.data.path,
            columns,
            gaia_frame=config.data.gaia_frame,
            # a number is a distance in kpc (as in data.selection)
            reflex_distance=(
                config.data.reflex_distance * u.kpc
                if isinstance(config.data.reflex_distance, (int, float))
                else config.data.reflex_distance
            ),
        )
    elif not isinstance(stars, StarTable):
        columns = config.data.column_map()
        stars = StarTable.from_table(stars, columns)
    (lo1, hi1), (lo2, hi2) = config.field.phi1, config.field.phi2
    outside1 = (stars.phi1 < lo1) | (stars.phi1 > hi1)
    phi2 = np.where(np.isfinite(stars.phi2), stars.phi2, 0.5 * (lo2 + hi2))
    outside2 = (phi2 < lo2) | (phi2 > hi2)
    if config.data.cut_to_field:
        stars = stars[~(outside1 | outside2)]
    elif outside1.any():
        raise InputError(
            f"column 'phi1': {int(outside1.sum())} stars outside the field's phi1 range [{lo1}, {hi1}] "
            "(set data.cut_to_field: true to drop them)"
        )
    elif outside2.any():
        raise InputError(
            f"column 'phi2': {int(outside2.sum())} stars outside the field's phi2 range [{lo2}, {hi2}] "
            "(set data.cut_to_field: true to drop them)"
        )
    if len(stars) < 10:
        raise InputError(f"data: only {len(stars)} stars in the field; a fit needs at least 10")
    check_plausible(stars, [*config.model.coordinates, *config.model.bands])
    observed = stars.observed
    for name in [*config.model.coordinates, *config.model.bands]:
        if name in observed and not observed[name].any():
            raise InputError(
                f"column '{name}': every value is missing (NaN, masked, sentinel or without a valid "
                "uncertainty), but model.coordinates/bands use it"
            )
    return stars


# --- priors and the model -----------------------------------------------------


def control_priors(config: Config) -> list[ControlPrior]:
    """Every control point of the config, galstreams tracks included."""
    priors: list[ControlPrior] = []
    lo, hi = config.field.phi1
    for comp in config.model.components:
        for cp in comp.control_points:
            priors.append(ControlPrior(comp.name, cp.parameter, cp.phi1, cp.value, cp.width))
        if comp.galstreams is not None:
            g = comp.galstreams
            frame = get_frame(config.frame) if config.frame else None
            track = galstreams_track(g.name, g.reference, frame)
            start = max(lo, float(np.nanmin(track.phi1)))
            stop = min(hi, float(np.nanmax(track.phi1)))
            grid = np.arange(start + 0.5 * g.spacing, stop, g.spacing)
            for parameter in g.parameters:
                width = g.widths.get(parameter)
                if width is None:
                    raise InputError(f"galstreams prior: widths.{parameter}: no width given")
                for point in track.control_points(parameter, grid, width):
                    if np.isfinite(point.value):
                        priors.append(ControlPrior(comp.name, parameter, float(point.phi1), float(point.value), width))
    return priors


def parameter_bounds(config: Config, component, stars) -> dict[str, tuple[float, float]]:
    """Bounds per parameter: the config's, else its kind's defaults from the field, the data and the profile."""
    bounds = component.default_bounds(tuple(config.field.phi2), stars)
    bounds.update({k: tuple(v) for k, v in component.bounds.items()})
    return bounds


def build_mixture(
    config: Config,
    stars=None,
    *,
    bounds: dict[str, dict[str, list[float]]] | None = None,
    photometry=None,
    priors: Sequence[ControlPrior] | None = None,
) -> Mixture:
    """A fresh (untrained) mixture for ``config``.

    Each entry of ``model.components`` builds its component (its kind's
    settings class, :data:`streammix.config.COMPONENT_KINDS`). Parameter
    bounds come from ``bounds`` (per component, as saved by
    :func:`mixture_bounds`) or else from the config with defaults from ``stars``.
    Without ``stars`` the tables built from them (the error weights' knots, the
    error density, the photometry share, the cut fraction's relation) are
    placeholders that a state dict must fill, as :func:`load` and :func:`fit` do.
    ``photometry``: an isochrone likelihood of this config to share (its tables
    are built once); default: a new one. ``priors``: :func:`control_priors` of
    ``config``, if the caller has them (they place the off-stream stars whose
    errors the tables use); default: read again.
    """
    coords = list(config.model.coordinates)
    if photometry is None:
        photometry = photometric_likelihood(config)
    form = config.model.cut_normalisation
    by_fraction = form in ("luminosity_function", "luminosity_function_with_photometry")
    by_star = form in ("star", "stars_without_photometry", "luminosity_function_with_photometry")
    divides_without = form in ("stars_without_photometry", "luminosity_function_with_photometry")
    cut_stars = "without_photometry" if divides_without else "all"
    components = []
    for comp in config.model.components:
        if bounds is not None:
            comp_bounds = {k: tuple(v) for k, v in bounds[comp.name].items()}
        else:
            comp_bounds = parameter_bounds(config, comp, stars)
        components.append(
            comp.build(
                coords,
                comp_bounds,
                tuple(config.field.phi2),
                photometry=photometry,
                selection=selection_cuts(config) if by_star else None,
                parallax_zero_point=config.data.parallax_zero_point,
                cut_stars=cut_stars,
            )
        )
    for comp, component in zip(config.model.components, components):
        dispersion = getattr(comp, "velocity_dispersion", None)
        if dispersion is not None:  # the config has checked that the component has proper motions and a distance
            component.dispersion_prior = dispersion.prior(comp.phi1_range or tuple(config.field.phi1))
    if _has_pm_cut(config) and form in ("star", "luminosity_function_with_photometry"):
        # the cut on the phi1 grid, at the field's middle phi2, for the selection prior of the components
        # normalised on their own (for every star, or for the stars with photometry by their luminosity function)
        matrix, offset = _grid_transform(config)
        for component in components:
            if hasattr(component, "attach_selection_grid"):
                component.attach_selection_grid(torch.as_tensor(matrix), torch.as_tensor(offset))
    background = BackgroundComponent(config.field.phi2, config.model.background.phi2)
    error_weights = None
    if config.model.error_weights:
        n_knots = config.model.error_weights
        # the knots are buffers: a saved model's replace these placeholders when it is loaded
        knots = np.linspace(-3.0, 1.0, n_knots) if stars is None else error_knots(stars.parallax_err, n_knots)
        error_weights = ErrorWeights(knots, len(components))
    density, fraction = None, None
    # the tables and the error relation are buffers: a saved model's replace these placeholders when it is loaded
    relation, field = None, None
    if (config.model.error_density or config.model.photometry_share or by_fraction) and stars is not None:
        relation = _error_relation(config, stars)
    if (config.model.error_density or config.model.photometry_share) and stars is not None:
        field = _field_errors(config, stars, control_priors(config) if priors is None else priors)
    if config.model.error_density:
        density = ErrorDensity.placeholder() if stars is None else _error_density(config, components, field, relation)
    if by_fraction:
        fraction = _cut_fraction(config, components, stars, relation)
    share = None
    if config.model.error_density:  # the stars with magnitudes' term of the same density (streammix.photometry_share)
        share = PhotometryShare.placeholder() if stars is None else _photometry_share(config, field)
    elif config.model.photometry_share:  # beside the learned weights: normalised over the luminosity function
        share = PhotometryShare.placeholder()
        if stars is not None:
            share = normalised(_photometry_share(config, field), _error_density(config, components, field, relation))
    return Mixture(
        components,
        background,
        phi1_range=config.field.phi1,
        grid_size=config.model.grid_size,
        weight_settings=NetworkSettings(**config.model.weights_network.model_dump()),
        initial_fraction=config.model.initial_fraction,
        error_weights=error_weights,
        error_density=density,
        cut_fraction=fraction,
        cut_fraction_stars="with_photometry" if form == "luminosity_function_with_photometry" else "all",
        photometry_share=share,
        outlier_fraction=config.model.isochrone.outlier_fraction,
        photometry_logits=config.model.photometry_logits,
    )


def _grid_transform(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """The catalogue's proper-motion cut on the mixture's phi1 grid, at the field's middle phi2."""
    grid = np.linspace(*config.field.phi1, config.model.grid_size)
    return selection_transform(
        get_frame(config.frame), grid, np.full_like(grid, 0.5 * sum(config.field.phi2)), config.data.selection.reflex_distance
    )


def _error_relation(config: Config, stars) -> ErrorRelation:
    """How the parallax errors of ``stars`` follow their magnitudes in the model's bands (quadratic)."""
    observed = stars.observed["parallax"] & np.isfinite(stars.parallax_err) & (stars.parallax_err > 0)
    mags = np.stack([stars.mags[band] for band in config.model.bands], axis=1)
    try:
        return fit_error_relation(np.where(observed, stars.parallax_err, np.nan), mags, degree=2)
    except InputError as error:
        raise InputError(f"model.{_share_setting(config)}: {error}") from None


def _cut_fraction(config: Config, components, stars, relation: ErrorRelation | None) -> CutFraction:
    """The :class:`~streammix.cut_fraction.CutFraction` of ``config``'s components with an isochrone."""
    likelihood, _ = _isochrone_terms(components)
    n_bands = len(config.model.bands)
    if relation is None:  # a saved model's relation is read into these buffers
        relation = ErrorRelation(0.0, (0.0,) * n_bands, 1.0, (0.0,) * (n_bands * (n_bands + 1) // 2), (0.0,) * n_bands)
    ratio = 1.0  # a saved model's is read into its buffer; unused without a proper-motion cut
    if stars is not None and _has_pm_cut(config):  # with data.columns.pm_err_per_parallax_err, exactly that
        pm_err = np.sqrt(stars.pm_phi1_cosphi2_err * stars.pm_phi2_err)
        usable = np.isfinite(pm_err) & (pm_err > 0) & np.isfinite(stars.parallax_err) & (stars.parallax_err > 0)
        if not usable.any():
            raise InputError("model.cut_normalisation: no star has both proper-motion and parallax errors")
        ratio = float(np.median(pm_err[usable] / stars.parallax_err[usable]))
    if _has_pm_cut(config):
        matrix, offset = _grid_transform(config)
    else:
        matrix, offset = np.tile(np.eye(2), (config.model.grid_size, 1, 1)), np.zeros((config.model.grid_size, 2))
    return CutFraction(
        likelihood, relation, selection_cuts(config), ratio, config.data.parallax_zero_point,
        torch.as_tensor(matrix), torch.as_tensor(offset),
    )  # fmt: skip


def _field_errors(config: Config, stars, priors: Sequence[ControlPrior]) -> tuple[np.ndarray, np.ndarray]:
    """The off-stream stars' (the background's training stars', placed by ``priors``) parallax
    errors (NaN where they have no parallax) and whether they have any of the model's bands."""
    observed = stars.observed["parallax"] & np.isfinite(stars.parallax_err) & (stars.parallax_err > 0)
    offstream = offstream_stars(config, priors, stars)
    has_mags = np.any([stars.observed[band] for band in config.model.bands], axis=0)
    return np.where(observed, stars.parallax_err, np.nan)[offstream], has_mags[offstream]


def _error_density(
    config: Config, components, field: tuple[np.ndarray, np.ndarray], relation: ErrorRelation
) -> ErrorDensity:
    """The :class:`~streammix.error_density.ErrorDensity` of ``config``: the error
    relation fitted to every star with all the model's bands, the field's errors
    those of the off-stream stars (the background's training stars, ``field``
    as :func:`_field_errors` gives them)."""
    likelihood, distmod_range = _isochrone_terms(components)
    try:
        return error_density(likelihood, relation, field[0], distmod_range, dtype=torch.float64)
    except ValueError as error:
        raise InputError(f"model.{_share_setting(config)}: {error}") from None


def _share_setting(config: Config) -> str:
    """The setting that asked for the error relation, the error density or the photometry share."""
    if config.model.error_density:
        return "error_density"
    return "photometry_share" if config.model.photometry_share else "cut_normalisation"


def _photometry_share(config: Config, field: tuple[np.ndarray, np.ndarray]) -> PhotometryShare:
    """The :class:`~streammix.photometry_share.PhotometryShare` of the off-stream stars
    (``field`` as :func:`_field_errors` gives them)."""
    try:
        return photometry_share(*field, dtype=torch.float64)
    except ValueError as error:
        raise InputError(f"model.{_share_setting(config)}: {error}") from None


def selection_cuts(config: Config):
    """The catalogue's cuts (``data.selection``) as the stream-like components apply them, or None."""
    sel = config.data.selection
    if sel is None:
        return None
    pm = sel.pmra is not None
    return SelectionCuts(
        parallax=sel.parallax if "parallax" in config.model.coordinates else None,
        pm_low=(sel.pmra[0], sel.pmdec[0]) if pm else None,
        pm_high=(sel.pmra[1], sel.pmdec[1]) if pm else None,
    )


def photometric_likelihood(config: Config):
    """The isochrone likelihood of ``config`` (None without ``model.bands``)."""
    if not config.model.bands:
        return None
    return likelihood_from_config(config.model.isochrone, config.model.bands, dtype=getattr(torch, config.fit.dtype))


def photometric_terms(config: Config, mixture: Mixture):
    """The isochrone likelihood the mixture's photometric components share and
    the distance moduli they can take: ``(likelihood, (low, high))``, or
    ``(None, None)`` for a model without one."""
    return _isochrone_terms(mixture.components) if config.model.bands else (None, None)


def _isochrone_terms(components) -> tuple[Any, tuple[float, float] | None]:
    """The isochrone likelihood ``components`` with one share and the distance moduli
    they can take, or ``(None, None)`` where none has one."""
    users = [c for c in components if getattr(c, "photometry", None) is not None]
    if not users:
        return None, None
    ranges = [next(p for p in c.parameter_specs if p.name == "distmod") for c in users]
    return users[0].photometry, (min(p.low for p in ranges), max(p.high for p in ranges))


def config_tensors(
    config: Config,
    stars,
    background_logp: np.ndarray | None,
    *,
    mixture: Mixture | None = None,
    photometry: bool = True,
    background_logp_astrometry: np.ndarray | None = None,
    background_bands_logp: np.ndarray | None = None,
) -> StarTensors:
    """The stars as tensors for ``config``'s model (grid, coordinates, bands, dtype, device),
    the isochrone term's per-star quantities included unless ``photometry`` is False.

    ``background_logp_astrometry``: the background's log-density of the astrometry
    alone; with bands in the model and a component without an isochrone, the
    difference from ``background_logp`` is that component's photometric density
    (:func:`needs_background_bands`). ``background_bands_logp``: that density
    itself (:meth:`~streammix.background.BackgroundFlows.conditional_log_prob`),
    for a caller that does not need the astrometric one."""
    like, distmod_range = None, None
    if config.model.bands and photometry:
        like, distmod_range = photometric_terms(config, mixture if mixture is not None else build_mixture(config, stars))
    bands_logp = None
    if needs_background_bands(config):
        if background_bands_logp is not None:
            bands_logp = np.asarray(background_bands_logp)
        elif background_logp is not None and background_logp_astrometry is not None:
            bands_logp = np.asarray(background_logp) - np.asarray(background_logp_astrometry)
    return prepare_stars(
        stars,
        phi1_range=config.field.phi1,
        grid_size=config.model.grid_size,
        coordinates=config.model.coordinates,
        bands=config.model.bands,
        background_logp=background_logp,
        photometry=like,
        distmod_range=distmod_range,
        dtype=getattr(torch, config.fit.dtype),
        device=config.fit.device,
        selection=_selection_transform(config, stars),
        background_bands_logp=bands_logp,
    )


def needs_background_bands(config: Config) -> bool:
    """Whether ``config``'s model with bands needs the background's colour-magnitude
    density given the astrometry: for a component without an isochrone
    (``photometry: false``), whose magnitudes follow it, so that every component
    is a density over the same coordinates, or for the share of the isochrone
    components' stars off their isochrone (``model.isochrone.outlier_fraction``)."""
    model = config.model
    return bool(model.bands) and bool(model.background.blocks) and (
        model.isochrone.outlier_fraction > 0 or any(not c.photometry for c in model.components)
    )


def _selection_transform(config: Config, stars):
    """Per-star map from the model's proper motions to the catalogue's cut ones (None without pm cuts)."""
    if not _has_pm_cut(config):
        return None
    return selection_transform(get_frame(config.frame), stars.phi1, stars.phi2, config.data.selection.reflex_distance)


def _has_pm_cut(config: Config) -> bool:
    """Whether the catalogue was cut on proper motions that the model has both of."""
    sel = config.data.selection
    return sel is not None and sel.pmra is not None and {"pm_phi1_cosphi2", "pm_phi2"} <= set(config.model.coordinates)


def prior_track(priors: Sequence[ControlPrior], component: str, parameter: str = "phi2"):
    """phi1 and values of one parameter's control points, sorted by phi1."""
    points = sorted((p.phi1, p.value) for p in priors if p.component == component and p.parameter == parameter)
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def offstream_stars(config: Config, priors: Sequence[ControlPrior], stars) -> np.ndarray:
    """The stars that train the background flows: farther than
    ``model.background.offstream_phi2`` from the phi2 prior track of every
    stream-like component (within its ``phi1_range``), so that neither the
    stream nor an off-track spur teaches the background its proper motions.
    Components without phi2 control points exclude nothing; with none at all,
    every star trains the flows."""
    keep = np.ones(len(stars), dtype=bool)
    for comp in config.model.components:
        track_phi1, track_phi2 = prior_track(priors, comp.name, "phi2")
        if not track_phi1.size:
            continue
        near = ~offstream_mask(stars.phi1, stars.phi2, track_phi1, track_phi2, config.model.background.offstream_phi2)
        if comp.phi1_range is not None:
            near &= (stars.phi1 >= comp.phi1_range[0]) & (stars.phi1 <= comp.phi1_range[1])
        keep &= ~near
    return keep


def warm_start(mixture: Mixture, config: Config, priors: Sequence[ControlPrior], steps: int) -> None:
    """Fit each component's network to its prior track before the mixture fit.

    Targets on the phi1 grid: control points interpolated (constant beyond the
    ends) and ``init`` values or defaults for the widths; only parameters with
    a target are pulled.
    """
    if steps <= 0:
        return
    grid = mixture.grid.detach().cpu().numpy()
    targets: list[tuple[torch.nn.Module, int, torch.Tensor]] = []
    for comp_cfg, comp in zip(config.model.components, mixture.components):
        for i, spec in enumerate(comp.parameter_specs):
            x, y = prior_track(priors, comp.name, spec.name)
            if x.size:
                values = np.interp(grid, x, y)
            elif spec.name in comp_cfg.init:
                values = np.full_like(grid, comp_cfg.init[spec.name])
            elif spec.default is not None:
                values = np.full_like(grid, spec.default)
            else:
                continue
            values = np.clip(values, spec.low, spec.high)
            raw = spec.unconstrain(torch.as_tensor(values, dtype=mixture.grid.dtype, device=mixture.grid.device))
            targets.append((comp.net, i, raw))
    if not targets:
        return
    # per network: the columns pulled and their targets, shape (G, pulled)
    by_net: dict[int, tuple[torch.nn.Module, list[int], list[torch.Tensor]]] = {}
    for net, i, raw in targets:
        by_net.setdefault(id(net), (net, [], []))
        by_net[id(net)][1].append(i)
        by_net[id(net)][2].append(raw)
    pulls = [(net, torch.tensor(cols, device=mixture.grid.device), torch.stack(raws, -1)) for net, cols, raws in by_net.values()]
    params = [p for net, _, _ in pulls for p in net.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2, foreach=True)
    x = mixture.scale_phi1(mixture.grid)
    was_training = mixture.training
    mixture.eval()
    for _ in range(steps):
        optimizer.zero_grad()
        # the sum over pulled parameters of each one's mean squared difference on the grid
        loss = sum(((net.raw(x).index_select(1, cols) - raw) ** 2).mean(0).sum() for net, cols, raw in pulls)
        loss.backward()
        optimizer.step()
    mixture.train(was_training)


# --- training -----------------------------------------------------------------


@dataclass
class FitResult:
    """What happened in one member's fit (``stopped_because``: why its training ended)."""

    seed: int
    steps: int
    best_step: int
    best_validation: float
    final_train: float
    converged: bool
    stopped_early: bool
    rollbacks: int
    seconds: float
    history: list[tuple[int, float, float]] = field(default_factory=list)
    astrometry_steps: int = 0
    stopped_because: str = ""
    astrometry_stopped_because: str = ""
    n_train: int = 0
    n_held_out: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["history"] = [list(h) for h in self.history]
        return d


def _state(mixture: Mixture) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in mixture.state_dict().items()}


def mixture_stopping(config: Config) -> EarlyStopping:
    """The stopping rule of a mixture's fit: ``fit.patience`` steps without a fall of the
    held-out loss by more than ``fit.stopping_k`` paired standard errors (1e-6 nats at least),
    the differences weighted by membership with ``fit.stopping_weighted``."""
    cfg = config.fit
    return EarlyStopping(
        cfg.patience, "steps", k=cfg.stopping_k, tolerance=STOPPING_TOLERANCE, weighted=cfg.stopping_weighted
    )


def train_mixture(
    mixture: Mixture,
    train: StarTensors,
    valid: StarTensors,
    priors: Sequence[ControlPrior],
    config: Config,
    *,
    seed: int,
    checkpoint: Path | None = None,
    progress: bool = False,
    label: str = "fit",
    steps: int | None = None,
) -> FitResult:
    """Maximise the posterior of one mixture; returns what happened.

    The objective per step is ``mean_i log L_i + log prior / N_train``: the
    same posterior as the sum over stars plus the log prior added once,
    divided by the number of training stars. ``steps`` overrides ``fit.steps``.
    The loop is :func:`streammix.training.train`: the held-out stars are
    scored every ``fit.eval_every`` steps, the state of lowest held-out loss
    is kept, and training stops by :func:`mixture_stopping`; a non-finite loss
    rolls back to the last evaluated state and halves the learning rate.
    """
    cfg = config.fit
    start_time = time.perf_counter()
    n_train = len(train)
    use_lbfgs = cfg.optimizer == "lbfgs"
    if use_lbfgs:
        optimizer: torch.optim.Optimizer = torch.optim.LBFGS(
            mixture.parameters(), lr=1.0, max_iter=20, history_size=20, line_search_fn="strong_wolfe"
        )
        total_steps = max(1, (cfg.steps if steps is None else steps) // 20)
    else:
        # foreach: one operation per update for all the parameter tensors (the CPU default is one per tensor)
        optimizer = torch.optim.AdamW(
            mixture.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, foreach=True
        )
        total_steps = cfg.steps if steps is None else steps
    generator = torch.Generator(device="cpu").manual_seed(seed)
    resume: TrainingState | None = None
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=mixture.grid.device, weights_only=False)
        if isinstance(saved["state"].get("training"), TrainingState):  # else made before the shared loop: start afresh
            mixture.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            generator.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
            resume = saved["state"]["training"]

    def objective(batch: StarTensors) -> torch.Tensor:
        ll, log_prior = mixture.log_posterior_terms(batch, priors)
        return -(ll.mean() + log_prior / n_train)

    def step(state: TrainingState) -> float:
        lr = cfg.learning_rate * 0.5**state.rollbacks
        if not use_lbfgs:
            warmup = min(1.0, (state.at + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
            cosine = 0.5 * (1 + math.cos(math.pi * state.at / total_steps))
            for group in optimizer.param_groups:
                group["lr"] = warmup * lr * cosine * state.cooldown_factor()
        if cfg.batch_size is not None and cfg.batch_size < n_train:
            index = torch.randint(0, n_train, (cfg.batch_size,), generator=generator).to(train.phi1.device)
            batch = train.subset(index)
        else:
            batch = train

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = objective(batch)
            loss.backward()
            return loss

        if use_lbfgs:
            loss = optimizer.step(closure)
        else:
            loss = closure()
            # the gradients' total norm is finite when every gradient is (and not too large to
            # overflow); a step without a finite norm is skipped, its gradients discarded
            norm = torch.nn.utils.clip_grad_norm_(mixture.parameters(), 10.0, foreach=True)
            if torch.isfinite(loss) and torch.isfinite(norm):
                optimizer.step()
        value = float(loss.detach())
        if not torch.isfinite(torch.nn.utils.parameters_to_vector(mixture.parameters())).all():
            return math.nan
        return value

    def evaluate() -> Evaluation:
        mixture.eval()
        with torch.no_grad():
            table = mixture.parameter_table(mixture.grid)
            joint = mixture.log_joint(valid, table)
            total = torch.logsumexp(joint, dim=-1)
            ll = total - mixture.log_normaliser(valid, table)
            value = float(-ll.mean())
            members = -torch.expm1(joint[:, -1] - total)  # 1 - p(background)
        mixture.train()
        return Evaluation.of(-ll, value, members)

    def rolled_back(state: TrainingState) -> None:
        lr = cfg.learning_rate * 0.5**state.rollbacks
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.state.clear()
        warnings.warn(
            f"{label}: non-finite loss at step {state.at}; rolled back and lowered the learning rate to {lr:.2e}",
            RuntimeWarning,
            stacklevel=4,
        )

    def save_checkpoint(state: TrainingState) -> None:
        if checkpoint is None:
            return
        payload = {
            "model": mixture.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            # "step" and "done" for whoever watches a run (also read by the tests), the loop's state to resume
            "state": {"step": state.at, "done": state.done, "training": state},
        }
        tmp = checkpoint.with_suffix(".part")
        torch.save(payload, tmp)
        tmp.replace(checkpoint)

    mixture.train()
    state = run_training(
        step,
        evaluate,
        lambda: _state(mixture),
        mixture.load_state_dict,
        total=total_steps,
        stopping=mixture_stopping(config),
        eval_every=cfg.eval_every,
        rollback=rolled_back,
        max_rollbacks=MAX_CONSECUTIVE_ROLLBACKS,
        checkpoint=save_checkpoint if checkpoint is not None else None,
        checkpoint_every=cfg.checkpoint_every,
        cooldown=0 if use_lbfgs else cfg.cooldown_steps,
        resume=resume,
        progress=label if progress else None,
    )
    mixture.eval()
    history = state.history
    stopped_early = state.at < total_steps
    converged = stopped_early and not state.gave_up
    if not converged and not state.gave_up and len(history) >= 5:
        # ran all its steps: converged if the last fifth of the run no longer
        # improved the best held-out loss by more than 0.1 per cent
        values = [h[2] for h in history]
        k = max(1, len(values) // 5)
        improvement = min(values[:-k]) - min(values[-k:])
        converged = improvement < 1e-3 * max(1.0, abs(min(values)))
    return FitResult(
        seed=seed,
        steps=state.at,
        best_step=state.stopping.best_at,
        best_validation=state.stopping.best_value,
        final_train=state.train_loss,
        converged=bool(converged),
        stopped_early=bool(stopped_early),
        rollbacks=state.rollbacks,
        seconds=time.perf_counter() - start_time,
        history=history,
        stopped_because=state.stopped_because,
        n_train=len(train),
        n_held_out=len(valid),
    )


# --- the fitted model ---------------------------------------------------------


@dataclass
class FittedModel:
    """An ensemble of fitted mixtures with their frozen background flows.

    Arguments:
        config: The configuration it was fitted with.
        mixtures: The ensemble's members.
        background: The frozen background flows.
        phi1_density: Stars per degree of the fitted data on the mixture's phi1 grid
            (turns weights into linear densities).
        summary: What happened during the fit (seeds, timings, convergence).
    """

    config: Config
    mixtures: list[Mixture]
    background: BackgroundFlows | None
    phi1_density: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def component_names(self) -> tuple[str, ...]:
        return self.mixtures[0].component_names

    @property
    def converged(self) -> bool:
        return all(m["converged"] for m in self.summary.get("members", []))

    def prepare(
        self, stars, background_logp: np.ndarray | None = None, *, prune: bool = False, threads: int | None = None
    ) -> StarTensors:
        """Stars as tensors for this model (background log-density included).

        With ``prune``, the isochrone term is prepared only for the stars where
        some ensemble member could need it: those whose stream-like term, with
        the isochrone term at a cheap upper bound, comes within
        ``mixture.SKIP_MARGIN`` nats of the background's. The others (most of a
        field) are left to that bound, as the mixture's skip rule would leave
        them anyway; the isochrone's part of their probability of belonging to a
        photometric component stays below e^-15 (with
        ``model.isochrone.outlier_fraction``, the part off the isochrone is
        computed for every star). Only for the members' own networks:
        MC-dropout draws move the tracks, so scoring with dropout does not prune.
        ``threads``: CPU threads for the background flows (default: their setting).
        """
        if background_logp is None:
            background_logp = self.background.log_prob(stars, threads=threads) if self.background is not None else None
        bands_logp = None
        if self.background is not None and needs_background_bands(self.config):
            bands_logp = self.background.conditional_log_prob(stars, self.config.model.bands, threads=threads)
        if not prune:
            return config_tensors(
                self.config, stars, background_logp, mixture=self.mixtures[0], background_bands_logp=bands_logp
            )
        tensors = config_tensors(
            self.config, stars, background_logp, mixture=self.mixtures[0], photometry=False,
            background_bands_logp=bands_logp,
        )  # fmt: skip
        like, distmod_range = photometric_terms(self.config, self.mixtures[0])
        if like is None:
            return tensors
        dtype = getattr(torch, self.config.fit.dtype)
        bound = like.prepare(tensors, distmod_range, dtype=dtype, needed=torch.zeros(len(tensors), dtype=torch.bool))
        astrometric = tensors.astrometry_only(tensors.background_logp)
        needed = torch.zeros(len(tensors), dtype=torch.bool, device=tensors.phi1.device)
        with torch.no_grad():
            for mixture in self.mixtures:
                mixture.eval()
                joint = mixture.log_joint(astrometric)
                # the astrometric pass lacks the stars with magnitudes' logits (model.photometry_logits): a
                # positive one raises a component's odds against the background by as much at most
                raised = torch.relu(mixture.photometry_logit_values()).to(joint.dtype)
                joint = joint + torch.cat([raised, torch.zeros_like(raised[:1])])
                for k, comp in enumerate(mixture.all_components):
                    if getattr(comp, "photometry", None) is not None:
                        needed |= photometry_needed(joint[:, k], bound.upper.to(joint.dtype), joint[:, -1])
        return replace(tensors, photometry=like.prepare(tensors, distmod_range, dtype=dtype, needed=needed))

    def membership(
        self, stars, *, dropout_samples: int | None = None, chunk_size: int = 250_000, threads: int | None = None
    ) -> QTable:
        """Per-star membership probability of every component, with percentiles.

        ``p_<component>`` is P_k = f_k p_k / sum_j f_j p_j (likelihoods only, no
        priors) under the reference fit (member 0: all stars, seed
        ``config.fit.seed``; with ``fit.cross_fit``, the member that held the
        star out, or the mean of those that did with ``fit.cross_fit_folds``);
        ``p_<component>_q05/_q50/_q95`` are the
        5th/50th/95th percentiles over every ensemble member (other seeds,
        bootstrap resamples) and their MC-dropout draws. One row per input star;
        ``source_id`` and kept columns are carried. ``threads``: CPU threads
        for the scoring, flows included (default: torch's setting, i.e. every
        core unless ``OMP_NUM_THREADS`` says otherwise).
        """
        return membership_table(self, stars, dropout_samples=dropout_samples, chunk_size=chunk_size, threads=threads)

    def tracks(self, phi1=None, *, dropout_samples: int | None = None) -> QTable:
        """Weights, linear densities and every component's parameters on ``phi1``
        (default: the model's grid), medians with 5th/95th percentiles."""
        return tracks_table(self, phi1, dropout_samples=dropout_samples)

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write the model to ``folder`` (config, weights, flows, summary; see
        :mod:`streammix.model_io`); :func:`load` reads it back.

        Arguments:
            folder: The folder; created if needed.
            overwrite: Replace a model already in ``folder``.

        Returns:
            The folder.
        """
        members = [mixture.state_dict() for mixture in self.mixtures]
        saved = SavedModel(
            self.config, members, mixture_bounds(self.mixtures[0]), self.background, self.phi1_density, self.summary
        )
        return write_model(folder, saved, overwrite=overwrite)


def load(folder: str | Path) -> FittedModel:
    """Read a model written by :meth:`FittedModel.save`.

    Arguments:
        folder: The model's folder.

    Returns:
        The model, its tensors on the config's ``fit.device``.
    """
    saved = read_model(folder)
    config = saved.config
    shared = photometric_likelihood(config)
    mixtures = []
    for state in saved.members:
        mixture = build_mixture(config, bounds=saved.bounds, photometry=shared)
        mixture = mixture.to(dtype=getattr(torch, config.fit.dtype), device=config.fit.device)
        mixture.load_state_dict(state)
        mixture.eval()
        mixtures.append(mixture)
    return FittedModel(config, mixtures, saved.background, saved.phi1_density, saved.summary)


def _photometry_of(mixture: Mixture):
    """The isochrone likelihood a mixture's components share (None without one)."""
    return next((c.photometry for c in mixture.components if getattr(c, "photometry", None) is not None), None)


# --- the whole fit --------------------------------------------------------------


def run_fingerprint(config: Config, stars, background: BackgroundFlows | None = None) -> str:
    """A hash of everything a fit's checkpoints depend on: the config (less the
    settings that only say where and how fast it runs, and those left unset), the package version,
    the stars' identities, positions and values, and the weights of the
    background flows when they were given to :func:`fit`.

    Example:
        >>> import numpy as np
        >>> from astropy.table import Table
        >>> from streammix.data import StarTable
        >>> cfg = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]}})
        >>> stars = StarTable.from_table(Table({"source_id": [1, 2, 3], "phi1": [0.0, 1, 2], "phi2": [0.0, 0, 0]}))
        >>> a = run_fingerprint(cfg, stars)
        >>> a == run_fingerprint(cfg.model_copy(update={"fit": cfg.fit.model_copy(update={"workers": 2})}), stars)
        True
        >>> a == run_fingerprint(cfg.model_copy(update={"fit": cfg.fit.model_copy(update={"steps": 10})}), stars)
        False
    """
    # unset (None) settings are left out, so that a new optional setting keeps earlier checkpoints valid
    settings = config.model_dump(mode="json", exclude={"source"}, exclude_none=True)
    for key in ("workers", "device"):
        settings["fit"].pop(key, None)
    digest = hashlib.sha256(json.dumps([__version__, settings], sort_keys=True).encode())
    digest.update(np.ascontiguousarray(stars.source_id).tobytes())
    for name in ("phi1", "phi2", "parallax", "pm_phi1_cosphi2", "pm_phi2"):
        digest.update(np.ascontiguousarray(getattr(stars, name), dtype=np.float64).tobytes())
    for band in sorted(stars.mags):
        digest.update(np.ascontiguousarray(stars.mags[band], dtype=np.float64).tobytes())
    for block in background.blocks if background is not None else ():
        for tensor in block.tensors():
            digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def use_checkpoints(folder: Path, config: Config, stars, background: BackgroundFlows | None = None) -> None:
    """Make ``folder`` ready for this fit's checkpoints: kept when they were made
    by the same config and stars (a resume), emptied with a warning otherwise,
    so a changed config never resumes from another fit's state."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "fingerprint.txt"
    fingerprint = run_fingerprint(config, stars, background)
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        return
    stale = [p for p in folder.iterdir() if p != stamp]
    if stale:
        warnings.warn(
            f"checkpoints in '{folder}' were made for another config or other stars; starting afresh",
            RuntimeWarning,
            stacklevel=4,  # the caller of fit()
        )
        for path in stale:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    tmp = stamp.with_suffix(".part")
    tmp.write_text(fingerprint + "\n")
    tmp.replace(stamp)


def fit_background(config: Config, stars=None, *, progress: bool = False) -> BackgroundFlows:
    """Train the background flows a config describes on its off-stream stars
    (:func:`offstream_stars`), as :func:`fit` does first.

    Arguments:
        config: The stream description; it must have ``model.background.blocks``.
        stars: A :class:`~streammix.data.StarTable` or table; default: read ``config.data.path``.
        progress: Show progress bars.

    Returns:
        The trained flows, to give :func:`fit` as ``background`` (or to save).

    Example:
        >>> cfg = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]},
        ...                         "model": {"background": {"blocks": []}}})
        >>> fit_background(cfg)
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: config: model.background.blocks: none, so there are no flows to train
    """
    if not config.model.background.blocks:
        raise InputError(f"{config.source or 'config'}: model.background.blocks: none, so there are no flows to train")
    stars = load_stars(config, stars)
    return _train_background(config, stars, offstream_stars(config, control_priors(config), stars), progress)


def _train_background(
    config: Config, stars, offstream: np.ndarray, progress: bool, pool: WorkerPool | None = None
) -> BackgroundFlows:
    """The background flows of ``config`` trained on the ``offstream`` stars (in ``pool``'s
    processes if given, else in new ones with ``fit.workers`` > 1)."""
    bg_cfg = config.model.background
    joint = bool(config.model.bands) and any(c.photometry for c in config.model.components)
    joint = joint or needs_background_bands(config)  # the astrometric marginal is needed either way
    view, limits = background_view(config)
    return BackgroundFlows.fit(
        stars, bg_cfg.blocks, bg_cfg.flow, train=offstream,
        marginal_without=config.model.bands if joint else (), errors=bg_cfg.error_context,
        limits=limits, locus=bg_cfg.locus, progress=progress, workers=config.fit.workers, pool=pool, view=view,
        phi2_context=bg_cfg.phi2_context, seed=config.fit.seed, device=config.fit.device,
    )


def fit(
    config: Config,
    stars=None,
    *,
    background: BackgroundFlows | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    pool: WorkerPool | None = None,
) -> FittedModel:
    """Fit the model a config describes to its stars.

    Arguments:
        config: The stream description.
        stars: A :class:`~streammix.data.StarTable` or table; default: read ``config.data.path``.
        background: Background flows trained already (:func:`fit_background`,
            or the ``background`` of a fitted model), used as they are
            instead of training new ones; they must be those the config
            describes (:func:`~streammix.background.check_background`), and
            are the same as the config would train only if they were trained
            on the same stars with the same ``fit.seed``.
        checkpoint_dir: Where checkpoints go; a rerun with the same folder resumes.
        progress: Show progress bars.
        pool: Worker processes open already (:func:`~streammix.parallel.worker_pool`), kept for
            the caller's work after the fit (its figures); None: ``fit.workers`` processes are
            started for the fit (with ``fit.workers`` > 1 on the CPU) and shut down at its end, or
            once the flows are trained when the members fit in this process (one member).

    Returns:
        The fitted model.
    """
    # the flows and the members share one set of spawned processes (each takes seconds to start:
    # those the members will use start once the stars are read, any more at the first call that needs them)
    with worker_pool(config.fit.workers, config.fit.device, pool) as fit_pool:
        return _fit(config, stars, background, checkpoint_dir, progress, fit_pool, own_pool=pool is None)


def _ready_worker() -> None:
    """Ready a worker process for a fit's calls: this module imported, and what a first
    optimizer step imports (about 1.6 s on torch 2.13's first AdamW step) done."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], foreach=True)
    parameter.sum().backward()
    optimizer.step()


def _fit(
    config: Config,
    stars,
    background: BackgroundFlows | None,
    checkpoint_dir: str | Path | None,
    progress: bool,
    pool: WorkerPool | None,
    own_pool: bool = False,
) -> FittedModel:
    """:func:`fit`, its worker processes (if any) in ``pool``, which it may close early if it
    opened it (``own_pool``)."""
    started = time.perf_counter()
    stars = load_stars(config, stars)
    priors = control_priors(config)
    template = build_mixture(config, stars, priors=priors)
    shared = _photometry_of(template)
    try:
        check_priors(template, priors)
    except ValueError as error:
        raise InputError(f"{config.source or 'config'}: {error}") from None
    if background is not None:
        check_background(background, config)
    if config.fit.cross_fit:  # before any training: every member needs stars to hold out and to train on
        folds = config.fit.folds
        counts = np.bincount(fold_of(stars.source_id, folds, config.fit.seed), minlength=folds)
        if counts.min() == 0 or counts.max() == len(stars):
            raise InputError(
                f"fit.cross_fit: {len(stars)} stars in {folds} folds leave a fold "
                f"{'empty' if counts.min() == 0 else 'with every star'} (folds of {counts.tolist()})"
            )
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if checkpoint_dir is not None:
        use_checkpoints(checkpoint_dir, config, stars, background)

    # CPU: with fit.workers > 1, members fit in parallel (spawned) processes
    workers = max(1, min(config.fit.workers, config.fit.ensemble)) if config.fit.device == "cpu" else 1
    if pool is not None and workers > 1:
        # the members will run in the pool: the processes they need start (and import) while this
        # one prepares and trains any flow it trains itself
        pool.start(_ready_worker, processes=workers)

    # 1. background flows on off-stream stars (unless given), then frozen
    joint = bool(config.model.bands) and any(c.photometry for c in config.model.components)
    t0 = time.perf_counter()
    bg_cfg = config.model.background
    background_logp = np.zeros(len(stars))
    n_offstream = None
    flow_stops: dict[str, str] = {}
    flow_seconds: dict[str, float] = {}
    flow_stars: dict[str, int] = {}
    if background is None and bg_cfg.blocks:
        offstream = offstream_stars(config, priors, stars)
        n_offstream = int(np.sum(offstream))
        flows_file = checkpoint_dir / "background" if checkpoint_dir is not None else None
        if flows_file is not None and (flows_file / "done").exists():
            view = background_view(config)[0]
            background = BackgroundFlows.load(flows_file, len(bg_cfg.blocks), view, device=config.fit.device)
        else:
            background = _train_background(config, stars, offstream, progress, pool)
            flow_stops, flow_seconds = background.per_flow("stopped_because"), background.per_flow("seconds")
            flow_stars = background.per_flow("trained_on")
            if flows_file is not None:
                background.save(flows_file)
                (flows_file / "done").touch()
    if background is not None:
        background_logp = background.log_prob(stars)
    background_logp_astrometry = None
    if background is not None and (joint or needs_background_bands(config)):
        background_logp_astrometry = background.log_prob(stars, exclude=config.model.bands)
    background_seconds = time.perf_counter() - t0
    if own_pool and pool is not None and workers == 1:
        # the members fit here: the flows' idle processes would hold their memory through them
        pool.close()

    # 2. the ensemble of mixtures
    dtype = getattr(torch, config.fit.dtype)
    n = len(stars)
    mixtures: list[Mixture] = []
    results: list[FitResult] = []
    members = list(range(config.fit.ensemble))
    jobs = [
        _MemberJob(
            config, member, priors, checkpoint_dir, progress and workers == 1, torch.get_num_threads() // workers or 1, shared
        )
        for member in members
    ]
    if workers > 1:
        # each worker prepares the stars' tensors once for the members it is dealt (every
        # workers-th); the main process, which fits none, prepares none (a joint model's
        # photometric preparation takes seconds, and memory)
        calls = [
            dict(
                jobs=jobs[first::workers], stars=stars, background_logp=background_logp,
                background_logp_astrometry=background_logp_astrometry,
            )
            for first in range(workers)
        ]  # fmt: skip
        dealt = map_spawned(_fit_members, calls, workers, label=f"ensemble of {len(members)}", progress=progress, pool=pool)
        outcomes: list = [None] * len(members)
        for first, fitted in enumerate(dealt):
            outcomes[first::workers] = fitted
    else:
        tensors = config_tensors(
            config, stars, background_logp, mixture=template, background_logp_astrometry=background_logp_astrometry
        )
        outcomes = [_fit_member(job, stars, tensors, background_logp_astrometry) for job in jobs]
    bounds = mixture_bounds(template)
    for member, (state, result) in zip(members, outcomes):
        # as load() builds a saved model: the state holds every table built from the stars
        mixture = build_mixture(config, bounds=bounds, photometry=shared).to(dtype=dtype, device=config.fit.device)
        mixture.load_state_dict(state)
        mixture.eval()
        mixtures.append(mixture)
        results.append(result)
        if not result.converged:
            warnings.warn(
                f"ensemble member {member} (seed {result.seed}) did not converge in {result.steps} steps; "
                "its probabilities are unreliable (raise fit.steps)",
                RuntimeWarning,
                stacklevel=3,  # the caller of fit()
            )
    counts, edges = np.histogram(stars.phi1, bins=config.model.grid_size, range=config.field.phi1)
    density = _smooth(counts / np.diff(edges), 3)
    summary = {
        "name": config.name,
        "n_stars": n,
        "n_offstream": n_offstream,
        "flows_stopped_because": flow_stops,
        "flows_seconds": flow_seconds,
        "flows_trained_on": flow_stars,
        "seconds": {
            "background": background_seconds,
            "mixtures": [r.seconds for r in results],
            "total": time.perf_counter() - started,
        },
        "members": [r.as_dict() for r in results],
        "converged": all(r.converged for r in results),
        "seed": config.fit.seed,
        "n_priors": len(priors),
    }
    return FittedModel(config, mixtures, background, density, summary)


@dataclass(frozen=True)
class _MemberJob:
    """One ensemble member's fit, picklable for a worker process."""

    config: Config
    member: int
    priors: list[ControlPrior]
    checkpoint_dir: Path | None
    progress: bool
    threads: int
    photometry: Any = None


def _fit_members(
    jobs: list[_MemberJob], stars, background_logp: np.ndarray, background_logp_astrometry: np.ndarray | None = None
) -> list[tuple[dict[str, torch.Tensor], FitResult]]:
    """Fit several members one after the other in one worker process, on the stars' tensors
    prepared once for them all (a joint model's photometric preparation takes seconds). The
    members are dealt before any starts, so a worker whose member fails fits none of the rest
    of its members (a resumed fit refits them; the others' checkpoints are kept)."""
    config = jobs[0].config
    with torch_threads(jobs[0].threads):  # restored after: the worker's process may serve other calls (a WorkerPool)
        tensors = config_tensors(
            config, stars, background_logp,
            mixture=build_mixture(config, stars, photometry=jobs[0].photometry, priors=jobs[0].priors),
            background_logp_astrometry=background_logp_astrometry,
        )  # fmt: skip
        return [_fit_member(job, stars, tensors, background_logp_astrometry) for job in jobs]


def _fit_member(
    job: _MemberJob,
    stars,
    tensors: StarTensors,
    background_logp_astrometry: np.ndarray | None = None,
):
    """Fit member ``job.member``: seed ``fit.seed + member``, its own held-out
    split and (members after the first) a bootstrap resample of the rest; with
    ``fit.cross_fit``, fold ``member`` mod ``fit.folds`` (:func:`~streammix.folds.fold_of`)
    held out and every other fold trained on.

    Joint models first fit ``fit.astrometry_steps`` steps on the astrometry
    alone (against ``background_logp_astrometry``), then the whole model."""
    config = job.config
    n = len(tensors)
    seed = config.fit.seed + job.member
    rng = np.random.default_rng(seed)
    if config.fit.cross_fit:  # hold out this member's fold: its stars are scored by the members holding it out
        fold = fold_of(stars.source_id, config.fit.folds, config.fit.seed)
        held_out = job.member % config.fit.folds
        valid_index, train_index = np.nonzero(fold == held_out)[0], np.nonzero(fold != held_out)[0]
    else:
        order = rng.permutation(n)
        n_valid = max(1, int(round(config.fit.validation_fraction * n)))
        valid_index, train_index = order[:n_valid], order[n_valid:]
        if config.fit.bootstrap and job.member > 0:  # member 0 is the reference fit on all stars
            train_index = rng.choice(train_index, size=train_index.size, replace=True)
    device = config.fit.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mixture = build_mixture(config, stars, photometry=job.photometry, priors=job.priors).to(
            dtype=getattr(torch, config.fit.dtype), device=device
        )
        warm_start(mixture, config, job.priors, config.fit.warm_start_steps)
        train = tensors.subset(torch.as_tensor(train_index, device=device))
        valid = tensors.subset(torch.as_tensor(valid_index, device=device))
        label = f"member {job.member + 1}/{config.fit.ensemble}"
        first = None
        isochrones = any(c.photometry for c in config.model.components)
        if background_logp_astrometry is not None and isochrones and config.fit.astrometry_steps > 0:
            astrometric = torch.as_tensor(background_logp_astrometry, dtype=tensors.background_logp.dtype, device=device)
            first = train_mixture(
                mixture,
                train.astrometry_only(astrometric[torch.as_tensor(train_index, device=device)]),
                valid.astrometry_only(astrometric[torch.as_tensor(valid_index, device=device)]),
                job.priors,
                config,
                seed=seed,
                checkpoint=job.checkpoint_dir / f"member{job.member}.astrometry.pt" if job.checkpoint_dir is not None else None,
                progress=job.progress,
                label=f"{label} astrometry",
                steps=config.fit.astrometry_steps,
            )
            mixture.train()
        result = train_mixture(
            mixture,
            train,
            valid,
            job.priors,
            config,
            seed=seed,
            checkpoint=job.checkpoint_dir / f"member{job.member}.pt" if job.checkpoint_dir is not None else None,
            progress=job.progress,
            label=label,
        )
        if first is not None:
            result.seconds += first.seconds
            result.astrometry_steps = first.steps
            result.astrometry_stopped_because = first.stopped_because
    return mixture.state_dict(), result


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    kernel = np.exp(-0.5 * (np.arange(-3 * width, 3 * width + 1) / width) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, 3 * width, mode="edge")
    return np.convolve(padded, kernel, mode="valid")
