r"""Posterior of the stream's isochrone (age, [Fe/H]) and distance zero-point with emcee.

Given membership weights :math:`w_i` (e.g. ``p_stream`` of a fitted model) and
the fitted distance-modulus track :math:`\mathrm{DM}_i \pm s_i` at each star,
:func:`sample_isochrone` samples

.. math::
    \theta = (\mathrm{age}, [\mathrm{Fe/H}], \Delta\mathrm{DM}\,[, \Delta E(B-V)])

with :class:`emcee.EnsembleSampler` under the **membership-weighted** log-likelihood

.. math::
    \log L(\theta) = \sum_{i:\,w_i > w_\mathrm{min}} w_i\,
        \log p_\mathrm{iso}\bigl(\mathbf m_i \mid \mathrm{age}, [\mathrm{Fe/H}],
        \mathrm{DM}_i + \Delta\mathrm{DM}, s_i, \mathbf A_i + \mathbf R\,\Delta E(B-V)\bigr),

where :math:`p_\mathrm{iso}` is the stream's photometric likelihood
(:class:`~streammix.photometry.PhotometricLikelihood`, magnitude limits and
mass function from the ``model.isochrone`` config section) and
:math:`w_\mathrm{min}` (``min_weight``, 0.01 by default) drops stars that would
add almost nothing but cost as much as members.

**Why not the mixture form.** The exact posterior of the isochrone would use
:math:`\sum_i \log\bigl(f_i\,p_\mathrm{iso} + (1 - f_i)\,p_\mathrm{bg}\bigr)`,
with the background's density of the same magnitudes and each star's prior
share :math:`f_i` before its magnitudes were seen, which the membership
weights are not; the weighted ("fractional") likelihood is used. (Where the
config gives a share of the stream's stars off the isochrone,
``outlier_fraction``, that share's term uses the background flows' density of
the magnitudes, ``field_log_density``, as the fit does.) It counts a star with
weight :math:`w` as :math:`w` of a member and never as evidence against an isochrone, so contamination among the
weighted stars broadens or biases the posterior; and when the weights come
from a fit that itself used the isochrone at the config's age and [Fe/H], they
already lean towards that isochrone. True memberships (a mock) make it exact.

**Priors.** Age (Gyr) and [Fe/H] uniform over the isochrone grid's range
(interpolation is bilinear in log age and [Fe/H], see
:meth:`~streammix.isochrone.IsochroneGrid.interpolate`); :math:`\Delta`\ DM
normal with standard deviation ``distmod_prior`` (0.5 mag); :math:`\Delta E(B-V)`
normal with standard deviation ``ebv_prior`` (0.1 mag) and
:math:`\mathbf R = \mathbf A / E(B-V)` from :data:`EXTINCTION_COEFFICIENTS`
(:mod:`streammix.extinction`), on top of ``model.isochrone.reddening`` where the
config sets one.
When the isochrone source is not a grid (one MIST or PARSEC file, e.g. a
PS1 isochrone), age and [Fe/H] are fixed to the file's isochrone closest to
the config's and only the offsets are sampled; the summary says so.

**Sampling.** Before emcee, a coarse 5 x 5 (age, [Fe/H]) search and a
Nelder-Mead polish find the mode; the walkers start in a small ball whose size
comes from the curvature there. Each likelihood evaluation rebuilds the
isochrone and its quadrature (``nodes`` segments, 150 by default) and
evaluates every weighted star in float32.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize

from .config import IsochroneConfig
from .data import StarTable, read_table
from .errors import InputError
from .extinction import EXTINCTION_COEFFICIENTS
from .fit import load
from .isochrone import IsochroneGrid
from .output import atomic_path, check_writable, write_json
from .photometry import (
    PhotometryTensors,
    isochrone_at,
    isochrone_source,
    likelihood_from_config,
    photometry_tensors,
    with_outliers,
)

__all__ = [
    "EXTINCTION_COEFFICIENTS",
    "IsochroneFitResult",
    "isochrone_fit_from_model",
    "sample_isochrone",
]


UNITS = {"age": "Gyr", "feh": "dex", "distmod_offset": "mag", "ebv_offset": "mag"}
# finite-difference steps of the start search
_START_STEP = {"age": 0.2, "feh": 0.05, "distmod_offset": 0.01, "ebv_offset": 0.005}


# ----------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class IsochroneFitResult:
    """The emcee chain of an isochrone fit and what it summarises to.

    Arguments:
        names: Sampled parameters, in the chain's last axis (``age`` [Gyr],
            ``feh``, ``distmod_offset`` [mag], ``ebv_offset`` [mag]).
        chain: Samples after burn-in, (steps, walkers, P).
        log_prob: Log-posterior of each sample, (steps, walkers).
        acceptance_fraction: Mean acceptance fraction of the walkers.
        autocorr_time: Integrated autocorrelation time per parameter (steps),
            emcee's estimate; unreliable when ``steps < 50 * max(autocorr_time)``.
        fixed: Parameters held fixed (age, [Fe/H] of a non-grid isochrone).
        settings: How it was run (walkers, steps, burn, seed, nodes, priors...).
        timings: Seconds spent (``setup``, ``start``, ``sampling``, ``total``,
            ``per_evaluation``) and ``evaluations``.
        n_stars: Stars in the likelihood (weight above ``min_weight``).
        weight_sum: Their summed weight.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> result = IsochroneFitResult(("distmod_offset",), rng.normal(0.0, 0.1, (200, 4, 1)), np.zeros((200, 4)),
        ...                             acceptance_fraction=0.5)
        >>> s = result.summary()["parameters"]["distmod_offset"]
        >>> round(s["median"], 1), round(s["p84"] - s["p16"], 1)
        (0.0, 0.2)
    """

    names: tuple[str, ...]
    chain: np.ndarray
    log_prob: np.ndarray
    acceptance_fraction: float
    autocorr_time: np.ndarray | None = None
    fixed: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    n_stars: int = 0
    weight_sum: float = 0.0

    def __post_init__(self) -> None:
        chain = np.asarray(self.chain, dtype=np.float64)
        names = tuple(str(name) for name in self.names)
        if chain.ndim != 3 or chain.shape[2] != len(names):
            raise InputError(f"chain: shape {chain.shape} is not (steps, walkers, {len(names)})")
        log_prob = np.asarray(self.log_prob, dtype=np.float64)
        if log_prob.shape != chain.shape[:2]:
            raise InputError(f"log_prob: shape {log_prob.shape} is not {chain.shape[:2]}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "chain", chain)
        object.__setattr__(self, "log_prob", log_prob)
        if self.autocorr_time is not None:
            object.__setattr__(self, "autocorr_time", np.asarray(self.autocorr_time, dtype=np.float64))

    @property
    def samples(self) -> np.ndarray:
        """The chain flattened over steps and walkers, (steps * walkers, P)."""
        return self.chain.reshape(-1, self.chain.shape[2])

    def percentiles(self, q: Sequence[float] = (16.0, 50.0, 84.0)) -> dict[str, np.ndarray]:
        """Percentiles ``q`` of each parameter's marginal posterior.

        Example:
            >>> import numpy as np
            >>> r = IsochroneFitResult(("age",), np.arange(100.0).reshape(100, 1, 1), np.zeros((100, 1)), 0.3)
            >>> r.percentiles([50])["age"].tolist()
            [49.5]
        """
        values = np.percentile(self.samples, q, axis=0)
        return {name: values[:, j] for j, name in enumerate(self.names)}

    def summary(self) -> dict[str, Any]:
        """Medians and 16th/84th percentiles of each parameter, fixed values,
        acceptance, autocorrelation, timings and settings (JSON-ready).

        Example:
            >>> import numpy as np
            >>> r = IsochroneFitResult(("distmod_offset",), np.zeros((10, 2, 1)), np.zeros((10, 2)), 0.4,
            ...                        fixed={"age": 12.0, "feh": -1.5})
            >>> r.summary()["fixed"], r.summary()["acceptance_fraction"]
            ({'age': 12.0, 'feh': -1.5}, 0.4)
        """
        parameters = {}
        for name, (p16, p50, p84) in self.percentiles().items():
            parameters[name] = {
                "median": float(p50), "p16": float(p16), "p84": float(p84),
                "minus": float(p50 - p16), "plus": float(p84 - p50), "unit": UNITS.get(name, ""),
            }  # fmt: skip
        tau = None if self.autocorr_time is None else [float(t) for t in self.autocorr_time]
        reliable = None
        if tau is not None and all(np.isfinite(tau)):
            reliable = bool(self.chain.shape[0] >= 50 * max(tau))
        out: dict[str, Any] = {
            "parameters": parameters,
            "fixed": {k: float(v) for k, v in self.fixed.items()},
            "acceptance_fraction": float(self.acceptance_fraction),
            "autocorr_time": dict(zip(self.names, tau)) if tau is not None else None,
            "autocorr_reliable": reliable,
            "n_samples": int(self.chain.shape[0] * self.chain.shape[1]),
            "n_stars": int(self.n_stars),
            "weight_sum": float(self.weight_sum),
            "seconds": dict(self.timings),
            "settings": dict(self.settings),
            "likelihood": "membership-weighted: sum_i w_i log p_iso(m_i | age, feh, DM_i + distmod_offset)",
        }
        if self.fixed:
            out["note"] = (
                "the isochrone source is not an (age, [Fe/H]) grid: age and [Fe/H] are fixed "
                "to the values in 'fixed' and only the offsets are sampled"
            )
        return out

    def write(self, folder: str | Path, *, overwrite: bool = False, figure: bool = True) -> list[Path]:
        """Write ``chain.npz`` (chain, log_prob, names), ``summary.json`` and, with
        ``figure``, ``figures/corner.png`` into ``folder``, each atomically.

        Arguments:
            folder: Output folder (created if needed).
            overwrite: Replace existing files.
            figure: Also draw the corner figure.

        Returns:
            The paths written.

        Example:
            >>> import tempfile, numpy as np
            >>> r = IsochroneFitResult(("distmod_offset",), np.zeros((5, 2, 1)), np.zeros((5, 2)), 0.4)
            >>> [p.name for p in r.write(tempfile.mkdtemp(), figure=False)]
            ['chain.npz', 'summary.json']
        """
        folder = Path(folder)
        targets = [folder / "chain.npz", folder / "summary.json"]
        targets += [folder / "figures" / "corner.png"] if figure else []
        for path in targets:
            check_writable(path, overwrite)
        with atomic_path(targets[0], overwrite) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, chain=self.chain, log_prob=self.log_prob, names=np.array(self.names))
        write_json(self.summary(), targets[1], overwrite)
        if figure:
            from .plot import DPI, plot_corner  # local import: matplotlib takes ~0.7 s to load

            fig = plot_corner(self.chain, self.names)
            targets[2].parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(targets[2], overwrite) as tmp:
                fig.savefig(tmp, format="png", dpi=DPI)
        return targets

    @classmethod
    def read(cls, folder: str | Path) -> IsochroneFitResult:
        """Read what :meth:`write` wrote.

        Example:
            >>> import tempfile, numpy as np
            >>> folder = tempfile.mkdtemp()
            >>> _ = IsochroneFitResult(("age",), np.ones((5, 2, 1)), np.zeros((5, 2)), 0.4).write(folder, figure=False)
            >>> IsochroneFitResult.read(folder).chain.shape
            (5, 2, 1)
        """
        folder = Path(folder)
        chain_path, summary_path = folder / "chain.npz", folder / "summary.json"
        for path in (chain_path, summary_path):
            if not path.is_file():
                raise InputError(f"isochrone fit '{folder}': no {path.name}")
        try:
            summary = json.loads(summary_path.read_text())
            with np.load(chain_path, allow_pickle=False) as data:
                chain, log_prob, names = data["chain"], data["log_prob"], [str(n) for n in data["names"]]
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"isochrone fit '{folder}': unreadable ({error})") from None
        tau = summary.get("autocorr_time")
        return cls(
            tuple(names),
            chain,
            log_prob,
            summary.get("acceptance_fraction", math.nan),
            autocorr_time=None if tau is None else np.array([tau[n] for n in names], dtype=float),
            fixed=summary.get("fixed", {}),
            settings=summary.get("settings", {}),
            timings=summary.get("seconds", {}),
            n_stars=summary.get("n_stars", 0),
            weight_sum=summary.get("weight_sum", 0.0),
        )


# ----------------------------------------------------------------------------- sampling


def _array(value: Any, name: str, unit: str | None = None) -> np.ndarray:
    if hasattr(value, "unit") and unit is not None:
        try:
            value = value.to_value(unit)
        except Exception:
            raise InputError(f"{name}: unit {value.unit} is not convertible to {unit}") from None
    try:
        return np.asarray(getattr(value, "value", value), dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: not numeric") from None


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch threads (None: as set), restoring the setting afterwards."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample_isochrone(
    mags,
    mag_err,
    extinction,
    weights,
    distmod,
    distmod_width,
    config=None,
    bands: Sequence[str] = ("gaia_g", "gaia_bp", "gaia_rp"),
    *,
    fit_extinction: bool = False,
    walkers: int = 12,
    steps: int = 100,
    burn: int = 40,
    seed: int = 0,
    nodes: int | None = 150,
    min_weight: float = 0.01,
    distmod_prior: float = 0.5,
    ebv_prior: float = 0.1,
    source=None,
    threads: int | None = 1,
    progress: bool = False,
    field_log_density=None,
) -> IsochroneFitResult:
    r"""Sample age, [Fe/H], a distance-modulus offset (and an extinction offset) with emcee.

    See the module docstring for the likelihood, the priors and the start.

    Arguments:
        mags: Apparent magnitudes (N, B), NaN where missing (array or Quantity).
        mag_err: Their errors (N, B).
        extinction: Extinction per band (N, B), or None for zero.
        weights: Membership weight of each star in [0, 1], (N,).
        distmod: Distance modulus of the stream track at each star (N,).
        distmod_width: The track's intrinsic DM spread at each star (N,) or a scalar (mag).
        config: The ``model.isochrone`` section (:class:`~streammix.config.IsochroneConfig`;
            None: the default, the embedded PARSEC grid).
        bands: Canonical band names of the columns of ``mags``.
        fit_extinction: Also sample an offset in E(B-V) (mag).
        walkers: emcee walkers (at least twice the number of parameters).
        steps: Steps kept after burn-in.
        burn: Steps discarded first.
        seed: Seed of the start and of emcee's moves.
        nodes: Quadrature segments of the likelihood (None: the config's ``nodes``).
        min_weight: Stars with weight at or below it are left out.
        distmod_prior: Standard deviation of the normal prior on the DM offset (mag).
        ebv_prior: Standard deviation of the normal prior on the E(B-V) offset (mag).
        source: A result of :func:`~streammix.photometry.isochrone_source` to reuse.
        threads: torch threads while sampling (None: leave as set).
        progress: Show emcee's progress bar.
        field_log_density: The field's log-density of each star's magnitudes (N,),
            needed where ``config.outlier_fraction`` is above 0: a star's term is
            then :math:`\ln[(1 - \epsilon)\, p_\mathrm{iso} + \epsilon\, p_\mathrm{field}]`,
            as in the fit (:class:`~streammix.mixture.Mixture`), so a member off
            the isochrone (a blue straggler) does not pull it.

    Returns:
        The :class:`IsochroneFitResult`.

    Raises:
        InputError: Shapes disagree, a weight is outside [0, 1], no star has
            weight above ``min_weight`` and photometry, a weighted star lacks a
            finite DM, too few walkers, (with ``fit_extinction``) a band
            without an extinction coefficient, or (with an outlier fraction)
            no finite ``field_log_density`` for the weighted stars.

    Example:
        >>> import numpy as np
        >>> from streammix.config import IsochroneConfig
        >>> from streammix.isochrone import default_isochrone
        >>> iso = default_isochrone(12.0, -1.5)
        >>> mass = np.linspace(0.6, iso.select(["main_sequence"]).mass_max, 40)
        >>> mags = iso.absolute_mags(mass, ["gaia_g", "gaia_bp", "gaia_rp"]) + 14.5
        >>> cfg = IsochroneConfig(path="iso.cmd")  # not read: a fixed isochrone is given as source
        >>> result = sample_isochrone(mags, np.full_like(mags, 0.02), None, np.ones(40), np.full(40, 14.5), 0.02,
        ...                           cfg, source=[iso], walkers=4, steps=30, burn=20, nodes=60)
        >>> result.names, result.fixed["age"], abs(result.summary()["parameters"]["distmod_offset"]["median"]) < 0.02
        (('distmod_offset',), 12.0, True)
    """
    import emcee  # local import: emcee loads scipy.stats (~0.7 s together), and only sampling needs it

    started = time.perf_counter()
    config = IsochroneConfig() if config is None else config
    bands = tuple(bands)
    mags = np.atleast_2d(_array(mags, "mags", "mag"))
    mag_err = np.atleast_2d(_array(mag_err, "mag_err", "mag"))
    n, n_bands = mags.shape
    if n_bands != len(bands) or not bands:
        raise InputError(f"mags: {n_bands} columns for bands {list(bands)}")
    if mag_err.shape != mags.shape:
        raise InputError(f"mag_err: shape {mag_err.shape} differs from mags {mags.shape}")
    if extinction is None:
        extinction = np.zeros_like(mags)
    extinction = np.atleast_2d(_array(extinction, "extinction", "mag"))
    if extinction.shape != mags.shape:
        raise InputError(f"extinction: shape {extinction.shape} differs from mags {mags.shape}")
    weights = _array(weights, "weights").ravel()
    distmod = _array(distmod, "distmod", "mag").ravel()
    width = np.broadcast_to(_array(distmod_width, "distmod_width", "mag"), (n,)) if n else np.zeros(0)
    for name, value in (("weights", weights), ("distmod", distmod)):
        if value.shape != (n,):
            raise InputError(f"{name}: {value.size} values for {n} stars")
    if np.any(~np.isfinite(weights) | (weights < 0) | (weights > 1)):
        raise InputError("weights: every weight must be a finite number in [0, 1]")
    has_photometry = (np.isfinite(mags) & np.isfinite(mag_err)).any(axis=1)
    use = (weights > min_weight) & has_photometry
    if not use.any():
        raise InputError(f"weights: no star has weight above min_weight={min_weight} and photometry")
    bad = use & ~(np.isfinite(distmod) & np.isfinite(width) & (width >= 0))
    if bad.any():
        raise InputError(
            f"distmod/distmod_width: {int(bad.sum())} weighted stars lack a finite DM or a width >= 0"
        )
    outliers = config.outlier_fraction
    if outliers > 0:
        if field_log_density is None:
            raise InputError(
                f"field_log_density: needed with model.isochrone.outlier_fraction {outliers} (the field's density of "
                "the magnitudes of the stars off the isochrone)"
            )
        field_log_density = _array(field_log_density, "field_log_density").ravel()
        if field_log_density.shape != (n,) or not np.all(np.isfinite(field_log_density[use])):
            raise InputError(f"field_log_density: {field_log_density.size} values for {n} stars, finite where weighted")
    for name, value in (("walkers", walkers), ("steps", steps)):
        if int(value) < 1:
            raise InputError(f"{name}: {value} is not a positive integer")
    if int(burn) < 0:
        raise InputError(f"burn: {burn} is negative")
    if fit_extinction:
        unknown = [band for band in bands if band not in EXTINCTION_COEFFICIENTS]
        if unknown:
            raise InputError(
                f"bands {unknown}: no extinction coefficient known, cannot fit an extinction offset"
            )
    if nodes is not None:
        config = config.model_copy(update={"nodes": int(nodes)})

    source = isochrone_source(config) if source is None else source
    is_grid = isinstance(source, IsochroneGrid)
    names = (["age", "feh"] if is_grid else []) + ["distmod_offset"]
    names += ["ebv_offset"] if fit_extinction else []
    ndim = len(names)
    if int(walkers) < 2 * ndim:
        raise InputError(f"walkers: {walkers} is fewer than twice the {ndim} parameters")
    if is_grid:
        bounds = {
            "age": (float(source.ages[0]), float(source.ages[-1])),
            "feh": (float(source.fehs[0]), float(source.fehs[-1])),
        }
        fixed: dict[str, float] = {}
    else:
        iso = isochrone_at(source, config.age, config.feh)
        bounds, fixed = {}, {"age": float(iso.age), "feh": float(iso.feh)}

    dtype = torch.float32
    stars = photometry_tensors(mags[use], mag_err[use], extinction[use], dtype=dtype)
    dm = torch.as_tensor(distmod[use], dtype=dtype)
    dm_width = torch.as_tensor(width[use], dtype=dtype)
    w = torch.as_tensor(weights[use], dtype=torch.float64)
    field = None
    if outliers > 0:  # the share off the isochrone, with the field's magnitudes
        field = torch.as_tensor(field_log_density[use], dtype=torch.float64)
    ratio = torch.as_tensor([EXTINCTION_COEFFICIENTS.get(b, 0.0) for b in bands], dtype=dtype)
    fixed_like = None
    if not is_grid:  # one isochrone: built once
        fixed_like = likelihood_from_config(
            config, bands, age=fixed["age"], feh=fixed["feh"], source=[iso], dtype=dtype
        )
    counter = {"evaluations": 0, "seconds": 0.0}  # local to this call

    def log_posterior(theta: np.ndarray) -> float:
        values = dict(zip(names, (float(t) for t in theta)))
        for name, (lo, hi) in bounds.items():
            if not lo <= values[name] <= hi:
                return -math.inf
        t0 = time.perf_counter()
        log_prior = -0.5 * (values["distmod_offset"] / distmod_prior) ** 2
        like = fixed_like
        if like is None:
            like = likelihood_from_config(
                config, bands, age=values["age"], feh=values["feh"], source=source, dtype=dtype
            )
        tensors = stars
        if fit_extinction:
            log_prior += -0.5 * (values["ebv_offset"] / ebv_prior) ** 2
            shifted = stars.extinction + values["ebv_offset"] * ratio
            tensors = PhotometryTensors(stars.mags, stars.mag_err, shifted, stars.has_mag)
        with torch.no_grad():
            logp = like.log_prob(dm + values["distmod_offset"], dm_width, tensors).to(torch.float64)
        if field is not None:
            logp = with_outliers(logp, field, outliers)
        total = float((w * logp).sum())
        counter["evaluations"] += 1
        counter["seconds"] += time.perf_counter() - t0
        return log_prior + total if math.isfinite(total) else -math.inf

    rng = np.random.default_rng(seed)
    with _torch_threads(threads):
        setup = time.perf_counter() - started
        t_start = time.perf_counter()
        centre, scale = _find_start(log_posterior, names, bounds, config)
        ball = centre + 0.5 * scale * rng.standard_normal((int(walkers), ndim))
        for j, name in enumerate(names):
            if name in bounds:
                lo, hi = bounds[name]
                pad = 1e-6 * (hi - lo)
                ball[:, j] = np.clip(ball[:, j], lo + pad, hi - pad)
        start_seconds = time.perf_counter() - t_start
        t_sample = time.perf_counter()
        sampler = emcee.EnsembleSampler(int(walkers), ndim, log_posterior)
        sampler.random_state = np.random.RandomState(int(seed)).get_state()  # emcee's moves draw from it
        sampler.run_mcmc(ball, int(burn) + int(steps), progress=progress)
        sample_seconds = time.perf_counter() - t_sample
    chain = sampler.get_chain(discard=int(burn))
    log_prob = sampler.get_log_prob(discard=int(burn))
    try:
        tau = sampler.get_autocorr_time(discard=int(burn), tol=0)
    except Exception:  # pragma: no cover - emcee cannot estimate it
        tau = None
    evaluations = counter["evaluations"]
    return IsochroneFitResult(
        tuple(names),
        chain,
        log_prob,
        float(np.mean(sampler.acceptance_fraction)),
        autocorr_time=tau,
        fixed=fixed,
        settings={
            "walkers": int(walkers), "steps": int(steps), "burn": int(burn), "seed": int(seed),
            "nodes": int(config.nodes), "min_weight": float(min_weight), "bands": list(bands),
            "fit_extinction": bool(fit_extinction), "distmod_prior_sigma": float(distmod_prior),
            "ebv_prior_sigma": float(ebv_prior), "prior_bounds": {k: list(v) for k, v in bounds.items()},
            "isochrone": "grid" if is_grid else "fixed", "start": dict(zip(names, map(float, centre))),
            "start_scale": dict(zip(names, map(float, scale))),
        },  # fmt: skip
        timings={
            "setup": setup, "start": start_seconds, "sampling": sample_seconds,
            "total": time.perf_counter() - started, "evaluations": evaluations,
            "per_evaluation": counter["seconds"] / max(evaluations, 1),
        },  # fmt: skip
        n_stars=int(use.sum()),
        weight_sum=float(weights[use].sum()),
    )


def _find_start(log_posterior, names: list[str], bounds: dict, config) -> tuple[np.ndarray, np.ndarray]:
    """The posterior mode (coarse grid, then Nelder-Mead) and a per-parameter scale from its curvature."""
    start = {name: 0.0 for name in names}
    if "age" in bounds:
        best = -math.inf
        ages = np.geomspace(*bounds["age"], 5)
        fehs = np.linspace(*bounds["feh"], 5)
        for age in ages:
            for feh in fehs:
                theta = np.array([age, feh] + [0.0] * (len(names) - 2))
                value = log_posterior(theta)
                if value > best:
                    best, start["age"], start["feh"] = value, age, feh
        if not math.isfinite(best):
            start["age"] = float(np.clip(config.age, *bounds["age"]))
            start["feh"] = float(np.clip(config.feh, *bounds["feh"]))
    x0 = np.array([start[name] for name in names])
    step = np.array([_START_STEP[name] for name in names])
    simplex = np.vstack([x0] + [x0 + 2.5 * step * np.eye(len(names))[j] for j in range(len(names))])
    for j, name in enumerate(names):  # keep the simplex inside the prior
        if name in bounds:
            lo, hi = bounds[name]
            reflected = np.where(simplex[:, j] > hi, 2 * x0[j] - simplex[:, j], simplex[:, j])
            simplex[:, j] = reflected.clip(lo, hi)

    def objective(theta: np.ndarray) -> float:
        value = log_posterior(theta)
        return -value if math.isfinite(value) else 1e300

    result = minimize(
        objective, x0, method="Nelder-Mead",
        options={"initial_simplex": simplex, "maxfev": 40 * len(names), "xatol": 1e-3, "fatol": 0.05},
    )  # fmt: skip
    centre = result.x if result.fun < objective(x0) else x0
    f0 = -objective(centre)
    scale = np.empty(len(names))
    for j, name in enumerate(names):
        h = step[j]
        up, down = centre.copy(), centre.copy()
        up[j] += h
        down[j] -= h
        f_up, f_down = log_posterior(up), log_posterior(down)
        curvature = (f_up + f_down - 2.0 * f0) / h**2
        scale[j] = 1.0 / math.sqrt(-curvature) if math.isfinite(curvature) and curvature < 0 else h
        if name in bounds:
            lo, hi = bounds[name]
            scale[j] = min(scale[j], 0.1 * (hi - lo))
    return centre, scale


# ----------------------------------------------------------------------------- from a fitted model


def _model_folders(model_dir: Path) -> tuple[Path, Path]:
    """(the model folder, the run folder around it) for a run folder or a model folder."""
    if (model_dir / "model" / "model.json").is_file():
        return model_dir / "model", model_dir
    return model_dir, model_dir.parent


def _read_model_stars(config, stars, run_dir: Path, model_dir: Path, bands: Sequence[str]):
    """The stars to use: ``stars`` (StarTable, table or path), else data.path, else a stars.fits."""
    columns = config.data.column_map()
    missing_bands = {b: b for b in bands if b not in columns.bands}
    if missing_bands:  # the model's bands, read from columns of the same name
        columns = columns.model_copy(update={"bands": {**columns.bands, **missing_bands}})
    if isinstance(stars, StarTable):
        return stars
    name = "stars"
    if stars is None:
        candidates = [Path(config.data.path)] if config.data.path else []
        candidates += [run_dir / "stars.fits", model_dir / "stars.fits"]
        found = [path for path in candidates if path.is_file()]
        if not found:
            tried = ", ".join(f"'{p}'" for p in candidates)
            raise InputError(f"stars: none given and no star file found (tried {tried}); pass --data")
        stars = found[0]
    if isinstance(stars, (str, Path)):
        path = Path(stars)
        if not path.is_file():
            raise InputError(f"file '{path}': no such file")
        name = f"file '{path}'"
        stars = read_table(path)
    if config.data.gaia_frame is not None:
        return StarTable.from_gaia(
            stars, config.data.gaia_frame, columns, reflex_distance=config.data.reflex_distance, name=name
        )
    return StarTable.from_table(stars, columns, name=name)


def isochrone_fit_from_model(
    model_dir: str | Path,
    stars=None,
    *,
    component: str = "stream",
    bands: Sequence[str] | None = None,
    fit_extinction: bool = False,
    walkers: int = 12,
    steps: int = 100,
    burn: int = 40,
    seed: int = 0,
    nodes: int | None = 150,
    min_weight: float = 0.01,
    progress: bool = False,
) -> IsochroneFitResult:
    r"""The isochrone posterior of a fitted model's stream (:func:`sample_isochrone`).

    Weights are ``p_<component>`` of the model's membership of the stars, the
    DM and its width the component's median tracks at each star's phi1, the
    isochrone settings the model's ``model.isochrone`` section.

    Stars: ``stars`` if given (a :class:`~streammix.data.StarTable`, a table
    or a file), else the config's ``data.path`` when that file exists (as
    given, relative to the working folder), else ``stars.fits`` in the run
    folder (the one ``streammix demo``/``fit`` wrote, holding ``model/``),
    else ``stars.fits`` in the model folder. Tables are read with the
    config's column map, the model's bands added from columns of the same
    name. Stars outside the field's phi1 range are dropped.

    Arguments:
        model_dir: A run folder (holding ``model/``) or a model folder.
        stars: The stars (see above).
        component: The stream-like component whose membership weights the stars.
        bands: Bands to use instead of the model's ``model.bands``.
        fit_extinction, walkers, steps, burn, seed, nodes, min_weight, progress:
            As in :func:`sample_isochrone`.

    Returns:
        The result; its ``settings`` also name the model and the component.

    Raises:
        InputError: No model there, no bands, a band missing from the stars,
            an unknown component, no DM track, or no star with weight.
    """
    model_dir = Path(model_dir)
    model_folder, run_dir = _model_folders(model_dir)
    model = load(model_folder)
    config = model.config
    bands = list(config.model.bands if bands is None else bands)
    if len(bands) < 2:
        raise InputError(
            f"model '{model_folder}': model.bands lists {bands}; an isochrone fit needs two or more "
            "bands (pass bands / --band)"
        )
    if component not in model.component_names:
        known = ", ".join(model.component_names)
        raise InputError(f"component '{component}': not in the model (components: {known})")
    table = _read_model_stars(config, stars, run_dir, model_folder, bands)
    missing = [b for b in bands if b not in table.mags]
    if missing:
        have = list(table.bands) or "none"
        raise InputError(f"bands {missing}: no magnitude column in the stars (they have {have})")
    lo, hi = config.field.phi1
    table = table[(table.phi1 >= lo) & (table.phi1 <= hi)]
    if len(table) == 0:
        raise InputError(f"stars: none inside the field's phi1 range [{lo}, {hi}]")
    members = model.membership(table, dropout_samples=0)
    weights = np.clip(np.asarray(members[f"p_{component}"], dtype=np.float64), 0.0, 1.0)
    grid = np.linspace(lo, hi, 501)
    tracks = model.tracks(grid, dropout_samples=0)
    key = f"{component}_distmod"
    if key not in tracks.colnames or f"{key}_width" not in tracks.colnames:
        raise InputError(f"component '{component}': the model has no distance-modulus track (needs parallax)")
    distmod = np.interp(table.phi1, grid, np.asarray(tracks[key].to_value("mag")))
    width = np.interp(table.phi1, grid, np.asarray(tracks[f"{key}_width"].to_value("mag")))
    spread = config.model.isochrone.colour_spread
    no_errors = [b for b in bands if not np.any(table.mag_errs[b] > 0)]
    if no_errors and not spread > 0:
        raise InputError(
            f"bands {no_errors}: no magnitude errors in the stars (columns <band>_err or columns.band_errors) "
            "and model.isochrone.colour_spread is 0"
        )
    mags = np.stack([table.mags[b] for b in bands], axis=1)
    errs = np.stack([table.mag_errs[b] for b in bands], axis=1)
    # a band without an error cannot enter the likelihood, unless the model's colour
    # spread stands in for the errors (as the fit itself does)
    errs = np.where(errs > 0, errs, 0.0 if spread > 0 else np.nan)
    extinction = np.stack([table.extinction.get(b, np.zeros(len(table))) for b in bands], axis=1)
    field = None
    if config.model.isochrone.outlier_fraction > 0:  # the fit's share of the stars off the isochrone
        if sorted(bands) != sorted(config.model.bands) or model.background is None:
            raise InputError(
                f"bands {bands}: with model.isochrone.outlier_fraction the fit needs the model's bands "
                f"{list(config.model.bands)} and its background flows (the field's density of the magnitudes)"
            )
        field = model.background.conditional_log_prob(table, bands)
    result = sample_isochrone(
        mags, errs, extinction, weights, distmod, width, config.model.isochrone, bands,
        fit_extinction=fit_extinction, walkers=walkers, steps=steps, burn=burn, seed=seed,
        nodes=nodes, min_weight=min_weight, progress=progress, field_log_density=field,
    )  # fmt: skip
    settings = {**result.settings, "model": str(model_folder), "component": component}
    settings["n_stars_read"] = len(table)
    return replace(result, settings=settings)
