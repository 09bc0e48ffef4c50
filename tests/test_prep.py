"""``deepsdf-ad prep meshes`` end to end (issue 3): the data layout and its signs, resume after an
interruption, corrupt inputs among good ones, ``--strict``, ``--scans``, ``--workers``, the DeepSDF layout
round trip and training on it, and a few real (mostly open) ModelNet meshes when the shared data is
present."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import trimesh

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.meshes import SamplingConfig, undo_normalization
from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_meshes
from deepsdf_ad.data_prep.scans import load_scan
from tests.helpers import REPO, SHARED_DATA, TINY, assert_one_line_error, box_sdf, cli, sphere_sdf

SAMPLES = 5000
HALF = (0.4, 0.3, 0.2)
SCALE = 7.0  # the meshes are written in an arbitrary frame, so normalisation has something to undo
SHIFT = np.array([3.0, -1.0, 2.0])
SETS = [a for kv in TINY for a in ("--set", kv)]
SHARED_MESHES = SHARED_DATA / "meshes"


def write_meshes(src: Path) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Two categories of analytic shapes in an arbitrary frame; returns key -> true SDF in that frame."""
    truth = {}
    for k, half in enumerate([HALF, (0.3, 0.3, 0.3), (0.5, 0.2, 0.25)]):
        m = trimesh.creation.box(extents=2 * np.asarray(half))
        m.apply_scale(SCALE)
        m.apply_translation(SHIFT)
        if k == 2:
            # each face with its own vertices, as in many ModelNet files: still watertight
            m.unmerge_vertices()
        (src / "box").mkdir(parents=True, exist_ok=True)
        m.export(src / "box" / f"box_{k}.off")
        truth[f"box/box_{k}"] = lambda p, h=half: box_sdf((p - SHIFT) / SCALE, h) * SCALE
    for k, radius in enumerate([0.5, 0.3]):
        m = trimesh.creation.icosphere(subdivisions=3, radius=radius)
        m.apply_scale(SCALE)
        m.apply_translation(SHIFT)
        (src / "ball").mkdir(parents=True, exist_ok=True)
        m.export(src / "ball" / f"ball_{k}.obj")
        truth[f"ball/ball_{k}"] = lambda p, r=radius: sphere_sdf((p - SHIFT) / SCALE, r) * SCALE
    return truth


def prep(src: Path, out: Path, *extra: str, check: bool = True):
    return cli("prep", "meshes", src, "--out", out, "--samples", str(SAMPLES), "--quiet", *extra, check=check)


def manifest_of(data: Path) -> dict:
    return json.loads((data / formats.MANIFEST).read_text())


def records(data: Path) -> dict[str, dict]:
    return {f"{r['category']}/{r['id']}": r for r in manifest_of(data)["meshes"]}


