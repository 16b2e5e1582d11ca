"""The ``streammix`` command line.

Every command validates its inputs first; bad input ends with one line on
standard error naming the column, key or file, exit code 2 and no output
written (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from astropy.table import QTable
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

try:  # the click exception classes typer uses (vendored as ``typer._click`` in recent typer)
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - typer releases that depend on click
    from click import exceptions as click_exceptions

from .catalogs_cli import catalogs_app
from .compare import compare as compare_configs
from .config import Config
from .data import check_plausible, read_stars, read_table, without_errors
from .errors import InputError
from .fit import load, load_stars
from .inject import InjectionSpec, inject_stream
from .isochrone_fit import isochrone_fit_from_model
from .mock import generate_mock, write_mock
from .query import query_summary, run_query
from .new_stream import GC_AGE, GC_FEH, NewStreamOptions, list_streams, new_config
from .output import atomic_path, check_writable, table_format, write_json, write_table
from .pipeline import (
    fit_and_write,
    mock_config,
    output_folder,
    read_background,
    run_demo,
    write_background,
    write_residuals,
)

app = typer.Typer(
    help="Membership probabilities and smooth models of stellar streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


app.add_typer(catalogs_app, name="catalogs", help="Published membership catalogs: list, fetch, load, cross-match.")

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Sets = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Change a setting of the config (repeatable): KEY a dotted path, a list's entry by its name or "
        "index (model.components.spur.phi1_range), VALUE read as YAML, a relative path from the working "
        "directory; e.g. --set data.parallax_zero_point=-0.05. The output's config records the result.",
    ),
]


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    ctx.obj = {"debug": debug}


# --- mock and demo --------------------------------------------------------------


@app.command()
def mock(
    out: Annotated[Path, typer.Option("--out", help="Output star table (.fits, .ecsv, .parquet...).")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    n_stream: Annotated[Optional[int], typer.Option("--n-stream", help="Stream stars (default 2000).")] = None,
    n_background: Annotated[Optional[int], typer.Option("--n-background", help="Field stars (default 100000).")] = None,
    stream: Annotated[Optional[str], typer.Option("--stream", help="A galstreams stream: its track in a Galaxy-model background, on `streammix new STREAM`'s field.")] = None,
    track: Annotated[Optional[str], typer.Option("--track", help="With --stream: the galstreams track's reference.")] = None,
    background_scale: Annotated[float, typer.Option("--background-scale", help="With --stream and no --n-background: the fraction of the Galaxy model's field stars drawn.")] = 1.0,
    overwrite: Overwrite = False,
) -> None:
    """Generate the default mock field (GD-1-like stream in a structured background), or --stream NAME's."""
    check_writable(out, overwrite)
    if stream is not None:
        from .sky_mock import mock_for_stream  # local: only --stream needs it

        stars, tracks, _ = mock_for_stream(stream, reference=track, n_stream=n_stream, n_background=n_background,
                                           background_scale=background_scale, seed=seed)  # fmt: skip
    else:
        stars, tracks = generate_mock(mock_config(n_stream, n_background), seed=seed)
    write_mock(stars, tracks, out, overwrite=overwrite)
    n_members = int((stars["true_component"] == "stream").sum())
    console.print(f"wrote {len(stars)} stars ({n_members} in the stream) to {out}")


