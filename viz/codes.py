"""The article's figure of the learned codes: per method, the training shapes' codes on their first two
principal axes, coloured by category, on one scale (the codes' RMS norm), with the spread printed on the
panel (see :mod:`deepsdf_ad.codes`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def draw_code_projection(panels: list[tuple[str, np.ndarray, list[str], str]], out: Path) -> Path:
    """``panels``: (title, projection (N, 2), category per code, text printed on the panel). Draws one panel
    each, side by side, all with the same limits, to ``out`` (PNG); returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("no codes to draw")
    lim = max(1.0, *(float(np.abs(p).max()) for _, p, _, _ in panels if len(p))) * 1.08
    cats = sorted({c for _, _, labels, _ in panels for c in labels})
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(cats)}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (title, proj, labels, text) in zip(axes[0], panels, strict=True):
        for c in cats:
            rows = [i for i, lab in enumerate(labels) if lab == c]
            if rows:
                ax.scatter(proj[rows, 0], proj[rows, 1], s=14, color=colours[c], label=c, alpha=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.85", lw=0.8, zorder=0)
        ax.axvline(0, color="0.85", lw=0.8, zorder=0)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("principal axis 1 (× RMS code norm)")
        ax.set_ylabel("principal axis 2")
        ax.text(0.02, 0.02, text, transform=ax.transAxes, fontsize=8, va="bottom",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"})
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
