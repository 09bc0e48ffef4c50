"""The 3D autoencoder must not collapse: after a short training on a few clearly different analytic shapes, the
encoder's codes and the shapes they decode to must still differ as much as the shapes do.

The collapse this guards against: the max-pooled PointNet features of shapes normalised to the unit sphere are
nearly the same for every shape, so at a default initialisation the codes hardly differ, the decoder learns the
mean shape and the encoder never learns to tell the shapes apart (every chair and table decoded to one blob).
"""

from __future__ import annotations

import numpy as np
import torch

from data_prep import formats
from deepsdf_ad.config import load_config
from deepsdf_ad.runs import Run
from deepsdf_ad.train import load_trained, train
from tests.helpers import REPO, box_sdf, sphere_sdf


def _torus(p: np.ndarray) -> np.ndarray:
    q = np.stack([np.linalg.norm(p[:, :2], axis=1) - 0.6, p[:, 2]], axis=1)
    return np.linalg.norm(q, axis=1) - 0.2


def _rod(p: np.ndarray) -> np.ndarray:
    q = p.copy()
    q[:, 0] = np.clip(q[:, 0], -0.7, 0.7)
    return np.linalg.norm(p - q, axis=1) - 0.15


SHAPES = {
    "ball": lambda p: sphere_sdf(p, 0.8),
    "slab": lambda p: box_sdf(p, (0.6, 0.6, 0.08)),
    "torus": _torus,
    "rod": _rod,
    "block": lambda p: box_sdf(p, (0.45, 0.45, 0.45)),
    "pair": lambda p: np.minimum(sphere_sdf(p, 0.3, (0.45, 0, 0)), sphere_sdf(p, 0.3, (-0.45, 0, 0))),
}


def _surface(sdf, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` points on the zero level of ``sdf`` (uniform points pulled along the numerical gradient)."""
    p = rng.uniform(-1, 1, size=(20 * n, 3))
    p = p[np.abs(sdf(p)) < 0.1][:n]
    for _ in range(4):
        e = 1e-4
        g = np.stack([(sdf(p + e * d) - sdf(p - e * d)) / (2 * e) for d in np.eye(3)], axis=1)
        p = p - sdf(p)[:, None] * g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-9)
    return p


def _data_root(base) -> tuple:
    rng = np.random.default_rng(0)
    for name, sdf in SHAPES.items():
        surf = _surface(sdf, rng, 2000)
        near = surf[rng.integers(0, len(surf), 3000)] + rng.normal(0, 0.05, (3000, 3))
        p = np.concatenate([near, rng.uniform(-1, 1, (1000, 3))])
        s = sdf(p)
        samples = np.concatenate([p, s[:, None]], axis=1).astype(np.float32)
        formats.save_sdf_samples(base / "sdf" / "toy" / f"{name}.npz", samples[s > 0], samples[s <= 0])
        formats.save_points_ply(base / "surface" / "toy" / f"{name}.ply", surf)
    formats.write_split(base / "splits" / "train.json", {"toy": sorted(SHAPES)})
    return base


def test_encoder_codes_and_shapes_stay_apart(tmp_path, extra=()):
    data = _data_root(tmp_path / "data")
    cfg = load_config(REPO / "configs" / "shapes_cpu_ae.yaml", [
        "model.decoder.hidden=[64,64,64,64]", "model.decoder.latent_in=[2]", "model.latent.size=16",
        "model.latent.kwargs={hidden: 32, blocks: 3, points: 256}", "train.shapes_per_batch=6",
        "train.samples_per_shape=1024", "train.checkpoint_every=100", "train.lr_decoder.kind=step",
        "train.lr_latent.kind=step", *extra])
    train(cfg, data, tmp_path / "run", epochs=60, device="cpu", progress=False)
    _, model = load_trained(Run(tmp_path / "run"), torch.device("cpu"))
    codes = model.latent.all_codes()
    # the codes: their spread across shapes is not small against their common part
    spread = float(codes.std(dim=0).norm() / codes.mean(dim=0).norm().clamp_min(1e-9))
    assert spread > 0.5, f"codes barely differ between shapes (spread / mean = {spread:.3f})"
    # the decoded shapes differ as the true ones do: across shapes, the predicted sdf varies at least half as much
    # as the true sdf (a collapsed encoder decodes one mean shape: a small fraction)
    x = np.random.default_rng(1).uniform(-0.9, 0.9, (2000, 3))
    truth = np.stack([np.clip(sdf(x), -0.1, 0.1) for sdf in SHAPES.values()])  # rows in the keys' sorted order
    order = np.argsort(list(SHAPES))
    truth = truth[order]
    with torch.no_grad():
        pred = model.decode(codes, torch.from_numpy(x).float().expand(len(codes), -1, -1)).clamp(-0.1, 0.1).numpy()
    ratio = float(pred.std(axis=0).mean() / truth.std(axis=0).mean())
    assert ratio > 0.5, f"the decoded shapes barely differ (across-shape sdf spread {ratio:.2f} of the truth's)"
    # and each decoded shape is nearest its own truth
    err = np.abs(pred[:, None, :] - truth[None, :, :]).mean(axis=2)
    assert (err.argmin(axis=1) == np.arange(len(SHAPES))).all(), f"decoded shapes confused: {err.round(3)}"
