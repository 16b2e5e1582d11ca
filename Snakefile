# The reproducible pipeline of streammix: data -> stream frame and masks ->
# background flows -> fit (the mixture ensemble) -> membership catalogs -> tracks
# -> figures -> numbers and tables -> the article (src/tex/ms.tex -> paper/ms.pdf).
#
#   snakemake --cores 2                                # every stream of config/pipeline.yaml
#   snakemake --cores 2 --config streams=[mock]        # one stream (and the article)
#   snakemake --cores 2 --config streams="galstreams:GD-1,Pal5"   # galstreams streams (a survey)
#   snakemake --profile profiles/slurm --config streams="galstreams:*"   # every galstreams stream
#   snakemake --cores 2 --directory /tmp/run ...       # outputs somewhere else
#   snakemake --profile profiles/slurm                 # streams as SLURM jobs
#
# Outputs (relative to the working directory; all generated, none tracked):
#   results/<stream>/...          data, prepared stars, fit/, members.{ecsv,fits}, tracks
#   results/survey.ecsv           one row per stream: members, track RMS, fit time
#   results/survey_sky.pdf        every stream's fitted track on one sky map
#   src/tex/output/*.txt, *.tex   every number and table the article quotes
#   src/tex/figures/*.pdf         the article's figures
#   paper/ms.pdf                  the article (paper/build/ holds the LaTeX run)
#
# One stream = one file config/streams/<name>.yaml (see src/scripts/streamcfg.py), or a
# galstreams stream, galstreams:NAME (src/scripts/streamlist.py): its config is written by
# `streammix new` (rule new_stream), its data are a mock drawn on its track (rule mock_data)
# or, with galstreams: {data: query}, its Gaia DR3 query (rule gaia_query); it runs as
# results/<slug>/ (GD-1 -> gd_1), a name safe for any galstreams name.
# The background flows have a rule of their own (`streammix flows`), which the
# fit rule hands to `streammix fit --background`: a change that leaves the flows
# as they are (the mixtures' settings) refits the mixtures only.

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

BASE = Path(workflow.basedir)
sys.path.insert(0, str(BASE / "src" / "scripts"))
from streamcfg import number_keys, read_stream  # noqa: E402
from streamlist import galstreams_settings, galstreams_spec, stream_entries, survey_settings  # noqa: E402
from streammix.errors import InputError  # noqa: E402

configfile: BASE / "config" / "pipeline.yaml"

PY = sys.executable
SCRIPTS = BASE / "src" / "scripts"
STREAMMIX = f"{PY} -m streammix"
try:
    ENTRIES = stream_entries(config.get("streams"))
    GALSTREAMS_SETTINGS = galstreams_settings(config.get("galstreams"))
    SURVEY = survey_settings(config.get("survey"))
    SPECS = {
        e.name: read_stream(BASE / "config" / "streams" / f"{e.name}.yaml") if e.galstreams is None
        else galstreams_spec(e, GALSTREAMS_SETTINGS)
        for e in ENTRIES
    }
except InputError as error:  # one line, no traceback
    sys.exit(f"error: {error}")
STREAMS = list(SPECS)
GALSTREAMS = {e.name: e.galstreams for e in ENTRIES if e.galstreams is not None}  # slug -> galstreams name
# the article covers the streams of config/streams/; galstreams streams go into the survey only
PAPER_STREAMS = [name for name in STREAMS if name not in GALSTREAMS]
FIT_DEVICE = config.get("fit_device", "cpu")
WANT_PAPER = str(config.get("paper", True)).lower() not in ("false", "0", "no", "off")
BUILD_PAPER = WANT_PAPER and bool(PAPER_STREAMS) and shutil.which("latexmk") is not None
if WANT_PAPER and PAPER_STREAMS and not BUILD_PAPER:
    print("latexmk not found: the article (paper/ms.pdf) is left out of this run", file=sys.stderr)


