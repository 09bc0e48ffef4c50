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
