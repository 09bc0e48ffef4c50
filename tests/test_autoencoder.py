"""The PointNet autoencoder: permutation invariance, configs, training with resume, reconstruct --mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepsdf_ad.config import ConfigError, load_config
from deepsdf_ad.data_prep.digits import DigitSamplingConfig, pixel_centres, prep_digits
from deepsdf_ad.data_prep.formats import write_idx
from deepsdf_ad.inputs import VIEW_DRAW, PointInputs, camera_view, partial_view, random_cameras
from deepsdf_ad.models import LatentConfig, build_model
from deepsdf_ad.models.sources import build_latent_source
from deepsdf_ad.runs import Run
from deepsdf_ad.train import train
from tests.helpers import REPO, TINY, assert_one_line_error, cli

AE = ["model.latent.source=pointnet", "model.latent.kwargs={hidden: 16, blocks: 2, points: 64}",
      "train.lr_latent.initial=0.002"]


def blob_image(rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """A random ellipse (sometimes with a hole) as a uint8 image, intensity 0.5 on its outline."""
    p = pixel_centres(size, size)
    c = rng.uniform(-0.25, 0.25, 2)
    ax = rng.uniform(0.3, 0.6, 2)
    r = np.linalg.norm((p - c) / ax, axis=-1)
    img = np.clip(0.5 - (r - 1.0) * 2.0, 0, 1)
    if rng.random() < 0.5:
        img = np.minimum(img, np.clip(0.5 + (r - 0.45) * 2.0, 0, 1))
    return (img * 255).astype(np.uint8)


def write_tiny_idx(folder, n: int = 16, prefix: str = "t", labels=(0, 1), seed: int = 0) -> None:
    """A tiny MNIST-like IDX pair of random blobs (labels cycle through ``labels``)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{prefix}-images-idx3-ubyte", np.stack([blob_image(rng) for _ in range(n)]))
    write_idx(folder / f"{prefix}-labels-idx1-ubyte",
              np.array([labels[i % len(labels)] for i in range(n)], np.uint8))


def make_tiny_digits(root, n: int = 16, labels=(0, 1), seed: int = 0):
    write_tiny_idx(root / "idx", n, labels=labels, seed=seed)
    prep_digits(root / "idx", root / "data", DigitSamplingConfig(samples=512, contour_points=300),
                test_fraction=0.25, seed=0, progress=False)
    return root / "data"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_tiny_digits(tmp_path_factory.mktemp("digits"))


def tiny_cfg(*extra):
    return load_config(REPO / "configs" / "digits_autodecoder.yaml", [*TINY, *extra])


def test_pointnet_is_permutation_invariant():
    torch.manual_seed(0)
    enc = build_latent_source(LatentConfig(source="pointnet", size=8, kwargs={"hidden": 16, "blocks": 3}),
                              3, 3)
    pts = torch.randn(2, 100, 3)
    perm = torch.randperm(100)
    a, b = enc.encode(pts), enc.encode(pts[:, perm])
    assert a.shape == (2, 8)
    torch.testing.assert_close(a, b)
    # and it does depend on the points
    assert not torch.allclose(a, enc.encode(pts * 1.5))
    # duplicated points do not change a max-pooled code either
    torch.testing.assert_close(a, enc.encode(torch.cat([pts, pts[:, :10]], dim=1)))


def test_pointnet_code_never_collapses_to_a_constant():
    # a bug seen in training: every pooled feature negative; with a ReLU before the head the code was one
    # constant and the encoder got no gradient. The head is linear, so the code still follows the points.
    torch.manual_seed(0)
    enc = build_latent_source(LatentConfig(source="pointnet", size=8, kwargs={"hidden": 16, "blocks": 2}),
                              3, 3)
    with torch.no_grad():
        enc.blocks[-1].fc_1.bias.fill_(-100.0)
    pts = torch.randn(2, 50, 3)
    assert not torch.allclose(enc.encode(pts)[0], enc.encode(pts)[1])
    enc.encode(pts).pow(2).sum().backward()
    assert enc.fc_pos.weight.grad.abs().sum() > 0


def test_partial_view_keeps_the_far_side():
    pts = torch.linspace(-1, 1, 10)[None, :, None].expand(1, 10, 2).clone()
    out = partial_view(pts, torch.tensor([[1.0, 0.0]]), 4)
    assert sorted(out[0, :, 0].tolist()) == pytest.approx(torch.linspace(-1, 1, 10)[-4:].tolist())
    kept = partial_view(pts, torch.tensor([[1.0, 0.0]]), 4, cut=torch.tensor([False]))
    torch.testing.assert_close(kept, pts[:, :4])


def _sphere(n: int, seed: int = 0) -> torch.Tensor:
    p = torch.randn((n, 3), generator=torch.Generator().manual_seed(seed))
    return 0.8 * p / p.norm(dim=1, keepdim=True)


