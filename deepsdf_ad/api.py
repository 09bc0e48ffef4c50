"""The Python API: a trained run in memory, shapes out as ``trimesh.Trimesh``, data prep in one call.

::

    from deepsdf_ad import load_run, mesh_shape, prep_meshes, reconstruct

    prep_meshes("meshes/", "data/", samples=50_000)        # a folder of meshes -> a data folder
    run = load_run("run/")                                 # after `deepsdf-ad train ... --out run`
    chair = mesh_shape(run, "chair/chair_000")             # a training shape, normalised frame
    mesh = reconstruct("scan.ply", run)                    # a partial scan -> the completed shape

Each function is the library call the matching command makes (``prep meshes``, ``mesh``, ``reconstruct``),
taking and returning data: the same defaults, the same numbers, the same errors
(:class:`deepsdf_ad.data_prep.formats.DataError` naming what is wrong). ``deepsdf_ad`` imports these names on
first use, so ``import deepsdf_ad`` alone stays light.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import trimesh

from deepsdf_ad.config import Config
from deepsdf_ad.data_prep import log
from deepsdf_ad.data_prep.formats import DataError, PointCloud, clean_points, load_normalization
from deepsdf_ad.data_prep.params import CameraConfig, PrepConfig, SamplingConfig, default_test_fraction
from deepsdf_ad.device import resolve_device
from deepsdf_ad.models import SDFModel
from deepsdf_ad.runs import Run, load_trained

ARRAY_NAME = "points"
"""How messages name an array given to :func:`reconstruct` (a file is named by its path)."""
POSED_MESH = "mesh.ply"
"""The mesh's name in the record of a :func:`reconstruct` with a pose search (nothing is written)."""


@dataclass
class LoadedRun:
    """A trained run in memory (:func:`load_run`)."""

    path: Path
    """The run folder."""
    config: Config
    """Its resolved config (``RUN/config.yaml``)."""
    model: SDFModel
    """Decoder and latent source of the newest checkpoint, in eval mode on ``device``."""
    codes: torch.Tensor
    """The training shapes' codes (S, L), row i for ``shapes[i]``, on ``device``."""
    shapes: list[str]
    """The training shapes' names, ``category/id``, in the row order of ``codes``."""
    device: torch.device
    """Where the model is."""

    def index(self, shape: str | int) -> int:
        """The row of a training shape: its index, ``category/id`` or an unambiguous ``id``."""
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            if not -len(self.shapes) <= shape < len(self.shapes):
                raise DataError(f"{self.path}: shape index {shape} out of range; the run has "
                                f"{len(self.shapes)} training shapes")
            return int(shape) % len(self.shapes)
        return Run(self.path).shape_index(str(shape))


def load_run(path: str | os.PathLike, device: str = "auto") -> LoadedRun:
    """Load a trained run (the folder ``deepsdf-ad train --out`` wrote) from its newest intact checkpoint.

    Args:
        path: the run folder.
        device: 'auto', 'cpu', 'cuda', 'cuda:1', 'mps' (:func:`deepsdf_ad.device.resolve_device`).

    Returns:
        The run's model, training codes, config and shape names (:class:`LoadedRun`).
    """
    dev = resolve_device(device)
    run = Run(path)
    cfg, model = load_trained(run, dev)
    return LoadedRun(run.path, cfg, model, model.latent.all_codes().to(dev), list(run.shapes()["keys"]), dev)


def _as_run(run: LoadedRun | str | os.PathLike) -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run)


def _need_3d(run: LoadedRun, what: str, command: str) -> None:
    if run.config.dim != 3:
        raise DataError(f"{run.path}: {what}() returns a mesh and needs a 3D run; this run is 2D "
                        f"('deepsdf-ad {command}' draws its shapes as pictures)")


def mesh_shape(run: LoadedRun | str | os.PathLike, shape: str | int, resolution: int | None = None,
               method: str = "adaptive", precision: str = "fp32", progress: bool = False) -> trimesh.Trimesh:
    """The mesh of a training shape, in the normalised frame (what ``deepsdf-ad mesh`` writes).

    Args:
        run: a :class:`LoadedRun`, or a run folder to load.
        shape: the shape's row in ``run.codes``, its ``category/id`` or an unambiguous ``id``.
        resolution: grid points per axis over [-1, 1]^3 (None: the run's ``mesh.resolution``).
        method: 'adaptive' (coarse-to-fine) or 'dense' grid evaluation.
        precision: 'fp32', or 'bf16' / 'fp16' autocast of the decoder queries.
        progress: a progress bar on stderr.
    """
    from deepsdf_ad.meshing import mesh_sdf, model_sdf

    run = _as_run(run)
    _need_3d(run, "mesh_shape", "mesh")
    code = run.codes[run.index(shape)]
    fn = model_sdf(run.model, code, run.device, run.config.mesh.batch_points, precision=precision)
    return mesh_sdf(fn, resolution or run.config.mesh.resolution, method=method, progress=progress)


