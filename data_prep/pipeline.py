"""``deepsdf-ad prep meshes``: a folder of meshes -> a data root (see :mod:`data_prep.formats`).

Each mesh is one job with its own seeded generator (derived from the seed and the shape's key), so results
do not depend on the order or the number of workers. The manifest is rewritten (atomically) as jobs finish;
a re-run skips meshes whose input checksum, parameters and outputs (checked against the SHA-256 of the sample
file recorded in the manifest) are unchanged, and deletes temporary files a killed run left behind.

A mesh that cannot be used (unreadable, empty, degenerate, too large, or with unreliable signs) is recorded as
failed with the reason, and the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import trimesh
from tqdm import tqdm

from data_prep import formats
from data_prep.formats import DataError
from data_prep.meshes import (
    SamplingConfig,
    SignedDistance,
    check_sampling,
    find_meshes,
    load_mesh,
    near_surface_count,
    normalization,
    normalized_mesh,
    sample_query_points,
    sample_surface,
    sign_quality,
    split_pos_neg,
)
from data_prep.scans import CameraConfig, save_scan, scan_mesh

TOOL_VERSION = "0.2.0"


@dataclass
class PrepConfig:
    sampling: SamplingConfig
    test_fraction: float = 0.2
    """Share of each category held out as test shapes."""
    seed: int = 0
    scans: int = 0
    """Partial scans written per test shape (``DATA/scans/<category>/<id>_<k>.ply``)."""
    max_ambiguous: float = 0.05
    """Reject a mesh when more than this share of its near-surface samples has an ambiguous sign
    (winding number within 0.1 of 1/2); see :func:`data_prep.meshes.sign_quality`."""
    camera: CameraConfig = field(default_factory=CameraConfig)
    """Camera of the scans; scan k of K is taken at azimuth ``camera.azimuth + 360 k / K``."""


def shape_rng(seed: int, key: str, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode()), stream])


@contextlib.contextmanager
def failures_recorded(rec: dict, name: str, what: str = "mesh") -> Iterator[dict]:
    """Run one job's body: any failure is recorded in ``rec`` (status failed, with the reason) instead of raised,
    so one bad input never stops a run; ``rec["seconds"]`` (wall) and ``rec["cpu_seconds"]`` (this process) are
    set either way."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield rec
    except DataError as e:
        rec.update(status="failed", reason=str(e))
    except MemoryError:
        rec.update(status="failed", reason=f"{name}: out of memory; the {what} is too large")
    except Exception as e:  # the reason goes into the manifest
        rec.update(status="failed", reason=f"{name}: unexpected {type(e).__name__}: {str(e)[:200]}")
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    rec["cpu_seconds"] = round(time.process_time() - c0, 3)


def prep_one(path: str, category: str, sid: str, out: str, cfg: PrepConfig) -> dict:
    """Process one mesh; returns its manifest record (status ok or failed, with reason)."""
    key = f"{category}/{sid}"
    rec: dict = {"file": str(path), "category": category, "id": sid}
    with failures_recorded(rec, str(path)):
        rec["sha256"] = formats.file_sha256(path)
        mesh = load_mesh(path)
        nmesh, offset, scale = normalized_mesh(mesh)
        rng = shape_rng(cfg.seed, key)
        queries = sample_query_points(nmesh, cfg.sampling, rng)
        try:
            sd = SignedDistance(nmesh)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        sdf, winding = sd.signed(queries)
        near = np.arange(len(queries)) < near_surface_count(cfg.sampling)
        quality = sign_quality(sd, queries, winding, near, shape_rng(cfg.seed, key, 1))
        # watertight once coincident vertices are merged: ModelNet's .off files repeat vertices per part
        merged = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        merged.merge_vertices()
        rec.update(faces=int(len(mesh.faces)), watertight=bool(merged.is_watertight), sign_quality=quality)
        if quality["ambiguous"] > cfg.max_ambiguous:
            raise DataError(f"{path}: signs unreliable: {quality['ambiguous']:.1%} of near-surface samples have a "
                            f"winding number near 1/2 (limit {cfg.max_ambiguous:.1%}); the mesh has large holes "
                            f"or no clear inside")
        pos, neg = split_pos_neg(queries, sdf)
        if len(neg) == 0:
            raise DataError(f"{path}: no sample came out inside the shape; the mesh encloses no volume")
        out = Path(out)
        surf, normals = sample_surface(nmesh, cfg.sampling.surface_points, rng)
        sdf_path = out / formats.SDF_DIR / category / f"{sid}.npz"
        formats.save_sdf_samples(sdf_path, pos, neg)
        formats.save_normalization(out / formats.NORM_DIR / category / f"{sid}.npz", offset, scale)
        formats.save_points_ply(out / formats.SURFACE_DIR / category / f"{sid}.ply", surf, normals)
        rec.update(status="ok", pos=int(len(pos)), neg=int(len(neg)), sdf_sha256=formats.file_sha256(sdf_path))
    return rec


