"""Sphinx configuration of the streammix documentation (``make docs``)."""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))  # configref, cliref: pages generated from the code
# the package itself is installed (editable) in the environment that builds the docs
import streammix  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")

project = "streammix"
author = "streammix developers"
copyright = "streammix developers"  # noqa: A001
release = streammix.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "configref",
    "cliref",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
language = "en"

# -- API reference ---------------------------------------------------------
# One page per module, generated at build time into api/generated/ (not tracked),
# so a new module appears in the reference without editing the docs.
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's __all__ is its public API


def _submodules() -> dict[str, list[str]]:
    """Each package's public modules, for the template (autosummary's own list leaves
    out ``streammix.fit``, whose name the package's ``fit`` function shadows)."""
    import pkgutil

    found: dict[str, list[str]] = {}
    todo = [streammix]
    while todo:
        package = todo.pop()
        names = []
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):
                continue
            names.append(f"{package.__name__}.{info.name}")
            if info.ispkg:
                todo.append(importlib.import_module(names[-1]))
        found[package.__name__] = sorted(names)
    return found


autosummary_context = {"submodules": _submodules()}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
autodoc_default_options = {"exclude-members": "model_config, model_fields, model_computed_fields"}
# the docstrings are Google style with "Arguments:", "Returns:", "Example:" sections
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# -- examples in the pages (``make docs`` runs them with ``sphinx-build -b doctest``)
# only the pages' ``.. doctest::`` blocks: the docstrings' examples already run in
# ``make test`` (pytest --doctest-modules), in their modules' namespaces
doctest_test_doctest_blocks = ""
doctest_global_setup = f"""
import os
from pathlib import Path
os.environ.setdefault("OMP_NUM_THREADS", "1")
DOCS = Path({str(HERE)!r})  # the docs folder, for the pages' example files
"""

# -- HTML ------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"streammix {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Which stars belong to a stellar stream?",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}


# -- docstrings --------------------------------------------------------------
# Some docstrings write an absolute value as |x| (components.BackgroundComponent:
# "|slope|", pipeline.truth_metrics: "|z|"), which reStructuredText reads as an
# undefined substitution. streammix defines no substitutions, so a |word| in a
# docstring is always meant literally: escape it rather than fail the build.
_ABS = re.compile(r"(?<![\\|])\|(\w+)\|(?!\w)")


def _escape_absolute_values(app, what, name, obj, options, lines):
    lines[:] = [_ABS.sub(r"\\|\1\\|", line) for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _escape_absolute_values)
