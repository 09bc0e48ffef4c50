"""Latent optimisation: a code fitted to a shape the decoder knows; the plateau schedule (early drop and stop)
and the growing sample count reach the fixed schedule's loss in fewer decoder evaluations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deepsdf_ad.losses import sdf_loss
from deepsdf_ad.reconstruct import CodeAdam, Observations, optimise_codes
from tests.helpers import tiny_model

RADII = (0.3, 0.45, 0.6)


def _points(gen: torch.Generator, radius: float, n: int) -> torch.Tensor:
    d = torch.randn(n, 3, generator=gen)
    near = radius * d / d.norm(dim=-1, keepdim=True) + 0.05 * torch.randn(n, 3, generator=gen)
    return torch.cat([near, torch.rand(n // 4, 3, generator=gen) * 2 - 1])


@pytest.fixture(scope="module")
def spheres():
    """A tiny decoder with one code per sphere radius, trained until it knows all three."""
    cfg, model = tiny_model(len(RADII), latent=4, extra=["reconstruct.samples=1000", "reconstruct.lr=2e-2",
                                                          "reconstruct.init=random",
                                                          "reconstruct.code_reg=0"])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        pts = torch.stack([_points(gen, r, 800) for r in RADII])
        target = pts.norm(dim=-1) - torch.tensor(RADII)[:, None]
        codes = model.latent.codes({"index": torch.arange(len(RADII))})
        loss = sdf_loss(model.decode(codes, pts), target, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    p = _points(torch.Generator().manual_seed(5), 0.45, 4000).numpy().astype(np.float64)
    obs = Observations(p, np.linalg.norm(p, axis=1) - 0.45, np.linalg.norm(p, axis=1) - 0.45)
    return cfg, model, obs


def _fit(cfg, model, obs, **changes):
    rc = dataclasses.replace(cfg.reconstruct, **changes)
    codes, losses = optimise_codes(model, [obs], rc, 0.1, torch.device("cpu"), seed=0)
    return codes, losses


def test_fitted_code_reproduces_the_shape(spheres):
    cfg, model, obs = spheres
    code, losses = _fit(cfg, model, obs, iterations=300)
    assert losses[-1] < 0.25 * losses[0]
    x = torch.from_numpy(obs.points[:2000]).float()[None]
    with torch.no_grad():
        pred = model.decode(code, x)[0].numpy()
    truth = obs.lo[:2000]
    near = np.abs(truth) < 0.05
    assert (np.sign(pred[near & (np.abs(truth) > 0.01)])
            == np.sign(truth[near & (np.abs(truth) > 0.01)])).mean() > 0.95


def test_plateau_schedule_stops_early_at_the_same_loss(spheres):
    cfg, model, obs = spheres
    _, fixed = _fit(cfg, model, obs, iterations=400)
    _, plateau = _fit(cfg, model, obs, iterations=400, patience=30, samples_start=200)
    assert len(plateau) < len(fixed)
    assert np.mean(plateau[-10:]) < 1.15 * np.mean(fixed[-10:]) + 1e-4


def test_code_adam_matches_torch_adam_step_for_step():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 8, generator=gen).requires_grad_(True)
    b = a.detach().clone().requires_grad_(True)
    ours, ref = CodeAdam(a, lr=1e-2), torch.optim.Adam([b], lr=1e-2)
    target = torch.randn(3, 8, generator=gen)
    for it in range(50):
        if it == 30:  # a learning-rate drop, as the reconstruction schedule does
            ours.lr = 1e-3
            ref.param_groups[0]["lr"] = 1e-3
        for x, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            ((x - target) ** 4).sum().backward()
            opt.step()
    assert not torch.equal(a, target)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_optimisation_reaches_the_fp32_loss(spheres):
    cfg, model, obs = spheres
    code32, fp32 = _fit(cfg, model, obs, iterations=200)
    code16, bf16 = _fit(cfg, model, obs, iterations=200, precision="bf16")
    assert bf16[-1] < 0.25 * bf16[0]
    assert np.mean(bf16[-10:]) < 1.25 * np.mean(fp32[-10:]) + 1e-4
    assert code16.dtype == torch.float32


def test_best_start_is_the_candidate_that_explains_the_observations(spheres):
    """The observations are the middle sphere: of the three trained codes (and a decoy), the probe picks the
    middle sphere's code, before any optimisation step."""
    cfg, model, obs = spheres
    table = model.latent.all_codes().detach()
    candidates = torch.cat([table[[0, 2]], 5 * torch.ones(1, table.shape[1]), table[[1]]])
    rc = dataclasses.replace(cfg.reconstruct, init="best", iterations=0)
    codes, losses = optimise_codes(model, [obs, obs], rc, 0.1, torch.device("cpu"), seed=0,
                                   candidates=candidates)
    assert losses == []
    torch.testing.assert_close(codes, table[[1, 1]])
    # without candidates (an autoencoder run, say) it starts as configured: random, not a table row
    codes, _ = optimise_codes(model, [obs], rc, 0.1, torch.device("cpu"), seed=0)
    assert not any(torch.equal(codes[0], row) for row in table)


