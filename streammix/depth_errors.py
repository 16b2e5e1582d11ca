r"""Magnitude errors from a survey's depth, for catalogues that give none.

Some catalogues carry magnitudes without their errors (the GD-1 file of
``../shared/data`` has Pan-STARRS1 mean PSF magnitudes only). A survey's
depth says what they are: at its single-epoch :math:`5\sigma` depth
:math:`m_5` a detection has signal-to-noise 5, i.e. an error of
:math:`(2.5/\ln 10)/5 = 0.217` mag, and in the background-limited regime the
error grows with the flux's inverse, :math:`\propto 10^{0.4 (m - m_5)}`. A mean
over :math:`n` epochs divides it by :math:`\sqrt n`, and the calibration adds
a floor :math:`\sigma_0` in quadrature:

.. math::
    \sigma(m) = \sqrt{\sigma_0^2 + \left(\frac{0.2171}{\sqrt n}\,10^{0.4 (m - m_5)}\right)^2}.

For PS1's 3pi survey (Chambers et al. 2016, arXiv:1612.05560): single-epoch
depths g 22.0, r 21.8, i 21.5, z 20.9, y 19.7; about 12 epochs per band;
calibration uncertain by 7-12 mmag.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DepthErrors"]

_SIGMA_AT_DEPTH = 2.5 / math.log(10) / 5.0  # mag, at signal-to-noise 5


class DepthErrors(BaseModel):
    r"""A band's magnitude error as a function of the magnitude, from the survey's depth.

    Arguments:
        depth: Single-epoch :math:`5\sigma` point-source depth (mag).
        epochs: Epochs averaged in the catalogue's magnitude (1: a single epoch).
        floor: Calibration error added in quadrature (mag).

    Example:
        >>> ps1_g = DepthErrors(depth=22.0, epochs=12, floor=0.01)
        >>> [round(float(e), 4) for e in ps1_g.error([18.0, 21.0, 22.0])]
        [0.0101, 0.0269, 0.0635]
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    depth: float = Field(description="single-epoch 5-sigma point-source depth (mag)")
    epochs: float = Field(1.0, ge=1, description="epochs averaged in the catalogue's magnitude")
    floor: float = Field(0.0, ge=0, description="calibration error added in quadrature (mag)")

    def error(self, mag: np.ndarray | list[float]) -> np.ndarray:
        """The error (mag) at each magnitude; NaN where the magnitude is NaN.

        Arguments:
            mag: Magnitudes.

        Returns:
            Errors, the shape of ``mag``.
        """
        mag = np.asarray(mag, dtype=float)
        noise = _SIGMA_AT_DEPTH / math.sqrt(self.epochs) * 10.0 ** (0.4 * (mag - self.depth))
        return np.hypot(self.floor, noise)
