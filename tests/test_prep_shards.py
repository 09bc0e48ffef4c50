"""Issue 9: sharded prep (``--shard I/N`` + ``prep merge``) gives what one run gives, and a prep killed with
SIGKILL and run again gives exactly the files of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.digits import DigitSamplingConfig, prep_digits
from deepsdf_ad.data_prep.formats import DataError, write_idx
from deepsdf_ad.data_prep.meshes import SamplingConfig
from deepsdf_ad.data_prep.pipeline import PrepConfig, merge_shards, parse_shard, prep_meshes, shard_owner
from tests.helpers import assert_one_line_error, cli
from tests.test_digits_cli import synthetic_digits
from tests.test_prep import write_meshes

SAMPLES = "3000"


def all_files(data: Path) -> dict[str, str]:
    """SHA-256 of every file of a data folder except the manifest and the shard manifests."""
    return {str(p.relative_to(data)): formats.file_sha256(p) for p in sorted(data.rglob("*"))
            if p.is_file() and p.name != formats.MANIFEST
            and formats.SHARDS_DIR not in p.relative_to(data).parts}


def manifest_without_timings(data: Path, drop: tuple[str, ...] = ("seconds", "cpu_seconds")) -> dict:
    """The manifest without the fields in ``drop`` (by default the clock times: wall and CPU seconds)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(json.loads((data / formats.MANIFEST).read_text()))


def popen_cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deepsdf_ad", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def meshes(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("shards") / "meshes"
    write_meshes(src)  # 3 boxes, 2 balls
    return src


@pytest.fixture(scope="module")
def unsharded(meshes) -> Path:
    data = meshes.parent / "one_run"
    cli("prep", "meshes", meshes, "--out", data, "--samples", SAMPLES, "--scans", "1", "--quiet", check=True)
    return data


def test_shard_assignment_is_round_robin_over_sorted_keys():
    keys = [("b", "2"), ("a", "1"), ("b", "1"), ("a", "2"), ("c", "0")]
    owner = shard_owner(keys, 2)
    assert owner == {("a", "1"): 0, ("a", "2"): 1, ("b", "1"): 0, ("b", "2"): 1, ("c", "0"): 0}
    assert shard_owner(list(reversed(keys)), 2) == owner  # listing order does not matter
    assert parse_shard("3/4") == (3, 4) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad, why in [("4/4", "0..3"), ("1/0", "at least 1"), ("x", "expected I/N"), ("1/2/3", "expected I/N"),
                     ("", "expected I/N")]:
        with pytest.raises(DataError, match=why):
            parse_shard(bad)


def test_two_concurrent_shards_and_merge_equal_one_run(meshes, unsharded, tmp_path):
    data = tmp_path / "data"
    args = ("prep", "meshes", meshes, "--out", data, "--samples", SAMPLES, "--scans", "1", "--quiet")
    procs = [popen_cli(*args, "--shard", f"{i}/2") for i in range(2)]  # at the same time, into the same DATA
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "prep merge" in out
    assert "shard 0/2: 3 of 3 meshes ok" in outs[0][0] and "shard 1/2: 2 of 2 meshes ok" in outs[1][0]
    assert not (data / formats.MANIFEST).exists() and not (data / formats.SPLITS_DIR).exists()
    assert (sorted(p.name for p in (data / formats.SHARDS_DIR).iterdir())
            == ["shard-0-of-2.json", "shard-1-of-2.json"])

    proc = cli("prep", "merge", data, "--quiet", check=True)
    assert "prep merge: 5 of 5 meshes ok, 0 failed" in proc.stdout
    one = all_files(unsharded)
    assert any(k.startswith("scans/") for k in one) and "splits/test.json" in one
    assert all_files(data) == one  # samples, normalisations, surfaces, splits and scans: byte for byte
    assert manifest_without_timings(data) == manifest_without_timings(unsharded)
    # merging again changes nothing; a shard re-run with the same flags skips everything
    merge_shards(data, progress=False)
    assert all_files(data) == one
    cfg = PrepConfig(SamplingConfig(samples=int(SAMPLES)), scans=1)
    assert prep_meshes(meshes, data, cfg, progress=False, shard=(1, 2))["summary"]["skipped_unchanged"] == 2


def test_merge_refuses_incomplete_or_mixed_shards(meshes, tmp_path):
    data = tmp_path / "data"
    cfg, other = PrepConfig(SamplingConfig(samples=500)), PrepConfig(SamplingConfig(samples=500), seed=1)
    prep_meshes(meshes, data, cfg, progress=False, shard=(0, 3))
    with pytest.raises(DataError, match="1/3, 2/3 missing"):
        merge_shards(data, progress=False)
    prep_meshes(meshes, data, cfg, progress=False, shard=(1, 3))
    prep_meshes(meshes, data, cfg, progress=False, shard=(2, 3))
    m = json.loads((data / "shards" / "shard-2-of-3.json").read_text())
    (data / "shards" / "shard-2-of-3.json").write_text(json.dumps({**m, "complete": False}))  # as if killed
    with pytest.raises(DataError, match="2/3 did not finish"):
        merge_shards(data, progress=False)
    assert prep_meshes(meshes, data, cfg, progress=False, shard=(2, 3))["complete"]  # the re-run finishes it
    prep_meshes(meshes, data, other, progress=False, shard=(0, 2))
    with pytest.raises(DataError, match="manifests of 2 and 3 shards"):
        merge_shards(data, progress=False)
    (data / "shards" / "shard-0-of-2.json").unlink()
    prep_meshes(meshes, data, other, progress=False, shard=(0, 3))  # other flags than its siblings
    # through the CLI: one line, exit 2
    assert_one_line_error(cli("prep", "merge", data), "params differ", "same source and flags")
    prep_meshes(meshes, data, cfg, progress=False, shard=(0, 3))
    assert merge_shards(data, progress=False)["summary"]["ok"] == 5
    with pytest.raises(DataError, match="no shard manifests"):
        merge_shards(tmp_path / "nowhere", progress=False)
    for bad in ("3/3", "a/b"):
        assert_one_line_error(cli("prep", "meshes", meshes, "--out", data, "--shard", bad), "--shard")


