"""Amortising a trained autodecoder (``train --decoder-from``): its decoder is taken over and stays frozen,
the encoder learns to give its codes, and the result is an encoder run that ``reconstruct --mode encode``
uses."""

from __future__ import annotations

import pytest
import torch
import yaml

from deepsdf_ad.config import ConfigError, load_config
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.runs import Run, load_trained
from deepsdf_ad.train import train
from tests.helpers import REPO, assert_one_line_error, cli
from tests.test_autoencoder import AE, make_tiny_digits, tiny_cfg


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_tiny_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def ad_run(digits, tmp_path_factory):
    return train(tiny_cfg(), digits, tmp_path_factory.mktemp("ad") / "run", epochs=30, device="cpu",
                 progress=False)


def code_error(run: Run, ad: Run) -> float:
    """Mean squared distance of an encoder run's training codes to the autodecoder's, over their variance."""
    target = ad.codes()
    return float((run.codes() - target).pow(2).mean() / target.var(dim=0, unbiased=False).mean())


def test_the_decoder_stays_the_autodecoders_and_the_codes_come_to_its_own(digits, ad_run, tmp_path):
    over = [*AE, f"train.decoder_from={ad_run.path}", "train.code_target=10.0",
            "train.lr_latent.initial=0.003"]
    short = train(tiny_cfg(*over), digits, tmp_path / "short", epochs=1, device="cpu", progress=False)
    long = train(tiny_cfg(*over), digits, tmp_path / "long", epochs=100, device="cpu", progress=False)
    _, ad_model = load_trained(ad_run, torch.device("cpu"))
    _, am_model = load_trained(long, torch.device("cpu"))
    # the very decoder, not a retrained one
    pairs = zip(ad_model.decoder.state_dict().items(), am_model.decoder.state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"decoder tensor {name} changed")
    # the encoder learned the autodecoder's codes: far closer after 100 epochs than after one
    first, last = code_error(short, ad_run), code_error(long, ad_run)
    assert last < 0.5 * first, (first, last)
    losses = [r["loss"] for r in long.metrics()]
    assert losses[-1] < losses[0]
    # resuming keeps the decoder frozen and the same path: 50 + 50 epochs equal 100 in one go
    train(tiny_cfg(*over), digits, tmp_path / "resumed", epochs=50, device="cpu", progress=False)
    resumed = train(tiny_cfg(*over), digits, tmp_path / "resumed", epochs=100, device="cpu", progress=False)
    assert [r["loss"] for r in resumed.metrics()] == pytest.approx(losses, rel=1e-5)

    # an autodecoder trained on after the amortising started: resuming is refused, not silently mixed
    moved = train(tiny_cfg(), digits, tmp_path / "moved", epochs=2, device="cpu", progress=False)
    train(tiny_cfg(*AE, f"train.decoder_from={moved.path}"), digits, tmp_path / "am", epochs=1, device="cpu",
          progress=False)
    train(tiny_cfg(), digits, moved.path, epochs=3, device="cpu", progress=False)
    with pytest.raises(DataError, match="its decoder changed"):
        train(tiny_cfg(*AE, f"train.decoder_from={moved.path}"), digits, tmp_path / "am", epochs=2,
              device="cpu", progress=False)


