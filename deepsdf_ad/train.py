"""The training loop: clamped-L1 SDF loss, code regulariser, step schedules, checkpoints and resume.

One loop for every latent source. Each epoch draws its randomness from a generator seeded by
``(seed, epoch)``, so a run resumed from a checkpoint continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from deepsdf_ad.amortise import code_pull, take_decoder, target_weight
from deepsdf_ad.board import EpochBoard
from deepsdf_ad.config import Config, ConfigError, config_differences
from deepsdf_ad.data import SampleBank, to_device
from deepsdf_ad.data_prep.folders import output_folder
from deepsdf_ad.data_prep.formats import DataError, DataRoot
from deepsdf_ad.data_prep.log import note, warn
from deepsdf_ad.device import activation_bytes, autocast, cpu_block_points, resolve_device, resolve_precision
from deepsdf_ad.distributed import World, setup, world_from_env, wrap
from deepsdf_ad.health import STALL_EPOCHS, run_losses, stall_message
from deepsdf_ad.inputs import PointInputs, encode_all
from deepsdf_ad.losses import code_regulariser, loss_clamp, sdf_error, sdf_loss
from deepsdf_ad.models import SDFModel, build_model
from deepsdf_ad.runs import CHECKPOINTS, CONFIG, METRICS, Run, load_model_state, load_trained
from deepsdf_ad.store import MappedBank, host_or_device, load_samples


def step_loss(model: SDFModel, batch: dict, clamp: float, reg_weight: float, precision: str,
              dev: torch.device, target_weight: float = 0.0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, sdf loss, code regulariser) of one single-process step on ``batch`` ({"index", "samples",
    ...}). With ``batch["code_target"]`` (amortising an autodecoder), the loss also holds ``target_weight``
    times the mean squared distance of the codes to it."""
    samples = batch["samples"]
    with autocast(dev, precision):
        codes = model.latent.codes(batch)
        pred = model.decode(codes, samples[..., :-1])
        l_sdf = sdf_loss(pred.float(), samples[..., -1], clamp)
        l_reg = code_regulariser(codes.float(), model) if reg_weight > 0 else torch.zeros((), device=dev)
        loss = l_sdf + reg_weight * l_reg
        if target_weight > 0 and "code_target" in batch:
            loss = loss + target_weight * code_pull(codes.float(), batch["code_target"], len(codes))
        return loss, l_sdf, l_reg


def make_optimizer(model: SDFModel, cfg: Config) -> torch.optim.Adam:
    return torch.optim.Adam([
        {"params": list(model.decoder.parameters()), "lr": cfg.train.lr_decoder.initial, "name": "decoder"},
        {"params": list(model.latent.parameters()), "lr": cfg.train.lr_latent.initial, "name": "latent"},
    ])


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            tensors[f"optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, sd["param_groups"]


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def checkpoint_tensors(model: SDFModel, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, groups = _flatten_optimizer(opt)
    tensors.update(opt_tensors)
    return tensors, groups


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + epoch * 7919) % (2**63))
    return g


def train(cfg: Config, data: str | os.PathLike, out: str | os.PathLike, epochs: int | None = None,
          device: str = "auto", split_file: str | None = None, progress: bool = True,
          max_seconds: float | None = None, restart: bool = False, force: bool = False) -> Run:
    """Train ``cfg`` on the training split of ``data`` into the run folder ``out`` (resuming if it exists).

    Returns the run. A run folder that already holds a checkpoint continues from it with the run's saved
    config (``epochs`` may extend it). ``max_seconds`` stops after the epoch that exceeds that wall time
    (with a checkpoint), so a budgeted run can be resumed later.

    Resuming with another config is refused with the list of differences (only ``epochs`` may change). A run
    folder whose metrics record epochs but holds no checkpoint any more (they were deleted) is refused too,
    unless ``restart``: starting over would overwrite its ``metrics.jsonl``.

    ``out`` must be a run folder of ours, new or empty (``force``: any folder; see
    :mod:`deepsdf_ad.data_prep.folders`); while it trains, a second ``train`` into it is refused, naming this
    process.

    Started by torchrun (``WORLD_SIZE`` > 1 in the environment), every rank calls this; the shapes of each
    batch are divided among ranks and only rank 0 writes files (see :mod:`deepsdf_ad.distributed`).
    """
    if os.environ.get("RANK", "0") != "0":  # rank 0 owns and locks the folder for all ranks
        return _train(cfg, data, out, epochs, device, split_file, progress, max_seconds, restart)
    with output_folder(out, "run", "deepsdf-ad train", force=force):
        return _train(cfg, data, out, epochs, device, split_file, progress, max_seconds, restart)


