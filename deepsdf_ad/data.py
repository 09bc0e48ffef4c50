"""Training samples held in memory and drawn per shape per step with vectorised indexing.

All ``pos`` rows of all shapes live in one tensor, all ``neg`` rows in another; a step draws
``samples_per_shape / 2`` rows from each for every shape of the batch with one ``randint``-style gather,
so the data path costs next to nothing beside the decoder.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from deepsdf_ad.data_prep.formats import DataError, DataRoot, ShapeRef
from deepsdf_ad.data_prep.log import note
from deepsdf_ad.data_prep.pack import finite_samples
from deepsdf_ad.device import indexed


class SampleBank:
    """SDF samples of many shapes.

    Args:
        refs: the shapes (from :meth:`DataRoot.shapes`).
        dim: coordinate dimension expected (2 or 3); files hold (N, dim + 1) rows.
        progress: show a progress bar for many shapes.
        warn: say on stderr how many rows with NaN or infinite values were dropped (one line in all).
    """

    owners = None
    """Every rank holds every shape (a store's ranks each read their share:
    :class:`deepsdf_ad.store.MappedBank`)."""

    def __init__(self, refs: list[ShapeRef], dim: int, progress: bool = True, warn: bool = True):
        self.refs = refs
        self.keys = [r.key for r in refs]
        pos_list, neg_list = [], []
        dropped, total, files = 0, 0, []
        for ref in tqdm(refs, desc="load samples", unit="shape", disable=not progress or len(refs) < 50):
            pos, neg, lost, rows = finite_samples(ref.sdf)  # a side without rows borrows the other's
            if pos.shape[1] != dim + 1:
                raise DataError(f"{ref.sdf}: samples have {pos.shape[1] - 1} coordinates but the config has "
                                f"dim={dim}")
            total += rows
            if lost:
                dropped += lost
                files.append(ref.sdf)
            pos_list.append(pos)
            neg_list.append(neg)
        if dropped and warn:
            first = f" (first: {files[0]})" if len(files) > 1 else ""
            where = f"{len(files)} sample files{first}" if len(files) > 1 else str(files[0])
            note(f"{where}: dropped {dropped} of {total} sample rows with NaN or infinite values")
        self.dim = dim
        self.pos, self.pos_start, self.pos_count = _pack(pos_list)
        self.neg, self.neg_start, self.neg_count = _pack(neg_list)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return self.pos.nbytes + self.neg.nbytes

    def to(self, device: torch.device) -> SampleBank:
        for name in ("pos", "pos_start", "pos_count", "neg", "neg_start", "neg_count"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def draw(self, index: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples for each shape in ``index`` (B,): half from pos, half from neg -> (B, n, dim + 1)."""
        half = n // 2
        dev = self.pos.device
        index = index.to(dev)
        b = len(index)

        def pick(data, start, count, k):
            r = torch.rand((b, k), generator=generator, device=dev)
            rows = start[index, None] + (r * count[index, None]).long()
            return data[rows]

        return torch.cat([pick(self.pos, self.pos_start, self.pos_count, n - half),
                          pick(self.neg, self.neg_start, self.neg_count, half)], dim=1)

    def all_samples(self, i: int) -> torch.Tensor:
        """Every sample of shape ``i`` (M, dim + 1)."""
        p0, pc = int(self.pos_start[i]), int(self.pos_count[i])
        n0, nc = int(self.neg_start[i]), int(self.neg_count[i])
        return torch.cat([self.pos[p0:p0 + pc], self.neg[n0:n0 + nc]])


def _pack(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    counts = np.array([len(a) for a in arrays], np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    data = torch.from_numpy(np.concatenate(arrays).astype(np.float32))
    return data, torch.from_numpy(starts), torch.from_numpy(counts)


def load_bank(data: str, split: str, dim: int, split_file: str | None = None) -> SampleBank:
    return SampleBank(DataRoot(data, split_file).shapes(split), dim)


def data_device(samples_on: str, nbytes: int, device: torch.device) -> torch.device:
    """Where training data is kept and drawn (``train.samples_on``): ``device``, or the host for ``host`` (and
    for ``auto`` when ``nbytes`` exceed half of a GPU's free memory)."""
    if device.type == "cpu" or samples_on == "device":
        return device
    if samples_on == "auto" and (device.type != "cuda" or nbytes <= 0.5 * torch.cuda.mem_get_info(device)[0]):
        return device
    return torch.device("cpu")


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from the host to a GPU through pinned memory, without waiting for the copy."""
    device = indexed(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
