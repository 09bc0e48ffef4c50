"""Meshes: load, normalise, sample the surface, and sample signed distances (DeepSDF's distribution).

Frames: a mesh file is in its *original* frame; samples are written in the *normalised* frame,
``normalised = (original + offset) * scale`` with DeepSDF's convention (offset = -bounding-box centre,
scale = 1 / (1.03 * max distance of a vertex from that centre)), so every shape fits the unit sphere.

Signs: generalized winding numbers (Jacobson et al. 2013; libigl's fast Barnes-Hut version), which stay
right on meshes with holes and gaps where ray parity fails, computed on a repaired copy of the mesh
(duplicates removed, faces wound consistently and turned outward by a visibility vote from many views);
distances are exact point-to-triangle distances (open3d's BVH) to the original triangles.
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


def near_surface_count(cfg: SamplingConfig) -> int:
    """How many of ``cfg.samples`` are near-surface samples (they come first in :func:`sample_query_points`)."""
    return cfg.samples - int(round(cfg.samples * cfg.uniform_fraction))


def check_sampling(cfg: SamplingConfig) -> None:
    """Raise ``ValueError`` for a sampling config that cannot work."""
    if cfg.samples < 2:
        raise ValueError(f"samples must be at least 2, got {cfg.samples}")
    if len(cfg.variances) != 2 or not all(np.isfinite(v) and v > 0 for v in cfg.variances):
        raise ValueError(f"variances must be two positive numbers, got {cfg.variances}")
    if not 0.0 <= cfg.uniform_fraction <= 1.0:
        raise ValueError(f"uniform_fraction must be in [0, 1], got {cfg.uniform_fraction}")


def sample_query_points(mesh: trimesh.Trimesh, cfg: SamplingConfig, rng: np.random.Generator) -> np.ndarray:
    """DeepSDF's sample distribution in the normalised frame: surface points perturbed at two noise
    levels (equal shares) plus a uniform share in [-1, 1]^3."""
    n_near = near_surface_count(cfg)
    n_uniform = cfg.samples - n_near
    surf, _ = sample_surface(mesh, n_near, rng)
    sigma = np.sqrt(np.repeat(np.asarray(cfg.variances, np.float64), [n_near - n_near // 2, n_near // 2]))
    near = surf + rng.standard_normal((n_near, 3)) * sigma[:, None]
    uniform = rng.uniform(-1.0, 1.0, size=(n_uniform, 3))
    return np.concatenate([near, uniform], axis=0)


def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` unit vectors spread evenly over the sphere (Fibonacci lattice), (n, 3) float64."""
    i = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / n)
    azim = np.pi * (1.0 + 5.0**0.5) * i
    return np.stack([np.cos(azim) * np.sin(polar), np.sin(azim) * np.sin(polar), np.cos(polar)], axis=1)


def _raycasting_scene(vertices: np.ndarray, faces: np.ndarray):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(faces, np.uint32)))
    return scene


