"""Each likelihood piece against an independent computation."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from streammix.components import (
    BackgroundComponent,
    NetworkSettings,
    Parameter,
    StreamComponent,
)
from streammix.densities import exponential_logpdf, proper_motion_logpdf, truncated_normal_logpdf
from streammix.mixture import ControlPrior, Mixture, StarTensors



@pytest.fixture(autouse=True)
def float64():
    """Compare in double precision; restore the default afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)

BOUNDS = {
    "phi2": (-5.0, 5.0),
    "phi2_width": (0.01, 2.0),
    "pm_phi1_cosphi2": (-20.0, 5.0),
    "pm_phi1_cosphi2_width": (0.01, 3.0),
    "pm_phi2": (-10.0, 10.0),
    "pm_phi2_width": (0.01, 3.0),
    "distmod": (10.0, 20.0),
    "distmod_width": (0.001, 0.5),
}
COORDS = ["phi2", "parallax", "pm_phi1_cosphi2", "pm_phi2"]


def make_stars(n=200, seed=1, missing=0.0):
    rng = np.random.default_rng(seed)
    phi1 = rng.uniform(-80, 0, n)
    phi2 = rng.uniform(-4.9, 4.9, n)
    plx = rng.normal(0.1, 0.3, n)
    plx_err = rng.uniform(0.05, 0.5, n)
    pm = rng.normal([-8, -2], [3, 2], size=(n, 2))
    s1, s2 = rng.uniform(0.05, 1, n), rng.uniform(0.05, 1, n)
    rho = rng.uniform(-0.8, 0.8, n)
    cov = np.empty((n, 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = s1**2, s2**2
    cov[:, 0, 1] = cov[:, 1, 0] = rho * s1 * s2
    has = {k: rng.uniform(size=n) >= missing for k in ("phi2", "plx", "pm1", "pm2")}
    t = lambda a: torch.as_tensor(a)  # noqa: E731
    return StarTensors(
        phi1=t(phi1),
        grid_index=torch.zeros(n, dtype=torch.long),
        grid_weight=t(np.zeros(n)),
        phi2=t(phi2),
        phi2_err=t(rng.uniform(0, 0.05, n)),
        has_phi2=t(has["phi2"]),
        parallax=t(plx),
        parallax_err=t(plx_err),
        has_parallax=t(has["plx"]),
        pm=t(pm),
        pm_cov=t(cov),
        has_pm1=t(has["pm1"]),
        has_pm2=t(has["pm2"]),
        mags=torch.zeros(n, 0),
        mag_err=torch.zeros(n, 0),
        extinction=torch.zeros(n, 0),
        has_mag=torch.zeros(n, 0, dtype=torch.bool),
        background_logp=t(rng.normal(-5, 1, n)),
    )


def random_params(n, seed=2):
    rng = np.random.default_rng(seed)
    return {
        "phi2": torch.as_tensor(rng.uniform(-1, 1, n)),
        "phi2_width": torch.as_tensor(rng.uniform(0.1, 0.5, n)),
        "pm_phi1_cosphi2": torch.as_tensor(rng.uniform(-10, -5, n)),
        "pm_phi1_cosphi2_width": torch.as_tensor(rng.uniform(0.1, 0.5, n)),
        "pm_phi2": torch.as_tensor(rng.uniform(-3, 0, n)),
        "pm_phi2_width": torch.as_tensor(rng.uniform(0.1, 0.5, n)),
        "distmod": torch.as_tensor(rng.uniform(14, 15.5, n)),
        "distmod_width": torch.as_tensor(rng.uniform(0.01, 0.2, n)),
    }


def test_truncated_normal_matches_scipy():
    rng = np.random.default_rng(0)
    x, mu, s = rng.uniform(-2, 2, 100), rng.uniform(-3, 3, 100), rng.uniform(0.05, 3, 100)
    ours = truncated_normal_logpdf(torch.as_tensor(x), torch.as_tensor(mu), torch.as_tensor(s), -2.0, 2.0).numpy()
    ref = stats.truncnorm.logpdf(x, (-2 - mu) / s, (2 - mu) / s, loc=mu, scale=s)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("slope", [-0.8, -1e-6, 0.0, 0.3])
def test_exponential_integrates_to_one(slope):
    f = lambda x: math.exp(exponential_logpdf(torch.tensor(x), torch.tensor(slope), -5.0, 5.0).item())  # noqa: E731
    value, _ = integrate.quad(f, -5, 5)
    assert value == pytest.approx(1.0, abs=1e-8)


def test_proper_motion_matches_scipy_multivariate_normal():
    stars = make_stars(50)
    p = random_params(50)
    ours = proper_motion_logpdf(stars, p["pm_phi1_cosphi2"], p["pm_phi2"], p["pm_phi1_cosphi2_width"], p["pm_phi2_width"])
    for i in range(50):
        cov = stars.pm_cov[i].numpy() + np.diag([p["pm_phi1_cosphi2_width"][i] ** 2, p["pm_phi2_width"][i] ** 2])
        ref = stats.multivariate_normal(mean=[p["pm_phi1_cosphi2"][i], p["pm_phi2"][i]], cov=cov).logpdf(stars.pm[i].numpy())
        assert ours[i].item() == pytest.approx(ref, rel=1e-10)


def test_stream_component_sums_independent_terms():
    n = 40
    stars = make_stars(n, missing=0.3)
    p = random_params(n)
    comp = StreamComponent("stream", COORDS, BOUNDS, phi2_range=(-5, 5))
    ours = comp.log_prob(p, stars).numpy()
    for i in range(n):
        total = 0.0
        if stars.has_phi2[i]:
            s = math.hypot(p["phi2_width"][i], stars.phi2_err[i])
            mu = p["phi2"][i].item()
            total += stats.truncnorm.logpdf(stars.phi2[i].item(), (-5 - mu) / s, (5 - mu) / s, loc=mu, scale=s)
        h1, h2 = bool(stars.has_pm1[i]), bool(stars.has_pm2[i])
        mean = np.array([p["pm_phi1_cosphi2"][i], p["pm_phi2"][i]])
        cov = stars.pm_cov[i].numpy() + np.diag([p["pm_phi1_cosphi2_width"][i] ** 2, p["pm_phi2_width"][i] ** 2])
        keep = [j for j, h in enumerate((h1, h2)) if h]
        if keep:
            total += stats.multivariate_normal(mean[keep], cov[np.ix_(keep, keep)]).logpdf(stars.pm[i].numpy()[keep])
        if stars.has_parallax[i]:
            dm = p["distmod"][i].item()
            plx = 10 ** ((10 - dm) / 5)
            # the spread of a distance modulus moves parallax by d(plx)/d(DM) = -ln(10)/5 plx
            sd = math.hypot(math.log(10) / 5 * plx * p["distmod_width"][i].item(), stars.parallax_err[i].item())
            total += stats.norm.logpdf(stars.parallax[i].item(), plx, sd)
        assert ours[i] == pytest.approx(total, rel=1e-9, abs=1e-9)


def test_parallax_zero_point_shifts_the_parallax_the_distance_gives():
    """With a zero-point z, a star observed at parallax w scores as one observed at w - z
    without it (observed = 1/d + z + error): the predicted parallax moves, its spread does not."""
    n = 40
    stars = make_stars(n, missing=0.3)
    p = random_params(n)
    shifted = make_stars(n, missing=0.3)
    shifted.parallax = stars.parallax + 0.04
    plain = StreamComponent("stream", COORDS, BOUNDS, phi2_range=(-5, 5))
    offset = StreamComponent("stream", COORDS, BOUNDS, phi2_range=(-5, 5), parallax_zero_point=-0.04)
    np.testing.assert_allclose(offset.log_prob(p, stars).numpy(), plain.log_prob(p, shifted).numpy(), rtol=1e-12)
    assert not np.allclose(offset.log_prob(p, stars).numpy(), plain.log_prob(p, stars).numpy())
    # the config carries it to every stream-like component; a value no catalogue has is refused
    from streammix.config import Config
    from streammix.errors import InputError
    from streammix.fit import build_mixture

    config = {"name": "x", "field": {"phi1": [-80, 0], "phi2": [-5, 5]}, "data": {"parallax_zero_point": -0.04}}
    mixture = build_mixture(Config.from_dict(config), stars=None)
    assert [c.parallax_zero_point for c in mixture.components] == [-0.04]
    with pytest.raises(InputError, match=r"^config: data.parallax_zero_point: .*less than or equal to 0.2"):
        Config.from_dict({**config, "data": {"parallax_zero_point": 1.0}})


def test_parallax_spread_matches_monte_carlo():
    """The linearised parallax spread agrees with sampling DM and converting."""
    rng = np.random.default_rng(3)
    dm, s_dm = 14.5, 0.1
    samples = 10 ** ((10 - rng.normal(dm, s_dm, 400_000)) / 5)
    plx = 10 ** ((10 - dm) / 5)
    assert samples.std() == pytest.approx(math.log(10) / 5 * plx * s_dm, rel=0.01)


def test_missing_coordinate_dropped_from_every_component():
    """With phi2 missing for a star, no component uses phi2 for it."""
    stars = make_stars(20)
    stars.has_phi2[:] = False
    mix = Mixture([StreamComponent("stream", COORDS, BOUNDS, (-5, 5), NetworkSettings(hidden=8))],
                  BackgroundComponent((-5, 5), "exponential"), (-90, 10), grid_size=32)
    mix.eval()
    a = mix.log_joint(stars)
    stars.phi2 = stars.phi2 + 3.0  # values of a missing coordinate must not matter
    b = mix.log_joint(stars)
    torch.testing.assert_close(a, b)


def test_probabilities_sum_to_one_and_are_shares():
    stars = make_stars(100)
    mix = Mixture(
        [StreamComponent(n, COORDS, BOUNDS, (-5, 5), NetworkSettings(hidden=8)) for n in ("stream", "spur")],
        BackgroundComponent((-5, 5), "uniform"),
        (-90, 10),
        grid_size=32,
    ).eval()
    p = mix.membership(stars)
    torch.testing.assert_close(p.sum(-1), torch.ones(100))
    joint = mix.log_joint(stars).exp()
    torch.testing.assert_close(p, joint / joint.sum(-1, keepdim=True))


def test_phi1_range_forces_weight_to_zero():
    comp = StreamComponent("spur", COORDS, BOUNDS, (-5, 5), NetworkSettings(hidden=8), phi1_range=(-50, -30))
    mix = Mixture([comp], BackgroundComponent((-5, 5), "uniform"), (-90, 10), grid_size=101).eval()
    out = mix.outputs_at(torch.tensor([-60.0, -40.0, 0.0]))
    w = out["weights"][:, 0]
    assert w[0] < 1e-10 and w[2] < 1e-10 and w[1] > 1e-3


def test_phi1_range_is_applied_at_each_stars_own_phi1():
    """On a coarse grid, a star just inside a component's range keeps its full
    weight and one just outside loses it (the range is not interpolated)."""
    from streammix.mixture import grid_interpolation

    torch.manual_seed(0)
    ranged = StreamComponent("spur", COORDS, BOUNDS, (-5, 5), NetworkSettings(hidden=8), phi1_range=(-40, -30))
    mix = Mixture([ranged], BackgroundComponent((-5, 5), "uniform"), (-90, 10), grid_size=16).double().eval()
    torch.manual_seed(0)
    free = StreamComponent("spur", COORDS, BOUNDS, (-5, 5), NetworkSettings(hidden=8))
    unranged = Mixture([free], BackgroundComponent((-5, 5), "uniform"), (-90, 10), grid_size=16).double().eval()
    unranged.load_state_dict(mix.state_dict())
    stars = make_stars(5)
    stars.phi1 = torch.tensor([-39.9, -35.0, -30.1, -40.1, -29.9], dtype=torch.float64)
    idx, w = grid_interpolation(stars.phi1.numpy(), (-90, 10), 16)
    stars.grid_index, stars.grid_weight = torch.as_tensor(idx), torch.as_tensor(w)
    a, b = mix.log_joint(stars)[:, 0], unranged.log_joint(stars)[:, 0]
    torch.testing.assert_close(a[:3], b[:3])
    assert bool((a[3:] < b[3:] - 25).all())


def test_grid_interpolation_matches_direct_evaluation():
    """Interpolating grid outputs to stars approximates evaluating at each phi1."""
    from streammix.mixture import grid_interpolation

    stars = make_stars(300)
    mix = Mixture([StreamComponent("stream", COORDS, BOUNDS, (-5, 5))], BackgroundComponent((-5, 5)), (-90, 10), grid_size=512).eval()
    idx, w = grid_interpolation(stars.phi1.numpy(), (-90, 10), 512)
    stars.grid_index, stars.grid_weight = torch.as_tensor(idx), torch.as_tensor(w)
    grid = mix.grid_outputs()["stream"]["phi2"]
    interp = torch.lerp(grid[stars.grid_index], grid[stars.grid_index + 1], stars.grid_weight)
    direct = mix.outputs_at(stars.phi1)["stream"]["phi2"]
    assert (interp - direct).abs().max() < 1e-3


def test_control_prior_is_normalised_and_added_once():
    mix = Mixture([StreamComponent("stream", COORDS, BOUNDS, (-5, 5), NetworkSettings(hidden=8))],
                  BackgroundComponent((-5, 5)), (-90, 10), grid_size=32).eval()
    value = mix.outputs_at(torch.tensor([-40.0]))["stream"]["phi2"].item()
    prior = ControlPrior("stream", "phi2", -40.0, 0.3, 0.5)
    assert mix.log_prior([prior]).item() == pytest.approx(stats.norm.logpdf(value, 0.3, 0.5), rel=1e-10)
    assert mix.log_prior([prior, prior]).item() == pytest.approx(2 * stats.norm.logpdf(value, 0.3, 0.5), rel=1e-10)


def test_parameter_bounds_hold_for_any_raw_value():
    p = Parameter("phi2_width", 0.05, 1.0)
    values = p.constrain(torch.linspace(-1e3, 1e3, 1001))
    assert values.min() >= 0.05 and values.max() <= 1.0


# --- component kinds ------------------------------------------------------------

# One entry per kind of streammix.config.COMPONENT_KINDS: its config entry, and
# whether its stars are members of the stream by default.
KINDS = [
    ({"kind": "stream", "name": "stream"}, True),
    ({"kind": "field", "name": "halo"}, False),
]


def test_every_component_kind_is_tested():
    from streammix.config import COMPONENT_KINDS

    assert sorted(entry["kind"] for entry, _ in KINDS) == sorted(COMPONENT_KINDS)


@pytest.mark.parametrize("entry, member", KINDS, ids=[e["kind"] for e, _ in KINDS])
def test_component_kind_builds_scores_and_draws_what_it_scores(entry, member):
    """Each kind builds from its config entry into a Component whose draws
    follow its own log_prob: phi2 by a KS test against its phi2 CDF, the proper
    motions and distance modulus by their moments."""
    from streammix.components import Component
    from streammix.config import Config
    from streammix.fit import build_mixture
    from streammix.membership import member_components

    cfg = Config.from_dict({"field": {"phi1": [-90, 10], "phi2": [-5, 5]},
                            "model": {"components": [{**entry, "network": {"hidden": 8}}]}})
    assert cfg.model.components[0].kind == entry["kind"]
    assert member_components(cfg, (entry["name"], "background")) == ([entry["name"]] if member else [])
    comp = build_mixture(cfg).components[0]
    assert isinstance(comp, Component) and comp.kind == entry["kind"]
    stars = make_stars(50)
    params = {k: v[:50] for k, v in random_params(50).items()}
    assert torch.isfinite(comp.log_prob(params, stars)).all()

    n = 20000
    fixed = {"phi2": 0.3, "phi2_width": 0.4, "pm_phi1_cosphi2": -6.0, "pm_phi1_cosphi2_width": 0.5,
             "pm_phi2": -1.0, "pm_phi2_width": 0.2, "distmod": 14.5, "distmod_width": 0.1}
    draws = comp.sample(np.zeros(n), {k: np.full(n, v) for k, v in fixed.items()}, np.random.default_rng(5))
    inside = draws["phi2"][(draws["phi2"] > -5) & (draws["phi2"] < 5)]
    t = {k: torch.tensor(v) for k, v in fixed.items()}
    cdf = lambda x: comp.phi2_cdf(torch.as_tensor(x), t, torch.zeros(len(x))).numpy()  # noqa: E731
    assert stats.kstest(inside, cdf).pvalue > 1e-3
    for name in ("pm_phi1_cosphi2", "pm_phi2", "distmod"):
        assert draws[name].mean() == pytest.approx(fixed[name], abs=4 * fixed[f"{name}_width"] / math.sqrt(n))
        assert draws[name].std() == pytest.approx(fixed[f"{name}_width"], rel=0.03)
    np.testing.assert_allclose(draws["parallax"], 10 ** ((10 - draws["distmod"]) / 5))


def test_field_kind_has_broad_bounds_and_no_photometry_by_default():
    from streammix.config import Config

    cfg = Config.from_dict({"field": {"phi1": [-90, 10], "phi2": [-5, 5]},
                            "model": {"components": [{"name": "stream"}, {"kind": "field", "name": "halo"}]}})
    stream, field = cfg.model.components
    assert field.photometry is False and stream.photometry is True
    wide, thin = field.default_bounds((-5.0, 5.0), None), stream.default_bounds((-5.0, 5.0), None)
    assert wide["phi2_width"] == (0.1, 10.0) and wide["pm_phi2_width"][1] > thin["pm_phi2_width"][1]
    # the saved config round-trips the kind
    again = Config.from_dict(yaml_round_trip(cfg))
    assert [c.kind for c in again.model.components] == ["stream", "field"]


def yaml_round_trip(cfg):
    import yaml

    return yaml.safe_load(cfg.to_yaml())
