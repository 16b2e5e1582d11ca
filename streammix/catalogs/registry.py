"""The catalog registry: one YAML file per published catalog.

The files live in ``streammix/resources/catalogs/`` (or the folder named by
``STREAMMIX_CATALOGS``); ``catalogs/README.md`` describes their keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

__all__ = ["Catalog", "CatalogFile", "Membership", "check_file_name", "get_catalog", "list_catalogs", "REGISTRY_ENV"]

REGISTRY_ENV = "STREAMMIX_CATALOGS"
SERVICES = ("zenodo", "vizier", "url", "package")
MEMBERSHIP_KINDS = ("probability", "flag", "expression", "listed", "unknown")


@dataclass(frozen=True)
class CatalogFile:
    """One file of a catalog.

    Arguments:
        key: File name (the Zenodo file key; the cache file name).
        checksum: ``"md5:<hex>"`` or ``"sha256:<hex>"``, or None where unknown
            (a Zenodo record supplies it at fetch time).
        format: astropy ``Table.read`` format, or None to let astropy guess.
        url: Direct URL (service ``url`` only).
        size: Size in bytes where the registry knows it (None: from the service).

    Example:
        >>> CatalogFile("members.ecsv", "md5:0123", "ascii.ecsv").key
        'members.ecsv'
    """

    key: str
    checksum: str | None = None
    format: str | None = None
    url: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Membership:
    """How a catalog says which stars are members, and at what threshold.

    Arguments:
        kind: ``"probability"`` (a column of probabilities, a member at
            ``threshold``), ``"flag"`` (a boolean column), ``"expression"``
            (an expression over columns, e.g. boolean masks) or ``"listed"``
            (every row is a member).
        column: The probability or flag column (or candidate names).
        threshold: The paper's own threshold for ``probability``.
        strict: True where the paper's cut is ``p > threshold``, False for ``>=``.
        expression: For ``expression``: columns (names in backticks where they
            have spaces) joined by ``&``, ``|``, ``~``, comparisons and
            ``mean(column)`` of a 2-D column; see
            :func:`~streammix.catalogs.evaluate_expression`. ``"unknown"``: the
            table's membership column could not be verified; no star is flagged.
        selections: Other named cuts of the same catalog (name -> expression).
        source: Where the threshold or expression was read.

    Example:
        >>> m = Membership("probability", ("stream (50%)",), 0.8, strict=True)
        >>> m.describe()
        '`stream (50%)` > 0.8'
    """

    kind: str = "listed"
    column: tuple[str, ...] = ()
    threshold: float | None = None
    strict: bool = False
    expression: str | None = None
    selections: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    def describe(self, selection: str | None = None) -> str:
        """The cut in words (an expression), e.g. ``'`stream (50%)` > 0.8'``."""
        if selection is not None:
            return self.selections[selection]
        if self.kind == "probability":
            return f"`{self.column[0]}` {'>' if self.strict else '>='} {self.threshold:g}"
        if self.kind == "flag":
            return f"`{self.column[0]}`"
        if self.kind == "expression":
            return str(self.expression)
        if self.kind == "unknown":
            return "unknown (not verified)"
        return "every row"


@dataclass(frozen=True)
class Catalog:
    """A registry entry: where a published catalog lives and how to read it.

    Arguments:
        name: Registry name (the YAML file's stem).
        title: One-line description.
        stream: Stream(s) it covers.
        kind: ``"members"`` (stars), ``"velocities"`` (stars with spectra) or ``"tracks"``.
        service: ``"zenodo"``, ``"vizier"``, ``"url"`` or ``"package"``.
        record: Zenodo record id, VizieR table (or catalogue) id, or package name;
            None where it could not be verified.
        files: Files to fetch (empty: all files of a Zenodo record / the VizieR table).
        table: Which file holds the table (None: the first readable one).
        columns: streammix name -> catalog column name or candidate names.
        membership: How membership is given (probability, flag, expression) and the paper's threshold.
        paper: Authors, year, title, bibcode, arxiv, doi.
        data_doi: DOI of the data set, if any.
        licence: Licence, if known.
        verified: ``"true"``, ``"partial"`` or ``"false"``.
        notes: What was and was not verified, and where it was read.
        path: The YAML file.
        record_verified: False where the record id itself could not be verified
            (``source.record_verified: false``).

    Example:
        >>> cat = get_catalog("tavangar2025_gd1")
        >>> cat.service, cat.record, cat.paper["arxiv"]
        ('zenodo', '15428120', '2502.13236')
    """

    name: str
    title: str
    stream: str
    kind: str
    service: str
    record: str | None
    files: tuple[CatalogFile, ...]
    table: str | None
    columns: Mapping[str, tuple[str, ...]]
    membership: Membership = field(default_factory=Membership)
    paper: Mapping[str, Any] = field(default_factory=dict)
    data_doi: str | None = None
    licence: str | None = None
    verified: str = "false"
    notes: str = ""
    path: Path | None = None
    record_verified: bool = True

    @property
    def doi(self) -> str | None:
        """The data DOI, else the paper's DOI (None where neither is known)."""
        return self.data_doi or self.paper.get("doi")

    @property
    def member_threshold(self) -> float | None:
        """The paper's probability threshold (None unless membership is a probability)."""
        return self.membership.threshold


def _registry_dir(registry: str | os.PathLike | None) -> Path:
    if registry is not None:
        return Path(registry)
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env)
    return Path(str(resources.files("streammix") / "resources" / "catalogs"))


