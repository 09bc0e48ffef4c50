"""Pose search against an analytic SDF family (an L-shaped union of boxes, with no turn that maps it onto
itself): a partial view of a known shape, moved by a known similarity transform, is put back."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from deepsdf_ad.config import ReconstructConfig
from deepsdf_ad.pose import UP_CHOICES, axis_vector, fit_pose, rotation_to, similarity, yaw_matrix


def _box(x: torch.Tensor, centre, half) -> torch.Tensor:
    q = (x - centre).abs() - half
    outside = (torch.relu(q) ** 2).sum(-1).add(1e-12).sqrt()
    return outside + q.max(dim=-1).values.clamp(max=0)


class LShapes(torch.nn.Module):
    """Codes z (2,) set the arms' lengths of an L of two boxes of different heights, with a knob on one arm;
    the decoder seam of :mod:`deepsdf_ad.pose` (decode, code_penalty, observed_mask, latent_size)."""

    latent_size = 2

    def decode(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z = z.to(x.dtype)[:, None, :]
        one = torch.ones_like(z[..., 0])
        a = _box(x, x.new_tensor([0.05, -0.3, -0.1]),
                 torch.stack([0.45 + 0.1 * z[..., 0], 0.12 * one, 0.15 * one], -1))
        b = _box(x, x.new_tensor([-0.28, 0.1, 0.05]),
                 torch.stack([0.12 * one, 0.28 + 0.1 * z[..., 1], 0.3 * one], -1))
        knob = _box(x, x.new_tensor([0.35, -0.3, 0.12]), x.new_tensor([0.08, 0.08, 0.08]))
        return torch.minimum(torch.minimum(a, b), knob)

    def code_penalty(self, z: torch.Tensor) -> torch.Tensor:
        return (z ** 2).sum(-1)

    def observed_mask(self, points):
        return None


VIEWS = np.array([[0.6, -0.5, 0.6], [-0.6, 0.6, 0.3]])
TRUE_CODE = torch.tensor([0.5, -0.5])
CANDIDATES = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])


def partial_view(model: LShapes, n: int, views: np.ndarray, seed: int = 0) -> np.ndarray:
    """Surface points (normalised frame) of the true shape that face one of ``views`` (V, 3) (two views from
    opposite sides: one alone shows faces a larger shape would hold too, so no fit could tell the scale)."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(20 * n, 3, generator=gen) * 2 - 1).double().requires_grad_(True)
    z = TRUE_CODE[None].double()
    for _ in range(4):  # project onto the surface along the gradient
        d = model.decode(z, x[None])[0]
        (g,) = torch.autograd.grad(d.sum(), x)
        x = (x - d[:, None] * g).detach().requires_grad_(True)
    d = model.decode(z, x[None])[0]
    (g,) = torch.autograd.grad(d.sum(), x)
    ok = (d.abs() < 1e-4) & ((g @ torch.as_tensor(views, dtype=torch.float64).T).max(dim=1).values > 0.2)
    return x.detach()[ok][:n].numpy()


def _true_matrix(up: str, yaw: float, scale: float, shift: np.ndarray) -> np.ndarray:
    """Input -> normalised frame, for an input whose ``up`` axis is the training frame's z."""
    rot = yaw_matrix(math.radians(yaw), 2) @ rotation_to(axis_vector(up), axis_vector("z"))
    m = np.eye(4)
    m[:3, :3] = rot / scale
    m[:3, 3] = -rot @ shift / scale
    return m


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    ra = a[:3, :3] / np.cbrt(np.linalg.det(a[:3, :3]))
    rb = b[:3, :3] / np.cbrt(np.linalg.det(b[:3, :3]))
    c = (np.trace(ra.T @ rb) - 1) / 2
    return math.degrees(math.acos(np.clip(c, -1, 1)))


@pytest.mark.parametrize("up,yaw", [("-x", 40.0), ("y", -130.0), ("-z", 75.0)])
def test_pose_search_recovers_a_known_similarity(up, yaw):
    model = LShapes()
    y = partial_view(model, 1500, VIEWS)
    truth = _true_matrix(up, yaw, 1000.0, np.array([250.0, -40.0, 3000.0]))
    x = np.linalg.solve(truth[:3, :3], (y - truth[:3, 3]).T).T  # into the input frame: millimetres, turned
    cfg = dataclasses.replace(ReconstructConfig(), samples=1000, iterations=150, init="mean", code_reg=1e-4,
                              frame_up="z")
    fit = fit_pose(model, x, None, None, cfg, 0.1, torch.device("cpu"), CANDIDATES, seed=0)
    assert _angle(fit.matrix, truth) < 4.0
    assert fit.scale == pytest.approx(1e-3, rel=0.03)
    back = fit.to_normalised(x)
    assert np.median(np.abs(back - y)) < 0.02
    with torch.no_grad():
        sdf = model.decode(fit.code[None], torch.from_numpy(back)[None])[0].numpy()
    assert np.median(np.abs(sdf)) < 0.01


def test_similarity_matches_the_matrix():
    params = torch.tensor([[0.3, math.log(0.9), 0.1, -0.2, 0.05]])
    x = torch.randn(1, 10, 3)
    y = similarity(params, x, 1)[0].numpy()
    want = 0.9 * x[0].numpy() @ yaw_matrix(0.3, 1).T + np.array([0.1, -0.2, 0.05])
    np.testing.assert_allclose(y, want, atol=1e-5)
    for u in UP_CHOICES:
        np.testing.assert_allclose(rotation_to(axis_vector(u), axis_vector("y")) @ axis_vector(u), [0, 1, 0],
                                   atol=1e-12)


