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
    # skimage's default winding ('descent') makes normals point from low to high values' opposite side;
    # for an SDF (negative inside) that is outward, checked by the sphere test (positive volume)
    verts, faces, _normals, _ = measure.marching_cubes(values, level=0.0, spacing=(step,) * 3)
    verts = verts - 1.0
    return trimesh.Trimesh(verts, faces, process=False)


def mesh_sdf(fn: SDFFn, resolution: int) -> trimesh.Trimesh:
    """Dense extraction: every grid point is evaluated (the reference method)."""
    return marching_cubes(evaluate_grid(fn, resolution, 3))


def contours_2d(values: np.ndarray, level: float = 0.0) -> list[np.ndarray]:
    """Contours at ``level`` (marching squares) of a 2D grid over [-1, 1]^2, as (K, 2) arrays of (x, y)."""
    from skimage import measure

    res = values.shape[0]
    step = 2.0 / (res - 1)
    return [c * step - 1.0 for c in measure.find_contours(values, level)]


def field_kind(cfg) -> str:
    """What a run's field is: 'height' (intensities, trained with plain l1) or 'sdf'."""
    return "height" if cfg.train.loss == "l1" else "sdf"


def field_level(kind: str) -> float:
    """The level set that bounds the shape: sdf 0, or intensity 0.5 for heightfields."""
    return 0.5 if kind == "height" else 0.0


def field_picture(values: np.ndarray, kind: str = "sdf", upscale: int = 2) -> np.ndarray:
    """RGB uint8 picture (H, W, 3) of a 2D grid ``values[i, j]`` at (x_i, y_j) over [-1, 1]^2, x right, y up.

    sdf: blue inside, white on the contour, red outside (saturating at |sdf| = 0.25); heightfield: gray
    intensity. The zero contour (intensity 0.5 for heightfields), from marching squares, is drawn in black
    (yellow on heightfields).
    """
    from PIL import Image, ImageDraw

    res = values.shape[0]
    img = values.T[::-1]  # rows: y from top to bottom; columns: x
    if kind == "height":
        g = np.clip(img, 0.0, 1.0) * 255
        rgb = np.stack([g, g, g], axis=-1)
        line = (255, 200, 0)
    else:
        t = np.clip(img / 0.25, -1.0, 1.0)[..., None]
        red, blue, white = np.array([200, 40, 40]), np.array([40, 70, 200]), np.array([255, 255, 255])
        rgb = np.where(t > 0, white + t * (red - white), white - t * (blue - white))
        line = (0, 0, 0)
    pic = Image.fromarray(rgb.astype(np.uint8)).resize((res * upscale, res * upscale), Image.NEAREST)
    draw = ImageDraw.Draw(pic)
    px = (res * upscale - 1) / 2.0
    for c in contours_2d(values, field_level(kind)):
        xy = [(float((x + 1.0) * px), float((1.0 - y) * px)) for x, y in c]
        if len(xy) > 1:
            draw.line(xy, fill=line, width=max(1, upscale // 2))
    return np.asarray(pic)


def picture_grid(pictures: list[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Tile same-sized RGB pictures row by row into one image with white gaps."""
    h, w = pictures[0].shape[:2]
    rows = -(-len(pictures) // columns)
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, np.uint8)
    for k, pic in enumerate(pictures):
        r, c = divmod(k, columns)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = pic
    return out


def write_shape(fn: SDFFn, dim: int, kind: str, resolution: int, out) -> dict:
    """Write the shape of an SDF function: a mesh for dim 3, a PNG (field and contour) for dim 2."""
    from pathlib import Path

    from data_prep.formats import save_mesh, save_png

    out = Path(out)
    if dim == 2:
        if out.suffix.lower() != ".png":
            raise DataError(f"{out}: a 2D run writes a picture; give a .png output")
        values = evaluate_grid(fn, resolution, 2)
        save_png(out, field_picture(values, kind))
        lines = contours_2d(values, field_level(kind))
        return {"out": str(out), "contours": len(lines), "contour_points": int(sum(len(c) for c in lines))}
    mesh = mesh_sdf(fn, resolution)
    save_mesh(out, mesh)
    return {"out": str(out), "vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces))}


def mesh_training_shape(run_path, shape: str, out, resolution: int | None = None, device: str = "auto") -> dict:
    """``deepsdf-ad mesh``: the mesh of training shape ``shape`` of a run, in the normalised frame
    (for a 2D run: a PNG of the field with its contour)."""
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
    if cfg.dim == 2:
        return write_shape(fn, 2, field_kind(cfg), res, out)
    mesh = mesh_sdf(fn, res)
    out = Path(out)
    with atomic_path(out) as tmp:
        mesh.export(tmp, file_type=out.suffix.lstrip(".").lower() or "ply")
    return {"out": str(out), "vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces))}
