"""The SDF on a plane: a diverging colour map (blue inside, red outside) with the zero level drawn.

This is the standard DeepSDF picture. For 3D fields the plane is ``axis = at`` in [-1, 1]^3 (the
normalised frame); for 2D fields (digits) it is the whole field over [-1, 1]^2.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsdf_ad.data_prep.formats import DataError, atomic_path

AXES = ("x", "y", "z")
SLICE_CMAP = "RdBu_r"
"""Diverging: negative (inside) blue, positive (outside) red, white at the surface's neighbourhood."""
ZERO_COLOR = "black"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
# In-plane axes (horizontal, vertical) for each slicing axis: right-handed views.
PLANE_AXES = {"x": (1, 2), "y": (0, 2), "z": (0, 1)}


@dataclass
class Slice:
    """SDF values on a plane and where the plot area sits in the written picture.

    ``values`` (res, res): row i is the vertical coordinate ``v[i]`` (bottom to top), column j the
    horizontal ``u[j]``; ``axes_box`` (x0, y0, x1, y1) the plot area in pixels of the PNG (y down), so
    a point (u, v) is at x0 + (u - u0) / (u1 - u0) * (x1 - x0), y1 - (v - v0) / (v1 - v0) * (y1 - y0).
    """

    values: np.ndarray
    extent: tuple[float, float, float, float]
    axis_names: tuple[str, str]
    axes_box: tuple[float, float, float, float] | None = None
    path: Path | None = None


def plane_points(axis: str, at: float, resolution: int, dim: int = 3, extent: float = 1.0) -> np.ndarray:
    """Points (resolution², dim) on the plane, row-major with the vertical in-plane axis slowest."""
    t = np.linspace(-extent, extent, resolution, dtype=np.float32)
    vv, uu = np.meshgrid(t, t, indexing="ij")
    if dim == 2:
        return np.stack([uu.ravel(), vv.ravel()], axis=1)
    if axis not in AXES:
        raise DataError(f"unknown axis '{axis}'; use x, y or z")
    if not -extent <= at <= extent:
        raise DataError(f"--at {at}: outside [-{extent}, {extent}] (the normalised frame)")
    h, v = PLANE_AXES[axis]
    pts = np.empty((resolution * resolution, 3), np.float32)
    pts[:, AXES.index(axis)] = at
    pts[:, h], pts[:, v] = uu.ravel(), vv.ravel()
    return pts


def slice_image(sdf_fn: Callable[[np.ndarray], np.ndarray], axis: str = "z", at: float = 0.0,
                out: str | os.PathLike | None = None, dim: int = 3, resolution: int = 256,
                extent: float = 1.0, title: str | None = None, vmax: float | None = None,
                size: tuple[int, int] = (640, 560)) -> Slice:
    """Evaluate ``sdf_fn`` on a plane and draw it (when ``out`` is given).

    Args:
        sdf_fn: points (M, dim) float32 in the normalised frame -> SDF (M,); a model's
            (:func:`deepsdf_ad.meshing.model_sdf`) or an analytic one.
        axis, at: the plane ``axis = at`` (3D only; a 2D field is drawn whole).
        out: picture to write (.png, .pdf, .svg), atomically.
        dim: 3 or 2.
        resolution: samples per side.
        extent: the plane spans [-extent, extent]².
        title: figure title (default: the plane).
        vmax: colour-map range ±vmax (default: the largest |sdf| on the plane).
        size: (width, height) of the picture in pixels.

    Returns:
        A :class:`Slice` with the values and the plot area's pixel box.
    """
    if dim not in (2, 3):
        raise DataError(f"cannot slice a {dim}D field; only 2D and 3D")
    if not 8 <= resolution <= 4096:
        raise DataError(f"slice resolution {resolution}: use 8 to 4096")
    pts = plane_points(axis, at, resolution, dim, extent)
    values = np.asarray(sdf_fn(pts), np.float64).reshape(resolution, resolution)
    if not np.all(np.isfinite(values)):
        raise DataError("the SDF has non-finite values on the plane")
    names = ("x", "y") if dim == 2 else tuple(AXES[k] for k in PLANE_AXES[axis])
    result = Slice(values, (-extent, extent, -extent, extent), names)
    if out is not None:
        if title is None:
            title = "SDF" if dim == 2 else f"SDF on {axis} = {at:g}"
        result.axes_box, result.path = _draw(result, Path(out), title, vmax, size)
    return result


