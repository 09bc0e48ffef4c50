"""What a picture shows: items (meshes and point clouds as arrays), their colours, and the camera.

Every renderer in :mod:`deepsdf_ad.viz.render` and the interactive viewer take the same :class:`Item` list and
:class:`Camera`, so a screenshot and the window show the same thing. Coordinates are whatever frame the
inputs are in (the normalised frame for a run's shapes); the camera frames them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deepsdf_ad.data_prep.formats import MESH_SUFFIXES, DataError, load_geometry

# Pale, distinguishable base colours (RGB in [0, 1]) for the inputs, in order.
PALETTE = np.array([
    [0.70, 0.72, 0.78],  # grey-blue
    [0.90, 0.62, 0.40],  # orange
    [0.55, 0.78, 0.55],  # green
    [0.80, 0.55, 0.75],  # violet
    [0.95, 0.85, 0.45],  # yellow
    [0.50, 0.75, 0.85],  # cyan
])
BACKGROUND = (1.0, 1.0, 1.0)
DISTANCE_CMAP = "viridis"
"""Colour map of error maps (perceptually uniform, readable in grey)."""
LAYOUTS = ("row", "grid", "overlay")
INPUT_SUFFIXES = MESH_SUFFIXES


@dataclass
class Item:
    """One mesh (``faces`` given) or point cloud (``faces`` None) to draw.

    ``vertices`` (N, 3) float64; ``faces`` (F, 3) int64 or None; ``colors`` (N, 3) float64 in [0, 1];
    ``label`` is written next to it in pictures.
    """

    vertices: np.ndarray
    faces: np.ndarray | None
    colors: np.ndarray
    label: str
    distances: np.ndarray | None = field(default=None, repr=False)
    """Per-vertex distance to the reference, when coloured by distance."""

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vertices.min(axis=0), self.vertices.max(axis=0)

    def translated(self, offset: np.ndarray) -> Item:
        return replace(self, vertices=self.vertices + np.asarray(offset, float))


def _item(vertices, faces, label: str, color=None) -> Item:
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    f = None if faces is None else np.asarray(faces, np.int64).reshape(-1, 3)
    if len(v) == 0:
        raise DataError(f"{label}: holds no points or triangles")
    if not np.all(np.isfinite(v)):
        raise DataError(f"{label}: has non-finite coordinates")
    if f is not None and len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise DataError(f"{label}: a face refers to a vertex that does not exist")
    base = np.asarray(color if color is not None else PALETTE[0], np.float64)
    colors = np.broadcast_to(base[:3], v.shape).copy()
    return Item(v, f if f is not None and len(f) else None, colors, label)


def load_item(path: str | os.PathLike, label: str | None = None) -> Item:
    """A mesh or point cloud file (.ply .obj .off .stl) as an :class:`Item` labelled with its file stem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() not in INPUT_SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use one of "
                        f"{' '.join(INPUT_SUFFIXES)}")
    vertices, faces = load_geometry(path)
    try:
        return _item(vertices, faces, label or path.stem)
    except DataError as e:
        raise DataError(f"{path}: {str(e).split(': ', 1)[-1]}") from None


def as_item(obj, label: str | None = None) -> Item:
    """An :class:`Item` from a path, a trimesh mesh or point cloud, an open3d geometry, or an Item."""
    if isinstance(obj, Item):
        return obj if label is None else replace(obj, label=label)
    if isinstance(obj, (str, os.PathLike)):
        return load_item(obj, label)
    name = label or type(obj).__name__
    import trimesh

    if isinstance(obj, trimesh.Trimesh):
        return _item(obj.vertices, obj.faces, name)
    if isinstance(obj, trimesh.PointCloud):
        return _item(obj.vertices, None, name)
    if hasattr(obj, "triangles") and hasattr(obj, "vertices"):  # open3d TriangleMesh
        return _item(np.asarray(obj.vertices), np.asarray(obj.triangles), name)
    if hasattr(obj, "points"):  # open3d PointCloud
        return _item(np.asarray(obj.points), None, name)
    arr = np.asarray(obj, np.float64)
    if arr.ndim == 2 and arr.shape[1] == 3:
        return _item(arr, None, name)
    raise DataError(f"{name}: cannot draw a {type(obj).__name__}; pass a mesh, a point cloud or a file path")


