"""Stream frame and masks (rule ``prepare``): the stars the fit sees and the config it runs.

Reads the stream's stars with its streammix config's column map (a raw Gaia
table goes through the stream frame, ``data.gaia_frame``), keeps the stars
inside the field, and writes into ``--out-dir``:

- ``stars.fits``: the in-field stars in streammix's canonical columns (stream
  frame, units, missing values as NaN), truth columns of a mock kept;
- ``masks.ecsv``: every input star's ``source_id``, ``in_field`` and
  ``offstream`` (the stars that train the background flows: farther than
  ``model.background.offstream_phi2`` from the prior phi2 track);
- ``config.yaml``: the streammix config the ``fit`` rule runs, reading
  ``stars.fits`` (its overrides applied; mocks: priors read off the true tracks;
  a galstreams stream's: the config ``streammix new`` wrote, with its priors
  read off the galstreams track, whether its stars are a mock or queried).

Usage: ``python src/scripts/prepare.py config/streams/mock.yaml --stars S --out-dir D [--truth T] [--device cuda]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from astropy.table import QTable, Table

from streammix.background import offstream_mask
from streammix.config import Config
from streammix.data import ColumnMap, StarTable, read_stars
from streammix.errors import InputError
from streammix.fit import control_priors, load_stars, prior_track
from streammix.output import write_table
from streammix.pipeline import mock_columns
from scriptrun import run_script
from streamcfg import StreamSpec, deep_merge, read_stream

#: Prior widths of a mock's control points: generous, so the fit sets the tracks.
MOCK_PRIOR_WIDTHS = {"phi2": 0.5, "pm_phi1_cosphi2": 2.0, "pm_phi2": 2.0, "distmod": 0.5}


def mock_fit_config(spec: StreamSpec, truth: Table, mock: dict[str, Any]) -> dict[str, Any]:
    """A mock's streammix config: the field of the mock, control points every
    ``spacing`` degrees (default 20) read off the true tracks with generous widths
    (what a user brings from the literature), as in :func:`streammix.pipeline.demo_config`."""
    phi1 = np.asarray(getattr(truth["phi1"], "value", truth["phi1"]))
    lo, hi = mock["phi1_range"]
    spacing = float(spec.data.get("spacing", 20.0))
    points = []
    for x in np.arange(lo + spacing / 2, hi, spacing):
        for name, width in MOCK_PRIOR_WIDTHS.items():
            values = np.asarray(getattr(truth[name], "value", truth[name]))
            points.append({"parameter": name, "phi1": float(x), "value": float(np.interp(x, phi1, values)), "width": width})
    return {
        "name": spec.name,
        "frame": "pal5" if spec.data.get("track") == "pal5" else "gd1",
        "field": {"phi1": list(mock["phi1_range"]), "phi2": list(mock["phi2_range"])},
        "model": {"components": [{"name": "stream", "control_points": points}]},
        "fit": {"seed": int(spec.data.get("seed", 0))},
    }


def canonical_columns(stars) -> ColumnMap:
    """The column map that reads back a table written by ``StarTable.to_table``."""
    return mock_columns(list(stars.extra.colnames)).model_copy(update={"bands": {b: b for b in stars.bands}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stream")
    parser.add_argument("--stars", required=True, help="the stream's star table (data rule output)")
    parser.add_argument("--truth", help="a mock's true tracks")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--device", default=None, help="fit.device for the fit rule (cpu, cuda)")
    args = parser.parse_args()
    spec = read_stream(args.stream)
    out = Path(args.out_dir)

    if spec.data_kind == "mock":
        table = QTable.read(args.stars, character_as_bytes=False)
        header = table.meta.get("CONFIG") or table.meta.get("config")
        if header is None:
            raise InputError(f"--stars '{args.stars}': no CONFIG header (not written by make_mock.py)")
        mock = json.loads(header)
        raw = mock_fit_config(spec, QTable.read(args.truth), mock)
        if spec.config is not None:
            raw = deep_merge(yaml.safe_load(spec.config.read_text()), raw)
        every = StarTable.from_table(table, mock_columns([c for c in table.colnames if c.startswith("true_")]))
    elif spec.data_kind == "sky_mock":
        # the config `streammix new` wrote (frame, field, galstreams priors) fits the mock drawn on its
        # track, whose columns are the mock generator's (truth kept)
        table = QTable.read(args.stars, character_as_bytes=False)
        raw = yaml.safe_load(spec.config.read_text())
        every = StarTable.from_table(table, mock_columns([c for c in table.colnames if c.startswith("true_")]))
    else:
        raw = yaml.safe_load(spec.config.read_text())
        if spec.data_kind == "gaia_query":
            raw = deep_merge(raw, {"data": {"gaia_frame": spec.data["frame"]}})
        read_config = Config.from_dict(deep_merge(raw, spec.overrides), source=f"stream '{spec.name}'")
        every = read_stars(args.stars, read_config.data.column_map(), gaia_frame=read_config.data.gaia_frame,
                           reflex_distance=read_config.data.reflex_distance)
    read_config = Config.from_dict(deep_merge(raw, spec.overrides), source=f"stream '{spec.name}'")
    cut = read_config.data.model_copy(update={"cut_to_field": True})
    all_stars = load_stars(read_config.model_copy(update={"data": cut}), every)

    # the config the fit runs: the prepared stars, canonical columns, nothing cut
    fit_raw = deep_merge(raw, spec.overrides)
    fit_raw["name"] = spec.name
    fit_raw["data"] = {
        "path": "stars.fits",
        "columns": canonical_columns(all_stars).model_dump(mode="json", exclude_defaults=True),
    }
    if args.device:
        fit_raw = deep_merge(fit_raw, {"fit": {"device": args.device}})
    fit_config = Config.from_dict(fit_raw, source=f"stream '{spec.name}'")

    priors = control_priors(fit_config)
    track_phi1, track_phi2 = prior_track(priors, fit_config.model.components[0].name, "phi2")
    offstream = offstream_mask(all_stars.phi1, all_stars.phi2, track_phi1, track_phi2, fit_config.model.background.offstream_phi2)
    in_field = np.isin(every.source_id, all_stars.source_id)
    masks = Table({"source_id": every.source_id, "in_field": in_field, "offstream": np.zeros(len(every), bool)})
    masks["offstream"][_positions(every.source_id, all_stars.source_id)] = offstream
    masks.meta.update({"stream": spec.name, "n_in_field": int(in_field.sum()), "n_offstream": int(offstream.sum())})

    out.mkdir(parents=True, exist_ok=True)
    write_table(all_stars.to_table(), out / "stars.fits", overwrite=True)
    write_table(masks, out / "masks.ecsv", overwrite=True)
    (out / "config.yaml").write_text(fit_config.to_yaml())


def _positions(ids: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """Indices in ``ids`` of each element of ``subset`` (all present, ids unique)."""
    order = np.argsort(ids)
    return order[np.searchsorted(ids, subset, sorter=order)]


if __name__ == "__main__":
    run_script(main)
