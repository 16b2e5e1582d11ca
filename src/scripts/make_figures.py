"""The article's figures for one stream (rule ``figures``), as PDF.

``<stream>_sky.pdf``: phi2 against phi1 coloured by membership probability;
``<stream>_tracks.pdf``: the fitted tracks with the likely members and the
reference track (a mock's truth, else galstreams); ``<stream>_probability.pdf``:
the distribution of membership probabilities and, for a mock, the calibration
(fraction of true members against the mean probability in ten bins).

Usage: ``python src/scripts/make_figures.py STREAM_YAML --members M --tracks T --reference R --outdir D``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from astropy.table import QTable
from matplotlib.figure import Figure

from streammix.plot import plot_sky, plot_tracks
from scriptrun import run_script
from streamcfg import read_stream


def probability_figure(p: np.ndarray, is_member: np.ndarray | None) -> Figure:
    """Histogram of probabilities; with the truth, the calibration beside it."""
    panels = 2 if is_member is not None else 1
    fig = Figure(figsize=(3.6 * panels, 3.0), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    edges = np.linspace(0, 1, 21)
    axes[0].hist(p, bins=edges, color="0.5", label="all stars")
    if is_member is not None:
        axes[0].hist(p[is_member], bins=edges, histtype="step", color="C3", lw=1.5, label="true members")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("membership probability $P$")
    axes[0].set_ylabel("stars")
    axes[0].legend(fontsize="small")
    if is_member is not None:
        ax = axes[1]
        bins = np.clip(np.digitize(p, np.linspace(0, 1, 11)) - 1, 0, 9)
        counts = np.bincount(bins, minlength=10)
        used = counts > 0
        mean_p = np.bincount(bins, weights=p, minlength=10)[used] / counts[used]
        fraction = np.bincount(bins, weights=is_member.astype(float), minlength=10)[used] / counts[used]
        error = np.sqrt(np.clip(fraction * (1 - fraction), 1e-4, None) / counts[used])
        ax.plot([0, 1], [0, 1], ":", color="0.4", lw=1)
        ax.errorbar(mean_p, fraction, yerr=error, fmt="o", color="C0", ms=4)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("mean $P$ in bin")
        ax.set_ylabel("fraction of true members")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stream")
    parser.add_argument("--members", required=True)
    parser.add_argument("--tracks", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--outdir", required=True)
    args = parser.parse_args()
    spec = read_stream(args.stream)
    members = QTable.read(args.members)
    tracks = QTable.read(args.tracks)
    reference = QTable.read(args.reference)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    component = members.meta.get("components", ["stream"])[0]

    plot_sky(members, component).savefig(out / f"{spec.name}_sky.pdf")

    fig = plot_tracks(tracks, members, component, truth=reference if len(reference) else None)
    if len(reference) and not spec.is_mock:
        label = f"galstreams ({reference.meta.get('reference', '')})"
        for ax in fig.axes:
            for line in ax.get_lines():
                if line.get_label() == "truth":
                    line.set_label(label)
        handles: dict[str, object] = {}
        for ax in fig.axes:
            for handle, text in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(text, handle)
        fig.axes[0].legend(list(handles.values()), list(handles), loc="best", fontsize="small", ncols=min(len(handles), 3))
    fig.savefig(out / f"{spec.name}_tracks.pdf")

    p = np.asarray(members[f"p_{component}"], dtype=float)
    truth = np.asarray(members["true_component"]).astype(str) == "stream" if spec.is_mock else None
    probability_figure(p, truth).savefig(out / f"{spec.name}_probability.pdf")


if __name__ == "__main__":
    run_script(main)
