"""The job machinery every prep kind shares: per-shape random streams, shards (which process owns which
shape), a worker pool that dies with its parent, temporaries left by killed runs, reuse of finished records,
train/test splits, failures recorded per shape, and reading the shard manifests."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError


def shape_rng(seed: int, key: str, stream: int | None = 0) -> np.random.Generator:
    """The generator of one shape (``key``: ``category/id``) or category: seeded by the seed, the key's CRC-32
    and the stream (several independent streams per shape), so results depend neither on the order of the
    shapes nor on the workers or shards. ``stream=None`` leaves the stream out (the splits' generators)."""
    return np.random.default_rng([seed, zlib.crc32(key.encode()), *(() if stream is None else (stream,))])


@contextlib.contextmanager
def failures_recorded(rec: dict, name: str, what: str = "mesh") -> Iterator[dict]:
    """Run one job's body: any failure is recorded in ``rec`` (status failed, with the reason) instead of
    raised, so one bad input never stops a run; ``rec["seconds"]`` (wall) and ``rec["cpu_seconds"]`` (this
    process) are set either way."""
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


def parse_shard(text: str) -> tuple[int, int]:
    """``'I/N'`` -> ``(I, N)`` with ``0 <= I < N`` (0-based, as SLURM_ARRAY_TASK_ID with
    ``--array=0-N-1``)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise DataError(f"--shard {text}: expected I/N, e.g. 0/4 for the first of 4 shards (I counts from 0)")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise DataError(f"--shard {text}: the number of shards N must be at least 1")
    if index >= count:
        raise DataError(f"--shard {text}: the shard index I must be in 0..{count - 1} (it counts from 0)")
    return index, count


def shard_owner(keys: list[tuple[str, str]], count: int) -> dict[tuple[str, str], int]:
    """Which shard handles each (category, id): round-robin over the keys in sorted order.

    Depends only on the set of keys (not on file listing order); shard sizes differ by at most one.
    """
    return {k: i % count for i, k in enumerate(sorted(set(keys)))}


def _die_with_parent() -> None:
    """In a pool worker (Linux): get SIGKILL when the prep process dies, however it dies (SIGTERM, SIGKILL),
    so no worker goes on alone."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers end with the prep: the kernel kills them when this process dies (SIGTERM,
    SIGKILL), and they are terminated at once, with the jobs not yet started cancelled, when the block fails
    (Ctrl-C, an error) instead of working through the queue first."""
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent)
    try:
        yield pool
    except BaseException:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=5)
        raise
    pool.shutdown(wait=True)


def remove_stale_temporaries(out: Path, keys: list[tuple[str, str]] | None = None,
                             extra_dirs: tuple[str, ...] = ()) -> int:
    """Delete the temp files (:data:`deepsdf_ad.data_prep.formats.TEMP_PREFIX`) a killed run left in the data
    folders; returns how many. Only names of our own pattern are touched, never a user's file.

    With ``keys`` (a shard's (category, id) pairs) only the temp files of those shapes are deleted, so shards
    running concurrently into the same folder never delete each other's files in progress.
    """
    dirs = (formats.SDF_DIR, formats.NORM_DIR, formats.SURFACE_DIR, formats.SCANS_DIR, *extra_dirs)
    n = 0
    if keys is not None:
        for cat, sid in keys:
            for d in dirs:
                folder = out / d / cat
                if folder.is_dir():
                    for tmp in folder.glob(f"{formats.TEMP_PREFIX}{glob.escape(sid)}-*"):
                        if formats.is_temp_file(tmp, sid):
                            tmp.unlink()
                            n += 1
        return n
    for d in (*dirs, formats.SPLITS_DIR, formats.SCENE_MESHES_DIR, "."):
        base = out / d
        if not base.is_dir():
            continue
        pattern = f"{formats.TEMP_PREFIX}*"
        for tmp in (base.glob(pattern) if d == "." else base.rglob(pattern)):
            if formats.is_temp_file(tmp):
                tmp.unlink()
                n += 1
    return n


def remove_shard_temporaries(path: Path) -> None:
    if path.parent.is_dir():
        for tmp in path.parent.glob(f"{formats.TEMP_PREFIX}*"):
            if formats.is_temp_file(tmp, path.stem):
                tmp.unlink(missing_ok=True)


def reusable_records(out: Path, params: dict, list_key: str) -> dict[tuple[str, str], dict]:
    """Records of earlier runs with the same parameters: from ``DATA/manifest.json`` and every shard manifest
    (callers still check each record's outputs before reusing it)."""
    paths = [out / formats.MANIFEST] + sorted((out / formats.SHARDS_DIR).glob("shard-*-of-*.json"))
    found: dict[tuple[str, str], dict] = {}
    for path in paths:
        if not path.is_file():
            continue
        try:
            old = formats.read_json(path)
        except DataError:
            continue  # an unreadable old manifest only costs the reuse
        if not isinstance(old, dict) or old.get("params") != params:
            continue
        for r in old.get(list_key, []):
            if isinstance(r, dict) and "category" in r and "id" in r:
                found.setdefault((r["category"], r["id"]), r)
    return found


def make_splits(ok: list[tuple[str, str]], test_fraction: float, seed: int) -> tuple[dict, dict]:
    """Per category, a seeded shuffle puts ``round(n * test_fraction)`` shapes in test (at least one
    when the fraction is positive and the category has two or more shapes, and at least one left to train
    unless the fraction is 1: every shape a test shape, as for a set measured out of distribution)."""
    by_cat: dict[str, list[str]] = {}
    for cat, sid in ok:
        by_cat.setdefault(cat, []).append(sid)
    train, test = {}, {}
    for cat, ids in sorted(by_cat.items()):
        ids = sorted(ids)
        rng = shape_rng(seed, cat, stream=None)
        order = rng.permutation(len(ids))
        n_test = int(round(len(ids) * test_fraction))
        if 0 < test_fraction < 1 and len(ids) >= 2:
            n_test = min(max(n_test, 1), len(ids) - 1)
        test[cat] = sorted(ids[i] for i in order[:n_test])
        train[cat] = sorted(ids[i] for i in order[n_test:])
    return train, test


def read_shards(out: str | os.PathLike) -> list[dict]:
    """The shard manifests of ``DATA/shards``, checked to form one complete set (every I of one N, all
    finished, same kind and parameters); ordered by shard index."""
    out = Path(out)
    folder = out / formats.SHARDS_DIR
    paths = sorted(folder.glob("shard-*-of-*.json")) if folder.is_dir() else []
    how = "run 'deepsdf-ad prep meshes|digits ... --shard I/N --out DATA' for every I first"
    if not paths:
        raise DataError(f"{folder}: no shard manifests (shard-I-of-N.json); {how}")
    shards = []
    for p in paths:
        m = formats.read_json(p)
        sh = m.get("shard") if isinstance(m, dict) else None
        if (not isinstance(sh, dict) or not {"index", "count"} <= set(sh)
                or m.get("kind") not in ("meshes", "digits")):
            raise DataError(f"{p}: not a shard manifest written by 'deepsdf-ad prep ... --shard'; remove it")
        if p.name != formats.shard_manifest_path(out, sh["index"], sh["count"]).name:
            raise DataError(f"{p}: its content says shard {sh['index']}/{sh['count']}; do not rename shard "
                            "manifests")
        shards.append((p, m))
    counts = sorted({m["shard"]["count"] for _, m in shards})
    if len(counts) > 1:
        raise DataError(f"{folder}: holds manifests of {' and '.join(map(str, counts))} shards; delete the "
                        "ones of the sharding you do not want to merge")
    count = counts[0]
    have = {m["shard"]["index"] for _, m in shards}
    missing = [i for i in range(count) if i not in have]
    if missing:
        names = ", ".join(f"{i}/{count}" for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise DataError(f"{folder}: shard(s) {names} missing; run them (same flags, --shard I/{count}) and "
                        "merge again")
    unfinished = [f"{m['shard']['index']}/{count}" for _, m in shards if not m.get("complete")]
    if unfinished:
        raise DataError(f"{folder}: shard(s) {', '.join(unfinished)} did not finish; run them again and "
                        "merge again")
    p0, m0 = shards[0]
    for p, m in shards[1:]:
        for field_ in ("kind", "params", "scan_params", "source"):
            if m.get(field_) != m0.get(field_):
                raise DataError(f"{p}: its {field_} differ from those of {p0.name}; every shard must be run "
                                "with the same source and flags")
    return [m for _, m in sorted(shards, key=lambda pm: pm[1]["shard"]["index"])]