def sha_of_outputs(data: Path) -> dict[str, str]:
    return {str(p.relative_to(data)): formats.file_sha256(p)
            for d in (formats.SDF_DIR, formats.NORM_DIR, formats.SURFACE_DIR) for p in (data / d).rglob("*")
            if p.is_file()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """Analytic shapes -> ``prep meshes --scans 2`` through the real CLI, once for the module."""
    base = tmp_path_factory.mktemp("prep")
    src, data = base / "meshes", base / "data"
    truth = write_meshes(src)
    proc = prep(src, data, "--scans", "2")
    return {"base": base, "src": src, "data": data, "truth": truth, "proc": proc}


def test_layout_of_the_data_root(prepared):
    data, truth = prepared["data"], prepared["truth"]
    assert "prep: 5 of 5 meshes ok, 0 failed" in prepared["proc"].stdout
    for key in truth:
        cat, sid = key.split("/")
        assert (data / "sdf" / cat / f"{sid}.npz").is_file()
        assert (data / "norm" / cat / f"{sid}.npz").is_file()
        assert (data / "surface" / cat / f"{sid}.ply").is_file()
    train = formats.read_split(data / "splits" / "train.json")
    test = formats.read_split(data / "splits" / "test.json")
    assert sorted(f"{c}/{i}" for _, c, i in train + test) == sorted(truth)
    assert {c for _, c, _ in test} == {"box", "ball"}  # every category holds at least one test shape
    assert not set(train) & set(test)
    m = manifest_of(data)
    assert m["summary"] == {"meshes": 5, "ok": 5, "failed": 0, "skipped_unchanged": 0}
    assert m["params"]["sampling"]["samples"] == SAMPLES
    for rec in m["meshes"]:
        assert rec["status"] == "ok" and rec["watertight"]
        assert rec["sign_quality"]["ambiguous"] == 0 and rec["sign_quality"]["disagree"] < 0.01
        assert rec["sdf_sha256"] == formats.file_sha256(data / "sdf" / rec["category"] / f"{rec['id']}.npz")
    assert not list(data.rglob(".deepsdf-ad-tmp-*"))


def test_signs_distances_and_normalisation_against_analytic_truth(prepared):
    data = prepared["data"]
    for key, sdf_true in prepared["truth"].items():
        cat, sid = key.split("/")
        pos, neg = formats.load_sdf_samples(data / "sdf" / cat / f"{sid}.npz")
        assert len(pos) + len(neg) == SAMPLES and pos.dtype == np.float32 and pos.shape[1] == 4
        assert (pos[:, 3] > 0).all() and (neg[:, 3] <= 0).all() and len(neg) > SAMPLES // 10
        offset, scale = formats.load_normalization(data / "norm" / cat / f"{sid}.npz")
        # DeepSDF's convention: offset = -bbox centre, scale = 1 / (1.03 * max vertex distance)
        np.testing.assert_allclose(offset, -SHIFT, atol=1e-6)
        samples = np.concatenate([pos, neg])
        orig = undo_normalization(samples[:, :3].astype(np.float64), offset, scale)
        true = sdf_true(orig)
        # distances are exact point-to-triangle ones (boxes), or within the chord error of the polyhedral
        # sphere (a 3 times subdivided icosphere: under 0.5% of the radius); signs are right wherever the
        # analytic truth is clear of that error
        tol = 1e-5 * SCALE if cat == "box" else 5e-3 * SCALE
        np.testing.assert_allclose(samples[:, 3] / scale, true, atol=tol)
        clear = np.abs(true) > tol
        assert np.array_equal((samples[:, 3] > 0)[clear], (true > 0)[clear])
        surf = formats.load_points(data / "surface" / cat / f"{sid}.ply").points
        assert np.linalg.norm(surf, axis=1).max() <= 1 / 1.03 + 1e-5


def test_the_truth_mesh_of_a_shape_is_its_source_in_the_normalised_frame(prepared, tmp_path):
    """Evaluation's figures draw the truth as the source mesh: in the frame of the samples, through every
    surface point; None when the manifest's source is gone."""
    import open3d as o3d

    from deepsdf_ad.data_prep.formats import DataRoot
    from deepsdf_ad.evaluate import Truth3D

    root = DataRoot(prepared["data"])
    truth = Truth3D(root)
    for ref in root.shapes("train") + root.shapes("test"):
        mesh = truth.mesh(ref)
        assert np.linalg.norm(mesh.vertices, axis=1).max() == pytest.approx(1 / 1.03, rel=1e-6)
        surf = formats.load_points(ref.surface).points
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                            o3d.core.Tensor(mesh.faces.astype(np.uint32)))
        assert scene.compute_distance(o3d.core.Tensor(surf.astype(np.float32))).numpy().max() < 1e-5
    moved = Truth3D(root)
    moved.sources = {k: tmp_path / "gone.obj" for k in moved.sources}
    assert moved.mesh(root.shapes("train")[0]) is None


def test_scans_of_test_shapes_with_their_camera(prepared):
    data = prepared["data"]
    test = formats.read_split(data / "splits" / "test.json")
    written = sorted(str(p.relative_to(data)) for p in (data / "scans").rglob("*.ply"))
    expected = sorted(f"scans/{c}/{i}_{k}.ply" for _, c, i in test for k in range(2))
    assert written == expected
    recs = records(data)
    cameras = []
    for _, cat, sid in test:
        assert recs[f"{cat}/{sid}"]["scans"] == [f"scans/{cat}/{sid}_{k}.ply" for k in range(2)]
        for k in range(2):
            cloud, meta = load_scan(data / "scans" / cat / f"{sid}_{k}.ply")
            assert len(cloud.points) > 100 and cloud.normals is not None
            cam = np.asarray(meta["camera"])
            assert cam.shape == (3,) and any(c.startswith("camera ") for c in cloud.comments)
            # the scan is in the mesh's own frame; the normalisation to the samples' frame rides along
            np.testing.assert_allclose(meta["normalization"]["offset"], -SHIFT, atol=1e-6)
            # normals face the camera
            assert np.mean(np.sum(cloud.normals * (cam - cloud.points), axis=1) > 0) > 0.99
            cameras.append(cam)
    assert len({tuple(np.round(c, 6)) for c in cameras}) == len(cameras)  # the K views differ


