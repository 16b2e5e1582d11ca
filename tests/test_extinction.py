"""Reddening an isochrone by a foreground E(B-V) (streammix.extinction, model.isochrone.reddening)."""

from __future__ import annotations

import numpy as np
import pytest

from streammix.config import IsochroneConfig
from streammix.errors import InputError
from streammix.extinction import EXTINCTION_COEFFICIENTS, redden
from streammix.isochrone import Isochrone, default_isochrone
from streammix.photometry import isochrone_at, isochrone_source


def test_each_band_fainter_by_its_coefficient():
    iso = default_isochrone(12.0, -2.0)
    red = redden(iso, 0.05)
    assert red.bands == iso.bands
    for band in iso.bands:
        np.testing.assert_allclose(red.mags[band] - iso.mags[band], EXTINCTION_COEFFICIENTS[band] * 0.05, atol=1e-12)
    np.testing.assert_array_equal(red.initial_mass, iso.initial_mass)


def test_ps1_colour_excess_of_schlafly_finkbeiner():
    """E(g - i) = (3.172 - 1.682) E(B-V) in PS1 (Schlafly & Finkbeiner 2011, table 6)."""
    source = isochrone_source(IsochroneConfig(band_transform="finkbeiner2016", reddening=0.03))
    plain = isochrone_source(IsochroneConfig(band_transform="finkbeiner2016"))
    red, blue = isochrone_at(source, 12.0, -2.19), isochrone_at(plain, 12.0, -2.19)
    excess = (red.mags["ps1_g"] - red.mags["ps1_i"]) - (blue.mags["ps1_g"] - blue.mags["ps1_i"])
    np.testing.assert_allclose(excess, 1.490 * 0.03, atol=1e-9)
    assert "reddened by E(B-V) 0.03" in red.source


def test_bands_without_a_coefficient_are_dropped_and_named():
    iso = Isochrone(
        initial_mass=np.array([0.5, 0.6, 0.7]), phase=np.zeros(3, dtype=int),
        mags={"gaia_g": np.array([8.0, 7.0, 6.0]), "johnson_v": np.array([8.1, 7.1, 6.1])}, age=12.0, feh=-2.0,
        source="toy",
    )  # fmt: skip
    red = redden(iso, 0.1)
    assert red.bands == ("gaia_g",) and "johnson_v dropped" in red.source
    with pytest.raises(InputError, match="no band of isochrone"):
        redden(Isochrone(initial_mass=iso.initial_mass, phase=iso.phase, mags={"johnson_v": iso.mags["johnson_v"]},
                         age=12.0, feh=-2.0, source="toy"), 0.1)


@pytest.mark.parametrize("ebv", [-0.01, float("nan"), float("inf")])
def test_bad_reddening_is_refused(ebv):
    with pytest.raises(InputError, match="reddening"):
        redden(default_isochrone(), ebv)
    with pytest.raises(ValueError, match="reddening"):
        IsochroneConfig(reddening=ebv)
