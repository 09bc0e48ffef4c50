"""The open3d viewer: meshes and point clouds in one window."""

from __future__ import annotations

import os
from pathlib import Path

from data_prep.formats import DataError


def load_geometry(path: str | os.PathLike):
    """An open3d geometry for a mesh (triangles) or a point cloud (no faces)."""
    import numpy as np
    import open3d as o3d
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        geom = trimesh.load(path, process=False)
    except Exception as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if isinstance(geom, trimesh.Scene):
        geom = geom.dump(concatenate=True)
    if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
        m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(geom.vertices, float)),
                                      o3d.utility.Vector3iVector(np.asarray(geom.faces, np.int32)))
        m.compute_vertex_normals()
        return m
    pts = np.asarray(getattr(geom, "vertices", []), float)
    if len(pts) == 0:
        raise DataError(f"{path}: holds no points or triangles")
    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))


def view_files(files: list[str]) -> None:
    """Open every file in one open3d window (needs a display)."""
    import open3d as o3d

    geoms = [load_geometry(f) for f in files]
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise DataError("no display for the open3d viewer; use --screenshot OUT.png for a headless render")
    o3d.visualization.draw_geometries(geoms, window_name="deepsdf-ad: " + ", ".join(Path(f).name for f in files))
