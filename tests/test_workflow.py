"""The pipeline (Snakefile): a tiny mock end to end, and the SLURM profile's plan.

The end-to-end test runs ``snakemake --cores 2 --config streams=[tiny]`` in a
temporary working directory (``--directory``), so nothing is written into the
repository, then checks every output: the membership catalogs against the
mock's truth (row count, identifiers, probabilities in [0, 1], ECSV and FITS
alike), the tracks, the figures (PDF files), every number file (one finite
number each) against an independent recount from the catalog, and the article
when ``latexmk`` is on PATH.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import QTable, Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src" / "scripts"))

from streamcfg import number_keys, read_stream  # noqa: E402

SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")
needs_snakemake = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed (pip install -e '.[pipeline]')")


def snakemake(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny mock through the whole pipeline, in a temporary working directory."""
    if SNAKEMAKE is None:
        pytest.skip("snakemake is not installed")
    work = tmp_path_factory.mktemp("pipeline")
    result = snakemake("--cores", "2", "--directory", str(work), "--config", "streams=[tiny]", cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return work


@needs_snakemake
def test_tiny_pipeline_writes_every_output(tiny_run: Path) -> None:
    spec = read_stream(ROOT / "config" / "streams" / "tiny.yaml")
    stars = QTable.read(tiny_run / "results/tiny/data/stars.fits", character_as_bytes=False)
    is_member = np.asarray(stars["true_component"]) == "stream"
    # the generator's exact counts: what the config asked for
    assert len(stars) == spec.data["n_stream"] + spec.data["n_background"]
    assert is_member.sum() == spec.data["n_stream"]

    # stream frame and masks: the masks cover every input star, the prepared
    # table every in-field star
    masks = Table.read(tiny_run / "results/tiny/prepared/masks.ecsv")
    prepared = QTable.read(tiny_run / "results/tiny/prepared/stars.fits")
    assert len(masks) == len(stars) and set(masks["source_id"]) == set(stars["source_id"])
    assert len(prepared) == int(masks["in_field"].sum()) > 0
    assert 0 < masks["offstream"].sum() < len(prepared)

    # membership catalogs: one row per fitted star, ECSV and FITS identical
    ecsv = QTable.read(tiny_run / "results/tiny/members.ecsv")
    fits = QTable.read(tiny_run / "results/tiny/members.fits", character_as_bytes=False)
    assert len(ecsv) == len(fits) == len(prepared)
    assert np.array_equal(np.asarray(ecsv["source_id"]), np.asarray(fits["source_id"]))
    p = np.asarray(ecsv["p_stream"], dtype=float)
    assert np.allclose(p, np.asarray(fits["p_stream"], dtype=float))
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.asarray(ecsv["p_stream_q05"]) <= np.asarray(ecsv["p_stream_q95"]) + 1e-12)
    # ra/dec come from the GD-1 frame: back-transforming them gives phi1, phi2
    from streammix.frames import get_frame

    phi1, phi2 = get_frame("gd1").to_stream(ecsv["ra"], ecsv["dec"])
    assert np.allclose(phi1, ecsv["phi1"].value, atol=1e-6) and np.allclose(phi2, ecsv["phi2"].value, atol=1e-6)

    # tracks on the model grid, and the reference (the truth) beside them
    tracks = QTable.read(tiny_run / "results/tiny/tracks.ecsv")
    assert {"phi1", "stream_phi2", "stream_phi2_q05", "stream_phi2_q95"} <= set(tracks.colnames)
    assert len(QTable.read(tiny_run / "results/tiny/reference_tracks.ecsv")) > 0

    # figures: non-trivial PDF files
    for fig in ("sky", "tracks", "probability"):
        path = tiny_run / f"src/tex/figures/tiny_{fig}.pdf"
        assert path.read_bytes()[:5] == b"%PDF-" and path.stat().st_size > 5000

    # numbers: every expected file holds one finite number ...
    values = {}
    for key in number_keys(spec):
        text = (tiny_run / f"src/tex/output/tiny_{key}.txt").read_text().strip()
        assert text, key
        values[key] = float(text)
        assert math.isfinite(values[key]) or key == "calibration_max_error", (key, text)
    # ... equal to an independent recount from the catalog and the truth
    assert values["n_stars"] == len(ecsv)
    assert values["n_p50"] == int(np.sum(p > 0.5)) and values["n_p80"] == int(np.sum(p > 0.8))
    truth = np.asarray(ecsv["true_component"]).astype(str) == "stream"
    assert values["n_true_members"] == truth.sum()
    selected = p > 0.5
    assert values["completeness"] == pytest.approx((selected & truth).sum() / truth.sum(), abs=0.005)
    assert values["purity"] == pytest.approx((selected & truth).sum() / max(selected.sum(), 1), abs=0.005)
    assert 0.5 <= values["auc"] <= 1.0  # even this tiny fit ranks members above the background
    assert values["ensemble"] == 1

    # the article's inputs, and the article itself when latexmk is available
    streams = (tiny_run / "src/tex/output/streams.tex").read_text()
    assert r"\newcommand{\validationstream}{tiny}" in streams and r"\havevalidationtrue" in streams
    assert r"\val{tiny}{n_p50}" in (tiny_run / "src/tex/output/streams_table.tex").read_text()
    pdf = tiny_run / "paper/ms.pdf"
    if shutil.which("latexmk") is None:
        assert not pdf.exists()
        pytest.skip("latexmk not on PATH: the article was (correctly) left out")
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 20_000
    # every number the mock-validation section quotes was read from the run's files
    log = (tiny_run / "paper/build/ms.log").read_text(errors="replace")
    quoted = set(re.findall(r"\\mockval\{(\w+)\}", (ROOT / "src/tex/ms.tex").read_text()))
    assert {"auc", "completeness", "purity", "n_p50"} <= quoted
    for key in quoted:
        assert f"output/tiny_{key}.txt" in log, f"the article did not read tiny_{key}.txt"
    assert not re.search(r"(Citation|Reference) `[^']*' .*undefined", log)


