"""Settings of a configuration changed from the command line: ``--set KEY=VALUE``.

``KEY`` is a dotted path into the configuration's mapping (``fit.ensemble``,
``data.parallax_zero_point``); in a list a key is an entry's name
(``model.components.spur.phi1_range``) or its index (``model.background.blocks.0.kind``).
``VALUE`` is read as YAML (``2``, ``-0.05``, ``[-36, -24]``, ``null``; YAML 1.1, so
``yes`` is true). A relative path given this way is the caller's to resolve:
:meth:`streammix.config.Config.from_yaml` takes it from the working directory. The changed mapping
is validated as a whole afterwards (:meth:`streammix.config.Config.from_dict`),
so a misspelt key or a bad value is reported there, by its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from .errors import InputError

__all__ = ["Override", "apply_overrides", "parse_overrides"]

Override = tuple[list[str], Any]


def parse_overrides(items: Sequence[str]) -> list[Override]:
    """``KEY=VALUE`` strings as ``(keys, value)`` pairs, the value read as YAML.

    Example:
        >>> parse_overrides(["fit.ensemble=2", "model.components.spur.phi1_range=[-36, -24]"])
        [(['fit', 'ensemble'], 2), (['model', 'components', 'spur', 'phi1_range'], [-36, -24])]
        >>> parse_overrides(["fit.ensemble"])
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: --set 'fit.ensemble': expected KEY=VALUE
    """
    out = []
    for item in items:
        key, equals, value = item.partition("=")
        keys = key.strip().split(".")
        if not equals or not all(keys):
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out.append((keys, yaml.safe_load(value)))
        except yaml.YAMLError:
            raise InputError(f"--set {item!r}: the value is not valid YAML") from None
    return out


def apply_overrides(data: dict, overrides: Sequence[Override]) -> dict:
    """``data`` (a configuration as a mapping) with the overrides written in, in place:
    missing mappings on the way are created; a list is entered by an entry's ``name`` or
    its index.

    Example:
        >>> data = {"fit": {"seed": 0}, "model": {"components": [{"name": "stream"}]}}
        >>> apply_overrides(data, parse_overrides(["fit.seed=3", "model.components.stream.bounds.distmod=[13, 16]"]))
        {'fit': {'seed': 3}, 'model': {'components': [{'name': 'stream', 'bounds': {'distmod': [13, 16]}}]}}
        >>> apply_overrides(data, parse_overrides(["model.components.0.name=gd1"]))["model"]["components"][0]["name"]
        'gd1'
    """
    for keys, value in overrides:
        node = data
        for depth in range(len(keys) - 1):
            node = _child(node, keys, depth)
        if isinstance(node, list):
            node[_index(node, keys, len(keys) - 1)] = value
            continue
        if not isinstance(node, dict):
            raise InputError(f"--set {'.'.join(keys)}: {'.'.join(keys[:-1])} is a value, not a mapping")
        node[keys[-1]] = value
    return data


def _child(node: Any, keys: list[str], depth: int) -> Any:
    """The entry ``keys[depth]`` of ``node``: a mapping's (created if missing or null), or a
    list's entry of that name."""
    key = keys[depth]
    if isinstance(node, list):
        return node[_index(node, keys, depth)]
    if not isinstance(node, dict):
        raise InputError(f"--set {'.'.join(keys)}: {'.'.join(keys[:depth])} is a value, not a mapping")
    if node.get(key) is None:  # missing, or null in the config (data.selection: null)
        node[key] = {}
    return node[key]


def _index(entries: list, keys: list[str], depth: int) -> int:
    """The position in ``entries`` that ``keys[depth]`` names: an index, or an entry's ``name``."""
    key, where = keys[depth], ".".join(keys[:depth])
    if key.isdigit():
        if int(key) >= len(entries):
            raise InputError(f"--set {'.'.join(keys)}: {where} has {len(entries)} entries, no index {key}")
        return int(key)
    named = [i for i, entry in enumerate(entries) if isinstance(entry, dict) and entry.get("name") == key]
    if not named:
        names = [entry.get("name") for entry in entries if isinstance(entry, dict)]
        raise InputError(f"--set {'.'.join(keys)}: {where} has no entry named {key!r} (only {names})")
    return named[0]
