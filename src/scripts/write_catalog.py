"""Membership catalogs (rule ``members``): the fit's members table, with ICRS positions, as ECSV and FITS.

One row per fitted star: ``source_id``, ``ra``, ``dec`` (from the stream frame
when the config names one), ``phi1``, ``phi2``, ``p_<component>`` with its
5/50/95 percentiles and the stars' kept columns (a mock's truth). The header
records the stream, the thresholds' member counts and the streammix version.

Usage: ``python src/scripts/write_catalog.py results/mock/fit --ecsv members.ecsv --fits members.fits``
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import QTable

from streammix.fit import load
from streammix.frames import get_frame
from streammix.output import write_table
from scriptrun import run_script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fit_dir")
    parser.add_argument("--ecsv", required=True)
    parser.add_argument("--fits", required=True)
    args = parser.parse_args()
    fit_dir = Path(args.fit_dir)
    members = QTable.read(fit_dir / "members.ecsv")
    model = load(fit_dir / "model")
    component = model.component_names[0]
    table = QTable()
    table["source_id"] = members["source_id"]
    if model.config.frame:
        ra, dec = get_frame(model.config.frame).to_icrs(members["phi1"], members["phi2"])
        table["ra"], table["dec"] = np.atleast_1d(ra) * u.deg, np.atleast_1d(dec) * u.deg
    for name in members.colnames:
        if name not in table.colnames:
            table[name] = members[name]
    p = np.asarray(members[f"p_{component}"])
    table.meta = {
        "stream": model.config.name,
        "frame": model.config.frame or "",
        "components": list(model.component_names),
        "ensemble": len(model.mixtures),
        "streammix": version("streammix"),
        "n_p50": int(np.sum(p > 0.5)),
        "n_p80": int(np.sum(p > 0.8)),
        "description": members.meta.get("description", ""),
    }
    write_table(table, args.ecsv, overwrite=True)
    write_table(table, args.fits, overwrite=True)


if __name__ == "__main__":
    run_script(main)
