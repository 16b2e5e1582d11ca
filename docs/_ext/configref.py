"""``.. config-reference::``: the YAML configuration's keys, read off the pydantic models.

Every section of :class:`streammix.config.Config` (and every model nested in it,
including ``data.columns``, validated by :class:`streammix.data.ColumnMap`) becomes a
section of the page with a table of its keys: type, default, constraints and
description. The description is the field's ``Field(description=...)``, else its
entry in the class docstring's ``Arguments:`` section, else empty. Nothing is
written by hand, so the page cannot drift from the code.

Options:
    ``:root:`` the dotted path of the top model (default ``streammix.config.Config``);
    ``:prefix:`` of the sections' labels (default ``config``); ``:depth:`` how many
    levels of nested models get a section (default all; 1: the root's table alone,
    without a heading); ``:title:`` of the root's section (default "Top level").
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import re
import types
import typing
from typing import Any

from docutils.parsers.rst import directives
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from sphinx.util.docutils import SphinxDirective

# keys whose value the parent model validates with another model (dict[str, Any] in the schema)
EXTRA_SECTIONS = {("streammix.config.DataConfig", "columns"): "streammix.data.ColumnMap"}
MISSING: list[str] = []  # keys without a description, collected for the build's log


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def escape(text: str) -> str:
    """Plain text as reStructuredText; ```x``` becomes a literal."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 2:
            out.append(f"``{part.strip('`')}``")
        else:
            out.append(re.sub(r"([\\*|_`])", r"\\\1", part))
    return "".join(out)


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (through unions, lists, dicts)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        for model in models_in(arg):
            if model not in found:
                found.append(model)
    return found


def type_text(annotation: Any, anchors: dict[type, str]) -> str:
    """A reader's description of a type: ``int or null``, ``list of str``, a link to a section."""
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0], anchors)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a, anchors) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"``{json.dumps(a)}``" for a in args)
    if origin in (list, typing.List):  # noqa: UP006
        return f"list of {type_text(args[0], anchors)}" if args else "list"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_text(args[0], anchors)}"
        return "[" + ", ".join(type_text(a, anchors) for a in args) + "]"
    if origin is dict:
        return f"mapping of {type_text(args[0], anchors)} to {type_text(args[1], anchors)}" if args else "mapping"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f":ref:`{annotation.__name__} <{anchors[annotation]}>`" if annotation in anchors else annotation.__name__
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"``{m.value}``" for m in annotation)
    if inspect.isclass(annotation):
        return {"str": "string", "bool": "true/false"}.get(annotation.__name__, annotation.__name__)
    return escape(str(annotation).replace("typing.", ""))


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "*required*"
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if isinstance(value, BaseModel):
        return "(its defaults)"
    if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
        return "``" + json.dumps([v.model_dump(mode="json", exclude_defaults=True) for v in value]) + "``"
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        return "``" + json.dumps(value) + "``"
    except TypeError:
        return "``" + escape(repr(value)) + "``"


CONSTRAINTS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "min_length": "length ≥", "max_length": "length ≤"}


def constraint_text(field: FieldInfo) -> str:
    out = []
    for item in field.metadata:
        for name, symbol in CONSTRAINTS.items():
            value = getattr(item, name, None)
            if value is not None:
                out.append(f"{symbol} {value}")
    return ", ".join(out)


def docstring_arguments(cls: type) -> dict[str, str]:
    """``name: text`` entries of a Google-style ``Arguments:``/``Args:`` section."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    match = re.search(r"^(?:Arguments|Args|Attributes):\s*\n((?:[ \t]+.*\n?|\s*\n)+)", doc, re.MULTILINE)
    if not match:
        return {}
    entries: dict[str, str] = {}
    current = None
    for line in match.group(1).splitlines():
        head = re.match(r"^ {4}(\w+)(?: \(.*?\))?:\s*(.*)$", line)
        if head:
            current = head.group(1)
            entries[current] = head.group(2)
        elif current and line.strip():
            entries[current] += " " + line.strip()
    return entries


def class_summary(cls: type) -> str:
    """A class docstring up to its first Google-style section."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    doc = re.split(r"^(?:Arguments|Args|Attributes|Example|Examples|Returns|Raises):\s*$", doc, flags=re.MULTILINE)[0]
    return doc.strip()