def scan_paths(out: Path, category: str, sid: str, k: int) -> list[Path]:
    return [out / formats.SCANS_DIR / category / f"{sid}_{i}.ply" for i in range(k)]


def scan_one(path: str, category: str, sid: str, out: str, cfg: PrepConfig) -> list[str]:
    """Write ``cfg.scans`` partial scans of one mesh (its original frame, normalisation in the sidecar)."""
    out = Path(out)
    mesh = load_mesh(path)
    norm = normalization(mesh)
    written = []
    for k, target in enumerate(scan_paths(out, category, sid, cfg.scans)):
        cam = CameraConfig(**{**asdict(cfg.camera), "azimuth": cfg.camera.azimuth + 360.0 * k / cfg.scans})
        scan = scan_mesh(mesh, cam, shape_rng(cfg.seed, f"{category}/{sid}", 2 + k))
        save_scan(target, scan, norm)
        written.append(str(target.relative_to(out)))
    return written


def remove_stale_temporaries(out: Path) -> int:
    """Delete the ``.tmp-*`` files a killed run left in the data folders; returns how many."""
    n = 0
    for d in (formats.SDF_DIR, formats.NORM_DIR, formats.SURFACE_DIR, formats.SCANS_DIR, formats.SPLITS_DIR,
              formats.SCENE_MESHES_DIR, "."):
        base = out / d
        if not base.is_dir():
            continue
        for tmp in (base.glob(".tmp-*") if d == "." else base.rglob(".tmp-*")):
            if tmp.is_file():
                tmp.unlink()
                n += 1
    return n


def _outputs_intact(out: Path, rec: dict) -> bool:
    category, sid = rec["category"], rec["id"]
    exist = all(
        (out / d / category / f"{sid}{ext}").is_file()
        for d, ext in ((formats.SDF_DIR, ".npz"), (formats.NORM_DIR, ".npz"), (formats.SURFACE_DIR, ".ply"))
    )
    return exist and rec.get("sdf_sha256") == formats.file_sha256(out / formats.SDF_DIR / category / f"{sid}.npz")


def make_splits(ok: list[tuple[str, str]], test_fraction: float, seed: int) -> tuple[dict, dict]:
    """Per category, a seeded shuffle puts ``round(n * test_fraction)`` shapes in test (at least one
    when the fraction is positive and the category has two or more shapes)."""
    by_cat: dict[str, list[str]] = {}
    for cat, sid in ok:
        by_cat.setdefault(cat, []).append(sid)
    train, test = {}, {}
    for cat, ids in sorted(by_cat.items()):
        ids = sorted(ids)
        rng = np.random.default_rng([seed, zlib.crc32(cat.encode())])
        order = rng.permutation(len(ids))
        n_test = int(round(len(ids) * test_fraction))
        if test_fraction > 0 and len(ids) >= 2:
            n_test = min(max(n_test, 1), len(ids) - 1)
        test[cat] = sorted(ids[i] for i in order[:n_test])
        train[cat] = sorted(ids[i] for i in order[n_test:])
    return train, test


