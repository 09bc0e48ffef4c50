"""``deepsdf-ad prep meshes``: a folder of meshes -> a data root (see :mod:`deepsdf_ad.data_prep.formats`).

Each mesh is one job with its own seeded generator (derived from the seed and the shape's key), so results
do not depend on the order or the number of workers. The manifest is rewritten (atomically) as jobs finish;
a re-run skips meshes whose input checksum, parameters and outputs (checked against the SHA-256 of the sample
file recorded in the manifest) are unchanged, and deletes temporary files a killed run left behind.

A mesh that cannot be used (unreadable, empty, degenerate, too large, or with unreliable signs) is recorded as
failed with the reason, and the run goes on.

Sharding (``--shard I/N``, for a SLURM array or any job scheduler): the shapes, sorted by (category, id),
are dealt round-robin to N shards; shard I samples its own and writes ``DATA/shards/shard-I-of-N.json``.
Shards may run at the same time into the same data folder. ``prep merge`` (:func:`merge_shards`) then writes
the splits and ``manifest.json``, equal to those of one unsharded run.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import as_completed
from dataclasses import asdict
from pathlib import Path

import numpy as np
import trimesh
from tqdm import tqdm

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.folders import writes_data_root
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.jobs import (  # noqa: F401 (re-exported: the job machinery's old home)
    _die_with_parent,
    _outputs_intact,
    failures_recorded,
    make_splits,
    parse_shard,
    read_shards,
    remove_shard_temporaries,
    remove_stale_temporaries,
    reusable_records,
    shape_rng,
    shard_owner,
    worker_pool,
)
from deepsdf_ad.data_prep.meshes import (
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
from deepsdf_ad.data_prep.params import PrepConfig  # noqa: F401 (re-exported)
from deepsdf_ad.data_prep.scans import CameraConfig, save_scan, scan_mesh

TOOL_VERSION = "0.2.0"


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


def _mesh_params(cfg: PrepConfig) -> dict:
    params = {"sampling": asdict(cfg.sampling), "seed": cfg.seed, "test_fraction": cfg.test_fraction,
              "max_ambiguous": cfg.max_ambiguous}
    return json.loads(json.dumps(params))  # as the manifest stores it (tuples become lists)


@writes_data_root("deepsdf-ad prep meshes")
def prep_meshes(src: str | os.PathLike, out: str | os.PathLike, cfg: PrepConfig, workers: int = 1,
                progress: bool = True, shard: tuple[int, int] | None = None) -> dict:
    """Sample every mesh below ``src`` into the data root ``out``; returns the manifest.

    With ``shard=(I, N)`` only the meshes of shard I (see :func:`shard_owner`) are sampled, into the same
    layout, and the shard's manifest goes to ``DATA/shards/shard-I-of-N.json`` instead of the splits and
    ``manifest.json``: :func:`merge_shards` writes those once every shard is done (and the ``--scans``).
    Shards may run at the same time into the same ``out``: their files are disjoint.
    """
    src, out = Path(src), Path(out)
    try:
        check_sampling(cfg.sampling)
    except ValueError as e:
        raise DataError(f"{src}: {e}") from None
    files = find_meshes(src)
    params = _mesh_params(cfg)

    entries: list[tuple[tuple[str, str], Path, Path | None]] = []  # key, file, the file it duplicates
    seen: dict[tuple[str, str], Path] = {}
    for f in files:
        category = f.parent.name if f.parent != src else src.name
        key = (category, f.stem)
        entries.append((key, f, seen.get(key)))
        seen.setdefault(key, f)
    owner = shard_owner(list(seen), shard[1]) if shard else None
    mine = [e for e in entries if owner is None or owner[e[0]] == shard[0]]

    out.mkdir(parents=True, exist_ok=True)
    if shard:
        remove_stale_temporaries(out, sorted({k for k, _, _ in mine}))
        remove_shard_temporaries(formats.shard_manifest_path(out, *shard))
    else:
        remove_stale_temporaries(out)
    old_records = reusable_records(out, params, "meshes")

    jobs, records = [], {}
    for key, f, first in mine:
        if first is not None:
            records[key + (str(f),)] = {"file": str(f), "category": key[0], "id": key[1], "status": "failed",
                                        "reason": f"{f}: duplicate id '{key[1]}' in category '{key[0]}' "
                                                  f"(also {first}); rename one", "duplicate_of": str(first)}
            continue
        prev = old_records.get(key)
        if (prev and prev.get("status") == "ok" and prev.get("sha256") == formats.file_sha256(f)
                and _outputs_intact(out, prev)):
            records[key] = prev
        else:
            jobs.append((str(f), *key))
    n_unique = sum(1 for _, _, first in mine if first is None)
    skipped = n_unique - len(jobs)

    manifest = {"tool": "deepsdf-ad", "version": TOOL_VERSION, "source": str(src), "params": params}
    target = out / formats.MANIFEST
    if shard:
        target = formats.shard_manifest_path(out, *shard)
        manifest.update(kind="meshes", shard={"index": shard[0], "count": shard[1]}, complete=False,
                        scan_params={"k": cfg.scans, "camera": asdict(cfg.camera)})

    def flush() -> None:
        manifest["meshes"] = sorted(records.values(), key=lambda r: (r["category"], r["id"], r["file"]))
        formats.write_json(target, manifest)

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
        with worker_pool(min(workers, len(jobs))) as pool:
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

    if shard:
        n_ok = sum(1 for r in records.values() if r.get("status") == "ok")
        manifest["summary"] = {"meshes": len(records), "ok": n_ok, "failed": len(records) - n_ok,
                               "skipped_unchanged": skipped}
        manifest["complete"] = True
        flush()
        return manifest
    return _finish_meshes(out, manifest, records, cfg, skipped, progress)


def _finish_meshes(out: Path, manifest: dict, records: dict, cfg: PrepConfig, skipped: int, progress: bool) -> dict:
    """Splits, scans of the test shapes, summary and ``manifest.json`` from every mesh's record."""
    ok = [(r["category"], r["id"]) for r in records.values() if r.get("status") == "ok"]
    train, test = make_splits(ok, cfg.test_fraction, cfg.seed)
    formats.write_split(out / formats.SPLITS_DIR / formats.TRAIN_SPLIT, train)
    formats.write_split(out / formats.SPLITS_DIR / formats.TEST_SPLIT, test)
    if cfg.scans > 0:
        _write_scans(out, records, test, cfg, progress)
    n_failed = sum(1 for r in records.values() if r.get("status") != "ok")
    manifest["meshes"] = sorted(records.values(), key=lambda r: (r["category"], r["id"], r["file"]))
    manifest["summary"] = {"meshes": len(records), "ok": len(ok), "failed": n_failed, "skipped_unchanged": skipped}
    formats.write_json(out / formats.MANIFEST, manifest)
    return manifest


