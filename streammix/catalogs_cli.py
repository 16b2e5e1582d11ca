"""``streammix catalogs``: list, inspect, download, load and cross-match published catalogs.

Mounted by the main command line as ``streammix catalogs ...``; bad input is
raised as :class:`~streammix.errors.InputError` (one line, exit code 2 there).

Example:
    >>> from typer.testing import CliRunner
    >>> result = CliRunner().invoke(catalogs_app, ["info", "galstreams"])
    >>> "kind: tracks" in result.output
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import astropy.units as u
import typer

from .catalogs import crossmatch, crossmatch_figure, fetch, get_catalog, list_catalogs, load, parse_size
from .errors import InputError
from .output import check_writable, write_json, write_table

__all__ = ["catalogs_app"]

catalogs_app = typer.Typer(
    help="Published membership catalogs: list, info, fetch, load, crossmatch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CacheDir = Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache folder (default $STREAMMIX_CACHE or the OS cache).")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds without data before an attempt fails.")]
Retries = Annotated[int, typer.Option("--retries", help="Extra attempts after a transient failure.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
MaxSize = Annotated[str, typer.Option("--max-size", help="Largest download, per file and in all (e.g. 2GiB, 500MB).")]
Selection = Annotated[Optional[str], typer.Option("--selection", help="A named cut of the catalog instead of its default (see `info`).")]


def _fetch_options(timeout: float, retries: int, quiet: bool, max_size: str = "2GiB") -> dict:
    return {"timeout": timeout, "retries": retries, "progress": not quiet, "max_size": parse_size(max_size),
            "report": typer.echo}


@catalogs_app.command("list")
def list_command() -> None:
    """Every registered catalog: its record (Zenodo record or VizieR table), DOI (data, else paper;
    - where none is known), arXiv id, verification status and membership cut."""
    rows = [("NAME", "KIND", "SERVICE", "RECORD", "DOI", "ARXIV", "VERIFIED", "MEMBERSHIP")]
    for cat in list_catalogs():
        arxiv = str(cat.paper.get("arxiv") or "-")
        record = (cat.record or "-") + ("" if cat.record_verified else " (unverified)")
        cut = "none (tracks)" if cat.kind == "tracks" else cat.membership.describe()
        rows.append((cat.name, cat.kind, cat.service, record, cat.doi or "-", arxiv, cat.verified, cut))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[-1])


@catalogs_app.command("info")
def info_command(name: Annotated[str, typer.Argument(help="Catalog name (see `list`).")]) -> None:
    """Everything the registry knows about one catalog."""
    cat = get_catalog(name)
    lines = [
        ("name", cat.name), ("title", cat.title), ("stream", cat.stream), ("kind", cat.kind),
        ("paper", ", ".join(f"{k}: {v}" for k, v in cat.paper.items() if v is not None)),
        ("data DOI", cat.data_doi), ("service", cat.service),
        ("record", f"{cat.record}{'' if cat.record_verified else ' (unverified)'}" if cat.record else None),
        ("files", ", ".join(f"{f.key} ({f.checksum or 'checksum from the service'})" for f in cat.files) or "all of the record / service"),
        ("columns", ", ".join(f"{k} <- {'|'.join(v) or '-'}" for k, v in cat.columns.items())),
        ("membership", f"{cat.membership.kind}: {cat.membership.describe()}"),
        ("selections", ", ".join(f"{k}: {v}" for k, v in cat.membership.selections.items())),
        ("cut read in", cat.membership.source),
        ("licence", cat.licence), ("verified", cat.verified), ("notes", cat.notes), ("registry file", cat.path),
    ]
    for key, value in lines:
        typer.echo(f"{key}: {value if value not in (None, '') else '-'}")


@catalogs_app.command("fetch")
def fetch_command(
    name: Annotated[str, typer.Argument(help="Catalog name.")],
    cache_dir: CacheDir = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if cached.")] = False,
    timeout: Timeout = 30.0,
    retries: Retries = 3,
    quiet: Quiet = False,
    max_size: MaxSize = "2GiB",
) -> None:
    """Download a catalog into the cache, verifying every file's size and checksum."""
    paths = fetch(name, cache=cache_dir, force=force, **_fetch_options(timeout, retries, quiet, max_size))
    if not paths:
        typer.echo(f"{name}: installed as a package, nothing to download")
    for path in paths:
        typer.echo(str(path))


