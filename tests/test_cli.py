"""The command line, run as a user runs it: a real subprocess, exit codes, files."""

import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from astropy.table import Table

from streammix.mock import MockConfig, generate_mock, write_mock
from streammix.pipeline import demo_config, mock_columns


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "streammix", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_help_everywhere():
    out = run("--help")
    assert out.returncode == 0
    for command in ("mock", "demo", "fit", "members", "plot", "catalogs", "isochrone-fit"):
        assert command in out.stdout
        assert run(command, "--help").returncode == 0
    catalogs = run("catalogs", "--help")
    for command in ("list", "info", "fetch", "load", "crossmatch"):
        assert command in catalogs.stdout
    assert "--max-size" in run("catalogs", "fetch", "--help").stdout


def test_mock_writes_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "field.fits"
    out = run("mock", "--out", target, "--n-stream", 100, "--n-background", 1000, "--seed", 4)
    assert out.returncode == 0, out.stderr
    table = Table.read(target)
    assert len(table) == 1100 and (table["true_component"] == "stream").sum() == 100
    assert (tmp_path / "field_tracks.ecsv").is_file()
    before = target.stat().st_mtime_ns
    again = run("mock", "--out", target, "--n-stream", 100, "--n-background", 1000)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert target.stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def small_field(tmp_path_factory):
    folder = tmp_path_factory.mktemp("field")
    stars, truth = generate_mock(MockConfig(n_stream=400, n_background=5000), seed=5)
    write_mock(stars, truth, folder / "stars.fits")
    cfg = demo_config(truth, ensemble=2).model_dump(mode="json", exclude={"source"})
    cfg["data"] = {"path": "stars.fits", "columns": mock_columns(["true_component"]).model_dump(exclude_unset=True)}
    cfg["model"]["background"]["flow"].update({"epochs": 15, "hidden": 16, "transforms": 2})
    cfg["fit"].update({"steps": 200, "dropout_samples": 2})
    (folder / "stream.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def test_ctrl_c_during_a_fit_says_aborted_exits_130_and_leaves_no_output(small_field, tmp_path, default_sigint):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while `streammix fit`
    trains in its worker processes: one word on stderr (no worker's traceback), exit code 130,
    no output folder (the checkpoints stay, for a rerun to resume from)."""
    import os
    import signal
    import time

    out = tmp_path / "run"
    fit = subprocess.Popen(
        [*default_sigint, "-m", "streammix", "fit", small_field / "stream.yaml", "--out", out,
         "--quiet", "--set", "fit.workers=2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / ".run.checkpoints").exists() and time.monotonic() < deadline:
            assert fit.poll() is None, fit.communicate()
            time.sleep(0.1)
        time.sleep(3.0)  # into the fit: its worker processes started
        assert fit.poll() is None, "the fit ended before the interrupt"
        os.killpg(fit.pid, signal.SIGINT)
        _, stderr = fit.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(fit.pid, signal.SIGKILL)
        fit.wait(timeout=10)
    assert (fit.returncode, stderr) == (130, "aborted\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.checkpoints"]


def test_fit_members_plot(small_field, tmp_path):
    out = tmp_path / "run"
    result = run("fit", small_field / "stream.yaml", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    for name in ("members.ecsv", "tracks.ecsv", "summary.json", "model/model.json", "model/config.yaml"):
        assert (out / name).is_file(), name
    assert {p.name for p in (out / "figures").iterdir()} >= {"sky.png", "tracks.png", "probability.png"}
    members = Table.read(out / "members.ecsv")
    assert len(members) == 5400
    summary = json.loads((out / "summary.json").read_text())
    assert summary["members"]["p>0.5"] == int((members["p_stream"] > 0.5).sum())
    assert {"torch", "streammix"} <= set(summary["versions"])
    assert not list(tmp_path.glob(".run*")), "temporary or checkpoint folders left behind"

    scored = tmp_path / "scored.parquet"
    result = run("members", out, "--data", small_field / "stars.fits", "--out", scored)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(Table.read(scored)["p_stream"], members["p_stream"], atol=1e-6)

    # a catalog without the model's bands: its photometry is unobserved, the stars are scored without it,
    # exactly as stars whose band values are all missing (every band NaN but on row 0)
    stars = Table.read(small_field / "stars.fits")
    bands = [c for c in stars.colnames if c.startswith("gaia_")]
    missing = stars.copy()
    for column in bands:
        missing[column] = np.where(np.arange(len(stars)) == 0, stars[column], np.nan)
    missing.write(tmp_path / "missing_values.fits")
    stars.remove_columns(bands)
    stars.write(tmp_path / "no_bands.fits")
    result = run("members", out, "--data", tmp_path / "no_bands.fits", "--out", tmp_path / "no_bands.ecsv")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "no column for bands" in line]
    assert len(said) == 1 and "gaia_g, gaia_bp, gaia_rp" in said[0] and "Traceback" not in result.stderr
    assert run("members", out, "--data", tmp_path / "missing_values.fits", "--out", tmp_path / "missing.ecsv").returncode == 0
    without = Table.read(tmp_path / "no_bands.ecsv")["p_stream"]
    np.testing.assert_allclose(without[1:], Table.read(tmp_path / "missing.ecsv")["p_stream"][1:], atol=1e-9)
    assert np.max(np.abs(without - members["p_stream"])) > 0.1  # the photometry did matter

    # the README's scoring from Python: no library warning (torch's "not writable") reaches the user
    script = (f"from streammix.fit import load; from streammix.data import read_stars; m = load({str(out / 'model')!r}); "
              f"m.membership(read_stars({str(small_field / 'stars.fits')!r}, m.config.data.column_map()))")
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr[-2000:]

    (out / "figures" / "sky.png").unlink()
    assert run("plot", out).returncode == 0
    assert (out / "figures" / "sky.png").is_file()

    again = run("fit", small_field / "stream.yaml", "--out", out, "--quiet")
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_flows_then_fit_with_those_flows(small_field, tmp_path):
    """`streammix flows` trains the flows `streammix fit` would; `fit --background` uses saved
    flows (of `flows`, or of a fit's output) instead of training, with the same probabilities."""
    from streammix.config import Config
    from streammix.data import read_stars
    from streammix.pipeline import read_background

    config = small_field / "stream.yaml"
    first = tmp_path / "first"
    assert run("flows", config, "--out", tmp_path / "flows", "--quiet").returncode == 0
    assert (tmp_path / "flows" / "block0.pt").is_file() and (tmp_path / "flows" / "config.yaml").is_file()
    assert run("fit", config, "--out", first, "--quiet").returncode == 0
    cfg = Config.from_yaml(config)
    stars = read_stars(small_field / "stars.fits", cfg.data.column_map())
    trained, fitted = read_background(tmp_path / "flows", cfg), read_background(first, cfg)
    np.testing.assert_array_equal(trained.log_prob(stars), fitted.log_prob(stars))

    again = tmp_path / "again"
    result = run("fit", config, "--out", again, "--background", tmp_path / "flows", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "no errors" not in result.stderr  # the mock gives every error
    np.testing.assert_allclose(
        Table.read(again / "members.ecsv")["p_stream"], Table.read(first / "members.ecsv")["p_stream"], atol=1e-6
    )

    exact = tmp_path / "exact"  # a table without some errors: the fit says so, and summary.json records it
    result = run("fit", config, "--out", exact, "--background", tmp_path / "flows", "--quiet",
                 "--set", "data.columns.pm_phi2_err=null")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "note: the data give no errors for pm_phi2: taken as exact (0)" in " ".join(result.stderr.split())
    assert json.loads((exact / "summary.json").read_text())["without_errors"] == ["pm_phi2"]
    scored = run("members", exact, "--data", small_field / "stars.fits", "--out", tmp_path / "scored.ecsv")
    assert scored.returncode == 0, scored.stderr  # scoring other stars with that model says so too
    assert "note: the data give no errors for pm_phi2: taken as exact (0)" in " ".join(scored.stderr.split())
    assert "without_errors" not in json.loads((again / "summary.json").read_text())

    other = yaml.safe_load(config.read_text())
    other["model"]["background"]["flow"]["hidden"] = 8
    (small_field / "other.yaml").write_text(yaml.safe_dump(other))
    result = run("fit", small_field / "other.yaml", "--out", tmp_path / "other", "--background", first, "--quiet")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "model.background.flow.hidden: 8, but the given background's block" in result.stderr
    assert not (tmp_path / "other").exists()


BLOCKS = [["parallax", "pm_phi1_cosphi2", "pm_phi2"], ["gaia_g", "gaia_bp", "gaia_rp"]]


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"fitt": {}}, "fitt"),
        ({"fit": {"steps": "many"}}, "fit.steps"),
        ({"data": {"path": "nowhere.fits"}}, "nowhere.fits"),
        ({"data": {"path": "stars.fits", "columns": {"phi1": "PHI_ONE"}}}, "PHI_ONE"),
        ({"field": {"phi1": [10, -90], "phi2": [-5, 5]}}, "phi1"),
        ({"model": {"coordinates": ["phi2", "radial_velocity"]}}, "radial_velocity"),
        ({"model": {"isochrone": {"band_transform": "jordi2006"}}}, "model.isochrone.band_transform: 'jordi2006' is not"),
        ({"model": {"background": {"blocks": BLOCKS, "limits": {"phi2": [-5, 5]}}}}, "background.limits: 'phi2' is in no"),
        ({"model": {"background": {"blocks": BLOCKS, "limits": {"parallax": [None, 0.1]}}}}, "column 'parallax':"),
        ({"model": {"background": {"blocks": BLOCKS, "locus": ["gaia_g", "gaia_bp"]}}}, "background.locus: ['gaia_g', 'gaia_bp'] must"),
        ({"model": {"background": {"blocks": BLOCKS, "locus": ["gaia_g", "gaia_bp", "gaia_rp"],
                                   "limits": {"gaia_rp": [None, 21]}}}}, "background.locus: its colour bands ['gaia_rp']"),
        ({"model": {"background": {"blocks": [BLOCKS[0], ["gaia_g", "gaia_bp"], ["gaia_rp"]],
                                   "locus": ["gaia_g", "gaia_bp", "gaia_rp"]}}}, "background.locus: no background block"),
    ],
)
def test_bad_config_exits_2_with_one_line_and_writes_nothing(small_field, tmp_path, edit, message):
    cfg = yaml.safe_load((small_field / "stream.yaml").read_text())
    for key, value in edit.items():
        cfg[key] = value if not isinstance(value, dict) or key not in cfg else {**cfg[key], **value}
    path = small_field / f"bad_{abs(hash(str(edit)))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    result = run("fit", path, "--out", out, "--quiet")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("cut", [100, 3000, 20000])
