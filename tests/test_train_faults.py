"""Training faults: a run killed with SIGKILL and started again ends with the same weights and codes as an
uninterrupted one; a truncated, altered or unverifiable newest checkpoint is skipped with a one-line warning
in favour of the previous one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from deepsdf_ad.config import load_config
from deepsdf_ad.runs import Run
from deepsdf_ad.train import plan_split, train
from tests.helpers import REPO
from tests.test_autoencoder import make_tiny_digits

PRESET = REPO / "configs" / "digits_autodecoder.yaml"
TINY_FAULTS = ["model.decoder.hidden=[32,32,32,32]", "model.decoder.latent_in=[2]",
               "model.decoder.dropout=0.1", "model.latent.size=8", "train.shapes_per_batch=3",
               "train.samples_per_shape=512", "train.checkpoint_every=3", "train.keep_checkpoints=2",
               "train.code_reg_rampup=4"]


KILLS = 2  # each restart costs a process start (seconds); two kills at random moments suffice


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_tiny_digits(tmp_path_factory.mktemp("faults"))


def train_cmd(data, out, epochs: int) -> list[str]:
    sets = [a for kv in TINY_FAULTS for a in ("--set", kv)]
    return [sys.executable, "-m", "deepsdf_ad", "train", "--config", str(PRESET), "--data", str(data),
            "--out", str(out), "--epochs", str(epochs), "--quiet", "--device", "cpu", *sets]


def final_state(out, epoch: int) -> dict[str, torch.Tensor]:
    state = load_file(str(out / "checkpoints" / f"epoch_{epoch:06d}.safetensors"))
    state["codes_file"] = load_file(str(out / "latent_codes.safetensors"))["codes"]
    return state


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(digits, tmp_path):
    epochs = 45
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(train_cmd(digits, ref, epochs), env=env, check=True, capture_output=True, timeout=300)

    rng = random.Random(0)
    kills, seen = 0, 0
    while True:
        proc = subprocess.Popen(train_cmd(digits, killed, epochs), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if kills < KILLS:
            # wait for a checkpoint newer than the last one seen, then kill -9 at a random moment after it
            while (proc.poll() is None
                   and max((c["epoch"] for c in Run(killed).checkpoints()), default=0) <= seen):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is None and kills < KILLS:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            run = Run(killed)
            newest = max(c["epoch"] for c in run.checkpoints())
            # what is lost is at most the work since the newest checkpoint: that one is intact and is used
            assert run.load_checkpoint(warn=False)[1]["epoch"] == newest
            seen = newest
            continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        break
    assert kills >= 1, "the run ended before it could be killed; make it longer"
    rows = Run(killed).metrics()
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))  # every epoch once, after truncation
    a, b = final_state(ref, epochs), final_state(killed, epochs)
    assert a.keys() == b.keys()
    for k in a:  # weights, codes, Adam moments: same seed -> same model (dropout on, so its masks too)
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in Run(ref).metrics()], rel=1e-6)
    assert not list((killed / "checkpoints").glob(".deepsdf-ad-tmp-*"))  # leftovers of kills are cleaned up


def cfg():
    return load_config(PRESET, TINY_FAULTS)


def corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_flip(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, one tensor byte changed: only the checksum sees it
    path.write_bytes(bytes(data))


def corrupt_sidecar(path):
    path.with_suffix(".json").write_text('{"file": "epo')  # a sidecar cut by a kill


def lose_sidecar(path):
    path.with_suffix(".json").unlink()  # killed between the checkpoint's rename and its sidecar


@pytest.mark.parametrize("damage, needle",
                         [(corrupt_truncate, "checksum mismatch"), (corrupt_flip, "checksum mismatch"),
                                            (corrupt_sidecar, "no readable checksum sidecar"),
                                            (lose_sidecar, "no readable checksum sidecar")])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(digits, tmp_path, capsys, damage, needle):
    ref = train(cfg(), digits, tmp_path / "ref", epochs=9, device="cpu", progress=False)
    run = train(cfg(), digits, tmp_path / "run", epochs=6, device="cpu", progress=False)
    assert [c["epoch"] for c in run.checkpoints()] == [3, 6]
    capsys.readouterr()
    damage(run.path / "checkpoints" / "epoch_000006.safetensors")
    train(cfg(), digits, run.path, epochs=9, device="cpu", progress=False)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("deepsdf-ad: warning: ") and needle in err[0], err
    assert "epoch_000006" in err[0] and "using the previous one" in err[0]
    # it resumed from epoch 3 and redid 4..9: the same model as a run never damaged
    assert [r["epoch"] for r in run.metrics()] == list(range(1, 10))
    a, b = final_state(ref.path, 9), final_state(run.path, 9)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert [c["epoch"] for c in run.checkpoints()] == [6, 9]  # the damaged one was rewritten, then rotated


def test_checkpoints_are_verified_and_rotated(digits, tmp_path, capsys):
    run = train(cfg(), digits, tmp_path / "run", epochs=7, device="cpu", progress=False)
    folder = run.path / "checkpoints"
    # every 3 epochs and the last; the newest 2 kept, each with a sidecar holding its SHA-256
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_000006.json", "epoch_000006.safetensors",
                                                         "epoch_000007.json", "epoch_000007.safetensors"]
    side = json.loads((folder / "epoch_000007.json").read_text())
    from deepsdf_ad.data_prep.formats import file_sha256

    assert side == {"file": "epoch_000007.safetensors", "epoch": 7,
                    "sha256": file_sha256(folder / "epoch_000007.safetensors")}
    # both damaged: nothing to fall back on, said in one line each; training starts over
    corrupt_truncate(folder / "epoch_000007.safetensors")
    corrupt_flip(folder / "epoch_000006.safetensors")
    assert run.load_checkpoint() is None
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 2 and "using the previous one" in err[0] and "no older checkpoint to use" in err[1]


def test_runs_with_the_old_checkpoint_index_still_resume(digits, tmp_path):
    run = train(cfg(), digits, tmp_path / "run", epochs=3, device="cpu", progress=False)
    folder = run.path / "checkpoints"
    entries = run.checkpoints()
    for side in folder.glob("*.json"):
        side.unlink()
    (folder / "index.json").write_text(json.dumps({"checkpoints": entries}))
    assert run.checkpoints() == entries and run.load_checkpoint()[1]["epoch"] == 3
    train(cfg(), digits, run.path, epochs=6, device="cpu", progress=False)
    assert not (folder / "index.json").exists() and [c["epoch"] for c in run.checkpoints()] == [3, 6]


def test_cosine_learning_rates_follow_half_a_cosine_and_survive_a_resume(digits, tmp_path):
    """``train.lr_*.kind: cosine``: each epoch's recorded rate is the half cosine of that epoch, including the
    epochs after a resume (the rate depends on the epoch and the run's length only)."""
    import math

    sets = TINY_FAULTS + ["train.lr_decoder.kind=cosine", "train.lr_latent.kind=cosine", "train.epochs=6"]
    cfg = load_config(PRESET, sets)
    train(cfg, digits, tmp_path / "run", device="cpu", progress=False)
    first = Run(tmp_path / "run").metrics()
    # as if killed before epoch 6's checkpoint
    for f in (tmp_path / "run" / "checkpoints").glob("epoch_000006.*"):
        f.unlink()
    train(cfg, digits, tmp_path / "run", device="cpu", progress=False)  # resumes at epoch 3
    rows = Run(tmp_path / "run").metrics()
    assert len(rows) == 6 and [r["lr_decoder"] for r in rows] == [r["lr_decoder"] for r in first]
    for e, r in enumerate(rows):
        for key, initial in (("lr_decoder", cfg.train.lr_decoder.initial),
                             ("lr_latent", cfg.train.lr_latent.initial)):
            want = initial * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * e / 6)))
            assert r[key] == pytest.approx(want, rel=1e-9)
    assert rows[-1]["lr_decoder"] < 0.1 * rows[0]["lr_decoder"]
    with pytest.raises(Exception, match="train.lr_latent.kind"):
        load_config(PRESET, ["train.lr_latent.kind=linear"])