def test_resume_after_an_interruption(prepared, tmp_path):
    """A killed run leaves a half-written temp file and a mesh not done: the re-run removes the temp file,
    redoes that mesh and skips the others, whose files stay byte for byte the same."""
    data = tmp_path / "data"
    src = prepared["src"]
    shutil.copytree(prepared["data"], data)
    before = sha_of_outputs(data)
    mtimes = {p: (data / p).stat().st_mtime_ns for p in before}
    # simulate the kill: box_1's sample file was being written (only the temp file exists) and the manifest
    # was last flushed before box_1 finished
    victim = data / "sdf" / "box" / "box_1.npz"
    victim.unlink()
    tmp = data / "sdf" / "box" / ".deepsdf-ad-tmp-box_1-x1y2z3ab.npz"
    tmp.write_bytes(b"PK\x03\x04 half a zip")
    stray = data / ".deepsdf-ad-tmp-manifest-abc4ef_h.json"
    stray.write_text('{"tool": "deeps')
    m = manifest_of(data)
    m["meshes"] = [r for r in m["meshes"] if r["id"] != "box_1"]
    (data / formats.MANIFEST).write_text(json.dumps(m))

    proc = prep(src, data, "--scans", "2")
    assert "5 of 5 meshes ok, 0 failed (4 unchanged, skipped)" in proc.stdout
    assert not tmp.exists() and not stray.exists() and not list(data.rglob(".deepsdf-ad-tmp-*"))
    after = sha_of_outputs(data)
    assert after == before  # box_1 redone identically (seeded per shape), the rest untouched
    for p in before:
        if "box_1" not in p:
            assert (data / p).stat().st_mtime_ns == mtimes[p], f"{p} was rewritten"
    assert manifest_of(data)["summary"]["skipped_unchanged"] == 4
    assert records(data)["box/box_1"]["status"] == "ok"

    # in-process from here (the same library call the CLI makes)
    cfg = PrepConfig(SamplingConfig(samples=SAMPLES), scans=2)
    # an output damaged after the fact (its checksum no longer matches the manifest) is redone
    other = data / "sdf" / "ball" / "ball_0.npz"
    other.write_bytes(other.read_bytes()[:-10])
    assert prep_meshes(src, data, cfg, progress=False)["summary"]["skipped_unchanged"] == 4
    assert sha_of_outputs(data) == before
    # a changed input file is redone
    changed = tmp_path / "src"
    shutil.copytree(src, changed)
    mesh = trimesh.load(changed / "ball" / "ball_1.obj", process=False)
    mesh.apply_translation((1.0, 0.0, 0.0))
    mesh.export(changed / "ball" / "ball_1.obj")
    assert prep_meshes(changed, data, cfg, progress=False)["summary"]["skipped_unchanged"] == 4
    # changed sampling parameters invalidate everything
    cfg.sampling.samples += 1
    assert prep_meshes(src, data, cfg, progress=False)["summary"]["skipped_unchanged"] == 0


def test_workers_give_the_same_files(prepared, tmp_path):
    proc = prep(prepared["src"], tmp_path / "data", "--workers", "2")
    assert "5 of 5 meshes ok" in proc.stdout
    assert sha_of_outputs(tmp_path / "data") == sha_of_outputs(prepared["data"])


@pytest.fixture
def folder_with_bad_files(tmp_path) -> Path:
    src = tmp_path / "meshes"
    cat = src / "thing"
    cat.mkdir(parents=True)
    for k in range(2):
        m = trimesh.creation.box(extents=(1.0, 0.5 + 0.2 * k, 0.4))
        m.export(cat / f"good_{k}.off")
    (cat / "x.off").write_bytes(bytes(range(256)) * 3)  # garbage bytes
    (cat / "empty.obj").write_bytes(b"")
    (cat / "flat.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n")  # zero area
    return src


