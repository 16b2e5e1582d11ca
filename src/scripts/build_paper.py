"""Build the article (rule ``paper``): ``src/tex/ms.tex`` with latexmk, in a build folder.

Copies ``ms.tex`` and ``bib.bib`` from the repository's ``src/tex`` and the
run's ``src/tex/output`` and ``src/tex/figures`` into ``--build``, runs
``latexmk -pdf`` there (non-interactive, stopping at the first error) and
copies ``ms.pdf`` to ``--out``. The LaTeX log stays in the build folder.

Usage: ``python src/scripts/build_paper.py --tex-src src/tex --output src/tex/output --figures src/tex/figures --build paper/build --out paper/ms.pdf``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tex-src", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--figures", required=True)
    parser.add_argument("--build", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    latexmk = shutil.which("latexmk")
    if latexmk is None:
        sys.exit("paper: latexmk not found; install latexmk and TeX Live (see paper/README.md)")
    build = Path(args.build)
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    src = Path(args.tex_src)
    for name in ("ms.tex", "bib.bib"):
        shutil.copy2(src / name, build / name)
    shutil.copytree(args.output, build / "output")
    shutil.copytree(args.figures, build / "figures")
    command = [latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", "ms.tex"]
    result = subprocess.run(command, cwd=build, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    if result.returncode != 0:
        sys.stdout.write(result.stdout[-4000:])
        sys.exit(f"paper: latexmk failed (exit {result.returncode}); see {build / 'ms.log'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(build / "ms.pdf", args.out)


if __name__ == "__main__":
    main()
