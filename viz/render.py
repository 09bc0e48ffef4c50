"""Headless pictures of meshes and point clouds: side by side, labelled, optionally as error maps.

Three renderers draw the same :class:`~deepsdf_ad.viz.scene.Item` list through the same
:class:`~deepsdf_ad.viz.scene.Camera`:

``pyrender``  OpenGL through OSMesa (CPU; ``PYOPENGL_PLATFORM=egl`` uses a GPU when there is one).
``open3d``    open3d's Filament ``OffscreenRenderer`` (Vulkan, on the CPU through Mesa's llvmpipe).
``raycast``   no OpenGL at all: one ray per pixel through open3d's embree ``RaycastingScene``, Lambert
              shading in numpy, points splatted with a depth test. Always works; the reference.

``auto`` tries them in that order and falls back (one warning line) if one cannot start. Order and
speeds measured on 2 CPU cores without a GPU or display are in docs/viz.md.

Pictures are composed with Pillow: one cell per input (``row``/``grid``: the same camera direction and
scale in every cell, so sizes compare), or all inputs in one cell (``overlay``, with a legend); a label
under each cell; a colour bar at the right for error maps.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from deepsdf_ad.data_prep.formats import DataError, atomic_path
from deepsdf_ad.data_prep.log import warn
from deepsdf_ad.viz.scene import (
    BACKGROUND,
    DISTANCE_CMAP,
    LAYOUTS,
    PALETTE,
    Camera,
    Item,
    all_points,
    as_item,
    colormap,
    frame_camera,
    grid_shape,
)
from deepsdf_ad.viz.scene import color_by_distance as _color_by_distance

RENDERERS = ("auto", "pyrender", "open3d", "raycast")
AUTO_ORDER = ("pyrender", "open3d", "raycast")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GAMMA = 2.2
AMBIENT = 0.35
"""Share of the base colour every visible surface gets; the rest comes from the lights."""


# ---- renderers -------------------------------------------------------------------------------
def _light_dirs(cam: Camera) -> list[tuple[np.ndarray, float]]:
    """A headlight and a key light from the upper left (unit vectors towards the light, weights)."""
    right, up, back = cam.basis()
    key = back + 0.8 * up - 0.6 * right
    return [(back, 0.45), (key / np.linalg.norm(key), 0.35)]


def render_raycast(items: Sequence[Item], cam: Camera, point_size: float = 3.0) -> np.ndarray:
    """Software renderer: embree ray casting for triangles, z-buffered splats for points. (H, W, 3) uint8."""
    import open3d as o3d

    h, w = cam.height, cam.width
    image = np.broadcast_to(np.asarray(BACKGROUND, np.float64), (h * w, 3)).copy()
    depth = np.full(h * w, np.inf)
    meshes = [it for it in items if it.is_mesh]
    if meshes:
        scene = o3d.t.geometry.RaycastingScene()
        for it in meshes:
            scene.add_triangles(o3d.core.Tensor(it.vertices.astype(np.float32)),
                                o3d.core.Tensor(it.faces.astype(np.uint32)))
        # open3d's fov_deg is the horizontal one
        fov_x = 2 * np.rad2deg(np.arctan(np.tan(np.deg2rad(cam.fov) / 2) * w / h))
        rays = scene.create_rays_pinhole(fov_deg=float(fov_x), center=cam.center.tolist(),
                                         eye=cam.eye.tolist(), up=cam.up.tolist(), width_px=w,
                                         height_px=h).numpy()
        rays = np.ascontiguousarray(rays[::-1, ::-1]).reshape(-1, 6)  # its image is upside down to ours
        ans = scene.cast_rays(o3d.core.Tensor(rays))
        t = ans["t_hit"].numpy().reshape(-1)
        hit = np.isfinite(t)
        dirs = rays[hit, 3:].astype(np.float64)
        depth[hit] = t[hit] * np.linalg.norm(dirs, axis=1)
        gid = ans["geometry_ids"].numpy().reshape(-1)[hit]
        prim = ans["primitive_ids"].numpy().reshape(-1)[hit].astype(np.int64)
        uv = ans["primitive_uvs"].numpy().reshape(-1, 2)[hit].astype(np.float64)
        face_normals = ans["primitive_normals"].numpy().reshape(-1, 3)[hit].astype(np.float64)
        unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        base, normals = np.empty((len(gid), 3)), np.empty((len(gid), 3))
        bary = np.c_[1.0 - uv.sum(axis=1), uv]  # hit = (1 - u - v) a + u b + v c
        for g, it in enumerate(meshes):
            sel = gid == g
            corners = it.faces[prim[sel]]  # (K, 3) vertex ids
            base[sel] = np.einsum("kc,kcd->kd", bary[sel], it.colors[corners])
            normals[sel] = np.einsum("kc,kcd->kd", bary[sel], _vertex_normals(it)[corners])
        # smooth normals where they agree with the face, else the face's (creases, inconsistent winding)
        agree = np.sum(normals * face_normals, axis=1)
        length = np.linalg.norm(normals, axis=1)
        smooth = (length > 1e-6) & (agree > 0.3 * length)
        normals[smooth] /= length[smooth, None]
        normals[~smooth] = face_normals[~smooth]
        normals[np.sum(normals * unit, axis=1) > 0] *= -1  # light the side we see (open meshes too)
        light = np.full(len(gid), AMBIENT)
        for d, weight in _light_dirs(cam):
            light += weight * np.clip(normals @ d, 0.0, None)
        image[hit] = base * np.clip(light, 0.0, 1.0)[:, None]
    radius = max(int(round(point_size / 2)), 0)
    offsets = [(dx, dy) for dx in range(-radius, radius + 1) for dy in range(-radius, radius + 1)
               if dx * dx + dy * dy <= radius * radius + radius]
    for it in items:
        if it.is_mesh:
            continue
        px, z = cam.project(it.vertices)
        rel = it.vertices - cam.eye
        dist = np.linalg.norm(rel, axis=1)
        for dx, dy in offsets:
            x = np.floor(px[:, 0]).astype(np.int64) + dx
            y = np.floor(px[:, 1]).astype(np.int64) + dy
            ok = (z > 0) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
            pix, d, col = y[ok] * w + x[ok], dist[ok], it.colors[ok]
            order = np.lexsort((d, pix))  # by pixel, nearest first
            pix, d, col = pix[order], d[order], col[order]
            first = np.r_[True, pix[1:] != pix[:-1]]
            pix, d, col = pix[first], d[first], col[first]
            closer = d < depth[pix]
            depth[pix[closer]] = d[closer]
            image[pix[closer]] = col[closer] * 0.9
    return np.round(np.clip(image, 0, 1) * 255).reshape(h, w, 3).astype(np.uint8)


def _vertex_normals(it: Item) -> np.ndarray:
    """Area-weighted unit vertex normals (N, 3) of a mesh item."""
    v, f = it.vertices, it.faces
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


_O3D_RENDERERS: dict[tuple[int, int], object] = {}


def render_open3d(items: Sequence[Item], cam: Camera, point_size: float = 3.0) -> np.ndarray:
    """open3d's Filament offscreen renderer (one renderer per image size is kept for the process)."""
    import open3d as o3d
    from open3d.visualization import rendering

    key = (cam.width, cam.height)
    if key not in _O3D_RENDERERS:
        _O3D_RENDERERS[key] = rendering.OffscreenRenderer(cam.width, cam.height)
    r = _O3D_RENDERERS[key]
    r.scene.clear_geometry()
    r.scene.set_background([*BACKGROUND, 1.0])
    r.scene.view.set_post_processing(False)  # no tone mapping: colours as given
    for i, it in enumerate(items):
        mat = rendering.MaterialRecord()
        if it.is_mesh:
            g = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(it.vertices),
                                          o3d.utility.Vector3iVector(it.faces.astype(np.int32)))
            g.compute_vertex_normals()
            g.vertex_colors = o3d.utility.Vector3dVector(it.colors)
            mat.shader = "defaultLit"
            mat.base_roughness = 0.9
        else:
            g = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(it.vertices))
            g.colors = o3d.utility.Vector3dVector(it.colors * 0.9)
            mat.shader = "defaultUnlit"
            mat.point_size = float(point_size)
        r.scene.add_geometry(f"item{i}", g, mat)
    right, up, back = cam.basis()
    r.scene.scene.set_sun_light(-(back + 0.8 * up - 0.6 * right), [1.0, 1.0, 1.0], 60000)
    r.scene.scene.enable_sun_light(True)
    dist = float(np.linalg.norm(cam.eye - cam.center))
    extent = float(max(np.ptp(it.vertices, axis=0).max() for it in items)) or 1.0
    r.setup_camera(float(cam.fov), cam.center.astype(np.float32), cam.eye.astype(np.float32),
                   cam.up.astype(np.float32), max(1e-3, 0.05 * dist), dist + 4 * extent)
    return np.asarray(r.render_to_image())[..., :3].copy()