@pytest.mark.parametrize("source", ["table", "pointnet"])
def test_a_step_split_into_parts_trains_the_same_model(digits, tmp_path, source):
    """``train.batch_split``: the parts' gradients add up to the whole batch's, so the weights, codes (or
    encoder) and losses match the unsplit run (no dropout, fp32). Batches of 3 shapes (the last of 2) in 2 and
    3 parts of shapes, and in 6 (each shape's samples halved too)."""
    sets = TINY_FAULTS + ["model.decoder.dropout=0.0", "train.precision=fp32", "train.epochs=3"]
    if source == "pointnet":
        sets += ["model.latent.source=pointnet", "model.latent.max_norm=null",
                 "model.latent.kwargs={hidden: 16, blocks: 2, points: 64, noise: 0.01, partial: 0.5}"]
    whole = train(load_config(PRESET, sets + ["train.batch_split=1"]), digits, tmp_path / "whole",
                  device="cpu", progress=False)
    for parts in (2, 3, 6):
        split = train(load_config(PRESET, sets + [f"train.batch_split={parts}"]), digits,
                      tmp_path / f"split{parts}", device="cpu", progress=False)
        assert ([r["loss"] for r in split.metrics()]
                == pytest.approx([r["loss"] for r in whole.metrics()], rel=1e-5))
        a, b = final_state(whole.path, 3), final_state(split.path, 3)
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
    for bad in ("0", "half"):
        with pytest.raises(Exception, match="train.batch_split"):
            load_config(PRESET, TINY_FAULTS + [f"train.batch_split={bad}"])