def test_camera_view_sees_the_near_cap_of_a_sphere():
    """From 2.5 units away, a camera sees the cap of a radius-0.8 sphere where cos(angle to it) > 0.32; the
    view must keep (nearly) only that cap and cover it, where a plane view would keep a fixed half."""
    pts = _sphere(VIEW_DRAW)[None]
    eye = torch.tensor([[0.0, -2.5, 0.0]])
    seen = camera_view(pts, 2000, eye, torch.Generator().manual_seed(1))[0]
    cos = (seen @ torch.tensor([0.0, -1.0, 0.0])) / 0.8
    assert (cos > 0.2).float().mean() > 0.97
    assert cos.min() < 0.45 and cos.max() > 0.95  # out to the rim, and the centre


def test_camera_view_hides_what_lies_behind():
    """Two plates one behind the other along the view: only the near one is seen."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand((2048, 2), generator=g) * 0.8 - 0.4
    near = torch.cat([xy[:, :1], torch.full((2048, 1), 0.3), xy[:, 1:]], 1)
    far = torch.cat([xy[:, :1], torch.full((2048, 1), -0.3), xy[:, 1:]], 1)
    pts = torch.cat([near, far])[None]
    seen = camera_view(pts, 500, torch.tensor([[0.0, 2.5, 0.0]]), g)[0]
    assert (seen[:, 1] > 0).all()
    # from straight above (a degenerate 'right' vector) both plates' tops are in view
    top = camera_view(pts, 500, torch.tensor([[0.0, 0.0, 2.5]]), g)[0]
    assert (top[:, 1] > 0).any() and (top[:, 1] < 0).any()


def test_random_cameras_keep_their_distance_and_elevation():
    eye = random_cameras(500, (10.0, 40.0), torch.Generator().manual_seed(0))
    assert torch.allclose(eye.norm(dim=1), torch.full((500,), 2.5))
    el = torch.rad2deg(torch.asin(eye[:, 2] / 2.5))
    assert el.min() >= 10.0 - 1e-4 and el.max() <= 40.0 + 1e-4 and el.max() - el.min() > 20


def test_draw_cuts_camera_views_only_where_asked(tmp_path):
    inputs = PointInputs.__new__(PointInputs)
    inputs.keys, inputs.dim = ["a", "b"], 3
    inputs.points = torch.cat([_sphere(5000, 0), _sphere(5000, 1) + 5])
    inputs.start, inputs.count = torch.tensor([0, 5000]), torch.tensor([5000, 5000])
    g = torch.Generator().manual_seed(3)
    out = inputs.draw(torch.tensor([0, 1]), 300, g, partial=1.0, view="camera", elevation=(20.0, 20.0))
    assert out.shape == (2, 300, 3)
    # a view of the first sphere keeps one side: its mean lies well off the centre (a full draw: near it)
    assert out[0].mean(0).norm() > 0.3
    full = inputs.draw(torch.tensor([0]), 300, g, partial=0.0, view="camera")
    assert full[0].mean(0).norm() < 0.15
    with pytest.raises(ValueError, match="unknown partial view"):
        inputs.draw(torch.tensor([0]), 10, g, partial=1.0, view="cone")
    inputs.dim = 2
    with pytest.raises(ValueError, match="needs 3D"):
        inputs.draw(torch.tensor([0]), 10, g, partial=1.0, view="camera")


def test_presets_differ_only_in_the_latent_source():
    import yaml

    for ad, ae in (("shapes_small", "shapes_pointnet_ae"), ("digits_autodecoder", "digits_pointnet_ae")):
        a = yaml.safe_load((REPO / "configs" / f"{ad}.yaml").read_text())
        b = yaml.safe_load((REPO / "configs" / f"{ae}.yaml").read_text())
        assert b["model"]["latent"]["source"] == "pointnet" and a["model"]["latent"]["source"] == "table"
        assert a["model"]["decoder"] == b["model"]["decoder"] and a["dim"] == b["dim"]
        assert a["model"]["latent"]["size"] == b["model"]["latent"]["size"]
        for k in a["train"]:
            if k != "lr_latent":
                assert a["train"][k] == b["train"][k], k
        assert a["reconstruct"] == b["reconstruct"] and a["mesh"] == b["mesh"]
        load_config(REPO / "configs" / f"{ae}.yaml")


def test_cpu_presets_share_decoder_data_and_steps():
    """shapes_cpu_ae is shapes_cpu with an encoder: the same decoder and per-step batch; the same budget in
    minutes, so fewer epochs (an encoder epoch costs more), and the encoder weights' own rate."""
    import yaml

    a = yaml.safe_load((REPO / "configs" / "shapes_cpu.yaml").read_text())
    b = yaml.safe_load((REPO / "configs" / "shapes_cpu_ae.yaml").read_text())
    assert (a["model"]["latent"]["source"], b["model"]["latent"]["source"]) == ("table", "pointnet")
    assert a["model"]["decoder"] == b["model"]["decoder"] and a["model"]["decoder"]["fourier"] > 0
    assert a["model"]["latent"]["size"] == b["model"]["latent"]["size"]
    for k in a["train"]:
        if k not in ("lr_latent", "epochs"):
            assert a["train"][k] == b["train"][k], k
    assert b["train"]["epochs"] < a["train"]["epochs"]
    # the same code search, plus the prior only an encoder's code has (encode+refine's refine_prior)
    assert {k: v for k, v in b["reconstruct"].items() if k != "refine_prior"} == a["reconstruct"]
    assert b["reconstruct"]["refine_prior"] > 0 and a["mesh"] == b["mesh"]
    for name in ("shapes_cpu", "shapes_cpu_ae"):
        load_config(REPO / "configs" / f"{name}.yaml")


