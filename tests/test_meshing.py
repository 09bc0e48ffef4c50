import numpy as np
import pytest

from data_prep.formats import DataError
from deepsdf_ad.meshing import contours_2d, evaluate_grid, grid_points, marching_cubes, mesh_sdf
from tests.helpers import sphere_sdf


def test_grid_points_order_and_extent():
    g = grid_points(3, 3)
    assert g.shape == (27, 3)
    np.testing.assert_allclose(g[0], [-1, -1, -1])
    np.testing.assert_allclose(g[1], [-1, -1, 0])  # last axis fastest ('ij' order)
    np.testing.assert_allclose(g[-1], [1, 1, 1])


def test_marching_cubes_sphere_area_and_orientation():
    r = 0.6
    mesh = mesh_sdf(lambda p: sphere_sdf(p, r), 96)
    assert abs(mesh.area - 4 * np.pi * r**2) / (4 * np.pi * r**2) < 0.01
    assert abs(mesh.volume - 4 / 3 * np.pi * r**3) / (4 / 3 * np.pi * r**3) < 0.02  # positive: outward normals
    d = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(d - r).max() < 2.0 / 95 * 0.1


def test_off_centre_sphere_lands_where_it_should():
    c = np.array([0.2, -0.1, 0.3])
    mesh = mesh_sdf(lambda p: sphere_sdf(p, 0.3, c), 64)
    np.testing.assert_allclose(mesh.vertices.mean(axis=0), c, atol=5e-3)


def test_empty_field_is_a_clear_error():
    with pytest.raises(DataError, match="no zero crossing"):
        marching_cubes(np.ones((8, 8, 8)))


def test_marching_squares_circle():
    vals = evaluate_grid(lambda p: np.linalg.norm(p, axis=1) - 0.5, 101, 2)
    (c,) = contours_2d(vals)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 0.5, atol=2e-3)
