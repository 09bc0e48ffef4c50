"""Training on several processes with ``torch.distributed``: the process group, the split of a batch
among ranks, the collectives the training loop needs, and a launcher for ``deepsdf-ad train --nproc N``.

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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.log import note


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


# ---- the --nproc launcher ----------------------------------------------------------------------
GRACE_SECONDS = 5.0
"""How long the launcher lets the other ranks exit by themselves after one failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int) -> int:
    """Run ``python -m deepsdf_ad ARGV`` as ``nproc`` ranks on this machine (torchrun's environment).

    Rank 0 prints; the other ranks are silent unless they fail. When a rank fails, the others get
    ``GRACE_SECONDS`` to exit by themselves, then are stopped. Returns the exit code (rank 0's if it failed
    by itself, else the failing rank's, whose last error line is printed).
    """
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc)}
    base.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: N processes must not each take every core
    procs, logs = [], []
    try:
        for r in range(nproc):
            env = {**base, "RANK": str(r), "LOCAL_RANK": str(r)}
            log = None if r == 0 else tempfile.TemporaryFile(mode="w+")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, "-m", "deepsdf_ad", *argv], env=env,
                                          stdout=None if r == 0 else subprocess.DEVNULL, stderr=log,
                                          preexec_fn=_die_with_parent if sys.platform == "linux" else None))
        first_failed, failed_at = None, 0.0
        while any(p.poll() is None for p in procs):
            if first_failed is None:
                failed = [r for r, p in enumerate(procs) if p.poll() not in (None, 0)]
                if failed:
                    first_failed, failed_at = failed[0], time.monotonic()
            # bad input fails every rank at once: let them exit by themselves and say why; then stop the
            # ranks left waiting for the failed one
            if first_failed is not None and time.monotonic() - failed_at > GRACE_SECONDS:
                _stop([p for p in procs if p.poll() is None])
            time.sleep(0.05)
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        _stop([p for p in procs if p.poll() is None])
        return 130
    try:
        return _report(codes, first_failed, logs)
    finally:
        for log in logs:
            if log is not None:
                log.close()


def _report(codes: list[int], first_failed: int | None, logs: list) -> int:
    """The launcher's exit code for the ranks' ``codes``; says why when rank 0 has not."""
    if all(c == 0 for c in codes):
        return 0
    if codes[0] == 0 and all(c <= 0 for c in codes):
        # rank 0 returns only after the final barrier, which every rank reached: the run is complete, and a
        # rank that died by a signal died tearing down (gloo can abort when a peer closes its sockets first)
        dead = ", ".join(f"rank {r} (signal {-c})" for r, c in enumerate(codes) if c < 0)
        note(f"training finished; {dead} crashed while shutting down afterwards, which does "
              "not affect the run")
        return 0
    if codes[0] > 0 and (codes[0] == 2 or first_failed == 0):
        return codes[0]  # rank 0 failed and printed why
    users = [r for r, c in enumerate(codes) if c == 2]
    if users:
        k = users[0]
    else:
        k = first_failed if first_failed is not None else next(r for r, c in enumerate(codes) if c)
    lines = []
    if logs[k] is not None:
        logs[k].seek(0)
        lines = [ln for ln in logs[k].read().splitlines() if ln.strip()]
    if codes[k] < 0:
        msg = (f"deepsdf-ad: error: rank {k} was killed by signal {-codes[k]}; run the same command again to "
               "resume from the last checkpoint")
    else:
        msg = f"{lines[-1]} (rank {k})" if lines else f"deepsdf-ad: error: rank {k} exited with {codes[k]}"
    print(msg, file=sys.stderr)
    return codes[k] if codes[k] > 0 else 1


def _die_with_parent() -> None:
    """In a rank started by :func:`launch` (Linux): get SIGKILL when the launcher dies, even by SIGKILL, so
    no orphaned rank keeps writing to the run folder while the command is started again."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
