"""SDF -> mesh: batched grid evaluation and marching cubes (3D) or marching squares (2D).

Grids span [-1, 1]^dim in the normalised frame with ``resolution`` points per axis (DeepSDF's voxel
origin -1 and voxel size 2 / (resolution - 1)).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import trimesh

from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.log import progress_bar
from deepsdf_ad.device import autocast, cpu_block_points
from deepsdf_ad.models import SDFModel

SDFFn = Callable[[np.ndarray], np.ndarray]
Report = Callable[[int, int], None]
"""Progress of a long evaluation: called with (parts done, parts in all)."""

EMPTY_SDF = 0.1
"""The value of a point in an empty cell of a local grid (unknown, read as outside): DeepSDF's clamp."""


def model_sdf(model: SDFModel, code: torch.Tensor, device: torch.device, batch_points: int | None = None,
              precision: str = "fp32") -> SDFFn:
    """An SDF function of points (M, dim) in the normalised frame, for one code (L,).

    For a grid code, points in empty cells are not decoded: they read :data:`EMPTY_SDF`, and the function's
    ``occupied`` attribute (points -> bool) tells the mesher which cells to skip (None for a global code).

    Args:
        batch_points: decoder queries per batch; None chooses from the free memory
        (:func:`auto_batch_points`). precision: fp32, or bf16 / fp16 autocast (faster; its error is measured
        in ``benchmarks/bench_meshing.py``).
    """
    from torch.nn.utils import parametrize


    code = code.to(device).reshape(1, -1)
    batch = batch_points or auto_batch_points(model, device, precision=precision)
    counter = {"queries": 0}
    occupied = model.occupied(code[0])

    def fn(points: np.ndarray) -> np.ndarray:
        if occupied is not None:
            keep = occupied(points)
            out = np.full(len(points), EMPTY_SDF, np.float32)
            if keep.any():
                out[keep] = decode(points[keep])
            return out
        return decode(points)

    def decode(points: np.ndarray) -> np.ndarray:
        out = np.empty(len(points), np.float32)
        counter["queries"] += len(points)
        # weight norm is recomputed at every call unless cached: once per batch of queries is enough
        with torch.inference_mode(), autocast(device, precision), parametrize.cached():
            for s in range(0, len(points), batch):
                p = torch.from_numpy(np.ascontiguousarray(points[s:s + batch], np.float32)).to(device)
                out[s:s + len(p)] = model.decode(code, p[None]).float().cpu().numpy()[0]
        return out

    fn.counter = counter  # type: ignore[attr-defined]  # decoder queries so far (benchmarks read it)
    fn.occupied = occupied  # type: ignore[attr-defined]
    return fn


