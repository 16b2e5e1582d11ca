"""Reliability (issue #8): bad input, killed fits, atomic and non-clobbering outputs.

Three parts, each run through the real command line:

- a fixed, named table of bad inputs (:data:`CASES`), each of which must end
  with exit code 2, one line on standard error naming the problem, no
  traceback, and no file created or modified; a few run as real processes,
  one of them with ``--debug`` (which must show the traceback), and a
  hypothesis test corrupts tables at random;
- a small fit run as a real process and killed with SIGKILL at six points
  (:data:`KILL_POINTS`), then resumed: the resumed run starts from the last
  checkpoint and ends with the same probabilities and tracks as an
  uninterrupted run with the same seed, with nothing partial left behind;
- overwrite protection of ``fit``, ``members``, ``mock`` and ``demo``.

The download failures of the catalogs issue are tested in
tests/test_catalogs.py against a local HTTP server (not repeated here).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from astropy.table import MaskedColumn, QTable, Table
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streammix.cli import main
from streammix.data import ASTROMETRIC, PLAUSIBLE, ColumnMap, StarTable, check_plausible
from streammix.errors import InputError
from streammix.mock import MockConfig, generate_mock, write_mock
from streammix.pipeline import checkpoint_folder, demo_config, mock_columns

MOCK = MockConfig(n_stream=200, n_background=1500)
ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


STEPS = 60  # per ensemble member in the kill tests


def tiny_config(truth, steps: int = STEPS) -> dict:
    """The demo's config made to fit the small mock in a couple of seconds:
    astrometry only, small flows and networks, two ensemble members, one
    process, a checkpoint every 10 steps."""
    cfg = demo_config(truth, ensemble=2, photometry=False).model_dump(mode="json", exclude={"source"})
    columns = mock_columns().model_dump(exclude_unset=True)
    for key in ("bands", "band_errors", "extinction"):
        columns.pop(key, None)
    cfg["data"] = {"columns": columns}
    blocks = [block["coordinates"] for block in cfg["model"]["background"]["blocks"]]
    assert cfg["model"]["bands"] == [] and blocks == [["parallax", "pm_phi1_cosphi2", "pm_phi2"]]
    cfg["model"]["background"]["flow"].update({"epochs": 2, "hidden": 8, "transforms": 1})
    cfg["model"]["grid_size"] = 32
    small = {"hidden": 8, "layers": 1, "dropout": 0.05}
    for component in cfg["model"]["components"]:
        component["network"] = dict(small)
    cfg["model"]["weights_network"] = dict(small)
    cfg["fit"].update(
        {"steps": steps, "dropout_samples": 2, "workers": 1, "checkpoint_every": 10, "eval_every": 10,
         "patience": 10_000, "warm_start_steps": 10}
    )
    return cfg


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """The small mock (stars, true tracks) and its tiny config."""
    stars, truth = generate_mock(MOCK, seed=1)
    return stars, truth, tiny_config(truth)


# ------------------------------------------------------------------ running the CLI


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def run_in_process(argv, capsys, monkeypatch) -> Outcome:
    """``streammix <argv>`` through the real entry point, in this process."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["streammix", *map(str, argv)])
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    out = capsys.readouterr()
    return Outcome(code, ANSI.sub("", out.out), ANSI.sub("", out.err))


def run_process(argv, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streammix", *map(str, argv)], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root`` with its size, mtime and content hash."""
    import hashlib

    state = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest = hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(root))] = (stat.st_size if path.is_file() else 0, stat.st_mtime_ns, digest)
    return state


def assert_one_line_error(outcome: Outcome, names: tuple[str, ...]) -> str:
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.code == 2, (outcome.code, outcome.stderr[-3000:])
    assert "Traceback" not in outcome.stderr
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("error: "), lines[0]
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    assert outcome.stdout.strip() == ""
    return lines[0]


# ------------------------------------------------------------------ the bad-input table