def test_digit_shards_merge_to_one_run(tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    images, labels = synthetic_digits(10)
    images[3] = 0  # a blank digit: recorded as failed, in the manifest of its shard and then of the merge
    write_idx(idx / "syn-images-idx3-ubyte", images)
    write_idx(idx / "syn-labels-idx1-ubyte", labels)
    cfg = DigitSamplingConfig(samples=256, contour_points=100)
    one, many = tmp_path / "one", tmp_path / "many"
    prep_digits(idx, one, cfg, progress=False)
    for i in (2, 0, 1):
        m = prep_digits(idx, many, cfg, progress=False, shard=(i, 3))
        assert m["complete"] and len(m["digits"]) in (3, 4)
    assert json.loads((many / formats.MANIFEST).read_text())["complete"] is False  # until the merge
    merge_shards(many, progress=False)
    assert all_files(many) == all_files(one)
    assert manifest_without_timings(many) == manifest_without_timings(one)
    assert manifest_without_timings(one)["summary"]["failed"] == 1


# ---- faults: SIGKILL in the middle of a prep ------------------------------------------------------------
def _more_meshes(src: Path) -> None:
    """12 small procedural meshes in 2 categories (boxes and spheres of different sizes)."""
    for k in range(6):
        (src / "box").mkdir(parents=True, exist_ok=True)
        trimesh.creation.box(extents=(1.0, 0.4 + 0.1 * k, 0.6)).export(src / "box" / f"b{k}.off")
        (src / "ball").mkdir(parents=True, exist_ok=True)
        trimesh.creation.icosphere(subdivisions=2, radius=0.3 + 0.05 * k).export(src / "ball" / f"s{k}.obj")


def test_prep_killed_with_sigkill_and_run_again_gives_the_same_files(tmp_path):
    src = tmp_path / "meshes"
    _more_meshes(src)
    args = ("prep", "meshes", src, "--samples", "20000", "--scans", "1", "--quiet")
    clean = tmp_path / "clean"  # the uninterrupted run, in-process (the library call the CLI makes)
    prep_meshes(src, clean, PrepConfig(SamplingConfig(samples=20000), scans=1), progress=False)

    data = tmp_path / "killed"
    proc = popen_cli(*args, "--out", data)
    deadline = time.monotonic() + 120
    # kill once a few shapes are done but not all: their files and a periodically flushed manifest exist
    while time.monotonic() < deadline and len(list((data / "surface").rglob("*.ply"))) < 3:
        assert proc.poll() is None, "prep ended before it could be killed; give it more work"
        time.sleep(0.05)
    done_before = len(list((data / "surface").rglob("*.ply")))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 3 <= done_before < 12 and not (data / "splits").exists()

    cli(*args, "--out", data, check=True)
    assert not list(data.rglob(".deepsdf-ad-tmp-*"))
    assert all_files(data) == all_files(clean)
    # the manifest too, but for timings and how many shapes the second run found already done
    assert (manifest_without_timings(data, ("seconds", "cpu_seconds", "skipped_unchanged"))
            == manifest_without_timings(clean, ("seconds", "cpu_seconds", "skipped_unchanged")))


def test_killed_then_rerun_digits_with_other_parameters_never_mix(tmp_path, monkeypatch):
    """A digits run with other parameters that dies midway marks the folder so that a later run does not take
    its half-rewritten files as done."""
    idx = tmp_path / "idx"
    idx.mkdir()
    images, labels = synthetic_digits(6)
    write_idx(idx / "syn-images-idx3-ubyte", images)
    write_idx(idx / "syn-labels-idx1-ubyte", labels)
    a, b = (DigitSamplingConfig(samples=256, contour_points=50),
            DigitSamplingConfig(samples=300, contour_points=50))
    ref = tmp_path / "ref"
    prep_digits(idx, ref, a, progress=False)
    data = tmp_path / "data"
    prep_digits(idx, data, a, progress=False)
    # run B dies after its first digit (its second sample file's write is interrupted)
    calls = {"n": 0}
    real = formats.save_sdf_samples

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(formats, "save_sdf_samples", dying)
        with pytest.raises(KeyboardInterrupt):
            prep_digits(idx, data, b, progress=False)
    assert not all_files(data) == all_files(ref)  # one digit holds B's samples now
    assert json.loads((data / formats.MANIFEST).read_text())["complete"] is False
    m = prep_digits(idx, data, a, progress=False)  # back to A: everything is redone, nothing mixed
    assert m["summary"]["skipped_unchanged"] == 0
    assert all_files(data) == all_files(ref)
    assert np.array_equal(*(formats.load_sdf_samples(d / "sdf" / "0" / "syn-00000.npz")[0]
                            for d in (data, ref)))