def _train(cfg: Config, data: str | os.PathLike, out: str | os.PathLike, epochs: int | None, device: str,
           split_file: str | None, progress: bool, max_seconds: float | None, restart: bool) -> Run:
    t_start = time.perf_counter()
    world = world_from_env()
    dev = setup(resolve_device(device), world)
    run = Run(out)
    kept = run.checkpoints() if run.exists() else []
    resumed = bool(kept)
    world.barrier()  # every rank has looked before rank 0 writes
    cfg = _run_config(run, cfg, epochs, resumed, restart)
    if resumed and kept[-1]["epoch"] >= cfg.train.epochs:
        # nothing left to train, so no samples to load (minutes on a large data set): make sure the codes
        # file belongs to the newest checkpoint (a kill between writing the two would leave older codes)
        if world.main:
            save_codes(run, load_trained(run, torch.device("cpu"))[1])
        world.barrier()
        return run
    refs, bank = _load_samples(run, cfg, data, split_file, progress, world, resumed)
    data_dev = host_or_device(bank, cfg.train.samples_on, dev)
    bank.to(data_dev)
    loop = _start_loop(cfg, run, world, dev, data_dev, bank, refs, progress, resumed)
    tc = cfg.train
    bar = tqdm(range(loop.start, tc.epochs), desc="train", unit="epoch",
               disable=not (progress and world.main), initial=loop.start, total=tc.epochs)
    board = EpochBoard(run.path, loop.start) if tc.tensorboard and world.main else None
    for epoch in bar:
        t0 = time.perf_counter()
        lrs = {"decoder": tc.lr_decoder.at(epoch, tc.epochs), "latent": tc.lr_latent.at(epoch, tc.epochs)}
        for group in loop.opt.param_groups:
            group["lr"] = lrs[group["name"]]
        totals = _train_epoch(loop, epoch)
        totals = dict(zip(("loss", "sdf_loss", "reg_loss"), world.sum(totals).tolist(), strict=True))
        if not math.isfinite(totals["loss"]):
            raise DataError(f"{run.path}: training diverged (loss is {totals['loss']}) at epoch {epoch + 1}; "
                            "lower the learning rates")
        seconds = time.perf_counter() - t0
        done = epoch + 1
        if world.main:
            row = _metrics_row(loop, done, totals, lrs, seconds)
            run.append_metrics(row)
            if done == STALL_EPOCHS:
                stalled = stall_message(run_losses(run.metrics())[:STALL_EPOCHS])
                if stalled:
                    warn(f"{run.path}: {stalled}")
            if board is not None:
                board.log(row, loop.model)
            bar.set_postfix(loss=f"{row['loss']:.5f}")
        out_of_time = world.decide(max_seconds is not None and time.perf_counter() - t_start > max_seconds)
        if done % tc.checkpoint_every == 0 or done == tc.epochs or out_of_time:
            world.check_in_sync(loop.model)
            if world.main:
                save_checkpoint(run, loop.model, loop.opt, done, cfg, loop.inputs)
        if out_of_time:
            break
    bar.close()
    if board is not None:
        board.close()
    world.barrier()
    return run