class Workspace:
    """Builds bad inputs in a folder from the good small mock and its tiny config."""

    def __init__(self, root: Path, stars: QTable, truth: QTable, config: dict, model: Callable[[], Path]):
        self.root, self.good, self.truth, self.good_config = root, stars, truth, config
        self.out = root / "run"  # fit and demo write this folder
        self.scored = root / "scored.ecsv"  # members writes this file
        self.existing: list[Path] = []  # outputs present before the command (run with --overwrite)
        self._model = model
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"

    def stars(self, edit=None, suffix: str = ".fits") -> Path:
        table = Table(self.good, copy=True)
        if edit is not None:
            table = edit(table)
        path = self.root / (self.name("stars") + suffix)
        kwargs = {"serialize_method": "data_mask"} if suffix == ".ecsv" else {}
        table.write(path, **kwargs)
        return path

    def config(self, edit=None, data: Path | str | None = "good") -> Path:
        cfg = yaml.safe_load(yaml.safe_dump(self.good_config))
        if data is not None:
            cfg["data"]["path"] = str(self.stars() if data == "good" else data)
        if edit is not None:
            edit(cfg)
        path = self.root / (self.name("config") + ".yaml")
        path.write_text(yaml.safe_dump(cfg))
        return path

    def fit(self, stars=None, suffix=".fits", config=None, data=None) -> list:
        """``fit`` of a config whose data is the good table edited by ``stars``
        (or the file ``data``), the config edited by ``config``."""
        if data is None:
            data = self.stars(stars, suffix)
        return ["fit", self.config(config, data=data), "--out", self.out, "--quiet"]

    def members(self, stars=None, suffix=".fits", data=None, model=None, out=None) -> list:
        """``members`` of the fitted small model on the good table edited by ``stars``."""
        if data is None:
            data = self.stars(stars, suffix)
        model = self._model() if model is None else model
        return ["members", model, "--data", data, "--out", out or self.scored]

    def raw(self, content: bytes, suffix: str) -> Path:
        path = self.root / (self.name("raw") + suffix)
        path.write_bytes(content)
        return path

    def truncated(self, suffix: str, fraction: float = 0.5) -> Path:
        """The good table written as ``suffix``, cut after ``fraction`` of its bytes
        (text: in the middle of a row, as a crash would leave it)."""
        good = self.stars(None, suffix)
        data = good.read_bytes()
        cut = int(len(data) * fraction)
        while suffix in (".csv", ".ecsv") and data[cut - 1 : cut + 1].count(b"\n"):
            cut -= 3
        good.write_bytes(data[:cut])
        return good

    def preexisting(self, argv: list) -> list:
        """Create the command's output first, and add --overwrite: it must survive untouched."""
        if "fit" in argv or "demo" in argv:
            self.out.mkdir()
            (self.out / "members.ecsv").write_text("an earlier result\n")
            self.existing.append(self.out)
        else:
            target = Path(argv[argv.index("--out") + 1])
            target.write_text("an earlier result\n")
            self.existing.append(target)
        return [*argv, "--overwrite"]


# table edits ---------------------------------------------------------------------


def drop(*names):
    def edit(t):
        t.remove_columns(names)
        return t

    return edit


def rename(old, new):
    def edit(t):
        t.rename_column(old, new)
        return t

    return edit


def put(name, rows, value):
    """Set ``t[name][rows] = value`` (keeping the column's unit)."""

    def edit(t):
        column = np.array(t[name], dtype=float)
        column[rows] = value
        t[name] = Table.Column(column, unit=t[name].unit)
        return t

    return edit


def put_id(rows, value):
    def edit(t):
        t["source_id"][rows] = value
        return t

    return edit


def one_full_star(t):
    """The first star with every astrometric value."""
    full = np.all([np.isfinite(np.asarray(t[c], dtype=float)) for c in ASTROMETRIC], axis=0)
    return t[np.flatnonzero(full)[:1]]


def unit(name, new):
    def edit(t):
        t[name].unit = new
        return t

    return edit


def text(name, value="n/a"):
    def edit(t):
        t[name] = [value] * len(t)
        return t

    return edit


def masked(name, rows):
    def edit(t):
        mask = np.zeros(len(t), bool)
        mask[rows] = True
        t[name] = MaskedColumn(np.asarray(t[name]), mask=mask, unit=t[name].unit)
        return t

    return edit


def rows(index):
    return lambda t: t[index]


def chain(*edits):
    def edit(t):
        for e in edits:
            t = e(t)
        return t

    return edit


# config edits ----------------------------------------------------------------------


def cfg_set(path: str, value):
    """Set a dotted key of the config (creating sections)."""

    def edit(cfg):
        *parents, last = path.split(".")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


def cfg_del(path: str):
    def edit(cfg):
        *parents, last = path.split(".")
        node = cfg
        for key in parents:
            node = node[key]
        del node[last]

    return edit


@dataclass(frozen=True)
class Case:
    """A bad input: ``build`` returns the command's arguments; the one error
    line must contain every string in ``names``."""

    category: str
    build: Callable[[Workspace], list]
    names: tuple[str, ...]
    existing: bool = False  # run over an existing output with --overwrite


def case(category, build, *names, existing=False):
    return Case(category, build, names, existing)


def _incomplete_model(ws: Workspace) -> list:
    model = ws.root / "model_copy"
    shutil.copytree(ws._model() / "model", model)
    (model / "member1.pt").unlink()
    return ws.members(model=model)