@catalogs_app.command("load")
def load_command(
    name: Annotated[str, typer.Argument(help="Catalog name.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the table here (.ecsv, .fits, .parquet...).")] = None,
    track: Annotated[Optional[str], typer.Option("--track", help="galstreams: the stream whose track to load.")] = None,
    cache_dir: CacheDir = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    timeout: Timeout = 30.0,
    retries: Retries = 3,
    quiet: Quiet = False,
    max_size: MaxSize = "2GiB",
    selection: Selection = None,
) -> None:
    """Load a catalog in streammix's common schema (fetching it if needed)."""
    table = load(name, cache=cache_dir, track=track, selection=selection, **_fetch_options(timeout, retries, quiet, max_size))
    n_members = int(table["member_flag"].sum())
    typer.echo(f"{name}: {len(table)} rows, {n_members} members by {table.meta.get('membership')}; "
               f"columns: {', '.join(table.colnames)}")
    for column, how in (table.meta.get("summarised") or {}).items():
        typer.echo(f"summarised '{column}': {how}")
    if out is not None:
        write_table(table, out, overwrite=overwrite)
        typer.echo(f"wrote {out}")


@catalogs_app.command("crossmatch")
def crossmatch_command(
    name: Annotated[str, typer.Argument(help="Catalog name.")],
    members_file: Annotated[Path, typer.Argument(help="A members table written by streammix (members.ecsv...).")],
    radius: Annotated[float, typer.Option("--radius", help="Positional match radius, arcsec.")] = 1.0,
    frame: Annotated[Optional[str], typer.Option("--frame", help="Stream frame of phi1/phi2 when the members have no ra/dec (e.g. GD-1).")] = None,
    probability: Annotated[Optional[str], typer.Option("--probability", help="Our probability column (default p_member or p_<first component>).")] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Our membership threshold (the catalog keeps its own cut).")] = 0.5,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the matched pairs here.")] = None,
    summary_json: Annotated[Optional[Path], typer.Option("--json", help="Write the summary as JSON here.")] = None,
    figure: Annotated[Optional[Path], typer.Option("--figure", help="Draw the agreement here (.png, .pdf).")] = None,
    selection: Selection = None,
    max_size: MaxSize = "2GiB",
    cache_dir: CacheDir = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    timeout: Timeout = 30.0,
    retries: Retries = 3,
    quiet: Quiet = False,
) -> None:
    """Cross-match a members table with a catalog (source_id, then sky position) and report agreement."""
    if not members_file.is_file():
        raise InputError(f"file '{members_file}': not found")
    for path in (out, summary_json, figure):
        if path is not None:
            check_writable(path, overwrite)
    table = load(name, cache=cache_dir, selection=selection, **_fetch_options(timeout, retries, quiet, max_size))
    matched, summary = crossmatch(table, members_file, radius=radius * u.arcsec, frame=frame,
                                  probability=probability, threshold=threshold)
    for key, value in summary.items():
        typer.echo(f"{key}: {round(value, 4) if isinstance(value, float) else value}")
    if figure is not None:
        crossmatch_figure(matched, summary, figure, overwrite=overwrite)
        typer.echo(f"wrote {figure}")
    if out is not None:
        write_table(matched, out, overwrite=overwrite)
        typer.echo(f"wrote {out}")
    if summary_json is not None:
        write_json(summary, summary_json, overwrite=overwrite)
        typer.echo(f"wrote {summary_json}")
