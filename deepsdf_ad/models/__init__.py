"""A model is a latent source plus a decoder."""

from __future__ import annotations

import torch
from torch import nn

from deepsdf_ad.models.decoder import Decoder, DecoderConfig
from deepsdf_ad.models.latents import LatentConfig, build_latent_source


class SDFModel(nn.Module):
    """``latent`` maps a batch to codes (B, L); ``decoder`` maps (code, coordinates) to sdf."""

    def __init__(self, latent: nn.Module, decoder: Decoder):
        super().__init__()
        self.latent = latent
        self.decoder = decoder

    @property
    def dim(self) -> int:
        return self.decoder.dim

    @property
    def latent_size(self) -> int:
        return self.decoder.latent_size

    def decode(self, codes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``codes`` (B, L), ``points`` (B, N, dim) -> sdf (B, N)."""
        z = codes[:, None, :].expand(-1, points.shape[1], -1)
        return self.decoder(z, points)


def build_model(dim: int, decoder: DecoderConfig, latent: LatentConfig, num_shapes: int) -> SDFModel:
    return SDFModel(build_latent_source(latent, num_shapes, dim), Decoder(latent.size, dim, decoder))


__all__ = ["SDFModel", "build_model", "Decoder", "DecoderConfig", "LatentConfig"]
