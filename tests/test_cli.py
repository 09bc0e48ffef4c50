"""The CLI end to end (prep -> train -> resume -> mesh -> scan -> reconstruct) on generated shapes, and every
bad-input case of the foundation's CLI: exit 2 and one line naming the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.shapes import write_family
from deepsdf_ad.metrics import chamfer_squared, surface_points
from tests.helpers import REPO, TINY, assert_one_line_error, cli

SETS = [a for kv in TINY for a in ("--set", kv)]
PRESET = REPO / "configs" / "shapes_small.yaml"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    """Generated shapes -> prep -> train 4 epochs through the real CLI."""
    base = tmp_path_factory.mktemp("cli")
    meshes = base / "meshes"
    write_family(meshes, per_family=3, seed=0)
    data, run = base / "data", base / "run"
    cli("prep", "meshes", meshes, "--out", data, "--samples", "6000", "--workers", "2", "--quiet", check=True)
    cli("train", "--config", PRESET, "--data", data, "--out", run, "--epochs", "4", "--quiet", *SETS,
        check=True)
    return {"base": base, "meshes": meshes, "data": data, "run": run}


def test_prep_writes_the_deepsdf_layout(pipeline):
    data = pipeline["data"]
    manifest = json.loads((data / formats.MANIFEST).read_text())
    assert manifest["summary"]["ok"] == 9 and manifest["summary"]["failed"] == 0
    assert manifest["version"] and manifest["params"]["sampling"]["samples"] == 6000
    train = formats.read_split(data / "splits" / "train.json")
    test = formats.read_split(data / "splits" / "test.json")
    assert len(train) + len(test) == 9 and {c for _, c, _ in test} == {"bottle", "chair", "table"}
    _, cat, sid = train[0]
    pos, neg = formats.load_sdf_samples(data / "sdf" / cat / f"{sid}.npz")
    assert pos.dtype == np.float32 and pos.shape[1] == 4 and (pos[:, 3] > 0).all() and (neg[:, 3] <= 0).all()
    assert len(pos) + len(neg) == 6000
    offset, scale = formats.load_normalization(data / "norm" / cat / f"{sid}.npz")
    mesh = trimesh.load(pipeline["meshes"] / cat / f"{sid}.obj", process=False)
    r = np.linalg.norm((mesh.vertices + offset) * scale, axis=1).max()
    assert r <= 1 / 1.03 + 1e-6
    surf = formats.load_points(data / "surface" / cat / f"{sid}.ply")
    assert surf.points.shape == (30_000, 3)


def test_train_writes_the_run_and_resumes(pipeline, tmp_path):
    run = pipeline["run"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert all({"epoch", "loss", "seconds"} <= set(r) for r in rows)
    saved = (run / "config.yaml").read_text()
    assert "samples_per_shape: 512" in saved and "epochs: 4" in saved
    assert (run / "latent_codes.safetensors").is_file()
    # resuming: the same command with more epochs continues from the checkpoint at epoch 4
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(run, copy)
    proc = cli("train", "--config", PRESET, "--data", pipeline["data"], "--out", copy, "--epochs", "6",
               "--quiet", *SETS, check=True)
    rows2 = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows2] == [1, 2, 3, 4, 5, 6] and rows2[:4] == rows
    assert "6 epochs" in proc.stdout


def test_train_max_minutes_stops_at_a_checkpoint_and_goes_on(pipeline, tmp_path):
    # a budget of 0.1 s ends the run after its first epoch, with a checkpoint; the same command goes on
    # from there
    args = ("train", "--config", PRESET, "--data", pipeline["data"], "--out", tmp_path / "run",
            "--epochs", "3", "--quiet", *SETS)
    proc = cli(*args, "--max-minutes", "0.0017", check=True)
    assert "stopped by --max-minutes at 1 of 3" in proc.stdout
    assert ([c.name for c in (tmp_path / "run" / "checkpoints").glob("*.safetensors")]
            == ["epoch_000001.safetensors"])
    proc = cli(*args, check=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and "stopped" not in proc.stdout
    assert_one_line_error(cli(*args, "--max-minutes", "0"), "--max-minutes")


def test_mesh_scan_reconstruct(pipeline, tmp_path):
    run, data = pipeline["run"], pipeline["data"]
    _, cat, sid = formats.read_split(data / "splits" / "train.json")[0]
    out = tmp_path / "train_shape.ply"
    proc = cli("mesh", "--run", run, "--shape", sid, "--out", out, "--resolution", "32", check=True)
    dense = tmp_path / "dense.ply"
    cli("mesh", "--run", run, "--shape", sid, "--out", dense, "--resolution", "32", "--method", "dense",
        check=True)
    a, b = trimesh.load(out, process=False), trimesh.load(dense, process=False)
    assert abs(a.area - b.area) < 1e-3 * b.area  # coarse-to-fine (the default) meshes what dense does
    assert out.is_file() and "vertices" in proc.stdout

    _, tcat, tsid = formats.read_split(data / "splits" / "test.json")[0]
    gt = pipeline["meshes"] / tcat / f"{tsid}.obj"
    partial = tmp_path / "partial.ply"
    cli("scan", gt, "--out", partial, "--azimuth", "30", "--elevation", "20", "--resolution", "48",
        check=True)
    scan = formats.load_points(partial)
    assert len(scan.points) > 100 and scan.normals is not None
    assert (tmp_path / "partial.json").is_file() or any("camera" in c for c in scan.comments)
    completed = tmp_path / "completed.ply"
    proc = cli("reconstruct", partial, "--run", run, "--out", completed, "--resolution", "32",
               "--iterations", "20", "--method", "dense", "--precision", "bf16", "--restarts", "2",
               check=True)
    assert "reconstruct:" in proc.stdout
    rec = trimesh.load(completed, process=False)
    ref = trimesh.load(gt, process=False)
    # in the input's (original) frame: same place and size as the true shape, roughly
    assert np.allclose(rec.bounds.mean(axis=0), ref.bounds.mean(axis=0),
                       atol=0.5 * np.ptp(ref.bounds, axis=0).max())
    cd = chamfer_squared(surface_points(rec, 5000), surface_points(ref, 5000))
    assert np.isfinite(cd)


def test_help_of_every_command():
    for cmd in (["prep", "meshes"], ["prep", "digits"], ["train"], ["mesh"], ["scan"], ["reconstruct"],
                ["view"], ["sample"], ["interpolate"], ["slice"], ["plot"], ["demo"]):
        proc = cli(*cmd, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout, cmd


def test_bad_input_missing_file(tmp_path, pipeline):
    assert_one_line_error(cli("scan", tmp_path / "nope.off", "--out", tmp_path / "p.ply"), "nope.off",
                          "not found")
    assert_one_line_error(cli("reconstruct", tmp_path / "nope.ply", "--run", pipeline["run"], "--out",
                              tmp_path / "o.ply"), "nope.ply")
    assert_one_line_error(cli("prep", "meshes", tmp_path / "missing", "--out", tmp_path / "d"), "missing",
                          "not found")
    assert_one_line_error(cli("train", "--config", tmp_path / "none.yaml", "--data", pipeline["data"],
                              "--out", tmp_path / "r"), "none.yaml")
    assert_one_line_error(cli("mesh", "--run", tmp_path / "norun", "--shape", "x", "--out",
                              tmp_path / "m.ply"),
                          "norun")


def test_bad_input_unreadable_mesh(tmp_path):
    bad = tmp_path / "broken.off"
    bad.write_bytes(b"OFF\n3 1 0\n0 0 0\n1 0 \x00\xff garbage\n")
    assert_one_line_error(cli("scan", bad, "--out", tmp_path / "p.ply"), "broken.off")
    folder = tmp_path / "only_bad" / "cat"
    folder.mkdir(parents=True)
    (folder / "x.off").write_bytes(b"\x00\x01\x02 not a mesh")
    (folder / "y.obj").write_text("")
    proc = cli("prep", "meshes", tmp_path / "only_bad", "--out", tmp_path / "d", "--samples", "1000",
               "--quiet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no mesh could be prepared" in proc.stderr.strip().splitlines()[-1]


def test_bad_input_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("prep", "meshes", tmp_path / "empty", "--out", tmp_path / "d"), "empty",
                          "no meshes")


def test_bad_input_unknown_config_key(tmp_path, pipeline):
    proc = cli("train", "--config", PRESET, "--data", pipeline["data"], "--out", tmp_path / "r",
               "--set", "train.shapes_per_bach=4")
    assert_one_line_error(proc, "shapes_per_bach", "known")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  decodr: {}\n")
    assert_one_line_error(cli("train", "--config", cfg, "--data", pipeline["data"], "--out", tmp_path / "r"),
                          "decodr")


def test_bad_arguments_are_one_line(tmp_path):
    assert_one_line_error(cli("prep", "meshes", tmp_path, "--out", tmp_path / "d", "--samples", "-3"),
                          "--samples")
    assert_one_line_error(cli("scan", tmp_path / "m.off", "--out", tmp_path / "p.ply", "--resolution", "abc"),
                          "--resolution")
    assert_one_line_error(cli("train", "--data", tmp_path), "--config")


LEARNER_ONLY = """
import sys
for name in ("open3d", "igl", "pyrender"):
    sys.modules[name] = None  # 'import open3d' now raises ImportError, as where it is not installed
