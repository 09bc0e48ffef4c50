"""The autodecoder's codes: one learned code per training shape (DeepSDF); a new shape's code is found by
optimisation (:mod:`deepsdf_ad.reconstruct`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from deepsdf_ad.models.base import LatentConfig, LatentSource


class LatentTable(LatentSource):
    """One row per training shape (``nn.Embedding``). ``codes(batch)`` reads ``batch['index']`` (B,) long;
    shape keys are kept by the run (``runs.SHAPES``)."""

    optimised_at_test_time = True
    per_shape_parameters = True

    def __init__(self, num_shapes: int, dim: int, cfg: LatentConfig, options: None = None):
        super().__init__()
        self.size = cfg.size
        self.embedding = nn.Embedding(num_shapes, cfg.size, max_norm=cfg.max_norm)
        nn.init.normal_(self.embedding.weight, 0.0, cfg.init_std / math.sqrt(cfg.size))

    def codes(self, batch: dict) -> torch.Tensor:
        return self.embedding(batch["index"])

    def all_codes(self) -> torch.Tensor:
        return self.embedding.weight.detach()
