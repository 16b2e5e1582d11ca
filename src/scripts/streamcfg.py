"""Stream configurations of the pipeline and the numbers each stream writes.

One YAML file per stream, ``config/streams/<name>.yaml``::

    name: mock                       # must equal the file's stem
    paper: validation                # role in the article: validation, gd1, pal5 (optional)
    data:                            # exactly one of
      mock: {n_stream: 1000, n_background: 20000, seed: 1, track: gd1}
      # file: $STREAMMIX_SHARED_DATA/gd1_dr2/gd1_pm_box_dr2_ps1.fits
      # gaia_query: {adql: "SELECT ...", frame: gd1}
    config: ../../configs/gd1_dr2.yaml   # streammix config (mocks: built from the truth)
    overrides: {fit: {ensemble: 2}}      # deep-merged into the streammix config
    compare:
      galstreams: {name: GD-1, reference: pricewhelan2018}
      catalogs: [pricewhelan2018_gd1]

The Snakefile and every script in ``src/scripts`` read stream files through
:func:`read_stream`, so an unknown key or a bad value stops the run with one
line naming the file and the key.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "toy.yaml"
    >>> _ = path.write_text("name: toy\\ndata: {mock: {n_stream: 10, n_background: 100}}\\n")
    >>> spec = read_stream(path)
    >>> spec.data_kind, spec.is_mock, number_keys(spec)[:3]
    ('mock', True, ['n_stars', 'n_p50', 'n_p80'])
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streammix.errors import InputError

__all__ = [
    "CATALOG_KEYS",
    "COMMON_KEYS",
    "GALSTREAMS_KEYS",
    "StreamSpec",
    "TRUTH_KEYS",
    "deep_merge",
    "format_number",
    "number_keys",
    "read_stream",
]

TOP_KEYS = {"name", "paper", "data", "config", "overrides", "compare", "description"}
MOCK_KEYS = {"n_stream", "n_background", "seed", "track", "phi1_range", "phi2_range", "g_limit", "spacing"}
PAPER_ROLES = ("validation", "gd1", "pal5")

#: Numbers every stream writes to ``src/tex/output/<stream>_<key>.txt``.
COMMON_KEYS = (
    "n_stars",
    "n_p50",
    "n_p80",
    "ensemble",
    "fit_minutes",
    "phi2_width_median_arcmin",
    "pm_phi1_median",
    "pm_phi2_median",
)
#: Numbers of a mock, against its truth.
TRUTH_KEYS = (
    "n_true_members",
    "auc",
    "completeness",
    "purity",
    "calibration_max_error",
    "phi2_rms_arcmin",
    "phi2_width_rms_arcmin",
    "pm_phi1_rms",
    "pm_phi2_rms",
)
#: Numbers of a stream compared with a galstreams track.
GALSTREAMS_KEYS = ("galstreams_phi2_rms_arcmin", "galstreams_n_points", "galstreams_phi1_min", "galstreams_phi1_max")
#: Numbers of a comparison with one published catalog (``<stream>_<catalog>_<key>.txt``).
CATALOG_KEYS = ("n_matched", "n_catalog_members", "n_both_members", "fraction_recovered", "fraction_in_catalog")

#: How each number is printed in the text (integers, fractions, small floats).
FORMATS = {
    "n_stars": "{:.0f}",
    "n_p50": "{:.0f}",
    "n_p80": "{:.0f}",
    "ensemble": "{:.0f}",
    "n_true_members": "{:.0f}",
    "galstreams_n_points": "{:.0f}",
    "n_matched": "{:.0f}",
    "n_catalog_members": "{:.0f}",
    "n_both_members": "{:.0f}",
    "fit_minutes": "{:.1f}",
    "galstreams_phi1_min": "{:.0f}",
    "galstreams_phi1_max": "{:.0f}",
    "auc": "{:.3f}",
    "completeness": "{:.2f}",
    "purity": "{:.2f}",
    "fraction_recovered": "{:.2f}",
    "fraction_in_catalog": "{:.2f}",
}


@dataclass(frozen=True)
class StreamSpec:
    """One stream of the pipeline, as read from ``config/streams/<name>.yaml``.

    Arguments:
        name: The stream's name (the file's stem; used in every output path).
        path: The YAML file.
        data_kind: ``"mock"``, ``"file"`` or ``"gaia_query"``.
        data: That data section's settings (for ``file``: ``{"path": ...}``, resolved).
        config: The base streammix config file, or None (mocks: built from the truth).
        overrides: Deep-merged into the streammix config.
        galstreams: ``{"name": ..., "reference": ...}`` to compare the track with, or None.
        catalogs: Published catalogs to compare with when they are in the cache.
        paper: Role in the article (``validation``, ``gd1``, ``pal5``) or None.
    """

    name: str
    path: Path
    data_kind: str
    data: dict[str, Any]
    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    galstreams: dict[str, Any] | None = None
    catalogs: tuple[str, ...] = ()
    paper: str | None = None

    @property
    def is_mock(self) -> bool:
        """True when the stars come from the mock generator (the truth is known)."""
        return self.data_kind == "mock"


def _fail(path: Path, key: str, why: str) -> InputError:
    return InputError(f"stream config '{path}': {key}: {why}")


def read_stream(path: str | os.PathLike) -> StreamSpec:
    """Read and check one stream file; paths in it are taken from the file's folder.

    Arguments:
        path: ``config/streams/<name>.yaml``.
    """
    from streammix.config import resolve_data_path

    path = Path(path)
    if not path.is_file():
        raise InputError(f"stream config '{path}': no such file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise InputError(f"stream config '{path}': not valid YAML") from None
    if not isinstance(raw, dict):
        raise _fail(path, "(top level)", "expected a mapping")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise _fail(path, unknown[0], f"unknown key; use {sorted(TOP_KEYS)}")
    name = raw.get("name", path.stem)
    if name != path.stem:
        raise _fail(path, "name", f"'{name}' must equal the file's stem '{path.stem}'")
    data = raw.get("data")
    if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in ("mock", "file", "gaia_query"):
        raise _fail(path, "data", "give exactly one of mock, file, gaia_query")
    kind, settings = next(iter(data.items()))
    if kind == "mock":
        settings = dict(settings or {})
        bad = sorted(set(settings) - MOCK_KEYS)
        if bad:
            raise _fail(path, f"data.mock.{bad[0]}", f"unknown key; use {sorted(MOCK_KEYS)}")
        if settings.get("track", "gd1") not in ("gd1", "pal5"):
            raise _fail(path, "data.mock.track", f"'{settings['track']}' is not gd1 or pal5")
    elif kind == "file":
        if not isinstance(settings, str):
            raise _fail(path, "data.file", "expected a file path")
        settings = {"path": str(resolve_data_path(settings, path.parent))}
    else:
        if not isinstance(settings, dict) or not isinstance(settings.get("adql"), str) or "frame" not in settings:
            raise _fail(path, "data.gaia_query", "expected {adql: <query text>, frame: <stream frame>}")
    config = raw.get("config")
    if config is None and kind != "mock":
        raise _fail(path, "config", "a streammix config file is needed for real data")
    config_path = (path.parent / config).resolve() if config is not None else None
    if config_path is not None and not config_path.is_file():
        raise _fail(path, "config", f"'{config_path}' not found")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise _fail(path, "overrides", "expected a mapping")
    compare = raw.get("compare") or {}
    bad = sorted(set(compare) - {"galstreams", "catalogs"})
    if bad:
        raise _fail(path, f"compare.{bad[0]}", "unknown key; use galstreams, catalogs")
    galstreams = compare.get("galstreams")
    if galstreams is not None and (not isinstance(galstreams, dict) or "name" not in galstreams):
        raise _fail(path, "compare.galstreams", "expected {name: <stream>, reference: <track>}")
    catalogs = compare.get("catalogs") or []
    paper = raw.get("paper")
    if paper is not None and paper not in PAPER_ROLES:
        raise _fail(path, "paper", f"'{paper}' is not one of {list(PAPER_ROLES)}")
    return StreamSpec(
        name=name,
        path=path,
        data_kind=kind,
        data=dict(settings),
        config=config_path,
        overrides=overrides,
        galstreams=galstreams,
        catalogs=tuple(catalogs),
        paper=paper,
    )


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, recursively for nested mappings.

    Example:
        >>> deep_merge({"fit": {"steps": 10, "seed": 1}}, {"fit": {"steps": 5}})
        {'fit': {'steps': 5, 'seed': 1}}
    """
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def number_keys(spec: StreamSpec) -> list[str]:
    """The ``<key>`` of every ``<stream>_<key>.txt`` the numbers rules write for ``spec``
    (catalog comparisons excluded: they depend on the cache)."""
    keys = list(COMMON_KEYS)
    if spec.is_mock:
        keys += TRUTH_KEYS
    if spec.galstreams is not None:
        keys += GALSTREAMS_KEYS
    return keys


def format_number(key: str, value: float) -> str:
    """A number as the article prints it (``nan`` when it is not finite).

    Example:
        >>> format_number("n_p50", 1234), format_number("auc", 0.98765), format_number("pm_phi2_rms", 0.0123)
        ('1234', '0.988', '0.012')
    """
    value = float(value)
    if not math.isfinite(value):
        return "nan"
    fmt = FORMATS.get(key)
    if fmt is None:
        fmt = "{:.2f}" if abs(value) >= 0.1 else "{:.3f}"
    return fmt.format(value)