def run_shape_item(run_path: str | os.PathLike, shape: str, resolution: int | None = None,
                   device: str = "auto") -> Item:
    """The mesh (3D runs) or zero contour (2D runs, drawn as points at z = 0) of a training shape of a run."""
    from deepsdf_ad.device import resolve_device
    from deepsdf_ad.meshing import contours_2d, evaluate_grid, mesh_sdf, model_sdf
    from deepsdf_ad.runs import Run, load_trained

    dev = resolve_device(device)
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    code = model.latent.all_codes()[run.shape_index(shape)]
    fn = model_sdf(model, code, dev, cfg.mesh.batch_points)
    res = resolution or cfg.mesh.resolution
    label = shape.split("/", 1)[-1]
    if cfg.dim == 2:
        lines = contours_2d(evaluate_grid(fn, max(res, 128), 2))
        if not lines:
            raise DataError(f"{run.path}: shape '{shape}' has no zero contour; train longer or check the run")
        xy = np.concatenate(lines)
        return _item(np.c_[xy, np.zeros(len(xy))], None, label)
    try:
        mesh = mesh_sdf(fn, res)
    except DataError as e:
        raise DataError(f"{run.path}: shape '{shape}': {e}") from None
    return _item(mesh.vertices, mesh.faces, label)


def gather_items(files=(), run: str | None = None, shapes=(), resolution: int | None = None,
                 device: str = "auto") -> list[Item]:
    """Files first, then the run's shapes, each with its own palette colour."""
    items = [as_item(f) for f in files]
    if shapes and not run:
        raise DataError("--shape needs --run RUN")
    if run and not shapes:
        raise DataError(f"{run}: --run needs --shape ID (repeatable)")
    items += [run_shape_item(run, s, resolution, device) for s in shapes]
    if not items:
        raise DataError("nothing to show; pass FILE ... or --run RUN --shape ID")
    return [replace(it, colors=np.broadcast_to(PALETTE[i % len(PALETTE)], it.vertices.shape).copy())
            for i, it in enumerate(items)]


# ---- colour by distance ----------------------------------------------------------------------
def distances_to(reference: Item, points: np.ndarray) -> np.ndarray:
    """Unsigned distance (N,) of ``points`` (N, 3) to the reference's surface (mesh) or nearest point."""
    if reference.is_mesh:
        import open3d as o3d

        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(reference.vertices.astype(np.float32)),
                            o3d.core.Tensor(reference.faces.astype(np.uint32)))
        return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy().astype(np.float64)
    from scipy.spatial import cKDTree

    return cKDTree(reference.vertices).query(points)[0]


def colormap(values: np.ndarray, vmax: float, name: str = DISTANCE_CMAP) -> np.ndarray:
    """RGB (N, 3) in [0, 1] of ``values`` on [0, vmax]."""
    from matplotlib import colormaps

    t = np.clip(np.asarray(values, np.float64) / vmax, 0.0, 1.0) if vmax > 0 else np.zeros(len(values))
    return colormaps[name](t)[:, :3]


def color_by_distance(items: list[Item], reference, vmax: float | None = None) -> tuple[list[Item], float]:
    """Colour each item's vertices by their distance to ``reference`` (the error map).

    Args:
        items: what to colour.
        reference: path, geometry or :class:`Item` (a mesh, or a point cloud: nearest-point distance).
        vmax: distance mapped to the top of the colour map; default the largest distance over all items,
            so one colour bar fits them all (0 if every distance is 0: all take the colour of 0).

    Returns:
        The coloured items and the ``vmax`` used.
    """
    ref = as_item(reference)
    dists = [distances_to(ref, it.vertices) for it in items]
    if vmax is None:
        vmax = float(max(d.max() for d in dists))
    return [replace(it, colors=colormap(d, vmax), distances=d)
            for it, d in zip(items, dists, strict=True)], float(vmax)


