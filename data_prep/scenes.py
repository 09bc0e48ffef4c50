"""``deepsdf-ad prep scenes``: several objects placed on one floor -> a data root of scenes.

The scene frame (the normalised frame of every scene, ``[-1, 1]^3``):

* **+z is up** (ModelNet's meshes are stored +z up: a table's top is its highest part, chairs are tallest in
  z; the procedural shapes of :mod:`deepsdf_ad.data_prep.shapes` too). Objects are rotated only about z.
* The **floor** is the plane ``z = FLOOR_Z`` (-0.5); every object's lowest point rests on it. The floor itself
  is not part of the scene mesh (a slab would take most of the surface samples and dominate every metric).
* The **room** is the square ``[-ROOM_HALF, ROOM_HALF]^2`` (0.9) of the floor; ``room_size`` metres map onto
  its side of 1.8 units, so one unit is ``room_size / 1.8`` metres. Objects may reach up to ``CEILING_Z``
  (0.9).
* The scene mesh is written in this frame, so its normalisation is the identity (offset 0, scale 1).

Each object: its mesh is normalised (DeepSDF's convention, :func:`deepsdf_ad.data_prep.meshes.normalization`),
scaled so the longest horizontal side of its bounding box has a plausible size in metres (``CATEGORY_SIZES``,
drawn uniformly from the category's range), turned by a uniform random angle about z and put on the floor. Its
footprint is the rotated rectangle of its bounding box; two footprints must be at least ``gap`` metres apart
(separating-axis test), and each must lie inside the room. Placement is rejection sampling, largest footprint
first; when the objects cannot be placed, the scene is drawn again, and after ``restarts`` failures it is an
error.

Held-out scenes hold held-out objects: the source meshes are split first (per category, as ``prep meshes``
splits), then train scenes are composed only of train meshes and test scenes only of test meshes.

Signs and samples come from the same machinery as single meshes (:mod:`deepsdf_ad.data_prep.meshes`):
DeepSDF's sample distribution on the whole scene, exact distances, winding-number signs on the repaired scene
mesh. Each source mesh is screened first (its winding numbers on a few near-surface samples), and a mesh with
unreliable signs is left out of every scene.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import trimesh

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.folders import writes_data_root
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.jobs import failures_recorded, make_splits, shape_rng
from deepsdf_ad.data_prep.meshes import (
    AMBIGUOUS_BAND,
    MeshEntry,
    SamplingConfig,
    SignedDistance,
    check_sampling,
    duplicate_reason,
    keyed_meshes,
    load_mesh,
    near_surface_count,
    normalized_mesh,
    sample_query_points,
    sample_surface,
    sign_quality,
    split_pos_neg,
)
from deepsdf_ad.data_prep.params import SceneConfig  # noqa: F401 (re-exported)
from deepsdf_ad.data_prep.runner import TOOL_VERSION, Item, JobKind, Outcome, run_jobs, run_prep
from deepsdf_ad.data_prep.scans import check_camera, scan_params, scan_paths, write_scans

UP_AXIS = 2
"""+z is up in the scene frame and in the source meshes."""
FLOOR_Z = -0.5
"""Height of the floor in the scene frame; every object's lowest point lies on it."""
ROOM_HALF = 0.9
"""The room's floor is the square [-ROOM_HALF, ROOM_HALF]^2 of the scene frame."""
CEILING_Z = 0.9
"""No object reaches above this height; a taller one is scaled down until it fits."""

CATEGORY_SIZES: dict[str, tuple[float, float]] = {
    "chair": (0.45, 0.65),
    "sofa": (1.5, 2.1),
    "table": (0.8, 1.4),
    "desk": (1.0, 1.6),
    "bed": (1.9, 2.2),
    "night_stand": (0.4, 0.6),
    "dresser": (0.8, 1.4),
    "bookshelf": (0.6, 1.2),
    "bench": (1.0, 1.6),
    "stool": (0.3, 0.45),
    "monitor": (0.4, 0.7),
    "lamp": (0.3, 0.5),
    "toilet": (0.5, 0.75),
    "bathtub": (1.5, 1.8),
    "bottle": (0.2, 0.35),
}
"""Longest horizontal side of an object's bounding box, in metres, per category (ModelNet10/40 names)."""
DEFAULT_SIZE = (0.5, 1.0)
"""Size range (metres) of a category not in :data:`CATEGORY_SIZES`."""