def _pyrender_module():
    if "OpenGL" not in sys.modules:
        # The platform is fixed at OpenGL's first import: OSMesa renders on the CPU with no display.
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    import pyrender

    return pyrender


_PYRENDER: dict[tuple[int, int], object] = {}


def render_pyrender(items: Sequence[Item], cam: Camera, point_size: float = 3.0) -> np.ndarray:
    """pyrender (OpenGL on OSMesa or EGL), two-sided lit triangles and unlit points."""
    pyrender = _pyrender_module()
    import trimesh

    # pyrender shades in linear RGB and writes sRGB (gamma 2.2): colours and light go in linearised
    scene = pyrender.Scene(bg_color=[*map(float, BACKGROUND), 1.0], ambient_light=[AMBIENT ** GAMMA] * 3)
    for it in items:
        if it.is_mesh:
            tm = trimesh.Trimesh(it.vertices, it.faces, process=False)
            rgba = np.c_[it.colors ** GAMMA, np.ones(len(it.colors))].astype(np.float32)
            mat = pyrender.MetallicRoughnessMaterial(doubleSided=True, metallicFactor=0.0,
                                                     roughnessFactor=1.0,
                                                     baseColorFactor=[1.0, 1.0, 1.0, 1.0])
            prim = pyrender.Primitive(positions=tm.vertices.astype(np.float32),
                                      normals=tm.vertex_normals.astype(np.float32), color_0=rgba,
                                      indices=tm.faces.astype(np.uint32), material=mat, mode=4)
            scene.add(pyrender.Mesh([prim]))
        else:
            scene.add(pyrender.Mesh.from_points(it.vertices.astype(np.float32),
                                                colors=((it.colors * 0.9) ** GAMMA).astype(np.float32)))
    scene.add(pyrender.PerspectiveCamera(yfov=np.deg2rad(cam.fov), aspectRatio=cam.width / cam.height,
                                         znear=max(1e-3, 0.05 * float(np.linalg.norm(cam.eye - cam.center)))),
              pose=cam.pose())
    right, up, back = cam.basis()
    for d, weight in _light_dirs(cam):
        pose = np.eye(4)  # a directional light shines along its -z
        z = d
        x = np.cross(up if abs(up @ z) < 0.99 else right, z)
        x /= np.linalg.norm(x)
        pose[:3, 0], pose[:3, 1], pose[:3, 2] = x, np.cross(z, x), z
        scene.add(pyrender.DirectionalLight(intensity=weight * np.pi * 1.2), pose=pose)
    key = (cam.width, cam.height)
    if key not in _PYRENDER:
        _PYRENDER[key] = pyrender.OffscreenRenderer(cam.width, cam.height)
    r = _PYRENDER[key]
    r.point_size = float(point_size)
    color, _ = r.render(scene, flags=pyrender.RenderFlags.SKIP_CULL_FACES)
    return np.asarray(color)[..., :3].copy()