def clean_for_sign(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Merge coincident vertices and drop degenerate and duplicated faces (a face and its flipped copy
    count as duplicates: together they cancel in the winding number, which is how ModelNet's doubled
    walls make whole parts vanish)."""
    m = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=True)
    m.update_faces(m.nondegenerate_faces())
    m.update_faces(m.unique_faces())
    m.remove_unreferenced_vertices()
    if len(m.faces) == 0:
        raise DataError("mesh has no non-degenerate faces")
    return m


@dataclass
class Orientation:
    """What :func:`orient_faces` did and saw (DeepSDF's visibility check, after our repairs)."""

    components: int
    """Connected components (edge-adjacent faces) of the cleaned mesh."""
    flipped: int
    """Components turned over because views from outside saw mostly their back side."""
    back_hits: float
    """Share of outside-view ray hits that land on a back face after orienting (DeepSDF rejects > 0.02 before)."""


def orient_faces(mesh: trimesh.Trimesh, views: int = 64, resolution: int = 64) -> tuple[trimesh.Trimesh, Orientation]:
    """Orient faces outward so that winding numbers are meaningful on ModelNet-style meshes.

    1. ``trimesh.repair.fix_winding`` makes each connected component consistently wound.
    2. Visibility decides which side of a component is outside (DeepSDF's idea, cast as rays, no OpenGL):
       ``views`` orthographic cameras on a sphere each cast ``resolution``² parallel rays; every first hit
       votes front or back for its component, and components seen mostly from behind are flipped.

    Args:
        mesh: cleaned mesh (see :func:`clean_for_sign`), normalised frame (inside the unit sphere).
    Returns:
        the re-oriented mesh (same vertices) and an :class:`Orientation` report.
    """
    import open3d as o3d

    m = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces).copy(), process=False)
    trimesh.repair.fix_winding(m)
    labels = trimesh.graph.connected_component_labels(m.face_adjacency, node_count=len(m.faces))
    n_comp = int(labels.max()) + 1
    v = np.asarray(m.vertices)
    centre = 0.5 * (v.min(axis=0) + v.max(axis=0))
    radius = float(np.linalg.norm(v - centre, axis=1).max()) * 1.05 + 1e-12
    grid = np.linspace(-radius, radius, resolution)
    gu, gv = (a.ravel() for a in np.meshgrid(grid, grid))
    rays = []
    for d in fibonacci_directions(views):
        a = np.cross(d, [0.267, 0.534, 0.802])
        a /= np.linalg.norm(a)
        b = np.cross(d, a)
        origin = centre + 2.0 * radius * d + gu[:, None] * a + gv[:, None] * b
        rays.append(np.concatenate([origin, np.broadcast_to(-d, origin.shape)], axis=1))
    rays = np.concatenate(rays).astype(np.float32)
    scene = _raycasting_scene(v, m.faces)
    fid = scene.cast_rays(o3d.core.Tensor(rays))["primitive_ids"].numpy().astype(np.int64)
    hit = fid != o3d.t.geometry.RaycastingScene.INVALID_ID
    fid, dirs = fid[hit], rays[hit, 3:]
    front = np.einsum("ij,ij->i", m.face_normals[fid], dirs) < 0
    vote = np.zeros(n_comp)
    np.add.at(vote, labels[fid], np.where(front, 1.0, -1.0))
    flip_comp = vote < 0
    flip = flip_comp[labels]
    faces = np.asarray(m.faces).copy()
    faces[flip] = faces[flip][:, ::-1]
    front = front ^ flip[fid]
    back_hits = float(1.0 - front.mean()) if len(front) else 0.0
    out = trimesh.Trimesh(v, faces, process=False)
    return out, Orientation(components=n_comp, flipped=int(flip_comp.sum()), back_hits=back_hits)