def sections(root: type[BaseModel], depth: int | None = None) -> list[tuple[str, type[BaseModel]]]:
    """Every model reachable from ``root``, depth first, with the key path it first appears under."""
    found: list[tuple[str, type[BaseModel]]] = []
    seen: set[type] = set()

    def visit(path: str, model: type[BaseModel], level: int) -> None:
        seen.add(model)
        found.append((path, model))
        if depth is not None and level >= depth:
            return
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            nested = list(models_in(field.annotation))
            extra = EXTRA_SECTIONS.get((_qualname(model), name))
            if extra:
                nested.append(_import(extra))
            suffix = "[]" if typing.get_origin(field.annotation) is list else ""
            for sub in nested:
                if sub not in seen:
                    visit(f"{path}.{name}{suffix}".lstrip("."), sub, level + 1)

    visit("", root, 1)
    return found


def reference_rst(root: type[BaseModel], prefix: str = "config", depth: int | None = None, title: str = "Top level") -> str:
    found = sections(root, depth)
    anchors = {model: f"{prefix}-{model.__name__.lower()}" for _, model in found}
    lines: list[str] = []
    for path, model in found:
        title = f"``{path}``" if path else title
        lines += [f".. _{anchors[model]}:", "", title, "-" * max(len(title), 4), ""]
        summary = class_summary(model)
        if summary:
            lines += [summary, ""]
        lines += [f"Validated by :class:`{_qualname(model)}`.", ""]
        from_doc = docstring_arguments(model)
        lines += [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 18 22 14 46",
            "   :class: config-reference",
            "",
            "   * - key",
            "     - type",
            "     - default",
            "     - description",
        ]
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            description = field.description or from_doc.get(name, "")
            nested = models_in(field.annotation)
            if not description and len(nested) == 1:
                # a section: its own docstring's first line, and its keys in their own table
                description = class_summary(nested[0]).split("\n\n")[0]
            if not description:
                MISSING.append(f"{path + '.' if path else ''}{name} ({_qualname(model)})")
            text = escape(description) if field.description else " ".join(description.split())
            constraint = constraint_text(field)
            if constraint:
                text = f"({constraint}) {text}".strip()
            extra = EXTRA_SECTIONS.get((_qualname(model), name))
            kind = type_text(field.annotation, anchors)
            if extra:
                kind += f"; keys in :ref:`{extra.rpartition('.')[2]} <{anchors[_import(extra)]}>`"
            lines += [
                f"   * - ``{name}``",
                f"     - {kind}",
                f"     - {default_text(field)}",
                f"     - {text or '–'}",
            ]
        lines.append("")
    return "\n".join(lines)


class ConfigReference(SphinxDirective):
    has_content = False
    option_spec = {
        "root": directives.unchanged,
        "prefix": directives.unchanged,
        "depth": directives.positive_int,
        "title": directives.unchanged,
    }

    def run(self):
        root = _import(self.options.get("root", "streammix.config.Config"))
        self.env.note_dependency(inspect.getsourcefile(root))
        depth = self.options.get("depth")
        text = reference_rst(root, self.options.get("prefix", "config"), depth, self.options.get("title", "Top level"))
        if depth == 1:  # one table: no section heading
            text = ".. list-table::" + text.split(".. list-table::", 1)[1]
        return self.parse_text_to_nodes(text, allow_section_headings=True)


def _report(app, exception):
    if exception is None and MISSING:
        from sphinx.util import logging

        logging.getLogger(__name__).info(
            "config-reference: %d keys have no description: %s", len(MISSING), ", ".join(sorted(set(MISSING)))
        )


def setup(app):
    app.add_directive("config-reference", ConfigReference)
    app.connect("build-finished", _report)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
