"""Background blocks as plug-ins: what a block is, and the flow block's settings.

The background is a product over blocks of coordinates of densities given
phi1 (:class:`~streammix.background.BackgroundFlows`). Each entry of
``model.background.blocks`` is the settings of one block kind,
``{kind, coordinates, flow}``; the settings class trains the block's density
(:meth:`FlowBlockConfig.train`) and reads a saved one back
(:meth:`FlowBlockConfig.density_from_state`). The density itself is a
:class:`BlockModel`, whose ``state_dict`` records its ``kind`` and settings, so a
saved model says how to read each block.

A new kind is one file holding its settings class (a ``kind``, ``coordinates``
and the two methods) and its density, one line in
:data:`streammix.config.BLOCK_KINDS` and one entry in ``tests/test_blocks.py``;
:mod:`streammix.gaussian_mixture` is one.

Example:
    >>> block = FlowBlockConfig(coordinates=["parallax", "pm_phi2"], flow={"transforms": 1})
    >>> block.kind, block.settings(FlowConfig()).transforms, block.settings(FlowConfig()).bins
    ('flow', 1, 8)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field
from torch import Tensor

from .flows import BlockDensity
from .parallel import WorkerPool
from .settings import BlockSection, FlowConfig

__all__ = ["BlockModel", "FlowBlockConfig"]


@runtime_checkable
class BlockModel(Protocol):
    """What the background needs of a block's density (:class:`~streammix.flows.BlockDensity` is one).

    Attributes:
        kind: The block's kind (a key of :data:`streammix.config.BLOCK_KINDS`).
        names: Its coordinates, in column order.
        settings: The :class:`~streammix.settings.FlowConfig` it was trained with.
        errors: The coordinates whose measurement errors it uses.
        limits: ``{name: (low, high)}`` hard limits it models its coordinates within.
        locus: Its colour-locus coordinates, or None.
        phi2_context: Whether it is conditioned on phi2 as well as phi1.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> block = BlockDensity.fit(["x"], rng.normal(size=(100, 1)), rng.uniform(size=100),
        ...                          FlowConfig(transforms=1, hidden=8, epochs=1))
        >>> isinstance(block, BlockModel)
        True
    """

    kind: str
    names: tuple[str, ...]
    settings: FlowConfig
    errors: tuple[str, ...]
    limits: dict[str, tuple[float | None, float | None]]
    locus: Any
    phi2_context: bool

    def log_prob(
        self, values: np.ndarray, phi1: np.ndarray, *, errors: np.ndarray | None = None,
        threads: int | None = None, phi2: np.ndarray | None = None,
    ) -> np.ndarray:
        """ln p(each star's observed coordinates | phi1), NaN marking a missing value (0 with none)."""
        ...

    def save(self, path) -> Any:
        """Write the block as plain data (its ``kind``, settings and tensors) with
        :func:`torch.save`, which the kind's ``density_from_state`` reads back."""
        ...

    def tensors(self) -> Iterator[Tensor]:
        """Every trained weight, in a fixed order."""
        ...


class FlowBlockConfig(BlockSection):
    """A block of conditional normalizing flows (:class:`~streammix.flows.BlockDensity`): ``kind: flow``."""

    #: Whether the block models coordinates within hard limits (``model.background.limits``).
    limits_allowed: ClassVar[bool] = True
    #: Whether the block can model ``model.background.locus``.
    locus_allowed: ClassVar[bool] = True

    kind: Literal["flow"] = Field(
        "flow",
        description="the block's kind (streammix.config.BLOCK_KINDS): flow, conditional normalizing flows (the "
        "default); gaussian_mixture, a conditional Gaussian mixture",
    )
    coordinates: list[str] = Field(
        min_length=1, description="the block's coordinates and bands, modelled jointly given phi1"
    )
    flow: FlowConfig | None = Field(
        None, description="settings of this block, replacing model.background.flow (null: those)"
    )

    def train(
        self,
        values: np.ndarray,
        phi1: np.ndarray,
        shared: FlowConfig,
        *,
        marginal_without: Sequence[str] = (),
        errors: np.ndarray | None = None,
        limits: dict[str, tuple[float | None, float | None]] | None = None,
        locus: Sequence[str] | None = None,
        phi2: np.ndarray | None = None,
        progress: bool = False,
        workers: int = 1,
        pool: WorkerPool | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> BlockDensity:
        """Train the block's density on the training stars' ``values`` (see
        :meth:`streammix.flows.BlockDensity.fit` for the arguments)."""
        return BlockDensity.fit(
            tuple(self.coordinates), values, phi1, self.settings(shared),
            marginal_without=marginal_without, progress=progress, workers=workers, pool=pool, errors=errors,
            limits=limits, locus=locus, phi2=phi2, seed=seed, device=device,
        )  # fmt: skip

    @staticmethod
    def density_from_state(state: dict[str, Any], *, device: str = "cpu") -> BlockDensity:
        """The density a :meth:`~streammix.flows.BlockDensity.state_dict` describes."""
        return BlockDensity.from_state_dict(state, device=device)