def _run_config(run: Run, cfg: Config, epochs: int | None, resumed: bool, restart: bool) -> Config:
    """The config to train with: a resumed run's own (refused if ``cfg`` differs but for the epochs), else
    ``cfg``; ``epochs`` (when given) replaces ``train.epochs``."""
    if resumed:
        saved = run.config()
        changed = config_differences(saved, cfg, ignore=("train.epochs",))
        if changed:
            raise ConfigError(f"{run.path}: the run was started with another config; it resumes only with "
                              f"its own (--epochs may change): {'; '.join(changed)}; use a new --out, or the "
                              f"run's {run.path / CONFIG} without --set")
        if epochs is not None:
            saved.train.epochs = epochs
        elif cfg.train.epochs != saved.train.epochs:
            note(f"{run.path}: resumes with its own train.epochs ({saved.train.epochs}), not "
                 f"{cfg.train.epochs}; pass --epochs N to change it")
        return saved
    if not restart:
        _refuse_lost_checkpoints(run, cfg)
    if epochs is not None:
        cfg.train.epochs = epochs
    return cfg


def _load_samples(run: Run, cfg: Config, data: str | os.PathLike, split_file: str | None, progress: bool,
                  world: World, resumed: bool) -> tuple[list, SampleBank | MappedBank]:
    """The training split's shapes and their samples; rank 0 writes the run's config and shape list."""
    root = DataRoot(data, split_file)
    if root.manifest().get("field") == "height" and cfg.train.loss != "l1":
        raise DataError(f"{root.root}: holds heightfield intensities, not distances; train with "
                        "--set train.loss=l1")
    refs = root.shapes("train")
    bank = load_samples(root, refs, cfg.dim, cfg.train.sample_store, world, progress=progress)
    world.owners = bank.owners  # a store's ranks each read their share of the shapes
    if resumed:
        if run.shapes()["keys"] != bank.keys:
            raise DataError(f"{run.path}: the run was trained on other shapes than {data}'s train split; "
                            "use a new --out")
    if world.main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.save_config(cfg)
        run.save_shapes(str(Path(data).resolve()), bank.keys)
    return refs, bank


@dataclass
class _Loop:
    """What the epochs of one training call work with."""

    cfg: Config
    world: World
    dev: torch.device
    data_dev: torch.device
    bank: SampleBank | MappedBank
    inputs: PointInputs | None
    """Surface points of the shapes, for a latent source that reads points (an encoder)."""
    model: SDFModel
    opt: torch.optim.Adam
    net: torch.nn.Module | None
    """The DDP-wrapped model when distributed."""
    scaler: torch.amp.GradScaler | None
    split: tuple[int, int]
    """(shape parts, sample parts) of a step (:func:`plan_split`)."""
    start: int
    """Epochs done before this call (resumed from a checkpoint)."""
    targets: torch.Tensor | None = None
    """Amortising an autodecoder (``train.decoder_from``): its codes of the training shapes, on the device."""
    target_weight: float = 0.0
    """The factor of the squared distance to ``targets`` in the loss (:func:`amortise.target_weight`)."""


def _start_loop(cfg: Config, run: Run, world: World, dev: torch.device, data_dev: torch.device,
                bank: SampleBank | MappedBank, refs: list, progress: bool, resumed: bool) -> _Loop:
    """The model (seeded initial weights, or the newest checkpoint's when resuming), its optimiser and the
    step plan."""
    torch.manual_seed(cfg.train.seed)  # initial weights: deterministic for a seed
    model = build_model(cfg.dim, cfg.model.decoder, cfg.model.latent, len(bank)).to(dev)
    targets, weight, taken = None, 0.0, None
    if cfg.train.decoder_from:
        if not model.latent.input_points:
            raise DataError(f"{cfg.train.decoder_from}: train.decoder_from trains an encoder for the run's "
                            f"decoder; latent source '{cfg.model.latent.source}' has none")
        targets = take_decoder(model, cfg, list(bank.keys), dev)
        weight = target_weight(cfg.train.code_target, targets)
        if resumed:  # the decoder it takes now, against the one the checkpoint holds
            taken = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    opt = make_optimizer(model, cfg)
    # a latent source that reads points (the encoder) gets surface points of the same shapes
    inputs = (PointInputs(refs, cfg.dim, progress=progress and world.main).to(data_dev)
              if model.latent.input_points else None)
    start = 0
    if resumed:
        ck = run.load_checkpoint(warn=world.main)
        if ck is not None:
            tensors, meta = ck
            load_model_state(model, {k: v.to(dev) for k, v in tensors.items()})
            _restore_optimizer(opt, tensors, meta["param_groups"])
            start = int(meta["epoch"])
            if taken is not None and not all(torch.equal(v, taken[k])
                                             for k, v in model.decoder.state_dict().items()):
                raise DataError(f"{cfg.train.decoder_from}: its decoder changed since {run.path} started "
                                "(trained on?); its codes no longer match the decoder this run learned for; "
                                "start a new --out")
    if world.main:
        run.truncate_metrics(start)
    net = wrap(model, dev) if world.enabled else None
    fp16 = resolve_precision(cfg.train.precision, dev) == "fp16" and dev.type == "cuda"
    scaler = torch.amp.GradScaler(dev.type) if fp16 else None
    return _Loop(cfg, world, dev, data_dev, bank, inputs, model, opt, net, scaler,
                 plan_split(cfg, dev, world.size), start, targets, weight)