def _scan(points_or_path, normals, camera) -> tuple[str, PointCloud, dict]:
    """(name for messages, cloud, meta) of a point file (:func:`deepsdf_ad.data_prep.scans.load_scan`: its
    camera and normalisation from a sidecar) or of an (N, 3) array (with ``normals`` (N, 3) if given);
    ``camera`` (3,), if given, replaces the file's."""
    if isinstance(points_or_path, (str, os.PathLike)):
        from deepsdf_ad.data_prep.scans import load_scan

        if normals is not None:
            raise DataError(f"{points_or_path}: normals= is for an array of points; a file brings its own")
        cloud, meta = load_scan(points_or_path)
        name = str(points_or_path)
    else:
        pts, nrm = clean_points(ARRAY_NAME, points_or_path, normals)
        cloud, meta, name = PointCloud(pts, nrm), {}, ARRAY_NAME
    if camera is not None:
        cam = np.asarray(camera, float).reshape(-1)
        if cam.shape != (3,) or not np.isfinite(cam).all():
            raise DataError(f"{name}: camera must be 3 finite numbers, got {np.asarray(camera).tolist()}")
        meta["camera"] = cam.tolist()
    return name, cloud, meta


def _normalization(norm, name: str) -> dict:
    """``meta['normalization']`` of ``norm``: a NORM.npz path or (offset (3,), scale)."""
    if isinstance(norm, (str, os.PathLike)):
        offset, scale = load_normalization(norm)
    else:
        try:
            offset, scale = np.asarray(norm[0], float).reshape(-1), float(norm[1])
        except (TypeError, ValueError, IndexError):
            raise DataError(f"{name}: norm must be a NORM.npz path or (offset [x, y, z], scale)") from None
    if offset.shape != (3,) or not np.isfinite(offset).all() or not (np.isfinite(scale) and scale > 0):
        raise DataError(f"{name}: norm needs an offset of 3 finite numbers and a positive scale, got "
                        f"{offset.tolist()} and {scale}")
    return {"offset": offset.tolist(), "scale": scale}


def reconstruct(points_or_path: np.ndarray | str | os.PathLike, run: LoadedRun | str | os.PathLike, *,
                normals: np.ndarray | None = None, camera=None, norm=None, pose_search: bool = False,
                up: str | None = None, keep_floor: bool = False, crop: float | None = None,
                resolution: int | None = None, iterations: int | None = None, mode: str | None = None,
                restarts: int | None = None, precision: str | None = None, method: str = "adaptive",
                seed: int = 0, progress: bool = False) -> trimesh.Trimesh:
    """The completed shape of a partial observation, in the observation's frame (``deepsdf-ad reconstruct``).

    By default the frame is known: the points are oriented as the training shapes (``reconstruct.frame_up``
    points up) and taken to the normalised frame by ``norm``, else by the file's sidecar, else by their own
    bounding box (:func:`deepsdf_ad.commands.reconstruction.complete_scan`). With ``pose_search`` and no
    normalisation known, the capture is cleaned and its pose searched with the code, as the command does
    (:func:`deepsdf_ad.commands.reconstruction.complete_capture`).

    Args:
        points_or_path: points (N, 3), or a point file (.ply .pcd .xyz .txt .npy .npz .obj .off .stl) with its
            sidecar (camera, normalisation) if any.
        run: a :class:`LoadedRun` (load it once for many calls), or a run folder.
        normals: (N, 3) outward normals of an array of points (observations on both sides of the surface).
        camera: (3,) the camera position in the points' frame (free-space observations along its rays).
        norm: the normalisation of the points: a NORM.npz (as ``prep`` writes) or ``(offset (3,), scale)``,
            normalised = (points + offset) * scale. ``(np.zeros(3), 1.0)``: the points are normalised already.
        pose_search: search the pose (up axis, turn, scale, shift) when no normalisation is known.
        up, keep_floor, crop: the pose search's ``--up``, ``--keep-floor`` and ``--crop``.
        resolution, iterations, mode, restarts, precision, method, seed: as the command's flags (None: the
            run's config).
        progress: progress bars on stderr.

    Returns:
        The mesh; ``mesh.metadata["deepsdf_ad"]`` holds what the command reports (points, observations, mode,
        final loss, normalisation; with a pose search also ``record``: the transform and the fit).
    """
    from deepsdf_ad.commands.reconstruction import (
        complete_capture,
        complete_scan,
        dropped_indices,
        posed_report,
    )
    from deepsdf_ad.pose import no_pose_search
    from deepsdf_ad.reconstruct import check_mode

    run = _as_run(run)
    _need_3d(run, "reconstruct", "reconstruct")
    name, cloud, meta = _scan(points_or_path, normals, camera)
    if norm is not None:
        meta["normalization"] = _normalization(norm, name)
    cfg = copy.deepcopy(run.config)  # this call's precision and restarts; the loaded run stays as it was
    if precision is not None:
        cfg.reconstruct.precision = precision
    if restarts is not None:
        cfg.reconstruct.restarts = restarts
    mode = check_mode(run.model, mode, cfg.model.latent.source)
    folder = Run(run.path)
    search = pose_search and "normalization" not in meta
    why = no_pose_search(run.model, mode) if search else None
    if not (search and why is None):
        if search:
            log.note(f"{name}: no pose search ({why}); normalising by the points' bounding box in their "
                     "own orientation")
        loaded = (run.device, folder, cfg, run.model, mode)
        mesh, info = complete_scan(loaded, name, resolution, iterations, seed=seed, method=method,
                                   progress=progress, scan=(cloud, meta))
        mesh.metadata["deepsdf_ad"] = info
        return mesh
    # the record and the report the command writes beside its mesh, named as if the mesh were mesh.ply
    pc = complete_capture(folder, cfg, run.model, name, cloud, meta, resolution, iterations, run.device, seed,
                          method, up=up, keep_floor=keep_floor, crop=crop, progress=progress)
    record, info = posed_report(name, Path(POSED_MESH), cfg, pc, dropped_indices(pc.cleaned), keep_floor)
    info["record"] = record
    mesh = pc.mesh
    mesh.metadata["deepsdf_ad"] = {k: v for k, v in info.items() if k != "out"}
    return mesh


