r"""Extinction per unit reddening of the survey bands, and isochrones reddened by it.

A catalogue without extinction columns (the GD-1 file of ``shared/data`` has
none) still sees its stars through the foreground dust: a stream's isochrone
then has to be reddened by the field's mean :math:`E(B-V)`,
:math:`A_\mathrm{band} = R_\mathrm{band}\,E(B-V)`, with the coefficients of
:data:`EXTINCTION_COEFFICIENTS`. ``model.isochrone.reddening`` does that
(:func:`streammix.photometry.isochrone_source`); per-star extinction columns
(``A_<band>``) are the better choice where a catalogue has them.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import InputError
from .isochrone import Isochrone

__all__ = ["EXTINCTION_COEFFICIENTS", "redden"]

EXTINCTION_COEFFICIENTS: dict[str, float] = {
    # Schlafly & Finkbeiner (2011, ApJ 737, 103), table 6, R_V = 3.1
    **dict(zip([f"ps1_{b}" for b in "grizy"], (3.172, 2.271, 1.682, 1.322, 1.087))),
    **dict(zip([f"sdss_{b}" for b in "ugriz"], (4.239, 3.303, 2.285, 1.698, 1.263))),
    **dict(zip([f"decam_{b}" for b in "grizy"], (3.237, 2.176, 1.595, 1.217, 1.058))),
    "tmass_j": 0.709,
    "tmass_h": 0.449,
    "tmass_ks": 0.302,
    # Casagrande & VandenBerg (2018, MNRAS 479, L102), table 2
    "gaia_g": 2.740,
    "gaia_bp": 3.374,
    "gaia_rp": 2.035,
}
r"""A_band / E(B-V) of the canonical survey bands (not the Johnson-Cousins ``bessell_*``, which are
there to be transformed into PS1, :mod:`streammix.band_transforms`, before any reddening)."""


def redden(isochrone: Isochrone, ebv: float) -> Isochrone:
    r"""``isochrone`` seen through a reddening ``ebv``: each band made fainter by ``R_band * ebv``.

    Bands without a coefficient in :data:`EXTINCTION_COEFFICIENTS` are dropped
    (they cannot be reddened), and the new isochrone's ``source`` says so.

    Arguments:
        isochrone: Absolute magnitudes.
        ebv: E(B-V) (mag), finite and >= 0.

    Returns:
        A new isochrone.

    Raises:
        InputError: ``ebv`` is negative or not finite, or no band has a coefficient.

    Example:
        >>> from streammix.isochrone import default_isochrone
        >>> iso = default_isochrone(12.0, -2.0)
        >>> red = redden(iso, 0.1)
        >>> round(float(red.mags["sdss_g"][0] - iso.mags["sdss_g"][0]), 4)
        0.3303
    """
    ebv = float(ebv)
    if not ebv >= 0 or ebv == float("inf"):
        raise InputError(f"reddening: E(B-V) {ebv} is not a finite number >= 0")
    kept = {band: values + EXTINCTION_COEFFICIENTS[band] * ebv for band, values in isochrone.mags.items()
            if band in EXTINCTION_COEFFICIENTS}
    if not kept:
        raise InputError(f"reddening: no band of isochrone {isochrone.source} has an extinction coefficient")
    dropped = [band for band in isochrone.mags if band not in kept]
    note = f"; reddened by E(B-V) {ebv:g}" + (f" ({', '.join(dropped)} dropped: no coefficient)" if dropped else "")
    return replace(isochrone, mags=kept, source=isochrone.source + note)
