r"""A catalogue's external errors from its formal ones.

A catalogue's formal errors are what its own solution propagates; checked
against independent distances or repeated measurements they are often too
small. For Gaia DR2's parallaxes the authors of its astrometric solution
recommend (Lindegren et al. 2018, with the release; used, e.g., by Schönrich,
McMillan & Eyer 2019) an external error

.. math::
    \sigma_\mathrm{ext} = \sqrt{(k\,\sigma_\mathrm{formal})^2 + \sigma_s^2},

with :math:`k = 1.08` and a systematic floor :math:`\sigma_s = 0.043` mas for
stars fainter than :math:`G = 13` (0.021 mas brighter; :class:`ExternalErrors`
applies one floor to every star). The floor matters for
bright stars only: at a formal 0.05 mas it makes 0.069, at 0.5 mas 0.542.

Such a model belongs to the catalogue, not to any component: a stream's star
and a field star of the same brightness are measured alike. It changes how far
a star's parallax may lie from a component's prediction, so it moves the
memberships of the precise stars, and the held-out likelihood says whether it
describes the data better. On the GD-1 DR2 field of ``../shared/data`` it did
not (held out no better, ``benchmarks/RESULTS.md``, session 31).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ExternalErrors"]


class ExternalErrors(BaseModel):
    r"""External errors :math:`\sqrt{(k\sigma)^2 + \sigma_s^2}` from formal ones :math:`\sigma`.

    Arguments:
        factor: The factor :math:`k` on the formal error.
        floor: The systematic error :math:`\sigma_s` added in quadrature, in the
            quantity's unit.

    Example:
        >>> dr2_parallax = ExternalErrors(factor=1.08, floor=0.043)
        >>> [round(float(e), 3) for e in dr2_parallax.error([0.05, 0.5, float("nan")])]
        [0.069, 0.542, nan]
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    factor: float = Field(1.0, gt=0, description="the factor k on the formal error")
    floor: float = Field(0.0, ge=0, description="the systematic error added in quadrature (the quantity's unit)")

    def error(self, formal: np.ndarray | list[float]) -> np.ndarray:
        """The external error of each formal one; NaN where the formal one is NaN.

        Arguments:
            formal: Formal errors.

        Returns:
            External errors, the shape of ``formal``.
        """
        formal = np.asarray(formal, dtype=float)
        return np.hypot(self.factor * formal, self.floor)