def test_view_scores_prefer_the_shape_that_shows_the_camera_what_it_saw():
    """A hypothesis that passes through the observed points but shows the camera surface where it saw none
    (longer arms), or is shifted off them, scores worse than the true shape; the traced points lie on the
    surface."""
    from deepsdf_ad.pose import _trace, view_scores

    model = LShapes()
    cam = torch.tensor([[1.8, -1.5, 1.8]])
    seen = torch.from_numpy(partial_view(model, 1500, cam.numpy())).float()
    codes = torch.stack([TRUE_CODE, torch.tensor([2.0, 2.0]), TRUE_CODE])
    shifted = seen + torch.tensor([0.0, 0.0, 0.15])
    scores = view_scores(model, codes, [seen, seen, shifted], cam.expand(3, 3), torch.ones(3))
    assert scores[0] < 0.05  # not 0: faces seen at a grazing angle hold few observed points
    assert scores[0] < 0.7 * scores[1] and scores[0] < 0.5 * scores[2]
    # half the scale: the same normalised distances count twice in capture units (less what is truncated)
    halved = float(view_scores(model, codes[:1], [seen], cam, torch.full((1,), 0.5))[0])
    assert 1.5 * float(scores[0]) < halved <= 2.0001 * float(scores[0])
    pts, hit = _trace(model, codes[:1], cam)
    assert hit.sum() > 100
    assert model.decode(codes[:1], pts[:, hit[0]]).abs().max() < 3e-3


def test_narrowing_follows_the_pose_hypotheses_choice(monkeypatch):
    """With a camera the search narrows its hypotheses down by PoseStarts.choose, not by the loss: a choice
    that prefers the last hypothesis keeps it."""
    from deepsdf_ad import pose as pose_mod

    model = LShapes()
    y = partial_view(model, 800, VIEWS)
    cfg = dataclasses.replace(ReconstructConfig(), samples=500, iterations=40, init="mean", code_reg=1e-4,
                              frame_up="z", free_space=1)
    seen = []

    def last(self, model, codes, params):
        seen.append(len(codes))
        return -torch.arange(len(codes), dtype=torch.float32)

    monkeypatch.setattr(pose_mod.PoseStarts, "choose", last)
    kept = []
    real = pose_mod.optimise_codes

    def spy(*args, pose=None, **kw):
        out = real(*args, pose=pose, **kw)
        kept.append(int(pose.kept[0]))
        return out

    monkeypatch.setattr(pose_mod, "optimise_codes", spy)
    pose_mod.fit_pose(model, y, None, np.array([3.0, -3.0, 3.0]), cfg, 0.1, torch.device("cpu"), CANDIDATES,
                      up="z")
    assert seen == [pose_mod.KEEP]
    assert kept == [pose_mod.KEEP - 1]


def test_more_codes_per_pose_refine_each_kept_pose_from_its_best_codes(monkeypatch):
    """CODES_PER_POSE = 2: each kept coarse pose comes with its two best start codes (best first)."""
    from deepsdf_ad import pose as pose_mod

    model = LShapes()
    y = partial_view(model, 400, VIEWS)
    cfg = dataclasses.replace(ReconstructConfig(), frame_up="z")
    bases = [pose_mod.frames(y, "z", None, "z")[0].base(y)]
    gen = torch.Generator().manual_seed(0)
    one = pose_mod.coarse_search(model, bases, CANDIDATES, cfg, 2, torch.device("cpu"), gen)
    monkeypatch.setattr(pose_mod, "CODES_PER_POSE", 2)
    two = pose_mod.coarse_search(model, bases, CANDIDATES, cfg, 2, torch.device("cpu"),
                                 torch.Generator().manual_seed(0))
    assert len(one) == pose_mod.KEEP and len(two) == 2 * pose_mod.KEEP
    for k in range(pose_mod.KEEP):
        a, b = two[2 * k], two[2 * k + 1]
        np.testing.assert_array_equal(a[1], b[1])  # the same pose
        assert a[2] != b[2] and a[3] <= b[3]  # two codes, the best first
        assert a[2] == one[k][2]  # the best is the one a single code per pose gets


@pytest.mark.parametrize("camera", [None, np.array([3.0, -3.0, 3.0])])
def test_only_the_view_choice_waits_for_the_end(monkeypatch, camera):
    """Without a camera the hypotheses are narrowed down by their loss at reconstruct.restart_at, as
    restarts are; with one, by the view at CHOOSE_AT."""
    from deepsdf_ad import pose as pose_mod

    model = LShapes()
    y = partial_view(model, 400, VIEWS)
    cfg = dataclasses.replace(ReconstructConfig(), samples=200, iterations=8, init="mean", frame_up="z",
                              free_space=1)
    seen = []
    real = pose_mod.optimise_codes

    def spy(*args, pose=None, **kw):
        seen.append((pose.narrow_at, pose.cameras is not None))
        return real(*args, pose=pose, **kw)

    monkeypatch.setattr(pose_mod, "optimise_codes", spy)
    pose_mod.fit_pose(model, y, None, camera, cfg, 0.1, torch.device("cpu"), CANDIDATES, up="z")
    assert seen == ([(None, False)] if camera is None else [(pose_mod.CHOOSE_AT, True)])
