"""The DeepSDF decoder: an MLP from (latent code, coordinates) to a signed distance."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


@dataclass
class DecoderConfig:
    hidden: tuple[int, ...] = (512,) * 8
    """Width of each hidden layer."""
    latent_in: tuple[int, ...] = (4,)
    """Layers that receive [x, z, xyz] again (DeepSDF: the 5th linear layer, index 4)."""
    dropout: float = 0.2
    """Dropout probability after every hidden layer (0 disables)."""
    weight_norm: bool = True
    """Weight normalisation on every linear layer but the last."""
    tanh: bool = True
    """tanh on the output, so predictions live in (-1, 1)."""


class Decoder(nn.Module):
    """DeepSDF's decoder (Park et al. 2019, and its released ``deep_sdf_decoder.py``).

    Args:
        latent_size: length of the code ``z``.
        dim: coordinate dimension (3 for shapes, 2 for digits).
        cfg: layer widths, skip layers, dropout, weight norm.
    """

    def __init__(self, latent_size: int, dim: int, cfg: DecoderConfig):
        super().__init__()
        self.latent_size, self.dim, self.cfg = latent_size, dim, cfg
        d_in = latent_size + dim
        widths = [d_in, *cfg.hidden, 1]
        layers = []
        for i in range(len(widths) - 1):
            out = widths[i + 1] - d_in if (i + 1) in cfg.latent_in else widths[i + 1]
            lin = nn.Linear(widths[i], out)
            if cfg.weight_norm and i < len(widths) - 2:
                lin = weight_norm(lin)
            layers.append(lin)
        self.layers = nn.ModuleList(layers)

    def forward(self, z: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        """Args: ``z`` (..., latent_size), ``xyz`` (..., dim), same leading shape. Returns sdf (...)."""
        inp = torch.cat([z, xyz], dim=-1)
        x = inp
        last = len(self.layers) - 1
        for i, lin in enumerate(self.layers):
            if i in self.cfg.latent_in:
                x = torch.cat([x, inp], dim=-1)
            x = lin(x)
            if i < last:
                x = F.relu(x)
                if self.cfg.dropout > 0:
                    x = F.dropout(x, p=self.cfg.dropout, training=self.training)
        if self.cfg.tanh:
            x = torch.tanh(x)
        return x.squeeze(-1)
