"""The survey of a run (rule ``survey``): one row per stream, and every fitted track on one sky map.

Reads, for each stream file given, ``results/<stream>/numbers.json`` (the
``numbers`` rule's) and ``results/<stream>/tracks.ecsv`` (the ``tracks``
rule's, with its frame and component in the header), and writes ``--table``
(:func:`streammix.survey.survey_table`: members at p > 0.5 and 0.8, the track
RMS against the truth or galstreams, the fit's time) and ``--figure``
(:func:`streammix.sky_map.plot_survey_sky`: every fitted track where its stream
is dense, in Galactic coordinates unless ``--frame icrs``).

Usage: ``python src/scripts/write_survey.py STREAM_YAML... --results results --table T --figure F [--frame icrs]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from astropy.coordinates import SkyCoord
from astropy.table import QTable

from streammix.output import atomic_path, write_table
from streammix.sky_map import SKY_FRAMES, plot_survey_sky
from streammix.survey import survey_row, survey_table, track_on_sky
from scriptrun import run_script
from streamcfg import read_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", nargs="+", help="the run's stream files")
    parser.add_argument("--results", default="results", help="the folder holding results/<stream>/")
    parser.add_argument("--table", required=True)
    parser.add_argument("--figure", required=True)
    parser.add_argument("--frame", default="galactic", choices=sorted(SKY_FRAMES))
    args = parser.parse_args()
    rows, tracks = [], {}
    for path in args.streams:
        spec = read_stream(path)
        folder = Path(args.results) / spec.name
        numbers = json.loads((folder / "numbers.json").read_text())
        galstreams = spec.galstreams["name"] if spec.galstreams else None
        rows.append(survey_row(spec.name, numbers, galstreams=galstreams, data=spec.data_kind))
        fitted = QTable.read(folder / "tracks.ecsv")
        frame = fitted.meta.get("frame")
        # a stream fitted without a frame has no place on the sky: listed in the map's count, not drawn
        tracks[spec.name] = (
            track_on_sky(fitted, frame, fitted.meta.get("component", "stream")) if frame else SkyCoord([], [], unit="deg")
        )
    write_table(survey_table(rows), args.table, overwrite=True)
    with atomic_path(Path(args.figure), overwrite=True) as tmp:
        plot_survey_sky(tracks, frame=args.frame).savefig(tmp, format=Path(args.figure).suffix.lstrip(".") or "pdf")


if __name__ == "__main__":
    run_script(main)
