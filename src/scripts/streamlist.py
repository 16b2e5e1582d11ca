"""Which streams a pipeline run fits: the ``streams`` setting, galstreams entries among them.

``streams`` (config/pipeline.yaml or ``--config streams=...``) is a list, or a
string of comma-separated names, whose entries are either

- ``NAME``: the stream file ``config/streams/NAME.yaml``, or
- ``galstreams:NAME``: a galstreams stream (case and punctuation ignored, so
  ``galstreams:gd1`` is GD-1); ``galstreams:*`` is every galstreams stream. In
  the string form a leading ``galstreams:`` applies to every name after it:
  ``galstreams:GD-1,Pal5``.

A galstreams stream runs under its slug (:func:`streammix.new_stream.stream_slug`,
``GD-1`` -> ``gd_1``): the name of its folder ``results/<slug>/`` and of its
Snakemake wildcard, safe whatever characters the galstreams name has; the
entry keeps the name, so the slug maps back to it. Two entries with the same
name in the run (``pal5`` and ``galstreams:Pal5``) stop the run with one line
naming both. The pipeline writes a galstreams stream's files itself (rule
``new_stream``): the config ``streammix new`` writes, ``results/<slug>/<slug>_new.yaml``,
and the stream file ``results/<slug>/<slug>.yaml`` of :func:`galstreams_stream_file`,
whose data are, by the ``galstreams`` section of the pipeline's settings
(:class:`GalstreamsSettings`), a mock drawn on the track (``data: mock``, the
default) or the config's Gaia DR3 query (``data: query``, the ``gaia_query`` rule).

Example:
    >>> known = ["GD-1", "Pal5", "M2 (x)"]
    >>> [(e.name, e.galstreams) for e in stream_entries("galstreams:gd1, m2 (X)", known=known)]
    [('gd_1', 'GD-1'), ('m2_x', 'M2 (x)')]
    >>> [e.name for e in stream_entries(["mock", "galstreams:*"], known=known)]
    ['mock', 'gd_1', 'pal5', 'm2_x']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from streammix.errors import InputError
from streammix.new_stream import list_streams, stream_slug
from streammix.settings import Section, first_error
from streammix.tracks import stream_key
from streamcfg import SkyMockData, StreamSpec, parse_stream

__all__ = [
    "GALSTREAMS_PREFIX",
    "GalstreamsSettings",
    "StreamEntry",
    "SurveySettings",
    "galstreams_names",
    "galstreams_settings",
    "galstreams_spec",
    "galstreams_stream_file",
    "stream_entries",
    "survey_settings",
]

GALSTREAMS_PREFIX = "galstreams:"
_FILE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a config/streams/<name>.yaml entry


@dataclass(frozen=True)
class StreamEntry:
    """One stream of a run.

    Arguments:
        name: Its name in the run: the folder ``results/<name>/`` and the wildcard.
        galstreams: Its galstreams name (None: the stream file ``config/streams/<name>.yaml``).
        given: The entry as the ``streams`` setting wrote it (for messages).
    """

    name: str
    galstreams: str | None
    given: str


class GalstreamsSettings(Section):
    """The ``galstreams`` section of config/pipeline.yaml: how a galstreams stream runs.

    Arguments:
        data: ``mock`` (a mock drawn on the stream's galstreams track, offline) or
            ``query`` (the Gaia DR3 query of the config ``streammix new`` writes,
            the ``gaia_query`` rule; needs network).
        mock: The mock's settings (:class:`streamcfg.SkyMockData`).
        overrides: Deep-merged into every config ``streammix new`` writes (e.g. fit settings).

    Example:
        >>> GalstreamsSettings.model_validate({"mock": {"seed": 3}}).mock.seed
        3
    """

    data: Literal["mock", "query"] = Field("mock", description="mock: drawn on the track; query: the Gaia DR3 query")
    mock: SkyMockData = Field(default_factory=SkyMockData, description="the mock's settings (data: mock)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="deep-merged into every streammix new config")


class SurveySettings(Section):
    """The ``survey`` section of config/pipeline.yaml: the run's survey table and sky map.

    Arguments:
        frame: The sky map's coordinates: ``galactic`` or ``icrs``.

    Example:
        >>> SurveySettings().frame
        'galactic'
    """

    frame: Literal["galactic", "icrs"] = Field("galactic", description="the sky map's coordinates")


def _section(name: str, model: type[Section], raw: Any) -> Any:
    try:
        return model.model_validate(raw or {})
    except ValidationError as error:
        key, why = first_error(error, unknown="unknown key")
        raise InputError(f"pipeline config: {name}.{key}: {why}" if key else f"pipeline config: {name}: {why}") from None


def survey_settings(raw: Any) -> SurveySettings:
    """The pipeline's ``survey`` section, checked; a bad one raises one line naming the key.

    Example:
        >>> survey_settings({"frame": "ecliptic"})
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: pipeline config: survey.frame: Input should be 'galactic' or 'icrs'
    """
    return _section("survey", SurveySettings, raw)


def galstreams_settings(raw: Any) -> GalstreamsSettings:
    """The pipeline's ``galstreams`` section, checked; a bad one raises one line naming the key.

    Example:
        >>> galstreams_settings({"data": "archive"})
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: pipeline config: galstreams.data: Input should be 'mock' or 'query'
    """
    return _section("galstreams", GalstreamsSettings, raw)


def galstreams_names() -> list[str]:
    """Every galstreams stream's name, once each, in galstreams' order.

    Example:
        >>> "GD-1" in galstreams_names() and len(galstreams_names()) == len(set(galstreams_names()))
        True
    """
    return list(dict.fromkeys(name for name, _, _ in list_streams()))


def _items(value: Any) -> list[str]:
    """The entries of the setting, galstreams ones prefixed."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        if parts and parts[0].startswith(GALSTREAMS_PREFIX):
            parts = [parts[0]] + [p if p.startswith(GALSTREAMS_PREFIX) else GALSTREAMS_PREFIX + p for p in parts[1:]]
        return [p for p in parts if p]
    if isinstance(value, list | tuple):
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise InputError(f"streams: entry {i + 1}: {item!r} is not a stream's name")
            items.append(item.strip())
        return items
    raise InputError(f"streams: {value!r}: give a list of names or a string (e.g. galstreams:*)")


def stream_entries(value: Any, *, known: Sequence[str] | None = None) -> list[StreamEntry]:
    """The streams of a run, in the order given, each once.

    Arguments:
        value: The ``streams`` setting (module docstring).
        known: The galstreams names (default: :func:`galstreams_names`; read only
            when an entry is a galstreams one).

    Returns:
        One entry per stream. An unknown galstreams name, or two entries with the
        same name in the run, raise :class:`~streammix.errors.InputError` (one line).

    Example:
        >>> stream_entries("galstreams:GD-2", known=["GD-1", "Pal5"])
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: streams: galstreams:GD-2: not in galstreams; closest: GD-1, Pal5
        >>> stream_entries(["../x"], known=["Pal5"])
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: streams: '../x': a stream file's name is letters, digits, '_' and '-' (config/streams/<name>.yaml)
        >>> stream_entries(["pal5", "galstreams:Pal5"], known=["Pal5"])
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: streams: 'pal5' and 'galstreams:Pal5' would both write results/pal5/; run them apart or rename config/streams/pal5.yaml
    """
    entries: list[StreamEntry] = []
    for item in _items(value):
        if not item.startswith(GALSTREAMS_PREFIX):
            # a stream file's name becomes results/<name>/: no path separators or dots
            if not _FILE_NAME.fullmatch(item):
                raise InputError(
                    f"streams: {item!r}: a stream file's name is letters, digits, '_' and '-' "
                    "(config/streams/<name>.yaml)"
                )
            entries.append(StreamEntry(item, None, item))
            continue
        if known is None:
            known = galstreams_names()
        by_key: dict[str, str] = {}
        for name in known:
            by_key.setdefault(stream_key(name), name)
        wanted = item[len(GALSTREAMS_PREFIX) :].strip()
        if wanted == "*":
            names = list(by_key.values())
        elif stream_key(wanted) in by_key:
            names = [by_key[stream_key(wanted)]]
        else:
            closest = _closest(wanted, list(by_key.values()))
            raise InputError(f"streams: {item}: not in galstreams; closest: {', '.join(closest)}")
        entries += [StreamEntry(stream_slug(name), name, item) for name in names]
    unique: dict[str, StreamEntry] = {}
    for entry in entries:
        other = unique.get(entry.name)
        if other is None:
            unique[entry.name] = entry
        elif other.galstreams != entry.galstreams:
            shown = [e.given if e.galstreams is None else f"{GALSTREAMS_PREFIX}{e.galstreams}" for e in (other, entry)]
            fix = f"rename config/streams/{entry.name}.yaml" if None in (other.galstreams, entry.galstreams) else "list one"
            raise InputError(
                f"streams: '{shown[0]}' and '{shown[1]}' would both write results/{entry.name}/; run them apart or {fix}"
            )
    return list(unique.values())


def _closest(name: str, names: list[str], n: int = 5) -> list[str]:
    """The names closest to ``name`` (case and punctuation ignored)."""
    import difflib  # local import: only an unknown name needs it

    by_key = {stream_key(k): k for k in names}
    return [by_key[k] for k in difflib.get_close_matches(stream_key(name), list(by_key), n=n, cutoff=0.0)]


def galstreams_stream_file(entry: StreamEntry, settings: GalstreamsSettings) -> dict[str, Any]:
    """The stream file (:class:`streamcfg.StreamFile`) the pipeline writes for a galstreams stream.

    Arguments:
        entry: A galstreams entry of :func:`stream_entries`.
        settings: The pipeline's ``galstreams`` section.

    Example:
        >>> entry = StreamEntry("gd_1", "GD-1", "galstreams:GD-1")
        >>> stream = galstreams_stream_file(entry, GalstreamsSettings())
        >>> stream["config"], stream["data"]["sky_mock"]["n_background"], stream["compare"]
        ('gd_1_new.yaml', 20000, {'galstreams': {'name': 'GD-1'}})
    """
    if entry.galstreams is None:
        raise InputError(f"streams: {entry.given}: not a galstreams stream")
    data = {"sky_mock": settings.mock.model_dump()} if settings.data == "mock" else {"query": {}}
    return {
        "name": entry.name,
        "description": f"galstreams {entry.galstreams}: written by the pipeline (rule new_stream)",
        "data": data,
        "config": f"{entry.name}_new.yaml",
        "overrides": settings.overrides,
        "compare": {"galstreams": {"name": entry.galstreams}},
    }


def galstreams_spec(entry: StreamEntry, settings: GalstreamsSettings, results: str | Path = "results") -> StreamSpec:
    """The :class:`streamcfg.StreamSpec` of a galstreams stream, before its files are written
    (at ``<results>/<name>/<name>.yaml`` and ``<name>_new.yaml``, relative paths).

    Example:
        >>> spec = galstreams_spec(StreamEntry("pal5", "Pal5", "galstreams:Pal5"), GalstreamsSettings())
        >>> spec.path.as_posix(), spec.config.as_posix(), spec.is_mock, spec.galstreams["name"]
        ('results/pal5/pal5.yaml', 'results/pal5/pal5_new.yaml', True, 'Pal5')
    """
    path = Path(results) / entry.name / f"{entry.name}.yaml"
    return parse_stream(galstreams_stream_file(entry, settings), path, check_files=False)
