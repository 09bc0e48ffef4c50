import numpy as np
import trimesh

from deepsdf_ad.data_prep.meshes import (
    SamplingConfig,
    SignedDistance,
    normalization,
    normalized_mesh,
    sample_query_points,
)
from tests.helpers import box_sdf, sphere_sdf


def test_normalization_is_deepsdf_convention():
    mesh = trimesh.creation.box(extents=(4.0, 2.0, 2.0))
    mesh.apply_translation((10.0, -5.0, 3.0))
    offset, scale = normalization(mesh)
    np.testing.assert_allclose(offset, [-10.0, 5.0, -3.0])
    assert np.isclose(scale, 1.0 / (1.03 * np.sqrt(4 + 1 + 1)))
    nm, _, _ = normalized_mesh(mesh)
    r = np.linalg.norm(nm.vertices, axis=1).max()
    assert np.isclose(r, 1 / 1.03)


def test_signs_and_distances_on_sphere():
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, size=(20000, 3))
    sdf = SignedDistance(mesh)(pts)
    truth = sphere_sdf(pts, 0.5)
    far = np.abs(truth) > 0.005  # tessellation error of the icosphere is ~1e-3
    assert (np.sign(sdf[far]) == np.sign(truth[far])).mean() == 1.0
    assert np.abs(sdf - truth).max() < 0.005


def test_signs_and_distances_on_box():
    half = np.array([0.4, 0.3, 0.2])
    mesh = trimesh.creation.box(extents=2 * half)
    pts = np.random.default_rng(1).uniform(-0.6, 0.6, size=(20000, 3))
    sdf = SignedDistance(mesh)(pts)
    truth = box_sdf(pts, half)
    # exact point-to-triangle distance and exact sign on a closed box
    np.testing.assert_allclose(sdf, truth, atol=1e-5)


def test_sample_distribution_proportions():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    cfg = SamplingConfig(samples=50_000)
    q = sample_query_points(mesh, cfg, np.random.default_rng(0))
    assert q.shape == (50_000, 3)
    n_uniform = round(50_000 * 3 / 50)
    uni = q[-n_uniform:]
    assert np.abs(uni).max() <= 1.0 and np.abs(uni.mean(axis=0)).max() < 0.03
    near = q[:-n_uniform]
    d = np.linalg.norm(near, axis=1) - 0.5
    half = len(near) - len(near) // 2
    # two noise levels, variance 0.005 and 0.0005 (std of the radial offset ~ the noise std)
    assert abs(np.std(d[:half]) - np.sqrt(0.005)) < 0.006
    assert abs(np.std(d[half:]) - np.sqrt(0.0005)) < 0.002
