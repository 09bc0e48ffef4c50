"""Local latent grids: a grid of codes per shape or scene, one shared decoder (Deep Local Shapes, Chabra et
al. 2020), and the encoder that pools PointNet features into the same grid (Convolutional Occupancy Networks,
Peng et al. 2020).

The grid covers ``[-bounds, bounds]^dim`` with ``cells`` cells per axis; codes sit on the cells' corners
(``(cells + 1)^dim`` codes of ``size`` numbers each). A shape's code, as training, reconstruction, meshing
and the run folder see it, is the flattened grid: a vector of length ``(cells + 1)^dim * size``, so code
tables, means, checkpoints and ``latent_codes.safetensors`` need nothing new.

A query point ``x`` lies in one cell; its 2^dim corners ``c_j`` carry codes ``z_j`` with trilinear weights
``w_j(x)`` (1 at its own corner, 0 at the others, summing to 1). Two ways to decode (``blend``):

- ``interpolate``: one decoder call, ``f(sum_j w_j z_j, u)`` with ``u`` the point's position in its cell
  scaled to [-1, 1]^dim (Convolutional Occupancy Networks interpolate features the same way).
- ``local``: DeepLS's cell-local frames; each corner code decodes the point in its own frame,
  ``f(z_j, (x - c_j) / h)`` (h: the cell size), and the 2^dim answers are blended with the weights ``w_j``.
  Continuous across cells, 2^dim decoder calls per point.

A code that is exactly zero is *empty*: reconstruction optimises only the codes near observed points
(:meth:`LatentGrid.code_mask`) and leaves the others at zero; a cell with an empty corner is not occupied
(:meth:`LatentGrid.occupied`), and the mesher neither decodes nor refines there.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepsdf_ad.models.base import LatentConfig, LatentSource, SourceOptions


@dataclass
class GridConfig(SourceOptions):
    """Options of a 'grid' latent source (``model.latent.kwargs``); ``model.latent.size`` is the size of
    one cell's code."""

    cells: int = 8
    """Cells per axis; the grid holds (cells + 1)^dim codes, on the cells' corners."""
    bounds: float = 1.0
    """The grid covers [-bounds, bounds]^dim (normalised frame)."""
    blend: Literal["interpolate", "local"] = "interpolate"
    """'interpolate' (trilinear interpolation of the corner codes, one decoder call) or 'local' (DeepLS
    cell-local frames, one decoder call per corner, blended)."""
    mask_margin: float = 0.25
    """Reconstruction optimises only the codes of cells within this distance (normalised frame, per axis) of
    observed near-surface points; the other codes stay empty (zero) and the mesher skips their cells."""

    def check(self) -> None:
        if self.cells < 1 or self.bounds <= 0 or self.mask_margin < 0:
            raise ValueError("model.latent.kwargs: need cells >= 1, bounds > 0 and mask_margin >= 0")


