"""Training on several processes with ``torch.distributed``: the process group, the split of a batch
among ranks and the collectives the training loop needs (the launcher of ``deepsdf-ad train --nproc N`` is
:mod:`deepsdf_ad.commands.launch`).

The environment contract is torchrun's: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) training runs in one process and nothing
here touches ``torch.distributed``.

What is reduced how (see also docs/distributed.md):

- every rank draws the same epoch order and the same samples for the whole global batch (generators
  seeded by (seed, epoch)); rank ``r`` of ``W`` keeps the shapes at positions ``r, r + W, r + 2W, ...``
  of each global batch, a deterministic, DistributedSampler-like split with no padding, so no shape is
  counted twice; with a sample store (:mod:`deepsdf_ad.store`), where each rank reads only its share of the
  shapes (:func:`shares`), rank ``r`` keeps instead the positions of the batch that hold its shapes;
- each rank's loss is its share of the *global* mean (its sum divided by the global sample count), and
  the gradients of the wrapped network (decoder, and encoder if codes come from points) are **summed**
  across ranks by a DDP communication hook, so ``W`` ranks at global batch ``B`` compute the gradient of
  one process at batch ``B``;
- per-shape parameters (the autodecoder's code table) are not wrapped in DDP: each rank looks up the
  codes of the whole global batch, and the gradients of its own rows are all-gathered, so every code of
  the batch gets exactly its one gradient on every rank and the Adam states stay identical everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from deepsdf_ad.data_prep.formats import DataError


@dataclass
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owners: torch.Tensor | None = None
    """(S,) the rank that holds each shape's samples (a sample store's :func:`shares`); None: every rank holds
    every shape and keeps the positions ``rank, rank + size, ...`` of each batch."""

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    def part(self, index: torch.Tensor) -> slice | torch.Tensor:
        """This rank's positions in a global batch of the shapes ``index`` (B,)."""
        return self.positions(index, self.rank)

    def positions(self, index: torch.Tensor, rank: int) -> slice | torch.Tensor:
        """Rank ``rank``'s positions in a global batch of the shapes ``index`` (B,): a slice, or the positions
        (on ``index``'s device) of the shapes it owns."""
        if self.owners is None:
            return slice(rank, len(index), self.size)
        return (self.owners[index.cpu()] == rank).nonzero().flatten().to(index.device)

    def count(self, index: torch.Tensor, rank: int) -> int:
        """How many of a global batch of the shapes ``index`` rank ``rank`` holds."""
        p = self.positions(index, rank)
        return len(range(len(index))[p]) if isinstance(p, slice) else len(p)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of ``values`` over ranks (the same result on every rank)."""
        if not self.enabled:
            return values
        out = values.to(_comm_device(), copy=True)  # NCCL reduces only CUDA tensors
        dist.all_reduce(out)
        return out.to(values.device)

    def decide(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank (for decisions that depend on the clock)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], device=_comm_device())
        dist.broadcast(t, src=0)
        return bool(t.item())

    def gather_rows(self, local: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Rows (k, ...) held by each rank (its :meth:`part`) of a global batch of the shapes ``index`` (B,)
        -> (B, ...) in global batch order."""
        if not self.enabled:
            return local
        n = len(index)
        counts = [self.count(index, r) for r in range(self.size)]
        pad = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=local.device)
        pad[:len(local)] = local
        parts = [torch.empty_like(pad) for _ in range(self.size)]
        dist.all_gather(parts, pad)
        out = torch.empty((n, *local.shape[1:]), dtype=local.dtype, device=local.device)
        for r, p in enumerate(parts):
            out[self.positions(index, r)] = p[:counts[r]]
        return out

    def check_in_sync(self, module: nn.Module) -> None:
        """Raise if the parameters differ between ranks (they must stay bitwise identical)."""
        if not self.enabled:
            return
        with torch.no_grad():
            sig = torch.stack([p.detach().double().sum() for p in module.parameters()]).to(_comm_device())
        parts = [torch.empty_like(sig) for _ in range(self.size)]
        dist.all_gather(parts, sig)
        if any(not torch.equal(parts[0], p) for p in parts[1:]):
            raise RuntimeError("distributed training: the model differs between ranks")


def _comm_device() -> torch.device:
    nccl = dist.get_backend() == "nccl"
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


def shares(shapes: int, ranks: int) -> torch.Tensor:
    """(shapes,) the rank that holds each shape when ``ranks`` ranks split ``shapes`` shapes: consecutive
    blocks of sizes that differ by at most one (shapes ``i`` with ``i * ranks // shapes == r`` are rank
    ``r``'s), so the shares are disjoint, cover every shape, and each is one stretch of a store's files."""
    return torch.arange(shapes, dtype=torch.int64) * ranks // max(shapes, 1)


def world_from_env() -> World:
    """The :class:`World` described by torchrun's environment variables."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DataError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (set by torchrun)") from None
    if size < 1 or not 0 <= rank < size:
        raise DataError(f"RANK={rank}, WORLD_SIZE={size}: need 0 <= RANK < WORLD_SIZE")
    return World(rank, size, local)


def setup(device: torch.device, world: World) -> torch.device:
    """Join the process group (gloo on CPU, NCCL on CUDA) once; return this rank's device.

    A CUDA device without an index becomes ``cuda:LOCAL_RANK``.
    """
    if not world.enabled:
        return device
    if device.type == "cuda" and device.index is None:
        if world.local_rank >= torch.cuda.device_count():
            raise DataError(f"LOCAL_RANK={world.local_rank}, but only {torch.cuda.device_count()} CUDA "
                            "devices; start at most one process per GPU")
        device = torch.device("cuda", world.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise DataError(f"WORLD_SIZE={world.size} but {var} is not set; start with torchrun or "
                                "'deepsdf-ad train --nproc N'")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank,
                                world_size=world.size)
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _sum_hook(state, bucket):
    """DDP communication hook: sum the gradients over ranks (DDP's default averages them)."""
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


class Network(nn.Module):
    """What DDP wraps: the decoder, plus the latent source when it computes codes from points.

    ``forward(codes_or_points, xyz)``: codes (B, L) (a per-shape source) or input points (B, M, dim) (an
    encoder), and query coordinates (B, N, dim) -> (sdf (B, N), codes (B, L)).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.decoder = model.decoder
        self.encoder = None if model.latent.per_shape_parameters else model.latent
        # how codes are decoded (a grid blends local codes); kept unregistered so a per-shape table's
        # parameters stay outside DDP (their gradients are gathered by the training step)
        object.__setattr__(self, "_source", model.latent)

    def forward(self, codes_or_points: torch.Tensor, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = codes_or_points if self.encoder is None else self.encoder.codes({"points": codes_or_points})
        if hasattr(self._source, "decode_points"):
            return self._source.decode_points(self.decoder, codes, xyz), codes
        return self.decoder(codes[:, None, :], xyz), codes


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model's :class:`Network` in DistributedDataParallel, gradients summed over ranks."""
    net = Network(model)
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(net, device_ids=ids, forward_sync_buffers=False)
    ddp.register_comm_hook(None, _sum_hook)
    return ddp
