"""The interface of a cross-track profile: a stream's density across its track.

A stream-like component's phi2 density is a profile centred on its track,
``phi2(phi1)``, with a scale ``phi2_width(phi1)``, perhaps shaped by more
parameters of its own (a Student-t's degrees of freedom, the wings of a core
and wings), each a smooth function of phi1 like every other parameter. The
density is truncated to the field's phi2 range and broadened by each star's
phi2 error.

A new profile is one subclass in one file, one line in the registry
(:data:`streammix.profiles.PROFILES`) and one entry in the profile tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import Tensor

__all__ = ["CrossTrackProfile", "ProfileParameter"]


@dataclass(frozen=True)
class ProfileParameter:
    """A shape parameter a profile adds to its component, with its defaults.

    Arguments:
        name: The parameter's name, ``phi2_`` and what it is (``"phi2_dof"``).
        low: Default lower bound, in ``unit`` (a config's ``bounds`` replaces it).
        high: Default upper bound.
        init: Default warm-start value (a config's ``init`` replaces it).
        unit: Its astropy unit string ("" for a number).

    Example:
        >>> ProfileParameter("phi2_dof", 1.0, 30.0, 4.0).init
        4.0
    """

    name: str
    low: float
    high: float
    init: float
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.low <= self.init <= self.high:
            raise ValueError(f"profile parameter '{self.name}': init {self.init} outside [{self.low}, {self.high}]")


class CrossTrackProfile(ABC):
    """A stream's density in phi2 about its track, truncated to the field.

    Subclasses set :attr:`name` and :attr:`parameters` and implement the three
    methods. ``params`` maps parameter names to tensors (or, for
    :meth:`standard_draws`, arrays) that broadcast against the stars; it
    always holds ``"phi2"`` (the track) and ``"phi2_width"`` (the scale) and
    the profile's own :attr:`parameters`.
    """

    #: The name a config chooses the profile by (``profile:``).
    name: ClassVar[str]
    #: The shape parameters the profile adds, beyond phi2 and phi2_width.
    parameters: ClassVar[tuple[ProfileParameter, ...]] = ()

    @abstractmethod
    def log_prob(
        self, phi2: Tensor, phi2_err: Tensor, params: Mapping[str, Tensor], phi2_range: tuple[float, float]
    ) -> Tensor:
        """log density of the observed ``phi2`` (per deg), given its error, normalised on ``phi2_range``."""

    @abstractmethod
    def cdf(
        self, phi2: Tensor, phi2_err: Tensor, params: Mapping[str, Tensor], phi2_range: tuple[float, float]
    ) -> Tensor:
        """P(observed phi2' < ``phi2``) under :meth:`log_prob`'s density: 0 at the low edge, 1 at the high."""

    @abstractmethod
    def standard_draws(
        self, normal: np.ndarray, params: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        """Draws of the profile at unit scale and zero centre, made from standard normal draws ``normal``.

        A mock star's true phi2 is then ``phi2 + phi2_width * draws`` (not
        truncated; the mock keeps the stars inside its field). The Gaussian
        returns ``normal`` itself, so it draws exactly what a plain normal did.
        """
