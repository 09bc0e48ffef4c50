"""Local latent grids: indexing and interpolation on hand-made cases, a grid fitted to two separated analytic
spheres, the occupancy mask and the mesher's skipping, the grid encoder's permutation invariance, and the CLI
path (prep -> train with a grid -> reconstruct from a scan -> eval) on tiny sizes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import trimesh

from deepsdf_ad.config import ConfigError, load_config
from deepsdf_ad.meshing import EMPTY_SDF, adaptive_grid, marching_cubes, mesh_sdf, model_sdf
from deepsdf_ad.metrics import chamfer_squared, surface_points
from deepsdf_ad.models import build_model
from deepsdf_ad.models.grid import GridGeometry
from deepsdf_ad.reconstruct import Observations, observations_from_samples, optimise_codes
from tests.helpers import REPO, TINY, assert_one_line_error, cli

SPHERES = (((-0.5, 0.0, 0.0), 0.3), ((0.5, 0.1, 0.0), 0.25))


def grid_model(blend: str = "interpolate", cells: int = 2, size: int = 4, hidden: int = 32, shapes: int = 1,
               source: str = "grid", extra: list[str] | None = None):
    torch.manual_seed(0)
    kw = f"{{cells: {cells}, blend: {blend}}}" if source == "grid" else \
        f"{{cells: {cells}, hidden: 16, blocks: 2, points: 64}}"
    cfg = load_config(None,
                      [f"model.decoder.hidden=[{hidden},{hidden},{hidden}]", "model.decoder.latent_in=[2]",
                             "model.decoder.dropout=0.0", f"model.latent.size={size}",
                             f"model.latent.source={source}", f"model.latent.kwargs={kw}", *(extra or [])])
    return cfg, build_model(3, cfg.model.decoder, cfg.model.latent, shapes)


class Probe(torch.nn.Module):
    """A 'decoder' that returns its inputs, to see exactly which code and coordinates it is given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, z, xyz):
        self.seen.append((z.detach().clone(), xyz.detach().clone()))
        return z[..., 0]


def distinct_grid(model) -> torch.Tensor:
    """A code whose corner v holds (v, v^2, 1, -v): every corner code is different."""
    v = torch.arange(model.latent.geometry.vertices, dtype=torch.float32)
    return torch.stack([v, v**2, torch.ones_like(v), -v], dim=-1).reshape(1, -1)


# ---- indexing and interpolation ------------------------------------------------------------------------
@pytest.mark.parametrize("blend", ["interpolate", "local"])
def test_a_point_on_a_corner_uses_exactly_that_corners_code(blend):
    _, model = grid_model(blend)
    g = model.latent.geometry
    code = distinct_grid(model)
    grid = code.reshape(g.vertices, -1)
    corners = torch.tensor([[-1.0, -1.0, -1.0], [0.0, 0.0, 0.0], [1.0, 0.0, -1.0], [1.0, 1.0, 1.0]])
    probe = Probe()
    model.latent.decode_points(probe, code, corners[None])
    z, _ = probe.seen[-1]
    want = torch.stack([grid[(c + 1).long() @ g.strides] for c in corners])  # vertex (i, j, k) of h = 1
    if blend == "interpolate":
        assert torch.equal(z[0], want)
    else:  # every corner code decodes, weighted: the corner's own weight is 1, the others' 0
        idx, w, _ = g.corners(corners[None])
        assert torch.equal(w[0].max(dim=-1).values, torch.ones(4))
        assert torch.equal(z[0][torch.arange(4), w[0].argmax(dim=-1)], want)


def test_a_cell_centre_averages_its_eight_corners_and_coordinates_are_cell_local():
    _, model = grid_model("interpolate")
    g = model.latent.geometry
    code = distinct_grid(model)
    grid = code.reshape(g.vertices, -1)
    probe = Probe()
    centre = torch.tensor([[[0.5, -0.5, 0.5]]])  # centre of the cell with corners (1|2, 0|1, 1|2)
    model.latent.decode_points(probe, code, centre)
    z, u = probe.seen[-1]
    corners = [grid[i * 9 + j * 3 + k] for i in (1, 2) for j in (0, 1) for k in (1, 2)]
    assert torch.allclose(z[0, 0], torch.stack(corners).mean(0))
    assert torch.allclose(u[0, 0], torch.zeros(3))  # the centre of the cell is 0 in its frame
    _, lmodel = grid_model("local")
    lmodel.latent.decode_points(probe, code, centre)
    _, u8 = probe.seen[-1]
    assert torch.allclose(u8[0, 0].abs(), torch.full((8, 3), 0.5))  # half a cell from each corner