def _candidates(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InputError(f"{where}: expected a column name or a list of names, got {value!r}")


def _membership(raw: dict, columns: dict[str, tuple[str, ...]], where: str) -> Membership:
    spec = raw.get("membership")
    if spec is None:  # older entries: columns.p_member / columns.member_flag
        if columns.get("p_member"):
            return Membership("probability", columns["p_member"], float(raw.get("member_threshold", 0.5)))
        if columns.get("member_flag"):
            return Membership("flag", columns["member_flag"])
        return Membership("listed")
    if not isinstance(spec, dict):
        raise InputError(f"{where}: membership must be a mapping")
    kind = spec.get("kind")
    if kind not in MEMBERSHIP_KINDS:
        raise InputError(f"{where}: membership.kind is {kind!r}; expected one of {', '.join(MEMBERSHIP_KINDS)}")
    column = _candidates(spec.get("column"), f"{where}: membership.column")
    threshold = spec.get("threshold")
    if kind in ("probability", "flag") and not column:
        raise InputError(f"{where}: membership.kind {kind} needs membership.column")
    if kind == "probability":
        if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
            raise InputError(f"{where}: membership.threshold must be a number in [0, 1], got {threshold!r}")
    if kind == "expression" and not isinstance(spec.get("expression"), str):
        raise InputError(f"{where}: membership.kind expression needs membership.expression")
    selections = spec.get("selections") or {}
    if not isinstance(selections, dict) or not all(isinstance(v, str) for v in selections.values()):
        raise InputError(f"{where}: membership.selections must map names to expressions")
    comparison = spec.get("comparison", ">=")
    if comparison not in (">", ">="):
        raise InputError(f"{where}: membership.comparison must be '>' or '>='")
    return Membership(
        kind=kind,
        column=column,
        threshold=None if threshold is None else float(threshold),
        strict=comparison == ">",
        expression=spec.get("expression"),
        selections={str(k): v for k, v in selections.items()},
        source=" ".join(str(spec.get("source", "")).split()),
    )


def check_file_name(name: Any, where: str) -> str:
    """``name`` if it is a plain file name, else :class:`~streammix.errors.InputError`.

    Refused: anything but a non-empty string; a path separator (``/`` or
    ``\\``), hence any absolute path or ``..`` component; a leading dot
    (``.``, ``..``, hidden files, our temporary files); control characters;
    more than 255 characters.

    Arguments:
        name: The name a registry or a server gave.
        where: What gave it (for the message), e.g. ``"Zenodo record 123"``.

    Example:
        >>> check_file_name("members.ecsv", "record 1")
        'members.ecsv'
        >>> try:
        ...     check_file_name("../../x", "Zenodo record 1")
        ... except InputError as error:
        ...     print(error)
        Zenodo record 1: file name '../../x' refused (a path separator); a file must land inside the catalog's cache folder
    """
    if not isinstance(name, str) or not name:
        why = "empty or not text"
    elif "/" in name or "\\" in name or os.path.isabs(name):
        why = "a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        why = "control characters"
    elif name.startswith("."):
        why = "a leading dot"
    elif len(name) > 255:
        why = "longer than 255 characters"
    else:
        return name
    shown = repr(name if not isinstance(name, str) else name[:80])
    raise InputError(f"{where}: file name {shown} refused ({why}); a file must land inside the catalog's cache folder")


def _parse_catalog(path: Path) -> Catalog:
    where = f"catalog file '{path}'"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"{where}: cannot read ({' '.join(str(error).split())})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{where}: not a YAML mapping")
    for key in ("name", "kind", "source"):
        if key not in raw:
            raise InputError(f"{where}: key '{key}' missing")
    source = raw["source"] or {}
    service = source.get("service")
    if service not in SERVICES:
        raise InputError(f"{where}: source.service is {service!r}; expected one of {', '.join(SERVICES)}")
    record = {
        "zenodo": source.get("record"),
        "vizier": source.get("table") or source.get("catalogue"),
        "package": source.get("package"),
        "url": None,
    }[service]
    files = []
    for i, entry in enumerate(raw.get("files") or []):
        if not isinstance(entry, dict) or "key" not in entry:
            raise InputError(f"{where}: files[{i}] needs a 'key'")
        checksum = entry.get("checksum")
        if checksum is not None and str(checksum).split(":", 1)[0] not in ("md5", "sha256"):
            raise InputError(f"{where}: files[{i}].checksum must start with md5: or sha256:")
        size = entry.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise InputError(f"{where}: files[{i}].size must be a whole number of bytes")
        key = check_file_name(str(entry["key"]), where)
        files.append(CatalogFile(key, checksum, entry.get("format"), entry.get("url"), size))
    columns = {str(k): _candidates(v, f"{where}: columns.{k}") for k, v in (raw.get("columns") or {}).items()}
    verified = raw.get("verified", False)
    verified = {True: "true", False: "false"}.get(verified, str(verified))
    return Catalog(
        name=str(raw["name"]),
        title=str(raw.get("title", "")),
        stream=str(raw.get("stream", "")),
        kind=str(raw["kind"]),
        service=service,
        record=None if record is None else str(record),
        files=tuple(files),
        table=raw.get("table"),
        columns=columns,
        membership=_membership(raw, columns, where),
        paper=dict(raw.get("paper") or {}),
        data_doi=raw.get("data_doi"),
        licence=raw.get("licence"),
        verified=verified,
        notes=" ".join(str(raw.get("notes", "")).split()),
        path=path,
        record_verified=bool(source.get("record_verified", True)),
    )


def list_catalogs(registry: str | os.PathLike | None = None) -> list[Catalog]:
    """Every catalog of the registry, sorted by name.

    Arguments:
        registry: Folder of YAML files (default: ``STREAMMIX_CATALOGS`` or the
            packaged registry).

    Example:
        >>> names = [c.name for c in list_catalogs()]
        >>> "ibata2021_streamfinder" in names and "galstreams" in names
        True
    """
    folder = _registry_dir(registry)
    if not folder.is_dir():
        raise InputError(f"catalog registry '{folder}': not a folder")
    return sorted((_parse_catalog(p) for p in sorted(folder.glob("*.yaml"))), key=lambda c: c.name)


def get_catalog(name: str, registry: str | os.PathLike | None = None) -> Catalog:
    """The registry entry called ``name``.

    Arguments:
        name: Catalog name, e.g. ``"tavangar2025_gd1"``.
        registry: Folder of YAML files (see :func:`list_catalogs`).

    Example:
        >>> get_catalog("galstreams").kind
        'tracks'
    """
    catalogs = list_catalogs(registry)
    for cat in catalogs:
        if cat.name == name:
            return cat
    known = ", ".join(c.name for c in catalogs)
    raise InputError(f"catalog '{name}': unknown; known catalogs: {known}")
