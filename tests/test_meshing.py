import numpy as np
import pytest

from deepsdf_ad.data_prep.formats import DataError
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
    # positive: outward normals
    assert abs(mesh.volume - 4 / 3 * np.pi * r**3) / (4 / 3 * np.pi * r**3) < 0.02
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


# ---- coarse-to-fine vs dense -------------------------------------------------------------------------------
def _vertex_distances(a, b) -> np.ndarray:
    """Distance of each vertex of mesh a to the surface of mesh b (exact point-to-triangle)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(b.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(b.faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(np.asarray(a.vertices, np.float32))).numpy()


def _assert_same_mesh(fn, resolution):
    from deepsdf_ad.meshing import adaptive_grid

    dense = mesh_sdf(fn, resolution, method="dense")
    fine = mesh_sdf(fn, resolution, method="adaptive")
    for a, b in ((dense, fine), (fine, dense)):
        assert np.mean(_vertex_distances(a, b) < 1e-4) >= 0.999
    _, stats = adaptive_grid(fn, resolution)
    return stats


def _two_shapes(p: np.ndarray) -> np.ndarray:
    from tests.helpers import box_sdf

    return np.minimum(sphere_sdf(p, 0.35, (0.3, 0.1, 0.0)),
                      box_sdf(p - np.array([-0.4, 0.0, 0.1]), (0.2, 0.3, 0.15)))


@pytest.mark.parametrize("resolution", [65, 96, 128])
def test_adaptive_matches_dense_on_an_analytic_sdf(resolution):
    stats = _assert_same_mesh(_two_shapes, resolution)
    assert stats["levels"] >= 1 and stats["queries"] < 0.5 * stats["dense"]


def test_adaptive_matches_dense_on_a_trained_decoder():
    import torch

    from deepsdf_ad.losses import sdf_loss
    from deepsdf_ad.meshing import model_sdf
    from tests.helpers import tiny_model

    _, model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    index = {"index": torch.zeros(1, dtype=torch.long)}
    centres, radii = torch.tensor([[0.3, 0.1, 0.0], [-0.35, 0.0, 0.1]]), torch.tensor([0.35, 0.25])

    def truth(p):  # two spheres
        return ((p[..., None, :] - centres).norm(dim=-1) - radii).min(dim=-1).values

    for _ in range(300):
        # DeepSDF's distribution: mostly near the surface, some uniform
        k = torch.randint(2, (1, 1536), generator=gen)
        d = torch.randn(1, 1536, 3, generator=gen)
        near = centres[k] + radii[k, None] * d / d.norm(dim=-1, keepdim=True)
        near = near + 0.04 * torch.randn(1, 1536, 3, generator=gen)
        pts = torch.cat([near, torch.rand(1, 512, 3, generator=gen) * 2 - 1], dim=1)
        loss = sdf_loss(model.decode(model.latent.codes(index), pts), truth(pts), 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    fn = model_sdf(model, model.latent.codes(index)[0].detach(), torch.device("cpu"), 65536)
    stats = _assert_same_mesh(fn, 97)
    assert stats["queries"] < 0.6 * stats["dense"]


def test_unknown_method_is_a_data_error():
    with pytest.raises(DataError, match="known: adaptive, dense"):
        mesh_sdf(lambda p: sphere_sdf(p, 0.5), 16, method="octree")
