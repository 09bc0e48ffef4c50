"""Shared test helpers: tiny configs, analytic shapes, the shared-data location."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY = [
    "model.decoder.hidden=[32,32,32,32]",
    "model.decoder.latent_in=[2]",
    "model.decoder.dropout=0.0",
    "model.latent.size=8",
    "train.shapes_per_batch=4",
    "train.samples_per_shape=512",
    "train.checkpoint_every=2",
    "mesh.resolution=32",
    "reconstruct.iterations=30",
    "reconstruct.samples=1000",
]


def cli(*args: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m deepsdf_ad ARGS`` in a subprocess (the real entry point)."""
    proc = subprocess.run([sys.executable, "-m", "deepsdf_ad", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def sphere_sdf(points: np.ndarray, radius: float = 0.5, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    return np.linalg.norm(points - np.asarray(center), axis=1) - radius


def box_sdf(points: np.ndarray, half=(0.4, 0.3, 0.2)) -> np.ndarray:
    q = np.abs(points) - np.asarray(half)
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr}"
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {proc.stderr!r}"
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


def tiny_model(num_shapes: int = 1, latent: int = 8, extra: list[str] | None = None):
    """A seeded 4x64 decoder (no dropout) with a code table: (config, model)."""
    import torch

    from deepsdf_ad.config import load_config
    from deepsdf_ad.models import build_model

    torch.manual_seed(0)
    cfg = load_config(None, ["model.decoder.hidden=[64,64,64,64]", "model.decoder.latent_in=[2]",
                             "model.decoder.dropout=0.0", f"model.latent.size={latent}", *(extra or [])])
    return cfg, build_model(3, cfg.model.decoder, cfg.model.latent, num_shapes)


def train_tiny_sphere_run(base: Path, epochs: int = 1, extra: tuple[str, ...] = ()) -> Path:
    """``base/run``: a 3D autodecoder run trained in-process for ``epochs`` (one batch each) on two analytic
    spheres (data in ``base/data``); one epoch is enough to call ``reconstruct`` on, in a few seconds.
    ``extra``: more config overrides."""
    from deepsdf_ad.config import load_config
    from deepsdf_ad.data_prep import formats
    from deepsdf_ad.train import train

    rng = np.random.default_rng(0)
    for k, r in enumerate((0.4, 0.6)):
        p = rng.uniform(-1, 1, size=(2000, 3))
        s = sphere_sdf(p, r)
        samples = np.concatenate([p, s[:, None]], axis=1)
        formats.save_sdf_samples(base / "data" / "sdf" / "ball" / f"b{k}.npz", samples[s > 0],
                                 samples[s <= 0])
    formats.write_split(base / "data" / "splits" / "train.json", {"ball": ["b0", "b1"]})
    cfg = load_config(REPO / "configs" / "shapes_small.yaml",
                      TINY + ["mesh.resolution=16", "reconstruct.iterations=3", *extra])
    train(cfg, base / "data", base / "run", epochs=epochs, device="cpu", progress=False)
    return base / "run"