from deepsdf_ad.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("open3d", "igl", "pyrender") and sys.modules[m])
sys.exit(code or (f"imported {heavy}" if heavy else 0))
"""


def test_learner_commands_need_no_mesh_libraries(pipeline, tmp_path):
    """train, mesh, reconstruct (known frame) and eval on prepared data run where open3d, libigl and pyrender
    are not installed (a GPU machine with only the learner's packages)."""
    import subprocess
    import sys

    def learner(*args):
        proc = subprocess.run([sys.executable, "-c", LEARNER_ONLY, *map(str, args)], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"{args[0]}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
        return proc

    data = pipeline["data"]
    _, cat, sid = formats.read_split(data / "splits" / "test.json")[0]
    partial = tmp_path / "partial.ply"
    cli("scan", pipeline["meshes"] / cat / f"{sid}.obj", "--out", partial, "--resolution", "32", check=True)
    run = tmp_path / "run"
    learner("train", "--config", PRESET, "--data", data, "--out", run, "--epochs", "1", "--quiet", *SETS)
    _, tcat, tsid = formats.read_split(data / "splits" / "train.json")[0]
    learner("mesh", "--run", run, "--shape", tsid, "--out", tmp_path / "m.ply", "--resolution", "16")
    learner("reconstruct", partial, "--run", run, "--out", tmp_path / "r.ply", "--resolution", "16",
            "--iterations", "2", "--norm", data / "norm" / cat / f"{sid}.npz")
    proc = learner("eval", "--run", run, "--data", data, "--limit", "1", "--resolution", "16", "--out",
                   tmp_path / "eval.json")
    assert "IoU left out" in proc.stderr
    assert json.loads((tmp_path / "eval.json").read_text())["shapes"]
