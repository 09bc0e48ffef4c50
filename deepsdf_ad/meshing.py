"""SDF -> mesh: batched grid evaluation and marching cubes (3D) or marching squares (2D).

Grids span [-1, 1]^dim in the normalised frame with ``resolution`` points per axis (DeepSDF's voxel
origin -1 and voxel size 2 / (resolution - 1)).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import trimesh

from data_prep.formats import DataError
from deepsdf_ad.models import SDFModel

SDFFn = Callable[[np.ndarray], np.ndarray]


def model_sdf(model: SDFModel, code: torch.Tensor, device: torch.device, batch_points: int = 65536) -> SDFFn:
    """An SDF function of points (M, dim) in the normalised frame, for one code (L,)."""
    code = code.to(device).reshape(1, -1)

    def fn(points: np.ndarray) -> np.ndarray:
        out = np.empty(len(points), np.float32)
        with torch.inference_mode():
            for s in range(0, len(points), batch_points):
                p = torch.from_numpy(np.ascontiguousarray(points[s:s + batch_points], np.float32)).to(device)
                out[s:s + len(p)] = model.decode(code, p[None]).float().cpu().numpy()[0]
        return out

    return fn


def grid_points(resolution: int, dim: int = 3) -> np.ndarray:
    """Grid of ``resolution^dim`` points over [-1, 1]^dim, 'ij' order (first axis slowest)."""
    axis = np.linspace(-1.0, 1.0, resolution, dtype=np.float32)
    mesh = np.meshgrid(*([axis] * dim), indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def evaluate_grid(fn: SDFFn, resolution: int, dim: int = 3) -> np.ndarray:
    """SDF values on the dense grid, shape (resolution,) * dim."""
    return fn(grid_points(resolution, dim)).reshape((resolution,) * dim)


def marching_cubes(values: np.ndarray) -> trimesh.Trimesh:
    """Zero level set of a grid over [-1, 1]^3 as a mesh in the normalised frame (outward normals)."""
    from skimage import measure

    if not (values.min() < 0 < values.max()):
        raise DataError("the SDF has no zero crossing on the grid (the shape is empty or fills the cube); "
                        "train longer or check the code")
    res = values.shape[0]
    step = 2.0 / (res - 1)
    verts, faces, _normals, _ = measure.marching_cubes(values, level=0.0, spacing=(step,) * 3)
    verts = verts - 1.0
    # skimage orients faces for a field that is positive inside; an SDF is negative inside
    return trimesh.Trimesh(verts, faces[:, ::-1], process=False)


def mesh_sdf(fn: SDFFn, resolution: int) -> trimesh.Trimesh:
    """Dense extraction: every grid point is evaluated (the reference method)."""
    return marching_cubes(evaluate_grid(fn, resolution, 3))


def contours_2d(values: np.ndarray) -> list[np.ndarray]:
    """Zero contours (marching squares) of a 2D grid over [-1, 1]^2, as (K, 2) arrays of (x, y)."""
    from skimage import measure

    res = values.shape[0]
    step = 2.0 / (res - 1)
    return [c * step - 1.0 for c in measure.find_contours(values, 0.0)]


def mesh_training_shape(run_path, shape: str, out, resolution: int | None = None, device: str = "auto") -> dict:
    """``deepsdf-ad mesh``: the mesh of training shape ``shape`` of a run, in the normalised frame."""
    from pathlib import Path

    from data_prep.formats import atomic_path
    from deepsdf_ad.runs import Run
    from deepsdf_ad.train import load_trained, resolve_device

    dev = resolve_device(device)
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    index = run.shape_index(shape)
    code = model.latent.all_codes()[index]
    fn = model_sdf(model, code, dev, cfg.mesh.batch_points)
    res = resolution or cfg.mesh.resolution
    mesh = mesh_sdf(fn, res)
    out = Path(out)
    with atomic_path(out) as tmp:
        mesh.export(tmp, file_type=out.suffix.lstrip(".").lower() or "ply")
    return {"out": str(out), "vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces))}