CASES: dict[str, Case] = {
    # missing or renamed columns
    "phi1-missing": case("missing/renamed column", lambda ws: ws.fit(drop("phi1")), "column 'phi1'", "not found"),
    "phi1-renamed": case("missing/renamed column", lambda ws: ws.fit(rename("phi1", "PHI_1")), "'phi1'", "PHI_1"),
    "mapped-error-renamed": case(
        "missing/renamed column", lambda ws: ws.fit(rename("parallax_err", "plx_error")),
        "column 'parallax_err' (columns.parallax_err)", "plx_error"),
    "config-maps-absent-column": case(
        "missing/renamed column", lambda ws: ws.fit(config=cfg_set("data.columns.phi2", "b_deg")),
        "'b_deg'", "columns.phi2"),
    "band-column-absent": case(
        "missing/renamed column", lambda ws: ws.fit(config=cfg_set("data.columns.bands", ["gaia_z"])), "'gaia_z'"),
    "keep-column-absent": case(
        "missing/renamed column", lambda ws: ws.fit(config=cfg_set("data.columns.keep", ["feh"])), "'feh'", "columns.keep"),
    "members-data-without-phi1": case(
        "missing/renamed column", lambda ws: ws.members(drop("phi1")), "column 'phi1'", "not found"),
    # wrong units
    "phi1-in-km/s": case("wrong unit", lambda ws: ws.fit(unit("phi1", "km/s")), "column 'phi1'", "km / s", "deg"),
    "parallax-in-km": case("wrong unit", lambda ws: ws.fit(unit("parallax", "km")), "column 'parallax'", "km"),
    "pm_phi2-in-mag": case("wrong unit", lambda ws: ws.fit(unit("pm_phi2", "mag")), "column 'pm_phi2'", "mag"),
    "phi2_err-in-mas/yr": case("wrong unit", lambda ws: ws.fit(unit("phi2_err", "mas/yr")), "column 'phi2_err'"),
    "config-unit-not-convertible": case(
        "wrong unit", lambda ws: ws.fit(unit("phi1", None), config=cfg_set("data.columns.units", {"phi1": "kg"})),
        "columns.units.phi1", "kg"),
    "config-unit-unknown": case(
        "wrong unit", lambda ws: ws.fit(config=cfg_set("data.columns.units", {"phi1": "furlongz"})),
        "columns.units.phi1", "furlongz"),
    # NaN or inf in phi1
    "phi1-nan": case("NaN/inf in phi1", lambda ws: ws.fit(put("phi1", [3, 7], np.nan)), "column 'phi1'", "2 non-finite"),
    "phi1-inf": case("NaN/inf in phi1", lambda ws: ws.fit(put("phi1", 5, np.inf)), "column 'phi1'", "1 non-finite"),
    "phi1-minus-inf-csv": case(
        "NaN/inf in phi1", lambda ws: ws.fit(put("phi1", 0, -np.inf), suffix=".csv"), "column 'phi1'", "non-finite"),
    "phi1-masked-ecsv": case(
        "NaN/inf in phi1", lambda ws: ws.fit(masked("phi1", [1, 2, 3]), suffix=".ecsv"), "column 'phi1'", "3 non-finite"),
    "members-phi1-nan": case("NaN/inf in phi1", lambda ws: ws.members(put("phi1", 0, np.nan)), "column 'phi1'"),
    # an all-NaN coordinate
    "phi2-all-nan": case("all-NaN coordinate", lambda ws: ws.fit(put("phi2", slice(None), np.nan)), "'phi2'", "every value"),
    "pm_phi2-all-nan": case(
        "all-NaN coordinate", lambda ws: ws.fit(put("pm_phi2", slice(None), np.nan)), "'pm_phi2'", "every value"),
    "pm_phi1-all-nan-mapped": case(
        "all-NaN coordinate", lambda ws: ws.fit(put("pm_phi1_cosphi2", slice(None), np.nan)),
        "'pm_phi1_cosphi2'", "every value"),
    "parallax-all-masked-ecsv": case(
        "all-NaN coordinate", lambda ws: ws.fit(masked("parallax", slice(None)), suffix=".ecsv"), "'parallax'", "every value"),
    "parallax-all-sentinel": case(
        "all-NaN coordinate",
        lambda ws: ws.fit(put("parallax", slice(None), -999.0), config=cfg_set("data.columns.sentinels", [-999.0])),
        "'parallax'", "every value"),
    # negative or zero errors
    "parallax_err-negative": case(
        "negative error", lambda ws: ws.fit(put("parallax_err", [1, 2], -0.1)), "'parallax_err'", "2 negative"),
    "pm_phi2_err-negative": case(
        "negative error", lambda ws: ws.fit(put("pm_phi2_err", 0, -1.0)), "'pm_phi2_err'", "negative"),
    "phi2_err-negative": case(
        "negative error", lambda ws: ws.fit(put("phi2_err", 9, -1e-6)), "'phi2_err'", "negative"),
    "band-error-negative": case(
        "negative error",
        lambda ws: ws.fit(put("gaia_g_err", 4, -0.01), config=cfg_set("data.columns.bands", ["gaia_g"])),
        "'gaia_g_err'", "negative"),
    "parallax_err-minus-inf": case(
        "negative error", lambda ws: ws.fit(put("parallax_err", 0, -np.inf)), "'parallax_err'", "negative"),
    # duplicated or broken source_id
    "source_id-duplicated": case(
        "duplicated source_id", lambda ws: ws.fit(put_id(1, ws.good["source_id"][0])),
        "'source_id'", "1 duplicated"),
    "source_id-fractional": case(
        "duplicated source_id", lambda ws: ws.fit(put("source_id", 3, 0.5)), "'source_id'", "not integers"),
    "members-source_id-duplicated": case(
        "duplicated source_id", lambda ws: ws.members(put_id(slice(0, 3), 42)), "'source_id'", "duplicated"),
    # empty tables
    "empty-fits": case("empty table", lambda ws: ws.fit(rows(slice(0, 0))), "no rows"),
    "empty-csv": case("empty table", lambda ws: ws.fit(rows(slice(0, 0)), suffix=".csv"), "no rows"),
    "zero-byte-file": case("empty table", lambda ws: ws.fit(data=ws.raw(b"", ".fits")), "raw", "empty"),
    "members-empty-parquet": case("empty table", lambda ws: ws.members(rows(slice(0, 0)), suffix=".parquet"), "no rows"),
    # one star
    "one-star": case("one star", lambda ws: ws.fit(one_full_star), "data", "only 1 stars"),
    "one-star-after-cut": case(
        "one star",
        lambda ws: ws.fit(chain(put("phi1", slice(1, None), 50.0)), config=cfg_set("data.cut_to_field", True)),
        "only 1 stars"),
    # phi1 outside the configured range
    "phi1-beyond-field": case(
        "outside the field", lambda ws: ws.fit(put("phi1", 0, 45.0)), "column 'phi1'", "1 stars outside", "[-90.0, 10.0]"),
    "phi2-beyond-field": case(
        "outside the field", lambda ws: ws.fit(put("phi2", [0, 1], 6.0)), "column 'phi2'", "2 stars outside"),
    "field-phi1-reversed": case(
        "outside the field", lambda ws: ws.fit(config=cfg_set("field.phi1", [10, -90])), "field: phi1", "must exceed"),
    "field-phi2-empty": case(
        "outside the field", lambda ws: ws.fit(config=cfg_set("field.phi2", [5, 5])), "field: phi2", "must exceed"),
    # strings where numbers belong
    "phi1-text": case("text for numbers", lambda ws: ws.fit(text("phi1", "-45.0 deg")), "column 'phi1'", "expected numbers"),
    "parallax-text-csv": case(
        "text for numbers", lambda ws: ws.fit(text("parallax"), suffix=".csv"), "column 'parallax'", "expected numbers"),
    "pm_corr-text-parquet": case(
        "text for numbers", lambda ws: ws.fit(text("pm_corr", "x"), suffix=".parquet"), "'pm_corr'", "expected numbers"),
    "source_id-text": case("text for numbers", lambda ws: ws.fit(text("source_id", "Gaia DR3 1")), "'source_id'"),
    "config-steps-text": case("text for numbers", lambda ws: ws.fit(config=cfg_set("fit.steps", "many")), "fit.steps"),
    "cli-seed-text": case(
        "text for numbers", lambda ws: ["mock", "--out", ws.root / "mock.fits", "--seed", "abc"], "'--seed'"),
    "cli-n-stream-text": case(
        "text for numbers", lambda ws: ["demo", "--out", ws.out, "--n-stream", "lots"], "'--n-stream'"),
    # absurd values
    "pm_corr-5": case("absurd value", lambda ws: ws.fit(put("pm_corr", 2, 5.0)), "'pm_corr'", "outside [-1, 1]"),
    "phi2-beyond-the-pole": case("absurd value", lambda ws: ws.members(put("phi2", 0, 400.0)), "'phi2'", "beyond +-90 deg"),
    "pm-1e30": case("absurd value", lambda ws: ws.fit(put("pm_phi2", 0, 1e30)), "'pm_phi2'", "1 values beyond"),
    "members-parallax-1e30": case(
        "absurd value", lambda ws: ws.members(put("parallax", [0, 1], -1e30)), "'parallax'", "2 values beyond"),
    "pm-error-1e30": case(
        "absurd value", lambda ws: ws.fit(put("pm_phi1_cosphi2_err", 0, 1e30)), "'pm_phi1_cosphi2_err'", "beyond"),
    "fit-steps-zero": case("absurd value", lambda ws: ws.fit(config=cfg_set("fit.steps", 0)), "fit.steps"),
    "learning-rate-negative": case(
        "absurd value", lambda ws: ws.fit(config=cfg_set("fit.learning_rate", -1e-3)), "fit.learning_rate"),
    "mock-negative-star-count": case(
        "absurd value", lambda ws: ["mock", "--out", ws.root / "mock.fits", "--n-stream", "-5"], "n_stream"),
    "demo-ensemble-zero": case(
        "absurd value", lambda ws: ["demo", "--out", ws.out, "--n-stream", 50, "--n-background", 200, "--ensemble", 0],
        "ensemble"),
    # truncated or corrupt files
    "truncated-fits": case("truncated file", lambda ws: ws.fit(data=ws.truncated(".fits")), "stars", ".fits"),
    "truncated-parquet": case("truncated file", lambda ws: ws.fit(data=ws.truncated(".parquet")), "stars", ".parquet"),
    "truncated-csv": case("truncated file", lambda ws: ws.fit(data=ws.truncated(".csv", 0.77)), "stars", "truncated"),
    "truncated-ecsv": case("truncated file", lambda ws: ws.fit(data=ws.truncated(".ecsv", 0.61)), "stars", ".ecsv"),
    "garbage-fits": case("truncated file", lambda ws: ws.fit(data=ws.raw(os.urandom(5000), ".fits")), "raw", ".fits"),
    "members-truncated-parquet": case(
        "truncated file", lambda ws: ws.members(data=ws.truncated(".parquet", 0.3)), ".parquet"),
    # configuration: unknown key, wrong type, missing file
    "config-unknown-key": case("config", lambda ws: ws.fit(config=cfg_set("fitt", {})), "fitt", "Extra inputs"),
    "config-unknown-nested-key": case(
        "config", lambda ws: ws.fit(config=cfg_set("fit.stepz", 10)), "fit.stepz", "Extra inputs"),
    "config-unknown-column-key": case(
        "config", lambda ws: ws.fit(config=cfg_set("data.columns.phi_1", "phi1")), "data.columns.phi_1"),
    "config-wrong-type": case(
        "config", lambda ws: ws.fit(config=cfg_set("model.components", {"name": "stream"})), "model.components"),
    "config-section-not-mapping": case("config", lambda ws: ws.fit(config=cfg_set("fit", [1, 2])), "fit"),
    "config-missing-file": case(
        "config", lambda ws: ["fit", ws.root / "absent.yaml", "--out", ws.out], "absent.yaml", "no such file"),
    "config-not-yaml": case(
        "config", lambda ws: ["fit", ws.raw(b"fit: [1, 2\nname: {", ".yaml"), "--out", ws.out], "raw", "not valid YAML"),
    "config-not-a-mapping": case(
        "config", lambda ws: ["fit", ws.raw(b"- 1\n- 2\n", ".yaml"), "--out", ws.out], "raw", "mapping"),
    "config-field-missing": case("config", lambda ws: ws.fit(config=cfg_del("field")), "field", "Field required"),
    "config-no-data-path": case("config", lambda ws: ws.fit(config=cfg_del("data.path"), data="x"), "data.path"),
    "data-file-missing": case("config", lambda ws: ws.fit(data=ws.root / "nowhere.fits"), "nowhere.fits", "does not exist"),
    "data-path-is-folder": case("config", lambda ws: ws.fit(data=ws.root), "is a folder"),
    "data-unknown-format": case("config", lambda ws: ws.fit(data=ws.raw(b"1 2 3\n", ".dat")), "raw", "unknown table format"),
    "unknown-coordinate": case(
        "config", lambda ws: ws.fit(config=cfg_set("model.coordinates", ["phi2", "radial_velocity"])), "radial_velocity"),
    "control-point-unknown-parameter": case(
        "config",
        lambda ws: ws.fit(config=lambda c: c["model"]["components"][0]["control_points"].append(
            {"parameter": "phi3", "phi1": 0.0, "value": 0.0, "width": 1.0})),
        "phi3"),
    "members-model-missing": case("config", lambda ws: ws.members(model=ws.root / "no_model"), "no_model"),
    "members-model-incomplete": case("config", _incomplete_model, "member1.pt", "incomplete"),
    "members-out-unknown-format": case(
        "config", lambda ws: ws.members(out=ws.root / "scored.txt"), "scored.txt", "unknown table format"),
    # the same errors over an existing output (with --overwrite): it stays as it was
    "existing-fit-output-phi1-nan": case(
        "NaN/inf in phi1", lambda ws: ws.preexisting(ws.fit(put("phi1", 0, np.nan))), "column 'phi1'", existing=True),
    "existing-fit-output-truncated": case(
        "truncated file", lambda ws: ws.preexisting(ws.fit(data=ws.truncated(".fits"))), ".fits", existing=True),
    "existing-members-output-renamed": case(
        "missing/renamed column", lambda ws: ws.preexisting(ws.members(rename("phi1", "l"))), "'phi1'", existing=True),
    "existing-fit-output-config-key": case(
        "config", lambda ws: ws.preexisting(ws.fit(config=cfg_set("fit.stepz", 1))), "fit.stepz", existing=True),
}