def cached_catalogs(spec):
    """The spec's catalogs whose cache folder holds files (checked when the DAG is built)."""
    from streammix.catalogs import cache_dir

    folder = cache_dir()
    return [name for name in spec.catalogs if (folder / name).is_dir() and any((folder / name).iterdir())]


COMPARED = {name: cached_catalogs(spec) for name, spec in SPECS.items()}
COMPARED = {name: cats for name, cats in COMPARED.items() if cats}


def regex(names):
    return "|".join(re.escape(name) for name in names) if names else "(?!x)x"


wildcard_constraints:
    stream=regex(STREAMS),


def stream_outputs(name):
    out = [
        f"results/{name}/members.ecsv",
        f"results/{name}/members.fits",
        f"results/{name}/tracks.ecsv",
        *(f"src/tex/figures/{name}_{fig}.pdf" for fig in ("sky", "tracks", "probability")),
        *(f"src/tex/output/{name}_{key}.txt" for key in number_keys(SPECS[name])),
    ]
    if name in COMPARED:
        out += [
            f"results/{name}/catalogs.json",
            f"src/tex/figures/{name}_catalogs.pdf",
            f"src/tex/output/{name}_catalogs_table.tex",
        ]
    return out


SURVEY_OUTPUTS = ["results/survey.ecsv", "results/survey_sky.pdf"] if STREAMS else []


rule all:
    input:
        [f for name in STREAMS for f in stream_outputs(name)],
        SURVEY_OUTPUTS,
        ["src/tex/output/streams.tex", "src/tex/output/streams_table.tex"] if PAPER_STREAMS else [],
        ["paper/ms.pdf"] if BUILD_PAPER else [],


localrules: all, paper_inputs, new_stream


# --- a galstreams stream's config and stream file ---------------------------------


rule new_stream:
    """A galstreams stream's config (streammix new) and its stream file (the galstreams settings)."""
    output:
        config="results/{stream}/{stream}_new.yaml",
        stream="results/{stream}/{stream}.yaml",
    wildcard_constraints:
        stream=regex(GALSTREAMS),
    params:
        name=lambda w: shlex.quote(GALSTREAMS[w.stream]),
        settings=shlex.quote(json.dumps(GALSTREAMS_SETTINGS.model_dump(mode="json"), sort_keys=True)),
    shell:
        "{STREAMMIX} new {params.name} --data data/gaia.fits --out {output.config} --overwrite"
        " && {PY} {SCRIPTS}/stream_file.py {params.name} --settings {params.settings} --out {output.stream}"


def config_file(w):
    """The stream's streammix config file, if it has one (a galstreams stream's: streammix new's)."""
    spec = SPECS[w.stream]
    return [spec.config] if spec.config else []


# --- data --------------------------------------------------------------------


rule mock_data:
    """A mock field and its true tracks: the generator's, or drawn on a galstreams track (sky_mock)."""
    input:
        stream=lambda w: SPECS[w.stream].path,
        config=config_file,
    output:
        stars="results/{stream}/data/stars.fits",
        truth="results/{stream}/data/stars_tracks.ecsv",
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{PY} {SCRIPTS}/make_mock.py {input.stream} --out {output.stars}"


rule gaia_query:
    """A field queried from the Gaia archive (network): the stream file's ADQL or its config's data.query; the ADQL text is kept."""
    input:
        stream=lambda w: SPECS[w.stream].path,
        config=config_file,
    output:
        adql="results/{stream}/data/query.adql",
        stars="results/{stream}/data/gaia.fits",
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "{PY} {SCRIPTS}/gaia_query.py {input.stream} --adql-out {output.adql} --out {output.stars}"


def data_inputs(w):
    spec = SPECS[w.stream]
    if spec.is_mock:
        return {"stars": f"results/{w.stream}/data/stars.fits", "truth": f"results/{w.stream}/data/stars_tracks.ecsv"}
    if spec.data_kind in ("gaia_query", "query"):
        return {"stars": f"results/{w.stream}/data/gaia.fits"}
    return {"stars": spec.data["path"]}