def _draw(s: Slice, out: Path, title: str, vmax: float | None, size: tuple[int, int]):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise DataError(f"{out}: unsupported picture type '{out.suffix}'; use one of "
                        f"{' '.join(FIGURE_SUFFIXES)}")
    vmax = float(vmax or np.abs(s.values).max() or 1.0)
    dpi = 100
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    ax = fig.add_axes((0.12, 0.1, 0.68, 0.8))
    cax = fig.add_axes((0.84, 0.1, 0.035, 0.8))
    im = ax.imshow(s.values, origin="lower", extent=s.extent, cmap=SLICE_CMAP,
                   norm=TwoSlopeNorm(0.0, -vmax, vmax), interpolation="nearest", aspect="equal")
    if s.values.min() < 0 < s.values.max():
        u = np.linspace(s.extent[0], s.extent[1], s.values.shape[1])
        v = np.linspace(s.extent[2], s.extent[3], s.values.shape[0])
        ax.contour(u, v, s.values, levels=[0.0], colors=ZERO_COLOR, linewidths=1.5)
    ax.set_xlabel(s.axis_names[0])
    ax.set_ylabel(s.axis_names[1])
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, cax=cax, label="signed distance")
    FigureCanvasAgg(fig).draw()  # lays out the equal-aspect axes as savefig will
    bb = ax.get_window_extent()  # display coords: pixels from the bottom left
    height = fig.bbox.height
    box = (float(bb.x0), float(height - bb.y1), float(bb.x1), float(height - bb.y0))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lower().lstrip("."), dpi=dpi)
    return box, out


def sphere_sdf(radius: float = 0.5, center=(0.0, 0.0, 0.0)) -> Callable[[np.ndarray], np.ndarray]:
    """Analytic SDF of a sphere (or a circle, for 2D points): the test hook for :func:`slice_image`."""
    c = np.asarray(center, np.float64)

    def fn(points: np.ndarray) -> np.ndarray:
        return np.linalg.norm(points - c[: points.shape[1]], axis=1) - radius

    return fn


def truth_sdf(data_root: str | os.PathLike, shape: str, dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """The ground truth's SDF of ``shape`` ('category/id') of a data root, as a function of points (M, dim):
    in 2D the digit's own field; in 3D the distance to its 30,000 surface points, negative inside (the inside
    test of its source mesh; unsigned when the mesh is not at hand)."""
    from scipy.spatial import cKDTree

    from deepsdf_ad.data_prep.formats import DataRoot
    from deepsdf_ad.evaluate import Truth2D, Truth3D

    root = DataRoot(data_root)
    ref = root.shape(*shape.split("/", 1))
    if dim == 2:
        truth2 = Truth2D(root, "sdf")
        return lambda pts: truth2.field(ref, np.asarray(pts, np.float32))
    truth = Truth3D(root)
    tree = cKDTree(truth.surface(ref)[0])

    def fn(pts: np.ndarray) -> np.ndarray:
        dist = tree.query(np.asarray(pts, np.float64))[0]
        inside = truth.inside(ref, pts)
        return dist if inside is None else np.where(inside, -dist, dist)

    return fn


def slice_run(run_path: str | os.PathLike, shape: str, out: str | os.PathLike, axis: str = "z",
              at: float = 0.0, resolution: int = 256, device: str = "auto", vmax: float | None = None,
              title: str | None = None) -> Slice:
    """``deepsdf-ad slice``: the SDF of a training shape of a run on a plane (the whole field for 2D runs);
    ``vmax``: the colour range (default: the slice's own largest |sdf|), ``title``: the picture's title."""
    from deepsdf_ad.device import resolve_device
    from deepsdf_ad.meshing import model_sdf
    from deepsdf_ad.runs import Run, load_trained

    dev = resolve_device(device)
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    code = model.latent.all_codes()[run.shape_index(shape)]
    fn = model_sdf(model, code, dev, cfg.mesh.batch_points)
    name = shape.split("/", 1)[-1]
    if title is None:
        title = f"{name}: SDF" if cfg.dim == 2 else f"{name}: SDF on {axis} = {at:g}"
    return slice_image(fn, axis, at, out, dim=cfg.dim, resolution=resolution, title=title, vmax=vmax)


def slice_truth(run_path: str | os.PathLike, shape: str, data_root: str | os.PathLike,
                out: str | os.PathLike, axis: str = "z", at: float = 0.0, resolution: int = 256,
                vmax: float | None = None) -> Slice:
    """``deepsdf-ad slice --truth DATA``: the same plane as :func:`slice_run`, of the shape's ground truth in
    ``data_root`` (:func:`truth_sdf`); the run gives the dimension and the shape's full name."""
    from deepsdf_ad.runs import Run

    run = Run(run_path)
    key = run.shapes()["keys"][run.shape_index(shape)]
    dim = run.config().dim
    return slice_image(truth_sdf(data_root, key, dim), axis, at, out, dim=dim, resolution=resolution,
                       title=f"ground truth ({key})", vmax=vmax)
