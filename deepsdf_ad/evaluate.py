"""``deepsdf-ad eval``: reconstruct every shape of a split, mesh it, and measure it against the truth.

Per shape: find a code from the shape's observations (how depends on the run, see below), extract the
surface (marching cubes in 3D, the field on a grid in 2D), and compute the metrics of
:mod:`deepsdf_ad.metrics` with their conventions. Timings are wall seconds per shape: ``code_seconds``
(codes are found ``batch`` shapes at a time, the batch's time divided by its size) and ``mesh_seconds``.

Inputs (``--input``):

- ``full``: an autodecoder optimises its code against the shape's SDF samples (``DATA/sdf``); an
  autoencoder encodes the shape's surface points (``DATA/surface``). On the train split an autodecoder
  uses the codes it learned (``mode: table``): that is what it represents.
- ``scan``: 3D: the first partial scan of the shape (``DATA/scans/<category>/<id>_0.ply``, written by
  ``prep meshes --scans K``), in the normalised frame. 2D: the contour points on one side of a line
  through the contour's centre, in a direction drawn from the shape's key (about half the contour). An
  autodecoder fits them as sdf-0 observations (plus points moved along the normals, and free space seen
  by the camera in 3D); an autoencoder encodes the points.

Truth: 3D surfaces are ``DATA/surface`` (30,000 points with normals); the inside for the volumetric IoU
comes from the source mesh listed in ``DATA/manifest.json`` (its winding number; the IoU is left out when
that mesh is not found). 2D fields are the digit's exact field from the IDX file in the manifest, else
rebuilt from the contour points and their normals.
"""

from __future__ import annotations

import math
import os
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from deepsdf_ad.config import Config
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError, DataRoot, ShapeRef
from deepsdf_ad.data_prep.log import note
from deepsdf_ad.device import resolve_device
from deepsdf_ad.losses import loss_clamp
from deepsdf_ad.metrics import (
    IOU_POINTS,
    iou,
    near_contour_error,
    psnr,
    surface_metrics,
    surface_points_normals,
)
from deepsdf_ad.models import SDFModel
from deepsdf_ad.reconstruct import (
    Observations,
    check_mode,
    find_codes,
    mean_training_code,
    observation_losses,
    observations_from_samples,
    observations_from_scan,
    start_candidates,
)
from deepsdf_ad.runs import Run, load_trained

INPUTS = ("full", "scan")
SPLITS = ("test", "train")
METRICS_3D = ("chamfer_x1e3", "chamfer_l1", "fscore", "normal_consistency", "iou")
METRICS_2D = ("iou", "near_contour_error")
LOWER_IS_BETTER = {"chamfer_x1e3", "chamfer_l1", "near_contour_error", "code_seconds", "mesh_seconds"}


@dataclass
class EvalOptions:
    """What ``eval`` measures and how."""

    split: str = "test"
    """Shapes to reconstruct: 'test' (held out) or 'train' (representation)."""
    input: str = "full"
    """'full' (SDF samples / all surface points) or 'scan' (a partial view)."""
    mode: str | None = None
    """Code finding: 'optimise', 'encode' or 'encode+refine'; None: the run's default."""
    resolution: int | None = None
    """Grid points per axis for meshing and 2D fields (default: the run's ``mesh.resolution``)."""
    limit: int | None = None
    """At most this many shapes per category (the first in split order); None: all."""
    batch: int = 32
    """Shapes whose codes are found together."""
    seed: int = 0
    """Seed of point subsets, scans' free-space points and 2D cut directions."""


# ---- truth ---------------------------------------------------------------------------------------------
def shape_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