@needs_snakemake
def test_rerun_has_nothing_to_do(tiny_run: Path) -> None:
    result = snakemake("-n", "--directory", str(tiny_run), "--config", "streams=[tiny]", cwd=tiny_run, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@needs_snakemake
def test_slurm_profile_plans_every_stream(tmp_path: Path) -> None:
    """``snakemake -n --profile profiles/slurm`` plans the default streams with the
    profile's resources (a GPU and CUDA for the fits), submitting nothing."""
    result = snakemake("-n", "-p", "--profile", str(ROOT / "profiles/slurm"), "--directory", str(tmp_path), cwd=ROOT, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    for name in ("mock", "gd1_dr2", "pal5"):
        assert f"results/{name}/fit" in out
    fit_blocks = [block for block in out.split("\n\n") if "rule fit:" in block]
    assert len(fit_blocks) == 3
    assert all("gpu=1" in block and "mem_mb=32000" in block for block in fit_blocks)
    assert "--device cuda" in out
    assert "paper/ms.pdf" in out or shutil.which("latexmk") is None


@needs_snakemake
def test_gaia_query_stream_plans_the_query_rule(tmp_path: Path) -> None:
    """A stream with ``data: {gaia_query: ...}`` selects the (network) query rule;
    planned only, never run here."""
    result = snakemake("-n", "--directory", str(tmp_path), "--config", "streams=[gd1_dr3_gaia]", "paper=false", cwd=ROOT, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "gaia_query" in out and "results/gd1_dr3_gaia/data/query.adql" in out
    assert "mock_data" not in out


def test_stream_configs_are_valid() -> None:
    """Every shipped stream config reads, and the numbers it promises fit its kind."""
    specs = {p.stem: read_stream(p) for p in (ROOT / "config" / "streams").glob("*.yaml")}
    assert {"mock", "tiny", "gd1_dr2", "pal5"} <= set(specs)
    assert specs["gd1_dr2"].data_kind == "file" and "auc" not in number_keys(specs["gd1_dr2"])
    assert "galstreams_phi2_rms_arcmin" in number_keys(specs["gd1_dr2"])
    assert specs["pal5"].is_mock and "auc" in number_keys(specs["pal5"])


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        ("data: {mock: {n_stars: 10}}", "data.mock.n_stars", "unknown key"),
        ("data: {mock: {n_stream: -1}}", "data.mock.n_stream", "not a non-negative integer"),
        ("data: {mock: {g_limit: 30}}", "data.mock.g_limit", "outside [10, 22]"),
        ("data: {mock: {track: m31}}", "data.mock.track", "Input should be 'gd1' or 'pal5'"),
        ("data: {mock: {stream_profile: plummer}}", "data.mock.stream_profile", "not one of"),
        ("data: {mock: {}, file: x.fits}", "data", "exactly one of mock, file, gaia_query"),
        ("data: {gaia_query: {adql: SELECT}}", "data.gaia_query.frame", "Field required"),
        ("data: {file: [1]}", "data.file", "valid string"),
        ("data: {file: x.fits}", "config", "needed for real data"),
        ("data: {mock: }\npaper: thesis", "paper", "Input should be"),
        ("data: {mock: }\nname: other", "name", "must equal the file's stem"),
        ("data: {mock: }\ncompare: {galstreams: {reference: x}}", "compare.galstreams.name", "Field required"),
        ("data: {mock: }\ncompare: {tracks: []}", "compare.tracks", "unknown key"),
        ("data: {mock: }\nfoo: 1", "foo", "unknown key"),
        ("name: bad", "data", "Field required"),
        ("[1, 2]", "(top level)", "expected a mapping"),
    ],
)
def test_bad_stream_config_is_one_line(tmp_path: Path, text: str, key: str, why: str) -> None:
    """A bad stream file stops with ``stream config '<path>': <dotted key>: <why>``."""
    from streammix.errors import InputError

    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(InputError) as info:
        read_stream(path)
    message = str(info.value)
    assert message.startswith(f"stream config '{path}': {key}: "), message
    assert why in message and "\n" not in message


def test_stream_mock_section_takes_the_mock_settings(tmp_path: Path) -> None:
    """``data.mock`` is the mock's own settings (validated, as given) plus seed, track and spacing."""
    path = tmp_path / "spur.yaml"
    path.write_text("data: {mock: {n_stream: 10, n_spur: 5, phi1_range: [-60, -20], seed: 2, spacing: 5}}\n")
    spec = read_stream(path)
    assert spec.data == {"n_stream": 10, "n_spur": 5, "phi1_range": (-60.0, -20.0), "seed": 2, "spacing": 5.0}
    assert spec.config is None and spec.overrides == {} and spec.catalogs == () and spec.galstreams is None


@needs_snakemake
def test_catalog_comparison_is_planned_only_for_cached_catalogs(tmp_path: Path) -> None:
    """A stream's ``compare.catalogs`` become a comparison rule only when in the cache."""
    import os

    def plan(cache: Path) -> str:
        env = {**os.environ, "STREAMMIX_CACHE": str(cache)}
        command = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "-n", "--directory", str(tmp_path),
                   "--config", "streams=[gd1_dr2]", "paper=false"]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    assert "compare_catalogs_gd1_dr2" not in plan(tmp_path / "empty")
    cached = tmp_path / "cache" / "pricewhelan2018_gd1"
    cached.mkdir(parents=True)
    (cached / "members.fits").write_bytes(b"")
    out = plan(tmp_path / "cache")
    assert "compare_catalogs_gd1_dr2" in out and "src/tex/output/gd1_dr2_pricewhelan2018_gd1_n_matched.txt" in out
    assert "starkman2023_gd1" not in out


