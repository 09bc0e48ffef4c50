"""The autoencoder with local codes: PointNet features pooled into the grid of
:mod:`deepsdf_ad.models.grid` (Convolutional Occupancy Networks, Peng et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepsdf_ad.models.base import LatentConfig
from deepsdf_ad.models.grid import GridConfig, GridDecoding, GridGeometry
from deepsdf_ad.models.pointnet import PointEncoderSource, PointNetConfig, ResnetBlockFC


@dataclass
class PointNetGridConfig(GridConfig, PointNetConfig):
    """Options of a 'pointnet_grid' latent source: the grid's and the PointNet's, plus pooling."""

    pool: Literal["max", "mean"] = "max"
    """How point features are pooled into the grid: 'max' or 'mean'."""
    conv: int = 1
    """3x3x3 convolution layers (with ReLU) over the pooled grid before the code head; 0 = none."""

    def check(self) -> None:
        GridConfig.check(self)
        PointNetConfig.check(self)
        if self.conv < 0:
            raise ValueError("model.latent.kwargs.conv must be at least 0")


class PointNetGridEncoder(GridDecoding, PointEncoderSource):
    """Autoencoder with local codes: a residual PointNet whose per-point features are pooled (max or mean)
    into the grid's vertex cells (the points nearest each code), optionally followed by small 3D
    convolutions, then a linear head per vertex. Codes of vertices away from every input point (further
    than ``mask_margin``) are empty, so the mesher skips their cells, as for a reconstructed grid.

    Each point's input is its position and its offset from its nearest vertex (in cell units); every block
    after the first also sees the features pooled into the point's vertex cell by the previous block
    (Convolutional Occupancy Networks' local pooling). The result does not depend on the order of the
    points.
    """

    def __init__(self, num_shapes: int, dim: int, cfg: LatentConfig, options: PointNetGridConfig):
        super().__init__()
        options.check_dim(dim)
        self.options = options
        o = self.options
        h, self.size, self.dim = o.hidden, cfg.size, dim
        self.geometry = GridGeometry(o.cells, o.bounds, dim)
        self.fc_pos = nn.Linear(2 * dim, 2 * h)
        self.blocks = nn.ModuleList([ResnetBlockFC(2 * h, h, h) for _ in range(o.blocks)])
        conv = nn.Conv3d if dim == 3 else nn.Conv2d
        self.convs = nn.ModuleList([conv(h, h, 3, padding=1) for _ in range(o.conv)])
        self.fc_c = nn.Linear(h, cfg.size)
        self.register_buffer("train_codes", torch.zeros(num_shapes, self.geometry.vertices * cfg.size))

    def _vertex_of(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.geometry
        q = ((points + g.bounds) / g.h).clamp(0, g.cells)
        near = torch.round(q)
        idx = (near.long() * g.strides.to(points.device)).sum(-1)
        return idx, (points + g.bounds) / g.h - near

    def _pool(self, feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Point features (B, N, H) pooled into vertex cells (B, V, H) (empty cells: 0)."""
        b, _, h = feat.shape
        out = torch.zeros(b, self.geometry.vertices, h, device=feat.device, dtype=feat.dtype)
        index = idx[..., None].expand(-1, -1, h)
        return out.scatter_reduce(1, index, feat, reduce="amax" if self.options.pool == "max" else "mean",
                                  include_self=False)

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        """``points`` (B, N, dim) -> flattened grids (B, code_length)."""
        if points.ndim != 3 or points.shape[-1] != self.dim:
            raise ValueError(f"expected points (B, N, {self.dim}), got {tuple(points.shape)}")
        g = self.geometry
        idx, offset = self._vertex_of(points)
        net = self.blocks[0](self.fc_pos(torch.cat([points, offset], dim=-1)))
        for block in self.blocks[1:]:
            pooled = torch.gather(self._pool(net, idx), 1, idx[..., None].expand(-1, -1, net.shape[-1]))
            net = block(torch.cat([net, pooled], dim=-1))
        grid = self._pool(net, idx)  # (B, V, H)
        if len(self.convs):
            b, v, h = grid.shape
            x = grid.transpose(1, 2).reshape(b, h, *([g.n] * self.dim))
            for conv in self.convs:
                x = x + conv(F.relu(x))
            grid = x.reshape(b, h, v).transpose(1, 2)
        codes = self.fc_c(grid)
        keep = self.observed_mask(list(points))
        return codes.reshape(points.shape[0], -1) * keep
