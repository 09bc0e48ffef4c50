"""Issue 9: untrusted files never execute code. Each payload below runs a command when unpickled (the control
step shows it does, so the tests can fail); the toolkit's readers refuse them with one line and the marker
file the payload would create never appears."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepsdf_ad.config import ConfigError, load_config
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.runs import CHECKPOINTS, CODES, Run
from tests.helpers import assert_one_line_error, cli, train_tiny_sphere_run


class Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_tiny_sphere_run(tmp_path_factory.mktemp("untrusted"))


def _error_lines(proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if "error:" in ln]


def test_pickle_checkpoint_is_refused_and_never_run(run, tmp_path):
    """A checkpoint replaced by a torch.save pickle (with its checksum updated in its sidecar too, so it is
    really opened) is refused; reconstruct stops with one error line; nothing is executed."""
    marker = tmp_path / "pwned-checkpoint"
    evil = tmp_path / "evil.pt"
    torch.save({"decoder.weight": Payload(marker)}, evil)
    torch.load(evil, weights_only=False)  # control: an unsafe load runs the payload
    assert marker.exists()
    marker.unlink()

    bad_run = tmp_path / "run"
    shutil.copytree(run, bad_run)
    sidecars = sorted((bad_run / CHECKPOINTS).glob("epoch_*.json"))
    assert sidecars
    # each checkpoint's sidecar holds its checksum: update it so the file is really opened
    for side in sidecars:
        entry = json.loads(side.read_text())
        shutil.copy(evil, bad_run / CHECKPOINTS / entry["file"])
        entry["sha256"] = formats.file_sha256(evil)
        side.write_text(json.dumps(entry))
    shutil.copy(evil, bad_run / CODES)  # the codes file too

    assert Run(bad_run).load_checkpoint() is None
    with pytest.raises(DataError, match="unreadable codes file"):
        Run(bad_run).codes()
    partial = tmp_path / "p.xyz"
    partial.write_text("".join(f"{x} {y} {z}\n" for x, y, z in np.random.default_rng(0).normal(size=(50, 3))))
    proc = cli("reconstruct", partial, "--run", bad_run, "--out", tmp_path / "out.ply")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = _error_lines(proc)
    assert len(errors) == 1 and "no readable checkpoint" in errors[0], proc.stderr
    assert not marker.exists()


def test_pickle_npz_and_npy_are_refused_and_never_run(run, tmp_path):
    marker = tmp_path / "pwned-npz"
    evil_npz = tmp_path / "norm.npz"
    np.savez(evil_npz, offset=np.array([Payload(marker)], dtype=object), scale=np.array(1.0))
    with np.load(evil_npz, allow_pickle=True) as z:  # control: an unsafe load runs the payload
        z["offset"]
    assert marker.exists()
    marker.unlink()
    evil_npy = tmp_path / "points.npy"
    np.save(evil_npy, np.array([Payload(marker)], dtype=object), allow_pickle=True)

    evil_samples = tmp_path / "samples.npz"
    np.savez(evil_samples, pos=np.array([Payload(marker)], dtype=object), neg=np.zeros((1, 4), np.float32))
    with pytest.raises(DataError, match="pickled objects, which are refused"):
        formats.load_normalization(evil_npz)
    with pytest.raises(DataError, match="pickled objects, which are refused"):
        formats.load_sdf_samples(evil_samples)
    for fn in (formats.load_points, formats.load_points_2d):
        with pytest.raises(DataError, match="pickled"):
            fn(evil_npy)
    assert not marker.exists()

    partial = tmp_path / "p.xyz"
    partial.write_text("".join(f"{x} {y} {z}\n" for x, y, z in np.random.default_rng(0).normal(size=(50, 3))))
    assert_one_line_error(cli("reconstruct", partial, "--run", run, "--norm", evil_npz, "--out",
                              tmp_path / "o.ply"),
                          "norm.npz", "pickled objects, which are refused")
    assert_one_line_error(cli("reconstruct", evil_npy, "--run", run, "--out", tmp_path / "o.ply"),
                          "points.npy", "pickled")
    assert not marker.exists()


def test_yaml_with_python_tags_is_refused(tmp_path):
    marker = tmp_path / "pwned-yaml"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"train: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        load_config(cfg, [])
    assert not marker.exists()
