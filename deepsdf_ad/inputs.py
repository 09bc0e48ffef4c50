"""Encoder inputs: points on the surface (3D, ``DATA/surface``) or the contour (2D) of each shape, drawn
per step with vectorised indexing, optionally noisy or cut to a partial view.

A partial view stands in for a depth scan during training. Two kinds:

- ``plane``: the points on one side of a random plane: of ``ceil(n / keep)`` points drawn, the ``n`` farthest
  along a random direction, so it holds about ``keep`` of the surface, as seen from that direction (without
  occlusion). Any dimension.
- ``camera`` (3D): what a pinhole camera sees. The camera sits where ``deepsdf-ad scan`` puts its own
  (``CameraConfig``: 2.5 radii from the centre, 50 degrees field of view), at a random azimuth and an
  elevation drawn from a range, +z up. Of ``VIEW_DRAW`` points drawn on the surface, those within
  ``VIEW_TOLERANCE`` of the nearest point in their pixel of a ``VIEW_GRID``-square depth buffer are seen;
  ``n`` of them are drawn with replacement. Unlike a plane it has occlusion: a chair's seat hides its legs'
  inner sides, a table seen from above shows its top and little of its legs, as a real scan does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from deepsdf_ad.data import to_device
from deepsdf_ad.data_prep.formats import DataError, ShapeRef, load_points, load_points_2d
from deepsdf_ad.data_prep.params import CameraConfig

VIEWS = ("plane", "camera")
"""The kinds of partial view (see the module's docstring)."""
VIEW_ELEVATION = (0.0, 50.0)
"""Default range of a camera view's elevation, degrees above the horizontal (+z up)."""
VIEW_DRAW = 16384
"""Points drawn per shape for a camera view's visibility test: enough that the near surface leaves few
pixels empty for a far one to show through (on the 27 held-out scans of the shared meshes, 2% of a view's
points lie off the real scan, against 7% with 4,096 points and 32 pixels; none on a sphere)."""
VIEW_GRID = 24
"""Pixels per side of a camera view's depth buffer (about 0.1 of the normalised frame per pixel)."""
VIEW_TOLERANCE = 0.03
"""A point is seen when it lies within this depth (normalised frame) of the nearest point of its pixel."""


def load_surface(ref: ShapeRef, dim: int) -> np.ndarray:
    """Surface (3D) or contour (2D) points (M, dim) of a shape, in the normalised frame."""
    if ref.surface is None:
        raise DataError(f"{ref.key}: no surface points (DATA/surface/{ref.key}.ply); the pointnet latent "
                        "source needs them: re-run 'deepsdf-ad prep'")
    pts = load_points_2d(ref.surface) if dim == 2 else load_points(ref.surface).points
    return np.asarray(pts, np.float32)


class PointInputs:
    """Surface points of many shapes, packed in one tensor.

    Args:
        refs: the shapes; ``dim``: 2 or 3.
        max_points: keep at most this many points per shape (the first ones; prep writes them in
            random order).
    """

    def __init__(self, refs: list[ShapeRef], dim: int, max_points: int | None = None, progress: bool = True):
        self.keys = [r.key for r in refs]
        self.dim = dim
        arrays = []
        for ref in tqdm(refs, desc="load surface points", unit="shape",
                        disable=not progress or len(refs) < 50):
            pts = load_surface(ref, dim)
            arrays.append(pts[:max_points] if max_points else pts)
        counts = np.array([len(a) for a in arrays], np.int64)
        self.points = torch.from_numpy(np.concatenate(arrays))
        self.start = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]]))
        self.count = torch.from_numpy(counts)

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device) -> PointInputs:
        self.points, self.start, self.count = (t.to(device) for t in (self.points, self.start, self.count))
        return self

    def draw(self, index: torch.Tensor, n: int, generator: torch.Generator | None = None, noise: float = 0.0,
             partial: float = 0.0, keep: float = 0.5, view: str = "plane",
             elevation: tuple[float, float] = VIEW_ELEVATION) -> torch.Tensor:
        """``n`` points (B, n, dim) for each shape of ``index`` (B,), drawn uniformly with replacement.

        ``partial``: share of the shapes cut to a partial view, of the kind ``view`` (``VIEWS``): a ``plane``
        view keeps ``keep`` of the surface; a ``camera`` view is seen from an elevation drawn uniformly in
        ``elevation`` (degrees); ``noise``: standard deviation of Gaussian noise added to every point.
        """
        if view not in VIEWS:
            raise ValueError(f"unknown partial view '{view}'; known: {', '.join(VIEWS)}")
        if view == "camera" and self.dim != 3:
            raise ValueError("a camera view needs 3D points; use the 'plane' view in 2D")
        dev = self.points.device
        index = index.to(dev)
        b = len(index)
        k = n if partial <= 0 else VIEW_DRAW if view == "camera" else math.ceil(n / keep)
        r = torch.rand((b, k), generator=generator, device=dev)
        pts = self.points[self.start[index, None] + (r * self.count[index, None]).long()]
        if partial > 0:
            cut = torch.rand(b, generator=generator, device=dev) < partial
            if view == "camera":
                seen = camera_view(pts, n, random_cameras(b, elevation, generator, dev), generator)
                pts = torch.where(cut[:, None, None], seen, pts[:, :n])
            else:
                d = torch.randn((b, self.dim), generator=generator, device=dev)
                d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
                pts = partial_view(pts, d, n, cut)
        if noise > 0:
            pts = pts + noise * torch.randn(pts.shape, generator=generator, device=dev)
        return pts

    def fixed(self, index: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
        """Clean inputs (B, n, dim) that depend only on ``seed`` and the shapes (used for ``all_codes``)."""
        return self.draw(index, n, torch.Generator(device=self.points.device).manual_seed(seed))


def partial_view(points: torch.Tensor, direction: torch.Tensor, n: int, cut: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Of ``points`` (B, K, dim), the ``n`` farthest along ``direction`` (B, dim) for the shapes where
    ``cut`` (B,) bool is set (all when None); the first ``n`` for the others. Returns (B, n, dim)."""
    s = (points * direction[:, None, :]).sum(-1)
    top = s.topk(n, dim=1).indices
    if cut is not None:
        first = torch.arange(n, device=points.device).expand_as(top)
        top = torch.where(cut[:, None], top, first)
    return torch.gather(points, 1, top[..., None].expand(-1, -1, points.shape[-1]))


def random_cameras(b: int, elevation: tuple[float, float], generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu", distance: float = CameraConfig.distance
                   ) -> torch.Tensor:
    """Positions (B, 3) of ``b`` cameras around the origin at ``distance``, +z up: azimuth uniform, elevation
    uniform in ``elevation`` (degrees)."""
    az = 2 * math.pi * torch.rand(b, generator=generator, device=device)
    lo, hi = (math.radians(e) for e in elevation)
    el = lo + (hi - lo) * torch.rand(b, generator=generator, device=device)
    return distance * torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], dim=1)


def camera_view(points: torch.Tensor, n: int, eye: torch.Tensor, generator: torch.Generator | None = None,
                fov: float = CameraConfig.fov, grid: int = VIEW_GRID, tolerance: float = VIEW_TOLERANCE
                ) -> torch.Tensor:
    """``n`` points (B, n, 3), with replacement, among those of ``points`` (B, K, 3) that a pinhole camera at
    ``eye`` (B, 3), looking at the origin with +z up, sees: a point is seen when its depth lies within
    ``tolerance`` of the nearest point in its pixel of a ``grid``-square depth buffer."""
    b = points.shape[0]
    forward = -eye / eye.norm(dim=1, keepdim=True)
    up = torch.tensor([0.0, 0.0, 1.0], device=points.device).expand_as(forward)
    right = torch.linalg.cross(forward, up)
    # looking straight down or up: any right vector will do
    right = torch.where(right.norm(dim=1, keepdim=True) < 1e-6, torch.tensor([1.0, 0.0, 0.0],
                        device=points.device), right)
    right = right / right.norm(dim=1, keepdim=True)
    above = torch.linalg.cross(right, forward)
    v = points - eye[:, None, :]
    depth = (v * forward[:, None]).sum(-1).clamp_min(1e-6)
    t = math.tan(math.radians(fov) / 2)
    px = (((v * right[:, None]).sum(-1) / depth / t + 1) * grid / 2).long().clamp(0, grid - 1)
    py = (((v * above[:, None]).sum(-1) / depth / t + 1) * grid / 2).long().clamp(0, grid - 1)
    cell = (torch.arange(b, device=points.device)[:, None] * grid + px) * grid + py
    nearest = torch.full((b * grid * grid,), math.inf, device=points.device, dtype=depth.dtype)
    nearest = nearest.scatter_reduce(0, cell.reshape(-1), depth.reshape(-1), "amin")
    seen = depth <= nearest[cell] + tolerance
    pick = torch.multinomial(seen.float(), n, replacement=True, generator=generator)
    return torch.gather(points, 1, pick[..., None].expand(-1, -1, 3))


@torch.no_grad()
def encode_all(model, inputs: PointInputs, n: int, batch: int = 256, seed: int = 0) -> torch.Tensor:
    """Codes (S, L) of every shape of ``inputs`` from clean, seeded inputs, in eval mode."""
    was = model.training
    model.eval()
    dev = inputs.points.device
    out = []
    gen = torch.Generator(device=dev).manual_seed(seed)
    for s in range(0, len(inputs), batch):
        idx = torch.arange(s, min(s + batch, len(inputs)), device=dev)
        out.append(model.latent.encode(to_device(inputs.draw(idx, n, gen), next(model.parameters()).device)))
    model.train(was)
    return torch.cat(out)
