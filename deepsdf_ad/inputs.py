"""Encoder inputs: points on the surface (3D, ``DATA/surface``) or the contour (2D) of each shape, drawn
per step with vectorised indexing, optionally noisy or cut to a partial view.

A partial view keeps the points on one side of a random plane: of ``ceil(n / keep)`` points drawn, the
``n`` farthest along a random direction, so it holds about ``keep`` of the surface, as seen from that
direction (without occlusion). It stands in for a depth scan during training.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from deepsdf_ad.data import to_device
from deepsdf_ad.data_prep.formats import DataError, ShapeRef, load_points, load_points_2d


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
             partial: float = 0.0, keep: float = 0.5) -> torch.Tensor:
        """``n`` points (B, n, dim) for each shape of ``index`` (B,), drawn uniformly with replacement.

        ``partial``: share of the shapes cut to a partial view keeping ``keep`` of the surface;
        ``noise``: standard deviation of Gaussian noise added to every point.
        """
        dev = self.points.device
        index = index.to(dev)
        b = len(index)
        k = math.ceil(n / keep) if partial > 0 else n
        r = torch.rand((b, k), generator=generator, device=dev)
        pts = self.points[self.start[index, None] + (r * self.count[index, None]).long()]
        if partial > 0:
            cut = torch.rand(b, generator=generator, device=dev) < partial
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
