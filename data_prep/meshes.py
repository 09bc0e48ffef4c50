"""Meshes: load, normalise, sample the surface, and sample signed distances (DeepSDF's distribution).

Frames: a mesh file is in its *original* frame; samples are written in the *normalised* frame,
``normalised = (original + offset) * scale`` with DeepSDF's convention (offset = -bounding-box centre,
scale = 1 / (1.03 * max distance of a vertex from that centre)), so every shape fits the unit sphere.

Signs: generalized winding numbers (Jacobson et al. 2013; libigl's fast Barnes-Hut version), which stay
right on meshes with holes and gaps where ray parity fails; distances are exact point-to-triangle
distances (open3d's BVH).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from data_prep.formats import MESH_SUFFIXES, DataError

MAX_FACES = 5_000_000


@dataclass
class SamplingConfig:
    """How SDF samples are drawn (defaults: DeepSDF's preprocessor)."""

    samples: int = 500_000
    """Total samples per shape."""
    variances: tuple[float, float] = (0.005, 0.0005)
    """Variances of the two Gaussian perturbations of surface points (normalised frame)."""
    uniform_fraction: float = 3 / 50
    """Share of samples drawn uniformly in [-1, 1]^3; the rest is split evenly between the two noise levels."""
    surface_points: int = 30_000
    """Surface points written to ``DATA/surface``."""


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """Load a triangle mesh and check it can be used; raises :class:`DataError` with the reason."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise DataError(f"{path}: unsupported mesh format '{path.suffix}'; use one of {', '.join(MESH_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        geom = trimesh.load(path, force="mesh", process=False)
    except Exception as e:  # trimesh's parsers raise many kinds of errors on malformed files
        raise DataError(f"{path}: cannot parse mesh ({type(e).__name__}: {e})") from None
    if not isinstance(geom, trimesh.Trimesh):
        raise DataError(f"{path}: holds no triangle mesh")
    return check_mesh(geom, path)


def check_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike = "<mesh>") -> trimesh.Trimesh:
    """Validate a mesh: finite vertices, at least one non-degenerate face, not absurdly large."""
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64)
    if len(f) == 0:
        raise DataError(f"{path}: mesh has no faces")
    if len(f) > MAX_FACES:
        raise DataError(f"{path}: mesh has {len(f):,} faces, more than the limit {MAX_FACES:,}; simplify it first")
    if f.min() < 0 or f.max() >= len(v):
        raise DataError(f"{path}: face indices out of range")
    if not np.isfinite(v).all():
        raise DataError(f"{path}: mesh has NaN or infinite vertex coordinates")
    if np.abs(v).max() > 1e15:
        raise DataError(f"{path}: vertex coordinates up to {np.abs(v).max():.3g}, too large to be meaningful")
    mesh = trimesh.Trimesh(v, f, process=False)
    areas = mesh.area_faces
    if not np.isfinite(areas).all() or areas.sum() <= 0:
        raise DataError(f"{path}: mesh is degenerate (zero surface area)")
    ext = np.ptp(v[np.unique(f)], axis=0)
    if ext.max() <= 0:
        raise DataError(f"{path}: mesh is degenerate (all vertices coincide)")
    return mesh


def normalization(mesh: trimesh.Trimesh) -> tuple[np.ndarray, float]:
    """DeepSDF's normalisation: ``offset`` = -bbox centre, ``scale`` = 1 / (1.03 * max vertex distance)."""
    used = np.asarray(mesh.vertices)[np.unique(np.asarray(mesh.faces))]
    centre = 0.5 * (used.min(axis=0) + used.max(axis=0))
    radius = float(np.linalg.norm(used - centre, axis=1).max())
    return -centre, 1.0 / (1.03 * radius)


def apply_normalization(points: np.ndarray, offset: np.ndarray, scale: float) -> np.ndarray:
    return (np.asarray(points) + offset) * scale


def undo_normalization(points: np.ndarray, offset: np.ndarray, scale: float) -> np.ndarray:
    return np.asarray(points) / scale - offset


def normalized_mesh(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, np.ndarray, float]:
    offset, scale = normalization(mesh)
    v = apply_normalization(mesh.vertices, offset, scale)
    return trimesh.Trimesh(v, np.asarray(mesh.faces), process=False), offset, scale


def sample_surface(mesh: trimesh.Trimesh, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform surface samples; returns points (n, 3) and their face normals (n, 3)."""
    areas = mesh.area_faces
    face = rng.choice(len(areas), size=n, p=areas / areas.sum())
    tri = np.asarray(mesh.triangles)[face]
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    pts = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    return pts, np.asarray(mesh.face_normals)[face]


def sample_query_points(mesh: trimesh.Trimesh, cfg: SamplingConfig, rng: np.random.Generator) -> np.ndarray:
    """DeepSDF's sample distribution in the normalised frame: surface points perturbed at two noise
    levels (equal shares) plus a uniform share in [-1, 1]^3."""
    n_uniform = int(round(cfg.samples * cfg.uniform_fraction))
    n_near = cfg.samples - n_uniform
    surf, _ = sample_surface(mesh, n_near, rng)
    sigma = np.sqrt(np.repeat(np.asarray(cfg.variances, np.float64), [n_near - n_near // 2, n_near // 2]))
    near = surf + rng.standard_normal((n_near, 3)) * sigma[:, None]
    uniform = rng.uniform(-1.0, 1.0, size=(n_uniform, 3))
    return np.concatenate([near, uniform], axis=0)


class SignedDistance:
    """Exact unsigned distance to the triangles (BVH) with the sign of the generalized winding number.

    ``inside`` is winding number > 0.5. Works on open meshes, gaps and soups (the winding number of a
    surface with a hole still exceeds 1/2 inside), unlike ray parity.
    """

    def __init__(self, mesh: trimesh.Trimesh):
        import open3d as o3d

        self.vertices = np.ascontiguousarray(mesh.vertices, np.float64)
        self.faces = np.ascontiguousarray(mesh.faces, np.int64)
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(
            o3d.core.Tensor(self.vertices.astype(np.float32)), o3d.core.Tensor(self.faces.astype(np.uint32))
        )

    def unsigned(self, points: np.ndarray) -> np.ndarray:
        import open3d as o3d

        q = o3d.core.Tensor(np.ascontiguousarray(points, np.float32))
        return self._scene.compute_distance(q).numpy().astype(np.float64)

    def winding(self, points: np.ndarray) -> np.ndarray:
        import igl

        return igl.fast_winding_number(self.vertices, self.faces, np.ascontiguousarray(points, np.float64))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        d = self.unsigned(points)
        inside = np.abs(self.winding(points)) > 0.5
        return np.where(inside, -d, d)


def split_pos_neg(points: np.ndarray, sdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split samples into DeepSDF's ``pos`` (sdf > 0) and ``neg`` (sdf <= 0) arrays of (x, y, z, sdf)."""
    xyzs = np.concatenate([points, sdf[:, None]], axis=1).astype(np.float32)
    return xyzs[sdf > 0], xyzs[sdf <= 0]


def find_meshes(src: str | os.PathLike) -> list[Path]:
    """All mesh files below ``src`` (recursive), sorted; category = parent folder, id = stem."""
    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: folder not found")
    if src.is_file():
        return [src]
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    if not files:
        raise DataError(f"{src}: no meshes found (looked for {', '.join(MESH_SUFFIXES)} recursively)")
    return files
