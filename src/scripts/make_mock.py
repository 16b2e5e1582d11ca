"""Generate a stream's mock field (rule ``mock_data``): the stars and their true tracks.

``data: {sky_mock: ...}`` (a galstreams stream of a survey run) is the mock
``streammix mock --stream`` draws (:func:`streammix.sky_mock.sky_mock`): the
stream on the galstreams track of the stream's config (the one ``streammix new``
wrote), in the Galaxy model's background, in that config's frame and field.

``data: {mock: ...}``, ``track: gd1`` (default) is the project's GD-1-like mock (:func:`streammix.mock.generate_mock`).
``track: pal5`` is the same generator moved onto the galstreams Pal 5 track
(Price-Whelan et al. 2019) in the Pal 5 frame: every stream star's phi2 and
proper motions are shifted by (galstreams track - mock track) at its phi1, so
the stream follows Pal 5 on the sky and in proper motion. Its distance,
luminosity function, width and the background's kinematics stay those of the
GD-1-like mock: it stands in for Pal 5 until real Pal 5 data is available.

Usage: ``python src/scripts/make_mock.py config/streams/mock.yaml --out results/mock/data/stars.fits``
"""

from __future__ import annotations

import argparse
import astropy.units as u
import numpy as np

from streammix.config import Config
from streammix.errors import InputError
from streammix.mock import MockConfig, generate_mock, write_mock
from streammix.sky_mock import sky_mock
from scriptrun import run_script
from streamcfg import read_stream

PAL5_DEFAULTS = {"phi1_range": (-15.0, 7.0), "phi2_range": (-4.0, 4.0)}


def mock_settings(settings: dict) -> MockConfig:
    """The MockConfig a stream file's ``data.mock`` section describes.

    Example:
        >>> mock_settings({"n_stream": 5, "n_background": 50, "track": "pal5"}).phi1_range
        (-15.0, 7.0)
    """
    values = {k: v for k, v in settings.items() if k in MockConfig.model_fields}
    if settings.get("track", "gd1") == "pal5":
        values = {**PAL5_DEFAULTS, **values}
    return MockConfig(**values)


def move_onto_pal5(stars, tracks):
    """Shift the stream stars and the true tracks onto the galstreams Pal 5 track (in place)."""
    from streammix.frames import get_frame
    from streammix.tracks import galstreams_track

    pal5 = galstreams_track("Pal5", "pricewhelan2019", get_frame("pal5"))
    lo, hi = float(np.nanmin(pal5.phi1)), float(np.nanmax(pal5.phi1))
    truth_phi1 = tracks["phi1"].to_value(u.deg)
    is_stream = np.asarray(stars["true_component"]) == "stream"
    phi1 = stars["phi1"].to_value(u.deg)[is_stream]
    for name, unit in (("phi2", u.deg), ("pm_phi1_cosphi2", u.mas / u.yr), ("pm_phi2", u.mas / u.yr)):
        target = np.interp(np.clip(truth_phi1, lo, hi), pal5.phi1, getattr(pal5, name))
        shift = target - tracks[name].to_value(unit)
        values = stars[name].to_value(unit)
        values[is_stream] += np.interp(phi1, truth_phi1, shift)
        stars[name] = values * unit
        tracks[name] = target * unit
    stars.meta["track"] = tracks.meta["track"] = "galstreams Pal5 pricewhelan2019 (Pal 5 frame)"
    return stars, tracks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stream", help="config/streams/<name>.yaml")
    parser.add_argument("--out", required=True, help="the star table (.fits); the true tracks go beside it")
    args = parser.parse_args()
    spec = read_stream(args.stream)
    settings = spec.data
    if spec.data_kind == "sky_mock":
        try:
            stars, tracks = sky_mock(
                Config.from_yaml(spec.config), n_stream=settings["n_stream"], n_background=settings["n_background"],
                background_scale=settings["background_scale"], seed=settings["seed"],
            )  # fmt: skip
        except InputError as error:  # e.g. a track so fast that too few field stars share its proper motions
            raise InputError(f"stream '{spec.name}': {error}") from None
    elif spec.data_kind == "mock":
        stars, tracks = generate_mock(mock_settings(settings), seed=int(settings.get("seed", 0)))
        if settings.get("track", "gd1") == "pal5":
            move_onto_pal5(stars, tracks)
    else:
        raise InputError(f"stream '{spec.name}': its data ({spec.data_kind}) are not a mock")
    write_mock(stars, tracks, args.out, overwrite=True)


if __name__ == "__main__":
    run_script(main)
