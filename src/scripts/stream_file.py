"""A galstreams stream's stream file (rule ``new_stream``, after ``streammix new`` wrote its config).

Writes ``results/<slug>/<slug>.yaml``, the :class:`streamcfg.StreamFile` of
:func:`streamlist.galstreams_stream_file` for the galstreams stream and the
pipeline's ``galstreams`` settings (given as JSON), checked against the config
beside it (:func:`streamcfg.parse_stream`) before it is written.

Usage: ``python src/scripts/stream_file.py NAME --settings JSON --out results/<slug>/<slug>.yaml``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from streammix.errors import InputError
from streammix.new_stream import galstreams_name, stream_slug
from streammix.output import atomic_path
from scriptrun import run_script
from streamcfg import parse_stream
from streamlist import StreamEntry, galstreams_settings, galstreams_stream_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the stream's galstreams name")
    parser.add_argument("--settings", default="{}", help="the pipeline's galstreams section, as JSON")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    name = galstreams_name(args.name)
    entry = StreamEntry(stream_slug(name), name, f"galstreams:{name}")
    out = Path(args.out)
    if out.stem != entry.name:
        raise InputError(f"--out '{out}': must be named {entry.name}.yaml")
    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as error:
        raise InputError(f"--settings: not valid JSON ({error.msg})") from None
    stream = galstreams_stream_file(entry, galstreams_settings(settings))
    parse_stream(stream, out)  # checked against the config beside it before anything is written
    header = f"# {stream['description']}; config: `streammix new {name}`\n"
    with atomic_path(out, overwrite=True) as tmp:
        tmp.write_text(header + yaml.safe_dump(stream, sort_keys=False))


if __name__ == "__main__":
    run_script(main)