def test_start_candidates_are_mean_zero_and_spaced_training_codes(tmp_path):
    from safetensors.torch import save_file

    from deepsdf_ad.reconstruct import MAX_CANDIDATES, start_candidates
    from deepsdf_ad.runs import CODES, Run

    codes = torch.arange(200 * 3, dtype=torch.float32).reshape(200, 3)
    save_file({"codes": codes}, str(tmp_path / CODES))
    cand = start_candidates(Run(tmp_path))
    assert cand.shape == (MAX_CANDIDATES, 3)
    torch.testing.assert_close(cand[0], codes.mean(dim=0))
    assert not cand[1].any()
    torch.testing.assert_close(cand[2], codes[0])
    torch.testing.assert_close(cand[-1], codes[-1])
    assert start_candidates(Run(tmp_path / "none")) is None
    from deepsdf_ad.config import ReconstructConfig

    assert start_candidates(Run(tmp_path), ReconstructConfig(init="mean")) is None  # not read: not needed
    assert start_candidates(Run(tmp_path), ReconstructConfig(init="best")).shape == (MAX_CANDIDATES, 3)


def test_cosine_schedule_reaches_the_step_schedules_loss(spheres):
    cfg, model, obs = spheres
    _, step = _fit(cfg, model, obs, iterations=300)
    _, cosine = _fit(cfg, model, obs, iterations=300, schedule="cosine")
    assert cosine[-1] < 0.25 * cosine[0]
    assert np.mean(cosine[-10:]) < 1.15 * np.mean(step[-10:]) + 1e-4


def test_cosine_schedule_with_patience_is_a_config_error():
    from deepsdf_ad.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="patience"):
        load_config(None, ["reconstruct.schedule=cosine", "reconstruct.patience=20"])
    with pytest.raises(ConfigError, match="reconstruct.init"):
        load_config(None, ["reconstruct.init=nearest"])


def test_restarts_go_on_from_the_start_with_the_lowest_loss(spheres):
    """``reconstruct.restarts``: starts optimised side by side, narrowed down per shape to the one with the
    lowest loss. With a learning rate of 0 the codes stay where they start, so after narrowing the loss is the
    best start's: lower than the given (bad) start's alone, and each shape keeps a start of its own group."""
    cfg, model, obs = spheres
    table = model.latent.all_codes().detach()
    rc = dataclasses.replace(cfg.reconstruct, init="random", lr=0.0, iterations=12, restart_at=0.5,
                             init_std=0.5)
    start = table[[0]]  # the smallest sphere's code, for observations of the middle one
    # the starts: the given one, then perturbed copies (the same seeded draw as optimise_codes makes)
    noise = torch.randn(4, model.latent_size, generator=torch.Generator().manual_seed(0)) * rc.init_std
    starts = start + noise * (torch.arange(4) != 0).unsqueeze(1)
    alone = [optimise_codes(model, [obs], rc, 0.1, torch.device("cpu"), init=s[None], seed=0)[1][-1]
             for s in starts]
    rc4 = dataclasses.replace(rc, restarts=4)
    codes, losses = optimise_codes(model, [obs], rc4, 0.1, torch.device("cpu"), init=start, seed=0)
    best = int(np.argmin(alone))
    assert best != 0, alone  # so that keeping the given start would fail this test
    torch.testing.assert_close(codes[0], starts[best])
    assert losses[-1] == pytest.approx(alone[best], rel=0.05)
    # two shapes: one batch of 2 x 4 starts, narrowed to 2 codes; a shape that starts at its own code keeps it
    table = model.latent.all_codes().detach()
    codes, _ = optimise_codes(model, [obs, obs], rc4, 0.1, torch.device("cpu"),
                              init=torch.cat([start, table[[1]]]), seed=0)
    assert codes.shape == (2, model.latent_size)
    torch.testing.assert_close(codes[1], table[1])
    # with init: best, the starts are the best probe candidates, and without steps the best of
    # them is returned
    rcb = dataclasses.replace(rc4, init="best", iterations=0)
    candidates = torch.cat([table[[0, 2]], 5 * torch.ones(1, table.shape[1]), table[[1]]])
    codes, _ = optimise_codes(model, [obs], rcb, 0.1, torch.device("cpu"), seed=0, candidates=candidates)
    torch.testing.assert_close(codes, table[[1]])