@writes_data_root("deepsdf-ad prep merge")
def merge_shards(out: str | os.PathLike, progress: bool = True) -> dict:
    """``deepsdf-ad prep merge DATA``: combine the shard manifests of ``DATA/shards`` into the splits and
    ``manifest.json`` an unsharded run writes (and write the ``--scans`` of the test shapes); returns the
    manifest. The shard manifests are kept, so merging again gives the same result."""
    out = Path(out)
    shards = read_shards(out)
    first = shards[0]
    skipped = sum(m.get("summary", {}).get("skipped_unchanged", 0) for m in shards)
    if first["kind"] == "digits":
        from deepsdf_ad.data_prep.digits import merge_digit_shards

        return merge_digit_shards(out, shards)
    params = first["params"]
    try:
        sampling = SamplingConfig(**{**params["sampling"], "variances": tuple(params["sampling"]["variances"])})
        cfg = PrepConfig(sampling, test_fraction=params["test_fraction"], seed=params["seed"],
                         scans=int(first["scan_params"]["k"]), max_ambiguous=params["max_ambiguous"],
                         camera=CameraConfig(**first["scan_params"]["camera"]))
    except (KeyError, TypeError) as e:
        raise DataError(f"{out / formats.SHARDS_DIR}: shard manifests lack parameters ({e}); re-run the shards") from None
    records: dict = {}
    for m in shards:
        for r in m.get("meshes", []):
            key = (r["category"], r["id"]) + ((r["file"],) if "duplicate_of" in r else ())
            records[key] = r
    manifest = {"tool": "deepsdf-ad", "version": TOOL_VERSION, "source": first["source"], "params": params}
    return _finish_meshes(out, manifest, records, cfg, skipped, progress)


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
