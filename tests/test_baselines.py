"""The completion baselines: the nearest training shape and Poisson of the scan."""

import numpy as np

from deepsdf_ad.baselines import nearest_shape, poisson_mesh


def _sphere(n, r, rng, centre=(0, 0, 0)):
    d = rng.normal(size=(n, 3))
    return r * d / np.linalg.norm(d, axis=1, keepdims=True) + np.asarray(centre)


def test_nearest_shape_is_the_one_the_partial_came_from():
    rng = np.random.default_rng(0)
    shapes = [_sphere(3000, r, rng) for r in (0.3, 0.5, 0.7)]
    partial = _sphere(400, 0.5, rng)
    partial = partial[partial[:, 2] > 0.1]  # one side only
    k, scores = nearest_shape(partial, shapes)
    assert k == 1 and scores[1] < 1e-3 < scores[0] and scores[1] < scores[2]


def test_poisson_of_a_sphere_is_the_sphere():
    rng = np.random.default_rng(0)
    pts = _sphere(5000, 0.5, rng)
    mesh = poisson_mesh(pts, pts / 0.5)
    assert len(mesh.faces) > 100
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(r) - 0.5) < 0.02
    # without normals they are estimated and oriented
    assert len(poisson_mesh(pts, None).faces) > 100