@pytest.fixture()
def workspace(tmp_path, field, request) -> Workspace:
    stars, truth, config = field
    return Workspace(tmp_path, stars, truth, config, model=lambda: request.getfixturevalue("reference"))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(name, workspace, capsys, monkeypatch):
    bad = CASES[name]
    argv = bad.build(workspace)
    assert ("--overwrite" in map(str, argv)) == bad.existing
    before = snapshot(workspace.root)
    outcome = run_in_process(argv, capsys, monkeypatch)
    assert_one_line_error(outcome, bad.names)
    assert snapshot(workspace.root) == before, "a file was created or modified"
    if not bad.existing:
        assert not workspace.out.exists() and not workspace.scored.exists()


def test_the_table_covers_every_category_of_the_issue():
    categories = {c.category for c in CASES.values()}
    assert categories == {
        "missing/renamed column", "wrong unit", "NaN/inf in phi1", "all-NaN coordinate", "negative error",
        "duplicated source_id", "empty table", "one star", "outside the field", "text for numbers",
        "absurd value", "truncated file", "config",
    }
    assert len(CASES) >= 40
    assert {"truncated-fits", "truncated-parquet", "config-unknown-key", "config-wrong-type", "config-missing-file"} <= set(CASES)


@pytest.mark.parametrize("name", ["phi1-nan", "config-unknown-key", "cli-seed-text"])
def test_bad_input_in_a_real_process(name, workspace):
    bad = CASES[name]
    argv = bad.build(workspace)
    before = snapshot(workspace.root)
    result = run_process(argv)
    assert_one_line_error(Outcome(result.returncode, result.stdout, ANSI.sub("", result.stderr)), bad.names)
    assert snapshot(workspace.root) == before


