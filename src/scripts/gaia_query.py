"""Query the Gaia archive for a stream's field (rule ``gaia_query``; needs network and astroquery).

The ADQL text of the stream file's ``data.gaia_query.adql`` is written to
``--adql-out`` first (it is recorded with the outputs), then run through
``astroquery.gaia`` as an asynchronous job; the result is written as FITS.
Install with ``pip install -e '.[gaia]'``. Never run in CI (no network): only a
stream file with ``data: {gaia_query: ...}`` selects this rule.

Usage: ``python src/scripts/gaia_query.py config/streams/x.yaml --adql-out q.adql --out gaia.fits``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from streamcfg import read_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stream")
    parser.add_argument("--adql-out", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    spec = read_stream(args.stream)
    adql = spec.data["adql"].strip() + "\n"
    Path(args.adql_out).write_text(adql)
    try:
        from astroquery.gaia import Gaia
    except ImportError:
        raise SystemExit("gaia_query: astroquery is not installed (pip install -e '.[gaia]')") from None
    Gaia.ROW_LIMIT = -1
    job = Gaia.launch_job_async(adql)
    table = job.get_results()
    table.meta["ADQL"] = " ".join(adql.split())
    table.write(args.out, overwrite=True)


if __name__ == "__main__":
    main()
