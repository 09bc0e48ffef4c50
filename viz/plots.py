"""Training curves of one or more runs: loss per epoch (total and SDF term) and learning rates."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepsdf_ad.data_prep.formats import DataError, atomic_path

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def run_label(path: Path, all_paths: Sequence[Path]) -> str:
    """The run's folder name, or its path when two runs share a name."""
    names = [p.name for p in all_paths]
    return path.name if names.count(path.name) == 1 else str(path)


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
    dashed latent codes), one colour per run, written to ``out`` (.png .pdf .svg) atomically.
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
    colors = matplotlib.colormaps["tab10"].colors
    for k, (path, c) in enumerate(zip(paths, curves, strict=True)):
        color, label = colors[k % len(colors)], run_label(path, paths)
        ep = c["epoch"]
        if "loss" in c:
            ax_loss.plot(ep, c["loss"], color=color, label=f"{label}: loss")
        if "sdf_loss" in c:
            ax_loss.plot(ep, c["sdf_loss"], color=color, ls="--", alpha=0.8, label=f"{label}: sdf term")
        if "lr_decoder" in c:
            ax_lr.plot(ep, c["lr_decoder"], color=color, label=f"{label}: decoder")
        if "lr_latent" in c:
            ax_lr.plot(ep, c["lr_latent"], color=color, ls="--", label=f"{label}: codes")
    for ax, title, ylabel in ((ax_loss, "training loss", "loss"), (ax_lr, "learning rates", "learning rate")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            positive = all(np.nanmin(line.get_ydata()) > 0 for line in ax.lines)
            if positive:
                ax.set_yscale("log")
            ax.legend(fontsize=8)
    if not ax_loss.lines:
        raise DataError(f"{paths[0]}: metrics have no 'loss' column to plot")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lower().lstrip("."), dpi=dpi)
    return out
