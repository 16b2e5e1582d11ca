"""Tests of streammix.plot on synthetic members and tracks tables (no fitting)."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.table import QTable
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from streammix.errors import InputError
from streammix.plot import (
    photometric_bands,
    plot_cmd,
    plot_probability_histogram,
    plot_sky,
    plot_tracks,
    save_figures,
)

STREAM_QUANTITIES = {
    "phi2": u.deg,
    "phi2_width": u.deg,
    "pm_phi1_cosphi2": u.mas / u.yr,
    "pm_phi1_cosphi2_width": u.mas / u.yr,
    "pm_phi2": u.mas / u.yr,
    "pm_phi2_width": u.mas / u.yr,
    "distmod": u.mag,
    "distmod_width": u.mag,
    "parallax": u.mas,
}


def make_members(n: int = 5000, seed: int = 1, photometry: bool = True) -> QTable:
    rng = np.random.default_rng(seed)
    phi1 = rng.uniform(-70, -20, n)
    is_stream = rng.random(n) < 0.1
    phi2 = np.where(is_stream, 0.01 * phi1 + rng.normal(0, 0.2, n), rng.uniform(-5, 5, n))
    p_stream = np.where(is_stream, rng.beta(8, 1, n), rng.beta(0.3, 8, n))
    p_spur = (1 - p_stream) * rng.beta(0.5, 20, n)
    table = QTable()
    table["source_id"] = np.arange(n, dtype=np.int64)
    table["phi1"] = phi1 * u.deg
    table["phi2"] = phi2 * u.deg
    for name, p in (("stream", p_stream), ("spur", p_spur), ("background", 1 - p_stream - p_spur)):
        table[f"p_{name}"] = p
        table[f"p_{name}_q05"] = np.clip(p - 0.05, 0, 1)
        table[f"p_{name}_q50"] = p
        table[f"p_{name}_q95"] = np.clip(p + 0.05, 0, 1)
    table["true_component"] = np.where(is_stream, "stream", "background")
    table["pm_phi2"] = rng.normal(-3, 0.5, n) * u.mas / u.yr
    if photometry:
        g = rng.uniform(14, 21, n)
        table["gaia_g"] = g * u.mag
        table["gaia_bp"] = (g + 0.4) * u.mag
        table["gaia_rp"] = (g - 0.6 + rng.normal(0, 0.05, n)) * u.mag
    return table


def _with_band(table: QTable, name: str, values: np.ndarray, unit) -> None:
    table[name] = values * unit
    table[f"{name}_q05"] = (values - 0.1 * np.abs(values) - 0.01) * unit
    table[f"{name}_q95"] = (values + 0.1 * np.abs(values) + 0.01) * unit


def make_tracks(n: int = 64) -> QTable:
    phi1 = np.linspace(-70, -20, n)
    tracks = QTable()
    tracks["phi1"] = phi1 * u.deg
    weight = 0.05 + 0.03 * np.sin(phi1 / 10)
    values = {
        "phi2": 0.01 * phi1,
        "phi2_width": np.full(n, 0.2),
        "pm_phi1_cosphi2": -13 + 0.05 * phi1,
        "pm_phi1_cosphi2_width": np.full(n, 0.4),
        "pm_phi2": -3 + 0.01 * phi1,
        "pm_phi2_width": np.full(n, 0.3),
        "distmod": 14.5 + 0.01 * phi1,
        "distmod_width": np.full(n, 0.1),
    }
    values["parallax"] = 10 ** ((10 - values["distmod"]) / 5)
    _with_band(tracks, "stream_weight", weight, u.dimensionless_unscaled)
    _with_band(tracks, "stream_linear_density", 200 * weight, 1 / u.deg)
    for key, unit in STREAM_QUANTITIES.items():
        _with_band(tracks, f"stream_{key}", values[key], unit)
    # a spur without parallax (so no distance panels) and no proper motions in phi1
    _with_band(tracks, "spur_weight", weight / 3, u.dimensionless_unscaled)
    _with_band(tracks, "spur_phi2", 0.8 + 0.01 * phi1, u.deg)
    _with_band(tracks, "spur_phi2_width", np.full(n, 0.1), u.deg)
    _with_band(tracks, "spur_pm_phi2", -3 + 0.01 * phi1, u.mas / u.yr)
    _with_band(tracks, "background_weight", 1 - 4 * weight / 3, u.dimensionless_unscaled)
    _with_band(tracks, "background_linear_density", 200 * (1 - 4 * weight / 3), 1 / u.deg)
    _with_band(tracks, "background_phi2_slope", np.full(n, 0.02), 1 / u.deg)
    return tracks


def make_truth() -> QTable:
    phi1 = np.linspace(-75, -15, 40)
    return QTable(
        {
            "phi1": phi1 * u.deg,
            "phi2": 0.011 * phi1 * u.deg,
            "phi2_width": np.full(40, 0.25) * u.deg,
            "pm_phi2": (-3 + 0.012 * phi1) * u.mas / u.yr,
            "distmod": (14.4 + 0.01 * phi1) * u.mag,
            "linear_density": (10 + 0 * phi1) / u.deg,
        }
    )


def scatters(ax) -> list[PathCollection]:
    return [c for c in ax.collections if isinstance(c, PathCollection)]


@pytest.fixture(scope="module")
def members() -> QTable:
    return make_members()


@pytest.fixture(scope="module")
def tracks() -> QTable:
    return make_tracks()


# ---------------------------------------------------------------- plot_sky


def test_plot_sky_axes_and_layering(members):
    fig = plot_sky(members)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # sky + colourbar
    ax = fig.axes[0]
    assert "phi_1" in ax.get_xlabel() and "[deg]" in ax.get_xlabel()
    assert "phi_2" in ax.get_ylabel() and "[deg]" in ax.get_ylabel()
    grey, coloured = scatters(ax)
    p = np.asarray(members["p_stream"])
    assert len(grey.get_offsets()) == np.sum(p < 0.1)
    # coloured stars are drawn in order of increasing probability (likeliest on top)
    values = np.asarray(coloured.get_array())
    assert len(values) == np.sum(p >= 0.1)
    assert np.all(np.diff(values) >= 0)
    assert np.isclose(values.max(), p.max())
    # every coloured point is a star at its own (phi1, phi2)
    offsets = np.asarray(coloured.get_offsets())
    top = np.argmax(p)
    assert np.allclose(offsets[-1], [members["phi1"][top].value, members["phi2"][top].value])
    assert all(c.get_rasterized() for c in (grey, coloured))


def test_plot_sky_other_component_and_background_stars(members):
    everyone = QTable({"phi1": np.linspace(-70, -20, 300) * u.deg, "phi2": np.zeros(300) * u.deg})
    fig = plot_sky(members, "spur", stars=everyone)
    ax = fig.axes[0]
    assert len(scatters(ax)) == 3
    assert len(scatters(ax)[0].get_offsets()) == 300
    assert "spur" in fig.axes[1].get_ylabel()


def test_plot_sky_missing_component_names_column(members):
    with pytest.raises(InputError, match="p_cocoon"):
        plot_sky(members, "cocoon")


def test_plot_sky_converts_units():
    table = QTable(
        {"phi1": [-1.0, -0.5] * u.rad, "phi2": [0.0, 60.0] * u.arcmin, "p_stream": [0.5, 0.9]}
    )
    offsets = np.asarray(scatters(plot_sky(table).axes[0])[1].get_offsets())
    assert np.allclose(offsets, [[np.rad2deg(-1.0), 0.0], [np.rad2deg(-0.5), 1.0]])


# ------------------------------------------------------------- plot_tracks


def test_plot_tracks_stream_has_all_panels(tracks, members):
    fig = plot_tracks(tracks, members, "stream")
    labels = [ax.get_ylabel() for ax in fig.axes]
    # weight, linear density, phi2, pm_phi1_cosphi2, pm_phi2, distmod, parallax
    assert len(fig.axes) == 7
    assert labels[2] == r"$\phi_2$ [deg]"
    assert "mas yr" in labels[3] and "mas yr" in labels[4]
    assert "[mag]" in labels[5] and "[mas]" in labels[6]
    assert "[deg]" in fig.axes[-1].get_xlabel()
    # members with p > 0.5 are overplotted on phi2 and on pm_phi2 (a members column)
    n_likely = int(np.sum(np.asarray(members["p_stream"]) > 0.5))
    for index in (2, 4):
        (points,) = scatters(fig.axes[index])
        assert len(points.get_offsets()) == n_likely
    assert not scatters(fig.axes[3])  # no pm_phi1_cosphi2 column in members
    # median line = the table's median; the phi2 panel shades the width band and the 5-95 % band
    line = fig.axes[2].lines[0]
    assert np.allclose(line.get_ydata(), tracks["stream_phi2"].to_value(u.deg))
    assert len(fig.axes[2].collections) == 3  # width band, quantile band, members


def test_plot_tracks_only_present_panels(tracks):
    spur = plot_tracks(tracks, component="spur")
    assert len(spur.axes) == 3  # weight, phi2, pm_phi2: no distance or pm_phi1 panels
    background = plot_tracks(tracks, component="background")
    assert len(background.axes) == 3  # weight, linear density, phi2 slope
    assert "deg$^{-1}$" in background.axes[2].get_ylabel()
    only_phi2 = QTable({"phi1": [0.0, 1.0] * u.deg, "stream_phi2": [0.0, 60.0] * u.arcmin})
    fig = plot_tracks(only_phi2)
    assert len(fig.axes) == 1
    assert np.allclose(fig.axes[0].lines[0].get_ydata(), [0.0, 1.0])  # arcmin -> deg


def test_plot_tracks_truth_dashed(tracks):
    truth = make_truth()
    fig = plot_tracks(tracks, component="stream", truth=truth)
    truth_lines = {
        ax.get_ylabel(): [line for line in ax.lines if line.get_linestyle() == "--"]
        for ax in fig.axes
    }
    assert len(truth_lines[r"$\phi_2$ [deg]"]) == 1
    (dashed,) = truth_lines[r"$\phi_2$ [deg]"]
    assert np.allclose(dashed.get_xdata(), truth["phi1"].value)
    assert np.allclose(dashed.get_ydata(), truth["phi2"].value)
    phi2_axes = fig.axes[2]
    assert sum(line.get_linestyle() == ":" for line in phi2_axes.lines) == 2  # truth +- width
    assert len(truth_lines["linear density [deg$^{-1}$]"]) == 1
    assert not truth_lines["weight $f$"]  # truth has no weight
    assert not truth_lines[r"parallax $\varpi$ [mas]"]


def test_plot_tracks_missing_component(tracks):
    with pytest.raises(InputError, match="cocoon_weight"):
        plot_tracks(tracks, component="cocoon")
    with pytest.raises(InputError, match="'phi1'"):
        plot_tracks(QTable({"stream_weight": [0.1]}))


# ------------------------------------------------------ probability histogram


def _annotation_counts(fig) -> dict[float, int]:
    counts = {}
    for text in fig.axes[0].texts:
        left, right = text.get_text().split(":")
        counts[float(left.replace("p >", ""))] = int(right.replace(",", ""))
    return counts


def test_probability_histogram_counts(members):
    fig = plot_probability_histogram(members, thresholds=(0.5, 0.8, 0.95))
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    p = np.asarray(members["p_stream"])
    expected = {t: sum(1 for value in p.tolist() if value > t) for t in (0.5, 0.8, 0.95)}
    assert _annotation_counts(fig) == expected
    assert expected[0.5] > expected[0.8] > 0
    # one vertical line per threshold, and the bars hold every star
    assert sorted(line.get_xdata()[0] for line in ax.lines) == [0.5, 0.8, 0.95]
    assert sum(patch.get_height() for patch in ax.patches) == len(p)


def test_probability_histogram_other_component_and_nan():
    table = QTable({"p_spur": [0.1, 0.7, np.nan, 0.99, 0.3]})
    fig = plot_probability_histogram(table, "spur", thresholds=(0.2,))
    assert _annotation_counts(fig) == {0.2: 3}
    with pytest.raises(InputError, match="p_stream"):
        plot_probability_histogram(table)


# ------------------------------------------------------------------- cmd


def test_plot_cmd_drops_missing_photometry(members):
    table = members.copy()
    table["gaia_bp"][:10] = np.nan * u.mag
    table["gaia_g"][10:15] = 1e20 * u.mag  # the sentinel of the GD-1 file
    fig = plot_cmd(table, ("gaia_bp", "gaia_rp"), "gaia_g")
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.yaxis_inverted()
    assert ax.get_xlabel() == r"$G_\mathrm{BP}$ $-$ $G_\mathrm{RP}$ [mag]"
    assert ax.get_ylabel() == "$G$ [mag]"
    grey, coloured = scatters(ax)
    p = np.asarray(table["p_stream"])[15:]
    assert len(grey.get_offsets()) == np.sum(p < 0.1)
    assert len(coloured.get_offsets()) == np.sum(p >= 0.1)
    x = np.concatenate([grey.get_offsets()[:, 0], coloured.get_offsets()[:, 0]])
    colour = (table["gaia_bp"] - table["gaia_rp"]).value[15:]
    assert np.isclose(np.sort(x), np.sort(colour)).all()
    with pytest.raises(InputError, match="ps1_g"):
        plot_cmd(table, ("ps1_g", "ps1_i"), "ps1_g")


def test_photometric_bands():
    assert photometric_bands(make_members(10)) == ("gaia_bp", "gaia_rp", "gaia_g")
    assert photometric_bands(make_members(10, photometry=False)) is None
    ps1 = QTable({"ps1_g": [1.0], "ps1_r": [1.0]})
    assert photometric_bands(ps1) == ("ps1_g", "ps1_r", "ps1_g")


# ------------------------------------------------------------ save_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_save_figures_writes_refuses_and_overwrites(tmp_path, members, tracks):
    folder = tmp_path / "figures"
    paths = save_figures(members, tracks, folder, truth=make_truth())
    assert [p.name for p in paths] == ["sky.png", "tracks.png", "probability.png", "cmd.png"]
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 10_000 and data.startswith(PNG_MAGIC)
    # no temporaries left
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)
    before = {p: p.stat().st_mtime_ns for p in paths}
    with pytest.raises(InputError, match="sky.png"):
        save_figures(members, tracks, folder)
    assert {p: p.stat().st_mtime_ns for p in paths} == before
    assert save_figures(members, tracks, folder, overwrite=True) == paths


def test_save_figures_checks_all_files_before_writing(tmp_path, members, tracks):
    (tmp_path / "probability.png").write_bytes(b"keep")
    with pytest.raises(InputError, match="probability.png"):
        save_figures(members, tracks, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["probability.png"]
    assert (tmp_path / "probability.png").read_bytes() == b"keep"


def test_save_figures_missing_component_and_formats(tmp_path, tracks):
    members = make_members(500, photometry=False)
    with pytest.raises(InputError, match="p_cocoon"):
        save_figures(members, tracks, tmp_path, component="cocoon")
    assert not list(tmp_path.iterdir())
    paths = save_figures(members, tracks, tmp_path, component="spur", formats=("png", "pdf"))
    names = [f"{name}.{fmt}" for name in ("sky", "tracks", "probability") for fmt in ("png", "pdf")]
    assert [p.name for p in paths] == names
    assert all(p.read_bytes().startswith(b"%PDF") for p in paths if p.suffix == ".pdf")


def test_no_pyplot_figures_accumulate(members, tracks):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_sky(members)
    plot_tracks(tracks, members)
    plot_probability_histogram(members)
    assert plt.get_fignums() == before


# ------------------------------------------------------------ isochrone on the CMD


@pytest.fixture(scope="module")
def tiny_mock():
    from streammix.mock import MockConfig, generate_mock

    return generate_mock(MockConfig(n_stream=150, n_background=1000), seed=5)


def tiny_config(truth, photometry: bool):
    from streammix.config import Config
    from streammix.pipeline import demo_config

    cfg = demo_config(truth, ensemble=1, photometry=photometry)
    cfg = cfg.model_dump(mode="json", exclude={"source"})
    cfg["model"]["background"]["flow"].update({"epochs": 3, "hidden": 8, "transforms": 1})
    cfg["model"]["grid_size"] = 64
    if photometry:
        cfg["model"]["isochrone"]["nodes"] = 60
    cfg["fit"].update(
        {"steps": 30, "dropout_samples": 0, "warm_start_steps": 10, "workers": 1, "bootstrap": False}
    )
    return Config.from_dict(cfg)


@pytest.fixture(scope="module")
def joint_fit(tiny_mock):
    """A tiny joint (astrometry + Gaia photometry) fit, not converged: the plumbing
    is tested. Its members table carries the stars' magnitudes for the CMD."""
    import warnings

    from streammix.data import StarTable
    from streammix.fit import fit
    from streammix.pipeline import mock_columns

    stars_table, truth = tiny_mock
    stars = StarTable.from_table(stars_table, mock_columns(["gaia_g", "gaia_bp", "gaia_rp"]))
    with warnings.catch_warnings():  # 30 steps: "did not converge"
        warnings.simplefilter("ignore")
        model = fit(tiny_config(truth, photometry=True), stars)
    return model, model.membership(stars)


