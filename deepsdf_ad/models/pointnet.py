"""The autoencoder's codes: a residual PointNet with max pooling (Occupancy Networks' ``ResnetPointnet``)
maps points on the surface (3D) or the contour (2D) of a shape to its code in one forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepsdf_ad.inputs import VIEW_ELEVATION, VIEWS
from deepsdf_ad.models.base import LatentConfig, LatentSource, SourceOptions


@dataclass
class PointNetConfig(SourceOptions):
    """Options of the PointNet encoder (``model.latent.kwargs`` of a 'pointnet' run)."""

    hidden: int = 128
    """Width of the residual blocks (the first layer and the block inputs are twice as wide)."""
    blocks: int = 5
    """Residual blocks; every block after the first also sees the max-pooled features of the previous one."""
    points: int = 1024
    """Input points per shape, drawn on the surface (3D) or the contour (2D)."""
    noise: float = 0.0
    """Standard deviation of the Gaussian noise added to training inputs (normalised frame); 0 = none."""
    partial: float = 0.0
    """Share of training inputs cut to a partial view (of the kind ``partial_view``)."""
    partial_keep: float = 0.5
    """Share of the surface a 'plane' partial view keeps."""
    partial_view: str = "plane"
    """'plane' (the points on one side of a random plane) or 'camera' (3D: what a depth camera sees, with
    occlusion, as ``deepsdf-ad scan`` does; see ``deepsdf_ad/inputs.py``)."""
    view_elevation: tuple[float, float] = VIEW_ELEVATION
    """Range of a 'camera' view's elevation in degrees above the horizontal (+z up), drawn uniformly."""

    def check(self) -> None:
        if self.hidden < 1 or self.blocks < 1 or self.points < 1:
            raise ValueError("model.latent.kwargs: hidden, blocks and points must be at least 1")
        if self.noise < 0 or not 0 <= self.partial <= 1 or not 0 < self.partial_keep <= 1:
            raise ValueError("model.latent.kwargs: need noise >= 0, 0 <= partial <= 1 and "
                             "0 < partial_keep <= 1")
        if self.partial_view not in VIEWS:
            raise ValueError(f"model.latent.kwargs: unknown partial_view '{self.partial_view}'; known: "
                             f"{', '.join(VIEWS)}")
        lo, hi = self.view_elevation
        if not -90 < lo <= hi < 90:
            raise ValueError("model.latent.kwargs: view_elevation must be [low, high] degrees with "
                             f"-90 < low <= high < 90, got {list(self.view_elevation)}")

    def check_dim(self, dim: int) -> None:
        """What the options need of the shapes' dimension (known when the model is built, not before)."""
        if self.partial_view == "camera" and dim != 3:
            raise ValueError("model.latent.kwargs: partial_view 'camera' needs 3D shapes; use 'plane' in 2D")


class ResnetBlockFC(nn.Module):
    """Fully connected residual block (Occupancy Networks): x + fc_1(relu(fc_0(relu(x)))), with a linear
    shortcut when the widths differ. ``fc_1`` starts at zero, so each block starts as the identity."""

    def __init__(self, size_in: int, size_out: int, size_h: int):
        super().__init__()
        self.fc_0 = nn.Linear(size_in, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.shortcut = nn.Linear(size_in, size_out, bias=False) if size_in != size_out else None
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.fc_1(F.relu(self.fc_0(F.relu(x))))
        return (x if self.shortcut is None else self.shortcut(x)) + dx


class PointEncoderSource(LatentSource):
    """What every encoder source shares: its options give the input points and their training augmentation;
    ``codes(batch)`` encodes ``batch['points']``; ``all_codes()`` returns the encodings of the training
    shapes, stored in the buffer ``train_codes`` by the training loop at every checkpoint."""

    optimised_at_test_time = False
    per_shape_parameters = False
    options: PointNetConfig
    train_codes: torch.Tensor

    @property
    def input_points(self) -> int:
        return self.options.points

    @property
    def augment(self) -> dict:
        o = self.options
        return {"noise": o.noise, "partial": o.partial, "keep": o.partial_keep, "view": o.partial_view,
                "elevation": tuple(o.view_elevation)}

    def codes(self, batch: dict) -> torch.Tensor:
        return self.encode(batch["points"])

    def all_codes(self) -> torch.Tensor:
        return self.train_codes.detach()

    def set_training_codes(self, codes: torch.Tensor) -> None:
        self.train_codes.copy_(codes.detach().to(self.train_codes))


class PointNetEncoder(PointEncoderSource):
    """Residual PointNet with max pooling (Mescheder et al. 2019, ``ResnetPointnet``): points -> code.

    One change from ``ResnetPointnet``: no ReLU between the pooled features and the last linear layer
    (it let the encoder collapse to a constant code; see :meth:`encode`).

    ``codes(batch)`` reads ``batch['points']`` (B, N, dim) in the normalised frame; the result does not
    depend on the order of the N points. ``all_codes()`` returns the encodings of the training shapes,
    stored in the buffer ``train_codes`` by the training loop at every checkpoint (so ``mesh``, ``sample``
    and ``interpolate`` work as for a table).
    """

    def __init__(self, num_shapes: int, dim: int, cfg: LatentConfig, options: PointNetConfig):
        super().__init__()
        options.check_dim(dim)
        self.options = options
        h, self.size, self.dim = self.options.hidden, cfg.size, dim
        self.fc_pos = nn.Linear(dim, 2 * h)
        self.blocks = nn.ModuleList([ResnetBlockFC(2 * h, h, h) for _ in range(self.options.blocks)])
        self.fc_c = nn.Linear(h, cfg.size)
        self.register_buffer("train_codes", torch.zeros(num_shapes, cfg.size))

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        """``points`` (B, N, dim) -> codes (B, L)."""
        if points.ndim != 3 or points.shape[-1] != self.dim:
            raise ValueError(f"expected points (B, N, {self.dim}), got {tuple(points.shape)}")
        net = self.blocks[0](self.fc_pos(points))
        for block in self.blocks[1:]:
            pooled = net.max(dim=1, keepdim=True).values.expand_as(net)
            net = block(torch.cat([net, pooled], dim=-1))
        # ONet applies a ReLU before fc_c; with it, a shapes run had every pooled feature negative for every
        # shape, so the code was one constant and no gradient reached the encoder again. Linear head instead.
        return self.fc_c(net.max(dim=1).values)
