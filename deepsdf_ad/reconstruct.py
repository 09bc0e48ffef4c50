"""Codes from observations: optimisation (autodecoder) of the clamped SDF loss against the frozen decoder,
or one forward pass of the encoder (autoencoder), or both (``encode+refine``: the encoder's code is the
start of the optimisation).

Observations are points with an interval for their SDF, ``lo <= sdf <= hi``: an exact sample has
``lo = hi``; a free-space point seen through by a camera ray has ``0 <= sdf <= distance to the hit``.
The loss is the distance of the clamped prediction to the clamped interval (L1), which is DeepSDF's
clamped L1 when ``lo = hi``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.utils import parametrize

from deepsdf_ad.config import Config, ReconstructConfig, cosine_lr
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.log import progress_bar
from deepsdf_ad.device import autocast
from deepsdf_ad.losses import loss_clamp
from deepsdf_ad.models import SDFModel


@dataclass
class Observations:
    """Points (M, dim) in the normalised frame with SDF bounds ``lo`` (M,) <= sdf <= ``hi`` (M,), and each
    observation's weight in the loss (M,) (None: all 1)."""

    points: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)

    def near_surface(self, tol: float) -> np.ndarray:
        """The points whose sdf interval lies within ``tol`` of 0 (M', dim): where the surface was seen."""
        keep = (np.abs(self.lo) <= tol) & (np.abs(self.hi) <= tol)
        return self.points[keep]


def observations_from_samples(samples: np.ndarray) -> Observations:
    """Exact SDF samples (M, dim + 1)."""
    return Observations(samples[:, :-1], samples[:, -1], samples[:, -1])


def observations_from_scan(points: np.ndarray, normals: np.ndarray | None, camera: np.ndarray | None,
                           cfg: ReconstructConfig, rng: np.random.Generator) -> Observations:
    """Observations from a partial scan in the normalised frame.

    Surface points have sdf 0; with normals, points moved +/- ``normal_offset`` along them have
    sdf +/- offset; with the camera known, ``free_space`` points per surface point lie on the ray in front
    of it with ``min(free_space_margin, d / 2) <= sdf <= d``, d their distance to the surface point, weighted
    ``free_space_weight`` in the loss.
    """
    pts = [points]
    lo = [np.zeros(len(points))]
    hi = [np.zeros(len(points))]
    weight = [np.ones(len(points))]
    eps = cfg.normal_offset
    if normals is not None and eps > 0:
        n = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        for s in (eps, -eps):
            pts.append(points + s * n)
            lo.append(np.full(len(points), s))
            hi.append(np.full(len(points), s))
            weight.append(np.ones(len(points)))
    if camera is not None and cfg.free_space > 0:
        ray = points - camera[None]
        dist = np.linalg.norm(ray, axis=1, keepdims=True)
        unit = ray / np.maximum(dist, 1e-12)
        k = cfg.free_space
        along = rng.uniform(2 * eps, 1.0, size=(len(points), k)) * np.minimum(dist, 1.0)
        free = points[:, None, :] - unit[:, None, :] * along[..., None]
        pts.append(free.reshape(-1, points.shape[1]))
        lo.append(np.minimum(cfg.free_space_margin, along.reshape(-1) / 2))
        hi.append(along.reshape(-1))
        weight.append(np.full(len(points) * k, cfg.free_space_weight))
    w = np.concatenate(weight)
    return Observations(np.concatenate(pts), np.concatenate(lo), np.concatenate(hi),
                        None if np.all(w == 1) else w)


def initial_code(model: SDFModel, cfg: ReconstructConfig, generator: torch.Generator | None,
                 mean_code: torch.Tensor | None = None) -> torch.Tensor:
    if cfg.init == "mean" and mean_code is not None:
        return mean_code.detach().clone().reshape(-1)
    return torch.randn(model.latent_size, generator=generator) * cfg.init_std


NEAR_SURFACE = 0.02
"""Observations whose sdf interval lies within this of 0 mark where the surface was seen (a grid's codes are
optimised only near them)."""


