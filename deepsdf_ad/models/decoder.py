"""The DeepSDF decoder: an MLP from (latent code, coordinates) to a signed distance."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``, with a faster mask on the CPU (where it is rounded to a multiple of 2^-15).

    On the CPU, torch's dropout mask comes from ``bernoulli_``, one random double per element: measured at
    DeepSDF's spec (8 x 512, dropout 0.2 after every layer), it took 39% of a bf16 training step. Here 15
    random bits per element come from half as many 32-bit integers, compared to the threshold: the same
    Bernoulli(1 - p) keep mask, drawn from the same global generator (so seeded runs stay reproducible). Other
    devices draw their masks fast already and use ``F.dropout``.
    """
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p=p, training=True)
    n = x.numel()
    # int32 random_() fills [0, 2^31): each value holds two 15-bit uniform halves (the sign bit of the low one
    # is random too, and masked off)
    bits = torch.empty((n + 1) // 2, dtype=torch.int32).random_().view(torch.int16)[:n].view(x.shape)
    keep = bits.bitwise_and_(0x7FFF) >= round(p * 32768)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def encode_coordinates(xyz: torch.Tensor, frequencies: int) -> torch.Tensor:
    """``xyz`` (..., dim) -> (..., dim * (1 + 2 * frequencies)): the coordinates, then ``sin(2^k pi xyz)`` and
    ``cos(2^k pi xyz)`` for k < ``frequencies`` (NeRF's positional encoding); ``frequencies = 0``: ``xyz``."""
    if frequencies == 0:
        return xyz
    scales = (2.0 ** torch.arange(frequencies, device=xyz.device, dtype=xyz.dtype)) * math.pi
    angles = (xyz.unsqueeze(-1) * scales).flatten(-2)  # (..., dim * frequencies)
    return torch.cat([xyz, torch.sin(angles), torch.cos(angles)], dim=-1)


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
    fourier: int = 0
    """Frequencies of a positional encoding of the coordinates (NeRF's): ``xyz`` is fed as
    ``[xyz, sin(2^k pi xyz), cos(2^k pi xyz)]`` for k < ``fourier``; 0 = the raw coordinates (DeepSDF)."""


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
        self.coord_size = dim * (1 + 2 * cfg.fourier)
        """Width of the (encoded) coordinates the layers that read the code see."""
        d_in = latent_size + self.coord_size
        widths = [d_in, *cfg.hidden, 1]
        layers = []
        for i in range(len(widths) - 1):
            out = widths[i + 1] - d_in if (i + 1) in cfg.latent_in else widths[i + 1]
            lin = nn.Linear(widths[i], out)
            if cfg.weight_norm and i < len(widths) - 2:
                lin = weight_norm(lin)
            layers.append(lin)
        # the last layer starts without a bias, so that the first predictions lie near 0, inside the clamped
        # loss's band: the clamped L1 has no gradient where a prediction is beyond ±delta, and the default
        # bias of a 128-wide layer (up to ±0.088) put every near-surface prediction of 1 seed in 20 beyond
        # 0.1 at the start, from where it never learned (the scenes grid autoencoder, seed 2: loss 0.085 from
        # the first epoch to the last; tests/test_models.py)
        nn.init.zeros_(layers[-1].bias)
        self.layers = nn.ModuleList(layers)
        # the code's part of the products once per code (see forward) pays where the layers are wide:
        # measured bf16 on 2 cores, 8x512 with a 256 code 61k -> 68k queries/s; 8x128 with a 64 code slower
        # (716k -> 471k: the extra additions cost more than the saved multiply-adds)
        self.share_code = min(cfg.hidden, default=0) >= 256

    def forward(self, z: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        """Args: ``z`` (..., latent_size), ``xyz`` (..., dim), same leading shape; or ``z`` (..., 1,
        latent_size) shared by the N points of ``xyz`` (..., N, dim). Returns sdf (...).

        A shared code on wide layers (``share_code``): the layers that read the code (the first and the
        ``latent_in`` ones) take its part of their product once per code instead of once per point; at
        DeepSDF's size that part is 1/7 of the decoder's multiply-adds."""
        xyz = encode_coordinates(xyz, self.cfg.fourier)
        shared = z.shape[:-1] != xyz.shape[:-1]
        if shared and not self.share_code:
            z, shared = z.expand(*xyz.shape[:-1], z.shape[-1]), False
        inp = None if shared else torch.cat([z, xyz], dim=-1)
        x = inp
        last = len(self.layers) - 1
        for i, lin in enumerate(self.layers):
            reads_code = i == 0 or i in self.cfg.latent_in
            if shared and reads_code:
                w = lin.weight  # computed once (weight norm)
                # width of the previous layer's part (0 at the first)
                k = w.shape[1] - self.latent_size - self.coord_size
                y = (F.linear(xyz, w[:, k + self.latent_size:])
                     + F.linear(z, w[:, k:k + self.latent_size], lin.bias))
                x = y if i == 0 else F.linear(x, w[:, :k]) + y
            else:
                if i in self.cfg.latent_in:
                    x = torch.cat([x, inp], dim=-1)
                x = lin(x)
            if i < last:
                x = F.relu(x)
                if self.cfg.dropout > 0:
                    x = dropout(x, self.cfg.dropout, self.training)
        if self.cfg.tanh:
            x = torch.tanh(x)
        return x.squeeze(-1)
