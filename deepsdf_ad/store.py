"""Training samples from a memory-mapped sample store (:mod:`deepsdf_ad.data_prep.pack`), and the choice
between it and the in-memory bank (``train.sample_store``).

A :class:`MappedBank` draws exactly the samples :class:`~deepsdf_ad.data.SampleBank` draws on the host for
the same generator: the same uniform numbers, consumed for the whole batch in the same order, turned into the
same row of each shape's block. Under several ranks each rank reads only the shapes of its share
(:func:`~deepsdf_ad.distributed.shares`); the arrays are mapped read-only, so the ranks of a node share one
copy in the page cache.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from deepsdf_ad.data import SampleBank, data_device
from deepsdf_ad.data_prep.formats import DataError, DataRoot, ShapeRef
from deepsdf_ad.data_prep.log import note
from deepsdf_ad.data_prep.pack import PackedSamples, open_store, pack_store, store_exists, store_paths
from deepsdf_ad.distributed import World, shares

MEMORY_FRACTION = 0.25
"""``auto`` maps the store when the in-memory banks of a node's ranks would take more than this share of its
memory (a bank briefly takes twice its size while it loads)."""
RESIDENT_BYTES = 3 << 29  # 1.5 GiB
"""Mapped store pages the ranks of a node keep in all (each its part) before they release them to the page
cache (see :meth:`MappedBank.draw`)."""


class MappedBank:
    """The samples of a packed store, of which this rank reads its share.

    Args:
        store: the opened store (:func:`~deepsdf_ad.data_prep.pack.open_store`).
        rank: this process's rank; it draws the samples of the shapes ``owners == rank``.
        size: the number of ranks.
        resident_bytes: mapped pages kept before they are released (:data:`RESIDENT_BYTES`).
    """

    def __init__(self, store: PackedSamples, rank: int = 0, size: int = 1,
                 resident_bytes: int = RESIDENT_BYTES):
        self.store = store
        self.keys = store.keys
        self.dim = store.dim
        self.rank = rank
        self.owners = shares(len(store.keys), size)
        """(S,) the rank that reads each shape."""
        self.pos_start, self.pos_count = torch.from_numpy(store.pos_start), torch.from_numpy(store.pos_count)
        self.neg_start, self.neg_count = torch.from_numpy(store.neg_start), torch.from_numpy(store.neg_count)
        row = (self.dim + 1) * 4
        self._shape_bytes = ((self.pos_count + self.neg_count) * row).tolist()
        self.resident_bytes = resident_bytes
        self._touched: set[int] = set()
        self._touched_bytes = 0
        self.releases = 0
        """How often the mapped pages were released (for tests and benchmarks)."""

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        """Bytes of this rank's share of the samples."""
        mine = (self.owners == self.rank).nonzero().flatten().tolist()
        return sum(self._shape_bytes[i] for i in mine)

    def to(self, device: torch.device) -> MappedBank:
        if device.type != "cpu":
            raise ValueError("a sample store is read on the host")
        return self

    def draw(self, index: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples for each shape in ``index`` (B,): half from pos, half from neg -> (B, n, dim + 1).

        The random numbers of every shape of the batch are drawn (so the generator advances as the in-memory
        bank's does); only this rank's shapes are read, the others' rows are zeros. Once the shapes read since
        the last release exceed ``resident_bytes``, the mapped pages are released
        (:meth:`~deepsdf_ad.data_prep.pack.PackedSamples.release`).
        """
        half = n // 2
        index = index.cpu()
        b, width = len(index), self.dim + 1
        mine = self.owners[index] == self.rank
        every = bool(mine.all())
        parts = []
        for k, data, start, count in ((n - half, self.store.pos, self.pos_start, self.pos_count),
                                      (half, self.store.neg, self.neg_start, self.neg_count)):
            r = torch.rand((b, k), generator=generator)
            rows = start[index, None] + (r * count[index, None]).long()  # as SampleBank.draw, on the host
            if not every:
                rows = rows[mine]
            # np.take copies rows far faster than fancy indexing (measured 15x on 65k random rows)
            picked = np.take(data, rows.flatten().numpy(), axis=0)
            parts.append(torch.from_numpy(picked).view(len(rows), k, width))
        self._account(index[mine].tolist())
        if every:
            return torch.cat(parts, dim=1)
        out = torch.zeros((b, n, width))
        out[mine] = torch.cat(parts, dim=1)
        return out

    def _account(self, shapes: list[int]) -> None:
        for i in shapes:
            if i not in self._touched:
                self._touched.add(i)
                self._touched_bytes += self._shape_bytes[i]
        if self._touched_bytes > self.resident_bytes:
            self.store.release()
            self.releases += 1
            self._touched.clear()
            self._touched_bytes = 0

    def all_samples(self, i: int) -> torch.Tensor:
        """Every sample of shape ``i`` (M, dim + 1)."""
        s = self.store
        p0, pc, n0, nc = (int(s.pos_start[i]), int(s.pos_count[i]), int(s.neg_start[i]), int(s.neg_count[i]))
        return torch.from_numpy(np.concatenate([s.pos[p0:p0 + pc], s.neg[n0:n0 + nc]]))


def memory_bytes() -> int:
    """This machine's memory, or the cgroup's limit when it is lower (containers)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()  # noqa: SIM115 - one read
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def bank_bytes(refs: list[ShapeRef]) -> int:
    """About what the in-memory bank of ``refs`` takes: their sample files' size (``.npz`` files are not
    compressed)."""
    total = 0
    for ref in refs:
        try:
            total += ref.sdf.stat().st_size
        except FileNotFoundError:
            raise DataError(f"{ref.sdf}: file not found") from None
    return total


def wants_store(choice: str, refs: list[ShapeRef], local_ranks: int) -> tuple[bool, str]:
    """Whether ``train.sample_store = choice`` maps the store, and why (for the note)."""
    if choice != "auto":
        return choice == "mmap", f"train.sample_store is {choice}"
    need, have = local_ranks * bank_bytes(refs), memory_bytes()
    who = f"{local_ranks} ranks' banks" if local_ranks > 1 else "the bank"
    why = f"{who} would take {need / 1e9:.1f} GB of {have / 1e9:.1f} GB memory"
    return need > MEMORY_FRACTION * have, why


def load_samples(root: DataRoot, refs: list[ShapeRef], dim: int, choice: str, world: World,
                 progress: bool = True) -> SampleBank | MappedBank:
    """The training samples of ``refs``: the in-memory bank, or this rank's share of the split's store
    (packed first by rank 0 when there is none yet; a stale one is refused, never rebuilt).

    Args:
        root: the data root; the store is ``DATA/store``.
        refs: the training shapes (the split as it is now).
        dim: the config's coordinate dimension.
        choice: ``train.sample_store`` (``auto``, ``memory`` or ``mmap``).
        world: this process's place among the ranks; every rank makes rank 0's choice.
        progress: progress bars (rank 0).
    """
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world.size)))  # ranks on this node
    use, why = wants_store(choice, refs, local)
    if not world.decide(use):
        return SampleBank(refs, dim, progress=progress and world.main, warn=world.main)
    if world.main and not store_exists(root):
        note(f"{root.root}: packing the training samples into {store_paths(root)['manifest'].parent} "
             "(once; 'deepsdf-ad prep pack' does it ahead)")
        pack_store(root, progress=progress)
    world.barrier()
    store = open_store(root, refs)
    if store.dim != dim:
        raise DataError(f"{store_paths(root)['manifest']}: samples have {store.dim} coordinates but the "
                        f"config has dim={dim}")
    bank = MappedBank(store, world.rank, world.size, resident_bytes=RESIDENT_BYTES // local)
    if world.main:
        share = f"; each of {world.size} ranks reads its share" if world.enabled else ""
        dropped = f"; {store.dropped} rows with NaN or infinite values were left out" if store.dropped else ""
        note(f"samples from the store {store.folder} (memory-mapped, {len(bank)} shapes{share}): "
             f"{why}{dropped}")
    return bank


def host_or_device(bank: SampleBank | MappedBank, samples_on: str, device: torch.device) -> torch.device:
    """Where ``bank`` keeps its samples (``train.samples_on``): a store on the host, a bank as configured."""
    if isinstance(bank, MappedBank):
        return torch.device("cpu")  # read there; each step's draw is copied to ``device``
    return data_device(samples_on, bank.nbytes, device)