def test_points_outside_the_bounds_take_the_nearest_border_codes():
    _, model = grid_model("interpolate")
    code = distinct_grid(model)
    probe = Probe()
    out = torch.tensor([[[3.0, 0.2, -0.4], [-1.5, -2.0, 7.0]]])
    model.latent.decode_points(probe, code, out)
    z_out, u_out = probe.seen[-1]
    model.latent.decode_points(probe, code, out.clamp(-1, 1))
    z_in, _ = probe.seen[-1]
    assert torch.allclose(z_out, z_in) and torch.isfinite(u_out).all()
    assert u_out[0, 0, 0] > 1.0  # the coordinates say how far outside
    g = GridGeometry(4, 1.0, 3)
    assert not g.cell_mask(out, 0.0).any()  # outside points mark no cell


def test_grid_decoding_is_continuous_for_local_frames():
    _, model = grid_model("local", cells=4)
    code = torch.randn(1, model.latent_size)
    x = torch.tensor([[[0.5 - 1e-5, 0.1, 0.2], [0.5 + 1e-5, 0.1, 0.2]]])  # across a cell face
    with torch.no_grad():
        v = model.decode(code, x)
    assert abs(float(v[0, 0] - v[0, 1])) < 1e-3


def test_masks_cells_and_vertices():
    g = GridGeometry(4, 1.0, 3)  # cells of 0.5
    pts = torch.tensor([[[0.1, 0.1, 0.1]]])
    cells = g.cell_mask(pts, 0.0)
    assert int(cells.sum()) == 1
    assert int(g.cell_mask(pts, 0.3).sum()) == 27  # one cell of margin on each side
    verts = g.vertex_mask(cells)
    assert int(verts.sum()) == 8
    assert torch.equal(g.occupied_cells(verts), cells)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="unknown grid option 'cels'"):
        load_config(None, ["model.latent.source=grid", "model.latent.kwargs={cels: 4}"])
    with pytest.raises(ConfigError, match="blend' must be one of interpolate, local"):
        load_config(None, ["model.latent.source=grid", "model.latent.kwargs={blend: nearest}"])
    with pytest.raises(ConfigError, match="pool' must be one of max, mean"):
        load_config(None, ["model.latent.source=pointnet_grid", "model.latent.kwargs={pool: sum}"])
    with pytest.raises(ConfigError, match="known: table, pointnet, grid, pointnet_grid"):
        load_config(None, ["model.latent.source=grids"])


# ---- fitting two spheres -------------------------------------------------------------------------------
def spheres_sdf(points: np.ndarray) -> np.ndarray:
    return np.min([np.linalg.norm(points - np.asarray(c), axis=1) - r for c, r in SPHERES], axis=0)


