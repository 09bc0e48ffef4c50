"""``deepsdf-ad view``: the open3d viewer window, or the same picture rendered headless (--screenshot).

The window shows the same items as :func:`deepsdf_ad.viz.render.render_to_array`: side by side (``row``), in a
grid or on top of each other, each labelled; error-map colours with the colour range printed (the window
has no colour bar; screenshots do).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.viz.scene import (
    Camera,
    Item,
    as_item,
    color_by_distance,
    gather_items,
    layout_offsets,
    view_direction,
)


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


DISPLAY_TIMEOUT = 3.0
"""Seconds to wait for the display server to accept a connection before giving up."""


def display_problem(timeout: float = DISPLAY_TIMEOUT) -> str | None:
    """Why the display cannot be used, or None when it answers: no ``DISPLAY``/``WAYLAND_DISPLAY`` at all, or
    a server that does not answer within ``timeout`` seconds (open3d would otherwise retry forever at 100%
    CPU). Checks the Wayland socket, or opens an X11 connection (local, abstract or TCP socket) and waits for
    the server's first byte."""
    import socket

    wayland, x11 = os.environ.get("WAYLAND_DISPLAY"), os.environ.get("DISPLAY")
    if not (wayland or x11):
        return "no display for the open3d viewer (DISPLAY is not set)"
    if wayland:
        path = (wayland if wayland.startswith("/")
                else os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), wayland))
        if os.path.exists(path):
            return None
        if not x11:
            return f"WAYLAND_DISPLAY={wayland}: no Wayland socket at {path}"
    host, _, rest = x11.rpartition(":")
    try:
        number = int(rest.split(".", 1)[0])
    except ValueError:
        return f"DISPLAY={x11}: not a display name like :0 or host:0"
    attempts: list[tuple[int, object]] = []
    if host in ("", "unix") or host.startswith("/"):
        path = f"/tmp/.X11-unix/X{number}"
        if host.startswith("/"):  # a launchd-style socket path (macOS)
            path = f"{host}:{rest}"
        attempts += [(socket.AF_UNIX, "\0" + path), (socket.AF_UNIX, path)]
    if host not in ("unix",) and not host.startswith("/"):
        attempts.append((socket.AF_INET, (host or "localhost", 6000 + number)))
    reasons = []
    for family, address in attempts:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                # X11 connection setup (little-endian, protocol 11.0, no authorisation): any server answers
                # with a status byte (success, failed or authenticate); a dead end answers nothing
                sock.sendall(b"l\0\x0b\0\0\0\0\0\0\0\0\0")
                status = sock.recv(1)
                if status in (b"\0", b"\1", b"\2"):
                    return None
                reasons.append("not an X server" if status else "connection closed without an answer")
        except OSError as e:
            reasons.append(e.strerror or type(e).__name__)
    return (f"DISPLAY={x11}: the display does not answer "
            f"({reasons[-1] if reasons else 'no way to reach it'}, gave up after {timeout:g} s)")


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
    problem = display_problem()
    if problem:
        raise DataError(f"{problem}; add --screenshot OUT.png for a headless render")
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
    problem = display_problem() if screenshot is None else None
    if problem:  # fail before meshing a run's shapes
        raise DataError(f"{problem}; add --screenshot OUT.png for a headless render")
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
    from deepsdf_ad.viz.render import render_meshes

    out = render_meshes(items, screenshot, size=size, azimuth=azimuth, elevation=elevation, up=up,
                        layout=layout, vmax=vmax, renderer=renderer)
    info["screenshot"] = str(Path(out))
    return info