def _train_epoch(loop: _Loop, epoch: int) -> torch.Tensor:
    """One epoch; returns this rank's share of the summed (loss, sdf loss, regulariser) over its steps."""
    tc, world, dev = loop.cfg.train, loop.world, loop.dev
    reg_weight = tc.code_reg * min(1.0, epoch / max(tc.code_reg_rampup, 1))
    gen = epoch_generator(tc.seed, epoch, loop.data_dev)
    loop.model.train()
    totals = torch.zeros(3, dtype=torch.float64)  # loss, sdf_loss, reg_loss (this rank's share)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        # dropout masks, reproducible per epoch (and different on each rank)
        torch.manual_seed(tc.seed * 31 + epoch + 1_000_003 * world.rank)
        perm = torch.randperm(len(loop.bank), generator=gen, device=loop.data_dev)
        for b in range(math.ceil(len(loop.bank) / tc.shapes_per_batch)):
            # every rank draws the whole global batch from the same generator, so the random stream
            # (and each shape's samples) does not depend on the number of ranks
            idx = perm[b * tc.shapes_per_batch:(b + 1) * tc.shapes_per_batch]
            batch = {"index": to_device(idx, dev),
                     "samples": to_device(loop.bank.draw(idx, tc.samples_per_shape, gen), dev)}
            if loop.inputs is not None:
                batch["points"] = to_device(loop.inputs.draw(idx, loop.model.latent.input_points, gen,
                                                             **loop.model.latent.augment), dev)
            if loop.targets is not None:
                batch["code_target"] = loop.targets[to_device(idx, dev)]
            totals += _train_step(loop, batch, reg_weight)
    return totals


def _train_step(loop: _Loop, batch: dict, reg_weight: float) -> torch.Tensor:
    """One optimiser step on ``batch`` (in parts, :func:`sub_batches`); returns its (loss, sdf loss,
    regulariser) on the CPU (this rank's share)."""
    model, opt, dev, scaler, tc = loop.model, loop.opt, loop.dev, loop.scaler, loop.cfg.train
    clamp = loss_clamp(loop.cfg)
    opt.zero_grad(set_to_none=True)
    parts = sub_batches(batch, *loop.split)
    step = torch.zeros(3, dtype=torch.float64, device=dev)  # this step's losses, on the device
    for k, (part, share) in enumerate(parts):
        # each part's loss weighted by its share: the gradients add up to the whole batch's
        if loop.net is None:
            loss, l_sdf, l_reg = step_loss(model, part, clamp, reg_weight, tc.precision, dev,
                                           loop.target_weight)
            _backward(loss * share, scaler)
        else:
            # DDP sums gradients over ranks once, after the last part
            with loop.net.no_sync() if k < len(parts) - 1 else contextlib.nullcontext():
                loss, l_sdf, l_reg = _distributed_step(model, loop.net, loop.world, part, clamp, reg_weight,
                                                       tc.precision, dev, scaler, share, loop.target_weight)
        step += share * torch.stack([loss.detach(), l_sdf.detach(), l_reg.detach()]).double()
    totals = step.cpu()  # one wait for the device per step, not per part
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return totals


