"""Published colour transformations (streammix.band_transforms) and the isochrones they make."""

from __future__ import annotations

import numpy as np
import pytest

from streammix.band_transforms import ColourTransform, band_transform
from streammix.config import IsochroneConfig
from streammix.errors import InputError
from streammix.isochrone import PHASES, default_grid, read_mist
from streammix.photometry import PhotometricLikelihood, isochrone_at, isochrone_source, likelihood_from_config

FINKBEINER = band_transform("finkbeiner2016")
TONRY = band_transform("tonry2012")


def _ms_colour(iso, g: str, i: str, absolute_g: np.ndarray) -> tuple[np.ndarray, float]:
    """g - i on the main sequence below the turn-off at the given absolute g, and at the turn-off."""
    ms = iso.select(["main_sequence"])
    mag, colour = ms.mags[g], ms.mags[g] - ms.mags[i]
    turnoff = int(np.argmin(colour))
    lower = slice(0, turnoff + 1)  # initial mass increases towards the turn-off: mag falls
    return np.interp(absolute_g, mag[lower][::-1], colour[lower][::-1]), float(colour[turnoff])


@pytest.mark.parametrize("transform", [FINKBEINER, TONRY], ids=lambda t: t.name)
def test_forward_transformation_recovers_the_source_magnitudes(transform):
    """Both papers write their relation as a polynomial in a PS1 colour: applying it forward to the
    PS1 magnitudes found must give back the magnitudes they came from, inside and beyond the fitted
    colour range."""
    rng = np.random.default_rng(0)
    sources = transform.sources
    mags = {band: rng.uniform(14.0, 22.0, 500) for band in sources}
    mags[sources[-1]] = mags[sources[0]] - rng.uniform(-0.5, 3.2, 500)
    ps1 = transform.apply(mags)
    blue, red = transform.colour
    colour = ps1[blue] - ps1[red]
    for target, source in transform.targets.items():
        np.testing.assert_allclose(ps1[target] - transform.offset(target, colour), mags[source], atol=1e-9)


def test_published_offsets_at_g_minus_i_of_one():
    """Finkbeiner et al. 2016, Table 2, summed at (g - i)_PS1 = 1: PS1 - SDSS in g, r, i."""
    one = np.array([1.0])
    assert FINKBEINER.offset("ps1_g", one)[0] == pytest.approx(-0.13645, abs=1e-12)
    assert FINKBEINER.offset("ps1_r", one)[0] == pytest.approx(-0.03359, abs=1e-12)
    assert FINKBEINER.offset("ps1_i", one)[0] == pytest.approx(0.00778, abs=1e-12)


def test_tonry_published_offsets_and_their_linear_fit():
    """Tonry et al. 2012, Table 6, at (g - r)_P1 = 0.5: B - g = 0.4985, V - r = 0.23925, I_C - i = -0.4385
    (quadratic fits); their linear fits of the same relations (B0 + B1 x) agree with the quadratic
    ones within the quoted scatter (0.012-0.034 mag) over a metal-poor main sequence's colours."""
    half = np.array([0.5])
    assert -TONRY.offset("ps1_g", half)[0] == pytest.approx(0.4985, abs=1e-12)
    assert -TONRY.offset("ps1_r", half)[0] == pytest.approx(0.23925, abs=1e-12)
    assert -TONRY.offset("ps1_i", half)[0] == pytest.approx(-0.4385, abs=1e-12)
    x = np.linspace(0.0, 1.0, 11)
    linear = {"ps1_g": (0.213, 0.587, 0.034), "ps1_r": (0.006, 0.474, 0.012), "ps1_i": (-0.367, -0.149, 0.016)}
    for band, (b0, b1, scatter) in linear.items():
        assert np.all(np.abs(-TONRY.offset(band, x) - (b0 + b1 * x)) < scatter), band


