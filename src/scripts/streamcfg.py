"""Stream configurations of the pipeline and the numbers each stream writes.

One YAML file per stream, ``config/streams/<name>.yaml``::

    name: mock                       # must equal the file's stem
    paper: validation                # role in the article: validation, gd1, pal5 (optional)
    data:                            # exactly one of
      mock: {n_stream: 1000, n_background: 20000, seed: 1, track: gd1}   # any MockConfig field, plus seed, track, spacing
      # file: $STREAMMIX_SHARED_DATA/gd1_dr2/gd1_pm_box_dr2_ps1.fits
      # gaia_query: {adql: "SELECT ...", frame: gd1}
      # sky_mock: {n_background: 20000, seed: 0}   # a mock on the config's galstreams track (streammix mock --stream)
      # query: {}                                   # the config's data.query (streammix query; needs network)
    config: ../../configs/gd1_dr2.yaml   # streammix config (mocks: built from the truth)
    overrides: {fit: {ensemble: 2}}      # deep-merged into the streammix config
    compare:
      galstreams: {name: GD-1, reference: pricewhelan2018}
      catalogs: [pricewhelan2018_gd1]

The format is the pydantic model :class:`StreamFile` (``data.mock`` is
:class:`streammix.mock.MockConfig` with the pipeline's ``seed``, ``track`` and
``spacing``). The Snakefile and every script in ``src/scripts`` read stream
files through :func:`read_stream`, so an unknown key or a bad value stops the
run with one line naming the file and the key:
``stream config '<path>': <dotted key>: <why>``. The pipeline writes the stream
file of a galstreams stream itself (``src/scripts/streamlist.py``), with the
config ``streammix new`` writes and ``sky_mock`` or ``query`` data.

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
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from streammix.config import resolve_data_path
from streammix.errors import InputError
from streammix.mock import MockConfig
from streammix.settings import Section, first_error

__all__ = [
    "CATALOG_KEYS",
    "COMMON_KEYS",
    "GALSTREAMS_KEYS",
    "MockData",
    "SkyMockData",
    "StreamFile",
    "StreamSpec",
    "TRUTH_KEYS",
    "deep_merge",
    "format_number",
    "number_keys",
    "parse_stream",
    "read_stream",
]

PAPER_ROLES = ("validation", "gd1", "pal5")
DATA_KINDS = ("mock", "file", "gaia_query", "sky_mock", "query")
#: The data kinds whose truth is known (the mock generators).
MOCK_KINDS = ("mock", "sky_mock")

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


class MockData(MockConfig):
    """``data.mock``: the mock's own settings (:class:`streammix.mock.MockConfig`,
    whose defaults apply) plus the pipeline's.

    Arguments:
        seed: The mock's random seed (also the fit's).
        track: ``gd1`` (the GD-1-like mock) or ``pal5`` (moved onto the galstreams Pal 5 track).
        spacing: Degrees between the control points read off the true tracks.
        **settings: Any :class:`~streammix.mock.MockConfig` field.

    Example:
        >>> MockData.model_validate({"n_stream": 10, "track": "pal5"}).model_dump(exclude_unset=True)
        {'n_stream': 10, 'track': 'pal5'}
    """

    seed: int = Field(0, ge=0, description="the mock's random seed (also the fit's)")
    track: Literal["gd1", "pal5"] = Field(
        "gd1", description="gd1: the GD-1-like mock; pal5: the same moved onto the galstreams Pal 5 track"
    )
    spacing: float = Field(20.0, gt=0, description="deg between the control points read off the true tracks")


class GaiaQuery(Section):
    """``data.gaia_query``: an ADQL query of the Gaia archive.

    Arguments:
        adql: The query text.
        frame: The stream frame the stars are put in (e.g. ``gd1``).
    """

    adql: str = Field(description="the query text")
    frame: str = Field(description="the stream frame the stars are put in (e.g. gd1)")


class SkyMockData(Section):
    """``data.sky_mock``: a mock drawn on the galstreams track of the stream's config
    (:func:`streammix.sky_mock.sky_mock`, what ``streammix mock --stream`` draws), in
    the Galaxy model's background.

    Arguments:
        n_stream: Stream stars (None: 10 per degree of track, 100 to 3000).
        n_background: Field stars drawn from the Galaxy model (None: as many as
            it expects in the field, times ``background_scale``; often millions).
        background_scale: With ``n_background: null``, the fraction of the model's field stars drawn.
        seed: The mock's random seed.

    Example:
        >>> SkyMockData().n_background, SkyMockData.model_validate({"n_background": None}).background_scale
        (20000, 1.0)
    """

    n_stream: int | None = Field(None, ge=0, description="stream stars (null: 10 per deg of track, 100-3000)")
    n_background: int | None = Field(
        20000, ge=0, description="field stars from the Galaxy model (null: its expected number times background_scale)"
    )
    background_scale: float = Field(1.0, gt=0, le=1, description="with n_background null: the fraction drawn")
    seed: int = Field(0, ge=0, description="the mock's random seed")


class ConfigQuery(Section):
    """``data.query``: the Gaia DR3 query of the stream's config (its ``data.query``,
    as ``streammix new`` writes it), run by ``streammix query`` (needs network). No settings.

    Example:
        >>> ConfigQuery().model_dump()
        {}
    """


class DataSource(Section):
    """``data``: exactly one of ``mock``, ``file``, ``gaia_query``, ``sky_mock`` and ``query``.

    Arguments:
        mock: The mock's settings (``mock:`` alone: all defaults).
        file: A star table; relative to the stream file's folder, ``$STREAMMIX_SHARED_DATA`` expanded.
        gaia_query: A Gaia archive query.
        sky_mock: A mock on the config's galstreams track (``sky_mock:`` alone: all defaults).
        query: The config's own Gaia query (``query:`` alone).

    Example:
        >>> DataSource.model_validate({"file": "stars.fits"}).kind
        'file'
        >>> DataSource.model_validate({"sky_mock": None}).kind
        'sky_mock'
    """

    mock: MockData | None = Field(None, description="the mock's settings")
    file: str | None = Field(None, description="a star table (relative to the stream file's folder)")
    gaia_query: GaiaQuery | None = Field(None, description="a Gaia archive query")
    sky_mock: SkyMockData | None = Field(None, description="a mock on the config's galstreams track")
    query: ConfigQuery | None = Field(None, description="the config's data.query (streammix query)")

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in DATA_KINDS:
            raise ValueError(f"give exactly one of {', '.join(DATA_KINDS)}")
        kind = next(iter(data))
        if kind in ("mock", "sky_mock", "query") and data[kind] is None:
            return {kind: {}}
        return data

    @property
    def kind(self) -> str:
        """``mock``, ``file`` or ``gaia_query``: the one given."""
        return next(k for k in DATA_KINDS if getattr(self, k) is not None)


class GalstreamsTrack(Section):
    """``compare.galstreams``: a galstreams track to compare the fitted track with.

    Arguments:
        name: The stream's name in galstreams.
        reference: Which of its tracks (None: galstreams' default).
    """

    name: str = Field(description="the stream's name in galstreams")
    reference: str | None = Field(None, description="which of its tracks (null: galstreams' default)")


class Compare(Section):
    """``compare``: what the fitted stream is compared with.

    Arguments:
        galstreams: A galstreams track, or None.
        catalogs: Published catalogs, compared when they are in the cache.
    """

    galstreams: GalstreamsTrack | None = Field(None, description="a galstreams track")
    catalogs: list[str] = Field([], description="published catalogs, compared when they are in the cache")


class StreamFile(Section):
    """The contents of ``config/streams/<name>.yaml``; :func:`read_stream` adds
    the checks that need the file's path.

    Arguments:
        name: The stream's name; must equal the file's stem (None: the stem).
        description: Free text.
        paper: Role in the article (``validation``, ``gd1``, ``pal5``) or None.
        data: Where the stars come from.
        config: The base streammix config file, relative to the stream file (needed unless a mock).
        overrides: Deep-merged into the streammix config.
        compare: What the stream is compared with.

    Example:
        >>> StreamFile.model_validate({"data": {"mock": None}}).data.kind
        'mock'
    """

    name: str | None = Field(None, description="the stream's name; must equal the file's stem")
    description: str | None = Field(None, description="free text")
    paper: Literal["validation", "gd1", "pal5"] | None = Field(None, description="role in the article")
    data: DataSource = Field(description="where the stars come from: exactly one of mock, file, gaia_query")
    config: str | None = Field(None, description="the base streammix config file (needed unless a mock)")
    overrides: dict[str, Any] | None = Field(None, description="deep-merged into the streammix config")
    compare: Compare | None = Field(None, description="what the stream is compared with")


@dataclass(frozen=True)
class StreamSpec:
    """One stream of the pipeline, as :func:`read_stream` resolves a checked
    :class:`StreamFile` (paths made absolute, defaults filled in).

    Arguments:
        name: The stream's name (the file's stem; used in every output path).
        path: The YAML file.
        data_kind: ``"mock"``, ``"file"``, ``"gaia_query"``, ``"sky_mock"`` or ``"query"``.
        data: That data section's settings (for ``file``: ``{"path": ...}``, resolved).
        config: The base streammix config file, or None (mocks: built from the truth;
            ``sky_mock`` and ``query``: the config ``streammix new`` wrote).
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
        """True when the stars come from a mock generator (the truth is known)."""
        return self.data_kind in MOCK_KINDS