def test_corrupt_files_among_good_ones(folder_with_bad_files, tmp_path):
    data = tmp_path / "data"
    # --strict: any failure is an error, one line on stderr
    assert_one_line_error(prep(folder_with_bad_files, data, "--strict", check=False), "3 meshes failed",
                          "--strict")
    # without it the run succeeds; the good meshes written by the strict run are skipped
    proc = prep(folder_with_bad_files, data, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "2 of 5 meshes ok, 3 failed (2 unchanged, skipped)" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    recs = records(data)
    assert {k: r["status"] for k, r in recs.items()} == {
        "thing/good_0": "ok", "thing/good_1": "ok", "thing/x": "failed", "thing/empty": "failed",
        "thing/flat": "failed"}
    assert "empty" in recs["thing/empty"]["reason"]
    assert "degenerate" in recs["thing/flat"]["reason"]
    for k in ("thing/x", "thing/empty", "thing/flat"):
        assert recs[k]["reason"].startswith(str(folder_with_bad_files / "thing"))
        assert "\n" not in recs[k]["reason"]
        assert f"failed: {recs[k]['reason']}" in proc.stdout
    assert manifest_of(data)["summary"]["failed"] == 3
    # failed meshes are in no split and have no files
    listed = {i for _, _, i in formats.read_split(data / "splits" / "train.json")
              + formats.read_split(data / "splits" / "test.json")}
    assert listed == {"good_0", "good_1"}
    assert not (data / "sdf" / "thing" / "x.npz").exists()


def test_only_bad_files_is_an_error(tmp_path):
    (tmp_path / "m" / "c").mkdir(parents=True)
    (tmp_path / "m" / "c" / "x.off").write_bytes(b"\x00garbage\xff" * 20)
    assert_one_line_error(prep(tmp_path / "m", tmp_path / "data", check=False), "no mesh could be prepared")


def test_deepsdf_layout_round_trip_and_training_on_it(prepared, tmp_path):
    data, dest = prepared["data"], tmp_path / "deepsdf"
    splits = formats.export_deepsdf(data, dest, dataset="ModelNetish")
    assert sorted(splits) == ["test", "train"]
    assert (dest / "SdfSamples" / "ModelNetish").is_dir() and (dest / "NormalizationParameters").is_dir()
    ours = formats.DataRoot(data)
    theirs = formats.DataRoot(dest, splits["train"])
    assert theirs.deepsdf and not ours.deepsdf
    a, b = ours.shapes("train"), theirs.shapes("train")
    assert [r.key for r in a] == [r.key for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert rb.sdf == dest / "SdfSamples" / "ModelNetish" / ra.category / f"{ra.id}.npz"
        for x, y in zip(formats.load_sdf_samples(ra.sdf), formats.load_sdf_samples(rb.sdf), strict=True):
            np.testing.assert_array_equal(x, y)
        for x, y in zip(formats.load_normalization(ra.norm), formats.load_normalization(rb.norm),
                        strict=True):
            np.testing.assert_array_equal(x, y)
        assert rb.surface is not None
    # DeepSDF's split JSON as DeepSDF writes it: {dataset: {class: [ids]}}
    split = json.loads(splits["train"].read_text())
    assert list(split) == ["ModelNetish"]

    run = tmp_path / "run"
    proc = cli("train", "--config", REPO / "configs" / "shapes_small.yaml", "--data", dest, "--split",
               splits["train"], "--out", run, "--epochs", "2", "--quiet", *SETS, check=True)
    assert "train: 2 epochs" in proc.stdout
    assert sorted(json.loads((run / "shapes.json").read_text())["keys"]) == sorted(r.key for r in a)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    # a DeepSDF root without a split file is an error naming the fix
    with pytest.raises(DataError, match="--split"):
        formats.DataRoot(dest).shapes("train")


def _small_shared_meshes(n: int) -> list[Path]:
    """The ``n`` smallest shared meshes (by file size) from different categories."""
    picks = []
    for cat in sorted(p for p in SHARED_MESHES.iterdir() if p.is_dir()):
        files = sorted(cat.glob("*.off"), key=lambda p: p.stat().st_size)
        if files:
            picks.append(files[0])
    return picks[:n]


@pytest.mark.skipif(not SHARED_MESHES.is_dir(),
                    reason=f"shared ModelNet10 meshes not found at {SHARED_MESHES}")
def test_real_modelnet_meshes(tmp_path):
    src = tmp_path / "meshes"
    picks = _small_shared_meshes(3)
    if not picks:
        pytest.skip(f"no .off meshes below {SHARED_MESHES}")
    for p in picks:
        (src / p.parent.name).mkdir(parents=True, exist_ok=True)
        (src / p.parent.name / p.name).symlink_to(p)
    data = tmp_path / "data"
    proc = prep(src, data)
    recs = records(data)
    assert len(recs) == len(picks)
    assert f"{len(picks)} of {len(picks)} meshes ok" in proc.stdout, proc.stdout
    for rec in recs.values():
        q = rec["sign_quality"]
        assert {"ambiguous", "disagree", "components", "flipped", "back_hits"} <= set(q)
        assert 0 <= q["ambiguous"] <= 0.05 and 0 <= q["disagree"] <= 1
        pos, neg = formats.load_sdf_samples(data / "sdf" / rec["category"] / f"{rec['id']}.npz")
        assert len(pos) + len(neg) == SAMPLES and len(neg) > 0


def test_held_out_folder_is_the_test_split(tmp_path):
    """``--held-out DIR``: every mesh of DIR is a test shape (with its scans), SRC's are training shapes
    (``--test-fraction`` still splits SRC when given); a shape in both folders is a one-line error; the split
    survives sharding and a re-run reuses every mesh."""
    src, held = tmp_path / "train_meshes", tmp_path / "test_meshes"
    write_meshes(src)
    for f in sorted(src.rglob("*_1.*")):  # box_1 and ball_1 move to the held-out folder
        (held / f.parent.name).mkdir(parents=True, exist_ok=True)
        f.rename(held / f.parent.name / f.name)
    data = tmp_path / "data"
    prep(src, data, "--held-out", held, "--scans", "1")
    splits = {s: json.loads((data / "splits" / f"{s}.json").read_text())["deepsdf-ad"]
              for s in ("train", "test")}
    assert splits["test"] == {"ball": ["ball_1"], "box": ["box_1"]}
    assert splits["train"] == {"ball": ["ball_0"], "box": ["box_0", "box_2"]}
    assert sorted(p.name for p in (data / "scans").rglob("*.ply")) == ["ball_1_0.ply", "box_1_0.ply"]
    m = manifest_of(data)
    assert m["params"]["held_out"] == ["ball/ball_1", "box/box_1"] and m["held_out_source"] == str(held)
    again = prep(src, data, "--held-out", held, "--scans", "1")
    assert "(5 unchanged, skipped)" in again.stdout
    # with a test fraction too, SRC's boxes give one more test shape
    frac = tmp_path / "frac"
    prep(src, frac, "--held-out", held, "--test-fraction", "0.5")
    test = json.loads((frac / "splits" / "test.json").read_text())["deepsdf-ad"]
    assert "box_1" in test["box"] and len(test["box"]) == 2 and test["ball"] == ["ball_1"]
    # --test-fraction 1: every shape a test shape (a set measured out of distribution)
    prep(held, tmp_path / "all_test", "--test-fraction", "1")
    assert json.loads((tmp_path / "all_test" / "splits" / "test.json").read_text())["deepsdf-ad"] == {
        "ball": ["ball_1"], "box": ["box_1"]}
    assert_one_line_error(prep(held, tmp_path / "bad", "--test-fraction", "1.5", check=False),
                          "must be in [0, 1], got 1.5")
    # sharded, then merged: the same splits
    sharded = tmp_path / "sharded"
    for i in range(2):
        prep(src, sharded, "--held-out", held, "--shard", f"{i}/2")
    cli("prep", "merge", sharded, "--quiet", check=True)
    assert json.loads((sharded / "splits" / "test.json").read_text())["deepsdf-ad"] == splits["test"]
    # one shape in both folders
    (held / "box" / "box_1.off").rename(held / "box" / "box_0.off")
    assert_one_line_error(prep(src, tmp_path / "both", "--held-out", held, check=False),
                          "is also in")