def prep_meshes(src: str | os.PathLike, out: str | os.PathLike, cfg: PrepConfig, workers: int = 1,
                progress: bool = True) -> dict:
    """Sample every mesh below ``src`` into the data root ``out``; returns the manifest."""
    src, out = Path(src), Path(out)
    try:
        check_sampling(cfg.sampling)
    except ValueError as e:
        raise DataError(f"{src}: {e}") from None
    files = find_meshes(src)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    params = {"sampling": asdict(cfg.sampling), "seed": cfg.seed, "test_fraction": cfg.test_fraction,
              "max_ambiguous": cfg.max_ambiguous}
    params = json.loads(json.dumps(params))  # as the manifest stores it (tuples become lists)
    old = formats.DataRoot(out).manifest() if (out / formats.MANIFEST).is_file() else {}
    old_records = {(r["category"], r["id"]): r for r in old.get("meshes", [])} if old.get("params") == params else {}

    jobs, records = [], {}
    seen: dict[tuple[str, str], Path] = {}
    for f in files:
        category = f.parent.name if f.parent != src else src.name
        key = (category, f.stem)
        if key in seen:
            records[key + (str(f),)] = {"file": str(f), "category": category, "id": f.stem, "status": "failed",
                                        "reason": f"{f}: duplicate id '{f.stem}' in category '{category}' "
                                                  f"(also {seen[key]}); rename one"}
            continue
        seen[key] = f
        prev = old_records.get(key)
        if (prev and prev.get("status") == "ok" and prev.get("sha256") == formats.file_sha256(f)
                and _outputs_intact(out, prev)):
            records[key] = prev
        else:
            jobs.append((str(f), category, f.stem))

    manifest = {"tool": "deepsdf-ad", "version": TOOL_VERSION, "source": str(src), "params": params}

    def flush() -> None:
        manifest["meshes"] = sorted(records.values(), key=lambda r: (r["category"], r["id"], r["file"]))
        formats.write_json(out / formats.MANIFEST, manifest)

    bar = tqdm(total=len(jobs), desc="prep meshes", unit="mesh", disable=not progress)
    last_flush = time.monotonic()

    def done(rec: dict) -> None:
        nonlocal last_flush
        records[(rec["category"], rec["id"])] = rec
        bar.update(1)
        if time.monotonic() - last_flush > 2.0:
            flush()
            last_flush = time.monotonic()

    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futs = {pool.submit(prep_one, *j, str(out), cfg): j for j in jobs}
            for fut in as_completed(futs):
                try:
                    done(fut.result())
                except Exception as e:  # a worker that died (e.g. killed for memory) fails only its mesh
                    f, category, sid = futs[fut]
                    done({"file": f, "category": category, "id": sid, "status": "failed",
                          "reason": f"{f}: worker failed ({type(e).__name__}: {e})"})
    else:
        for j in jobs:
            done(prep_one(*j, str(out), cfg))
    bar.close()

    ok = [(r["category"], r["id"]) for r in records.values() if r.get("status") == "ok"]
    train, test = make_splits(ok, cfg.test_fraction, cfg.seed)
    formats.write_split(out / formats.SPLITS_DIR / formats.TRAIN_SPLIT, train)
    formats.write_split(out / formats.SPLITS_DIR / formats.TEST_SPLIT, test)
    if cfg.scans > 0:
        _write_scans(out, records, test, cfg, progress)
    n_failed = sum(1 for r in records.values() if r.get("status") != "ok")
    manifest["summary"] = {"meshes": len(records), "ok": len(ok), "failed": n_failed,
                           "skipped_unchanged": len(files) - len(jobs) - (len(records) - len(seen))}
    flush()
    return manifest


def _write_scans(out: Path, records: dict, test: dict, cfg: PrepConfig, progress: bool) -> None:
    """K partial scans of every test shape; scans already on disk for an unchanged mesh are kept."""
    todo = []
    for cat, ids in test.items():
        for sid in ids:
            rec = records[(cat, sid)]
            want = scan_paths(out, cat, sid, cfg.scans)
            scan_params = {"k": cfg.scans, "camera": asdict(cfg.camera)}
            if rec.get("scan_params") == scan_params and all(p.is_file() for p in want):
                continue
            todo.append((rec, scan_params))
    for rec, scan_params in tqdm(todo, desc="scans", unit="mesh", disable=not progress or not todo):
        try:
            rec["scans"] = scan_one(rec["file"], rec["category"], rec["id"], str(out), cfg)
            rec["scan_params"] = scan_params
        except DataError as e:
            rec.update(scans=[], scan_error=str(e))
