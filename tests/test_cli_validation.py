"""The real-data checks through the real command line: `fit` writes residuals,
`plot --residuals` redraws them, `compare` ranks configs by held-out likelihood."""

import json
import subprocess
import sys

import pytest
import yaml
from astropy.table import Table

from streammix.mock import MockConfig, generate_mock, write_mock
from streammix.pipeline import demo_config, mock_columns


def run(*args):
    return subprocess.run([sys.executable, "-m", "streammix", *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    folder = tmp_path_factory.mktemp("validation")
    stars, truth = generate_mock(MockConfig(n_stream=250, n_background=2500), seed=9)
    write_mock(stars, truth, folder / "stars.fits")
    cfg = demo_config(truth, ensemble=1, photometry=False).model_dump(mode="json", exclude={"source"})
    cfg["data"] = {"path": "stars.fits", "columns": mock_columns(["true_component"]).model_dump(exclude_unset=True)}
    cfg["model"]["background"]["flow"].update({"epochs": 10, "hidden": 16, "transforms": 2})
    cfg["model"]["grid_size"] = 64
    cfg["fit"].update({"steps": 150, "warm_start_steps": 50, "workers": 1})
    (folder / "stream.yaml").write_text(yaml.safe_dump(cfg))
    cfg["name"] = "uniform_phi2"
    cfg["model"]["background"]["phi2"] = "uniform"
    (folder / "uniform.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def test_fit_writes_residuals_and_plot_redraws_them(field, tmp_path):
    out = tmp_path / "run"
    result = run("fit", field / "stream.yaml", "--out", out, "--quiet", "--set", "fit.seed=3")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    # --set changed the config, and the model's config records it
    assert summary["seed"] == 3 and yaml.safe_load((out / "model" / "config.yaml").read_text())["fit"]["seed"] == 3
    residuals = Table.read(out / "residuals.ecsv")
    assert (out / "figures" / "residuals.png").is_file()
    assert residuals["observed"].sum() == summary["residuals"]["position"]["n_selected"] > 100
    members = Table.read(out / "members.ecsv")
    assert summary["members"]["p>0.5"] == int((members["p_member"] > 0.5).sum())
    # the stream's stars lie at the parallax its distance gives (streammix.parallax_residuals)
    stream = summary["parallax_residuals"]["own_distance"]["stream"]  # a smoke test: the distance is fitted to them
    assert stream["stars"] > 100 and abs(stream["significance"]) < 3, stream
    (out / "figures" / "residuals.png").unlink()
    again = run("plot", out, "--residuals")
    assert again.returncode == 0, again.stderr
    assert "position residuals of" in again.stderr and (out / "figures" / "residuals.png").is_file()
    # a folder without a fitted model cannot give residuals: one line, exit 2
    (out / "model" / "model.json").unlink()
    bad = run("plot", out, "--residuals")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "model" in bad.stderr


@pytest.mark.parametrize(
    "setting, named",
    [
        ("fit.seed", "expected KEY=VALUE"),
        ("fit.sed=1", "fit.sed"),
        ("fit.seed=one", "fit.seed"),
        ("fit.seed.x=1", "fit.seed is a value"),
        ("model.components.spur.bounds={phi2: [0, 1]}", "no entry named 'spur'"),
        ("fit.seed=[1", "not valid YAML"),
        ("model.isochrone.outlier_fraction=1", "outlier_fraction"),
        ("model.isochrone.outlier_fraction=0.05", "isochrone.outlier_fraction: needs bands"),
        ("data.columns.parallax_err_external={factor: 0}", "data.columns.parallax_err_external.factor"),
    ],
)
def test_a_bad_set_is_one_line_naming_its_key_and_writes_nothing(field, tmp_path, setting, named):
    out = tmp_path / "run"
    result = run("fit", field / "stream.yaml", "--out", out, "--quiet", "--set", setting)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert named in result.stderr and not out.exists() and not result.stdout


def test_compare_writes_a_ranking_and_refuses_bad_input(field, tmp_path):
    out = tmp_path / "cmp"
    result = run("compare", field / "stream.yaml", field / "uniform.yaml", "--folds", 2, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    table = Table.read(out / "comparison.ecsv")
    assert list(table["config"]) == ["mock", "uniform_phi2"]
    assert table["n_stars"][0] == 2750 and table.meta["folds"] == 2 and table.meta["repeats"] == 1
    written = json.loads((out / "summary.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert written["repeats"] == 1 and written["repeat_totals"] is None
    assert written["rows"][1]["delta_total_fit_err"] is None  # not measured with one fit per fold
    per_star = Table.read(out / "heldout.ecsv")
    assert len(per_star) == 2750 and set(per_star["fold"]) == {0, 1}
    assert "held-out log-likelihood" in result.stderr
    again = run("compare", field / "stream.yaml", field / "uniform.yaml", "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    for args, message in (
        ((field / "stream.yaml", field / "absent.yaml"), "absent.yaml"),
        ((field / "stream.yaml", field / "uniform.yaml", "--folds", 1), "folds"),
        ((field / "stream.yaml", field / "uniform.yaml", "--repeats", 0), "repeats 0"),
    ):
        bad = run("compare", *args, "--out", tmp_path / "bad")
        assert bad.returncode == 2, bad.stderr
        assert message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert not (tmp_path / "bad").exists()
