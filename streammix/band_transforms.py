r"""Published transformations between photometric systems, applied to isochrones.

An isochrone tabulated in one survey's bands (the embedded PARSEC grid has
SDSS and DECam, not Pan-STARRS1) is turned into another's by a published
colour transformation. The ones here have the form

.. math::
    m_\mathrm{target} - m_\mathrm{source} = \sum_k a_k\,x^k,
    \qquad x = (\mathrm{blue} - \mathrm{red})_\mathrm{target},

a polynomial in a colour of the **target** system (Finkbeiner et al. 2016
write PS1 - SDSS in PS1's g - i, Tonry et al. 2012 Johnson-Cousins - PS1 in
PS1's g - r). The target magnitudes are found by
fixed-point iteration on that colour, which converges because the
polynomials' slopes are far below one. Outside the colour range the
transformation was fitted on, it is continued linearly from the range's edge
(value and slope there), not by the polynomial's own extrapolation. Finkbeiner
et al. fitted main-sequence stars of 0.4 < g - i < 2.7: a metal-poor turn-off
(g - i ~ 0.2), a horizontal branch and giants are extrapolations. Tonry et
al.'s Johnson-Cousins relations (B -> g, V -> r, I_C -> i; quoted scatter
0.012-0.032 mag) come from synthetic photometry of stellar spectra; they are
used here as they are over -0.2 < g - r < 1.2 (a range chosen here, not
stated with the table: it holds a metal-poor main sequence from the turn-off,
g - r ~ 0.1, to M_g ~ 9) and continued linearly beyond. MIST's [Fe/H] -2.20
isochrone through them and the PARSEC grid's -2.19 through Finkbeiner et al.
agree on g - i within 0.03 mag at M_g 5-7, and differ by about 0.04 at M_g 4
and 0.07-0.1 at M_g 8-9, where the two model families part. They take the
isochrone's Vega Johnson-Cousins magnitudes (MIST's ``Bessell_B`` ...) to
PS1's AB magnitudes, zero points included.
Transformed bands are added at the nodes of a grid, before it is interpolated.

:data:`BAND_TRANSFORMS` holds the transformations by name; ``model.isochrone.band_transform``
names one (:func:`streammix.photometry.isochrone_source` applies it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import InputError
from .isochrone import Isochrone

__all__ = ["BAND_TRANSFORMS", "ColourTransform", "band_transform"]


@dataclass(frozen=True)
class ColourTransform:
    r"""A published colour transformation into a target system: target - source = polynomial in a target colour.

    Arguments:
        name: Short name (the key of :data:`BAND_TRANSFORMS`).
        reference: The publication, and where in it the coefficients are.
        targets: Target band -> source band it is computed from (canonical names).
        coefficients: Target band -> (a0, a1, a2, ...) of target - source.
        colour: (blue, red) target bands whose difference is the polynomial's variable.
        colour_range: The colour range the transformation was fitted on (mag).
        iterations: Most fixed-point iterations on the target colour (at least 1).

    Example:
        >>> toy = ColourTransform(
        ...     name="toy", reference="none", targets={"ps1_g": "sdss_g", "ps1_i": "sdss_i"},
        ...     coefficients={"ps1_g": (0.0, -0.1), "ps1_i": (0.0,)}, colour=("ps1_g", "ps1_i"),
        ...     colour_range=(0.0, 3.0))
        >>> out = toy.apply({"sdss_g": np.array([5.55]), "sdss_i": np.array([5.0])})
        >>> round(float(out["ps1_g"][0]), 6), round(float(out["ps1_g"][0] - out["ps1_i"][0]), 6)
        (5.5, 0.5)
    """

    name: str
    reference: str
    targets: Mapping[str, str]
    coefficients: Mapping[str, tuple[float, ...]]
    colour: tuple[str, str]
    colour_range: tuple[float, float]
    iterations: int = field(default=50, repr=False)

    def __post_init__(self):
        if set(self.coefficients) != set(self.targets):
            raise InputError(f"band transform {self.name!r}: coefficients for {sorted(self.coefficients)}, "
                             f"targets {sorted(self.targets)}")
        if any(band not in self.targets for band in self.colour):
            raise InputError(f"band transform {self.name!r}: colour bands {self.colour} are not all targets")
        if not self.colour_range[0] < self.colour_range[1]:
            raise InputError(f"band transform {self.name!r}: colour_range {self.colour_range} is empty")
        if self.iterations < 1:
            raise InputError(f"band transform {self.name!r}: iterations {self.iterations} is not >= 1")

    @property
    def sources(self) -> tuple[str, ...]:
        """The source bands the transformation needs."""
        return tuple(dict.fromkeys(self.targets.values()))

    def offset(self, band: str, colour: np.ndarray) -> np.ndarray:
        """target - source for one band, linear beyond :attr:`colour_range`.

        Arguments:
            band: A target band.
            colour: The target system's colour :attr:`colour` (mag), any shape.

        Returns:
            target - source (mag), the shape of ``colour``.
        """
        coefficients = np.asarray(self.coefficients[band], dtype=float)
        polynomial = np.polynomial.Polynomial(coefficients)
        low, high = self.colour_range
        x = np.clip(colour, low, high)
        slope = polynomial.deriv()(x)
        return polynomial(x) + slope * (colour - x)

    def apply(self, mags: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        r"""The target bands from the source bands.

        Arguments:
            mags: Band -> magnitudes, holding every band of :attr:`sources`.

        Returns:
            Target band -> magnitudes (NaN where a source magnitude is).

        Raises:
            InputError: A source band is missing, or the iteration did not converge
                within :attr:`iterations`.
        """
        missing = [band for band in self.sources if band not in mags]
        if missing:
            raise InputError(f"band transform {self.name!r}: needs bands {missing} (has {sorted(mags)})")
        source = {band: np.asarray(mags[src], dtype=float) for band, src in self.targets.items()}
        blue, red = self.colour
        colour = source[blue] - source[red]
        for _ in range(self.iterations):
            updated = (source[blue] + self.offset(blue, colour)) - (source[red] + self.offset(red, colour))
            converged = np.nanmax(np.abs(updated - colour), initial=0.0) < 1e-10
            colour = updated
            if converged:
                break
        else:
            raise InputError(f"band transform {self.name!r}: the target colour did not converge in {self.iterations} "
                             "iterations (is the polynomial's slope below one?)")
        return {band: source[band] + self.offset(band, colour) for band in self.targets}

    def isochrone(self, isochrone: Isochrone) -> Isochrone:
        r"""``isochrone`` with the target bands added (bands it already has are kept as they are;
        with all of them, ``isochrone`` itself).

        Arguments:
            isochrone: An isochrone holding the source bands.

        Returns:
            A new isochrone; its ``source`` names the transformation.

        Example:
            >>> from streammix.isochrone import default_isochrone
            >>> iso = band_transform("finkbeiner2016").isochrone(default_isochrone(12.0, -2.0))
            >>> {"ps1_g", "ps1_r", "ps1_i"} <= set(iso.bands), "Finkbeiner" in iso.source
            (True, True)
        """
        derived = self.apply(isochrone.mags)
        added = {band: values for band, values in derived.items() if band not in isochrone.mags}
        if not added:
            return isochrone
        return replace(
            isochrone,
            mags={**isochrone.mags, **added},
            source=f"{isochrone.source}; {', '.join(added)} from {self.reference}",
        )


#: The transformations ``model.isochrone.band_transform`` can name.
BAND_TRANSFORMS: dict[str, ColourTransform] = {
    "finkbeiner2016": ColourTransform(
        name="finkbeiner2016",
        reference="Finkbeiner et al. 2016, ApJ 822, 66, Table 2 (PS1 - SDSS)",
        targets={"ps1_g": "sdss_g", "ps1_r": "sdss_r", "ps1_i": "sdss_i"},
        coefficients={
            "ps1_g": (-0.01808, -0.13595, 0.01941, -0.00183),
            "ps1_r": (-0.01836, -0.03577, 0.02612, -0.00558),
            "ps1_i": (0.01170, -0.00400, 0.00066, -0.00058),
        },
        colour=("ps1_g", "ps1_i"),
        colour_range=(0.4, 2.7),
    ),
    "tonry2012": ColourTransform(
        name="tonry2012",
        reference="Tonry et al. 2012, ApJ 750, 99, Table 6 (Johnson-Cousins Vega - PS1 AB, quadratic)",
        targets={"ps1_g": "bessell_b", "ps1_r": "bessell_v", "ps1_i": "bessell_i"},
        # Table 6 gives B - g, V - r and I_C - i as A0 + A1 x + A2 x^2 in x = (g - r)_P1;
        # stored here as target - source, so with the signs turned
        coefficients={
            "ps1_g": (-0.212, -0.556, -0.034),
            "ps1_r": (-0.005, -0.462, -0.013),
            "ps1_i": (0.366, 0.136, 0.018),
        },
        colour=("ps1_g", "ps1_r"),
        colour_range=(-0.2, 1.2),  # chosen here (see the module's docstring)
    ),
}


def band_transform(name: str) -> ColourTransform:
    """The transformation of :data:`BAND_TRANSFORMS` called ``name``.

    Arguments:
        name: A key of :data:`BAND_TRANSFORMS`.

    Returns:
        The transformation.

    Raises:
        InputError: No such transformation.

    Example:
        >>> band_transform("finkbeiner2016").colour
        ('ps1_g', 'ps1_i')
    """
    try:
        return BAND_TRANSFORMS[name]
    except KeyError:
        raise InputError(f"band_transform {name!r}: not one of {sorted(BAND_TRANSFORMS)}") from None
