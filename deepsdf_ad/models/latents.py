"""Where latent codes come from. One registry; training, reconstruction and meshing do not ask which.

- ``table``: the autodecoder. One learned code per training shape (``nn.Embedding``); for a new shape
  the code is found by optimisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class LatentConfig:
    source: str = "table"
    """Latent source: 'table' (autodecoder)."""
    size: int = 256
    """Length of each code."""
    init_std: float = 1.0
    """Codes start as N(0, (init_std / sqrt(size))^2), DeepSDF's CodeInitStdDev."""
    max_norm: float | None = 1.0
    """Codes are renormalised to at most this norm when looked up (DeepSDF's CodeBound); null = off."""
    kwargs: dict = field(default_factory=dict)
    """Extra arguments of the source (e.g. the PointNet's width)."""


class LatentTable(nn.Module):
    """Autodecoder codes: one row per training shape.

    ``codes(batch)`` reads ``batch['index']`` (B,) long; shape keys are kept by the run (``runs.SHAPES``).
    """

    optimised_at_test_time = True

    def __init__(self, num_shapes: int, cfg: LatentConfig):
        super().__init__()
        self.size = cfg.size
        self.embedding = nn.Embedding(num_shapes, cfg.size, max_norm=cfg.max_norm)
        nn.init.normal_(self.embedding.weight, 0.0, cfg.init_std / math.sqrt(cfg.size))

    def codes(self, batch: dict) -> torch.Tensor:
        return self.embedding(batch["index"])

    def all_codes(self) -> torch.Tensor:
        return self.embedding.weight.detach()


LATENT_SOURCES: dict[str, type[nn.Module]] = {"table": LatentTable}


def build_latent_source(cfg: LatentConfig, num_shapes: int, dim: int) -> nn.Module:
    if cfg.source not in LATENT_SOURCES:
        raise KeyError(f"unknown latent source '{cfg.source}'; known: {', '.join(LATENT_SOURCES)}")
    cls = LATENT_SOURCES[cfg.source]
    if cls is LatentTable:
        return LatentTable(num_shapes, cfg)
    return cls(num_shapes=num_shapes, dim=dim, cfg=cfg)
