"""Surface metrics, with one convention stated once and used everywhere.

Chamfer distance (DeepSDF's convention): 30,000 points sampled on each surface, squared nearest-neighbour
distances, mean in each direction, the two means summed, in the normalised frame (unit sphere). Reports
multiply it by 10^3.

Occupancy Networks' conventions, on the same 30,000 points per surface, after scaling both surfaces by the
one factor that makes the ground truth's bounding box 1 on its longest side (ONet's unit cube):

- Chamfer-L1: the mean of the two directions' mean (unsquared) nearest-neighbour distances;
- F-score at tau = 1% of that side: harmonic mean of precision (share of predicted points within tau of the
  truth) and recall (share of true points within tau of the prediction);
- normal consistency: mean |cos| between each point's normal and its nearest neighbour's on the other
  surface, averaged over both directions;
- volumetric IoU: of the inside regions, on 100,000 points uniform in [-1, 1]^3 (normalised frame), the
  truth from the mesh's winding number, the prediction from the decoder's sign (sdf < 0).
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

CHAMFER_POINTS = 30_000


def surface_points(mesh: trimesh.Trimesh, n: int = CHAMFER_POINTS, seed: int = 0) -> np.ndarray:
    from deepsdf_ad.data_prep.meshes import sample_surface

    return sample_surface(mesh, n, np.random.default_rng(seed))[0]


def chamfer_squared(a: np.ndarray, b: np.ndarray) -> float:
    """DeepSDF's chamfer: mean squared distance a->b plus mean squared distance b->a."""
    da, _ = cKDTree(b).query(a, workers=-1)
    db, _ = cKDTree(a).query(b, workers=-1)
    return float(np.mean(da**2) + np.mean(db**2))


FSCORE_TAU = 0.01
"""F-score threshold, as a share of the ground truth's longest bounding-box side."""
IOU_POINTS = 100_000


def unit_cube_scale(reference: np.ndarray) -> float:
    """The factor that makes the bounding box of ``reference`` (N, D) 1 on its longest side."""
    side = float(np.ptp(np.asarray(reference), axis=0).max())
    if side <= 0:
        raise ValueError("the reference points all coincide")
    return 1.0 / side


def _nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (N,) from each point of ``a`` to its nearest point of ``b``, and that point's index."""
    return cKDTree(b).query(a, workers=-1)


def chamfer_l1(a: np.ndarray, b: np.ndarray) -> float:
    """ONet's Chamfer-L1: 0.5 * (mean distance a->b + mean distance b->a), unsquared, in the given frame."""
    return float(0.5 * (_nearest(a, b)[0].mean() + _nearest(b, a)[0].mean()))


def fscore(pred: np.ndarray, true: np.ndarray, tau: float) -> tuple[float, float, float]:
    """F-score at ``tau``: (F, precision, recall); precision = share of ``pred`` within ``tau`` of ``true``,
    recall = share of ``true`` within ``tau`` of ``pred``. 0 when both are 0."""
    precision = float(np.mean(_nearest(pred, true)[0] < tau))
    recall = float(np.mean(_nearest(true, pred)[0] < tau))
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return f, precision, recall


def normal_consistency(a: np.ndarray, na: np.ndarray, b: np.ndarray, nb: np.ndarray) -> float:
    """Mean |cos| between normals of nearest neighbours, averaged over a->b and b->a (1 = all parallel)."""
    def unit(n):
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)

    na, nb = unit(np.asarray(na, np.float64)), unit(np.asarray(nb, np.float64))
    ia = _nearest(a, b)[1]
    ib = _nearest(b, a)[1]
    return float(0.5 * (np.abs(np.sum(na * nb[ia], axis=1)).mean()
                        + np.abs(np.sum(nb * na[ib], axis=1)).mean()))


def surface_metrics(pred: np.ndarray, pred_normals: np.ndarray, true: np.ndarray,
                    true_normals: np.ndarray | None, tau: float = FSCORE_TAU) -> dict[str, float]:
    """Every surface metric of the module docstring for points sampled on two surfaces (normalised frame).

    Returns ``chamfer`` (DeepSDF, not yet x10^3), ``chamfer_l1``, ``fscore``, ``precision``, ``recall`` and
    ``normal_consistency`` (when both have normals) in ONet's unit-cube scale.
    """
    s = unit_cube_scale(true)
    a, b = pred * s, true * s
    f, p, r = fscore(a, b, tau)
    out = {"chamfer": chamfer_squared(pred, true), "chamfer_l1": chamfer_l1(a, b), "fscore": f,
           "precision": p, "recall": r}
    if pred_normals is not None and true_normals is not None:
        out["normal_consistency"] = normal_consistency(a, pred_normals, b, true_normals)
    return out


def surface_points_normals(mesh: trimesh.Trimesh, n: int = CHAMFER_POINTS, seed: int = 0
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-uniform points on ``mesh`` and their face normals (the sampler of ``data_prep``)."""
    from deepsdf_ad.data_prep.meshes import sample_surface

    return sample_surface(mesh, n, np.random.default_rng(seed))


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
    return (float(np.abs(np.asarray(pred_sdf)[near] - np.asarray(true_sdf)[near]).mean()) if near.any()
            else 0.0)


def psnr(pred: np.ndarray, true: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of a heightfield (intensities in [0, peak]); inf when equal."""
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse))
