"""The published numbers this toolkit's results are set beside (DeepSDF, Occupancy Networks), each with the
convention it is measured in and how a toolkit number is brought into it; one source of truth for the article
and the docs.

Conventions (see :mod:`deepsdf_ad.metrics`): DeepSDF's chamfer is the sum of the two directions' mean squared
nearest-neighbour distances between 30,000 surface points, in the unit-sphere frame, x10^3; this toolkit
reports ``chamfer_x1e3`` in exactly that convention. Occupancy Networks' Chamfer-L1 is the mean of the two
directions' mean distances with the ground truth's bounding box scaled to 1 on its longest side, written in
units of 1/10 of that side (ONet, section 4: "we use 1/10 times the maximal edge length of the current
object's bounding box as unit 1"); this toolkit's ``chamfer_l1`` is in units of the side, so it is multiplied
by 10 to compare. IoU and normal consistency need no conversion.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedResult:
    paper: str
    """Short name of the paper (see :data:`PAPERS`)."""
    where: str
    """Where in the paper the number is printed."""
    task: str
    """The article's section it corresponds to: 'representation' (training shapes from their codes),
    'reconstruction' (held-out shapes from full observations) or 'completion' (from a partial view)."""
    data: str
    """The shapes it was measured on."""
    metric: str
    """This toolkit's name of the metric (a key of a results.json's stats)."""
    statistic: str
    """'mean' or 'median' over the shapes."""
    value: float
    """As printed in the paper, in the paper's units."""


PAPERS = {
    "DeepSDF": "Park et al., DeepSDF, CVPR 2019",
    "ONet": "Mescheder et al., Occupancy Networks, CVPR 2019",
}

PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult("DeepSDF", "Table 2", "representation", "ShapeNet cars, training shapes (known)",
                    "chamfer_x1e3", "mean", 0.084),
    PublishedResult("DeepSDF", "Table 2", "representation", "ShapeNet cars, training shapes (known)",
                    "chamfer_x1e3", "median", 0.058),
    PublishedResult("DeepSDF", "Table 3", "reconstruction", "ShapeNet chairs, held out (dense SDF samples)",
                    "chamfer_x1e3", "mean", 0.204),
    PublishedResult("DeepSDF", "Table 3", "reconstruction", "ShapeNet chairs, held out (dense SDF samples)",
                    "chamfer_x1e3", "median", 0.072),
    PublishedResult("ONet", "Table 2", "reconstruction", "ShapeNet, 13 classes, held out (300 noisy points)",
                    "iou", "mean", 0.778),
    PublishedResult("ONet", "Table 2", "reconstruction", "ShapeNet, 13 classes, held out (300 noisy points)",
                    "chamfer_l1", "mean", 0.079),
    PublishedResult("ONet", "Table 2", "reconstruction", "ShapeNet, 13 classes, held out (300 noisy points)",
                    "normal_consistency", "mean", 0.895),
)
"""Entered by hand from the papers' tables; a test checks each is in a metric this toolkit measures. DeepSDF's
Table 2 is the known-shapes (K) experiment on ShapeNet cars, its Table 3 the unknown-shapes (U) one per class;
ONet's Table 2 is 3D reconstruction from 300 noisy points (its Table 3: voxel super-resolution). The table
numbers and captions were checked against the papers from memory and blog summaries only: the papers' tables
could not be opened where this was written (they are images in every copy the search tools reach)."""

DEEPSDF_BUDGET = {"source": "Park et al. 2019", "preset": "configs/deepsdf_chairs.yaml",
                  "shapes": "a ShapeNet class's training split (thousands)", "time": "GPU, not stated here",
                  "test_steps": "800 × 8,000", "mesh_resolution": 256}
"""DeepSDF's published training and test-time setup: the architecture and training from the preset that
reproduces its release's ``specs.json``, the test-time schedule (800 steps of 8,000 samples) and the 256^3
marching-cubes grid from its ``reconstruct.py``."""

TO_PAPER_UNITS = {"chamfer_x1e3": 1.0, "chamfer_l1": 10.0, "iou": 1.0, "normal_consistency": 1.0}
"""Factor that brings a toolkit value of each metric into the papers' units (see the module docstring)."""

UNITS = {"chamfer_x1e3": "chamfer ×10³ (DeepSDF: squared, unit sphere)",
         "chamfer_l1": "Chamfer-L1 (ONet: unit = 1/10 of the box's longest side)",
         "iou": "volumetric IoU", "normal_consistency": "normal consistency"}


def in_paper_units(metric: str, value: float) -> float:
    """A toolkit value of ``metric`` in the published tables' units."""
    if metric not in TO_PAPER_UNITS:
        raise KeyError(f"no published convention for metric '{metric}'")
    return value * TO_PAPER_UNITS[metric]


def comparison_rows(sections: dict, methods: list[str]) -> list[dict]:
    """One row per published number, with this toolkit's value of the same metric and statistic in the same
    section (from a results.json's ``sections``), per method, in the paper's units; None where the section or
    metric was not measured. Also the ratio toolkit / published (> 1: the toolkit's is larger).

    Each row: ``{"published": PublishedResult, "ours": {method: value | None}, "ratio": {method: float |
    None}, "shapes": {method: n}}``."""
    rows = []
    for p in PUBLISHED:
        ours, ratio, shapes = {}, {}, {}
        for m in methods:
            sec = sections.get(p.task, {}).get("methods", {}).get(m)
            st = None if sec is None else sec["stats"].get("all", {}).get(p.metric)
            raw = None if st is None else st.get(p.statistic)
            v = None if raw is None else in_paper_units(p.metric, raw)
            ours[m] = v
            ratio[m] = None if v is None or p.value == 0 else v / p.value
            shapes[m] = None if sec is None else sec["stats"].get("all", {}).get("shapes")
        rows.append({"published": p, "ours": ours, "ratio": ratio, "shapes": shapes})
    return rows
