"""Training curves of one or more runs: loss per epoch (total and SDF term) and learning rates."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepsdf_ad.data_prep.formats import DataError, atomic_path

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def run_labels(paths: Sequence[Path]) -> list[str]:
    """A legend name per run: the shortest ending of its path (folder names) that no other run shares, e.g.
    ``autodecoder/seed_0`` beside ``autoencoder/seed_0``, ``run_a`` beside ``run_b``."""
    parts = [Path(p).resolve().parts for p in paths]
    labels = []
    for mine in parts:
        for n in range(1, len(mine) + 1):
            tail = mine[-n:]
            if sum(1 for other in parts if other[-n:] == tail) == 1:
                break
        labels.append("/".join(tail))
    return labels


def run_colors(labels: Sequence[str]) -> list[tuple]:
    """One colour family per group of runs (a label's part before its last ``/``: a method's seeds), shades
    within it; one colour per run when no two share a group."""
    import matplotlib

    groups = [lab.rsplit("/", 1)[0] if "/" in lab else lab for lab in labels]
    order = list(dict.fromkeys(groups))
    if len(order) == len(labels):
        base = matplotlib.colormaps["tab10"].colors
        return [base[k % len(base)] for k in range(len(labels))]
    maps = ["Blues", "Oranges", "Greens", "Purples", "Reds", "Greys"]
    out = []
    for lab, g in zip(labels, groups, strict=True):
        members = [x for x, h in zip(labels, groups, strict=True) if h == g]
        shade = 0.9 - 0.45 * members.index(lab) / max(len(members) - 1, 1)  # dark to lighter
        out.append(matplotlib.colormaps[maps[order.index(g) % len(maps)]](shade))
    return out


def load_curves(run_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of RUN/metrics.jsonl as float arrays (NaN where a row lacks a key); ``epoch`` always."""
    from deepsdf_ad.runs import METRICS, Run

    run = Run(run_path)
    if not run.path.is_dir():
        raise DataError(f"{run.path}: run folder not found")
    rows = [r for r in run.metrics() if isinstance(r, dict) and "epoch" in r]
    if not rows:
        raise DataError(f"{run.path / METRICS}: no training metrics yet; train the run first")
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float))})
    return {k: np.array([float(r.get(k, np.nan)) for r in rows]) for k in keys}


def plot_runs(run_paths: Sequence[str | os.PathLike], out: str | os.PathLike,
              size: tuple[int, int] = (1000, 400)) -> Path:
    """Loss per epoch (log scale; solid total, dashed SDF term) and learning rates (solid decoder,
    dashed latent codes), written to ``out`` (.png .pdf .svg) atomically. One legend entry per run, named by
    :func:`run_labels`; the seeds of one method share a colour family (:func:`run_colors`).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out = Path(out)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise DataError(f"{out}: unsupported picture type '{out.suffix}'; use one of "
                        f"{' '.join(FIGURE_SUFFIXES)}")
    if not run_paths:
        raise DataError("no runs to plot; pass RUN [RUN ...]")
    paths = [Path(p) for p in run_paths]
    curves = [load_curves(p) for p in paths]
    dpi = 100
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, layout="constrained")
    ax_loss, ax_lr = fig.subplots(1, 2)
    labels = run_labels(paths)
    for label, color, c in zip(labels, run_colors(labels), curves, strict=True):
        ep = c["epoch"]
        if "loss" in c:
            ax_loss.plot(ep, c["loss"], color=color, label=label)
        if "sdf_loss" in c:
            ax_loss.plot(ep, c["sdf_loss"], color=color, ls="--", alpha=0.8)
        if "lr_decoder" in c:
            ax_lr.plot(ep, c["lr_decoder"], color=color, label=label)
        if "lr_latent" in c:
            ax_lr.plot(ep, c["lr_latent"], color=color, ls="--")
    for ax, title, ylabel in ((ax_loss, "training loss (solid: total, dashed: SDF term)", "loss"),
                              (ax_lr, "learning rates (solid: decoder, dashed: codes)", "learning rate")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            positive = all(np.nanmin(line.get_ydata()) > 0 for line in ax.lines)
            if positive:
                ax.set_yscale("log")
    handles, names = ax_loss.get_legend_handles_labels()
    if handles:  # one legend (a run per entry), beside the plots
        ax_lr.legend(handles, names, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                     borderaxespad=0)
    if not ax_loss.lines:
        raise DataError(f"{paths[0]}: metrics have no 'loss' column to plot")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lower().lstrip("."), dpi=dpi)
    return out