def test_debug_shows_the_traceback(workspace):
    argv = CASES["phi1-nan"].build(workspace)
    before = snapshot(workspace.root)
    result = run_process(["--debug", *argv])
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "InputError" in result.stderr and "column 'phi1'" in result.stderr
    assert snapshot(workspace.root) == before


# ------------------------------------------------------------------ random corruption


COLUMNS = ["source_id", "phi1", "phi2", "phi2_err", "parallax", "parallax_err", "pm_phi1_cosphi2",
           "pm_phi1_cosphi2_err", "pm_phi2", "pm_phi2_err", "pm_corr"]
SMALL = generate_mock(MockConfig(n_stream=20, n_background=40), seed=9)[0][COLUMNS]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    dropped=st.sets(st.sampled_from(COLUMNS), max_size=3),
    renamed=st.sets(st.sampled_from(COLUMNS), max_size=2),
    explicit=st.booleans(),
)
def test_randomly_corrupted_tables_are_valid_or_one_line_input_errors(data, dropped, renamed, explicit):
    table = Table(SMALL, copy=True)
    n = len(table)
    for name in sorted(renamed - dropped):
        table.rename_column(name, name.upper())
    table.remove_columns(sorted(dropped))
    present = [c for c in table.colnames]
    for _ in range(data.draw(st.integers(0, 4), label="injections")):
        column = data.draw(st.sampled_from(present), label="column")
        index = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n), label="rows")
        value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e30, -1e30, 7.0]), label="value")
        values = np.array(table[column], dtype=float)
        values[index] = value
        table[column] = Table.Column(values, unit=table[column].unit)
    if data.draw(st.booleans(), label="change a unit"):
        column = data.draw(st.sampled_from(present), label="unit column")
        table[column].unit = data.draw(st.sampled_from(["deg", "rad", "mas", "arcsec", "mas/yr", "km/s", "mag", "", "kg"]))
    if present and data.draw(st.booleans(), label="text in a column"):
        column = data.draw(st.sampled_from(present), label="text column")
        table[column] = [data.draw(st.sampled_from(["n/a", "", "1.5", "--"]), label="text")] * n
    if data.draw(st.booleans(), label="cut rows"):
        table = table[: data.draw(st.integers(0, n))]
    columns = mock_columns() if explicit else ColumnMap()
    try:
        stars = StarTable.from_table(table, columns)
    except InputError as error:
        assert "\n" not in str(error) and str(error).strip()
        event("rejected by StarTable")
        return
    event("accepted by StarTable")
    # a valid StarTable: invariants
    assert len(stars) == len(table) > 0
    assert np.isfinite(stars.phi1).all()
    assert len(np.unique(stars.source_id)) == len(stars)
    for name in ASTROMETRIC:
        error = getattr(stars, f"{name}_err")
        assert getattr(stars, name).shape == error.shape == (len(stars),)
        assert getattr(stars, name).dtype == error.dtype == np.float64
        assert not np.any(error < 0)
    assert np.all(np.abs(stars.pm_corr[np.isfinite(stars.pm_corr)]) <= 1)
    # what a fit or `members` checks next: values no star can have
    try:
        check_plausible(stars)
    except InputError as error:
        assert "\n" not in str(error) and "beyond" in str(error)
        return
    for name, limit in PLAUSIBLE.items():
        values = getattr(stars, name)
        assert not np.any(np.abs(values[np.isfinite(values)]) > limit)