def test_amortise_from_the_command_line_then_encode(digits, ad_run, tmp_path):
    cfg = tmp_path / "am.yaml"
    base = yaml.safe_load((REPO / "configs" / "digits_autodecoder.yaml").read_text())
    base["model"]["decoder"].update(hidden=[32, 32, 32, 32], latent_in=[2], dropout=0.0)
    base["model"]["latent"] = {"source": "pointnet", "size": 8, "kwargs": {"hidden": 16, "blocks": 2,
                                                                             "points": 64}}
    base["train"].update(shapes_per_batch=4, samples_per_shape=512, checkpoint_every=2, code_target=0.01,
                         epochs=4)
    cfg.write_text(yaml.safe_dump(base))
    # the tiny autodecoder was trained with the same decoder (tests.helpers.TINY)
    assert load_config(cfg, [f"train.decoder_from={ad_run.path}"]).model.decoder == \
        load_trained(ad_run, torch.device("cpu"))[0].model.decoder
    # a run folder whose name is not a plain YAML scalar (': ', ' #') is taken as it is
    odd = tmp_path / "ad: run #1"
    odd.symlink_to(ad_run.path.resolve(), target_is_directory=True)
    proc = cli("train", "--config", cfg, "--data", digits, "--out", tmp_path / "am", "--decoder-from",
               odd, "--quiet", check=True)
    assert "train: 4 epochs" in proc.stdout
    saved = Run(tmp_path / "am").config()
    assert saved.train.decoder_from == str(odd.resolve()) and saved.model.latent.source == "pointnet"
    partial = next((digits / "surface").glob("*/*.ply"))
    proc = cli("reconstruct", partial, "--run", tmp_path / "am", "--out", tmp_path / "e.png", "--resolution",
               "32", "--mode", "encode", check=True)
    assert (tmp_path / "e.png").is_file() and "mode encode" in proc.stdout
    # the run amortised is an input: never the output
    proc = cli("train", "--config", cfg, "--data", digits, "--out", ad_run.path, "--decoder-from",
               ad_run.path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_what_cannot_be_amortised_is_one_line(digits, ad_run, tmp_path):
    cfg = REPO / "configs" / "digits_autodecoder.yaml"
    # not a run
    proc = cli("train", "--config", cfg, "--data", digits, "--out", tmp_path / "a", "--decoder-from",
               tmp_path / "nothing", "--set", "model.latent.source=pointnet")
    assert_one_line_error(proc, "not a run folder")
    # a table run has no encoder to train
    proc = cli("train", "--config", cfg, "--data", digits, "--out", tmp_path / "b", "--decoder-from",
               ad_run.path)
    assert_one_line_error(proc, "has none")
    # another decoder
    proc = cli("train", "--config", cfg, "--data", digits, "--out", tmp_path / "c", "--decoder-from",
               ad_run.path, "--set", "model.latent.source=pointnet")
    assert_one_line_error(proc, "its decoder differs")
    # an encoder run is not an autodecoder
    enc = train(tiny_cfg(*AE), digits, tmp_path / "enc", epochs=1, device="cpu", progress=False)
    with pytest.raises(DataError, match="takes an autodecoder"):
        train(tiny_cfg(*AE, f"train.decoder_from={enc.path}"), digits, tmp_path / "d", epochs=1, device="cpu",
              progress=False)
    # the pull towards the codes needs the run they come from
    with pytest.raises(ConfigError, match="--decoder-from"):
        load_config(REPO / "configs" / "shapes_cpu_amortised.yaml")
    # shapes the run never trained on
    other = make_tiny_digits(tmp_path / "other", n=40, seed=5)
    with pytest.raises(DataError, match="were not in its training set"):
        train(tiny_cfg(*AE, f"train.decoder_from={ad_run.path}"), other, tmp_path / "e", epochs=1,
              device="cpu", progress=False)


def test_the_preset_fits_a_shapes_cpu_run():
    """configs/shapes_cpu_amortised.yaml takes a shapes_cpu run's decoder: the same decoder and code length,
    an encoder source, and the pull towards the codes."""
    ad = load_config(REPO / "configs" / "shapes_cpu.yaml")
    am = load_config(REPO / "configs" / "shapes_cpu_amortised.yaml", ["train.decoder_from=runs/ad"])
    assert am.model.decoder == ad.model.decoder and am.model.latent.size == ad.model.latent.size
    assert am.model.latent.source == "pointnet" and am.train.code_target > 0 and am.dim == ad.dim


def test_code_pull_skips_shapes_without_a_target():
    from deepsdf_ad.amortise import code_pull, target_weight

    codes = torch.tensor([[1.0, 1.0], [5.0, 5.0], [0.0, 2.0]])
    targets = torch.tensor([[0.0, 1.0], [float("nan")] * 2, [0.0, 0.0]])
    # rows 0 and 2: (1 + 0) + (0 + 4) over 3 shapes x 2 dims; row 1 has no target
    assert float(code_pull(codes, targets, 3)) == pytest.approx(5 / 6)
    spread = float(targets[[0, 2]].var(0, unbiased=False).mean())
    assert target_weight(1.0, targets) == pytest.approx(1.0 / spread)


def test_amortise_on_more_shapes_than_the_autodecoder_saw(digits, tmp_path):
    """train.amortise_unseen: the encoder trains on every shape, the pull only on those with a code."""
    import json

    split = json.loads((digits / "splits" / "train.json").read_text())
    half = {d: {c: ids[: len(ids) // 2] for c, ids in cats.items()} for d, cats in split.items()}
    (tmp_path / "half.json").write_text(json.dumps(half))
    ad = train(tiny_cfg(), digits, tmp_path / "ad", epochs=3, device="cpu",
               split_file=str(tmp_path / "half.json"), progress=False)
    over = [*AE, f"train.decoder_from={ad.path}", "train.code_target=0.01"]
    with pytest.raises(DataError, match="train.amortise_unseen=true"):
        train(tiny_cfg(*over), digits, tmp_path / "refused", epochs=1, device="cpu", progress=False)
    run = train(tiny_cfg(*over, "train.amortise_unseen=true"), digits, tmp_path / "am", epochs=3,
                device="cpu", progress=False)
    assert len(run.codes()) == sum(len(ids) for cats in split.values() for ids in cats.values())
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in run.metrics())
    with pytest.raises(ConfigError, match="amortise_unseen"):
        tiny_cfg("train.amortise_unseen=true")
