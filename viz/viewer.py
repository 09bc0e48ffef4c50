"""``deepsdf-ad view``: the open3d viewer window, or the same picture rendered headless (--screenshot).

The window shows the same items as :func:`viz.render.render_to_array`: side by side (``row``), in a grid
or on top of each other, each labelled; error-map colours with the colour range printed (the window
has no colour bar; screenshots do).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_prep.formats import DataError
from viz.scene import Camera, Item, as_item, color_by_distance, gather_items, layout_offsets, view_direction


def load_geometry(path: str | os.PathLike):
    """An open3d geometry for a mesh (triangles) or a point cloud (no faces)."""
    return to_open3d(as_item(path))


def to_open3d(it: Item):
    """The open3d TriangleMesh (with vertex normals) or PointCloud of an item, in its colours."""
    import open3d as o3d

    if it.is_mesh:
        g = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(it.vertices),
                                      o3d.utility.Vector3iVector(it.faces.astype(np.int32)))
        g.compute_vertex_normals()
        g.vertex_colors = o3d.utility.Vector3dVector(it.colors)
        return g
    g = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(it.vertices))
    g.colors = o3d.utility.Vector3dVector(it.colors)
    return g


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def arrange(items: Sequence[Item], layout: str, azimuth: float = 30.0, elevation: float = 20.0,
            up: str = "z") -> list[Item]:
    """Items moved so that, seen from (azimuth, elevation), they stand side by side / in a grid."""
    probe = Camera(view_direction(azimuth, elevation, up), np.zeros(3),
                   np.array([0.0, 0.0, 1.0]) if up == "z" else np.array([0.0, 1.0, 0.0]), 30.0, 1, 1)
    right, cam_up, _ = probe.basis()
    offsets = layout_offsets(list(items), layout, right, -cam_up)
    return [it.translated(o) for it, o in zip(items, offsets, strict=True)]


def view_items(items: Sequence[Item], layout: str = "row", azimuth: float = 30.0, elevation: float = 20.0,
               up: str = "z", title: str = "deepsdf-ad") -> None:
    """Open the open3d viewer on ``items`` (needs a display), each labelled in 3D."""
    if not has_display():
        raise DataError("no display for the open3d viewer (DISPLAY is not set); "
                        "add --screenshot OUT.png for a headless render")
    import open3d as o3d
    from open3d.visualization import gui

    placed = arrange(items, layout, azimuth, elevation, up)
    app = gui.Application.instance
    app.initialize()
    vis = o3d.visualization.O3DVisualizer(title, 1280, 800)
    for k, it in enumerate(placed):
        vis.add_geometry(f"{k}: {it.label}", to_open3d(it))
        lo, hi = it.bounds()
        vis.add_3d_label(np.array([0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1]), lo[2]]) if up == "z"
                         else np.array([0.5 * (lo[0] + hi[0]), lo[1], 0.5 * (lo[2] + hi[2])]), it.label)
    vis.show_settings = True
    vis.reset_camera_to_default()
    app.add_window(vis)
    app.run()


def view(files: Sequence[str] = (), run: str | None = None, shapes: Sequence[str] = (), layout: str = "row",
         color_by_distance_ref: str | None = None, screenshot: str | None = None,
         size: tuple[int, int] = (800, 600), azimuth: float = 30.0, elevation: float = 20.0, up: str = "z",
         resolution: int | None = None, renderer: str = "auto", device: str = "auto") -> dict:
    """``deepsdf-ad view``: a window, or with ``screenshot`` a headless picture. Returns a summary."""
    for f in files:  # a missing input is the first thing to say
        if not Path(f).is_file():
            raise DataError(f"{f}: file not found")
    if screenshot is None and not has_display():  # fail before meshing a run's shapes
        raise DataError("no display for the open3d viewer (DISPLAY is not set); "
                        "add --screenshot OUT.png for a headless render")
    items = gather_items(files, run, shapes, resolution, device)
    info: dict = {"inputs": [it.label for it in items]}
    vmax = None
    if color_by_distance_ref is not None:
        items, vmax = color_by_distance(items, color_by_distance_ref)
        info["distance_max"] = vmax
        info["distance_mean"] = [float(it.distances.mean()) for it in items]
    if screenshot is None:
        view_items(items, layout, azimuth, elevation, up, "deepsdf-ad: " + ", ".join(info["inputs"]))
        return info
    from viz.render import render_meshes

    out = render_meshes(items, screenshot, size=size, azimuth=azimuth, elevation=elevation, up=up, layout=layout,
                        vmax=vmax, renderer=renderer)
    info["screenshot"] = str(Path(out))
    return info