def test_isochrone_curve_is_the_likelihood_at_the_weighted_median_distmod(joint_fit):
    from streammix.plot import isochrone_curve

    model, members = joint_fit
    curve = isochrone_curve(model, members=members)
    # the reference DM: the p-weighted median of the DM track at the members' phi1,
    # found here as the minimiser of sum_i p_i |DM_i - c| over the candidates c
    p = np.asarray(members["p_stream"])
    dm = model.tracks(members["phi1"], dropout_samples=0)["stream_distmod"].to_value(u.mag)
    cost = np.abs(dm[:, None] - dm[None, :]).T @ p
    assert curve.meta["distmod"] == pytest.approx(dm[np.argmin(cost)], abs=1e-9)
    assert 12.0 < curve.meta["distmod"] < 17.0  # the mock's stream is at DM 14-15.5
    like = model.mixtures[0].components[0].photometry
    assert like.bands == ("gaia_g", "gaia_bp", "gaia_rp")
    expected = like.curve(curve.meta["distmod"])
    for name in (*like.bands, "initial_mass", "run"):
        np.testing.assert_array_equal(curve[name], expected[name])
    assert curve.meta["extinction"] == {}
    # extinction columns: their p-weighted median is added band by band
    reddened = members.copy()
    reddened["A_gaia_g"] = np.full(len(members), 0.3) * u.mag
    curve_red = isochrone_curve(model, members=reddened)
    np.testing.assert_allclose(curve_red["gaia_g"].value - curve["gaia_g"].value, 0.3, atol=1e-9)
    np.testing.assert_allclose(curve_red["gaia_bp"].value, curve["gaia_bp"].value)


