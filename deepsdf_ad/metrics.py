"""Surface metrics, with one convention stated once and used everywhere.

Chamfer distance (DeepSDF's convention): 30,000 points sampled on each surface, squared nearest-neighbour
distances, mean in each direction, the two means summed, in the normalised frame (unit sphere). Reports
multiply it by 10^3.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

CHAMFER_POINTS = 30_000


def surface_points(mesh: trimesh.Trimesh, n: int = CHAMFER_POINTS, seed: int = 0) -> np.ndarray:
    from data_prep.meshes import sample_surface

    return sample_surface(mesh, n, np.random.default_rng(seed))[0]


def chamfer_squared(a: np.ndarray, b: np.ndarray) -> float:
    """DeepSDF's chamfer: mean squared distance a->b plus mean squared distance b->a."""
    da, _ = cKDTree(b).query(a, workers=-1)
    db, _ = cKDTree(a).query(b, workers=-1)
    return float(np.mean(da**2) + np.mean(db**2))


# ---- 2D fields (digits) -----------------------------------------------------------------------
# Convention: fields are compared on the same dense grid over [-1, 1]^2 (``meshing.grid_points``); a point is
# inside where sdf < 0 (or intensity >= 0.5 for heightfields).
NEAR_CONTOUR = 0.1
"""Band |true sdf| < this in which the SDF error is measured (the training clamp of the digits preset)."""


def iou(pred_inside: np.ndarray, true_inside: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same grid (1.0 when both are empty)."""
    pred_inside, true_inside = np.asarray(pred_inside, bool), np.asarray(true_inside, bool)
    union = np.logical_or(pred_inside, true_inside).sum()
    return float(np.logical_and(pred_inside, true_inside).sum() / union) if union else 1.0


def near_contour_error(pred_sdf: np.ndarray, true_sdf: np.ndarray, band: float = NEAR_CONTOUR) -> float:
    """Mean |pred - true| over the grid points with |true| < ``band``."""
    near = np.abs(true_sdf) < band
    return float(np.abs(np.asarray(pred_sdf)[near] - np.asarray(true_sdf)[near]).mean()) if near.any() else 0.0


def psnr(pred: np.ndarray, true: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of a heightfield (intensities in [0, peak]); inf when equal."""
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse))
