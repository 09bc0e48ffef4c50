"""Signs on closed, opened and messy meshes, against analytic truth; the fast winding number against the
slow reference; exact distances; the sample distribution."""

import numpy as np
import pytest
import trimesh

from deepsdf_ad.data_prep.meshes import (
    SamplingConfig,
    SignedDistance,
    clean_for_sign,
    near_surface_count,
    orient_faces,
    sample_query_points,
    sign_quality,
    winding_number_reference,
)
from tests.helpers import box_sdf, sphere_sdf

HALF = (0.4, 0.3, 0.2)
# share of near-surface samples with the right sign (docs/benchmarks.md: 99.5% on closed and opened meshes)
TARGET = 0.995


def box_mesh() -> trimesh.Trimesh:
    return trimesh.creation.box(extents=2 * np.asarray(HALF))


def sphere_mesh() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=4, radius=0.5)


def samples(mesh, n=20_000, seed=0):
    cfg = SamplingConfig(samples=n)
    q = sample_query_points(mesh, cfg, np.random.default_rng(seed))
    return q, np.arange(n) < near_surface_count(cfg)


def near_accuracy(mesh, truth_sdf, seed=0) -> float:
    q, near = samples(mesh, seed=seed)
    truth_inside = truth_sdf(q) < 0
    ok = np.abs(truth_sdf(q)) > 1e-6  # points exactly on the surface have no sign
    inside = SignedDistance(mesh)(q) < 0
    return float(np.mean((inside == truth_inside)[near & ok]))


def open_box() -> trimesh.Trimesh:
    """The closed box with its whole +x side removed (the issue's example)."""
    m = box_mesh()
    return trimesh.Trimesh(m.vertices, m.faces[m.face_normals[:, 0] < 0.9], process=False)


def messy_sphere(seed=0) -> trimesh.Trimesh:
    """The sphere with 5% of its faces removed, 30% flipped and 10% duplicated with the opposite winding."""
    rng = np.random.default_rng(seed)
    m = sphere_mesh()
    f = m.faces[rng.random(len(m.faces)) >= 0.05].copy()
    flip = rng.random(len(f)) < 0.3
    f[flip] = f[flip][:, ::-1]
    dup = f[rng.random(len(f)) < 0.1][:, ::-1]
    return trimesh.Trimesh(m.vertices, np.concatenate([f, dup]), process=False)


def test_fast_winding_number_matches_slow_reference():
    rng = np.random.default_rng(1)
    for mesh in (trimesh.creation.icosphere(2, radius=0.5), open_box()):
        q = rng.uniform(-0.7, 0.7, size=(300, 3))
        sd = SignedDistance(mesh, orient=False)
        ref = winding_number_reference(mesh.vertices, mesh.faces, q)
        fast = sd.winding(q)
        assert np.abs(fast - ref).max() < 0.02
        assert np.mean((ref > 0.5) == (fast > 0.5)) > 0.99


def test_reference_winding_number_is_integer_on_closed_mesh():
    q = np.array([[0.0, 0.0, 0.0], [0.1, 0.05, -0.1], [0.9, 0.0, 0.0], [0.0, 0.0, 0.3]])
    w = winding_number_reference(box_mesh().vertices, box_mesh().faces, q)
    np.testing.assert_allclose(w, [1.0, 1.0, 0.0, 0.0], atol=1e-9)


@pytest.mark.parametrize("name", ["box", "sphere"])
def test_signs_on_closed_meshes(name):
    mesh, truth = (box_mesh(), box_sdf) if name == "box" else (sphere_mesh(), None)
    if truth is None:  # the truth of the polyhedral sphere: an exact inside test on the closed mesh
        def truth(p):
            return np.where(winding_number_reference(mesh.vertices, mesh.faces, p) > 0.5, -1.0, 1.0) \
                * SignedDistance(mesh).unsigned(p)
        q, near = samples(mesh, n=3000)
        assert np.mean(((SignedDistance(mesh)(q) < 0) == (truth(q) < 0))[near]) >= TARGET
    else:
        assert near_accuracy(mesh, truth) >= TARGET


