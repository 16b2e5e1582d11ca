"""The background's frozen density: conditional flows on blocks of coordinates.

The flows are trained once on off-stream stars (farther than a given distance
in phi2 from a prior track) and then frozen, so each star's background
log-density over its observed coordinates is a constant computed once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .blocks import BlockModel, FlowBlockConfig
from .config import BLOCK_KINDS, Config, FlowConfig
from .errors import InputError
from .flows import read_state
from .parallel import WorkerPool, worker_pool
from .selection import ObservedProperMotions

__all__ = [
    "BackgroundFlows",
    "background_view",
    "block_errors",
    "block_values",
    "check_background",
    "load_block",
    "offstream_mask",
]


def offstream_mask(phi1: np.ndarray, phi2: np.ndarray, track_phi1: np.ndarray, track_phi2: np.ndarray, distance: float) -> np.ndarray:
    """Stars farther than ``distance`` (deg) in phi2 from a prior track.

    The track is interpolated linearly and held constant beyond its ends. With
    no track points, every star counts as off-stream.

    Example:
        >>> import numpy as np
        >>> offstream_mask(np.array([0., 0., 5.]), np.array([0.1, 2.0, -3.0]),
        ...                np.array([-10., 10.]), np.array([0., 0.]), 1.0).tolist()
        [False, True, True]
    """
    if len(track_phi1) == 0:
        return np.ones(len(phi1), dtype=bool)
    order = np.argsort(track_phi1)
    centre = np.interp(phi1, np.asarray(track_phi1)[order], np.asarray(track_phi2)[order])
    return ~(np.abs(phi2 - centre) <= distance)


@dataclass
class BackgroundFlows:
    """The background density: a product over blocks of conditional flows.

    Arguments:
        blocks: One density per block of coordinates (a
            :class:`~streammix.blocks.BlockModel`: a
            :class:`~streammix.flows.BlockDensity` for ``kind: flow``...).
        view: How the flows see the stars, e.g. a
            :class:`~streammix.selection.ObservedProperMotions` (anything with
            ``apply(stars) -> stars`` that keeps the density, i.e. a map of unit
            Jacobian); None: as they are.
    """

    blocks: list[BlockModel]
    view: Any = None

    @property
    def names(self) -> list[tuple[str, ...]]:
        return [tuple(b.names) for b in self.blocks]

    def per_flow(self, attribute: str) -> dict[str, Any]:
        """One attribute of each trained flow (e.g. ``stopped_because``, ``seconds``: see
        :class:`~streammix.flows.ConditionalFlow`), keyed by its coordinates joined by
        spaces; blocks without flows (a Gaussian mixture) have none.

        Arguments:
            attribute: The flows' attribute.
        """
        return {
            " ".join(pattern): getattr(flow, attribute, None)
            for block in self.blocks
            for pattern, flow in getattr(block, "flows", {}).items()
        }

    @classmethod
    def fit(
        cls,
        stars,
        blocks: Sequence[Any],
        settings: FlowConfig,
        *,
        train: np.ndarray | None = None,
        marginal_without: Sequence[str] = (),
        errors: bool = False,
        limits: dict[str, tuple[float | None, float | None]] | None = None,
        locus: Sequence[str] | None = None,
        progress: bool = False,
        workers: int = 1,
        pool: WorkerPool | None = None,
        view: Any = None,
        phi2_context: bool = False,
        seed: int = 0,
        device: str = "cpu",
    ) -> BackgroundFlows:
        """Train one block density per block on the ``train`` stars (default: all).

        Arguments:
            stars: The stars (a :class:`~streammix.data.StarTable`).
            blocks: Each block's settings (an entry of
                ``model.background.blocks``, e.g. a
                :class:`~streammix.blocks.FlowBlockConfig`), or just its
                coordinates (a flow block).
            settings: Architecture and training settings of the flows, for
                the blocks without their own.
            train: Boolean mask of the training stars (default: all).
            marginal_without: Coordinates (e.g. the bands) that
                :meth:`log_prob` may be asked to ``exclude``: a block that
                models some of them together with other coordinates also
                learns the marginal density of those others, for every pattern
                of observed coordinates, so that the exclusion is a true
                marginal rather than the loss of the whole block.
            errors: Condition the flows of blocks without bands on the log
                measurement errors of their coordinates (see
                :class:`~streammix.flows.BlockDensity`). Blocks with bands are
                not: magnitude errors follow from the magnitudes, so a density
                of magnitudes given their errors would be nearly degenerate.
            limits: ``{name: (low, high)}`` hard limits the catalogue was cut
                on (None for an open side); each block models its limited
                coordinates inside them only (see
                :class:`~streammix.flows.BlockDensity`).
            locus: Three bands ``(mag, blue, red)``: the block holding all
                three models them in colour-locus coordinates
                (:class:`~streammix.locus.ColourLocus`).
            progress: Show progress bars.
            workers: Processes that train a block's flows (one per pattern of
                observed coordinates) at once (see :meth:`BlockDensity.fit`).
            pool: Worker processes started already, used in place of new ones
                with ``workers`` > 1 (:class:`~streammix.parallel.WorkerPool`;
                None: one set for every block).
            view: How the flows see the stars (see the class); ``limits`` are in its coordinates.
            phi2_context: Condition every block's flows on phi2 as well as phi1,
                p(x | phi1, phi2): a field's proper motions and parallaxes
                change across the stream (on the GD-1 field the median
                pm_phi2 of the off-stream stars changes by ~1 mas/yr over
                its 11 deg of phi2), which flows of phi1 alone average out.
            seed: Seed of every flow's training.
            device: Torch device to train on, ``"cpu"`` or e.g. ``"cuda"``.
        """
        if view is not None:
            stars = view.apply(stars)
        sel = np.ones(len(stars), dtype=bool) if train is None else np.asarray(train, dtype=bool)
        fitted = []
        with worker_pool(workers, device, pool) as pool:  # one set of processes for every block
            for block in blocks:
                if not hasattr(block, "train"):
                    block = FlowBlockConfig(coordinates=list(block))
                names = tuple(block.coordinates)
                conditioned = errors and not set(names) & set(stars.mags)
                fitted.append(
                    block.train(
                        block_values(stars, names)[sel], stars.phi1[sel], settings,
                        marginal_without=marginal_without, progress=progress, workers=workers, pool=pool,
                        errors=block_errors(stars, names)[sel] if conditioned else None,
                        limits={name: bounds for name, bounds in (limits or {}).items() if name in names},
                        locus=tuple(locus) if locus is not None and set(locus) <= set(names) else None,
                        phi2=_phi2_of(stars)[sel] if phi2_context else None,
                        seed=seed, device=device,
                    )
                )
        return cls(fitted, view)

    def log_prob(self, stars, *, exclude: Sequence[str] = (), threads: int | None = None) -> np.ndarray:
        """Per-star log-density summed over blocks (observed coordinates only).

        ``threads``: CPU threads for the flows (default:
        :data:`~streammix.flows.DEFAULT_THREADS`).

        Coordinates in ``exclude`` are left out: a block of excluded
        coordinates only is skipped, and a block that mixes them with others
        contributes the marginal density of the others (which :meth:`fit`
        learns when told ``marginal_without``).
        """
        if self.view is not None:
            stars = self.view.apply(stars)
        total = np.zeros(len(stars))
        excluded = set(exclude)
        for block in self.blocks:
            if set(block.names) <= excluded:
                continue
            total += _block_log_prob(block, stars, excluded, threads)
        return total

    def conditional_log_prob(self, stars, of: Sequence[str], *, threads: int | None = None) -> np.ndarray:
        """Per-star log-density of the coordinates ``of`` given the star's other coordinates.

        ln p(of | others, phi1) = ``log_prob(stars) - log_prob(stars, exclude=of)``,
        evaluated on the blocks that involve ``of`` only: a block of only
        those coordinates contributes its own log-density, a block that mixes
        them with others its log-density minus its marginal without them
        (which :meth:`fit` learns when told ``marginal_without``), and a
        block without any of them cancels and is not evaluated. A star with
        none of ``of`` observed gets 0.

        Arguments:
            stars: The stars (a :class:`~streammix.data.StarTable`).
            of: The coordinates (e.g. the bands) whose density is wanted.
            threads: CPU threads for the flows (default:
                :data:`~streammix.flows.DEFAULT_THREADS`).

        Returns:
            float64 array (N,).
        """
        if self.view is not None:
            stars = self.view.apply(stars)
        total = np.zeros(len(stars))
        wanted = set(of)
        for block in self.blocks:
            if not set(block.names) & wanted:
                continue
            term = _block_log_prob(block, stars, set(), threads)
            if not set(block.names) <= wanted:
                term = term - _block_log_prob(block, stars, wanted, threads)
            total += term
        return total

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for i, block in enumerate(self.blocks):
            block.save(folder / f"block{i}.pt")

    @classmethod
    def load(cls, folder: str | Path, count: int | None = None, view: Any = None, *, device: str = "cpu") -> BackgroundFlows:
        """Read the blocks :meth:`save` wrote onto torch ``device``.

        Arguments:
            folder: The folder :meth:`save` wrote.
            count: The number of blocks (None: every ``block<i>.pt`` there, from 0 on).
            view: How the flows see the stars, as they were fitted with (see the class).
            device: Torch device to load onto.
        """
        folder = Path(folder)
        if count is None:
            count = 0
            while (folder / f"block{count}.pt").is_file():
                count += 1
        return cls([load_block(folder / f"block{i}.pt", device=device) for i in range(count)], view)


def _block_log_prob(block: BlockModel, stars, excluded: set[str], threads: int | None) -> np.ndarray:
    """One block's log-density of each star's observed coordinates, those in ``excluded`` left out."""
    values = block_values(stars, block.names)
    for j, name in enumerate(block.names):
        if name in excluded:
            values[:, j] = np.nan
    errors = block_errors(stars, block.names) if block.errors else None
    phi2 = _phi2_of(stars) if block.phi2_context else None
    return block.log_prob(values, stars.phi1, errors=errors, threads=threads, phi2=phi2)


def load_block(path: str | Path, *, device: str = "cpu") -> BlockModel:
    """Read one block :meth:`BackgroundFlows.save` wrote, of whichever kind its
    state records (a file without a kind, written before blocks had kinds, is a
    flow block).

    Arguments:
        path: The block's file.
        device: Torch device to load onto.

    Example:
        >>> import tempfile
        >>> import torch
        >>> path = Path(tempfile.mkdtemp()) / "block0.pt"
        >>> torch.save({"kind": "spline_forest", "names": ["x"]}, path)
        >>> load_block(path)
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: flow file '...block0.pt': block kind 'spline_forest' is not one of flow, gaussian_mixture
    """
    state = read_state(path)
    kind = state.get("kind", "flow")
    if kind not in BLOCK_KINDS:
        raise InputError(f"flow file '{path}': block kind {kind!r} is not one of {', '.join(BLOCK_KINDS)}")
    return BLOCK_KINDS[kind].density_from_state(state, device=device)


def background_view(
    config: Config,
) -> tuple[ObservedProperMotions | None, dict[str, tuple[float | None, float | None]]]:
    """How the background flows see the stars, and their hard limits.

    With a proper-motion cut in ``data.selection``, the flows see the observed
    (pmra cos dec, pmdec) in place of the stream-frame proper motions
    (:class:`~streammix.selection.ObservedProperMotions`) and the cuts are
    among the limits, so the flows' density ends at the box as the data do;
    else they see the stars as they are, with ``model.background.limits``.

    Arguments:
        config: The stream's configuration.

    Returns:
        ``(view, limits)``: the view (None: the stars as they are) and
        ``{name: (low, high)}``.

    Example:
        >>> cfg = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]}})
        >>> background_view(cfg)
        (None, {})
    """
    limits = dict(config.model.background.limits)
    sel = config.data.selection
    if sel is None:
        return None, limits
    modelled = {c for block in config.model.background.blocks for c in block.coordinates}
    if sel.parallax is not None and "parallax" in modelled:
        limits.setdefault("parallax", tuple(sel.parallax))
    view = None
    if sel.pmra is not None and {"pm_phi1_cosphi2", "pm_phi2"} <= modelled:
        view = ObservedProperMotions(config.frame, sel.reflex_distance)
        limits.update({"pm_phi1_cosphi2": tuple(sel.pmra), "pm_phi2": tuple(sel.pmdec)})
    return view, limits


def check_background(background: BackgroundFlows, config: Config) -> None:
    """Check that trained background flows are those ``config`` describes.

    The blocks and their coordinates, the flow settings
    (``model.background.flow``), the contexts (``phi2_context``, and no
    error context unless ``error_context``), the colour locus, the limits and
    the view of the stars (:func:`background_view`) must all agree; the stars
    the flows were trained on are not checked.

    Arguments:
        background: The flows, e.g. those of a saved model.
        config: The stream's configuration.

    Raises:
        InputError: One line naming the first setting that differs.

    Example:
        >>> cfg = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]},
        ...                         "model": {"background": {"blocks": [["parallax"]]}}})
        >>> check_background(BackgroundFlows([]), cfg)
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: config: model.background.blocks: [['parallax']], but the given background has []
    """
    source = config.source or "config"
    bg_cfg = config.model.background
    expected = [tuple(block.coordinates) for block in bg_cfg.blocks]
    if background.names != expected:
        given = [list(names) for names in background.names]
        raise InputError(
            f"{source}: model.background.blocks: {[list(names) for names in expected]}, but the given background has {given}"
        )
    view, limits = background_view(config)
    if (view is None) != (background.view is None):
        raise InputError(
            f"{source}: data.selection: the flows of this config see the proper motions "
            f"{'as observed' if view is not None else 'in the stream frame'}, the given background's do not"
        )
    for i, (names, block_cfg, block) in enumerate(zip(expected, bg_cfg.blocks, background.blocks)):
        label = f"the given background's block {list(names)}"
        kind = getattr(block, "kind", "flow")
        if kind != block_cfg.kind:
            raise InputError(f"{source}: model.background.blocks.{i}.kind: {block_cfg.kind!r}, but {label} is a {kind} block")
        own = getattr(block_cfg, "flow", None) is not None
        for key in FlowConfig.model_fields:
            wanted, trained = getattr(block_cfg.settings(bg_cfg.flow), key), getattr(block.settings, key)
            if wanted != trained:
                where = f"blocks.{i}.flow" if own else "flow"
                raise InputError(f"{source}: model.background.{where}.{key}: {wanted!r}, but {label} was trained with {trained!r}")
        if block.phi2_context != bg_cfg.phi2_context:
            raise InputError(f"{source}: model.background.phi2_context: {bg_cfg.phi2_context}, but not in {label}")
        if block.errors and not bg_cfg.error_context:
            raise InputError(f"{source}: model.background.error_context: false, but {label} is conditioned on errors")
        locus = tuple(bg_cfg.locus) if bg_cfg.locus is not None and set(bg_cfg.locus) <= set(names) else None
        if locus != (tuple(block.locus.names) if block.locus is not None else None):
            raise InputError(f"{source}: model.background.locus: {bg_cfg.locus}, which {label} does not model as such")
        for name in names:
            wanted_limits = _open_sides(limits.get(name))
            if wanted_limits != _open_sides(block.limits.get(name)):
                raise InputError(
                    f"{source}: model.background.limits: {name} within {wanted_limits}, "
                    f"but {label} has {_open_sides(block.limits.get(name))}"
                )


def _open_sides(bounds) -> tuple[float | None, float | None]:
    """Limits as ``(low, high)`` floats, None (no limit, or an infinite one) for an open side."""
    if bounds is None:
        return (None, None)
    return tuple(None if v is None or not math.isfinite(float(v)) else float(v) for v in bounds)


def block_values(stars, names: Sequence[str]) -> np.ndarray:
    """The ``(N, D)`` values of a block, NaN where a coordinate is not observed."""
    observed = stars.observed
    columns = []
    for name in names:
        values = stars.mags[name] if name in stars.mags else getattr(stars, name)
        columns.append(np.where(observed[name], values, np.nan))
    return np.stack(columns, axis=1)



def block_errors(stars, names: Sequence[str]) -> np.ndarray:
    """The ``(N, D)`` measurement errors of a block's astrometric coordinates
    (zeros where a catalogue gives none)."""
    return np.stack([getattr(stars, f"{name}_err") for name in names], axis=1)


def _phi2_of(stars) -> np.ndarray:
    """The stars' phi2 for flows conditioned on it; a star without one is refused."""
    phi2 = np.asarray(stars.phi2, dtype=float)
    missing = int(np.count_nonzero(~np.isfinite(phi2)))
    if missing:
        raise InputError(
            f"phi2: {missing} stars have none, and the background flows are conditioned on it "
            "(model.background.phi2_context); drop those stars or switch it off"
        )
    return phi2
