"""``deepsdf-ad prep meshes``: a folder of meshes -> a data root (see :mod:`data_prep.formats`).

Each mesh is one job with its own seeded generator (derived from the seed and the shape's key), so results
do not depend on the order or the number of workers. The manifest is rewritten (atomically) as jobs finish;
a re-run skips meshes whose input checksum, parameters and outputs are unchanged.
"""

from __future__ import annotations

import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep import formats
from data_prep.formats import DataError
from data_prep.meshes import (
    SamplingConfig,
    SignedDistance,
    find_meshes,
    load_mesh,
    normalized_mesh,
    sample_query_points,
    sample_surface,
    split_pos_neg,
)

TOOL_VERSION = "0.1.0"


@dataclass
class PrepConfig:
    sampling: SamplingConfig
    test_fraction: float = 0.2
    seed: int = 0
    scans: int = 0


def shape_rng(seed: int, key: str, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode()), stream])


def prep_one(path: str, category: str, sid: str, out: str, cfg: PrepConfig) -> dict:
    """Process one mesh; returns its manifest record (status ok or failed, with reason)."""
    t0 = time.perf_counter()
    key = f"{category}/{sid}"
    rec: dict = {"file": str(path), "category": category, "id": sid}
    try:
        rec["sha256"] = formats.file_sha256(path)
        mesh = load_mesh(path)
        nmesh, offset, scale = normalized_mesh(mesh)
        rng = shape_rng(cfg.seed, key)
        queries = sample_query_points(nmesh, cfg.sampling, rng)
        sdf = SignedDistance(nmesh)(queries)
        pos, neg = split_pos_neg(queries, sdf)
        if len(neg) == 0:
            raise DataError(f"{path}: no sample came out inside the shape; the mesh encloses no volume")
        out = Path(out)
        surf, normals = sample_surface(nmesh, cfg.sampling.surface_points, rng)
        formats.save_sdf_samples(out / formats.SDF_DIR / category / f"{sid}.npz", pos, neg)
        formats.save_normalization(out / formats.NORM_DIR / category / f"{sid}.npz", offset, scale)
        formats.save_points_ply(out / formats.SURFACE_DIR / category / f"{sid}.ply", surf, normals)
        rec.update(status="ok", pos=int(len(pos)), neg=int(len(neg)), faces=int(len(mesh.faces)),
                   watertight=bool(mesh.is_watertight))
    except DataError as e:
        rec.update(status="failed", reason=str(e))
    except MemoryError:
        rec.update(status="failed", reason=f"{path}: out of memory; the mesh is too large")
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def _outputs_exist(out: Path, category: str, sid: str) -> bool:
    return all(
        (out / d / category / f"{sid}{ext}").is_file()
        for d, ext in ((formats.SDF_DIR, ".npz"), (formats.NORM_DIR, ".npz"), (formats.SURFACE_DIR, ".ply"))
    )


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
    files = find_meshes(src)
    out.mkdir(parents=True, exist_ok=True)
    params = {"sampling": asdict(cfg.sampling), "seed": cfg.seed, "test_fraction": cfg.test_fraction}
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
                and _outputs_exist(out, *key)):
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
            futs = [pool.submit(prep_one, *j, str(out), cfg) for j in jobs]
            for fut in as_completed(futs):
                done(fut.result())
    else:
        for j in jobs:
            done(prep_one(*j, str(out), cfg))
    bar.close()

    ok = [(r["category"], r["id"]) for r in records.values() if r.get("status") == "ok"]
    train, test = make_splits(ok, cfg.test_fraction, cfg.seed)
    formats.write_split(out / formats.SPLITS_DIR / formats.TRAIN_SPLIT, train)
    formats.write_split(out / formats.SPLITS_DIR / formats.TEST_SPLIT, test)
    manifest["summary"] = {"meshes": len(records), "ok": len(ok), "failed": len(records) - len(ok),
                           "skipped_unchanged": len(files) - len(jobs) - (len(records) - len(seen))}
    flush()
    return manifest