class GridGeometry:
    """Indexing of a regular grid of ``cells^dim`` cells over [-bounds, bounds]^dim with codes on its
    ``(cells + 1)^dim`` corners (vertex index: first axis slowest)."""

    def __init__(self, cells: int, bounds: float, dim: int):
        self.cells, self.bounds, self.dim = cells, float(bounds), dim
        self.n = cells + 1
        self.vertices = self.n**dim
        self.h = 2.0 * self.bounds / cells
        # (2^dim, dim)
        self.offsets = torch.tensor(list(itertools.product((0, 1), repeat=dim)), dtype=torch.long)
        self.strides = torch.tensor([self.n ** (dim - 1 - d) for d in range(dim)], dtype=torch.long)

    def cell_of(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cell of each point (..., dim) -> integer cell coordinates (..., dim) and the position in that
        cell (..., dim), 0..1 inside it. Points outside the bounds get the nearest border cell and a position
        outside 0..1."""
        q = (points + self.bounds) / self.h
        base = torch.floor(q).clamp(0, self.cells - 1)
        return base.long(), q - base

    def corners(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Corner codes of each point's cell.

        Args:
            points: (..., dim) in the normalised frame.
        Returns:
            vertex indices (..., 2^dim) long, trilinear weights (..., 2^dim) (of the point clamped into the
            bounds: outside points take the codes of the nearest boundary point), and the position in the
            cell (..., dim) (unclamped).
        """
        base, t = self.cell_of(points)
        off = self.offsets.to(points.device)
        idx = ((base[..., None, :] + off) * self.strides.to(points.device)).sum(-1)
        tc = t.clamp(0.0, 1.0)[..., None, :]
        w = torch.where(off.bool(), tc, 1.0 - tc).prod(-1)
        return idx, w, t

    def corner_positions(self, idx: torch.Tensor) -> torch.Tensor:
        """Positions (..., dim) of vertex indices (...)."""
        coords = torch.stack([(idx // s) % self.n for s in self.strides.to(idx.device)], dim=-1)
        return coords.to(torch.float32) * self.h - self.bounds

    def cell_mask(self, points: torch.Tensor, margin: float,
                  counts: torch.Tensor | None = None) -> torch.Tensor:
        """Cells within ``margin`` (per axis) of any of ``points`` (B, M, dim): bool (B, cells^dim).

        Points outside the bounds mark nothing. ``counts`` (B,): only the first ``counts[b]`` points of set b.
        """
        b, m = points.shape[:2]
        inside = ((points >= -self.bounds) & (points <= self.bounds)).all(-1)
        if counts is not None:
            inside &= torch.arange(m, device=points.device)[None] < counts[:, None]
        base, _ = self.cell_of(points)
        cstr = torch.tensor([self.cells ** (self.dim - 1 - d) for d in range(self.dim)], device=points.device)
        flat = (base * cstr).sum(-1)
        occ = torch.zeros(b, self.cells**self.dim, device=points.device)
        occ.scatter_(1, torch.where(inside, flat, torch.zeros_like(flat)), inside.float())
        r = math.ceil(margin / self.h - 1e-9) if margin > 0 else 0
        grid = occ.reshape(b, 1, *([self.cells] * self.dim))
        if r > 0:
            pool = F.max_pool3d if self.dim == 3 else F.max_pool2d
            grid = pool(grid, kernel_size=2 * r + 1, stride=1, padding=r)
        return grid.reshape(b, -1) > 0

    def vertex_mask(self, cells: torch.Tensor) -> torch.Tensor:
        """Corners of the marked cells: bool (B, cells^dim) -> bool (B, (cells + 1)^dim)."""
        b = cells.shape[0]
        grid = cells.float().reshape(b, 1, *([self.cells] * self.dim))
        pool = F.max_pool3d if self.dim == 3 else F.max_pool2d
        # a vertex touches the cells at offsets -1 and 0 on each axis: pad one cell of zeros on every side
        padded = F.pad(grid, [1, 1] * self.dim)
        return pool(padded, kernel_size=2, stride=1).reshape(b, -1) > 0

    def occupied_cells(self, active: torch.Tensor) -> torch.Tensor:
        """Cells all of whose corners are active: bool (B, (cells + 1)^dim) -> bool (B, cells^dim)."""
        b = active.shape[0]
        grid = active.float().reshape(b, 1, *([self.n] * self.dim))
        pool = F.max_pool3d if self.dim == 3 else F.max_pool2d
        return (-pool(-grid, kernel_size=2, stride=1)).reshape(b, -1) > 0


class GridDecoding(LatentSource):
    """What both grid sources share: the geometry, decoding through corner codes, the per-code regulariser,
    the occupancy of a code and the mask of observed cells."""

    geometry: GridGeometry
    size: int
    options: GridConfig

    @property
    def code_length(self) -> int:
        """Length of a flattened grid: (cells + 1)^dim codes of ``size``."""
        return self.geometry.vertices * self.size

    def grid(self, codes: torch.Tensor) -> torch.Tensor:
        """Flattened codes (B, code_length) -> (B, V, size)."""
        return codes.reshape(codes.shape[0], self.geometry.vertices, self.size)

    def decode_points(self, decoder: nn.Module, codes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """sdf (B, N) at ``points`` (B, N, dim) from grids ``codes`` (B, code_length) and the shared
        decoder."""
        g = self.geometry
        grid = self.grid(codes)
        b, n = points.shape[:2]
        idx, w, t = g.corners(points)  # (B, N, K), (B, N, K), (B, N, dim)
        k = idx.shape[-1]
        z = torch.gather(grid, 1, idx.reshape(b, n * k, 1).expand(-1, -1, self.size)).reshape(
            b, n, k, self.size)
        w = w.to(z.dtype)
        if self.options.blend == "interpolate":
            return decoder((w[..., None] * z).sum(-2), 2.0 * t - 1.0)
        local = (t[..., None, :] - g.offsets.to(points.device).to(t.dtype))  # (B, N, K, dim), in cell units
        return (w * decoder(z, local)).sum(-1)

    def penalty(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-code regulariser: the mean over the grid's non-empty codes of ||z||^2, per shape (B,)."""
        sq = self.grid(codes).pow(2).sum(-1)
        active = (sq > 0).float()
        return (sq * active).sum(-1) / active.sum(-1).clamp_min(1.0)

    def observed_mask(self, points: list[torch.Tensor]) -> torch.Tensor:
        """Codes that reconstruction may change, from the observed near-surface points of B shapes
        (each (M_i, dim)): the corners of the cells within ``mask_margin`` of a point. (B, code_length)."""
        m = max(1, max(len(p) for p in points))
        dev = points[0].device
        padded = torch.zeros(len(points), m, self.geometry.dim, device=dev)
        for i, p in enumerate(points):
            padded[i, :len(p)] = p
        counts = torch.tensor([len(p) for p in points], device=dev)
        cells = self.geometry.cell_mask(padded, self.options.mask_margin, counts)
        vert = self.geometry.vertex_mask(cells)
        return vert[..., None].expand(-1, -1, self.size).reshape(len(points), -1)

    def occupied(self, code: torch.Tensor):
        """For one code (code_length,): a function of points (M, dim) (numpy, normalised frame) -> bool (M,),
        True where the point's cell has no empty corner (outside the bounds: False)."""
        g = self.geometry
        active = self.grid(code.reshape(1, -1)).detach().abs().sum(-1) > 0
        cells = g.occupied_cells(active)[0].cpu().numpy()
        cstr = np.array([g.cells ** (g.dim - 1 - d) for d in range(g.dim)])

        def fn(points: np.ndarray) -> np.ndarray:
            q = (np.asarray(points, np.float64) + g.bounds) / g.h
            inside = np.all((q >= 0) & (q <= g.cells), axis=1)
            base = np.clip(np.floor(q), 0, g.cells - 1).astype(np.int64)
            return inside & cells[(base * cstr).sum(1)]

        fn.fraction = float(cells.mean())  # type: ignore[attr-defined]  # share of occupied cells
        fn.cell_size = g.h  # type: ignore[attr-defined]
        return fn


class LatentGrid(GridDecoding):
    """Autodecoder with local codes: one grid of codes per training shape (a table of grids), found by
    optimisation for a new shape. ``codes(batch)`` reads ``batch['index']`` (B,) and returns flattened grids
    (B, code_length); each code is renormalised to at most ``max_norm`` on lookup (DeepSDF's CodeBound, per
    code)."""

    optimised_at_test_time = True
    per_shape_parameters = True

    def __init__(self, num_shapes: int, dim: int, cfg: LatentConfig, options: GridConfig):
        super().__init__()
        self.options = options
        self.size, self.dim, self.max_norm = cfg.size, dim, cfg.max_norm
        self.geometry = GridGeometry(self.options.cells, self.options.bounds, dim)
        self.table = nn.Parameter(torch.randn(num_shapes, self.geometry.vertices, cfg.size)
                                  * (cfg.init_std / math.sqrt(cfg.size)))

    def _bounded(self, grids: torch.Tensor) -> torch.Tensor:
        if self.max_norm is None:
            return grids
        norm = grids.norm(dim=-1, keepdim=True)
        return grids * (self.max_norm / norm.clamp_min(1e-7)).clamp(max=1.0)

    def codes(self, batch: dict) -> torch.Tensor:
        return self._bounded(self.table[batch["index"]]).reshape(len(batch["index"]), -1)

    def all_codes(self) -> torch.Tensor:
        return self._bounded(self.table.detach()).reshape(self.table.shape[0], -1)


__all__ = ["GridConfig", "GridDecoding", "GridGeometry", "LatentGrid"]
