"""End-to-end jobs: fit a config and write every output; the demo on the mock.

Outputs are built in a temporary sibling folder and moved into place only when
complete, so a crash never leaves a half-written result; an existing output
folder is replaced only with ``overwrite=True``. Checkpoints live in a hidden
sibling folder (``.<out>.checkpoints``) so that a killed run resumes, and are
removed after success.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np

from .background import BackgroundFlows, background_view, check_background
from .config import Config
from .data import ColumnMap, StarTable, without_errors
from .errors import InputError
from .fit import fit, fit_background, load_stars
from .membership import summarise_members
from .mock import MockConfig, generate_mock
from .output import atomic_path, partial_folder, write_json, write_table
from .parallel import worker_pool
from .parallax_residuals import component_parallax_residuals
from .provenance import versions
from .residuals import cmd_residuals, position_residuals

__all__ = [
    "demo_config",
    "fit_and_write",
    "output_folder",
    "read_background",
    "run_demo",
    "truth_metrics",
    "write_background",
]


@contextlib.contextmanager
def output_folder(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``out`` when the block succeeds.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
        >>> with output_folder(out) as tmp:
        ...     _ = (tmp / "a.txt").write_text("x")
        >>> sorted(p.name for p in out.iterdir())
        ['a.txt']
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"output '{out}' already exists; pass --overwrite to replace it")
    tmp = partial_folder(out)  # (removes partial folders that killed runs left)
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def checkpoint_folder(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.checkpoints"


def fit_and_write(
    config: Config,
    out: str | Path,
    *,
    stars=None,
    background: BackgroundFlows | None = None,
    overwrite: bool = False,
    progress: bool = False,
    truth=None,
    truth_member: np.ndarray | None = None,
    extra_tables: dict[str, Any] | None = None,
    extra_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit ``config`` and write the model, ``members.ecsv``, ``tracks.ecsv``,
    ``figures/`` and ``summary.json`` into ``out``; returns the summary.

    ``background``: flows trained already (see :func:`streammix.fit.fit`).
    With a mock: ``truth`` (true tracks) is written as ``stars_tracks.ecsv`` and
    drawn in the figures, ``truth_member`` (true membership per star) adds
    :func:`truth_metrics` to the summary, and ``extra_tables`` (file name ->
    table) are written beside the rest.
    """
    # local import: plot loads matplotlib (~0.7 s), which importers of this module's helpers do not need
    from .plot import isochrone_curve, save_figures

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"output '{out}' already exists; pass --overwrite to replace it")
    started = time.perf_counter()
    stars = load_stars(config, stars)
    checkpoints = checkpoint_folder(out)
    # the fit's worker processes (if any) stay for the figures, drawn in one of them while this
    # process writes the tables and computes the residuals
    with worker_pool(config.fit.workers, config.fit.device) as pool:
        model = fit(config, stars, background=background, checkpoint_dir=checkpoints, progress=progress, pool=pool)
        t0 = time.perf_counter()
        members = model.membership(stars)
        tracks = model.tracks()
        score_seconds = time.perf_counter() - t0
        summary: dict[str, Any] = {
            "name": config.name,
            "n_stars": len(stars),
            "components": list(model.component_names),
            "members": summarise_members(members),
            "member_components": members.meta["member_components"],
            "members_by_component": {c: summarise_members(members, c) for c in model.component_names[:-1]},
            "converged": model.summary["converged"],
            "seed": config.fit.seed,
            "ensemble": config.fit.ensemble,
            "seconds": {**model.summary["seconds"], "membership_and_tracks": score_seconds},
            "fit": model.summary,
            "versions": versions(),
        }
        exact = without_errors(stars, [*config.model.coordinates, *config.model.bands])
        if exact:  # read without errors: taken as exact, which over-states a membership's confidence
            summary["without_errors"] = exact
        parallaxes = component_parallax_residuals(config, stars, members, tracks)
        if parallaxes is not None:  # each component's stars against the parallax its distance, and the stream's, predict
            summary["parallax_residuals"] = parallaxes.to_dict()
        if extra_summary:
            summary.update(extra_summary)
        if truth_member is not None:
            summary["truth"] = truth_metrics(np.asarray(members["p_member"]), truth_member)
        if truth is not None:
            summary.setdefault("truth", {})["tracks"] = track_metrics(model, truth)
        with output_folder(out, overwrite) as tmp:
            component = model.component_names[0]
            # what the figures show: each star's probabilities (not their percentiles) and positions, and
            # the photometry the CMD needs
            shown = members.copy(copy_data=False)
            shown.remove_columns([name for name in shown.colnames if re.fullmatch(r"p_.+_q\d\d", name)])
            for prefix, columns in (("", stars.mags), ("A_", stars.extinction)):
                for band, values in columns.items():
                    if f"{prefix}{band}" not in shown.colnames:
                        shown[f"{prefix}{band}"] = values * u.mag
            figures = dict(
                members=shown, tracks=tracks, component=component, truth=truth,
                isochrone=isochrone_curve(model, component=component, members=shown),
                other_components=model.component_names[1:-1],
            )  # fmt: skip
            # drawn in a worker process, if there is one, while this one writes the tables and the
            # residuals; the worker draws into a folder of its own and this process writes the files, so
            # nothing but this process ever writes into the output folder (also when interrupted)
            drawing = pool.submit(_figure_files, **figures) if pool is not None else None
            if drawing is None:
                save_figures(folder=tmp / "figures", **figures)
            for name, table in (extra_tables or {}).items():
                write_table(table, tmp / name)
            model.save(tmp / "model")
            write_table(members, tmp / "members.ecsv")
            write_table(tracks, tmp / "tracks.ecsv")
            if truth is not None:
                write_table(truth, tmp / "stars_tracks.ecsv")
            if drawing is not None and drawing.done():
                drawing.result()  # a drawing that failed stops the run before the residuals
            if "phi2" in config.model.coordinates:
                summary["residuals"] = write_residuals(model, stars, tmp)
            if drawing is not None:
                for name, content in drawing.result().items():
                    with atomic_path(tmp / "figures" / name) as part:
                        part.write_bytes(content)
            summary["seconds"]["total"] = time.perf_counter() - started
            write_json(summary, tmp / "summary.json")
    shutil.rmtree(checkpoints, ignore_errors=True)
    return summary