class Truth3D:
    """Surface points with normals, and (when the source mesh is known) inside tests, of a data root's
    shapes."""

    def __init__(self, root: DataRoot):
        self.root = root
        self.sources = {}
        for rec in root.manifest().get("meshes", []):
            if rec.get("status") == "ok" and rec.get("file"):
                self.sources[f"{rec['category']}/{rec['id']}"] = Path(rec["file"])

    def surface(self, ref: ShapeRef) -> tuple[np.ndarray, np.ndarray | None]:
        if ref.surface is None:
            raise DataError(f"{ref.key}: no surface points in {self.root.root} (DATA/surface); re-run prep")
        cloud = formats.load_points(ref.surface)
        return cloud.points, cloud.normals

    _cache: dict = {}
    """(source mesh, normalisation, hash of the points) -> inside mask: methods and sections share the
    truth."""

    def inside(self, ref: ShapeRef, points: np.ndarray) -> np.ndarray | None:
        """Inside test of ``points`` (normalised frame) from the source mesh's winding number, or None."""
        src = self.sources.get(ref.key)
        if src is None or not src.is_file() or ref.norm is None:
            return None
        key = (str(src), str(ref.norm), hash(np.ascontiguousarray(points).tobytes()))
        if key not in Truth3D._cache:
            if len(Truth3D._cache) > 256:
                Truth3D._cache.clear()
            try:
                Truth3D._cache[key] = self._inside(src, ref, points)
            except ImportError as e:  # a learner-only install (no libigl / open3d): the rest of eval goes on
                note(f"volumetric IoU left out: the inside test of the source meshes needs {e.name or e}, "
                     "which is not installed")
                self.sources = {}
                return None
        return Truth3D._cache[key]

    def mesh(self, ref: ShapeRef):
        """The source mesh in the normalised frame (a trimesh), or None when the manifest names none that is
        there."""
        src = self.sources.get(ref.key)
        if src is None or not src.is_file() or ref.norm is None:
            return None
        return self._mesh(src, ref)

    @staticmethod
    def _mesh(src: Path, ref: ShapeRef):
        import trimesh

        from deepsdf_ad.data_prep.meshes import apply_normalization, load_mesh

        mesh = load_mesh(src)
        offset, scale = formats.load_normalization(ref.norm)
        return trimesh.Trimesh(apply_normalization(mesh.vertices, offset, scale), mesh.faces, process=False)

    def _inside(self, src: Path, ref: ShapeRef, points: np.ndarray) -> np.ndarray:
        from deepsdf_ad.data_prep.meshes import SignedDistance

        sd = SignedDistance(self._mesh(src, ref))
        return sd.inside(sd.winding(points))


class Truth2D:
    """Exact digit fields from the IDX files named in the manifest, else fields rebuilt from contour
    points."""

    def __init__(self, root: DataRoot, kind: str):
        self.root, self.kind = root, kind
        self.images: dict[str, np.ndarray] = {}
        self._files = {}
        for f in root.manifest().get("files", []):
            m = re.fullmatch(r"(.+)-images-idx3-ubyte(\.gz)?", Path(f.get("images", "")).name)
            if m and Path(f["images"]).is_file():
                self._files[m.group(1)] = Path(f["images"])

    def image(self, ref: ShapeRef) -> np.ndarray | None:
        m = re.fullmatch(r"(.+)-(\d+)", ref.id)
        if not m or m.group(1) not in self._files:
            return None
        prefix = m.group(1)
        if prefix not in self.images:
            self.images[prefix] = formats.read_idx(self._files[prefix])
        imgs = self.images[prefix]
        i = int(m.group(2))
        return imgs[i] if i < len(imgs) else None

    def field(self, ref: ShapeRef, points: np.ndarray) -> np.ndarray:
        """The true field (sdf or intensity) at ``points`` (M, 2)."""
        from deepsdf_ad.data_prep.digits import DigitField

        img = self.image(ref)
        if img is not None:
            return DigitField(img).values(points.astype(np.float64), self.kind)
        if self.kind == "height":
            raise DataError(f"{ref.key}: the digit's IDX file (see {self.root.root / formats.MANIFEST}) is "
                            "not found; a heightfield needs it as the truth")
        return contour_sdf(*contour_with_normals(ref), points)


def contour_with_normals(ref: ShapeRef) -> tuple[np.ndarray, np.ndarray]:
    if ref.surface is None:
        raise DataError(f"{ref.key}: no contour points (DATA/surface); re-run prep digits")
    cloud = formats.load_points(ref.surface)
    if cloud.normals is None:
        raise DataError(f"{ref.surface}: contour points have no normals")
    return cloud.points[:, :2], cloud.normals[:, :2]


