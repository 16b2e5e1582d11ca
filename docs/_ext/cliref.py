"""``.. cli-reference::``: every ``streammix`` command, argument and option, read off the app.

The same help texts ``streammix COMMAND --help`` prints (typer's command objects),
so the page cannot drift from the command line.

Options:
    ``:app:`` the dotted path of the typer app (default ``streammix.cli.app``).
    ``:prog:`` the program name (default ``streammix``).
"""

from __future__ import annotations

import importlib
import inspect

import typer.main
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

from configref import escape


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _context(command, name, parent=None):
    # typer vendors click; its Context is the one the command's class expects
    context_class = getattr(command, "context_class", None)
    if context_class is None:  # pragma: no cover
        from click import Context as context_class
    return context_class(command, info_name=name, parent=parent)


def command_rst(command, name: str, parent=None, level: int = 0) -> list[str]:
    ctx = _context(command, name, parent)
    path = ctx.command_path
    underline = "-~^"[min(level, 2)]
    anchor = "cli-" + path.replace(" ", "-")
    lines = [f".. _{anchor}:", "", f"``{path}``", underline * (len(path) + 4), ""]
    if command.help:
        lines += [escape(inspect.cleandoc(command.help)), ""]
    usage = command.get_usage(ctx).strip()
    lines += ["::", "", "   " + usage.removeprefix("Usage: "), ""]
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    records = [(p, p.get_help_record(ctx)) for p in params]
    records = [(p, r) for p, r in records if r is not None]
    if records:
        for kind, title in (("argument", "Arguments"), ("option", "Options")):
            chosen = [(p, r) for p, r in records if p.param_type_name == kind]
            if not chosen:
                continue
            lines += [f".. rubric:: {title}", ""]
            for _, (opts, help_text) in chosen:
                lines += [f"``{opts}``", f"   {escape(' '.join(help_text.split())) or '–'}", ""]
    subcommands = getattr(command, "commands", None)
    if subcommands:
        lines += [".. rubric:: Commands", ""]
        for sub_name, sub in subcommands.items():
            if getattr(sub, "hidden", False):
                continue
            summary = (sub.short_help or (sub.help or "").strip().split("\n")[0]).strip()
            lines += [f"* :ref:`{path} {sub_name} <{anchor}-{sub_name}>`: {escape(summary)}"]
        lines.append("")
        for sub_name, sub in subcommands.items():
            if not getattr(sub, "hidden", False):
                lines += command_rst(sub, sub_name, ctx, level + 1)
    return lines


class CliReference(SphinxDirective):
    has_content = False
    option_spec = {"app": directives.unchanged, "prog": directives.unchanged}

    def run(self):
        path = self.options.get("app", "streammix.cli.app")
        command = typer.main.get_command(_import(path))
        self.env.note_dependency(inspect.getsourcefile(importlib.import_module(path.rpartition(".")[0])))
        text = "\n".join(command_rst(command, self.options.get("prog", "streammix")))
        return self.parse_text_to_nodes(text, allow_section_headings=True)


def setup(app):
    app.add_directive("cli-reference", CliReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