def test_bad_restart_settings_are_config_errors():
    from deepsdf_ad.config import ConfigError, load_config

    for bad in ("reconstruct.restarts=0", "reconstruct.restart_at=1.0"):
        with pytest.raises(ConfigError, match="restart"):
            load_config(None, [bad])


def test_auto_precision_is_bf16_only_where_the_processor_has_it(monkeypatch):
    from deepsdf_ad import device as T
    from deepsdf_ad.config import load_config

    cpu = torch.device("cpu")
    for native, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(T, "_native_bf16", lambda device_type, native=native: native)
        assert T.resolve_precision("auto", cpu) == want
        assert T.resolve_precision("fp32", cpu) == "fp32" and T.resolve_precision("fp16", cpu) == "fp16"
        with T.autocast(cpu, "auto"):
            y = torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4))
        assert y.dtype == (torch.bfloat16 if native else torch.float32)
    assert load_config(None, ["reconstruct.precision=auto"]).reconstruct.precision == "auto"


def test_robust_losses_and_their_settings():
    from deepsdf_ad.config import ConfigError, ReconstructConfig, load_config
    from deepsdf_ad.reconstruct import robust_residual

    r = torch.tensor([0.0, 0.01, 0.02, 0.5])
    torch.testing.assert_close(robust_residual(r, ReconstructConfig()), r)  # the default: L1, as before
    huber = robust_residual(r, ReconstructConfig(robust="huber", robust_scale=0.02))
    torch.testing.assert_close(huber, torch.tensor([0.0, 0.0025, 0.01, 0.49]))
    trunc = robust_residual(r, ReconstructConfig(robust="truncated", robust_scale=0.02))
    torch.testing.assert_close(trunc, torch.tensor([0.0, 0.01, 0.02, 0.02]))
    for bad in ("reconstruct.robust=cauchy", "reconstruct.robust_scale=0"):
        with pytest.raises(ConfigError, match="robust"):
            load_config(None, [bad])


def test_refine_prior_holds_the_code_near_its_anchor(spheres):
    """``reconstruct.refine_prior`` (encode+refine's prior centred on the encoder's code): started at the
    smallest sphere's code and fitted to the middle sphere, the code moves away from its start without the
    prior, stays within a small fraction of that distance with a strong one, and the prior's loss is paid."""
    cfg, model, obs = spheres
    table = model.latent.all_codes().detach()
    start = table[[0]]
    rc = dataclasses.replace(cfg.reconstruct, init="random", iterations=150)
    free, free_loss = optimise_codes(model, [obs], rc, 0.1, torch.device("cpu"), init=start, seed=0,
                                     anchor=start)  # refine_prior 0: the anchor is ignored
    held, held_loss = optimise_codes(model, [obs], dataclasses.replace(rc, refine_prior=10.0), 0.1,
                                     torch.device("cpu"), init=start, seed=0, anchor=start)
    moved, kept = float((free - start).norm()), float((held - start).norm())
    assert moved > 0.1 and kept < 0.1 * moved, (moved, kept)
    assert held_loss[-1] > free_loss[-1]
    # the anchor follows restarts: 2 shapes x 3 starts narrowed to 2 codes, each held at its own anchor
    rc3 = dataclasses.replace(rc, refine_prior=10.0, restarts=3, iterations=40)
    two, _ = optimise_codes(model, [obs, obs], rc3, 0.1, torch.device("cpu"), init=table[[0, 2]], seed=0,
                            anchor=table[[0, 2]])
    assert float((two - table[[0, 2]]).norm(dim=1).max()) < 0.1 * moved
