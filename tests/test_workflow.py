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

    # the survey: the run's one stream, its numbers against the truth, and its track on the sky map
    import json

    numbers = json.loads((tiny_run / "results/tiny/numbers.json").read_text())
    survey = QTable.read(tiny_run / "results/survey.ecsv")
    assert list(survey["stream"]) == ["tiny"] and list(survey["reference"]) == ["truth"] and list(survey["data"]) == ["mock"]
    assert survey["n_p50"][0] == int(np.sum(p > 0.5)) and survey["n_stars"][0] == len(ecsv)
    assert survey["phi2_rms"][0].to_value("arcmin") == pytest.approx(numbers["phi2_rms_arcmin"])
    assert survey["pm_phi2_rms"][0].to_value("mas/yr") == pytest.approx(numbers["pm_phi2_rms"])
    assert survey["fit_minutes"][0].to_value("min") == pytest.approx(numbers["fit_minutes"])
    assert tracks.meta["frame"] == "gd1" and tracks.meta["component"] == "stream"
    sky = tiny_run / "results/survey_sky.pdf"
    assert sky.read_bytes()[:5] == b"%PDF-" and sky.stat().st_size > 5000

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


# --- galstreams streams and the survey -------------------------------------------------


def _job_counts(out: str) -> dict[str, int]:
    """The dry run's "Job stats" table: rule -> number of jobs."""
    block = out.split("Job stats:")[1].split("total")[0]
    return {words[0]: int(words[1]) for words in (line.split() for line in block.splitlines()) if len(words) == 2 and words[1].isdigit()}


@needs_snakemake
def test_galstreams_list_plans_with_the_slurm_profile(tmp_path: Path) -> None:
    """``streams="galstreams:GD-1,Pal5"`` plans each stream's rules under its slug (GD-1 -> gd_1),
    its config from ``streammix new``, a mock on its track, and the survey; offline, without the
    shared data (the galstreams tracks ship with galstreams)."""
    import os

    env = {**os.environ, "STREAMMIX_SHARED_DATA": str(tmp_path / "absent")}
    command = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "-n", "--profile", str(ROOT / "profiles/slurm"),
               "--directory", str(tmp_path), "--config", "streams=galstreams:GD-1,Pal5"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    per_stream = ("new_stream", "mock_data", "prepare", "flows", "fit", "members", "tracks", "figures")
    counts = _job_counts(out)
    assert counts == {**{rule: 2 for rule in per_stream}, "numbers_gd_1": 1, "numbers_pal5": 1, "survey": 1, "all": 1}
    for slug, name in (("gd_1", "GD-1"), ("pal5", "Pal5")):
        assert f"streammix new {name} --data data/gaia.fits --out results/{slug}/{slug}_new.yaml" in out
        assert f"results/{slug}/fit" in out and f"results/{slug}/data/stars_tracks.ecsv" in out
    fit_blocks = [block for block in out.split("\n\n") if "rule fit:" in block]
    assert len(fit_blocks) == 2 and all("gpu=1" in block for block in fit_blocks)
    assert "results/survey.ecsv" in out and "results/survey_sky.pdf" in out
    assert "paper/ms.pdf" not in out and "gaia_query" not in out  # no stream file, no article; a mock, no query


@needs_snakemake
def test_every_galstreams_stream_plans(tmp_path: Path) -> None:
    """``galstreams:*``: every galstreams stream, each with its nine rules, plus the survey."""
    from streamlist import galstreams_names

    result = snakemake("-n", "--profile", str(ROOT / "profiles/slurm"), "--directory", str(tmp_path),
                       "--config", "streams=galstreams:*", cwd=ROOT, timeout=300)  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    n = len(galstreams_names())
    counts = _job_counts(out)
    assert n > 100 and counts["fit"] == counts["new_stream"] == counts["mock_data"] == n
    assert sum(1 for rule in counts if rule.startswith("numbers_")) == n
    assert sum(counts.values()) == 9 * n + 2


@needs_snakemake
def test_a_mixed_list_with_the_query_option(tmp_path: Path) -> None:
    """A YAML list mixes stream files and galstreams streams; ``galstreams: {data: query}``
    gives a galstreams stream the Gaia query rule (planned only: it needs network)."""
    result = snakemake("-n", "--directory", str(tmp_path), "--config", "streams=[tiny, 'galstreams:Jhelum']",
                       "galstreams={data: query}", "paper=false", cwd=ROOT, timeout=120)  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    counts = _job_counts(out)
    assert counts["gaia_query"] == 1 and counts["mock_data"] == 1 and counts["new_stream"] == 1
    assert "results/jhelum/data/gaia.fits" in out and "results/tiny/data/stars.fits" in out


@pytest.mark.parametrize(
    ("streams", "message"),
    [
        ("streams=galstreams:GD-2", "error: streams: galstreams:GD-2: not in galstreams; closest: GD-1, "),
        ("streams=[pal5, 'galstreams:Pal5']",
         "error: streams: 'pal5' and 'galstreams:Pal5' would both write results/pal5/; run them apart or rename config/streams/pal5.yaml"),
        ("galstreams={data: archive}", "error: pipeline config: galstreams.data: Input should be 'mock' or 'query'"),
    ],
)
@needs_snakemake
def test_bad_stream_list_is_one_line(tmp_path: Path, streams: str, message: str) -> None:
    """An unknown galstreams name, two streams with one name, a bad setting: one line, no traceback."""
    result = snakemake("-n", "--directory", str(tmp_path), "--config", streams, cwd=ROOT, timeout=120)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.stdout + result.stderr
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr


def test_stream_entries_map_names_to_slugs_and_back() -> None:
    """Names with '-', '.', brackets or spaces get a wildcard-safe slug, and the entry keeps the name."""
    from streamlist import stream_entries

    known = ["GD-1", "20.0-1", "M2 (Grillmair)", "NGC 1261a", "NGC1261-a"]
    entries = stream_entries("galstreams:*", known=known)
    # NGC1261-a is NGC 1261a to galstreams (case and punctuation ignored): one stream
    assert [(e.name, e.galstreams) for e in entries] == [
        ("gd_1", "GD-1"), ("20_0_1", "20.0-1"), ("m2_grillmair", "M2 (Grillmair)"), ("ngc_1261a", "NGC 1261a")]
    assert all(re.fullmatch(r"[a-z0-9_]+", e.name) for e in entries)
    # the string form's prefix carries over; a list entry is a stream file unless prefixed; repeats kept once
    assert [e.name for e in stream_entries("galstreams:m2 (grillmair), gd1", known=known)] == ["m2_grillmair", "gd_1"]
    mixed = stream_entries(["tiny", "galstreams:GD 1", "galstreams:gd-1", "tiny"], known=known)
    assert [(e.name, e.galstreams) for e in mixed] == [("tiny", None), ("gd_1", "GD-1")]
    assert stream_entries(None) == [] and [e.name for e in stream_entries("mock,tiny")] == ["mock", "tiny"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1], "streams: entry 1: 1 is not a stream's name"),
        ({"a": 1}, "streams: {'a': 1}: give a list of names or a string (e.g. galstreams:*)"),
        (["galstreams:Nope"], "streams: galstreams:Nope: not in galstreams; closest: "),
        (["gd_1", "galstreams:GD-1"], "streams: 'gd_1' and 'galstreams:GD-1' would both write results/gd_1/"),
    ],
)
def test_bad_stream_entries(value, message: str) -> None:
    from streamlist import stream_entries

    from streammix.errors import InputError

    with pytest.raises(InputError) as info:
        stream_entries(value, known=["GD-1", "Pal5"])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@needs_snakemake
def test_galstreams_stream_files_and_its_mock(tmp_path: Path) -> None:
    """The rules up to ``prepare`` of a galstreams stream with a hyphen and a great-circle frame:
    ``streammix new``'s config, the stream file beside it, a mock on its track (truth kept) and the
    fit's config with the galstreams prior; no fit."""
    settings = tmp_path / "settings.yaml"
    settings.write_text("galstreams:\n  mock: {n_stream: 40, n_background: 300, seed: 2}\n"
                        "  overrides: {fit: {ensemble: 1}}\n")  # fmt: skip
    result = snakemake("--cores", "1", "--directory", str(tmp_path), "--configfile", str(settings),
                       "--config", "streams=galstreams:C-19", "paper=false", "--",
                       "results/c_19/prepared/config.yaml", cwd=ROOT, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    import yaml

    spec = read_stream(tmp_path / "results/c_19/c_19.yaml")
    assert (spec.name, spec.data_kind, spec.is_mock, spec.galstreams) == ("c_19", "sky_mock", True, {"name": "C-19", "reference": None})
    assert spec.config == (tmp_path / "results/c_19/c_19_new.yaml").resolve() and spec.overrides == {"fit": {"ensemble": 1, "workers": 2}}  # merged into pipeline.yaml's
    assert spec.data == {"n_stream": 40, "n_background": 300, "background_scale": 1.0, "seed": 2}
    stars = QTable.read(tmp_path / "results/c_19/data/stars.fits", character_as_bytes=False)
    assert len(stars) == 340 and int((stars["true_component"] == "stream").sum()) == 40
    new = yaml.safe_load(spec.config.read_text())
    fit = yaml.safe_load((tmp_path / "results/c_19/prepared/config.yaml").read_text())
    assert isinstance(new["frame"], dict) and fit["frame"]["pole"] == new["frame"]["pole"]
    assert fit["name"] == "c_19" and fit["data"]["path"] == "stars.fits" and fit["fit"]["ensemble"] == 1
    assert fit["model"]["components"][0]["galstreams"]["name"] == "C-19"
    assert "true_component" in fit["data"]["columns"]["keep"]


def test_survey_script_on_synthetic_fitted_outputs(tmp_path: Path, monkeypatch) -> None:
    """write_survey.py (rule ``survey``) on two made-up fitted streams: a mock in the GD-1 frame,
    real data in a great-circle frame."""
    import json

    import astropy.units as u
    import write_survey

    phi1 = np.linspace(-20.0, 20.0, 41)
    frames = {"mock_a": "gd1", "real_b": {"name": "b", "pole": [10.0, 60.0], "origin": [100.0, 0.0]}}
    numbers = {
        "mock_a": {"n_stars": 1000, "n_p50": 90, "n_p80": 70, "fit_minutes": 2.0, "phi2_rms_arcmin": 2.5,
                   "pm_phi1_rms": 0.1, "pm_phi2_rms": 0.2, "completeness": 0.9, "purity": 0.85},
        "real_b": {"n_stars": 3000, "n_p50": 40, "n_p80": 20, "fit_minutes": 5.0, "galstreams_phi2_rms_arcmin": 6.0},
    }  # fmt: skip
    files = []
    for name, frame in frames.items():
        folder = tmp_path / "results" / name
        folder.mkdir(parents=True)
        (folder / "numbers.json").write_text(json.dumps(numbers[name]))
        tracks = QTable({"phi1": phi1 * u.deg, "stream_phi2": np.zeros(41) * u.deg,
                         "stream_linear_density": np.where(np.abs(phi1) < 10, 5.0, 0.1) / u.deg})  # fmt: skip
        tracks.meta.update(frame=frame, component="stream")
        tracks.write(folder / "tracks.ecsv")
        data = "data: {mock: {n_stream: 10}}" if name == "mock_a" else "data: {file: x.fits}\nconfig: c.yaml"
        (tmp_path / "c.yaml").write_text("{}\n")
        compare = "" if name == "mock_a" else "\ncompare: {galstreams: {name: B}}"
        (tmp_path / f"{name}.yaml").write_text(data + compare + "\n")
        files.append(str(tmp_path / f"{name}.yaml"))
    table, figure = tmp_path / "survey.ecsv", tmp_path / "sky.pdf"
    monkeypatch.setattr(sys, "argv", ["write_survey.py", *files, "--results", str(tmp_path / "results"),
                                      "--table", str(table), "--figure", str(figure), "--frame", "icrs"])  # fmt: skip
    write_survey.main()
    survey = QTable.read(table)
    assert list(survey["stream"]) == ["mock_a", "real_b"] and list(survey["galstreams"]) == ["-", "B"]
    assert list(survey["reference"]) == ["truth", "galstreams"] and list(survey["data"]) == ["mock", "file"]
    assert list(survey["n_p50"]) == [90, 40] and list(survey["phi2_rms"].to_value(u.arcmin)) == [2.5, 6.0]
    assert figure.read_bytes()[:5] == b"%PDF-" and figure.stat().st_size > 5000


SCRIPTS = ROOT / "src" / "scripts"


def test_every_rule_script_runs_through_run_script() -> None:
    """Each script a rule runs ends bad input as ``streammix`` does (``scriptrun.run_script``),
    except build_paper.py, whose inputs are all the pipeline's own and whose failures are the TeX
    tool's."""
    import ast

    def entry_call(path: Path) -> str | None:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                return ast.unparse(node.body[0])
        return None

    entries = {path.name: entry_call(path) for path in sorted(SCRIPTS.glob("*.py"))}
    scripts = {name: call for name, call in entries.items() if call is not None}
    assert len(scripts) >= 12, sorted(scripts)
    assert scripts.pop("build_paper.py") == "main()"
    assert set(scripts.values()) == {"run_script(main)"}, scripts


@pytest.mark.parametrize(
    ("script", "args", "pattern"),
    [
        ("make_mock.py", ["missing.yaml", "--out", "stars.fits"], r"make_mock: stream config 'missing\.yaml': no such file$"),
        ("stream_file.py", ["GD-1", "--out", "wrong.yaml"], r"stream_file: --out 'wrong\.yaml': must be named gd_1\.yaml$"),
        ("stream_file.py", ["GD-1", "--out", "gd_1.yaml"], r"stream_file: stream config 'gd_1\.yaml': config: "),
        ("write_catalog.py", ["fit", "--ecsv", "m.ecsv", "--fits", "m.fits"], r"write_catalog: file '\S*fit/members\.ecsv' does not exist$"),
        ("compare_catalogs.py", ["members.ecsv", "--stream", "x", "--catalogs", "a", "--outdir", "out", "--json", "j.json",
                                 "--table", "t.tex", "--figure", "f.pdf"], r"compare_catalogs: file '\S*members\.ecsv' does not exist$"),
    ],
)
def test_pipeline_scripts_stop_bad_input_with_one_line(tmp_path: Path, script: str, args: list[str], pattern: str) -> None:
    """A rule's script given bad input (a missing file, a wrongly named output, a stream file whose
    config is not beside it) stops as ``streammix`` does: one line on stderr naming the file or
    option, exit code 2, nothing written."""
    command = [sys.executable, str(SCRIPTS / script), *args]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and re.match(pattern, lines[0]), result.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []


def test_script_helpers_examples() -> None:
    """The examples of the scripts' shared modules (pytest collects doctests under streammix/ only)."""
    import doctest

    import scriptrun
    import streamcfg

    for module in (scriptrun, streamcfg):
        failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert tried > 0 and failures == 0, module.__name__
