"""The documentation (docs/, ``make docs``) builds with warnings as errors, its examples
run, and every command line it shows exists.

The build runs on a copy of docs/ in a temporary folder, so that the API pages
autosummary generates are not written into the working tree. Skipped only where
Sphinx is not installed (the ``docs`` extra, which the ``test`` extra includes).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _sphinx(builder: str, source: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder,
               "-d", str(out / "doctrees"), str(source), str(out / builder)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_docs_build_and_examples_run(tmp_path):
    """One test, so that pytest-xdist does not build the site twice (~20 s each)."""
    pytest.importorskip("sphinx", reason="Sphinx is not installed (pip install -e '.[docs]')")
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("_build", "generated"))
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the pages include ../configs/*.yaml
    (tmp_path / "streammix").symlink_to(ROOT / "streammix")  # and ../streammix/profiles/*.py
    out = tmp_path / "out"
    result = _sphinx("html", tmp_path / "docs", out)
    assert result.returncode == 0, f"sphinx-build -W -b html failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    html = out / "html"
    for page in ("index", "installation", "tutorial", "model", "extending", "catalogs", "pipeline", "configuration",
                 "cli", "api"):
        assert (html / f"{page}.html").is_file(), page
    # the API reference has a page per module, streammix.fit included (the package's
    # fit() function shadows the module's name)
    assert (html / "generated" / "streammix.fit.html").is_file()
    assert (html / "generated" / "streammix.catalogs.download.html").is_file()
    config = (html / "configuration.html").read_text()
    assert "model.components[].control_points[]" in config and "ColumnMap" in config

    # the pages' examples (.. doctest::), on the environment the html build pickled
    result = _sphinx("doctest", tmp_path / "docs", out)
    assert result.returncode == 0, f"sphinx-build -b doctest failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert "0 failures in tests" in (out / "doctest" / "output.txt").read_text()


def _shown_commands() -> list[tuple[str, list[str]]]:
    """Every ``streammix ...`` command line the pages show: in a code block (an indented
    line that starts with it) or an inline literal, in the .rst pages and the examples."""
    found = []
    for page in sorted(DOCS.glob("*.rst")) + sorted((DOCS / "examples").glob("*.yaml")):
        lines = page.read_text().replace("\\\n", " ").splitlines()
        for line in lines:
            shown = re.findall(r"`+(streammix [^`]+)`+", line)
            stripped = line.strip()
            if line.startswith("   ") and stripped.startswith("streammix "):
                shown.append(stripped)
            for text in shown:
                words = shlex.split(text.split("#")[0])[1:]
                found.append((f"{page.name}: {stripped}", words))
    return found


def test_documented_commands_exist():
    """Each command, subcommand and option the pages show is one the command line has."""
    import typer.main

    from streammix.cli import app

    root = typer.main.get_command(app)
    shown = _shown_commands()
    assert len(shown) >= 15, shown
    for where, words in shown:
        command = root
        options = {opt for p in root.params for opt in (*p.opts, *p.secondary_opts)}
        for word in words:
            subcommands = getattr(command, "commands", None)
            if word.startswith("-"):
                assert word.split("=")[0] in options | {"--help"}, f"{where}: {word} is no option of {command.name}"
            elif subcommands and word != "...":
                assert word in subcommands, f"{where}: {word!r} is no command of {command.name}"
                command = subcommands[word]
                options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