def test_mist_metal_poor_in_ps1_agrees_with_parsec_in_ps1(shared_data):
    """An independent check of the Johnson-Cousins route: MIST v1.2 at [Fe/H] -2.20 (shared data,
    Vega UBVRI) through Tonry et al. against the embedded PARSEC grid at [Fe/H] -2.19 through
    Finkbeiner et al. (SDSS): two model families and two transformations agree on the main
    sequence's g - i within 0.03 mag at M_g 5-7, while B - I_C itself is far from g - i; and
    the metal-poor MIST turn-off is bluer than MIST's own PS1 isochrone at [Fe/H] -1.35."""
    config = IsochroneConfig(
        path=str(shared_data / "isochrones" / "mist_v1.2_ubvriplus_feh-2.20_12gyr.iso.cmd"), band_transform="tonry2012"
    )
    mist = isochrone_at(isochrone_source(config), 12.0, -2.2)
    assert "Tonry et al. 2012" in mist.source
    absolute_g = np.array([5.0, 6.0, 7.0])
    colour, turnoff = _ms_colour(mist, "ps1_g", "ps1_i", absolute_g)
    parsec = isochrone_at(isochrone_source(IsochroneConfig(band_transform="finkbeiner2016")), 12.0, -2.19)
    reference, _ = _ms_colour(parsec, "ps1_g", "ps1_i", absolute_g)
    assert np.all(np.abs(colour - reference) < 0.03), colour - reference
    raw, _ = _ms_colour(mist, "bessell_b", "bessell_i", absolute_g)  # without the transformation
    assert np.all(np.abs(raw - reference) > 0.3), raw - reference
    rich = read_mist(shared_data / "isochrones" / "mist_v1.2_ps1_feh-1.35_12gyr.iso.cmd")
    _, rich_turnoff = _ms_colour(rich, "ps1_g", "ps1_i", absolute_g)
    assert turnoff < rich_turnoff - 0.05


def test_missing_magnitudes_stay_missing_row_by_row():
    sdss = {"sdss_g": np.array([18.0, np.nan, 19.0]), "sdss_r": np.full(3, 17.5), "sdss_i": np.array([17.2, 17.0, np.nan])}
    ps1 = FINKBEINER.apply(sdss)
    for band in ("ps1_g", "ps1_i"):
        assert np.isfinite(ps1[band]).tolist() == [True, False, False]


def test_an_isochrone_with_the_target_bands_comes_back_unchanged():
    iso = FINKBEINER.isochrone(default_grid().isochrones[0])
    assert FINKBEINER.isochrone(iso) is iso


def test_continued_linearly_beyond_the_fitted_colour_range():
    colour = np.array([-0.5, 0.0, 0.4, 2.7, 3.5])
    offset = FINKBEINER.offset("ps1_g", colour)
    polynomial = np.polynomial.Polynomial(FINKBEINER.coefficients["ps1_g"])
    slope_low, slope_high = polynomial.deriv()(0.4), polynomial.deriv()(2.7)
    np.testing.assert_allclose(offset[:2], polynomial(0.4) + slope_low * (colour[:2] - 0.4))
    np.testing.assert_allclose(offset[3:], polynomial(2.7) + slope_high * (colour[3:] - 2.7))


def test_parsec_in_ps1_agrees_with_mist_in_ps1(shared_data):
    """An independent check: the embedded PARSEC grid at MIST's age and [Fe/H], turned into PS1 by the
    transformation, against MIST v1.2's own PS1 isochrone (shared data): two model families and a
    transformation fitted to stars agree on the main sequence's g - i to a few hundredths, which the raw
    SDSS colours do not."""
    mist = read_mist(shared_data / "isochrones" / "mist_v1.2_ps1_feh-1.35_12gyr.iso.cmd")
    absolute_g = np.array([5.0, 6.0, 7.0, 8.0])
    reference, reference_turnoff = _ms_colour(mist, "ps1_g", "ps1_i", absolute_g)
    source = isochrone_source(IsochroneConfig(band_transform="finkbeiner2016"))
    parsec = isochrone_at(source, 12.0, -1.35)
    colour, turnoff = _ms_colour(parsec, "ps1_g", "ps1_i", absolute_g)
    assert np.all(np.abs(colour - reference) < 0.025), colour - reference
    assert abs(turnoff - reference_turnoff) < 0.03
    raw, _ = _ms_colour(parsec, "sdss_g", "sdss_i", absolute_g)  # without the transformation
    assert np.all(np.abs(raw - reference) > 0.05), raw - reference


