"""Codes from observations, by optimisation (autodecoder) of the clamped SDF loss against the decoder.

Observations are points with an interval for their SDF, ``lo <= sdf <= hi``: an exact sample has
``lo = hi``; a free-space point seen through by a camera ray has ``0 <= sdf <= distance to the hit``.
The loss is the distance of the clamped prediction to the clamped interval (L1), which is DeepSDF's
clamped L1 when ``lo = hi``.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh

from data_prep.formats import DataError
from data_prep.meshes import apply_normalization, undo_normalization
from data_prep.scans import load_scan
from deepsdf_ad.config import Config, ReconstructConfig
from deepsdf_ad.models import SDFModel


@dataclass
class Observations:
    """Points (M, dim) in the normalised frame with SDF bounds ``lo`` (M,) <= sdf <= ``hi`` (M,)."""

    points: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def observations_from_samples(samples: np.ndarray) -> Observations:
    """Exact SDF samples (M, dim + 1)."""
    return Observations(samples[:, :-1], samples[:, -1], samples[:, -1])


def observations_from_scan(points: np.ndarray, normals: np.ndarray | None, camera: np.ndarray | None,
                           cfg: ReconstructConfig, rng: np.random.Generator) -> Observations:
    """Observations from a partial scan in the normalised frame.

    Surface points have sdf 0; with normals, points moved +/- ``normal_offset`` along them have
    sdf +/- offset; with the camera known, ``free_space`` points per surface point lie on the ray in front
    of it with 0 <= sdf <= their distance to the surface point.
    """
    pts = [points]
    lo = [np.zeros(len(points))]
    hi = [np.zeros(len(points))]
    eps = cfg.normal_offset
    if normals is not None and eps > 0:
        n = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        for s in (eps, -eps):
            pts.append(points + s * n)
            lo.append(np.full(len(points), s))
            hi.append(np.full(len(points), s))
    if camera is not None and cfg.free_space > 0:
        ray = points - camera[None]
        dist = np.linalg.norm(ray, axis=1, keepdims=True)
        unit = ray / np.maximum(dist, 1e-12)
        k = cfg.free_space
        along = rng.uniform(2 * eps, 1.0, size=(len(points), k)) * np.minimum(dist, 1.0)
        free = points[:, None, :] - unit[:, None, :] * along[..., None]
        pts.append(free.reshape(-1, points.shape[1]))
        lo.append(np.zeros(len(points) * k))
        hi.append(along.reshape(-1))
    return Observations(np.concatenate(pts), np.concatenate(lo), np.concatenate(hi))


def initial_code(model: SDFModel, cfg: ReconstructConfig, generator: torch.Generator | None,
                 mean_code: torch.Tensor | None = None) -> torch.Tensor:
    if cfg.init == "mean" and mean_code is not None:
        return mean_code.detach().clone().reshape(-1)
    return torch.randn(model.latent_size, generator=generator) * cfg.init_std


def optimise_code(model: SDFModel, obs: Observations, cfg: ReconstructConfig, clamp: float,
                  device: torch.device, init: torch.Tensor | None = None, seed: int = 0,
                  iterations: int | None = None) -> tuple[torch.Tensor, list[float]]:
    """Find the code that best explains ``obs`` with the decoder frozen. Returns the code (L,) and the
    loss per iteration."""
    gen = torch.Generator().manual_seed(seed)
    iterations = cfg.iterations if iterations is None else iterations
    code = (init if init is not None else torch.randn(model.latent_size, generator=gen) * cfg.init_std)
    code = code.detach().clone().to(device).reshape(1, -1).requires_grad_(True)
    pts = torch.from_numpy(np.asarray(obs.points, np.float32)).to(device)
    lo = torch.from_numpy(np.asarray(obs.lo, np.float32)).clamp(-clamp, clamp).to(device)
    hi = torch.from_numpy(np.asarray(obs.hi, np.float32)).clamp(-clamp, clamp).to(device)
    opt = torch.optim.Adam([code], lr=cfg.lr)
    drop = int(cfg.lr_drop_at * iterations)
    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    losses = []
    try:
        n = len(pts)
        for it in range(iterations):
            if it == drop:
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * cfg.lr_drop_factor
            idx = torch.randint(n, (min(cfg.samples, n),), generator=gen).to(device)
            pred = model.decode(code, pts[idx][None])[0].clamp(-clamp, clamp)
            loss = (torch.relu(lo[idx] - pred) + torch.relu(pred - hi[idx])).mean()
            if cfg.code_reg > 0:
                loss = loss + cfg.code_reg * code.pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    if not all(math.isfinite(x) for x in losses[-1:]):
        raise DataError("code optimisation diverged (loss is not finite); lower reconstruct.lr")
    return code.detach()[0], losses


def estimate_normalization(points: np.ndarray) -> tuple[np.ndarray, float]:
    """DeepSDF's normalisation of the observed points themselves (used when the true one is unknown)."""
    centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
    radius = float(np.linalg.norm(points - centre, axis=1).max())
    if radius <= 0:
        raise DataError("the observed points all coincide; cannot normalise them")
    return -centre, 1.0 / (1.03 * radius)