def auto_batch_points(model: SDFModel, device: torch.device, budget_fraction: float = 0.25,
                      cap: int = 262_144, precision: str = "fp32") -> int:
    """Decoder queries per batch. On the CPU: the widest activation within
    :data:`deepsdf_ad.device.PART_BYTES` (small batches stay in the caches: measured 1.7-3.3x the queries per
    second of batches of 65,536 and more). On CUDA: the activations of one batch within ``budget_fraction``
    of the free memory. Between 1,024 and ``cap``."""

    width = max(getattr(model.decoder.cfg, "hidden", (512,)) or (512,))
    if device.type != "cuda":
        return int(max(1024, min(cap, cpu_block_points(width, precision, device))))
    layers = len(getattr(model.decoder.cfg, "hidden", ())) or 8
    # bytes, float32
    per_point = 4 * (width * 3 + model.decoder.latent_size + model.dim) * max(2, layers // 2)
    free = torch.cuda.mem_get_info(device)[0]
    return int(max(4096, min(cap, budget_fraction * free // per_point)))


def grid_points(resolution: int, dim: int = 3) -> np.ndarray:
    """Grid of ``resolution^dim`` points over [-1, 1]^dim, 'ij' order (first axis slowest)."""
    axis = np.linspace(-1.0, 1.0, resolution, dtype=np.float32)
    mesh = np.meshgrid(*([axis] * dim), indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


DENSE_PARTS = 32
"""With a progress report, the dense grid is evaluated in this many slabs (one report each)."""


def evaluate_grid(fn: SDFFn, resolution: int, dim: int = 3, report: Report | None = None) -> np.ndarray:
    """SDF values on the dense grid, shape (resolution,) * dim; with ``report``, slab by slab along the first
    axis (``fn`` is pointwise, so the values are the same)."""
    points = grid_points(resolution, dim)
    if report is None:
        return fn(points).reshape((resolution,) * dim)
    parts = np.array_split(np.arange(resolution), min(DENSE_PARTS, resolution))
    per_slab = resolution ** (dim - 1)
    values = []
    for k, rows in enumerate(parts):
        values.append(fn(points[rows[0] * per_slab:(rows[-1] + 1) * per_slab]))
        report(k + 1, len(parts))
    return np.concatenate(values).reshape((resolution,) * dim)


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


MESH_METHODS = ("adaptive", "dense")


def mesh_sdf(fn: SDFFn, resolution: int, method: str = "adaptive", progress: bool = False,
             **kwargs) -> trimesh.Trimesh:
    """The zero level set of ``fn`` on a ``resolution``^3 grid over [-1, 1]^3, by marching cubes.

    ``method``: 'adaptive' (coarse-to-fine, :func:`adaptive_grid`; the default) or 'dense' (every grid point
    evaluated: the reference). Both give the same mesh wherever the surface is (tests assert it).
    ``progress``: a progress bar on stderr (see :func:`deepsdf_ad.data_prep.log.progress_bar`).
    """
    if method not in MESH_METHODS:
        raise DataError(f"unknown meshing method '{method}'; known: {', '.join(MESH_METHODS)}")
    with progress_bar(None, f"mesh ({method}, {resolution}^3)", "part", progress) as bar:
        def report(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        shown = report if not bar.disable else None
        if method == "dense":
            values = evaluate_grid(fn, resolution, 3, report=shown)
        else:
            values = adaptive_grid(fn, resolution, report=shown, **kwargs)[0]
    return marching_cubes(values)


def _upsample2(a: np.ndarray) -> np.ndarray:
    """Trilinear 2x refinement of a grid of values at the grid's points (n -> 2n - 1 per axis)."""
    for axis in range(a.ndim):
        a = np.moveaxis(a, axis, 0)
        out = np.empty((2 * a.shape[0] - 1, *a.shape[1:]), a.dtype)
        out[0::2] = a
        out[1::2] = 0.5 * (a[:-1] + a[1:])
        a = np.moveaxis(out, 0, axis)
    return a


def _cell_extremes(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell of a 3D grid of point values: min, max and min |value| over its 8 corners."""
    corners = [v[i:v.shape[0] - 1 + i, j:v.shape[1] - 1 + j, k:v.shape[2] - 1 + k]
               for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    lo, hi, near = corners[0].copy(), corners[0].copy(), np.abs(corners[0])
    for c in corners[1:]:
        np.minimum(lo, c, out=lo)
        np.maximum(hi, c, out=hi)
        np.minimum(near, np.abs(c), out=near)
    return lo, hi, near


def adaptive_grid(fn: SDFFn, resolution: int, coarse: int = 32, margin: float = 0.75,
                  report: Report | None = None) -> tuple[np.ndarray, dict]:
    """Coarse-to-fine evaluation of the dense grid that :func:`evaluate_grid` would compute.

    A coarse grid (about ``coarse`` cells per axis, on the same lattice as the fine grid) is evaluated
    everywhere; then, level by level, each cell is split in 8 and its new points evaluated only if the surface
    may pass through it: its corners change sign, or the smallest |sdf| at a corner is below ``margin`` times
    the cell's diagonal. An SDF is 1-Lipschitz and every point of a cell is within half a diagonal of one of
    its corners, so a cell crossed by the surface has a corner with |sdf| <= diagonal / 2; the default 0.75
    (1.5x that bound) covers a learned field that is not exactly an SDF (its gradient norm above 1 near the
    surface). Measured on a fitted decoder at 128^3: margins 1.0, 0.75 and 0.5 gave identical vertices with
    9.5x, 10.6x and 13.2x fewer queries than dense (benchmarks/bench_meshing.py). Points never evaluated
    take the trilinear interpolation of the level above, which keeps their sign, so marching cubes finds
    no surface there.

    When ``fn`` has an ``occupied`` function (a local grid, see :func:`model_sdf`), ``fn`` decodes only the
    occupied points it is given, and a cell without an occupied corner is never refined (at the levels whose
    cells are no larger than the grid's: there a latent cell that overlaps a mesher cell holds one of its
    corners).

    ``report``: called after the coarse grid and after each level (``levels + 1`` parts in all).

    Returns:
        values (resolution,)^3 on the fine grid, and stats: ``queries`` (points evaluated), ``dense``
        (resolution^3) and ``levels``.
    """
    occupied = getattr(fn, "occupied", None)
    n = resolution - 1
    levels = max(0, int(np.round(np.log2(max(n / coarse, 1.0)))))
    stride = 2**levels
    cells0 = -(-n // stride)  # coarse cells per axis; the padded fine grid has cells0 * stride cells
    h = 2.0 / n  # fine spacing, as in evaluate_grid

    def coords(idx: np.ndarray) -> np.ndarray:  # fine-lattice indices (M, 3) -> points
        return (-1.0 + idx * h).astype(np.float32)

    r = cells0 + 1
    idx = np.stack(np.meshgrid(*([np.arange(r) * stride] * 3), indexing="ij"), axis=-1).reshape(-1, 3)
    values = fn(coords(idx)).reshape(r, r, r).astype(np.float32)
    queries = len(idx)
    evaluated = np.ones((r, r, r), bool)
    if report is not None:
        report(1, levels + 1)
    for level in range(levels, 0, -1):
        step = 2 ** (level - 1)  # fine-lattice spacing of the next level
        cell_size = 2 * step * h
        lo, hi, near = _cell_extremes(values)
        active = ((lo < 0) & (hi > 0)) | (near < margin * np.sqrt(3.0) * cell_size)
        # a latent cell at least as large as this level's cells that overlaps one contains one of its corners
        if occupied is not None and cell_size <= getattr(occupied, "cell_size", 0.0) + 1e-9:
            n_up = values.shape[0]
            pts = coords(np.argwhere(np.ones((n_up,) * 3, bool)) * 2 * step)
            occ = occupied(pts).reshape((n_up,) * 3)
            active &= _cell_extremes(occ.astype(np.float32))[1] > 0  # some corner occupied
        values = _upsample2(values)
        evaluated_up = np.zeros(values.shape, bool)
        evaluated_up[::2, ::2, ::2] = evaluated
        want = np.zeros(values.shape, bool)
        ci = np.nonzero(active)
        for a in (0, 1, 2):
            for b in (0, 1, 2):
                for c in (0, 1, 2):
                    want[2 * ci[0] + a, 2 * ci[1] + b, 2 * ci[2] + c] = True
        todo = np.argwhere(want & ~evaluated_up)
        if len(todo):
            values[todo[:, 0], todo[:, 1], todo[:, 2]] = fn(coords(todo * step))
        queries += len(todo)
        evaluated = evaluated_up | want
        if report is not None:
            report(levels - level + 2, levels + 1)
    values = values[:resolution, :resolution, :resolution]
    stats = {"queries": int(queries), "dense": int(resolution**3), "levels": levels}
    return np.ascontiguousarray(values), stats


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


def field_image(fn: SDFFn, kind: str, resolution: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A 2D field on the ``resolution``^2 grid over [-1, 1]^2: its picture (:func:`field_picture`) and its
    contours (:func:`contours_2d`) at the level that bounds the shape (:func:`field_level`)."""
    values = evaluate_grid(fn, resolution, 2)
    return field_picture(values, kind), contours_2d(values, field_level(kind))


def picture_grid(pictures: list[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Tile same-sized RGB pictures row by row into one image with white gaps."""
    h, w = pictures[0].shape[:2]
    rows = -(-len(pictures) // columns)
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, np.uint8)
    for k, pic in enumerate(pictures):
        r, c = divmod(k, columns)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = pic
    return out