def test_metal_poor_isochrone_is_bluer():
    source = isochrone_source(IsochroneConfig(band_transform="finkbeiner2016"))
    absolute_g = np.array([5.0, 6.0, 7.0])
    poor, poor_turnoff = _ms_colour(isochrone_at(source, 12.0, -2.19), "ps1_g", "ps1_i", absolute_g)
    rich, rich_turnoff = _ms_colour(isochrone_at(source, 12.0, -1.35), "ps1_g", "ps1_i", absolute_g)
    assert np.all(poor < rich - 0.02) and poor_turnoff < rich_turnoff - 0.04


def test_likelihood_uses_the_transformed_bands():
    node = default_grid().isochrones[0]  # a node: no interpolation between nodes to differ
    config = IsochroneConfig(band_transform="finkbeiner2016", age=node.age, feh=node.feh, nodes=50)
    like = likelihood_from_config(config, ["ps1_g", "ps1_i"])
    assert like.bands == ("ps1_g", "ps1_i")
    direct = PhotometricLikelihood(FINKBEINER.isochrone(node), ["ps1_g", "ps1_i"], n_nodes=50)
    np.testing.assert_array_equal(like.start.numpy(), direct.start.numpy())
    sdss = PhotometricLikelihood(node, ["sdss_g", "sdss_i"], n_nodes=50)
    assert like.start.shape != sdss.start.shape or not np.allclose(like.start.numpy(), sdss.start.numpy(), atol=0.02)
    with pytest.raises(InputError, match=r"bands \['ps1_g', 'ps1_i'\]: not in isochrone"):
        likelihood_from_config(IsochroneConfig(nodes=50), ["ps1_g", "ps1_i"])


def test_file_without_the_source_bands_is_refused(shared_data):
    config = IsochroneConfig(
        path=str(shared_data / "isochrones" / "mist_v1.2_ps1_feh-1.35_12gyr.iso.cmd"), band_transform="finkbeiner2016"
    )
    with pytest.raises(InputError, match=r"model.isochrone.band_transform 'finkbeiner2016': needs bands \['sdss_g', "
                       r"'sdss_r', 'sdss_i'\], which isochrone MIST v1.2 mist_v1.2_ps1"):
        isochrone_source(config)



def test_unknown_transformation_is_refused():
    with pytest.raises(ValueError, match="'jordi2006' is not one of"):
        IsochroneConfig(band_transform="jordi2006")
    with pytest.raises(InputError, match="band_transform 'jordi2006': not one of"):
        band_transform("jordi2006")


def test_inconsistent_transformation_is_refused():
    with pytest.raises(InputError, match="colour bands"):
        ColourTransform(name="bad", reference="none", targets={"ps1_g": "sdss_g"}, coefficients={"ps1_g": (0.0,)},
                        colour=("ps1_g", "ps1_i"), colour_range=(0.0, 1.0))
    with pytest.raises(InputError, match="iterations 0"):
        ColourTransform(name="bad", reference="none", targets={"ps1_g": "sdss_g", "ps1_i": "sdss_i"},
                        coefficients={"ps1_g": (0.0,), "ps1_i": (0.0,)}, colour=("ps1_g", "ps1_i"),
                        colour_range=(0.0, 1.0), iterations=0)
    steep = ColourTransform(name="steep", reference="none", targets={"ps1_g": "sdss_g", "ps1_i": "sdss_i"},
                            coefficients={"ps1_g": (0.0, 2.0), "ps1_i": (0.0,)}, colour=("ps1_g", "ps1_i"),
                            colour_range=(0.0, 1.0))  # slope 2: the fixed point repels
    with pytest.raises(InputError, match="did not converge"):
        steep.apply({"sdss_g": np.array([18.0]), "sdss_i": np.array([17.5])})
    with pytest.raises(InputError, match="coefficients for"):
        ColourTransform(name="bad", reference="none", targets={"ps1_g": "sdss_g", "ps1_i": "sdss_i"},
                        coefficients={"ps1_g": (0.0,)}, colour=("ps1_g", "ps1_i"), colour_range=(0.0, 1.0))


def test_phases_survive():
    iso = FINKBEINER.isochrone(isochrone_at(isochrone_source(IsochroneConfig()), 12.0, -2.0))
    assert np.any(iso.phase == PHASES["MS"]) and iso.bands[-3:] == ("ps1_g", "ps1_r", "ps1_i")