def _metrics_row(loop: _Loop, done: int, totals: dict, lrs: dict, seconds: float) -> dict:
    """The ``metrics.jsonl`` row of epoch ``done``: mean losses per batch, time, rates, throughput."""
    tc = loop.cfg.train
    n_batches = math.ceil(len(loop.bank) / tc.shapes_per_batch)
    row = {"epoch": done, **{k: v / n_batches for k, v in totals.items()}, "seconds": round(seconds, 4),
           "lr_decoder": lrs["decoder"], "lr_latent": lrs["latent"],
           "points_per_s": round(len(loop.bank) * tc.samples_per_shape / max(seconds, 1e-9), 1)}
    if loop.world.enabled:
        row["ranks"] = loop.world.size
    return row


def plan_split(cfg: Config, dev: torch.device, ranks: int = 1) -> tuple[int, int]:
    """(shape parts, sample parts) of one training step (see ``train.batch_split``)."""
    tc = cfg.train
    shapes, samples = tc.shapes_per_batch, tc.samples_per_shape
    if tc.batch_split != "auto":
        k = tc.batch_split
        return (k, 1) if k <= shapes else (shapes, math.ceil(k / shapes))
    widths = cfg.model.decoder.hidden
    if dev.type == "cuda":
        # activations, their gradients and the saved masks: about 4 buffers per hidden value
        per_point = 4 * activation_bytes(tc.precision, dev) * sum(widths)
        budget = int(0.5 * torch.cuda.mem_get_info(dev)[0] / per_point)
    else:
        budget = cpu_block_points(max(widths), tc.precision, dev)
    per_rank = budget // samples  # whole shapes per rank in a part
    if per_rank >= 1:
        return math.ceil(shapes / (per_rank * ranks)), 1
    return math.ceil(shapes / ranks), math.ceil(samples / max(budget, 1))


def timed_steps(model: SDFModel, opt: torch.optim.Optimizer, cfg: Config, batch: dict, dev: torch.device,
                steps: int) -> list[float]:
    """Points/s of each of ``steps`` optimiser steps on ``batch`` (already on ``dev``), taken as the training
    loop takes them (its parts, its loss, Adam), without sampling or bookkeeping: the decoder-alone figure of
    the benchmarks."""
    tc = cfg.train
    split = plan_split(cfg, dev)
    n = batch["samples"].shape[0] * batch["samples"].shape[1]
    model.train()
    rates = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for part, share in sub_batches(batch, *split):
            loss, _, _ = step_loss(model, part, loss_clamp(cfg), tc.code_reg, tc.precision, dev)
            (loss * share).backward()
        opt.step()
        float(loss.detach())  # waits for the device
        rates.append(n / (time.perf_counter() - t0))
    return rates


def sub_batches(batch: dict, shape_parts: int, sample_parts: int = 1) -> list[tuple[dict, float]]:
    """``batch`` cut into consecutive pieces of shapes (at most one per shape), each of them into pieces of
    samples; each piece with its share of the batch's samples. The shares, as weights of the pieces' losses,
    make the whole batch's loss: its SDF term is a mean over samples, its code term a mean over shapes that
    each piece of samples of a shape carries its share of."""
    n = len(batch["index"])
    total = batch["samples"].shape[:2].numel()
    cut = [torch.tensor_split(v, min(shape_parts, n)) for v in batch.values()]
    pieces = []
    for shapes in zip(*cut, strict=True):
        piece = dict(zip(batch, shapes, strict=True))
        for s in torch.tensor_split(piece["samples"], min(sample_parts, piece["samples"].shape[1]), dim=1):
            pieces.append(({**piece, "samples": s}, s.shape[:2].numel() / total))
    return pieces


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (loss if scaler is None else scaler.scale(loss)).backward()