BACKENDS: dict[str, Callable[..., np.ndarray]] = {
    "pyrender": render_pyrender, "open3d": render_open3d, "raycast": render_raycast}
_BROKEN: set[str] = set()


def render_items(items: Sequence[Item], cam: Camera, renderer: str = "auto",
                 point_size: float = 3.0) -> np.ndarray:
    """One image (H, W, 3) uint8 of ``items`` through ``cam``; ``auto`` falls back down ``AUTO_ORDER``."""
    if renderer not in RENDERERS:
        raise DataError(f"unknown renderer '{renderer}'; use one of {', '.join(RENDERERS)}")
    order = AUTO_ORDER if renderer == "auto" else (renderer,)
    errors = []
    for name in order:
        if renderer == "auto" and name in _BROKEN:
            continue
        try:
            return BACKENDS[name](items, cam, point_size)
        except Exception as e:  # a renderer that cannot start here (no OSMesa, no Vulkan, ...)
            if renderer != "auto":
                raise DataError(f"renderer {name} failed: {type(e).__name__}: {e}; "
                                "try --renderer raycast") from None
            _BROKEN.add(name)
            errors.append(f"{name}: {type(e).__name__}: {e}")
            warn(f"renderer {name} failed ({type(e).__name__}: {str(e)[:120]}); "
                  "falling back")
    raise DataError("no renderer worked: " + "; ".join(errors))


# ---- composition -----------------------------------------------------------------------------
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


