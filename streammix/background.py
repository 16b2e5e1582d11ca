"""The background's frozen density: conditional flows on blocks of coordinates.

The flows are trained once on off-stream stars (farther than a given distance
in phi2 from a prior track) and then frozen, so each star's background
log-density over its observed coordinates is a constant computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .flows import BlockDensity, FlowSettings

__all__ = ["BackgroundFlows", "offstream_mask"]


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
        blocks: One :class:`~streammix.flows.BlockDensity` per block of coordinates.
    """

    blocks: list[BlockDensity]

    @property
    def names(self) -> list[tuple[str, ...]]:
        return [tuple(b.names) for b in self.blocks]

    @classmethod
    def fit(
        cls,
        stars,
        blocks: Sequence[Sequence[str]],
        settings: FlowSettings,
        *,
        train: np.ndarray | None = None,
        progress: bool = False,
    ) -> BackgroundFlows:
        """Train one block density per block on the ``train`` stars (default: all)."""
        sel = np.ones(len(stars), dtype=bool) if train is None else np.asarray(train, dtype=bool)
        fitted = []
        for names in blocks:
            values = block_values(stars, names)[sel]
            fitted.append(BlockDensity.fit(tuple(names), values, stars.phi1[sel], settings, progress=progress))
        return cls(fitted)

    def log_prob(self, stars, *, exclude: Sequence[str] = ()) -> np.ndarray:
        """Per-star log-density summed over blocks (observed coordinates only),
        leaving out every block that models a coordinate in ``exclude``."""
        total = np.zeros(len(stars))
        for block in self.blocks:
            if not set(block.names) & set(exclude):
                total += block.log_prob(block_values(stars, block.names), stars.phi1)
        return total

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for i, block in enumerate(self.blocks):
            block.save(folder / f"block{i}.pt")

    @classmethod
    def load(cls, folder: str | Path, count: int) -> BackgroundFlows:
        folder = Path(folder)
        return cls([BlockDensity.load(folder / f"block{i}.pt") for i in range(count)])


def block_values(stars, names: Sequence[str]) -> np.ndarray:
    """The ``(N, D)`` values of a block, NaN where a coordinate is not observed."""
    observed = stars.observed
    columns = []
    for name in names:
        values = stars.mags[name] if name in stars.mags else getattr(stars, name)
        columns.append(np.where(observed[name], values, np.nan))
    return np.stack(columns, axis=1)

