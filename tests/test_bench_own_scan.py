"""bench_own_scan's pose error: how far a found transform is from undoing the capture's true pose."""

import importlib.util
import math

import numpy as np

from deepsdf_ad.pose import yaw_matrix
from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("bench_own_scan", REPO / "benchmarks" / "bench_own_scan.py")
bos = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bos)


def test_pose_error_is_zero_for_the_inverse_and_measures_what_is_left():
    pose = bos.random_pose("z", "-y", np.random.default_rng(3))
    turn, scale, shift = bos.pose_error(np.linalg.inv(pose), pose)
    assert turn < 1e-4 and abs(scale - 1) < 1e-9 and shift < 1e-6 * np.abs(pose).max()
    off = np.eye(4)
    off[:3, :3] = 1.1 * yaw_matrix(math.radians(30.0), 2)
    off[:3, 3] = [0.0, 0.05, 0.0]
    turn, scale, shift = bos.pose_error(off @ np.linalg.inv(pose), pose)
    assert abs(turn - 30.0) < 1e-6 and abs(scale - 1.1) < 1e-9 and abs(shift - 0.05) < 1e-9


def test_oracle_scan_is_the_cleaned_capture_in_its_true_frame(tmp_path):
    """The oracle input: the capture (object, floor patch, strays, posed) cleaned and taken back by the true
    pose; the floor goes, the object's points come back where they were (up to the depth noise)."""
    from deepsdf_ad.data_prep import formats

    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.4, 0.4, (3000, 3))
    pts[np.arange(3000), rng.integers(0, 3, 3000)] = 0.4 * rng.choice([-1.0, 1.0], 3000)  # a box's faces
    pts[:, 2] = np.abs(pts[:, 2])  # its upper half: the lowest points lie at z = 0
    camera = np.array([2.0, -2.0, 1.5])
    pose = bos.random_pose("z", "y", rng)
    cap = bos.capture(pts, camera, "z", rng)
    posed = tmp_path / "capture.ply"
    formats.save_points_ply(posed, cap @ pose[:3, :3].T + pose[:3, 3])
    out = bos.oracle_scan(tmp_path, posed, np.linalg.inv(pose), camera.tolist())
    back = formats.load_points(out).points
    meta = formats.read_json(out.with_suffix(".json"))
    assert meta["camera"] == camera.tolist() and meta["normalization"]["scale"] == 1.0
    assert len(back) < len(cap) and len(back) > 0.8 * len(pts)  # the floor patch dropped, the object kept
    from scipy.spatial import cKDTree

    assert np.median(cKDTree(pts).query(back)[0]) < 0.02  # back in the true frame


def test_repeat_measures_the_search_seed_on_cached_records(tmp_path, capsys):
    """``--repeat`` reconstructs each canonical scan again with another search seed and adds its chamfer to
    the cached record without redoing the rest; the summary says how far two searches of one scan differ."""
    import json

    from deepsdf_ad.config import load_config
    from deepsdf_ad.train import train
    from tests.helpers import TINY
    from tests.test_article import tiny_shapes

    data = tiny_shapes(tmp_path / "shapes", ("table",), 3, 0.34, scans=1)
    cfg = load_config(REPO / "configs" / "shapes_small.yaml", TINY + ["reconstruct.iterations=3"])
    run = train(cfg, data, tmp_path / "run", epochs=2, device="cpu", progress=False).path
    args = ["--data", str(data), "--run", str(run), "--work", str(tmp_path / "work"), "--limit", "1",
            "--resolution", "16", "--iterations", "3"]
    assert bos.main(args) == 0
    cached = next((tmp_path / "work" / "results").glob("*.json"))
    before = json.loads(cached.read_text())
    assert math.isnan(before.get("repeat", math.nan))
    capsys.readouterr()
    assert bos.main([*args, "--repeat"]) == 0
    after = json.loads(cached.read_text())
    assert after["repeat"] > 0 and {k: v for k, v in after.items() if k != "repeat"} == before
    assert "repeat (the canonical scan, another search seed) / canonical median" in capsys.readouterr().out