def _figure_files(**figures: Any) -> dict[str, bytes]:
    """The standard figures (:func:`streammix.plot.save_figures` with ``figures``, ``folder``
    aside) drawn in a temporary folder of their own: each file's name and contents. A worker
    process draws them this way, and the process that owns the output folder writes them.

    Example:
        >>> import astropy.units as u
        >>> from astropy.table import QTable
        >>> members = QTable({"phi1": [-50.0, -40.0] * u.deg, "phi2": [0.0, 0.2] * u.deg, "p_stream": [0.02, 0.9]})
        >>> tracks = QTable({"phi1": [-60.0, -30.0] * u.deg, "stream_weight": [0.1, 0.2]})
        >>> sorted(_figure_files(members=members, tracks=tracks))
        ['probability.png', 'sky.png', 'tracks.png']
    """
    from .plot import save_figures  # local import: matplotlib (~0.7 s), as in fit_and_write

    with tempfile.TemporaryDirectory() as folder:
        return {path.name: path.read_bytes() for path in save_figures(folder=folder, **figures)}


def write_residuals(model, stars, folder: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write the residuals of the data against the model into ``folder``: in
    (phi1, phi2) (:func:`streammix.residuals.position_residuals`,
    ``residuals.ecsv``, ``figures/residuals.png``) and, for a joint model with
    two bands, in the CMD (:func:`streammix.residuals.cmd_residuals`,
    ``residuals_cmd.ecsv``, ``figures/residuals_cmd.png``); returns their
    summaries (the largest excess and deficit of a bin, and where)."""
    from .plot import DPI, plot_residuals  # local import: matplotlib (~0.7 s), as in fit_and_write

    maps = {"": position_residuals(model, stars)}
    if len(model.config.model.bands) == 2:
        maps["_cmd"] = cmd_residuals(model, stars)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for suffix, residuals in maps.items():
        write_table(residuals.to_table(), folder / f"residuals{suffix}.ecsv", overwrite=overwrite)
        with atomic_path(folder / "figures" / f"residuals{suffix}.png", overwrite) as tmp:
            plot_residuals(residuals).savefig(tmp, format="png", dpi=DPI)
        z = residuals.significance
        worst = np.unravel_index(np.argmax(z), z.shape)
        summary["position" if not suffix else "cmd"] = {
            "n_selected": residuals.n_selected,
            "max_significance": float(z.max()),
            "min_significance": float(z.min()),
            "max_at": {
                residuals.x_name: float(0.5 * (residuals.x_edges[worst[0]] + residuals.x_edges[worst[0] + 1])),
                residuals.y_name: float(0.5 * (residuals.y_edges[worst[1]] + residuals.y_edges[worst[1] + 1])),
            },
        }
    return summary


MOCK_BANDS = ("gaia_g", "gaia_bp", "gaia_rp")


def demo_config(
    truth, *, seed: int = 0, ensemble: int | None = None, spacing: float = 20.0, photometry: bool = True
) -> Config:
    """The demo's stream description for the default mock.

    The prior track is what a user would bring from the literature: control
    points every ``spacing`` degrees read off the mock's true tracks, with
    generous widths (0.5 deg in phi2, 2 mas/yr in proper motion, 0.5 mag in
    distance modulus), so the fit, not the prior, sets the tracks. With
    ``photometry`` the model is joint: Gaia G, BP, RP on the embedded isochrone
    at the mock's age and [Fe/H], truncated at the mock's G limit, and a
    background flow on the three magnitudes that ends at that limit too and
    works in colour-locus coordinates (:class:`~streammix.locus.ColourLocus`),
    in one block with the parallax and proper motions (their joint density).
    """
    mock = MockConfig()
    phi1 = np.asarray(truth["phi1"].value if hasattr(truth["phi1"], "unit") else truth["phi1"])
    points = []
    widths = {"phi2": 0.5, "pm_phi1_cosphi2": 2.0, "pm_phi2": 2.0, "distmod": 0.5}
    lo, hi = mock.phi1_range
    for x in np.arange(lo + spacing / 2, hi, spacing):
        for name, width in widths.items():
            column = truth[name]
            values = np.asarray(getattr(column, "value", column))
            points.append({"parameter": name, "phi1": float(x), "value": float(np.interp(x, phi1, values)), "width": width})
    fit_cfg: dict[str, Any] = {"seed": seed, "workers": os.cpu_count() or 1}
    if ensemble is not None:
        fit_cfg["ensemble"] = ensemble
    model: dict[str, Any] = {"components": [{"name": "stream", "control_points": points}]}
    if photometry:
        model["bands"] = list(MOCK_BANDS)
        model["isochrone"] = {
            "age": mock.age,
            "feh": mock.feh,
            "magnitude_limits": {"gaia_g": [0.0, mock.g_limit]},
        }
        # One background flow over astrometry and magnitudes together: a field star's
        # distance sets both its parallax and proper motion and its magnitudes, so a product
        # of an astrometric and a photometric density undercounts the distant background
        # stars that look like the stream in both (membership log-odds 0.12-0.17 too high on
        # independent mocks, benchmarks/calibration.py). The mock is cut at observed
        # G < g_limit: the flow ends there too, and resolves the thin G-BP-RP locus in
        # colour-locus coordinates.
        model["background"] = {
            "blocks": [["parallax", "pm_phi1_cosphi2", "pm_phi2", *MOCK_BANDS]],
            "limits": {"gaia_g": [None, mock.g_limit]},
            "locus": list(MOCK_BANDS),
        }
    return Config.from_dict(
        {
            "name": "mock",
            "field": {"phi1": list(mock.phi1_range), "phi2": list(mock.phi2_range)},
            "model": model,
            "fit": fit_cfg,
        },
        source="demo config",
    )


def truth_metrics(p_stream: np.ndarray, is_member: np.ndarray, *, min_per_bin: int = 50) -> dict[str, Any]:
    """ROC AUC, completeness and purity at p > 0.5, and calibration against the truth.

    Calibration: in 10 equal bins of p holding at least ``min_per_bin`` stars,
    the fraction of true members against the mean p. Each bin also gives
    ``member_fraction_sd``, the spread of that fraction expected from counting
    alone if p were exact (sqrt(sum p (1 - p)) / n: about 0.06 for 50 stars at
    p ~ 0.5), and ``z``, the difference in units of it; ``calibration_max_z``
    is the largest ``|z|``. A bin of a few dozen stars can miss by more than 0.05
    by chance, so read ``calibration_max_error`` with ``calibration_max_z``.

    Example:
        >>> import numpy as np
        >>> m = truth_metrics(np.array([0.9, 0.8, 0.2, 0.1]), np.array([True, True, False, False]))
        >>> m["auc"], m["completeness"], m["purity"]
        (1.0, 1.0, 1.0)
        >>> p = np.full(100, 0.5)
        >>> b = truth_metrics(p, np.arange(100) < 60)["calibration"][0]
        >>> b["member_fraction"], b["member_fraction_sd"], b["z"]
        (0.6, 0.05, 2.0)
    """
    p = np.asarray(p_stream, dtype=float)
    truth = np.asarray(is_member, dtype=bool)
    from scipy.stats import rankdata  # local import: scipy.stats takes ~0.6 s to load

    ranks = rankdata(p)
    n_pos, n_neg = truth.sum(), (~truth).sum()
    auc = float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)) if n_pos and n_neg else float("nan")
    selected = p > 0.5
    completeness = float((selected & truth).sum() / max(n_pos, 1))
    purity = float((selected & truth).sum() / max(selected.sum(), 1))
    edges = np.linspace(0, 1, 11)
    bins = []
    which = np.clip(np.digitize(p, edges) - 1, 0, 9)
    for b in range(10):
        sel = which == b
        n = int(sel.sum())
        if n >= min_per_bin:
            mean_p, fraction = float(p[sel].mean()), float(truth[sel].mean())
            sd = float(np.sqrt(np.sum(p[sel] * (1 - p[sel]))) / n)
            bins.append(
                {"p_low": float(edges[b]), "p_high": float(edges[b + 1]), "n": n, "mean_p": mean_p,
                 "member_fraction": fraction, "member_fraction_sd": sd,
                 "z": (fraction - mean_p) / sd if sd > 0 else float("nan")}
            )
    worst = max((abs(b["member_fraction"] - b["mean_p"]) for b in bins), default=float("nan"))
    worst_z = max((abs(b["z"]) for b in bins if np.isfinite(b["z"])), default=float("nan"))
    return {"auc": auc, "completeness": completeness, "purity": purity, "calibration": bins,
            "calibration_max_error": worst, "calibration_max_z": worst_z}


def purity_at_completeness(p_stream: np.ndarray, is_member: np.ndarray, completeness: float) -> tuple[float, float]:
    """Purity of the highest-p stars that reach a given completeness, and the p
    threshold that does it: compares two models at *equal* completeness.

    Ties in p are kept together (the selection is ``p >= threshold``).

    Arguments:
        p_stream: Membership probabilities.
        is_member: The truth.
        completeness: The fraction of true members to recover, in (0, 1].

    Returns:
        ``(purity, threshold)``.

    Example:
        >>> import numpy as np
        >>> p = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.1])
        >>> truth = np.array([True, True, False, True, False, False])
        >>> purity_at_completeness(p, truth, 2 / 3)
        (1.0, 0.9)
        >>> purity_at_completeness(p, truth, 1.0)
        (0.75, 0.7)
    """
    p = np.asarray(p_stream, dtype=float)
    truth = np.asarray(is_member, dtype=bool)
    if not 0 < completeness <= 1:
        raise InputError(f"completeness {completeness}: must be in (0, 1]")
    n_true = int(truth.sum())
    if n_true == 0:
        raise InputError("is_member: no true member, completeness is undefined")
    need = int(np.ceil(completeness * n_true - 1e-9))
    threshold = float(np.sort(p[truth])[::-1][need - 1])
    selected = p >= threshold
    return float((selected & truth).sum() / selected.sum()), threshold


def mock_config(n_stream: int | None = None, n_background: int | None = None):
    """The default :class:`~streammix.mock.MockConfig`, with the star counts a user overrides.

    Example:
        >>> mock_config(n_stream=10).n_stream
        10
    """
    overrides = {k: v for k, v in {"n_stream": n_stream, "n_background": n_background}.items() if v is not None}
    return MockConfig(**overrides)  # validated, unlike model_copy


def mock_columns(keep=()) -> Any:
    """The column map of a mock table (canonical names, truth columns kept)."""
    return ColumnMap(
        pm_phi1_cosphi2="pm_phi1_cosphi2",
        pm_phi1_cosphi2_err="pm_phi1_cosphi2_err",
        pm_phi2_err="pm_phi2_err",
        pm_corr="pm_corr",
        phi2_err="phi2_err",
        parallax_err="parallax_err",
        bands=list(MOCK_BANDS),
        keep=list(keep),
    )


def track_metrics(model, truth, component: str | None = None, min_density: float = 0.1) -> dict[str, float]:
    """RMS of fitted minus true tracks where the true linear density exceeds
    ``min_density`` of its peak (phi2, proper motions, distance modulus, widths).

    Arguments:
        model: A :class:`~streammix.fit.FittedModel`.
        truth: True tracks (the mock's ``tracks`` table).
        component: The component to compare (default: the first).
        min_density: Fraction of the peak linear density defining "dense".
    """
    component = component or model.component_names[0]
    phi1 = np.asarray(getattr(truth["phi1"], "value", truth["phi1"]))
    fitted = model.tracks(phi1, dropout_samples=0)
    density = np.asarray(getattr(truth["linear_density"], "value", truth["linear_density"]))
    dense = density > min_density * density.max()
    out: dict[str, float] = {"dense_fraction_of_grid": float(dense.mean())}
    for name in ("phi2", "phi2_width", "pm_phi1_cosphi2", "pm_phi2", "distmod"):
        key = f"{component}_{name}"
        if key in fitted.colnames and name in truth.colnames:
            diff = np.asarray(fitted[key].value) - np.asarray(getattr(truth[name], "value", truth[name]))
            out[f"{name}_rms"] = float(np.sqrt(np.mean(diff[dense] ** 2)))
    return out


def write_background(
    config: Config, out: str | Path, *, stars=None, overwrite: bool = False, progress: bool = False
) -> BackgroundFlows:
    """Train the background flows of ``config`` (:func:`streammix.fit.fit_background`)
    and write them, with the config, into the folder ``out``.

    Arguments:
        config: The stream description.
        out: The output folder (``block<i>.pt`` and ``config.yaml``).
        stars: The stars; default: read ``config.data.path``.
        overwrite: Replace ``out`` if it exists.
        progress: Show progress bars.

    Returns:
        The trained flows.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"output '{out}' already exists; pass --overwrite to replace it")
    background = fit_background(config, stars, progress=progress)
    with output_folder(out, overwrite) as tmp:
        background.save(tmp)
        (tmp / "config.yaml").write_text(config.to_yaml())
    return background


