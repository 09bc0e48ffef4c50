"""The article's diagram of the two methods: where the code comes from in training and at test time, for the
autodecoder (a table of codes; optimisation) and the autoencoder (an encoder; one forward pass)."""

from __future__ import annotations

from pathlib import Path


def draw_methods_diagram(out: Path) -> Path:
    """Draw the diagram to ``out`` (PNG); returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = (
        ("Autodecoder (DeepSDF)",
         [("training shape i", "#dddddd"), ("code table\nrow $z_i$", "#f4c27a"),
          ("decoder\n$f_\\theta(z, x)$", "#9cc3e6"), ("sdf at x", "#dddddd")],
         "training: $z_i$ and $\\theta$ by gradient descent on the sdf loss",
         "test: $\\theta$ frozen; $z$ found by optimisation on the observations\n(many decoder passes)"),
        ("Autoencoder (PointNet encoder)",
         [("surface points\nof the shape", "#dddddd"), ("encoder\n$g_\\phi(P)$", "#a8d5a2"),
          ("decoder\n$f_\\theta(z, x)$", "#9cc3e6"), ("sdf at x", "#dddddd")],
         "training: $\\phi$ and $\\theta$ by gradient descent on the same loss",
         "test: $z = g_\\phi(P)$, one encoder pass\n(encode+refine: then optimised as on the left)"),
    )
    for ax, (title, boxes, train, test) in zip(axes, rows, strict=True):
        ax.set_xlim(0, 4)
        ax.set_ylim(0, 3)
        ax.axis("off")
        ax.set_title(title, fontsize=12, fontweight="bold")
        for k, (label, colour) in enumerate(boxes):
            ax.add_patch(FancyBboxPatch((k + 0.08, 1.55), 0.84, 0.8, boxstyle="round,pad=0.02",
                                        facecolor=colour, edgecolor="black"))
            ax.text(k + 0.5, 1.95, label, ha="center", va="center", fontsize=9)
            if k < len(boxes) - 1:
                ax.annotate("", xy=(k + 1.08, 1.95), xytext=(k + 0.92, 1.95),
                            arrowprops={"arrowstyle": "->", "lw": 1.5})
        ax.text(2.0, 1.05, train, ha="center", va="center", fontsize=9)
        ax.text(2.0, 0.35, test, ha="center", va="center", fontsize=9, style="italic")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
