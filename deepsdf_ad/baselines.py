"""The obvious baselines a learned shape prior must beat when it completes a partial scan.

- ``scan``: the scan's own points, taken as the answer.
- ``poisson``: Open3D's screened Poisson surface of the scan (points with normals).
- ``nearest``: the training shape whose surface lies closest to the scan points (the mean squared distance
  from each scan point to that shape's surface; no ground truth used), returned as it is.

Every function takes and returns arrays or meshes in the normalised frame; nothing here reads files.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

POISSON_DEPTH = 8
"""Octree depth of the Poisson reconstruction (Open3D's default; 256^3 at most, as the meshes it is compared
with)."""


def poisson_mesh(points: np.ndarray, normals: np.ndarray | None, depth: int = POISSON_DEPTH
                 ) -> trimesh.Trimesh:
    """Screened Poisson reconstruction (Kazhdan & Hoppe 2013, Open3D's) of ``points`` (N, 3). Without normals
    they are estimated from 30 neighbours and oriented consistently (Open3D's tangent-plane propagation).
    Returns a mesh, empty when the reconstruction fails."""
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    if normals is not None:
        pcd.normals = o3d.utility.Vector3dVector(np.asarray(normals, np.float64))
    else:
        pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(30))
        pcd.orient_normals_consistent_tangent_plane(10)
    try:
        mesh, _ = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd, depth=depth)
    except RuntimeError:
        return trimesh.Trimesh()
    return trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles), process=False)


def nearest_shape(points: np.ndarray, surfaces: list[np.ndarray]) -> tuple[int, np.ndarray]:
    """Index of the surface (each (M_i, 3)) with the smallest mean squared distance from ``points`` (N, 3) to
    it, and those distances for every surface (len(surfaces),)."""
    scores = np.array([float(np.mean(cKDTree(s).query(points)[0] ** 2)) for s in surfaces])
    return int(np.argmin(scores)), scores
