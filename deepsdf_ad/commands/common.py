"""What the command modules share: argparse types, flags declared by several commands, and the glue checks
(outputs that would overwrite an input, output suffixes, ``--workers``)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

from deepsdf_ad import PRECISIONS


class UserError(Exception):
    """Raised for bad flags; printed as one line."""


def field_default(cls, name: str):
    """The default of field ``name`` of the dataclass ``cls``: the one place a flag's default is written."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{name} has no plain default")
            return f.default
    raise TypeError(f"{cls.__name__} has no field {name!r}")


# ---- argparse types ----------------------------------------------------------------------------
def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None


def positive_int(text: str) -> int:
    v = integer(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _unit_share(text: str, one_included: bool) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (0.0 <= v <= 1.0 and (one_included or v < 1.0)):
        raise argparse.ArgumentTypeError(f"must be in [0, 1{']' if one_included else ')'}, got {v}")
    return v


def fraction(text: str) -> float:
    """A share in [0, 1)."""
    return _unit_share(text, one_included=False)


def share(text: str) -> float:
    """A share in [0, 1], both ends included (``prep meshes --test-fraction 1``: every shape a test shape)."""
    return _unit_share(text, one_included=True)


def resolution(text: str) -> int:
    v = positive_int(text)
    if not 8 <= v <= 2048:
        raise argparse.ArgumentTypeError(f"must be between 8 and 2048, got {v}")
    return v


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return v


def positive_float(text: str) -> float:
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def intrinsics(text: str) -> tuple[float, float, float, float]:
    """``fx,fy,cx,cy`` of a pinhole camera in pixels: 4 finite numbers, fx and fy > 0."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"'{text}' is not 4 finite numbers fx,fy,cx,cy (pixels), "
                                         "e.g. 525,525,319.5,239.5")
    if values[0] <= 0 or values[1] <= 0:
        raise argparse.ArgumentTypeError(f"the focal lengths fx and fy must be positive, got {text}")
    return values  # type: ignore[return-value]


def seed(text: str) -> int:
    from deepsdf_ad.config import SEED_MAX

    v = integer(text)
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and {SEED_MAX}, got {v}")
    return v


def shard(text: str) -> tuple[int, int]:
    from deepsdf_ad.data_prep.formats import DataError
    from deepsdf_ad.data_prep.pipeline import parse_shard

    try:
        return parse_shard(text)
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


def nonnegative_int(text: str) -> int:
    v = integer(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def objects_range(text: str) -> tuple[int, int]:
    parts = text.split("-")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None:
        raise argparse.ArgumentTypeError(f"'{text}' is not a count or a range like 2-5")
    if not 1 <= lo <= hi <= 50:
        raise argparse.ArgumentTypeError(f"need 1 <= MIN <= MAX <= 50, got {text}")
    return lo, hi


def image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not WIDTHxHEIGHT, e.g. 800x600") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"each side must be between 16 and 8192 pixels, got {text}")
    return w, h


# ---- glue --------------------------------------------------------------------------------------
def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def workers(requested: int) -> int:
    """``--workers``, at most the CPUs this process may use (more only add processes), with a note."""
    available = cpus()
    if requested > available:
        print(f"deepsdf-ad: note: --workers {requested} capped at the {available} CPUs available",
              file=sys.stderr)
        return available
    return requested


MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl")
"""What ``mesh``, ``reconstruct`` and ``scan`` can write; each file is written in the format its suffix
says."""


def suffix(path: str | None, allowed: tuple[str, ...], flag: str = "--out") -> None:
    if path is not None and Path(path).suffix.lower() not in allowed:
        raise UserError(f"{path}: {flag} must end in {', '.join(allowed)} (the format written follows the "
                        "suffix)")


def not_inputs(out, files=(), folders=(), runs=(), data=(), **kwargs) -> None:
    """Refuse an output that resolves to one of the command's inputs: ``files`` (and their sidecars),
    ``folders`` (and what is inside), the files of the run folders ``runs`` and of the data roots ``data``."""
    from deepsdf_ad.outputs import data_inputs, refuse_input_as_output, run_inputs

    files, folders = list(files), list(folders)
    for root, parts in [(r, run_inputs(r)) for r in runs if r] + [(d, data_inputs(d)) for d in data if d]:
        files += [root, *parts[0]]
        folders += parts[1]
    refuse_input_as_output(out, files, folders, **kwargs)


def shard_label(shard: tuple[int, int] | None) -> str:
    return f"shard {shard[0]}/{shard[1]}: " if shard else ""


def name_dirs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"{flag} {item}: expected NAME=DIR, e.g. {flag} digits=data/digits")
        if not Path(folder).is_dir():
            raise UserError(f"{folder}: data folder not found ({flag} {item})")
        out[name] = folder
    return out


# ---- flags shared by several commands ---------------------------------------------------------
def add_meshing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=("adaptive", "dense"), default="adaptive",
                   help="marching-cubes grid evaluated coarse-to-fine (default) or densely (the reference)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="decoder arithmetic (bf16/fp16: autocast, faster, error in docs/benchmarks.md; auto: "
                        "bf16 where the processor has it natively, else fp32): the meshing queries, and for "
                        "reconstruct also the code optimisation (default: fp32; for reconstruct the run's "
                        "reconstruct.precision)")


def add_shard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", type=shard, metavar="I/N",
                   help="process only shard I of N (I = 0..N-1; shapes sorted by category/id, dealt "
                        "round-robin); shards may run at once into the same DATA; then "
                        "'deepsdf-ad prep merge DATA'")


def add_force(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--force", action="store_true",
                   help=f"write into --out even if it is a non-empty folder that is not a {kind} folder of "
                        "ours (files of ours may replace files there)")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")


def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bar") -> None:
    p.add_argument("--quiet", action="store_true", help=help)


def add_resolution(p: argparse.ArgumentParser, default: int | None = None,
                   help: str = "grid points per axis (default: the config's)") -> None:
    p.add_argument("--resolution", type=resolution, default=default, help=help)
