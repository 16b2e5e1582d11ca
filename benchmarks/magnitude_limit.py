"""Where the GD-1 file's stars run out, in PS1 g and i, by colour.

Fits :func:`streammix.magnitude_limit.fit_magnitude_limit` (a rising
exponential times an error function) to the faint end of the stars' PS1 g and
i magnitudes in ``gd1_dr2/gd1_pm_box_dr2_ps1.fits``, for all the stars with
both bands and in bins of g - i, and prints the limit, its width and the
number of stars fitted. The joint config's ``model.isochrone.magnitude_limits``
and ``limit_error`` come from the row of the stream's colours, and
``benchmarks/injection.py`` applies the same limit to its draws.

    python benchmarks/magnitude_limit.py

A few seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, SHARED  # noqa: E402

from streammix.config import Config  # noqa: E402
from streammix.fit import load_stars  # noqa: E402
from streammix.magnitude_limit import fit_magnitude_limit  # noqa: E402

#: g - i bins; the first is GD-1's main-sequence turn-off and upper main sequence (0.2-0.6 at g 18-20.5).
COLOUR_BINS = ((0.2, 0.6), (0.6, 1.0), (1.0, 3.5), (-1.0, 4.0))
#: The stream's colours, the row the configs and the injections use.
STREAM_COLOURS = COLOUR_BINS[0]


def limits(stars, colours: tuple[float, float]) -> dict:
    """The fitted limits in g and i of the stars with both bands and g - i in ``colours``."""
    g, i = stars.mags["ps1_g"], stars.mags["ps1_i"]
    both = np.isfinite(g) & np.isfinite(i)
    inside = both & (g - i >= colours[0]) & (g - i < colours[1])
    return {band: fit_magnitude_limit(values[inside]) for band, values in (("ps1_g", g), ("ps1_i", i))}


def main() -> None:
    if not (SHARED / "gd1_dr2").exists():
        sys.exit(f"{SHARED / 'gd1_dr2'}: not found (set STREAMMIX_SHARED_DATA)")
    stars = load_stars(Config.from_yaml(ROOT / "configs" / "gd1_dr2_photometry.yaml"))
    print("| g - i | band | limit | width | slope (per mag) | stars fitted (fainter than) |")
    print("|---|---|---|---|---|---|")
    out = []
    for colours in COLOUR_BINS:
        for band, fit in limits(stars, colours).items():
            label = "all" if colours == COLOUR_BINS[-1] else f"{colours[0]}-{colours[1]}"
            print(f"| {label} | {band} | {fit.limit:.2f} | {fit.width:.3f} | {fit.slope:.2f} | {fit.stars} ({fit.brightest:.2f}) |")
            out.append({"colours": colours, "band": band, **fit.__dict__})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
