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