def size_range(category: str) -> tuple[float, float]:
    """Plausible size (metres, longest horizontal side) of an object of ``category``."""
    return CATEGORY_SIZES.get(category, DEFAULT_SIZE)


def units_per_metre(room_size: float) -> float:
    return 2.0 * ROOM_HALF / room_size


def check_scene_config(cfg: SceneConfig) -> None:
    """Raise :class:`DataError` for settings that cannot work (the message names the flag)."""
    lo, hi = cfg.objects
    if not 1 <= lo <= hi:
        raise DataError(f"--objects: need 1 <= MIN <= MAX, got {lo}-{hi}")
    if cfg.scenes < 1:
        raise DataError(f"--scenes: need at least 1 scene, got {cfg.scenes}")
    if not (np.isfinite(cfg.room_size) and cfg.room_size > 0):
        raise DataError(f"--room-size: must be a positive number of metres, got {cfg.room_size}")
    if not (np.isfinite(cfg.gap) and 0 <= cfg.gap < cfg.room_size):
        raise DataError(f"--gap: must be at least 0 and less than the room size, got {cfg.gap}")
    if not 0.0 <= cfg.test_fraction < 1.0:
        raise DataError(f"--test-fraction: must be in [0, 1), got {cfg.test_fraction}")
    try:
        check_sampling(cfg.sampling)
    except ValueError as e:
        raise DataError(f"--samples: {e}") from None
    check_camera(cfg.camera)


# ---- footprints and placement ----------------------------------------------------------------
@dataclass
class Source:
    """A source mesh as composition needs it: its normalisation and the extent of its normalised bounding
    box."""

    file: str
    category: str
    id: str
    sha256: str
    offset: tuple[float, float, float]
    scale: float
    extent: tuple[float, float, float]
    """Bounding-box side lengths of the normalised mesh (it is centred on the origin)."""


