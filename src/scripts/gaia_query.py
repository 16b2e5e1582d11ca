"""Query the Gaia archive for a stream's field (rule ``gaia_query``; needs network).

``data: {gaia_query: ...}``: the ADQL text of the stream file's
``data.gaia_query.adql`` is written to ``--adql-out`` first (it is recorded
with the outputs), then run through ``astroquery.gaia`` as an asynchronous job;
the result is written as FITS. Install with ``pip install -e '.[gaia]'``.

``data: {query: {}}`` (a galstreams stream of a survey run with
``galstreams: {data: query}``): the stream config's own ``data.query`` (the one
``streammix new`` wrote), run as ``streammix query`` runs it
(:func:`streammix.query.run_query`: resumable chunks, stars put in the stream
frame), into ``--out``; its ADQL text is copied to ``--adql-out``.

Never run in CI (no network): only a stream file with one of these data
sections selects this rule.

Usage: ``python src/scripts/gaia_query.py config/streams/x.yaml --adql-out q.adql --out gaia.fits``
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

from streammix.errors import InputError
from scriptrun import run_script
from streamcfg import deep_merge, read_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stream")
    parser.add_argument("--adql-out", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    spec = read_stream(args.stream)
    if spec.data_kind == "query":
        from streammix.config import Config  # local imports: only this data kind needs them
        from streammix.query import run_query

        config = Config.from_dict(deep_merge(yaml.safe_load(spec.config.read_text()), spec.overrides),
                                  source=f"stream '{spec.name}'")  # fmt: skip
        config = config.model_copy(update={"data": config.data.model_copy(update={"path": str(Path(args.out).resolve())})})
        path = run_query(config, overwrite=True)
        shutil.copyfile(path.with_name(path.name + ".adql"), args.adql_out)
        return
    if spec.data_kind != "gaia_query":
        raise InputError(f"stream '{spec.name}': its data ({spec.data_kind}) are not a Gaia query")
    adql = spec.data["adql"].strip() + "\n"
    try:
        from astroquery.gaia import Gaia
    except ImportError:
        raise SystemExit("gaia_query: astroquery is not installed (pip install -e '.[gaia]')") from None
    Path(args.adql_out).write_text(adql)
    Gaia.ROW_LIMIT = -1
    job = Gaia.launch_job_async(adql)
    table = job.get_results()
    table.meta["ADQL"] = " ".join(adql.split())
    table.write(args.out, overwrite=True)


if __name__ == "__main__":
    run_script(main)