def contour_sdf(contour: np.ndarray, normals: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Signed distance at ``points`` (M, 2) to a sampled contour (K, 2) with outward normals (K, 2):
    the distance to the nearest contour point, negative where the point lies behind that point's normal."""
    from scipy.spatial import cKDTree

    d, i = cKDTree(contour).query(points, workers=-1)
    side = np.sum((points - contour[i]) * normals[i], axis=1)
    return np.where(side < 0, -d, d)


def half_contour(contour: np.ndarray, normals: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The 2D 'scan': contour points on one side of a line through their centre, in a random direction."""
    d = rng.normal(size=2)
    d /= np.linalg.norm(d)
    keep = (contour - contour.mean(axis=0)) @ d >= 0
    if keep.sum() < 3:
        keep = np.ones(len(contour), bool)
    return contour[keep], normals[keep]


def scan_in_frame(root: DataRoot, ref: ShapeRef) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A shape's first partial scan in the normalised frame: points (N, 3), normals facing the camera (or
    None) and the camera position (or None)."""
    from deepsdf_ad.data_prep.meshes import apply_normalization
    from deepsdf_ad.data_prep.scans import load_scan

    scans = root.scan_paths(ref)
    if not scans:
        raise DataError(f"{ref.key}: no partial scan in {root.root / formats.SCANS_DIR}; prep the data with "
                        "'deepsdf-ad prep meshes ... --scans K' or evaluate with --input full")
    cloud, meta = load_scan(scans[0])
    if "normalization" in meta:
        offset, scale = (np.asarray(meta["normalization"]["offset"], float),
                         float(meta["normalization"]["scale"]))
    elif ref.norm is not None:
        offset, scale = formats.load_normalization(ref.norm)
    else:
        raise DataError(f"{scans[0]}: normalisation unknown (no sidecar, no DATA/norm file)")
    pts = apply_normalization(cloud.points, offset, scale)
    camera = (apply_normalization(np.asarray(meta["camera"], float), offset, scale) if "camera" in meta
              else None)
    normals = cloud.normals
    if normals is not None and camera is not None:
        flip = np.sum(normals * (camera[None] - pts), axis=1) < 0
        normals = np.where(flip[:, None], -normals, normals)
    return pts, normals, camera


# ---- inputs --------------------------------------------------------------------------------------------
def scan_input(root: DataRoot, ref: ShapeRef, cfg: Config, rng: np.random.Generator
               ) -> tuple[Observations, np.ndarray]:
    """Observations and encoder points of a shape's partial view (normalised frame)."""
    if cfg.dim == 2:
        c, n = half_contour(*contour_with_normals(ref), rng)
        eps = cfg.reconstruct.normal_offset
        pts = np.concatenate([c, c + eps * n, c - eps * n])
        vals = np.concatenate([np.zeros(len(c)), np.full(len(c), eps), np.full(len(c), -eps)])
        return Observations(pts, vals, vals), c
    pts, normals, camera = scan_in_frame(root, ref)
    return observations_from_scan(pts, normals, camera, cfg.reconstruct, rng), pts


def full_input(ref: ShapeRef, cfg: Config, mode: str) -> tuple[Observations | None, np.ndarray | None]:
    """SDF samples (for optimisation) and surface points (for an encoder) of a shape, as the mode needs."""
    from deepsdf_ad.inputs import load_surface

    obs = (observations_from_samples(np.concatenate(formats.load_sdf_samples(ref.sdf))) if mode != "encode"
           else None)
    points = load_surface(ref, cfg.dim) if mode.startswith("encode") else None
    return obs, points


def mean_curve(curves: list[list[float]]) -> list[float]:
    """The mean of loss curves over their common length (a batch that stopped early cuts the others)."""
    if not curves:
        return []
    n = min(len(c) for c in curves)
    return [float(v) for v in np.mean([c[:n] for c in curves], axis=0)] if n else []


def select(refs: list[ShapeRef], limit: int | None) -> list[ShapeRef]:
    """The first ``limit`` shapes of each category, in split order."""
    if limit is None:
        return list(refs)
    seen: dict[str, int] = {}
    out = []
    for r in refs:
        if seen.get(r.category, 0) < limit:
            out.append(r)
            seen[r.category] = seen.get(r.category, 0) + 1
    return out


# ---- evaluation ----------------------------------------------------------------------------------------
def find_shape_codes(run, cfg: Config, model: SDFModel, root: DataRoot, refs: list[ShapeRef],
                     opts: EvalOptions, device: torch.device,
                     progress: bool = True, curves: list | None = None, objective: list | None = None,
                     offset: int = 0, steps: bool = False) -> tuple[torch.Tensor, list[float], str]:
    """Codes (S, L) of ``refs`` and the seconds per shape spent finding each; also the mode used.
    ``curves``: a list that receives, per batch of shapes optimised together, the loss per iteration (the
    mean over the batch; nothing for a table lookup or a plain encoding). ``objective``: with
    ``encode+refine``, a list that receives per shape the data term of the test-time objective
    (:func:`deepsdf_ad.reconstruct.observation_losses`) at the encoder's code and at the refined one.
    ``offset``: the position of ``refs[0]`` in the whole list being evaluated (the seed of each batch's
    search depends on it, so that the list found in parts gives the codes found in one go). ``steps``: a bar
    of each batch's search steps on a terminal (:func:`deepsdf_ad.data_prep.log.progress_bar`)."""
    mode = check_mode(model, opts.mode, cfg.model.latent.source)
    if opts.split == "train" and opts.input == "full" and mode == "optimise" and opts.mode is None:
        keys = run.shapes()["keys"]
        table = model.latent.all_codes().cpu()
        rows = [keys.index(r.key) if r.key in keys else -1 for r in refs]
        if all(i >= 0 for i in rows):
            return table[rows], [0.0] * len(refs), "table"
    mean = mean_training_code(run)
    candidates = start_candidates(run, cfg.reconstruct)
    codes, seconds = [], []
    bar = tqdm(total=len(refs), desc=f"codes ({mode})", unit="shape", disable=not progress)
    for s in range(0, len(refs), opts.batch):
        chunk = refs[s:s + opts.batch]
        obs, pts = [], []
        for r in chunk:
            rng = shape_rng(opts.seed, r.key)
            o, p = scan_input(root, r, cfg, rng) if opts.input == "scan" else full_input(r, cfg, mode)
            obs.append(o)
            pts.append(p)
        init = None
        if mode == "optimise":
            if cfg.reconstruct.init == "mean" and mean is not None:
                init = mean.reshape(1, -1).repeat(len(chunk), 1)
        t0 = time.perf_counter()
        found, losses = find_codes(model, cfg, mode, obs if mode != "encode" else None,
                                   pts if mode.startswith("encode") else None, device, init=init,
                                   seed=opts.seed + offset + s, candidates=candidates, progress=steps)
        dt = (time.perf_counter() - t0) / len(chunk)
        if curves is not None and losses:
            curves.append([float(x) for x in losses])
        if objective is not None and mode == "encode+refine":  # the same encoding the refinement started from
            enc, _ = find_codes(model, cfg, "encode", None, pts, device, seed=opts.seed + offset + s)
            before, after = (observation_losses(model, obs, c, cfg.reconstruct, loss_clamp(cfg), device)
                             for c in (enc, found))
            objective += list(zip(before.tolist(), after.tolist(), strict=True))
        codes.append(found.cpu())
        seconds += [dt] * len(chunk)
        bar.update(len(chunk))
    bar.close()
    return torch.cat(codes), seconds, mode


def measure_shape(model: SDFModel, cfg: Config, code: torch.Tensor, ref: ShapeRef, truth, resolution: int,
                  device: torch.device, seed: int = 0) -> dict:
    """Mesh (3D) or grid (2D) of one code and its metrics against the truth; never raises for an empty
    shape."""
    from deepsdf_ad.meshing import evaluate_grid, field_kind, grid_points, mesh_sdf, model_sdf

    fn = model_sdf(model, code, device, cfg.mesh.batch_points)
    rec: dict = {}
    if cfg.dim == 2:
        t0 = time.perf_counter()
        pred = evaluate_grid(fn, resolution, 2)
        rec["mesh_seconds"] = time.perf_counter() - t0
        true = truth.field(ref, grid_points(resolution, 2)).reshape(resolution, resolution)
        if field_kind(cfg) == "height":
            rec["iou"] = iou(pred >= 0.5, true >= 0.5)
            rec["psnr"] = psnr(np.clip(pred, 0, 1), true)
        else:
            rec["iou"] = iou(pred < 0, true < 0)
            rec["near_contour_error"] = near_contour_error(pred, true)
        return rec
    true_pts, true_normals = truth.surface(ref)
    t0 = time.perf_counter()
    try:
        mesh = mesh_sdf(fn, resolution)
    except DataError as e:
        mesh, rec["failed"] = None, str(e)
    rec["mesh_seconds"] = time.perf_counter() - t0
    if mesh is not None and len(mesh.faces):
        pts, normals = surface_points_normals(mesh, len(true_pts), seed)
        m = surface_metrics(pts, normals, true_pts, true_normals)
        rec.update(chamfer_x1e3=m["chamfer"] * 1e3, chamfer_l1=m["chamfer_l1"], fscore=m["fscore"],
                   precision=m["precision"], recall=m["recall"])
        if "normal_consistency" in m:
            rec["normal_consistency"] = m["normal_consistency"]
    elif "failed" not in rec:
        rec["failed"] = "empty mesh"
    q = np.random.default_rng(seed).uniform(-1, 1, size=(IOU_POINTS, 3))
    inside = truth.inside(ref, q)
    if inside is not None:
        rec["iou"] = iou(fn(q) < 0, inside)
    return rec


def summarise(records: list[dict], metrics: tuple[str, ...]) -> dict:
    """Mean and median of each metric (and timings) over all shapes and per category; failures counted."""
    def stats(rows):
        out = {"shapes": len(rows), "failed": sum(1 for r in rows if "failed" in r)}
        for k in (*metrics, "psnr", "code_seconds", "mesh_seconds"):
            v = [r[k] for r in rows if r.get(k) is not None and math.isfinite(r[k])]
            if v:
                out[k] = {"mean": float(np.mean(v)), "median": float(np.median(v)), "n": len(v)}
        return out

    cats = sorted({r["category"] for r in records})
    return {"all": stats(records), "by_category": {c: stats([r for r in records if r["category"] == c])
                                                   for c in cats}}


@dataclass
class PartialEval:
    """An evaluation done up to the end of a batch of shapes: what :func:`evaluate_run` hands its
    ``on_batch`` and resumes from."""

    records: list[dict]
    """Per-shape records of the shapes done (the first ``len(records)`` of the list evaluated)."""
    codes: torch.Tensor | None
    """Their codes (first dimension: one per record); None before the first batch."""
    curves: list[list[float]]
    """The code-search loss per iteration of each batch done (see :func:`find_shape_codes`)."""
    mode: str = ""
    """How the codes were found ('table', 'optimise', 'encode', 'encode+refine'); '' before any batch."""


def resumable(part: PartialEval | None, refs: list[ShapeRef], batch: int) -> PartialEval:
    """``part`` when it is the start of an evaluation of ``refs`` in batches of ``batch`` (the same shapes
    in the same order, ending at a batch boundary, a code per record), else a fresh start."""
    fresh = PartialEval([], None, [])
    if part is None or not part.records:
        return fresh
    n = len(part.records)
    keys = [r.get("key") for r in part.records]
    if (n > len(refs) or (n % batch and n != len(refs)) or keys != [r.key for r in refs[:n]]
            or part.codes is None or len(part.codes) != n):
        return fresh
    return part


def evaluate_run(run_path: str | os.PathLike, data: str | os.PathLike, opts: EvalOptions | None = None,
                 device: str = "auto", progress: bool = True, keep_codes: bool = False,
                 resume: PartialEval | None = None,
                 on_batch: Callable[[PartialEval], None] | None = None) -> dict:
    """Reconstruct, mesh and measure every shape of ``opts.split`` of ``data`` with the run's model.

    Works ``opts.batch`` shapes at a time (codes found together, then each meshed and measured) and hands
    what is done after each batch to ``on_batch``; ``resume`` (an earlier call's :class:`PartialEval`, for the
    same run, data and options) skips the shapes it holds. The result is the same as in one go: each batch's
    search is seeded by its position. A ``resume`` that does not fit the shapes is ignored.

    Returns ``{"run", "data", "split", "input", "mode", "resolution", "dim", "shapes": [per-shape records],
    "summary": {...}}`` (plus ``"codes"`` (S, L) when ``keep_codes``: not JSON).
    """
    from deepsdf_ad.meshing import field_kind

    opts = opts or EvalOptions()
    if opts.split not in SPLITS:
        raise DataError(f"--split {opts.split}: use one of {', '.join(SPLITS)}")
    if opts.input not in INPUTS:
        raise DataError(f"--input {opts.input}: use one of {', '.join(INPUTS)}")
    dev = resolve_device(device)
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    root = DataRoot(data)
    refs = select(root.shapes(opts.split), opts.limit)
    dims = {2: "2D (digits)", 3: "3D (meshes)"}
    probe = formats.load_sdf_samples(refs[0].sdf)[0].shape[1] - 1
    if probe != cfg.dim:
        raise DataError(f"{root.root}: holds {dims.get(probe, probe)} shapes but {run.path} is a "
                        f"{dims[cfg.dim]} run")
    res = opts.resolution or cfg.mesh.resolution
    truth = Truth2D(root, field_kind(cfg)) if cfg.dim == 2 else Truth3D(root)
    if cfg.dim == 3 and not truth.sources:
        note(f"{root.root}: no source meshes in the manifest; volumetric IoU is left out")
    done = resumable(resume, refs, opts.batch)
    mode = done.mode or check_mode(model, opts.mode, cfg.model.latent.source)
    bar = tqdm(total=len(refs), initial=len(done.records), desc=f"shapes ({mode})", unit="shape",
               disable=not progress)
    for s in range(len(done.records), len(refs), opts.batch):
        chunk = refs[s:s + opts.batch]
        objective: list[tuple[float, float]] = []
        curves = list(done.curves)
        codes, code_seconds, mode = find_shape_codes(run, cfg, model, root, chunk, opts, dev, False, curves,
                                                     objective, offset=s, steps=progress)
        records = list(done.records)
        for i, (ref, code, cs) in enumerate(zip(chunk, codes, code_seconds, strict=True)):
            rec = {"key": ref.key, "category": ref.category, "id": ref.id, "code_seconds": cs}
            if objective:  # encode+refine: the amortisation gap of this shape, in the objective
                rec["objective_encoded"], rec["objective_refined"] = objective[i]
            rec.update(measure_shape(model, cfg, code, ref, truth, res, dev, seed=opts.seed))
            records.append(rec)
            bar.update(1)
        done = PartialEval(records, codes if done.codes is None else torch.cat([done.codes, codes]), curves,
                           mode)
        if on_batch is not None:
            on_batch(done)
    bar.close()
    metrics = METRICS_2D if cfg.dim == 2 else METRICS_3D
    out = {"run": str(run.path), "data": str(root.root), "split": opts.split, "input": opts.input,
           "mode": mode, "resolution": res, "dim": cfg.dim, "latent_source": cfg.model.latent.source,
           "metrics": list(metrics), "shapes": done.records, "summary": summarise(done.records, metrics),
           "code_loss": mean_curve(done.curves)}
    if keep_codes:
        out["codes"] = done.codes
    return out


def write_eval(result: dict, out: str | os.PathLike) -> Path:
    formats.write_json(out, {k: v for k, v in result.items() if k != "codes"})
    return Path(out)
