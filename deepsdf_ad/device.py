"""Where and in what precision the decoder runs: the device (``--device auto``), the precision (``auto``:
bf16 where the hardware computes it natively), autocast, and the CPU block size of the decoder's work.

Shared by training, meshing and reconstruction; nothing here knows about a training loop."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from deepsdf_ad.data_prep.formats import DataError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA if available, else CPU; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is available; use --device cpu or auto")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DataError(f"--device {name}: unknown device; use auto, cpu or cuda") from None
    return indexed(dev)


def indexed(dev: torch.device) -> torch.device:
    """``dev`` with the GPU's index named (a bare ``cuda`` is the current one): tensors report ``cuda:0``, and
    a bare ``cuda`` compares unequal to it."""
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


@functools.cache
def _native_bf16(device_type: str) -> bool:
    """Whether this machine's ``device_type`` computes bf16 natively (asked once per process: autocast is
    entered at every step of a code optimisation and every meshing batch)."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: no cheap way to tell, so no
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision`` with 'auto' resolved: bf16 on a CUDA GPU that supports it or an x86 CPU with AVX512-BF16
    or AMX (measured here: 2x faster than fp32 for the 8x512 decoder's step, 1.9x for the small preset's
    reconstruction), else fp32 (CPUs without native bf16 emulate it, which can be slower than fp32)."""
    if precision != "auto":
        return precision
    return "bf16" if _native_bf16(device.type) else "fp32"


def autocast(device: torch.device, precision: str):
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


PART_BYTES = 4 * 2**20
"""On the CPU, the decoder's work goes in blocks whose widest activation stays within this: training parts
(``train.batch_split: auto``) and meshing batches. Measured on 2 cores (8x512 decoder, DeepSDF's dropout):
a training step of 4 shapes x 16,384 points in one piece ran 17,158 points/s in bf16 (3.5M minor page faults
in 3 steps: glibc serves buffers over 32 MiB with fresh pages), in parts of 16 MiB 23,080, of 4 MiB 25,594
(fp32: 8,869 / 13,424 at 2,048 points); bf16 inference 61k queries/s in batches of 131,072 points, 108k in
batches of 4,096; the 8x128 decoder in fp32 215k at 65,536, 708k at 4,096."""


def activation_bytes(precision: str, dev: torch.device) -> int:
    """Bytes of one activation value under ``precision`` (autocast to bf16/fp16 halves them)."""
    return 2 if resolve_precision(precision, dev) in ("bf16", "fp16") else 4


def cpu_block_points(width: int, precision: str, dev: torch.device) -> int:
    """Points per CPU block of a decoder whose widest layer is ``width`` (:data:`PART_BYTES`)."""
    return PART_BYTES // (activation_bytes(precision, dev) * width)