def _draw_colorbar(draw, box: tuple[int, int, int, int], vmax: float, font, title: str = "distance") -> None:
    """A vertical colour bar of DISTANCE_CMAP on [0, vmax] inside box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    _, th = _text_size(draw, title, font)
    top, bottom = y0 + th + 10, y1 - th
    bar_x0, bar_x1 = x0 + 6, x0 + 6 + max(8, (x1 - x0) // 5)
    n = max(bottom - top, 2)
    # the full map, even for vmax 0
    cols = np.round(colormap(np.linspace(1.0, 0.0, n), 1.0) * 255).astype(int)
    for k in range(n):
        draw.line([(bar_x0, top + k), (bar_x1, top + k)], fill=tuple(cols[k]))
    draw.rectangle([bar_x0, top, bar_x1, top + n - 1], outline=(60, 60, 60))
    draw.text((x0 + 2, y0 + 2), title, fill=(0, 0, 0), font=font)
    for frac in (0.0, 0.5, 1.0):
        y = int(round(top + (n - 1) * (1 - frac)))
        draw.line([(bar_x1, y), (bar_x1 + 3, y)], fill=(0, 0, 0))
        draw.text((bar_x1 + 5, y - th // 2 - 1), f"{frac * vmax:.3g}", fill=(0, 0, 0), font=font)


def _default_colors(items: list[Item], keep: list[bool]) -> list[Item]:
    return [it if k else replace(it,
                                 colors=np.broadcast_to(PALETTE[i % len(PALETTE)], it.vertices.shape).copy())
            for i, (it, k) in enumerate(zip(items, keep, strict=True))]


def _labels(items: list[Item], labels: Sequence[str] | bool | None) -> list[str]:
    """One label per item: none (``False``), the items' own (None, True) or the given ones."""
    if labels is False:
        return [""] * len(items)
    if labels is None or labels is True:
        return [it.label for it in items]
    names = [str(s) for s in labels]
    if len(names) != len(items):
        raise DataError(f"{len(names)} labels for {len(items)} inputs")
    return names


def _cells(items: list[Item], layout: str, width: int, height: int, azimuth: float, elevation: float, up: str,
           fov: float) -> tuple[list[list[Item]], list[Camera]]:
    """The items of each cell of the picture and the camera of each (cells of ``width`` x ``height`` pixels):
    one cell for an overlay, else one per item, centred, all seen from the same distance (one scale)."""
    if layout == "overlay":
        return [list(items)], [frame_camera(all_points(items), width, height, azimuth, elevation, up, fov)]
    centers = [0.5 * np.add(*it.bounds()) for it in items]
    cells = [[it.translated(-c)] for it, c in zip(items, centers, strict=True)]
    cams = [frame_camera(all_points(cell), width, height, azimuth, elevation, up, fov) for cell in cells]
    dist = max(float(np.linalg.norm(c.eye - c.center)) for c in cams)  # one scale for all cells
    cams = [replace(c, eye=c.center + (c.eye - c.center) / np.linalg.norm(c.eye - c.center) * dist)
            for c in cams]
    return cells, cams


def _draw_legend(draw, items: list[Item], names: list[str], font, font_px: int) -> None:
    """A swatch of each item's mean colour and its name, top left (an overlay's legend)."""
    y = 6
    for it, name in zip(items, names, strict=True):
        swatch = tuple(int(v) for v in np.round(it.colors.mean(axis=0) * 255))
        draw.rectangle([8, y + 2, 8 + font_px - 4, y + font_px - 2], fill=swatch, outline=(60, 60, 60))
        draw.text((12 + font_px, y), name, fill=(0, 0, 0), font=font)
        y += font_px + 4


