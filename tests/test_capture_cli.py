"""``deepsdf-ad reconstruct`` of a capture in an unknown frame, end to end: a tiny run trained on two boxes (y
up), and a scan of one of them turned about y, scaled by 1000, shifted, on a floor patch with stray points."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import trimesh

from deepsdf_ad.data_prep import formats
from deepsdf_ad.metrics import chamfer_squared
from deepsdf_ad.pose import POOR_FIT
from tests.helpers import REPO, TINY, assert_one_line_error, box_sdf, cli

HALVES = ((0.75, 0.45, 0.3), (0.6, 0.3, 0.6))
"""The training boxes' half extents (each reaches about the unit sphere, as normalised meshes do)."""


@pytest.fixture(scope="module")
def box_run(tmp_path_factory):
    return train_box_run(tmp_path_factory.mktemp("boxes"))


def train_box_run(base):
    """``base/run``: a tiny run that knows the two boxes (trained in-process, seconds)."""
    from deepsdf_ad.config import load_config
    from deepsdf_ad.train import train

    rng = np.random.default_rng(0)
    for k, half in enumerate(HALVES):
        surf = trimesh.creation.box(extents=2 * np.asarray(half)).sample(3000, seed=k)
        p = np.concatenate([surf + rng.normal(0, 0.03, surf.shape), rng.uniform(-1, 1, (1500, 3))])
        s = box_sdf(p, half)
        samples = np.c_[p, s]
        formats.save_sdf_samples(base / "data" / "sdf" / "box" / f"b{k}.npz", samples[s > 0], samples[s <= 0])
    formats.write_split(base / "data" / "splits" / "train.json", {"box": ["b0", "b1"]})
    cfg = load_config(REPO / "configs" / "shapes_small.yaml",
                      TINY + ["model.decoder.hidden=[64,64,64,64]", "train.checkpoint_every=400",
                              "mesh.resolution=32", "train.samples_per_shape=1024",
                              "reconstruct.iterations=150", "reconstruct.frame_up=y",
                              "reconstruct.precision=fp32"])
    train(cfg, base / "data", base / "run", epochs=400, device="cpu", progress=False)
    return base / "run"


