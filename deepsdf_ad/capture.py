"""Cleaning a real capture before reconstruction: the floor (or table top) under the object, points far from
the object, and whatever lies beyond a crop radius are dropped. Arrays in, arrays out; any frame, any units.

The sizes below are shares of the cloud's own size (:func:`cloud_size`), since a capture may be in metres,
millimetres or anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepsdf_ad.data_prep.formats import DataError

MIN_POINTS = 16
"""A capture with fewer (finite) points, or fewer left after cleaning, is refused: too little to fit a shape
to."""
PLANE_TOL = 0.01
"""Points within this share of the cloud's size of a plane are its inliers (RANSAC's threshold)."""
PLANE_TRIES = 300
"""RANSAC draws of three points."""
PLANE_CANDIDATES = 3
"""Planes tried, largest first (each found among the points off the ones before): a big flat face of the
object (a box's top) can hold more points than the floor beside it."""
PLANE_MIN_SHARE = 0.1
"""A plane is a floor only if at least this share of the points lies on it ..."""
PLANE_ONE_SIDE = 0.97
"""... at least this share of the other points lies on one side of it (the object sits on it, at the
cloud's extremity along its normal) ..."""
PLANE_SPREAD = 1.3
"""... and its inliers spread beyond the object: the area of their rectangle in the plane (5th to 95th
percentile along its two main directions, so that a few strays do not stretch it) is at least this many times
that of the other points' shadow on it. A flat face of the object itself (a box's side, all
the other points behind it) covers no more than the object's own shadow, and is kept."""
CLUSTER_EPS = 3.0
"""Points closer than this many times the cloud's typical spacing (the median distance of a point to its
8th nearest neighbour: scale-free, and set by the surface, which holds most points) are neighbours; the object
is the largest group of points joined through neighbours (with the groups of at least :data:`CLUSTER_KEEP` of
its size). Stray points are far sparser than the surface, so they rarely join up."""
CLUSTER_KEEP = 0.2
"""A group of neighbouring points with at least this share of the largest group's points is kept too (a part
of the object the scan sees apart, e.g. a chair leg behind its seat)."""

REASONS = ("not finite", "floor", "crop", "outlier")
"""Why a point was dropped, in the order the steps run."""


@dataclass
class Plane:
    """The plane ``normal . x + offset = 0``; ``normal`` (3,) is a unit vector pointing to the object's
    side."""

    normal: np.ndarray
    offset: float
    inliers: int

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance of ``points`` (N, 3): positive on the object's side."""
        return points @ self.normal + self.offset


@dataclass
class Cleaned:
    """What is left of a capture: ``points`` (M, 3) = input[``kept``]; ``dropped`` maps each reason of
    :data:`REASONS` to the input indices it removed; ``plane`` is the floor found (removed or, with
    ``keep_floor``, kept), or None."""

    points: np.ndarray
    kept: np.ndarray
    dropped: dict[str, np.ndarray] = field(default_factory=dict)
    plane: Plane | None = None

    def counts(self) -> dict[str, int]:
        return {r: int(len(self.dropped.get(r, ()))) for r in REASONS}


def cloud_size(points: np.ndarray) -> float:
    """A robust size of a cloud (N, 3): the diagonal of the box holding its 1st to 99th percentiles per axis
    (a few outliers do not stretch it)."""
    lo, hi = np.percentile(points, [1, 99], axis=0)
    size = float(np.linalg.norm(hi - lo))
    if size <= 0:
        size = float(np.linalg.norm(np.ptp(points, axis=0)))
    return size


def fit_plane(points: np.ndarray, tol: float, rng: np.random.Generator, tries: int = PLANE_TRIES
              ) -> tuple[np.ndarray, float, np.ndarray]:
    """RANSAC: the plane (unit normal (3,), offset) with the most points within ``tol``, refitted by least
    squares to them; returns it and the inlier mask (N,)."""
    n = len(points)
    best, best_count = None, -1
    for _ in range(tries):
        a, b, c = points[rng.choice(n, 3, replace=False)]
        normal = np.cross(b - a, c - a)
        norm = np.linalg.norm(normal)
        if norm <= 1e-12 * max(np.linalg.norm(b - a) * np.linalg.norm(c - a), 1e-300):
            continue
        normal /= norm
        count = int(np.count_nonzero(np.abs((points - a) @ normal) <= tol))
        if count > best_count:
            best, best_count = (normal, -float(normal @ a)), count
    if best is None:
        raise DataError("all points lie on one line; no surface to fit")
    normal, offset = best
    for _ in range(2):  # least squares on the inliers, then the inliers of that plane
        inl = np.abs(points @ normal + offset) <= tol
        centre = points[inl].mean(axis=0)
        normal = np.linalg.svd(points[inl] - centre, full_matrices=False)[2][-1]
        offset = -float(normal @ centre)
    return normal, offset, np.abs(points @ normal + offset) <= tol


def _rect_area(points: np.ndarray, normal: np.ndarray) -> float:
    """Area of the rectangle holding the 5th to 95th percentiles of ``points`` projected on the plane with
    ``normal``, along the principal directions of the projection."""
    flat = points - np.outer(points @ normal, normal)
    flat = flat - flat.mean(axis=0)
    axes = np.linalg.svd(flat, full_matrices=False)[2][:2]
    uv = flat @ axes.T
    lo, hi = np.percentile(uv, [5, 95], axis=0)
    return float(np.prod(hi - lo))


def find_floor(points: np.ndarray, size: float, rng: np.random.Generator) -> tuple[Plane, np.ndarray] | None:
    """The floor under the object and its inlier mask (N,), or None: the first of the :data:`PLANE_CANDIDATES`
    largest planes that is one (:func:`floor_test`)."""
    left = np.ones(len(points), bool)
    for _ in range(PLANE_CANDIDATES):
        if left.sum() < max(3, PLANE_MIN_SHARE * len(points)):
            return None
        normal, offset, _ = fit_plane(points[left], PLANE_TOL * size, rng)
        inl = np.abs(points @ normal + offset) <= PLANE_TOL * size
        found = floor_test(points, normal, offset, inl)
        if found is not None:
            return found, inl
        left &= ~inl
    return None


def floor_test(points: np.ndarray, normal: np.ndarray, offset: float, inl: np.ndarray) -> Plane | None:
    """The plane as a :class:`Plane` (normal to the object's side) when it is a floor under the object (see
    :data:`PLANE_MIN_SHARE`, :data:`PLANE_ONE_SIDE`, :data:`PLANE_SPREAD`), else None."""
    if inl.mean() < PLANE_MIN_SHARE:
        return None
    rest = points[~inl]
    if len(rest) < MIN_POINTS:  # nothing but the plane: let the caller say so
        return Plane(normal, offset, int(inl.sum()))
    side = rest @ normal + offset
    if np.mean(side < 0) > 0.5:
        normal, offset, side = -normal, -offset, -side
    if np.mean(side > 0) < PLANE_ONE_SIDE:
        return None
    if _rect_area(points[inl], normal) < PLANE_SPREAD * _rect_area(rest, normal):
        return None
    return Plane(normal, offset, int(inl.sum()))


def spacing(points: np.ndarray, rng: np.random.Generator, probe: int = 5000) -> float:
    """The cloud's typical spacing: the median distance of (up to ``probe`` of) its points to their 8th
    nearest neighbour."""
    from scipy.spatial import cKDTree

    some = points[rng.choice(len(points), min(probe, len(points)), replace=False)]
    d, _ = cKDTree(points).query(some, k=min(9, len(points)))
    return float(np.median(d[:, -1]))


def main_cluster(points: np.ndarray, eps: float) -> np.ndarray:
    """Mask (N,) of the points in the largest group joined through neighbours closer than ``eps`` (and the
    groups of at least :data:`CLUSTER_KEEP` of its size)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pairs = cKDTree(points).query_pairs(eps, output_type="ndarray")
    n = len(points)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    sizes = np.bincount(label)
    return sizes[label] >= CLUSTER_KEEP * sizes.max()


def clean_capture(points: np.ndarray, keep_floor: bool = False, crop: float | None = None,
                  rng: np.random.Generator | None = None) -> Cleaned:
    """Drop what is not the object from a capture (N, 3) in any frame and units.

    Steps: points with NaN or infinite coordinates; the floor under the object (:func:`find_floor`; kept with
    ``keep_floor``, though still found: its normal is the best guess of the up axis); with ``crop``, the
    points farther than ``crop`` (input units) from the object's centre (the median of what is left); the
    points outside the object's main cluster (:func:`main_cluster`).

    Raises:
        DataError: fewer than :data:`MIN_POINTS` points to start with, or left after a step.
    """
    rng = rng or np.random.default_rng(0)
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise DataError(f"expected (N, 3) points, got shape {points.shape}")
    idx = np.arange(len(points))
    dropped: dict[str, np.ndarray] = {}

    def step(reason: str, keep: np.ndarray, hint: str) -> None:
        nonlocal idx
        dropped[reason] = idx[~keep]
        idx = idx[keep]
        if len(idx) < MIN_POINTS:
            raise DataError(f"{len(idx)} point(s) left after dropping {reason} points (at least {MIN_POINTS} "
                            f"needed); {hint}")

    finite = np.isfinite(points).all(axis=1)
    if finite.sum() < MIN_POINTS:
        raise DataError(f"{int(finite.sum())} finite point(s); a capture needs at least {MIN_POINTS}")
    step("not finite", finite, "")
    size = cloud_size(points[idx])
    if size <= 0:
        raise DataError("the points all coincide; nothing to fit")
    floor = find_floor(points[idx], size, rng)
    plane = None
    if floor is not None:
        plane, inl = floor
        if not keep_floor:
            step("floor", ~inl,
                 "the capture is all one plane (a floor or a wall?); pass --keep-floor to keep it")
    if crop is not None:
        centre = np.median(points[idx], axis=0)
        step("crop", np.linalg.norm(points[idx] - centre, axis=1) <= crop,
             f"--crop {crop:g} is smaller than the object (input units)")
    eps = CLUSTER_EPS * spacing(points[idx], rng)
    step("outlier", main_cluster(points[idx], eps) if eps > 0 else np.ones(len(idx), bool),
         "the points are too sparse")
    return Cleaned(points[idx], idx, dropped, plane)