@pytest.mark.parametrize("override,needle", [
    ("model.latent.kwargs={hiden: 3}", "unknown pointnet option 'hiden'"),
    ("model.latent.kwargs={points: 0.5}", "must be an integer"),
    ("model.latent.kwargs={partial_view: cone}", "unknown partial_view 'cone'"),
    ("model.latent.kwargs={view_elevation: [50, 10]}", "view_elevation must be"),
    ("model.latent.kwargs={view_elevation: [0, 95]}", "view_elevation must be"),
])
def test_bad_pointnet_options(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, ["model.latent.source=pointnet", override])


@pytest.mark.parametrize("source", ["pointnet", "pointnet_grid"])
def test_camera_view_refused_in_2d(source):
    cfg = load_config(None, ["dim=2", f"model.latent.source={source}",
                             "model.latent.kwargs={partial_view: camera}"])
    with pytest.raises(ValueError, match="needs 3D"):
        build_model(2, cfg.model.decoder, cfg.model.latent, 3)


@pytest.fixture(scope="module")
def ae_run(digits, tmp_path_factory):
    return train(tiny_cfg(*AE), digits, tmp_path_factory.mktemp("ae") / "run", epochs=2, device="cpu",
                 progress=False)


def test_encoder_trains_resumes_and_stores_training_codes(digits, ae_run, tmp_path):
    codes = ae_run.codes()
    n = len(ae_run.shapes()["keys"])
    assert codes.shape == (n, 8) and codes.abs().sum() > 0
    # the codes are the encodings of the training shapes, and travel with the model
    from deepsdf_ad.runs import load_trained

    _, model = load_trained(ae_run, torch.device("cpu"))
    torch.testing.assert_close(model.latent.all_codes(), codes)
    # resume: 1 epoch then 1 more equals 2 in one go
    train(tiny_cfg(*AE), digits, tmp_path / "run", epochs=1, device="cpu", progress=False)
    resumed = train(tiny_cfg(*AE), digits, tmp_path / "run", epochs=2, device="cpu", progress=False)
    a = [r["loss"] for r in resumed.metrics()]
    b = [r["loss"] for r in ae_run.metrics()]
    assert a == pytest.approx(b, rel=1e-5)


def test_model_registry_builds_both_sources():
    for src in ("table", "pointnet"):
        cfg = load_config(None, [*TINY, f"model.latent.source={src}"])
        m = build_model(3, cfg.model.decoder, cfg.model.latent, 5)
        assert m.latent.all_codes().shape == (5, 8)


def test_reconstruct_modes(digits, ae_run, tmp_path):
    from deepsdf_ad.commands.reconstruction import reconstruct_file

    partial = next((digits / "surface").glob("*/*.ply"))
    proc = cli("reconstruct", partial, "--run", ae_run.path, "--out", tmp_path / "e.png",
               "--resolution", "32", "--mode", "encode", check=True)
    assert (tmp_path / "e.png").is_file() and "mode encode" in proc.stdout
    info = reconstruct_file(ae_run.path, partial, tmp_path / "r.png", resolution=32, device="cpu",
                            mode="encode+refine", iterations=5)
    assert info["mode"] == "encode+refine" and info["final_loss"] is not None
    assert reconstruct_file(ae_run.path, partial, tmp_path / "d.png", resolution=32,
                            device="cpu")["mode"] == "encode"
    train(tiny_cfg(), digits, tmp_path / "ad", epochs=1, device="cpu", progress=False)
    assert reconstruct_file(tmp_path / "ad", partial, tmp_path / "o.png", resolution=32, device="cpu",
                            iterations=5)["mode"] == "optimise"
    proc = cli("reconstruct", partial, "--run", tmp_path / "ad", "--out", tmp_path / "x.png",
               "--mode", "encode")
    assert_one_line_error(proc, "--mode encode needs an autoencoder run")


def test_train_seeds_makes_subruns(digits, tmp_path):
    cli("train", "--config", REPO / "configs" / "digits_autodecoder.yaml", "--data", digits, "--out",
        tmp_path / "r", "--epochs", "1", "--quiet", "--device", "cpu", "--seeds", "3", "5",
        *[f"--set={s}" for s in TINY], check=True)
    for k in (3, 5):
        assert Run(tmp_path / "r" / f"seed_{k}").config().train.seed == k
