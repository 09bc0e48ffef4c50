"""Where latent codes come from. One registry; training, reconstruction and meshing do not ask which.

- ``table``: the autodecoder. One learned code per training shape (``nn.Embedding``); for a new shape
  the code is found by optimisation.
- ``pointnet``: the autoencoder. A residual PointNet with max pooling (Occupancy Networks'
  ``ResnetPointnet``) maps points on the surface (3D) or the contour (2D) of a shape to its code in one
  forward pass.
- ``grid`` and ``pointnet_grid``: the same two with local codes, a grid of codes per shape or scene
  (:mod:`deepsdf_ad.models.grid`); a code is the flattened grid.

Every source has ``codes(batch) -> (B, L)`` and ``all_codes() -> (S, L)`` (the codes of the training
shapes, in the row order of ``RUN/shapes.json``). A source that reads points says how many with
``input_points`` (0: it reads only ``batch['index']``) and how to perturb them in training with
``augment`` (see :mod:`deepsdf_ad.inputs`). ``per_shape_parameters`` says whether the source holds
parameters per training shape (the table's rows; distributed training gathers their gradients row by row
instead of wrapping them in DDP, see :mod:`deepsdf_ad.distributed`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LatentConfig:
    source: str = "table"
    """Latent source: 'table' (autodecoder), 'pointnet' (autoencoder), 'grid' (autodecoder with a grid of
    local codes) or 'pointnet_grid' (autoencoder pooling into a grid of local codes); see
    :mod:`deepsdf_ad.models.grid`."""
    size: int = 256
    """Length of each code (for the grid sources: of each cell corner's code)."""
    init_std: float = 1.0
    """Table codes start as N(0, (init_std / sqrt(size))^2), DeepSDF's CodeInitStdDev."""
    max_norm: float | None = 1.0
    """Table codes are renormalised to at most this norm when looked up (DeepSDF's CodeBound); null = off.
    Encoder codes are not bounded (the code regulariser still applies to them)."""
    kwargs: dict = field(default_factory=dict)
    """Extra arguments of the source: for 'pointnet' the fields of :class:`PointNetConfig`; for 'grid' and
    'pointnet_grid' those of :class:`~deepsdf_ad.models.grid.GridConfig` and
    :class:`~deepsdf_ad.models.grid.PointNetGridConfig`."""


class LatentTable(nn.Module):
    """Autodecoder codes: one row per training shape.

    ``codes(batch)`` reads ``batch['index']`` (B,) long; shape keys are kept by the run (``runs.SHAPES``).
    """

    optimised_at_test_time = True
    per_shape_parameters = True
    input_points = 0
    augment: dict = {}

    def __init__(self, num_shapes: int, cfg: LatentConfig):
        super().__init__()
        if cfg.kwargs:
            raise ValueError(f"latent source 'table' takes no kwargs, got {', '.join(map(str, cfg.kwargs))}")
        self.size = cfg.size
        self.embedding = nn.Embedding(num_shapes, cfg.size, max_norm=cfg.max_norm)
        nn.init.normal_(self.embedding.weight, 0.0, cfg.init_std / math.sqrt(cfg.size))

    def codes(self, batch: dict) -> torch.Tensor:
        return self.embedding(batch["index"])

    def all_codes(self) -> torch.Tensor:
        return self.embedding.weight.detach()


@dataclass
class PointNetConfig:
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
    """Share of training inputs cut to a partial view (the points on one side of a random plane)."""
    partial_keep: float = 0.5
    """Share of the surface a partial view keeps."""


def parse_options(cls, kwargs: dict, source: str):
    """``model.latent.kwargs`` -> the options dataclass ``cls`` of latent source ``source``; unknown keys and
    values of the wrong type raise ValueError."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        raise ValueError(f"unknown {source} option '{unknown[0]}' in model.latent.kwargs; known: {', '.join(names)}")
    types = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in dataclasses.fields(cls)}
    out = {}
    for k, v in kwargs.items():
        want = types[k]
        if want == "str":
            if not isinstance(v, str):
                raise ValueError(f"model.latent.kwargs.{k} must be a string, got {v!r}")
            out[k] = v
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (want == "int" and not isinstance(v, int)):
            raise ValueError(f"model.latent.kwargs.{k} must be {'an integer' if want == 'int' else 'a number'}, "
                             f"got {v!r}")
        out[k] = int(v) if want == "int" else float(v)
    return cls(**out)


def pointnet_options(kwargs: dict) -> PointNetConfig:
    """``model.latent.kwargs`` -> :class:`PointNetConfig`; unknown keys or bad values raise ValueError."""
    opts = parse_options(PointNetConfig, kwargs, "pointnet")
    if opts.hidden < 1 or opts.blocks < 1 or opts.points < 1:
        raise ValueError("model.latent.kwargs: hidden, blocks and points must be at least 1")
    if opts.noise < 0 or not 0 <= opts.partial <= 1 or not 0 < opts.partial_keep <= 1:
        raise ValueError("model.latent.kwargs: need noise >= 0, 0 <= partial <= 1 and 0 < partial_keep <= 1")
    return opts


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


class PointEncoderSource:
    """What every encoder source shares: its options give the input points and their training augmentation;
    ``codes(batch)`` encodes ``batch['points']``; ``all_codes()`` returns the encodings of the training shapes,
    stored in the buffer ``train_codes`` by the training loop at every checkpoint."""

    optimised_at_test_time = False
    per_shape_parameters = False
    options: PointNetConfig

    @property
    def input_points(self) -> int:
        return self.options.points

    @property
    def augment(self) -> dict:
        o = self.options
        return {"noise": o.noise, "partial": o.partial, "keep": o.partial_keep}

    def codes(self, batch: dict) -> torch.Tensor:
        return self.encode(batch["points"])

    def all_codes(self) -> torch.Tensor:
        return self.train_codes.detach()

    def set_training_codes(self, codes: torch.Tensor) -> None:
        self.train_codes.copy_(codes.detach().to(self.train_codes))


class PointNetEncoder(PointEncoderSource, nn.Module):
    """Residual PointNet with max pooling (Mescheder et al. 2019, ``ResnetPointnet``): points -> code.

    One change from ``ResnetPointnet``: no ReLU between the pooled features and the last linear layer
    (it let the encoder collapse to a constant code; see :meth:`encode`).

    ``codes(batch)`` reads ``batch['points']`` (B, N, dim) in the normalised frame; the result does not
    depend on the order of the N points. ``all_codes()`` returns the encodings of the training shapes,
    stored in the buffer ``train_codes`` by the training loop at every checkpoint (so ``mesh``, ``sample``
    and ``interpolate`` work as for a table).
    """

    def __init__(self, num_shapes: int, dim: int, cfg: LatentConfig):
        super().__init__()
        self.options = pointnet_options(cfg.kwargs)
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


def latent_options(cfg: LatentConfig):
    """Check ``cfg.kwargs`` against the source's options (ValueError naming the key); returns them or None."""
    from deepsdf_ad.models.grid import grid_options, pointnet_grid_options

    parsers = {"pointnet": pointnet_options, "grid": grid_options, "pointnet_grid": pointnet_grid_options}
    if cfg.source in parsers:
        return parsers[cfg.source](cfg.kwargs)
    if cfg.kwargs:
        raise ValueError(f"latent source '{cfg.source}' takes no model.latent.kwargs, got "
                         f"{', '.join(map(str, cfg.kwargs))}")
    return None


def build_latent_source(cfg: LatentConfig, num_shapes: int, dim: int) -> nn.Module:
    if cfg.source not in LATENT_SOURCES:
        raise KeyError(f"unknown latent source '{cfg.source}'; known: {', '.join(LATENT_SOURCES)}")
    cls = LATENT_SOURCES[cfg.source]
    if cls is LatentTable:
        return LatentTable(num_shapes, cfg)
    return cls(num_shapes=num_shapes, dim=dim, cfg=cfg)


# the grid sources build on the classes above
from deepsdf_ad.models.grid import LatentGrid, PointNetGridEncoder  # noqa: E402

LATENT_SOURCES: dict[str, type[nn.Module]] = {"table": LatentTable, "pointnet": PointNetEncoder, "grid": LatentGrid,
                                              "pointnet_grid": PointNetGridEncoder}