PREP_OPTIONS = {
    **{f.name: SamplingConfig for f in fields(SamplingConfig)},
    **{f.name: PrepConfig for f in fields(PrepConfig) if f.name not in ("sampling", "held_out")},
    "held_out": None, "workers": None, "progress": None, "shard": None, "force": None,
}
"""The options of :func:`prep_meshes` and where each one's default is written."""


def prep_meshes(src: str | os.PathLike, out: str | os.PathLike, **options) -> dict:
    """Sample every mesh below ``src`` (one subfolder per category) into the data folder ``out``, as
    ``deepsdf-ad prep meshes`` does: SDF samples, normalisations, surface points, splits, optional scans.

    Args:
        src: a folder of meshes (.obj .off .ply .stl), searched recursively.
        out: the data folder to write (a second call reuses what is done).
        **options: fields of :class:`~deepsdf_ad.data_prep.params.SamplingConfig` (``samples``, ``variances``,
            ``uniform_fraction``, ``surface_points``) and :class:`~deepsdf_ad.data_prep.params.PrepConfig`
            (``test_fraction``, ``seed``, ``scans``, ``max_ambiguous``, ``camera``: a
            :class:`~deepsdf_ad.data_prep.params.CameraConfig` or a dict of its fields), ``held_out`` (a
            second folder of meshes, every one a test shape; ``test_fraction`` then defaults to 0),
            ``workers`` (processes), ``progress`` (default False), ``shard`` ((I, N)) and ``force`` (write
            into a folder that is not a data folder of ours). Unnamed ones keep the command's defaults.

    Returns:
        The manifest (``DATA/manifest.json``): every mesh with its status, the parameters, a summary.
    """
    from deepsdf_ad.data_prep import pipeline

    unknown = sorted(set(options) - set(PREP_OPTIONS))
    if unknown:
        raise TypeError(f"prep_meshes: unknown option {', '.join(map(repr, unknown))}; known: "
                        f"{', '.join(PREP_OPTIONS)}")
    sampling = SamplingConfig(**{k: v for k, v in options.items() if PREP_OPTIONS[k] is SamplingConfig})
    prep = {k: v for k, v in options.items() if PREP_OPTIONS[k] is PrepConfig}
    if isinstance(prep.get("camera"), dict):
        prep["camera"] = CameraConfig(**prep["camera"])
    if options.get("held_out") is not None:
        prep.setdefault("test_fraction", default_test_fraction(held_out=True))
    return pipeline.prep_meshes(src, out, PrepConfig(sampling, **prep), workers=options.get("workers", 1),
                                progress=options.get("progress", False), shard=options.get("shard"),
                                force=options.get("force", False), held_out=options.get("held_out"))