def reconstruct_file(run_path: str | os.PathLike, partial: str | os.PathLike, out: str | os.PathLike,
                     resolution: int | None = None, iterations: int | None = None, device: str = "auto",
                     norm: str | None = None, seed: int = 0) -> dict:
    """``deepsdf-ad reconstruct``: partial scan (mesh frame) -> completed mesh (same frame) at ``out``."""
    from data_prep.formats import atomic_path, load_normalization
    from deepsdf_ad.meshing import mesh_sdf, model_sdf
    from deepsdf_ad.runs import Run
    from deepsdf_ad.train import load_trained, resolve_device

    dev = resolve_device(device)
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    if cfg.dim != 3:
        raise DataError(f"{run.path}: this is a {cfg.dim}D run; 3D scans need a 3D run")
    cloud, meta = load_scan(partial)
    if norm is not None:
        offset, scale = load_normalization(norm)
        source = f"from {norm}"
    elif "normalization" in meta:
        offset, scale = np.asarray(meta["normalization"]["offset"], float), float(meta["normalization"]["scale"])
        source = "from the scan's sidecar"
    else:
        offset, scale = estimate_normalization(cloud.points)
        source = "estimated from the observed points"
        print(f"deepsdf-ad: note: {partial}: no normalisation known; estimated it from the points "
              "(pass --norm NORM.npz for the true one)", file=sys.stderr)
    pts = apply_normalization(cloud.points, offset, scale)
    camera = apply_normalization(np.asarray(meta["camera"], float), offset, scale) if "camera" in meta else None
    normals = cloud.normals
    if normals is not None and camera is not None:  # make sure they face the camera (the outside)
        flip = np.sum(normals * (camera[None] - pts), axis=1) < 0
        normals = np.where(flip[:, None], -normals, normals)
    obs = observations_from_scan(pts, normals, camera, cfg.reconstruct, np.random.default_rng(seed))
    mean_code = mean_training_code(run)
    init = initial_code(model, cfg.reconstruct, torch.Generator().manual_seed(seed), mean_code)
    code, losses = optimise_code(model, obs, cfg.reconstruct, cfg.train.clamp, dev, init=init, seed=seed,
                                 iterations=iterations)
    res = resolution or cfg.mesh.resolution
    mesh = mesh_sdf(model_sdf(model, code, dev, cfg.mesh.batch_points), res)
    mesh = trimesh.Trimesh(undo_normalization(mesh.vertices, offset, scale), mesh.faces, process=False)
    out = Path(out)
    with atomic_path(out) as tmp:
        mesh.export(tmp, file_type=out.suffix.lstrip(".") or "ply")
    return {"out": str(out), "points": int(len(cloud.points)), "observations": int(len(obs)),
            "final_loss": losses[-1] if losses else None, "normalization": source, "vertices": int(len(mesh.vertices))}


def mean_training_code(run) -> torch.Tensor | None:
    try:
        codes = run.codes()
    except DataError:
        return None
    return codes.mean(dim=0) if len(codes) else None


def reconstruct_config(cfg: Config) -> ReconstructConfig:
    return cfg.reconstruct