def _fail(path: Path, key: str, why: str) -> InputError:
    return InputError(f"stream config '{path}': {key}: {why}")


def read_stream(path: str | os.PathLike) -> StreamSpec:
    """Read and check one stream file (:class:`StreamFile`); paths in it are
    taken from the file's folder.

    Arguments:
        path: ``config/streams/<name>.yaml``.

    Example:
        >>> import pathlib, tempfile
        >>> bad = pathlib.Path(tempfile.mkdtemp()) / "bad.yaml"
        >>> _ = bad.write_text("data: {mock: {n_stars: 10}}\\n")
        >>> read_stream(bad)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: stream config '.../bad.yaml': data.mock.n_stars: unknown key
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"stream config '{path}': no such file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise InputError(f"stream config '{path}': not valid YAML") from None
    return parse_stream(raw, path)


def parse_stream(raw: Any, path: str | os.PathLike, *, check_files: bool = True) -> StreamSpec:
    """Check a stream file's contents (:class:`StreamFile`) as if read from ``path``.

    Arguments:
        raw: The file's contents (a mapping).
        path: Where the file is or will be: its stem is the stream's name, its
            folder the base of relative paths.
        check_files: Check that the streammix config exists (off for a stream
            file the pipeline will write, beside a config not yet written).

    Example:
        >>> spec = parse_stream({"data": {"sky_mock": None}, "config": "gd_1_new.yaml"},
        ...                     "results/gd_1/gd_1.yaml", check_files=False)
        >>> spec.name, spec.data_kind, spec.is_mock, spec.config.name
        ('gd_1', 'sky_mock', True, 'gd_1_new.yaml')
    """
    path = Path(path)
    if not isinstance(raw, dict):
        raise _fail(path, "(top level)", "expected a mapping")
    try:
        stream = StreamFile.model_validate(raw)
    except ValidationError as error:
        key, why = first_error(error, unknown="unknown key")
        raise _fail(path, key or "(top level)", why) from None
    name = stream.name if stream.name is not None else path.stem
    if name != path.stem:
        raise _fail(path, "name", f"'{name}' must equal the file's stem '{path.stem}'")
    kind = stream.data.kind
    if kind == "file":
        data = {"path": str(resolve_data_path(stream.data.file, path.parent))}
    else:
        data = getattr(stream.data, kind).model_dump(exclude_unset=kind == "mock")
    if stream.config is None and kind in ("sky_mock", "query"):
        raise _fail(path, "config", f"a streammix config with a galstreams stream (streammix new) is needed for {kind}")
    if stream.config is None and kind != "mock":
        raise _fail(path, "config", "a streammix config file is needed for real data")
    config_path = None
    if stream.config is not None:
        # a file the pipeline will write keeps its path relative to the working directory
        config_path = (path.parent / stream.config).resolve() if check_files else path.parent / stream.config
        if check_files and not config_path.is_file():
            raise _fail(path, "config", f"'{config_path}' not found")
    compare = stream.compare or Compare()
    return StreamSpec(
        name=name,
        path=path,
        data_kind=kind,
        data=data,
        config=config_path,
        overrides=dict(stream.overrides or {}),
        galstreams=compare.galstreams.model_dump() if compare.galstreams is not None else None,
        catalogs=tuple(compare.catalogs),
        paper=stream.paper,
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
