"""``make demo``: the whole path on procedural shapes generated here (no downloads).

shapes -> prep -> train the small preset (time-budgeted) -> scan a held-out shape -> reconstruct ->
chamfer distance against the true shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from deepsdf_ad.commands.reconstruction import complete_scan, load_for_reconstruct
from deepsdf_ad.config import load_config
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.meshes import SamplingConfig, load_mesh, normalized_mesh
from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_meshes
from deepsdf_ad.data_prep.scans import CameraConfig, save_scan, scan_mesh
from deepsdf_ad.data_prep.shapes import write_family
from deepsdf_ad.metrics import chamfer_squared, surface_points
from deepsdf_ad.train import train

PRESET = "shapes_small"
"""The preset the demo trains (a name: :func:`deepsdf_ad.config.find_preset`)."""

DEMO_RESTARTS = 4
"""Starts of the demo's code search (``reconstruct --restarts``)."""


@dataclass(frozen=True)
class QuickDemo:
    """``demo --quick``: the same path, sized to check an installation in seconds (not to give a good
    shape)."""

    per_family: int = 2
    """Shapes per family (3 families): one train and one test shape each."""
    samples: int = 4000
    """SDF samples per shape."""
    epochs: int = 12
    """Training epochs (one step each)."""
    iterations: int = 40
    """Steps of the code search."""
    restarts: int = 1
    """Starts of the code search."""
    resolution: int = 32
    """Marching-cubes grid of the reconstruction."""


QUICK = QuickDemo()


def run_demo(out: str | Path, minutes: float = 3.0, device: str = "auto", per_family: int = 12,
             samples: int = 50_000, resolution: int = 128, progress: bool = True,
             quick: bool = False) -> dict:
    """Run the demo into ``out``; returns paths and the chamfer distance (x10^3, DeepSDF convention).

    ``quick``: :data:`QUICK`'s sizes instead of ``per_family``, ``samples`` and ``resolution``, a fixed
    number of epochs (still within ``minutes``) and a shorter code search."""
    out = Path(out)
    t0 = time.perf_counter()
    epochs = iterations = None
    restarts = DEMO_RESTARTS
    if quick:
        per_family, samples, resolution = QUICK.per_family, QUICK.samples, QUICK.resolution
        epochs, iterations, restarts = QUICK.epochs, QUICK.iterations, QUICK.restarts
    meshes = out / "meshes"
    if not meshes.is_dir():
        write_family(meshes, per_family=per_family, seed=0)
    data = out / "data"
    prep_meshes(meshes, data, PrepConfig(SamplingConfig(samples=samples), test_fraction=0.2, seed=0),
                progress=progress)
    cfg = load_config(PRESET)
    run = train(cfg, data, out / "run", epochs=epochs, device=device, progress=progress,
                max_seconds=minutes * 60)
    epochs = len(run.metrics())
    # a held-out shape: in the test split, never trained on
    _, cat, sid = formats.read_split(data / formats.SPLITS_DIR / formats.TEST_SPLIT)[0]
    gt_path = meshes / cat / f"{sid}.obj"
    gt = load_mesh(gt_path)
    partial = out / f"partial_{sid}.ply"
    scan = scan_mesh(gt, CameraConfig(azimuth=35.0, elevation=25.0, resolution=96))
    nmesh, offset, scale = normalized_mesh(gt)
    save_scan(partial, scan, (offset, scale))
    rec = out / f"reconstructed_{sid}.ply"
    # 4 starts side by side: from one start the code search can settle in a wrong basin (a demo run of this
    # preset: chamfer 31.4e-3 from one start against 0.36-0.43e-3 from 4, over 3 seeds)
    loaded = load_for_reconstruct(run.path, device, restarts=restarts)
    rec_mesh, info = complete_scan(loaded, partial, resolution=resolution, iterations=iterations)
    formats.save_mesh(rec, rec_mesh)
    # scored as written: a .ply holds float32 coordinates
    rec_norm = (np.asarray(rec_mesh.vertices, np.float32).astype(np.float64) + offset) * scale
    chamfer = chamfer_squared(surface_points(trimesh.Trimesh(rec_norm, rec_mesh.faces, process=False)),
                              surface_points(nmesh))
    return {
        "held_out_shape": f"{cat}/{sid}",
        "epochs_trained": epochs,
        "final_train_loss": run.metrics()[-1]["loss"],
        "chamfer_x1e3": round(chamfer * 1e3, 4),
        "ground_truth": str(gt_path),
        "partial_scan": str(partial),
        "scan_points": info["points"],
        "reconstruction": str(rec),
        "run": str(run.path),
        "seconds": round(time.perf_counter() - t0, 1),
    }
