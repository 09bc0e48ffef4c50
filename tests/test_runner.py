"""The prep job runner with a toy kind: what any kind gets from it (shards and their merge, reuse, a worker
that dies, the manifest) without a mesh or a digit."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.runner import Item, JobKind, merge, run_prep

KEYS = [(c, f"{c}{i}") for c in ("a", "b") for i in range(5)]


def square(out: str, category: str, sid: str, value: float) -> dict:
    """The toy per-item function: one sample file holding ``value**2``; ``value < 0`` kills its process."""
    if value < 0:
        os._exit(3)
    path = Path(out) / formats.SDF_DIR / category / f"{sid}.npz"
    formats.save_sdf_samples(path, np.full((1, 4), value**2, np.float32), np.zeros((0, 4), np.float32))
    return {"category": category, "id": sid, "status": "ok", "sdf_sha256": formats.file_sha256(path)}


class Squares(JobKind):
    name = "squares"
    records_key = "squares"
    unit = "square"
    task = staticmethod(square)

    def reusable(self, out: Path, item: Item, old: dict) -> bool:
        path = out / formats.SDF_DIR / item.key[0] / f"{item.key[1]}.npz"
        return path.is_file() and old.get("sdf_sha256") == formats.file_sha256(path)

    @classmethod
    def from_shard(cls, manifest: dict) -> tuple[Squares, dict]:
        return cls(), {k: manifest[k] for k in ("tool", "params")}


def items(out: Path, values: dict | None = None) -> list[Item]:
    values = values or {}
    return [Item(k, (str(out), *k, values.get(k, 1.0 + i)), {"category": k[0], "id": k[1]}, "/".join(k))
            for i, k in enumerate(KEYS)]


HEADER = {"tool": "test", "params": {"seed": 3, "test_fraction": 0.4}}


def without_timings(obj):
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k != "seconds"}
    return [without_timings(v) for v in obj] if isinstance(obj, list) else obj


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and formats.SHARDS_DIR not in p.parts}


def test_run_reuse_and_shards_merged_equal_one_run(tmp_path):
    one = tmp_path / "one"
    m = run_prep(Squares(), one, HEADER, items(one), progress=False)
    assert [(r["category"], r["id"]) for r in m["squares"]] == sorted(KEYS)
    assert m["summary"] == {"squares": 10, "ok": 10, "failed": 0, "skipped_unchanged": 0}
    test = formats.read_json(one / formats.SPLITS_DIR / formats.TEST_SPLIT)
    assert {c: len(v) for c, v in test[formats.DATASET_NAME].items()} == {"a": 2, "b": 2}
    assert json.loads((one / formats.MANIFEST).read_text()) == m

    # a re-run reuses every record whose output is intact, and redoes the one whose file changed
    again = tmp_path / "again"
    shutil.copytree(one, again)
    (again / formats.SDF_DIR / "b" / "b3.npz").write_bytes(b"damaged")
    rerun = run_prep(Squares(), again, HEADER, items(again), progress=False)
    assert rerun["summary"]["skipped_unchanged"] == 9 and rerun["squares"] == m["squares"]
    # other parameters: nothing is reused
    other = run_prep(Squares(), again, {**HEADER, "params": {"seed": 4, "test_fraction": 0.4}}, items(again),
                     progress=False)
    assert other["summary"]["skipped_unchanged"] == 0

    sharded = tmp_path / "sharded"
    for i in range(3):
        shard = run_prep(Squares(), sharded, HEADER, items(sharded), progress=False, shard=(i, 3))
        assert shard["complete"] and shard["kind"] == "squares" and not (sharded / formats.MANIFEST).exists()
    shards = [formats.read_json(formats.shard_manifest_path(sharded, i, 3)) for i in range(3)]
    assert sorted(len(s["squares"]) for s in shards) == [3, 3, 4]
    merged = merge({"squares": Squares}, sharded, shards, progress=False)
    assert without_timings(merged) == without_timings(m)
    assert {k: v for k, v in files(sharded).items() if k != formats.MANIFEST} == \
           {k: v for k, v in files(one).items() if k != formats.MANIFEST}  # samples and splits


def test_a_worker_that_dies_fails_only_the_run_of_its_items(tmp_path):
    out = tmp_path / "data"
    m = run_prep(Squares(), out, HEADER, items(out, {("a", "a2"): -1.0}), workers=2, progress=False)
    recs = {r["id"]: r for r in m["squares"]}
    assert recs["a2"]["status"] == "failed" and recs["a2"]["reason"].startswith("a/a2: worker failed")
    assert set(recs) == {k[1] for k in KEYS} and m["summary"]["squares"] == 10
    # the next run redoes only what did not finish
    again = run_prep(Squares(), out, HEADER, items(out), workers=2, progress=False)
    assert again["summary"] == {"squares": 10, "ok": 10, "failed": 0, "skipped_unchanged": m["summary"]["ok"]}


def test_merge_names_shards_without_parameters(tmp_path):
    with pytest.raises(DataError, match="shard manifests lack parameters"):
        merge({"squares": Squares}, tmp_path, [{"kind": "squares", "tool": "test"}], progress=False)