# ------------------------------------------------------------------ killed fits


@pytest.fixture(scope="module")
def kill_field(tmp_path_factory, field):
    """The small mock as a FITS file and its tiny config (2 members x STEPS steps)."""
    stars, truth, config = field
    folder = tmp_path_factory.mktemp("kill")
    write_mock(stars, truth, folder / "stars.fits")
    config = yaml.safe_load(yaml.safe_dump(config))
    config["data"]["path"] = "stars.fits"
    (folder / "stream.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def reference(kill_field) -> Path:
    """An uninterrupted `streammix fit` of the small mock (in this process, on one
    thread like the killed processes: a process would only add start-up time)."""
    from typer.testing import CliRunner

    from streammix.cli import app

    out = kill_field / "reference"
    with one_thread():
        result = CliRunner().invoke(app, ["fit", str(kill_field / "stream.yaml"), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def _step(checkpoint: Path) -> tuple[int, bool] | None:
    """(step, done) of a mixture checkpoint, None if there is none."""
    try:
        stat = checkpoint.stat()
    except OSError:
        return None
    return _read_step(str(checkpoint), stat.st_ino, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _read_step(path: str, *version) -> tuple[int, bool] | None:
    """(Read again only when the file changed: polling must not slow the fit down.)"""
    try:
        state = torch.load(path, weights_only=False)["state"]
    except (OSError, RuntimeError, EOFError, KeyError):
        return None
    return state["step"], bool(state["done"])


def _partial(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*.partial"))


@dataclass(frozen=True)
class KillPoint:
    """When to kill (``ready``, polled on the checkpoint folder and the output's
    parent) and what the killed run must have left (``left``)."""

    ready: Callable[[Path, Path], bool]
    left: Callable[[Path, Path], bool]
    description: str = ""


def _member(ck: Path, i: int):
    return _step(ck / f"member{i}.pt")


def _writing(out: Path, name: str) -> bool:
    return any((p / name).exists() for p in _partial(out))


KILL_POINTS: dict[str, KillPoint] = {
    "background-flows": KillPoint(
        ready=lambda ck, out: ck.is_dir(),
        left=lambda ck, out: not (ck / "background" / "done").exists() and not (ck / "member0.pt").exists(),
        description="while the background flows train",
    ),
    "first-checkpoint": KillPoint(
        ready=lambda ck, out: (ck / "member0.pt").exists(),
        left=lambda ck, out: (s := _member(ck, 0)) is not None and not s[1] and s[0] < STEPS // 2,
        description="right after member 0's first checkpoint",
    ),
    "midway": KillPoint(
        ready=lambda ck, out: (s := _member(ck, 0)) is not None and s[0] >= STEPS // 2,
        left=lambda ck, out: (s := _member(ck, 0)) is not None and not s[1] and s[0] >= STEPS // 2,
        description="half-way through member 0",
    ),
    "second-member": KillPoint(
        ready=lambda ck, out: (ck / "member1.pt").exists(),
        left=lambda ck, out: _member(ck, 0) == (STEPS, True) and (s := _member(ck, 1)) is not None and not s[1],
        description="during the ensemble's second member",
    ),
    "members-done": KillPoint(
        ready=lambda ck, out: (s := _member(ck, 1)) is not None and s[1],
        left=lambda ck, out: _member(ck, 1) == (STEPS, True) and not _writing(out, "members.ecsv"),
        description="after the last member, before the catalog is written",
    ),
    "writing-outputs": KillPoint(
        ready=lambda ck, out: _writing(out, "members.ecsv"),
        left=lambda ck, out: _writing(out, "members.ecsv") and not _writing(out, "summary.json"),
        description="while the output folder is being written",
    ),
}


def kill_at(point: KillPoint, config: Path, out: Path, attempts: int = 3) -> None:
    """Run `streammix fit` in a real process and SIGKILL it at ``point``.

    The moment is found by polling the checkpoint folder and the output's
    parent; if the process got past the point before the kill landed (a busy
    machine), everything is cleared and the run tried again.
    """
    ck = checkpoint_folder(out)
    log = out.with_name("killed.log")  # (a pipe could fill up and stall the fit)
    for _ in range(attempts):
        for leftover in out.parent.glob(f".{out.name}*"):
            shutil.rmtree(leftover)
        with open(log, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streammix", "fit", str(config), "--out", str(out), "--quiet"],
                env=ENV, stdout=subprocess.DEVNULL, stderr=stderr,
            )
            try:
                deadline = time.monotonic() + 120
                while not point.ready(ck, out) and proc.poll() is None:
                    assert time.monotonic() < deadline, "the kill point never came"
                    time.sleep(0.005)
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.kill()
                proc.wait()
        error = log.read_text()
        log.unlink()
        assert proc.returncode in (0, -signal.SIGKILL), error[-2000:]
        if proc.returncode == -signal.SIGKILL and point.left(ck, out):
            return
        shutil.rmtree(out, ignore_errors=True)
    raise AssertionError(f"could not kill the fit at '{point.description}' in {attempts} attempts")


@pytest.fixture()
def resume_spy(monkeypatch):
    """Records, during an in-process resume, the checkpoint each member's training
    was handed, how many optimizer steps it then took, and whether the background
    flows were trained again (spies on the test side; nothing in streammix)."""
    import importlib

    from streammix.background import BackgroundFlows

    fit_module = importlib.import_module("streammix.fit")  # (streammix.fit is also the function)
    record = {"start": {}, "steps": {}, "flows_trained": 0, "adamw_steps": 0}
    train = fit_module.train_mixture
    fit_flows = BackgroundFlows.fit.__func__
    adamw_step = torch.optim.AdamW.step

    def spy_train(mixture, train_set, valid, priors, config, *, seed, checkpoint=None, **kwargs):
        record["start"][checkpoint.stem] = _step(checkpoint)
        before = record["adamw_steps"]
        result = train(mixture, train_set, valid, priors, config, seed=seed, checkpoint=checkpoint, **kwargs)
        record["steps"][checkpoint.stem] = record["adamw_steps"] - before
        return result

    def spy_flows(cls, *args, **kwargs):
        record["flows_trained"] += 1
        return fit_flows(cls, *args, **kwargs)

    def counting_step(self, *args, **kwargs):
        record["adamw_steps"] += 1
        return adamw_step(self, *args, **kwargs)

    monkeypatch.setattr(fit_module, "train_mixture", spy_train)
    monkeypatch.setattr(BackgroundFlows, "fit", classmethod(spy_flows))
    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    return record


@contextlib.contextmanager
def one_thread():
    """Torch on one thread, as in the processes run with OMP_NUM_THREADS=1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _same_result(out: Path, reference: Path) -> None:
    for name in ("members.ecsv", "tracks.ecsv"):
        got, want = QTable.read(out / name), QTable.read(reference / name)
        assert got.colnames == want.colnames and len(got) == len(want)
        for column in want.colnames:
            if want[column].dtype.kind == "f":
                np.testing.assert_allclose(
                    np.asarray(getattr(got[column], "value", got[column])),
                    np.asarray(getattr(want[column], "value", want[column])),
                    atol=1e-6, rtol=0, err_msg=f"{name}: {column}",
                )
            else:
                assert np.all(np.asarray(got[column]) == np.asarray(want[column])), f"{name}: {column}"


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_fit_killed_at_any_point_resumes_to_the_same_result(
    point, kill_field, reference, tmp_path, capsys, monkeypatch, resume_spy
):
    config = kill_field / "stream.yaml"
    out = tmp_path / "run"
    ck = checkpoint_folder(out)
    kill_at(KILL_POINTS[point], config, out)
    # what the killed run left: no output, no truncated catalog
    assert not out.exists()
    for members in tmp_path.rglob("members.ecsv"):  # only ever in a partial folder, and then complete
        assert len(Table.read(members)) == len(Table.read(kill_field / "stars.fits"))
    checkpoints_left = {p.stem: _step(p) for p in ck.glob("member*.pt")}
    flows_done = (ck / "background" / "done").exists()

    # resume: the same command again (in this process, on one thread like the reference)
    with one_thread():
        outcome = run_in_process(["fit", config, "--out", out, "--quiet"], capsys, monkeypatch)
    assert outcome.code == 0, outcome.stderr
    # it started from what the killed run left
    assert resume_spy["flows_trained"] == (0 if flows_done else 1)
    for member in ("member0", "member1"):
        left = checkpoints_left.get(member)
        assert resume_spy["start"][member] == left
        assert resume_spy["steps"][member] == STEPS - (left[0] if left else 0)  # only the steps still to do
    # same result, nothing partial left
    _same_result(out, reference)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "run"]
    assert leftovers == [], leftovers


def test_the_kill_points_are_distinct():
    assert len(KILL_POINTS) >= 5
    assert len({k.description for k in KILL_POINTS.values()}) == len(KILL_POINTS)


# ------------------------------------------------------------------ overwrite protection


def test_fit_and_members_refuse_to_overwrite_and_replace_with_overwrite(kill_field, reference, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = snapshot(out)
    config = kill_field / "stream.yaml"
    outcome = run_in_process(["fit", config, "--out", out, "--quiet"], capsys, monkeypatch)
    assert_one_line_error(outcome, (str(out), "--overwrite"))
    assert snapshot(out) == before

    (out / "stale.txt").write_text("from an earlier run")
    with one_thread():
        outcome = run_in_process(["fit", config, "--out", out, "--quiet", "--overwrite"], capsys, monkeypatch)
    assert outcome.code == 0, outcome.stderr
    assert not (out / "stale.txt").exists()  # replaced as a whole
    _same_result(out, reference)

    scored = tmp_path / "scored.fits"
    scored.write_bytes(b"earlier")
    argv = ["members", reference, "--data", kill_field / "stars.fits", "--out", scored]
    outcome = run_in_process(argv, capsys, monkeypatch)
    assert_one_line_error(outcome, (str(scored), "--overwrite"))
    assert scored.read_bytes() == b"earlier"
    outcome = run_in_process([*argv, "--overwrite"], capsys, monkeypatch)
    assert outcome.code == 0, outcome.stderr
    np.testing.assert_allclose(
        Table.read(scored)["p_stream"], Table.read(reference / "members.ecsv")["p_stream"], atol=1e-6
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert oct(scored.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_mock_and_demo_refuse_to_overwrite_and_replace_with_overwrite(tmp_path, capsys, monkeypatch):
    target = tmp_path / "field.fits"
    argv = ["mock", "--out", target, "--n-stream", 30, "--n-background", 200, "--seed", 1]
    assert run_in_process(argv, capsys, monkeypatch).code == 0
    before = snapshot(tmp_path)
    assert_one_line_error(run_in_process([*argv[:-1], 2], capsys, monkeypatch), ("field.fits", "--overwrite"))
    assert snapshot(tmp_path) == before
    outcome = run_in_process([*argv[:-1], 2, "--overwrite"], capsys, monkeypatch)
    assert outcome.code == 0, outcome.stderr
    assert Table.read(target).meta["SEED"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["field.fits", "field_tracks.ecsv"]

    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "summary.json").write_text("{}")
    before = snapshot(tmp_path)
    argv = ["demo", "--out", demo, "--n-stream", 30, "--n-background", 200, "--ensemble", 1, "--quiet"]
    assert_one_line_error(run_in_process(argv, capsys, monkeypatch), ("demo", "--overwrite"))
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ non-convergence


def test_a_fit_that_does_not_converge_says_so_on_the_console_and_in_the_summary(
    kill_field, tmp_path, capsys, monkeypatch
):
    config = yaml.safe_load((kill_field / "stream.yaml").read_text())
    config["data"]["path"] = str(kill_field / "stars.fits")
    config["fit"].update({"steps": 3, "eval_every": 1, "warm_start_steps": 0, "ensemble": 1})
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(config))
    with one_thread(), pytest.warns(RuntimeWarning, match="did not converge"):
        outcome = run_in_process(["fit", path, "--out", tmp_path / "run", "--quiet"], capsys, monkeypatch)
    assert outcome.code == 0, outcome.stderr
    assert "the fit did not converge; see summary.json" in outcome.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["converged"] is False and summary["fit"]["members"][0]["converged"] is False


# ------------------------------------------------------------------ downloads


DOWNLOAD_FAILURES = {  # tests/test_catalogs.py, against a local HTTP server: not repeated here
    "test_unverified_record_refuses_to_fetch": "no verified record id: refused before any request",
    "test_wrong_checksum_names_file_and_both_hashes_and_leaves_nothing": "checksum mismatch: nothing cached",
    "test_truncated_body_is_retried_then_reported_and_never_cached": "truncated body: retried, never cached",
    "test_missing_record_is_a_404_naming_the_url": "HTTP 404: named, not retried",
    "test_server_error_then_success": "HTTP 500: retried, then fetched",
    "test_stalled_server_times_out_quickly": "stalled connection: times out, nothing cached",
    "test_registry_checksum_must_agree_with_zenodo": "registry and service checksums disagree: refused",
    "test_corrupted_cache_is_detected_and_fetched_again": "corrupted cache: detected, fetched again",
}


def test_the_download_failures_belong_to_the_suite():
    source = (Path(__file__).parent / "test_catalogs.py").read_text()
    defined = set(re.findall(r"^def (test_\w+)\(", source, flags=re.M))
    assert set(DOWNLOAD_FAILURES) <= defined
