"""Virtual depth scans: a pinhole camera casts rays at a mesh (no OpenGL) and keeps what it sees.

The result is a partial point cloud with normals (facing the camera), in the mesh's own frame. The camera
position and, when known, the mesh's normalisation go into the PLY header comments and a JSON sidecar, so
reconstruction can use free space along the rays and map results back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from deepsdf_ad.data_prep.formats import (
    SCANS_DIR,
    DataError,
    PointCloud,
    check_normalization,
    load_depth_png,
    load_points,
    save_points_ply,
    write_json,
)
from deepsdf_ad.data_prep.jobs import shape_rng
from deepsdf_ad.data_prep.params import CameraConfig, DepthCamera  # noqa: F401 (re-exported)


@dataclass
class Scan:
    """A partial point cloud seen by one camera, in the mesh's frame."""

    points: np.ndarray
    normals: np.ndarray
    camera: np.ndarray
    meta: dict = field(default_factory=dict)


def camera_position(center: np.ndarray, radius: float, cam: CameraConfig) -> np.ndarray:
    az, el = np.deg2rad(cam.azimuth), np.deg2rad(cam.elevation)
    d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    if cam.up == "y":
        d = d[[0, 2, 1]] * np.array([1.0, 1.0, -1.0])
    elif cam.up != "z":
        raise ValueError(f"unknown up axis '{cam.up}'; use 'z' or 'y'")
    return center + cam.distance * radius * d


def check_camera(cam: CameraConfig) -> None:
    """Raise :class:`DataError` for a camera that cannot work (the message names the option)."""
    if not 0.0 < cam.fov < 180.0:
        raise DataError(f"camera: --fov must be between 0 and 180 degrees, got {cam.fov}")
    if cam.distance <= 1.0:
        raise DataError("camera: --distance must exceed 1 (the camera would sit inside the object), got "
                        f"{cam.distance}")
    if cam.noise < 0:
        raise DataError(f"camera: --noise must be 0 or more, got {cam.noise}")
    if not 8 <= cam.resolution <= 4096:
        raise DataError(f"camera: --resolution must be between 8 and 4096, got {cam.resolution}")
    if cam.up not in ("z", "y"):
        raise DataError(f"camera: unknown up axis '{cam.up}'; use 'z' or 'y'")


def scan_mesh(mesh: trimesh.Trimesh, cam: CameraConfig, rng: np.random.Generator | None = None) -> Scan:
    """Cast one ray per pixel from a pinhole camera at the mesh; return the visible surface points.

    Args:
        mesh: the object, any frame (the camera distance and noise are relative to its bounding radius).
        cam: the camera; ``cam.noise`` adds Gaussian noise to each depth along its ray.
        rng: generator for the depth noise.
    Returns:
        a :class:`Scan` in the mesh's frame: points (N, 3), normals (N, 3) facing the camera, camera (3,).
    """
    import open3d as o3d

    check_camera(cam)
    rng = rng or np.random.default_rng(0)
    v = np.asarray(mesh.vertices, np.float64)
    center = 0.5 * (v.min(axis=0) + v.max(axis=0))
    radius = float(np.linalg.norm(v - center, axis=1).max())
    eye = camera_position(center, radius, cam)
    up = [0.0, 0.0, 1.0] if cam.up == "z" else [0.0, 1.0, 0.0]
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    rays = scene.create_rays_pinhole(
        fov_deg=cam.fov, center=center.tolist(), eye=eye.tolist(), up=up,
        width_px=cam.resolution, height_px=cam.resolution,
    )
    ans = scene.cast_rays(rays)
    t = ans["t_hit"].numpy().reshape(-1)
    r = rays.numpy().reshape(-1, 6)
    hit = np.isfinite(t)
    if not hit.any():
        raise DataError("the camera sees nothing of the mesh; change --azimuth/--elevation or --distance")
    origin, direction = r[hit, :3].astype(np.float64), r[hit, 3:].astype(np.float64)
    unit = direction / np.linalg.norm(direction, axis=1, keepdims=True)
    depth = t[hit].astype(np.float64) * np.linalg.norm(direction, axis=1)
    if cam.noise > 0:
        depth = depth + rng.standard_normal(depth.shape) * cam.noise * radius
    pts = origin + unit * depth[:, None]
    normals = ans["primitive_normals"].numpy().reshape(-1, 3)[hit].astype(np.float64)
    facing = np.sum(normals * unit, axis=1) > 0
    normals[facing] *= -1  # point the normals at the camera: the side that is seen is outside
    meta = {"camera": eye.tolist(), "camera_config": asdict(cam), "points": int(len(pts))}
    return Scan(pts, normals, eye, meta)


def save_scan(path: str | os.PathLike, scan: Scan,
              normalization: tuple[np.ndarray, float] | None = None) -> None:
    """Write ``path`` (PLY with normals, camera in a header comment) and a ``.json`` sidecar."""
    path = Path(path)
    meta = dict(scan.meta)
    meta["camera"] = np.asarray(scan.camera, float).tolist()
    if normalization is not None:
        meta["normalization"] = {"offset": np.asarray(normalization[0], float).tolist(),
                                 "scale": float(normalization[1])}
    comments = ("deepsdf-ad scan", "camera " + " ".join(f"{c:.9g}" for c in meta["camera"]))
    save_points_ply(path, scan.points, scan.normals, comments)
    write_json(path.with_suffix(".json"), meta)


