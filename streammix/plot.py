"""Diagnostic figures of a fitted stream model.

Every function takes the astropy tables of :mod:`streammix.membership` (the
members table, one row per star, and the tracks table, one row per phi1 grid
point) and returns a :class:`matplotlib.figure.Figure` built directly, without
``pyplot``, so that nothing accumulates in a global figure registry. Panels are
drawn only for the columns a table has: a model without parallax simply has no
distance panels. :func:`save_figures` writes the standard set atomically.

Large scatters are rasterized, so 1e5 stars stay fast to draw and light to
store even in vector formats.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import QTable, Table
from matplotlib.figure import Figure
from scipy.ndimage import gaussian_filter

from .errors import InputError
from .output import atomic_path, check_writable

__all__ = [
    "DPI",
    "isochrone_curve",
    "photometric_bands",
    "plot_cmd",
    "plot_residuals",
    "plot_probability_histogram",
    "plot_sky",
    "plot_tracks",
    "save_figures",
]

DPI = 150
"""Resolution of saved raster figures (dots per inch)."""

_CMAP = "viridis"
_LOW_P = 0.1  # stars below this probability are drawn small and grey, underneath
_MAX_MAG = 50.0  # photometry above this is a missing-value sentinel (e.g. 1e20)


@dataclass(frozen=True)
class _Panel:
    """One quantity of the tracks figure: its column suffix, label and unit."""

    name: str
    label: str
    unit: u.UnitBase | None
    width: str | None = None  # suffix of the dispersion column drawn as median +- width


_PANELS: tuple[_Panel, ...] = (
    _Panel("weight", "weight $f$", None),
    _Panel("linear_density", "linear density [deg$^{-1}$]", 1 / u.deg),
    _Panel("phi2", r"$\phi_2$ [deg]", u.deg, "phi2_width"),
    _Panel("phi2_slope", r"d$\ln p$/d$\phi_2$ [deg$^{-1}$]", 1 / u.deg),
    _Panel(
        "pm_phi1_cosphi2",
        r"$\mu_{\phi_1}\cos\phi_2$ [mas yr$^{-1}$]",
        u.mas / u.yr,
        "pm_phi1_cosphi2_width",
    ),
    _Panel("pm_phi2", r"$\mu_{\phi_2}$ [mas yr$^{-1}$]", u.mas / u.yr, "pm_phi2_width"),
    _Panel("distmod", "distance modulus [mag]", u.mag, "distmod_width"),
    _Panel("parallax", r"parallax $\varpi$ [mas]", u.mas),
)

# (colour band 1, colour band 2, magnitude) for the CMD, in order of preference.
_CMD_BANDS: tuple[tuple[str, str, str], ...] = (
    ("gaia_bp", "gaia_rp", "gaia_g"),
    ("ps1_g", "ps1_i", "ps1_g"),
    ("ps1_g", "ps1_r", "ps1_g"),
    ("decam_g", "decam_r", "decam_g"),
    ("sdss_g", "sdss_r", "sdss_g"),
    ("sdss_g", "sdss_i", "sdss_g"),
    ("gaia_bp", "gaia_rp", "gaia_rp"),
    ("decam_g", "decam_i", "decam_g"),
    ("tmass_j", "tmass_ks", "tmass_ks"),
)
_SURVEY_LABELS = {"ps1": "PS1", "sdss": "SDSS", "decam": "DECam"}


def plot_sky(members: Table, component: str = "stream", *, stars: Table | None = None) -> Figure:
    r"""Sky positions, phi2 against phi1, coloured by membership probability.

    Stars with ``p < 0.1`` are drawn small and grey underneath; the others are
    drawn in order of increasing probability, so the likeliest members are on
    top.

    Arguments:
        members: Members table with ``phi1``, ``phi2`` [deg] and ``p_<component>``.
        component: The component whose probability colours the stars.
        stars: Optional table of further stars (``phi1``, ``phi2``), e.g. the
            whole input catalogue, drawn as faint grey dots underneath.

    Returns:
        A figure with the sky axes and a colourbar (2 axes).

    Example:
        >>> import astropy.units as u
        >>> from astropy.table import QTable
        >>> members = QTable({"phi1": [-50.0, -40.0] * u.deg, "phi2": [0.0, 0.2] * u.deg,
        ...                   "p_stream": [0.02, 0.9]})
        >>> len(plot_sky(members).axes)
        2
    """
    p = _probability(members, component)
    phi1 = _column(members, "phi1", u.deg, "members")
    phi2 = _column(members, "phi2", u.deg, "members")
    span1 = np.ptp(phi1[np.isfinite(phi1)]) if np.isfinite(phi1).any() else 1.0
    span2 = np.ptp(phi2[np.isfinite(phi2)]) if np.isfinite(phi2).any() else 1.0
    height = float(np.clip(8.0 * span2 / max(span1, 1e-6), 2.2, 7.0)) + 1.2
    fig = Figure(figsize=(10.0, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    if stars is not None:
        ax.scatter(
            _column(stars, "phi1", u.deg, "stars"),
            _column(stars, "phi2", u.deg, "stars"),
            s=0.5, c="0.85", lw=0, rasterized=True, zorder=0,
        )  # fmt: skip
    points = _probability_scatter(ax, phi1, phi2, p)
    fig.colorbar(points, ax=ax, label=_p_label(component), pad=0.01, fraction=0.04, aspect=15)
    ax.set_xlabel(r"$\phi_1$ [deg]")
    ax.set_ylabel(r"$\phi_2$ [deg]")
    n_members = int(np.sum(p > 0.5))
    title = f"{len(p):,} stars, {n_members:,} with {_p_label(component)} > 0.5"
    ax.set_title(title, fontsize="medium")
    return fig


def plot_tracks(
    tracks: Table,
    members: Table | None = None,
    component: str = "stream",
    *,
    truth: Table | None = None,
    min_probability: float = 0.5,
) -> Figure:
    r"""Stacked panels of a component's parameters against phi1.

    One panel per quantity the tracks table has for the component, in this
    order: weight, linear density, phi2 track, background phi2 slope, the two
    proper motions, distance modulus and parallax. Each shows the median with
    its 5-95 % band over the ensemble and dropout draws (``_q05``/``_q95``);
    where a dispersion column exists (``phi2_width``...) the median +- width is
    shaded lightly too. Members with ``p > min_probability`` are overplotted
    on the panels whose quantity is also a members column (at least phi2).

    Arguments:
        tracks: Tracks table with ``phi1`` [deg] and ``<component>_<quantity>``
            columns (plus ``_q05``/``_q95``, ``_width`` where available).
        members: Optional members table; its likely members are overplotted.
        component: The component to draw, e.g. ``"stream"``, ``"spur"``.
        truth: Optional true tracks (e.g. of a mock) with ``phi1`` and the
            quantity names without prefix (``phi2``, ``phi2_width``,
            ``pm_phi2``, ``distmod``, ``linear_density``...), drawn dashed.
        min_probability: Probability above which members are overplotted.

    Returns:
        A figure with one axes per panel, sharing phi1.

    Raises:
        InputError: ``phi1`` is missing, or the table has no column for the component.

    Example:
        >>> import astropy.units as u
        >>> from astropy.table import QTable
        >>> tracks = QTable({"phi1": [-60.0, -40.0] * u.deg, "stream_weight": [0.1, 0.2],
        ...                  "stream_phi2": [0.0, 0.5] * u.deg})
        >>> [ax.get_ylabel() for ax in plot_tracks(tracks).axes]
        ['weight $f$', '$\\phi_2$ [deg]']
    """
    phi1 = _column(tracks, "phi1", u.deg, "tracks")
    panels = [panel for panel in _PANELS if f"{component}_{panel.name}" in tracks.colnames]
    if not panels:
        present = sorted({c.split("_")[0] for c in tracks.colnames if c.endswith("_weight")})
        raise InputError(
            f"tracks table: no column for component '{component}' (e.g. '{component}_weight');"
            f" components present: {', '.join(present) or 'none'}"
        )
    if members is not None:
        p = _probability(members, component)
        likely = p > min_probability
    if truth is not None:
        truth_phi1 = _column(truth, "phi1", u.deg, "truth")
    fig = Figure(figsize=(8.0, 1.2 + 1.75 * len(panels)), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    order = np.argsort(phi1)
    x = phi1[order]
    for ax, panel in zip(axes, panels):
        name = f"{component}_{panel.name}"
        y = _column(tracks, name, panel.unit, "tracks")[order]
        if panel.width and f"{component}_{panel.width}" in tracks.colnames:
            w = _column(tracks, f"{component}_{panel.width}", panel.unit, "tracks")[order]
            label = r"median $\pm$ width"
            ax.fill_between(x, y - w, y + w, color="C1", alpha=0.25, lw=0, label=label)
        if f"{name}_q05" in tracks.colnames and f"{name}_q95" in tracks.colnames:
            lo = _column(tracks, f"{name}_q05", panel.unit, "tracks")[order]
            hi = _column(tracks, f"{name}_q95", panel.unit, "tracks")[order]
            ax.fill_between(x, lo, hi, color="C0", alpha=0.5, lw=0, label="5–95 %")
        ax.plot(x, y, color="C0", lw=1.5, label=f"{component} (median)")
        if members is not None and panel.name in members.colnames:
            ax.scatter(
                _column(members, "phi1", u.deg, "members")[likely],
                _column(members, panel.name, panel.unit, "members")[likely],
                s=2, c="0.35", lw=0, alpha=0.5, rasterized=True, zorder=0.5,
                label=f"$P > {min_probability:g}$",
            )  # fmt: skip
        if truth is not None and panel.name in truth.colnames:
            t_order = np.argsort(truth_phi1)
            tx = truth_phi1[t_order]
            ty = _column(truth, panel.name, panel.unit, "truth")[t_order]
            ax.plot(tx, ty, "--", color="C3", lw=1.3, label="truth", zorder=4)
            if panel.width and panel.width in truth.colnames:
                tw = _column(truth, panel.width, panel.unit, "truth")[t_order]
                ax.plot(tx, ty - tw, ":", color="C3", lw=1.0, zorder=4)
                ax.plot(tx, ty + tw, ":", color="C3", lw=1.0, zorder=4)
        ax.set_ylabel(panel.label)
        if panel.name == "weight":
            ax.set_ylim(bottom=0)
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    labels = list(handles)
    axes[0].legend(
        [handles[k] for k in labels], labels, loc="best", fontsize="small",
        ncols=min(len(labels), 3),
    )
    axes[-1].set_xlabel(r"$\phi_1$ [deg]")
    if len(x) > 1 and x[0] < x[-1]:
        axes[-1].set_xlim(x[0], x[-1])
    fig.suptitle(f"{component}: tracks", fontsize="medium")
    return fig


def plot_probability_histogram(
    members: Table, component: str = "stream", thresholds: Sequence[float] = (0.5, 0.8)
) -> Figure:
    r"""Histogram of membership probabilities on a logarithmic count axis.

    A vertical line marks each threshold, annotated ``p > t: N`` with the number
    of stars whose probability exceeds it.

    Arguments:
        members: Members table with ``p_<component>``.
        component: The component whose probability is shown.
        thresholds: Probabilities to mark and count stars above.

    Returns:
        A figure with one axes.

    Example:
        >>> from astropy.table import QTable
        >>> fig = plot_probability_histogram(QTable({"p_stream": [0.1, 0.6, 0.9]}))
        >>> [t.get_text() for t in fig.axes[0].texts]
        ['p > 0.5: 2', 'p > 0.8: 1']
    """
    p = _probability(members, component)
    finite = p[np.isfinite(p)]
    fig = Figure(figsize=(6.0, 4.0), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 51)
    ax.hist(np.clip(finite, 0.0, 1.0), bins=bins, color="C0", alpha=0.8, log=True)
    for i, threshold in enumerate(thresholds):
        count = int(np.sum(finite > threshold))
        color = f"C{(i + 1) % 10}"
        ax.axvline(threshold, color=color, ls="--", lw=1.2)
        ax.text(
            threshold, 0.97 - 0.08 * i, f"p > {threshold:g}: {count:,}", color=color,
            transform=ax.get_xaxis_transform(), ha="right", va="top", rotation=0,
            fontsize="small",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
        )  # fmt: skip
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(f"membership probability {_p_label(component)}")
    ax.set_ylabel("number of stars")
    ax.set_title(f"{len(finite):,} stars", fontsize="medium")
    return fig


def plot_cmd(
    members: Table,
    color: tuple[str, str],
    magnitude: str,
    component: str = "stream",
    *,
    isochrone: Table | None = None,
) -> Figure:
    r"""Colour-magnitude diagram coloured by membership probability.

    Stars with a missing (non-finite or sentinel > 50 mag) value are left out;
    as in :func:`plot_sky`, stars with ``p < 0.1`` are small and grey, the
    likeliest members are drawn on top, and bright stars are at the top.
    An ``isochrone`` (e.g. from :func:`isochrone_curve`) is drawn as a red
    line labelled with its distance modulus; it does not widen the axes
    beyond the stars' range.

    Arguments:
        members: Members table with the photometric columns and ``p_<component>``.
        color: The two bands whose difference is the colour, e.g. ``("gaia_bp", "gaia_rp")``.
        magnitude: The band on the vertical axis, e.g. ``"gaia_g"``.
        component: The component whose probability colours the stars.
        isochrone: Optional isochrone in apparent magnitudes: one column per
            band (at least those of ``color`` and ``magnitude``), rows along
            the curve, an optional integer ``run`` column (separate pieces,
            e.g. the horizontal branch, are drawn unjoined) and the distance
            modulus it was shifted by in ``meta["distmod"]``.

    Returns:
        A figure with the CMD axes and a colourbar (2 axes).

    Raises:
        InputError: A needed column of ``members`` or ``isochrone`` is missing.

    Example:
        >>> from astropy.table import QTable
        >>> members = QTable({"g": [18.0, 19.5], "i": [17.5, 19.2], "p_stream": [0.1, 0.9]})
        >>> fig = plot_cmd(members, ("g", "i"), "g")
        >>> fig.axes[0].get_xlabel(), bool(fig.axes[0].yaxis_inverted())
        ('g $-$ i [mag]', True)
        >>> iso = QTable({"g": [17.0, 18.5, 20.0], "i": [16.2, 18.0, 19.8]},
        ...              meta={"distmod": 14.62})
        >>> fig = plot_cmd(members, ("g", "i"), "g", isochrone=iso)
        >>> fig.axes[0].get_legend().get_texts()[0].get_text()
        'isochrone, DM = 14.62'
    """
    p = _probability(members, component)
    band1 = _column(members, color[0], u.mag, "members")
    band2 = _column(members, color[1], u.mag, "members")
    mag = _column(members, magnitude, u.mag, "members")
    good = np.isfinite(band1) & np.isfinite(band2) & np.isfinite(mag) & np.isfinite(p)
    good &= (np.abs(band1) < _MAX_MAG) & (np.abs(band2) < _MAX_MAG) & (np.abs(mag) < _MAX_MAG)
    x, y, pp = band1[good] - band2[good], mag[good], p[good]
    fig = Figure(figsize=(5.0, 6.0), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    points = _probability_scatter(ax, x, y, pp)
    fig.colorbar(points, ax=ax, label=_p_label(component), pad=0.01)
    if isochrone is not None:
        _plot_isochrone(ax, isochrone, color, magnitude, fit_axes=not good.any())
    ax.set_xlabel(f"{_band_label(color[0])} $-$ {_band_label(color[1])} [mag]")
    ax.set_ylabel(f"{_band_label(magnitude)} [mag]")
    ax.invert_yaxis()
    ax.set_title(f"{int(good.sum()):,} stars with photometry", fontsize="medium")
    return fig


def save_figures(
    members: Table,
    tracks: Table,
    folder: str | os.PathLike,
    *,
    component: str = "stream",
    truth: Table | None = None,
    isochrone: Table | None = None,
    overwrite: bool = False,
    formats: Sequence[str] = ("png",),
    probability: str | None = None,
    other_components: Sequence[str] = (),
) -> list[Path]:
    r"""Write the standard diagnostic figures into ``folder``, atomically.

    Files: ``sky``, ``tracks``, ``probability`` and, when the members table has
    two bands of one photometric system (``gaia_bp``/``gaia_rp``/``gaia_g``,
    ``ps1_g``/``ps1_i``, ``decam_g``/``decam_r``, ``sdss_g``/``sdss_r``...),
    ``cmd``; each in every format of ``formats``. All targets are checked
    before anything is drawn, so a refusal leaves the folder untouched.

    Arguments:
        members: Members table (see :func:`plot_sky`).
        tracks: Tracks table (see :func:`plot_tracks`).
        folder: Output folder, created if needed.
        component: The component to draw.
        truth: Optional true tracks, drawn dashed on the tracks figure.
        isochrone: Optional isochrone in apparent magnitudes (see
            :func:`plot_cmd`, :func:`isochrone_curve`), drawn on the CMD when
            it has the CMD's three bands (else left out).
        overwrite: Replace existing files.
        formats: File formats (suffixes) understood by matplotlib, e.g. ``("png", "pdf")``.
        probability: The probability the sky map, histogram and CMD show,
            ``p_<probability>``; default ``p_member`` (the stream's components
            together) when the table has it, else ``p_<component>``.
        other_components: Further stream-like components (a spur, a cocoon)
            whose tracks get a figure each, ``tracks_<name>``.

    Returns:
        The paths written.

    Raises:
        InputError: A file exists and ``overwrite`` is false, or a needed column
            (e.g. ``p_stream``) is missing.

    Example:
        >>> import tempfile, astropy.units as u
        >>> from astropy.table import QTable
        >>> members = QTable({"phi1": [-50.0, -40.0] * u.deg, "phi2": [0.0, 0.2] * u.deg,
        ...                   "p_stream": [0.02, 0.9]})
        >>> tracks = QTable({"phi1": [-60.0, -30.0] * u.deg, "stream_weight": [0.1, 0.2]})
        >>> [path.name for path in save_figures(members, tracks, tempfile.mkdtemp())]
        ['sky.png', 'tracks.png', 'probability.png']
    """
    folder = Path(folder)
    bands = photometric_bands(members)
    names = ["sky", "tracks", "probability"] + (["cmd"] if bands else [])
    names += [f"tracks_{name}" for name in other_components]
    formats = [str(fmt).lstrip(".").lower() for fmt in formats]
    paths = [folder / f"{name}.{fmt}" for name in names for fmt in formats]
    for path in paths:
        check_writable(path, overwrite)
    if probability is None:
        probability = "member" if "p_member" in members.colnames else component
    _probability(members, probability)  # a missing p_<probability> is reported before any drawing
    written = []
    for name in names:
        if name == "sky":
            fig = plot_sky(members, probability)
        elif name == "tracks":
            fig = plot_tracks(tracks, members, component, truth=truth)
        elif name.startswith("tracks_"):
            fig = plot_tracks(tracks, members, name.removeprefix("tracks_"))
        elif name == "probability":
            fig = plot_probability_histogram(members, probability)
        else:
            has_bands = isochrone is not None and set(bands) <= set(isochrone.colnames)
            iso = isochrone if has_bands else None
            fig = plot_cmd(members, (bands[0], bands[1]), bands[2], probability, isochrone=iso)
        for fmt in formats:
            path = folder / f"{name}.{fmt}"
            with atomic_path(path, overwrite) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI)
            written.append(path)
    return written


def plot_residuals(residuals, *, limit: float = 5.0) -> Figure:
    """Observed and expected counts of the stars whose other coordinates favour
    the stream, and their residual in units of the counting error: in
    (phi1, phi2), or in the colour-magnitude diagram.

    Arguments:
        residuals: A :class:`~streammix.residuals.Residuals`.
        limit: The colour scale of the residual panel spans ``-limit .. limit`` sigma.

    Example:
        >>> import numpy as np
        >>> from streammix.residuals import Residuals
        >>> r = Residuals("phi1", "phi2", np.linspace(-60, -20, 5), np.linspace(-2, 2, 9),
        ...               np.ones((4, 8)), np.ones((4, 8)), 0.5, 32)
        >>> len(plot_residuals(r).axes)
        6
    """
    sky = residuals.x_name == "phi1"
    fig = Figure(figsize=(7.0, 7.0) if sky else (10.0, 4.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True) if sky else fig.subplots(1, 3, sharey=True)
    extent = (residuals.x_edges[0], residuals.x_edges[-1], residuals.y_edges[0], residuals.y_edges[-1])
    top = max(float(residuals.observed.max()), float(residuals.expected.max()), 1.0)
    panels = (
        ("observed", residuals.observed, "magma", 0.0, top),
        (
            "expected by the model" + ("\ngiven their parallax errors" if residuals.error_relation is not None else ""),
            residuals.expected, "magma", 0.0, top,
        ),
        ("(observed - expected) / sqrt(expected)", residuals.significance, "RdBu_r", -limit, limit),
    )
    x_label = r"$\phi_1$ [deg]" if sky else f"{_band_label(residuals.x_name.split(' - ')[0])} - {_band_label(residuals.x_name.split(' - ')[1])} [mag]"
    y_label = r"$\phi_2$ [deg]" if sky else f"{_band_label(residuals.y_name)} [mag]"
    for ax, (title, values, cmap, vmin, vmax) in zip(axes, panels):
        image = ax.imshow(
            values.T, origin="lower", extent=extent, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
            interpolation="nearest",
        )  # fmt: skip
        fig.colorbar(image, ax=ax, label="stars" if vmin == 0 else r"$\sigma$")
        ax.set_title(title, fontsize="small")
        if sky or ax is axes[0]:
            ax.set_ylabel(y_label)
        if not sky:
            ax.set_xlabel(x_label)
            if ax is axes[0]:
                ax.invert_yaxis()
    if sky:
        axes[-1].set_xlabel(x_label)
    what = "other coordinates" if sky else "astrometry"
    fig.suptitle(
        f"{residuals.n_selected} stars whose {what} give $P_\\mathrm{{member}} > {residuals.threshold:g}$",
        fontsize="medium",
    )
    return fig


def photometric_bands(members: Table) -> tuple[str, str, str] | None:
    """The (colour band 1, colour band 2, magnitude band) a CMD would use, or None.

    Recognises canonical band names (:data:`streammix.isochrone.CANONICAL_BANDS`)
    among the columns, preferring Gaia BP-RP against G, then PS1 g-i against g.

    Example:
        >>> from astropy.table import QTable
        >>> photometric_bands(QTable({"ps1_g": [18.0], "ps1_i": [17.0]}))
        ('ps1_g', 'ps1_i', 'ps1_g')
        >>> photometric_bands(QTable({"gaia_g": [18.0]})) is None
        True
    """
    names = set(members.colnames)
    for bands in _CMD_BANDS:
        if set(bands) <= names:
            return bands
    return None


def isochrone_curve(
    model, *, component: str = "stream", members: Table | None = None
) -> QTable | None:
    r"""A fitted component's isochrone in apparent magnitudes at a reference distance modulus.

    The curve is the component's isochrone likelihood's
    (:meth:`~streammix.photometry.PhotometricLikelihood.curve`): the ends of
    its quadrature segments, shifted by one distance modulus. That reference DM
    is, with ``members``, the ``p_<component>``-weighted median of the fitted
    DM track (ensemble median, no dropout draws) at the members' phi1;
    without, the DM track where the component's weight track peaks on the
    model's grid. When ``members`` has extinction columns ``A_<band>``, their
    ``p``-weighted median is added to each band too (the model compares
    ``mag - A - DM`` with the isochrone); otherwise no extinction is added.

    Arguments:
        model: A :class:`~streammix.fit.FittedModel`.
        component: The stream-like component whose isochrone and DM track to use.
        members: Optional members table with ``phi1`` and ``p_<component>``
            (e.g. ``model.membership(stars)``).

    Returns:
        A table with one column per band of the likelihood (apparent mag),
        ``initial_mass`` [Msun] and ``run`` (continuous pieces: rows of
        different runs are not to be joined), with ``meta["distmod"]``,
        ``meta["extinction"]`` ({band: mag}) and ``meta["component"]``; or None
        when the component has no photometry (an astrometry-only model).

    Raises:
        InputError: ``component`` is not one of the model's, or ``members``
            lacks ``phi1``/``p_<component>`` or has no star with ``p > 0``.

    Example:
        With a fitted model it is ``isochrone_curve(model, members=members)``;
        here a stand-in with a DM track of 14 + phi1/100 whose weight peaks at
        phi1 = -40 deg:

        >>> import astropy.units as u, numpy as np
        >>> from types import SimpleNamespace
        >>> from astropy.table import QTable
        >>> from streammix.isochrone import default_isochrone
        >>> from streammix.photometry import PhotometricLikelihood
        >>> bands = ["gaia_g", "gaia_bp", "gaia_rp"]
        >>> like = PhotometricLikelihood(default_isochrone(), bands, n_nodes=50)
        >>> def tracks(phi1=None, dropout_samples=None):
        ...     x = np.linspace(-60.0, -20.0, 5) if phi1 is None else u.Quantity(phi1, u.deg).value
        ...     return QTable({"phi1": x * u.deg, "stream_weight": np.exp(-(((x + 40) / 10) ** 2)),
        ...                    "stream_distmod": (14 + x / 100) * u.mag})
        >>> stream = SimpleNamespace(name="stream", photometry=like)
        >>> model = SimpleNamespace(component_names=("stream", "background"), tracks=tracks,
        ...                         mixtures=[SimpleNamespace(components=[stream])])
        >>> curve = isochrone_curve(model)
        >>> round(curve.meta["distmod"], 2)
        13.6
        >>> bool(np.isclose(curve["gaia_g"][0].value, like.start[0, 0].item() + 13.6))
        True
    """
    names = tuple(model.component_names)
    if component not in names:
        raise InputError(
            f"component '{component}': not one of the model's components {list(names)}"
        )
    stream_like = {c.name: c for c in model.mixtures[0].components}
    photometry = getattr(stream_like.get(component), "photometry", None)
    if photometry is None:
        return None
    column = f"{component}_distmod"
    extinction: dict[str, float] = {}
    if members is not None:
        phi1 = _column(members, "phi1", u.deg, "members")
        p = _probability(members, component)
        use = np.isfinite(phi1) & np.isfinite(p) & (p > 0)
        if not use.any():
            raise InputError(f"members table: no star with p_{component} > 0 and a finite phi1")
        track = model.tracks(phi1[use] * u.deg, dropout_samples=0)
        distmod = _weighted_median(_column(track, column, u.mag, "tracks"), p[use])
        for band in photometry.bands:
            if f"A_{band}" in members.colnames:
                a = _column(members, f"A_{band}", u.mag, "members")
                ok = np.isfinite(a) & np.isfinite(p) & (p > 0)
                if ok.any():
                    extinction[band] = _weighted_median(a[ok], p[ok])
    else:
        track = model.tracks(dropout_samples=0)
        weight = _column(track, f"{component}_weight", None, "tracks")
        distmod = float(_column(track, column, u.mag, "tracks")[int(np.nanargmax(weight))])

    table = photometry.curve(distmod, extinction)
    table.meta.update(
        {
            "component": component,
            "description": "the fitted likelihood's isochrone: absolute mags + distmod (+ A)",
        }
    )
    return table


# ---------------------------------------------------------------------------
# helpers


def _column(table: Table, name: str, unit: u.UnitBase | None, what: str) -> np.ndarray:
    """A column as a float array in ``unit`` (plain columns are taken as already in it)."""
    if name not in table.colnames:
        raise InputError(f"{what} table: column '{name}' is missing")
    col = table[name]
    if getattr(col, "mask", None) is not None and np.any(col.mask):
        col = col.filled(np.nan)
    col = getattr(col, "unmasked", col)  # a Masked quantity with nothing masked
    col_unit = getattr(col, "unit", None)
    if unit is not None and col_unit is not None and col_unit != u.dimensionless_unscaled:
        try:
            return np.asarray(u.Quantity(col).to_value(unit), dtype=np.float64)
        except u.UnitConversionError:
            raise InputError(
                f"{what} table: column '{name}' has unit '{col_unit}',"
                f" expected one convertible to '{unit}'"
            ) from None
    return np.asarray(getattr(col, "value", col), dtype=np.float64)


def _probability(members: Table, component: str) -> np.ndarray:
    name = f"p_{component}"
    if name not in members.colnames:
        present = [c[2:] for c in members.colnames if c.startswith("p_") and not c[-4:-2] == "_q"]
        raise InputError(
            f"members table: column '{name}' is missing"
            f" (components present: {', '.join(present) or 'none'})"
        )
    return _column(members, name, None, "members")


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The smallest value whose cumulative weight (values sorted) reaches half the total."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _plot_isochrone(
    ax, isochrone: Table, color: tuple[str, str], magnitude: str, *, fit_axes: bool
) -> None:
    """The isochrone as a red line (pieces of different ``run`` unjoined), with a legend."""
    band1 = _column(isochrone, color[0], u.mag, "isochrone")
    band2 = _column(isochrone, color[1], u.mag, "isochrone")
    mag = _column(isochrone, magnitude, u.mag, "isochrone")
    run = np.zeros(len(mag), dtype=int)
    if "run" in isochrone.colnames:
        run = np.asarray(isochrone["run"])
    distmod = isochrone.meta.get("distmod")
    label = "isochrone" if distmod is None else f"isochrone, DM = {float(distmod):.2f}"
    limits = None if fit_axes else (ax.get_xlim(), ax.get_ylim())
    for i, piece in enumerate(np.unique(run)):
        rows = run == piece
        ax.plot(
            band1[rows] - band2[rows], mag[rows], color="C3", lw=1.3, zorder=3,
            label=label if i == 0 else None,
        )  # fmt: skip
    if limits is not None:  # the isochrone does not widen the stars' axes
        ax.set_xlim(limits[0])
        ax.set_ylim(limits[1])
    ax.legend(loc="best", fontsize="small")


def _probability_scatter(ax, x: np.ndarray, y: np.ndarray, p: np.ndarray):
    """Stars with p < 0.1 small and grey underneath, the rest coloured by p, likeliest on top."""
    low = p < _LOW_P
    ax.scatter(x[low], y[low], s=0.8, c="0.6", lw=0, alpha=0.6, rasterized=True, zorder=1)
    order = np.argsort(p[~low], kind="stable")
    high_p = p[~low][order]
    return ax.scatter(
        x[~low][order], y[~low][order], c=high_p, s=0.6 + 8.0 * high_p**2, lw=0,
        cmap=_CMAP, vmin=0.0, vmax=1.0, rasterized=True, zorder=2,
    )  # fmt: skip


def _tex(text: str) -> str:
    return text.replace("_", r"\_")


def _p_label(component: str) -> str:
    return f"$P_\\mathrm{{{_tex(component)}}}$"


def _band_label(band: str) -> str:
    """``gaia_bp`` -> $G_\\mathrm{BP}$, ``ps1_g`` -> $g_\\mathrm{PS1}$, other names unchanged."""
    survey, _, letter = band.partition("_")
    if survey == "gaia" and letter in ("g", "bp", "rp"):
        return "$G$" if letter == "g" else f"$G_\\mathrm{{{letter.upper()}}}$"
    if survey in _SURVEY_LABELS and len(letter) == 1:
        return f"${letter}_\\mathrm{{{_SURVEY_LABELS[survey]}}}$"
    if survey == "tmass" and letter in ("j", "h", "ks"):
        return "$K_s$" if letter == "ks" else f"${letter.upper()}$"
    return band


# ---------------------------------------------------------------------------
# posterior samples


def plot_corner(
    chain: np.ndarray,
    names: Sequence[str],
    truths: Sequence[float | None] | None = None,
    *,
    bins: int = 30,
) -> Figure:
    r"""Corner-style figure of posterior samples: marginal histograms on the
    diagonal, 2-D histograms with the 39% and 86% (1 and 2 sigma in 2-D)
    highest-density contours below it.

    The 16th, 50th and 84th percentiles are marked on each marginal and
    written above it; ``truths`` (None entries skipped) are drawn as lines.

    Arguments:
        chain: Samples, (steps, walkers, P) or (S, P).
        names: The P parameter names (``age``, ``feh``, ``distmod_offset`` and
            ``ebv_offset`` get astronomers' labels).
        truths: Optional true values, one per parameter.
        bins: Histogram bins per axis.

    Returns:
        A figure with P x P axes, those above the diagonal hidden.

    Raises:
        InputError: The chain's shape disagrees with ``names`` or ``truths``.

    Example:
        >>> import numpy as np
        >>> samples = np.random.default_rng(1).normal(size=(500, 2))
        >>> fig = plot_corner(samples, ["age", "feh"], truths=[0.0, None])
        >>> len(fig.axes), fig.axes[2].get_xlabel()
        (4, 'age [Gyr]')
    """
    samples = np.asarray(chain, dtype=np.float64)
    names = [str(name) for name in names]
    if samples.ndim == 3:
        samples = samples.reshape(-1, samples.shape[2])
    if samples.ndim != 2 or samples.shape[1] != len(names) or not names:
        raise InputError(f"chain: shape {np.shape(chain)} does not match {len(names)} parameter names")
    if truths is not None and len(truths) != len(names):
        raise InputError(f"truths: {len(truths)} values for {len(names)} parameters")
    samples = samples[np.all(np.isfinite(samples), axis=1)]
    p = len(names)
    labels = {
        "age": "age [Gyr]",
        "feh": "[Fe/H]",
        "distmod_offset": r"$\Delta$DM [mag]",
        "ebv_offset": r"$\Delta E(B-V)$ [mag]",
    }
    size = 1.9 * p + 0.6
    fig = Figure(figsize=(size, size), dpi=DPI, layout="constrained")
    axes = fig.subplots(p, p, squeeze=False)
    ranges = []
    for j in range(p):
        lo, hi = np.percentile(samples[:, j], [0.5, 99.5]) if len(samples) else (0.0, 1.0)
        if truths is not None and truths[j] is not None:
            lo, hi = min(lo, truths[j]), max(hi, truths[j])
        pad = 0.05 * (hi - lo) if hi > lo else 0.5 * max(abs(lo), 1e-3)
        ranges.append((lo - pad, hi + pad))
    for row in range(p):
        for col in range(p):
            ax = axes[row, col]
            if col > row:
                ax.set_axis_off()
                continue
            x = samples[:, col]
            if row == col:
                ax.hist(x, bins=bins, range=ranges[col], histtype="step", color="k")
                q16, q50, q84 = np.percentile(x, [16, 50, 84]) if len(x) else (np.nan,) * 3
                for value, style in ((q16, "--"), (q50, "-"), (q84, "--")):
                    ax.axvline(value, color="C0", ls=style, lw=1)
                ax.set_title(_value_with_errors(q50, q50 - q16, q84 - q50), fontsize="small")
                ax.set_yticks([])
            else:
                y = samples[:, row]
                hist, xe, ye = np.histogram2d(x, y, bins=bins, range=[ranges[col], ranges[row]])
                ax.pcolormesh(xe, ye, hist.T, cmap="Greys", rasterized=True)
                hist = gaussian_filter(hist, 1.0)  # contours of a lightly smoothed histogram
                levels = _density_levels(hist, (0.86, 0.39))
                if len(levels) == 2 and levels[0] < levels[1]:
                    centres = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
                    ax.contour(*centres, hist.T, levels=levels, colors="C0", linewidths=1)
                if truths is not None and truths[row] is not None:
                    ax.axhline(truths[row], color="C3", lw=1)
                ax.set_ylim(ranges[row])
            if truths is not None and truths[col] is not None:
                ax.axvline(truths[col], color="C3", lw=1)
            ax.set_xlim(ranges[col])
            if row == p - 1:
                ax.set_xlabel(labels.get(names[col], _tex(names[col])))
            else:
                ax.set_xticklabels([])
            if col == 0 and row > 0:
                ax.set_ylabel(labels.get(names[row], _tex(names[row])))
            elif col > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize="x-small")
    return fig


def _value_with_errors(value: float, minus: float, plus: float) -> str:
    """``value _-minus ^+plus`` in TeX, rounded to two significant digits of the smaller error."""
    error = min(abs(minus), abs(plus))
    if not (np.isfinite(value) and np.isfinite(error)):
        return f"{value:.3g}"
    decimals = max(0, 1 - int(np.floor(np.log10(error)))) if error > 0 else 3
    return f"{value:.{decimals}f}$_{{-{minus:.{decimals}f}}}^{{+{plus:.{decimals}f}}}$"


def _density_levels(hist: np.ndarray, masses: Sequence[float]) -> list[float]:
    """Histogram heights enclosing each probability mass (highest bins first), increasing."""
    flat = np.sort(hist.ravel())[::-1]
    total = flat.sum()
    if total <= 0:
        return []
    cumulative = np.cumsum(flat) / total
    return sorted(float(flat[min(np.searchsorted(cumulative, m), flat.size - 1)]) for m in masses)


__all__ += ["plot_corner"]
