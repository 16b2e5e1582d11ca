r"""What the article needs to know about the run (rule ``paper_inputs``).

Writes ``streams.tex``: for each role (``validation``, ``gd1``, ``pal5``) the
stream that plays it in this run, as ``\newcommand{\<role>stream}{<name>}``
and a switch ``\have<role>true`` (the article leaves out the sections of roles
not run, e.g. with ``--config streams=[mock]``), plus ``\catalogs<role>true``
where a comparison with published catalogs ran; and ``streams_table.tex``: a
table with one row per stream whose cells read ``<stream>_<key>.txt``.

Usage: ``python src/scripts/paper_inputs.py STREAM_YAML... --compared NAME... --streams-tex S --table-tex T``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scriptrun import run_script
from streamcfg import PAPER_ROLES, read_stream

#: TeX macro names have no digits: role -> the name used in \<name>stream, \ifhave<name>.
MACRO_NAMES = {"validation": "validation", "gd1": "gdone", "pal5": "palfive"}
TABLE_KEYS = ("n_stars", "n_p50", "n_p80", "phi2_width_median_arcmin", "fit_minutes")
HEADERS = ("stream", "data", "stars", "$P>0.5$", "$P>0.8$", "width [arcmin]", "fit [min]")


def streams_tex(specs, compared: set[str]) -> str:
    r"""The role macros.

    Example:
        >>> from types import SimpleNamespace as S
        >>> print(streams_tex([S(name="tiny", paper="validation")], set()).splitlines()[1])
        \newcommand{\validationstream}{tiny}
    """
    lines = ["% written by src/scripts/paper_inputs.py: which stream plays which role in this run"]
    for role in PAPER_ROLES:
        chosen = next((s for s in specs if s.paper == role), None)
        macro = MACRO_NAMES[role]
        lines.append(rf"\newcommand{{\{macro}stream}}{{{chosen.name if chosen else 'none'}}}")
        lines.append(rf"\newif\ifhave{macro}" + (rf" \have{macro}true" if chosen else ""))
        lines.append(rf"\newif\ifcatalogs{macro}" + (rf" \catalogs{macro}true" if chosen and chosen.name in compared else ""))
    return "\n".join(lines) + "\n"


def table_tex(specs) -> str:
    """One row per stream; numbers are ``\\val`` macros reading the txt files."""
    lines = [r"\begin{tabular}{ll" + "r" * len(TABLE_KEYS) + "}", r"\toprule", " & ".join(HEADERS) + r" \\ \midrule"]
    for spec in specs:
        kind = {"mock": "mock", "file": "file", "gaia_query": "Gaia query"}[spec.data_kind]
        cells = [rf"\texttt{{{spec.name.replace('_', chr(92) + '_')}}}", kind]
        cells += [rf"\val{{{spec.name}}}{{{key}}}" for key in TABLE_KEYS]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", nargs="+")
    parser.add_argument("--compared", nargs="*", default=[])
    parser.add_argument("--streams-tex", required=True)
    parser.add_argument("--table-tex", required=True)
    args = parser.parse_args()
    specs = [read_stream(p) for p in args.streams]
    Path(args.streams_tex).write_text(streams_tex(specs, set(args.compared)))
    Path(args.table_tex).write_text(table_tex(specs))


if __name__ == "__main__":
    run_script(main)
