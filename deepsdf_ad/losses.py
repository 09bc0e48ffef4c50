"""The losses of the field and its codes: DeepSDF's clamped L1 and the codes' Gaussian prior. Training and
the test-time code search (:mod:`deepsdf_ad.reconstruct`) both use them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from deepsdf_ad.config import Config

if TYPE_CHECKING:
    from deepsdf_ad.models import SDFModel


def sdf_error(pred: torch.Tensor, target: torch.Tensor, clamp: float) -> torch.Tensor:
    """DeepSDF's clamped L1 of every sample (``clamp = inf``: plain L1)."""
    return (pred.clamp(-clamp, clamp) - target.clamp(-clamp, clamp)).abs()


def sdf_loss(pred: torch.Tensor, target: torch.Tensor, clamp: float) -> torch.Tensor:
    """DeepSDF's clamped L1, mean over samples (``clamp = inf``: plain L1)."""
    return sdf_error(pred, target, clamp).mean()


def loss_clamp(cfg: Config) -> float:
    """The clamp of the field loss: ``train.clamp`` for clamped_l1, infinity for plain l1."""
    return cfg.train.clamp if cfg.train.loss == "clamped_l1" else math.inf


def code_regulariser(codes: torch.Tensor, model: SDFModel | None = None) -> torch.Tensor:
    """Mean squared norm of the codes: the negative log of a zero-mean Gaussian prior, up to a constant
    (``model``: its :meth:`SDFModel.code_penalty`, per local code for a grid)."""
    return (codes.pow(2).sum(dim=-1) if model is None else model.code_penalty(codes)).mean()