@needs_snakemake
def test_catalog_comparison_against_a_catalog_of_the_truth(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    """A "published" catalog made of the mock's true members: the fraction of it
    recovered is the completeness, the fraction of ours in it the purity."""
    import compare_catalogs

    members = QTable.read(tiny_run / "results/tiny/members.ecsv")
    truth = np.asarray(members["true_component"]).astype(str) == "stream"
    catalog = QTable({"source_id": np.asarray(members["source_id"]), "ra": members["ra"], "dec": members["dec"],
                      "p_member": truth.astype(float), "member_flag": truth})
    monkeypatch.setattr(compare_catalogs, "load", lambda name, **options: catalog)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["compare_catalogs.py", str(tiny_run / "results/tiny/members.ecsv"), "--stream", "tiny",
                                      "--catalogs", "truth", "--outdir", str(out), "--json", str(tmp_path / "c.json"),
                                      "--table", str(tmp_path / "t.tex"), "--figure", str(tmp_path / "f.pdf")])
    compare_catalogs.main()
    ours = np.asarray(members["p_stream"]) >= 0.5
    value = {key: float((out / f"tiny_truth_{key}.txt").read_text()) for key in ("n_matched", "fraction_recovered", "fraction_in_catalog")}
    assert value["n_matched"] == len(members)
    assert value["fraction_recovered"] == pytest.approx((ours & truth).sum() / truth.sum(), abs=0.005)
    assert value["fraction_in_catalog"] == pytest.approx((ours & truth).sum() / ours.sum(), abs=0.005)
    assert r"\val{tiny}{truth_fraction_recovered}" in (tmp_path / "t.tex").read_text()
