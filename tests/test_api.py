"""The Python API (``from deepsdf_ad import load_run, reconstruct, mesh_shape, prep_meshes``) end to end on a
tiny procedural run: the same meshes and data as the commands, from arrays and files, and a light import."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError
from tests.helpers import REPO, cli, train_tiny_sphere_run

SPHERE_R = 0.45


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    """Two analytic spheres (r 0.4 and 0.6), trained until their codes mesh to them (a wider clamp and a
    larger step than the preset's: from the tiny decoder's first prediction, beyond -0.1 everywhere, the 0.1
    clamp passes no gradient)."""
    return train_tiny_sphere_run(tmp_path_factory.mktemp("api"), epochs=80,
                                 extra=("train.clamp=1.0", "train.lr_decoder.initial=3e-3",
                                        "train.checkpoint_every=80", "reconstruct.iterations=20"))


def sphere_points(n: int = 1500, r: float = SPHERE_R, centre=(0.0, 0.0, 0.0), seed: int = 0) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return r * d / np.linalg.norm(d, axis=1, keepdims=True) + np.asarray(centre)


def test_import_is_light_and_has_a_version():
    code = ("import sys, deepsdf_ad; print(deepsdf_ad.__version__); "
            "print(sorted(m for m in ('torch', 'trimesh', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    version, heavy = proc.stdout.split("\n")[:2]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert version == re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert heavy == "[]", f"import deepsdf_ad loaded {heavy}"
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"deepsdf-ad {version}"


def test_reconstruct_is_the_api_function_even_after_its_module_is_imported():
    import deepsdf_ad.reconstruct  # noqa: F401 (the library module of the same name, loaded first)
    from deepsdf_ad import api, reconstruct
    from deepsdf_ad.reconstruct import find_codes

    assert reconstruct is api.reconstruct and callable(reconstruct)
    assert find_codes.__module__ == "deepsdf_ad.reconstruct"  # the module, by its full name
    for name in ("load_run", "mesh_shape", "prep_meshes", "__version__"):
        assert name in dir(sys.modules["deepsdf_ad"])
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = sys.modules["deepsdf_ad"].nope


def test_load_run_and_mesh_shape_match_the_mesh_command(run_path, tmp_path):
    from deepsdf_ad import load_run, mesh_shape
    from deepsdf_ad.commands.mesh import mesh_training_shape

    run = load_run(run_path, device="cpu")
    assert run.shapes == ["ball/b0", "ball/b1"] and tuple(run.codes.shape) == (2, 8)
    assert run.config.dim == 3 and run.config.model.latent.size == 8 and not run.model.training
    by_name = mesh_shape(run, "ball/b1", resolution=24)
    assert isinstance(by_name, trimesh.Trimesh) and len(by_name.faces) > 100
    by_index = mesh_shape(run_path, 1, resolution=24)  # a folder is loaded on the fly
    np.testing.assert_array_equal(by_name.vertices, by_index.vertices)
    mesh_training_shape(run_path, "b1", tmp_path / "m.ply", resolution=24, device="cpu")
    cli_mesh = trimesh.load(tmp_path / "m.ply", process=False)
    np.testing.assert_allclose(by_name.vertices, cli_mesh.vertices, atol=1e-6)  # the file holds float32
    np.testing.assert_array_equal(by_name.faces, cli_mesh.faces)
    radius = np.linalg.norm(by_name.vertices, axis=1)
    assert abs(np.median(radius) - 0.6) < 0.15, np.median(radius)  # the bigger sphere
    with pytest.raises(DataError, match="out of range"):
        mesh_shape(run, 2)
    with pytest.raises(DataError, match="no training shape 'b7'"):
        mesh_shape(run, "b7")


def test_reconstruct_from_an_array_matches_the_command_on_a_file(run_path, tmp_path):
    from deepsdf_ad import load_run, reconstruct
    from deepsdf_ad.commands.reconstruction import reconstruct_file

    run = load_run(run_path, device="cpu")
    offset, scale = np.array([1.0, -2.0, 0.5]), 2.0  # points in their own units: normalised = (x + o) * s
    pts = sphere_points() / scale - offset
    mesh = reconstruct(pts, run, norm=(offset, scale), resolution=24)
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) > 100
    info = mesh.metadata["deepsdf_ad"]
    assert info["points"] == len(pts) and info["mode"] == "optimise" and info["final_loss"] is not None
    # the command on the same points as a file, with the normalisation as a NORM.npz: the same mesh
    formats.save_points_ply(tmp_path / "p.ply", pts)
    formats.save_normalization(tmp_path / "n.npz", offset, scale)
    reconstruct_file(run_path, tmp_path / "p.ply", tmp_path / "r.ply", resolution=24, device="cpu",
                     norm=str(tmp_path / "n.npz"))
    cli_mesh = trimesh.load(tmp_path / "r.ply", process=False)
    np.testing.assert_array_equal(mesh.faces, cli_mesh.faces)
    np.testing.assert_allclose(mesh.vertices, cli_mesh.vertices, atol=1e-5)
    from_file = reconstruct(tmp_path / "p.ply", run, norm=tmp_path / "n.npz", resolution=24)
    np.testing.assert_array_equal(from_file.faces, mesh.faces)
    # in the points' own frame: a sphere of radius 0.45 / scale around -offset
    centre = mesh.vertices.mean(axis=0)
    np.testing.assert_allclose(centre, -offset, atol=0.05)
    assert abs(np.median(np.linalg.norm(mesh.vertices - centre, axis=1)) - SPHERE_R / scale) < 0.1
    assert run.config.reconstruct.restarts == 1  # a call's options leave the loaded run as it was
    reconstruct(pts, run, norm=(offset, scale), resolution=16, restarts=2, iterations=3)
    assert run.config.reconstruct.restarts == 1


def test_reconstruct_with_the_pose_search(run_path):
    from deepsdf_ad import load_run, reconstruct

    run = load_run(run_path, device="cpu")
    pts = sphere_points(n=800, centre=(3.0, 1.0, -2.0)) * 10.0  # unknown units and place
    mesh = reconstruct(pts, run, pose_search=True, resolution=16, iterations=5)
    record = mesh.metadata["deepsdf_ad"]["record"]
    assert record["deepsdf-ad"] == "reconstruct" and np.asarray(record["transform"]["matrix"]).shape == (4, 4)
    assert record["points"]["read"] == 800
    assert np.linalg.norm(mesh.vertices.mean(axis=0) - pts.mean(axis=0)) < 0.25 * 10 * SPHERE_R


def test_reconstruct_refuses_bad_input(run_path):
    from deepsdf_ad import load_run, reconstruct

    run = load_run(run_path, device="cpu")
    with pytest.raises(DataError, match=r"points: expected \(N, 3\) points"):
        reconstruct(np.zeros((10, 2)), run)
    with pytest.raises(DataError, match="norm needs an offset of 3 finite numbers and a positive scale"):
        reconstruct(sphere_points(), run, norm=(np.zeros(3), -1.0))
    with pytest.raises(DataError, match="needs an autoencoder run"):
        reconstruct(sphere_points(), run, mode="encode")


def test_prep_meshes_is_the_prep_command(tmp_path):
    from deepsdf_ad import prep_meshes
    from deepsdf_ad.data_prep.shapes import write_family

    write_family(tmp_path / "meshes", families=("table",), per_family=2, seed=0)
    manifest = prep_meshes(tmp_path / "meshes", tmp_path / "data", samples=3000, surface_points=500,
                           test_fraction=0.5, camera={"resolution": 32})
    assert manifest["params"]["sampling"]["samples"] == 3000
    assert [m["status"] for m in manifest["meshes"]] == ["ok", "ok"] and manifest["summary"]["ok"] == 2
    assert formats.read_split(tmp_path / "data" / formats.SPLITS_DIR / formats.TEST_SPLIT)
    with pytest.raises(TypeError, match="unknown option 'sample'; known: samples"):
        prep_meshes(tmp_path / "meshes", tmp_path / "data", sample=10)
    write_family(tmp_path / "held", families=("chair",), per_family=1, seed=1)
    held = prep_meshes(tmp_path / "meshes", tmp_path / "held_data", samples=3000, surface_points=500,
                       held_out=tmp_path / "held")
    assert held["params"]["held_out"] == ["chair/chair_000"] and held["params"]["test_fraction"] == 0
    test = formats.read_split(tmp_path / "held_data" / formats.SPLITS_DIR / formats.TEST_SPLIT)
    assert [(c, i) for _, c, i in test] == [("chair", "chair_000")]


def test_the_readme_example_runs_as_printed(tmp_path, monkeypatch):
    """The README's Python API block, executed from a folder beside ``../shared/data/meshes`` (procedural
    chairs here), sized down (samples, workers, resolution) and with a tiny training run for its step 2."""
    from deepsdf_ad.config import load_config
    from deepsdf_ad.data_prep.meshes import load_mesh, normalized_mesh
    from deepsdf_ad.data_prep.scans import CameraConfig, save_scan, scan_mesh
    from deepsdf_ad.data_prep.shapes import write_family
    from deepsdf_ad.train import train
    from tests.helpers import TINY

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    for big, small in (("samples=100_000", "samples=3000"), ("workers=2", "workers=1"),
                       ("resolution=128", "resolution=24")):
        assert big in block, f"the README's API example no longer has {big!r}: update this test"
        block = block.replace(big, small)
    meshes = tmp_path / "shared" / "data" / "meshes" / "chair"
    meshes.mkdir(parents=True)
    for k, path in enumerate(write_family(tmp_path / "family", families=("chair",), per_family=5), start=1):
        path.rename(meshes / f"chair_{k:04d}.obj")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    lines = block.splitlines(keepends=True)
    step2 = next(i for i, ln in enumerate(lines) if ln.startswith("run = load_run"))
    scope: dict = {}
    exec(compile("".join(lines[:step2]), "README.md", "exec"), scope)  # imports and step 1: prep
    # step 2, tiny (a wider clamp and a larger step, as the run_path fixture, so that it meshes at all)
    cfg = load_config("shapes_small", [*TINY, "train.clamp=1.0", "train.lr_decoder.initial=3e-3",
                                       "train.checkpoint_every=60", "reconstruct.iterations=5",
                                       "reconstruct.restarts=1"])
    train(cfg, "data/modelnet", "runs/modelnet", epochs=60, device="cpu", progress=False)
    trained = [k.split("/")[1] for k in formats.read_json("runs/modelnet/shapes.json")["keys"]]
    rest = "".join(lines[step2:]).replace('"chair_0001"', repr(trained[0]))  # a training shape's id
    test_id = next(f"chair_{k:04d}" for k in range(1, 6) if f"chair_{k:04d}" not in trained)
    mesh = load_mesh(meshes / f"{test_id}.obj")  # step 4's scan of a shape training never saw
    save_scan("partial.ply", scan_mesh(mesh, CameraConfig(resolution=48)), normalized_mesh(mesh)[1:])
    exec(compile(rest, "README.md", "exec"), scope)
    for name in ("completed.ply", "half.ply"):
        out = trimesh.load(work / name, process=False)
        assert len(out.faces) > 0, name


def test_sample_and_interpolate_write_the_meshes_of_a_3d_run(run_path, tmp_path):
    from deepsdf_ad.commands.generate import sample_shapes  # what 'sample' runs, in-process

    info = sample_shapes(run_path, 3, tmp_path / "s", resolution=24, device="cpu", progress=False)
    written = sorted((tmp_path / "s").glob("samples_*.ply"))
    codes = formats.read_json(tmp_path / "s" / "codes.json")["codes"]
    assert len(codes) == 3 and len(written) == len(info["files"]) and len(written) + len(info["skipped"]) == 3
    proc = cli("interpolate", "--run", run_path, "--a", "b0", "--b", "b1", "--steps", "3", "--out",
               tmp_path / "i", "--resolution", "24", "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr
    radii = [np.median(np.linalg.norm(trimesh.load(tmp_path / "i" / f"interpolation_{k:03d}.ply",
                                                   process=False).vertices, axis=1)) for k in range(3)]
    assert radii[0] < radii[1] < radii[2] and abs(radii[0] - 0.4) < 0.1 and abs(radii[2] - 0.6) < 0.1, radii