def test_truncated_fits_is_one_line_without_library_warnings(small_field, tmp_path, cut):
    """astropy warns about a cut header (VerifyWarning) before failing: only our line may show."""
    (tmp_path / "stars.fits").write_bytes((small_field / "stars.fits").read_bytes()[:cut])
    cfg = yaml.safe_load((small_field / "stream.yaml").read_text())
    cfg["data"]["path"] = str(tmp_path / "stars.fits")
    (tmp_path / "stream.yaml").write_text(yaml.safe_dump(cfg))
    result = run("fit", tmp_path / "stream.yaml", "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: file '{tmp_path / 'stars.fits'}': cannot be read as fits")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()


def test_missing_config_file_is_named(tmp_path):
    result = run("fit", tmp_path / "absent.yaml", "--out", tmp_path / "run")
    assert result.returncode == 2 and "absent.yaml" in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run("--debug", "fit", tmp_path / "absent.yaml", "--out", tmp_path / "run")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_demo_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--out", out, "--n-stream", 300, "--n-background", 4000, "--ensemble", 2, "--quiet")
    assert result.returncode == 0, result.stderr
    stars = Table.read(out / "stars.fits")
    assert "true_component" in stars.colnames and len(stars) == 4300
    members = Table.read(out / "members.ecsv")
    for column in ("source_id", "p_stream", "p_background", "p_stream_q05", "p_stream_q50", "p_stream_q95"):
        assert column in members.colnames
    np.testing.assert_array_equal(np.sort(members["source_id"]), np.sort(stars["source_id"]))
    summary = json.loads((out / "summary.json").read_text())
    assert {"p>0.5", "p>0.8"} == set(summary["members"])
    assert summary["seed"] == 0 and "seconds" in summary and "versions" in summary
    assert 0.5 < summary["truth"]["auc"] <= 1.0
    assert (out / "tracks.ecsv").is_file() and (out / "figures" / "tracks.png").is_file()