def footprint(center: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    """Corners (4, 2) of the rectangle with half sides ``half`` (2,) turned by ``yaw`` about z, at
    ``center``."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s], [s, c]])
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * half
    return corners @ rot.T + center


def footprints_clear(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    """True when convex polygons ``a`` and ``b`` (corners in order, (K, 2)) are at least ``gap`` apart along
    one of their edge normals (separating-axis test). Separation along an axis is a lower bound of the
    distance, so a True answer is never wrong; for rectangles a False answer means they are closer than about
    ``gap``."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        pa, pb = a @ normals.T, b @ normals.T
        if np.any((pa.min(axis=0) - pb.max(axis=0) >= gap) | (pb.min(axis=0) - pa.max(axis=0) >= gap)):
            return True
    return False


@dataclass
class Placement:
    """One object of a scene: ``scene point = transform @ [original point, 1]``."""

    source: Source
    size_m: float
    """Longest horizontal side of its bounding box, in metres."""
    factor: float
    """Scale from the normalised mesh to the scene frame."""
    yaw: float
    """Rotation about +z, radians."""
    center: tuple[float, float]
    """Centre of its footprint on the floor (scene frame)."""

    @property
    def half(self) -> np.ndarray:
        """Half sides (3,) of its bounding box in the scene frame (before the turn)."""
        return 0.5 * self.factor * np.asarray(self.source.extent, float)

    def footprint(self) -> np.ndarray:
        return footprint(np.asarray(self.center), self.half[:2], self.yaw)

    def transform(self) -> np.ndarray:
        """4x4 matrix from the source file's frame to the scene frame."""
        s = self.source
        c, sn = np.cos(self.yaw), np.sin(self.yaw)
        m = np.eye(4)
        m[:3, :3] = np.array([[c, -sn, 0.0], [sn, c, 0.0], [0.0, 0.0, 1.0]]) * (self.factor * s.scale)
        # the normalised mesh's bounding box is centred on the origin, so its bottom lies at -half_z
        t = np.array([self.center[0], self.center[1], FLOOR_Z + self.half[2]])
        m[:3, 3] = m[:3, :3] @ np.asarray(s.offset, float) + t
        return m

    def record(self) -> dict:
        """The instance information written to the manifest and the scene's JSON sidecar."""
        s = self.source
        return {
            "file": s.file, "category": s.category, "id": s.id, "sha256": s.sha256,
            "transform": np.round(self.transform(), 10).tolist(),
            "size_m": round(self.size_m, 6), "yaw_deg": round(float(np.degrees(self.yaw)), 6),
            "obb": {"center": [round(float(self.center[0]), 10), round(float(self.center[1]), 10),
                               round(FLOOR_Z + float(self.half[2]), 10)],
                    "half_extents": np.round(self.half, 10).tolist(),
                    "yaw_deg": round(float(np.degrees(self.yaw)), 6)},
        }


def _scale_for(src: Source, cfg: SceneConfig, rng: np.random.Generator) -> tuple[float, float]:
    lo, hi = size_range(src.category)
    size_m = float(rng.uniform(lo, hi))
    horizontal = max(src.extent[0], src.extent[1], 1e-9)
    factor = size_m * units_per_metre(cfg.room_size) / horizontal
    top = FLOOR_Z + factor * src.extent[2]
    if top > CEILING_Z:  # too tall for the room: shrink until it fits
        factor *= (CEILING_Z - FLOOR_Z) / (factor * src.extent[2])
        size_m = factor * horizontal / units_per_metre(cfg.room_size)
    return size_m, factor


def choose_objects(pool: list[Source], n: int, rng: np.random.Generator) -> list[Source]:
    """``n`` different meshes of ``pool``: a category uniformly among those with meshes left, then a mesh of
    it."""
    by_cat: dict[str, list[Source]] = {}
    for s in pool:
        by_cat.setdefault(s.category, []).append(s)
    chosen = []
    for _ in range(n):
        cats = sorted(c for c, v in by_cat.items() if v)
        cat = cats[int(rng.integers(len(cats)))]
        chosen.append(by_cat[cat].pop(int(rng.integers(len(by_cat[cat])))))
    return chosen


def compose_scene(pool: list[Source], cfg: SceneConfig, rng: np.random.Generator,
                  name: str = "scene") -> list[Placement]:
    """Draw and place the objects of one scene (no mesh is loaded: the sources carry their bounding boxes).

    Args:
        pool: meshes this scene may use (each at most once); at least ``cfg.objects[1]`` of them.
        rng: the scene's generator (everything random about the scene comes from it).
    Returns:
        the placements, largest footprint first; footprints inside the room and ``cfg.gap`` metres apart.
    Raises:
        DataError: the objects cannot be placed after ``cfg.restarts`` attempts.
    """
    lo, hi = cfg.objects
    if len(pool) < hi:
        raise DataError(f"{name}: only {len(pool)} meshes to compose from, fewer than --objects maximum {hi}")
    n = int(rng.integers(lo, hi + 1))
    objects = choose_objects(pool, n, rng)
    scales = [_scale_for(s, cfg, rng) for s in objects]
    order = sorted(range(n), key=lambda i: -scales[i][1] ** 2 * objects[i].extent[0] * objects[i].extent[1])
    gap = cfg.gap * units_per_metre(cfg.room_size)
    for _ in range(cfg.restarts):
        placed: list[Placement] = []
        for i in order:
            src, (size_m, factor) = objects[i], scales[i]
            half = 0.5 * factor * np.asarray(src.extent[:2], float)
            for _ in range(cfg.tries):
                yaw = float(rng.uniform(0.0, 2.0 * np.pi))
                c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
                # the half sides of its axis-aligned bounding box
                reach = np.array([c * half[0] + s * half[1], s * half[0] + c * half[1]])
                room = ROOM_HALF - reach
                if (room < 0).any():
                    continue  # this turn does not fit in the room; another may
                center = rng.uniform(-room, room)
                cand = Placement(src, size_m, factor, yaw, (float(center[0]), float(center[1])))
                fp = cand.footprint()
                if all(footprints_clear(fp, p.footprint(), gap) for p in placed):
                    placed.append(cand)
                    break
            else:
                break
        if len(placed) == n:
            return placed
    cats = ", ".join(f"{s.category} {size_m:.2f} m" for s, (size_m, _) in zip(objects, scales, strict=True))
    raise DataError(f"{name}: cannot place {n} objects ({cats}) {cfg.gap} m apart in a room of "
                    f"{cfg.room_size} m x {cfg.room_size} m after {cfg.restarts} attempts; use fewer "
                    f"--objects, a larger --room-size or a smaller --gap")


def build_scene(objects: list[dict]) -> trimesh.Trimesh:
    """Load each object's source mesh, move it into the scene frame and join them into one mesh.

    Args:
        objects: instance records (:meth:`Placement.record`): ``file`` and ``transform`` (file -> scene
        frame).
            Each gets ``bbox``: the axis-aligned bounds [[min], [max]] of its placed mesh, scene frame.
    """
    parts = []
    for obj in objects:
        m = load_mesh(obj["file"])
        m.apply_transform(np.asarray(obj["transform"], float))
        v = np.asarray(m.vertices)[np.unique(np.asarray(m.faces))]
        obj["bbox"] = [np.round(v.min(axis=0), 8).tolist(), np.round(v.max(axis=0), 8).tolist()]
        parts.append(m)
    return trimesh.util.concatenate(parts)


# ---- one source mesh, one scene ------------------------------------------------------------------
def screen_one(path: str, category: str, sid: str, cfg: SceneConfig) -> dict:
    """Load and check one source mesh: its normalisation, bounding box and how far its signs can be
    trusted."""
    rec: dict = {"file": str(path), "category": category, "id": sid}
    with failures_recorded(rec, str(path)):
        rec["sha256"] = formats.file_sha256(path)
        mesh = load_mesh(path)
        nmesh, offset, scale = normalized_mesh(mesh)
        used = np.asarray(nmesh.vertices)[np.unique(np.asarray(nmesh.faces))]
        rec.update(offset=np.asarray(offset, float).tolist(), scale=float(scale),
                   extent=np.ptp(used, axis=0).tolist(), faces=int(len(mesh.faces)))
        try:
            sd = SignedDistance(nmesh)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        screen = SamplingConfig(samples=cfg.screen_samples, uniform_fraction=0.0,
                                variances=cfg.sampling.variances)
        w = sd.winding(sample_query_points(nmesh, screen, shape_rng(cfg.seed, f"{category}/{sid}", 7)))
        ambiguous = float(np.mean(np.abs(w - 0.5) < AMBIGUOUS_BAND))
        rec["ambiguous"] = round(ambiguous, 5)
        if ambiguous > cfg.max_ambiguous:
            raise DataError(f"{path}: signs unreliable: {ambiguous:.1%} of near-surface samples have a "
                            f"winding number near 1/2 (limit {cfg.max_ambiguous:.1%}); left out of the "
                            "scenes")
        rec["status"] = "ok"
    return rec


def source_of(rec: dict) -> Source:
    return Source(rec["file"], rec["category"], rec["id"], rec["sha256"], tuple(rec["offset"]), rec["scale"],
                  tuple(rec["extent"]))


def scene_paths(out: Path, sid: str) -> dict[str, Path]:
    cat = formats.SCENE_CATEGORY
    return {"mesh": out / formats.SCENE_MESHES_DIR / f"{sid}.ply",
            "info": out / formats.SCENE_MESHES_DIR / f"{sid}.json",
            "sdf": out / formats.SDF_DIR / cat / f"{sid}.npz",
            "norm": out / formats.NORM_DIR / cat / f"{sid}.npz",
            "surface": out / formats.SURFACE_DIR / cat / f"{sid}.ply"}


def frame_info(cfg: SceneConfig) -> dict:
    """The scene frame, as written into every scene's sidecar."""
    return {"up": "+z", "floor_z": FLOOR_Z, "room": [[-ROOM_HALF, -ROOM_HALF], [ROOM_HALF, ROOM_HALF]],
            "ceiling_z": CEILING_Z, "room_size_m": cfg.room_size,
            "metres_per_unit": cfg.room_size / (2.0 * ROOM_HALF)}


def prep_scene(sid: str, split: str, objects: list[dict], out: str, cfg: SceneConfig) -> dict:
    """Build one scene from its placed objects and write its mesh, samples, surface points and scans.

    Args:
        objects: the placements' records (:meth:`Placement.record`), with ``transform`` from file to scene
        frame.
    Returns:
        its manifest record (status ok or failed, with the reason).
    """
    out = Path(out)
    paths = scene_paths(out, sid)
    key = f"{formats.SCENE_CATEGORY}/{sid}"
    rec: dict = {"file": str(paths["mesh"]), "category": formats.SCENE_CATEGORY, "id": sid, "split": split,
                 "objects": objects}
    with failures_recorded(rec, key, "scene"):
        mesh = build_scene(objects)
        rng = shape_rng(cfg.seed, key)
        queries = sample_query_points(mesh, cfg.sampling, rng)
        sd = SignedDistance(mesh)
        sdf, winding = sd.signed(queries)
        near = np.arange(len(queries)) < near_surface_count(cfg.sampling)
        quality = sign_quality(sd, queries, winding, near, shape_rng(cfg.seed, key, 1))
        rec.update(faces=int(len(mesh.faces)), sign_quality=quality)
        if quality["ambiguous"] > cfg.max_ambiguous:
            raise DataError(f"{key}: signs unreliable: {quality['ambiguous']:.1%} of near-surface samples "
                            f"have a winding number near 1/2 (limit {cfg.max_ambiguous:.1%})")
        pos, neg = split_pos_neg(queries, sdf)
        surf, normals = sample_surface(mesh, cfg.sampling.surface_points, rng)
        formats.save_mesh(paths["mesh"], mesh)
        formats.save_scene_info(paths["info"], {"id": sid, "split": split, "frame": frame_info(cfg),
                                                "objects": objects})
        formats.save_sdf_samples(paths["sdf"], pos, neg)
        formats.save_normalization(paths["norm"], np.zeros(3), 1.0)
        formats.save_points_ply(paths["surface"], surf, normals)
        rec.update(status="ok", pos=int(len(pos)), neg=int(len(neg)),
                   sdf_sha256=formats.file_sha256(paths["sdf"]))
        if split == "test" and cfg.scans > 0:  # scene frame; the identity normalisation in the sidecars
            rec["scans"] = write_scans(mesh, out, formats.SCENE_CATEGORY, sid, cfg.scans, cfg.camera,
                                       cfg.seed, (np.zeros(3), 1.0))
            rec["scan_params"] = scan_params(cfg.scans, cfg.camera)
    return rec


# ---- the whole run -----------------------------------------------------------------------------
def scene_ids(cfg: SceneConfig) -> list[tuple[str, str]]:
    """``(id, split)`` of every scene: ``train_0000``, ... and ``test_0000``, ...; there are
    ``round(scenes * test_fraction)`` test scenes, at least one when the fraction is positive and there are
    two or more scenes."""
    n_test = int(round(cfg.scenes * cfg.test_fraction))
    if cfg.test_fraction > 0 and cfg.scenes >= 2:
        n_test = min(max(n_test, 1), cfg.scenes - 1)
    return ([(f"train_{i:04d}", "train") for i in range(cfg.scenes - n_test)]
            + [(f"test_{i:04d}", "test") for i in range(n_test)])


def scene_params(cfg: SceneConfig) -> tuple[dict, dict]:
    """The run's parameters as the manifest stores them, and the subset the screening depends on (a re-run
    with another room, gap or scene count reuses the screening)."""
    params = {"sampling": asdict(cfg.sampling), "seed": cfg.seed, "test_fraction": cfg.test_fraction,
              "max_ambiguous": cfg.max_ambiguous, "screen_samples": cfg.screen_samples,
              "objects": cfg.objects,
              "room_size": cfg.room_size, "gap": cfg.gap, "tries": cfg.tries, "restarts": cfg.restarts,
              "layout": {"floor_z": FLOOR_Z, "room_half": ROOM_HALF, "ceiling_z": CEILING_Z,
                         "sizes": CATEGORY_SIZES, "default_size": DEFAULT_SIZE}}
    params = json.loads(json.dumps(params))  # as the manifest stores it (tuples become lists)
    screen_params = {k: params[k] for k in ("seed", "max_ambiguous", "screen_samples")}
    screen_params["variances"] = params["sampling"]["variances"]
    return params, screen_params


def screen_sources(entries: list[MeshEntry], cfg: SceneConfig, old: dict[str, dict], workers: int,
                   progress: bool) -> dict[str, dict]:
    """Screen every source mesh (:func:`screen_one`); a record in ``old`` (file -> record of an earlier
    screening with the same settings) is kept while the file's checksum is unchanged. Returns file ->
    record."""
    sources, jobs = {}, []
    for (category, sid), f, first in entries:
        if first is not None:
            sources[str(f)] = {"file": str(f), "category": category, "id": sid, "status": "failed",
                               "reason": duplicate_reason(f, (category, sid), first)}
            continue
        prev = old.get(str(f))
        if prev and prev.get("status") in ("ok", "failed") and prev.get("sha256") == formats.file_sha256(f):
            sources[str(f)] = prev
        else:
            jobs.append((str(f), category, sid, cfg))

    def failed(i: int, why: str) -> dict:
        f, category, sid, _ = jobs[i]
        return {"file": f, "category": category, "id": sid, "status": "failed", "reason": f"{f}: {why}"}

    def done(i: int, rec: dict) -> None:
        sources[rec["file"]] = rec

    run_jobs(screen_one, jobs, workers, failed, done, "screen meshes", "mesh", progress)
    return sources


Layout = tuple[str, str, list[dict]]
"""A composed scene: its id, its split and its objects' records (:meth:`Placement.record`)."""


def compose_layouts(src: Path, ok: list[dict], cfg: SceneConfig) -> tuple[dict, dict, list[Layout]]:
    """Split the usable meshes per category, then compose every scene from its split's meshes (cheap, before
    any heavy work, so an impossible placement fails fast). Returns the train and test meshes and every
    scene's ``(id, split, object records)``."""
    train_ids, test_ids = make_splits([(r["category"], r["id"]) for r in ok], cfg.test_fraction, cfg.seed)
    by_key = {(r["category"], r["id"]): source_of(r) for r in ok}
    pools = {"train": [by_key[(c, i)] for c, ids in train_ids.items() for i in ids],
             "test": [by_key[(c, i)] for c, ids in test_ids.items() for i in ids]}
    layouts = []
    for sid, split in scene_ids(cfg):
        pool = pools[split]
        if len(pool) < cfg.objects[1]:
            raise DataError(f"{src}: only {len(pool)} usable {split} meshes after the split ({len(ok)} "
                            f"usable in all), fewer than --objects maximum {cfg.objects[1]}; add meshes, "
                            "lower --objects"
                            + (" or raise --test-fraction" if split == "test" else ""))
        placed = compose_scene(pool, cfg, shape_rng(cfg.seed, f"{formats.SCENE_CATEGORY}/{sid}", 9), sid)
        layouts.append((sid, split, [p.record() for p in placed]))
    return train_ids, test_ids, layouts


def _scene_intact(out: Path, rec: dict, cfg: SceneConfig) -> bool:
    paths = scene_paths(out, rec["id"])
    if not all(p.is_file() for p in paths.values()):
        return False
    if rec.get("sdf_sha256") != formats.file_sha256(paths["sdf"]):
        return False
    if rec.get("split") == "test" and cfg.scans > 0:
        scans = scan_paths(out, formats.SCENE_CATEGORY, rec["id"], cfg.scans)
        same = rec.get("scan_params") == scan_params(cfg.scans, cfg.camera)
        return same and all(p.is_file() for p in scans)
    return True


def _layout_key(obj: dict) -> tuple:
    return obj["file"], obj["sha256"], json.dumps(obj["transform"])


class SceneJobs(JobKind):
    """``prep scenes`` for the runner: one item per composed scene, :func:`prep_scene`; a scene's record is
    reused while its split, its objects' files and placements and its outputs are unchanged."""

    name = "scenes"
    records_key = "meshes"
    unit = "scene"
    task = staticmethod(prep_scene)

    def __init__(self, cfg: SceneConfig, sources: int, sources_ok: int):
        self.cfg, self.sources, self.sources_ok = cfg, sources, sources_ok

    def reusable(self, out: Path, item: Item, old: dict) -> bool:
        layout = [_layout_key(o) for o in item.head["objects"]]
        return (old.get("split") == item.head["split"]
                and [_layout_key(o) for o in old.get("objects", [])] == layout
                and _scene_intact(out, old, self.cfg))

    def order(self, rec: dict) -> tuple:
        return rec["split"] != "train", rec["id"]

    def splits(self, records: list[dict], params: dict) -> tuple[dict, dict]:
        """The scenes' own splits (a test scene is made of test meshes)."""
        ok = [r for r in records if r["status"] == "ok"]
        return tuple({formats.SCENE_CATEGORY: [r["id"] for r in ok if r["split"] == s]}
                     for s in ("train", "test"))

    def summary(self, done: Outcome) -> dict:
        train, test = len(done.train[formats.SCENE_CATEGORY]), len(done.test[formats.SCENE_CATEGORY])
        return {"scenes": len(done.records), "ok": train + test, "train": train, "test": test,
                "failed": sum(1 for r in done.records if r["status"] != "ok"),
                "skipped_unchanged": done.skipped,
                "sources": self.sources, "sources_ok": self.sources_ok}


def scene_items(out: Path, layouts: list[Layout], cfg: SceneConfig) -> list[Item]:
    items = []
    for sid, split, objects in layouts:
        head = {"file": str(scene_paths(out, sid)["mesh"]), "category": formats.SCENE_CATEGORY, "id": sid,
                "split": split, "objects": objects}
        key = (formats.SCENE_CATEGORY, sid)
        items.append(Item(key, (sid, split, objects, str(out), cfg), head, "/".join(key)))
    return items


@writes_data_root("deepsdf-ad prep scenes")
def prep_scenes(src: str | os.PathLike, out: str | os.PathLike, cfg: SceneConfig, workers: int = 1,
                progress: bool = True) -> dict:
    """Compose ``cfg.scenes`` scenes of the meshes below ``src`` into the data root ``out``; returns the
    manifest.

    Steps: screen every source mesh (cached in the manifest by checksum), split them per category, compose
    every scene (cheap, before any heavy work, so an impossible placement fails fast), then build, sample and
    scan the scenes that are new or changed (:func:`deepsdf_ad.data_prep.runner.run_prep`).
    """
    src, out = Path(src), Path(out)
    check_scene_config(cfg)
    entries = keyed_meshes(src)
    params, screen_params = scene_params(cfg)
    old = formats.DataRoot(out).manifest() if (out / formats.MANIFEST).is_file() else {}
    same_screening = old.get("kind") == "scenes" and old.get("screen_params") == screen_params
    old_sources = {r["file"]: r for r in old.get("sources", [])} if same_screening else {}
    sources = screen_sources(entries, cfg, old_sources, workers, progress)
    ok = [r for r in sources.values() if r.get("status") == "ok"]
    try:
        if not ok:
            raise DataError(f"{src}: none of its {len(entries)} meshes can be used (reasons in "
                            f"{out / formats.MANIFEST})")
        train_ids, test_ids, layouts = compose_layouts(src, ok, cfg)
    except DataError:
        _write_sources_only(out, params, screen_params, src, sources)
        raise
    for stale in set(old.get("scene_ids", [])) - {sid for sid, _, _ in layouts}:
        _remove_scene(out, stale)
    header = {"tool": "deepsdf-ad", "version": TOOL_VERSION, "kind": "scenes", "source": str(src),
              "params": params, "screen_params": screen_params, "frame": frame_info(cfg),
              "source_split": {"train": train_ids, "test": test_ids},
              "sources": sorted(sources.values(), key=lambda r: (r["category"], r["id"], r["file"])),
              "scene_ids": [sid for sid, _, _ in layouts]}
    kind = SceneJobs(cfg, len(sources), len(ok))
    return run_prep(kind, out, header, scene_items(out, layouts, cfg), workers, progress)


def _write_sources_only(out: Path, params: dict, screen_params: dict, src: Path, sources: dict) -> None:
    """Keep the screening of a run that stops early, so the next run need not redo it; the scenes of an
    earlier run stay as they were (and are still reused by a run with their settings)."""
    old = formats.DataRoot(out).manifest() if (out / formats.MANIFEST).is_file() else {}
    manifest = old if old.get("kind") == "scenes" else {
        "tool": "deepsdf-ad", "version": TOOL_VERSION, "kind": "scenes", "source": str(src), "params": params,
        "meshes": []}
    manifest.update(screen_params=screen_params,
                    sources=sorted(sources.values(), key=lambda r: (r["category"], r["id"], r["file"])))
    formats.write_json(out / formats.MANIFEST, manifest)


def _remove_scene(out: Path, sid: str) -> None:
    """Delete the files of a scene a previous run wrote and this one no longer has (e.g. fewer --scenes)."""
    for p in scene_paths(out, sid).values():
        p.unlink(missing_ok=True)
    for p in (out / formats.SCANS_DIR / formats.SCENE_CATEGORY).glob(f"{sid}_*"):
        p.unlink(missing_ok=True)