def test_auto_batch_split_keeps_parts_small_on_the_cpu():
    """``auto`` on the CPU: the widest activation of a part within 4 MiB (DeepSDF's chair spec: a quarter of a
    shape per part in bf16, an eighth in fp32); ranks share a part."""
    chairs, cpu = REPO / "configs" / "deepsdf_chairs.yaml", torch.device("cpu")
    assert plan_split(load_config(chairs, ["train.precision=bf16"]), cpu) == (64, 4)
    assert plan_split(load_config(chairs, ["train.precision=fp32"]), cpu) == (64, 8)
    assert plan_split(load_config(chairs, ["train.precision=fp32"]), cpu, ranks=2) == (32, 8)
    small = load_config(REPO / "configs" / "shapes_small.yaml")  # 8 x 2,048 samples, 128 wide, fp32
    assert plan_split(small, cpu) == (2, 1) and plan_split(small, cpu, ranks=2) == (1, 1)  # 4 shapes a rank
    assert plan_split(load_config(REPO / "configs" / "digits_autodecoder.yaml"), cpu) == (1, 1)
    assert plan_split(load_config(chairs, ["train.batch_split=8"]), cpu) == (8, 1)
    assert plan_split(load_config(chairs, ["train.batch_split=128"]), cpu) == (64, 2)


def test_meshing_batches_stay_small_on_the_cpu():
    from deepsdf_ad.meshing import auto_batch_points
    from deepsdf_ad.models import build_model

    cfg = load_config(REPO / "configs" / "deepsdf_chairs.yaml")
    model = build_model(3, cfg.model.decoder, cfg.model.latent, 1)
    cpu = torch.device("cpu")
    assert auto_batch_points(model, cpu, precision="fp32") == 2048
    assert auto_batch_points(model, cpu, precision="bf16") == 4096


def test_samples_stay_on_the_host_when_a_gpu_has_no_room(monkeypatch):
    """``train.samples_on``: the device unless the samples would take more than half of a GPU's free memory
    (then pinned host memory, each step's draw copied over); the CPU always keeps them where they are."""
    from deepsdf_ad.data import data_device

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**30, 16 * 2**30))
    assert data_device("auto", 4 * 2**30, gpu) == gpu
    assert data_device("auto", 6 * 2**30, gpu) == cpu
    assert data_device("host", 1, gpu) == cpu and data_device("device", 60 * 2**30, gpu) == gpu
    assert data_device("host", 1, cpu) == cpu
    with pytest.raises(Exception, match="train.samples_on"):
        load_config(PRESET, ["train.samples_on=disk"])


def test_a_run_that_does_not_learn_is_reported_after_ten_epochs(digits, tmp_path, capsys):
    from deepsdf_ad.health import STALL_EPOCHS, stall_message

    # the loss per epoch of the scenes grid autoencoder that never learned, and of a healthy one
    assert stall_message([0.0854, 0.0853, 0.0855, 0.0852, 0.0856, 0.0854, 0.0856, 0.0855, 0.0857, 0.0856])
    healthy = [0.0514, 0.0423, 0.0293, 0.0273, 0.0258, 0.0252, 0.0247, 0.0245, 0.0233, 0.0236]
    assert stall_message(healthy) is None
    assert stall_message([0.0854] * (STALL_EPOCHS - 1)) is None  # too early to say
    # end to end: learning rates of 1e-12 cannot learn; one warning line, at epoch 10, naming the run
    frozen = load_config(PRESET, [*TINY_FAULTS, "train.lr_decoder.initial=1e-12",
                                   "train.lr_latent.initial=1e-12"])
    train(frozen, digits, tmp_path / "stuck", epochs=STALL_EPOCHS + 1, device="cpu", progress=False)
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(err) == 1 and "not learning" in err[0] and str(tmp_path / "stuck") in err[0], err
    train(cfg(), digits, tmp_path / "learns", epochs=STALL_EPOCHS, device="cpu", progress=False)
    assert "not learning" not in capsys.readouterr().err


def test_a_finished_run_trained_again_loads_no_samples(digits, tmp_path, monkeypatch):
    """Training a run that has reached its epochs again (as every `experiment` restart does) returns without
    loading the data (minutes on a large set) and leaves the codes file equal to the newest checkpoint's,
    even when a kill had left older codes there; an encoder's run too."""
    import deepsdf_ad.train as T
    from tests.test_autoencoder import AE

    for name, extra in (("ad", []), ("ae", AE)):
        c = load_config(PRESET, [*TINY_FAULTS, *extra])
        run = train(c, digits, tmp_path / name, epochs=3, device="cpu", progress=False)
        codes = run.codes().clone()
        run.save_codes(torch.zeros_like(codes), run.shapes()["keys"])  # a kill between checkpoint and codes

        def no_data(*a, **k):
            raise AssertionError("samples loaded for a finished run")

        monkeypatch.setattr(T, "_load_samples", no_data)
        train(c, digits, run.path, device="cpu", progress=False)
        torch.testing.assert_close(run.codes(), codes)
        assert [c["epoch"] for c in run.checkpoints()][-1] == 3
        monkeypatch.undo()
