"""New shapes from a trained run: codes drawn from a Gaussian fitted to the training codes, and
interpolation between two training shapes. Works for 2D runs (one grid PNG) and 3D runs (meshes).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from deepsdf_ad.config import Config
from deepsdf_ad.data_prep.formats import DataError, save_png, write_json
from deepsdf_ad.data_prep.log import note
from deepsdf_ad.device import resolve_device
from deepsdf_ad.meshing import (
    evaluate_grid,
    field_kind,
    field_picture,
    mesh_sdf,
    model_sdf,
    picture_grid,
)
from deepsdf_ad.models import SDFModel
from deepsdf_ad.runs import Run, load_trained

CODES_JSON = "codes.json"


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


def write_shapes(model: SDFModel, cfg: Config, codes: torch.Tensor, out_dir: Path, stem: str,
                 device: torch.device, resolution: int, columns: int, progress: bool = True) -> dict:
    """Decode each code: 2D runs -> one grid PNG ``<stem>.png``; 3D runs -> ``<stem>_NNN.ply`` meshes.

    A 3D code whose field has no zero crossing is skipped with a note (reported under ``skipped``).
    """
    files, skipped = [], []
    bar = tqdm(codes, desc=stem, unit="shape", disable=not progress)
    if cfg.dim == 2:
        kind = field_kind(cfg)
        fields = (evaluate_grid(model_sdf(model, c, device, cfg.mesh.batch_points), resolution, 2)
                  for c in bar)
        pics = [field_picture(values, kind) for values in fields]
        path = out_dir / f"{stem}.png"
        save_png(path, picture_grid(pics, columns))
        files.append(str(path))
    else:
        from deepsdf_ad.data_prep.formats import save_mesh

        for k, c in enumerate(bar):
            path = out_dir / f"{stem}_{k:03d}.ply"
            try:
                mesh = mesh_sdf(model_sdf(model, c, device, cfg.mesh.batch_points), resolution)
            except DataError as e:
                skipped.append({"index": k, "reason": str(e)})
                note(f"{stem} {k}: {e}")
                continue
            save_mesh(path, mesh)
            files.append(str(path))
    return {"files": files, "skipped": skipped}


def _load(run_path: str | os.PathLike, device: str):

    dev = resolve_device(device)
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    return run, cfg, model, dev


def sample_shapes(run_path: str | os.PathLike, n: int, out_dir: str | os.PathLike, seed: int = 0,
                  resolution: int | None = None, device: str = "auto", progress: bool = True) -> dict:
    """``deepsdf-ad sample``: ``n`` new shapes from codes drawn from a Gaussian fitted to the training codes.

    Writes ``DIR/samples.png`` (2D runs: a grid of fields with their contours) or ``DIR/samples_NNN.ply``
    (3D runs), and ``DIR/codes.json`` with the codes.
    """
    run, cfg, model, dev = _load(run_path, device)
    out_dir = Path(out_dir)
    codes = sample_codes(model.latent.all_codes().cpu(), n, np.random.default_rng(seed))
    info = write_shapes(model, cfg, codes, out_dir, "samples", dev, resolution or cfg.mesh.resolution,
                        columns=math.ceil(math.sqrt(n)), progress=progress)
    write_json(out_dir / CODES_JSON, {"run": str(run.path), "seed": seed, "codes": codes.tolist()})
    return {**info, "shapes": n}


def interpolate_shapes(run_path: str | os.PathLike, a: str, b: str, steps: int, out_dir: str | os.PathLike,
                       resolution: int | None = None, device: str = "auto", progress: bool = True) -> dict:
    """``deepsdf-ad interpolate``: shapes on the line between the codes of training shapes ``a`` and ``b``.

    Writes ``DIR/interpolation.png`` (2D runs: one row, ``a`` on the left) or ``DIR/interpolation_NNN.ply``
    (3D runs), and ``DIR/codes.json``.
    """
    if steps < 2:
        raise DataError(f"--steps {steps}: need at least 2 (the two ends)")
    run, cfg, model, dev = _load(run_path, device)
    out_dir = Path(out_dir)
    table = model.latent.all_codes().cpu()
    ia, ib = run.shape_index(a), run.shape_index(b)
    codes = interpolate_codes(table[ia], table[ib], steps)
    info = write_shapes(model, cfg, codes, out_dir, "interpolation", dev, resolution or cfg.mesh.resolution,
                        columns=steps, progress=progress)
    keys = run.shapes()["keys"]
    write_json(out_dir / CODES_JSON, {"run": str(run.path), "a": keys[ia], "b": keys[ib],
                                      "codes": codes.tolist()})
    return {**info, "shapes": steps, "a": keys[ia], "b": keys[ib]}
