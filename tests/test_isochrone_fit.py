"""The emcee isochrone fit: recovery on a mock with true memberships, the fixed
isochrone case, bad input, writing and reading back, the command line."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from streammix.config import IsochroneConfig
from streammix.errors import InputError
from streammix.isochrone import default_isochrone
from streammix.isochrone_fit import (
    EXTINCTION_COEFFICIENTS,
    IsochroneFitResult,
    isochrone_fit_from_model,
    sample_isochrone,
)
from streammix.mock import MockConfig, generate_mock

BANDS = ["gaia_g", "gaia_bp", "gaia_rp"]


@pytest.fixture(scope="module")
def mock():
    """A small default-like mock (same isochrone, tracks, errors and G limit), true memberships."""
    config = MockConfig(n_stream=300, n_background=300)
    stars, tracks = generate_mock(config, seed=11)
    phi1 = stars["phi1"].value
    return {
        "config": config,
        "stars": stars,
        "mags": np.stack([stars[b].value for b in BANDS], axis=1),
        "errs": np.stack([stars[f"{b}_err"].value for b in BANDS], axis=1),
        "weights": (stars["true_component"] == "stream").astype(float),
        "distmod": np.interp(phi1, tracks["phi1"].value, tracks["distmod"].value),
        "width": np.interp(phi1, tracks["phi1"].value, tracks["distmod_width"].value),
        # the mock keeps G < g_limit: the likelihood must know it
        "isochrone": IsochroneConfig(age=9.0, feh=-1.0, magnitude_limits={"gaia_g": (float("-inf"), config.g_limit)}),
    }


def within(summary, name, truth, n_sigma=2.0):
    p = summary["parameters"][name]
    sigma = p["minus"] if truth < p["median"] else p["plus"]
    return abs(p["median"] - truth) <= n_sigma * sigma, p


def test_recovers_true_age_feh_and_distance(mock):
    # starts far from the truth (config age 9, [Fe/H] -1.0): the start search must find it
    result = sample_isochrone(
        mock["mags"], mock["errs"], None, mock["weights"], mock["distmod"], mock["width"], mock["isochrone"], BANDS,
        walkers=8, steps=40, burn=20, seed=3,
    )
    summary = result.summary()
    assert result.names == ("age", "feh", "distmod_offset")
    assert result.chain.shape == (40, 8, 3) and result.log_prob.shape == (40, 8)
    assert summary["n_stars"] == 300 and summary["weight_sum"] == 300.0  # background stars (w = 0) left out
    for name, truth in (("age", mock["config"].age), ("feh", mock["config"].feh), ("distmod_offset", 0.0)):
        ok, p = within(summary, name, truth)
        assert ok, (name, p)
    # and the posterior is informative, not wide enough to cover anything
    assert summary["parameters"]["age"]["p84"] - summary["parameters"]["age"]["p16"] < 2.0
    assert summary["parameters"]["feh"]["p84"] - summary["parameters"]["feh"]["p16"] < 0.2
    assert 0.15 < summary["acceptance_fraction"] < 0.9
    assert summary["seconds"]["per_evaluation"] > 0 and summary["seconds"]["evaluations"] >= 8 * 60


def test_fixed_isochrone_samples_offsets_and_finds_injected_reddening(mock):
    # a single isochrone (as from one MIST file): age and [Fe/H] fixed, offsets sampled;
    # the stars are reddened by E(B-V) = 0.05 that their (zero) extinction does not know
    iso = default_isochrone(mock["config"].age, mock["config"].feh)
    reddening = 0.05 * np.array([EXTINCTION_COEFFICIENTS[b] for b in BANDS])
    result = sample_isochrone(
        mock["mags"] + reddening, mock["errs"], np.zeros_like(mock["mags"]), mock["weights"], mock["distmod"],
        mock["width"], mock["isochrone"], BANDS, fit_extinction=True, source=[iso], walkers=6, steps=40, burn=20,
    )
    summary = result.summary()
    assert result.names == ("distmod_offset", "ebv_offset")
    assert summary["fixed"] == {"age": pytest.approx(12.0), "feh": pytest.approx(-1.5)}
    assert "fixed" in summary["note"]
    ok, p = within(summary, "ebv_offset", 0.05)
    assert ok and p["p84"] - p["p16"] < 0.05, p
    ok, p = within(summary, "distmod_offset", 0.0)
    assert ok, p


def test_an_outlier_share_keeps_members_off_the_isochrone_from_pulling_it(mock):
    """30 of the 300 members 1.5 mag brighter in every band (as if much nearer): the
    weighted likelihood alone moves the distance offset to them; with
    ``outlier_fraction`` 0.1 and a field density of their magnitudes it does not."""
    iso = default_isochrone(mock["config"].age, mock["config"].feh)
    mags = mock["mags"].copy()
    moved = np.flatnonzero(mock["weights"] > 0)[:30]
    mags[moved] -= 1.5
    common = {"source": [iso], "walkers": 6, "steps": 40, "burn": 20}
    args = (mags, mock["errs"], None, mock["weights"], mock["distmod"], mock["width"])
    plain = sample_isochrone(*args, mock["isochrone"], BANDS, **common).summary()
    robust_config = mock["isochrone"].model_copy(update={"outlier_fraction": 0.1})
    field = np.full(len(mags), -3.0)  # about a field's density per mag^3 over its colour-magnitude diagram
    robust = sample_isochrone(*args, robust_config, BANDS, field_log_density=field, **common).summary()
    ok, p = within(robust, "distmod_offset", 0.0)
    assert ok, p
    pulled, p = within(plain, "distmod_offset", 0.0, n_sigma=5.0)
    assert not pulled, p
    with pytest.raises(InputError, match="field_log_density: needed with model.isochrone.outlier_fraction 0.1"):
        sample_isochrone(*args, robust_config, BANDS, **common)


def test_bad_input(mock):
    args = (mock["mags"], mock["errs"], None, mock["weights"], mock["distmod"], mock["width"], mock["isochrone"], BANDS)
    kwargs = {"walkers": 8, "steps": 2, "burn": 0}

    def error(*changed, **more):
        full = list(args)
        for index, value in changed:
            full[index] = value
        with pytest.raises(InputError) as info:
            sample_isochrone(*full, **(kwargs | more))
        message = str(info.value)
        assert "\n" not in message
        return message

    assert "no star has weight" in error((3, np.zeros(len(mock["weights"]))))
    assert "weights" in error((3, 2.0 * mock["weights"]))
    assert "weights" in error((3, mock["weights"][:10]))
    assert "mag_err" in error((1, mock["errs"][:, :2]))
    assert "columns for bands" in error((7, ["gaia_g", "gaia_bp"]))
    assert "distmod" in error((4, np.full(len(mock["weights"]), np.nan)))
    assert "walkers" in error(walkers=4)
    assert "extinction coefficient" in error((7, ["gaia_g", "gaia_bp", "my_band"]), fit_extinction=True)


def test_result_writes_and_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    result = IsochroneFitResult(
        ("age", "feh", "distmod_offset"), rng.normal([12.0, -1.5, 0.0], [0.5, 0.05, 0.01], (50, 8, 3)),
        rng.normal(size=(50, 8)), 0.4, autocorr_time=np.array([3.0, 4.0, 5.0]), settings={"walkers": 8},
        timings={"total": 1.0}, n_stars=10, weight_sum=7.5,
    )  # fmt: skip
    paths = result.write(tmp_path / "fit")
    assert sorted(p.name for p in paths) == ["chain.npz", "corner.png", "summary.json"]
    back = IsochroneFitResult.read(tmp_path / "fit")
    np.testing.assert_array_equal(back.chain, result.chain)
    np.testing.assert_array_equal(back.log_prob, result.log_prob)
    assert back.names == result.names and back.weight_sum == 7.5
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    # percentiles against numpy on the flattened chain
    flat = result.chain.reshape(-1, 3)
    assert summary["parameters"]["feh"]["p16"] == pytest.approx(np.percentile(flat[:, 1], 16))
    assert summary["parameters"]["age"]["median"] == pytest.approx(np.median(flat[:, 0]))
    assert summary["autocorr_reliable"] is False  # 50 steps < 50 * 5
    with pytest.raises(InputError, match="already exists"):
        result.write(tmp_path / "fit")


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    """A tiny fitted model (not converged: only the plumbing is tested) in a run folder with stars.fits."""
    from streammix.config import Config
    from streammix.data import StarTable
    from streammix.fit import fit
    from streammix.pipeline import demo_config, mock_columns

    run = tmp_path_factory.mktemp("run")
    stars, truth = generate_mock(MockConfig(n_stream=150, n_background=1000), seed=2)
    cfg = demo_config(truth, ensemble=1, photometry=False).model_dump(mode="json", exclude={"source"})
    cfg["model"]["background"]["flow"].update({"epochs": 3, "hidden": 8, "transforms": 1})
    cfg["fit"].update({"steps": 25, "dropout_samples": 0, "warm_start_steps": 10, "workers": 1, "bootstrap": False})
    cfg["model"]["bands"] = []  # no photometry in the mixture: the isochrone fit must be told the bands
    with warnings.catch_warnings():  # 25 steps: "did not converge"
        warnings.simplefilter("ignore")
        model = fit(Config.from_dict(cfg), StarTable.from_table(stars, mock_columns()))
    model.save(run / "model")
    stars.write(run / "stars.fits")
    return run


def test_from_model_and_command_line(fitted_run, tmp_path):
    # the demo config has no model.bands: the API says so, and takes bands explicitly
    with pytest.raises(InputError, match="model.bands"):
        isochrone_fit_from_model(fitted_run)
    with pytest.raises(InputError, match="model.json"):
        isochrone_fit_from_model(tmp_path)
    with pytest.raises(InputError, match="component 'spur'"):
        isochrone_fit_from_model(fitted_run, component="spur", bands=BANDS)
    with pytest.raises(InputError, match="ps1_g"):
        isochrone_fit_from_model(fitted_run, bands=["ps1_g", "ps1_r"])
    result = isochrone_fit_from_model(fitted_run, bands=BANDS, walkers=6, steps=4, burn=2)
    assert result.names == ("age", "feh", "distmod_offset") and result.chain.shape == (4, 6, 3)
    assert result.settings["component"] == "stream" and result.settings["n_stars_read"] == 1150
    assert 0 < result.weight_sum < 1150

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "streammix", "isochrone-fit", *map(str, args)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    out = tmp_path / "iso"
    ok = cli(fitted_run / "model", "--out", out, "--walkers", 6, "--steps", 3, "--burn", 1, "--quiet",
             "--band", "gaia_g", "--band", "gaia_bp", "--band", "gaia_rp")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert {p.name for p in out.rglob("*")} >= {"chain.npz", "summary.json", "corner.png"}
    assert json.loads((out / "summary.json").read_text())["settings"]["walkers"] == 6
    bad = cli(fitted_run, "--out", tmp_path / "x")  # the run folder, without --band
    assert bad.returncode == 2 and "model.bands" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert not (tmp_path / "x").exists()
