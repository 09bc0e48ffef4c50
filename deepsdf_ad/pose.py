"""A scan's pose in an unknown frame, found with its code: the similarity transform (which input axis is up, a
turn about it, a scale and a shift) that takes the points into the training frame, where the frozen decoder
explains them best.

Coarse: every up-axis candidate x :data:`YAWS` turns x :data:`SCALES` of the bounding-box estimate, each
scored with a few start codes by the clamped L1 |sdf| at a probe of the surface points
(:func:`candidate_losses`, as ``reconstruct.init: best`` scores its candidates). Fine: the :data:`KEEP` best
poses are refined jointly with their codes by gradient (:func:`deepsdf_ad.reconstruct.optimise_codes` with a
:class:`PoseStarts`), narrowed down to one: by their loss as restarts are, or, when the camera is known, at
the end by what each would show the camera (:func:`view_scores`).

Frames: the input x (any units); for an up-axis candidate ``U`` (a rotation taking the input's up direction to
the training frame's up axis), ``c`` the bounding-box centre of ``U x`` and ``s0`` DeepSDF's scale of it, the
*base* points are ``p = s0 (U x - c)``; the pose parameters (yaw, log s, t) take them to the normalised frame,
``y = exp(log s) R_up(yaw) p + t``.

The model is an :class:`~deepsdf_ad.models.SDFModel` or anything with its ``decode(z (B, L), x (B, N, 3)) ->
sdf (B, N)``, ``code_penalty``, ``observed_mask``, ``latent_size``, ``parameters``, ``eval`` and ``train``
(a torch module with an analytic SDF family, in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from deepsdf_ad import UP_CHOICES
from deepsdf_ad.capture import Cleaned
from deepsdf_ad.config import Config, ReconstructConfig
from deepsdf_ad.losses import loss_clamp
from deepsdf_ad.models import SDFModel
from deepsdf_ad.reconstruct import (
    PROBE_POINTS,
    Observations,
    candidate_losses,
    estimate_normalization,
    face_camera,
    observations_from_scan,
    optimise_codes,
)

AXES = ("x", "y", "z")
YAWS = 24
"""Turns about the up axis tried in the coarse search (every 15 degrees)."""
SCALES = (0.7, 0.85, 1.0)
"""Scales tried in the coarse search, as factors of the bounding-box estimate (a partial view's box is at most
the whole object's, so the true scale is at most the estimate's)."""
SEARCH_CODES = 8
"""Start codes each coarse pose is scored with: the mean code, the zero code and evenly spaced training codes
of :func:`deepsdf_ad.reconstruct.start_candidates`."""
KEEP = 4
"""Coarse poses refined jointly with their codes (the best, each at least two turns or another up axis away
from the ones before it)."""
CODES_PER_POSE = 1
"""Start codes refined with each kept pose (its best ones among the candidates). 2 on ``bench_own_scan``'s
captures, two seeds of 22: ratio median 1.40 against 1.88, max 6.19 against 17.1, lower on 27 of 44 (paired
Wilcoxon p = 0.075, no verdict), for twice the time; docs/reconstruction.md."""
SCALE_RANGE = (0.4, 1.1)
"""Bounds of the refined scale, as factors of the bounding-box estimate: a partial view covers a good part of
the object (below) and lies inside its unit sphere (above, with room for the box's 3% margin). Without the
lower bound, shrinking the points towards one surface point would drive the loss to 0."""
CHOOSE_BY_VIEW = True
"""With a camera, narrow the refined hypotheses down by what the camera would see (:func:`view_scores`)
rather than by their loss."""
CHOOSE_AT: float | None = 1.0
"""When the view narrows the hypotheses down, as a share of the iterations (None: ``reconstruct.restart_at``).
At the end: on ``bench_own_scan`` (22 captures) it beat the loss choice at 25% on 17 (p = 0.007), where the
view choice at 25% did on 5, kept the same hypothesis on 15 (p = 0.063); for 2.3 times the time of a
reconstruction (docs/reconstruction.md)."""
LR = 1e-2
"""Adam's learning rate of the pose parameters (radians, log scale, normalised units); it follows the code's
schedule (drops with it)."""


def axis_vector(label: str) -> np.ndarray:
    """'x', '-y', ... -> the unit vector (3,)."""
    v = np.zeros(3)
    v[AXES.index(label[-1])] = -1.0 if label.startswith("-") else 1.0
    return v


def rotation_to(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A rotation (3, 3) taking the unit vector ``u`` to the unit vector ``v`` (the shortest one; half a turn
    about an axis across ``v`` when they are opposite)."""
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    c = float(u @ v)
    if c > 1 - 1e-12:
        return np.eye(3)
    if c < -1 + 1e-12:
        a = np.eye(3)[np.argmin(np.abs(v))]
        k = np.cross(v, a)
        k /= np.linalg.norm(k)
        return 2 * np.outer(k, k) - np.eye(3)
    k = np.cross(u, v)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + kx + kx @ kx / (1 + c)


def yaw_matrix(yaw: float, up: int) -> np.ndarray:
    """The rotation (3, 3) by ``yaw`` radians about axis ``up`` (right-handed)."""
    i, j = (up + 1) % 3, (up + 2) % 3
    r = np.eye(3)
    r[i, i] = r[j, j] = math.cos(yaw)
    r[i, j], r[j, i] = -math.sin(yaw), math.sin(yaw)
    return r


def log_scale(params: torch.Tensor) -> torch.Tensor:
    """The log scale of params (B, 5), kept within :data:`SCALE_RANGE`."""
    return params[:, 1].clamp(math.log(SCALE_RANGE[0]), math.log(SCALE_RANGE[1]))


def base_unit(params: torch.Tensor) -> torch.Tensor:
    """(B, 1) the normalised length of one base unit under params (B, 5). The search divides its residuals by
    it (coarse scores and refinement alike), so that they are measured in the capture's own (base) units:
    measured in the normalised frame they shrink with the scale, and the search drifted to small scales where
    a code could explain the shrunken points as well (``bench_own_scan``: found scales 0.4-0.7 of the
    truth)."""
    return log_scale(params).exp()[:, None]


def similarity(params: torch.Tensor, x: torch.Tensor, up: int) -> torch.Tensor:
    """``exp(log s) R_up(yaw) x + t`` for params (B, 5) = (yaw, log s, t) and points x (B, N, 3);
    differentiable."""
    yaw, scale, t = params[:, 0], log_scale(params).exp(), params[:, 2:5]
    i, j = (up + 1) % 3, (up + 2) % 3
    c, s = yaw.cos()[:, None], yaw.sin()[:, None]
    cols = [x[..., 0], x[..., 1], x[..., 2]]
    cols[i], cols[j] = c * x[..., i] - s * x[..., j], s * x[..., i] + c * x[..., j]
    return torch.stack(cols, dim=-1) * scale[:, None, None] + t[:, None, :]


VIEW_RAYS = 48
"""Rays per side of the grid :func:`view_scores` casts from the camera over the unit sphere."""
VIEW_STEPS = 64
"""Sphere-tracing steps per ray."""
VIEW_HIT = 0.002
"""A ray has hit the surface where the decoded sdf falls below this (normalised frame)."""
VIEW_TRUNC = 0.1
"""Distances above this (capture units, as the residuals) count as this in :func:`view_scores`: one far
miss must not outweigh the rest."""
VIEW_POINTS = 4000
"""Observed points (at most) the scores compare with."""


def _trace(model, codes: torch.Tensor, cams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first surface points the codes (S, L) show cameras (S, 3) (normalised frame): a grid of
    :data:`VIEW_RAYS` squared rays over the unit sphere, sphere-traced; returns the points (S, R, 3) and
    whether each ray hit (S, R)."""
    dev = codes.device
    dist = cams.norm(dim=1, keepdim=True).clamp_min(1e-6)
    fwd = -cams / dist
    helper = torch.eye(3, device=dev)[fwd.abs().argmin(dim=1)]
    a = torch.nn.functional.normalize(torch.cross(fwd, helper, dim=1), dim=1)
    b = torch.cross(fwd, a, dim=1)
    half = torch.asin((1.0 / dist).clamp(max=0.95))  # (S, 1): the unit sphere's half-angle, or 72 degrees
    g = torch.linspace(-1, 1, VIEW_RAYS, device=dev)
    u, v = torch.meshgrid(g, g, indexing="ij")
    tan = half.tan()[:, :, None]  # (S, 1, 1)
    d = fwd[:, None] + (u.reshape(1, -1, 1) * a[:, None] + v.reshape(1, -1, 1) * b[:, None]) * tan
    d = torch.nn.functional.normalize(d, dim=2)  # (S, R, 3)
    along = -(cams[:, None] * d).sum(dim=2)  # distance to the point of the ray nearest the centre
    off = (cams[:, None] + along[..., None] * d).norm(dim=2)
    inside = off < 1.0
    chord = (1.0 - off.clamp(max=1.0).square()).sqrt()
    t, t_end = (along - chord).clamp_min(0.0), along + chord
    hit = torch.zeros_like(inside)
    for _ in range(VIEW_STEPS):
        x = cams[:, None] + t[..., None] * d
        sdf = model.decode(codes, x).float()
        hit = hit | (inside & (sdf < VIEW_HIT) & (t <= t_end))
        t = torch.where(hit, t, t + sdf.clamp_min(VIEW_HIT))
    return cams[:, None] + t[..., None] * d, hit & (t <= t_end)


@torch.no_grad()
def view_scores(model, codes: torch.Tensor, observed: list[torch.Tensor], cams: torch.Tensor,
                units: torch.Tensor) -> torch.Tensor:
    """How well each hypothesis explains what its camera saw, lower is better (S,): the mean distance from the
    surface the code shows the camera to the nearest observed point, plus the mean |sdf| at the observed
    points, each truncated at :data:`VIEW_TRUNC` and in capture units (divided by ``units`` (S,)).

    The fit's loss sees only the second half (and the free space in front of the observed points): a shape
    turned half a turn can pass through every observed point and still show the camera surface where it saw
    none (the floor or nothing). Codes (S, L); observed: S point sets (N_i, 3), cams (S, 3), both in each
    hypothesis' normalised frame."""
    hits, hit = _trace(model, codes, cams)
    out = []
    for i, obs in enumerate(observed):
        u = float(units[i])
        on_obs = model.decode(codes[i:i + 1], obs[None]).float()[0].abs()
        far = (on_obs / u).clamp(max=VIEW_TRUNC).mean()
        h = hits[i][hit[i]]
        if len(h) == 0:
            out.append(far + VIEW_TRUNC)
            continue
        near = torch.cdist(h, obs).min(dim=1).values
        out.append(far + (near / u).clamp(max=VIEW_TRUNC).mean())
    return torch.stack(out)


@dataclass
class PoseStarts:
    """Pose hypotheses for :func:`deepsdf_ad.reconstruct.optimise_codes`: ``params`` (S, 5) (yaw, log scale,
    translation), ``starts`` hypotheses per shape, the training frame's ``up`` axis index and the learning
    rate. After the optimisation ``params`` holds the kept ones (B, 5) and ``kept`` their rows (B,).

    With ``surface`` (S point sets (N_i, 3): each hypothesis' observed surface points, base frame) and
    ``cameras`` (S, 3) (base frame), the hypotheses are narrowed down by :meth:`choose` (what the camera would
    see) instead of by their loss, at ``narrow_at`` of the iterations (None: ``reconstruct.restart_at``)."""

    params: torch.Tensor
    starts: int
    up: int
    lr: float = LR
    kept: torch.Tensor | None = None
    surface: list[torch.Tensor] | None = None
    cameras: torch.Tensor | None = None
    narrow_at: float | None = None

    def choose(self, model, codes: torch.Tensor, params: torch.Tensor) -> torch.Tensor | None:
        """Scores (S,) to narrow the hypotheses by, lower is better (:func:`view_scores`), or None (no camera:
        narrowed by the loss)."""
        if self.surface is None or self.cameras is None:
            return None
        dev = codes.device
        obs = [similarity(params[i:i + 1], p.to(dev)[None], self.up)[0] for i, p in enumerate(self.surface)]
        cams = similarity(params, self.cameras.to(dev)[:, None], self.up)[:, 0]
        return view_scores(model, codes, obs, cams, base_unit(params)[:, 0])

    def apply(self, params: torch.Tensor, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Points (B, N, 3) and their sdf bounds (B, N) moved by ``params`` (B, 5): distances scale too."""
        scale = log_scale(params).exp()[:, None]
        return similarity(params, x, self.up), lo * scale, hi * scale

    def unit(self, params: torch.Tensor) -> torch.Tensor:
        """(B, 1) :func:`base_unit` of ``params`` (B, 5), by which the refinement divides its residuals."""
        return base_unit(params)


@dataclass
class Frame:
    """One up-axis candidate: ``label`` (how it was chosen: an axis such as '-y', or 'floor'), ``vector`` (3,)
    the input's up direction, ``rotation`` (3, 3) taking it to the training frame's up axis, and the base
    normalisation ``centre`` (3,), ``scale`` (see the module's docstring)."""

    label: str
    vector: np.ndarray
    rotation: np.ndarray
    centre: np.ndarray
    scale: float

    def base(self, x: np.ndarray) -> np.ndarray:
        """Input points (N, 3) -> base points ``s0 (U x - c)``."""
        return self.scale * (np.asarray(x) @ self.rotation.T - self.centre)


def frames(points: np.ndarray, up: str | None, floor_normal: np.ndarray | None, frame_up: str) -> list[Frame]:
    """The up-axis candidates: ``up`` when given (one of :data:`UP_CHOICES`), else the floor's normal when one
    was found, else all six axes."""
    if up is not None:
        ups = [(up, axis_vector(up))]
    elif floor_normal is not None:
        ups = [("floor", np.asarray(floor_normal, float))]
    else:
        ups = [(a, axis_vector(a)) for a in UP_CHOICES]
    out = []
    for label, vec in ups:
        rot = rotation_to(vec, axis_vector(frame_up))
        offset, scale = estimate_normalization(points @ rot.T)
        out.append(Frame(label, vec / np.linalg.norm(vec), rot, -offset, scale))
    return out


@dataclass
class PoseFit:
    """The pose found: ``matrix`` (4, 4) input -> normalised frame (``scale`` times a rotation, plus a shift),
    the ``yaw`` (degrees, about the training frame's up axis) and the ``frame`` (up-axis candidate) it started
    from, the code (L,) and the loss per iteration."""

    matrix: np.ndarray
    scale: float
    yaw: float
    frame: Frame
    code: torch.Tensor
    losses: list[float]

    def to_normalised(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x) @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def to_input(self, y: np.ndarray) -> np.ndarray:
        a = self.matrix[:3, :3]
        return np.linalg.solve(a, (np.asarray(y) - self.matrix[:3, 3]).T).T


def pose_matrix(frame: Frame, params: np.ndarray, up: int) -> np.ndarray:
    """The (4, 4) input -> normalised matrix of ``frame`` moved by ``params`` (5,)."""
    yaw, t = float(params[0]), params[2:5]
    scale = math.exp(float(log_scale(torch.as_tensor(params[None], dtype=torch.float64))[0])) * frame.scale
    a = scale * yaw_matrix(yaw, up) @ frame.rotation
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t - scale * yaw_matrix(yaw, up) @ frame.centre
    return m


def search_codes(candidates: torch.Tensor) -> torch.Tensor:
    """The :data:`SEARCH_CODES` rows of ``candidates`` the coarse search uses: the first two (mean, zero),
    then evenly spaced ones."""
    if len(candidates) <= SEARCH_CODES:
        return candidates
    rows = np.unique(np.r_[0, 1, np.linspace(2, len(candidates) - 1, SEARCH_CODES - 2).round().astype(int)])
    return candidates[torch.from_numpy(rows)]


@torch.no_grad()
def coarse_search(model, bases: list[np.ndarray], candidates: torch.Tensor, cfg: ReconstructConfig, up: int,
                  device: torch.device, gen: torch.Generator) -> list[tuple[int, np.ndarray, int, float]]:
    """Score every frame's base surface points (list of (N, 3)) at every coarse pose; returns the :data:`KEEP`
    best, each with its :data:`CODES_PER_POSE` best codes, as (frame index, params (5,), code row of
    ``candidates``, loss), best pose first."""
    n = min(len(b) for b in bases)
    idx = torch.randint(n, (min(PROBE_POINTS, n),), generator=gen).numpy()
    yaws = 2 * math.pi * np.arange(YAWS) / YAWS
    grid = torch.tensor([(y, math.log(s), 0.0, 0.0, 0.0) for y in yaws for s in SCALES], dtype=torch.float32)
    probe = [torch.from_numpy(np.asarray(b[idx], np.float32)) for b in bases]
    x = torch.cat([similarity(grid, p[None].expand(len(grid), -1, -1), up) for p in probe]).to(device)
    zero = torch.zeros(x.shape[:2], device=device)
    some = search_codes(candidates).to(device)
    units = base_unit(grid).repeat(len(probe), 1).to(device)  # (F * G, 1): row f * G + g is grid[g]'s
    loss = candidate_losses(model, x, zero, zero, some, cfg) / units  # (F * G, C), in base units
    best, _ = loss.min(dim=1)
    order = torch.argsort(best).cpu().numpy()
    picked: list[tuple[int, int]] = []  # (frame, yaw step)
    out = []
    for row in order:
        f, g = divmod(int(row), len(grid))
        step = g // len(SCALES)
        if any(f == pf and min(abs(step - ps), YAWS - abs(step - ps)) < 2 for pf, ps in picked):
            continue
        picked.append((f, step))
        # the best codes for this pose among all the candidates
        full = candidate_losses(model, x[row:row + 1], zero[:1], zero[:1], candidates.to(device), cfg)[0]
        full = full / units[row]
        for c in torch.argsort(full)[:CODES_PER_POSE].tolist():
            out.append((f, grid[g].numpy().copy(), int(c), float(full[c])))
        if len(picked) == KEEP:
            break
    return out


def fit_pose(model, points: np.ndarray, normals: np.ndarray | None, camera: np.ndarray | None,
             cfg: ReconstructConfig, clamp: float, device: torch.device, candidates: torch.Tensor | None,
             up: str | None = None, floor_normal: np.ndarray | None = None, seed: int = 0,
             iterations: int | None = None) -> PoseFit:
    """The pose and code of a scan in an unknown frame.

    Args:
        model: the frozen decoder (see the module's docstring).
        points: surface points (N, 3), input frame and units (cleaned:
        :func:`deepsdf_ad.capture.clean_capture`). normals: their outward normals (N, 3) or None; camera: the
        camera position (3,) in the input frame or None. cfg: the run's reconstruct settings (``frame_up``,
        the schedule, the loss); clamp: the loss clamp. candidates: start codes (C, L)
        (:func:`deepsdf_ad.reconstruct.start_candidates`); None: the zero code. up: the input's up axis
        (:data:`UP_CHOICES`) when known; floor_normal: the floor's normal (3,) pointing
            to the object, when a floor was found; neither: all six axes are tried.
    Returns:
        the :class:`PoseFit`.
    """
    gen = torch.Generator().manual_seed(seed)
    up_index = AXES.index(cfg.frame_up)
    if candidates is None or len(candidates) == 0:
        candidates = torch.zeros(1, model.latent_size)
    candidates = candidates.float().reshape(len(candidates), -1)
    cands = frames(points, up, floor_normal, cfg.frame_up)
    bases = [f.base(points) for f in cands]
    hyps = coarse_search(model, bases, candidates, cfg, up_index, device, gen)
    rng = np.random.default_rng(seed)
    obs: list[Observations] = []
    for f, _, _, _ in hyps:
        fr = cands[f]
        n = None if normals is None else normals @ fr.rotation.T
        cam = None if camera is None else fr.base(np.asarray(camera, float)[None])[0]
        obs.append(observations_from_scan(bases[f], n, cam, cfg, rng))
    pose = PoseStarts(torch.from_numpy(np.stack([h[1] for h in hyps])).float(), len(hyps), up_index)
    if camera is not None and CHOOSE_BY_VIEW:
        pose.narrow_at = CHOOSE_AT
        pick = rng.choice(len(points), min(VIEW_POINTS, len(points)), replace=False)
        pose.surface = [torch.from_numpy(bases[h[0]][pick]).float() for h in hyps]
        pose.cameras = torch.from_numpy(np.stack([cands[h[0]].base(np.asarray(camera, float)[None])[0]
                                                  for h in hyps])).float()
    init = candidates[[h[2] for h in hyps]]
    codes, losses = optimise_codes(model, obs, cfg, clamp, device, init=init, seed=seed,
                                   iterations=iterations, pose=pose)
    kept = 0 if pose.kept is None else int(pose.kept[0])
    frame = cands[hyps[kept][0]]
    params = pose.params[0].cpu().numpy().astype(np.float64)
    m = pose_matrix(frame, params, up_index)
    yaw = (math.degrees(params[0]) + 180.0) % 360.0 - 180.0
    return PoseFit(m, float(np.cbrt(abs(np.linalg.det(m[:3, :3])))), yaw, frame, codes[0], losses)


def no_pose_search(model: SDFModel, mode: str) -> str | None:
    """Why a pose search cannot run for ``model`` in ``mode`` (None: it can): it fits one optimised global
    code."""
    if mode != "optimise":
        return f"mode {mode}: the search fits optimised codes"
    if model.observed_mask([torch.zeros(1, model.dim)]) is not None:
        return "a latent-grid run has local codes"
    return None


FIT_TOL = 0.01
"""A kept observed point is explained when its |sdf| after the fit is at most this (normalised frame, where
the object's bounding sphere has radius about 1)."""
POOR_FIT = 0.005
"""``reconstruct`` warns when the median |sdf| at the kept observed points after a pose search exceeds this
(normalised frame). Measured with the tiny two-box run of ``tests/test_capture_cli.py``
(docs/reconstruction.md): a right pose gave 0.0016-0.0023 (0.0035 with depth noise of 1% of the radius), a
capture of another kind of object (sphere, bumpy ball, chair, torus) 0.0064-0.0121."""


@dataclass
class CaptureFit:
    """A cleaned capture explained by the decoder: the pose ``fit``, the ``sdf`` of the shape found (points
    (M, 3) in the normalised frame -> (M,)) and its |sdf| at the kept points, ``err`` (K,)."""

    fit: PoseFit
    sdf: Callable[[np.ndarray], np.ndarray]
    err: np.ndarray

    @property
    def residual(self) -> float:
        """The median |sdf| at the kept points."""
        return float(np.median(self.err))

    @property
    def within(self) -> float:
        """The share of the kept points within :data:`FIT_TOL` of the surface found."""
        return float(np.mean(self.err <= FIT_TOL))

    @property
    def poor(self) -> bool:
        """Whether the fit is poor (:data:`POOR_FIT`)."""
        return self.residual > POOR_FIT


def fit_capture(model: SDFModel, cfg: Config, cleaned: Cleaned, normals: np.ndarray | None,
                camera: np.ndarray | None, device: torch.device, candidates: torch.Tensor | None,
                up: str | None = None, seed: int = 0, iterations: int | None = None) -> CaptureFit:
    """The pose and shape of a cleaned capture (:func:`deepsdf_ad.capture.clean_capture`) in an unknown frame.

    Args:
        normals: the normals (N, 3) of the points before cleaning, or None; camera: the camera position
            (3,) in the input frame, or None; the normals kept are turned to face it.
        candidates, up, seed, iterations: see :func:`fit_pose` (the floor found, if any, gives the up axis).
    """
    from deepsdf_ad.meshing import model_sdf

    kept = cleaned.points
    normals = None if normals is None else normals[cleaned.kept]
    if normals is not None and camera is not None:
        normals = face_camera(normals, kept, camera)
    floor = cleaned.plane
    fit = fit_pose(model, kept, normals, camera, cfg.reconstruct, loss_clamp(cfg), device, candidates,
                   up=up, floor_normal=None if floor is None else floor.normal, seed=seed,
                   iterations=iterations)
    sdf = model_sdf(model, fit.code, device, cfg.mesh.batch_points, precision=cfg.reconstruct.precision)
    return CaptureFit(fit, sdf, np.abs(sdf(fit.to_normalised(kept).astype(np.float32))))
