"""Cleaning a capture: the floor under the object goes, the object stays, stray points go; in any units."""

from __future__ import annotations

import numpy as np
import pytest

from deepsdf_ad.capture import PLANE_TOL, clean_capture, cloud_size
from deepsdf_ad.data_prep.formats import DataError


def chair_points(rng: np.random.Generator, n: int = 3000) -> np.ndarray:
    """Surface-ish points of a chair standing on z = 0: four legs, a seat, a back (metres)."""
    parts = []
    for x in (-0.2, 0.2):  # legs
        for y in (-0.2, 0.2):
            h = rng.uniform(0.0, 0.45, n // 12)
            a = rng.uniform(0, 2 * np.pi, n // 12)
            parts.append(np.c_[x + 0.02 * np.cos(a), y + 0.02 * np.sin(a), h])
    seat = rng.uniform([-0.25, -0.25, 0.45], [0.25, 0.25, 0.5], (n // 3, 3))
    seat[:, 2] = np.where(rng.random(len(seat)) < 0.5, 0.45, 0.5)
    back = rng.uniform([-0.25, 0.2, 0.5], [0.25, 0.25, 0.95], (n // 3, 3))
    back[:, 1] = np.where(rng.random(len(back)) < 0.5, 0.2, 0.25)
    return np.concatenate(parts + [seat, back])


def scene(rng: np.random.Generator, rotation: np.ndarray, scale: float, outliers: float = 0.02):
    """A chair, a floor patch under it (twice its footprint), stray points; turned and scaled. Returns the
    points and the labels (0 object, 1 floor, 2 outlier)."""
    obj = chair_points(rng)
    floor = np.c_[rng.uniform(-0.6, 0.6, (3000, 2)), rng.normal(0, 0.002, 3000)]
    lo, hi = np.r_[obj, floor].min(axis=0), np.r_[obj, floor].max(axis=0)
    stray = rng.uniform(lo - 0.1, hi + 0.1, (int(outliers * (len(obj) + len(floor))), 3))
    pts = np.concatenate([obj, floor, stray])
    labels = np.r_[np.zeros(len(obj)), np.ones(len(floor)), np.full(len(stray), 2)].astype(int)
    return scale * pts @ rotation.T, labels


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


@pytest.mark.parametrize("scale", [1.0, 1000.0, 1e-3])
def test_floor_and_strays_go_and_the_object_stays(scale):
    rng = np.random.default_rng(0)
    rot = _rotation(rng)
    pts, labels = scene(rng, rot, scale)
    out = clean_capture(pts, rng=np.random.default_rng(1))
    kept = np.zeros(len(pts), bool)
    kept[out.kept] = True
    # the floor is found, with its normal pointing up to the chair
    assert out.plane is not None
    assert out.plane.normal @ rot[:, 2] > 0.999
    # every object point off the floor's band is kept (feet within the band go with the floor, by design)
    height = (pts / scale) @ rot[:, 2]
    band = 2 * PLANE_TOL * cloud_size(pts) / scale
    assert kept[(labels == 0) & (height > band)].all()
    assert kept[labels == 0].mean() > 0.98
    assert not kept[labels == 1].any()
    assert kept[labels == 2].mean() < 0.2  # strays: those that touch the chair may stay
    counts = out.counts()
    assert counts["floor"] >= (labels == 1).sum() and counts["outlier"] > 0.5 * (labels == 2).sum()
    np.testing.assert_array_equal(out.points, pts[out.kept])


def test_keep_floor_keeps_the_plane_and_still_reports_it():
    rng = np.random.default_rng(0)
    pts, labels = scene(rng, np.eye(3), 1.0, outliers=0.0)
    out = clean_capture(pts, keep_floor=True)
    assert out.plane is not None and out.counts()["floor"] == 0
    assert len(out.kept) == len(pts)


def test_a_box_face_is_not_a_floor():
    """A box alone: its largest face has every other point behind it, but it spreads no wider than the box."""
    rng = np.random.default_rng(0)
    faces = []
    for axis, half in ((0, 0.3), (1, 0.2), (2, 0.1)):
        p = rng.uniform(-1, 1, (1500, 3)) * [0.3, 0.2, 0.1]
        p[:, axis] = half
        faces.append(p)
    out = clean_capture(np.concatenate(faces))
    assert out.plane is None and out.counts()["floor"] == 0


def test_crop_drops_what_lies_beyond_the_radius():
    rng = np.random.default_rng(0)
    obj = chair_points(rng)
    d = rng.normal(size=(1500, 3))
    # a second object, half as big
    ball = 0.3 * d / np.linalg.norm(d, axis=1, keepdims=True) + [1.5, 0.0, 0.5]
    pts = np.concatenate([obj, ball])
    assert clean_capture(pts).counts()["outlier"] == 0  # too big a group to be strays: it stays ...
    out = clean_capture(pts, crop=1.0)  # ... unless cropped
    assert out.counts()["crop"] == len(ball)
    np.testing.assert_array_equal(out.kept, np.arange(len(obj)))


def test_unusable_captures_are_refused_in_one_line():
    rng = np.random.default_rng(0)
    floor = np.c_[rng.uniform(-1, 1, (2000, 2)), np.zeros(2000)]
    with pytest.raises(DataError, match="all one plane"):
        clean_capture(floor)
    with pytest.raises(DataError, match="3 finite point"):
        clean_capture(rng.normal(size=(3, 3)))
    with pytest.raises(DataError, match="--crop 0.001 is smaller"):
        clean_capture(chair_points(rng), crop=1e-3)


def test_nan_points_are_dropped_and_counted():
    rng = np.random.default_rng(0)
    pts = chair_points(rng)
    pts[[5, 17]] = np.nan
    out = clean_capture(pts)
    np.testing.assert_array_equal(out.dropped["not finite"], [5, 17])
    assert np.isfinite(out.points).all()


def test_degenerate_captures_are_refused():
    line = np.c_[np.linspace(0, 1, 50), np.zeros(50), np.zeros(50)]
    with pytest.raises(DataError, match="one line"):
        clean_capture(line)
    with pytest.raises(DataError, match="coincide"):
        clean_capture(np.ones((40, 3)))