@app.command("new")
def new(
    name: Annotated[Optional[str], typer.Argument(help="The stream's galstreams name (see --list).")] = None,
    track: Annotated[Optional[str], typer.Option("--track", help="The galstreams track's reference (default: galstreams' own).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the config here (default: standard output).")] = None,
    age: Annotated[float, typer.Option(help="Isochrone age, Gyr (globular-cluster default).")] = GC_AGE,
    feh: Annotated[float, typer.Option(help="Isochrone [Fe/H] (globular-cluster default).")] = GC_FEH,
    data: Annotated[Optional[str], typer.Option("--data", help="The stars' file in the config (default <name>_gaia_dr3.fits).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the galstreams streams and their references.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """A complete, commented config for any galstreams stream (then `streammix query` it)."""
    if list_:
        for stream, reference, on in list_streams():
            typer.echo(f"{stream}  {reference}{'  (default)' if on else ''}")
        return
    if name is None:
        raise InputError("new: give a stream's name (see 'streammix new --list')")
    if out is not None:
        check_writable(out, overwrite)
    text = new_config(name, NewStreamOptions(reference=track, age=age, feh=feh, data_path=data))
    if out is None:
        typer.echo(text, nl=False)
        return
    with atomic_path(out, overwrite) as tmp:
        tmp.write_text(text)
    console.print(f"wrote {out}")


@app.command("query")
def query(
    config: Annotated[Path, typer.Argument(help="A config with data.query (e.g. from `streammix new`).")],
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Run the config's Gaia DR3 query (needs network) in resumable chunks; write data.path."""
    cfg = Config.from_yaml(config)
    path = run_query(cfg, progress=not quiet, overwrite=overwrite, report=None if quiet else console.print)
    console.print(f"wrote {query_summary(path)['stars']} stars to {path}")


@app.command()
def inject(
    catalog: Annotated[Path, typer.Argument(help="The real star table (any readable format).")],
    config: Annotated[Path, typer.Option("--config", help="The stream's YAML configuration (columns, field, frame).")],
    spec: Annotated[Path, typer.Option("--spec", help="YAML injection spec (see streammix.inject.InjectionSpec).")],
    out: Annotated[Path, typer.Option("--out", help="Output star table (.fits, .ecsv, .parquet...).")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Draw a synthetic stream into a real catalog; the truth is the column `injected`."""
    check_writable(out, overwrite)
    table_format(out)
    cfg = Config.from_yaml(config)
    injection = InjectionSpec.from_yaml(spec)
    result = inject_stream(read_table(catalog), injection, cfg, seed=seed)
    write_table(result, out, overwrite=overwrite)
    console.print(f"wrote {len(result)} stars ({injection.n_stars} injected) to {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo_output"),
    seed: Annotated[int, typer.Option(help="Random seed of the mock and the fit.")] = 0,
    n_stream: Annotated[Optional[int], typer.Option("--n-stream")] = None,
    n_background: Annotated[Optional[int], typer.Option("--n-background")] = None,
    ensemble: Annotated[Optional[int], typer.Option(help="Ensemble size (default from the demo config).")] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Generate the default mock, fit it and write members, tracks, figures and a summary."""
    summary = run_demo(
        out,
        seed=seed,
        n_stream=n_stream,
        n_background=n_background,
        ensemble=ensemble,
        overwrite=overwrite,
        progress=not quiet,
    )
    _print_summary(summary, out)


# --- fit, members, plot -----------------------------------------------------------


@app.command()
def fit(
    config: Annotated[Path, typer.Argument(help="The stream's YAML configuration.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    background: Annotated[
        Optional[Path],
        typer.Option(
            "--background",
            help="Use the background flows saved in this folder (by `streammix flows`, or a `streammix fit` output) "
            "instead of training them; they must match the config.",
        ),
    ] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    sets: Sets = None,
) -> None:
    """Fit a stream: writes the model, members.ecsv, tracks.ecsv, figures/ and summary.json."""
    cfg = Config.from_yaml(config, overrides=sets or ())
    flows = read_background(background, cfg) if background is not None else None
    summary = fit_and_write(cfg, out, background=flows, overwrite=overwrite, progress=not quiet)
    _print_summary(summary, out)


@app.command()
def flows(
    config: Annotated[Path, typer.Argument(help="The stream's YAML configuration.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (block<i>.pt and config.yaml).")],
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    sets: Sets = None,
) -> None:
    """Train a stream's background flows alone, for `streammix fit CONFIG --background OUT`."""
    cfg = Config.from_yaml(config, overrides=sets or ())
    trained = write_background(cfg, out, overwrite=overwrite, progress=not quiet)
    console.print(f"wrote {len(trained.blocks)} background flow blocks to {out}")


@app.command()
def members(
    model: Annotated[Path, typer.Argument(help="A folder written by `streammix fit` (or its model/ subfolder).")],
    data: Annotated[Path, typer.Option("--data", help="Stars to score (any readable table).")],
    out: Annotated[Path, typer.Option("--out", help="Output table (.ecsv, .fits, .parquet...).")],
    overwrite: Overwrite = False,
) -> None:
    """Score other stars with a fitted model."""
    check_writable(out, overwrite)
    table_format(out)
    if (model / "model" / "model.json").is_file():  # the folder `streammix fit` wrote
        model = model / "model"
    fitted = load(model)
    columns = fitted.config.data.column_map()
    stars = read_stars(data, columns, gaia_frame=fitted.config.data.gaia_frame, reflex_distance=fitted.config.data.reflex_distance,
                       optional_bands=fitted.config.model.bands)
    if stars.meta.get("unobserved_bands"):
        absent = ", ".join(stars.meta["unobserved_bands"])
        console.print(f"file '{data}' has no column for bands {absent}: unobserved, so its stars are scored without them", soft_wrap=True)
    used = [*fitted.config.model.coordinates, *fitted.config.model.bands]
    check_plausible(stars, used)
    table = fitted.membership(stars)
    write_table(table, out, overwrite=overwrite)
    _note_without_errors(without_errors(stars, used))  # after any error: bad input gets its one line alone
    console.print(f"scored {len(table)} stars -> {out}")


@app.command()
def plot(
    model: Annotated[Path, typer.Argument(help="A folder written by `streammix fit` or `streammix demo`.")],
    residuals: Annotated[
        bool, typer.Option("--residuals", help="Also the residuals of the data against the model in (phi1, phi2).")
    ] = False,
    data: Annotated[
        Optional[Path], typer.Option("--data", help="Stars for --residuals (default: the config's data.path).")
    ] = None,
) -> None:
    """Redraw the figures of a fitted model's folder (replacing those there)."""
    # local import: plot loads matplotlib (~0.7 s), which no other command needs
    from .plot import isochrone_curve, photometric_bands, save_figures

    members_path, tracks_path = model / "members.ecsv", model / "tracks.ecsv"
    for path in (members_path, tracks_path):
        if not path.is_file():
            raise InputError(f"file '{path}': not found (run `streammix fit` first)")
    truth_path = model / "stars_tracks.ecsv"
    truth = QTable.read(truth_path) if truth_path.is_file() else None
    members, isochrone = QTable.read(members_path), None
    if photometric_bands(members) and (model / "model" / "model.json").is_file():  # the CMD gets the isochrone
        isochrone = isochrone_curve(load(model / "model"), members=members)
    if residuals:  # everything read and checked before any figure is replaced
        if not (model / "model" / "model.json").is_file():
            raise InputError(f"folder '{model}': no fitted model in model/ (needed for --residuals)")
        fitted = load(model / "model")
        cfg = fitted.config
        if data is None and cfg.data.path is None:
            raise InputError(f"config of '{model}': data.path is not set; pass --data")
        path = data if data is not None else Path(cfg.data.path)
        stars = load_stars(cfg, read_stars(path, cfg.data.column_map(), gaia_frame=cfg.data.gaia_frame,
                                           reflex_distance=cfg.data.reflex_distance))  # fmt: skip
    others = [c for c in members.meta.get("components", [])[1:] if c != "background"]
    paths = save_figures(
        members, QTable.read(tracks_path), model / "figures", truth=truth, isochrone=isochrone, overwrite=True,
        other_components=others,
    )  # fmt: skip
    if residuals:
        summary = write_residuals(fitted, stars, model, overwrite=True)
        for kind, suffix in (("position", ""), ("cmd", "_cmd")):
            if kind in summary:
                paths += [model / "figures" / f"residuals{suffix}.png", model / f"residuals{suffix}.ecsv"]
                where = ", ".join(f"{k} {v:.2f}" for k, v in summary[kind]["max_at"].items())
                console.print(
                    f"{kind} residuals of {summary[kind]['n_selected']} stars: largest excess "
                    f"{summary[kind]['max_significance']:.1f} sigma at {where}"
                )
    for p in paths:
        console.print(f"wrote {p}")


@app.command()
def compare(
    configs: Annotated[list[Path], typer.Argument(help="Two or more YAML configurations of the same stars.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: comparison.ecsv, heldout.ecsv, summary.json.")],
    folds: Annotated[int, typer.Option("--folds", help="Folds K: each config is fitted K times on K-1 folds.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    ensemble: Annotated[int, typer.Option(help="Ensemble members per fit (1 is enough to rank models).")] = 1,
    repeats: Annotated[
        int,
        typer.Option(help="Fits of each config per fold with other seeds: their spread enters the differences' errors."),
    ] = 1,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Rank models by held-out log-likelihood: the same K folds for every config, paired differences."""
    if out.exists() and not overwrite:
        raise InputError(f"output '{out}' already exists; pass --overwrite to replace it")
    loaded = [Config.from_yaml(path) for path in configs]
    names = [c.name for c in loaded]
    if len(set(names)) != len(names):  # the same name in two files: tell them apart by file
        names = [path.stem for path in configs]
    result = compare_configs(
        loaded, folds=folds, seed=seed, ensemble=ensemble, repeats=repeats, names=names, progress=not quiet
    )
    table = result.summary()
    with output_folder(out, overwrite) as tmp:
        write_table(table, tmp / "comparison.ecsv")
        write_table(result.per_star(), tmp / "heldout.ecsv")
        rows = [dict(zip(table.colnames, row)) for row in table.iterrows()]
        totals = None if result.repeat_totals is None else dict(zip(result.names, result.repeat_totals.tolist()))
        write_json(
            {"folds": folds, "seed": seed, "ensemble": ensemble, "repeats": repeats, "repeat_totals": totals, "rows": rows},
            tmp / "summary.json",
        )
    _print_comparison(table)
    console.print(f"outputs in {out}/")


def _print_comparison(table) -> None:
    repeats = table.meta.get("repeats", 1)
    fits = f", {repeats} fits per fold (errors hold their spread)" if repeats > 1 else ""
    shown = RichTable(title=f"held-out log-likelihood, {table.meta['folds']} folds{fits} (nats)")
    for name in ("config", "per star", "total", f"vs {table.meta['baseline']}, total"):
        shown.add_column(name)
    for row in table:
        shown.add_row(
            str(row["config"]),
            f"{row['mean_loglike']:.4f} ± {row['mean_loglike_err']:.4f}",
            f"{row['total_loglike']:.1f}",
            f"{row['delta_total']:+.1f} ± {row['delta_total_err']:.1f}",
        )
    console.print(shown)


@app.command("isochrone-fit")
def isochrone_fit(
    model: Annotated[Path, typer.Argument(help="A folder written by `streammix fit`/`demo` (or its model/ subfolder).")],
    data: Annotated[Optional[Path], typer.Option("--data", help="Stars (default: data.path, else stars.fits there).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default MODEL/isochrone).")] = None,
    component: Annotated[str, typer.Option(help="Component whose membership weights the stars.")] = "stream",
    band: Annotated[Optional[list[str]], typer.Option("--band", help="A band to use (repeat; default: model.bands).")] = None,
    walkers: Annotated[int, typer.Option(help="emcee walkers.")] = 12,
    steps: Annotated[int, typer.Option(help="Steps kept after burn-in.")] = 100,
    burn: Annotated[int, typer.Option(help="Burn-in steps discarded.")] = 40,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    extinction: Annotated[bool, typer.Option("--extinction/--no-extinction", help="Also sample an E(B-V) offset.")] = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Sample age, [Fe/H] and a DM offset (emcee) from a fitted model's weighted stars."""
    out = model / "isochrone" if out is None else out
    if out.exists() and not overwrite:
        raise InputError(f"output '{out}' already exists; pass --overwrite to replace it")
    result = isochrone_fit_from_model(
        model, data, component=component, bands=band or None, fit_extinction=extinction, walkers=walkers, steps=steps, burn=burn,
        seed=seed, progress=not quiet,
    )  # fmt: skip
    with output_folder(out, overwrite) as tmp:
        result.write(tmp)
    for name, p in result.summary()["parameters"].items():
        console.print(f"{name}: {p['median']:.4g} -{p['minus']:.2g} +{p['plus']:.2g} {p['unit']}")
    console.print(f"outputs in {out}/")


def _note_without_errors(names) -> None:
    """A note naming the quantities a model uses that the data give without errors."""
    if names:
        console.print(
            f"note: the data give no errors for {', '.join(names)}: taken as exact (0), which makes the "
            "memberships over-confident; map their error columns in data.columns (parallax_err, "
            "pm_phi1_cosphi2_err, pm_phi2_err, band_errors) or model them (pm_err_per_parallax_err, from "
            "the parallax errors; band_error_model)", highlight=False, soft_wrap=True,
        )  # fmt: skip


def _print_summary(summary: dict, out: Path) -> None:
    counts = summary.get("members", {})
    line = ", ".join(f"{k}: {v}" for k, v in counts.items())
    console.print(f"[bold]{summary.get('name', 'fit')}[/]: {summary.get('n_stars')} stars; stream members {line}")
    if not summary.get("converged", True):
        console.print("[bold red]warning:[/] the fit did not converge; see summary.json")
    _note_without_errors(summary.get("without_errors", ()))
    parallaxes = summary.get("parallax_residuals", {})  # streammix.parallax_residuals
    for key, whose in (("own_distance", "its"), ("reference_distance", f"the {parallaxes.get('reference')}'s")):
        for name, residual in parallaxes.get(key, {}).items():
            if abs(residual["significance"]) > 3:  # NaN (no stars) is never noted
                console.print(
                    f"note: the {name}'s stars average a parallax of {residual['observed']:.3f} mas where {whose} "
                    f"distance predicts {residual['expected']:.3f} ({residual['significance']:+.1f} standard errors; "
                    "parallax_residuals in summary.json)", highlight=False, soft_wrap=True,
                )  # fmt: skip
    console.print(f"outputs in {out}/")


def main() -> None:
    """Entry point: run the app; bad input -> one line on stderr and exit code 2.

    Bad input is an :class:`~streammix.errors.InputError` or a command-line usage
    error (unknown command or option, a value of the wrong type); either prints
    one line naming the problem, without a traceback unless ``--debug``.
    """
    debug = "--debug" in sys.argv[1:]
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("default")
            # typer (0.29) turns Ctrl-C into an exit code of 130, which a non-standalone app returns
            code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if type(code) is int and code:  # no command returns a value: an exit code
            sys.exit(code)
    except InputError as error:
        if debug:
            raise
        console.print(f"[bold red]error:[/] {_escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted")
        sys.exit(130)
    except typer.Exit as error:
        sys.exit(error.exit_code)
    except click_exceptions.NoArgsIsHelpError as error:
        error.show()
        sys.exit(error.exit_code)
    except click_exceptions.UsageError as error:
        if debug:
            raise
        message = " ".join(error.format_message().split())
        command = error.ctx.command_path if error.ctx is not None else "streammix"
        console.print(
            f"[bold red]error:[/] {_escape(message)} (see '{_escape(command)} --help')",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(error.exit_code)
    except click_exceptions.ClickException as error:
        if debug:
            raise
        console.print(f"[bold red]error:[/] {_escape(' '.join(error.format_message().split()))}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)


def _escape(text: str) -> str:
    return escape(text)
