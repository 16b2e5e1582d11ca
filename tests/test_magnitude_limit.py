"""A soft faint limit fitted to a catalogue's counts (streammix.magnitude_limit)."""

import numpy as np
import pytest
from scipy.special import ndtr

from streammix.magnitude_limit import MagnitudeLimit, fit_magnitude_limit


@pytest.mark.parametrize(("slope", "limit", "width"), [(0.6, 20.3, 0.15), (-0.3, 20.9, 0.3), (1.5, 21.5, 0.08)])
def test_the_limit_is_recovered_from_counts_that_rise_or_fall(slope, limit, width):
    rng = np.random.default_rng(0)
    # counts e^(slope m) on 17-23, each star kept with Phi((limit - m) / width)
    u = rng.uniform(size=400_000)
    m = 17.0 + np.log1p(u * np.expm1(slope * 6.0)) / slope
    m = m[rng.uniform(size=m.size) < ndtr((limit - m) / width)]
    fit = fit_magnitude_limit(m, brightest=18.0)
    # measured: limits within 0.005 mag, widths within 1.5 %, slopes within 0.017 per mag
    assert fit.limit == pytest.approx(limit, abs=0.01)
    assert fit.width == pytest.approx(width, rel=0.04)
    assert fit.slope == pytest.approx(slope, abs=0.03)
    assert fit.kept(limit) == pytest.approx(0.5, abs=0.05)


def test_non_finite_magnitudes_are_left_out_and_too_few_stars_refused():
    rng = np.random.default_rng(1)
    m = np.r_[19.0 + rng.uniform(size=2000) * 1.5, np.nan, np.inf]
    assert fit_magnitude_limit(m).stars == int(np.sum(m[np.isfinite(m)] > np.median(m[np.isfinite(m)])))
    with pytest.raises(ValueError, match="10 stars fainter than 19.5; at least 50"):
        fit_magnitude_limit(np.r_[np.full(10, 19.0), np.linspace(19.6, 20, 10)], brightest=19.5)
    with pytest.raises(ValueError, match="no finite magnitude"):
        fit_magnitude_limit(np.array([np.nan, np.inf]))
    with pytest.raises(ValueError, match="the same magnitude"):
        fit_magnitude_limit(np.full(200, 20.0), brightest=19.0)
    assert isinstance(fit_magnitude_limit(m), MagnitudeLimit)