def test_isochrone_curve_without_members_uses_the_weight_peak(joint_fit):
    from streammix.plot import isochrone_curve

    model, _ = joint_fit
    tracks = model.tracks(dropout_samples=0)
    peak = np.argmax(np.asarray(tracks["stream_weight"]))
    curve = isochrone_curve(model)
    assert curve.meta["distmod"] == pytest.approx(tracks["stream_distmod"][peak].to_value(u.mag))
    with pytest.raises(InputError, match="cocoon"):
        isochrone_curve(model, component="cocoon")
    with pytest.raises(InputError, match="p_stream > 0"):
        isochrone_curve(model, members=QTable({"phi1": [-50.0] * u.deg, "p_stream": [0.0]}))


def test_cmd_figure_draws_the_isochrone(joint_fit, tmp_path):
    from streammix.plot import isochrone_curve

    model, members = joint_fit
    curve = isochrone_curve(model, members=members)
    fig = plot_cmd(members, ("gaia_bp", "gaia_rp"), "gaia_g", isochrone=curve)
    ax = fig.axes[0]
    label = f"isochrone, DM = {curve.meta['distmod']:.2f}"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [label]
    lines = ax.get_lines()
    assert len(lines) == len(np.unique(curve["run"]))  # separate runs are not joined
    first = np.asarray(curve["run"]) == 0
    np.testing.assert_allclose(lines[0].get_ydata(), curve["gaia_g"][first].value)
    colour = (curve["gaia_bp"] - curve["gaia_rp"])[first].value
    np.testing.assert_allclose(lines[0].get_xdata(), colour)
    # the axes keep the stars' range (the isochrone reaches far fainter than the data)
    assert max(ax.get_ylim()) < curve["gaia_g"].value.max()
    paths = save_figures(members, model.tracks(), tmp_path, isochrone=curve)
    assert [p.name for p in paths][-1] == "cmd.png"


