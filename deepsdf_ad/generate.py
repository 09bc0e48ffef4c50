"""New shapes from a trained run: codes drawn from a Gaussian fitted to the training codes, and
interpolation between two training shapes, decoded to field pictures (2D runs) or meshes (3D runs). The
commands that write them: :mod:`deepsdf_ad.commands.generate`.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from deepsdf_ad.config import Config
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.meshing import evaluate_grid, field_kind, field_picture, mesh_sdf, model_sdf
from deepsdf_ad.models import SDFModel


def fit_gaussian(codes: torch.Tensor, shrink: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Mean (L,) and covariance (L, L) of codes (S, L); the covariance is shrunk towards its diagonal
    mean by ``shrink`` so it stays positive definite with few shapes."""
    c = codes.detach().double().cpu().numpy()
    if len(c) == 0:
        raise DataError("the run has no training codes to fit a distribution to")
    mean = c.mean(axis=0)
    cov = np.cov(c, rowvar=False) if len(c) > 1 else np.zeros((c.shape[1], c.shape[1]))
    cov = np.atleast_2d(cov)
    scale = float(np.trace(cov)) / cov.shape[0] if np.trace(cov) > 0 else 1e-4
    return mean, (1 - shrink) * cov + shrink * scale * np.eye(cov.shape[0])


FULL_COVARIANCE_MAX = 4096
"""Codes longer than this (flattened grids of local codes) get a diagonal Gaussian: a full covariance would
not fit in memory."""


def sample_codes(codes: torch.Tensor, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` codes (n, L) from the Gaussian fitted to ``codes`` (S, L) (diagonal when L is large)."""
    if codes.shape[1] > FULL_COVARIANCE_MAX:
        c = codes.detach().double().cpu().numpy()
        if len(c) == 0:
            raise DataError("the run has no training codes to fit a distribution to")
        std = c.std(axis=0) if len(c) > 1 else np.zeros(c.shape[1])
        return torch.from_numpy(c.mean(axis=0) + std * rng.standard_normal((n, c.shape[1]))).float()
    mean, cov = fit_gaussian(codes)
    return torch.from_numpy(rng.multivariate_normal(mean, cov, size=n, method="cholesky")).float()


def interpolate_codes(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` codes (steps, L) on the straight line from ``a`` to ``b``, both ends included."""
    t = torch.linspace(0.0, 1.0, steps, dtype=a.dtype)[:, None]
    return (1 - t) * a[None] + t * b[None]


def decode_shapes(model: SDFModel, cfg: Config, codes: torch.Tensor, device: torch.device, resolution: int,
                  label: str = "decode", progress: bool = True) -> list:
    """Decode each code (a progress bar named ``label``): for a 2D run its field picture (H, W) (see
    :func:`deepsdf_ad.meshing.field_picture`), for a 3D run its mesh, or the :class:`DataError` saying why it
    has none (a field without a zero crossing)."""
    out: list = []
    bar = tqdm(codes, desc=label, unit="shape", disable=not progress)
    if cfg.dim == 2:
        kind = field_kind(cfg)
        for c in bar:
            out.append(field_picture(evaluate_grid(model_sdf(model, c, device, cfg.mesh.batch_points),
                                                   resolution, 2), kind))
        return out
    for c in bar:
        try:
            out.append(mesh_sdf(model_sdf(model, c, device, cfg.mesh.batch_points), resolution))
        except DataError as e:
            out.append(e)
    return out