def render_to_array(inputs: Sequence, size: tuple[int, int] = (800, 600), azimuth: float = 30.0,
                    elevation: float = 20.0, up: str = "z", layout: str = "row",
                    labels: Sequence[str] | bool | None = None, color_by_distance=None,
                    vmax: float | None = None, renderer: str = "auto", point_size: float = 3.0,
                    fov: float = 30.0) -> np.ndarray:
    """A picture of meshes and point clouds, as an (H, W, 3) uint8 array.

    Args:
        inputs: file paths (.ply .obj .off .stl), trimesh/open3d geometries, (N, 3) point arrays or
            :class:`~deepsdf_ad.viz.scene.Item` (which keep their colours); others get palette colours in
            order.
        size: (width, height) in pixels of the whole picture.
        azimuth, elevation: camera direction in degrees (``deepsdf-ad scan``'s convention), ``up`` its axis.
        layout: ``row``, ``grid`` (one cell each, same view and scale) or ``overlay`` (one cell, a legend).
        labels: one per input; None: file stems / item labels; False: no labels.
        color_by_distance: a reference (path or geometry): colour every input by the distance of its
            vertices to it, with a colour bar (the error map).
        vmax: distance at the top of the colour map (default: the largest distance shown). Items that
            already carry distances (:func:`deepsdf_ad.viz.scene.color_by_distance`) also get the colour bar.
        renderer: ``auto``, ``pyrender``, ``open3d`` or ``raycast`` (see the module docstring).
        point_size: point diameter in pixels for point clouds.
        fov: vertical field of view in degrees.
    """
    from PIL import Image, ImageDraw

    width, height = (int(v) for v in size)
    if width < 16 or height < 16:
        raise DataError(f"image size {width}x{height} is too small; use at least 16x16")
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    if len(inputs) == 0:
        raise DataError("nothing to render; pass at least one mesh or point cloud")
    items = _default_colors([as_item(x) for x in inputs], [isinstance(x, Item) for x in inputs])
    names = _labels(items, labels)
    if color_by_distance is not None:
        items, vmax = _color_by_distance(items, color_by_distance, vmax)
    colorbar = any(it.distances is not None for it in items)  # error maps, coloured here or by the caller
    if colorbar and vmax is None:
        vmax = float(max(it.distances.max() for it in items if it.distances is not None))

    font_px = max(10, min(22, height // 28))
    font = _font(font_px)
    bar_w = max(70, width // 9) if colorbar else 0
    rows, cols = ((1, 1) if layout == "overlay"
                  else ((1, len(items)) if layout == "row" else grid_shape(len(items))))
    show_labels = any(names) and layout != "overlay"
    label_h = font_px + 8 if show_labels else 0
    cell_w, cell_h = (width - bar_w) // cols, height // rows
    render_h = cell_h - label_h
    if cell_w < 8 or render_h < 8:
        raise DataError(f"image size {width}x{height} is too small for {len(items)} inputs in a {layout}")

    canvas = Image.new("RGB", (width, height), tuple(int(round(c * 255)) for c in BACKGROUND))
    cells, cams = _cells(items, layout, cell_w, render_h, azimuth, elevation, up, fov)
    draw = ImageDraw.Draw(canvas)
    for k, (cell, cam) in enumerate(zip(cells, cams, strict=True)):
        r, c = divmod(k, cols)
        img = render_items(cell, cam, renderer, point_size)
        canvas.paste(Image.fromarray(img), (c * cell_w, r * cell_h))
        if show_labels and names[k]:
            tw, _ = _text_size(draw, names[k], font)
            draw.text((c * cell_w + (cell_w - tw) // 2, r * cell_h + render_h + 2), names[k],
                      fill=(0, 0, 0), font=font)
    if layout == "overlay" and any(names) and len(items) > 1:
        _draw_legend(draw, items, names, font, font_px)
    if colorbar:
        _draw_colorbar(draw, (width - bar_w, height // 10, width - 2, height - height // 10), vmax, font)
    return np.asarray(canvas)


def save_image(array: np.ndarray, out: str | os.PathLike) -> Path:
    """Write an (H, W, 3) uint8 image atomically; the suffix picks the format (.png, .jpg)."""
    from PIL import Image

    out = Path(out)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{out}: unsupported image type '{out.suffix}'; use one of "
                        f"{' '.join(IMAGE_SUFFIXES)}")
    with atomic_path(out) as tmp:
        Image.fromarray(np.asarray(array, np.uint8)).save(tmp, format="JPEG" if out.suffix.lower() != ".png"
                                                          else "PNG", optimize=True)
    return out


def render_meshes(inputs: Sequence, out_png: str | os.PathLike, **kwargs) -> Path:
    """:func:`render_to_array` written to ``out_png`` (atomically). Returns the path."""
    out = Path(out_png)
    if out.suffix.lower() not in IMAGE_SUFFIXES:  # fail before the (slow) render
        raise DataError(f"{out}: unsupported image type '{out.suffix}'; use one of "
                        f"{' '.join(IMAGE_SUFFIXES)}")
    return save_image(render_to_array(inputs, **kwargs), out)


__all__ = ["DISTANCE_CMAP", "RENDERERS", "render_items", "render_meshes", "render_to_array", "save_image"]