# ---- camera ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking from ``eye`` at ``center``; ``fov`` is the vertical field of view
    (degrees)."""

    eye: np.ndarray
    center: np.ndarray
    up: np.ndarray
    fov: float
    width: int
    height: int

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(right, true_up, back): the camera's x, y and z axes in world coordinates (it looks along -z)."""
        back = self.eye - self.center
        back = back / np.linalg.norm(back)
        right = np.cross(self.up, back)
        right = right / np.linalg.norm(right)
        return right, np.cross(back, right), back

    def pose(self) -> np.ndarray:
        """4x4 camera-to-world matrix (OpenGL convention)."""
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2] = self.basis()
        m[:3, 3] = self.eye
        return m

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) (x right, y down) and distance along the view axis (N,) of points."""
        right, up, back = self.basis()
        rel = np.asarray(points, np.float64) - self.eye
        x, y, z = rel @ right, rel @ up, -(rel @ back)
        f = 0.5 * self.height / np.tan(np.deg2rad(self.fov) / 2)
        z_safe = np.where(z > 1e-9, z, 1e-9)
        px = 0.5 * self.width + f * x / z_safe
        py = 0.5 * self.height - f * y / z_safe
        return np.stack([px, py], axis=1), z


def up_vector(up: str) -> np.ndarray:
    if up == "z":
        return np.array([0.0, 0.0, 1.0])
    if up == "y":
        return np.array([0.0, 1.0, 0.0])
    raise DataError(f"unknown up axis '{up}'; use 'z' or 'y'")


def view_direction(azimuth: float, elevation: float, up: str = "z") -> np.ndarray:
    """Unit vector from the object to the camera (the convention of ``deepsdf-ad scan``)."""
    az, el = np.deg2rad(azimuth), np.deg2rad(elevation)
    d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    if up == "y":
        d = d[[0, 2, 1]] * np.array([1.0, 1.0, -1.0])
    elif up != "z":
        raise DataError(f"unknown up axis '{up}'; use 'z' or 'y'")
    return d


def frame_camera(points: np.ndarray, width: int, height: int, azimuth: float = 30.0, elevation: float = 20.0,
                 up: str = "z", fov: float = 30.0, margin: float = 0.08) -> Camera:
    """A camera at (azimuth, elevation) whose view just holds all ``points`` (N, 3), with a margin.

    The distance is the smallest at which every point lies inside the frustum shrunk by ``margin``
    (a fraction of the half-width/height on each side).
    """
    pts = np.asarray(points, np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = 0.5 * (lo + hi)
    world_up = up_vector(up)
    back = view_direction(azimuth, elevation, up)
    if abs(float(back @ world_up)) > 0.999:  # looking straight down/up: any horizontal axis will do
        world_up = np.roll(world_up, 1)
    probe = Camera(center + back, center, world_up, fov, width, height)
    right, cam_up, back = probe.basis()
    rel = pts - center
    x, y, z = np.abs(rel @ right), np.abs(rel @ cam_up), rel @ back
    tan_y = np.tan(np.deg2rad(fov) / 2) * (1.0 - margin)
    tan_x = tan_y * width / height
    dist = float(np.max(np.maximum(z + x / tan_x, z + y / tan_y)))
    extent = float(np.linalg.norm(hi - lo)) or 1.0
    dist = max(dist, 1e-3 * extent) + 1e-6
    return Camera(center + dist * back, center, world_up, fov, width, height)


def all_points(items: list[Item], max_points: int = 50_000) -> np.ndarray:
    """Vertices of all items, subsampled evenly to at most ``max_points`` (enough to frame them)."""
    pts = np.concatenate([it.vertices for it in items])
    if len(pts) > max_points:
        pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(np.int64)]
    return np.concatenate([pts, np.concatenate([np.stack(it.bounds()) for it in items])])


def layout_offsets(items: list[Item], layout: str, right: np.ndarray, down: np.ndarray,
                   gap: float = 0.15) -> list[np.ndarray]:
    """Translations that place items side by side (row), in a grid, or on top of each other (overlay).

    ``right`` and ``down`` are the directions items advance along (for pictures: the camera's axes, so
    items sit side by side on screen whatever the view). Each item is centred on its own cell.
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    centers = [0.5 * (lo + hi) for lo, hi in (it.bounds() for it in items)]
    if layout == "overlay" or len(items) == 1:
        return [np.zeros(3) for _ in items]
    size = max(float(np.linalg.norm(hi - lo)) for lo, hi in (it.bounds() for it in items)) or 1.0
    step = size * (1.0 + gap)
    cols = len(items) if layout == "row" else grid_shape(len(items))[1]
    return [(i % cols) * step * right + (i // cols) * step * down - c for i, c in enumerate(centers)]


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of a grid of ``n`` cells, as square as possible, wider than tall."""
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols
