import os
import stat

import numpy as np
import pytest

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError


def test_sdf_samples_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(10, 4)).astype(np.float32)
    neg = rng.normal(size=(7, 4)).astype(np.float32)
    formats.save_sdf_samples(tmp_path / "a" / "x.npz", pos, neg)
    p2, n2 = formats.load_sdf_samples(tmp_path / "a" / "x.npz")
    np.testing.assert_array_equal(p2, pos)
    np.testing.assert_array_equal(n2, neg)
    assert p2.dtype == np.float32
    assert not list((tmp_path / "a").glob(".deepsdf-ad-tmp-*")), "temp file left behind"


def test_normalization_round_trip(tmp_path):
    formats.save_normalization(tmp_path / "n.npz", np.array([1.0, -2.0, 3.0]), 0.25)
    off, scale = formats.load_normalization(tmp_path / "n.npz")
    np.testing.assert_allclose(off, [1, -2, 3])
    assert scale == 0.25


def test_points_ply_round_trip_with_comments(tmp_path):
    pts = np.random.default_rng(1).normal(size=(50, 3))
    nrm = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    formats.save_points_ply(tmp_path / "p.ply", pts, nrm, comments=("camera 1 2 3",))
    cloud = formats.load_points(tmp_path / "p.ply")
    np.testing.assert_allclose(cloud.points, pts, atol=1e-6)
    np.testing.assert_allclose(cloud.normals, nrm, atol=1e-6)
    assert "camera 1 2 3" in cloud.comments


def test_split_round_trip(tmp_path):
    formats.write_split(tmp_path / "s.json", {"chair": ["b", "a"], "sofa": ["c"]})
    assert formats.read_split(tmp_path / "s.json") == [
        ("deepsdf-ad", "chair", "a"), ("deepsdf-ad", "chair", "b"), ("deepsdf-ad", "sofa", "c")]


def test_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, pos=np.array([{"a": 1}], dtype=object), neg=np.zeros((1, 4), np.float32))
    with pytest.raises(DataError, match="pickle"):
        formats.load_sdf_samples(path)


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04trunc"])
def test_corrupt_npz_is_a_data_error(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match="bad.npz"):
        formats.load_sdf_samples(path)


def test_wrong_shape_is_a_data_error(tmp_path):
    np.savez(tmp_path / "w.npz", pos=np.zeros((3, 7), np.float32), neg=np.zeros((3, 7), np.float32))
    with pytest.raises(DataError, match="shape"):
        formats.load_sdf_samples(tmp_path / "w.npz")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with formats.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Files written through a temp file and a rename get 0o666 & ~umask, as a file written in place would
    (mkstemp alone makes them 0o600)."""
    old = os.umask(umask)
    try:
        assert formats._umask() == umask  # read without changing it
        formats.write_json(tmp_path / "a.json", {"x": 1})
        zeros = np.zeros((2, 4), np.float32)
        formats.save_sdf_samples(tmp_path / "s.npz", zeros, zeros)
        with formats.atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"abc")
        plain = tmp_path / "plain.txt"
        plain.write_text("in place")
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == mode  # the reference: what open() makes
    for name in ("a.json", "s.npz", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
