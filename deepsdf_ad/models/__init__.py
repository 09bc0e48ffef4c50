"""A model is a latent source plus a decoder."""

from __future__ import annotations

import torch
from torch import nn

from deepsdf_ad.models.base import LatentConfig, LatentSource
from deepsdf_ad.models.decoder import Decoder, DecoderConfig
from deepsdf_ad.models.sources import build_latent_source


class SDFModel(nn.Module):
    """``latent`` maps a batch to codes (B, L); ``decoder`` maps (code, coordinates) to sdf.

    A global source's code goes to the decoder as it is; a grid source's code is a flattened grid of local
    codes, and the source says how a point is decoded from it (``decode_points``), which codes a
    reconstruction may change (``observed_mask``) and where the code is empty (``occupied``).
    """

    def __init__(self, latent: LatentSource, decoder: Decoder):
        super().__init__()
        self.latent = latent
        self.decoder = decoder

    @property
    def dim(self) -> int:
        return self.decoder.dim

    @property
    def latent_size(self) -> int:
        """Length L of one shape's code (a grid source: the flattened grid)."""
        return self.latent.code_length

    def decode(self, codes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``codes`` (B, L), ``points`` (B, N, dim) -> sdf (B, N)."""
        return self.latent.decode_points(self.decoder, codes, points)

    def code_penalty(self, codes: torch.Tensor) -> torch.Tensor:
        """The code regulariser per shape (B,): ||z||^2 (a grid: the mean over its non-empty codes)."""
        return self.latent.penalty(codes)

    def observed_mask(self, points: list[torch.Tensor]) -> torch.Tensor | None:
        """Which entries of the code (B, L) a reconstruction from B sets of observed near-surface points
        (each (M_i, dim)) may change; None: all (a global code)."""
        return self.latent.observed_mask(points)

    def occupied(self, code: torch.Tensor):
        """For one code (L,): a function of points (M, dim) -> bool (M,), False where the code is empty (the
        mesher skips those cells); None when every point is decoded (a global code)."""
        return self.latent.occupied(code)


def build_model(dim: int, decoder: DecoderConfig, latent: LatentConfig, num_shapes: int) -> SDFModel:
    return SDFModel(build_latent_source(latent, num_shapes, dim), Decoder(latent.size, dim, decoder))


__all__ = ["SDFModel", "build_model", "Decoder", "DecoderConfig", "LatentConfig", "LatentSource"]
