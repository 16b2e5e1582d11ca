"""Each component's stars against the parallax its distance predicts (streammix.parallax_residuals)."""

import math

import numpy as np
import pytest
from scipy.stats import truncnorm

from streammix.parallax_residuals import ParallaxResidual, parallax_residual, truncated_normal_moments


@pytest.mark.parametrize(
    ("mean", "sd", "low", "high"),
    [
        (0.1, 0.5, None, 1.0),  # the GD-1 file's cut: parallax < 1 mas
        (0.1, 0.05, None, 1.0),  # 18 sd inside: untouched
        (0.0, 1.0, -1.0, 2.0),
        (3.0, 0.3, None, 1.0),  # the whole normal beyond the cut (-6.7 sd): its far tail
        (-2.0, 0.2, 1.0, None),  # 15 sd below a lower cut: the mirrored tail
        (0.5, 1.0, None, None),  # no cut
    ],
)
def test_truncated_moments_match_scipy(mean, sd, low, high):
    a = -np.inf if low is None else (low - mean) / sd
    b = np.inf if high is None else (high - mean) / sd
    want_mean, want_var = truncnorm.stats(a, b, loc=mean, scale=sd, moments="mv")
    got_mean, got_var = truncated_normal_moments(np.array([mean]), np.array([sd]), low, high)
    assert got_mean[0] == pytest.approx(float(want_mean), rel=1e-6, abs=1e-9)
    assert got_var[0] == pytest.approx(float(want_var), rel=1e-4, abs=1e-9)


def test_truncated_moments_far_out_without_warnings():
    """Open sides and cuts 10-40 sd away: scipy's values, and no numpy warning (a fit's stderr)."""
    import warnings

    cases = [(None, -30.0), (40.0, None), (10.0, 12.0), (None, 1e-3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = [truncated_normal_moments(np.array([0.0]), np.array([1.0]), low, high) for low, high in cases]
    for (low, high), (mean, var) in zip(cases, got):
        a, b = -np.inf if low is None else low, np.inf if high is None else high
        want_mean, want_var = truncnorm.stats(a, b, moments="mv")
        assert mean[0] == pytest.approx(float(want_mean), rel=1e-8) and var[0] == pytest.approx(float(want_var), rel=1e-5)


def _catalogue(true_parallax, n=20000, seed=1):
    rng = np.random.default_rng(seed)
    err = rng.uniform(0.1, 1.2, n)
    observed = true_parallax - 0.03 + err * rng.normal(size=n)  # a zero-point of -0.03 mas
    kept = observed < 1.0
    return observed[kept], err[kept]


def test_a_component_at_its_distance_is_consistent_and_a_nearer_population_is_not():
    observed, err = _catalogue(0.12)
    p = np.ones_like(observed)
    right = parallax_residual(observed, err, p, np.full_like(observed, 0.12), zero_point=-0.03, cut=(None, 1.0))
    assert abs(right.significance) < 3
    assert right.error == pytest.approx(1 / np.sqrt((1 / err**2).sum()), rel=0.1)  # about the weighted mean's
    # without the cut the expectation is too high: the cut removed the high tail of the imprecise stars
    uncut = parallax_residual(observed, err, p, np.full_like(observed, 0.12), zero_point=-0.03)
    assert uncut.significance < -3
    # stars at 4 kpc (0.25 mas) taken by a component at 8 kpc (0.125 mas)
    near, near_err = _catalogue(0.25, n=3000, seed=2)
    wrong = parallax_residual(near, near_err, np.ones_like(near), np.full_like(near, 0.125), zero_point=-0.03,
                              cut=(None, 1.0))  # fmt: skip
    assert wrong.significance > 5


def test_probabilities_weigh_and_missing_parallaxes_are_left_out():
    observed, err = _catalogue(0.12, n=4000)
    p = np.where(np.arange(len(observed)) % 2 == 0, 1.0, 0.0)
    half = parallax_residual(observed, err, p, np.full_like(observed, 0.12), zero_point=-0.03, cut=(None, 1.0))
    assert half.stars == pytest.approx(p.sum())
    with_missing = np.where(p > 0, observed, np.nan)  # the stars of p = 0 lose their parallax: nothing changes
    same = parallax_residual(with_missing, err, p, np.full_like(observed, 0.12), zero_point=-0.03, cut=(None, 1.0))
    assert same.observed == pytest.approx(half.observed) and same.error == pytest.approx(half.error)
    none = parallax_residual(observed, err, np.zeros_like(observed), np.full_like(observed, 0.12))
    assert math.isnan(none.significance) and none.stars == 0.0


def test_to_dict_carries_the_significance():
    assert ParallaxResidual(10.0, 0.2, 0.1, 0.05).to_dict() == {
        "stars": 10.0, "observed": 0.2, "expected": 0.1, "error": 0.05, "significance": pytest.approx(2.0)
    }


def test_fit_notes_a_component_whose_stars_are_not_at_its_or_the_streams_distance(capsys, tmp_path):
    from streammix.cli import _print_summary

    def residual(observed, expected, significance):
        return {"stars": 100.0, "observed": observed, "expected": expected, "error": 0.01, "significance": significance}

    summary = {"name": "gd1", "n_stars": 10, "members": {"p>0.5": 3}, "parallax_residuals": {
        "reference": "stream",
        "own_distance": {"stream": residual(0.06, 0.1, -4.0), "cocoon": residual(0.19, 0.2, -1.0)},
        "reference_distance": {"cocoon": residual(0.19, 0.1, 9.0), "spur": residual(0.05, 0.06, float("nan"))},
    }}  # fmt: skip
    _print_summary(summary, tmp_path)
    err = " ".join(capsys.readouterr().err.split())
    assert "the stream's stars average a parallax of 0.060 mas where its distance predicts 0.100" in err
    assert "the cocoon's stars average a parallax of 0.190 mas where the stream's distance predicts 0.100" in err
    assert "+9.0 standard errors" in err and "spur" not in err and err.count("note:") == 2


def _two_populations(n=4000, seed=1):
    """A stream at 10 kpc and a population at 5 kpc, each with its own probability."""
    from astropy.table import Table

    from streammix.config import Config
    from streammix.data import StarTable

    config = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]}, "model": {
        "coordinates": ["phi2", "parallax"], "background": {"blocks": [["parallax"]]},
        "components": [{"name": "stream"}, {"name": "nearer"}]}})  # fmt: skip
    rng = np.random.default_rng(seed)
    err = rng.uniform(0.1, 1.5, n)
    near = np.arange(n) >= n // 2
    parallax = np.where(near, 0.2, 0.1) + err * rng.normal(size=n)
    kept = parallax < 1.0  # the catalogue's cut, which this config does not declare
    stars = StarTable(phi1=rng.uniform(-10, 10, kept.sum()), phi2=np.zeros(kept.sum()), parallax=parallax[kept],
                      parallax_err=err[kept])  # fmt: skip
    members = Table({"p_stream": (~near[kept]).astype(float), "p_nearer": near[kept].astype(float)})
    tracks = Table({"phi1": [-10.0, 10.0], "stream_distmod": [15.0, 15.0], "nearer_distmod": [13.5, 13.5]})
    return config, stars, members, tracks