class CodeAdam:
    """Adam (Kingma & Ba; torch.optim.Adam's defaults and update) for the one code tensor of a reconstruction.

    Written out because importing torch.optim's optimisers pulls in torch._dynamo, about 1.5 s of a
    command-line ``reconstruct`` on a laptop CPU; tests check it matches torch.optim.Adam step for step.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps, self.t = param, lr, betas, eps, 0
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)

    @torch.no_grad()
    def step(self) -> None:
        g = self.param.grad
        if g is None:
            return
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(g, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v / (1 - b2**self.t)).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**self.t))

    def zero_grad(self) -> None:
        self.param.grad = None


PROBE_POINTS = 256
"""Observations each start candidate is scored on (``reconstruct.init: best``)."""
MAX_CANDIDATES = 64
"""Start candidates at most: the mean code, the zero code and evenly spaced training codes."""


def start_candidates(run, rc: ReconstructConfig | None = None) -> torch.Tensor | None:
    """Codes a reconstruction may start from (``reconstruct.init: best``): the mean training code, the zero
    code (DeepSDF's start, up to its N(0, 0.01^2) noise) and up to ``MAX_CANDIDATES - 2`` training codes,
    evenly spaced through the table; (C, L) float32, or None for a run without a code table, and None without
    reading it when ``rc`` is given and starts otherwise."""
    if rc is not None and rc.init != "best":
        return None
    try:
        codes = run.codes().float()
    except DataError:
        return None
    if len(codes) == 0:
        return None
    codes = codes.reshape(len(codes), -1)
    rows = np.unique(np.linspace(0, len(codes) - 1, min(len(codes), MAX_CANDIDATES - 2)).round().astype(int))
    return torch.cat([codes.mean(dim=0, keepdim=True), torch.zeros_like(codes[:1]),
                      codes[torch.from_numpy(rows)]])


POINTS_PER_CALL = 1 << 17
"""Points per decoder call when scoring many candidates on many point sets (:func:`candidate_losses`)."""


@torch.no_grad()
def candidate_losses(model: SDFModel, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                     candidates: torch.Tensor, cfg: ReconstructConfig) -> torch.Tensor:
    """The loss (clamped interval L1 plus the code penalty) of each of the C codes ``candidates`` (C, L) on
    each of P point sets ``x`` (P, n, dim) with bounds ``lo``, ``hi`` (P, n) (already clamped): (P, C), in
    eval mode (no dropout). ``model`` is an :class:`SDFModel` or anything with its ``decode`` and
    ``code_penalty``."""
    p_sets, n = x.shape[:2]
    c = len(candidates)
    step = max(1, POINTS_PER_CALL // max(n * c, 1))
    out, was_training = [], model.training
    model.eval()
    try:
        for s in range(0, p_sets, step):
            xs, k = x[s:s + step], len(x[s:s + step])
            z = candidates if k == 1 else candidates.repeat(k, 1)  # row i * C + j: set i, candidate j
            xx = xs.unsqueeze(1).expand(k, c, n, xs.shape[2]).reshape(k * c, n, xs.shape[2])
            with autocast(x.device, cfg.precision):
                pred = model.decode(z, xx)
            pred = pred.float()
            lo_s = lo[s:s + k].repeat_interleave(c, dim=0)
            hi_s = hi[s:s + k].repeat_interleave(c, dim=0)
            loss = (torch.relu(lo_s - pred) + torch.relu(pred - hi_s)).mean(dim=1)
            if cfg.code_reg > 0:
                loss = loss + cfg.code_reg * model.code_penalty(z)
            out.append(loss.reshape(k, c))
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def best_candidates(model: SDFModel, pts: list[torch.Tensor], lo: list[torch.Tensor], hi: list[torch.Tensor],
                    candidates: torch.Tensor, mask: torch.Tensor | None, cfg: ReconstructConfig,
                    gen: torch.Generator, k: int = 1) -> torch.Tensor:
    """For each observation set, the ``k`` candidates (rows of (C, L) ``candidates``) with the lowest loss on
    :data:`PROBE_POINTS` of its observations (:func:`candidate_losses`), best first; (B * k, L), set by set
    (fewer than ``k`` candidates: the best repeated)."""
    out = []
    for b, (p, l_b, h_b) in enumerate(zip(pts, lo, hi, strict=True)):
        idx = torch.randint(len(p), (min(PROBE_POINTS, len(p)),), generator=gen).to(p.device)
        z = candidates if mask is None else candidates * mask[b]
        loss = candidate_losses(model, p[idx][None], l_b[idx][None], h_b[idx][None], z, cfg)[0]
        order = torch.argsort(loss)[:k]
        out.append(candidates[torch.cat([order, order[:1].expand(k - len(order))])])
    return torch.cat(out).clone()


def interval_residual(pred: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, cfg: ReconstructConfig
                      ) -> torch.Tensor:
    """The code search's per-observation data term: :func:`robust_residual` of the distance of the clamped
    prediction ``pred`` to its clamped interval [``lo``, ``hi``]."""
    return robust_residual(torch.relu(lo - pred) + torch.relu(pred - hi), cfg)


def robust_residual(r: torch.Tensor, cfg: ReconstructConfig) -> torch.Tensor:
    """The per-observation loss of residuals ``r`` >= 0 (distance of the clamped prediction to the clamped
    interval) under ``cfg.robust``: 'none' (L1: DeepSDF), 'huber' (quadratic below ``robust_scale``, L1 above)
    or 'truncated' (L1 up to ``robust_scale``, flat beyond: a far outlier pulls no more)."""
    if cfg.robust == "huber":
        d = cfg.robust_scale
        return torch.where(r < d, 0.5 * r * r / d, r - 0.5 * d)
    if cfg.robust == "truncated":
        return r.clamp(max=cfg.robust_scale)
    return r


@dataclass
class _CodeBatch:
    """What a code optimisation updates: the codes (S, L) (a leaf that requires grad) with their Adam, per row
    of them the observations' points, clamped bounds and weights (None: all 1), the grid's mask (None for
    global codes), and with a pose search its :class:`deepsdf_ad.pose.PoseStarts` and their Adam."""

    code: torch.Tensor
    opt: CodeAdam
    pts: list[torch.Tensor]
    lo: list[torch.Tensor]
    hi: list[torch.Tensor]
    wt: list[torch.Tensor] | None
    mask: torch.Tensor | None
    pose: object = None
    pose_opt: CodeAdam | None = None
    anchor: torch.Tensor | None = None
    """Per row, the code the ``refine_prior`` term pulls toward (S, L); None: no such term."""

    def keep(self, rows: torch.Tensor) -> None:
        """Go on with the rows ``rows`` only (their Adam state too)."""
        opt = self.opt
        self.code = self.code.detach()[rows].clone().requires_grad_(True)
        opt.param, opt.m, opt.v = self.code, opt.m[rows].clone(), opt.v[rows].clone()
        self.pts, self.lo, self.hi = ([vs[i] for i in rows.tolist()] for vs in (self.pts, self.lo, self.hi))
        self.wt = None if self.wt is None else [self.wt[i] for i in rows.tolist()]
        self.mask = None if self.mask is None else self.mask[rows]
        self.anchor = None if self.anchor is None else self.anchor[rows]
        if self.pose_opt is not None:
            po = self.pose_opt
            self.pose.kept = rows.cpu()
            po.param = po.param.detach()[rows].clone().requires_grad_(True)
            po.m, po.v = po.m[rows].clone(), po.v[rows].clone()

    def codes(self) -> torch.Tensor:
        """The codes as the decoder sees them (a grid's masked), detached."""
        return (self.code if self.mask is None else self.code * self.mask).detach()


def _observation_tensors(obs: list[Observations], clamp: float, device: torch.device) -> tuple:
    """Per observation set: points, bounds clamped to +/- ``clamp``, and weights (None when all are 1)."""
    pts = [torch.from_numpy(np.asarray(o.points, np.float32)).to(device) for o in obs]
    lo = [torch.from_numpy(np.asarray(o.lo, np.float32)).clamp(-clamp, clamp).to(device) for o in obs]
    hi = [torch.from_numpy(np.asarray(o.hi, np.float32)).clamp(-clamp, clamp).to(device) for o in obs]
    weighted = any(o.weight is not None for o in obs)
    wt = [torch.from_numpy(np.asarray(o.weight if o.weight is not None else np.ones(len(o)), np.float32))
          .to(device) for o in obs] if weighted else None
    return pts, lo, hi, wt


@torch.no_grad()
def observation_losses(model: SDFModel, obs: list[Observations], codes: torch.Tensor, cfg: ReconstructConfig,
                       clamp: float, device: torch.device) -> np.ndarray:
    """The data term of the code search for each code (B, ...) on its own observation set (B sets), on all
    of its observations rather than a step's draw: the mean (weighted) robust interval residual of the clamped
    prediction, as :func:`optimise_codes` minimises it, without the code penalty. (B,), in eval mode."""
    pts, lo, hi, wt = _observation_tensors(obs, clamp, device)
    out = []
    with _frozen(model):
        for i, x in enumerate(pts):
            z = codes[i:i + 1].to(device)
            miss = []
            for s in range(0, len(x), POINTS_PER_CALL):
                part = slice(s, s + POINTS_PER_CALL)
                with autocast(device, cfg.precision):
                    pred = model.decode(z, x[None, part])[0]
                pred = pred.float().clamp(-clamp, clamp)
                miss.append(interval_residual(pred, lo[i][part], hi[i][part], cfg))
            m = torch.cat(miss)
            out.append(float((m * wt[i]).sum() / wt[i].sum()) if wt is not None else float(m.mean()))
    return np.array(out)


def _start_batch(model: SDFModel, obs: list[Observations], cfg: ReconstructConfig, clamp: float,
                 device: torch.device, init: torch.Tensor | None, gen: torch.Generator,
                 candidates: torch.Tensor | None, pose, r: int, anchor: torch.Tensor | None = None
                 ) -> _CodeBatch:
    """The codes an optimisation starts from, ``r`` rows per observation set (see :func:`optimise_codes`)."""
    if anchor is not None:
        anchor = anchor.detach().to(device).reshape(len(anchor), -1).repeat_interleave(r, dim=0)
    if init is None:
        init = torch.randn(len(obs), model.latent_size, generator=gen) * cfg.init_std
    code = init.detach().clone().to(device).reshape(len(obs), -1)
    near = [np.asarray(o.near_surface(NEAR_SURFACE), np.float32) for o in obs]
    mask = model.observed_mask([torch.from_numpy(p).to(device) for p in near])
    if mask is not None and not bool(mask.any(dim=1).all()):
        raise DataError("no observed surface point lies inside the grid's bounds; nothing to fit local codes "
                        "to")
    pts, lo, hi, wt = _observation_tensors(obs, clamp, device)
    if any(len(p) == 0 for p in pts):
        raise DataError("an observation set is empty; nothing to fit a code to")
    if pose is not None:
        if mask is not None:
            raise DataError("a pose search needs a run with one global code per shape (not a latent grid)")
    elif cfg.init == "best" and candidates is not None and len(candidates):
        code = best_candidates(model, pts, lo, hi, candidates.to(device).reshape(len(candidates), -1), mask,
                               cfg, gen, k=r)
    elif r > 1:  # the start, then perturbed copies of it
        code = code.repeat_interleave(r, dim=0)
        noise = torch.randn(code.shape, generator=gen).to(device) * cfg.init_std
        code = code + noise * (torch.arange(len(code), device=device) % r != 0).unsqueeze(1)
    if r > 1 and pose is None:
        pts, lo, hi = ([v for v in vs for _ in range(r)] for vs in (pts, lo, hi))
        wt = None if wt is None else [v for v in wt for _ in range(r)]
        mask = None if mask is None else mask.repeat_interleave(r, dim=0)
    code = code if mask is None else code * mask
    code.requires_grad_(True)
    pose_opt = None
    if pose is not None:
        pose_opt = CodeAdam(pose.params.detach().clone().to(device).requires_grad_(True), lr=pose.lr)
    return _CodeBatch(code, CodeAdam(code, lr=cfg.lr), pts, lo, hi, wt, mask, pose, pose_opt, anchor)


@dataclass
class _Schedule:
    """The steps of a code optimisation: the learning rate (cosine, or dropped at ``drop``, earlier on a
    plateau), the samples per step (from ``k0`` growing to ``k`` until the drop) and the early stop."""

    cfg: ReconstructConfig
    iterations: int
    k: int
    k0: int
    drop: int
    dropped: bool = False
    smooth: float | None = None
    best: float = math.inf
    best_at: int = 0

    def set_lr(self, it: int, opt: CodeAdam) -> None:
        if self.cfg.schedule == "cosine":
            opt.lr = cosine_lr(self.cfg.lr, it, self.iterations)
        elif it == self.drop and not self.dropped:
            opt.lr = self.cfg.lr * self.cfg.lr_drop_factor
            self.dropped, self.best, self.best_at = True, math.inf, it

    def samples(self, it: int) -> int:
        k, k0 = self.k, self.k0
        return k if it >= self.drop or self.dropped else k0 + (k - k0) * it // max(self.drop, 1)

    def stop(self, it: int, loss: float) -> bool:
        """Whether to stop after step ``it`` with ``loss``: on a plateau the rate drops early, then it
        stops."""
        if self.cfg.patience <= 0:
            return False
        self.smooth = loss if self.smooth is None else 0.9 * self.smooth + 0.1 * loss
        if self.smooth < 0.99 * self.best:
            self.best, self.best_at = self.smooth, it
        elif it - self.best_at >= self.cfg.patience:
            if self.dropped:
                return True
            self.drop = it + 1
        return False


def _code_step(model: SDFModel, batch: _CodeBatch, n: int, gen: torch.Generator, cfg: ReconstructConfig,
               clamp: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One Adam step of every code on ``n`` observations drawn per row; returns the summed loss and the loss
    per row."""
    idx = [torch.randint(len(p), (n,), generator=gen).to(device) for p in batch.pts]
    x = torch.stack([p[i] for p, i in zip(batch.pts, idx, strict=True)])
    lo_b = torch.stack([v[i] for v, i in zip(batch.lo, idx, strict=True)])
    hi_b = torch.stack([v[i] for v, i in zip(batch.hi, idx, strict=True)])
    if batch.pose_opt is not None:
        x, lo_b, hi_b = batch.pose.apply(batch.pose_opt.param, x, lo_b, hi_b)
        lo_b, hi_b = lo_b.clamp(-clamp, clamp), hi_b.clamp(-clamp, clamp)
    z = batch.code if batch.mask is None else batch.code * batch.mask
    with autocast(device, cfg.precision):
        pred = model.decode(z, x)
    pred = pred.float().clamp(-clamp, clamp)
    miss = interval_residual(pred, lo_b, hi_b, cfg)
    if batch.wt is not None:
        miss = miss * torch.stack([v[i] for v, i in zip(batch.wt, idx, strict=True)])
    if batch.pose_opt is not None:
        miss = miss / batch.pose.unit(batch.pose_opt.param)  # in the capture's units: see PoseStarts.unit
    per = miss.mean(dim=1)
    if cfg.code_reg > 0:
        per = per + cfg.code_reg * model.code_penalty(z)
    if batch.anchor is not None:
        per = per + cfg.refine_prior * (z - batch.anchor).square().reshape(len(z), -1).sum(dim=1)
    loss = per.sum()
    batch.opt.zero_grad()
    if batch.pose_opt is not None:
        batch.pose_opt.zero_grad()
    loss.backward()
    batch.opt.step()
    if batch.pose_opt is not None:
        batch.pose_opt.step()
    return loss, per


@contextlib.contextmanager
def _frozen(model: SDFModel):
    """The model in eval mode with no parameter requiring grad, restored afterwards."""
    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)


def optimise_codes(model: SDFModel, obs: list[Observations], cfg: ReconstructConfig, clamp: float,
                   device: torch.device, init: torch.Tensor | None = None, seed: int = 0,
                   iterations: int | None = None, candidates: torch.Tensor | None = None, pose=None,
                   progress: bool = False, anchor: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, list[float]]:
    """Find codes (B, L) for B observation sets at once (one batched decoder call per step).

    Each code has its own loss (mean over its samples, plus ``code_reg`` times the code penalty,
    ``||z||^2`` for a global code) and Adam's updates are per parameter, so a code ends as it would optimised
    alone. ``init`` (B, L) or None (N(0, init_std^2)). With ``cfg.init == 'best'`` and ``candidates`` (C, L)
    (see :func:`start_candidates`), each set starts from the candidate that explains it best
    (:func:`best_candidates`) instead. A grid's codes change only near the observed surface
    (:meth:`SDFModel.observed_mask`); the others are empty (zero). ``progress``: a progress bar of the steps
    on stderr (:func:`deepsdf_ad.data_prep.log.progress_bar`). Returns the codes and the loss per iteration
    (mean over the B sets).

    ``pose`` (see :class:`deepsdf_ad.pose.PoseStarts`): the observations are also moved by a similarity
    transform whose parameters are optimised with the codes (the sdf bounds scale with it). Then ``obs`` holds
    ``pose.starts`` sets per shape (one per pose hypothesis, each in its own frame, best first) and ``init`` a
    code for each; they are narrowed down to one per shape as restarts are, and ``pose.params`` ends as the
    kept hypotheses' refined parameters (B, 5).

    ``anchor`` (B, L): each code also pays ``cfg.refine_prior`` times its squared distance to its anchor (the
    encoder's code, in ``encode+refine``).
    """
    gen = torch.Generator().manual_seed(seed)
    iterations = cfg.iterations if iterations is None else iterations
    # starts per set; the batch holds set 0's, then set 1's, ...
    r = cfg.restarts if pose is None else pose.starts
    b = len(obs) if pose is None else len(obs) // r
    anchor = anchor if cfg.refine_prior > 0 else None
    batch = _start_batch(model, obs, cfg, clamp, device, init, gen, candidates, pose, r, anchor)
    share = cfg.restart_at if pose is None or pose.narrow_at is None else pose.narrow_at
    narrow_at = min(int(share * iterations), iterations) if r > 1 else -1
    recent = []  # per-code losses of the last steps before narrowing down
    k = min(cfg.samples, min(len(p) for p in batch.pts))
    sched = _Schedule(cfg, iterations, k, min(k, cfg.samples_start) if cfg.samples_start > 0 else k,
                      int(cfg.lr_drop_at * iterations))
    losses: list[float] = []
    # the decoder is frozen: its weight-normalised weights are computed once, not at every step
    bar = progress_bar(iterations, "optimise code", "step", progress)
    with _frozen(model), bar, parametrize.cached():
        for it in range(iterations):
            sched.set_lr(it, batch.opt)
            if batch.pose_opt is not None:
                batch.pose_opt.lr = pose.lr * batch.opt.lr / cfg.lr
            loss, per = _code_step(model, batch, sched.samples(it), gen, cfg, clamp, device)
            losses.append(float(loss.detach()) / len(per))
            bar.update(1)
            if narrow_at >= 0:
                recent = (recent + [per.detach()])[-10:]
                if it + 1 >= narrow_at:  # each set goes on from its best start: lowest recent loss, or
                    # the pose hypotheses' own choice (PoseStarts.choose)
                    score = None if pose is None else pose.choose(model, batch.code.detach(),
                                                                  batch.pose_opt.param.detach())
                    score = torch.stack(recent).mean(dim=0) if score is None else score
                    best = score.reshape(b, r).argmin(dim=1)
                    keep = best + torch.arange(b, device=best.device) * r
                    batch.keep(keep.to(device))
                    narrow_at = -1
            if sched.stop(it, losses[-1]):  # plateau: drop the rate early, then stop early
                break
    if not all(math.isfinite(x) for x in losses[-1:]):
        raise DataError("code optimisation diverged (loss is not finite); lower reconstruct.lr")
    if narrow_at >= 0:  # stopped before narrowing down: each set's first start (its best probe, or the given)
        keep = torch.arange(b, device=batch.code.device) * r
        batch.code, batch.mask = batch.code[keep], None if batch.mask is None else batch.mask[keep]
        if batch.pose_opt is not None:
            pose.kept, batch.pose_opt.param = keep.cpu(), batch.pose_opt.param[keep]
    if pose is not None:
        pose.params = batch.pose_opt.param.detach().clone()
    return batch.codes(), losses


MODES = ("optimise", "encode", "encode+refine")
"""How a code is found: latent optimisation, one encoder pass, or an encoder pass refined by optimisation."""
MAX_OBSERVED_POINTS = 200_000
"""A scan with more points is randomly (seeded) cut to this many, with a note on stderr: the fit draws
``reconstruct.samples`` of them per step anyway, and every point adds free-space observations."""


def thin_points(points: np.ndarray, normals: np.ndarray | None, seed: int
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """At most :data:`MAX_OBSERVED_POINTS` of ``points`` (N, dim) (and their normals), chosen with
    ``seed``."""
    if len(points) <= MAX_OBSERVED_POINTS:
        return points, normals
    keep = np.sort(np.random.default_rng(seed).choice(len(points), MAX_OBSERVED_POINTS, replace=False))
    return points[keep], None if normals is None else normals[keep]


def default_mode(model: SDFModel) -> str:
    """'optimise' for a latent table (autodecoder), 'encode' for an encoder (autoencoder)."""
    return "optimise" if model.latent.optimised_at_test_time else "encode"


def check_mode(model: SDFModel, mode: str | None, source: str = "") -> str:
    """The mode to use (``None``: :func:`default_mode`); an encoder mode on a table run is an error."""
    mode = default_mode(model) if mode is None else mode
    if mode not in MODES:
        raise DataError(f"--mode {mode}: unknown mode; use one of {', '.join(MODES)}")
    if mode.startswith("encode") and model.latent.optimised_at_test_time:
        raise DataError(f"--mode {mode} needs an autoencoder run (model.latent.source: pointnet or "
                        "pointnet_grid); this run's latent "
                        f"source{' ' + repr(source) if source else ''} has no encoder: use --mode optimise")
    return mode


def input_points(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` of ``points`` (M, dim) for the encoder: without replacement when M >= n, else with."""
    if len(points) == 0:
        raise DataError("no points to encode")
    return points[rng.choice(len(points), size=n, replace=len(points) < n)]


@torch.no_grad()
def encode_codes(model: SDFModel, points: list[np.ndarray], device: torch.device, seed: int = 0
                 ) -> torch.Tensor:
    """Codes (B, L) of B point sets (each (M_i, dim), normalised frame) by one encoder pass (eval mode);
    each set is resampled to the encoder's ``input_points`` points."""
    rng = np.random.default_rng(seed)
    n = model.latent.input_points
    x = np.stack([input_points(np.asarray(p, np.float32), n, rng) for p in points])
    x = torch.from_numpy(x).to(device)
    was = model.training
    model.eval()
    try:
        return model.latent.encode(x).detach()
    finally:
        model.train(was)


def find_codes(model: SDFModel, cfg: Config, mode: str, obs: list[Observations] | None,
               points: list[np.ndarray] | None, device: torch.device, init: torch.Tensor | None = None,
               seed: int = 0, iterations: int | None = None, candidates: torch.Tensor | None = None,
               progress: bool = False) -> tuple[torch.Tensor, list[float]]:
    """Codes (B, L) of B shapes by ``mode``: 'optimise' fits ``obs`` from ``init`` (B, L) (or random, or the
    best of ``candidates`` with ``reconstruct.init: best``), 'encode' encodes ``points``, 'encode+refine' fits
    ``obs`` starting from the encoding of ``points``. ``progress``: a progress bar of the optimisation.
    Returns the codes and the optimisation loss per iteration (empty for 'encode')."""

    if mode.startswith("encode"):
        codes = encode_codes(model, points, device, seed)
        if mode == "encode":
            return codes, []
        init, candidates = codes, None  # refine the encoding (toward the data, held by refine_prior)
    return optimise_codes(model, obs, cfg.reconstruct, loss_clamp(cfg), device, init=init, seed=seed,
                          iterations=iterations, candidates=candidates, progress=progress,
                          anchor=init if mode == "encode+refine" else None)


def estimate_normalization(points: np.ndarray) -> tuple[np.ndarray, float]:
    """DeepSDF's normalisation of the observed points themselves (used when the true one is unknown)."""
    centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
    radius = float(np.linalg.norm(points - centre, axis=1).max())
    if radius <= 0:
        raise DataError("the observed points all coincide; cannot normalise them")
    return -centre, 1.0 / (1.03 * radius)


MISFIT_SHARE = 0.5
"""``reconstruct`` warns when more than this share of the observed surface points still sit at the clamp after
the optimisation: there the loss is flat, so the code found does not explain the scan at all."""


def clamped_share(sdf, points: np.ndarray, clamp: float) -> float:
    """Share of ``points`` (M, dim; observed surface, sdf 0) where ``sdf(points)`` is at or beyond
    ``clamp``."""
    if not math.isfinite(clamp) or len(points) == 0:
        return 0.0
    return float(np.mean(np.abs(sdf(points)) >= clamp))


def face_camera(normals: np.ndarray, points: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """``normals`` (N, 3) of ``points`` (N, 3) flipped where needed to face the ``camera`` (3,): a surface
    seen by a camera faces it, so its outside is towards the camera."""
    flip = np.sum(normals * (camera[None] - points), axis=1) < 0
    return np.where(flip[:, None], -normals, normals)


def fit_observations(model: SDFModel, cfg: Config, obs: Observations, points: np.ndarray | None,
                     device: torch.device, mode: str = "optimise", seed: int = 0,
                     iterations: int | None = None, mean_code: torch.Tensor | None = None,
                     candidates: torch.Tensor | None = None, progress: bool = False
                     ) -> tuple[torch.Tensor, list[float]]:
    """The code (L,) of one shape from its observations ``obs`` (and its surface ``points`` (M, dim) for an
    encoder mode), starting as ``reconstruct.init`` says (:func:`initial_code` with ``mean_code``, the mean
    training code, or the best of ``candidates``, see :func:`start_candidates`); see :func:`find_codes`.
    Returns the code and the loss per iteration."""
    init = initial_code(model, cfg.reconstruct, torch.Generator().manual_seed(seed), mean_code)
    codes, losses = find_codes(model, cfg, mode, [obs], None if points is None else [points], device,
                               init=init.reshape(1, -1), seed=seed, iterations=iterations,
                               candidates=candidates, progress=progress)
    return codes[0], losses


@dataclass
class ScanFit:
    """A partial scan explained by the decoder: the ``code`` (L,), the loss per iteration, the number of
    observations fitted, the ``sdf`` of the shape found (a function of points (M, 3) in the normalised frame,
    :func:`deepsdf_ad.meshing.model_sdf`) and the share of the observed points still at the clamp
    (:func:`clamped_share`; above :data:`MISFIT_SHARE` the code does not explain the scan)."""

    code: torch.Tensor
    losses: list[float]
    observations: int
    sdf: Callable[[np.ndarray], np.ndarray]
    clamped_share: float


def fit_scan(model: SDFModel, cfg: Config, points: np.ndarray, normals: np.ndarray | None,
             camera: np.ndarray | None, device: torch.device, mode: str = "optimise", seed: int = 0,
             iterations: int | None = None, mean_code: torch.Tensor | None = None,
             candidates: torch.Tensor | None = None, progress: bool = False) -> ScanFit:
    """The shape of a partial 3D scan in the normalised frame.

    Args:
        points: surface points (N, 3), normalised frame; normals: their normals (N, 3) or None (turned to face
            the camera); camera: its position (3,) in the normalised frame, or None (no free space).
        mode, seed, iterations, mean_code, candidates, progress: see :func:`fit_observations`.
    """
    from deepsdf_ad.meshing import model_sdf

    if normals is not None and camera is not None:
        normals = face_camera(normals, points, camera)
    obs = observations_from_scan(points, normals, camera, cfg.reconstruct, np.random.default_rng(seed))
    code, losses = fit_observations(model, cfg, obs, points, device, mode, seed, iterations, mean_code,
                                    candidates, progress)
    sdf = model_sdf(model, code, device, cfg.mesh.batch_points, precision=cfg.reconstruct.precision)
    return ScanFit(code, losses, len(obs), sdf, clamped_share(sdf, points, loss_clamp(cfg)))


def contour_points(obs: Observations) -> np.ndarray:
    """The observed points known to lie on the contour (lo = hi = 0): an encoder's input in 2D."""
    on = (np.asarray(obs.lo) == 0) & (np.asarray(obs.hi) == 0)
    return np.asarray(obs.points)[on]


def mean_training_code(run) -> torch.Tensor | None:
    try:
        codes = run.codes()
    except DataError:
        return None
    return codes.mean(dim=0) if len(codes) else None