def _distributed_step(model: SDFModel, net: torch.nn.Module, world: World, batch: dict, clamp: float,
                      reg_weight: float, precision: str, dev: torch.device,
                      scaler: torch.amp.GradScaler | None, share: float = 1.0,
                      target_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of one step on this rank's part of the global ``batch``; the same on every rank afterwards.

    Returns this rank's shares of (loss, sdf loss, regulariser): their sums over ranks are the global values.
    The gradients are those of ``share`` times the loss (``batch`` is that share of a step's shapes).
    """
    samples = batch["samples"]
    n = len(samples)
    part = world.part(batch["index"])
    local = samples[part]
    per_shape = model.latent.per_shape_parameters
    with autocast(dev, precision):
        if per_shape:
            # every rank looks up the codes of the whole batch (the table's max_norm renormalises the same
            # rows everywhere); the network sees a detached copy of this rank's rows
            all_codes = model.latent.codes(batch)
            leaf = all_codes[part].detach().requires_grad_(True)
            pred, codes = net(leaf, local[..., :-1])
        else:
            pred, codes = net(batch["points"][part], local[..., :-1])
        l_sdf = sdf_error(pred.float(), local[..., -1], clamp).sum() / samples[..., -1].numel()
        l_reg = model.code_penalty(codes.float()).sum() / n if reg_weight > 0 else torch.zeros((), device=dev)
        loss = l_sdf + reg_weight * l_reg
        if target_weight > 0 and "code_target" in batch:  # this rank's shapes' share of the batch's mean
            loss = loss + target_weight * code_pull(codes.float(), batch["code_target"][part], n)
    _backward(loss * share, scaler)  # DDP sums the network's gradients over ranks
    if per_shape:
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        all_codes.backward(world.gather_rows(grad, batch["index"]))
    return loss, l_sdf, l_reg


def save_checkpoint(run: Run, model: SDFModel, opt: torch.optim.Optimizer, epoch: int, cfg: Config,
                    inputs: PointInputs | None = None) -> None:
    """Write a checkpoint and the training codes (an encoder's are its encodings of the training shapes,
    from clean seeded inputs, stored in the model so they travel with the checkpoint)."""
    if inputs is not None:
        model.latent.set_training_codes(encode_all(model, inputs, model.latent.input_points))
    tensors, groups = checkpoint_tensors(model, opt)
    run.save_checkpoint(epoch, tensors, {"epoch": epoch, "param_groups": groups},
                        keep=cfg.train.keep_checkpoints)
    save_codes(run, model)


def save_codes(run: Run, model: SDFModel) -> None:
    run.save_codes(model.latent.all_codes(), run.shapes()["keys"])


def seed_run_path(out: str | os.PathLike, seed: int) -> Path:
    """Where seed ``seed`` of a multi-seed run lives: ``OUT/seed_<seed>``."""
    return Path(out) / f"seed_{seed}"


def _refuse_lost_checkpoints(run: Run, cfg: Config) -> None:
    """A run folder with metrics whose checkpoints are gone (deleted, not yet written is fine): refuse to
    start over on top of it."""
    rows = run.metrics()
    if not rows:
        return
    saved = cfg
    if run.exists():
        with contextlib.suppress(DataError):
            saved = run.config()
    last = max((r["epoch"] for r in rows if isinstance(r.get("epoch"), int)), default=0)
    # a checkpoint is written every checkpoint_every epochs and at the last one: if one of those was reached,
    # the checkpoints were there and are gone
    if (run.path / CHECKPOINTS).is_dir() or last >= min(saved.train.checkpoint_every, saved.train.epochs):
        raise DataError(f"{run.path}: {METRICS} records {last} epochs but no checkpoint is left (deleted?); "
                        "starting over would overwrite it: pass --restart to start over, or use a new --out")


def train_seeds(cfg: Config, data: str | os.PathLike, out: str | os.PathLike, seeds: list[int],
                **kwargs) -> list[Run]:
    """Train ``cfg`` once per seed into ``OUT/seed_<K>`` (``train.seed = K``); each resumes on its own."""
    import copy

    if len(set(seeds)) != len(seeds):
        raise DataError(f"--seeds {' '.join(map(str, seeds))}: a seed is repeated")
    runs = []
    for s in seeds:
        c = copy.deepcopy(cfg)
        c.train.seed = int(s)
        runs.append(train(c, data, seed_run_path(out, s), **kwargs))
    return runs
