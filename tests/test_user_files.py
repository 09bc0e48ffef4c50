"""Issue 24: never lose a user's file, never accept nonsense in silence. Outputs that resolve to an input,
values outside their range, resume with another config, folders we did not make, two writers at once, and
the signals and displays that used to hang: each ends in one line ``deepsdf-ad: error: ...`` (exit 2) or in
the documented note, and the user's files are left as they were."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

from data_prep.formats import DataError
from deepsdf_ad.outputs import refuse_input_as_output
from tests.helpers import assert_one_line_error, cli


def _box(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.creation.box(extents=(0.8, 0.6, 0.4)).export(path)
    return path


def _cloud(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pts = np.random.default_rng(0).normal(size=(50, 3)).astype("<f4")
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 50\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    path.write_bytes(header.encode() + pts.tobytes())
    return path


# ---- 1. inputs are never outputs ------------------------------------------------------------------------
def test_scan_refuses_to_write_over_its_mesh(tmp_path):
    mesh = _box(tmp_path / "mesh.ply")
    before = mesh.read_bytes()
    proc = cli("scan", mesh, "--out", mesh)
    assert_one_line_error(proc, str(mesh), "--out is the input")
    assert mesh.read_bytes() == before


def test_reconstruct_refuses_its_scan_and_the_scans_sidecar(tmp_path):
    scan = _cloud(tmp_path / "same" / "partial.ply")
    side = scan.with_suffix(".json")
    side.write_text("{}")
    before = scan.read_bytes()
    for out in (scan, side, tmp_path / "same" / ".." / "same" / "partial.ply"):
        proc = cli("reconstruct", scan, "--run", tmp_path / "run", "--out", out)
        assert_one_line_error(proc, "--out is the ")
    assert scan.read_bytes() == before and side.read_text() == "{}"


def test_mesh_and_slice_refuse_the_runs_own_files(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("name: x\n")
    proc = cli("mesh", "--run", run, "--shape", "a", "--out", run / "config.yaml")
    assert_one_line_error(proc, "config.yaml", "--out is the input")
    proc = cli("slice", "--run", run, "--shape", "a", "--out", run / "checkpoints" / "x.png")
    assert_one_line_error(proc, "inside the input folder")
    assert (run / "config.yaml").read_text() == "name: x\n"


def test_prep_refuses_to_write_into_its_source_folder(tmp_path):
    src = tmp_path / "meshes"
    _box(src / "box" / "b.obj")
    for out in (src, src / "data"):
        proc = cli("prep", "meshes", src, "--out", out, "--quiet")
        assert_one_line_error(proc, "inside the input folder")
    assert sorted(p.name for p in src.rglob("*")) == ["b.obj", "box"]


def test_view_refuses_a_screenshot_over_an_input(tmp_path):
    cloud = _cloud(tmp_path / "c.ply")
    before = cloud.read_bytes()
    proc = cli("view", cloud, "--screenshot", cloud)
    assert_one_line_error(proc, "--screenshot is the input")
    assert cloud.read_bytes() == before


def test_links_and_spellings_count_as_the_same_file(tmp_path):
    a = _cloud(tmp_path / "a.ply")
    os.link(a, tmp_path / "hard.ply")
    (tmp_path / "soft.ply").symlink_to(a)
    for out in (tmp_path / "hard.ply", tmp_path / "soft.ply", tmp_path / "x" / ".." / "a.ply"):
        with pytest.raises(DataError, match="is the input"):
            refuse_input_as_output(out, [a])
    refuse_input_as_output(tmp_path / "b.ply", [a])  # another file is fine
    with pytest.raises(DataError, match="sidecar"):
        refuse_input_as_output(tmp_path / "b.obj", [tmp_path / "b.ply"], out_sidecar=True)  # both: b.json
