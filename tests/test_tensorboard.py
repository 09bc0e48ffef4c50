"""``train --tensorboard`` / ``train.tensorboard: true``: TensorBoard event files beside metrics.jsonl,
holding the same numbers; a one-line error without the package; nothing written by default."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from deepsdf_ad.runs import METRICS, TENSORBOARD
from tests.helpers import TINY, assert_one_line_error, cli, train_tiny_sphere_run


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_files_hold_the_metrics_and_code_norms(tmp_path):
    pytest.importorskip("tensorboard")
    run = train_tiny_sphere_run(tmp_path, epochs=3, extra=("train.tensorboard=true",))
    rows = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    found = scalars(run / TENSORBOARD)
    assert [s for s, _ in found["loss/total"]] == [1, 2, 3]
    for key, tag in (("loss", "loss/total"), ("sdf_loss", "loss/sdf"), ("reg_loss", "loss/code_reg"),
                     ("lr_decoder", "lr/decoder"), ("lr_latent", "lr/latent"),
                     ("points_per_s", "time/points_per_s")):
        np.testing.assert_allclose([v for _, v in found[tag]], [r[key] for r in rows], rtol=1e-6)
    from deepsdf_ad.api import load_run

    norms = load_run(run, device="cpu").codes.norm(dim=1)
    assert len(found["codes/norm_mean"]) == 3
    assert found["codes/norm_mean"][-1][1] == pytest.approx(float(norms.mean()), rel=1e-5)
    assert found["codes/norm_max"][-1][1] == pytest.approx(float(norms.max()), rel=1e-5)


def test_train_flag_writes_them_and_the_default_does_not(tmp_path):
    pytest.importorskip("tensorboard")
    plain = train_tiny_sphere_run(tmp_path / "a", epochs=1)
    assert not (plain / TENSORBOARD).exists()
    sets = [a for kv in TINY for a in ("--set", kv)]
    cli("train", "--config", "shapes_small", "--data", tmp_path / "a" / "data", "--out", tmp_path / "r",
        "--epochs", "2", "--quiet", "--device", "cpu", "--tensorboard", *sets, check=True)
    assert [s for s, _ in scalars(tmp_path / "r" / TENSORBOARD)["loss/total"]] == [1, 2]
    assert "tensorboard: true" in (tmp_path / "r" / "config.yaml").read_text()


def test_without_the_package_it_is_one_line(tmp_path):
    # the package hidden from this one process (a None entry in sys.modules makes its import fail)
    code = ("import sys; sys.modules['torch.utils.tensorboard'] = None; from deepsdf_ad.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "train", "--config", "shapes_small", "--data",
                           str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--tensorboard"],
                          capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, "needs the tensorboard package", "pip install 'deepsdf-ad[tensorboard]'")
    assert not (tmp_path / "r").exists()