def test_signs_on_box_with_a_missing_side():
    """Ray parity labels much of this box's inside as outside; the winding number must not."""
    import open3d as o3d

    mesh = open_box()
    assert near_accuracy(mesh, lambda p: box_sdf(p, HALF)) >= TARGET
    # the baseline the issue names really fails here, so the test can tell the methods apart
    q, near = samples(mesh)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    parity = scene.compute_signed_distance(o3d.core.Tensor(q.astype(np.float32))).numpy() < 0
    truth = box_sdf(q, HALF) < 0
    assert np.mean(parity[truth]) < 0.9  # measured 0.86 with open3d 0.19: 1 in 7 inside points wrong


def test_signs_on_opened_flipped_duplicated_sphere():
    mesh = messy_sphere()
    acc = near_accuracy(mesh, lambda p: sphere_sdf(p, 0.5))
    assert acc >= TARGET
    raw = SignedDistance(mesh, orient=False)
    q, near = samples(mesh, seed=0)
    raw_acc = np.mean(((raw(q) < 0) == (sphere_sdf(q, 0.5) < 0))[near])
    assert raw_acc < 0.9  # without the repairs the same mesh gets many signs wrong


def test_orientation_turns_an_inverted_component_outward():
    a = box_mesh()
    b = trimesh.creation.box(extents=(0.2, 0.2, 0.2))
    b.apply_translation((0.7, 0.0, 0.0))
    b.invert()
    both = trimesh.util.concatenate([a, b])
    oriented, info = orient_faces(clean_for_sign(both))
    assert info.components == 2 and info.flipped == 1 and info.back_hits < 0.01
    assert oriented.is_winding_consistent and oriented.volume > 0


def test_exact_distances_against_analytic_box():
    q, _ = samples(box_mesh(), n=20_000, seed=3)
    sdf = SignedDistance(box_mesh())(q)
    np.testing.assert_allclose(sdf, box_sdf(q, HALF), atol=2e-6)


def test_distances_on_sphere_within_tessellation_error():
    mesh = trimesh.creation.icosphere(5, radius=0.5)
    q, _ = samples(mesh, n=10_000, seed=4)
    err = np.abs(SignedDistance(mesh)(q) - sphere_sdf(q, 0.5))
    assert err.max() < 2e-3  # the chord error of a 5-times subdivided icosphere of radius 0.5


def test_sample_distribution_proportions():
    cfg = SamplingConfig(samples=50_000)
    mesh = box_mesh()
    q = sample_query_points(mesh, cfg, np.random.default_rng(5))
    n_near = near_surface_count(cfg)
    assert len(q) == 50_000 and n_near == 47_000  # 47/50 near the surface, 3/50 uniform
    uniform = q[n_near:]
    assert np.abs(uniform).max() <= 1.0
    assert abs(uniform.mean()) < 0.03 and abs(np.var(uniform) - 1 / 3) < 0.02
    d = np.abs(SignedDistance(mesh).unsigned(q[:n_near]))
    half = n_near - n_near // 2
    ratio = np.median(d[:half]) / np.median(d[half:])
    # variances 0.005 and 0.0005: standard deviations differ by sqrt(10)
    assert abs(ratio - np.sqrt(10)) < 0.4
    cfg2 = SamplingConfig(samples=10_000, variances=(0.01, 0.001), uniform_fraction=0.5)
    assert near_surface_count(cfg2) == 5000


def test_sign_quality_flags_an_open_shell():
    rng = np.random.default_rng(6)
    closed = sphere_mesh()
    bowl = trimesh.Trimesh(closed.vertices, closed.faces[closed.triangles_center[:, 2] < 0], process=False)
    figures = {}
    for name, mesh in (("closed", closed), ("bowl", bowl)):
        q, near = samples(mesh, n=10_000)
        sd = SignedDistance(mesh)
        _, w = sd.signed(q)
        figures[name] = sign_quality(sd, q, w, near, rng)
    assert figures["closed"]["ambiguous"] == 0 and figures["closed"]["disagree"] < 0.005
    # a hemisphere has no inside: its winding numbers near the rim sit at 1/2, and the visibility test
    # disagrees with them on the bowl's concave side
    assert figures["bowl"]["ambiguous"] > 0.01 and figures["bowl"]["disagree"] > 0.2