def test_each_component_against_its_own_and_the_references_distance():
    from streammix.parallax_residuals import component_parallax_residuals

    config, stars, members, tracks = _two_populations()
    with_cut = component_parallax_residuals(config, stars, members, tracks, cut=(None, 1.0))
    assert with_cut.reference == "stream" and set(with_cut.at_reference) == {"nearer"}
    assert all(abs(r.significance) < 3 for r in with_cut.own.values())
    assert with_cut.at_reference["nearer"].significance > 5
    # the config declares no cut: the prediction is untruncated, too high for the imprecise stars
    undeclared = component_parallax_residuals(config, stars, members, tracks)
    assert undeclared.own["stream"].expected - with_cut.own["stream"].expected > 0.01
    assert undeclared.own["stream"].observed == with_cut.own["stream"].observed
    # the other component as the reference: the stream's stars are farther than its distance
    other = component_parallax_residuals(config, stars, members, tracks, reference="nearer", cut=(None, 1.0))
    assert other.reference == "nearer" and other.at_reference["stream"].significance < -5


def test_an_unknown_reference_and_a_model_without_parallax():
    from streammix.errors import InputError
    from streammix.parallax_residuals import component_parallax_residuals

    config, stars, members, tracks = _two_populations(n=200)
    with pytest.raises(InputError, match="reference 'cocoon'"):
        component_parallax_residuals(config, stars, members, tracks, reference="cocoon")
    tracks.remove_columns(["stream_distmod", "nearer_distmod"])
    assert component_parallax_residuals(config, stars, members, tracks) is None
