"""The codes of a run's training shapes (its table, or its encoder's output) and what the article measures and
draws of them: how much they differ across shapes, and a 2D projection.

A collapsed autoencoder gives every shape nearly the same code: its codes' spread across shapes is a small
share of their common part (:func:`spread_ratio`), and in :func:`project_2d`'s units (the codes' RMS norm)
they sit in a dot at the centre.
"""

from __future__ import annotations

import numpy as np
import torch

from deepsdf_ad.data_prep.formats import DataError, DataRoot


def training_codes(run, root: DataRoot, device: torch.device, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The codes (N, L) float64 of ``run``'s training shapes and their keys ('category/id'): a table run's
    learned codes, an encoder run's codes of each shape's surface points (one pass; the shapes are read from
    ``root``, the data the run trained on)."""
    from deepsdf_ad.inputs import load_surface
    from deepsdf_ad.reconstruct import encode_codes
    from deepsdf_ad.runs import load_trained

    keys = list(run.shapes()["keys"])
    if run.config().model.latent.source == "table":  # the learned table; no model to build
        codes = run.codes().double().reshape(len(keys), -1).numpy()
        return codes, keys
    cfg, model = load_trained(run, device)
    refs = {r.key: r for r in root.shapes("train")}
    missing = [k for k in keys if k not in refs]
    if missing:
        raise DataError(f"{root.root}: {len(missing)} of the run's training shapes are not in this data "
                        f"(first: {missing[0]})")
    points = [load_surface(refs[k], cfg.dim) for k in keys]
    codes = [encode_codes(model, points[s:s + 64], device, seed) for s in range(0, len(points), 64)]
    return torch.cat(codes).double().reshape(len(keys), -1).cpu().numpy(), keys


def spread_ratio(codes: np.ndarray) -> float:
    """How much codes (N, L) differ across shapes against what they share: the norm of the per-dimension
    standard deviation over the norm of the mean code (inf when the mean is 0). The collapsed
    shapes_pointnet_ae: 0.07 after 10 epochs; shapes_cpu_ae: 6.1 after 100
    (tests/test_encoder_collapse.py)."""
    c = np.asarray(codes, np.float64)
    mean = float(np.linalg.norm(c.mean(axis=0)))
    spread = float(np.linalg.norm(c.std(axis=0)))
    return spread / mean if mean > 0 else float("inf")


def project_2d(codes: np.ndarray) -> tuple[np.ndarray, float]:
    """The codes (N, L) on their first two principal axes, in units of the codes' RMS norm (so codes that
    all sit near their common part land near 0, whatever their absolute size), and the share of the variance
    across shapes those two axes hold. (N, 2), float."""
    c = np.asarray(codes, np.float64)
    if len(c) < 2:
        raise ValueError("a projection needs at least 2 codes")
    centred = c - c.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2] if len(vt) >= 2 else np.vstack([vt, np.zeros_like(vt)])
    rms = float(np.sqrt((c**2).sum(axis=1).mean()))
    proj = centred @ axes.T / (rms if rms > 0 else 1.0)
    total = float((s**2).sum())
    return proj, float((s[:2]**2).sum() / total) if total > 0 else 0.0
