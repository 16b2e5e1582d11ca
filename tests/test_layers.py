"""The package's layers (``[tool.importlinter]`` in pyproject.toml), enforced in the test suite.

The import-linter contracts: the command line on top, then the applications,
then the model core, which never imports the command line, the pipeline, the
figures or the catalogs; no import cycles; zuko only through its public
modules. grimp reads every import statement, function-local ones included.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "streammix"


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter")
    lint_imports = Path(sys.executable).with_name("lint-imports")
    command = [str(lint_imports)] if lint_imports.is_file() else [sys.executable, "-m", "importlinter.cli"]
    result = subprocess.run(
        [*command, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_model_core_loads_without_the_application_layers():
    """A fresh ``import streammix.fit`` loads neither the command line nor the
    pipeline, the figures (nor matplotlib) or the catalogs."""
    code = (
        "import sys, streammix.fit\n"
        "bad = ('streammix.cli', 'streammix.catalogs_cli', 'streammix.pipeline', 'streammix.plot',\n"
        "       'streammix.catalogs', 'matplotlib')\n"
        "print(sorted(m for m in sys.modules if m in bad or m.startswith(tuple(b + '.' for b in bad))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


# Function-local imports in files that this test's authors may not edit, to be moved to the top.
KNOWN_UNEXPLAINED: set[tuple[str, str]] = set()


def _unexplained_local_imports(tree: ast.AST, lines: list[str]) -> list[tuple[int, str]]:
    """(line, text) of every import inside a function without a reason: a comment on its
    line or on the line above, or an import just before it in the same block that has one."""
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            for block in (getattr(node, name, None) for name in ("body", "orelse", "finalbody")):
                if not isinstance(block, list):
                    continue
                explained = False
                for statement in block:
                    if not isinstance(statement, ast.Import | ast.ImportFrom):
                        explained = False
                        continue
                    here, above = lines[statement.lineno - 1], lines[statement.lineno - 2].strip()
                    explained = explained or "#" in here or above.startswith("#") or above.startswith("try:  #")
                    if not explained:
                        found.append((statement.lineno, here.strip()))
    return found


def test_function_local_imports_give_their_reason():
    """An import inside a function is kept only where it saves start-up time
    (or the package is optional), and says why in a comment."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(ROOT).as_posix()
        for lineno, line in _unexplained_local_imports(ast.parse(text), text.splitlines()):
            if (name, line) not in KNOWN_UNEXPLAINED:
                missing.append(f"{name}:{lineno}: {line}")
    assert not missing, "function-local imports without a reason:\n" + "\n".join(missing)


def test_no_private_names_across_modules():
    """No module imports a private name (``_x``) of another top-level module of the package."""
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found += [
                    f"{path.name}:{node.lineno}: from .{node.module} import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert not found, "\n".join(found)