def _view(half, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points and normals of the box faces a camera at (1, 0.6, 0.8) sees (normalised frame)."""
    mesh = trimesh.creation.box(extents=2 * np.asarray(half))
    pts, face = trimesh.sample.sample_surface(mesh, 4 * n, seed=1)
    normals = mesh.face_normals[face]
    seen = normals @ np.array([1.0, 0.6, 0.8]) > 0
    return pts[seen][:n], normals[seen][:n]


def _pose(yaw_deg: float, scale: float, shift) -> np.ndarray:
    """Normalised -> input: turn about y, scale, shift."""
    a = math.radians(yaw_deg)
    r = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = scale * r, shift
    return m


def _mesh_points(path, n=20000) -> np.ndarray:
    return np.asarray(trimesh.load(path, process=False).sample(n, seed=0))


def test_scan_in_any_frame_comes_back_in_its_own_frame(box_run, tmp_path):
    rng = np.random.default_rng(0)
    half = HALVES[0]
    pts, normals = _view(half, 2500, rng)
    truth = np.asarray(trimesh.creation.box(extents=2 * np.asarray(half)).sample(20000, seed=2))
    # the canonical scan: its sidecar says it is in the normalised frame already
    canon = tmp_path / "canon.ply"
    formats.save_points_ply(canon, pts, normals)
    formats.write_json(tmp_path / "canon.json", {"normalization": {"offset": [0, 0, 0], "scale": 1.0}})
    cli("reconstruct", canon, "--run", box_run, "--out", tmp_path / "canon_mesh.ply", check=True)
    assert not (tmp_path / "canon_mesh.json").exists()  # a known frame: nothing searched, nothing to record
    base = chamfer_squared(_mesh_points(tmp_path / "canon_mesh.ply"), truth)
    # the capture: on a floor patch twice the box's footprint, with 2% strays, then turned, scaled and shifted
    floor = np.c_[rng.uniform(-1.5, 1.5, 2500), np.full(2500, -half[1]), rng.uniform(-1.2, 1.2, 2500)]
    floor = floor[np.abs(floor[:, 0]) > half[0] + 0.02]  # not under the box (it hides that part)
    stray = rng.uniform(-1.6, 1.6, (int(0.02 * (len(pts) + len(floor))), 3))
    y = np.concatenate([pts, floor, stray])
    pose = _pose(40.0, 1000.0, [120.0, -35.0, 900.0])
    x = y @ pose[:3, :3].T + pose[:3, 3]
    capture = tmp_path / "capture.ply"
    formats.save_points_ply(capture, x)
    out = tmp_path / "capture_mesh.ply"
    proc = cli("reconstruct", capture, "--run", box_run, "--out", out, check=True)
    assert "warning" not in proc.stderr, proc.stderr
    assert "no camera position known" in proc.stderr  # a note: bare points pin the scale less well
    assert "searched (up floor" in proc.stdout
    # the mesh is in the input's frame: back into the normalised one by the true pose, it is near the
    # canonical result (measured: chamfer 3.0e-3 vs 0.6e-3; the scale is found 3% small, as the run's shapes
    # allow), far from the bounding-box estimate's in the capture's own orientation (57e-3)
    back = (_mesh_points(out) - pose[:3, 3]) @ pose[:3, :3] / 1000.0**2
    posed = chamfer_squared(back, truth)
    old = tmp_path / "old_mesh.ply"
    cli("reconstruct", capture, "--run", box_run, "--out", old, "--no-pose-search", check=True)
    assert not old.with_suffix(".json").exists()
    old = chamfer_squared((_mesh_points(old) - pose[:3, 3]) @ pose[:3, :3] / 1000.0**2, truth)
    assert posed < base + 4e-3 and posed < 0.2 * old, (posed, base, old)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["deepsdf-ad"] == "reconstruct" and record["transform"]["up"] == "floor"
    found = np.asarray(record["transform"]["matrix"])
    assert record["transform"]["scale"] == pytest.approx(1e-3, rel=0.06)
    # identity, up to the box's turns
    turn = found[:3, :3] @ pose[:3, :3] / (record["transform"]["scale"] * 1000.0)
    assert np.abs(np.abs(turn) - np.eye(3)).max() < math.radians(3)
    assert record["fit"]["median_abs_sdf"] < POOR_FIT and not record["fit"]["poor"]
    dropped = record["points"]["dropped"]
    assert dropped["floor"] >= 0.95 * len(floor) and dropped["outlier"] > 0
    assert record["points"]["dropped_indices"] == "capture_mesh.dropped.npy"  # over 1,000: beside it
    rows = np.load(out.with_suffix(".dropped.npy"), allow_pickle=False)
    assert (len(rows) == sum(dropped.values())
            and set(rows[:, 1]) <= set(range(len(record["points"]["reasons"]))))
    floor_rows = rows[rows[:, 1] == record["points"]["reasons"].index("floor"), 0]
    is_floor = (floor_rows >= len(pts)) & (floor_rows < len(pts) + len(floor))
    assert is_floor.sum() >= 0.99 * len(floor)
    low = floor_rows[floor_rows < len(pts)]  # box points the floor took: only those within its band
    assert (pts[low, 1] < -half[1] + 0.05).all()
    # the flags: the up axis given, the floor kept, a crop wide enough to keep everything
    proc = cli("reconstruct", capture, "--run", box_run, "--out", out, "--up", "y", "--keep-floor",
               "--crop", "5000", check=True)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["transform"]["up"] == "y" and record["floor"]["removed"] is False
    assert record["points"]["dropped"]["floor"] == 0 and record["points"]["dropped"]["crop"] == 0
    assert (isinstance(record["points"]["dropped_indices"], dict)
            and not out.with_suffix(".dropped.npy").exists())
    # a poor fit (the points of another kind of object: a ball, for a run of boxes) warns once
    d = rng.normal(size=(2000, 3))
    ball = 500.0 * d / np.linalg.norm(d, axis=1, keepdims=True) * (1 + 0.3 * np.sin(7 * d[:, :1]))
    formats.save_points_ply(tmp_path / "blob.ply", ball)
    proc = cli("reconstruct", tmp_path / "blob.ply", "--run", box_run, "--out", tmp_path / "blob.ply.obj",
               "--up", "y", check=True)
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "poor fit" in warnings[0] and "--up" in warnings[0], proc.stderr


def test_capture_flags_and_bad_captures_fail_in_one_line(box_run, tmp_path):
    rng = np.random.default_rng(0)
    for bad in ("0", "-1", "nan", "big"):
        proc = cli("reconstruct", tmp_path / "x.ply", "--run", box_run, "--out", tmp_path / "o.ply",
                   "--crop", bad)
        assert proc.returncode == 2 and "--crop" in proc.stderr
    proc = cli("reconstruct", tmp_path / "x.ply", "--run", box_run, "--out", tmp_path / "o.ply", "--up", "w")
    assert proc.returncode == 2 and "--up" in proc.stderr
    floor = np.c_[rng.uniform(-1, 1, (500, 2)), np.zeros(500)]
    formats.save_points_ply(tmp_path / "floor.ply", floor)
    assert_one_line_error(cli("reconstruct", tmp_path / "floor.ply", "--run", box_run, "--out",
                              tmp_path / "f.ply"),
                          "floor.ply", "all one plane", "--keep-floor")
    formats.save_points_ply(tmp_path / "three.ply", rng.normal(size=(3, 3)))
    assert_one_line_error(cli("reconstruct", tmp_path / "three.ply", "--run", box_run, "--out",
                              tmp_path / "t.ply"),
                          "three.ply", "at least")
    # a user's file where the record would go is never replaced
    pts, _ = _view(HALVES[0], 800, rng)
    formats.save_points_ply(tmp_path / "s.ply", pts * 10)
    (tmp_path / "m.json").write_text('{"mine": 1}')
    assert_one_line_error(cli("reconstruct", tmp_path / "s.ply", "--run", box_run, "--out",
                              tmp_path / "m.ply"),
                          "m.json", "not a reconstruction record")
    assert json.loads((tmp_path / "m.json").read_text()) == {"mine": 1}