def sphere_surface(n: int, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for c, r in SPHERES:
        d = rng.normal(size=(n // 2, 3))
        parts.append(np.asarray(c) + r * d / np.linalg.norm(d, axis=1, keepdims=True))
    return np.concatenate(parts)


def sphere_samples(n: int, rng: np.random.Generator) -> np.ndarray:
    near = sphere_surface(n, rng) + rng.normal(scale=0.05, size=(n, 3))
    pts = np.concatenate([near, rng.uniform(-1, 1, size=(n // 4, 3))]).astype(np.float32)
    return np.concatenate([pts, spheres_sdf(pts)[:, None]], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def fitted_spheres():
    """A tiny decoder and one 4^3 grid fitted together to two separated spheres (the training loop's loss)."""
    from deepsdf_ad.losses import sdf_loss

    cfg, model = grid_model("interpolate", cells=4, size=8, hidden=32)
    rng = np.random.default_rng(0)
    samples = torch.from_numpy(sphere_samples(20000, rng))
    opt = torch.optim.Adam([{"params": model.decoder.parameters(), "lr": 5e-3},
                            {"params": model.latent.parameters(), "lr": 1e-2}])
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = samples[torch.randint(len(samples), (4096,), generator=g)][None]
        codes = model.latent.codes({"index": torch.tensor([0])})
        loss = sdf_loss(model.decode(codes, batch[..., :3]), batch[..., 3], 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return cfg, model


def test_a_grid_fitted_to_two_spheres_reproduces_both(fitted_spheres):
    _, model = fitted_spheres
    code = model.latent.all_codes()[0]
    mesh = mesh_sdf(model_sdf(model, code, torch.device("cpu"), 65536), 48, method="dense")
    parts = mesh.split(only_watertight=False)
    assert len(parts) == 2
    truth = sphere_surface(4000, np.random.default_rng(1))
    cd = chamfer_squared(surface_points(mesh, 4000), truth)
    assert cd < 2e-3, cd  # squared distances, both directions summed (a sphere moved by 0.03 gives 1.8e-3)
    for part, (c, r) in zip(sorted(parts, key=lambda p: p.centroid[0]), SPHERES, strict=True):
        assert np.linalg.norm(part.centroid - np.asarray(c)) < 0.05
        assert abs(np.linalg.norm(part.vertices - part.centroid, axis=1).mean() - r) < 0.05


def test_reconstruction_optimises_only_cells_near_the_observed_points(fitted_spheres):
    cfg, model = fitted_spheres
    rng = np.random.default_rng(2)
    left = sphere_samples(8000, rng)
    left = left[left[:, 0] < -0.1]  # observe only the left sphere
    obs = observations_from_samples(left)
    options = model.latent.options
    model.latent.options = dataclasses.replace(options, mask_margin=0.0)  # only the cells holding points
    try:
        code, losses = optimise_codes(model, [obs], cfg.reconstruct, 0.1, torch.device("cpu"),
                                      init=model.latent.all_codes()[:1], iterations=50)
    finally:
        model.latent.options = options
    g = model.latent.geometry
    active = code.reshape(g.vertices, -1).abs().sum(-1) > 0
    xs = g.corner_positions(torch.arange(g.vertices))[:, 0]
    near = torch.from_numpy(obs.near_surface(0.02).astype(np.float32))[None]
    assert torch.equal(active, g.vertex_mask(g.cell_mask(near, 0.0))[0])  # the corners of the cells seen
    assert active.any() and not active[xs > 0].any()  # the right sphere's corners stay empty
    fn = model_sdf(model, code[0], torch.device("cpu"), 65536)
    assert fn(np.array([[0.5, 0.1, 0.0]], np.float32))[0] == EMPTY_SDF  # its centre: empty, read as outside
    mesh = mesh_sdf(fn, 48)
    assert len(mesh.split(only_watertight=False)) == 1 and mesh.centroid[0] < 0
    with pytest.raises(Exception, match="no observed surface point"):
        far = Observations(np.full((10, 3), 5.0), np.zeros(10), np.zeros(10))
        optimise_codes(model, [far], cfg.reconstruct, 0.1, torch.device("cpu"), iterations=2)


def test_the_mesher_skips_empty_cells(fitted_spheres):
    _, model = fitted_spheres
    g = model.latent.geometry
    full = model.latent.all_codes()[0].clone()
    grid = full.reshape(g.vertices, -1).clone()
    xs = g.corner_positions(torch.arange(g.vertices))[:, 0]
    grid[xs > 0] = 0.0  # empty the right half
    half = grid.reshape(-1)
    fn_full = model_sdf(model, full, torch.device("cpu"), 65536)
    fn_half = model_sdf(model, half, torch.device("cpu"), 65536)
    v_full, st_full = adaptive_grid(fn_full, 65)
    v_half, st_half = adaptive_grid(fn_half, 65)
    decoded_half = fn_half.counter["queries"]
    assert decoded_half < 0.6 * fn_full.counter["queries"]
    # the decoder saw only points of occupied cells: the left half
    seen = []
    fn_probe = model_sdf(model, half, torch.device("cpu"), 65536)
    orig = fn_probe.occupied
    fn_probe.occupied = orig
    pts = np.random.default_rng(0).uniform(-1, 1, size=(5000, 3)).astype(np.float32)
    occ = orig(pts)
    assert occ[pts[:, 0] < -0.01].all() and not occ[pts[:, 0] > 0.01].any()
    seen.append(fn_probe(pts))
    assert np.all(seen[0][~occ] == EMPTY_SDF) and fn_probe.counter["queries"] == int(occ.sum())
    # where the grid is occupied, the skipping mesher gives what the full grid gives
    left = slice(0, 30)
    assert np.allclose(v_half[left], v_full[left], atol=1e-5)
    mesh = marching_cubes(v_half)
    assert len(mesh.split(only_watertight=False)) == 1 and mesh.bounds[1, 0] < 0.05


# ---- the grid encoder ----------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_grid_encoder_is_permutation_invariant(pool):
    cfg, model = grid_model(source="pointnet_grid", cells=4, size=8,
                            extra=[f"model.latent.kwargs={{cells: 4, hidden: 16, blocks: 3, pool: {pool}, "
                                   "conv: 1, mask_margin: 0}"])
    pts = sphere_surface(512, np.random.default_rng(0)).astype(np.float32)
    pts = torch.from_numpy(pts[pts[:, 0] < 0])[None]  # the left sphere
    perm = pts[:, torch.randperm(pts.shape[1], generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        a, b = model.latent.encode(pts), model.latent.encode(perm)
    assert a.shape == (1, model.latent_size) and torch.allclose(a, b, atol=1e-5)
    g = model.latent.geometry
    active = a.reshape(g.vertices, -1).abs().sum(-1) > 0
    assert 0 < int(active.sum()) < g.vertices  # codes away from the points are empty


# ---- the CLI path ---------------------------------------------------------------------------------------
PRESETS = {"grid": ("scenes_latent_grid.yaml", "{cells: 4}"),
           "pointnet_grid": ("scenes_pointnet_grid.yaml", "{cells: 4, hidden: 16, blocks: 2, points: 256}")}


@pytest.fixture(scope="module")
def prepped(tmp_path_factory):
    """Tiny procedural shapes -> prep meshes (with one scan each), through the CLI."""
    from deepsdf_ad.data_prep.shapes import write_family

    base = tmp_path_factory.mktemp("grid_cli")
    meshes, data = base / "meshes", base / "data"
    write_family(meshes, families=("table", "bottle"), per_family=2, seed=0)
    cli("prep", "meshes", meshes, "--out", data, "--samples", "4000", "--workers", "2", "--scans", "1",
        "--test-fraction", "0.25", "--quiet", check=True)
    return data


@pytest.mark.parametrize("source", ["grid", "pointnet_grid"])
def test_cli_prep_train_reconstruct_eval(prepped, tmp_path, source):
    from deepsdf_ad.data_prep import formats

    data, run, base = prepped, tmp_path / "run", tmp_path
    preset, kwargs = PRESETS[source]
    # clamp 1: a tiny decoder that starts with every prediction beyond a 0.1 clamp gets no gradient at all
    args = ["--config", REPO / "configs" / preset,
            *[a for kv in [*TINY, f"model.latent.kwargs={kwargs}", "train.clamp=1.0"] for a in ("--set", kv)]]
    if source == "grid":  # resume (the same loop and checkpoints for every source)
        cli("train", "--data", data, "--out", run, "--epochs", "20", "--quiet", *args, check=True)
        assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 20
    cli("train", "--data", data, "--out", run, "--epochs", "22", "--quiet", *args, check=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 23)) and rows[-1]["loss"] < rows[0]["loss"]
    if source == "grid":  # an encoder's reconstruct is its eval's code path (one forward pass)
        _, cat, sid = formats.read_split(data / "splits" / "test.json")[0]
        scan = data / "scans" / cat / f"{sid}_0.ply"
        out = base / "completed.ply"
        proc = cli("reconstruct", scan, "--run", run, "--out", out, "--resolution", "32",
                   "--iterations", "20", check=True)
        assert "reconstruct:" in proc.stdout and len(trimesh.load(out, process=False).faces) > 0
    ev = base / "eval.json"
    cli("eval", "--run", run, "--data", data, "--input", "scan", "--out", ev, "--resolution", "24",
        check=True)
    res = json.loads(ev.read_text())
    assert res["latent_source"] == source and res["summary"]["all"]["shapes"] >= 1
    assert (run / "latent_codes.safetensors").is_file()
    if source == "pointnet_grid":  # a grid of encoded codes refined (compare's amortisation gap)
        cli("eval", "--run", run, "--data", data, "--input", "scan", "--out", ev, "--resolution", "24",
            "--mode", "encode+refine", "--limit", "1", check=True)
        recs = json.loads(ev.read_text())["shapes"]
        assert all(r["objective_refined"] >= 0 and r["objective_encoded"] >= 0 for r in recs), recs


def test_cli_bad_grid_option_is_one_line(tmp_path):
    proc = cli("train", "--config", REPO / "configs" / "scenes_latent_grid.yaml", "--data", tmp_path, "--out",
               tmp_path / "run", "--set", "model.latent.kwargs={cells: 0}")
    assert_one_line_error(proc, "cells")


def test_presets_load_and_are_comparable():
    cfgs = {n: load_config(REPO / "configs" / f"scenes_{n}.yaml")
            for n in ("global", "latent_grid", "pointnet_grid")}
    assert cfgs["latent_grid"].model.latent.source == "grid"
    assert cfgs["pointnet_grid"].model.latent.source == "pointnet_grid"
    assert cfgs["global"].model.latent.source == "table"
    for c in cfgs.values():  # what compare's fairness rules check from the configs
        assert c.model.decoder == cfgs["global"].model.decoder
        assert c.model.latent.size == cfgs["global"].model.latent.size
        assert (c.train.epochs, c.train.shapes_per_batch, c.train.samples_per_shape) == (
            cfgs["global"].train.epochs, cfgs["global"].train.shapes_per_batch,
            cfgs["global"].train.samples_per_shape)