def scan_paths(root: Path, category: str, sid: str, k: int) -> list[Path]:
    """The files of a shape's ``k`` scans in a data root: ``scans/<category>/<id>_<i>.ply``."""
    return [root / SCANS_DIR / category / f"{sid}_{i}.ply" for i in range(k)]


def scan_params(k: int, camera: CameraConfig) -> dict:
    """The scan settings a manifest records with a shape's scans (they are taken again when these change)."""
    return {"k": k, "camera": asdict(camera)}


def write_scans(mesh: trimesh.Trimesh, root: Path, category: str, sid: str, k: int, camera: CameraConfig,
                seed: int, normalization: tuple[np.ndarray, float]) -> list[str]:
    """Write ``k`` scans of ``mesh`` (in its own frame; ``normalization`` goes into each sidecar) to
    :func:`scan_paths`: scan i is taken from azimuth ``camera.azimuth + 360 i / k``, with the generator
    ``shape_rng(seed, "<category>/<id>", 2 + i)``. Returns the files' paths relative to ``root``."""
    written = []
    for i, target in enumerate(scan_paths(root, category, sid, k)):
        cam = CameraConfig(**{**asdict(camera), "azimuth": camera.azimuth + 360.0 * i / k})
        save_scan(target, scan_mesh(mesh, cam, shape_rng(seed, f"{category}/{sid}", 2 + i)), normalization)
        written.append(str(target.relative_to(root)))
    return written


def load_scan(path: str | os.PathLike) -> tuple[PointCloud, dict]:
    """Read a partial scan and whatever is known of its camera (sidecar JSON or PLY header comment)."""
    path = Path(path)
    cloud = load_points(path)
    meta: dict = {}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{sidecar}: not valid JSON ({e}); delete it or fix it") from None
        if not isinstance(meta, dict):
            raise DataError(f"{sidecar}: expected a JSON object")
    if "camera" not in meta:
        for c in cloud.comments:
            if c.startswith("camera "):
                try:
                    meta["camera"] = [float(x) for x in c.split()[1:4]]
                except ValueError:
                    raise DataError(f"{path}: malformed 'camera' comment in the PLY header") from None
    if "camera" in meta:
        try:
            cam = np.asarray(meta["camera"], float)
        except (TypeError, ValueError):
            cam = np.zeros(0)
        if cam.shape != (3,) or not np.isfinite(cam).all():
            raise DataError(f"{path}: camera position must be 3 finite numbers, got "
                            f"{str(meta['camera'])[:80]}")
    if "normalization" in meta:
        norm = meta["normalization"]
        try:
            offset, scale = np.asarray(norm["offset"], float).reshape(-1), float(norm["scale"])
        except (TypeError, ValueError, KeyError):
            raise DataError(f"{sidecar}: 'normalization' must be "
                            '{"offset": [x, y, z], "scale": s}') from None
        check_normalization(sidecar, offset, scale)
        meta["normalization"] = {"offset": offset.tolist(), "scale": scale}
    return cloud, meta


# ---- depth images ------------------------------------------------------------------------------------------
def check_depth_camera(cam: DepthCamera) -> None:
    """Raise :class:`DataError` for intrinsics that cannot work (the message names the flag)."""
    values = np.array([cam.fx, cam.fy, cam.cx, cam.cy], float)
    if not np.isfinite(values).all() or cam.fx <= 0 or cam.fy <= 0:
        raise DataError(f"--intrinsics: need fx, fy > 0 and finite fx, fy, cx, cy, got {values.tolist()}")
    if not (np.isfinite(cam.depth_scale) and cam.depth_scale > 0):
        raise DataError(f"--depth-scale: must be a finite number > 0, got {cam.depth_scale}")


def points_from_depth(depth: np.ndarray, cam: DepthCamera) -> np.ndarray:
    """Back-project a depth image through a pinhole camera (see :class:`DepthCamera` for the convention).

    Args:
        depth: raw depths (H, W), any numeric dtype; 0 (and NaN, negative) = no reading.
        cam: the intrinsics and the depth scale.
    Returns:
        (N, 3) float64 points in the camera frame, one per valid pixel, row by row (Open3D's
        ``PointCloud.create_from_depth_image`` with no depth truncation gives the same points, in float32).
    """
    check_depth_camera(cam)
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 2:
        raise DataError(f"a depth image is (H, W), got shape {depth.shape}")
    v, u = np.nonzero(depth > 0)  # row-major, as Open3D; NaN > 0 is False
    z = depth[v, u] / cam.depth_scale
    return np.stack([(u - cam.cx) * z / cam.fx, (v - cam.cy) * z / cam.fy, z], axis=1)


def load_depth_scan(path: str | os.PathLike, cam: DepthCamera) -> tuple[PointCloud, dict]:
    """A 16-bit depth PNG as a partial scan: its points in the camera frame and ``{"camera": [0, 0, 0]}``
    (the camera at the origin: reconstruction then uses the free space along the rays), like
    :func:`load_scan`."""
    depth = load_depth_png(path)
    try:
        points = points_from_depth(depth, cam)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    if len(points) == 0:
        raise DataError(f"{path}: no valid pixel (every depth is 0, no reading); is this the right image?")
    return PointCloud(points), {"camera": [0.0, 0.0, 0.0]}