def config_inputs(w):
    spec = SPECS[w.stream]
    return [spec.path] + ([spec.config] if spec.config else [])


# --- stream frame and masks, fit ------------------------------------------------


rule prepare:
    """Stars in the stream frame inside the field, the masks, and the fit's config."""
    input:
        unpack(data_inputs),
        configs=config_inputs,
    output:
        stars="results/{stream}/prepared/stars.fits",
        masks="results/{stream}/prepared/masks.ecsv",
        config="results/{stream}/prepared/config.yaml",
    params:
        truth=lambda w, input: f"--truth {input.truth}" if "truth" in input.keys() else "",
        device=FIT_DEVICE,
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{PY} {SCRIPTS}/prepare.py {input.configs[0]} --stars {input.stars} {params.truth}"
        " --out-dir results/{wildcards.stream}/prepared --device {params.device}"


rule flows:
    """The background flows, trained on the off-stream stars (streammix flows)."""
    input:
        config="results/{stream}/prepared/config.yaml",
        stars="results/{stream}/prepared/stars.fits",
    output:
        directory("results/{stream}/flows"),
    log:
        "results/{stream}/logs/flows.log",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "{STREAMMIX} flows {input.config} --out {output} --overwrite --quiet > {log} 2>&1"


rule fit:
    """The ensemble of mixtures on the frozen flows (streammix fit --background): model, members, tracks, figures."""
    input:
        config="results/{stream}/prepared/config.yaml",
        stars="results/{stream}/prepared/stars.fits",
        flows="results/{stream}/flows",
    output:
        directory("results/{stream}/fit"),
    log:
        "results/{stream}/logs/fit.log",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    shell:
        "{STREAMMIX} fit {input.config} --out {output} --background {input.flows} --overwrite --quiet > {log} 2>&1"


# A photometric (isochrone) fit slots in here once `streammix isochrone-fit DIR`
# exists: a rule with input "results/{stream}/fit" and output
# directory("results/{stream}/isochrone"), whose outputs the figures and numbers
# rules then take as extra inputs.


# --- catalogs, tracks ------------------------------------------------------------


rule members:
    """The membership catalog with ICRS positions, as ECSV and FITS."""
    input:
        "results/{stream}/fit",
    output:
        ecsv="results/{stream}/members.ecsv",
        fits="results/{stream}/members.fits",
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{PY} {SCRIPTS}/write_catalog.py {input} --ecsv {output.ecsv} --fits {output.fits}"


rule tracks:
    """Fitted tracks, the reference track (truth or galstreams) and their differences."""
    input:
        unpack(lambda w: {"truth": f"results/{w.stream}/data/stars_tracks.ecsv"} if SPECS[w.stream].is_mock else {}),
        stream=lambda w: SPECS[w.stream].path,
        fit="results/{stream}/fit",
    output:
        tracks="results/{stream}/tracks.ecsv",
        reference="results/{stream}/reference_tracks.ecsv",
        metrics="results/{stream}/track_metrics.json",
    params:
        truth=lambda w, input: f"--truth {input.truth}" if "truth" in input.keys() else "",
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{PY} {SCRIPTS}/compare_tracks.py {input.stream} {input.fit} {params.truth}"
        " --tracks {output.tracks} --reference {output.reference} --metrics {output.metrics}"


# --- figures, numbers, tables ------------------------------------------------------


rule figures:
    input:
        stream=lambda w: SPECS[w.stream].path,
        members="results/{stream}/members.ecsv",
        tracks="results/{stream}/tracks.ecsv",
        reference="results/{stream}/reference_tracks.ecsv",
    output:
        expand("src/tex/figures/{{stream}}_{fig}.pdf", fig=("sky", "tracks", "probability")),
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{PY} {SCRIPTS}/make_figures.py {input.stream} --members {input.members} --tracks {input.tracks}"
        " --reference {input.reference} --outdir src/tex/figures"


# The numbers a stream writes depend on its kind (mock, galstreams), so each
# stream gets its own rule with its own outputs.
for _name, _spec in SPECS.items():

    rule:
        name:
            f"numbers_{_name}"
        input:
            stream=_spec.path,
            fit=f"results/{_name}/fit",
            members=f"results/{_name}/members.ecsv",
            metrics=f"results/{_name}/track_metrics.json",
        output:
            json=f"results/{_name}/numbers.json",
            txt=[f"src/tex/output/{_name}_{key}.txt" for key in number_keys(_spec)],
        resources:
            mem_mb=2000,
            runtime=10,
        shell:
            "{PY} {SCRIPTS}/write_numbers.py {input.stream} --summary {input.fit}/summary.json"
            " --members {input.members} --track-metrics {input.metrics} --outdir src/tex/output --json {output.json}"

    if _name in COMPARED:

        rule:
            name:
                f"compare_catalogs_{_name}"
            input:
                members=f"results/{_name}/members.ecsv",
            output:
                json=f"results/{_name}/catalogs.json",
                table=f"src/tex/output/{_name}_catalogs_table.tex",
                figure=f"src/tex/figures/{_name}_catalogs.pdf",
                txt=[f"src/tex/output/{_name}_{cat}_{key}.txt" for cat in COMPARED[_name]
                     for key in ("n_matched", "n_catalog_members", "n_both_members", "fraction_recovered", "fraction_in_catalog")],
            params:
                stream=_name,
                catalogs=" ".join(COMPARED[_name]),
            resources:
                mem_mb=4000,
                runtime=30,
            shell:
                "{PY} {SCRIPTS}/compare_catalogs.py {input.members} --stream {params.stream} --catalogs {params.catalogs}"
                " --outdir src/tex/output --json {output.json} --table {output.table} --figure {output.figure}"


# --- the survey: every stream of the run ----------------------------------------------


rule survey:
    """One row per stream (members at p > 0.5, track RMS against the truth or galstreams, fit time) and every fitted track on one sky map."""
    input:
        streams=[SPECS[name].path for name in STREAMS],
        numbers=[f"results/{name}/numbers.json" for name in STREAMS],
        tracks=[f"results/{name}/tracks.ecsv" for name in STREAMS],
    output:
        table="results/survey.ecsv",
        figure="results/survey_sky.pdf",
    params:
        frame=SURVEY.frame,
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{PY} {SCRIPTS}/write_survey.py {input.streams:q} --results results --table {output.table}"
        " --figure {output.figure} --frame {params.frame}"


rule paper_inputs:
    """Which stream plays which role in the article, and the table of every stream's numbers."""
    input:
        [SPECS[name].path for name in PAPER_STREAMS],
    output:
        streams="src/tex/output/streams.tex",
        table="src/tex/output/streams_table.tex",
    params:
        compared=" ".join(name for name in COMPARED if name in PAPER_STREAMS),
        streams=" ".join(PAPER_STREAMS),
    shell:
        "{PY} {SCRIPTS}/paper_inputs.py {input} --compared {params.compared}"
        " --streams-tex {output.streams} --table-tex {output.table}"


# --- the article -------------------------------------------------------------------


rule paper:
    """src/tex/ms.tex with latexmk (Debian TeX Live: see paper/README.md)."""
    input:
        tex=BASE / "src" / "tex" / "ms.tex",
        bib=BASE / "src" / "tex" / "bib.bib",
        streams="src/tex/output/streams.tex",
        table="src/tex/output/streams_table.tex",
        stream_files=[f for name in PAPER_STREAMS for f in stream_outputs(name)],
    output:
        "paper/ms.pdf",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{PY} {SCRIPTS}/build_paper.py --tex-src {BASE}/src/tex --output src/tex/output"
        " --figures src/tex/figures --build paper/build --out {output}"
