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
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import trimesh
from tqdm import tqdm

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.digits import DigitJobs
from deepsdf_ad.data_prep.folders import writes_data_root
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.jobs import (  # noqa: F401 (re-exported: the job machinery's old home)
    failures_recorded,
    parse_shard,
    read_shards,
    remove_stale_temporaries,
    shape_rng,
    shard_owner,
)
from deepsdf_ad.data_prep.meshes import (
    SamplingConfig,
    SignedDistance,
    check_sampling,
    duplicate_reason,
    keyed_meshes,
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
from deepsdf_ad.data_prep.runner import TOOL_VERSION, Item, JobKind, Outcome, merge, run_prep
from deepsdf_ad.data_prep.scans import CameraConfig, scan_params, scan_paths, write_scans


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
            raise DataError(f"{path}: signs unreliable: {quality['ambiguous']:.1%} of near-surface samples "
                            f"have a winding number near 1/2 (limit {cfg.max_ambiguous:.1%}); the mesh has "
                            f"large holes or no clear inside")
        pos, neg = split_pos_neg(queries, sdf)
        if len(neg) == 0:
            raise DataError(f"{path}: no sample came out inside the shape; the mesh encloses no volume")
        out = Path(out)
        surf, normals = sample_surface(nmesh, cfg.sampling.surface_points, rng)
        sdf_path = out / formats.SDF_DIR / category / f"{sid}.npz"
        formats.save_sdf_samples(sdf_path, pos, neg)
        formats.save_normalization(out / formats.NORM_DIR / category / f"{sid}.npz", offset, scale)
        formats.save_points_ply(out / formats.SURFACE_DIR / category / f"{sid}.ply", surf, normals)
        rec.update(status="ok", pos=int(len(pos)), neg=int(len(neg)),
                   sdf_sha256=formats.file_sha256(sdf_path))
    return rec


def scan_one(path: str, category: str, sid: str, out: str, cfg: PrepConfig) -> list[str]:
    """Write ``cfg.scans`` partial scans of one mesh (its original frame, normalisation in the sidecar)."""
    mesh = load_mesh(path)
    return write_scans(mesh, Path(out), category, sid, cfg.scans, cfg.camera, cfg.seed, normalization(mesh))


def _mesh_params(cfg: PrepConfig) -> dict:
    params = {"sampling": asdict(cfg.sampling), "seed": cfg.seed, "test_fraction": cfg.test_fraction,
              "max_ambiguous": cfg.max_ambiguous}
    if cfg.held_out:  # only then: the manifests of runs without it keep their parameters (and their reuse)
        params["held_out"] = sorted(cfg.held_out)
    return json.loads(json.dumps(params))  # as the manifest stores it (tuples become lists)


def _outputs_intact(out: Path, rec: dict) -> bool:
    """The sample, normalisation and surface files of a mesh's record exist, and the samples are the ones the
    record's checksum names."""
    category, sid = rec["category"], rec["id"]
    exist = all(
        (out / d / category / f"{sid}{ext}").is_file()
        for d, ext in ((formats.SDF_DIR, ".npz"), (formats.NORM_DIR, ".npz"), (formats.SURFACE_DIR, ".ply"))
    )
    sdf = out / formats.SDF_DIR / category / f"{sid}.npz"
    return exist and rec.get("sdf_sha256") == formats.file_sha256(sdf)


class MeshJobs(JobKind):
    """``prep meshes`` for the runner: one item per mesh file, :func:`prep_one`; a record is reused while its
    input's checksum and its outputs are unchanged; a whole run ends with the scans of the test shapes."""

    name = "meshes"
    records_key = "meshes"
    unit = "mesh"
    task = staticmethod(prep_one)

    def __init__(self, cfg: PrepConfig):
        self.cfg = cfg

    def reusable(self, out: Path, item: Item, old: dict) -> bool:
        return old.get("sha256") == formats.file_sha256(item.head["file"]) and _outputs_intact(out, old)

    def shard_fields(self) -> dict:
        return {"scan_params": scan_params(self.cfg.scans, self.cfg.camera)}

    @classmethod
    def from_shard(cls, manifest: dict) -> tuple[MeshJobs, dict]:
        params, scans = manifest["params"], manifest["scan_params"]
        sampling = dict(params["sampling"], variances=tuple(params["sampling"]["variances"]))
        sampling = SamplingConfig(**sampling)
        cfg = PrepConfig(sampling, test_fraction=params["test_fraction"], seed=params["seed"],
                         scans=int(scans["k"]), max_ambiguous=params["max_ambiguous"],
                         camera=CameraConfig(**scans["camera"]), held_out=tuple(params.get("held_out", ())))
        return cls(cfg), _header(manifest["source"], params, manifest.get("held_out_source"))

    def splits(self, records: list[dict], params: dict) -> tuple[dict, dict]:
        """The held-out keys (``params['held_out']``) are test shapes; the others are split by the test
        fraction, as :meth:`JobKind.splits` splits them."""
        held = set(params.get("held_out", ()))
        rest = [r for r in records if f"{r['category']}/{r['id']}" not in held]
        train, test = super().splits(rest, params)
        for r in records:
            if r.get("status") == "ok" and f"{r['category']}/{r['id']}" in held:
                test.setdefault(r["category"], []).append(r["id"])
                train.setdefault(r["category"], [])
        return train, {c: sorted(ids) for c, ids in test.items()}

    def finish(self, out: Path, manifest: dict, done: Outcome, progress: bool) -> dict:
        if self.cfg.scans > 0:
            _write_scans(out, done.records, done.test, self.cfg, progress)
        return super().finish(out, manifest, done, progress)


def _header(src: str, params: dict, held_out: str | None = None) -> dict:
    head = {"tool": "deepsdf-ad", "version": TOOL_VERSION, "source": src, "params": params}
    return head if held_out is None else {**head, "held_out_source": held_out}


def mesh_items(src: Path, out: Path, cfg: PrepConfig) -> list[Item]:
    """One item per mesh below ``src``; a second file of the same (category, id) is a known failure."""
    items = []
    for key, f, first in keyed_meshes(src):
        head = {"file": str(f), "category": key[0], "id": key[1]}
        if first is None:
            items.append(Item(key, (str(f), *key, str(out), cfg), head, str(f)))
        else:
            known = {**head, "status": "failed", "reason": duplicate_reason(f, key, first),
                     "duplicate_of": str(first)}
            items.append(Item(key, head=head, name=str(f), known=known))
    return items


def held_out_keys(src: str | os.PathLike, held_out: str | os.PathLike) -> tuple[str, ...]:
    """The keys ``category/id`` of the meshes below ``held_out``, checked not to be those of meshes below
    ``src`` too (one shape cannot be both trained and held out)."""
    held = {f"{c}/{i}": f for (c, i), f, _ in keyed_meshes(held_out)}
    for (c, i), f, _ in keyed_meshes(src):
        if f"{c}/{i}" in held:
            raise DataError(f"{held[f'{c}/{i}']}: shape '{c}/{i}' is also in {src} ({f}); a held-out shape "
                            "cannot be a training shape too: rename or remove one")
    return tuple(sorted(held))


@writes_data_root("deepsdf-ad prep meshes")
def prep_meshes(src: str | os.PathLike, out: str | os.PathLike, cfg: PrepConfig, workers: int = 1,
                progress: bool = True, shard: tuple[int, int] | None = None,
                held_out: str | os.PathLike | None = None) -> dict:
    """Sample every mesh below ``src`` into the data root ``out``; returns the manifest.

    ``held_out``: a second folder of meshes, all of them test shapes (``src``'s are split by
    ``cfg.test_fraction``), as in a benchmark's official train/test split.

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
    if held_out is not None:
        cfg = replace(cfg, held_out=held_out_keys(src, held_out))
    items = mesh_items(src, out, cfg) + (mesh_items(Path(held_out), out, cfg) if held_out is not None else [])
    header = _header(str(src), _mesh_params(cfg), None if held_out is None else str(held_out))
    return run_prep(MeshJobs(cfg), out, header, items, workers, progress, shard)


SHARDED_KINDS: dict[str, type[JobKind]] = {"meshes": MeshJobs, "digits": DigitJobs}
"""The prep kinds that run in shards, by the ``kind`` of their shard manifests."""


@writes_data_root("deepsdf-ad prep merge")
def merge_shards(out: str | os.PathLike, progress: bool = True) -> dict:
    """``deepsdf-ad prep merge DATA``: combine the shard manifests of ``DATA/shards`` into the splits and
    ``manifest.json`` an unsharded run writes (and write the ``--scans`` of the test shapes); returns the
    manifest. The shard manifests are kept, so merging again gives the same result."""
    out = Path(out)
    return merge(SHARDED_KINDS, out, read_shards(out), progress)


def _write_scans(out: Path, records: list[dict], test: dict, cfg: PrepConfig, progress: bool) -> None:
    """K partial scans of every test shape; scans already on disk for an unchanged mesh are kept."""
    ok = {(r["category"], r["id"]): r for r in records if r.get("status") == "ok"}
    params = scan_params(cfg.scans, cfg.camera)
    todo = []
    for cat, ids in test.items():
        for sid in ids:
            rec = ok[(cat, sid)]
            want = scan_paths(out, cat, sid, cfg.scans)
            if rec.get("scan_params") == params and all(p.is_file() for p in want):
                continue
            todo.append(rec)
    for rec in tqdm(todo, desc="scans", unit="mesh", disable=not progress or not todo):
        try:
            rec["scans"] = scan_one(rec["file"], rec["category"], rec["id"], str(out), cfg)
            rec["scan_params"] = params
        except DataError as e:
            rec.update(scans=[], scan_error=str(e))
