"""The fast sign (crossing counts of the capped sign mesh) against the fast winding number it replaces, on
meshes where the crossing counts are easy to get wrong."""

import numpy as np
import pytest
import trimesh

from deepsdf_ad.data_prep.meshes import SamplingConfig, SignedDistance, hole_caps, sample_query_points


def boxes(*specs) -> trimesh.Trimesh:
    parts = []
    for extents, centre in specs:
        b = trimesh.creation.box(extents=extents)
        b.apply_translation(centre)
        parts.append(b)
    return trimesh.util.concatenate(parts)


def opened_box() -> trimesh.Trimesh:
    m = trimesh.creation.box(extents=(0.8, 0.6, 0.4))
    return trimesh.Trimesh(m.vertices, m.faces[m.face_normals[:, 0] < 0.9], process=False)


def internal_face_box() -> trimesh.Trimesh:
    """A box split by an internal wall (two triangles at x = 0): its edges have three faces."""
    m = trimesh.creation.box(extents=(0.8, 0.6, 0.4))
    wall = np.array([[0, -0.3, -0.2], [0, 0.3, -0.2], [0, 0.3, 0.2], [0, -0.3, 0.2]])
    v = np.concatenate([m.vertices, wall])
    n = len(m.vertices)
    return trimesh.Trimesh(v, np.concatenate([m.faces, [[n, n + 1, n + 2], [n, n + 2, n + 3]]]), process=True)


def doubled_wall_box() -> trimesh.Trimesh:
    """A closed box plus a flat plate lying in its top face, triangulated the other way, facing down."""
    m = trimesh.creation.box(extents=(0.8, 0.6, 0.4))
    plate = np.array([[-0.4, -0.3, 0.2], [0.4, -0.3, 0.2], [0.4, 0.3, 0.2], [-0.4, 0.3, 0.2]])
    n = len(m.vertices)
    return trimesh.Trimesh(np.concatenate([m.vertices, plate]),
                           np.concatenate([m.faces, [[n, n + 2, n + 1], [n, n + 3, n + 2]]]), process=False)


MESHES = {
    "sphere": lambda: trimesh.creation.icosphere(3, radius=0.5),
    "opened box": opened_box,
    "intersecting boxes": lambda: boxes(((0.8, 0.3, 0.3), (0, 0, 0)), ((0.3, 0.8, 0.3), (0.1, 0.1, 0.05))),
    "internal face": internal_face_box,
    "doubled wall": doubled_wall_box,
}


@pytest.mark.parametrize("name", list(MESHES))
def test_fast_sign_equals_winding_number_sign(name):
    mesh = MESHES[name]()
    q = sample_query_points(mesh, SamplingConfig(samples=20_000), np.random.default_rng(0))
    fast = SignedDistance(mesh)
    slow = SignedDistance(mesh, method="winding")
    sdf_fast, w_fast = fast.signed(q)
    sdf_slow, w_slow = slow.signed(q)
    # the same signs, except where the winding number is 1/2 to within the tolerance of libigl's approximation
    # (points right at the mouth of a hole: 0.14% of the opened box's samples, one of which differs)
    clear = np.abs(w_slow - 0.5) > 0.02
    assert clear.mean() > 0.99 and np.array_equal((sdf_fast < 0)[clear], (sdf_slow < 0)[clear])
    # the fast method measures from open3d's closest point, the other takes open3d's distance: both float32
    np.testing.assert_allclose(np.abs(sdf_fast), np.abs(sdf_slow), rtol=0, atol=1e-6)
    assert np.abs(w_fast - w_slow).max() < 0.02  # the same winding numbers, not just the same signs
    assert fast.counted_share > 0.5  # most points did not need the winding-number sum
    assert fast.side_share > 0.5  # most needed one ray: the closest face's side agreed with its count


def test_closest_face_side_is_known_off_edges_only():
    """``closest``: exact distance, and the side of the (oriented) closest face: -1 inside, +1 outside, 0
    where the closest point is on an edge or corner (the side of one face says nothing there)."""
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    box.faces = box.faces[:, ::-1]  # inward-wound input: the sign mesh is turned outward, the side follows it
    sd = SignedDistance(box)
    q = np.array([[0.1, 0.2, 0.7], [0.1, -0.2, 0.4], [0.7, 0.7, 0.0], [0.7, 0.7, 0.7], [-0.45, 0.1, 0.05]])
    dist, side = sd.closest(q)
    np.testing.assert_allclose(dist, [0.2, 0.1, np.sqrt(0.08), np.sqrt(0.12), 0.05], atol=1e-6)
    assert side.tolist() == [1.0, -1.0, 0.0, 0.0, -1.0]


def test_hole_caps_close_the_mesh():
    mesh = opened_box()
    v, caps = hole_caps(mesh.vertices, mesh.faces)
    closed = trimesh.Trimesh(v, np.concatenate([mesh.faces, caps]), process=False)
    assert len(caps) > 0 and closed.is_watertight and closed.is_winding_consistent
    assert len(hole_caps(*(lambda m: (m.vertices, m.faces))(trimesh.creation.box()))[1]) == 0


def test_method_is_checked():
    with pytest.raises(ValueError):
        SignedDistance(trimesh.creation.box(), method="rays")


def test_coplanar_overlaps_finds_doubled_walls_only():
    from deepsdf_ad.data_prep.meshes import coplanar_overlaps

    box = trimesh.creation.box()
    pairs, unchecked = coplanar_overlaps(box.vertices, box.faces)
    assert len(pairs) == 0 and not unchecked.any()  # the two triangles of a side only share an edge
    m = doubled_wall_box()
    pairs, _ = coplanar_overlaps(m.vertices, m.faces)
    top = set(np.flatnonzero(m.triangles_center[:12, 2] > 0.19))
    assert len(pairs) > 0 and {int(i) for i in pairs.ravel()} == top | {12, 13}


def test_no_points():
    for method in ("fast", "winding"):
        sdf, w = SignedDistance(opened_box(), method=method).signed(np.zeros((0, 3)))
        assert sdf.shape == w.shape == (0,)