def winding_number_reference(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Slow, obvious generalized winding number: the sum of each triangle's signed solid angle / 4π
    (Van Oosterom & Strackee 1983). O(points × faces); for tests."""
    tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
    out = np.empty(len(points))
    for i, p in enumerate(np.asarray(points, np.float64)):
        a, b, c = tri[:, 0] - p, tri[:, 1] - p, tri[:, 2] - p
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        num = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la \
            + np.einsum("ij,ij->i", c, a) * lb
        out[i] = np.sum(2.0 * np.arctan2(num, den)) / (4.0 * np.pi)
    return out


def visible_from_outside(mesh: trimesh.Trimesh, points: np.ndarray, directions: int = 16) -> np.ndarray:
    """DeepSDF's notion of outside, as rays: a point is outside if any of ``directions`` rays leaving it
    escapes the mesh. Wrong inside an open box (the hole lets rays out) and in deep cavities; used as the
    second opinion for the sign-quality figure, not for the sign itself. Returns (N,) bool."""
    import open3d as o3d

    scene = _raycasting_scene(mesh.vertices, mesh.faces)
    d = fibonacci_directions(directions).astype(np.float32)
    p = np.ascontiguousarray(points, np.float32)
    rays = np.concatenate([np.repeat(p, directions, axis=0), np.tile(d, (len(p), 1))], axis=1)
    occluded = scene.test_occlusions(o3d.core.Tensor(rays)).numpy().reshape(len(p), directions)
    return ~occluded.all(axis=1)


class SignedDistance:
    """Exact distance to the mesh's triangles (open3d BVH) with the sign of the generalized winding number
    of a repaired copy (:func:`clean_for_sign`, then :func:`orient_faces`).

    ``inside`` is winding number > 0.5. The winding number stays right on meshes with holes and gaps, where
    ray parity fails; the repairs handle duplicated, flipped and inconsistently wound faces, where raw
    winding numbers fail. With ``orient=False`` the raw faces are used and the sign is ``|w| > 0.5``.

    Args:
        mesh: the mesh, normalised frame.
    """

    def __init__(self, mesh: trimesh.Trimesh, orient: bool = True):
        self.vertices = np.ascontiguousarray(mesh.vertices, np.float64)
        self.faces = np.ascontiguousarray(mesh.faces, np.int64)
        self._scene = _raycasting_scene(self.vertices, self.faces)
        self.orientation: Orientation | None = None
        self.oriented = orient
        if orient:
            sign_mesh, self.orientation = orient_faces(clean_for_sign(mesh))
            self.sign_vertices = np.ascontiguousarray(sign_mesh.vertices, np.float64)
            self.sign_faces = np.ascontiguousarray(sign_mesh.faces, np.int64)
        else:
            self.sign_vertices, self.sign_faces = self.vertices, self.faces

    def unsigned(self, points: np.ndarray) -> np.ndarray:
        """Exact point-to-triangle distances, (N,) float64."""
        import open3d as o3d

        q = o3d.core.Tensor(np.ascontiguousarray(points, np.float32))
        return self._scene.compute_distance(q).numpy().astype(np.float64)

    def winding(self, points: np.ndarray) -> np.ndarray:
        """Generalized winding numbers of the sign mesh (libigl's fast Barnes–Hut version), (N,)."""
        import igl

        return igl.fast_winding_number(self.sign_vertices, self.sign_faces, np.ascontiguousarray(points, np.float64))

    def inside(self, winding: np.ndarray) -> np.ndarray:
        return winding > 0.5 if self.oriented else np.abs(winding) > 0.5

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self.signed(points)[0]

    def signed(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed distances (negative inside) and the winding numbers they took their sign from."""
        d = self.unsigned(points)
        w = self.winding(points)
        return np.where(self.inside(w), -d, d), w


AMBIGUOUS_BAND = 0.1
"""A winding number within this of 1/2 counts as an ambiguous sign."""


def sign_quality(sd: SignedDistance, points: np.ndarray, winding: np.ndarray, near: np.ndarray,
                 rng: np.random.Generator, check_points: int = 10_000) -> dict:
    """Per-mesh figures of how far to trust the signs.

    Returns:
        ``ambiguous``: share of near-surface samples whose winding number is within :data:`AMBIGUOUS_BAND`
        of 1/2 (where the errors on opened meshes concentrate; the rejection figure);
        ``disagree``: share of up to ``check_points`` samples where the visibility test
        (:func:`visible_from_outside`) disagrees with the winding-number sign (DeepSDF's view of the
        mesh; high on meshes whose inside can be seen through holes);
        plus the orientation report (components, flipped, back_hits).
    """
    amb = float(np.mean(np.abs(winding[near] - 0.5) < AMBIGUOUS_BAND)) if near.any() else 0.0
    idx = rng.choice(len(points), size=min(check_points, len(points)), replace=False)
    vis_out = visible_from_outside(trimesh.Trimesh(sd.vertices, sd.faces, process=False), points[idx])
    disagree = float(np.mean(vis_out == sd.inside(winding[idx])))
    q = {"ambiguous": round(amb, 5), "disagree": round(disagree, 5)}
    if sd.orientation is not None:
        q.update(components=sd.orientation.components, flipped=sd.orientation.flipped,
                 back_hits=round(sd.orientation.back_hits, 5))
    return q


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
