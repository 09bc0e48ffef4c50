"""Distributed training on CPU (gloo, 2 processes): 2 ranks at a global batch train the same model as 1 rank
at that batch, for both latent sources; resume under another rank count; ``--nproc`` errors in one line."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO, assert_one_line_error, cli
from tests.test_autoencoder import make_tiny_digits

pytestmark = pytest.mark.skipif(not torch.distributed.is_available()
                                or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

PRESET = REPO / "configs" / "digits_autodecoder.yaml"
# tiny, no dropout; 12 training shapes in global batches of 5 (split 3 + 2 between 2 ranks, last batch 2:
# 1 + 1), codes that start beyond max_norm so the table's renormalisation is exercised, weight norm on
TINY_DDP = ["model.decoder.hidden=[32,32,32,32]", "model.decoder.latent_in=[2]", "model.decoder.dropout=0.0",
            "model.decoder.weight_norm=true", "model.latent.size=8", "model.latent.max_norm=1.0",
            "model.latent.init_std=2.0", "train.shapes_per_batch=5", "train.samples_per_shape=256",
            # fp32: compared to 1e-5
            "train.checkpoint_every=2", "train.code_reg_rampup=2", "train.precision=fp32"]
AE = ["model.latent.source=pointnet", "model.latent.max_norm=null",
      "model.latent.kwargs={hidden: 16, blocks: 2, points: 64, noise: 0.01, partial: 0.5}"]
# measured: 2 ranks vs 1 differ by < 1e-7 relative in the loss and < 1e-6 in any weight after 4 epochs
# (float summation order only); the tolerances leave room for other CPUs and thread counts
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_tiny_digits(tmp_path_factory.mktemp("ddp"))


def train_cli(data, out, epochs: int, *extra: str, nproc: int = 1, torchrun: bool = False):
    sets = [a for kv in [*TINY_DDP, *extra] for a in ("--set", kv)]
    args = ["train", "--config", PRESET, "--data", data, "--out", out, "--epochs", str(epochs), "--quiet",
            "--device", "cpu", *sets]
    if torchrun:
        import subprocess

        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc_per_node", str(nproc), "-m", "deepsdf_ad", *map(str, args)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc
    return cli(*args, *(["--nproc", str(nproc)] if nproc > 1 else []), check=True, timeout=300)


def losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_model(a, b, epoch: int, codes: bool = True) -> None:
    """The checkpoints of runs ``a`` and ``b`` at ``epoch`` agree (and their codes files, if ``codes``)."""
    x = load_file(str(a / "checkpoints" / f"epoch_{epoch:06d}.safetensors"))
    y = load_file(str(b / "checkpoints" / f"epoch_{epoch:06d}.safetensors"))
    assert x.keys() == y.keys()
    for k in x:  # weights, codes and the Adam moments
        torch.testing.assert_close(x[k], y[k], atol=WEIGHT_ATOL, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
    if codes:
            torch.testing.assert_close(load_file(str(a / "latent_codes.safetensors"))["codes"],
                                   load_file(str(b / "latent_codes.safetensors"))["codes"], atol=WEIGHT_ATOL,
                                   rtol=0)


def test_two_ranks_train_the_same_autodecoder_as_one(digits, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train_cli(digits, one, 6)  # keeps the checkpoints of epochs 4 and 6
    proc = train_cli(digits, two, 4, nproc=2)
    assert "4 epochs" in proc.stdout and proc.stdout.count("train:") == 1  # rank 0 reports, once
    assert losses(two) == pytest.approx(losses(one)[:4], rel=LOSS_RTOL)
    assert losses(one)[-1] < losses(one)[0]
    assert_same_model(one, two, 4, codes=False)  # run one's codes file is of epoch 6
    rows = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and all(r["ranks"] == 2 for r in rows)
    # resumed by 1 rank (a checkpoint holds no per-rank state), it continues as the 1-rank run did
    train_cli(digits, two, 6)
    assert losses(two) == pytest.approx(losses(one), rel=LOSS_RTOL)
    assert_same_model(one, two, 6)


def test_two_ranks_under_torchrun_train_the_same_encoder_as_one(digits, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train_cli(digits, one, 4, *AE)
    train_cli(digits, two, 2, *AE)
    # resumed under torchrun with 2 ranks: epochs 3 and 4 split between them
    train_cli(digits, two, 4, *AE, nproc=2, torchrun=True)
    assert losses(two) == pytest.approx(losses(one), rel=LOSS_RTOL)
    assert_same_model(one, two, 4)  # encoder weights, and the training codes it stored


def test_nproc_errors_are_one_line(digits, tmp_path):
    proc = cli("train", "--config", PRESET, "--data", tmp_path / "nothing", "--out", tmp_path / "run",
               "--nproc", "2", "--quiet", "--device", "cpu")
    assert_one_line_error(proc, "nothing")
    proc = cli("train", "--config", PRESET, "--data", digits, "--out", tmp_path / "run", "--nproc", "0")
    assert_one_line_error(proc, "--nproc")
    proc = cli("train", "--config", PRESET, "--data", digits, "--out", tmp_path / "run", "--nproc", "2",
               "--set", "train.keep_checkpoints=1")
    assert_one_line_error(proc, "train.keep_checkpoints")


def test_a_rank_crashing_in_teardown_after_rank_0_finished_is_not_a_failure(capsys):
    """Rank 0 exits 0 only after the final barrier, so every rank finished training; a rank killed by a
    signal after that (gloo aborting on a closed peer socket) does not fail the command. Anything else
    does."""
    from deepsdf_ad.commands.launch import _report

    assert _report([0, -6], None, [None, None]) == 0
    assert "crashed while shutting down" in capsys.readouterr().err
    assert _report([0, 1], 1, [None, None]) == 1
    assert _report([-15, -6], 1, [None, None]) == 1
    assert "rank 1 was killed by signal 6" in capsys.readouterr().err


def test_two_ranks_with_sub_batches_train_the_same_autodecoder_as_one(digits, tmp_path):
    """``train.batch_split`` under DDP: gradients are summed over ranks once, after the last part; parts of
    the last batch (2 shapes) leave one rank without a shape."""
    one, two = tmp_path / "one", tmp_path / "two"
    train_cli(digits, one, 2)
    train_cli(digits, two, 2, "train.batch_split=2", nproc=2)
    assert losses(two) == pytest.approx(losses(one), rel=LOSS_RTOL)
    assert_same_model(one, two, 2)
