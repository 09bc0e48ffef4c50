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


# ---- 2. values checked where they are declared -----------------------------------------------------------
@pytest.mark.parametrize("override,needle", [
    ("train.clamp=0", "'train.clamp' must be positive"),
    ("train.clamp=.nan", "'train.clamp' must be positive"),
    ("model.decoder.dropout=2", "'model.decoder.dropout' must be in [0, 1)"),
    ("model.decoder.dropout=-0.1", "'model.decoder.dropout' must be in [0, 1)"),
    ("train.lr_decoder.initial=-1e-4", "'train.lr_decoder.initial' must be a positive finite"),
    ("train.lr_latent.initial=.inf", "'train.lr_latent.initial' must be a positive finite"),
    ("train.lr_decoder.factor=0", "'train.lr_decoder.factor' must be a positive"),
    ("reconstruct.lr=0", "'reconstruct.lr' must be a positive finite"),
    ("train.code_reg=-1", "'train.code_reg' must be 0 or more"),
    ("train.seed=-1", "'train.seed' must be between 0 and"),
    ("train.seed=99999999999", "'train.seed' must be between 0 and"),
])
def test_config_values_out_of_range(override, needle):
    from deepsdf_ad.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert needle in str(e.value)


def test_an_empty_config_file_is_refused(tmp_path):
    from deepsdf_ad.config import ConfigError, load_config

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="config file is empty"):
        load_config(empty)
    proc = cli("train", "--config", empty, "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert_one_line_error(proc, "empty.yaml", "config file is empty")


def test_flags_out_of_range_and_suffixes_that_do_not_match(tmp_path):
    mesh = _box(tmp_path / "m.ply")
    assert_one_line_error(cli("scan", mesh, "--out", tmp_path / "p.ply", "--seed", "-1"), "--seed", "between 0")
    proc = cli("scan", mesh, "--out", tmp_path / "x.off")
    assert_one_line_error(proc, "x.off", "must end in .ply")
    assert not (tmp_path / "x.off").exists()
    proc = cli("mesh", "--run", tmp_path / "run", "--shape", "a", "--out", tmp_path / "m.xyz")
    assert_one_line_error(proc, "m.xyz", "must end in")


def test_workers_are_capped_at_the_cpus_with_a_note(tmp_path, monkeypatch):
    from deepsdf_ad import cli as cli_module

    monkeypatch.setattr(cli_module, "_cpus", lambda: 4)
    assert cli_module._workers(1000) == 4 and cli_module._workers(3) == 3


def test_dropped_nan_sample_rows_are_counted(tmp_path, capfd):
    from data_prep import formats
    from deepsdf_ad.data import SampleBank

    rows = np.random.default_rng(0).uniform(-1, 1, size=(20, 4)).astype(np.float32)
    rows[:3, 1] = np.nan
    rows[3, 3] = np.inf
    formats.save_sdf_samples(tmp_path / "data" / "sdf" / "c" / "a.npz", rows[:10], rows[10:])
    formats.write_split(tmp_path / "data" / "splits" / "train.json", {"c": ["a"]})
    bank = SampleBank(formats.DataRoot(tmp_path / "data").shapes("train"), 3, progress=False)
    assert len(bank.all_samples(0)) == 16
    err = capfd.readouterr().err
    assert "a.npz: dropped 4 of 20 sample rows with NaN or infinite values" in err