def test_plot_cmd_isochrone_needs_the_bands(members):
    iso = QTable({"gaia_g": [18.0, 19.0], "gaia_bp": [18.3, 19.4]}, meta={"distmod": 14.0})
    with pytest.raises(InputError, match="isochrone table: column 'gaia_rp'"):
        plot_cmd(members, ("gaia_bp", "gaia_rp"), "gaia_g", isochrone=iso)


def test_isochrone_curve_is_none_for_an_astrometry_only_model(tiny_mock):
    from streammix.data import StarTable
    from streammix.fit import FittedModel, build_mixture
    from streammix.pipeline import mock_columns
    from streammix.plot import isochrone_curve

    stars_table, truth = tiny_mock
    config = tiny_config(truth, photometry=False)
    mixture = build_mixture(config, StarTable.from_table(stars_table, mock_columns()))
    model = FittedModel(config, [mixture], None, np.ones(len(mixture.grid)))
    assert mixture.components[0].photometry is None
    assert isochrone_curve(model) is None


def test_isochrone_curve_is_the_likelihood_curve_at_the_weight_peak():
    """A stand-in model around a real likelihood: DM from the weight peak, rows from
    PhotometricLikelihood.curve (its own test checks the rows and runs)."""
    from types import SimpleNamespace

    from streammix.isochrone import default_isochrone
    from streammix.photometry import PhotometricLikelihood
    from streammix.plot import isochrone_curve

    like = PhotometricLikelihood(default_isochrone(), ["gaia_g", "gaia_rp"], n_nodes=40)

    def tracks(phi1=None, dropout_samples=None):
        return QTable({"phi1": [-50.0, -40.0, -30.0] * u.deg, "s_weight": [0.1, 0.3, 0.2],
                       "s_distmod": [14.0, 15.0, 16.0] * u.mag})  # fmt: skip

    model = SimpleNamespace(
        component_names=("s", "background"), tracks=tracks,
        mixtures=[SimpleNamespace(components=[SimpleNamespace(name="s", photometry=like)])],
    )  # fmt: skip
    curve = isochrone_curve(model, component="s")
    expected = like.curve(15.0)
    assert curve.meta["distmod"] == 15.0 and curve.meta["component"] == "s" and curve.meta["extinction"] == {}
    assert curve.colnames == expected.colnames
    for name in expected.colnames:
        np.testing.assert_array_equal(curve[name], expected[name])
    assert isochrone_curve(model, component="background") is None  # no photometry
