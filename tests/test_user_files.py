"""Issue 24: never lose a user's file, never accept nonsense in silence. Outputs that resolve to an input,
values outside their range, resume with another config, folders we did not make, two writers at once, and
the signals and displays that used to hang: each ends in one line ``deepsdf-ad: error: ...`` (exit 2) or in
the documented note, and the user's files are left as they were."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

from deepsdf_ad.data_prep.formats import DataError
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
    assert_one_line_error(cli("scan", mesh, "--out", tmp_path / "p.ply", "--seed", "-1"),
                          "--seed", "between 0")
    assert_one_line_error(cli("train", "--config", "c.yaml", "--data", "d", "--out", "r", "--seeds", "0",
                              "4294967296"),
                          "--seeds", "between 0")
    proc = cli("scan", mesh, "--out", tmp_path / "x.off")
    assert_one_line_error(proc, "x.off", "must end in .ply")
    assert not (tmp_path / "x.off").exists()
    proc = cli("mesh", "--run", tmp_path / "run", "--shape", "a", "--out", tmp_path / "m.xyz")
    assert_one_line_error(proc, "m.xyz", "must end in")


def test_workers_are_capped_at_the_cpus_with_a_note(tmp_path, monkeypatch):
    from deepsdf_ad.commands import common

    monkeypatch.setattr(common, "cpus", lambda: 4)
    assert common.workers(1000) == 4 and common.workers(3) == 3


def test_dropped_nan_sample_rows_are_counted(tmp_path, capfd):
    from deepsdf_ad.data import SampleBank
    from deepsdf_ad.data_prep import formats

    rows = np.random.default_rng(0).uniform(-1, 1, size=(20, 4)).astype(np.float32)
    rows[:3, 1] = np.nan
    rows[3, 3] = np.inf
    formats.save_sdf_samples(tmp_path / "data" / "sdf" / "c" / "a.npz", rows[:10], rows[10:])
    formats.write_split(tmp_path / "data" / "splits" / "train.json", {"c": ["a"]})
    bank = SampleBank(formats.DataRoot(tmp_path / "data").shapes("train"), 3, progress=False)
    assert len(bank.all_samples(0)) == 16
    err = capfd.readouterr().err
    assert "a.npz: dropped 4 of 20 sample rows with NaN or infinite values" in err


# ---- 3. resume says what it does ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from tests.helpers import train_tiny_sphere_run

    return train_tiny_sphere_run(tmp_path_factory.mktemp("tiny"))


def _copy_run(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


def _tiny_sets(*extra: str) -> list[str]:
    from tests.helpers import TINY

    return [a for kv in [*TINY, "mesh.resolution=16", "reconstruct.iterations=3", *extra]
            for a in ("--set", kv)]


def test_resume_with_another_config_is_refused_with_the_differences(tiny_run, tmp_path):
    from tests.helpers import REPO

    run = _copy_run(tiny_run, tmp_path / "run")
    before = (run / "metrics.jsonl").read_text()
    proc = cli("train", "--config", REPO / "configs" / "shapes_small.yaml", "--data",
               tiny_run.parent / "data", "--out", run, "--quiet", "--device", "cpu",
               *_tiny_sets("train.clamp=0.2", "train.seed=3"))
    assert_one_line_error(proc, "started with another config", "train.clamp: 0.1 -> 0.2",
                          "train.seed: 0 -> 3")
    assert (run / "metrics.jsonl").read_text() == before


def test_a_resume_that_ignores_the_configs_epochs_says_so(tiny_run, tmp_path, capsys):
    from deepsdf_ad.config import load_config
    from deepsdf_ad.train import train
    from tests.helpers import REPO, TINY

    run = _copy_run(tiny_run, tmp_path / "run")  # trained with --epochs 1; the preset says 300
    cfg = load_config(REPO / "configs" / "shapes_small.yaml",
                      TINY + ["mesh.resolution=16", "reconstruct.iterations=3"])
    capsys.readouterr()
    train(cfg, tiny_run.parent / "data", run, device="cpu", progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"deepsdf-ad: note: {run}: resumes with its own train.epochs (1), not 300; pass --epochs "
                   "N to change it"], err


def test_a_run_whose_checkpoints_were_deleted_needs_restart(tiny_run, tmp_path):
    import shutil

    from deepsdf_ad.config import load_config
    from deepsdf_ad.runs import Run
    from deepsdf_ad.train import train

    for whole_folder in (True, False):
        run = _copy_run(tiny_run, tmp_path / f"run{whole_folder}")
        if whole_folder:
            shutil.rmtree(run / "checkpoints")
        else:
            for f in (run / "checkpoints").iterdir():
                f.unlink()
        before = (run / "metrics.jsonl").read_text()
        cfg = load_config(run / "config.yaml")
        with pytest.raises(DataError, match="no checkpoint is left .* pass --restart"):
            train(cfg, tiny_run.parent / "data", run, device="cpu", progress=False)
        assert (run / "metrics.jsonl").read_text() == before
    train(cfg, tiny_run.parent / "data", run, device="cpu", progress=False, restart=True)
    assert [r["epoch"] for r in Run(run).metrics()] == [1]


# ---- 4. output folders are ours -------------------------------------------------------------------------
def _users_folder(path: Path, *names: str) -> dict[str, str]:
    path.mkdir(parents=True)
    for n in names:
        (path / n).parent.mkdir(parents=True, exist_ok=True)
        (path / n).write_text(f"the user's {n}\n")
    return {n: (path / n).read_text() for n in names}


def test_train_and_prep_refuse_a_folder_that_is_not_ours(tmp_path):
    from tests.helpers import REPO

    run = tmp_path / "mine"
    before = _users_folder(run, "config.yaml", "shapes.json", "checkpoints/.tmp-notes.txt")
    proc = cli("train", "--config", REPO / "configs" / "shapes_small.yaml", "--data", tmp_path / "data",
               "--out", run)
    assert_one_line_error(proc, str(run), "not made by deepsdf-ad train", "--force")
    data = tmp_path / "project"
    before_data = _users_folder(data, "manifest.json", "splits/train.json", "sdf/.tmp-draft.txt")
    proc = cli("prep", "meshes", tmp_path / "meshes", "--out", data, "--quiet")
    assert_one_line_error(proc, str(data), "not made by deepsdf-ad prep")
    for folder, files in ((run, before), (data, before_data)):
        assert {n: (folder / n).read_text() for n in files} == files
        assert (sorted(p.name for p in folder.iterdir() if p.is_file())
                == sorted(n for n in files if "/" not in n))


def test_ownership_marker_legacy_folders_and_force(tmp_path):
    from deepsdf_ad.data_prep.folders import MARKER, claim_folder

    assert (claim_folder(tmp_path / "new", "run") / MARKER).is_file()
    claim_folder(tmp_path / "new", "run")  # ours: again is fine
    with pytest.raises(DataError, match="is a run folder"):
        claim_folder(tmp_path / "new", "data")
    (tmp_path / "empty").mkdir()
    claim_folder(tmp_path / "empty", "data")
    old = tmp_path / "old_run"  # a run written before markers existed
    _users_folder(old, "config.yaml")
    (old / "shapes.json").write_text('{"data": "d", "keys": ["a/b"]}')
    claim_folder(old, "run")
    user = tmp_path / "user"
    _users_folder(user, "notes.txt")
    with pytest.raises(DataError, match="not made by"):
        claim_folder(user, "run")
    claim_folder(user, "run", force=True)
    assert (user / "notes.txt").read_text() == "the user's notes.txt\n"


def test_only_our_temp_files_are_cleaned_up(tmp_path):
    from deepsdf_ad.data_prep import formats
    from deepsdf_ad.data_prep.pipeline import remove_stale_temporaries

    folder = tmp_path / "data" / "sdf" / "box"
    folder.mkdir(parents=True)
    users = [folder / ".tmp-box_1-draft.npz", folder / ".tmp-notes", tmp_path / "data" / ".tmp-plan.json"]
    for f in users:
        f.write_text("the user's")
    with formats.atomic_path(folder / "box_1.npz") as tmp:
        assert tmp.name.startswith(formats.TEMP_PREFIX)
        ours = folder / tmp.name
        ours.write_text("half")
        stale = folder / f"{formats.TEMP_PREFIX}box_1-x1y2z3ab.npz"
        stale.write_text("half")
        assert remove_stale_temporaries(tmp_path / "data", [("box", "box_1")]) == 2
        assert not stale.exists()
        (folder / tmp.name).write_text("done")
    assert all(f.read_text() == "the user's" for f in users)
    assert remove_stale_temporaries(tmp_path / "data") == 0


# ---- 5. one writer at a time ----------------------------------------------------------------------------
def test_a_second_train_on_a_locked_run_names_the_holder(tmp_path):
    import socket

    from deepsdf_ad.data_prep.folders import FolderLock, claim_folder
    from tests.helpers import REPO

    run = claim_folder(tmp_path / "run", "run")
    with FolderLock(run, "deepsdf-ad train"):
        proc = cli("train", "--config", REPO / "configs" / "shapes_small.yaml", "--data", tmp_path / "data",
                   "--out", run)
        assert_one_line_error(proc, str(run), "in use by another process",
                              f"deepsdf-ad train, pid {os.getpid()} on {socket.gethostname()}")
        proc = cli("prep", "merge", run)  # a run folder is no data root either way
        assert proc.returncode == 2


def test_a_second_unsharded_prep_on_a_locked_data_root_is_refused(tmp_path):
    from deepsdf_ad.data_prep.folders import FolderLock, claim_folder

    _box(tmp_path / "meshes" / "box" / "b.obj")
    data = claim_folder(tmp_path / "data", "data")
    with FolderLock(data, "deepsdf-ad prep meshes"):
        proc = cli("prep", "meshes", tmp_path / "meshes", "--out", data, "--samples", "1000", "--quiet")
        assert_one_line_error(proc, str(data), "in use by another process (deepsdf-ad prep meshes, pid")
    assert not (data / "manifest.json").exists()
    with FolderLock(data, "deepsdf-ad prep meshes", shared=True):  # a shard running: another shard may start
        proc = cli("prep", "meshes", tmp_path / "meshes", "--out", data, "--samples", "1000", "--quiet",
                   "--shard", "0/2")
        assert proc.returncode == 0, proc.stderr


def test_locks_shared_exclusive_and_stale(tmp_path):
    from deepsdf_ad.data_prep.folders import LOCK, FolderLock

    with FolderLock(tmp_path, "prep", shared=True), FolderLock(tmp_path, "prep", shared=True):
        with pytest.raises(DataError, match="in use by another process"):
            FolderLock(tmp_path, "prep").__enter__()
    # a record left by a process that has gone: it holds no flock any more, so the lock is free
    (tmp_path / LOCK).write_text('{"pid": 999999, "host": "elsewhere", "command": "deepsdf-ad train"}')
    with FolderLock(tmp_path, "train"):
        with pytest.raises(DataError, match=f"train, pid {os.getpid()} on "):
            FolderLock(tmp_path, "prep", shared=True).__enter__()
    with FolderLock(tmp_path, "train"):
        pass


def test_concurrent_shards_share_the_data_root(tmp_path):
    from deepsdf_ad.data_prep.folders import FolderLock, output_folder

    with output_folder(tmp_path / "data", "data", "deepsdf-ad prep meshes", shared=True):
        with output_folder(tmp_path / "data", "data", "deepsdf-ad prep meshes", shared=True):
            pass
        with pytest.raises(DataError, match="in use"), FolderLock(tmp_path / "data", "deepsdf-ad prep merge"):
            pass


# ---- 6. signals and displays ----------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] not in "ZX"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_sigterm_to_prep_ends_its_workers(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from deepsdf_ad.data_prep.shapes import write_family

    write_family(tmp_path / "meshes", per_family=2, seed=0)
    proc = subprocess.Popen([sys.executable, "-m", "deepsdf_ad", "prep", "meshes", str(tmp_path / "meshes"),
                             "--out", str(tmp_path / "data"), "--workers", "2", "--samples", "400000",
                             "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            workers = {c for c in _children(proc.pid) if _alive(c)}
            time.sleep(0.05)
        assert len(workers) >= 2, "the workers never started"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "workers outlived the prep"
    finally:
        proc.kill()
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)


def test_view_gives_up_on_an_unreachable_display(tmp_path, monkeypatch):
    import time

    cloud = _cloud(tmp_path / "c.ply")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":987")  # no X server has this number
    t0 = time.monotonic()
    proc = cli("view", cloud, timeout=60)
    assert_one_line_error(proc, "DISPLAY=:987", "does not answer", "--screenshot")
    assert time.monotonic() - t0 < 30


# ---- 7. observations that do not fit --------------------------------------------------------------------
def test_clamped_share_against_an_analytic_sphere():
    from deepsdf_ad.reconstruct import clamped_share
    from tests.helpers import sphere_sdf

    d = np.random.default_rng(0).normal(size=(400, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    assert clamped_share(sphere_sdf, 0.5 * d, 0.1) == 0.0  # on the surface: explained
    assert clamped_share(sphere_sdf, 0.97 * d, 0.1) == 1.0  # 0.47 away everywhere: at the clamp
    mixed = np.concatenate([0.5 * d[:300], 0.97 * d[300:]])
    assert clamped_share(sphere_sdf, mixed, 0.1) == 0.25
    assert clamped_share(sphere_sdf, 0.97 * d, float("inf")) == 0.0  # plain L1 (heightfields): no clamp


def test_reconstruct_says_when_the_scan_is_not_explained(tmp_path, capfd):
    import json
    import re

    from deepsdf_ad.commands.reconstruction import reconstruct_file
    from tests.helpers import train_tiny_sphere_run

    # a run that has learned its spheres (60 one-batch epochs, under a second): points 0.37 beyond the
    # largest are far from anything it can make (after one epoch its field is still near 0 everywhere)
    tiny_run = train_tiny_sphere_run(tmp_path / "trained", epochs=60)

    d = np.random.default_rng(0).normal(size=(300, 3))
    scan = _cloud(tmp_path / "far.ply")
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 300\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    scan.write_bytes(header.encode()
                     + (0.97 * d / np.linalg.norm(d, axis=1, keepdims=True)).astype("<f4").tobytes())
    scan.with_suffix(".json").write_text(json.dumps({"normalization": {"offset": [0, 0, 0], "scale": 1.0}}))
    with contextlib.suppress(DataError):  # the code found may not even give a surface
        reconstruct_file(tiny_run, scan, tmp_path / "out.ply", device="cpu")
    err = capfd.readouterr().err
    assert re.search(r"deepsdf-ad: warning: \S*far\.ply: after the optimisation \d+% of the observed points "
                     r"are still predicted at the clamp \(\|sdf\| >= 0\.1\)", err), err


# ---- a full disk, a read-only place, a file where a folder should be ------------------------------------
def test_a_full_disk_names_the_file_and_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    import errno

    from deepsdf_ad.cli import main
    from deepsdf_ad.data_prep import formats

    mesh = tmp_path / "box.ply"
    trimesh.creation.box(extents=(1.0, 0.6, 0.4)).export(mesh)
    out = tmp_path / "partial.ply"

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(formats.os, "replace", full)
    assert main(["scan", str(mesh), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "No space left on device" in err[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(formats.TEMP_PREFIX)]


def test_an_out_whose_folder_is_a_file_is_one_line(tmp_path):
    mesh = tmp_path / "box.ply"
    trimesh.creation.box(extents=(1.0, 0.6, 0.4)).export(mesh)
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(cli("scan", mesh, "--out", tmp_path / "afile" / "partial.ply"), "afile")
