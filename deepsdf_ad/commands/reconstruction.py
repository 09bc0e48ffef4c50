"""The file glue of ``deepsdf-ad reconstruct``: read the run and the input (a point cloud with its sidecar, a
depth image, or for a 2D run an image or contour points), call the library (:mod:`deepsdf_ad.reconstruct`, and
:mod:`deepsdf_ad.pose` for a scan in an unknown frame), write the mesh or picture and, after a pose search,
the ``OUT.json`` record. The notes and warnings name the input file; every file goes through
:mod:`deepsdf_ad.data_prep.formats`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from deepsdf_ad.capture import REASONS, Cleaned, clean_capture
from deepsdf_ad.commands.mesh import write_field_picture
from deepsdf_ad.config import Config
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.log import note, warn
from deepsdf_ad.data_prep.meshes import apply_normalization, undo_normalization
from deepsdf_ad.data_prep.params import DepthCamera
from deepsdf_ad.data_prep.scans import load_depth_scan, load_scan
from deepsdf_ad.device import resolve_device
from deepsdf_ad.losses import loss_clamp
from deepsdf_ad.meshing import field_kind, mesh_sdf, model_sdf
from deepsdf_ad.models import SDFModel
from deepsdf_ad.pose import FIT_TOL, POOR_FIT, CaptureFit, fit_capture, no_pose_search
from deepsdf_ad.reconstruct import (
    MAX_OBSERVED_POINTS,
    MISFIT_SHARE,
    Observations,
    check_mode,
    contour_points,
    estimate_normalization,
    fit_observations,
    fit_scan,
    mean_training_code,
    start_candidates,
    thin_points,
)
from deepsdf_ad.runs import Run, load_trained

RECORD_KEY = "deepsdf-ad"
"""The key (value ``reconstruct``) that marks a JSON file as a reconstruction's record: only such a file
beside ``--out`` is replaced."""
INLINE_INDICES = 1000
"""Up to this many dropped indices are listed in the record itself; more go to ``OUT.dropped.npy``."""


def load_for_reconstruct(run_path: str | os.PathLike, device: str = "auto", mode: str | None = None,
                         precision: str | None = None, restarts: int | None = None) -> tuple:
    """(device, run, config, model, mode) of a trained run, with ``precision`` and ``restarts`` (None: the
    run's) set in its reconstruct config and ``mode`` checked (:func:`deepsdf_ad.reconstruct.check_mode`)."""
    dev = resolve_device(device)
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    if precision is not None:
        cfg.reconstruct.precision = precision
    if restarts is not None:
        cfg.reconstruct.restarts = restarts
    return dev, run, cfg, model, check_mode(model, mode, cfg.model.latent.source)


def _load_scan(partial: str | os.PathLike, depth_camera: DepthCamera | None) -> tuple:
    """(cloud, meta) of a point cloud (:func:`deepsdf_ad.data_prep.scans.load_scan`) or, with
    ``depth_camera``, of a depth image (:func:`deepsdf_ad.data_prep.scans.load_depth_scan`)."""
    return load_scan(partial) if depth_camera is None else load_depth_scan(partial, depth_camera)


def thin_file_points(path: str | os.PathLike, points: np.ndarray, normals: np.ndarray | None, seed: int
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`deepsdf_ad.reconstruct.thin_points`, with a note naming ``path`` when points are left out."""
    if len(points) > MAX_OBSERVED_POINTS:
        note(f"{path}: {len(points):,} points; using a random {MAX_OBSERVED_POINTS:,} of them")
    return thin_points(points, normals, seed)


def scan_normalization(partial: str | os.PathLike, norm: str | None, meta: dict, points: np.ndarray
                       ) -> tuple[np.ndarray, float, str]:
    """(offset, scale, where they come from) of a scan: the ``norm`` file, the scan's sidecar, or else
    estimated from its ``points`` (N, 3) (:func:`deepsdf_ad.reconstruct.estimate_normalization`, with a
    note)."""
    if norm is not None:
        offset, scale = formats.load_normalization(norm)
        return offset, scale, f"from {norm}"
    if "normalization" in meta:
        given = meta["normalization"]
        offset, scale = np.asarray(given["offset"], float), float(given["scale"])
        return offset, scale, "from the scan's sidecar"
    offset, scale = estimate_normalization(points)
    note(f"{partial}: no normalisation known; estimated it from the points "
         "(pass --norm NORM.npz for the true one)")
    return offset, scale, "estimated from the observed points"


def complete_scan(loaded: tuple, partial: str | os.PathLike, resolution: int | None = None,
                  iterations: int | None = None, norm: str | None = None, seed: int = 0,
                  method: str = "adaptive", depth_camera: DepthCamera | None = None, progress: bool = False,
                  scan: tuple | None = None) -> tuple[trimesh.Trimesh, dict]:
    """The 3D path of :func:`reconstruct_file` without writing: the completed mesh in the scan's frame and
    what ``reconstruct`` reports of it. ``loaded``: what :func:`load_for_reconstruct` returned."""
    dev, run, cfg, model, mode = loaded
    cloud, meta = scan or _load_scan(partial, depth_camera)
    offset, scale, source = scan_normalization(partial, norm, meta, cloud.points)
    pts, normals = thin_file_points(partial, cloud.points, cloud.normals, seed)
    pts = apply_normalization(pts, offset, scale)
    if not np.isfinite(pts).all() or np.abs(pts).max() > 1e6:
        raise DataError(f"{partial}: the points lie far outside the object's unit sphere after normalisation "
                        f"(offset {np.round(offset, 4).tolist()}, scale {scale:.4g}, {source}); "
                        "wrong --norm file?")
    camera = None if "camera" not in meta else apply_normalization(np.asarray(meta["camera"], float), offset,
                                                                   scale)
    fit = fit_scan(model, cfg, pts, normals, camera, dev, mode, seed, iterations, mean_training_code(run),
                   start_candidates(run, cfg.reconstruct), progress)
    if fit.clamped_share > MISFIT_SHARE:
        warn(f"{partial}: after the optimisation {fit.clamped_share:.0%} of the observed points are still "
             f"predicted at the clamp (|sdf| >= {loss_clamp(cfg):g}), so the shape found does not explain "
             "the scan (another kind of object than the run learned, or a wrong normalisation: --norm?)")
    mesh = mesh_sdf(fit.sdf, resolution or cfg.mesh.resolution, method=method, progress=progress)
    mesh = trimesh.Trimesh(undo_normalization(mesh.vertices, offset, scale), mesh.faces, process=False)
    return mesh, {"points": int(len(cloud.points)), "observations": int(fit.observations), "mode": mode,
                  "final_loss": fit.losses[-1] if fit.losses else None, "normalization": source,
                  "vertices": int(len(mesh.vertices)), "clamped_share": fit.clamped_share}


def reconstruct_file(run_path: str | os.PathLike, partial: str | os.PathLike, out: str | os.PathLike,
                     resolution: int | None = None, iterations: int | None = None, device: str = "auto",
                     norm: str | None = None, seed: int = 0, mode: str | None = None,
                     method: str = "adaptive", precision: str | None = None, restarts: int | None = None,
                     depth_camera: DepthCamera | None = None, progress: bool = False,
                     loaded: tuple | None = None, scan: tuple | None = None) -> dict:
    """``deepsdf-ad reconstruct``: partial scan (mesh frame) -> completed mesh (same frame) at ``out``.

    ``partial``: a point cloud (see :func:`deepsdf_ad.data_prep.formats.load_points`; its camera from a
    sidecar or the PLY header, see :func:`deepsdf_ad.data_prep.scans.load_scan`) or, with ``depth_camera``, a
    16-bit depth PNG taken by that camera (:func:`deepsdf_ad.data_prep.scans.load_depth_scan`: the points and
    the mesh are then in the camera's frame). ``progress``: progress bars of the optimisation and the meshing
    on stderr.

    The scan goes into the normalised frame by ``norm``, or the scan's sidecar, or else by its bounding box in
    its own orientation (:func:`deepsdf_ad.reconstruct.estimate_normalization`; :func:`reconstruct_scan`
    searches the pose instead). ``loaded``: what :func:`load_for_reconstruct` returned, when the caller has it
    already; ``scan``: the (cloud, meta) of :func:`deepsdf_ad.data_prep.scans.load_scan`, likewise.

    ``method``: meshing by 'adaptive' (coarse-to-fine) or 'dense' evaluation; ``precision``: fp32, bf16 or
    fp16 autocast for the code optimisation and the meshing queries (None: the run's
    ``reconstruct.precision``); ``restarts``: starts per shape (None: the run's ``reconstruct.restarts``).

    ``mode``: 'optimise', 'encode' or 'encode+refine' (default: optimise for an autodecoder run, encode for
    an autoencoder run); see :func:`deepsdf_ad.reconstruct.find_codes`.

    For a 2D run ``partial`` is a PNG of a partly masked digit or a 2D point file (see
    :func:`observations_2d`) and ``out`` a PNG.
    """
    loaded = loaded or load_for_reconstruct(run_path, device, mode, precision, restarts)
    dev, run, cfg, model, mode = loaded
    if cfg.dim == 2:
        if depth_camera is not None:
            raise DataError(f"{partial}: a depth image needs a 3D run; this run is 2D")
        return reconstruct_2d(run, cfg, model, partial, out, resolution, iterations, dev, seed, mode,
                              progress)
    mesh, info = complete_scan(loaded, partial, resolution, iterations, norm, seed, method, depth_camera,
                               progress, scan)
    formats.save_mesh(out, mesh)
    return {"out": str(Path(out)), **info}


def observations_2d(partial: str | os.PathLike, kind: str) -> Observations:
    """Observations of a 2D field in the image frame [-1, 1]^2 (x right, y up).

    - ``.png``: a digit image (white ink on black, any size, covering the frame), pixels with alpha 0 unknown.
      Known pixels give the intensity (heightfield runs) or the side of the contour and bounds on the
      distance to it (sdf runs; see :func:`deepsdf_ad.data_prep.digits.image_observations`).
    - ``.npy`` / ``.txt`` / ``.ply``: (N, 2) points on the contour (sdf = 0), already in the frame.
    """
    from deepsdf_ad.data_prep.digits import image_observations

    path = Path(partial)
    if path.suffix.lower() == ".png":
        gray, known = formats.load_png(path)
        try:
            pts, lo, hi = image_observations(gray, known, kind)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        return Observations(pts, lo, hi)
    if kind == "height":
        raise DataError(f"{path}: a heightfield run needs an image (.png) of the digit, not contour points")
    pts, _ = thin_file_points(path, formats.load_points_2d(path), None, 0)
    return Observations(pts, np.zeros(len(pts)), np.zeros(len(pts)))


def reconstruct_2d(run: Run, cfg: Config, model: SDFModel, partial: str | os.PathLike, out: str | os.PathLike,
                   resolution: int | None, iterations: int | None, device, seed: int,
                   mode: str = "optimise", progress: bool = False) -> dict:
    """The 2D path of :func:`reconstruct_file`: observations from an image or points, code, PNG."""
    kind = field_kind(cfg)
    obs = observations_2d(partial, kind)
    points = None
    if mode.startswith("encode"):
        points = contour_points(obs)
        if len(points) == 0:
            raise DataError(f"{partial}: no contour point is observed; the encoder needs points on the "
                            "contour")
    code, losses = fit_observations(model, cfg, obs, points, device, mode, seed, iterations,
                                    mean_training_code(run), start_candidates(run, cfg.reconstruct), progress)
    info = write_field_picture(model_sdf(model, code, device, cfg.mesh.batch_points), kind,
                               resolution or cfg.mesh.resolution, out)
    return {**info, "points": int(len(obs)), "observations": int(len(obs)), "mode": mode,
            "final_loss": losses[-1] if losses else None, "normalization": "the image frame [-1, 1]^2"}


# ---- scans in an unknown frame: the pose search -----------------------------------------------------------
def _check_record_free(record: Path, dropped: Path) -> None:
    """Refuse to replace ``record`` or ``dropped`` unless they are absent or an earlier reconstruction's."""
    ours = False
    if record.exists():
        try:
            ours = formats.read_json(record).get(RECORD_KEY) == "reconstruct"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise DataError(f"{record}: exists and is not a reconstruction record (reconstruct writes one "
                            "beside --out); move it or choose another --out")
    if dropped.exists() and not ours:
        raise DataError(f"{dropped}: exists and no reconstruction record names it; move it or choose another "
                        "--out")


def dropped_indices(cleaned: Cleaned) -> object:
    """The record's ``dropped_indices`` of ``cleaned``: inline per reason, or (more than
    :data:`INLINE_INDICES`) an array of (K, 2) rows of index and reason number in
    :data:`deepsdf_ad.capture.REASONS`."""
    rows = [(int(i), k) for k, r in enumerate(REASONS) for i in cleaned.dropped.get(r, ())]
    if len(rows) > INLINE_INDICES:
        return np.asarray(rows, np.int64).reshape(-1, 2)
    return {r: cleaned.dropped.get(r, np.zeros(0, int)).astype(int).tolist() for r in REASONS}


def _write_dropped(cleaned: Cleaned, dropped_path: Path) -> object:
    """:func:`dropped_indices` as the record holds them: inline, or the name of ``dropped_path``, where the
    array is written."""
    indices = dropped_indices(cleaned)
    if isinstance(indices, np.ndarray):
        formats.save_npy(dropped_path, indices)
        return dropped_path.name
    dropped_path.unlink(missing_ok=True)  # an earlier reconstruction's (checked before): it no longer applies
    return indices


def _pose_record(partial, out: Path, cfg: Config, posed: CaptureFit, cleaned: Cleaned, read: int, used: int,
                 indices: object, keep_floor: bool) -> dict:
    """The ``OUT.json`` record of a reconstruction with a pose search."""
    fit, err, floor = posed.fit, posed.err, cleaned.plane
    return {
        RECORD_KEY: "reconstruct", "input": str(partial), "mesh": out.name,
        "frame": "normalised = matrix @ [input, 1]; the mesh is in the input's frame",
        "transform": {"matrix": fit.matrix.tolist(), "scale": fit.scale, "yaw_degrees": fit.yaw,
                      "up": fit.frame.label, "up_vector": fit.frame.vector.tolist(),
                      "frame_up": cfg.reconstruct.frame_up},
        "fit": {"median_abs_sdf": posed.residual,
                "abs_sdf_quantiles": {str(q): float(np.quantile(err, q / 100)) for q in (25, 75, 90)},
                "share_within_tolerance": posed.within, "tolerance": FIT_TOL, "poor_fit_threshold": POOR_FIT,
                "poor": posed.poor, "final_loss": fit.losses[-1] if fit.losses else None},
        "points": {"read": read, "used": used, "kept": int(len(cleaned.points)), "dropped": cleaned.counts(),
                   "reasons": list(REASONS), "dropped_indices": indices,
                   "indices_into": "the points as read (NaN rows already dropped), after thinning when "
                                   "'used' < 'read'"},
        "floor": None if floor is None else {"normal": floor.normal.tolist(), "offset": floor.offset,
                                             "points": floor.inliers, "removed": not keep_floor},
    }


@dataclass
class PosedCapture:
    """A capture in an unknown frame, completed: the ``mesh`` in the input's frame, the pose and shape found
    (``posed``), the ``cleaned`` capture, and how many points were ``read`` and ``used`` (after thinning)."""

    mesh: trimesh.Trimesh
    posed: CaptureFit
    cleaned: Cleaned
    read: int
    used: int


def complete_capture(run: Run, cfg: Config, model: SDFModel, partial: str | os.PathLike, cloud, meta: dict,
                     resolution: int | None, iterations: int | None, device, seed: int, method: str,
                     up: str | None = None, keep_floor: bool = False, crop: float | None = None,
                     progress: bool = False) -> PosedCapture:
    """The unknown-frame path without writing: clean the capture, find its pose with the code
    (:func:`deepsdf_ad.pose.fit_capture`) and mesh it in the input's frame. A poor fit
    (:data:`deepsdf_ad.pose.POOR_FIT`) gives one warning; a capture without a camera, a note."""
    pts, normals = thin_file_points(partial, cloud.points, cloud.normals, seed)
    try:
        cleaned = clean_capture(pts, keep_floor=keep_floor, crop=crop, rng=np.random.default_rng(seed))
    except DataError as e:
        raise DataError(f"{partial}: {e}") from None
    camera = np.asarray(meta["camera"], float) if "camera" in meta else None
    if camera is None:
        note(f"{partial}: no camera position known; the scale of a partial view is found less reliably "
             "without the free space along its rays (give it as PARTIAL.json {\"camera\": [x, y, z]})")
    posed = fit_capture(model, cfg, cleaned, normals, camera, device, start_candidates(run), up=up, seed=seed,
                        iterations=iterations)
    fit = posed.fit
    if posed.poor:
        warn(f"{partial}: poor fit: median |sdf| {posed.residual:.3g} at the kept points "
             f"(above {POOR_FIT:g}), {posed.within:.0%} within {FIT_TOL:g}, pose from up axis "
             f"{fit.frame.label}; try --up AXIS, --keep-floor, --crop R, or --norm NORM.npz when the "
             "object's normalisation is known")
    mesh = mesh_sdf(posed.sdf, resolution or cfg.mesh.resolution, method=method, progress=progress)
    mesh = trimesh.Trimesh(fit.to_input(mesh.vertices), mesh.faces, process=False)
    return PosedCapture(mesh, posed, cleaned, int(len(cloud.points)), int(len(pts)))


def posed_report(partial, out: Path, cfg: Config, pc: PosedCapture, indices: object, keep_floor: bool
                 ) -> tuple[dict, dict]:
    """(the ``OUT.json`` record, what ``reconstruct`` reports) of ``pc`` written at ``out``; ``indices``: the
    record's ``dropped_indices``."""
    fit, record = pc.posed.fit, out.with_suffix(".json")
    info = {"out": str(out), "points": pc.read, "observations": int(len(pc.cleaned.points)),
            "mode": "optimise", "final_loss": fit.losses[-1] if fit.losses else None,
            "normalization": f"searched (up {fit.frame.label}, yaw {fit.yaw:.1f} deg, scale {fit.scale:.4g}; "
                             f"record {record.name})",
            "vertices": int(len(pc.mesh.vertices)), "residual": pc.posed.residual, "poor_fit": pc.posed.poor,
            "record": str(record), "dropped": pc.cleaned.counts()}
    return _pose_record(partial, out, cfg, pc.posed, pc.cleaned, pc.read, pc.used, indices, keep_floor), info


def reconstruct_posed(run: Run, cfg: Config, model: SDFModel, partial: str | os.PathLike, cloud, meta: dict,
                      out: str | os.PathLike, resolution: int | None, iterations: int | None,
                      device, seed: int, method: str, up: str | None = None,
                      keep_floor: bool = False, crop: float | None = None, progress: bool = False) -> dict:
    """The unknown-frame path of :func:`reconstruct_scan`: :func:`complete_capture`, the mesh written at
    ``out``, and at ``out`` with suffix .json (:data:`RECORD_KEY`) the record: the transform (4 x 4 input ->
    normalised frame, scale, yaw, up axis), the fit's residual at the kept points and the points dropped
    (counts by reason; indices inline, or in ``OUT.dropped.npy`` as (K, 2) rows of index and reason number in
    the record's ``reasons``)."""
    out = Path(out)
    record, dropped_path = out.with_suffix(".json"), out.with_suffix(".dropped.npy")
    _check_record_free(record, dropped_path)
    pc = complete_capture(run, cfg, model, partial, cloud, meta, resolution, iterations, device, seed, method,
                          up=up, keep_floor=keep_floor, crop=crop, progress=progress)
    formats.save_mesh(out, pc.mesh)
    rec, info = posed_report(partial, out, cfg, pc, _write_dropped(pc.cleaned, dropped_path), keep_floor)
    formats.write_json(record, rec)
    return info


def reconstruct_scan(run_path: str | os.PathLike, partial: str | os.PathLike, out: str | os.PathLike,
                     resolution: int | None = None, iterations: int | None = None, device: str = "auto",
                     norm: str | None = None, seed: int = 0, mode: str | None = None,
                     method: str = "adaptive", precision: str | None = None, restarts: int | None = None,
                     up: str | None = None, keep_floor: bool = False, crop: float | None = None,
                     pose_search: bool = True,
                     depth_camera: DepthCamera | None = None, progress: bool = False) -> dict:
    """``deepsdf-ad reconstruct``: :func:`reconstruct_file` (same arguments), except that a 3D scan in an
    unknown frame (no ``norm``, no normalisation in its sidecar) is cleaned
    (:func:`~deepsdf_ad.capture.clean_capture`: the floor unless ``keep_floor``, stray points, beyond
    ``crop``) and its pose searched with the code (:func:`deepsdf_ad.pose.fit_pose`; ``up``: the input's up
    axis when known), see :func:`reconstruct_posed`. ``depth_camera``: ``partial`` is a depth image taken by
    it; ``progress``: progress bars on stderr. Without ``pose_search``, or for a run the search does not fit
    (:func:`deepsdf_ad.pose.no_pose_search`), such a scan is normalised by its bounding box as before."""
    loaded = load_for_reconstruct(run_path, device, mode, precision, restarts)
    dev, run, cfg, model, mode = loaded
    scan = None
    if cfg.dim == 3 and norm is None and pose_search:
        scan = _load_scan(partial, depth_camera)
        if "normalization" not in scan[1]:
            why = no_pose_search(model, mode)
            if why is None:
                return reconstruct_posed(run, cfg, model, partial, *scan, out, resolution, iterations, dev,
                                         seed, method, up=up, keep_floor=keep_floor, crop=crop,
                                         progress=progress)
            note(f"{partial}: no pose search ({why}); normalising by the points' bounding box in their own "
                 "orientation")
    return reconstruct_file(run_path, partial, out, resolution=resolution, iterations=iterations, norm=norm,
                            seed=seed, method=method, loaded=loaded, scan=scan, depth_camera=depth_camera,
                            progress=progress)
