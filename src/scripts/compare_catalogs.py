"""Compare a fit with published catalogs already in the cache (rule ``compare_catalogs``).

For each catalog: :func:`streammix.catalogs.load` (from the cache; the rule is
planned only for catalogs whose cache folder exists, so it never downloads in
CI) and :func:`streammix.catalogs.crossmatch` against the members catalog.
Writes ``<outdir>/<stream>_<catalog>_<key>.txt`` for
:data:`streamcfg.CATALOG_KEYS`, ``--json`` (every summary), ``--table`` (a
LaTeX table whose cells read those files) and ``--figure`` (our probability
against the catalog's, or its membership flag, for the matched stars).

Usage: ``python src/scripts/compare_catalogs.py MEMBERS --stream NAME --catalogs A B --outdir D --json J --table T --figure F``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from astropy.table import QTable
from matplotlib.figure import Figure

from streammix.catalogs import crossmatch, load
from scriptrun import run_script
from streamcfg import CATALOG_KEYS, format_number

SUMMARY_KEYS = {
    "n_matched": "n_matched",
    "n_catalog_members": "n_catalog_members",
    "n_both_members": "n_both_members",
    "fraction_recovered": "fraction_catalog_recovered",
    "fraction_in_catalog": "fraction_ours_in_catalog",
}
HEADERS = ("catalog", "matched", "its members", "in both", "recovered", "ours in it")


def latex_table(stream: str, names: list[str]) -> str:
    r"""A tabular whose numbers are ``\val{<stream>}{<catalog>_<key>}`` (read from the txt files).

    Example:
        >>> print(latex_table("gd1", ["pw18"]).splitlines()[3])
        \texttt{pw18} & \val{gd1}{pw18_n_matched} & \val{gd1}{pw18_n_catalog_members} & \val{gd1}{pw18_n_both_members} & \val{gd1}{pw18_fraction_recovered} & \val{gd1}{pw18_fraction_in_catalog} \\
    """
    lines = [r"\begin{tabular}{l" + "r" * len(CATALOG_KEYS) + "}", r"\toprule", " & ".join(HEADERS) + r" \\ \midrule"]
    for name in names:
        cells = [rf"\texttt{{{name.replace('_', chr(92) + '_')}}}"]
        cells += [rf"\val{{{stream}}}{{{name}_{key}}}" for key in CATALOG_KEYS]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--catalogs", nargs="+", required=True)
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--figure", required=True)
    args = parser.parse_args()
    members = QTable.read(args.members)
    out = Path(args.outdir)
    numbers = {}  # written once every catalogue has been matched
    summaries = {}
    fig = Figure(figsize=(3.6 * len(args.catalogs), 3.2), layout="constrained")
    axes = fig.subplots(1, len(args.catalogs), squeeze=False)[0]
    for ax, name in zip(axes, args.catalogs):
        catalog = load(name, retries=0)
        matched, summary = crossmatch(catalog, members, frame=members.meta.get("frame") or None)
        summaries[name] = summary
        for key in CATALOG_KEYS:
            value = summary[SUMMARY_KEYS[key]]
            text = format_number(key, float("nan") if value is None else value)
            numbers[out / f"{args.stream}_{name}_{key}.txt"] = text + "\n"
        p_ours = np.asarray(matched["p_ours"], dtype=float)
        p_cat = np.asarray(matched["p_catalog"], dtype=float)
        if np.isfinite(p_cat).any():
            ax.scatter(p_cat, p_ours, s=3, alpha=0.5, rasterized=True)
            ax.set_xlabel(f"$P$ ({name})")
        else:
            flag = np.asarray(matched["catalog_member"], dtype=bool)
            ax.hist([p_ours[flag], p_ours[~flag]], bins=np.linspace(0, 1, 21), label=["its members", "others"], stacked=True)
            ax.set_xlabel("our $P$ of matched stars")
            ax.legend(fontsize="small")
        ax.set_ylabel("our $P$" if np.isfinite(p_cat).any() else "stars")
        ax.set_title(name, fontsize="small")
    out.mkdir(parents=True, exist_ok=True)
    for path, text in numbers.items():
        path.write_text(text)
    fig.savefig(args.figure)
    Path(args.table).write_text(latex_table(args.stream, args.catalogs))
    Path(args.json).write_text(json.dumps(summaries, indent=1))


if __name__ == "__main__":
    run_script(main)