def read_background(path: str | Path, config: Config) -> BackgroundFlows:
    """The background flows saved in ``path``, checked against ``config``
    (:func:`~streammix.background.check_background`).

    Arguments:
        path: A folder written by :func:`write_background` (``streammix
            flows``), a fitted model's folder, or a folder written by
            :func:`fit_and_write` (``streammix fit``).
        config: The configuration the flows are for.

    Returns:
        The flows, on the config's ``fit.device``.

    Example:
        >>> cfg = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]}})
        >>> read_background("no/such/folder", cfg)
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: background 'no/such/folder': no background flows (block0.pt) in it, its background/ or its model/background/
    """
    path = Path(path)
    for folder in (path, path / "background", path / "model" / "background"):
        if (folder / "block0.pt").is_file():
            view = background_view(config)[0]
            background = BackgroundFlows.load(folder, view=view, device=config.fit.device)
            check_background(background, config)
            return background
    raise InputError(
        f"background '{path}': no background flows (block0.pt) in it, its background/ or its model/background/"
    )


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    n_stream: int | None = None,
    n_background: int | None = None,
    ensemble: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate the default mock, fit it, and write everything into ``out``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"output '{out}' already exists; pass --overwrite to replace it")
    mock_cfg = mock_config(n_stream, n_background)
    t0 = time.perf_counter()
    stars_table, truth = generate_mock(mock_cfg, seed=seed)
    mock_seconds = time.perf_counter() - t0
    keep = [c for c in stars_table.colnames if c.startswith("true_")]
    stars = StarTable.from_table(stars_table, mock_columns(keep))
    config = demo_config(truth, seed=seed, ensemble=ensemble)
    return fit_and_write(
        config,
        out,
        stars=stars,
        overwrite=overwrite,
        progress=progress,
        truth=truth,
        truth_member=np.asarray(stars_table["true_component"]) == "stream",
        extra_tables={"stars.fits": stars_table},
        extra_summary={
            "mock": {
                "seed": seed,
                "n_stream": int((stars_table["true_component"] == "stream").sum()),
                "n_stars": len(stars_table),
                "seconds": mock_seconds,
            }
        },
    )
